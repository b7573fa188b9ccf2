"""From training queries to training groups: one positive, its negatives, teacher targets and reasoning.

A *group* is what one query contributes to a micro-batch. Slot 0 holds a positive (a candidate of the
query's highest teacher key — the grade, or minus the teacher rank when there are no grades), the other
slots negatives with a strictly lower key: first those the teacher compared with the positive, then a
sample without replacement of the others. The group also carries the
teacher's pairwise preferences between its slots, and, for decoder students, up to a few reasoning texts
(direct reasoning of candidates in the group) and comparison texts (teacher comparisons of the query).

Sampling is a pure function of ``(seed, epoch, query index)``, so the order of the data, and thus a run
resumed from a checkpoint, is reproducible without saving sampler state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from reason2rank.distill.dataset import Candidate, TrainingQuery, TrainingSet
from reason2rank.types import Doc, Query


@dataclass
class Group:
    query: Query
    candidates: list[Candidate]
    targets: list[float]  # teacher key per slot: grade, or -teacher_rank
    labels: list[float]  # pointwise targets in [0, 1]
    pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (slot i, slot j, P(i beats j))
    reasoning: list[tuple[Doc, str]] = field(default_factory=list)
    comparisons: list[tuple[Doc, Doc, str]] = field(default_factory=list)  # (doc A, doc B, reasoning)

    @property
    def docs(self) -> list[Doc]:
        """The documents of the group's slots, in slot order."""
        return [c.doc for c in self.candidates]


def teacher_key(c: Candidate) -> float | None:
    """What the teacher says about a candidate, as one number where larger is better."""
    if c.grade is not None:
        return float(c.grade)
    if c.teacher_rank is not None:
        return -float(c.teacher_rank)
    return None


def max_grade(ts: TrainingSet) -> float:
    """The largest grade in the set (3 for the R2R teacher's 0-3 scale, 1 for binary qrels)."""
    grades = [c.grade for tq in ts for c in tq.candidates if c.grade is not None]
    return max(max(grades), 1.0) if grades else 1.0


def _label(c: Candidate, top_grade: float) -> float:
    if c.grade is not None:
        return min(max(float(c.grade) / top_grade, 0.0), 1.0)
    return 1.0 if c.teacher_rank == 1 else 0.0


def trainable(tq: TrainingQuery) -> bool:
    """A query can form a group when two of its candidates have different teacher keys."""
    keys = {k for k in (teacher_key(c) for c in tq.candidates) if k is not None}
    return len(keys) >= 2


def sample_group(
    tq: TrainingQuery,
    group_size: int,
    rng: np.random.Generator,
    *,
    top_grade: float = 1.0,
    reasoning_per_query: int = 0,
    comparisons_per_query: int = 0,
) -> Group | None:
    """One group for ``tq`` (``None`` when the query has no candidate pair the teacher tells apart)."""
    key = {c.doc.id: k for c in tq.candidates if (k := teacher_key(c)) is not None}
    keyed = [(c, key[c.doc.id]) for c in tq.candidates if c.doc.id in key]
    if not keyed:
        return None
    best = max(k for _, k in keyed)
    positives = [c for c, k in keyed if k == best]
    pos = positives[int(rng.integers(len(positives)))]
    negatives = [c for c, k in keyed if k < best]
    if not negatives:
        return None
    # negatives the teacher compared with the positive go first: their pairs carry the comparison signal
    compared = {comp.worse for comp in tq.comparisons if comp.better == pos.doc.id and not comp.tie}
    hard = [c for c in negatives if c.doc.id in compared]
    rest = [c for c in negatives if c.doc.id not in compared]
    chosen = [hard[i] for i in rng.permutation(len(hard))][: group_size - 1]
    take = min(group_size - 1 - len(chosen), len(rest))
    chosen += [rest[i] for i in sorted(rng.choice(len(rest), size=take, replace=False))]
    cands = [pos, *chosen]
    slot = {c.doc.id: i for i, c in enumerate(cands)}
    pairs = []
    for comp in tq.comparisons:
        if comp.better in slot and comp.worse in slot:
            pairs.append((slot[comp.better], slot[comp.worse], 0.5 if comp.tie else 1.0))
    reasoning: list[tuple[Doc, str]] = []
    if reasoning_per_query:
        with_reason = [c for c in cands if c.reasoning]
        if with_reason:
            idx = rng.choice(len(with_reason), size=min(reasoning_per_query, len(with_reason)), replace=False)
            reasoning = [(with_reason[i].doc, str(with_reason[i].reasoning)) for i in sorted(idx)]
    comparisons: list[tuple[Doc, Doc, str]] = []
    if comparisons_per_query:
        usable = [c for c in tq.comparisons if c.reasoning and not c.tie]
        if usable:
            idx = rng.choice(len(usable), size=min(comparisons_per_query, len(usable)), replace=False)
            for i in sorted(idx):
                comp = usable[i]
                better, worse = tq.candidate(comp.better).doc, tq.candidate(comp.worse).doc
                first, second = (better, worse) if comp.better_first else (worse, better)
                comparisons.append((first, second, str(comp.reasoning)))  # the order the teacher saw
    return Group(
        query=tq.query,
        candidates=cands,
        targets=[key[c.doc.id] for c in cands],
        labels=[_label(c, top_grade) for c in cands],
        pairs=pairs,
        reasoning=reasoning,
        comparisons=comparisons,
    )


