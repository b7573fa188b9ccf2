"""Sentences of a document: the unit evidence is reported in (occlusion, the evidence head)."""

from __future__ import annotations

import re

__all__ = ["sentence_spans", "split_sentences"]

# a sentence ends at . ! ? (optionally followed by quotes/brackets) and whitespace; abbreviations such as
# "e.g." or "Dr." are not special-cased: a slightly short sentence is still a sentence of the document.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n\s*\n")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (whitespace trimmed, empty pieces dropped)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        _add_span(text, start, m.start(), spans)
        start = m.end()
    _add_span(text, start, len(text), spans)
    return spans


def _add_span(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        spans.append((start, end))


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as strings (``sentence_spans`` cut out)."""
    return [text[a:b] for a, b in sentence_spans(text)]
