"""int8 fidelity on a *trained* cross-encoder: how far ONNX Runtime int8 scores move from fp32, and what that does
to nDCG@10, on TREC DL19 (BM25 top-100, 43 queries) and BEIR SciFact test (BM25 top-``--scifact-depth``).

The student is the one ``benchmarks/distill_scifact.py`` trains (all-MiniLM-L6-v2 fine-tuned as an encoder
student on the SciFact train queries); ``--student`` names its model directory (``.../work/student-*/model``).
It is copied to a temporary folder and exported there (``export_onnx(..., int8=True)``), so the directory given
is left as it is. For each data set: torch fp32 (DL19 only: ONNX Runtime fp32 equals it to 1e-4, which is
checked), ONNX Runtime fp32 and ONNX Runtime int8 rerank the same candidates; printed are the Spearman
correlation of int8 with fp32 scores (over all pairs, and the mean over queries), nDCG@10 of each, the
difference, the mean |int8 - fp32| score difference, the top-10 overlap with fp32, and pairs/s.

``--datasets scifact-train`` adds a selection set that is neither test set: the first ``--queries`` SciFact *train*
queries x their BM25 top-``--scifact-depth`` (from ``--train-run``, the run ``distill_scifact.py`` writes into its
cache), where int8 variants are compared before one becomes the default. ``--fp32-rows`` adds the int8 graph
whose single-position MatMuls (the pooled last layer's, the pooler's and the classifier's) stay fp32
(``quantize_int8(..., fp32_single_position=True)``), against the same fp32 scores.

    python benchmarks/distill_scifact.py --max-steps 150 --depth 10 --skip-zeroshot --cache /tmp/student
    flock /tmp/r2r-bench.lock python benchmarks/int8_fidelity.py --student /tmp/student/work/student-*/model
    flock /tmp/r2r-bench.lock python benchmarks/int8_fidelity.py --student S --datasets scifact-train \
        --queries 100 --scifact-depth 30 --train-run /tmp/student/bm25_train_top100.trec --no-torch --fp32-rows
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_data import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("R2R_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def ndcg10(qrels: dict, items: list, scores: list[np.ndarray]) -> float:
    import ir_measures
    from ir_measures import nDCG

    run = {q.id: {d.id: float(s) for d, s in zip(docs, sc)} for (q, docs), sc in zip(items, scores)}
    return float(ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10])


def dl19() -> tuple[list, dict]:
    from reason2rank.data import read_qrels, read_rankllm_candidates

    data = SHARED_DATA / "trec-dl19"
    return read_rankllm_candidates(data / "bm25_top100.json"), read_qrels(data / "qrels.txt")


def scifact(depth: int, split: str = "test", run_file: Path | None = None) -> tuple[list, dict]:
    from reason2rank.data import candidates_from_run, read_docs_jsonl, read_qrels, read_topics, read_trec_run

    data = SHARED_DATA / "beir-scifact"
    run_file = run_file or data / "bm25_test_top100.trec"
    if not run_file.is_file():
        raise SystemExit(
            f"no BM25 run at {run_file}: `python benchmarks/distill_scifact.py --skip-train` writes the train "
            "run into its cache (bm25_train_top100.trec); pass it with --train-run"
        )
    run = {qid: ranked[:depth] for qid, ranked in read_trec_run(run_file).items()}
    items = candidates_from_run(
        run, read_topics(data / f"queries.{split}.jsonl"), read_docs_jsonl(data / "corpus.jsonl")
    )
    return items, read_qrels(data / "qrels" / f"{split}.tsv")


def top10_overlap(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """Mean share of each query's fp32 top 10 (``b``) that int8 (``a``) also puts in its top 10."""
    shares = []
    for x, y in zip(a, b):
        k = min(10, len(y))
        shares.append(len(set(np.argsort(-x)[:k]) & set(np.argsort(-y)[:k])) / k)
    return float(np.mean(shares))


