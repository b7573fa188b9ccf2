"""The one interface every model family implements: ``Reranker``.

A family supplies either ``score_batch`` (a score per document of each query: the pointwise families) or
``rank_batch`` (a ``Ranking`` per query: scores plus what the family found out while ranking, such as the
passage the cascade scored a long document by). Validation, the policy for documents without text, sorting,
0-based ranks, ties and the ``explain=k`` step live here once, so every family and both adapters behave alike.

Documents without text (``Doc.text`` is ``None``/NaN and there is no title) are never shown to a model: they
rank after every document with text, in input order, each with the score ``min(scores of the query) - 1`` (or
``-1.0`` when no document of the query has text), a finite number that strict JSON writers accept; one warning
per call names them. They get no explanation. An empty string is text (an empty one) and is scored.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reason2rank.types import Doc, Query, ScoredDoc, clean_text, is_readable

QueryLike = Query | str
DocLike = Doc | str

__all__ = [
    "MISSING_TEXT_OFFSET",
    "DocLike",
    "QueryLike",
    "RankedList",
    "Ranking",
    "Reranker",
    "prepare_items",
    "rank_docs",
    "split_scores",
]

#: how far below the lowest model score of its query a document without text is placed
MISSING_TEXT_OFFSET = 1.0


@dataclass
class Ranking:
    """What a family returns for one query.

    ``scores`` are aligned with the documents the family was given (higher is better; equal scores keep the
    input order). Families that produce an *order* (listwise, setwise, pairwise) give it with ``from_order``:
    the document at position ``p`` of ``n`` scores ``n - p`` (monotonic, comparable within the query only).
    ``evidence``, ``reasoning`` and ``comparisons`` (why a document outranks the one after it in the final order)
    map a document's index to what the family found while ranking (``None``: it looked and found nothing);
    ``explain=k`` uses them for the top-k instead of asking again. ``info`` holds per-query accounting (LLM calls,
    tokens, repaired answers), which ``rerank_batch`` returns on each list as ``RankedList.info``.
    """

    scores: np.ndarray
    evidence: dict[int, str | None] = field(default_factory=dict)
    reasoning: dict[int, str | None] = field(default_factory=dict)
    comparisons: dict[int, str | None] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_order(cls, order: Sequence[int], **kwargs: Any) -> Ranking:
        """A ranking whose scores come from an order of the documents (indices, best first; a permutation)."""
        n = len(order)
        if sorted(order) != list(range(n)):
            raise ValueError(f"an order must be a permutation of range({n}), got {list(order)}")
        scores = np.zeros(n, dtype=np.float64)
        for position, i in enumerate(order):
            scores[i] = float(n - position)
        return cls(scores, **kwargs)


class RankedList(list):
    """One query's ranked ``ScoredDoc`` list, with ``info``: what ranking it cost (LLM calls, tokens, ...)."""

    def __init__(self, items: Sequence[ScoredDoc] = (), info: dict[str, Any] | None = None) -> None:
        super().__init__(items)
        self.info: dict[str, Any] = dict(info or {})


