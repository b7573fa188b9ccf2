"""Page-image reranking in PyTerrier: BM25 over the pages' rendered text, then a vision-language model on the page
images, in one pt.Experiment with page qrels.

    PisaIndex(page text).bm25() % 10 >> pt_r2r.ImageLoader(pages/) >> pt_r2r.R2RReranker(vlm, image_field="image")

The pages are real text: BEIR SciFact abstracts (../shared/data/beir-scifact, or R2R_SHARED_DATA) rendered two a
page by ``reason2rank.data.pages.render_pages``, for the BM25 top-20 abstracts of the first ``--queries`` test
queries. ``--model`` is a Qwen2-VL-style reranker directory or hub id (e.g. a GMR/MonoQwen2-VL checkpoint with
``r2r_model.json``, or a plain model with ``family="vlm"``). Without one the example builds the tiny *random*
Qwen2-VL of ``tests/tiny_vlm.py`` — no vision-language weights exist offline — so the pipeline, the image column and
the evaluation are real but the VLM's ranking is noise.

Run:   python examples/vlm_pages_pyterrier.py [--queries 10] [--model DIR]
Needs: pip install 'reason2rank[pyterrier,vision]'
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("R2R_SHARED_DATA") or HERE.parent.parent / "shared" / "data") / "beir-scifact"


def build_pages(queries: int, depth: int, out: Path):
    """Render the BM25 top-``depth`` abstracts of the first test queries; returns pages, topics, page qrels."""
    from reason2rank.data import read_docs_jsonl, read_qrels, read_topics, read_trec_run
    from reason2rank.data.pages import page_qrels, render_pages

    corpus = read_docs_jsonl(DATA / "corpus.jsonl")
    topics = read_topics(DATA / "queries.test.jsonl")
    run = read_trec_run(DATA / "bm25_test_top100.trec")
    qids = [q for q in topics if q in run][:queries]
    wanted = list(dict.fromkeys(d for q in qids for d, _ in run[q][:depth]))
    pages = render_pages([corpus[d] for d in wanted], out, per_page=2)
    return pages, {q: topics[q] for q in qids}, page_qrels(pages, read_qrels(DATA / "qrels" / "test.tsv"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--depth", type=int, default=20, help="abstracts per query rendered into pages")
    ap.add_argument("--model", default=None, help="a VLM reranker directory or hub id (default: tiny random)")
    ap.add_argument(
        "--work", default=None, help="keep the rendered pages (and the model built) in this folder"
    )
    args = ap.parse_args()

    import pandas as pd
    import pyterrier as pt
    from pyterrier.measures import RR, nDCG
    from pyterrier_pisa import PisaIndex

    import pt_r2r
    from pt_r2r.demo import _quiet_fds

    # a temporary folder removed at exit (TemporaryDirectory's finaliser), unless --work keeps the pages
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="r2r-vlm-pt-")
    work = Path(args.work or tmp.name)
    pages, topics, qrels = build_pages(args.queries, args.depth, work / "corpus")
    print(
        f"rendered {len(pages)} pages ({sum(p.has_figure for p in pages)} with a figure) under {work / 'corpus'}"
        + ("" if args.work else " (removed at exit; --work DIR keeps them)")
    )
    model = args.model
    if model is None:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from tiny_vlm import make_tiny_qwen2_vl

        model = str(make_tiny_qwen2_vl(work / "tiny_vlm"))
        print("no --model: using a tiny RANDOM Qwen2-VL (no VLM weights offline); its ranking is noise")
    with _quiet_fds():
        index = PisaIndex(str(work / "pages.pisa"), text_field=["text"], stemmer="porter2", overwrite=True)
        index.index({"docno": p.id, "text": p.text} for p in pages)
        bm25 = index.bm25(num_results=10)
        bm25(pd.DataFrame({"qid": ["x"], "query": ["warm up"]}))
    reranker = pt_r2r.R2RReranker(model, family="vlm", text_field=None, image_field="image", verbose=False,
                                  max_pixels=28 * 28 * 256, batch_size=8)  # fmt: skip
    pipeline = bm25 >> pt_r2r.ImageLoader(work / "corpus" / "pages") >> reranker
    topics_df = pd.DataFrame({"qid": list(topics), "query": list(topics.values())})
    qrels_df = pd.DataFrame([(q, p, g) for q, v in qrels.items() for p, g in v.items()],
                            columns=["qid", "docno", "label"])  # fmt: skip
    table = pt.Experiment([bm25, pipeline], topics_df, qrels_df, [nDCG @ 10, RR @ 10],
                          names=["BM25 (page text)", "BM25 >> VLM (page images)"])  # fmt: skip
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
