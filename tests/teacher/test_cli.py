"""``reason2rank teach`` through a throwaway argparse parser (the main CLI wires the same functions)."""

from __future__ import annotations

import argparse
import json
import socket

import pytest

from mock_openai_server import MockChatServer
from reason2rank.cli.teach import add_parser as add_teach_parser
from reason2rank.data import write_rankllm_candidates
from reason2rank.types import Doc, Query

ITEMS = [
    (
        Query("q1", "flea life cycle"),
        [Doc("a", "Fleas live for weeks. They bite."), Doc("b", "Cats purr."), Doc("c", "Dogs bark.")],
    ),
    (Query("q2", "cat sounds"), [Doc("d", "Cats purr and meow."), Doc("e", "Birds sing.")]),
]


def teach(argv):
    parser = argparse.ArgumentParser(prog="reason2rank")
    add_teach_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["teach", *argv])
    return args.func(args)


@pytest.fixture
def candidates(tmp_path):
    path = tmp_path / "cands.json"
    write_rankllm_candidates(path, ITEMS)
    return path


def test_teach_direct_and_compare_then_rerun_skips(tmp_path, candidates, capsys):
    out = tmp_path / "ann.jsonl"
    with MockChatServer() as server:
        argv = [
            "--teacher", f"openai:mock@{server.url}", "--candidates", str(candidates), "--out", str(out),
            "--tasks", "direct,compare", "--pair-budget", "1", "--price-in", "2.5", "--price-out", "10",
            "--summary-json", str(tmp_path / "s.json"),
        ]  # fmt: skip
        assert teach(argv) == 0
        err = capsys.readouterr().err
        assert "2 queries, 5 candidates, tasks direct,compare" in err
        assert "teacher openai:mock: done 7, skipped 0, failed 0, inconsistent 0, errors 0 (of 7)" in err
        assert "direct   total 5: done 5" in err and "compare  total 2: done 2" in err
        summary = json.loads((tmp_path / "s.json").read_text())
        expected_cost = (summary["prompt_tokens"] * 2.5 + summary["completion_tokens"] * 10) / 1e6
        assert summary["cost_usd"] == pytest.approx(expected_cost) and summary["cost_usd"] > 0
        assert f"cost ${expected_cost:.4f}" in err

        assert teach(argv) == 0
        assert "done 0, skipped 7" in capsys.readouterr().err
        assert len(server.requests) == 7
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["task"] for r in records) == ["compare"] * 2 + ["direct"] * 5
    runs = [json.loads(line) for line in (tmp_path / "ann.runs.jsonl").read_text().splitlines()]
    assert [r["done"] for r in runs] == [7, 0] and runs[0]["requested_tasks"] == ["direct", "compare"]


def test_teach_from_run_topics_and_docs_with_listwise(tmp_path, capsys):
    (tmp_path / "run.trec").write_text("q1 Q0 a 1 9.0 bm25\nq1 Q0 b 2 8.0 bm25\nq1 Q0 c 3 7.0 bm25\n")
    (tmp_path / "topics.tsv").write_text("q1\tflea life cycle\n")
    (tmp_path / "docs.jsonl").write_text(
        "".join(json.dumps({"_id": d, "text": f"text of {d}."}) + "\n" for d in "abc")
    )
    out = tmp_path / "ann.jsonl"
    with MockChatServer() as server:
        code = teach([
            "--teacher", f"openai:mock@{server.url}", "--run", str(tmp_path / "run.trec"),
            "--topics", str(tmp_path / "topics.tsv"), "--docs", str(tmp_path / "docs.jsonl"),
            "--out", str(out), "--tasks", "listwise", "--window", "3", "--no-progress",
        ])  # fmt: skip
    assert code == 0
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert rec["task"] == "listwise" and rec["docids"] == ["a", "b", "c"]
    assert rec["output"]["ranking"] == ["a", "b", "c"]
    assert [p["evidence_found"] for p in rec["output"]["passages"]] == [True, True, True]


def test_dry_run_prints_prompts_and_calls_nothing(tmp_path, candidates, capsys):
    code = teach(["--teacher", "openai:x@http://127.0.0.1:9", "--candidates", str(candidates),
                  "--out", str(tmp_path / "a.jsonl"), "--tasks", "direct,compare", "--dry-run"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "===== direct (direct/v1) =====" in printed and "===== compare (compare/v1) =====" in printed
    assert "Search query: flea life cycle" in printed
    assert not (tmp_path / "a.jsonl").exists()


def test_usage_errors_exit_2(tmp_path, candidates, capsys):
    base = ["--out", str(tmp_path / "a.jsonl")]
    assert (
        teach(
            [
                "--teacher",
                "openai:m@http://127.0.0.1:9",
                "--candidates",
                str(candidates),
                "--tasks",
                "rank",
                *base,
            ]
        )
        == 2
    )
    assert "--tasks must be a comma-separated subset of direct,compare,listwise" in capsys.readouterr().err
    assert teach(["--teacher", "gpt4", "--candidates", str(candidates), *base]) == 2
    assert "unknown LLM backend 'gpt4'" in capsys.readouterr().err
    assert (
        teach(
            ["--teacher", "openai:m@http://127.0.0.1:9", "--candidates", str(tmp_path / "none.json"), *base]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert teach(["--teacher", "openai:m@http://127.0.0.1:9", *base]) == 2
    assert "give --candidates" in capsys.readouterr().err
    assert (
        teach(
            [
                "--teacher",
                "openai:m@http://127.0.0.1:9",
                "--candidates",
                str(candidates),
                "--pairs",
                "best",
                *base,
            ]
        )
        == 2
    )
    assert "pair strategies must be among" in capsys.readouterr().err


def test_unreachable_teacher_exits_1_and_stores_nothing(tmp_path, candidates, capsys):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "a.jsonl"
    code = teach(["--teacher", f"openai:m@http://127.0.0.1:{port}/v1", "--candidates", str(candidates),
                  "--out", str(out), "--max-retries", "0", "--no-progress"])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "errors 5 (of 5)" in err and "connection error" in err
    assert "rerun the same command to finish them" in err
    assert out.read_text() == ""


def test_teach_budget_per_task_comparison_prompt_and_free_evidence(tmp_path, candidates, capsys):
    out = tmp_path / "ann.jsonl"
    with MockChatServer() as server:
        argv = [
            "--teacher", f"openai:mock@{server.url}", "--candidates", str(candidates), "--out", str(out),
            "--tasks", "direct,compare", "--pair-budget", "1", "--max-new-tokens", "300,compare=120",
            "--comparison-prompt", "justify", "--free-evidence",
        ]  # fmt: skip
        assert teach(argv) == 0
        direct = [r for r in server.requests if "Document A" not in r["messages"][-1]["content"]]
        compare = [r for r in server.requests if "Document A" in r["messages"][-1]["content"]]
    assert {r["max_tokens"] for r in direct} == {300} and {r["max_tokens"] for r in compare} == {120}
    assert all("ranked above" in r["messages"][-1]["content"] for r in compare) and compare
    evidence = direct[0]["response_format"]["json_schema"]["schema"]["properties"]["evidence"]
    assert evidence["type"] == ["string", "null"]  # --free-evidence: not an enum of the document's sentences
    with pytest.raises(SystemExit):
        teach([*argv[:-1], "--max-new-tokens", "lots"])
    assert "not a token budget" in capsys.readouterr().err
