"""pt_r2r.rag on a real pyterrier-pisa index: decomposer >> per-sub-query BM25 fused by RRF >> reranker >>
cited answers, with scripted LLM answers and a tiny reranker."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pt = pytest.importorskip("pyterrier")
pytest.importorskip("pyterrier_pisa")

from pyterrier_pisa import PisaIndex  # noqa: E402

import pt_r2r  # noqa: E402
from pt_r2r.rag import R2RAnswerer, R2RFusion, R2RQueryDecomposer, R2RSubQueryRetriever  # noqa: E402
from reason2rank.llm.backend import Backend, GenerationResult  # noqa: E402
from reason2rank.rag import reciprocal_rank_fusion  # noqa: E402

CORPUS = {
    "v1": "Vitamin D supplements and the risk of hip fractures in older adults.",
    "v2": "Vitamin D and falls: a trial in nursing homes shows fewer falls.",
    "v3": "Calcium intake and bone density in women.",
    "c1": "Coffee consumption and sleep quality.",
    "c2": "Caffeine and heart rate in young adults.",
}


class Scripted(Backend):
    """Answers by the purpose tag of each request; records the prompts."""

    name = "scripted"

    def __init__(self, decompositions, answers):
        self.decompositions, self.answers, self.prompts = list(decompositions), list(answers), []

    def generate(self, messages, *, on_result=None, json_schema=None, **settings):
        out = []
        for m in messages:
            self.prompts.append(m)
            pool = self.decompositions if json_schema is not None else self.answers
            out.append(GenerationResult(text=pool.pop(0)))
        return out


@pytest.fixture(scope="module")
def bm25(tmp_path_factory):
    index = PisaIndex(str(tmp_path_factory.mktemp("pisa") / "idx"), text_field="text", overwrite=True)
    index.index({"docno": k, "text": v} for k, v in CORPUS.items())
    return index.bm25(num_results=3)


def _topics():
    return pd.DataFrame({"qid": ["q1", "q2"], "query": ["vitamn d fractures and falls", "coffee sleep"]})


def test_subqueries_fused_by_rrf_keep_provenance_and_citations_name_kept_docs(bm25, tiny_bert_dir):
    dec = json.dumps({"query": "vitamin D fractures and falls", "sub_queries": ["hip fractures", "falls"]})
    llm = Scripted(
        [dec, "not json"],  # q2's decomposition fails: its original query alone, with a warning
        ["<think>[1] is about fractures</think>Yes [1], and [2]; not [7].", "Coffee [1]."],
    )
    decompose = R2RQueryDecomposer(llm, max_sub_queries=4)
    retrieve = R2RSubQueryRetriever(bm25, num_results=10)
    with pytest.warns(UserWarning, match="query 'q2': decomposition failed"):
        rows = decompose(_topics())
    assert rows["query"].tolist() == [
        "vitamin D fractures and falls", "hip fractures", "falls", "coffee sleep"]  # fmt: skip
    assert rows["query_0"].tolist()[:3] == ["vitamn d fractures and falls"] * 3
    assert rows["sub_query"].tolist() == [0, 1, 2, 0] and rows["decomposition_ok"].tolist() == [True] * 3 + [
        False
    ]

    fused = retrieve(rows)
    # hand RRF from BM25's own lists per search query
    lists = {q: bm25.search(q)["docno"].tolist() for q in rows["query"][:3]}
    hand = reciprocal_rank_fusion(list(lists.items()))
    q1 = fused[fused["qid"] == "q1"]
    assert q1["docno"].tolist() == [f.doc_id for f in hand]
    assert q1["score"].tolist() == pytest.approx([f.score for f in hand])
    assert q1["rank"].tolist() == list(range(len(hand))) and set(q1["query"]) == {
        "vitamn d fractures and falls"
    }
    assert not q1["docno"].duplicated().any()
    for _, r in q1.iterrows():
        assert r["sub_queries"] == [q for q, docs in lists.items() if r["docno"] in docs]
        assert r["sub_query_ranks"] == {
            q: docs.index(r["docno"]) + 1 for q, docs in lists.items() if r["docno"] in docs
        }

    rerank = pt_r2r.R2RReranker(tiny_bert_dir, family="cross-encoder")
    rag = decompose >> retrieve >> pt_r2r.TextLoader(CORPUS) >> rerank % 2
    llm.decompositions, llm.answers = [dec, "not json"], llm.answers
    with pytest.warns(UserWarning):
        ranked = rag(_topics())
    out = R2RAnswerer(llm, num_docs=2)(ranked)
    assert out.columns[:3].tolist() == ["qid", "query", "qanswer"]
    r1 = out.set_index("qid").loc["q1"]
    top2 = ranked[ranked["qid"] == "q1"].sort_values("rank")["docno"].tolist()
    assert r1["context_docnos"] == top2 and r1["citations"] == top2  # [1] and [2] of the prompt
    assert r1["invalid_citations"] == [7] and r1["qanswer"] == "Yes [1], and [2]; not."
    assert r1["reasoning"] == "[1] is about fractures"
    assert set(r1["provenance"]) == set(top2)
    for d in top2:
        assert r1["provenance"][d] == q1.set_index("docno").loc[d, "sub_queries"]
    prompt = llm.prompts[-2][-1]["content"]
    assert "Question: vitamn d fractures and falls" in prompt  # the original query is answered


def test_a_search_query_that_retrieves_nothing_is_warned_and_skipped(bm25):
    rows = pd.DataFrame({"qid": ["q1", "q1", "q2"], "query": ["vitamin falls", "zzzz", "qqqq"],
                         "query_0": ["v", "v", "x"], "sub_query": [0, 1, 0]})  # fmt: skip
    with pytest.warns(UserWarning) as caught:
        out = R2RSubQueryRetriever(bm25)(rows)
    msgs = [str(w.message) for w in caught]
    assert "query 'q1': search query 'zzzz' retrieved nothing" in msgs
    assert "query 'q2': no search query retrieved anything" in msgs
    assert set(out["qid"]) == {"q1"} and all(s == ["vitamin falls"] for s in out["sub_queries"])


def test_empty_inputs_and_empty_queries(bm25):
    empty = pd.DataFrame({"qid": [], "query": []})
    llm = Scripted([], [])
    assert len(R2RQueryDecomposer(llm)(empty)) == 0 and llm.prompts == []
    assert len(R2RSubQueryRetriever(bm25)(empty)) == 0
    with pytest.raises(ValueError, match="query 'q3' is empty"):
        R2RQueryDecomposer(llm)(pd.DataFrame({"qid": ["q3"], "query": ["  "]}))


def test_hybrid_fusion_of_two_retrievers(bm25, tmp_path):
    other = pt.Transformer.from_df(pd.DataFrame({"qid": ["q1", "q1"], "query": ["coffee"] * 2, "docno": ["c2", "v1"],
                                                 "score": [5.0, 1.0], "rank": [0, 1]}), uniform=True)  # fmt: skip
    topics = pd.DataFrame({"qid": ["q1"], "query": ["coffee"]})
    rrf = R2RFusion([bm25, other], names=["bm25", "other"])(topics)
    b = bm25(topics)["docno"].tolist()
    hand = reciprocal_rank_fusion([("bm25", b), ("other", ["c2", "v1"])])
    assert rrf["docno"].tolist() == [f.doc_id for f in hand]
    assert rrf["found_by"].tolist() == [list(f.found_by) for f in hand]
    lin = R2RFusion([bm25, other], method="linear", weights=[0.5, 2.0], names=["bm25", "other"])(topics)
    bs = bm25(topics).set_index("docno")["score"]
    norm = (bs - bs.min()) / (bs.max() - bs.min()) if bs.max() > bs.min() else bs * 0 + 1
    hand = {d: 0.5 * v for d, v in norm.items()}
    hand["c2"] = hand.get("c2", 0.0) + 2.0  # other: c2 normalises to 1, v1 to 0
    hand.setdefault("v1", 0.0)
    assert dict(zip(lin["docno"], lin["score"])) == pytest.approx(hand)
    assert lin["docno"].iloc[0] == "c2" and lin["found_by"].iloc[0][-1] == "other"
    with pytest.raises(ValueError, match="weights apply to method='linear' only"):
        R2RFusion([bm25, other], weights=[1, 1])
