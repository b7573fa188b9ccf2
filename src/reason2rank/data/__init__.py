"""Reading and writing the IR files a reranking run needs: runs, qrels, topics, documents, candidates.

Formats:

* TREC run: ``qid Q0 docid rank score tag`` (whitespace-separated, rank 1-based in files) — ``data.trec``;
* qrels: ``qid 0 docid rel`` (TREC) or BEIR's ``query-id<TAB>corpus-id<TAB>score`` with an optional header;
* topics: ``qid<TAB>text`` TSV, BEIR queries JSONL (``{"_id", "text"}``) or TREC ``<top>`` SGML files —
  ``data.topics``;
* documents: JSONL, one object per line (BEIR corpus, Pyserini ``{"id", "contents"}``, ...) — ``data.docs``;
* candidates: rank_llm JSON (``[{"query": str, "hits": [{"qid", "docid", "content", "rank", "score"}]}]``),
  or the same objects one per line (JSONL) — ``data.candidates``;
* ir_datasets ids in place of any of these files — ``data.irds``.

Every reader accepts ``str`` or ``pathlib.Path`` and reads ``*.gz`` transparently; every writer writes
atomically (no partial file is ever left behind) and gzip-compresses when the name ends in ``.gz``
(``data.io``). Text is UTF-8; undecodable bytes become U+FFFD, and mojibake already in a collection's text
(``Â¼`` in MS MARCO) is kept exactly. Malformed input raises ``ValueError`` naming the file and the line.
"""

from reason2rank.data.candidates import (
    FIRST_STAGE_RANK,
    FIRST_STAGE_SCORE,
    candidates_from_run,
    load_candidates,
    read_rankllm_candidates,
    write_rankllm_candidates,
)
from reason2rank.data.docs import lookup_docs, read_docs_jsonl
from reason2rank.data.io import atomic_write, iter_json_objects, write_text
from reason2rank.data.irds import IRDataset, load_ir_dataset
from reason2rank.data.topics import read_topics
from reason2rank.data.trec import read_qrels, read_trec_run, write_qrels, write_trec_run

__all__ = [
    "FIRST_STAGE_RANK",
    "FIRST_STAGE_SCORE",
    "IRDataset",
    "atomic_write",
    "candidates_from_run",
    "iter_json_objects",
    "load_candidates",
    "load_ir_dataset",
    "lookup_docs",
    "read_docs_jsonl",
    "read_qrels",
    "read_rankllm_candidates",
    "read_topics",
    "read_trec_run",
    "write_qrels",
    "write_rankllm_candidates",
    "write_text",
    "write_trec_run",
]
