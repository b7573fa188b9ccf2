#!/usr/bin/env python
"""Build the small bundled demo corpus in ``src/pt_r2r/demo_data/`` from BEIR SciFact.

Source: BEIR SciFact (allenai/scifact; Wadden et al., 2020, "Fact or Fiction: Verifying
Scientific Claims", EMNLP), licensed CC BY-NC 2.0.

Input folder (``--src``, default ``/work/shared/data/beir-scifact``) must contain the BEIR
files ``corpus.jsonl``, ``queries.test.jsonl``, ``qrels/test.tsv`` and a BM25 run
``bm25_test_top100.trec`` (TREC run format, top-100 per test query).

Selection (fully deterministic, no randomness):

1. Queries: the first ``--num-queries`` (default 40) test queries in ``queries.test.jsonl``
   file order that have at least one qrel in ``qrels/test.tsv``.
2. Corpus: all relevant documents of those queries (in qrels order), then BM25 documents added
   round-robin by rank (rank 1 of every query in query order, then rank 2, ...), skipping
   duplicates, until the corpus holds ``--num-docs`` (default 340) documents. 340 keeps
   the bundled files under ~600 KB (SciFact abstracts average ~1.7 KB as JSON).
3. Documents are written in insertion order (relevant first, then BM25 fill).

Outputs (``--out``, default ``src/pt_r2r/demo_data``):

* ``corpus.jsonl``  one JSON object per line: ``{"docno", "title", "text"}``
* ``topics.tsv``    ``qid<TAB>query`` (no header)
* ``qrels.txt``     TREC qrels: ``qid 0 docno rel``
* ``README.md``     provenance, licence and counts

Usage::

    python scripts/make_demo_data.py [--src DIR] [--out DIR] [--num-queries 40] [--num-docs 340]
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRC = Path("/work/shared/data/beir-scifact")
DEFAULT_OUT = REPO_ROOT / "src" / "pt_r2r" / "demo_data"


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_qrels(path: Path) -> dict[str, list[tuple[str, int]]]:
    """BEIR qrels TSV (header: query-id, corpus-id, score) -> {qid: [(docno, rel), ...]}."""
    qrels: dict[str, list[tuple[str, int]]] = defaultdict(list)
    with path.open(encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader)
        assert header[:3] == ["query-id", "corpus-id", "score"], header
        for qid, docno, rel in reader:
            qrels[qid].append((docno, int(rel)))
    return qrels


def read_run(path: Path) -> dict[str, list[str]]:
    """TREC run -> {qid: [docno, ...]} sorted by rank."""
    run: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with path.open(encoding="utf-8") as f:
        for line in f:
            qid, _q0, docno, rank, _score, _tag = line.split()
            run[qid].append((int(rank), docno))
    return {qid: [d for _, d in sorted(hits)] for qid, hits in run.items()}


def build(src: Path, out: Path, num_queries: int, num_docs: int) -> dict[str, int]:
    queries = read_jsonl(src / "queries.test.jsonl")
    qrels = read_qrels(src / "qrels" / "test.tsv")
    run = read_run(src / "bm25_test_top100.trec")
    corpus = {d["_id"]: d for d in read_jsonl(src / "corpus.jsonl")}

    selected = [q for q in queries if q["_id"] in qrels][:num_queries]
    if len(selected) < num_queries:
        raise SystemExit(f"only {len(selected)} test queries with qrels")

    docnos: dict[str, None] = {}  # insertion-ordered set
    for q in selected:
        for docno, _rel in qrels[q["_id"]]:
            docnos.setdefault(docno, None)
    num_relevant = len(docnos)

    max_depth = max(len(run.get(q["_id"], [])) for q in selected)
    deepest_rank = 0  # deepest BM25 rank that contributed a document
    for depth in range(max_depth):
        if len(docnos) >= num_docs:
            break
        for q in selected:
            hits = run.get(q["_id"], [])
            if depth < len(hits) and hits[depth] not in docnos:
                docnos[hits[depth]] = None
                deepest_rank = depth + 1
                if len(docnos) >= num_docs:
                    break

    missing = [d for d in docnos if d not in corpus]
    if missing:
        raise SystemExit(f"docnos not in corpus: {missing[:5]}")

    out.mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8", newline="\n") as f:
        for docno in docnos:
            d = corpus[docno]
            rec = {"docno": docno, "title": d.get("title", ""), "text": d.get("text", "")}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    with (out / "topics.tsv").open("w", encoding="utf-8", newline="\n") as f:
        for q in selected:
            query = " ".join(q["text"].split())  # no tabs/newlines inside the query
            f.write(f"{q['_id']}\t{query}\n")
    num_qrels = 0
    with (out / "qrels.txt").open("w", encoding="utf-8", newline="\n") as f:
        for q in selected:
            for docno, rel in qrels[q["_id"]]:
                f.write(f"{q['_id']} 0 {docno} {rel}\n")
                num_qrels += 1

    stats = {
        "queries": len(selected),
        "documents": len(docnos),
        "relevant_documents": num_relevant,
        "bm25_fill_documents": len(docnos) - num_relevant,
        "qrels": num_qrels,
        "bm25_deepest_rank": deepest_rank,
    }
    (out / "README.md").write_text(render_readme(stats, num_queries, num_docs), encoding="utf-8")
    return stats


def render_readme(stats: dict[str, int], num_queries: int, num_docs: int) -> str:
    return f"""# reason2rank demo data (subset of BEIR SciFact)

