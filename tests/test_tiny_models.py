"""Contracts of the tiny model factories in tests/tiny_models.py."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

import tiny_models

MESSAGES = [
    {"role": "user", "content": "Query: what is the capital of france? Is it relevant? Answer yes or no."}
]


def _logits(model_dir, auto_cls, tok_dir=None, texts=("what is the capital of france", "paris is a city")):
    tok = AutoTokenizer.from_pretrained(tok_dir or model_dir)
    model = auto_cls.from_pretrained(model_dir).eval()
    enc = tok(*texts, return_tensors="pt") if len(texts) == 2 else tok(texts[0], return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits


def test_offline_env():
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


# ----------------------------------------------------------------------------------------- BERT


def test_bert_pair_encoding_token_type_ids(tiny_bert_dir):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    assert tok.padding_side == "right"
    enc = tok("What is Paris?", "Paris is the capital of France.")
    tokens = tok.convert_ids_to_tokens(enc["input_ids"])
    assert tokens == ["[CLS]", "what", "is", "paris", "?", "[SEP]"] + [
        "paris",
        "is",
        "the",
        "capital",
        "of",
        "france",
        ".",
        "[SEP]",
    ]
    assert enc["token_type_ids"] == [0] * 6 + [1] * 8
    assert tok.unk_token_id not in tok("Zyxx qwerty 12345 !?#")["input_ids"]

    batch = tok(["a b", "c"], ["d", "e f g"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0, -1].item() == tok.pad_token_id
    assert batch["attention_mask"][0].tolist() == [1] * 6 + [0]
    assert batch["token_type_ids"][1].tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_bert_cross_encoder_roundtrip_and_determinism(tiny_bert_dir, tmp_path):
    config = AutoConfig.from_pretrained(tiny_bert_dir)
    assert config.architectures == ["BertForSequenceClassification"] and config.num_labels == 1
    a = _logits(tiny_bert_dir, AutoModelForSequenceClassification)
    assert a.shape == (1, 1)
    again = tiny_models.make_tiny_bert(tmp_path / "same", seed=0)
    assert torch.equal(a, _logits(again, AutoModelForSequenceClassification))
    other = tiny_models.make_tiny_bert(tmp_path / "other", seed=1)
    assert not torch.allclose(a, _logits(other, AutoModelForSequenceClassification))


def test_bert_encoder_sentence_transformers(tiny_bert_encoder_dir):
    d = Path(tiny_bert_encoder_dir)
    assert json.loads((d / "1_Pooling" / "config.json").read_text())["pooling_mode_mean_tokens"] is True
    assert "sentence_transformers.models.Normalize" in [
        m["type"] for m in json.loads((d / "modules.json").read_text())
    ]
    model = AutoModel.from_pretrained(tiny_bert_encoder_dir)
    assert type(model).__name__ == "BertModel"

    st = pytest.importorskip("sentence_transformers")
    emb = st.SentenceTransformer(tiny_bert_encoder_dir, device="cpu").encode(
        ["what is paris", "the capital of france"], convert_to_tensor=True
    )
    assert emb.shape == (2, tiny_models.HIDDEN_SIZE)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_deberta_v2(tmp_path):
    d = tiny_models.make_tiny_deberta_v2(tmp_path / "deberta", num_labels=2)
    logits = _logits(d, AutoModelForSequenceClassification)
    assert logits.shape == (1, 2)


# ----------------------------------------------------------------------------------- causal LMs


@pytest.mark.parametrize(
    "fixture, header, gen_prompt",
    [
        (
            "tiny_llama_dir",
            "<|start_header_id|>user<|end_header_id|>\n\n",
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
        ),
        ("tiny_qwen2_dir", "<|im_start|>user\n", "<|im_start|>assistant\n"),
    ],
)
def test_causal_lm_tokenizer_contract(request, fixture, header, gen_prompt):
    d = request.getfixturevalue(fixture)
    tok = AutoTokenizer.from_pretrained(d)
    assert tok.padding_side == "right"  # callers must switch to left padding themselves
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    assert len(tok) == AutoConfig.from_pretrained(d).vocab_size

    text = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    assert header in text and text.endswith(gen_prompt)
    no_prompt = tok.apply_chat_template(MESSAGES, add_generation_prompt=False, tokenize=False)
    assert not no_prompt.endswith(gen_prompt)

    # the header / ChatML markers are special tokens, each a single id
    for special in (t for t in tok.all_special_tokens if t.startswith("<|")):
        assert len(tok.encode(special, add_special_tokens=False)) == 1
    marker = gen_prompt[: gen_prompt.index(">") + 1]  # <|start_header_id|> / <|im_start|>
    assert tok.convert_tokens_to_ids(marker) in tok.encode(text, add_special_tokens=False)

    for word in ("yes", "no", "0", "1", "true", "false"):
        ids = tok.encode(word, add_special_tokens=False)
        assert len(ids) == 1, word
        assert tok.convert_ids_to_tokens(ids) == [word]
        if word.isalpha():  # as in the real regexes, digits never merge with a leading space
            assert len(tok.encode(" " + word, add_special_tokens=False)) == 1, word


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen2_dir"])
def test_causal_lm_generate_and_roundtrip(request, fixture, tmp_path, recwarn):
    d = request.getfixturevalue(fixture)
    tok = AutoTokenizer.from_pretrained(d)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(d).eval()
    prompts = [
        tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False),
        tok.apply_chat_template(
            [{"role": "user", "content": "yes?"}], add_generation_prompt=True, tokenize=False
        ),
    ]
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=4)
    assert out.shape[0] == 2 and out.shape[1] <= enc["input_ids"].shape[1] + 4
    assert not [w for w in recwarn if "generat" in str(w.message).lower()]

    arch = AutoConfig.from_pretrained(d).model_type
    same = tiny_models.make_tiny_causal_lm(tmp_path / "same", arch=arch, seed=0)
    with torch.no_grad():
        a = model(**enc).logits
        b = AutoModelForCausalLM.from_pretrained(same).eval()(**enc).logits
    assert a.shape[-1] == len(tok)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------- LoRA


def test_llama_lora_changes_logits(tiny_llama_dir, tiny_llama_lora_dir):
    from peft import PeftModel

    cfg = json.loads((Path(tiny_llama_lora_dir) / "adapter_config.json").read_text())
    assert cfg["task_type"] == "CAUSAL_LM" and cfg["base_model_name_or_path"] == tiny_llama_dir
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    enc = tok("is paris the capital of france? yes", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    with torch.no_grad():
        before = base(**enc).logits
        peft_model = PeftModel.from_pretrained(base, tiny_llama_lora_dir).eval()
        after = peft_model(**enc).logits
    assert not torch.allclose(before, after, atol=1e-3)


def test_bert_lora_changes_logits(tiny_bert_dir, tiny_bert_lora_dir):
    from peft import PeftModel

    cfg = json.loads((Path(tiny_bert_lora_dir) / "adapter_config.json").read_text())
    assert cfg["task_type"] == "SEQ_CLS"
    before = _logits(tiny_bert_dir, AutoModelForSequenceClassification)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    peft_model = PeftModel.from_pretrained(base, tiny_bert_lora_dir).eval()
    with torch.no_grad():
        after = peft_model(
            **tok("what is the capital of france", "paris is a city", return_tensors="pt")
        ).logits
    assert not torch.allclose(before, after, atol=1e-3)


def test_factories_are_fast(tmp_path):
    for name, fn in [
        ("bert", lambda p: tiny_models.make_tiny_bert(p)),
        ("enc", lambda p: tiny_models.make_tiny_bert_encoder(p)),
        ("llama", lambda p: tiny_models.make_tiny_causal_lm(p, arch="llama")),
        ("qwen2", lambda p: tiny_models.make_tiny_causal_lm(p, arch="qwen2")),
        ("lora", lambda p: tiny_models.make_tiny_lora_adapter(tmp_path / "llama", p)),
    ]:
        start = time.perf_counter()
        assert Path(fn(tmp_path / name)).is_dir()
        assert time.perf_counter() - start < 2.0, name


def test_minilm_dir(minilm_dir):
    assert (Path(minilm_dir) / "config.json").is_file()
