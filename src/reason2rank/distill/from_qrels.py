"""A training set from qrels, the fallback teacher without reasons (``TrainingSet.from_qrels``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reason2rank.data.docs import lookup_docs
from reason2rank.data.trec import read_qrels
from reason2rank.distill.dataset import (
    Candidate,
    TrainingQuery,
    TrainingSet,
    check_grade,
    check_min_candidates,
    index_candidates,
)
from reason2rank.seeding import query_rng
from reason2rank.types import Doc, Query

__all__ = ["build_from_qrels"]


def build_from_qrels(
    qrels: Mapping[str, Mapping[str, int | float]] | str | Path,
    candidates: Iterable[tuple[Query, Sequence[Doc]]],
    *,
    negatives: int | None = None,
    add_unretrieved_positives: bool = True,
    docs: Any = None,
    seed: int = 0,
    min_candidates: int = 2,
    sample_negatives: bool = False,
) -> TrainingSet:
    """Qrels as a teacher without reasons: grade = the qrels grade (unjudged = 0), teacher_rank by
    grade (descending, ties in candidate order), no reasoning, evidence or comparisons.

    ``qrels``: qid -> {docid: grade}, or a qrels file (``reason2rank.data.read_qrels``). Positives are
    grade > 0. ``negatives=k`` keeps every positive candidate and the first ``k`` non-positive ones in
    candidate order (the first stage's hard negatives); with ``sample_negatives=True``, ``k`` drawn at
    random instead, from a generator seeded with ``seed`` and the query id (``seed`` has no other use).
    ``add_unretrieved_positives``: positives the candidates miss are appended (in qrels order) when
    ``docs`` (docid -> ``Doc`` or text, a ``get_many`` lookup or a callable, as for
    ``reason2rank.data.candidates_from_run``) has them; otherwise they are counted. Queries left with
    no positive or fewer than ``min_candidates`` candidates are dropped and counted in ``source``.
    """
    check_min_candidates(min_candidates)
    if negatives is not None and (
        isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0
    ):
        raise ValueError(f"negatives must be a non-negative integer or None, got {negatives!r}")
    qrels_name = None
    if isinstance(qrels, (str, Path)):
        qrels_name = str(qrels)
        qrels = read_qrels(qrels)
    qrels = {str(qid): judged for qid, judged in qrels.items()}
    items = index_candidates(candidates)
    counts: Counter[str] = Counter()
    counts["qrels_queries_without_candidates"] = sum(1 for qid in qrels if str(qid) not in items)
    queries: list[TrainingQuery] = []
    for qid, (query, retrieved) in items.items():
        judged = {str(d): g for d, g in (qrels.get(qid) or {}).items()}
        grades = {d: check_grade(g, d) for d, g in judged.items()}
        positives = [d for d in retrieved if (grades.get(d) or 0.0) > 0]
        others = [d for d in retrieved if (grades.get(d) or 0.0) <= 0]
        if negatives is not None:
            if sample_negatives and len(others) > negatives:
                chosen = set(query_rng(seed, qid).sample(others, negatives))
                others = [d for d in others if d in chosen]
            else:
                others = others[:negatives]
        keep = set(positives) | set(others)
        kept = [doc for d, doc in retrieved.items() if d in keep]
        if add_unretrieved_positives:
            missing = [d for d, g in grades.items() if g is not None and g > 0 and d not in retrieved]
            if missing and docs is None:
                counts["unretrieved_positives_skipped"] += len(missing)
            elif missing:
                found = lookup_docs(docs, missing)
                for d in missing:
                    if d in found:
                        kept.append(Doc(id=d, text=found[d].text, title=found[d].title))
                        counts["unretrieved_positives_added"] += 1
                    else:
                        counts["unretrieved_positives_without_text"] += 1
        if not any((grades.get(doc.id) or 0.0) > 0 for doc in kept):
            counts["queries_without_positives"] += 1
            continue
        if len(kept) < min_candidates:
            counts["queries_too_few_candidates"] += 1
            continue
        by_grade = sorted(range(len(kept)), key=lambda i: (-(grades.get(kept[i].id) or 0.0), i))
        ranks = {kept[i].id: r + 1 for r, i in enumerate(by_grade)}
        queries.append(
            TrainingQuery(query, [Candidate(doc, grades.get(doc.id) or 0.0, ranks[doc.id]) for doc in kept])
        )
    source: dict[str, Any] = {
        "kind": "qrels",
        "qrels": qrels_name,
        "negatives": negatives,
        "sample_negatives": bool(sample_negatives),
        "seed": seed,
        "add_unretrieved_positives": bool(add_unretrieved_positives),
        "min_candidates": min_candidates,
    }
    for key in (
        "qrels_queries_without_candidates",
        "unretrieved_positives_added",
        "unretrieved_positives_skipped",
        "unretrieved_positives_without_text",
        "queries_without_positives",
        "queries_too_few_candidates",
    ):
        source[key] = counts[key]
    return TrainingSet(queries, source)
