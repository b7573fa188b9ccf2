"""Candidate inputs: a PyTerrier-style frame, rank_llm JSON, qrels."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from reason2rank.data import write_rankllm_candidates
from reason2rank.teacher import Teacher, candidates_from_frame, load_teacher_inputs
from reason2rank.teacher.inputs import load_qrels
from reason2rank.teacher.mock_server import MockChatServer
from reason2rank.types import Doc, Query

FRAME = pd.DataFrame(
    {
        "qid": ["q2", "q1", "q1", "q1"],
        "query": ["cats", "fleas", "fleas", "fleas"],
        "docno": ["x", "a", "b", "c"],
        "text": ["Cats purr.", "A text.", None, "C text."],
        "title": ["T", None, "B title", float("nan")],
        "score": [1.0, 1.0, 3.0, 2.0],
    }
)


def test_frame_groups_by_qid_in_first_appearance_order_and_orders_by_score():
    with pytest.warns(
        UserWarning, match=r"1 document\(s\) had no text \(None/NaN\) and are shown as empty: q1/b"
    ):
        items = candidates_from_frame(FRAME, title_field="title")
    assert [q.id for q, _ in items] == ["q2", "q1"]
    assert [d.id for d in items[1][1]] == ["b", "c", "a"]
    assert items[1][1][0] == Doc("b", "", title="B title")
    assert items[1][1][1].title is None and items[0][1][0].title == "T"
    by_rank = FRAME.assign(rank=[0, 2, 0, 1], text=FRAME["text"].fillna(""))
    assert [d.id for d in candidates_from_frame(by_rank)[1][1]] == ["b", "c", "a"]
    as_given = by_rank.drop(columns=["score", "rank"])
    assert [d.id for d in candidates_from_frame(as_given, depth=2)[1][1]] == ["a", "b"]
    with pytest.raises(ValueError, match="needs a 'text' column"):
        candidates_from_frame(FRAME.drop(columns="text"))


def test_teacher_annotates_a_frame_directly():
    with MockChatServer() as server, Teacher(f"openai:m@{server.url}") as t:
        with pytest.warns(UserWarning, match="1 document\\(s\\) had no text"):
            s = t.annotate(FRAME)
        assert s.done == 4 and len(server.requests) == 4


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
