"""The format warm-up before GRPO: random well-formed answers (no label), a model that then writes the format,
reuse on resume, and GRPO groups that no longer all tie."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpo_fixtures import write_config, write_toy_data  # noqa: E402

pytest.importorskip("trl")

from reason2rank.rl import GRPOTrainConfig, train_grpo  # noqa: E402
from reason2rank.rl.examples import render_prompt  # noqa: E402
from reason2rank.rl.format_warmup import WARMUP_REASONING, format_target, format_warmup  # noqa: E402
from reason2rank.rl.rewards import parse_binary_answer, parse_listwise_answer, parse_setwise_answer  # noqa: E402
from reason2rank.rl.trainer import build_examples, load_training_items  # noqa: E402


def _setwise_config(tmp_path: Path, model: str, **grpo) -> GRPOTrainConfig:
    write_toy_data(tmp_path)
    cfg = {  # lora: null — a LoRA of rank 8 on a width-16 model cannot learn the format in a few steps
        "method": "grpo", "task": "setwise", "output_dir": "run", "model": model, "seed": 0, "lora": None,
        "data": {"candidates": "candidates.json", "qrels": "qrels.txt", "window": 3, "max_words": 6,
                 "prompt": "rank_r1_v1"},
        "grpo": {"prompts_per_step": 2, "num_generations": 4, "max_completion_length": 40, **grpo},
    }  # fmt: skip
    return GRPOTrainConfig.from_yaml(write_config(tmp_path / "s.yaml", cfg))


def test_targets_are_well_formed_and_never_read_the_label():
    ex = {"prefix": "", "docids": ["a", "b", "c", "d"], "label": 2, "num_candidates": 4}
    for task, parse in (("setwise", parse_setwise_answer), ("listwise", lambda t: parse_listwise_answer(t, 4)),
                        ("binary", parse_binary_answer)):  # fmt: skip
        a = [format_target(task, ex, random.Random(s)) for s in range(40)]
        b = [format_target(task, {**ex, "label": 4, "positives": [1]}, random.Random(s)) for s in range(40)]
        assert a == b  # the same draws whatever the label
        assert all(parse(t) is not None for t in a)
    picks = {parse_setwise_answer(format_target("setwise", ex, random.Random(s))) for s in range(200)}
    assert picks == {1, 2, 3, 4}  # uniform over the window, not the positive
    # a prompt whose prefix already opened <think> is continued, not opened twice
    cont = format_target("setwise", {**ex, "prefix": "<think>"}, random.Random(0))
    assert cont.startswith(WARMUP_REASONING) and parse_setwise_answer("<think>" + cont) is not None
    with pytest.raises(ValueError, match="no warm-up format"):
        format_target("pairwise", ex, random.Random(0))


@pytest.mark.slow
def test_warmup_teaches_the_format_and_is_reused(tmp_path, tiny_llama_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = _setwise_config(tmp_path, tiny_llama_dir)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype="float32")
    items, qrels = load_training_items(cfg)
    examples = build_examples(cfg, items, qrels).examples
    rows = [{**{k: v for k, v in e.items() if k != "messages"},
             "prompt": render_prompt(tok, e["messages"], e["prefix"])} for e in examples]  # fmt: skip

    def well_formed(m) -> float:
        tok.padding_side = "left"
        enc = tok([r["prompt"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = m.generate(**enc, max_new_tokens=40, do_sample=False, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return sum(parse_setwise_answer(r["prefix"] + t) is not None for r, t in zip(rows, texts)) / len(rows)

    assert well_formed(model) == 0.0
    out = tmp_path / "run"
    warmed, info = format_warmup(model, tok, rows, task="setwise", steps=60, out=out, fingerprint="f1",
                                 lr=3e-3, batch_size=4)  # fmt: skip
    assert not info["reused"] and len(info["losses"]) == 60
    assert info["losses"][-1] < 0.3 * info["losses"][0]
    assert well_formed(warmed) == 1.0
    assert not hasattr(warmed, "peft_config")  # merged: GRPO puts its own LoRA on top
    again, info2 = format_warmup(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tok, rows, task="setwise",
                                 steps=60, out=out, fingerprint="f1", lr=3e-3)  # fmt: skip
    assert info2["reused"] and info2["losses"] == info["losses"]
    for (name, p), (_, q) in zip(warmed.state_dict().items(), again.state_dict().items()):
        assert torch.equal(p, q), name
    _, info3 = format_warmup(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tok, rows, task="setwise",
                             steps=2, out=out, fingerprint="f2", lr=3e-3)  # fmt: skip
    assert not info3["reused"] and len(info3["losses"]) == 2  # another config: done again, not reused


@pytest.mark.slow
def test_grpo_after_the_warmup_has_groups_that_do_not_tie(tmp_path, tiny_llama_dir):
    # without the warm-up a random model never writes the format: every group ties at 0 (see test_grpo_trainer)
    cfg = _setwise_config(
        tmp_path, tiny_llama_dir, max_steps=3, format_warmup_steps=60, format_warmup_lr=1e-2
    )
    result = train_grpo(cfg)
    assert result.warmup is not None and result.warmup["steps"] == 60
    assert min(h["frac_reward_zero_std"] for h in result.history) < 1.0
    assert max(h["reward"] for h in result.history) > 0.0
    info = json.loads((result.model_dir / "training.json").read_text())
    assert info["format_warmup"]["steps"] == 60
    assert cfg.fingerprint() != _setwise_config(tmp_path, tiny_llama_dir, max_steps=3).fingerprint()


def test_warmup_config_is_checked_and_left_out_of_old_fingerprints(tmp_path, tiny_llama_dir):
    with pytest.raises(ValueError, match="format_warmup_steps must be an integer >= 0"):
        _setwise_config(tmp_path, tiny_llama_dir, format_warmup_steps=-1)
    with pytest.raises(ValueError, match="format_warmup_lr must be > 0"):
        _setwise_config(tmp_path, tiny_llama_dir, format_warmup_lr=0.0)
    # with no warm-up its keys are not in the digest, so runs started before the warm-up existed still resume
    plain = _setwise_config(tmp_path, tiny_llama_dir)
    assert (
        _setwise_config(tmp_path, tiny_llama_dir, format_warmup_lr=0.5).fingerprint() == plain.fingerprint()
    )
    warm = _setwise_config(tmp_path, tiny_llama_dir, format_warmup_steps=5)
    assert warm.fingerprint() != plain.fingerprint()
    assert _setwise_config(
        tmp_path, tiny_llama_dir, format_warmup_steps=5, format_warmup_lr=0.5
    ).fingerprint() != (warm.fingerprint())
