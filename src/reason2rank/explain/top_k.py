"""``explain_top_k``: fill reasoning, comparison and evidence on the top-k of each ranking.

What each family can say is its own choice (``Reranker.can_reason``, ``Reranker.evidence``); what a ranking
already found (a ``Ranking``'s evidence and reasoning) is used as it is, so nothing is asked twice. Evidence
comes from ``Reranker.explain_evidence`` (occlusion by default, a learned head where a family has one).
Documents without text get no explanation. Whatever a model cannot give stays ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from reason2rank.types import Doc, Query, ScoredDoc, is_readable

if TYPE_CHECKING:
    from reason2rank.reranker import Reranker

__all__ = ["explain_top_k"]


def explain_top_k(
    reranker: Reranker,
    queries: Sequence[Query],
    results: list[list[ScoredDoc]],
    k: int,
    *,
    evidence: Sequence[Mapping[str, str | None]] | None = None,
    reasoning: Sequence[Mapping[str, str | None]] | None = None,
    comparisons: Sequence[Mapping[str, str | None]] | None = None,
) -> list[list[ScoredDoc]]:
    """Explain the top-``k`` of each ranked list; ``evidence``/``reasoning``/``comparisons`` (per query, doc id ->
    text; a comparison is the model's comparison of the doc with the next one) are what the ranking already found.
    Reasoning and comparisons still to write are generated in one batch across all queries
    (``Reranker.generate_reasoning_many`` / ``generate_comparisons_many``). Returns new lists; the rest of each list
    stays unexplained."""
    found_ev = list(evidence) if evidence is not None else [{} for _ in results]
    found_re = list(reasoning) if reasoning is not None else [{} for _ in results]
    found_cmp = list(comparisons) if comparisons is not None else [{} for _ in results]
    tops = [[sd for sd in ranked[:k] if is_readable(sd.doc, reranker.reads_images)] for ranked in results]

    ev: dict[tuple[int, str], str | None] = {}
    for qi, top in enumerate(tops):
        for sd in top:
            if sd.doc.id in found_ev[qi]:
                ev[qi, sd.doc.id] = found_ev[qi][sd.doc.id]
    if reranker.evidence:
        keys = [(qi, sd) for qi, top in enumerate(tops) for sd in top if (qi, sd.doc.id) not in ev]
        if keys:
            got = reranker.explain_evidence([(queries[qi], sd.doc, sd.score) for qi, sd in keys])
            if len(got) != len(keys):
                raise RuntimeError(f"explain_evidence returned {len(got)} results for {len(keys)} documents")
            ev.update(((qi, sd.doc.id), text) for (qi, sd), text in zip(keys, got))

    def view(qi: int, doc: Doc) -> Doc:
        """The document as generated explanations read it: the ranking's evidence where the family says so."""
        text = ev.get((qi, doc.id))
        if reranker.explain_over_evidence and text:
            return Doc(id=doc.id, text=text, meta=doc.meta)
        return doc

    rs: dict[tuple[int, str], str | None] = {}
    cmp: dict[tuple[int, str], str | None] = {}
    reason_todo: list[tuple[int, ScoredDoc]] = []
    compare_todo: list[tuple[int, ScoredDoc, ScoredDoc]] = []
    for qi, top in enumerate(tops):
        for sd in top:
            if sd.doc.id in found_re[qi]:
                rs[qi, sd.doc.id] = found_re[qi][sd.doc.id]
            if sd.doc.id in found_cmp[qi] and sd is not top[-1]:
                cmp[qi, sd.doc.id] = found_cmp[qi][sd.doc.id]
        if not reranker.can_reason or not top:
            continue
        reason_todo += [(qi, sd) for sd in top if (qi, sd.doc.id) not in rs]
        compare_todo += [(qi, a, b) for a, b in zip(top, top[1:]) if (qi, a.doc.id) not in cmp]
    # one batched generation for the whole batch of queries (families that cannot batch go query by query)
    if reason_todo:
        texts = reranker.generate_reasoning_many([(queries[qi], view(qi, sd.doc)) for qi, sd in reason_todo])
        rs.update(((qi, sd.doc.id), t) for (qi, sd), t in zip(reason_todo, texts))
    if compare_todo:
        got = reranker.generate_comparisons_many(
            [(queries[qi], view(qi, a.doc), view(qi, b.doc)) for qi, a, b in compare_todo]
        )
        cmp.update(((qi, a.doc.id), t) for (qi, a, _), t in zip(compare_todo, got))

    out = []
    for qi, ranked in enumerate(results):
        new = list(ranked)
        for r in range(min(k, len(ranked))):
            key = (qi, ranked[r].doc.id)
            new[r] = dataclasses.replace(
                ranked[r], reasoning=rs.get(key), comparison=cmp.get(key), evidence=ev.get(key)
            )
        out.append(new)
    return out
