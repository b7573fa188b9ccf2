"""The batching engine shared by all transformer scorers.

Features (token id lists) of every (query, doc) pair of every query arrive at once; the engine runs each
distinct input once (identical inputs get identical outputs, whatever else is in the batch), sorts them by
length, pads each batch to its own longest member, runs the forward under ``torch.inference_mode`` on the
chosen device and dtype, halves the batch on CUDA out-of-memory, and returns results in input order.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reason2rank.progress import progress_bar

logger = logging.getLogger(__name__)

Features = dict[str, list[int]]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks cuda, then mps, then cpu."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from e


_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}  # fmt: skip


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"``: bf16 on CUDA (fp16 where the GPU lacks bf16), fp32 elsewhere. An explicit dtype
    always wins.

    On the CPU ``auto`` keeps fp32 scores whatever the CPU: bf16 moves scores by its rounding, and where it was
    measured (2 cores with AVX512-BF16, no AMX, torch 2.13) bf16 matmuls ran at ~70% of fp32 speed (168 vs 241
    GFLOP/s at 512x512) and MiniLM reranking was 35% slower. A CPU with AMX-BF16 may run bf16 faster; that was
    never measured here, so it is the user's choice: ``dtype="bf16"``.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; use one of 'auto', {', '.join(sorted(set(_DTYPES)))}"
        ) from None


def default_batch_size(device: torch.device) -> int:
    """Pairs per forward pass when the user sets none."""
    return 64 if device.type == "cuda" else 32


def pad_batch(
    features: Sequence[Features],
    pad_token_id: int,
    padding_side: str = "right",
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Pad token lists to the batch's longest; builds ``attention_mask``; pads other keys with 0."""
    n = len(features)
    width = max(len(f["input_ids"]) for f in features)
    keys = [k for k in features[0] if k != "attention_mask"]
    out = {k: torch.full((n, width), pad_token_id if k == "input_ids" else 0, dtype=torch.long) for k in keys}
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, f in enumerate(features):
        length = len(f["input_ids"])
        sl = slice(width - length, width) if padding_side == "left" else slice(0, length)
        for k in keys:
            out[k][i, sl] = torch.as_tensor(f[k], dtype=torch.long)
        mask[i, sl] = 1
    out["attention_mask"] = mask
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` is a CUDA out-of-memory error."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(e, oom)) or "out of memory" in str(e).lower()


@dataclass
class PaddingStats:
    """Token slots the engine's batches had and how many of them held real tokens (the rest is padding)."""

    tokens: int = 0
    slots: int = 0

    @property
    def padded_fraction(self) -> float:
        """The share of batch slots that were padding (0.0 when nothing ran)."""
        return 1.0 - self.tokens / self.slots if self.slots else 0.0

    def add(self, tokens: int, slots: int) -> None:
        """Count one batch of ``slots`` positions holding ``tokens`` real tokens."""
        self.tokens += tokens
        self.slots += slots


class Engine:
    """Runs ``forward`` over length-sorted batches of features; results come back in input order.

    ``forward(batch_tensors) -> Tensor[batch, ...]``. The engine owns the device, dtype, batch size, progress
    bar (``progress``: ``None`` = on a terminal only, see ``reason2rank.progress``) and the out-of-memory
    back-off; the scorer owns tokenisation and the read-out. ``padding`` counts, over every run since it was
    last reset (``padding = PaddingStats()``), how many batch positions were padding.
    """

    def __init__(
        self,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.batch_size = batch_size or default_batch_size(self.device)
        self.progress = progress
        self.padding = PaddingStats()

    def __repr__(self) -> str:
        return f"Engine(device={self.device}, dtype={self.dtype}, batch_size={self.batch_size})"

    def run(
        self,
        features: Sequence[Features],
        forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        pad_token_id: int,
        padding_side: str = "right",
        desc: str = "scoring",
        collate: Callable[[Sequence[Any]], dict[str, torch.Tensor]] | None = None,
        key: Callable[[Any], Hashable] | None = None,
    ) -> np.ndarray:
        """``forward`` over every feature (each distinct one once), results stacked in input order.

        Features are token-id lists by default (``pad_batch`` pads them). A family whose inputs hold more (a
        vision-language model's pixels and image grids) passes ``collate`` (features -> a batch of CPU tensors with
        an ``attention_mask``) and ``key`` (what makes two features the same input); batches are still sorted by
        ``len(feature["input_ids"])``, which counts the image tokens."""
        n = len(features)
        if n == 0:
            return np.zeros((0,), dtype=np.float32)
        slot: dict[Hashable, int] = {}
        first: list[int] = []  # the input index of each distinct feature
        where = [0] * n  # the distinct feature of each input
        for i, f in enumerate(features):
            k = key(f) if key is not None else tuple((name, tuple(v)) for name, v in sorted(f.items()))
            j = slot.get(k)
            if j is None:
                j = slot[k] = len(first)
                first.append(i)
            where[i] = j
        unique = [features[i] for i in first]
        order = sorted(range(len(unique)), key=lambda i: -len(unique[i]["input_ids"]))
        results: list[Any] = [None] * len(unique)
        batch_size = self.batch_size
        start = 0
        bar = progress_bar(
            len(unique), desc, self.progress if len(unique) > batch_size else False, unit="pair"
        )
        try:
            with torch.inference_mode():
                while start < len(unique):
                    idx = order[start : start + batch_size]
                    feats = [unique[i] for i in idx]
                    try:
                        if collate is None:
                            batch = pad_batch(feats, pad_token_id, padding_side, self.device)
                        else:
                            batch = {name: t.to(self.device) for name, t in collate(feats).items()}
                        out = forward(batch).float().cpu().numpy()
                        self.padding.add(int(batch["attention_mask"].sum()), batch["attention_mask"].numel())
                    except (RuntimeError, MemoryError) as e:
                        if self.device.type != "cuda" or not is_out_of_memory(e) or batch_size == 1:
                            raise
                        torch.cuda.empty_cache()
                        batch_size = max(1, batch_size // 2)
                        warnings.warn(
                            f"CUDA out of memory; retrying with batch_size={batch_size}", stacklevel=2
                        )
                        continue
                    for j, i in enumerate(idx):
                        results[i] = out[j]
                    start += len(idx)
                    bar.update(len(idx))
        finally:
            bar.close()
        return np.stack([results[where[i]] for i in range(n)])


class TruncationWarnings:
    """Says how many inputs were cut to ``max_length``: a warning the first time, a log line afterwards, so a
    component called once per query (Haystack) does not repeat it on every call."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.warned = False

    def report(self, count: int, total: int, what: str = "query-document pairs") -> None:
        """Warn (first time) or log that ``count`` of ``total`` inputs were truncated; nothing when none were."""
        if not count:
            return
        message = (
            f"{count} of {total} {what} were longer than max_length={self.max_length} tokens and had their "
            "document truncated (raise max_length, or split long documents with reason2rank.cascade)"
        )
        if self.warned:
            logger.info(message)
        else:
            self.warned = True
            warnings.warn(message, stacklevel=3)
