"""GRPO rewards: plain functions with TRL's reward signature ``f(prompts, completions, **columns) -> list[float]``.

TRL passes every dataset column as a keyword list aligned with ``completions`` (one entry per completion), plus
``completion_ids`` and ``trainer_state``; completions are strings for text prompts and ``[{"role": "assistant",
"content": ...}]`` lists for conversational ones. Each reward here reads only the columns it names and ignores the
rest.

A prompt may end with an answer prefix (a template's ``=== prefix ===``, e.g. ``<think>``): the model's answer is
then the prefix followed by the completion, and the rewards check that (the ``prefix`` column, when present).

The answer formats are checked strictly (the whole completion must be the format, up to surrounding whitespace):
a reward that accepts extra text or a second answer can be satisfied by hedging, which is what GRPO then learns.

- :func:`rank_r1_reward` (Rank-R1, setwise): ``<think>…</think><answer>[k]</answer>`` naming the positive → 1, else 0.
- :func:`binary_relevance_reward` (ProRank stage 1): the answer is exactly ``0`` or ``1`` and equals the label → 1.
- :func:`listwise_reward` (MM-R5): Σ over positives of 1/rank³ divided by the ideal Σ_{i≤|pos|} 1/i³, times a
  format reward that is 0 for a malformed answer, a duplicate id or an id outside 1..n. MM-R5's own format reward
  ``eval``s the capture and never checks duplicates, so ``[3,3,3,3,3]`` scores full marks there and a single id
  ``[3]`` scores 0; here the first scores 0 and the second is a valid (partial) ranking.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "REWARDS",
    "binary_relevance_reward",
    "completion_text",
    "listwise_reward",
    "parse_binary_answer",
    "parse_listwise_answer",
    "parse_setwise_answer",
    "rank_r1_reward",
    "reciprocal_cube_gain",
]

# reasoning may not contain another tag: a second <think> or an <answer> inside the reasoning is not the format
_REASONING = r"(?:(?!</?think>|</?answer>).)*"
_SETWISE = re.compile(rf"\s*<think>{_REASONING}</think>\s*<answer>\s*\[\s*(\d+)\s*\]\s*</answer>\s*", re.S)
_LISTWISE = re.compile(
    rf"\s*<think>{_REASONING}</think>\s*<answer>\s*\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]\s*</answer>\s*", re.S
)
_BINARY = re.compile(r"\s*([01])\s*")


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as it is; a conversational completion's message contents joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    if isinstance(completion, Sequence):
        return "".join(completion_text(m) for m in completion)
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def _answers(completions: Sequence[Any], prefix: Sequence[str] | None) -> list[str]:
    """The answers: each completion's text after its prompt's answer prefix (when there is a ``prefix`` column)."""
    texts = [completion_text(c) for c in completions]
    if prefix is None:
        return texts
    return [str(p or "") + t for p, t in zip(_aligned("prefix", prefix, len(texts)), texts)]


def parse_setwise_answer(text: str) -> int | None:
    """The label ``k`` of a Rank-R1 answer ``<think>…</think><answer>[k]</answer>`` (nothing else around it but
    whitespace), or ``None`` when the text is not exactly that format."""
    m = _SETWISE.fullmatch(text)
    return int(m.group(1)) if m else None


def parse_binary_answer(text: str) -> int | None:
    """0 or 1 when the text is exactly that digit (surrounding whitespace allowed), else ``None``."""
    m = _BINARY.fullmatch(text)
    return int(m.group(1)) if m else None


def parse_listwise_answer(text: str, n: int) -> list[int] | None:
    """The ids of ``<think>…</think><answer>[i, j, …]</answer>`` when the format holds and the ids are distinct
    and within 1..``n``; else ``None`` (the format reward is then 0)."""
    m = _LISTWISE.fullmatch(text)
    if not m:
        return None
    ids = [int(x) for x in re.split(r"\s*,\s*", m.group(1).strip())]
    if len(set(ids)) != len(ids) or any(not 1 <= i <= n for i in ids):
        return None
    return ids


def reciprocal_cube_gain(ranking: Sequence[int], positives: Sequence[int]) -> float:
    """MM-R5's ranking reward: Σ over positives of 1/rank³ (rank = 1-based place in ``ranking``; a positive that is
    not listed adds 0) divided by the ideal Σ_{i≤|positives|} 1/i³. 0 when there are no positives."""
    pos = set(positives)
    if not pos:
        return 0.0
    gain = sum(1.0 / (r**3) for r, i in enumerate(ranking, start=1) if i in pos)
    ideal = sum(1.0 / (r**3) for r in range(1, len(pos) + 1))
    return gain / ideal


def _aligned(name: str, values: Any, n: int) -> list[Any]:
    if values is None:
        raise ValueError(f"this reward needs a dataset column {name!r} (one value per example)")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"column {name!r} has {len(values)} values for {n} completions")
    return values


def _label_match(
    parse: Callable[[str], int | None], completions: Sequence[Any], label: Any, prefix: Sequence[str] | None
) -> list[float]:
    """1.0 for each answer that ``parse`` reads (the format holds) as the example's ``label``, else 0.0."""
    labels = _aligned("label", label, len(completions))
    out = []
    for text, y in zip(_answers(completions, prefix), labels):
        got = parse(text)
        out.append(1.0 if got is not None and got == int(y) else 0.0)
    return out


def rank_r1_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    label: Sequence[int] | None = None,
    prefix: Sequence[str] | None = None,
    **_: Any,
) -> list[float]:
    """Rank-R1: 1.0 when a completion is exactly ``<think>…</think><answer>[k]</answer>`` and ``k`` is the
    example's ``label`` (the 1-based place of the positive in the prompt), else 0.0."""
    return _label_match(parse_setwise_answer, completions, label, prefix)


def binary_relevance_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    label: Sequence[int] | None = None,
    prefix: Sequence[str] | None = None,
    **_: Any,
) -> list[float]:
    """ProRank stage 1: 1.0 when a completion is exactly ``0`` or ``1`` (the token the ``binary_relevance``
    read-out compares) and equals the example's ``label``, else 0.0."""
    return _label_match(parse_binary_answer, completions, label, prefix)


def listwise_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    positives: Sequence[Sequence[int]] | None = None,
    num_candidates: Sequence[int] | None = None,
    prefix: Sequence[str] | None = None,
    **_: Any,
) -> list[float]:
    """MM-R5: ``reciprocal_cube_gain(answer, positives)`` × the format reward (1 for a well-formed answer of
    distinct ids within 1..``num_candidates``, else 0). ``positives`` are 1-based ids of the relevant candidates."""
    pos = _aligned("positives", positives, len(completions))
    ns = _aligned("num_candidates", num_candidates, len(completions))
    out = []
    for text, p, n in zip(_answers(completions, prefix), pos, ns):
        ids = parse_listwise_answer(text, int(n))
        out.append(0.0 if ids is None else reciprocal_cube_gain(ids, [int(i) for i in p]))
    return out


#: the reward of each GRPO task
REWARDS: dict[str, Callable[..., Any]] = {
    "setwise": rank_r1_reward,
    "binary": binary_relevance_reward,
    "listwise": listwise_reward,
    "vlm-listwise": listwise_reward,
}
