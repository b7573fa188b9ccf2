"""The LLM layer: the one decoding loop (equal to transformers' own greedy generation, with and without the shared
prefix), the transformers backend (prefix, stop strings, duplicates, seeds, label likelihoods), the OpenAI backend
(settings sent, reasoning fields read), vLLM request building, the response cache, and golden prompts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mock_openai_server import MockChatServer, Reply
from reason2rank.llm import LLM, GenerationSettings, LLMRequest, ResponseCache, UnsupportedOption
from reason2rank.llm.decoding import decode
from reason2rank.llm.openai_backend import OpenAIBackend
from reason2rank.llm.prompts import builtin_template, messages_to_text
from reason2rank.llm.transformers_backend import TransformersBackend
from reason2rank.llm.vllm_backend import VLLMBackend, sampling_kwargs

GOLDEN = Path(__file__).resolve().parent / "golden"
LONG = "the query is about paris and france and the capital city of the country please rank the documents "


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_decode_equals_transformers_greedy_generation_with_and_without_the_shared_prefix(llama):
    model, tok = llama
    base = tok(LONG * 2, add_special_tokens=False)["input_ids"]
    prompts = [
        base + tok(s, add_special_tokens=False)["input_ids"] for s in ["a doc", "music data and books", "x"]
    ]
    eos, pad = [tok.eos_token_id], tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    shared = decode(model, prompts, pad_token_id=pad, eos_token_ids=eos, max_new_tokens=10)
    unshared = decode(
        model, prompts, pad_token_id=pad, eos_token_ids=eos, max_new_tokens=10, share_prefix=False
    )
    for p, a, b in zip(prompts, shared, unshared):
        ref = model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False, pad_token_id=pad)[
            0, len(p) :
        ]
        ref = ref.tolist()
        if eos[0] in ref:
            ref = ref[: ref.index(eos[0])]
        assert a.ids == b.ids == ref


def test_decode_repetition_penalty_equals_transformers_processor_over_the_answer_only(llama):
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    model, tok = llama
    eos, pad = [tok.eos_token_id], tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    prompts = [tok(s, add_special_tokens=False)["input_ids"] for s in (LONG, "music data and books " * 3)]
    plain = decode(model, prompts, pad_token_id=pad, eos_token_ids=eos, max_new_tokens=24)
    got = decode(
        model, prompts, pad_token_id=pad, eos_token_ids=eos, max_new_tokens=24, repetition_penalty=2.0
    )
    for p, a in zip(prompts, got):
        proc = RepetitionPenaltyLogitsProcessor(
            2.0, prompt_ignore_length=len(p)
        )  # the prompt is not penalised
        ref = model.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False, pad_token_id=pad,
                             logits_processor=LogitsProcessorList([proc]))[0, len(p) :].tolist()  # fmt: skip
        if eos[0] in ref:
            ref = ref[: ref.index(eos[0])]
        assert a.ids == ref
    assert any(a.ids != b.ids for a, b in zip(got, plain)), (
        "a random tiny model repeats itself within 24 tokens"
    )
    assert len(set(got[0].ids)) >= len(set(plain[0].ids))
    with pytest.raises(ValueError, match="repetition_penalty must be >= 1"):
        GenerationSettings(16, repetition_penalty=0.5)
    assert GenerationSettings(16, repetition_penalty=1.3).options() == {"repetition_penalty": 1.3}
    assert "repetition_penalty" not in GenerationSettings(16).key()  # older cache keys stay valid


def test_decode_with_a_seed_is_reproducible_and_stop_strings_end_it(llama):
    model, tok = llama
    prompt = [tok(LONG, add_special_tokens=False)["input_ids"]]
    kw = {"pad_token_id": 0, "eos_token_ids": [tok.eos_token_id], "max_new_tokens": 12, "temperature": 1.0}
    a = decode(model, prompt, seed=3, **kw)[0].ids
    assert a == decode(model, prompt, seed=3, **kw)[0].ids
    text = tok.decode(a)
    word = next((w for w in text.split() if len(w) > 1), None)
    if word is not None:
        stopped = decode(model, prompt, seed=3, stop=[word], tokenizer=tok, **kw)[0]
        assert stopped.finish_reason == "stop" and stopped.stopped_by == word and len(stopped.ids) <= len(a)


def test_transformers_backend_prefix_duplicates_and_label_likelihoods(tiny_llama_dir):
    backend = TransformersBackend(tiny_llama_dir, batch_size=4, device="cpu", dtype="fp32")
    msgs = [[{"role": "user", "content": "rank these"}]] * 3 + [[{"role": "user", "content": "other"}]]
    seen = []
    out = backend.generate(msgs, max_new_tokens=5, prefix="Passage:", on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == [0, 1, 2, 3] and out[0] == out[1] == out[2]  # identical prompts: generated once
    assert backend.encode(msgs[0], "Passage:")[
        -len(backend.tokenizer("Passage:", add_special_tokens=False)["input_ids"]) :
    ]
    with pytest.raises(UnsupportedOption, match="cannot honour"):
        backend.generate(msgs, response_format="x")
    logp = backend.label_logprobs(msgs[:1], [" A", " B", " C"], prefix="Passage:")[0]
    ids = backend.label_token_ids([" A", " B", " C"])
    with torch.inference_mode():
        enc = torch.tensor([backend.encode(msgs[0], "Passage:")])
        ref = torch.log_softmax(backend.model(input_ids=enc).logits[0, -1].float(), -1)[ids].numpy()
    np.testing.assert_allclose(logp, ref, atol=1e-5)


def test_openai_backend_sends_settings_and_reads_the_reasoning_field():
    def answer(body):
        return Reply(body=json.dumps({"choices": [{"message": {"content": "[2] > [1]", "reasoning": "2 answers it"},
                                     "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 3}}))  # fmt: skip

    with MockChatServer(answer) as server:
        backend = OpenAIBackend("m", server.url, max_in_flight=1, assistant_prefill=True)
        [res] = backend.generate([[{"role": "user", "content": "q"}]], max_new_tokens=7, top_p=0.5, seed=2,
                                 stop=("END",), prefix="<think>")  # fmt: skip
        sent = server.requests[0]
    assert res.text == "[2] > [1]" and res.reasoning == "2 answers it" and res.latency_s > 0
    assert sent["top_p"] == 0.5 and sent["seed"] == 2 and sent["stop"] == ["END"] and sent["max_tokens"] == 7
    assert (
        sent["messages"][-1] == {"role": "assistant", "content": "<think>"} and sent["continue_final_message"]
    )
    with pytest.raises(UnsupportedOption, match="prefix"):
        OpenAIBackend("m", "http://localhost:1").generate(
            [[{"role": "user", "content": "q"}]], prefix="<think>"
        )


def test_vllm_requests_are_built_without_importing_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # importing vllm would fail
    backend = VLLMBackend("org/model", tensor_parallel_size=2)
    [(conv, chat, kw)] = backend.requests([[{"role": "user", "content": "q"}]], max_new_tokens=9, temperature=0.0,
                                          stop=("x",), seed=1, prefix="<think>", json_schema={"type": "object"})  # fmt: skip
    assert conv[-1] == {"role": "assistant", "content": "<think>"}
    assert chat == {"add_generation_prompt": False, "continue_final_message": True}
    assert kw == {"max_tokens": 9, "temperature": 0.0, "seed": 1, "stop": ["x"],
                  "structured_outputs": {"json": {"type": "object"}}}  # fmt: skip
    assert sampling_kwargs(5, 0.7, {"top_p": 0.9}) == {"max_tokens": 5, "temperature": 0.7, "top_p": 0.9}
    assert backend.engine_kwargs == {"enable_prefix_caching": True, "tensor_parallel_size": 2}
    with pytest.raises(ImportError, match="reason2rank\\[vllm\\]"):
        backend.generate([[{"role": "user", "content": "q"}]])


def test_the_cache_is_keyed_by_backend_prompt_and_settings(tmp_path):
    calls = []

    def answer(body):
        calls.append(body)
        return f"answer {len(calls)}"

    with MockChatServer(answer) as server:
        path = tmp_path / "c.sqlite"
        req = LLMRequest([{"role": "user", "content": "q"}], GenerationSettings(max_new_tokens=5))
        with LLM(f"openai:m@{server.url}", cache=path) as llm:
            [(a, rec_a)] = llm.generate([req])
            [(b, rec_b)] = llm.generate([req])
            [(c, _)] = llm.generate([LLMRequest(req.messages, GenerationSettings(max_new_tokens=6))])
        with LLM(f"openai:other@{server.url}", cache=path) as other:
            [(d, _)] = other.generate([req])
        with LLM(f"openai:m@{server.url}", cache=path) as again:
            [(e, rec_e)] = again.generate([req])
    assert a.text == b.text == e.text == "answer 1" and c.text == "answer 2" and d.text == "answer 3"
    assert not rec_a.cached and rec_b.cached and rec_e.cached and len(calls) == 3
    assert len(ResponseCache(path)) == 3


@pytest.mark.parametrize(
    ("name", "passages"),
    [("listwise_rankzephyr_v1", 3), ("listwise_rankgpt_v1", 2), ("listwise_reasoning_v1", 2),
     ("setwise_plain_v1", 3), ("setwise_rank_r1_v1", 3), ("pairwise_prp_v1", 0), ("pairwise_reasoning_v1", 0)],
)  # fmt: skip
def test_strategy_prompts_render_exactly(name, passages):
    tpl = builtin_template(name)
    texts = [
        "Fleas live for weeks.",
        "Cats purr when they are happy.",
        "The flea life cycle has four stages.",
    ]
    values = {"query": "how long do fleas live"}
    if tpl.task == "pairwise":
        values.update(document_a=texts[0], document_b=texts[1])
    text = messages_to_text(tpl.render(values, texts[:passages]), tpl.prefix)
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("R2R_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"prompt differs from {path}"
