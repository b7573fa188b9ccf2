"""Each strategy with a real (weak) instruct LLM, SmolLM2-135M-Instruct: real generation, real parsing (and real
parsing failures), real timings. The model ranks badly; what is checked is that the answers are generated,
parsed or repaired as documented, counted, and that batching across queries changes nothing."""

from __future__ import annotations

import warnings

import pytest

import reason2rank
from real_models import smollm2_or_skip
from reason2rank import Doc, Query

pytestmark = pytest.mark.slow

QUERIES = [
    (Query("q1", "how long do fleas live"),
     [Doc("a", "Fleas live for two to three months, and up to a year in good conditions."),
      Doc("b", "Cats purr when they are content."), Doc("c", "The flea life cycle has four stages: egg, larva, pupa, adult."),
      Doc("d", "Paris is the capital of France."), Doc("e", "Adult fleas start to feed within hours of finding a host.")]),
    (Query("q2", "what is the capital of france"),
     [Doc("f", "Berlin is the capital of Germany."), Doc("g", "Paris is the capital and largest city of France."),
      Doc("h", "France is a country in western Europe."), Doc("i", "Fleas bite.")]),
]  # fmt: skip


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_or_skip()


@pytest.mark.parametrize(
    ("family", "options"),
    [("listwise", {"window": 4, "stride": 2}),
     ("listwise", {"window": 5, "stride": 2, "prompt": "reasoning_v1", "max_new_tokens": 48}),
     ("setwise", {"num_child": 2, "k": 3}),
     ("setwise", {"num_child": 3, "k": 2, "prompt": "rank_r1_v1", "max_new_tokens": 48}),
     ("setwise", {"num_child": 2, "k": 3, "readout": "likelihood"}),
     ("pairwise", {"mode": "sorting", "k": 1}),
     ("pairwise", {"mode": "allpairs", "readout": "likelihood"})],
)  # fmt: skip
def test_each_strategy_with_a_real_llm(smollm2, family, options):
    ranker = reason2rank.load(smollm2, family=family, dtype="fp32", device="cpu", **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the model is weak: repaired answers are expected and counted
        together = ranker.rerank_batch(QUERIES, explain=2)
        alone = [ranker.rerank_batch([item])[0] for item in QUERIES]
    for (_, docs), ranked, single in zip(QUERIES, together, alone):
        assert sorted(sd.doc.id for sd in ranked) == sorted(d.id for d in docs)
        assert [sd.doc.id for sd in ranked] == [sd.doc.id for sd in single]
        info = ranked.info
        assert info["calls"] > 0 and info["prompt_tokens"] > 0
        if options.get("readout") != "likelihood":
            assert info["completion_tokens"] > 0
        assert 0 <= info["repaired"] <= info["calls"]
    records = ranker.llm.log.records
    assert all(r.error is None for r in records) and len({r.tags["qid"] for r in records}) == 2


def test_icr_with_a_real_llm_reads_the_attention_eager_attention_gives(smollm2):
    """SmolLM2's 30 layers: the attention ICR reads (SDPA + our softmax rows over a KV cache) equals eager
    attention's ``output_attentions`` of one full pass, and a ranking costs one long and two short passes."""
    import torch
    from transformers import AutoModelForCausalLM

    from reason2rank.strategies.icr import build_icr_prompt, query_attention

    ranker = reason2rank.load(smollm2, family="icr", dtype="fp32", device="cpu", progress=False)
    q, docs = QUERIES[1]
    p = build_icr_prompt(ranker.llm.backend, ranker.prompt, q.text, [d.text for d in docs])
    got = query_attention(ranker.llm.backend.model, p.prefix_ids, p.suffixes[:1])[0]
    eager = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        attn = eager(input_ids=torch.tensor([p.prefix_ids + p.suffixes[0]]), output_attentions=True).attentions
    want = sum(a[0, :, -len(p.suffixes[0]) :].mean(1).sum(0) for a in attn)[: len(p.prefix_ids)]
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    ranked = ranker.rerank_batch(QUERIES, explain=1)
    for (_, docs), r in zip(QUERIES, ranked):
        assert sorted(sd.doc.id for sd in r) == sorted(d.id for d in docs)
        assert r.info["forward_passes"] == 3 and r[0].evidence in {d.text for d in docs}