def score(model: Any, items: list) -> tuple[list[np.ndarray], float]:
    t0 = time.perf_counter()
    scores = [np.asarray(s, dtype=np.float64) for s in model.score_batch(items)]
    pairs = sum(len(docs) for _, docs in items)
    return scores, pairs / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--student", required=True, help="trained cross-encoder model directory")
    ap.add_argument("--scifact-depth", type=int, default=100, help="BM25 candidates per SciFact test query")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument(
        "--queries", type=int, default=None, help="only the first N queries of each set (a smoke test)"
    )
    ap.add_argument(
        "--no-torch", action="store_true", help="skip torch fp32 (ONNX Runtime fp32 equals it to 1e-4)"
    )
    ap.add_argument(
        "--full-last-layer",
        action="store_true",
        help="also the int8 graph of an export with the full last layer (export_onnx(token_states=True), the "
        "graph before the pooled last layer), against the same fp32 scores",
    )
    ap.add_argument(
        "--fp32-rows",
        action="store_true",
        help="also the int8 graph whose single-position MatMuls stay fp32 (quantize_int8(..., "
        "fp32_single_position=True)), against the same fp32 scores",
    )
    ap.add_argument(
        "--datasets",
        default="dl19,scifact",
        help="comma-separated: dl19, scifact (test), scifact-train (selection set; needs --train-run)",
    )
    ap.add_argument(
        "--train-run",
        type=Path,
        default=Path("~/.cache/reason2rank/bench/scifact/bm25_train_top100.trec").expanduser(),
        help="BM25 run of the SciFact train queries (default: distill_scifact.py's cache)",
    )
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()
    wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(wanted) - {"dl19", "scifact", "scifact-train"})
    if unknown:
        ap.error(f"unknown --datasets {unknown}: choose from dl19, scifact, scifact-train")

    from scipy.stats import spearmanr
    from transformers.utils import logging as hf_logging

    import reason2rank
    from reason2rank.cpu_isa import cpu_isa_summary
    from reason2rank.onnx import export_onnx

    hf_logging.set_verbosity_error()
    isa = cpu_isa_summary()
    print(f"CPU: {isa}")
    report: dict[str, Any] = {"cpu": isa, "student": args.student, "datasets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "student"
        shutil.copytree(args.student, model_dir)
        record = export_onnx(model_dir, family="cross-encoder", int8=True)
        print(f"exported: fp32 max |ONNX - torch| on the check batches {record.max_abs_diff:.1e}")
        load = {"max_length": args.max_length, "progress": False}
        models = {
            "torch fp32": reason2rank.load(model_dir, runtime="torch", dtype="fp32", **load),
            "ONNX Runtime fp32": reason2rank.load(model_dir, runtime="onnx", dtype="fp32", **load),
            "ONNX Runtime int8": reason2rank.load(model_dir, runtime="onnx", dtype="int8", **load),
        }
        if args.full_last_layer:
            full_dir = Path(tmp) / "student-full-last-layer"
            shutil.copytree(args.student, full_dir)
            export_onnx(full_dir, family="cross-encoder", int8=True, token_states=True)
            models["ONNX Runtime int8, full last layer"] = reason2rank.load(
                full_dir, runtime="onnx", dtype="int8", **load
            )
        if args.fp32_rows:
            from transformers import AutoConfig

            from reason2rank.onnx.quantize import quantize_int8

            rows_dir = Path(tmp) / "student-fp32-rows"
            shutil.copytree(model_dir, rows_dir)
            text = AutoConfig.from_pretrained(model_dir).get_text_config()
            quantize_int8(rows_dir / record.fp32, rows_dir / record.int8, fp32_single_position=True,
                          num_heads=int(text.num_attention_heads), hidden_size=int(text.hidden_size))  # fmt: skip
            models["ONNX Runtime int8, single-position rows fp32"] = reason2rank.load(
                rows_dir, runtime="onnx", dtype="int8", **load
            )
        datasets = {}
        if "dl19" in wanted:
            datasets["TREC DL19 (BM25 top-100)"] = dl19()
        if "scifact" in wanted:
            datasets[f"SciFact test (BM25 top-{args.scifact_depth})"] = scifact(args.scifact_depth)
        if "scifact-train" in wanted:
            datasets[f"SciFact train, selection set (BM25 top-{args.scifact_depth})"] = scifact(
                args.scifact_depth, "train", args.train_run
            )
        print(
            "\n| data | pairs | system | pairs/s | nDCG@10 | Δ nDCG@10 vs fp32 | Spearman vs fp32 (all pairs / per query) "
            "| mean abs diff | top-10 overlap |"
        )
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
        for name, (items, qrels) in datasets.items():
            items = items[: args.queries]
            qrels = {q.id: qrels[q.id] for q, _ in items if q.id in qrels}
            pairs = sum(len(d) for _, d in items)
            results = {}
            for system, model in models.items():
                if system == "torch fp32" and (args.no_torch or not name.startswith("TREC")):
                    continue  # ONNX Runtime fp32 stands for it (checked on DL19)
                results[system] = score(model, items)
                print(f"  {name}: {system} {results[system][1]:.1f} pairs/s", flush=True)
            fp32 = results["ONNX Runtime fp32"][0]
            flat = np.concatenate(fp32)
            entry: dict[str, Any] = {"pairs": pairs, "queries": len(items), "systems": {}}
            if "torch fp32" in results:
                entry["max_abs_onnx_fp32_vs_torch"] = float(
                    np.abs(np.concatenate(results["torch fp32"][0]) - flat).max()
                )
            for system, (scores, speed) in results.items():
                both = np.concatenate(scores)
                per_query = [
                    spearmanr(a, b).statistic for a, b in zip(scores, fp32) if len(a) > 1 and np.ptp(b) > 0
                ]
                row = {"pairs_per_s": round(speed, 1), "ndcg10": round(ndcg10(qrels, items, scores), 4),
                       "spearman_all": round(float(spearmanr(both, flat).statistic), 4),
                       "spearman_per_query": round(float(np.nanmean(per_query)), 4),
                       "mean_abs_diff": round(float(np.abs(both - flat).mean()), 4),
                       "top10_overlap": round(top10_overlap(scores, fp32), 4)}  # fmt: skip
                entry["systems"][system] = row
            base = entry["systems"]["ONNX Runtime fp32"]["ndcg10"]
            for system, row in entry["systems"].items():
                row["ndcg10_delta"] = round(row["ndcg10"] - base, 4)
                print(f"| {name} | {pairs} | {system} | {row['pairs_per_s']:.1f} | {row['ndcg10']:.4f} | "
                      f"{row['ndcg10_delta']:+.4f} | {row['spearman_all']:.4f} / {row['spearman_per_query']:.4f} | "
                      f"{row['mean_abs_diff']:.4f} | {100 * row['top10_overlap']:.1f}% |")  # fmt: skip
            if "max_abs_onnx_fp32_vs_torch" in entry:
                print(
                    f"  max |ONNX Runtime fp32 - torch fp32| over {pairs} pairs: {entry['max_abs_onnx_fp32_vs_torch']:.1e}"
                )
            report["datasets"][name] = entry
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
