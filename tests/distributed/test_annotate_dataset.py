"""Teacher annotation on a local Ray: the same records as an in-process teacher, items already stored skipped,
and a job killed midway (SIGKILL of its driver) and started again writes each item into the store exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mock_openai_server import MockChatServer  # noqa: E402
from reason2rank import Doc, Query  # noqa: E402
from reason2rank.data import write_rankllm_candidates  # noqa: E402
from reason2rank.distributed import annotate_dataset  # noqa: E402
from reason2rank.teacher import Teacher, read_annotations  # noqa: E402

TIMING = ("elapsed_s", "created")


def make_items(n_queries: int, n_docs: int) -> list[tuple[Query, list[Doc]]]:
    return [
        (
            Query(f"q{i}", f"capital city of country {i}"),
            [
                Doc(f"q{i}d{j}", f"Passage {j} about city {i}. The capital of country {j} is a city.")
                for j in range(n_docs)
            ],
        )
        for i in range(n_queries)
    ]


def stored(path: Path) -> dict[str, dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    keys = [rec["key"] for rec in lines]
    assert len(keys) == len(set(keys)), "a key was written twice"
    return {rec["key"]: {k: v for k, v in rec.items() if k not in TIMING} for rec in lines}


@pytest.mark.slow
def test_same_records_as_in_process_and_a_rerun_skips_everything(ray_local, tmp_path):
    items = make_items(4, 5)
    tasks = "direct,listwise,compare"
    with MockChatServer() as a, MockChatServer() as b:
        spec = f"openai:mock@{a.url},{b.url}"
        with Teacher(spec, store=tmp_path / "ref.jsonl", window=3) as teacher:
            ref = teacher.annotate(items, tasks=tasks)
        store = tmp_path / "ray.jsonl"
        summary = annotate_dataset(
            spec, items, store=store, tasks=tasks, concurrency=2, queries_per_call=1, window=3
        )
        assert len(a.requests) and len(b.requests)  # both servers were used
        expected, got = stored(tmp_path / "ref.jsonl"), stored(store)
        assert got.keys() == expected.keys() and got == expected
        assert summary.done == ref.done == len(expected) and summary.total == ref.total
        assert not (tmp_path / "ray.jsonl.shards").exists()  # shards merged and removed
        size = store.stat().st_size
        again = annotate_dataset(spec, items, store=store, tasks=tasks, concurrency=2, window=3)
    assert again.done == 0 and again.skipped == summary.total
    assert store.stat().st_size == size


DRIVER = """
import sys
import ray
from reason2rank.data import read_rankllm_candidates
from reason2rank.distributed import annotate_dataset
ray.init(address=sys.argv[1])
annotate_dataset(sys.argv[2], read_rankllm_candidates(sys.argv[3]), store=sys.argv[4], concurrency=2,
                 queries_per_call=1, fsync_interval=0, backend_options={"max_in_flight": 2})
"""


def wait_until_unlocked(folder: Path, timeout: float = 60.0) -> None:
    import fcntl

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        locked = False
        for f in folder.glob("shard-*.jsonl"):
            fd = os.open(f, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                locked = True
            finally:
                os.close(fd)
        if not locked:
            return
        time.sleep(0.2)


def test_a_killed_job_restarted_writes_each_item_once(ray_local, tmp_path):
    items = make_items(12, 8)  # 96 direct items; at 0.15 s per answer and 4 in flight, ~4 s of answers
    candidates = tmp_path / "candidates.json"
    write_rankllm_candidates(candidates, items)
    store = tmp_path / "teach.jsonl"
    shards = tmp_path / "teach.jsonl.shards"
    address = ray_local.get_runtime_context().gcs_address
    with MockChatServer(delay=0.15) as server:
        spec = f"openai:mock@{server.url}"
        driver = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(DRIVER), address, spec, str(candidates), str(store)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        written = 0
        while time.monotonic() < deadline and driver.poll() is None:
            files = (
                [f for f in shards.glob("shard-*.jsonl") if ".runs." not in f.name] if shards.is_dir() else []
            )
            written = sum(len(f.read_bytes().splitlines()) for f in files)
            if written >= 10:
                break
            time.sleep(0.1)
        assert driver.poll() is None, "the job finished before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        assert 10 <= written < 96
        wait_until_unlocked(shards)  # Ray stops the killed job's actors a moment after its driver died
        summary = annotate_dataset(spec, items, store=store, concurrency=2, queries_per_call=1)
    got = stored(store)  # asserts no key twice
    with Teacher(spec, store=None) as teacher:
        expected = {teacher.key("direct", q, [d]) for q, docs in items for d in docs}
    assert set(got) == expected
    assert summary.skipped >= written  # what the killed job had stored was not asked again
    assert all(rec["status"] == "ok" for rec in read_annotations(store, status=None))
    assert not shards.exists()
