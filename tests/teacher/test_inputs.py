"""Candidate inputs: rank_llm JSON, qrels; documents without text."""

from __future__ import annotations

import json

import pytest

from mock_openai_server import MockChatServer
from reason2rank.data import write_rankllm_candidates
from reason2rank.teacher import Teacher, load_teacher_inputs
from reason2rank.teacher.inputs import load_qrels
from reason2rank.types import Doc, Query


def test_teacher_does_not_show_documents_without_text():
    items = [
        (Query("q2", "cats"), [Doc("x", "Cats purr.", title="T")]),
        (Query("q1", "fleas"), [Doc("a", "A text."), Doc("b", None), Doc("c", "C text.")]),
    ]
    with MockChatServer() as server, Teacher(f"openai:m@{server.url}") as t:
        with pytest.warns(UserWarning, match=r"1 document\(s\) have no text .*: q1/b"):
            s = t.annotate(items)
        assert s.done == 3 and len(server.requests) == 3
        assert any("1 document(s) without text" in n for n in s.notes)
        assert t.records("direct", items)[1][1] is None


def test_rankllm_candidates_depth_and_max_queries(tmp_path):
    items = [
        (Query(f"q{i}", f"query {i}"), [Doc(f"d{i}{j}", f"text {j}") for j in range(5)]) for i in range(3)
    ]
    path = tmp_path / "c.json"
    write_rankllm_candidates(path, items)
    got = load_teacher_inputs(candidates=str(path), depth=2, max_queries=2)
    assert [(q.id, [d.id for d in docs]) for q, docs in got] == [
        ("q0", ["d00", "d01"]),
        ("q1", ["d10", "d11"]),
    ]


def test_qrels_from_a_file_or_a_clear_error(tmp_path):
    (tmp_path / "qrels.txt").write_text("q1 0 a 2\nq1 0 b 0\n")
    assert load_qrels(str(tmp_path / "qrels.txt")) == {"q1": {"a": 2, "b": 0}}
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_qrels(str(tmp_path / "none.txt"))
    assert json.dumps(load_qrels(str(tmp_path / "qrels.txt")))
