"""Where a teacher's candidates come from.

- a PyTerrier-style result frame (``qid``, ``query``, ``docno``, text column; ordered by ``rank`` or
  ``score`` when present) — ``candidates_from_frame``;
- a TREC run + docs JSONL (+ topics), rank_llm JSON candidates, or an ir_datasets id with a first-stage
  run — ``load_teacher_inputs``, which delegates to ``reason2rank.data.load_candidates``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from typing import Any

from reason2rank.types import Doc, Query, clean_text


def candidates_from_frame(
    frame: Any, text_field: str = "text", title_field: str | None = None, depth: int | None = None
) -> list[tuple[Query, list[Doc]]]:
    """Group a result frame by ``qid`` (first-appearance order) into (Query, docs); docs ordered by
    ``rank`` (ascending) when the column exists, else ``score`` (descending), else as given."""
    for col in ("qid", "query", "docno", text_field):
        if col not in frame.columns:
            raise ValueError(f"the frame needs a {col!r} column (has {list(frame.columns)})")
    if "rank" in frame.columns:
        order_col, ascending = "rank", True
    elif "score" in frame.columns:
        order_col, ascending = "score", False
    else:
        order_col, ascending = None, True
    items: list[tuple[Query, list[Doc]]] = []
    missing: list[str] = []
    for qid, group in frame.groupby("qid", sort=False):
        if order_col is not None:
            group = group.sort_values(order_col, ascending=ascending, kind="stable")
        query = Query(id=str(qid), text=str(group["query"].iloc[0]))
        titles = list(group[title_field]) if title_field else [None] * len(group)
        docs = []
        for docno, value, title in zip(group["docno"], group[text_field], titles):
            text, was_missing = clean_text(value)
            if was_missing:
                missing.append(f"{qid}/{docno}")
            title = (clean_text(title)[0] or None) if title_field else None
            docs.append(Doc(id=str(docno), text=text, title=title))
        items.append((query, docs[:depth] if depth else docs))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        warnings.warn(
            f"{len(missing)} document(s) had no text (None/NaN) and are shown as empty: {shown}", stacklevel=2
        )
    return items


def load_teacher_inputs(
    *,
    candidates: str | None = None,
    run: str | None = None,
    topics: str | None = None,
    docs: str | None = None,
    depth: int | None = None,
    max_queries: int | None = None,
) -> list[tuple[Query, list[Doc]]]:
    """rank_llm ``candidates``, or ``run`` + ``topics`` + ``docs`` (files or ir_datasets ids), see
    ``reason2rank.data.load_candidates``."""
    from reason2rank.data import load_candidates

    items = load_candidates(candidates, topics=topics, run=run, docs=docs, depth=depth)
    return items[:max_queries] if max_queries else items


def load_qrels(source: str) -> Mapping[str, Mapping[str, int]]:
    """A qrels file, or the qrels of an ir_datasets id."""
    from reason2rank.data import load_ir_dataset, read_qrels

    if os.path.exists(source):
        return read_qrels(source)
    looks_like_path = (
        source.startswith((".", "/", "~")) or os.path.splitext(source)[1] != "" or "/" not in source
    )
    if looks_like_path:
        raise FileNotFoundError(f"qrels file {source!r} does not exist")
    return load_ir_dataset(source).qrels
