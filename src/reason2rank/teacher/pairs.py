"""Which document pairs the teacher compares.

Strategies, applied in the order given until the per-query budget is spent (a pair is used once,
whatever its order):

- ``adjacent``: neighbours in the teacher's ranking (documents sorted by the teacher's direct grade,
  ties and ungraded documents kept in first-stage order) — the fine distinctions a student must learn;
- ``hard_negative``: each positive against the highest first-stage non-positives. Positives are qrels
  grade > 0 when qrels cover the query, else a teacher grade >= ``positive_grade``;
- ``random``: uniformly random pairs.

Randomness (random pairs and which document is shown as A) comes from a generator seeded with
``seed`` and the query id, so a rerun asks exactly the same questions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from reason2rank.seeding import query_rng
from reason2rank.types import Doc, Query

STRATEGIES = ("adjacent", "hard_negative", "random")


@dataclass(frozen=True)
class PairPolicy:
    """``strategies``: any of adjacent, hard_negative, random; ``budget``: pairs per query;
    ``depth``: consider only the top ``depth`` documents of the teacher's ranking; ``negatives_per_positive``
    for hard_negative; ``swap``: ask A/B and B/A and keep agreeing answers; ``shuffle_ab``: randomise which
    document is shown first (otherwise the higher-ranked one is A)."""

    strategies: tuple[str, ...] = ("adjacent",)
    budget: int = 10
    depth: int | None = None
    negatives_per_positive: int = 3
    positive_grade: int = 2
    swap: bool = False
    shuffle_ab: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.strategies, str):
            object.__setattr__(
                self, "strategies", tuple(s.strip() for s in self.strategies.split(",") if s.strip())
            )
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ValueError(f"pair strategies must be among {STRATEGIES}, got {list(self.strategies)}")
        if self.budget < 1:
            raise ValueError(f"the pair budget per query must be >= 1, got {self.budget}")
        if self.depth is not None and self.depth < 2:
            raise ValueError(f"pair depth must be >= 2, got {self.depth}")


def teacher_ranking(docs: Sequence[Doc], grades: Mapping[str, int | None]) -> list[Doc]:
    """Graded documents by descending grade, then ungraded ones; first-stage order breaks ties."""
    pos = {d.id: i for i, d in enumerate(docs)}

    def key(d: Doc) -> tuple[int, int, int]:
        g = grades.get(d.id)
        return (0, -g, pos[d.id]) if g is not None else (1, 0, pos[d.id])

    return sorted(docs, key=key)


def select_pairs(
    query: Query,
    docs: Sequence[Doc],
    policy: PairPolicy,
    grades: Mapping[str, int | None] | None = None,
    qrels: Mapping[str, int] | None = None,
) -> list[tuple[Doc, Doc]]:
    """The (A, B) pairs to compare for one query, at most ``policy.budget``."""
    grades = grades or {}
    ranked = teacher_ranking(docs, grades)
    if policy.depth is not None:
        ranked = ranked[: policy.depth]
    rng = query_rng(policy.seed, query.id)
    chosen: list[tuple[Doc, Doc]] = []
    seen: set[frozenset[str]] = set()

    def add(a: Doc, b: Doc) -> bool:
        pair = frozenset((a.id, b.id))
        if a.id == b.id or pair in seen:
            return False
        seen.add(pair)
        chosen.append((a, b))
        return len(chosen) >= policy.budget

    for strategy in policy.strategies:
        if len(chosen) >= policy.budget:
            break
        if strategy == "adjacent":
            for a, b in zip(ranked, ranked[1:]):
                if add(a, b):
                    break
        elif strategy == "hard_negative":
            first_stage = [d for d in docs if d.id in {x.id for x in ranked}]
            if qrels:
                positives = [d for d in first_stage if qrels.get(d.id, 0) > 0]
                negatives = [d for d in first_stage if qrels.get(d.id, 0) <= 0]
            else:
                positives = [d for d in first_stage if (grades.get(d.id) or 0) >= policy.positive_grade]
                negatives = [
                    d
                    for d in first_stage
                    if (g := grades.get(d.id)) is not None and g < policy.positive_grade
                ]
            full = False
            for p in positives:
                for n in negatives[: policy.negatives_per_positive]:
                    if add(p, n):
                        full = True
                        break
                if full:
                    break
        else:  # random
            all_pairs = [(a, b) for i, a in enumerate(ranked) for b in ranked[i + 1 :]]
            rng.shuffle(all_pairs)
            for a, b in all_pairs:
                if add(a, b):
                    break
    if policy.shuffle_ab:
        rng = query_rng(policy.seed, query.id, "ab")
        chosen = [(b, a) if rng.random() < 0.5 else (a, b) for a, b in chosen]
    return chosen