A tiny, real retrieval test collection bundled for offline demos and tests. Not a benchmark:
the corpus is biased towards documents that BM25 already ranks highly for these queries.

## Source and licence

* **Dataset:** SciFact (https://github.com/allenai/scifact), as distributed in BEIR
  (Thakur et al., 2021). Queries are scientific claims, documents are paper abstracts.
* **Citation:** David Wadden, Shanchuan Lin, Kyle Lo, Lucy Lu Wang, Madeleine van Zuylen,
  Arman Cohan, Hannaneh Hajishirzi. 2020. *Fact or Fiction: Verifying Scientific Claims*.
  EMNLP 2020.
* **Licence:** Creative Commons Attribution-NonCommercial 2.0 (CC BY-NC 2.0),
  https://creativecommons.org/licenses/by-nc/2.0/. Attribution: SciFact by the Allen Institute
  for AI (allenai/scifact), Wadden et al. 2020. These files (and only these files) are under
  CC BY-NC 2.0, not under the project's Apache-2.0 licence; non-commercial use only. The
  subset was modified from the original only by selection and field renaming.

## How it was made

`scripts/make_demo_data.py` (deterministic; re-run it to regenerate):

1. Queries: the first {num_queries} queries of the BEIR SciFact **test** split
   (`queries.test.jsonl` file order) that have qrels in `qrels/test.tsv`.
2. Corpus: every relevant document of those queries, then documents from a BM25 top-100 run
   (Lucene-style BM25, k1=0.9, b=0.4) added round-robin by rank across queries
   (all rank-1 docs, then all rank-2 docs, ...), deduplicated, until {num_docs} documents.

## Files and counts

| file | format | count |
|---|---|---|
| `corpus.jsonl` | `{{"docno", "title", "text"}}` per line | {stats["documents"]} documents ({stats["relevant_documents"]} relevant + {stats["bm25_fill_documents"]} BM25 fill, down to BM25 rank {stats["bm25_deepest_rank"]}) |
| `topics.tsv` | `qid<TAB>query`, no header | {stats["queries"]} queries |
| `qrels.txt` | TREC qrels `qid 0 docno rel` (binary, rel=1) | {stats["qrels"]} judgements |

Document and query ids are the original SciFact ids (docno = BEIR `_id`).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=DEFAULT_SRC)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--num-queries", type=int, default=40)
    ap.add_argument("--num-docs", type=int, default=340)
    args = ap.parse_args()
    stats = build(args.src, args.out, args.num_queries, args.num_docs)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
