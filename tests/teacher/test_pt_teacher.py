"""``pt_r2r.R2RTeacher``: annotates a PyTerrier result frame; input rows and columns kept."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pt = pytest.importorskip("pyterrier")

_INIT = Path(__file__).resolve().parents[2] / "src" / "pt_r2r" / "__init__.py"
if not _INIT.exists():  # pt_r2r is written concurrently; an empty marker makes it importable meanwhile
    _INIT.touch()

from mock_openai_server import MockChatServer  # noqa: E402
from pt_r2r.teacher import R2RTeacher  # noqa: E402
from reason2rank.teacher import Teacher  # noqa: E402


def grader(request):
    prompt = request["messages"][1]["content"]  # the item's prompt (retries append turns after it)
    if "Gibberish" in prompt:
        return "I refuse to answer in JSON."
    grade = 3 if "Fleas" in prompt else 0
    evidence = '"Fleas live for weeks."' if grade else "null"
    return f'{{"reasoning": "graded {grade}", "evidence": {evidence}, "relevance": {grade}}}'


FRAME = pd.DataFrame(
    {
        "qid": ["q2", "q1", "q1", "q1"],
        "query": ["cats", "flea life", "flea life", "flea life"],
        "docno": ["x", "a", "b", "c"],
        "text": ["Cats purr.", "Fleas live for weeks. They bite.", "Dogs bark.", "Gibberish"],
        "score": [5.0, 3.0, 2.0, 1.0],
        "rank": [0, 0, 1, 2],
        "extra": [1, 2, 3, 4],
    }
)


def test_annotates_rows_in_place_and_reuses_the_store(tmp_path):
    store = tmp_path / "ann.jsonl"
    with MockChatServer(grader) as server:
        teacher = R2RTeacher(f"openai:m@{server.url}", store=store, max_tries=2)
        out = teacher(FRAME)
        teacher.close()
        assert len(server.requests) == 5  # 3 answered at once, "Gibberish" twice
        assert repr(teacher) == f"R2RTeacher('openai:m@{server.url}')"

        again = R2RTeacher(f"openai:m@{server.url}", store=store).transform(FRAME)
        assert len(server.requests) == 5  # all from the store
    pd.testing.assert_frame_equal(out[list(FRAME.columns)], FRAME)  # same rows, order, columns
    assert out["relevance"].dtype == "Int64"
    assert out["relevance"].iloc[:3].tolist() == [0, 3, 0] and out["relevance"].isna().tolist() == [
        False
    ] * 3 + [True]
    assert out["teacher_status"].tolist() == ["ok", "ok", "ok", "failed"]
    assert out.loc[1, "evidence"] == "Fleas live for weeks." and out.loc[1, "evidence_found"] is True
    assert out.loc[0, "evidence"] is None and out.loc[3, "reasoning"] is None
    pd.testing.assert_frame_equal(again, out)


def test_empty_frame_returns_at_once_without_a_teacher():
    teacher = R2RTeacher("openai:never-built@http://127.0.0.1:9")
    out = teacher(FRAME.iloc[:0])
    assert list(out.columns) == [
        *FRAME.columns,
        "relevance",
        "reasoning",
        "evidence",
        "evidence_found",
        "teacher_status",
    ]
    assert len(out) == 0 and teacher._teacher is None


def test_missing_text_column_is_reported():
    with pytest.raises(pt.validate.InputValidationError):
        R2RTeacher("openai:m@http://127.0.0.1:9").transform(FRAME.drop(columns=["text"]))


def test_repeated_rows_are_annotated_once_and_a_built_teacher_is_accepted():
    frame = pd.concat([FRAME.iloc[1:2], FRAME.iloc[1:2]], ignore_index=True)
    with MockChatServer(grader) as server, Teacher(f"openai:m@{server.url}") as core:
        out = R2RTeacher(core).transform(frame)
        assert len(server.requests) == 1
        with pytest.raises(ValueError, match="got a built Teacher"):
            R2RTeacher(core, store="x.jsonl")
    assert out["relevance"].tolist() == [3, 3]