class GroupStream:
    """The training data as an endless, reproducible stream of micro-batches of groups.

    Micro-batch ``m`` of the stream is batch ``m % per_epoch`` of epoch ``m // per_epoch``; each epoch
    visits the trainable queries in a permutation drawn from ``(seed, epoch)``. ``batch(m)`` is a pure
    function, so distributed workers and resumed runs pick their micro-batches by index.
    """

    def __init__(
        self,
        ts: TrainingSet,
        *,
        batch_size: int,
        group_size: int,
        seed: int,
        reasoning_per_query: int = 0,
        comparisons_per_query: int = 0,
    ) -> None:
        if group_size < 2:
            raise ValueError(f"group_size must be >= 2 (a positive and a negative), got {group_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.queries: list[TrainingQuery] = [tq for tq in ts if trainable(tq)]
        if not self.queries:
            raise ValueError(
                "no training query has two candidates with different teacher grades/ranks; a student needs at "
                "least one positive and one lower-graded candidate per query (check the grades, or add "
                "negatives with TrainingSet.from_qrels(..., negatives=k))"
            )
        self.dropped = len(ts) - len(self.queries)
        self.batch_size = batch_size
        self.group_size = group_size
        self.seed = seed
        self.top_grade = max_grade(ts)
        self.reasoning_per_query = reasoning_per_query
        self.comparisons_per_query = comparisons_per_query
        self.per_epoch = math.ceil(len(self.queries) / batch_size)
        self._perm: tuple[int, np.ndarray] | None = None

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.queries)))
        return self._perm[1]

    def batch(self, m: int) -> list[Group]:
        """Micro-batch ``m`` of the stream (a pure function of ``m`` and the seed)."""
        epoch, b = divmod(m, self.per_epoch)
        idx = self._order(epoch)[b * self.batch_size : (b + 1) * self.batch_size]
        groups = []
        for qi in idx:
            rng = np.random.default_rng([self.seed, epoch, int(qi), 1])
            g = sample_group(
                self.queries[int(qi)],
                self.group_size,
                rng,
                top_grade=self.top_grade,
                reasoning_per_query=self.reasoning_per_query,
                comparisons_per_query=self.comparisons_per_query,
            )
            if g is not None:
                groups.append(g)
        return groups


def pad_groups(groups: Sequence[Group]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``slots [B, N]`` (flat pair index or -1), ``mask``, ``targets``, ``labels`` for a list of groups."""
    n = max(len(g.candidates) for g in groups)
    slots = np.full((len(groups), n), -1, dtype=np.int64)
    targets = np.zeros((len(groups), n), dtype=np.float32)
    labels = np.zeros((len(groups), n), dtype=np.float32)
    flat = 0
    for b, g in enumerate(groups):
        for i in range(len(g.candidates)):
            slots[b, i] = flat
            targets[b, i] = g.targets[i]
            labels[b, i] = g.labels[i]
            flat += 1
    return slots, slots >= 0, targets, labels
