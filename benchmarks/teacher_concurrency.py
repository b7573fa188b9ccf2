"""Teacher throughput against a local OpenAI-compatible server that answers in 200 ms.

Runs the whole teacher path — prompt rendering, HTTP, parsing, evidence check, an fsync'ed JSONL store —
with 1, 8 and 32 requests in flight, and reports items/s and the speed-up over one in flight.
Target: speed-up >= 0.8 x N up to N = 32.

    python benchmarks/teacher_concurrency.py                 # 200 ms, N = 1, 8, 32
    python benchmarks/teacher_concurrency.py --levels 1 8 32 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from reason2rank.teacher import Teacher
from reason2rank.types import Doc, Query

# the mock OpenAI-compatible server is a test fixture (tests/mock_openai_server.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mock_openai_server import MockChatServer  # noqa: E402


def make_items(n: int, docs_per_query: int = 8) -> list[tuple[Query, list[Doc]]]:
    items = []
    for q in range(0, n, docs_per_query):
        docs = [
            Doc(f"q{q}d{d}", f"Passage {d} about topic {q}. It explains the answer in some detail. " * 8)
            for d in range(min(docs_per_query, n - q))
        ]
        items.append((Query(f"q{q}", f"what is topic {q}"), docs))
    return items


def run_level(url: str, in_flight: int, n_items: int, store_dir: Path | None) -> dict:
    items = make_items(n_items)
    store = store_dir / f"ann_{in_flight}.jsonl" if store_dir else None
    with Teacher(f"openai:mock@{url}", store=store, backend_options={"max_in_flight": in_flight}) as teacher:
        start = time.perf_counter()
        summary = teacher.annotate(items, tasks="direct")
        elapsed = time.perf_counter() - start
    if summary.done != n_items:
        raise RuntimeError(f"expected {n_items} annotations, got {summary.to_dict()}")
    return {"in_flight": in_flight, "items": n_items, "seconds": elapsed, "items_per_s": n_items / elapsed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--delay", type=float, default=0.2, help="server answer time in seconds (default 0.2)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="requests in flight to test")
    p.add_argument("--waves", type=int, default=8, help="items per level = waves x in-flight (at least 20)")
    p.add_argument("--memory", action="store_true", help="in-memory store instead of a JSONL file")
    p.add_argument("--json", help="write the figures to this JSON file")
    args = p.parse_args(argv)

    results = []
    with MockChatServer(delay=args.delay) as server, tempfile.TemporaryDirectory() as tmp:
        store_dir = None if args.memory else Path(tmp)
        run_level(server.url, 2, 4, store_dir)  # warm up imports and the event loop
        for n in args.levels:
            results.append(run_level(server.url, n, max(20, args.waves * n), store_dir))
        peak = server.max_seen_in_flight
    base = results[0]["items_per_s"] / results[0]["in_flight"]
    ok = True
    print(f"server delay {args.delay * 1000:.0f} ms, store: {'memory' if args.memory else 'JSONL file'}")
    print(f"{'in flight':>9} {'items':>6} {'seconds':>8} {'items/s':>8} {'speed-up':>9} {'target':>7}")
    for r in results:
        r["speedup"] = r["items_per_s"] / base
        r["target"] = 0.8 * r["in_flight"]
        r["meets_target"] = r["speedup"] >= r["target"]
        ok &= r["meets_target"]
        print(
            f"{r['in_flight']:>9} {r['items']:>6} {r['seconds']:>8.2f} {r['items_per_s']:>8.1f} "
            f"{r['speedup']:>8.1f}x {r['target']:>6.1f}x {'ok' if r['meets_target'] else 'MISSED'}"
        )
    print(f"peak concurrency seen by the server: {peak}")
    if args.json:
        meta = {"python": sys.version.split()[0], "machine": platform.machine(), "delay_s": args.delay}
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
