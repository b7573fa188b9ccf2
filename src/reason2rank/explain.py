"""Explanations for the top-k of each ranking: generated reasoning and occlusion evidence.

Evidence comes from ``Reranker.explain_evidence``. Its default is model-agnostic occlusion: every sentence of a
top-k document is removed in turn and the document is scored again (one engine run for all variants of all
queries); the evidence is the sentence whose removal lowers the score most. It is an exact substring of the
document text, or ``None`` when no removal lowers the score. Families with a learned evidence head (a
cross-encoder student, see ``reason2rank.evidence``) override the hook.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reason2rank.types import Doc, Query, ScoredDoc

if TYPE_CHECKING:
    from reason2rank.reranker import Reranker

# a sentence ends at . ! ? (optionally followed by quotes/brackets) and whitespace; abbreviations such as
# "e.g." or "Dr." are not special-cased: a slightly short sentence is still a sentence of the document.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (whitespace trimmed, empty pieces dropped)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        _add_span(text, start, m.start(), spans)
        start = m.end()
    _add_span(text, start, len(text), spans)
    return spans


def _add_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


def split_sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def occlusion_evidence(reranker: Reranker, tasks: Sequence[tuple[Query, Doc, float]]) -> list[str | None]:
    """For each (query, doc, score of doc): the sentence whose removal lowers the score most."""
    items: list[tuple[Query, list[Doc]]] = []
    spans_per_task: list[list[tuple[int, int]]] = []
    for query, doc, _ in tasks:
        spans = sentence_spans(doc.text)
        spans_per_task.append(spans)
        variants = [
            Doc(id=f"{doc.id}#-{i}", text=(doc.text[:a] + " " + doc.text[b:]).strip(), title=doc.title)
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
            out[i] = tasks[i][1].text[a:b]
    return out


def explain_top_k(
    reranker: Reranker, queries: Sequence[Query], results: list[list[ScoredDoc]], k: int
) -> list[list[ScoredDoc]]:
    """Fill reasoning, comparison and evidence on the top-k of each ranking; the rest stays ``None``."""
    reasoning: dict[tuple[int, int], str | None] = {}
    comparison: dict[tuple[int, int], str | None] = {}
    if reranker.can_reason:
        for qi, (query, ranked) in enumerate(zip(queries, results)):
            top = ranked[:k]
            if not top:
                continue
            for r, text in enumerate(reranker.generate_reasoning(query, [sd.doc for sd in top])):
                reasoning[qi, r] = text
            pairs = [(top[r].doc, top[r + 1].doc) for r in range(len(top) - 1)]
            for r, text in enumerate(reranker.generate_comparisons(query, pairs)):
                comparison[qi, r] = text
    evidence: dict[tuple[int, int], str | None] = {}
    if reranker.evidence:
        keys = [(qi, r) for qi, ranked in enumerate(results) for r in range(min(k, len(ranked)))]
        tasks = [(queries[qi], results[qi][r].doc, results[qi][r].score) for qi, r in keys]
        found = reranker.explain_evidence(tasks)
        if len(found) != len(tasks):
            raise RuntimeError(f"explain_evidence returned {len(found)} results for {len(tasks)} documents")
        evidence = dict(zip(keys, found))
    out = []
    for qi, ranked in enumerate(results):
        new = list(ranked)
        for r in range(min(k, len(ranked))):
            new[r] = dataclasses.replace(
                ranked[r],
                reasoning=reasoning.get((qi, r)),
                comparison=comparison.get((qi, r)),
                evidence=evidence.get((qi, r)),
            )
        out.append(new)
    return out
