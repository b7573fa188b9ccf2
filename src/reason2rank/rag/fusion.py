"""Fusing the ranked lists of several queries into one, keeping which query found each document.

``reciprocal_rank_fusion`` is Cormack et al.'s RRF: a document scores ``sum over lists of 1 / (k + rank)``, ranks
1-based, ``k = 60``; a document missing from a list gets nothing from it. ``linear_fusion`` is a weighted sum of
scores normalised per list (min-max to [0, 1]; a document missing from a list gets 0 from it). Both deduplicate
by document id: within one list only a document's first (best) occurrence counts; across lists its
contributions add up, and every ``FusedDoc`` records the labels of the lists (sub-queries) that found it and
its rank in each. Ties are broken by the best rank in any list, then by first appearance: fusion is
deterministic. Plain data in, plain data out: the adapters keep their own documents by id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FusedDoc", "linear_fusion", "reciprocal_rank_fusion"]

RRF_K = 60


@dataclass(frozen=True)
class FusedDoc:
    """One document of a fused list: its id, fused score, 1-based fused rank, the labels of the lists that
    found it (in list order) and its 1-based rank in each of them."""

    doc_id: str
    score: float
    rank: int
    found_by: tuple[str, ...]
    ranks: Mapping[str, int] = field(default_factory=dict)


def _check_lists(lists: Sequence[tuple[str, Sequence[Any]]]) -> None:
    labels = [label for label, _ in lists]
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise ValueError(f"each ranked list needs its own label; repeated: {dup}")


def _first_ranks(ids: Sequence[str]) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for r, doc_id in enumerate(ids, start=1):
        ranks.setdefault(str(doc_id), r)  # a duplicate within one list: its first (best) rank counts
    return ranks


def _ordered(
    scores: dict[str, float], ranks: dict[str, dict[str, int]], order: dict[str, int], top_k: int | None
) -> list[FusedDoc]:
    ids = sorted(scores, key=lambda d: (-scores[d], min(ranks[d].values()), order[d]))
    if top_k is not None:
        ids = ids[:top_k]
    return [
        FusedDoc(doc_id=d, score=scores[d], rank=i, found_by=tuple(ranks[d]), ranks=dict(ranks[d]))
        for i, d in enumerate(ids, start=1)
    ]


def _check_top_k(top_k: int | None) -> None:
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")


def reciprocal_rank_fusion(
    lists: Sequence[tuple[str, Sequence[str]]], *, k: float = RRF_K, top_k: int | None = None
) -> list[FusedDoc]:
    """Fuse ``[(label, [doc_id, ...best first]), ...]`` by RRF; empty lists contribute nothing."""
    if not k >= 0 or math.isinf(k):
        raise ValueError(f"k must be a finite number >= 0, got {k!r}")
    _check_top_k(top_k)
    _check_lists(lists)
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    order: dict[str, int] = {}
    for label, ids in lists:
        for doc_id, r in _first_ranks(ids).items():
            scores[doc_id] = scores.get(doc_id, 0.0) + 1.0 / (k + r)
            ranks.setdefault(doc_id, {})[label] = r
            order.setdefault(doc_id, len(order))
    return _ordered(scores, ranks, order, top_k)


def linear_fusion(
    lists: Sequence[tuple[str, Sequence[tuple[str, float]]]],
    *,
    weights: Sequence[float] | None = None,
    top_k: int | None = None,
) -> list[FusedDoc]:
    """Fuse ``[(label, [(doc_id, score), ...best first]), ...]`` by a weighted sum of min-max normalised scores.

    ``weights`` (one per list, default all 1) multiply each list's normalised scores. A list whose scores are all
    equal normalises to 1 for each of its documents. NaN or infinite scores are refused."""
    _check_top_k(top_k)
    _check_lists(lists)
    if weights is None:
        weights = [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ValueError(f"{len(weights)} weights for {len(lists)} ranked lists")
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    order: dict[str, int] = {}
    for (label, pairs), w in zip(lists, weights):
        first: dict[str, tuple[int, float]] = {}
        for r, (doc_id, s) in enumerate(pairs, start=1):
            s = float(s)
            if not math.isfinite(s):
                raise ValueError(f"list {label!r}: document {doc_id!r} has a non-finite score {s!r}")
            first.setdefault(str(doc_id), (r, s))
        if not first:
            continue
        lo = min(s for _, s in first.values())
        hi = max(s for _, s in first.values())
        for doc_id, (r, s) in first.items():
            norm = (s - lo) / (hi - lo) if hi > lo else 1.0
            scores[doc_id] = scores.get(doc_id, 0.0) + w * norm
            ranks.setdefault(doc_id, {})[label] = r
            order.setdefault(doc_id, len(order))
    return _ordered(scores, ranks, order, top_k)
