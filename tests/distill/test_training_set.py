"""The distillation training set: built from real teacher stores (an in-process scripted backend) and qrels,
saved and loaded, validated and split."""

from __future__ import annotations

import json
import re

import pytest

from reason2rank.data import write_qrels
from reason2rank.distill.dataset import Candidate, Comparison, TrainingQuery, TrainingSet
from reason2rank.llm.backend import Backend, GenerationResult
from reason2rank.teacher import AnnotationStore, PairPolicy, Teacher
from reason2rank.types import Doc, Query

# ------------------------------------------------------------------------------------ a scripted teacher


class FnBackend(Backend):
    """Answers every prompt in process with ``fn(messages)``; no server, no model."""

    def __init__(self, fn, name="scripted"):
        self.fn = fn
        self.name = name

    def generate(self, messages, *, on_result=None, json_schema=None, max_new_tokens=1024, temperature=0.0):
        return [GenerationResult(text=self.fn(m), prompt_tokens=1, completion_tokens=1) for m in messages]


def doc_id(text, docs):
    return next(d.id for d in docs.values() if d.text == text.strip())


QUERY = Query("q1", "how long do fleas live")
DOCS = {
    d.id: d
    for d in [
        Doc("a", "Fleas live two to three months. Their cycle has four stages."),
        Doc("b", "Flea eggs hatch in days. Larvae follow."),
        Doc("c", "Cat food is on sale. Buy two bags."),
        Doc("d", "Adult fleas feed on blood. They live on a host."),
        Doc("e", "The weather is sunny today. Rain later."),
        Doc("f", "A document the teacher cannot grade."),
    ]
}
CANDIDATE_ORDER = ["c", "a", "e", "b", "d", "f"]
#: direct answers: grade and evidence (b's evidence is not in the document; f gets unusable answers)
DIRECT = {
    "a": (3, "Fleas live two to three months."),
    "b": (2, "Eggs hatch within a week."),
    "c": (0, None),
    "d": (1, "Adult fleas feed on blood."),
    "e": (0, None),
}
#: the teacher's preference when comparing (it disagrees with its own grades on b vs d)
COMPARE_ORDER = ["a", "d", "b", "c", "e", "f"]


def direct_and_compare(messages):
    last = messages[-1]["content"]
    if '"preferred"' in last:
        m = re.search(r"Document A:\n(.*?)\n\nDocument B:\n(.*?)\n\n", last, re.DOTALL)
        x, y = doc_id(m.group(1), DOCS), doc_id(m.group(2), DOCS)
        if {x, y} == {"c", "d"}:  # position bias: always A, so A/B and B/A disagree
            return json.dumps({"reasoning": "The first one.", "preferred": "A"})
        if {x, y} == {"c", "e"}:
            return json.dumps({"reasoning": "Neither is about fleas.", "preferred": "tie"})
        if COMPARE_ORDER.index(x) < COMPARE_ORDER.index(y):
            return json.dumps({"reasoning": f"Document A ({x}) beats document B ({y}).", "preferred": "A"})
        return json.dumps({"reasoning": f"Document B ({y}) beats document A ({x}).", "preferred": "B"})
    text = re.search(r"Document:\n(.*?)\n\nRelevance scale", last, re.DOTALL).group(1)
    d = doc_id(text, DOCS)
    if d == "f":
        return "I cannot say."
    grade, evidence = DIRECT[d]
    return json.dumps({"reasoning": f"graded {d}", "evidence": evidence, "relevance": grade})


def items(order=CANDIDATE_ORDER, query=QUERY):
    return [(query, [DOCS[d] for d in order])]


@pytest.fixture
def dc_store(tmp_path):
    """A real direct + compare (both orders) teacher run over QUERY's candidates."""
    path = tmp_path / "annotations.jsonl"
    policy = PairPolicy(strategies=("adjacent",), swap=True, shuffle_ab=False)
    with Teacher(FnBackend(direct_and_compare), store=path, pairs=policy, max_tries=1) as t:
        summary = t.annotate(items(), tasks=("direct", "compare"))
    assert (summary.done, summary.failed, summary.inconsistent) == (9, 1, 1)
    return path


# ------------------------------------------------------------------------------------ from_store


