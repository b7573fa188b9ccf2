"""Token ↔ text machinery of the evidence head, shared by the distillation trainer and inference.

An encoder student (cross-encoder) may carry an *evidence head*: a ``Linear(hidden_size, 1)`` on the backbone's
last hidden state of every token, trained to tag the tokens of the teacher's evidence sentence. Training and
inference see the document the same way:

- ``find_evidence_span`` locates the teacher's evidence in ``doc.text`` (exact, then case/whitespace-blind);
- ``doc_token_offsets`` maps each token of an encoded ``(query, doc.full_text)`` pair to its character span in
  ``doc.text`` (``None`` for query, special, padding and title tokens);
- ``evidence_token_labels`` turns offsets and a span into per-token labels (``-100`` = not a document token);
- ``sentence_scores`` averages the head's token probabilities over each sentence of ``doc.text``; the best
  sentence is the evidence.

The head is stored as ``EVIDENCE_HEAD_FILE`` (safetensors, keys ``weight`` ``[1, H]`` and ``bias`` ``[1]``,
fp32) next to the model's weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reason2rank.explain import sentence_spans
from reason2rank.types import Doc

if TYPE_CHECKING:
    import torch

EVIDENCE_HEAD_FILE = "evidence_head.safetensors"
#: label of tokens that carry no evidence label (query, special, padding and title tokens)
IGNORE_INDEX = -100

Span = tuple[int, int]


# -- locating the evidence ----------------------------------------------------------------------------------
def find_evidence_span(text: str, evidence: str | None) -> Span | None:
    """Character span of ``evidence`` in ``text``, or ``None`` when it is not there.

    An exact match (of the evidence with surrounding whitespace trimmed) wins; otherwise the evidence is
    matched ignoring case and all whitespace, and the match is mapped back to offsets of the original text
    (the span starts and ends on non-whitespace characters). The first occurrence is returned.
    """
    if not text or not evidence:
        return None
    needle = evidence.strip()
    if not needle:
        return None
    i = text.find(needle)
    if i >= 0:
        return i, i + len(needle)
    norm_text, index = _normalise(text)
    norm_needle, _ = _normalise(needle)
    if not norm_needle:
        return None
    j = norm_text.find(norm_needle)
    if j < 0:
        return None
    return index[j], index[j + len(norm_needle) - 1] + 1


def _normalise(s: str) -> tuple[str, list[int]]:
    """``s`` casefolded with all whitespace removed, and the index in ``s`` of each output character."""
    chars: list[str] = []
    index: list[int] = []
    for i, c in enumerate(s):
        if c.isspace():
            continue
        folded = c.casefold()
        chars.append(folded)
        index.extend([i] * len(folded))
    return "".join(chars), index


def doc_text_start(doc: Doc) -> int:
    """Offset of ``doc.text`` inside ``doc.full_text`` (past the title and its separating space)."""
    if doc.title:
        return len(doc.title) + 1 if doc.text else len(doc.title)
    return 0


# -- tokens ↔ characters ------------------------------------------------------------------------------------
def doc_token_offsets(
    encoding_offsets: Sequence[Sequence[int]],
    sequence_ids: Sequence[int | None],
    doc_start: int,
) -> list[Span | None]:
    """Per token of one encoded ``(query, full_text)`` pair: its character span in ``doc.text``.

    Args:
        encoding_offsets: the tokenizer's ``offset_mapping`` of the pair (offsets of second-sequence tokens are
            relative to ``full_text``).
        sequence_ids: the encoding's sequence ids (``0`` query, ``1`` document, ``None`` special/padding).
        doc_start: offset of ``doc.text`` inside ``full_text`` (see ``doc_text_start``).

    Returns ``None`` for query, special and padding tokens and for tokens that lie in the title; a token that
    straddles the title/text boundary is clipped to its part in the text.
    """
    if len(encoding_offsets) != len(sequence_ids):
        raise ValueError(
            f"{len(encoding_offsets)} offsets but {len(sequence_ids)} sequence ids; they must be aligned"
        )
    out: list[Span | None] = []
    for (start, end), seq in zip(encoding_offsets, sequence_ids):
        if seq != 1 or end <= doc_start:
            out.append(None)
            continue
        out.append((max(start, doc_start) - doc_start, end - doc_start))
    return out


def _overlaps(token: Span, span: Span) -> bool:
    """Whether a token's span shares a character with ``span`` (an empty token counts where it sits)."""
    s, e = token
    a, b = span
    if s == e:
        return a <= s < b
    return s < b and a < e


