"""``R2RMultiQueryRetriever``: a text retriever run once per sub-query, the lists fused by RRF with provenance.

Why not Haystack's own components: ``DocumentJoiner(join_mode="reciprocal_rank_fusion")`` joins a fixed set of
input connections (one per retriever wired into the pipeline), so it cannot take a number of sub-queries known
only at run time, and the documents it returns do not say which query found them; ``MultiQueryTextRetriever``
takes a list of queries but deduplicates and sorts by raw score, without fusion or provenance. The fusion is
``reason2rank.rag.reciprocal_rank_fusion``.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict, logging
from haystack.core.serialization import component_to_dict
from haystack.utils.deserialization import deserialize_component_inplace

from reason2rank.rag.fusion import RRF_K, reciprocal_rank_fusion

logger = logging.getLogger(__name__)

#: meta keys: the sub-queries that found a document, and its 1-based rank in each of their lists
META_SUB_QUERIES = "r2r_sub_queries"
META_SUB_QUERY_RANKS = "r2r_sub_query_ranks"


@component
class R2RMultiQueryRetriever:
    """
    Retrieve with each query of a list and fuse the results by reciprocal-rank fusion (``k``, 60 by default),
    deduplicated by document id. Each returned document has ``score`` = its RRF score and, in ``meta``,
    ``r2r_sub_queries`` (the queries that found it) and ``r2r_sub_query_ranks`` ({query: rank, from 1}).
    A query that retrieves nothing is logged and contributes nothing. Input documents are never mutated.

    Usage example:
    ```python
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from haystack_r2r import R2RMultiQueryRetriever

    retriever = R2RMultiQueryRetriever(retriever=InMemoryBM25Retriever(document_store=store, top_k=20), top_k=50)
    docs = retriever.run(queries=["vitamin D fractures", "vitamin D falls"])["documents"]
    docs[0].meta["r2r_sub_queries"]
    ```

    :param retriever: any text retriever (``run(query=...) -> {"documents": [...]}``).
    :param top_k: how many fused documents to return (``None``: all).
    :param k: the RRF constant.
    """

    def __init__(self, *, retriever: Any, top_k: int | None = None, k: float = RRF_K) -> None:
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        self.retriever = retriever
        self.top_k = top_k
        self.k = k
        self._warm = False

    def warm_up(self) -> None:
        """Warm the wrapped retriever up (idempotent)."""
        if not self._warm:
            if hasattr(self.retriever, "warm_up"):
                self.retriever.warm_up()
            self._warm = True

    @component.output_types(documents=list[Document])
    def run(
        self, queries: list[str], top_k: int | None = None, retriever_kwargs: dict[str, Any] | None = None
    ) -> dict[str, list[Document]]:
        """
        Retrieve with every query and fuse.

        :param queries: the (sub-)queries; repeated ones are run once.
        :param top_k: overrides the component's ``top_k``.
        :param retriever_kwargs: passed to the retriever's ``run`` (e.g. ``filters``).
        :returns: ``documents``: the fused list, best first.
        """
        top_k = self.top_k if top_k is None else top_k
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        queries = list(dict.fromkeys(q for q in queries if isinstance(q, str) and q.strip()))
        if not queries:
            raise ValueError(
                "no query to retrieve with: the list of queries is empty or holds only blank strings"
            )
        self.warm_up()
        lists = []
        docs: dict[str, Document] = {}
        for q in queries:
            found = (self.retriever.run(query=q, **(retriever_kwargs or {})) or {}).get("documents") or []
            if not found:
                logger.warning("R2RMultiQueryRetriever: query {query!r} retrieved nothing", query=q)
            for d in found:
                docs.setdefault(d.id, d)
            lists.append((q, [d.id for d in found]))
        fused = reciprocal_rank_fusion(lists, k=self.k, top_k=top_k)
        out = [
            dataclasses.replace(
                docs[f.doc_id],
                score=f.score,
                meta={
                    **docs[f.doc_id].meta,
                    META_SUB_QUERIES: list(f.found_by),
                    META_SUB_QUERY_RANKS: dict(f.ranks),
                },
            )
            for f in fused
        ]
        return {"documents": out}

    def to_dict(self) -> dict[str, Any]:
        """
        Serialize this component to a dictionary.

        :returns: The dictionary, as ``Pipeline.dumps`` writes it.
        """
        return default_to_dict(
            self,
            retriever=component_to_dict(obj=self.retriever, name="retriever"),
            top_k=self.top_k,
            k=self.k,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> R2RMultiQueryRetriever:
        """
        Deserialize the component from a dictionary (``data`` is left untouched).

        :param data: The dictionary ``to_dict`` wrote.
        :returns: The component.
        """
        data = copy.deepcopy(data)
        deserialize_component_inplace(data["init_parameters"], key="retriever")
        return default_from_dict(cls, data)
