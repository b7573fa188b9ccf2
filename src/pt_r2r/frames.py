"""Result frame ⇄ core types: the one grouping both PyTerrier transformers use."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from reason2rank.types import Doc, Query


def optional_text(value: Any) -> str | None:
    """A cell as text: None/NA/NaN become ``None``, anything else ``str``."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value if isinstance(value, str) else str(value)


def frame_to_items(
    inp: pd.DataFrame,
    text_field: str,
    title_field: str | None = None,
    *,
    dedupe: bool = False,
    image_field: str | None = None,
) -> tuple[list[tuple[Query, list[Doc]]], list[tuple[int, int]]]:
    """Group rows by qid (first-appearance order) into (Query, docs).

    Returns the items and, per input row, ``(group, position in that group's docs)``. With ``dedupe`` a
    repeated (qid, docno) row maps to the first one instead of adding a doc (otherwise the core reports the
    duplicate). A missing text cell (None/NaN) becomes a document without text, which the core ranks last
    (one warning). ``image_field`` names a column of images (a path, bytes, a PIL image, or a list of them; None/NaN
    for none) that vision-language families read; ``text_field`` may then be ``None`` (pages without text).
    """
    qids = inp["qid"].tolist()
    queries = inp["query"].tolist()
    docnos = inp["docno"].tolist()
    texts = inp[text_field].tolist() if text_field else [None] * len(inp)
    images = inp[image_field].tolist() if image_field else None
    titles = inp[title_field].tolist() if title_field else None
    groups: dict[Any, int] = {}
    items: list[tuple[Query, list[Doc]]] = []
    seen: list[dict[str, int]] = []
    rows: list[tuple[int, int]] = []
    for i, qid in enumerate(qids):
        g = groups.get(qid)
        if g is None:
            g = groups[qid] = len(items)
            items.append((Query(id=str(qid), text=queries[i]), []))
            seen.append({})
        docno = str(docnos[i])
        if dedupe and docno in seen[g]:
            rows.append((g, seen[g][docno]))
            continue
        text = optional_text(texts[i])
        title = optional_text(titles[i]) if titles is not None else None
        seen[g].setdefault(docno, len(items[g][1]))
        rows.append((g, len(items[g][1])))
        pics = _images(images[i]) if images is not None else ()
        items[g][1].append(Doc(id=docno, text=text, title=title, images=pics))
    return items, rows


def _images(cell: Any) -> tuple[Any, ...]:
    """The images of one cell: none for None/NA/NaN, a list/tuple/array as is, anything else as one image."""
    if cell is None or cell is pd.NA or (isinstance(cell, float) and math.isnan(cell)):
        return ()
    if isinstance(cell, (list, tuple)):
        return tuple(cell)
    if hasattr(cell, "tolist") and not hasattr(cell, "mode"):  # a numpy array of paths (from Parquet)
        return tuple(cell.tolist())
    return (cell,)
