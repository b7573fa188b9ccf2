"""Listwise reranking with a sliding window (RankGPT, RankZephyr, DeAR stage 2).

The top ``depth`` candidates are reranked by windows of ``window`` passages moved ``stride`` passages at a time
from the back of the list to the front, so the best documents bubble up to the top window (20 and 10 by default:
top-100 takes 9 windows). Each window is one prompt; the answer (``[2] > [1] > ...``, or reasoning then the
ranking) is read by the one permutation parser (``reason2rank.llm.answers``): ids that are out of range or
repeated are dropped and missing ones appended in the window's order, and a window whose answer holds no ranking
keeps its order; every window records whether and why it was repaired. Window *i* of every query goes in one LLM
call. Prompts: ``rankzephyr`` (default, rank_llm's), ``rankgpt`` (one passage per turn) and ``reasoning`` (chain of
thought before the ranking, kept as the documents' reasoning).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reason2rank.llm.answers import parse_permutation
from reason2rank.llm.client import LLMRequest
from reason2rank.strategies.base import LLMStrategy, Plan, PlanResult
from reason2rank.types import Doc, Query

__all__ = ["ListwiseReranker", "sliding_windows"]


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The (start, end) of each window over ``n`` documents, in the order they are ranked (back to front).

    The last window (at the top) may be shorter; a window that would repeat the top of the previous one is not
    added (with ``n=20, window=20, stride=10`` there is one window, not [0, 20) then [0, 10))."""
    if window < 2 or stride < 1:
        raise ValueError(
            f"a window holds at least 2 passages and moves by at least 1 (got {window}, {stride})"
        )
    out: list[tuple[int, int]] = []
    end = n
    while end > 0:
        start = max(end - window, 0)
        out.append((start, end))
        if start == 0:  # this window reached the top: a next one would only repeat part of it
            break
        end -= stride
    return out


class ListwiseReranker(LLMStrategy):
    """Sliding-window listwise reranking by an LLM (see the module docstring).

    Args (beyond ``LLMStrategy``'s): ``window`` and ``stride`` (20 and 10), ``prompt`` (``rankzephyr``,
    ``rankgpt``, ``reasoning``, a file or a ``PromptTemplate`` of task ``rank_listwise``).
    """

    family = "listwise"
    task = "rank_listwise"
    default_prompt = "rankzephyr_v1"

    def __init__(self, model: Any = None, *, window: int = 20, stride: int = 10, **kwargs: Any) -> None:
        sliding_windows(window, window, stride)  # checks the arguments
        if stride > window:
            raise ValueError(
                f"stride ({stride}) must not exceed the window ({window}): documents would be skipped"
            )
        super().__init__(model, **kwargs)
        self.window = int(window)
        self.stride = int(stride)

    def answer_tokens(self, k: int) -> int:
        """Tokens a full answer of ``k`` ids takes (``[1] > [2] > ... > [k]`` with this tokenizer, plus the end
        token; 6 per id without a tokenizer); reasoning prompts get 1024 more."""
        tok = self.llm.tokenizer
        ranking = " > ".join(f"[{i + 1}]" for i in range(k))
        base = len(tok(ranking, add_special_tokens=False)["input_ids"]) + 2 if tok is not None else 6 * k + 16
        return base + 1024 if "reasoning" in self.prompt.version else base

    def answer_regex(self, n: int) -> str | None:
        """``[i] > [j] > ...`` over ids 1..n (a reasoning prompt's answer is left free)."""
        if "reasoning" in self.prompt.version:
            return None
        ident = "(" + "|".join(str(i) for i in range(n, 0, -1)) + ")"
        return rf"\[{ident}\]( > \[{ident}\]){{{n - 1}}}"

    def window_messages(self, query: Query, docs: Sequence[Doc], reserve: int) -> list[dict[str, Any]]:
        """The prompt of one window (its documents' texts, cut to fit ``reserve`` answer tokens)."""
        messages, _ = self.fit({"query": query.text}, [d.full_text for d in docs], reserve)
        return messages

    def plan(self, query: Query, docs: Sequence[Doc]) -> Plan:
        """Rank the windows back to front, each window's answer reordering its part of the list."""
        order = list(range(len(docs)))
        result = PlanResult(order=order, counts={"windows": 0, "windows_repaired": 0, "windows_unparsed": 0})
        for w, (start, end) in enumerate(sliding_windows(len(docs), self.window, self.stride)):
            ids = order[start:end]
            if len(ids) < 2:
                continue
            reserve = self.answer_tokens(self.window)  # one setting for every window, so they batch together
            messages = self.window_messages(query, [docs[i] for i in ids], reserve)
            settings = self.settings(reserve, len(ids))
            request = LLMRequest(messages, settings, self.tags(query, window=w, start=start, end=end))
            [(res, record)] = yield [request]
            parsed = parse_permutation(self.answer_text(res), len(ids), labels=self.prompt.labels)
            record.repaired, record.problems = parsed.repaired, list(parsed.problems)
            result.counts["windows"] += 1
            if parsed.repaired:
                result.counts["windows_repaired"] += 1
            if "no_ids" in parsed.problems:
                result.counts["windows_unparsed"] += 1
            order[start:end] = [ids[j] for j in parsed.order]
            if parsed.reasoning:
                for (
                    i
                ) in ids:  # the reasoning of the window that placed them last (the top window's, for the top)
                    result.reasoning[i] = parsed.reasoning
        result.order = order
        return result

    def r2r_config(self) -> dict[str, Any]:
        """The listwise fields of ``r2r_model.json``."""
        return {**super().r2r_config(), "window": self.window, "stride": self.stride}
