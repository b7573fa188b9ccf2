"""The cross-encoder's last layer at the first position only: the same logits as the full forward of every
supported architecture (padded batches, LoRA unmerged), less work actually done, the layer always put back, no
change where it does not apply, and the scores-only ONNX graph."""

from __future__ import annotations

import copy
import importlib.util
import pickle
import shutil
import threading

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

import reason2rank
from reason2rank import Doc, Query
from reason2rank.scorers import pooled_last_layer as pooled_module
from reason2rank.scorers.pooled_last_layer import POOLED_MODEL_TYPES, pooled_last_layer, pooled_layer_list

TORCH = {"runtime": "torch", "dtype": "fp32", "progress": False}


def _tiny(model_type: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = AutoConfig.for_model(
        model_type, vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=80, pad_token_id=1, **kw,
    )  # fmt: skip
    model = AutoModelForSequenceClassification.from_config(cfg).eval()
    with torch.no_grad():  # weights large enough that a wrong attention row shows in the logits
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _padded_batch(rows: int = 5, width: int = 23) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 120, (rows, width), generator=gen)
    lengths = [width, 4, 17, 9, 1][:rows]
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, 1), "attention_mask": mask}


@pytest.mark.parametrize("model_type", sorted(POOLED_MODEL_TYPES))
@pytest.mark.parametrize("num_labels", [1, 2])
def test_logits_equal_the_full_forward(model_type, num_labels):
    model = _tiny(model_type, num_labels=num_labels)
    batch = _padded_batch()
    with torch.inference_mode():
        want = model(**batch).logits
        with pooled_last_layer(model, batch["attention_mask"]) as used:
            got = model(**batch).logits
    assert used
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    # each row alone (no padding) gives its row of the batch
    with torch.inference_mode(), pooled_last_layer(model, batch["attention_mask"][2:3, :17]):
        alone = model(
            input_ids=batch["input_ids"][2:3, :17], attention_mask=batch["attention_mask"][2:3, :17]
        )
    torch.testing.assert_close(alone.logits, want[2:3], atol=1e-6, rtol=0)


def test_the_last_layer_really_runs_on_one_position_only_inside_the_block():
    model = _tiny("bert")
    layers = pooled_layer_list(model)
    assert layers is not None
    original = layers[-1]
    keys = list(model.state_dict())
    widths: list[int] = []
    hook = original.intermediate.register_forward_hook(lambda m, i, o: widths.append(o.shape[1]))
    batch = _padded_batch()
    with torch.inference_mode():
        model(**batch)
        with pooled_last_layer(model, batch["attention_mask"]):
            model(**batch)
        full = model(**batch, output_hidden_states=True)
        with pytest.raises(RuntimeError, match="boom"), pooled_last_layer(model, batch["attention_mask"]):
            raise RuntimeError("boom")
        model(**batch)
    hook.remove()
    # the feed-forward block: every position, the first only, then every position again (after an error too)
    assert widths == [23, 1, 23, 23]
    assert full.hidden_states[-1].shape[1] == 23
    assert layers[-1] is original and list(model.state_dict()) == keys  # nothing swapped, nothing renamed


def test_another_thread_sees_the_full_layer_meanwhile():
    model = _tiny("bert")
    batch = _padded_batch()
    seen = {}

    def other_thread() -> None:
        with torch.inference_mode():
            out = model(**batch, output_hidden_states=True)
        seen["states"], seen["logits"] = out.hidden_states[-1], out.logits

    with torch.inference_mode():
        want = model(**batch).logits
        with pooled_last_layer(model, batch["attention_mask"][:2]):  # another batch in this thread
            worker = threading.Thread(target=other_thread)
            worker.start()
            worker.join()
            mine = model(input_ids=batch["input_ids"][:2], attention_mask=batch["attention_mask"][:2]).logits
    assert seen["states"].shape == (5, 23, 32)
    torch.testing.assert_close(seen["logits"], want, atol=0, rtol=0)
    torch.testing.assert_close(mine, want[:2], atol=1e-6, rtol=0)


@pytest.mark.parametrize("duplicate", ["deepcopy", "pickle"])
def test_a_copy_runs_pooled_on_its_own_weights(duplicate):
    model = _tiny("bert")
    batch = _padded_batch()
    with torch.inference_mode(), pooled_last_layer(model, batch["attention_mask"]):
        model(**batch)
    twin = copy.deepcopy(model) if duplicate == "deepcopy" else pickle.loads(pickle.dumps(model))
    with torch.no_grad():
        pooled_layer_list(twin)[-1].output.dense.weight.mul_(3.0)  # (a bias shift would be normalised away)
    with torch.inference_mode():
        want = twin(**batch).logits
        with pooled_last_layer(twin, batch["attention_mask"]) as used:
            got = twin(**batch).logits
        with pooled_last_layer(model, batch["attention_mask"]):
            original = model(**batch).logits
    assert used
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert (original - want).abs().max() > 1e-3  # the copy's layer, not the original's, ran


