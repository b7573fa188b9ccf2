"""A page-image corpus from real text: abstracts rendered into PNG pages, some with a figure of plotted numbers.

``render_pages(docs, out_dir, ...)`` lays documents (title + text) out onto pages of ``width`` x ``height``
pixels, ``per_page`` documents a page, wrapping lines with a TrueType font (DejaVu Sans from the system, else
Pillow's built-in font); every ``figure_every``-th page also carries a bar chart of the numbers found in its
documents' text. It writes ``pages/<page_id>.png``, ``pages.jsonl`` (page id, the document ids on it, its rendered
text) and, given qrels, ``qrels.txt`` with a page relevant at the highest grade of any document it holds. Files are
written to temporary names and renamed, so an interrupted run leaves no half-written page.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reason2rank.data.io import atomic_write
from reason2rank.types import Doc

__all__ = ["Page", "page_qrels", "render_pages"]

_FONTS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:/Windows/Fonts/arial.ttf",
)


@dataclass(frozen=True)
class Page:
    """One rendered page: its id, image file, the documents on it and their text as laid out."""

    id: str
    path: str
    doc_ids: tuple[str, ...]
    text: str
    has_figure: bool


def _font(size: int) -> Any:
    from PIL import ImageFont

    for f in _FONTS:
        if os.path.isfile(f):
            return ImageFont.truetype(f, size)
    return ImageFont.load_default(size=size)


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines


def _numbers(text: str, k: int = 6) -> list[float]:
    out = []
    for m in re.finditer(r"(?<![\w.])(\d+(?:\.\d+)?)(?![\w.])", text):
        v = float(m.group(1))
        if 0 < v < 1e6:
            out.append(v)
        if len(out) == k:
            break
    return out


def _bar_chart(draw: Any, box: tuple[int, int, int, int], values: Sequence[float], font: Any) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0), width=2)
    if not values:
        return
    top = max(values)
    bw = (x1 - x0 - 20) / len(values)
    for i, v in enumerate(values):
        h = (y1 - y0 - 40) * (v / top)
        left = x0 + 10 + i * bw
        draw.rectangle((left + 4, y1 - 20 - h, left + bw - 4, y1 - 20), fill=(60, 90, 170))
        draw.text((left + 4, y1 - 18), f"{v:g}", fill=(0, 0, 0), font=font)


def _atomic_write(path: Path, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def render_pages(
    docs: Sequence[Doc],
    out_dir: str | os.PathLike[str],
    *,
    per_page: int = 2,
    width: int = 640,
    height: int = 828,
    font_size: int = 14,
    figure_every: int = 3,
) -> list[Page]:
    """Render ``docs`` onto pages under ``out_dir`` (see the module docstring); returns the pages in order."""
    import io

    from PIL import Image, ImageDraw

    if per_page < 1:
        raise ValueError(f"per_page must be >= 1, got {per_page}")
    out = Path(out_dir)
    (out / "pages").mkdir(parents=True, exist_ok=True)
    font, small, bold = _font(font_size), _font(max(8, font_size - 4)), _font(font_size + 2)
    pages: list[Page] = []
    margin, line_h = 28, int(font_size * 1.35)
    for start in range(0, len(docs), per_page):
        group = docs[start : start + per_page]
        page_id = f"page{len(pages):05d}"
        img = Image.new("RGB", (width, height), "white")
        draw = ImageDraw.Draw(img)
        figure = figure_every > 0 and len(pages) % figure_every == figure_every - 1
        bottom = height - margin - (180 if figure else 0)
        y, texts = margin, []
        for d in group:
            if y + line_h > bottom:
                break
            title = d.title or ""
            if title:
                for line in _wrap(draw, title, bold, width - 2 * margin):
                    if y + line_h > bottom:
                        break
                    draw.text((margin, y), line, fill=(0, 0, 0), font=bold)
                    y += line_h
            shown = []
            for line in _wrap(draw, d.body, font, width - 2 * margin):
                if y + line_h > bottom:
                    break
                draw.text((margin, y), line, fill=(20, 20, 20), font=font)
                shown.append(line)
                y += line_h
            texts.append(" ".join([title, *shown]).strip())
            y += line_h
        if figure:
            values = _numbers(" ".join(d.body for d in group))
            _bar_chart(draw, (margin, height - margin - 170, width - margin, height - margin), values, small)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        path = out / "pages" / f"{page_id}.png"
        _atomic_write(path, buf.getvalue())
        pages.append(Page(page_id, str(path), tuple(d.id for d in group), "\n".join(texts), figure))
    lines = [json.dumps({"page_id": p.id, "file": f"pages/{p.id}.png", "doc_ids": list(p.doc_ids),
                         "text": p.text, "figure": p.has_figure}) + "\n" for p in pages]  # fmt: skip
    _atomic_write(out / "pages.jsonl", "".join(lines).encode("utf-8"))
    return pages


def page_qrels(pages: Sequence[Page], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Qrels per page: a page is relevant to a query at the highest grade of any document it holds."""
    owner = {d: p.id for p in pages for d in p.doc_ids}
    out: dict[str, dict[str, int]] = {}
    for qid, judged in qrels.items():
        for docid, grade in judged.items():
            page = owner.get(docid)
            if page is not None and grade > out.setdefault(qid, {}).get(page, 0):
                out[qid][page] = int(grade)
    return {q: v for q, v in out.items() if v}
