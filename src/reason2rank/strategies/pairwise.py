"""Pairwise reranking (PRP, Qin et al., NAACL 2024), with comparison reasoning (Reason-to-Rank at inference).

Every comparison is asked in both orders (A/B and B/A) to cancel position bias: a document wins when both
answers prefer it; answers that disagree (or do not parse) count as a tie. Modes:

- ``allpairs``: every pair of the top ``depth`` candidates; a document's score is its number of wins (a tie is
  half a win), ties broken by first-stage order. ``n (n - 1)`` prompts, all in one LLM call per query batch.
- ``sorting``: PRP-Sliding-k — ``k`` passes of bubble sort from the bottom of the list to the top, swapping a
  pair when the lower document wins, so the top ``k`` are sorted. Each comparison depends on the last, so the
  comparisons of one step of every query go in one call.

With the ``reasoning`` prompt the LLM explains each comparison before answering; the explanation of the pair that
ends next to each other in the final order lands in ``ScoredDoc.comparison`` (why the document outranks the next
one), when that pair was compared. Read-outs: ``generation`` (``llm.answers.parse_preference``) or ``likelihood``
(the more probable of the labels ``A``/``B`` after the prompt's prefix; local transformers backends only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reason2rank.llm.answers import parse_preference
from reason2rank.llm.client import LLMRequest
from reason2rank.strategies.base import Answer, LLMStrategy, Plan, PlanResult, Step
from reason2rank.types import Doc, Query

__all__ = ["PairwiseReranker"]

MODES = ("allpairs", "sorting")
READOUTS = ("generation", "likelihood")


class PairwiseReranker(LLMStrategy):
    """Pairwise reranking by an LLM, both orders asked (see the module docstring).

    Args (beyond ``LLMStrategy``'s): ``mode`` (``sorting`` or ``allpairs``), ``k`` (passes of ``sorting``: the
    documents sorted at the top; 10), ``readout`` (``generation`` or ``likelihood``), ``prompt`` (``prp``,
    ``reasoning`` or a template of task ``pairwise``).
    """

    family = "pairwise"
    task = "pairwise"
    default_prompt = "prp_v1"

    def __init__(
        self,
        model: Any = None,
        *,
        mode: str = "sorting",
        k: int = 10,
        readout: str = "generation",
        **kwargs: Any,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        super().__init__(model, **kwargs)
        self.mode, self.k, self.readout = mode, k, readout

    def answer_tokens(self) -> int:
        """The token budget of one answer (reasoning prompts reason first)."""
        return 512 if "reasoning" in self.prompt.version else 8

    # -- one comparison, both orders --------------------------------------------------------------------------
    def _pair_requests(self, query: Query, docs: Sequence[Doc], a: int, b: int) -> list[LLMRequest]:
        out = []
        for first, second, order in ((a, b, "AB"), (b, a, "BA")):
            values = {"query": query.text, "document_a": self.cutter(docs[first].full_text),
                      "document_b": self.cutter(docs[second].full_text)}  # fmt: skip
            tags = self.tags(query, pair=[a, b], order=order)
            out.append(LLMRequest(self.prompt.render(values), self.settings(self.answer_tokens()), tags))
        return out

    def _outcome(self, ab: Answer, ba: Answer, result: PlanResult) -> tuple[float, str | None, str | None]:
        """(1 when the first document wins, 0 when the second does, 0.5 for a tie; the reasons for each side)."""
        prefs = []
        reasons = []
        for (res, record), flip in ((ab, False), (ba, True)):
            parsed = parse_preference(self.answer_text(res))
            record.repaired = parsed.preferred is None
            record.problems = list(parsed.problems)
            if parsed.preferred is None:
                result.counts["unparsed"] = result.counts.get("unparsed", 0) + 1
            pref = parsed.preferred
            if flip and pref in ("A", "B"):
                pref = "B" if pref == "A" else "A"
            prefs.append(pref)
            reasons.append(parsed.reasoning)
        if prefs == ["A", "A"]:
            return 1.0, reasons[0] or reasons[1], None
        if prefs == ["B", "B"]:
            return 0.0, None, reasons[0] or reasons[1]
        result.counts["inconsistent"] = result.counts.get("inconsistent", 0) + 1
        return 0.5, None, None

    def _likelihood_outcomes(self, pairs: list[tuple[int, int]], reqs: list[LLMRequest]) -> list[float]:
        logps = self.llm.label_logprobs(reqs, [" A", " B"])
        out = []
        for p in range(len(pairs)):
            ab, ba = logps[2 * p], logps[2 * p + 1]
            first_ab = ab[0] > ab[1]
            first_ba = ba[1] > ba[0]  # in the B/A prompt the first document is B
            out.append(1.0 if first_ab and first_ba else 0.0 if not first_ab and not first_ba else 0.5)
        return out

    def _compare(self, query: Query, docs: Sequence[Doc], pairs: list[tuple[int, int]], result: PlanResult,
                 reasons: dict[frozenset[int], tuple[int, str | None]]) -> Step[list[float]]:  # fmt: skip
        """Ask every pair in both orders (one batch); returns the outcome of each (1: the first wins)."""
        reqs = [r for a, b in pairs for r in self._pair_requests(query, docs, a, b)]
        result.counts["comparisons"] = result.counts.get("comparisons", 0) + len(pairs)
        if self.readout == "likelihood":
            outcomes = self._likelihood_outcomes(pairs, reqs)
            yield []
            return outcomes
        answers = yield reqs
        outcomes = []
        for p, (a, b) in enumerate(pairs):
            outcome, why_a, why_b = self._outcome(answers[2 * p], answers[2 * p + 1], result)
            outcomes.append(outcome)
            if outcome != 0.5:
                reasons[frozenset((a, b))] = (a, why_a) if outcome == 1.0 else (b, why_b)
        return outcomes

    # -- the modes --------------------------------------------------------------------------------------------
    def plan(self, query: Query, docs: Sequence[Doc]) -> Plan:
        """All pairs, or k bubble passes (see the module docstring)."""
        n = len(docs)
        result = PlanResult(order=list(range(n)), counts={"comparisons": 0, "unparsed": 0, "inconsistent": 0})
        reasons: dict[frozenset[int], tuple[int, str | None]] = {}
        if n < 2:
            return result
        if self.mode == "allpairs":
            pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
            outcomes = yield from self._compare(query, docs, pairs, result, reasons)
            wins = np.zeros(n)
            for (a, b), o in zip(pairs, outcomes):
                wins[a] += o
                wins[b] += 1.0 - o
            order = sorted(range(n), key=lambda i: (-wins[i], i))
        else:
            order = list(range(n))
            for p in range(min(self.k, n - 1)):
                for i in range(n - 2, p - 1, -1):
                    [outcome] = yield from self._compare(
                        query, docs, [(order[i], order[i + 1])], result, reasons
                    )
                    if outcome == 0.0:  # the lower document wins: it moves up
                        order[i], order[i + 1] = order[i + 1], order[i]
        result.order = order
        for a, b in zip(order, order[1:]):
            got = reasons.get(frozenset((a, b)))
            if got is not None and got[0] == a:
                result.comparisons[a] = got[1]
        return result

    def r2r_config(self) -> dict[str, Any]:
        """The pairwise fields of ``r2r_model.json``."""
        return {**super().r2r_config(), "mode": self.mode, "k": self.k, "readout": self.readout}
