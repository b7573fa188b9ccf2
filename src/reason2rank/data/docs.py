"""Documents: JSONL corpora (BEIR ``{"_id", "title", "text"}``, Pyserini ``{"id", "contents"}``, ...) and
lookups docid -> ``Doc`` over a mapping, a ``get_many`` docstore or a callable."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reason2rank.data.io import PathLike, file_error, iter_json_objects
from reason2rank.types import Doc, clean_text, text_or_none

__all__ = ["doc_from_record", "lookup_docs", "read_docs_jsonl"]

_DOC_ID_KEYS = ("_id", "docid", "docno", "id", "doc_id")
_DOC_TEXT_KEYS = ("text", "contents", "body", "content")


def read_docs_jsonl(path: PathLike) -> dict[str, Doc]:
    """Read a JSONL corpus into docid -> ``Doc``.

    The id comes from the first of ``_id``, ``docid``, ``docno``, ``id``, ``doc_id``; the text from the first
    of ``text``, ``contents``, ``body``, ``content`` (a null text is read as ``None``: a document without text); ``title`` is optional;
    ``image``/``images`` (paths) become ``Doc.images``; every other key goes into ``Doc.meta``. A duplicate id raises ``ValueError``.
    """
    docs: dict[str, Doc] = {}
    lines: dict[str, int] = {}
    for lineno, record in iter_json_objects(path):
        try:
            doc = doc_from_record(record, base=Path(path).parent)
        except ValueError as e:
            raise file_error(path, lineno, str(e)) from None
        if doc.id in docs:
            raise file_error(path, lineno, f"document id {doc.id!r} already used on line {lines[doc.id]}")
        docs[doc.id] = doc
        lines[doc.id] = lineno
    return docs


def doc_from_record(record: Mapping[str, Any], base: Path | None = None) -> Doc:
    """A ``Doc`` from one JSONL record (id, text and title keys as ``read_docs_jsonl`` describes; the rest is meta);
    relative image paths resolve against ``base`` (the corpus file's directory)."""
    id_key = next((k for k in _DOC_ID_KEYS if record.get(k) is not None), None)
    if id_key is None:
        raise ValueError(f"no document id (one of {', '.join(_DOC_ID_KEYS)}); keys were {sorted(record)}")
    text_key = next((k for k in _DOC_TEXT_KEYS if k in record), None)
    if text_key is None and record.get("title") is None:
        raise ValueError(f"no document text (one of {', '.join(_DOC_TEXT_KEYS)}); keys were {sorted(record)}")
    text = text_or_none(record[text_key]) if text_key else None
    title = record.get("title")
    title = clean_text(title)[0] if title is not None else None
    images = record.get("images") or ([record["image"]] if record.get("image") else [])
    if isinstance(images, str):
        images = [images]
    if base is not None:
        images = [str(base / p) if isinstance(p, str) and not Path(p).is_absolute() else p for p in images]
    meta = {k: v for k, v in record.items() if k not in (id_key, text_key, "title", "image", "images")}
    return Doc(id=str(record[id_key]), text=text, title=title, meta=meta, images=tuple(images))


def lookup_docs(docs: Any, ids: list[str]) -> dict[str, Doc]:
    """docid -> ``Doc`` for the ``ids`` found in ``docs`` (a mapping, a ``get_many`` docstore or a callable)."""
    found: dict[str, Any] = {}
    if isinstance(docs, Mapping):
        found = {docid: docs[docid] for docid in ids if docid in docs}
    elif hasattr(docs, "get_many"):
        found = dict(docs.get_many(ids))
    elif callable(docs):
        for docid in ids:
            try:
                doc = docs(docid)
            except KeyError:
                doc = None
            if doc is not None:
                found[docid] = doc
    else:
        raise TypeError(f"docs must be a mapping docid -> Doc or a callable, got {type(docs).__name__}")
    result = {}
    for docid, doc in found.items():
        if isinstance(doc, Doc):
            result[docid] = doc
        elif doc is not None:
            result[docid] = Doc(id=docid, text=text_or_none(doc))
    return result