class Reranker:
    """Scores candidates for queries and orders them; optionally explains the top-k.

    ``rerank(query, docs, explain=k)`` and ``rerank_batch([(query, docs), ...], explain=k)`` return, per
    query, ``ScoredDoc`` objects sorted by descending score with 0-based ranks. Equal scores keep the input
    order, so the output is deterministic. Inputs are never mutated.
    """

    #: whether ``explain=k`` fills ``evidence`` (through ``explain_evidence``: by default sentence occlusion,
    #: which costs one scoring pass per sentence) for documents whose ranking did not already give it
    evidence: bool = True
    #: whether generated explanations read the evidence the ranking found (e.g. the cascade's best window)
    #: instead of the whole document
    explain_over_evidence: bool = False
    #: whether the family reads documents' images (vision-language models); text families rank a document that
    #: has only images last, unscored, like one without text
    reads_images: bool = False

    # -- what a family implements -------------------------------------------------------------------
    def score_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[np.ndarray]:
        """One float array per item, aligned with that item's docs (pointwise families implement this)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither score_batch nor rank_batch")

    def rank_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[Ranking]:
        """One ``Ranking`` per item; the default wraps ``score_batch``."""
        return [Ranking(np.asarray(s, dtype=np.float64).reshape(-1)) for s in self.score_batch(items)]

    def generate_reasoning(self, query: Query, docs: Sequence[Doc]) -> list[str | None]:
        """Reasoning text for each doc; families that cannot generate return ``None`` for every doc."""
        return [None] * len(docs)

    def generate_comparisons(self, query: Query, pairs: Sequence[tuple[Doc, Doc]]) -> list[str | None]:
        """Why the first doc of each pair outranks the second; ``None`` where the family cannot say."""
        return [None] * len(pairs)

    def generate_reasoning_many(self, items: Sequence[tuple[Query, Doc]]) -> list[str | None]:
        """Reasoning for (query, doc) items of several queries; families that batch generation across queries
        override this (the default asks ``generate_reasoning`` query by query)."""
        out: list[str | None] = [None] * len(items)
        for idx, query, docs in _by_query([(q, d) for q, d in items]):
            for i, text in zip(idx, self.generate_reasoning(query, docs)):
                out[i] = text
        return out

    def generate_comparisons_many(self, items: Sequence[tuple[Query, Doc, Doc]]) -> list[str | None]:
        """Comparisons for (query, A, B) items of several queries (the default: ``generate_comparisons`` query by
        query)."""
        out: list[str | None] = [None] * len(items)
        for idx, query, pairs in _by_query([(q, (a, b)) for q, a, b in items]):
            for i, text in zip(idx, self.generate_comparisons(query, pairs)):
                out[i] = text
        return out

    def explain_evidence(self, tasks: Sequence[tuple[Query, Doc, float]]) -> list[str | None]:
        """Evidence for each (query, doc, score of doc): an exact substring of ``doc.text`` or ``None``.

        The default is sentence occlusion (``explain.occlusion_evidence``); families with a learned evidence
        head override it. Called once per ``rerank_batch`` with the top-k of every query.
        """
        from reason2rank.explain import occlusion_evidence

        return occlusion_evidence(self, tasks)

    @property
    def can_reason(self) -> bool:
        """Whether the family generates reasoning (it overrides ``generate_reasoning``)."""
        return type(self).generate_reasoning is not Reranker.generate_reasoning

    # -- the public interface -----------------------------------------------------------------------
    def rerank(self, query: QueryLike, docs: Sequence[DocLike], explain: int = 0) -> list[ScoredDoc]:
        """Rerank one query's documents (see the class docstring)."""
        return self.rerank_batch([(query, docs)], explain=explain)[0]

    def rerank_batch(
        self, items: Sequence[tuple[QueryLike, Sequence[DocLike]]], explain: int = 0
    ) -> list[list[ScoredDoc]]:
        """Rerank several queries at once (the family batches across them); one ranked list per item."""
        if isinstance(explain, bool) or not isinstance(explain, int) or explain < 0:
            raise ValueError(
                f"explain must be a non-negative int (the number of top documents to explain), got {explain!r}"
            )
        prepared = prepare_items(items, reads_images=self.reads_images)
        work = [
            (qi, [i for i, d in enumerate(docs) if is_readable(d, self.reads_images)])
            for qi, (_, docs) in enumerate(prepared)
        ]
        work = [(qi, idx) for qi, idx in work if idx]
        rankings: list[Ranking] = []
        if work:
            rankings = self.rank_batch(
                [(prepared[qi][0], [prepared[qi][1][i] for i in idx]) for qi, idx in work]
            )
            if len(rankings) != len(work):
                raise RuntimeError(
                    f"{type(self).__name__} returned {len(rankings)} rankings for {len(work)} queries"
                )
        results: list[list[ScoredDoc]] = [rank_docs(docs, np.zeros(0), scored=()) for _, docs in prepared]
        infos: list[dict[str, Any]] = [{} for _ in prepared]
        evidence: list[dict[str, str | None]] = [{} for _ in prepared]
        reasoning: list[dict[str, str | None]] = [{} for _ in prepared]
        comparisons: list[dict[str, str | None]] = [{} for _ in prepared]
        for (qi, idx), ranking in zip(work, rankings):
            docs = prepared[qi][1]
            results[qi] = rank_docs(docs, ranking.scores, scored=idx)
            infos[qi] = ranking.info
            evidence[qi] = {docs[idx[j]].id: text for j, text in ranking.evidence.items()}
            reasoning[qi] = {docs[idx[j]].id: text for j, text in ranking.reasoning.items()}
            comparisons[qi] = {docs[idx[j]].id: text for j, text in ranking.comparisons.items()}
        if explain:
            from reason2rank.explain import explain_top_k

            results = explain_top_k(
                self,
                [q for q, _ in prepared],
                results,
                explain,
                evidence=evidence,
                reasoning=reasoning,
                comparisons=comparisons,
            )
        return [RankedList(r, info) for r, info in zip(results, infos)]

    def describe(self) -> dict[str, Any]:
        """A short description (family, model) used by adapters for repr and by ``save``."""
        return {"family": type(self).__name__}