def test_direct_and_compare_store_gives_grades_reasons_evidence_and_oriented_comparisons(dc_store):
    ts = TrainingSet.from_store(dc_store, items())
    assert len(ts) == 1
    tq = ts[0]
    assert tq.query == QUERY and tq.doc_ids == CANDIDATE_ORDER  # candidate order; f kept: it is compared
    grades = {c.doc.id: c.grade for c in tq.candidates}
    assert grades == {"a": 3.0, "b": 2.0, "c": 0.0, "d": 1.0, "e": 0.0, "f": None}
    # no listwise record: rank by grade, ties (c, e) in candidate order, ungraded f unranked
    assert {c.doc.id: c.teacher_rank for c in tq.candidates} == {
        "a": 1,
        "b": 2,
        "d": 3,
        "c": 4,
        "e": 5,
        "f": None,
    }
    assert tq.candidate("a").reasoning == "graded a" and tq.candidate("f").reasoning is None
    assert tq.candidate("a").evidence == "Fleas live two to three months."
    assert tq.candidate("d").evidence == "Adult fleas feed on blood."
    assert tq.candidate("b").evidence is None  # the teacher's sentence is not in the document
    assert tq.candidate("c").evidence is None

    comps = {frozenset((c.better, c.worse)): c for c in tq.comparisons}
    assert len(tq.comparisons) == 4 and frozenset("cd") not in comps  # the inconsistent pair is skipped
    assert comps[frozenset("ab")] == Comparison("a", "b", "Document A (a) beats document B (b).")
    # the teacher preferred B in the A/B order: better = d, and the reasoning is the B/A answer, with d as A
    assert comps[frozenset("bd")] == Comparison("d", "b", "Document A (d) beats document B (b).")
    assert comps[frozenset("ce")] == Comparison("c", "e", "Neither is about fleas.", tie=True)
    assert comps[frozenset("ef")] == Comparison("e", "f", "Document A (e) beats document B (f).")

    src = ts.source
    assert src["kind"] == "teacher_store" and src["teacher"] == "scripted" and src["store"] == str(dc_store)
    assert (src["skipped_inconsistent"], src["skipped_failed"], src["unmatched_records"]) == (1, 1, 0)
    assert src["used_records"] == {"direct": 5, "compare": 4, "listwise": 0}
    stats = ts.stats()
    assert (stats["queries"], stats["candidates"], stats["graded"], stats["ranked"]) == (1, 6, 5, 5)
    assert (stats["with_reasoning"], stats["with_evidence"], stats["comparisons"], stats["ties"]) == (
        5,
        2,
        4,
        1,
    )
    assert stats["source"]["skipped_inconsistent"] == 1


def test_store_object_path_and_record_iterable_give_the_same_set(dc_store):
    from_path = TrainingSet.from_store(dc_store, items())
    with AnnotationStore(dc_store) as store:
        from_store = TrainingSet.from_store(store, items())
        records = list(store.records())
    from_records = TrainingSet.from_store(iter(records), items())
    assert from_path.queries == from_store.queries == from_records.queries


def test_unmatched_records_and_small_queries_are_counted_not_used(dc_store):
    other = Query("q2", "an unrelated query")
    cands = [(QUERY, [DOCS["a"], DOCS["c"]]), (other, [DOCS["b"]])]
    ts = TrainingSet.from_store(dc_store, cands)
    assert [c.doc.id for c in ts[0].candidates] == ["a", "c"] and ts[0].comparisons == []
    assert ts.qids == ["q1"]
    # direct b, d, e and the four compare records that involve a document outside the candidates
    assert ts.source["unmatched_records"] == 7 and ts.source["queries_without_records"] == 1
    dropped = TrainingSet.from_store(dc_store, cands, min_candidates=3)
    assert len(dropped) == 0 and dropped.source["queries_too_few_candidates"] == 1
    # the same query id with another text: the teacher answered a different question
    renamed = TrainingSet.from_store(dc_store, [(Query("q1", "flea markets"), list(DOCS.values()))])
    assert len(renamed) == 0 and renamed.source["query_text_mismatch"] == 9  # every ok record


def test_candidates_without_any_annotation_are_left_out(dc_store):
    extra = Doc("z", "A candidate the teacher never saw.")
    ts = TrainingSet.from_store(dc_store, [(QUERY, [*(DOCS[d] for d in CANDIDATE_ORDER), extra])])
    assert "z" not in ts[0].doc_ids and ts.source["unannotated_candidates"] == 1
    with pytest.raises(KeyError, match="query 'q1' has no candidate 'z'"):
        ts[0].candidate("z")


