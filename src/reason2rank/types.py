"""Core value types shared by every scorer and both adapters.

They are plain frozen dataclasses: the core never mutates what it is given, and adapters convert their
own objects (DataFrame rows, Haystack Documents) to and from these.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Query:
    """A query: an id (free-form string) and its text."""

    id: str
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(
                f"Query {self.id!r} has no text ({self.text!r}); every query needs a non-empty string "
                "text to be reranked against"
            )


@dataclass(frozen=True)
class Doc:
    """A candidate document. ``text`` may be empty, or ``None`` when the document has no text (such documents
    are ranked last, unscored, by text models: see ``reason2rank.reranker``); ``title`` is prepended where the
    model expects it.

    ``images`` (page images, figures) are read by vision-language families only: paths, bytes or PIL images,
    kept as lazily loaded ``reason2rank.media.ImageRef`` objects. ``parts`` is an interleaved document (IDentIfy):
    its texts (str), images and tables (``{"table": rows}`` or a pandas DataFrame, read as Markdown text) in reading
    order; a vision-language family reads them in that order and can pick the part that answers the query.
    """

    id: str
    text: str | None
    title: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)
    images: tuple[Any, ...] = ()
    parts: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.images or self.parts:
            from reason2rank.media import as_image_ref, is_table, table_text

            what = f"document {self.id!r}"
            one = isinstance(self.images, (str, bytes, os.PathLike)) or not isinstance(self.images, Iterable)
            images = (self.images,) if one else tuple(self.images)  # one path, bytes, PIL image or ImageRef
            object.__setattr__(self, "images", tuple(as_image_ref(x, what) for x in images))
            parts = tuple(
                p if isinstance(p, str) else table_text(p, what) if is_table(p) else as_image_ref(p, what)
                for p in self.parts
            )
            object.__setattr__(self, "parts", parts)

    @property
    def has_media(self) -> bool:
        """Whether the document carries images or interleaved parts (something only a vision model reads)."""
        return bool(self.images or self.parts)

    @property
    def full_text(self) -> str:
        """Title and text joined the way the scorers read a document ("" when there is neither)."""
        if self.title:
            return f"{self.title} {self.text}" if self.text else self.title
        return self.text or ""

    @property
    def body(self) -> str:
        """``text``, with ``""`` for a document without text (evidence is always a span of this)."""
        return self.text or ""


def has_text(doc: Doc) -> bool:
    """Whether a model can read something of ``doc``: a text (even an empty string) or a title."""
    return doc.text is not None or bool(doc.title)


def is_readable(doc: Doc, images: bool = False) -> bool:
    """``has_text``, or (for a model that reads ``images``) whether the document has images or parts."""
    return has_text(doc) or (images and doc.has_media)


@dataclass(frozen=True)
class ScoredDoc:
    """A document with its score, its 0-based rank in the query's list and, on request, explanations.

    ``reasoning`` is generated text on how the document addresses the query (causal-LM models only),
    ``comparison`` generated text on why it outranks the next document in the list, and ``evidence`` a
    sentence of the document. Each is ``None`` when not requested or when the model cannot give it — never
    an invented or empty string.
    """

    doc: Doc
    score: float
    rank: int
    reasoning: str | None = None
    evidence: str | None = None
    comparison: str | None = None


def text_or_none(value: Any) -> str | None:
    """``clean_text`` for a document's text: ``None`` when it is missing (None/NaN/NA), else the text."""
    text, missing = clean_text(value)
    return None if missing else text


def clean_text(value: Any) -> tuple[str, bool]:
    """Return (text, was_missing): None and NaN become the empty string; anything else is kept as is.

    Non-UTF-8 bytes are decoded with replacement so nothing is lost silently; mojibake already in a str
    is kept untouched (it is the collection's own text).
    """
    if value is None:
        return "", True
    if isinstance(value, float) and math.isnan(value):
        return "", True
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace"), False
    if not isinstance(value, str):
        try:
            import pandas as pd  # optional; only to recognise pd.NA

            if value is pd.NA:
                return "", True
        except ImportError:
            pass
        return str(value), False
    return value, False
