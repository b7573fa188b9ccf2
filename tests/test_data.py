"""Tests for reason2rank.data: readers, writers, joins and the ir_datasets bridge (no network)."""

from __future__ import annotations

import gzip
import json
import os
import sys
import types
from collections import namedtuple
from pathlib import Path

import pytest

from reason2rank.data import (
    atomic_write,
    candidates_from_run,
    load_candidates,
    load_ir_dataset,
    read_docs_jsonl,
    read_qrels,
    read_rankllm_candidates,
    read_topics,
    read_trec_run,
    write_qrels,
    write_rankllm_candidates,
    write_trec_run,
)
from reason2rank.types import Doc, Query, ScoredDoc
from shared_data import SHARED_DATA

DATA = SHARED_DATA
MOJIBAKE = "1 Â¼ cup of flour â€” cafÃ©"


@pytest.fixture
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared development data not found at {DATA} (set R2R_SHARED_DATA to point at it)")
    return DATA


# --------------------------------------------------------------------------------------------- atomic_write


def test_atomic_write_writes_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_write(target) as fh:
        fh.write("hello\n")
        assert not target.exists()  # nothing visible until the block succeeds
    assert target.read_text(encoding="utf-8") == "hello\n"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_write_binary_mode(tmp_path):
    target = tmp_path / "out.bin"
    with atomic_write(str(target), "wb") as fh:
        fh.write(b"\x00\xff")
    assert target.read_bytes() == b"\x00\xff"


def test_atomic_write_on_error_leaves_no_new_file(tmp_path):
    target = tmp_path / "new.txt"
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write("partial")
        raise RuntimeError("boom")
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_atomic_write_on_error_keeps_original(tmp_path):
    target = tmp_path / "run.trec"
    target.write_text("original\n", encoding="utf-8")
    with pytest.raises(KeyError), atomic_write(target) as fh:
        fh.write("replacement")
        raise KeyError("boom")
    assert target.read_text(encoding="utf-8") == "original\n"
    assert os.listdir(tmp_path) == ["run.trec"]


