"""Passage cascade for long documents (IDCM, Hofstätter et al., SIGIR 2021).

A long document is split into overlapping token windows (IDCM: 50 tokens plus 7 tokens of overlap on each
side). A cheap *selector* (ESM) scores every window and keeps the top ``top_s`` per document; the expensive
*scorer* (ETM, any pointwise ``Reranker`` of the core) scores only the kept windows, in one engine run over
all documents of all queries; the window scores are aggregated into the document score (``max``,
``first`` passage, or a learned ``weighted`` sum of the top-k). The best window is the document's evidence.

``CascadeReranker`` *is* a ``Reranker``, so both adapters take it as they take any model::

    from reason2rank.cascade import CascadeReranker
    cascade = CascadeReranker("path/to/all-MiniLM-L6-v2", etm_family="bi-encoder", selector="bm25", top_s=4)
    cascade.rerank("how long is the life cycle of a flea", long_docs, explain=1)   # evidence = best window

Selectors: ``"bm25"`` (BM25 among the windows of the document, pure python), ``"bi-encoder"`` (cosine of a
bi-encoder, ``selector_model=``), ``"kernel"`` (the IDCM kernel model, ``selector_model=`` a directory written by
``KernelSelector.save``), ``"all"`` (no selection: every window is scored, i.e. max-passage), or any object
with ``score_windows(items) -> list[np.ndarray]`` where items are ``(query text, [window texts])`` pairs.

Training: ``train_etm_ranknet`` fine-tunes the ETM (and the weighted aggregation) on all windows with RankNet
on (query, relevant doc, non-relevant doc) triples; ``distill_esm`` trains the kernel selector to reproduce the
ETM's window ranking (LambdaRank-weighted pairwise loss or KL between softmaxed score lists).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from reason2rank.reranker import DocLike, QueryLike, Reranker
from reason2rank.types import Doc, Query, ScoredDoc

__all__ = [
    "AGGREGATIONS",
    "BM25Selector",
    "BiEncoderSelector",
    "CascadeReranker",
    "IDCMKernelESM",
    "KernelSelector",
    "WeightedTopK",
    "Window",
    "WindowSelector",
    "aggregate",
    "distill_esm",
    "split_windows",
    "train_etm_ranknet",
]

AGGREGATIONS = ("max", "first", "weighted")
_WORD = re.compile(r"\w+")


# -- windows ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A passage of a document: ``text == document[start:end]``; tokens ``[token_start, token_end)``."""

    index: int
    start: int
    end: int
    text: str
    token_start: int
    token_end: int


class _WordTokenizer:
    """Fallback tokenizer (``\\w+`` runs) with offsets, used when no transformers tokenizer is given."""

    def __call__(self, texts: Sequence[str], **_: Any) -> dict[str, list]:
        offsets = [[(m.start(), m.end()) for m in _WORD.finditer(t)] for t in texts]
        return {"input_ids": [[0] * len(o) for o in offsets], "offset_mapping": offsets}


def _token_offsets(texts: Sequence[str], tokenizer: Any) -> list[list[tuple[int, int]]]:
    if tokenizer is None:
        tokenizer = _WordTokenizer()
    if isinstance(tokenizer, _WordTokenizer):
        return tokenizer(texts)["offset_mapping"]
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    out = []
    for offsets in enc["offset_mapping"]:
        # some tokenizers give (0, 0) for tokens that map to no character; they are dropped
        out.append([(int(a), int(b)) for a, b in offsets if b > a])
    return out


def _windows_from_offsets(
    text: str, offsets: Sequence[tuple[int, int]], size: int, overlap: int
) -> list[Window]:
    n = len(offsets)
    if n == 0:
        return [Window(index=0, start=0, end=0, text="", token_start=0, token_end=0)]
    out = []
    for k in range(math.ceil(n / size)):
        ts = max(0, k * size - overlap)
        te = min(n, (k + 1) * size + overlap)
        start, end = offsets[ts][0], offsets[te - 1][1]
        out.append(Window(index=k, start=start, end=end, text=text[start:end], token_start=ts, token_end=te))
    return out