def test_several_teachers_need_a_choice_and_the_filter_keeps_one(dc_store):
    def grade_one(messages):
        return json.dumps({"reasoning": "second opinion", "evidence": None, "relevance": 1})

    with Teacher(FnBackend(grade_one), store=dc_store, teacher_name="teacher-2") as t:
        t.annotate(items(["a", "b", "c"]), tasks=("direct",))
    with pytest.raises(ValueError, match=r"2 teachers \(scripted, teacher-2\).*teacher="):
        TrainingSet.from_store(dc_store, items())
    two = TrainingSet.from_store(dc_store, items(), teacher="teacher-2")
    assert two.source["teacher"] == "teacher-2" and two.source["used_records"]["direct"] == 3
    assert two[0].doc_ids == ["c", "a", "b"] and two[0].comparisons == []
    assert [(c.grade, c.teacher_rank, c.reasoning) for c in two[0].candidates] == [
        (1.0, 1, "second opinion"),
        (1.0, 2, "second opinion"),
        (1.0, 3, "second opinion"),
    ]
    one = TrainingSet.from_store(dc_store, items(), teacher="scripted")
    assert one.queries == TrainingSet.from_store(dc_store, items(), teacher="scripted").queries
    assert len(one[0].comparisons) == 4
    with pytest.raises(ValueError, match="no annotations of teacher 'nobody'.*scripted, teacher-2"):
        TrainingSet.from_store(dc_store, items(), teacher="nobody")


LW_DOCS = {
    d.id: d
    for d in [
        Doc("p1", "Fleas live about three months. Some live longer."),
        Doc("p2", "Fleas are insects. They jump."),
        Doc("p3", "An adult flea lives two to three months on a host. Without a host it dies sooner."),
        Doc("p4", "Ticks are not fleas. They carry disease."),
        Doc("p5", "The flea life cycle takes weeks to months. Warmth speeds it up."),
    ]
}
LW_PREFERENCE = ["p3", "p5", "p1", "p4", "p2"]


def listwise_answer(messages):
    passages = []
    for m in messages:
        match = re.match(r"\[(\d+)\] (.*)", m["content"], re.DOTALL) if m["role"] == "user" else None
        if match:
            passages.append((int(match.group(1)), doc_id(match.group(2), LW_DOCS)))
    ranked = sorted(passages, key=lambda p: LW_PREFERENCE.index(p[1]))
    return json.dumps(
        {
            "ranked_passages": [
                {
                    "identifier": n,
                    "direct_reason": f"{d} direct",
                    "listwise_reason": f"{d} above the rest",
                    "direct_answer_sentence": "An invented sentence."
                    if d == "p4"
                    else LW_DOCS[d].text.split(". ")[0],
                }
                for n, d in ranked
            ]
        }
    )


@pytest.fixture
def lw_store(tmp_path):
    path = tmp_path / "listwise.jsonl"
    with Teacher(FnBackend(listwise_answer), store=path, window=3, stride=2) as t:
        summary = t.annotate([(QUERY, list(LW_DOCS.values()))], tasks=("listwise",))
    assert summary.done == 2  # windows p1-p3 and p3-p5
    return path


def test_listwise_store_gives_merged_ranks_evidence_and_neighbour_comparisons(lw_store):
    ts = TrainingSet.from_store(lw_store, [(QUERY, list(LW_DOCS.values()))])
    tq = ts[0]
    # window 1 ranks p3 > p1 > p2 in the first three places, window 2 reorders p3's, p4's and p5's places
    ranks = {c.doc.id: c.teacher_rank for c in tq.candidates}
    assert ranks == {"p3": 1, "p1": 2, "p2": 3, "p5": 4, "p4": 5}
    # no direct grades: grades from ranks, 3 * (n - rank) / (n - 1)
    assert {c.doc.id: c.grade for c in tq.candidates} == {
        "p3": 3.0,
        "p1": 2.25,
        "p2": 1.5,
        "p5": 0.75,
        "p4": 0.0,
    }
    assert ts.source["queries_graded_from_rank"] == 1
    assert tq.candidate("p5").reasoning == "p5 direct"
    assert tq.candidate("p3").evidence == "An adult flea lives two to three months on a host"
    assert tq.candidate("p4").evidence is None  # the sentence is not in the passage
    assert [(c.better, c.worse, c.reasoning) for c in tq.comparisons] == [
        ("p3", "p1", "p3 above the rest"),
        ("p1", "p2", "p1 above the rest"),
        ("p3", "p5", "p3 above the rest"),
        ("p5", "p4", "p5 above the rest"),
    ]
    ungraded = TrainingSet.from_store(lw_store, [(QUERY, list(LW_DOCS.values()))], grade_from_rank=False)
    assert all(c.grade is None for c in ungraded[0].candidates)
    assert [c.teacher_rank for c in ungraded[0].candidates] == [c.teacher_rank for c in tq.candidates]