def test_atomic_write_replaces_existing_file_and_keeps_mode(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old", encoding="utf-8")
    os.chmod(target, 0o640)
    with atomic_write(target) as fh:
        fh.write("new")
    assert target.read_text(encoding="utf-8") == "new"
    if os.name == "posix":
        assert target.stat().st_mode & 0o777 == 0o640


def test_atomic_write_rejects_read_modes(tmp_path):
    with pytest.raises(ValueError, match="modes"), atomic_write(tmp_path / "x", "r"):
        pass
    assert os.listdir(tmp_path) == []


def test_writer_failure_keeps_original_run(tmp_path):
    target = tmp_path / "run.trec"
    target.write_text("q1 Q0 d1 1 1.0 old\n", encoding="utf-8")
    with pytest.raises(ValueError, match="whitespace"):
        write_trec_run(target, {"q1": [("d 1", 1.0)]})
    assert target.read_text(encoding="utf-8") == "q1 Q0 d1 1 1.0 old\n"
    assert os.listdir(tmp_path) == ["run.trec"]


# --------------------------------------------------------------------------------------------- TREC runs


def test_run_round_trip_with_tuples(tmp_path):
    run = {"q2": [("d9", 3.5), ("d1", 1.25), ("d3", -0.1)], "q1": [("d1", 0.1 + 0.2)]}
    path = tmp_path / "run.trec"
    write_trec_run(path, run, tag="bm25")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "q2 Q0 d9 1 3.5 bm25"
    assert lines[2].split()[3] == "3"
    back = read_trec_run(path)
    assert back == run  # exact float round trip, qids in first-seen order
    assert list(back) == ["q2", "q1"]


def test_run_round_trip_with_scored_docs_writes_one_based_ranks(tmp_path):
    scored = [
        ScoredDoc(Doc("b", "text b"), score=0.5, rank=1),
        ScoredDoc(Doc("a", "text a"), score=0.9, rank=0),
    ]
    path = tmp_path / "run.trec"
    write_trec_run(path, {"q": scored})
    assert path.read_text(encoding="utf-8").splitlines() == [
        "q Q0 a 1 0.9 reason2rank",
        "q Q0 b 2 0.5 reason2rank",
    ]
    assert read_trec_run(path) == {"q": [("a", 0.9), ("b", 0.5)]}


def test_run_read_orders_by_rank_then_score(tmp_path):
    path = tmp_path / "run.trec"
    path.write_text(
        "q1 Q0 c 3 1.0 t\nq1 Q0 a 1 5.0 t\n\nq1 Q0 b 2 2.0 t\nq1 Q0 e 2 3.0 t\nq0 Q0 x 1 1 t\n",
        encoding="utf-8",
    )
    run = read_trec_run(path)
    assert run["q1"] == [("a", 5.0), ("e", 3.0), ("b", 2.0), ("c", 1.0)]
    assert list(run) == ["q1", "q0"]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("q1 Q0 d2 2 1.0", "expected 6 fields"),
        ("q1 Q0 d2 two 1.0 t", "rank 'two'"),
        ("q1 Q0 d2 2 high t", "score 'high'"),
        ("q1 Q0 d1 2 1.0 t", "appears twice"),
    ],
)
def test_run_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = tmp_path / "bad.trec"
    path.write_text(f"q1 Q0 d1 1 2.0 t\n\n{bad_line}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        read_trec_run(path)
    assert f"{path}, line 3" in str(info.value)


def test_run_gzip_round_trip(tmp_path):
    path = tmp_path / "run.trec.gz"
    write_trec_run(path, {"q": [("d", 1.0)]})
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        assert fh.read() == "q Q0 d 1 1.0 reason2rank\n"
    assert read_trec_run(str(path)) == {"q": [("d", 1.0)]}


def test_write_run_rejects_bad_tag_and_mixed_items(tmp_path):
    with pytest.raises(ValueError, match="run tag"):
        write_trec_run(tmp_path / "r", {"q": [("d", 1.0)]}, tag="my run")
    mixed = [("d", 1.0), ScoredDoc(Doc("e", ""), 0.5, 1)]
    with pytest.raises(ValueError, match="mix"):
        write_trec_run(tmp_path / "r", {"q": mixed})
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------------------------- qrels


def test_qrels_round_trip(tmp_path):
    qrels = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": -1}}
    path = tmp_path / "qrels.txt"
    write_qrels(path, qrels)
    assert path.read_text(encoding="utf-8").splitlines()[0] == "q1 0 d1 2"
    assert read_qrels(path) == qrels


def test_qrels_beir_tsv_with_header(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text(
        "query-id\tcorpus-id\tscore\n1\t31715818\t1\n3\t14717500\t1\n3\t99\t0\n", encoding="utf-8"
    )
    assert read_qrels(path) == {"1": {"31715818": 1}, "3": {"14717500": 1, "99": 0}}


def test_qrels_malformed_line_names_line(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 1\nq1 0 d2 yes\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: relevance 'yes'"):
        read_qrels(path)
    path.write_text("q1 0 d1 1\nq1 d2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_qrels(path)


# --------------------------------------------------------------------------------------------- topics


def test_topics_tsv(tmp_path):
    path = tmp_path / "topics.tsv"
    path.write_text("156493\tdo goldfish grow\n1110199\twhat is wifi\tvs bluetooth\n", encoding="utf-8")
    assert read_topics(path) == {"156493": "do goldfish grow", "1110199": "what is wifi\tvs bluetooth"}


def test_topics_tsv_header_is_skipped_and_bad_line_named(tmp_path):
    path = tmp_path / "topics.tsv"
    path.write_text("qid\tquery\n1\tfirst\n", encoding="utf-8")
    assert read_topics(path) == {"1": "first"}
    path.write_text("1\tfirst\n2 no tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_topics(path)


def test_topics_jsonl_decided_by_content(tmp_path):
    path = tmp_path / "queries.txt"  # extension says nothing
    path.write_text(
        '{"_id": "1", "text": "first", "metadata": {}}\n{"qid": 2, "query": "second"}\n'
        '{"query_id": "3", "text": "third"}\n',
        encoding="utf-8",
    )
    assert read_topics(path) == {"1": "first", "2": "second", "3": "third"}


def test_topics_jsonl_error_names_line(tmp_path):
    path = tmp_path / "queries.jsonl"
    path.write_text('{"_id": "1", "text": "first"}\n{"_id": "2"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: .*needs an id"):
        read_topics(path)


def test_topics_trec_sgml(tmp_path):
    path = tmp_path / "topics.301-450"
    path.write_text(
        "<top>\n<num> Number: 301\n<title> International Organized Crime\n\n<desc> Description:\n"
        "Identify organizations.\n\n<narr> Narrative:\nA relevant document...\n</top>\n\n"
        "<top>\n<num> Number: 302 \n<title> Topic: Poliomyelitis and\n  Post-Polio\n<desc> Description:\nx\n</top>\n",
        encoding="utf-8",
    )
    assert read_topics(path) == {
        "301": "International Organized Crime",
        "302": "Poliomyelitis and Post-Polio",
    }


def test_topics_trec_web_xml(tmp_path):
    path = tmp_path / "wt.xml"
    path.write_text(
        '<webtrack2013>\n<topic number="201" type="single">\n  <query>raspberry pi</query>\n'
        "  <description>What is a raspberry pi?</description>\n</topic>\n</webtrack2013>\n",
        encoding="utf-8",
    )
    assert read_topics(path) == {"201": "raspberry pi"}


def test_topics_tsv_with_markup_in_text_stays_tsv(tmp_path):
    path = tmp_path / "topics.tsv"
    path.write_text("1\twhat does <top> mean in html\n2\t<topic> tag\n", encoding="utf-8")
    assert read_topics(path) == {"1": "what does <top> mean in html", "2": "<topic> tag"}


def test_topics_gzip(tmp_path):
    path = tmp_path / "topics.tsv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("7\tgzipped query\n")
    assert read_topics(path) == {"7": "gzipped query"}


# --------------------------------------------------------------------------------------------- documents


def test_docs_jsonl_keys_and_meta(tmp_path):
    path = tmp_path / "corpus.jsonl"
    records = [
        {"_id": "4983", "title": "A title", "text": MOJIBAKE, "metadata": {"year": 2001}},
        {"id": 7, "contents": "pyserini style"},
        {"docno": "d3", "body": None, "url": "http://x"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    docs = read_docs_jsonl(path)
    assert list(docs) == ["4983", "7", "d3"]
    assert docs["4983"] == Doc("4983", MOJIBAKE, "A title", {"metadata": {"year": 2001}})
    assert docs["7"].text == "pyserini style" and docs["7"].title is None
    assert docs["d3"].text is None and docs["d3"].meta == {"url": "http://x"}  # null text: a doc without text


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"_id": "2", "text": ', "invalid JSON"),
        ('{"text": "no id"}', "no document id"),
        ('{"_id": "2", "abstract": "x"}', "no document text"),
        ('{"_id": "1", "text": "again"}', "already used on line 1"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_docs_jsonl_errors_name_line(tmp_path, bad, message):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"_id": "1", "text": "ok"}\n' + bad + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message) as info:
        read_docs_jsonl(path)
    assert f"{path}, line 2" in str(info.value)


def test_invalid_utf8_bytes_are_replaced_not_fatal(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "1", "text": "caf\xe9"}\n')
    assert read_docs_jsonl(path)["1"].text == "caf\ufffd"


# --------------------------------------------------------------------------------------------- candidates


def _items():
    query = Query("q1", "what is Â¼ cup")
    docs = [
        Doc("d1", MOJIBAKE, meta={"first_stage_score": 12.5, "first_stage_rank": 1}),
        Doc(
            "d2",
            "second",
            title="Title 2",
            meta={"first_stage_score": 11.0, "first_stage_rank": 2, "src": "x"},
        ),
    ]
    return [(query, docs)]


def test_rankllm_round_trip_docs_preserves_mojibake(tmp_path):
    path = tmp_path / "cands.json"
    items = _items()
    write_rankllm_candidates(path, items)
    raw = path.read_text(encoding="utf-8")
    assert "Â¼" in raw  # written as UTF-8, not \u escapes
    data = json.loads(raw)
    assert data[0]["query"] == "what is Â¼ cup"
    assert data[0]["hits"][0] == {"content": MOJIBAKE, "qid": "q1", "docid": "d1", "rank": 1, "score": 12.5}
    assert read_rankllm_candidates(path) == items


def test_rankllm_round_trip_jsonl_and_gzip(tmp_path):
    items = _items()
    for name in ("cands.jsonl", "cands.jsonl.gz"):
        write_rankllm_candidates(tmp_path / name, items)
        assert read_rankllm_candidates(tmp_path / name) == items
    assert len((tmp_path / "cands.jsonl").read_text(encoding="utf-8").splitlines()) == 1


def test_rankllm_write_scored_docs(tmp_path):
    query = Query("q1", "query")
    scored = [
        ScoredDoc(Doc("b", "text b", meta={"first_stage_rank": 1}), 0.2, rank=1),
        ScoredDoc(
            Doc("a", "text a"), 0.8, rank=0, reasoning="because", evidence="text a", comparison="better"
        ),
    ]
    path = tmp_path / "reranked.json"
    write_rankllm_candidates(path, [(query, scored)])
    hits = json.loads(path.read_text(encoding="utf-8"))[0]["hits"]
    assert [(h["docid"], h["rank"], h["score"]) for h in hits] == [("a", 1, 0.8), ("b", 2, 0.2)]
    assert hits[0]["reasoning"] == "because" and "reasoning" not in hits[1]
    assert "first_stage_rank" not in hits[1]  # the file's rank/score are the reranker's now
    back = read_rankllm_candidates(path)
    assert [d.id for d in back[0][1]] == ["a", "b"]
    assert back[0][1][0].meta == {
        "first_stage_score": 0.8,
        "first_stage_rank": 1,
        "reasoning": "because",
        "comparison": "better",
        "evidence": "text a",
    }
    assert back[0][1][1].meta["first_stage_rank"] == 2


def test_rankllm_reads_unsorted_hits_and_newer_format(tmp_path):
    path = tmp_path / "cands.jsonl"
    old = {
        "query": "old style",
        "hits": [
            {"qid": 5, "docid": "x", "content": "X", "rank": 2, "score": 1.0},
            {"qid": 5, "docid": "y", "content": "Y", "rank": 1, "score": 2.0},
        ],
    }
    new = {
        "query": {"text": "new style", "qid": "6"},
        "candidates": [{"docid": 3, "score": 0.5, "doc": {"contents": "C", "title": "T"}}],
    }
    path.write_text(json.dumps(old) + "\n" + json.dumps(new) + "\n", encoding="utf-8")
    (q1, d1), (q2, d2) = read_rankllm_candidates(path)
    assert q1 == Query("5", "old style") and [d.id for d in d1] == ["y", "x"]
    assert d1[0].meta == {"first_stage_score": 2.0, "first_stage_rank": 1}
    assert q2 == Query("6", "new style")
    assert d2 == [Doc("3", "C", "T", {"first_stage_score": 0.5})]


def test_rankllm_errors_name_line(tmp_path):
    path = tmp_path / "cands.jsonl"
    good = json.dumps(
        {"query": "q", "hits": [{"qid": 1, "docid": "a", "content": "A", "rank": 1, "score": 1}]}
    )
    path.write_text(good + "\n" + json.dumps({"query": "q", "hits": []}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: no query id"):
        read_rankllm_candidates(path)
    path.write_text(good + "\n{broken\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: invalid JSON"):
        read_rankllm_candidates(path)


def test_rankllm_unserialisable_meta_keeps_existing_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("[]\n", encoding="utf-8")
    bad = [(Query("q", "t"), [Doc("d", "x", meta={"obj": object()})])]
    with pytest.raises(ValueError, match="JSON-serialisable"):
        write_rankllm_candidates(path, bad)
    assert path.read_text(encoding="utf-8") == "[]\n"
    assert os.listdir(tmp_path) == ["c.json"]


def test_rankllm_empty_hits_round_trip_with_top_level_qid(tmp_path):
    path = tmp_path / "c.json"
    write_rankllm_candidates(path, [(Query("q9", "lonely"), [])])
    assert read_rankllm_candidates(path) == [(Query("q9", "lonely"), [])]


# --------------------------------------------------------------------------------------------- joins


def test_candidates_from_run_joins_and_keeps_first_stage():
    run = {"q1": [("d2", 9.0), ("d1", 8.0), ("d3", 7.0)]}
    docs = {"d1": Doc("d1", "one", meta={"k": 1}), "d2": Doc("d2", "two"), "d3": "plain text"}
    [(query, cands)] = candidates_from_run(run, {"q1": "query one"}, docs, depth=2)
    assert query == Query("q1", "query one")
    assert [d.id for d in cands] == ["d2", "d1"]
    assert cands[1].meta == {"k": 1, "first_stage_score": 8.0, "first_stage_rank": 2}
    assert docs["d1"].meta == {"k": 1}  # the input is not mutated
    full = candidates_from_run(run, {"q1": "query one"}, lambda i: docs[i] if i != "d3" else Doc(i, "3"))
    assert [d.text for d in full[0][1]] == ["two", "one", "3"]


def test_candidates_from_run_lists_missing_ids():
    run = {f"q{i}": [(f"d{i}", 1.0)] for i in range(8)}
    with pytest.raises(ValueError) as info:
        candidates_from_run(run, {"q0": "x"}, {})
    message = str(info.value)
    assert "7 run queries" in message and "'q1', 'q2', 'q3', 'q4', 'q5' and 2 more" in message
    assert "topics file" in message
    topics = {f"q{i}": "x" for i in range(8)}
    with pytest.raises(ValueError, match=r"run documents have no text: 'd1', 'd2'.*JSONL"):
        candidates_from_run({"q1": [("d1", 1.0), ("d2", 0.5)]}, topics, lambda i: None)
    with pytest.raises(ValueError, match="depth"):
        candidates_from_run(run, topics, {}, depth=0)


def test_load_candidates_from_files(tmp_path):
    write_trec_run(tmp_path / "run.trec", {"q1": [("d1", 2.0), ("d2", 1.0)]})
    (tmp_path / "topics.tsv").write_text("q1\tthe query\n", encoding="utf-8")
    (tmp_path / "docs.jsonl").write_text(
        '{"_id": "d1", "text": "one"}\n{"_id": "d2", "text": "two"}\n', encoding="utf-8"
    )
    items = load_candidates(
        run=tmp_path / "run.trec", topics=str(tmp_path / "topics.tsv"), docs=tmp_path / "docs.jsonl", depth=1
    )
    expected_doc = Doc("d1", "one", meta={"first_stage_score": 2.0, "first_stage_rank": 1})
    assert items == [(Query("q1", "the query"), [expected_doc])]
    write_rankllm_candidates(tmp_path / "c.json", items)
    assert load_candidates(tmp_path / "c.json") == items


def test_load_candidates_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="nothing to rerank"):
        load_candidates()
    with pytest.raises(ValueError, match="not both"):
        load_candidates(tmp_path / "c.json", run=tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="run file"):
        load_candidates(run=str(tmp_path / "missing.trec"), topics="t.tsv", docs="d.jsonl")
    write_trec_run(tmp_path / "run.trec", {"q1": [("d1", 2.0)]})
    with pytest.raises(ValueError, match="needs topics"):
        load_candidates(run=tmp_path / "run.trec")


# --------------------------------------------------------------------------------------------- ir_datasets

_Query = namedtuple("_Query", ["query_id", "title", "description"])
_TextQuery = namedtuple("_TextQuery", ["query_id", "text"])
_DocT = namedtuple("_DocT", ["doc_id", "title", "body", "url"])
_Qrel = namedtuple("_Qrel", ["query_id", "doc_id", "relevance", "iteration"])
_Scored = namedtuple("_Scored", ["query_id", "doc_id", "score"])


class _FakeStore:
    def __init__(self, docs):
        self.docs = docs
        self.calls = []

    def get_many(self, ids):
        self.calls.append(list(ids))
        return {i: self.docs[i] for i in ids if i in self.docs}


class _FakeDataset:
    def __init__(self, queries, docs, qrels=(), scored=()):
        self._queries, self._qrels, self._scored = queries, qrels, scored
        self.store = _FakeStore(docs)

    def has_queries(self):
        return bool(self._queries)

    def has_docs(self):
        return bool(self.store.docs)

    def has_qrels(self):
        return bool(self._qrels)

    def has_scoreddocs(self):
        return bool(self._scored)

    def queries_iter(self):
        return iter(self._queries)

    def qrels_iter(self):
        return iter(self._qrels)

    def scoreddocs_iter(self):
        return iter(self._scored)

    def docs_store(self):
        return self.store


@pytest.fixture
def fake_ir_datasets(monkeypatch):
    datasets = {
        "fake/test": _FakeDataset(
            queries=[_Query("1", "Poliomyelitis", "desc"), _Query("2", "", "only a description")],
            docs={
                "a": _DocT("a", "Title A", "body Â¼", "http://a"),
                "b": _DocT("b", "", b"bytes body", "http://b"),
            },
            qrels=[_Qrel("1", "a", 2, "0"), _Qrel("1", "b", 0, "0")],
            scored=[_Scored("1", "b", 1.0), _Scored("1", "a", 3.0), _Scored("2", "a", 0.5)],
        ),
        "fake/queries-only": _FakeDataset(queries=[_TextQuery("9", "text field")], docs={}),
    }

    def load(dataset_id):
        if dataset_id not in datasets:
            raise KeyError(f"{dataset_id!r} not found")
        return datasets[dataset_id]

    module = types.ModuleType("ir_datasets")
    module.load = load
    monkeypatch.setitem(sys.modules, "ir_datasets", module)
    return datasets


def test_load_ir_dataset_converts_records(fake_ir_datasets):
    ds = load_ir_dataset("fake/test")
    topics, qrels, docs = ds
    assert topics == {"1": "Poliomyelitis", "2": "only a description"}
    assert qrels == {"1": {"a": 2, "b": 0}}
    assert docs("a") == Doc("a", "body Â¼", "Title A", {"url": "http://a"})
    assert docs["b"].text == "bytes body" and docs["b"].title is None
    assert "a" in docs and "zzz" not in docs
    with pytest.raises(KeyError):
        docs["zzz"]
    empty = load_ir_dataset("fake/queries-only")
    assert empty.topics == {"9": "text field"} and empty.qrels == {} and empty.docs is None


def test_load_candidates_with_dataset_ids(fake_ir_datasets, tmp_path):
    write_trec_run(tmp_path / "run.trec", {"1": [("a", 2.0), ("b", 1.0)]})
    items = load_candidates(run=tmp_path / "run.trec", topics="fake/test")
    assert items[0][0] == Query("1", "Poliomyelitis")
    got = [(d.id, d.text, d.meta["first_stage_rank"]) for d in items[0][1]]
    assert got == [("a", "body Â¼", 1), ("b", "bytes body", 2)]
    assert fake_ir_datasets["fake/test"].store.calls == [["a", "b"]]  # one batched lookup
    from_scored = load_candidates(run="fake/test", depth=1)
    assert [(q.id, [d.id for d in ds]) for q, ds in from_scored] == [("1", ["a"]), ("2", ["a"])]
    with pytest.raises(ValueError, match="known ir_datasets id"):
        load_candidates(run=tmp_path / "run.trec", topics="fake/unknown")


def test_missing_ir_datasets_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # makes `import ir_datasets` fail
    with pytest.raises(ImportError, match=r"reason2rank\[datasets\]"):
        load_ir_dataset("msmarco-passage/trec-dl-2019/judged")
    write_trec_run(tmp_path / "run.trec", {"1": [("a", 1.0)]})
    with pytest.raises(ImportError, match=r"reason2rank\[datasets\]"):
        load_candidates(run=tmp_path / "run.trec", topics="beir/scifact/test")


# --------------------------------------------------------------------------------------------- real data


def test_real_dl19_files(data_dir, tmp_path):
    dl19 = data_dir / "trec-dl19"
    items = read_rankllm_candidates(dl19 / "bm25_top100.json")
    assert len(items) == 43
    assert all(len(docs) == 100 for _q, docs in items)
    query, docs = items[0]
    assert query == Query("264014", "how long is life cycle of flea")
    assert docs[0].id == "5611210" and docs[0].meta["first_stage_rank"] == 1
    assert [d.meta["first_stage_rank"] for d in docs] == list(range(1, 101))
    assert any("Â" in d.text for _q, ds in items for d in ds)  # the collection's mojibake is there

    run = read_trec_run(dl19 / "bm25_top100.trec")
    assert len(run) == 43 and all(len(v) == 100 for v in run.values())
    assert [docid for docid, _s in run[query.id]] == [d.id for d in docs]

    qrels = read_qrels(dl19 / "qrels.txt")
    assert len(qrels) == 43 and sum(len(v) for v in qrels.values()) == 9260
    assert set().union(*(v.values() for v in qrels.values())) == {0, 1, 2, 3}

    topics = read_topics(dl19 / "topics.tsv")
    assert len(topics) == 43 and topics["156493"] == "do goldfish grow"
    assert set(topics) == set(run) == {q.id for q, _d in items}

    # joining the run with the texts gives back the rank_llm candidates
    by_id = {d.id: Doc(d.id, d.text) for _q, ds in items for d in ds}
    joined = candidates_from_run(run, topics, by_id)
    assert [(q.id, [d.id for d in ds]) for q, ds in joined] == [(q.id, [d.id for d in ds]) for q, ds in items]

    # mojibake survives a write/read round trip byte for byte
    write_rankllm_candidates(tmp_path / "dl19.json", items)
    assert read_rankllm_candidates(tmp_path / "dl19.json") == items


def test_real_scifact_files(data_dir):
    scifact = data_dir / "beir-scifact"
    topics = read_topics(scifact / "queries.test.jsonl")
    assert len(topics) == 300
    assert topics["1"] == "0-dimensional biomaterials show inductive properties."
    qrels = read_qrels(scifact / "qrels" / "test.tsv")
    assert len(qrels) == 300 and qrels["1"] == {"31715818": 1}
    docs = read_docs_jsonl(scifact / "corpus.jsonl")
    assert len(docs) == 5183
    assert docs["4983"].title.startswith("Microstructural development of human newborn")
    run = read_trec_run(scifact / "bm25_test_top100.trec")
    assert len(run) == 300 and run["1"][0] == ("34386619", 9.746)
    items = load_candidates(
        run=scifact / "bm25_test_top100.trec",
        topics=scifact / "queries.test.jsonl",
        docs=scifact / "corpus.jsonl",
        depth=10,
    )
    assert len(items) == 300 and all(len(ds) == 10 for _q, ds in items)
    assert items[0][1][0].id == "34386619" and items[0][1][0].meta["first_stage_score"] == 9.746
