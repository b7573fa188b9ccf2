"""reason2rank.rag: the decomposition parsing table, RRF against a hand computation, linear fusion, citations."""

from __future__ import annotations

import json
import warnings

import pytest

from reason2rank.llm.backend import Backend, GenerationResult
from reason2rank.rag import (
    CitingAnswerer,
    QueryDecomposer,
    linear_fusion,
    parse_cited_answer,
    parse_decomposition,
    reciprocal_rank_fusion,
)
from reason2rank.types import Doc, Query

Q = "vitamn d and fractures or falls"
GOOD = (
    '{"query": "vitamin D and fractures or falls", "sub_queries": ["vitamin D fractures", "vitamin D falls"]}'
)

# (answer, ok, sub_queries, a word every problem list must contain (or None for no problem), repairs)
TABLE = [
    (GOOD, True, ("vitamin D fractures", "vitamin D falls"), None, ()),
    ("```json\n" + GOOD + "\n```", True, ("vitamin D fractures", "vitamin D falls"), None, ("code_fence",)),
    ("<think>two parts</think>Sure: " + GOOD, True, ("vitamin D fractures", "vitamin D falls"), None,
     ("think_removed", "surrounding_text")),
    ('{"query": "q", "sub_queries": ["a", "b",],}', True, ("a", "b"), None, ("trailing_comma",)),
    ("{'query': 'q', 'sub_queries': ['a']}", True, ("a",), None, ("python_literal",)),
    ('{"sub_queries": "only one"}', True, ("only one",), None, ()),
    ('{"sub_queries": ["a", "A ", " a", "b"]}', True, ("a", "b"), "repeated", ()),
    ('{"sub_queries": ["a", 3, null, ""]}', True, ("a",), "not strings", ()),
    ("I cannot do that.", False, (Q,), "not usable JSON", ()),
    ('{"query": "q", "sub_queries": ["a", "b"', False, (Q,), "not closed", ()),
    ("", False, (Q,), "empty", ()),
    ('{"query": "q"}', False, (Q,), "no \"sub_queries\"", ()),
    ('{"sub_queries": []}', False, (Q,), "no sub-query", ()),
    ('{"sub_queries": ["", "  "]}', False, (Q,), "no sub-query", ()),
    ('{"sub_queries": {"a": 1}}', False, (Q,), "not a list", ()),
    (json.dumps({"sub_queries": [f"s{i}" for i in range(50)]}), True, tuple(f"s{i}" for i in range(8)), "cap of 8", ()),
]  # fmt: skip


@pytest.mark.parametrize("answer,ok,subs,problem,repairs", TABLE)
def test_decomposition_parsing_table(answer, ok, subs, problem, repairs):
    d = parse_decomposition(answer, Q, max_sub_queries=8)
    assert (d.ok, d.sub_queries) == (ok, subs)
    assert tuple(d.repairs) == repairs
    if problem is None:
        assert d.problems == ()
    else:
        assert any(problem in p for p in d.problems), d.problems
    if not ok:
        assert d.query == Q and d.search_queries() == [Q]


def test_cleaned_query_comes_first_and_each_search_query_once():
    d = parse_decomposition('{"query": "Vitamin D", "sub_queries": ["vitamin d", "falls"]}', "vitamn d")
    assert d.query == "Vitamin D"
    assert d.search_queries() == ["Vitamin D", "falls"]
    assert d.search_queries(include_query=False) == ["vitamin d", "falls"]


def test_cap_is_configurable_and_validated():
    d = parse_decomposition(json.dumps({"sub_queries": ["a", "b", "c"]}), "q", max_sub_queries=2)
    assert d.sub_queries == ("a", "b") and "3 sub-queries, over the cap of 2" in d.problems[0]
    with pytest.raises(ValueError, match="max_sub_queries"):
        parse_decomposition(GOOD, "q", max_sub_queries=0)


