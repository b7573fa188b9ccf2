"""Model-agnostic evidence by occlusion: the sentence whose removal lowers a document's score most.

Every sentence of a document is removed in turn and the variant is scored again (one ``score_batch`` call for
all variants of all documents); the evidence is the sentence whose removal lowers the score most. It is an
exact substring of ``doc.text``, or ``None`` when no removal lowers the score. It needs a pointwise family
(``score_batch``): families that rank lists (listwise, setwise, pairwise LLMs) give no occlusion evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from reason2rank.explain.sentences import sentence_spans
from reason2rank.types import Doc, Query

if TYPE_CHECKING:
    from reason2rank.reranker import Reranker

__all__ = ["occlusion_evidence"]


def occlusion_evidence(reranker: Reranker, tasks: Sequence[tuple[Query, Doc, float]]) -> list[str | None]:
    """For each (query, doc, score of doc): the sentence whose removal lowers the score most."""
    items: list[tuple[Query, list[Doc]]] = []
    spans_per_task: list[list[tuple[int, int]]] = []
    for query, doc, _ in tasks:
        text = doc.body
        spans = sentence_spans(text)
        spans_per_task.append(spans)
        variants = [
            Doc(id=f"{doc.id}#-{i}", text=(text[:a] + " " + text[b:]).strip(), title=doc.title)
            for i, (a, b) in enumerate(spans)
        ]
        items.append((query, variants))
    scorable = [i for i, (_, v) in enumerate(items) if v]
    scores = reranker.score_batch([items[i] for i in scorable]) if scorable else []
    out: list[str | None] = [None] * len(tasks)
    for i, s in zip(scorable, scores):
        drops = [tasks[i][2] - float(x) for x in s]
        best = max(range(len(drops)), key=lambda j: (drops[j], -j))
        if drops[best] > 0:
            a, b = spans_per_task[i][best]
            out[i] = tasks[i][1].body[a:b]
    return out