def test_hand_written_records_evidence_substring_and_bad_output():
    base = {"teacher": "t", "qid": "q1", "query": QUERY.text, "status": "ok", "task": "direct"}
    records = [
        {
            **base,
            "key": "k1",
            "docids": ["a"],
            "output": {
                "relevance": 2,
                "reasoning": "on topic",
                "evidence": "Fleas live two to three months.",
                "evidence_found": False,
            },
        },  # noqa: E501
        {
            **base,
            "key": "k2",
            "docids": ["b"],
            "output": {
                "relevance": 1,
                "reasoning": "on topic",
                "evidence": "not there",
                "evidence_found": False,
            },
        },  # noqa: E501
        {**base, "key": "k2", "docids": ["b"], "status": "failed", "output": None},  # a failed retry
    ]
    ts = TrainingSet.from_store(records, items(["a", "b"]))
    assert ts[0].candidate("a").evidence == "Fleas live two to three months."  # verbatim in doc.text
    assert ts[0].candidate("b").evidence is None and ts[0].candidate("b").grade == 1.0
    assert ts.source["skipped_failed"] == 0  # the finished record of k2 wins over the failed one
    bad = [
        {**base, "key": "k3", "docids": ["a"], "output": {"relevance": float("nan"), "reasoning": "on topic"}}
    ]
    with pytest.raises(ValueError, match="annotation record 'k3'.*finite"):
        TrainingSet.from_store(bad, items(["a", "b"]))


# ------------------------------------------------------------------------------------ from_qrels


def qrels_candidates():
    q1 = Query("q1", "first query")
    q2 = Query("q2", "second query")
    return [
        (q1, [Doc(f"d{i}", f"text {i}", meta={"first_stage_rank": i}) for i in range(1, 7)]),
        (q2, [Doc("x1", "x one"), Doc("x2", "x two")]),
    ]


QRELS = {"q1": {"d2": 2, "d5": 1, "d9": 3, "d4": 0}, "q2": {"x1": 0}, "q3": {"z": 1}}
CORPUS = {"d9": Doc("d9", "the missed positive", title="Nine", meta={"lang": "en"})}


def test_from_qrels_keeps_positives_and_first_negatives_and_adds_missed_positives(tmp_path):
    ts = TrainingSet.from_qrels(QRELS, qrels_candidates(), negatives=2, docs=CORPUS)
    assert ts.qids == ["q1"]  # q2 has no positive
    tq = ts[0]
    assert tq.doc_ids == ["d1", "d2", "d3", "d5", "d9"]  # d4 and d6 are beyond the 2 first negatives
    assert {c.doc.id: c.grade for c in tq.candidates} == {
        "d1": 0.0,
        "d2": 2.0,
        "d3": 0.0,
        "d5": 1.0,
        "d9": 3.0,
    }
    assert {c.doc.id: c.teacher_rank for c in tq.candidates} == {"d9": 1, "d2": 2, "d5": 3, "d1": 4, "d3": 5}
    assert tq.candidate("d9").doc == Doc("d9", "the missed positive", title="Nine")  # meta left out
    assert all(c.reasoning is None and c.evidence is None for c in tq.candidates) and tq.comparisons == []
    src = ts.source
    assert (src["kind"], src["unretrieved_positives_added"], src["queries_without_positives"]) == (
        "qrels",
        1,
        1,
    )
    assert src["qrels_queries_without_candidates"] == 1

    no_docs = TrainingSet.from_qrels(QRELS, qrels_candidates(), negatives=2)
    assert (
        no_docs[0].doc_ids == ["d1", "d2", "d3", "d5"]
        and no_docs.source["unretrieved_positives_skipped"] == 1
    )
    assert [c.teacher_rank for c in no_docs[0].candidates] == [3, 1, 4, 2]

    path = tmp_path / "qrels.txt"
    write_qrels(path, QRELS)
    everything = TrainingSet.from_qrels(path, qrels_candidates(), add_unretrieved_positives=False)
    assert everything[0].doc_ids == ["d1", "d2", "d3", "d4", "d5", "d6"]
    assert everything.source["qrels"] == str(path)

    sampled = [
        TrainingSet.from_qrels(
            QRELS, qrels_candidates(), negatives=2, docs=CORPUS, sample_negatives=True, seed=s
        )
        for s in (7, 7)
    ]
    assert sampled[0] == sampled[1]
    ids = sampled[0][0].doc_ids
    assert {"d2", "d5", "d9"} <= set(ids) and len(ids) == 5

    assert (
        len(TrainingSet.from_qrels(QRELS, qrels_candidates(), negatives=0, min_candidates=4, docs=CORPUS))
        == 0
    )