@pytest.mark.parametrize("query", ["", "   "])
def test_an_empty_query_is_an_error_naming_it(query):
    with pytest.raises(ValueError, match="query 'q7' is empty"):
        parse_decomposition(GOOD, query, qid="q7")


class ScriptedBackend(Backend):
    """Answers from a list, in order; records the prompts."""

    name = "scripted"

    def __init__(self, answers):
        self.answers = list(answers)
        self.prompts = []

    def generate(self, messages, *, on_result=None, json_schema=None, **settings):
        out = []
        for m in messages:
            self.prompts.append((m, json_schema, settings))
            a = self.answers.pop(0)
            out.append(
                GenerationResult(text=None, error=a) if isinstance(a, Exception) else GenerationResult(text=a)
            )
        return out


def test_decomposer_batches_warns_on_failure_and_falls_back():
    backend = ScriptedBackend([GOOD, "no json here", RuntimeError("server down")])
    dec = QueryDecomposer(backend, max_sub_queries=4)
    with pytest.warns(UserWarning) as caught:
        out = dec.decompose_batch([Query("q1", Q), Query("q2", "cats"), "dogs"])
    assert [d.ok for d in out] == [True, False, False]
    assert out[0].sub_queries == ("vitamin D fractures", "vitamin D falls") and out[0].qid == "q1"
    assert out[1].sub_queries == ("cats",) and out[2].sub_queries == ("dogs",)
    msgs = [str(w.message) for w in caught]
    assert any("query 'q2': decomposition failed, using the original query alone" in m for m in msgs)
    assert any("query 'dogs'" in m and "server down" in m for m in msgs)
    messages, schema, settings = backend.prompts[0]
    assert (
        messages[-1]["content"].startswith(f"Query: {Q}")
        and "1 to 4 search queries" in messages[-1]["content"]
    )
    assert schema is not None and schema[0]["required"] == ["query", "sub_queries"]
    with pytest.raises(ValueError, match="query 'q9' is empty"):
        dec.decompose_batch([Query("q1", Q), _empty("q9")])


def _empty(qid):
    """A Query whose text is blank (Query itself refuses one; a DataFrame row can still carry it)."""
    q = object.__new__(Query)
    object.__setattr__(q, "id", qid)
    object.__setattr__(q, "text", " ")
    return q


def test_rrf_equals_a_hand_computation_and_keeps_provenance():
    lists = [("sq1", ["d1", "d2", "d3"]), ("sq2", ["d3", "d1"]), ("sq3", []), ("sq4", ["d4", "d4", "d2"])]
    fused = reciprocal_rank_fusion(lists)  # k = 60, ranks from 1; sq3 found nothing; d4 twice in sq4
    hand = {
        "d1": 1 / 61 + 1 / 62,
        "d2": 1 / 62 + 1 / 63,  # sq4: the duplicate d4 takes rank 2, so d2 is rank 3
        "d3": 1 / 63 + 1 / 61,
        "d4": 1 / 61,
    }
    assert [f.doc_id for f in fused] == ["d1", "d3", "d2", "d4"]  # d1 and d3 tie: d1 has a rank 1 first
    for f in fused:
        assert f.score == pytest.approx(hand[f.doc_id], abs=1e-15)
    assert [f.rank for f in fused] == [1, 2, 3, 4]
    by_id = {f.doc_id: f for f in fused}
    assert by_id["d1"].found_by == ("sq1", "sq2") and dict(by_id["d1"].ranks) == {"sq1": 1, "sq2": 2}
    assert by_id["d2"].found_by == ("sq1", "sq4") and dict(by_id["d2"].ranks) == {"sq1": 2, "sq4": 3}
    assert by_id["d4"].found_by == ("sq4",) and dict(by_id["d4"].ranks) == {"sq4": 1}
    assert [f.doc_id for f in reciprocal_rank_fusion(lists, top_k=2)] == ["d1", "d3"]
    assert reciprocal_rank_fusion([("a", []), ("b", [])]) == []


