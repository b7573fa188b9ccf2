"""How much padding costs the engine's length-sorted batches: an upper bound on what padding-free attention buys.

The engine sorts every (query, document) pair by length and pads each batch to its longest member. On TREC DL19
(BM25 top-100, 4,300 pairs, max_length 256, all-MiniLM-L6-v2 as a 1-label cross-encoder, torch fp32) this
times, alternating round after round in one process:

* ``sorted``: the engine's batches (``batch_size`` pairs each);
* ``exact-length buckets``: pairs grouped by exact token length, at most ``batch_size`` per batch — no padding
  at all, so no padding-free (unpadded / varlen) attention kernel can do better on the padding it removes;
* ``token budget``: sorted, but each batch filled up to ``batch_size × longest`` token slots (more short
  pairs per batch).

    flock /tmp/r2r-bench.lock python benchmarks/padding_experiment.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from itertools import groupby
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("R2R_NO_PROGRESS", "1")

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(os.environ.get("R2R_SHARED_DATA") or HERE.parent.parent / "shared" / "data") / "trec-dl19"))  # fmt: skip
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--queries", type=int, default=None, help="only the first N queries")
    args = ap.parse_args()

    from cross_encoder_throughput import build_cross_encoder_dir
    from transformers.utils import logging as hf_logging

    import reason2rank
    from reason2rank.cpu_isa import cpu_isa_summary
    from reason2rank.data import read_rankllm_candidates
    from reason2rank.engine import pad_batch

    hf_logging.set_verbosity_error()
    items = read_rankllm_candidates(Path(args.data) / "bm25_top100.json")[: args.queries]
    print(f"CPU: {cpu_isa_summary()}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = build_cross_encoder_dir(Path(tmp) / "minilm-ce")
        model = reason2rank.load(path, family="cross-encoder", runtime="torch", dtype="fp32", max_length=args.max_length, progress=False)  # fmt: skip
        features, _ = model.encode_pairs([q.text for q, docs in items for _ in docs], [d.full_text for _, docs in items for d in docs])  # fmt: skip
        order = sorted(features, key=lambda f: -len(f["input_ids"]))
        bs = args.batch_size
        layouts = {"sorted (the engine)": [order[i : i + bs] for i in range(0, len(order), bs)]}
        buckets = []
        for _, group in groupby(order, key=lambda f: len(f["input_ids"])):
            group = list(group)
            buckets += [group[i : i + bs] for i in range(0, len(group), bs)]
        layouts["exact-length buckets (no padding)"] = buckets
        budget, current = [], []
        for f in order:
            if current and (len(current) + 1) * len(current[0]["input_ids"]) > bs * len(
                order[0]["input_ids"]
            ):
                budget.append(current)
                current = []
            current.append(f)
        budget.append(current)
        layouts["token budget (batch_size x longest slots)"] = budget
        tensors = {k: [pad_batch(b, model.pad_token_id) for b in v] for k, v in layouts.items()}
        times: dict[str, list[float]] = {k: [] for k in layouts}
        with torch.inference_mode():
            model.forward(tensors["sorted (the engine)"][-1])
            for _ in range(args.rounds):
                for name, batches in tensors.items():
                    t0 = time.perf_counter()
                    for b in batches:
                        model.forward(b)
                    times[name].append(time.perf_counter() - t0)
    n = len(features)
    base = statistics.median(times["sorted (the engine)"])
    print(f"\n{n} pairs, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| batches | count | padded-token fraction | pairs/s | vs sorted |")
    print("|---|---:|---:|---:|---:|")
    for name, batches in tensors.items():
        slots = sum(b["attention_mask"].numel() for b in batches)
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        t = statistics.median(times[name])
        print(f"| {name} | {len(batches)} | {1 - tokens / slots:.2%} | {n / t:.1f} | {base / t:.2f}× |")


if __name__ == "__main__":
    main()