def _check_window_args(size: int, overlap: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"window_size must be a positive int (tokens per window), got {size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be a non-negative int (tokens added on each side), got {overlap!r}")


def split_windows(
    texts: str | Sequence[str], tokenizer: Any = None, size: int = 50, overlap: int = 7
) -> list[Window] | list[list[Window]]:
    """Split text(s) into windows of ``size`` tokens extended by ``overlap`` tokens on each side.

    Window ``k`` covers tokens ``[k*size - overlap, (k+1)*size + overlap)`` (clipped to the document); its
    character offsets come from the tokenizer's offset mapping, so ``window.text == text[start:end]``. A text
    without tokens gives one empty window. ``tokenizer``: a transformers fast tokenizer, or ``None`` for
    ``\\w+`` words. A str gives a list of windows, a list of str a list of such lists.
    """
    _check_window_args(size, overlap)
    single = isinstance(texts, str)
    batch = [texts] if single else list(texts)
    out = [
        _windows_from_offsets(t, o, size, overlap) for t, o in zip(batch, _token_offsets(batch, tokenizer))
    ]
    return out[0] if single else out


# -- selectors (ESM) --------------------------------------------------------------------------------------
class WindowSelector(Protocol):
    def score_windows(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """One score per window for each (query text, window texts) item."""


def _terms(text: str) -> list[str]:
    return [t.lower() for t in _WORD.findall(text)]


class BM25Selector:
    """BM25 of the query against the windows of one document, the document being the collection.

    Document frequencies and the average length come from the windows of that document only, so the selector
    needs no index and no statistics of the corpus.
    """

    name = "bm25"

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = float(k1), float(b)

    def score_windows(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        out = []
        for query, windows in items:
            tfs = [Counter(_terms(w)) for w in windows]
            lengths = np.array([sum(tf.values()) for tf in tfs], dtype=np.float64)
            n = len(windows)
            avg = max(lengths.mean(), 1e-9) if n else 1.0
            scores = np.zeros(n, dtype=np.float64)
            for term in set(_terms(query)):
                df = sum(1 for tf in tfs if term in tf)
                if not df:
                    continue
                idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
                tf = np.array([t.get(term, 0) for t in tfs], dtype=np.float64)
                scores += idf * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * lengths / avg))
            out.append(scores)
        return out

    def __repr__(self) -> str:
        return "BM25Selector()"


