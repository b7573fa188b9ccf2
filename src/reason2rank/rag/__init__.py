"""RAG with query understanding (Omni-RAG), on the shared LLM layer.

- ``decompose``: ``QueryDecomposer`` (denoise + split a query into sub-queries, validated JSON, the original query
  alone with a warning when the answer is unusable), ``parse_decomposition``, ``Decomposition``;
- ``fusion``: ``reciprocal_rank_fusion`` (k = 60) and ``linear_fusion`` over ranked lists of several
  (sub-)queries, deduplicated by document id, each ``FusedDoc`` keeping which lists found it;
- ``citations``: ``CitingAnswerer`` (a chain-of-thought prompt over numbered documents) and
  ``parse_cited_answer`` (citations only ever name documents of the prompt).

The adapters (``pt_r2r.rag``, ``haystack_integrations.components.*.reason2rank``) run retrieval and reranking
in their frameworks between these steps.
"""

from reason2rank.rag.citations import CitedAnswer, CitingAnswerer, answer_messages, parse_cited_answer
from reason2rank.rag.decompose import (
    DECOMPOSE_SCHEMA,
    Decomposition,
    QueryDecomposer,
    decomposition_messages,
    parse_decomposition,
)
from reason2rank.rag.fusion import FusedDoc, linear_fusion, reciprocal_rank_fusion

__all__ = [
    "DECOMPOSE_SCHEMA",
    "CitedAnswer",
    "CitingAnswerer",
    "Decomposition",
    "FusedDoc",
    "QueryDecomposer",
    "answer_messages",
    "decomposition_messages",
    "linear_fusion",
    "parse_cited_answer",
    "parse_decomposition",
    "reciprocal_rank_fusion",
]
