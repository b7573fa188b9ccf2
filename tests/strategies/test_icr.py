"""ICR: prompts and token spans from the offset mapping, two forward passes over one KV cache equal full passes,
calibration equals a hand computation, a planted document wins under a scripted attention pattern, windows,
saving, errors, the command line and both adapters."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import reason2rank  # noqa: E402
import tiny_models  # noqa: E402
from reason2rank import Doc, Query  # noqa: E402
from reason2rank.llm.attention import attention_recording  # noqa: E402
from reason2rank.llm.prompts import PromptTemplate  # noqa: E402
from reason2rank.strategies import ICRReranker  # noqa: E402
from reason2rank.strategies.icr import build_icr_prompt, calibrated_scores, query_attention  # noqa: E402

TEXTS = ["the city of paris is in france . it has water", "music and movie book", "the capital of england is london",
         "health food water , and more food"]  # fmt: skip


def docs_of(texts):
    return [Doc(f"d{i}", t) for i, t in enumerate(texts)]


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def icr(request, tiny_llama_dir, tiny_qwen2_dir):
    path = tiny_llama_dir if request.param == "llama" else tiny_qwen2_dir
    return ICRReranker(path, dtype="fp32", progress=False)


def test_spans_cover_exactly_each_documents_characters_and_the_prefix_is_shared(icr):
    passages = [icr.cutter(t) for t in TEXTS]
    p = build_icr_prompt(icr.llm.backend, icr.prompt, "capital of france", passages)
    tok = icr.llm.tokenizer
    assert p.prefix_ids + p.suffixes[0] == tok(p.text, add_special_tokens=False)["input_ids"]
    na_text = p.text.replace("capital of france", "N/A")
    assert p.prefix_ids + p.suffixes[1] == tok(na_text, add_special_tokens=False)["input_ids"]
    for (a, b), (ca, cb), text in zip(p.spans, p.char_spans, passages):
        assert p.text[ca:cb] == text
        covered = set()
        for s, e in p.offsets[a:b]:
            covered |= set(range(s, e))
        assert set(range(ca, cb)) <= covered  # every character of the document
        assert all(p.text[i].isspace() for i in covered - set(range(ca, cb)))  # and nothing else but spaces
    assert all(p.spans[i][1] <= p.spans[i + 1][0] for i in range(len(p.spans) - 1))
    assert p.offsets[-1][1] <= p.text.index("Please find")  # the suffix starts after the documents


def test_two_passes_on_one_cache_equal_full_passes_of_each_prompt(icr):
    model = icr.llm.backend.model
    p = build_icr_prompt(icr.llm.backend, icr.prompt, "capital of france", TEXTS)
    got = query_attention(model, p.prefix_ids, p.suffixes)
    for suffix, scores in zip(p.suffixes, got):
        ids = torch.tensor([p.prefix_ids + suffix])
        with torch.no_grad(), attention_recording(model, rows=len(suffix)) as rec:
            model(input_ids=ids)
        torch.testing.assert_close(scores, rec.total()[0, : len(p.prefix_ids)], rtol=0, atol=1e-5)


def test_calibration_and_masking_equal_a_hand_computation():
    s_q = torch.tensor([1.0, 2.0, 3.0, 10.0, 0.5, 0.5, 0.5, 0.5, 0.5, -20.0, 4.0])
    s_na = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    spans = [(0, 4), (4, 10), (10, 11), (4, 4)]
    scores, per_token = calibrated_scores(s_q, s_na, spans)
    d0 = np.array([0.5, 1.5, 2.5, 9.5])  # threshold mean - 2 std = 3.5 - 2*4.0 < all: all kept
    d1 = np.array([0.5] * 5 + [-20.0])  # mean -2.9167, std 8.3772: threshold -19.67 drops the -20
    assert d0.mean() - 2 * d0.std(ddof=1) < d0.min()
    assert d1.mean() - 2 * d1.std(ddof=1) > -20.0
    np.testing.assert_allclose(scores, [d0.sum(), 2.5, 3.0, 0.0], rtol=1e-6)
    assert per_token[1].tolist() == [0.5] * 5 + [0.0]
    raw, _ = calibrated_scores(s_q, None, spans)  # no calibration: plain sums
    np.testing.assert_allclose(raw, [16.0, -17.5, 4.0, 0.0], rtol=1e-6)


def _copy_head_model(path) -> str:
    """A one-layer Llama whose attention logits are 8·(similarity of the tokens' embeddings): every query token
    attends to the earlier copies of itself (no rotary effect: the fast-rotating dimensions are zeroed and the
    others barely turn at theta 1e30)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_models.make_causal_lm_tokenizer("llama")
    hidden, heads = 64, 4
    head_dim = hidden // heads
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=heads, num_key_value_heads=heads, rope_theta=1e30,
                      max_position_embeddings=2048, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    attn = model.model.layers[0].self_attn
    proj = torch.eye(hidden)
    for h in range(heads):  # the pair (0, head_dim/2) of each head rotates by one radian per position: off
        proj[h * head_dim] = 0
        proj[h * head_dim + head_dim // 2] = 0
    with torch.no_grad():
        attn.q_proj.weight.copy_(proj * 8**0.5 * head_dim**0.25)
        attn.k_proj.weight.copy_(proj * 8**0.5 * head_dim**0.25)
        emb = torch.randn(len(tok), hidden)
        model.model.embed_tokens.weight.copy_(emb / emb.norm(dim=1, keepdim=True) * hidden**0.5)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_a_planted_document_that_repeats_the_query_ranks_first(tmp_path):
    path = _copy_head_model(tmp_path / "copy_head")
    texts = ["music and movie book about history", "health food water for people", "paris france capital city "
             "paris france capital", "school student university data", "computer science network model"]  # fmt: skip
    ranker = ICRReranker(path, dtype="fp32", progress=False)
    for reverse in (True, False):
        ranker.reverse = reverse
        ranked = ranker.rerank(Query("q", "paris france capital"), docs_of(texts), explain=1)
        assert ranked[0].doc.id == "d2", [(sd.doc.id, sd.score) for sd in ranked]
        assert "paris france capital" in ranked[0].evidence


def test_rerank_info_windows_and_merging(tiny_llama_dir):
    ranker = ICRReranker(tiny_llama_dir, dtype="fp32", progress=False)
    docs = docs_of(TEXTS)
    one = ranker.rank_batch([(Query("q", "capital city"), docs)])[0]
    assert one.info == {"strategy": "icr", "windows": 1, "forward_passes": 3,
                        "prompt_tokens": one.info["prompt_tokens"], "tokens_dropped": one.info["tokens_dropped"]}  # fmt: skip
    assert np.isfinite(one.scores).all() and set(one.evidence) == {0, 1, 2, 3}
    windowed = ICRReranker(tiny_llama_dir, dtype="fp32", progress=False, window=2)
    two = windowed.rank_batch([(Query("q", "capital city"), docs)])[0]
    assert two.info["windows"] == 2 and two.info["forward_passes"] == 6
    # each window's scores are those of ranking that window alone (reversed: docs 2,3 then 0,1 in prompt order)
    alone = windowed.rank_batch([(Query("q", "capital city"), docs[2:])])[0]
    np.testing.assert_allclose(two.scores[2:], alone.scores, rtol=1e-6)
    # a context that holds fewer documents splits them into windows by itself
    full = build_icr_prompt(ranker.llm.backend, ranker.prompt, "capital city", TEXTS).tokens
    tight = ICRReranker(tiny_llama_dir, dtype="fp32", progress=False, context_length=full - 1)
    assert tight.rank_batch([(Query("q", "capital city"), docs)])[0].info["windows"] >= 2
    with pytest.raises(ValueError, match="more than the context"):
        ICRReranker(tiny_llama_dir, dtype="fp32", context_length=20).rank_batch([(Query("q", "x"), docs)])


def test_depth_and_batched_equals_one_query_at_a_time(tiny_llama_dir):
    ranker = ICRReranker(tiny_llama_dir, dtype="fp32", progress=False, depth=3)
    items = [(Query("a", "capital city"), docs_of(TEXTS)), (Query("b", "food water"), docs_of(TEXTS[::-1]))]
    together = ranker.rank_batch(items)
    for item, r in zip(items, together):
        np.testing.assert_allclose(ranker.rank_batch([item])[0].scores, r.scores, rtol=1e-6)
        assert r.scores[3] < r.scores[:3].min()  # the one below the depth stays last


def test_layers_calibration_off_and_save_load(tiny_qwen2_dir, tmp_path):
    ranker = ICRReranker(tiny_qwen2_dir, dtype="fp32", progress=False, layers=[-1], calibrate=False, window=3)
    assert ranker.layers == [1]
    q = Query("q", "capital city")
    before = ranker.rank_batch([(q, docs_of(TEXTS))])[0]
    assert before.info["forward_passes"] == 2 * 2  # two windows, no calibration pass
    out = ranker.save(tmp_path / "icr")
    again = reason2rank.load(out, dtype="fp32", progress=False)
    assert isinstance(again, ICRReranker) and (again.layers, again.calibrate, again.window) == ([1], False, 3)
    np.testing.assert_array_equal(again.rank_batch([(q, docs_of(TEXTS))])[0].scores, before.scores)


def test_bad_input_is_clear(tiny_llama_dir):
    with pytest.raises(ValueError, match="local transformers model"):
        ICRReranker(backend="openai:m@http://127.0.0.1:9")
    with pytest.raises(ValueError, match="layers must be"):
        ICRReranker(tiny_llama_dir, layers=[7])
    with pytest.raises(ValueError, match="window must be"):
        ICRReranker(tiny_llama_dir, window=0)
    query_first = PromptTemplate.parse(
        "# task: attention\n=== user ===\nQuery: {{query}}\n\n{{passages}}\n", source="query_first"
    )
    with pytest.raises(ValueError, match="before .or among. the passages"):
        ICRReranker(tiny_llama_dir, prompt=query_first).rank_batch([(Query("q", "x"), docs_of(TEXTS))])


def test_cli_pyterrier_and_haystack(tiny_llama_dir, tmp_path):
    from reason2rank.cli import main
    from reason2rank.data import read_trec_run, write_rankllm_candidates

    items = [(Query("q0", "capital city"), docs_of(TEXTS)), (Query("q1", "food"), docs_of(TEXTS[:3]))]
    cands, out = tmp_path / "c.json", tmp_path / "run.trec"
    write_rankllm_candidates(cands, items)
    argv = ["rerank", "--model", tiny_llama_dir, "--strategy", "icr", "--window", "2", "--dtype", "fp32",
            "--no-progress", "--candidates", str(cands), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    run = read_trec_run(out)
    assert sorted(run) == ["q0", "q1"] and len(run["q0"]) == 4 and len(run["q1"]) == 3
    direct = ICRReranker(tiny_llama_dir, dtype="fp32", window=2, progress=False).rerank_batch(items)
    assert [sd.doc.id for sd in direct[0]] == [d for d, _ in run["q0"]]

    pytest.importorskip("pyterrier")
    pytest.importorskip("haystack")
    import pandas as pd
    from haystack import Document

    import pt_r2r
    from haystack_r2r import R2RRanker

    frame = pd.DataFrame({"qid": ["q0"] * 4, "query": ["capital city"] * 4, "docno": [f"d{i}" for i in range(4)],
                          "text": TEXTS})  # fmt: skip
    ranked = pt_r2r.R2RReranker(tiny_llama_dir, family="icr", dtype="fp32", window=2)(frame)
    assert list(ranked.docno) == [sd.doc.id for sd in direct[0]] and list(ranked["rank"]) == [0, 1, 2, 3]
    hs = R2RRanker(
        model=tiny_llama_dir, model_kwargs={"family": "icr", "window": 2, "dtype": "fp32"}, top_k=2
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = hs.run(
            query="capital city", documents=[Document(id=f"d{i}", content=t) for i, t in enumerate(TEXTS)]
        )
    assert [d.id for d in got["documents"]] == [sd.doc.id for sd in direct[0][:2]]
