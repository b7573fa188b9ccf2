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
     ("listwise", {"window": 5, "stride": 2, "prompt": "reasoning_v1", "max_new_tokens": 96}),
     ("setwise", {"num_child": 2, "k": 3}),
     ("setwise", {"num_child": 3, "k": 2, "prompt": "rank_r1_v1", "max_new_tokens": 96}),
     ("setwise", {"num_child": 2, "k": 3, "readout": "likelihood"}),
     ("pairwise", {"mode": "sorting", "k": 2}),
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
