"""Setwise reranking by heap sort (Zhuang et al., SIGIR 2024; llm-rankers; Rank-R1).

A d-ary max-heap over the candidates (``num_child`` children per node): each comparison shows a parent and its
children in one prompt and asks which is most relevant; when a child wins it swaps with the parent and the
sift-down goes on below. After the heap is built, the top ``k`` are extracted one by one; the rest keep their
first-stage order (as llm-rankers does). Sift-downs of nodes at one heap depth touch disjoint subtrees, so they
run together: the comparisons of one heap level — of every query — go in one LLM call, and the result equals the
sequential heap sort's.

Read-outs: ``generation`` (the answer is parsed by ``llm.answers.parse_choice``: ``C``, ``[3]``,
``<answer>[3]</answer>``; an unparseable answer keeps the parent, counted) or ``likelihood`` (the label whose first
token is most probable at the answer position, no generation; local transformers backends only). Prompts:
``plain`` (llm-rankers' wording, letters) and ``rank_r1`` (Rank-R1's ``<think>``/``<answer>[k]</answer>``; its
reasoning is kept as the winner's). ``num_permutation`` > 1 asks each comparison with the passages shuffled that
many times (seeded) and takes the majority (ties: the earliest passage of the set).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from reason2rank.llm.answers import parse_choice
from reason2rank.llm.client import CallRecord, LLMRequest
from reason2rank.llm.prompts import passage_label
from reason2rank.seeding import query_rng
from reason2rank.strategies.base import LLMStrategy, Plan, PlanResult, Step
from reason2rank.types import Doc, Query

__all__ = ["SetwiseReranker", "heap_depths"]

READOUTS = ("generation", "likelihood")


def heap_depths(n: int, num_child: int) -> list[list[int]]:
    """The internal nodes of a ``num_child``-ary heap over ``n`` items, grouped by depth, deepest first, each
    group in decreasing index order (the order a sequential bottom-up build visits them)."""
    depth: dict[int, int] = {}
    for i in range(n):
        depth[i] = 0 if i == 0 else depth[(i - 1) // num_child] + 1
    internal = [i for i in range(min(n, n // num_child + 1) - 1, -1, -1) if num_child * i + 1 < n]
    groups: dict[int, list[int]] = {}
    for i in internal:
        groups.setdefault(depth[i], []).append(i)
    return [groups[d] for d in sorted(groups, reverse=True)]


class SetwiseReranker(LLMStrategy):
    """Setwise heap-sort reranking by an LLM (see the module docstring).

    Args (beyond ``LLMStrategy``'s): ``num_child`` (children per heap node: each prompt shows ``num_child + 1``
    passages; 3 by default, 19 for Rank-R1), ``k`` (how many top documents to extract; 10), ``readout``
    (``generation`` or ``likelihood``), ``num_permutation`` (1), ``prompt`` (``plain``, ``rank_r1`` or a template of
    task ``setwise``).
    """

    family = "setwise"
    task = "setwise"
    default_prompt = "plain_v1"

    def __init__(
        self,
        model: Any = None,
        *,
        num_child: int = 3,
        k: int = 10,
        readout: str = "generation",
        num_permutation: int = 1,
        **kwargs: Any,
    ) -> None:
        if isinstance(num_child, bool) or not isinstance(num_child, int) or num_child < 1:
            raise ValueError(f"num_child must be a positive int, got {num_child!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k (documents to extract) must be a positive int, got {k!r}")
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if isinstance(num_permutation, bool) or not isinstance(num_permutation, int) or num_permutation < 1:
            raise ValueError(f"num_permutation must be a positive int, got {num_permutation!r}")
        super().__init__(model, **kwargs)
        if self.prompt.labels == "letters" and num_child + 1 > 26:
            raise ValueError(
                f"{num_child + 1} passages per prompt need number labels (the prompt uses letters)"
            )
        self.num_child, self.k, self.readout, self.num_permutation = num_child, k, readout, num_permutation

    def answer_tokens(self) -> int:
        """The token budget of one answer: a label, or reasoning and a label for reasoning prompts."""
        return 1024 if "r1" in self.prompt.version else 8

    def answer_regex(self, n: int) -> str | None:
        """One of the ``n`` labels: after a ``<think>`` prefix, the reasoning then ``<answer>[label]</answer>``;
        after a label prefix (`` Passage:``), the label."""
        labels = "(" + "|".join(re.escape(passage_label(j, self.prompt.labels)) for j in range(n)) + ")"
        if self.prompt.prefix.rstrip().endswith("<think>"):
            return rf"[^<]*</think>\s?<answer>\[{labels}\]</answer>"
        if "<answer>" in self.prompt.text:
            return rf"\s?<think>[^<]*</think>\s?<answer>\[{labels}\]</answer>"
        return rf" ?{labels}"

    # -- one comparison ---------------------------------------------------------------------------------------
    def _requests(
        self, query: Query, docs: Sequence[Doc], members: list[int], call: int
    ) -> list[tuple[list[int], LLMRequest]]:
        """The prompts of one comparison: the set in its heap order, then shuffled copies for voting."""
        orders = [list(range(len(members)))]
        rng = query_rng(self.seed or 0, query.id, f"setwise:{call}")
        for _ in range(self.num_permutation - 1):
            perm = list(range(len(members)))
            rng.shuffle(perm)
            orders.append(perm)
        reserve = self.answer_tokens() + 8
        out = []
        for p, perm in enumerate(orders):
            shown = [members[j] for j in perm]
            messages, _ = self.fit({"query": query.text}, [docs[i].full_text for i in shown], reserve)
            tags = self.tags(query, comparison=call, permutation=p)
            out.append((perm, LLMRequest(messages, self.settings(self.answer_tokens(), len(shown)), tags)))
        return out

    def _winner(
        self, answers: list[tuple[list[int], str | None, CallRecord]], n: int, result: PlanResult
    ) -> tuple[int, str | None]:
        """The set position that wins (majority over permutations; the parent when nothing parses)."""
        votes: Counter[int] = Counter()
        reasoning: dict[int, str | None] = {}
        for perm, text, record in answers:
            parsed = parse_choice(text, n, labels=self.prompt.labels)
            record.repaired = parsed.index is None
            record.problems = list(parsed.problems)
            if parsed.index is None:
                result.counts["unparsed"] = result.counts.get("unparsed", 0) + 1
                continue
            votes[perm[parsed.index]] += 1
            reasoning.setdefault(perm[parsed.index], parsed.reasoning)
        if not votes:
            return 0, None
        top = max(votes.values())
        best = min(j for j, c in votes.items() if c == top)  # ties: the earliest passage of the set
        return best, reasoning.get(best)

    def _compare_step(self, query: Query, docs: Sequence[Doc], arr: list[int], nodes: list[int], size: int,
                      result: PlanResult) -> Step[list[int]]:  # fmt: skip
        """One comparison for each node (parent and its children within ``size``); returns each node's winner."""
        sets = []
        for i in nodes:
            kids = list(range(self.num_child * i + 1, min(self.num_child * (i + 1) + 1, size)))
            sets.append([i, *kids])
        result.counts["comparisons"] = result.counts.get("comparisons", 0) + len(sets)
        if self.readout == "likelihood":
            winners = self._likelihood(query, docs, arr, sets)
            yield []  # keep the lockstep: this level took no generation
            return winners
        batch = [self._requests(query, docs, [arr[j] for j in s], result.counts["comparisons"] - len(sets) + n)
                 for n, s in enumerate(sets)]  # fmt: skip
        answers = yield [req for reqs in batch for _, req in reqs]
        winners, pos = [], 0
        for s, reqs in zip(sets, batch):
            mine = answers[pos : pos + len(reqs)]
            pos += len(reqs)
            best, why = self._winner(
                [(perm, self.answer_text(res), rec) for (perm, _), (res, rec) in zip(reqs, mine)],
                len(s),
                result,
            )
            winners.append(s[best])
            if why and best != 0:
                result.reasoning[arr[s[best]]] = why
        return winners

    def _likelihood(
        self, query: Query, docs: Sequence[Doc], arr: list[int], sets: list[list[int]]
    ) -> list[int]:
        """Winners by label likelihood (the local backend's ``label_logprobs``), every set in one call."""
        requests = []
        for s in sets:
            msgs, _ = self.fit({"query": query.text}, [docs[arr[j]].full_text for j in s], 8)
            requests.append(LLMRequest(msgs, self.settings(1), self.tags(query)))
        width = max(len(s) for s in sets)
        labels = [" " + passage_label(j, self.prompt.labels) for j in range(width)]
        logps = self.llm.label_logprobs(requests, labels)
        return [s[int(np.argmax(logp[: len(s)]))] for s, logp in zip(sets, logps)]

    # -- the heap sort ----------------------------------------------------------------------------------------
    def plan(self, query: Query, docs: Sequence[Doc]) -> Plan:
        """Build the heap level by level (sift-downs of one level together), then extract the top ``k``."""
        n = len(docs)
        arr = list(range(n))
        result = PlanResult(order=arr, counts={"comparisons": 0, "unparsed": 0})

        def sift(nodes: list[int], size: int) -> Step[None]:
            active = list(nodes)
            while active:
                winners = yield from self._compare_step(query, docs, arr, active, size, result)
                nxt = []
                for i, w in zip(active, winners):
                    if w != i:
                        arr[i], arr[w] = arr[w], arr[i]
                        if self.num_child * w + 1 < size:
                            nxt.append(w)
                active = nxt

        for level in heap_depths(n, self.num_child):
            yield from sift(level, n)
        for ranked, i in enumerate(range(n - 1, 0, -1), start=1):
            arr[0], arr[i] = arr[i], arr[0]
            if ranked == self.k:
                break
            if i > 1:  # the root has children within the heap's remaining size
                yield from sift([0], i)
        top = list(reversed(arr))[: min(self.k, n)]
        chosen = set(top)
        result.order = top + [i for i in range(n) if i not in chosen]
        result.reasoning = {i: r for i, r in result.reasoning.items() if i in chosen}
        return result

    def r2r_config(self) -> dict[str, Any]:
        """The setwise fields of ``r2r_model.json``."""
        return {**super().r2r_config(), "num_child": self.num_child, "k": self.k, "readout": self.readout,
                "num_permutation": self.num_permutation}  # fmt: skip
