"""Two stages in one model (DeAR): a pointwise first pass over every candidate, then a listwise (or any
order-returning) second stage over its top ``top_m``.

The first stage scores all candidates (one engine run for every query); the second reorders the first stage's
top ``top_m`` of each query (in the first stage's order, so its windows start from the better documents); the
rest follow in the first stage's order. Scores come from the final order. The second stage's reasoning and
comparisons are the documents' explanations. A model directory describes both stages::

    r2r_model.json   {"family": "two-stage", "first": "first", "second": "second", "top_m": 30}
    first/           a model directory (e.g. a cross-encoder or a causal-LM student)
    second/          a model directory (e.g. {"family": "listwise", "backbone": ..., "window": 20, ...})

so ``reason2rank.load`` and both adapters open it as one model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reason2rank.model_dir import resolve_in, write_r2r_config
from reason2rank.reranker import Ranking, Reranker
from reason2rank.types import Doc, Query

__all__ = ["TwoStageReranker"]


class TwoStageReranker(Reranker):
    """First stage ``first`` (scores), second stage ``second`` (an order) over the first's top ``top_m``.

    ``first`` and ``second`` are ``Reranker`` objects or model directories (opened with ``reason2rank.load``;
    relative paths resolve against the model directory this one was loaded from).
    """

    family = "two-stage"
    evidence = False

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str] | None = None,
        *,
        first: Reranker | str | os.PathLike[str] = "first",
        second: Reranker | str | os.PathLike[str] = "second",
        top_m: int = 30,
        model_dir: str | os.PathLike[str] | None = None,
        **load_options: Any,
    ) -> None:
        if isinstance(top_m, bool) or not isinstance(top_m, int) or top_m < 2:
            raise ValueError(
                f"top_m must be an int >= 2 (documents the second stage reorders), got {top_m!r}"
            )
        root = Path(model_dir) if model_dir else (Path(model_name_or_path) if model_name_or_path else None)
        self.first = self._open(first, root, load_options)
        self.second = self._open(second, root, load_options)
        self.top_m = top_m

    @staticmethod
    def _open(
        stage: Reranker | str | os.PathLike[str], root: Path | None, options: dict[str, Any]
    ) -> Reranker:
        if isinstance(stage, Reranker):
            return stage
        from reason2rank.load import load

        return load(resolve_in(root, stage), **options)

    @property
    def explain_over_evidence(self) -> bool:  # type: ignore[override]
        """Explanations as the second stage reads them."""
        return self.second.explain_over_evidence

    def rank_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[Ranking]:
        """First stage over everything, second stage over each query's top ``top_m``."""
        first = self.first.rank_batch(items)
        firsts: list[list[int]] = []
        second_items = []
        for (q, docs), r in zip(items, first):
            by_score = [int(i) for i in np.argsort(-np.asarray(r.scores, dtype=np.float64), kind="stable")]
            firsts.append(by_score)
            second_items.append((q, [docs[i] for i in by_score[: self.top_m]]))
        second = self.second.rank_batch(second_items)
        out = []
        for by_score, r1, r2 in zip(firsts, first, second):
            head = by_score[: self.top_m]
            order2 = [int(i) for i in np.argsort(-np.asarray(r2.scores, dtype=np.float64), kind="stable")]
            order = [head[j] for j in order2] + by_score[self.top_m :]
            info = {"first": r1.info, "second": r2.info, "top_m": self.top_m}
            out.append(
                Ranking.from_order(
                    order,
                    reasoning={head[j]: t for j, t in r2.reasoning.items()},
                    comparisons={head[j]: t for j, t in r2.comparisons.items()},
                    evidence={head[j]: t for j, t in r2.evidence.items()},
                    info=info,
                )
            )
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``first/`` and ``second/`` and an ``r2r_model.json`` that opens both as one model."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        for name, stage in (("first", self.first), ("second", self.second)):
            save = getattr(stage, "save", None)
            if save is None:
                raise TypeError(f"the {name} stage ({type(stage).__name__}) cannot be saved")
            save(out / name)
        write_r2r_config(out, {"family": self.family, "backbone": None, "first": "first", "second": "second",
                               "top_m": self.top_m})  # fmt: skip
        return out

    def describe(self) -> dict[str, Any]:
        """Both stages."""
        return {"family": self.family, "first": self.first.describe(), "second": self.second.describe(),
                "top_m": self.top_m, "model": self.first.describe().get("model")}  # fmt: skip

    def __repr__(self) -> str:
        return f"TwoStageReranker({self.first!r} >> {self.second!r}, top_m={self.top_m})"
