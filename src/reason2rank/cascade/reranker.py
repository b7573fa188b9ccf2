"""``CascadeReranker``: score long documents by their best windows (IDCM, Hofstätter et al., SIGIR 2021)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from reason2rank.cascade.selectors import (
    AllSelector,
    BiEncoderSelector,
    BM25Selector,
    KernelSelector,
    WindowSelector,
    select_top,
)
from reason2rank.cascade.windows import Window, check_window_args, split_windows
from reason2rank.model_dir import read_r2r_config, resolve_in, write_r2r_config
from reason2rank.reranker import Ranking, Reranker, split_scores
from reason2rank.types import Doc, Query

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["AGGREGATIONS", "CascadeReranker", "CascadeResult", "WeightedTopK", "aggregate"]

AGGREGATIONS = ("max", "first", "weighted")


class WeightedTopK(nn.Module):
    """Learned weighted sum of the top-k window scores (sorted descending); starts as max (weights 1, 0, …).

    A document with fewer than k windows uses the first weights only."""

    def __init__(self, k: int = 3, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if weights is None:
            weights = [1.0] + [0.0] * (k - 1)
        if len(weights) != k:
            raise ValueError(f"WeightedTopK got {len(weights)} weights for k={k}")
        self.k = k
        self.weight = nn.Parameter(torch.tensor([float(w) for w in weights]))

    def forward(self, window_scores: torch.Tensor) -> torch.Tensor:
        """``window_scores``: 1-d scores of one document's windows → its score."""
        top = torch.sort(window_scores, descending=True).values[: self.k]
        return (top * self.weight[: top.shape[0]]).sum()


