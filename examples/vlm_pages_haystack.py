"""Page-image reranking in Haystack: BM25 over the pages' rendered text, then a vision-language model on the page
images, in one pipeline (saved to YAML and loaded back before it runs).

    InMemoryBM25Retriever (page text, top 10) -> R2RRanker(family="vlm", image_root=pages/) (top 3)

Each page is a Document whose ``content`` is its rendered text and ``meta["file_path"]`` its PNG, relative to the
``image_root`` the ranker reads images under (so a path that leaves it is refused). The pages are BEIR SciFact
abstracts rendered two a page (see ``examples/vlm_pages_pyterrier.py``). Without ``--model`` the ranker is the tiny
*random* Qwen2-VL of ``tests/tiny_vlm.py`` (no VLM weights offline): the pipeline is real, the ranking noise.

Run:   python examples/vlm_pages_haystack.py [--queries 3] [--model DIR]
Needs: pip install 'reason2rank[haystack,vision]'
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_r2r import R2RRanker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from vlm_pages_pyterrier import build_pages  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=3)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--model", default=None)
    ap.add_argument(
        "--work", default=None, help="keep the rendered pages (and the model built) in this folder"
    )
    args = ap.parse_args()

    # a temporary folder removed at exit (TemporaryDirectory's finaliser), unless --work keeps the pages
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="r2r-vlm-hs-")
    work = Path(args.work or tmp.name)
    pages, topics, qrels = build_pages(args.queries, args.depth, work / "corpus")
    root = work / "corpus" / "pages"
    model = args.model
    if model is None:
        sys.path.insert(0, str(HERE.parent / "tests"))
        from tiny_vlm import make_tiny_qwen2_vl

        model = str(make_tiny_qwen2_vl(work / "tiny_vlm"))
        print("no --model: using a tiny RANDOM Qwen2-VL (no VLM weights offline); its ranking is noise")
    store = InMemoryDocumentStore()
    store.write_documents(
        [Document(id=p.id, content=p.text, meta={"file_path": Path(p.path).name}) for p in pages]
    )
    pipe = Pipeline()
    pipe.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=10))
    pipe.add_component("ranker", R2RRanker(model=model, top_k=3, image_root=str(root),
                                           model_kwargs={"family": "vlm", "max_pixels": 28 * 28 * 256}))  # fmt: skip
    pipe.connect("retriever.documents", "ranker.documents")
    pipe = Pipeline.loads(pipe.dumps())  # what a saved pipeline would run (the in-memory store is rebuilt)
    pipe.get_component("retriever").document_store = store
    for qid, query in topics.items():
        out = pipe.run({"retriever": {"query": query}, "ranker": {"query": query}})
        print(f"\n{qid}: {query}")
        for doc in out["ranker"]["documents"]:
            judged = "relevant" if qrels.get(qid, {}).get(doc.id) else "-"
            print(f"  {doc.id} {doc.meta['file_path']}  score {doc.score:+.4f}  {judged}")


if __name__ == "__main__":
    main()
