"""``TextLoader``: add document text (and optionally titles) to a result frame by docno.

First-stage retrievers such as pyterrier-pisa return ``qid, query, docno, score, rank`` and no text; a
reranker needs the text. The loader looks the docnos up in one of:

* a dict ``docno -> text`` (or ``docno -> reason2rank.Doc``);
* a DataFrame with a docno column and a text column (and a title column when ``title_field`` is set);
* a JSONL corpus file (read with ``reason2rank.data.read_docs_jsonl`` on first use);
* an ir_datasets docstore (anything with ``get_many(ids) -> {id: namedtuple}``), an ir_datasets dataset
  (``docs_store()``) or a PyTerrier ir_datasets dataset (``irds_ref()``).

Usage::

    pipeline = bm25 % 100 >> pt_r2r.TextLoader("corpus.jsonl") >> pt_r2r.R2RReranker("my-model")
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyterrier as pt

from reason2rank.types import Doc

__all__ = ["MissingDocumentsError", "TextLoader", "text"]

_MAX_LISTED = 5


class MissingDocumentsError(ValueError, KeyError):
    """Docnos that the text source does not have. A ``ValueError`` that ``except KeyError`` also catches."""

    def __init__(self, message: str, missing: Sequence[str]) -> None:
        super().__init__(message)
        self.missing = list(missing)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


class TextLoader(pt.Transformer):
    """Adds a ``text_field`` column (and a ``title_field`` column when set) looked up by docno.

    Args:
        source: dict ``docno -> text | reason2rank.Doc``; a DataFrame with ``docno_field`` and ``text_field``
            columns (and ``title_field``); a path to a JSONL corpus; or an ir_datasets docstore / dataset.
        text_field: the column to write the text to (and, for a DataFrame source, to read it from).
        title_field: when set, also write titles to this column (``None`` where a document has none).
        docno_field: the column holding the document ids, in the input frame and in a DataFrame source.
        verbose: show a progress bar while looking documents up.

    Every input column is kept; an existing ``text_field`` column is replaced. A docno the source does not
    have raises ``MissingDocumentsError`` (a ``ValueError``) listing up to 5 of the missing ids.
    """

    # help_url set so that pt.schematic does not fetch pyterrier's objects.inv from readthedocs to look one up
    schematic = {"label": "TextLoader", "help_url": None}

    def __init__(
        self,
        source: Any,
        text_field: str = "text",
        title_field: str | None = None,
        docno_field: str = "docno",
        verbose: bool = False,
    ) -> None:
        self.source = source
        self.text_field = text_field
        self.title_field = title_field
        self.docno_field = docno_field
        self.verbose = verbose
        self._table: Mapping[Any, Any] | None = None  # docno -> str | Doc | (text, title)
        self._docstore: Any = None
        self._path: Path | None = None
        self._kind = self._classify(source)

    # -- sources ------------------------------------------------------------------------------------
    def _classify(self, source: Any) -> str:
        if isinstance(source, pd.DataFrame):
            self._table = self._table_from_frame(source)
            return "frame"
        if isinstance(source, Mapping):
            self._table = source
            return "dict"
        if isinstance(source, (str, os.PathLike)):
            path = Path(source).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"TextLoader: no corpus file at {path.resolve()}; pass a JSONL corpus path, a dict docno->text, "
                    "a DataFrame with docno and text columns, or an ir_datasets docstore"
                )
            self._path = path
            return "jsonl"
        if callable(getattr(source, "get_many", None)):
            self._docstore = source
            return "docstore"
        if callable(getattr(source, "docs_store", None)) or callable(getattr(source, "irds_ref", None)):
            return "dataset"  # the docstore is opened on first use
        raise TypeError(
            f"TextLoader cannot read documents from a {type(source).__name__}; pass a dict docno->text, a DataFrame "
            f"with {self.docno_field!r} and {self.text_field!r} columns, a JSONL corpus path, or an ir_datasets "
            "docstore (anything with get_many(ids))"
        )

    def _table_from_frame(self, frame: pd.DataFrame) -> dict[Any, tuple[Any, Any]]:
        needed = [self.docno_field, self.text_field] + ([self.title_field] if self.title_field else [])
        absent = [c for c in needed if c not in frame.columns]
        if absent:
            raise ValueError(
                f"TextLoader: the source DataFrame has no {', '.join(map(repr, absent))} column(s); it has "
                f"{list(frame.columns)} (set docno_field=/text_field=/title_field= to match)"
            )
        docnos = frame[self.docno_field].tolist()
        texts = frame[self.text_field].tolist()
        titles = frame[self.title_field].tolist() if self.title_field else [None] * len(docnos)
        table = dict(zip(docnos, zip(texts, titles)))
        if len(table) != len(docnos):
            dups = frame[self.docno_field][frame[self.docno_field].duplicated()].unique().tolist()
            shown = ", ".join(map(repr, dups[:_MAX_LISTED])) + (" ..." if len(dups) > _MAX_LISTED else "")
            raise ValueError(
                f"TextLoader: the source DataFrame has duplicate {self.docno_field!r} values: {shown}"
            )
        return table

    def _open(self) -> None:
        if self._kind == "jsonl" and self._table is None:
            from reason2rank.data import read_docs_jsonl

            self._table = read_docs_jsonl(self._path)
        elif self._kind == "dataset" and self._docstore is None:
            ds = self.source.irds_ref() if callable(getattr(self.source, "irds_ref", None)) else self.source
            self._docstore = ds.docs_store()

    # -- value extraction -----------------------------------------------------------------------------
    def _from_value(self, value: Any) -> tuple[Any, Any]:
        if isinstance(value, Doc):
            return value.text, value.title
        if isinstance(value, tuple) and self._kind == "frame":
            text, title = value  # pandas 3 reads None in a str column back as NaN: give None again
            return (None if _is_missing(text) else text), (None if _is_missing(title) else title)
        if isinstance(value, str):
            return value, None
        if _is_missing(value):
            return None, None
        raise TypeError(
            f"TextLoader: dict values must be str or reason2rank.Doc, got {type(value).__name__} ({value!r:.80})"
        )

    def _from_record(self, record: Any) -> tuple[Any, Any]:
        """Text and title of an ir_datasets namedtuple."""
        text = None
        for name in dict.fromkeys((self.text_field, "text")):
            if hasattr(record, name):
                text = getattr(record, name)
                break
        else:
            default_text = getattr(record, "default_text", None)
            if callable(default_text):
                text = default_text()
            else:
                fields = getattr(record, "_fields", ())
                raise ValueError(
                    f"TextLoader: docstore records have no {' or '.join(map(repr, dict.fromkeys((self.text_field, 'text'))))} "
                    f"field (fields: {list(fields)}); "
                    "pass text_field= naming the field to use"
                )
        title = None
        if self.title_field:
            for name in dict.fromkeys((self.title_field, "title")):
                if hasattr(record, name):
                    title = getattr(record, name)
                    break
        return text, title

    def _lookup(self, docnos: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """Texts and titles aligned with ``docnos``; raises MissingDocumentsError listing unknown ids."""
        self._open()
        texts: list[Any] = []
        titles: list[Any] = []
        missing: dict[str, None] = {}
        if self._table is not None:
            table = self._table
            it = pt.tqdm(docnos, desc="TextLoader", unit="d") if self.verbose else docnos
            for d in it:
                value = table.get(d, _ABSENT)
                if value is _ABSENT and not isinstance(d, str):
                    value = table.get(str(d), _ABSENT)
                if value is _ABSENT:
                    missing[str(d)] = None
                    texts.append(None)
                    titles.append(None)
                    continue
                text, title = self._from_value(value)
                texts.append(text)
                titles.append(title)
        else:
            unique = list(dict.fromkeys(str(d) for d in docnos))
            if self.verbose:
                found: dict[str, Any] = {}
                for start in pt.tqdm(range(0, len(unique), 1000), desc="TextLoader", unit="batch"):
                    found.update(self._docstore.get_many(unique[start : start + 1000]))
            else:
                found = dict(self._docstore.get_many(unique))
            extracted = {k: self._from_record(v) for k, v in found.items()}
            for d in docnos:
                pair = extracted.get(str(d))
                if pair is None:
                    missing[str(d)] = None
                    pair = (None, None)
                texts.append(pair[0])
                titles.append(pair[1])
        if missing:
            ids = list(missing)
            shown = ", ".join(map(repr, ids[:_MAX_LISTED])) + (
                f" ... ({len(ids)} in all)" if len(ids) > _MAX_LISTED else ""
            )
            raise MissingDocumentsError(
                f"TextLoader: {len(ids)} {self.docno_field}(s) not found in {self._describe_source()}: {shown}",
                ids,
            )
        return texts, titles

    # -- the transformer --------------------------------------------------------------------------------
    def transform_inputs(self) -> list[list[str]]:
        """What ``pt.inspect`` is told it takes: a result frame, the frame it gets in a reranking pipeline (so
        ``bm25 >> TextLoader(...) >> R2RReranker(...)`` inspects and composes). At run time any frame with a docno
        column works."""
        return [["qid", "query", self.docno_field]]

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        """``inp`` with the text (and title) column looked up by docno."""
        pt.validate.columns(inp, includes=[self.docno_field])
        out = inp.copy()
        if len(inp) == 0:
            out[self.text_field] = pd.Series(index=out.index, dtype=object)
            if self.title_field:
                out[self.title_field] = pd.Series(index=out.index, dtype=object)
            return out
        texts, titles = self._lookup(inp[self.docno_field].tolist())
        # object dtype keeps None as None (pandas 3 would turn it into NaN in a str column)
        out[self.text_field] = pd.Series(texts, index=out.index, dtype=object)
        if self.title_field:
            out[self.title_field] = pd.Series(titles, index=out.index, dtype=object)
        return out

    def fuse_rank_cutoff(self, k: int) -> pt.Transformer:
        """``loader % k`` is ``(% k) >> loader``: only the documents kept are looked up."""
        return pt.RankCutoff(k) >> self

    def _describe_source(self) -> str:
        if self._kind == "jsonl":
            return repr(str(self._path))
        if self._kind in ("dict", "frame"):
            what = "dict" if self._kind == "dict" else "DataFrame"
            return f"<{what} of {len(self._table)} docs>"
        return f"<{type(self.source).__name__}>"

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={value!r}"
            for name, value, default in (
                ("text_field", self.text_field, "text"),
                ("title_field", self.title_field, None),
                ("docno_field", self.docno_field, "docno"),
            )
            if value != default
        )
        return f"TextLoader({self._describe_source()}{extra})"


_ABSENT = object()


def text(
    source: Any,
    text_field: str = "text",
    title_field: str | None = None,
    docno_field: str = "docno",
    verbose: bool = False,
) -> TextLoader:
    """Shorthand for ``TextLoader(source, ...)``: ``bm25 >> pt_r2r.text('corpus.jsonl') >> reranker``."""
    return TextLoader(
        source, text_field=text_field, title_field=title_field, docno_field=docno_field, verbose=verbose
    )
