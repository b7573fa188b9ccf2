"""A teach run killed mid-way (SIGKILL) loses at most the items in flight; the rerun completes the store
with no duplicates and nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mock_openai_server import MockChatServer
from reason2rank.data import write_rankllm_candidates
from reason2rank.types import Doc, Query

SRC = str(Path(__file__).resolve().parents[2] / "src")

RUNNER = """
import argparse, sys
from reason2rank.cli.teach import add_parser as add_teach_parser
parser = argparse.ArgumentParser()
add_teach_parser(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""

IN_FLIGHT = 4


def teach_args(url: str, candidates: Path, out: Path) -> list[str]:
    return [
        "teach", "--teacher", f"openai:mock@{url}", "--candidates", str(candidates), "--out", str(out),
        "--tasks", "direct", "--max-in-flight", str(IN_FLIGHT), "--no-progress",
    ]  # fmt: skip


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
@pytest.mark.slow
def test_killed_run_resumes_without_duplicates_or_losses(tmp_path):
    items = [
        (
            Query(f"q{q}", f"query number {q}"),
            [Doc(f"q{q}d{d}", f"Document {d} for query {q}. More text.") for d in range(10)],
        )
        for q in range(6)
    ]
    candidates = tmp_path / "cands.json"
    write_rankllm_candidates(candidates, items)
    out = tmp_path / "ann.jsonl"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}

    with MockChatServer(delay=0.1) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", RUNNER, *teach_args(server.url, candidates, out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while count_lines(out) < 12 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.communicate()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.3)  # let the server read whatever the killed client had already sent
        killed_lines = count_lines(out)
        asked_before_kill = len(server.requests)
        assert 12 <= killed_lines < 60
        # what the kill lost: requests sent whose record was not written — at most the ones in flight
        assert asked_before_kill - killed_lines <= IN_FLIGHT

        # a kill in the middle of a write leaves a torn line: simulate one on top
        with open(out, "ab") as f:
            f.write(b'{"schema": 1, "key": "deadbeef", "task": "dir')

        import argparse

        from reason2rank.cli.teach import add_parser as add_teach_parser

        parser = argparse.ArgumentParser()
        add_teach_parser(parser.add_subparsers())
        args = parser.parse_args(
            [*teach_args(server.url, candidates, out), "--summary-json", str(tmp_path / "s.json")]
        )
        with pytest.warns(UserWarning, match="cut a torn last line"):
            assert args.func(args) == 0
        summary = json.loads((tmp_path / "s.json").read_text())
        total_requests = len(server.requests)

    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    keys = [r["key"] for r in records]
    assert len(records) == 60 and len(set(keys)) == 60  # complete, no duplicates, no torn line left
    assert {r["docids"][0] for r in records} == {d.id for _, docs in items for d in docs}
    assert all(r["status"] == "ok" for r in records)
    assert summary["skipped"] == killed_lines and summary["done"] == 60 - killed_lines
    assert summary["torn_tail_bytes"] == len(b'{"schema": 1, "key": "deadbeef", "task": "dir')
    assert total_requests == asked_before_kill + summary["done"]  # the rerun asked only what was missing
