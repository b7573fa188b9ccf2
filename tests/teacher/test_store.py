"""The append-only annotation store: keys, torn lines, duplicates, the writer lock."""

from __future__ import annotations

import json
import warnings

import pytest

from reason2rank.teacher.store import AnnotationStore, annotation_key, read_annotations


def rec(key, status="ok", **extra):
    return {"key": key, "task": "direct", "status": status, "output": {"relevance": 1}, **extra}


def lines(path):
    return path.read_bytes().decode("utf-8").splitlines(keepends=True)


def test_key_depends_on_every_part():
    base = ("direct", "direct/v1", "openai:m", "q1", "text", ["d1"])
    k = annotation_key(*base)
    assert len(k) == 32 and k == annotation_key(*base)
    variants = [
        ("compare", *base[1:]),
        (base[0], "direct/v2", *base[2:]),
        (*base[:2], "openai:other", *base[3:]),
        (*base[:3], "q2", *base[4:]),
        (*base[:4], "other text", base[5]),
        (*base[:5], ["d2"]),
    ]
    assert len({annotation_key(*v) for v in variants} | {k}) == 7
    assert annotation_key(*base, options={"swap": True}) != k
    assert annotation_key("compare", "c", "t", "q", "x", ["a", "b"]) != annotation_key(
        "compare", "c", "t", "q", "x", ["b", "a"]
    )


def test_append_reopen_and_lookup(tmp_path):
    path = tmp_path / "s.jsonl"
    with AnnotationStore(path) as s:
        s.append(rec("k1", extra="ü"))
        s.append(rec("k2", status="failed", output=None))
        assert s.status("k1") == "ok" and s.grade("k1") == 1 and s.grade("k2") is None
    with AnnotationStore(path) as s:
        assert len(s) == 2 and s.has("k1") and "k2" in s
        assert s.get("k1")["extra"] == "ü" and s.get("missing") is None
        assert [r["key"] for r in s.records()] == ["k1", "k2"]
        assert s.scan.records == 2 and s.scan.torn_tail_bytes == 0
    assert all(line.endswith("\n") for line in lines(path))


def test_torn_tail_is_cut_and_never_merged_with_the_next_record(tmp_path):
    path = tmp_path / "s.jsonl"
    with AnnotationStore(path) as s:
        s.append(rec("k1"))
    torn = json.dumps(rec("k2"))[:25]  # what a kill in the middle of a write leaves
    with open(path, "a") as f:
        f.write(torn)
    with pytest.warns(UserWarning, match=f"cut a torn last line of {len(torn)} bytes"):
        s = AnnotationStore(path)
    assert s.scan.torn_tail_bytes == len(torn) and len(s) == 1 and not s.has("k2")
    s.append(rec("k2"))
    s.close()
    got = [json.loads(line) for line in lines(path)]
    assert [r["key"] for r in got] == ["k1", "k2"]


def test_complete_record_without_newline_is_kept_and_the_next_starts_on_a_fresh_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(rec("k1")))  # e.g. written by another tool, no final newline
    with AnnotationStore(path) as s:
        assert s.has("k1")
        s.append(rec("k2"))
    assert [json.loads(line)["key"] for line in lines(path)] == ["k1", "k2"]


def test_corrupt_middle_line_is_skipped_and_reported(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(rec("k1")) + "\n{not json\n" + json.dumps(rec("k2")) + "\n")
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        s = AnnotationStore(path)
    assert sorted(s.keys()) == ["k1", "k2"] and s.scan.corrupt_lines == 1
    s.close()
    with pytest.warns(UserWarning, match="skipped 1 unreadable line"):
        assert [r["key"] for r in read_annotations(path)] == ["k1", "k2"]


def test_one_record_per_key_finished_beats_failed(tmp_path):
    path = tmp_path / "s.jsonl"
    with AnnotationStore(path) as s:
        s.append(rec("a", status="failed", output=None, n=1))
        s.append(rec("a", status="ok", n=2))
        s.append(rec("a", status="failed", output=None, n=3))  # never demotes a finished record
        s.append(rec("b", status="failed", output=None, n=1))
        s.append(rec("b", status="failed", output=None, n=2))  # latest failure wins
    with AnnotationStore(path) as s:
        assert s.scan.duplicates == 3 and len(s) == 2
        assert s.get("a")["n"] == 2 and s.get("b")["n"] == 2
    assert {r["key"]: r["n"] for r in read_annotations(path, status=None)} == {"a": 2, "b": 2}
    assert [r["key"] for r in read_annotations(path)] == ["a"]


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    with AnnotationStore(path), pytest.raises(RuntimeError, match="another process is writing"):
        AnnotationStore(path)
    with AnnotationStore(path) as s:  # released on close
        assert len(s) == 0


def test_memory_store_and_invalid_records():
    s = AnnotationStore()
    s.append(rec("k"))
    assert s.get("k")["status"] == "ok" and s.path is None
    with pytest.raises(ValueError, match="needs a key and a status"):
        s.append({"key": "x", "status": "done"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.close()