def test_nothing_changes_where_it_does_not_apply(tiny_deberta_v2_dir):
    deberta = AutoModelForSequenceClassification.from_pretrained(tiny_deberta_v2_dir).eval()
    assert pooled_layer_list(deberta) is None  # relative attention, its own pooler: not recognised
    bert = _tiny("bert")
    assert pooled_layer_list(AutoModelForSequenceClassification) is None
    with pooled_last_layer(bert, None) as used:
        assert not used
    bert.train()
    with pooled_last_layer(bert, _padded_batch()["attention_mask"]) as used:
        assert not used  # training: dropout over every position, as the full layer draws it


def test_an_unmerged_lora_adapter_goes_through_the_pooled_layer(tiny_bert_dir, tiny_bert_lora_dir):
    from peft import PeftModel

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    model = PeftModel.from_pretrained(base, tiny_bert_lora_dir).eval()
    assert pooled_layer_list(model) is not None
    batch = _padded_batch()
    batch["input_ids"] = batch["input_ids"] % 60 + 3
    with torch.inference_mode():
        want = model(**batch).logits
        with pooled_last_layer(model, batch["attention_mask"]) as used:
            got = model(**batch).logits
        without = model.get_base_model()
        with model.disable_adapter():
            base_logits = without(**batch).logits
    assert used
    assert (got - base_logits).abs().max() > 1e-3, "the adapter must change the logits"
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def _items():
    words = [
        "paris",
        "capital",
        "france",
        "city",
        "river",
        "cat",
        "sat",
        "mat",
        "banana",
        "yellow",
        "fruit",
        "sky",
        "blue",
        "music",
    ]
    rng = np.random.default_rng(0)
    return [
        (Query(str(q), " ".join(rng.choice(words, 3))),
         [Doc(f"d{j}", " ".join(rng.choice(words, int(rng.integers(2, 60))))) for j in range(9)])
        for q in range(3)
    ]  # fmt: skip


def test_the_scorer_uses_it_and_scores_equal_a_plain_transformers_forward(tiny_bert_dir):
    scorer = reason2rank.load(tiny_bert_dir, family="cross-encoder", **TORCH)
    off = reason2rank.load(tiny_bert_dir, family="cross-encoder", pooled_last_layer=False, **TORCH)
    assert scorer.pooled_last_layer and not off.pooled_last_layer
    items = _items()
    got = np.concatenate(scorer.score_batch(items))
    np.testing.assert_allclose(got, np.concatenate(off.score_batch(items)), atol=1e-6, rtol=0)
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    want = []
    for query, docs in items:
        enc = scorer.tokenizer([query.text] * len(docs), [d.text for d in docs], truncation="only_second",
                               max_length=scorer.max_length, padding=True, return_tensors="pt")  # fmt: skip
        with torch.inference_mode():
            want.append(plain(**enc).logits[:, 0].numpy())
    np.testing.assert_allclose(got, np.concatenate(want), atol=1e-5, rtol=0)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
def test_the_export_of_a_plain_cross_encoder_gives_scores_only(tiny_bert_dir, tmp_path):
    from reason2rank.onnx.export import export_onnx

    path = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, path)
    record = export_onnx(path, family="cross-encoder")
    assert record.outputs == ["logits"]
    items = _items()
    ort = reason2rank.load(path, runtime="onnx", progress=False)
    full = reason2rank.load(path, pooled_last_layer=False, **TORCH)
    np.testing.assert_allclose(np.concatenate(ort.score_batch(items)), np.concatenate(full.score_batch(items)),
                               atol=1e-4, rtol=0)  # fmt: skip
    batch = _padded_batch()
    batch["input_ids"] = batch["input_ids"] % 60 + 3
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    with pytest.raises(ValueError, match="no per-token states.*export again"):
        ort.model(output_hidden_states=True, **batch)


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
def test_export_token_states_keeps_the_full_last_layer(tiny_bert_dir, tmp_path, capsys):
    from reason2rank.cli import main

    path = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, path)
    assert main(["export-onnx", str(path), "--family", "cross-encoder", "--token-states"]) == 0
    ort = reason2rank.load(path, runtime="onnx", progress=False)
    assert ort.model.output_names == ["logits", "last_hidden_state"]
    batch = _padded_batch()
    batch["input_ids"] = batch["input_ids"] % 60 + 3
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    out = ort.model(output_hidden_states=True, **batch)
    assert tuple(out.last_hidden_state.shape) == (5, 23, 32)


def test_folding_the_key_and_value_projections_changes_nothing_but_rounding(monkeypatch):
    model = _tiny("bert")
    batch = _padded_batch()
    key = pooled_layer_list(model)[-1].attention.self.key
    calls: list[int] = []
    hook = key.register_forward_hook(lambda m, i, o: calls.append(o.shape[1]))
    outs = {}
    with torch.inference_mode():
        want = model(**batch).logits
        calls.clear()
        for fold in (True, False):
            monkeypatch.setattr(pooled_module, "FOLD_PROJECTIONS", fold)
            with pooled_last_layer(model, batch["attention_mask"]):
                outs[fold] = model(**batch).logits
    hook.remove()
    assert calls == [23]  # folded: the key projection never runs; unfolded: once, over every position
    torch.testing.assert_close(outs[True], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(outs[False], want, atol=1e-6, rtol=0)
