"""Token windows of long documents (IDCM: 50 tokens plus 7 tokens of overlap on each side), with character
offsets into the document so a window's text is an exact span of it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["Window", "check_window_args", "split_windows"]

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Window:
    """The ``index``-th passage of a document: ``text == document[start:end]``."""

    index: int
    start: int
    end: int
    text: str


class _WordTokenizer:
    """Fallback tokenizer (``\\w+`` runs) with offsets, used when no transformers tokenizer is given."""

    def __call__(self, texts: Sequence[str], **_: Any) -> dict[str, list]:
        offsets = [[(m.start(), m.end()) for m in _WORD.finditer(t)] for t in texts]
        return {"input_ids": [[0] * len(o) for o in offsets], "offset_mapping": offsets}


def _token_offsets(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase | None
) -> list[list[tuple[int, int]]]:
    if tokenizer is None or isinstance(tokenizer, _WordTokenizer):
        return _WordTokenizer()(texts)["offset_mapping"]
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
        return [Window(index=0, start=0, end=0, text="")]
    out = []
    for k in range(math.ceil(n / size)):
        ts = max(0, k * size - overlap)
        te = min(n, (k + 1) * size + overlap)
        start, end = offsets[ts][0], offsets[te - 1][1]
        out.append(Window(index=k, start=start, end=end, text=text[start:end]))
    return out


def check_window_args(size: int, overlap: int) -> None:
    """``ValueError`` for a window size below 1 or a negative overlap."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"window_size must be a positive int (tokens per window), got {size!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be a non-negative int (tokens added on each side), got {overlap!r}")


def split_windows(
    texts: str | Sequence[str],
    tokenizer: PreTrainedTokenizerBase | None = None,
    size: int = 50,
    overlap: int = 7,
) -> list[Window] | list[list[Window]]:
    """Split text(s) into windows of ``size`` tokens extended by ``overlap`` tokens on each side.

    Window ``k`` covers tokens ``[k*size - overlap, (k+1)*size + overlap)`` (clipped to the document); its
    character offsets come from the tokenizer's offset mapping, so ``window.text == text[start:end]``. A text
    without tokens gives one empty window. ``tokenizer``: a transformers fast tokenizer, or ``None`` for
    ``\\w+`` words. A str gives a list of windows, a list of str a list of such lists.
    """
    check_window_args(size, overlap)
    single = isinstance(texts, str)
    batch: list[str] = [texts] if isinstance(texts, str) else list(texts)
    out = [
        _windows_from_offsets(t, o, size, overlap) for t, o in zip(batch, _token_offsets(batch, tokenizer))
    ]
    return out[0] if single else out