# ------------------------------------------------------------------------------------ files


def unicode_set():
    q = Query("q-ü", "¿Cuánto vive una pulga? 跳蚤 🐜")
    cands = [
        Candidate(
            Doc("d\u00e9", 'line one\r\nline two\u2028still one "quoted" \\ 🐜', title="Tïtle"),
            2.25,
            1,
            "weil…",
            "line one",
        ),
        Candidate(Doc("d2", "", title=""), 0.0, 2),
        Candidate(Doc("d3", "no labels at all")),
    ]
    comps = [Comparison("d\u00e9", "d2", "é beats 2"), Comparison("d2", "d3", None, tie=True)]
    return TrainingSet(
        [
            TrainingQuery(q, cands, comps),
            TrainingQuery(Query("q2", "second"), [Candidate(Doc("x", "x"), 1 / 3)]),
        ],
        {"kind": "hand", "note": "ünïcode"},
    )


@pytest.mark.parametrize("name", ["train.jsonl", "train.jsonl.gz"])
def test_save_load_round_trip_is_exact(tmp_path, name):
    ts = unicode_set()
    path = ts.save(tmp_path / name)
    loaded = TrainingSet.load(path)
    assert loaded == ts and loaded.source == {"kind": "hand", "note": "ünïcode"}
    assert loaded[0].candidates[0].doc.text == 'line one\r\nline two\u2028still one "quoted" \\ 🐜'
    assert loaded[1].candidates[0].grade == 1 / 3
    if name.endswith(".jsonl"):
        lines = path.read_text(encoding="utf-8").split("\n")[:-1]
        assert len(lines) == 3
        assert json.loads(lines[0]) == {
            "format": "reason2rank-training-set",
            "version": 1,
            "source": ts.source,
        }
        third = json.loads(lines[1])["candidates"][2]
        assert third == {"docno": "d3", "text": "no labels at all"}  # None fields are left out


def test_store_built_set_round_trips(dc_store, lw_store, tmp_path):
    for store, cands in ((dc_store, items()), (lw_store, [(QUERY, list(LW_DOCS.values()))])):
        ts = TrainingSet.from_store(store, cands)
        assert TrainingSet.load(ts.save(tmp_path / "t.jsonl")) == ts


