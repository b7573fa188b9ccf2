"""The one interface every model family implements: ``Reranker``.

A subclass supplies ``score_batch`` (scores for each query's candidates) and, when it can, ``generate_reasoning``.
Validation, sorting, 0-based ranks, ties and the ``explain=k`` step live here once.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from reason2rank.types import Doc, Query, ScoredDoc, clean_text

QueryLike = Query | str
DocLike = Doc | str


class Reranker(ABC):
    """Scores candidates for queries and orders them; optionally explains the top-k.

    ``rerank(query, docs, explain=k)`` and ``rerank_batch([(query, docs), ...], explain=k)`` return, per
    query, ``ScoredDoc`` objects sorted by descending score with 0-based ranks. Equal scores keep the input
    order, so the output is deterministic. Inputs are never mutated.
    """

    #: whether ``explain=k`` fills ``evidence`` (through ``explain_evidence``: by default sentence occlusion,
    #: which costs one scoring pass per sentence)
    evidence: bool = True

    # -- what a family implements -------------------------------------------------------------------
    @abstractmethod
    def score_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[np.ndarray]:
        """Return one float array per item, aligned with that item's docs."""

    def generate_reasoning(self, query: Query, docs: Sequence[Doc]) -> list[str | None]:
        """Reasoning text for each doc; families that cannot generate return ``None`` for every doc."""
        return [None] * len(docs)

    def generate_comparisons(self, query: Query, pairs: Sequence[tuple[Doc, Doc]]) -> list[str | None]:
        """Why the first doc of each pair outranks the second; ``None`` where the family cannot say."""
        return [None] * len(pairs)

    def explain_evidence(self, tasks: Sequence[tuple[Query, Doc, float]]) -> list[str | None]:
        """Evidence for each (query, doc, score of doc): an exact substring of ``doc.text`` or ``None``.

        The default is sentence occlusion (``explain.occlusion_evidence``); families with a learned evidence
        head override it. Called once per ``rerank_batch`` with the top-k of every query.
        """
        from reason2rank.explain import occlusion_evidence

        return occlusion_evidence(self, tasks)

    @property
    def can_reason(self) -> bool:
        return type(self).generate_reasoning is not Reranker.generate_reasoning

    # -- the public interface -----------------------------------------------------------------------
    def rerank(self, query: QueryLike, docs: Sequence[DocLike], explain: int = 0) -> list[ScoredDoc]:
        return self.rerank_batch([(query, docs)], explain=explain)[0]

    def rerank_batch(
        self, items: Sequence[tuple[QueryLike, Sequence[DocLike]]], explain: int = 0
    ) -> list[list[ScoredDoc]]:
        if isinstance(explain, bool) or not isinstance(explain, int) or explain < 0:
            raise ValueError(
                f"explain must be a non-negative int (the number of top documents to explain), got {explain!r}"
            )
        prepared = prepare_items(items)
        results: list[list[ScoredDoc]] = [[] for _ in prepared]
        nonempty = [i for i, (_, docs) in enumerate(prepared) if docs]
        if nonempty:
            scores = self.score_batch([prepared[i] for i in nonempty])
            for i, s in zip(nonempty, scores):
                results[i] = rank_docs(prepared[i][1], s)
        if explain:
            from reason2rank.explain import explain_top_k

            results = explain_top_k(self, [q for q, _ in prepared], results, explain)
        return results

    def describe(self) -> dict[str, Any]:
        """A short description (family, model) used by adapters for repr and by ``save``."""
        return {"family": type(self).__name__}


def _as_query(q: QueryLike, index: int) -> Query:
    if isinstance(q, Query):
        return q
    if isinstance(q, str):
        return Query(id=str(index), text=q)
    raise TypeError(f"query #{index} must be a reason2rank.Query or a str, got {type(q).__name__}")


def prepare_items(items: Sequence[tuple[QueryLike, Sequence[DocLike]]]) -> list[tuple[Query, list[Doc]]]:
    """Validate and normalise input: queries need text, doc ids must be unique per query, None/NaN text
    becomes '' (one warning for all of them). Returns new objects; the input is left untouched."""
    if isinstance(items, tuple) and len(items) == 2 and isinstance(items[0], (Query, str)):
        raise TypeError(
            "rerank_batch takes a list of (query, docs) pairs; for one query call rerank(query, docs)"
        )
    prepared: list[tuple[Query, list[Doc]]] = []
    missing: list[str] = []
    for qi, item in enumerate(items):
        try:
            q, docs = item
        except (TypeError, ValueError):
            raise TypeError(
                f"item #{qi} of rerank_batch must be a (query, docs) pair, got {type(item).__name__}"
            ) from None
        query = _as_query(q, qi)
        out: list[Doc] = []
        seen: dict[str, int] = {}
        dups: set[str] = set()
        for di, d in enumerate(docs):
            if isinstance(d, str):
                d = Doc(id=str(di), text=d)
            elif not isinstance(d, Doc):
                raise TypeError(
                    f"doc #{di} of query {query.id!r} must be a reason2rank.Doc or a str, got {type(d).__name__}"
                )
            text, was_missing = clean_text(d.text)
            if was_missing:
                missing.append(f"{query.id}/{d.id}")
            if text is not d.text:
                d = Doc(id=d.id, text=text, title=d.title, meta=d.meta)
            if d.id in seen:
                dups.add(d.id)
            seen[d.id] = di
            out.append(d)
        if dups:
            raise ValueError(
                f"query {query.id!r} has duplicate doc ids {sorted(dups)}; each candidate needs a unique id "
                "(drop the duplicates, e.g. DataFrame.drop_duplicates(['qid', 'docno']))"
            )
        prepared.append((query, out))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        warnings.warn(
            f"{len(missing)} document(s) had no text (None/NaN) and were scored as empty: {shown}",
            stacklevel=3,
        )
    return prepared


def rank_docs(docs: Sequence[Doc], scores: np.ndarray) -> list[ScoredDoc]:
    """Sort by descending score; ties keep input order (stable), ranks are 0-based."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(docs):
        raise RuntimeError(f"scorer returned {len(scores)} scores for {len(docs)} documents")
    order = np.argsort(-scores, kind="stable")
    return [ScoredDoc(doc=docs[i], score=float(scores[i]), rank=r) for r, i in enumerate(order)]
