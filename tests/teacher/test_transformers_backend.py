"""The local transformers backend with tiny random causal LMs: garbage answers end as failed-with-raw-text,
generation matches a plain greedy ``generate``, and token counts are exact."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reason2rank.llm.backend import Backend
from reason2rank.llm.transformers_backend import TransformersBackend
from reason2rank.teacher import GenerationResult, Teacher, make_backend
from reason2rank.types import Doc, Query

ITEMS = [
    (
        Query("q1", "what is a flea"),
        [Doc("d1", "Fleas are small insects. They bite."), Doc("d2", "Cats are animals.")],
    ),
    (Query("q2", "life cycle"), [Doc("d3", "The cycle of life has four stages.")]),
]


@pytest.fixture(scope="module")
def llama_backend(tiny_llama_dir):
    backend = make_backend(f"hf:{tiny_llama_dir}", batch_size=2, device="cpu")
    yield backend
    backend.close()


def test_every_item_is_parsed_or_failed_with_its_raw_text(llama_backend, tmp_path):
    path = tmp_path / "ann.jsonl"
    with Teacher(llama_backend, store=path, max_new_tokens=12, max_tries=2, window=3) as t:
        s = t.annotate(ITEMS, tasks=("direct", "compare", "listwise"))
        records = list(t.store.records())
    assert s.total == 3 + 1 + 1 and s.errors == 0 and s.done + s.failed + s.inconsistent == s.total
    assert len(records) == 5 and len({r["key"] for r in records}) == 5
    assert {r["task"] for r in records} == {"direct", "compare", "listwise"}
    for r in records:
        assert r["teacher"] == llama_backend.name
        if r["status"] == "failed":
            assert r["output"] is None and r["tries"] == 2 and r["error"]
            assert all(isinstance(a["raw"], str) for a in r["attempts"])
            assert all(a["error"] for a in r["attempts"])
        else:
            assert r["output"] is not None
        assert r["prompt_tokens"] > 0 and 0 < r["completion_tokens"] <= 12 * r["tries"]
    assert s.requests == sum(r["tries"] for r in records)
    assert s.completion_tokens == sum(r["completion_tokens"] for r in records)


def test_batched_generation_equals_plain_greedy_generate(llama_backend, tiny_llama_dir):
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    convs = [
        [{"role": "user", "content": "hello there"}],
        [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "a much longer question about fleas and cats"},
        ],
        [{"role": "user", "content": "x"}],
    ]
    got = llama_backend.generate(convs, max_new_tokens=6)
    for conv, res in zip(convs, got):
        prompt = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            out = model.generate(
                ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id
            )
        new = out[0, ids.shape[1] :].tolist()
        eos = tok.eos_token_id
        used = new[: new.index(eos)] if eos in new else new
        assert res.text == tok.decode(used, skip_special_tokens=True)
        assert res.prompt_tokens == ids.shape[1]
        assert res.completion_tokens == len(used) + (eos in new)
        assert res.finish_reason == ("stop" if eos in new else "length")


def test_qwen2_backend_and_token_cut_with_its_tokenizer(tiny_qwen2_dir):
    backend = TransformersBackend(tiny_qwen2_dir, batch_size=4)
    assert backend.device.type in ("cpu", "cuda") and backend.pad_token_id is not None
    with Teacher(backend, max_words=None, max_tokens=5, max_new_tokens=4, max_tries=1) as t:
        assert t.cutter.tokenizer is backend.tokenizer
        s = t.annotate(ITEMS[:1])
        recs = list(t.store.records())
    assert s.total == 2 and len(recs) == 2 and all(r["doc_cut"] == "tokens:5" for r in recs)
    assert all(r["status"] in ("ok", "failed") for r in recs)


class ScriptedBackend(Backend):
    """Returns scripted answers and does not call on_result: the teacher must still handle every item."""

    name = "scripted"

    def __init__(self, answers):
        self.answers = list(answers)
        self.seen = []

    def generate(self, messages, *, on_result=None, json_schema=None, max_new_tokens=1024, temperature=0.0):
        self.seen.extend(messages)
        return [
            GenerationResult(text=self.answers.pop(0), prompt_tokens=10, completion_tokens=5)
            for _ in messages
        ]


def test_a_backend_that_ignores_on_result_still_gets_every_item_stored():
    good = '{"reasoning": "on topic", "evidence": "Cats are animals.", "relevance": 1}'
    backend = ScriptedBackend(["nonsense", good, good, "still nonsense", good])
    with Teacher(backend, max_tries=3) as t:
        s = t.annotate(ITEMS)
        recs = {r["docids"][0]: r for r in t.store.records()}
    assert (s.done, s.failed, s.requests, s.prompt_tokens) == (3, 0, 5, 50)
    assert recs["d1"]["tries"] == 3 and recs["d2"]["tries"] == 1 and recs["d3"]["tries"] == 1
    assert recs["d2"]["output"]["evidence_found"] is True and recs["d1"]["output"]["evidence_found"] is False
