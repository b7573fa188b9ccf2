"""Pointwise VLM page scoring: pages/s batched vs one page per forward, at two pixel budgets.

The page corpus is real text: BEIR SciFact abstracts (../shared/data/beir-scifact) rendered into PNG pages by
``reason2rank.data.pages.render_pages`` (2 abstracts a page, a bar chart of the abstracts' numbers on every third
page). The candidates of each query are the pages of its BM25 top documents (the text first stage on the rendered
text). There are no real vision-language weights offline: the model is the tiny random Qwen2-VL of
``tests/tiny_vlm.py`` (2 text layers, 1 vision block, width 32), so the figures measure the library's input
pipeline and batching (image loading, resizing, patching, padding, one forward per batch), not a real VLM's
arithmetic. ``--shape 2b`` builds the random model with Qwen2-VL-2B's layer shapes instead (28 text layers of
width 1536, 32 vision blocks of width 1280: a real 2B VLM's arithmetic per page; random weights, so the scores mean
nothing but the times are a 2B model's); ``--device cuda --dtype bf16`` runs it on a GPU.

"One at a time" is ``batch_size=1`` with one ``rerank`` call per page, as rerankers' MonoVLM scores one document per
forward. Run::

    python benchmarks/vlm_pages.py --queries 10 --depth 10
    python benchmarks/vlm_pages.py --shape 2b --queries 2 --depth 4 --batch-size 4     # ~10 min on 2 cores
    python benchmarks/vlm_pages.py --shape 2b --device cuda --dtype bf16 --queries 10 --depth 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench_data import SHARED_DATA

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the tiny random Qwen2-VL (no VLM weights exist offline)

from reason2rank import Doc, Query, load  # noqa: E402
from reason2rank.cpu_isa import cpu_flags  # noqa: E402
from reason2rank.data import read_docs_jsonl, read_qrels, read_topics, read_trec_run  # noqa: E402
from reason2rank.data.pages import page_qrels, render_pages  # noqa: E402

DATA = SHARED_DATA / "beir-scifact"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--depth", type=int, default=10, help="BM25 documents per query whose pages are reranked")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--budgets", default="64,256", help="max_pixels in 28x28 tokens, comma-separated")
    ap.add_argument(
        "--shape", default="tiny", choices=("tiny", "2b"), help="the random Qwen2-VL's layer sizes"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument(
        "--work", default=None, help="keep the rendered pages (and the model built) in this folder"
    )
    args = ap.parse_args()

    from tiny_vlm import make_tiny_qwen2_vl

    corpus = read_docs_jsonl(DATA / "corpus.jsonl")
    topics = read_topics(DATA / "queries.test.jsonl")
    run = read_trec_run(DATA / "bm25_test_top100.trec")
    qrels = read_qrels(DATA / "qrels" / "test.tsv")
    qids = [q for q in topics if q in run][: args.queries]
    top = {q: [d for d, _ in run[q][: args.depth]] for q in qids}
    wanted = list(dict.fromkeys(d for q in qids for d in top[q]))
    # a temporary folder removed at exit (TemporaryDirectory's finaliser), unless --work keeps the pages
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="r2r_vlm_pages_")
    work = Path(args.work or tmp.name)
    t0 = time.perf_counter()
    pages = render_pages([corpus[d] for d in wanted], work / "corpus", per_page=2)
    render_s = time.perf_counter() - t0
    owner = {d: p for p in pages for d in p.doc_ids}
    items = []
    for q in qids:
        ps = list(dict.fromkeys(owner[d].id for d in top[q]))
        by = {p.id: p for p in pages}
        items.append((Query(q, topics[q]), [Doc(p, None, images=[by[p].path]) for p in ps]))
    n_pages = sum(len(d) for _, d in items)
    t0 = time.perf_counter()
    model_dir = make_tiny_qwen2_vl(work / f"{args.shape}_vlm", shape=args.shape)
    build_s = time.perf_counter() - t0
    rows = []
    for tokens in (int(x) for x in args.budgets.split(",")):
        budget = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * tokens)
        # one model per budget (two copies of a 2B model would not fit in a small machine's memory): the
        # engine's batch size is what differs between the two ways of scoring
        model = load(model_dir, family="vlm", device=args.device, dtype=args.dtype, progress=False, **budget)
        model.engine.batch_size = args.batch_size
        model.rerank_batch(items[:1])  # warm-up
        t = time.perf_counter()
        out_b = model.rerank_batch(items)
        tb = time.perf_counter() - t
        model.engine.batch_size = 1
        t = time.perf_counter()
        out_s = [[model.rerank(q, [d])[0] for d in docs] for q, docs in items]
        ts = time.perf_counter() - t
        del model
        worst = max(abs(a.score - b.score) for lb, ls in zip(out_b, out_s)
                    for a in lb for b in ls if a.doc.id == b.doc.id)  # fmt: skip
        rows.append({"max_pixels_tokens": tokens, "pages": n_pages, "batched_pages_per_s": n_pages / tb,
                     "one_at_a_time_pages_per_s": n_pages / ts, "speedup": ts / tb,
                     "max_abs_score_diff": worst})  # fmt: skip
    flags = cpu_flags()
    isa = next((x for x in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if x in flags), "baseline")
    report = {"machine": {"cpus": os.cpu_count(), "isa": isa, "python": platform.python_version()},
              "model": {"shape": args.shape, "device": args.device, "dtype": args.dtype, "build_s": build_s,
                        "batch_size": args.batch_size},
              "queries": len(items), "pages_rendered": len(pages), "render_s": render_s,
              "qrels_pages": sum(len(v) for v in page_qrels(pages, qrels).values()), "rows": rows}  # fmt: skip
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