class BiEncoderSelector:
    """Cosine (or dot) of a bi-encoder between the query and each window, e.g. all-MiniLM-L6-v2."""

    name = "bi-encoder"

    def __init__(self, model: Any, **load_kwargs: Any) -> None:
        if isinstance(model, (str, os.PathLike)):
            from reason2rank.scorers.bi_encoder import BiEncoderReranker

            model = BiEncoderReranker(model, **load_kwargs)
        self.model = model

    def score_windows(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        qs = [q for q, ws in items for _ in ws]
        ws = [w for _, wins in items for w in wins]
        flat = self.model.score_texts(qs, ws, desc="cascade selection") if ws else np.zeros(0)
        return _split(flat, [len(w) for _, w in items])

    def __repr__(self) -> str:
        return f"BiEncoderSelector({self.model.model_name_or_path!r})"


#: IDCM kernel centres: 1.0, 0.9, ..., -0.9 (11 kernels)
IDCM_MUS = tuple(round(1.0 - 0.1 * i, 1) for i in range(11))


class IDCMKernelESM(nn.Module):
    """The IDCM efficient student model: frozen embeddings → Conv1d(3) → ReLU → L2 norm → query×passage
    cosine → RBF kernels (μ = 1.0 … −0.9, σ = 0.1) → log of the per-query-token kernel sums, summed over the
    query → linear → one score per (query, passage)."""

    def __init__(
        self,
        embeddings: torch.Tensor,
        conv_channels: int | None = None,
        mus: Sequence[float] = IDCM_MUS,
        sigma: float = 0.1,
        padding_idx: int | None = 0,
        freeze_embeddings: bool = True,
    ) -> None:
        super().__init__()
        vocab, dim = embeddings.shape
        self.config = {"vocab_size": int(vocab), "dim": int(dim), "conv_channels": int(conv_channels or dim),
                       "mus": [float(m) for m in mus], "sigma": float(sigma), "padding_idx": padding_idx,
                       "freeze_embeddings": bool(freeze_embeddings)}  # fmt: skip
        self.embedding = nn.Embedding.from_pretrained(
            embeddings.detach().float().clone(), freeze=freeze_embeddings, padding_idx=padding_idx
        )
        self.conv = nn.Conv1d(dim, self.config["conv_channels"], kernel_size=3, padding=1)
        self.register_buffer("mus", torch.tensor(self.config["mus"]).view(1, 1, 1, -1), persistent=False)
        self.sigma = float(sigma)
        self.dense = nn.Linear(len(mus), 1, bias=False)
        with torch.no_grad():
            self.dense.weight.uniform_(-0.014, 0.014)  # as in the KNRM-family reference code

    @classmethod
    def from_pretrained_embeddings(
        cls, model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> IDCMKernelESM:
        """Initialise the embeddings from a transformers model's input embeddings (e.g. the ETM's backbone)."""
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(model_name_or_path))
        weight = model.get_input_embeddings().weight.detach()
        kwargs.setdefault("padding_idx", getattr(model.config, "pad_token_id", 0))
        return cls(weight, **kwargs)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(ids) * mask.unsqueeze(-1)
        ctx = torch.relu(self.conv(emb.transpose(1, 2))).transpose(1, 2)
        return nn.functional.normalize(ctx, p=2, dim=-1, eps=1e-9) * mask.unsqueeze(-1)

    def forward(
        self, q_ids: torch.Tensor, q_mask: torch.Tensor, p_ids: torch.Tensor, p_mask: torch.Tensor
    ) -> torch.Tensor:
        q_mask, p_mask = q_mask.float(), p_mask.float()
        cos = torch.bmm(self.encode(q_ids, q_mask), self.encode(p_ids, p_mask).transpose(1, 2))
        kernels = torch.exp(-((cos.unsqueeze(-1) - self.mus) ** 2) / (2 * self.sigma**2))
        kernels = kernels * p_mask[:, None, :, None]
        per_query_token = torch.log(kernels.sum(dim=2).clamp(min=1e-10)) * q_mask.unsqueeze(-1)
        return self.dense(per_query_token.sum(dim=1)).squeeze(-1)


class KernelSelector:
    """Runs an ``IDCMKernelESM`` over all windows with the tokenizer its embeddings belong to."""

    name = "kernel"
    WEIGHTS, CONFIG = "idcm_esm.pt", "idcm_esm.json"

    def __init__(
        self, esm: IDCMKernelESM, tokenizer: Any, batch_size: int = 256, max_query_length: int = 30
    ) -> None:
        self.esm, self.tokenizer = esm, tokenizer
        self.batch_size, self.max_query_length = batch_size, max_query_length

    @classmethod
    def from_pretrained(cls, model_name_or_path: str | os.PathLike, **kwargs: Any) -> KernelSelector:
        """An untrained kernel selector over the embeddings and tokenizer of a transformers model."""
        from transformers import AutoTokenizer

        esm_kwargs = {k: kwargs.pop(k) for k in ("conv_channels", "sigma", "mus") if k in kwargs}
        esm = IDCMKernelESM.from_pretrained_embeddings(model_name_or_path, **esm_kwargs)
        return cls(esm, AutoTokenizer.from_pretrained(str(model_name_or_path)), **kwargs)

    def save(self, path: str | os.PathLike) -> Path:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.esm.state_dict(), out / self.WEIGHTS)
        (out / self.CONFIG).write_text(json.dumps(self.esm.config, indent=2) + "\n", encoding="utf-8")
        self.tokenizer.save_pretrained(out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, **kwargs: Any) -> KernelSelector:
        from transformers import AutoTokenizer

        root = Path(path)
        if not (root / cls.CONFIG).is_file():
            raise FileNotFoundError(
                f"{root} has no {cls.CONFIG}; write a kernel selector with KernelSelector.save"
            )
        cfg = json.loads((root / cls.CONFIG).read_text(encoding="utf-8"))
        esm = IDCMKernelESM(torch.zeros(cfg["vocab_size"], cfg["dim"]), conv_channels=cfg["conv_channels"],
                            mus=cfg["mus"], sigma=cfg["sigma"], padding_idx=cfg["padding_idx"],
                            freeze_embeddings=cfg["freeze_embeddings"])  # fmt: skip
        esm.load_state_dict(torch.load(root / cls.WEIGHTS, map_location="cpu", weights_only=True))
        return cls(esm.eval(), AutoTokenizer.from_pretrained(str(root)), **kwargs)

    def tensors(self, queries: Sequence[str], windows: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """Padded (q_ids, q_mask, p_ids, p_mask) for aligned query and window texts."""
        pad = self.tokenizer.pad_token_id or 0
        q = self.tokenizer(
            list(queries), add_special_tokens=False, truncation=True, max_length=self.max_query_length
        )
        p = self.tokenizer(list(windows), add_special_tokens=False, verbose=False)

        def padded(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
            width = max(1, max(len(x) for x in ids))
            t = torch.full((len(ids), width), pad, dtype=torch.long)
            m = torch.zeros((len(ids), width), dtype=torch.long)
            for i, x in enumerate(ids):
                t[i, : len(x)] = torch.tensor(x, dtype=torch.long)
                m[i, : len(x)] = 1
            return t, m

        return (*padded(q["input_ids"]), *padded(p["input_ids"]))

    def score_pairs(self, queries: Sequence[str], windows: Sequence[str]) -> np.ndarray:
        out = []
        self.esm.eval()
        with torch.inference_mode():
            for s in range(0, len(windows), self.batch_size):
                t = self.tensors(queries[s : s + self.batch_size], windows[s : s + self.batch_size])
                out.append(self.esm(*t).float().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def score_windows(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        qs = [q for q, ws in items for _ in ws]
        ws = [w for _, wins in items for w in wins]
        return _split(self.score_pairs(qs, ws), [len(w) for _, w in items])

    def __repr__(self) -> str:
        return "KernelSelector()"


class _AllSelector:
    name = "all"

    def __repr__(self) -> str:
        return "all windows"


def _split(flat: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    out, start = [], 0
    for n in sizes:
        out.append(np.asarray(flat[start : start + n], dtype=np.float64))
        start += n
    return out


def select_top(scores: np.ndarray, s: int | None) -> list[int]:
    """Indices of the ``s`` highest scores in document order; ties go to the earlier window."""
    n = len(scores)
    if s is None or s >= n:
        return list(range(n))
    return sorted(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:s].tolist())


# -- aggregation ------------------------------------------------------------------------------------------
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
    window_scores: Sequence[float], how: str = "max", weights: Sequence[float] | None = None
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


# -- the cascade --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CascadeResult:
    """How one document was scored: its windows, the kept ones, their ETM scores, the score, the best window."""

    windows: list[Window]
    kept: list[int]
    etm_scores: np.ndarray
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
    evidence = False  # the core's occlusion is not used: rerank_batch sets the best window as evidence

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
        tokenizer: Any = None,
        model_dir: str | os.PathLike | None = None,
        **etm_options: Any,
    ) -> None:
        _check_window_args(window_size, overlap)
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
        self._local = threading.local()

    # -- construction ---------------------------------------------------------------------------------------
    @staticmethod
    def _load_etm(path: str, family: str | None, model_dir: Any, options: dict[str, Any]) -> Reranker:
        from reason2rank.load import family_class, read_r2r_config

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
            return _AllSelector()
        if selector in ("bi-encoder", "kernel"):
            if self.selector_model is None:
                raise ValueError(f"selector {selector!r} needs selector_model= (a model path)")
            path = Path(self.selector_model)
            if self.model_dir is not None and not path.is_absolute() and (self.model_dir / path).exists():
                path = self.model_dir / path
            return (
                BiEncoderSelector(str(path), progress=False)
                if selector == "bi-encoder"
                else KernelSelector.load(path)
            )
        raise ValueError(
            f"unknown selector {selector!r}; known: bm25, bi-encoder, kernel, all (or a selector object)"
        )

    # -- scoring --------------------------------------------------------------------------------------------
    def windows(self, texts: Sequence[str]) -> list[list[Window]]:
        return split_windows(list(texts), self.tokenizer, self.window_size, self.overlap)

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
            elif isinstance(self.selector, _AllSelector) or self.top_s is None or self.top_s >= len(wins):
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
        per_doc = _split(np.asarray(flat).reshape(-1), [len(k) for k in kept])
        self.stats["docs"] += len(keys)
        self.stats["windows"] += sum(len(w) for w in flat_windows)
        self.stats["etm_pairs"] += len(ws)
        results: list[list[CascadeResult]] = [[] for _ in items]
        for (qi, _), wins, ks, s in zip(keys, flat_windows, kept, per_doc):
            best = ks[int(np.argmax(s))]
            score = aggregate(s, self.aggregation, self.aggregation_weights)
            results[qi].append(
                CascadeResult(windows=wins, kept=ks, etm_scores=s, score=score, best=wins[best])
            )
        return results

    def score_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[np.ndarray]:
        results = self.score_documents(items)
        cache = getattr(self._local, "best", None)
        if cache is not None:
            for (q, docs), res in zip(items, results):
                for d, r in zip(docs, res):
                    cache[q.text, d.id, d.full_text] = r.best
        return [np.array([r.score for r in res], dtype=np.float64) for res in results]

    # -- explanations -----------------------------------------------------------------------------------------
    @property
    def can_reason(self) -> bool:
        return bool(getattr(self.etm, "can_reason", False))

    def _best_docs(self, query: Query, docs: Sequence[Doc]) -> list[Doc]:
        cache = getattr(self._local, "best", None) or {}
        out = []
        for d in docs:
            w = cache.get((query.text, d.id, d.full_text))
            out.append(Doc(id=d.id, text=w.text, meta=d.meta) if w is not None else d)
        return out

    def generate_reasoning(self, query: Query, docs: Sequence[Doc]) -> list[str | None]:
        return self.etm.generate_reasoning(query, self._best_docs(query, docs))

    def generate_comparisons(self, query: Query, pairs: Sequence[tuple[Doc, Doc]]) -> list[str | None]:
        firsts = self._best_docs(query, [a for a, _ in pairs])
        seconds = self._best_docs(query, [b for _, b in pairs])
        return self.etm.generate_comparisons(query, list(zip(firsts, seconds)))

    def rerank_batch(
        self, items: Sequence[tuple[QueryLike, Sequence[DocLike]]], explain: int = 0
    ) -> list[list[ScoredDoc]]:
        cache: dict[tuple[str, str, str], Window] = {}
        self._local.best = cache
        try:
            results = super().rerank_batch(items, explain=explain)
        finally:
            self._local.best = None
        if not explain:
            return results
        out = []
        for (q, _), ranked in zip(items, results):
            qtext = q if isinstance(q, str) else q.text
            new = list(ranked)
            for r in range(min(explain, len(ranked))):
                w = cache.get((qtext, ranked[r].doc.id, ranked[r].doc.full_text))
                new[r] = dataclasses.replace(ranked[r], evidence=w.text if w is not None and w.text else None)
            out.append(new)
        return out

    # -- saving -------------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the ETM's model directory with an ``r2r_model.json`` of family ``cascade`` (and a kernel
        selector under ``selector/``), so ``reason2rank.load(path)`` and both adapters reopen the cascade."""
        from reason2rank.load import read_r2r_config
        from reason2rank.scorers.base import write_r2r_config

        if not hasattr(self.etm, "save"):
            raise TypeError(f"the ETM ({type(self.etm).__name__}) cannot be saved")
        if not isinstance(self.selector, (BM25Selector, BiEncoderSelector, KernelSelector, _AllSelector)):
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
        etm = self.etm.describe()
        return {"family": self.family, "model": etm.get("model"), "etm": etm, "selector": self.selector_name,
                "top_s": self.top_s, "aggregation": self.aggregation}  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"CascadeReranker({self.etm!r}, selector={self.selector_name!r}, top_s={self.top_s}, "
            f"aggregation={self.aggregation!r})"
        )


# -- training ------------------------------------------------------------------------------------------------
def etm_scores_with_grad(etm: Any, queries: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
    """ETM scores of aligned (query, text) pairs, differentiable (no inference mode), on the ETM's device."""
    from reason2rank.engine import pad_batch
    from reason2rank.scorers.bi_encoder import BiEncoderReranker

    device = etm.engine.device
    if isinstance(etm, BiEncoderReranker):

        def embed(strings: Sequence[str]) -> torch.Tensor:
            feats, _ = etm.encode_texts(strings)
            return etm.forward(pad_batch(feats, etm.pad_token_id, etm.padding_side, device), feats)

        q = embed([etm.query_prefix + s for s in queries])
        d = embed([etm.doc_prefix + s for s in texts])
        return (q * d).sum(-1)
    feats, _ = etm.encode_pairs(queries, texts)
    return (
        etm.forward(pad_batch(feats, etm.pad_token_id, etm.padding_side, device), feats).float().reshape(-1)
    )


def _torch_aggregate(scores: torch.Tensor, how: str, weighted: WeightedTopK | None) -> torch.Tensor:
    if how == "first":
        return scores[0]
    if how == "weighted" and weighted is not None:
        return weighted(scores)
    return scores.max()


def train_etm_ranknet(
    cascade: CascadeReranker,
    triples: Sequence[tuple[str, str, str]],
    steps: int = 10,
    lr: float = 2e-5,
    batch_size: int = 4,
    aggregation_lr: float = 1e-2,
    seed: int = 0,
) -> list[float]:
    """Fine-tune the cascade's ETM on *all* windows with RankNet: for each (query, relevant doc, non-relevant
    doc), the document scores (aggregated over every window) should order the pair. With ``aggregation=
    "weighted"`` the top-k weights are learned too (and written back to ``cascade.aggregation_weights``).
    Returns the loss of each step."""
    etm = cascade.etm
    model = etm.model
    weighted = (
        WeightedTopK(len(cascade.aggregation_weights), cascade.aggregation_weights)
        if cascade.aggregation == "weighted"
        else None
    )
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    if weighted is not None:
        groups.append({"params": list(weighted.parameters()), "lr": aggregation_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    losses = []
    model.train()
    try:
        for _ in range(steps):
            batch = [triples[i] for i in rng.integers(0, len(triples), size=min(batch_size, len(triples)))]
            docs = [t for _, pos, neg in batch for t in (pos, neg)]
            wins = cascade.windows(docs)
            qs = [q for q, _, _ in batch for _ in range(2)]
            flat_q = [q for q, ws in zip(qs, wins) for _ in ws]
            flat_w = [w.text for ws in wins for w in ws]
            scores = etm_scores_with_grad(etm, flat_q, flat_w)
            doc_scores, start = [], 0
            for ws in wins:
                doc_scores.append(
                    _torch_aggregate(scores[start : start + len(ws)], cascade.aggregation, weighted)
                )
                start += len(ws)
            ds = torch.stack(doc_scores).view(-1, 2)
            loss = nn.functional.softplus(ds[:, 1] - ds[:, 0]).mean()  # RankNet: -log sigmoid(pos - neg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        model.eval()
    if weighted is not None:
        cascade.aggregation_weights = [float(w) for w in weighted.weight.detach()]
    return losses


def lambda_pair_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """LambdaRank-weighted pairwise logistic loss: pairs the teacher orders (i above j) weighted by the
    |ΔnDCG| of swapping them, with gains from the teacher's ranks (the top window gain 1, then 1/log2(r+1))."""
    n = teacher.shape[0]
    rank = torch.empty(n, dtype=torch.long)
    rank[torch.argsort(teacher, descending=True)] = torch.arange(n)
    gain = 1.0 / torch.log2(rank.float() + 2.0)
    disc = 1.0 / torch.log2(rank.float() + 2.0)
    diff = teacher[:, None] - teacher[None, :]
    delta = ((gain[:, None] - gain[None, :]) * (disc[:, None] - disc[None, :])).abs()
    pairs = (diff > 0).float() * delta
    if pairs.sum() == 0:
        return student.sum() * 0.0
    logistic = nn.functional.softplus(-(student[:, None] - student[None, :]))
    return (pairs * logistic).sum() / pairs.sum()


def kl_list_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) over one document's windows."""
    t = torch.log_softmax(teacher / temperature, dim=0)
    s = torch.log_softmax(student / temperature, dim=0)
    return torch.sum(t.exp() * (t - s))


def distill_esm(
    selector: KernelSelector,
    cascade: CascadeReranker,
    pairs: Sequence[tuple[str, str]],
    steps: int = 20,
    lr: float = 1e-3,
    loss: str = "lambda",
    batch_size: int = 8,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Train the kernel selector to rank each document's windows as the cascade's ETM does.

    ``pairs``: (query, document text). The ETM scores every window once (one engine run); then each step
    takes ``batch_size`` documents and applies ``loss`` (``"lambda"`` or ``"kl"``) per document. Returns the
    loss of each step."""
    if loss not in ("lambda", "kl"):
        raise ValueError(f"unknown loss {loss!r}; use 'lambda' or 'kl'")
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
        lambda_pair_loss if loss == "lambda" else (lambda s, t: kl_list_loss(s, t, temperature))
    )
    wins = cascade.windows([d for _, d in pairs])
    qs = [q for (q, _), ws in zip(pairs, wins) for _ in ws]
    ws_flat = [w.text for ws in wins for w in ws]
    teacher = _split(cascade.etm.score_texts(qs, ws_flat, desc="ETM teacher"), [len(w) for w in wins])
    usable = [i for i, w in enumerate(wins) if len(w) > 1]
    if not usable:
        raise ValueError("distill_esm needs documents with at least two windows")
    esm = selector.esm
    opt = torch.optim.Adam([p for p in esm.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    esm.train()
    try:
        for _ in range(steps):
            chosen = [usable[i] for i in rng.integers(0, len(usable), size=min(batch_size, len(usable)))]
            q = [pairs[i][0] for i in chosen for _ in wins[i]]
            w = [x.text for i in chosen for x in wins[i]]
            student = esm(*selector.tensors(q, w))
            total, start = student.new_zeros(()), 0
            for i in chosen:
                n = len(wins[i])
                total = total + loss_fn(
                    student[start : start + n], torch.as_tensor(teacher[i], dtype=torch.float32)
                )
                start += n
            total = total / len(chosen)
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(float(total.detach()))
    finally:
        esm.eval()
    return losses
