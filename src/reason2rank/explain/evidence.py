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
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import torch

from reason2rank.explain.sentences import sentence_spans
from reason2rank.heads import load_linear_head, new_linear_head, save_linear_head
from reason2rank.types import Doc

EVIDENCE_HEAD_FILE = "evidence_head.safetensors"
#: label of tokens that carry no evidence label (query, special, padding and title tokens)
IGNORE_INDEX = -100

Span = tuple[int, int]


# -- locating the evidence ----------------------------------------------------------------------------------
def find_evidence_span(text: str | None, evidence: str | None) -> Span | None:
    """Character span of ``evidence`` in ``text``, or ``None`` when it is not there — the one rule the teacher
    (is the quote in the document?), the training set (keep it?) and the evidence head (which tokens?) use.

    Tried in turn, the first match wins (the first occurrence in the text):

    1. the evidence with surrounding whitespace trimmed, verbatim;
    2. ignoring case and all whitespace (punctuation must match), mapped back to offsets of the original text
       (the span starts and ends on non-whitespace characters);
    3. word by word after Unicode NFKC, case folding and quote/dash folding, punctuation ignored; an ellipsis
       (``...``, ``…``, ``[...]``) separates fragments that must occur in order. The span runs from the first
       word of the first fragment to the last word of the last one.
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
    if norm_needle:
        j = norm_text.find(norm_needle)
        if j >= 0:
            return index[j], index[j + len(norm_needle) - 1] + 1
    return _word_span(text, needle)


def evidence_in_text(evidence: str, text: str) -> bool:
    """Whether ``evidence`` occurs in ``text`` by the rule of ``find_evidence_span``."""
    return find_evidence_span(text, evidence) is not None


_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"}
)
_ELLIPSIS = re.compile(r"\.\.\.|\u2026|\[\s*\.\.\.\s*\]")
_WORD = re.compile(r"\w+")


def _words(text: str) -> list[tuple[str, int, int]]:
    """(normalised word, start, end) of each word of ``text``; a run that normalises into several words keeps
    the run's span for each."""
    out: list[tuple[str, int, int]] = []
    for m in _WORD.finditer(text):
        norm = unicodedata.normalize("NFKC", m.group()).translate(_QUOTES).casefold()
        out.extend((w, m.start(), m.end()) for w in _WORD.findall(norm))
    return out


def _word_span(text: str, evidence: str) -> Span | None:
    words = _words(text)
    hay = [w for w, _, _ in words]
    fragments = [[w for w, _, _ in _words(f)] for f in _ELLIPSIS.split(evidence)]
    fragments = [f for f in fragments if f]
    if not fragments:
        return None
    pos, first = 0, -1
    for frag in fragments:
        found = _find_sublist(hay, frag, pos)
        if found < 0:
            return None
        first = found if first < 0 else first
        pos = found + len(frag)
    return words[first][1], words[pos - 1][2]


def _find_sublist(hay: Sequence[str], needle: Sequence[str], start: int) -> int:
    n = len(needle)
    for i in range(start, len(hay) - n + 1):
        if hay[i] == needle[0] and list(hay[i : i + n]) == list(needle):
            return i
    return -1


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
    return new_linear_head(hidden_size, device)


def load_evidence_head(
    path: str | os.PathLike[str], hidden_size: int, device: str | torch.device | None = None
) -> torch.nn.Linear:
    """Read an evidence head (``reason2rank.heads``) as an fp32 Linear in eval mode."""
    try:
        return load_linear_head(path, hidden_size, device, what="evidence head")
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e}; train one with the distillation trainer or leave evidence_head unset"
        ) from None


def save_evidence_head(layer: torch.nn.Linear, path: str | os.PathLike[str]) -> Path:
    """Write the evidence head as safetensors (``reason2rank.heads``)."""
    return save_linear_head(layer, path)