def evidence_token_labels(offsets: Sequence[Span | None], span: Span | None) -> list[int]:
    """Per-token labels: ``-100`` where the offset is ``None``, ``1`` for document tokens overlapping ``span``,
    ``0`` for the other document tokens. With ``span=None`` every document token is ``0``; callers that treat a
    missing evidence as *unknown* rather than *no evidence* should mask those rows themselves."""
    labels: list[int] = []
    for tok in offsets:
        if tok is None:
            labels.append(IGNORE_INDEX)
        else:
            labels.append(1 if span is not None and _overlaps(tok, span) else 0)
    return labels


def sentence_scores(
    offsets: Sequence[Span | None], token_probs: Sequence[float], text: str
) -> list[tuple[Span, float]]:
    """Mean token probability of each sentence of ``text`` (``explain.sentence_spans``), in text order.

    ``token_probs`` is aligned with ``offsets`` (extra trailing entries, e.g. padding, are ignored). Sentences
    without any token (cut off by truncation) are left out.
    """
    if len(token_probs) < len(offsets):
        raise ValueError(f"{len(token_probs)} token probabilities for {len(offsets)} tokens")
    tokens = [(tok, float(p)) for tok, p in zip(offsets, token_probs) if tok is not None]
    out: list[tuple[Span, float]] = []
    for span in sentence_spans(text):
        probs = [p for tok, p in tokens if _overlaps(tok, span)]
        if probs:
            out.append((span, sum(probs) / len(probs)))
    return out


def best_sentence(scores: Sequence[tuple[Span, float]], threshold: float) -> Span | None:
    """The span of the highest-scoring sentence (the first one on ties) if its score is ``>= threshold``."""
    if not scores:
        return None
    span, score = max(scores, key=lambda s: s[1])  # max keeps the first of equal maxima
    return span if score >= threshold else None


# -- the head's weights -------------------------------------------------------------------------------------
def new_evidence_head(hidden_size: int, device: str | torch.device | None = None) -> torch.nn.Linear:
    """A freshly initialised fp32 ``Linear(hidden_size, 1)`` (the trainer's starting point)."""
    import torch

    return torch.nn.Linear(hidden_size, 1, dtype=torch.float32, device=device)


def load_evidence_head(
    path: str | os.PathLike, hidden_size: int, device: str | torch.device | None = None
) -> torch.nn.Linear:
    """Read an evidence head from a safetensors file (keys ``weight`` and ``bias``) as an fp32 Linear in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no evidence head at {path}; train one with the distillation trainer or leave evidence_head unset"
        )
    state = load_file(str(path))
    missing = {"weight", "bias"} - set(state)
    if missing:
        raise ValueError(f"evidence head {path} lacks the tensor(s) {sorted(missing)}")
    weight, bias = state["weight"].float(), state["bias"].float()
    if weight.numel() != hidden_size or bias.numel() != 1:
        raise ValueError(
            f"evidence head {path} has weight {tuple(weight.shape)} and bias {tuple(bias.shape)}; this model needs "
            f"[1, {hidden_size}] and [1]"
        )
    layer = new_evidence_head(hidden_size)
    layer.load_state_dict({"weight": weight.reshape(1, hidden_size), "bias": bias.reshape(1)})
    return layer.to(device).eval()


def save_evidence_head(layer: torch.nn.Linear, path: str | os.PathLike) -> Path:
    """Write ``layer`` as safetensors (``weight`` ``[1, H]``, ``bias`` ``[1]``, fp32) to ``path``."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    bias = layer.bias if layer.bias is not None else torch.zeros(1)
    save_file(
        {
            "weight": layer.weight.detach().float().cpu().reshape(1, -1).contiguous(),
            "bias": bias.detach().float().cpu().reshape(1).contiguous(),
        },
        str(path),
    )
    return path