def _as_query(q: QueryLike, index: int) -> Query:
    if isinstance(q, Query):
        return q
    if isinstance(q, str):
        return Query(id=str(index), text=q)
    raise TypeError(f"query #{index} must be a reason2rank.Query or a str, got {type(q).__name__}")


def prepare_items(
    items: Sequence[tuple[QueryLike, Sequence[DocLike]]], reads_images: bool = False
) -> list[tuple[Query, list[Doc]]]:
    """Validate and normalise input: queries need text, doc ids must be unique per query, a missing text
    (None/NaN/NA) becomes ``None`` and other non-str text ``str``; one warning names the documents without
    text (see the module docstring). Returns new objects; the input is left untouched."""
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
        seen: set[str] = set()
        dups: set[str] = set()
        for di, d in enumerate(docs):
            if isinstance(d, str):
                d = Doc(id=str(di), text=d)
            elif not isinstance(d, Doc):
                raise TypeError(
                    f"doc #{di} of query {query.id!r} must be a reason2rank.Doc or a str, got {type(d).__name__}"
                )
            text, was_missing = clean_text(d.text)
            new_text = None if was_missing else text
            if new_text is not d.text:
                d = dataclasses.replace(d, text=new_text)
            if not is_readable(d, reads_images):
                missing.append(f"{query.id}/{d.id}")
            if d.id in seen:
                dups.add(d.id)
            seen.add(d.id)
            out.append(d)
        if dups:
            raise ValueError(
                f"query {query.id!r} has duplicate doc ids {sorted(dups)}; each candidate needs a unique id "
                "(drop the duplicates, e.g. DataFrame.drop_duplicates(['qid', 'docno']))"
            )
        prepared.append((query, out))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        warnings.warn(
            f"{len(missing)} document(s) have no text (None/NaN){' or image' if reads_images else ''} and were "
            f"ranked last, unscored: {shown}",
            stacklevel=3,
        )
    return prepared


def rank_docs(
    docs: Sequence[Doc], scores: np.ndarray, scored: Sequence[int] | None = None
) -> list[ScoredDoc]:
    """Sort by descending score (ties keep input order), 0-based ranks.

    ``scores`` are aligned with ``docs[i] for i in scored`` (default: every doc); documents left out of
    ``scored`` rank after them in input order, with the score ``min(scores) - MISSING_TEXT_OFFSET``.
    """
    scored = list(range(len(docs))) if scored is None else list(scored)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(scored):
        raise RuntimeError(f"scorer returned {len(scores)} scores for {len(scored)} documents")
    if not np.all(np.isfinite(scores)):
        bad = [docs[scored[j]].id for j in np.flatnonzero(~np.isfinite(scores))]
        raise RuntimeError(f"the model gave non-finite scores (nan/inf) to documents {bad[:5]}")
    order = np.argsort(-scores, kind="stable")
    out = [ScoredDoc(doc=docs[scored[j]], score=float(scores[j]), rank=r) for r, j in enumerate(order)]
    rest = sorted(set(range(len(docs))) - set(scored))
    if rest:
        floor = (float(scores.min()) if len(scores) else 0.0) - MISSING_TEXT_OFFSET
        if not math.isfinite(floor):  # pragma: no cover - scores are finite above
            floor = -MISSING_TEXT_OFFSET
        out += [ScoredDoc(doc=docs[i], score=floor, rank=len(out) + r) for r, i in enumerate(rest)]
    return out


def split_scores(flat: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Cut a flat float array into consecutive pieces of ``sizes`` (float64)."""
    out, start = [], 0
    for n in sizes:
        out.append(np.asarray(flat[start : start + n], dtype=np.float64))
        start += n
    return out


def _by_query(items: Sequence[tuple[Query, Any]]) -> list[tuple[list[int], Query, list[Any]]]:
    """Items grouped by query (same object), in first-seen order: (positions, query, values)."""
    groups: dict[int, tuple[list[int], Query, list[Any]]] = {}
    for i, (q, v) in enumerate(items):
        g = groups.setdefault(id(q), ([], q, []))
        g[0].append(i)
        g[2].append(v)
    return list(groups.values())