def aggregate(
    window_scores: Sequence[float] | np.ndarray, how: str = "max", weights: Sequence[float] | None = None
) -> float:
    """Document score from its window scores (document order): ``max``, ``first`` (the first window's score)
    or ``weighted`` (sum of ``weights[i]`` times the i-th highest score, over min(k, n) windows)."""
    s = np.asarray(window_scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("aggregate needs at least one window score")
    if how == "max":
        return float(s.max())
    if how == "first":
        return float(s[0])
    if how == "weighted":
        if weights is None or len(weights) == 0:
            raise ValueError("aggregation 'weighted' needs weights (one per top window)")
        top = np.sort(s)[::-1][: len(weights)]
        return float(np.dot(top, np.asarray(weights, dtype=np.float64)[: len(top)]))
    raise ValueError(f"unknown aggregation {how!r}; known: {', '.join(AGGREGATIONS)}")


@dataclass(frozen=True)
class CascadeResult:
    """How one document was scored: its windows, the indices of the kept ones, its score, the best window."""

    windows: list[Window]
    kept: list[int]
    score: float
    best: Window


class CascadeReranker(Reranker):
    """A ``Reranker`` that scores long documents by their best windows (see the module docstring).

    Args:
        model_name_or_path: the ETM's model directory or hub id (ignored when ``etm`` is given).
        etm: an already built pointwise ``Reranker`` with ``score_texts`` (a ``TransformerReranker``).
        etm_family: the ETM's family when it is loaded from a path without ``r2r_model.json``.
        selector: ``"bm25"``, ``"bi-encoder"``, ``"kernel"``, ``"all"`` or a ``WindowSelector`` object.
        selector_model: the model of the ``bi-encoder``/``kernel`` selectors (path, relative to the model dir
            when the cascade is loaded from one).
        window_size, overlap: tokens per window and tokens of overlap added on each side (IDCM: 50, 7).
        top_s: windows kept per document (``None``: all, i.e. max-passage).
        aggregation: ``"max"``, ``"first"`` (FirstP: only the first window is scored) or ``"weighted"``.
        aggregation_weights: weights of the top windows for ``"weighted"`` (default ``[1, 0, 0]`` = max).
        tokenizer: tokenizer for the windows (default: the ETM's).
        **etm_options: passed to the ETM family (``batch_size``, ``device``, ``max_length``, ...).

    ``stats`` counts, since construction, ``docs``, ``windows`` and ``etm_pairs`` (ETM forward inputs).
    ``explain=k`` sets ``evidence`` of the top-k to their best window's text (no occlusion passes); when the
    ETM can generate reasoning, it reasons over that window.
    """

    family = "cascade"
    evidence = False  # never occlusion: the ranking gives each document's best window as its evidence
    explain_over_evidence = True  # the ETM's reasoning reads the best window, the passage the score came from

    def __init__(
        self,
        model_name_or_path: str | os.PathLike | None = None,
        *,
        etm: Reranker | None = None,
        etm_family: str | None = None,
        selector: str | WindowSelector = "bm25",
        selector_model: str | os.PathLike | None = None,
        window_size: int = 50,
        overlap: int = 7,
        top_s: int | None = 4,
        aggregation: str = "max",
        aggregation_weights: Sequence[float] | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        model_dir: str | os.PathLike | None = None,
        **etm_options: Any,
    ) -> None:
        check_window_args(window_size, overlap)
        if top_s is not None and (isinstance(top_s, bool) or not isinstance(top_s, int) or top_s < 1):
            raise ValueError(
                f"top_s must be a positive int (windows kept per document) or None (all), got {top_s!r}"
            )
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {aggregation!r}; known: {', '.join(AGGREGATIONS)}")
        self.model_dir = Path(model_dir) if model_dir else None
        if etm is None:
            if model_name_or_path is None:
                raise ValueError("CascadeReranker needs an ETM: a model path/hub id, or etm=<a Reranker>")
            etm = self._load_etm(str(model_name_or_path), etm_family, model_dir, etm_options)
        elif etm_options or model_name_or_path is not None:
            raise ValueError(
                f"CascadeReranker got a built etm and loading options {sorted(etm_options) or [model_name_or_path]}; "
                "pass one or the other"
            )
        if not hasattr(etm, "score_texts"):
            raise TypeError(f"the ETM must score text pairs (score_texts), got {type(etm).__name__}")
        self.etm = etm
        self.window_size, self.overlap, self.top_s = window_size, overlap, top_s
        self.aggregation = aggregation
        self.aggregation_weights = (
            list(aggregation_weights) if aggregation_weights is not None else [1.0, 0.0, 0.0]
        )
        self.tokenizer = tokenizer if tokenizer is not None else getattr(etm, "tokenizer", None)
        self.selector_name = (
            selector if isinstance(selector, str) else getattr(selector, "name", type(selector).__name__)
        )
        self.selector_model = str(selector_model) if selector_model is not None else None
        self.selector = self._make_selector(selector)
        self.stats = {"docs": 0, "windows": 0, "etm_pairs": 0}

    # -- construction ---------------------------------------------------------------------------------------
    @staticmethod
    def _load_etm(path: str, family: str | None, model_dir: Any, options: dict[str, Any]) -> Reranker:
        from reason2rank.load import family_class
        from reason2rank.model_dir import read_r2r_config

        if family is None:
            cfg, _ = read_r2r_config(model_dir or path)
            family = (cfg or {}).get("family")
            if family in (None, "cascade"):
                raise ValueError(
                    f"cannot tell the ETM's family of {path}; pass etm_family= (e.g. 'cross-encoder' or 'bi-encoder')"
                )
        if model_dir is not None:
            options = {**options, "model_dir": model_dir}
        return family_class(family)(path, **options)

    def _make_selector(self, selector: Any) -> Any:
        if not isinstance(selector, str):
            if not hasattr(selector, "score_windows"):
                raise TypeError(
                    f"selector must be a name or have score_windows(items), got {type(selector).__name__}"
                )
            return selector
        if selector == "bm25":
            return BM25Selector()
        if selector == "all":
            return AllSelector()
        if selector in ("bi-encoder", "kernel"):
            if self.selector_model is None:
                raise ValueError(f"selector {selector!r} needs selector_model= (a model path)")
            path = resolve_in(self.model_dir, self.selector_model)
            device = getattr(getattr(self.etm, "engine", None), "device", None)
            return (
                BiEncoderSelector(str(path), progress=False, device=device)
                if selector == "bi-encoder"
                else KernelSelector.load(path, device=device)
            )
        raise ValueError(
            f"unknown selector {selector!r}; known: bm25, bi-encoder, kernel, all (or a selector object)"
        )

    # -- scoring --------------------------------------------------------------------------------------------
    def windows(self, texts: Sequence[str]) -> list[list[Window]]:
        """The windows of each text, as this cascade cuts them."""
        windows = split_windows(list(texts), self.tokenizer, self.window_size, self.overlap)
        return windows  # type: ignore[return-value]  # a list of texts gives a list of lists

    def score_documents(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[list[CascadeResult]]:
        """Window, select, score and aggregate every document of every query (one ETM run in all)."""
        texts = [d.full_text for _, docs in items for d in docs]
        flat_windows = self.windows(texts) if texts else []
        keys = [(qi, di) for qi, (_, docs) in enumerate(items) for di in range(len(docs))]
        kept: list[list[int]] = []
        to_select = []
        for wins in flat_windows:
            if self.aggregation == "first":
                kept.append([0])
            elif isinstance(self.selector, AllSelector) or self.top_s is None or self.top_s >= len(wins):
                kept.append(list(range(len(wins))))
            else:
                kept.append([])
                to_select.append(len(kept) - 1)
        if to_select:
            sel_items = [(items[keys[j][0]][0].text, [w.text for w in flat_windows[j]]) for j in to_select]
            for j, s in zip(to_select, self.selector.score_windows(sel_items)):
                kept[j] = select_top(s, self.top_s)
        qs = [items[qi][0].text for (qi, _), ks in zip(keys, kept) for _ in ks]
        ws = [flat_windows[j][k].text for j, ks in enumerate(kept) for k in ks]
        flat = self.etm.score_texts(qs, ws, desc="cascade ETM") if ws else np.zeros(0)
        per_doc = split_scores(np.asarray(flat).reshape(-1), [len(k) for k in kept])
        self.stats["docs"] += len(keys)
        self.stats["windows"] += sum(len(w) for w in flat_windows)
        self.stats["etm_pairs"] += len(ws)
        results: list[list[CascadeResult]] = [[] for _ in items]
        for (qi, _), wins, ks, s in zip(keys, flat_windows, kept, per_doc):
            best = ks[int(np.argmax(s))]
            score = aggregate(s, self.aggregation, self.aggregation_weights)
            results[qi].append(CascadeResult(windows=wins, kept=ks, score=score, best=wins[best]))
        return results

    def rank_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[Ranking]:
        """Scores of every document, and each document's best window as the evidence it was scored by."""
        rankings = []
        for res in self.score_documents(items):
            evidence = {i: (r.best.text or None) for i, r in enumerate(res)}
            rankings.append(Ranking(np.array([r.score for r in res], dtype=np.float64), evidence=evidence))
        return rankings

    def score_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[np.ndarray]:
        """Document scores (``rank_batch`` without the evidence)."""
        return [r.scores for r in self.rank_batch(items)]

    # -- explanations -----------------------------------------------------------------------------------------
    @property
    def can_reason(self) -> bool:
        """Whether the ETM generates reasoning."""
        return bool(getattr(self.etm, "can_reason", False))

    def generate_reasoning(self, query: Query, docs: Sequence[Doc]) -> list[str | None]:
        """The ETM's reasoning over each document as given (``explain_top_k`` gives the best windows)."""
        return self.etm.generate_reasoning(query, docs)

    def generate_comparisons(self, query: Query, pairs: Sequence[tuple[Doc, Doc]]) -> list[str | None]:
        """The ETM's comparisons of each pair as given (the best windows, see ``generate_reasoning``)."""
        return self.etm.generate_comparisons(query, pairs)

    # -- saving -------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ETM's model directory with an ``r2r_model.json`` of family ``cascade`` (and a kernel
        selector under ``selector/``), so ``reason2rank.load(path)`` and both adapters reopen the cascade."""
        if not hasattr(self.etm, "save"):
            raise TypeError(f"the ETM ({type(self.etm).__name__}) cannot be saved")
        if not isinstance(self.selector, (BM25Selector, BiEncoderSelector, KernelSelector, AllSelector)):
            raise TypeError(
                f"a custom selector ({type(self.selector).__name__}) cannot be saved; save it yourself"
            )
        out = Path(self.etm.save(path))
        cfg, _ = read_r2r_config(out)
        cfg = dict(cfg or {})
        cfg.update(
            family=self.family,
            etm_family=getattr(self.etm, "family", None),
            selector=self.selector.name,
            window_size=self.window_size,
            overlap=self.overlap,
            top_s=self.top_s,
            aggregation=self.aggregation,
            aggregation_weights=self.aggregation_weights,
        )
        if isinstance(self.selector, KernelSelector):
            self.selector.save(out / "selector")
            cfg["selector_model"] = "selector"
        elif isinstance(self.selector, BiEncoderSelector):
            cfg["selector_model"] = str(Path(self.selector.model.model_name_or_path).resolve())
        write_r2r_config(out, cfg)
        return out

    # -- description ------------------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Family, ETM and selection settings."""
        etm = self.etm.describe()
        return {"family": self.family, "model": etm.get("model"), "etm": etm, "selector": self.selector_name,
                "top_s": self.top_s, "aggregation": self.aggregation}  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"CascadeReranker({self.etm!r}, selector={self.selector_name!r}, top_s={self.top_s}, "
            f"aggregation={self.aggregation!r})"
        )