def test_load_without_header_and_errors_name_the_line(tmp_path):
    path = unicode_set().save(tmp_path / "t.jsonl")
    header, q1, q2 = path.read_text(encoding="utf-8").split("\n")[:-1]
    bare = tmp_path / "bare.jsonl"
    bare.write_text(f"{q1}\n\n{q2}\n", encoding="utf-8")
    loaded = TrainingSet.load(bare)
    assert loaded.queries == unicode_set().queries and loaded.source == {}

    def broken(line2, name):
        p = tmp_path / name
        p.write_text(f"{header}\n{line2}\n{q2}\n", encoding="utf-8")
        return p

    with pytest.raises(ValueError, match=r"torn\.jsonl, line 2: invalid JSON"):
        TrainingSet.load(broken(q1[:40], "torn.jsonl"))
    record = json.loads(q1)
    record["comparisons"][0]["worse"] = "nope"
    with pytest.raises(ValueError, match=r"line 2: .*'nope', not a candidate of this query"):
        TrainingSet.load(broken(json.dumps(record), "comp.jsonl"))
    record = json.loads(q1)
    record["candidates"][1]["docno"] = "d\u00e9"
    with pytest.raises(ValueError, match=r"line 2: .*docno 'dé' occurs twice"):
        TrainingSet.load(broken(json.dumps(record), "dup.jsonl"))
    record = json.loads(q1)
    record["candidates"][0]["grades"] = 1
    with pytest.raises(ValueError, match=r"line 2: .*unknown key\(s\) 'grades'"):
        TrainingSet.load(broken(json.dumps(record), "key.jsonl"))
    with pytest.raises(ValueError, match=r"line 3: query 'q2' already on line 2"):
        TrainingSet.load(broken(q2, "twice.jsonl"))
    other = tmp_path / "other.jsonl"
    other.write_text('{"format": "something-else", "version": 1}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: not a training-set file"):
        TrainingSet.load(other)


def test_failed_save_leaves_the_old_file(tmp_path):
    path = unicode_set().save(tmp_path / "t.jsonl")
    before = path.read_bytes()
    bad = TrainingSet(unicode_set().queries, {"kind": object()})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        bad.save(path)
    mutated = unicode_set()
    mutated[0].candidates[0].grade = float("inf")  # changed after construction: caught before writing
    with pytest.raises(ValueError, match="finite"):
        mutated.save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["t.jsonl"]


# ------------------------------------------------------------------------------------ validation, split


def test_validation_of_queries_and_candidates():
    q = Query("q", "text")
    a, b = Doc("a", "x"), Doc("b", "y")
    with pytest.raises(ValueError, match="docno 'a' occurs twice"):
        TrainingQuery(q, [Candidate(a), Candidate(a)])
    with pytest.raises(ValueError, match="'c', not a candidate"):
        TrainingQuery(q, [Candidate(a), Candidate(b)], [Comparison("a", "c")])
    with pytest.raises(ValueError, match="share teacher_rank 1"):
        TrainingQuery(q, [Candidate(a, teacher_rank=1), Candidate(b, teacher_rank=1)])
    for grade in (float("nan"), float("inf"), "2", True):
        with pytest.raises(ValueError, match="finite number"):
            Candidate(a, grade)
    with pytest.raises(ValueError, match="positive integer"):
        Candidate(a, teacher_rank=0)
    assert Candidate(a, 2).grade == 2.0 and isinstance(Candidate(a, 2).grade, float)
    with pytest.raises(ValueError, match="occurs twice in the training set"):
        TrainingSet([TrainingQuery(q, [Candidate(a)]), TrainingQuery(q, [Candidate(b)])])


def test_split_is_deterministic_disjoint_and_order_independent():
    queries = [TrainingQuery(Query(f"q{i}", f"query {i}"), [Candidate(Doc("d", "t"), 1)]) for i in range(20)]
    ts = TrainingSet(queries, {"kind": "hand"})
    train, dev = ts.split(0.25, seed=1)
    assert (len(train), len(dev)) == (15, 5)
    assert not set(train.qids) & set(dev.qids) and set(train.qids) | set(dev.qids) == set(ts.qids)
    assert train.qids == [q for q in ts.qids if q in set(train.qids)]  # original order kept
    assert ts.split(0.25, seed=1) == (train, dev)
    assert set(TrainingSet(list(reversed(queries))).split(0.25, seed=1)[1].qids) == set(dev.qids)
    assert set(ts.split(0.25, seed=2)[1].qids) != set(dev.qids)
    assert dev.source == {"kind": "hand", "split": {"part": "dev", "dev_fraction": 0.25, "seed": 1}}
    assert len(ts.split(0.01)[1]) == 1 and len(ts.split(0.0)[1]) == 0
    with pytest.raises(ValueError, match="dev_fraction"):
        ts.split(1.5)


def test_single_order_compare_keeps_the_frame_the_teacher_saw(tmp_path):
    """Asked once, a teacher preferring B explains with the better document as B: the comparison says so,
    survives save/load, and a decoder student's group shows the pair in that order."""
    import numpy as np

    from reason2rank.distill.batching import sample_group

    store = AnnotationStore(tmp_path / "one_order.jsonl")
    policy = PairPolicy(strategies=("adjacent",), swap=False, shuffle_ab=False)
    with Teacher(FnBackend(direct_and_compare), store=store, pairs=policy) as t:
        t.annotate(items(["a", "b", "d"]), tasks=("direct", "compare"))  # b (2) vs d (1): prefers d
    store.close()
    ts = TrainingSet.from_store(tmp_path / "one_order.jsonl", items(["a", "b", "d"]))
    comps = {(c.better, c.worse): c for c in ts[0].comparisons}
    flipped = [c for c in comps.values() if not c.better_first]
    assert flipped, "precondition: some pair was shown with the better document second"
    for c in flipped:
        assert c.reasoning.startswith("Document B (" + c.better)  # the answer's own frame
    ts.save(tmp_path / "ts.jsonl")
    assert TrainingSet.load(tmp_path / "ts.jsonl") == ts
    comp = flipped[0]
    g = sample_group(ts[0], 3, np.random.default_rng(0), comparisons_per_query=len(ts[0].comparisons))
    shown = {(a.id, b.id): text for a, b, text in g.comparisons}
    assert shown[(comp.worse, comp.better)] == comp.reasoning