def test_rrf_refuses_repeated_labels_and_bad_arguments():
    with pytest.raises(ValueError, match="repeated: \\['a'\\]"):
        reciprocal_rank_fusion([("a", ["d1"]), ("a", ["d2"])])
    with pytest.raises(ValueError, match="top_k"):
        reciprocal_rank_fusion([("a", ["d1"])], top_k=0)
    with pytest.raises(ValueError, match="k must be"):
        reciprocal_rank_fusion([("a", ["d1"])], k=-1)


def test_linear_fusion_normalises_each_list():
    fused = linear_fusion(
        [("bm25", [("d1", 12.0), ("d2", 8.0), ("d3", 4.0)]), ("dense", [("d3", 0.9), ("d4", 0.5)])],
        weights=[0.5, 0.5],
    )
    hand = {"d1": 0.5 * 1.0, "d2": 0.5 * 0.5, "d3": 0.5 * 0.0 + 0.5 * 1.0, "d4": 0.0}
    assert {f.doc_id: f.score for f in fused} == pytest.approx(hand)
    assert [f.doc_id for f in fused] == [
        "d1",
        "d3",
        "d2",
        "d4",
    ]  # d1/d3 tie at 0.5: d1 has rank 1 in bm25 first
    assert fused[1].found_by == ("bm25", "dense")
    with pytest.raises(ValueError, match="non-finite score"):
        linear_fusion([("a", [("d1", float("nan"))])])
    with pytest.raises(ValueError, match="2 weights for 1 ranked lists"):
        linear_fusion([("a", [("d1", 1.0)])], weights=[1, 2])


DOCS = ["d10", "d20", "d30"]


@pytest.mark.parametrize(
    "text,answer,citations,invalid",
    [
        ("<think>[1] says yes</think>Yes [1].", "Yes [1].", ("d10",), ()),
        ("Yes [2][3], see [1, 3].", "Yes [2][3], see [1][3].", ("d20", "d30", "d10"), ()),
        ("Yes [4] and [0].", "Yes and.", (), (4, 0)),
        ("Both [1-3] agree; not [2, 9].", "Both [1][2][3] agree; not [2].", ("d10", "d20", "d30"), (9,)),
        ("No documents answer this.", "No documents answer this.", (), ()),
        ("<think>unfinished [1]", "", (), ()),
    ],
)
def test_citations_only_ever_name_kept_documents(text, answer, citations, invalid):
    a = parse_cited_answer(text, DOCS)
    assert (a.answer, a.citations, a.invalid) == (answer, citations, invalid)
    assert set(a.citations) <= set(DOCS)


def test_answerer_prompts_numbered_kept_documents_and_maps_citations():
    backend = ScriptedBackend(["<think>doc 2 is on point</think>It does [2]; [6] is not there."])
    docs = [Doc(f"d{i}", f"text {i}", title=f"T{i}") for i in range(1, 8)]
    a = CitingAnswerer(backend, num_docs=3).answer("does it?", docs)
    user = backend.prompts[0][0][-1]["content"]
    assert "[1] T1. text 1" in user and "[3] T3. text 3" in user and "[4]" not in user
    assert user.endswith("Question: does it?") and "<think>" in backend.prompts[0][0][0]["content"]
    assert a.doc_ids == ("d1", "d2", "d3") and a.citations == ("d2",) and a.invalid == (6,)
    assert a.answer == "It does [2]; is not there." and a.reasoning == "doc 2 is on point"
    with pytest.raises(ValueError, match="query is empty"):
        CitingAnswerer(ScriptedBackend([])).answer(" ", docs)
    out = CitingAnswerer(ScriptedBackend([RuntimeError("boom")])).answer("q", docs[:1])
    assert out.error == "boom" and out.citations == ()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert CitingAnswerer(ScriptedBackend(["none"])).answer("q", []).doc_ids == ()
