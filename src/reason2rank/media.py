"""Images a document carries (page images, figures): referenced by path, bytes or a PIL image, loaded lazily.

A ``Doc`` holds ``ImageRef`` objects (``Doc(images=[...])`` converts paths, bytes and PIL images to them); nothing is
read until a vision-language model needs the pixels. ``ImageRef.load(root=..., what=...)`` then checks what it was
given and raises ``MediaError`` naming the document when

- the path does not exist, is not a file, or lies outside the allowed ``root`` (a path that climbs out of it with
  ``..`` or a symlink is refused, as Haystack's ``DocumentToImageContent`` warns of path traversal);
- the bytes (of a file or given directly) are not an image Pillow can decode.

A PDF (a ``.pdf`` path or bytes starting ``%PDF``) is rendered page by page with pypdfium2 (``pip install
'reason2rank[vision]'``): ``ImageRef(path="paper.pdf", page=3)`` is its third page (1-based, as Haystack's
``page_number``), rendered at ``PDF_DPI``.

``PixelBudget(min_pixels, max_pixels)`` bounds what an image costs: the image processor resizes every image so its
area lies in that range (Qwen2-VL: one visual token per 28x28 pixels).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ImageRef",
    "MediaError",
    "PixelBudget",
    "as_image_ref",
    "check_under_root",
    "is_table",
    "table_text",
]


class MediaError(ValueError):
    """An image of a document that cannot be used (missing, outside the allowed root, not an image)."""


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - pillow comes with the vision extra (and transformers' deps)
        raise ImportError("reading document images needs Pillow: pip install 'reason2rank[vision]'") from e
    return Image


def check_under_root(path: Path, root: str | os.PathLike[str] | None, what: str) -> Path:
    """``path`` resolved (symlinks followed); a ``MediaError`` when it lies outside ``root`` (when one is given)."""
    resolved = path.expanduser().resolve()
    if root is None:
        return resolved
    base = Path(root).expanduser().resolve()
    if resolved != base and base not in resolved.parents:
        raise MediaError(
            f"{what}: image path {str(path)!r} resolves to {resolved}, outside the allowed root {base}; keep "
            "images under the root (image_root=...) or widen it"
        )
    return resolved


@dataclass(frozen=True, eq=False)
class ImageRef:
    """One image, by ``path`` (relative paths resolve against the loader's root), raw ``data`` bytes, or an in-memory
    ``image`` (PIL). ``name`` labels it in evidence and errors (the file name by default)."""

    path: str | None = None
    data: bytes | None = None
    image: Any = None
    name: str | None = None
    page: int | None = None  # the 1-based page of a PDF

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.path, self.data, self.image))
        if given != 1:
            raise MediaError("an ImageRef needs exactly one of path=, data= or image=")
        if self.page is not None and (
            isinstance(self.page, bool) or not isinstance(self.page, int) or self.page < 1
        ):
            raise MediaError(f"an ImageRef's page is a 1-based PDF page number, got {self.page!r}")

    @property
    def label(self) -> str:
        """A short name for messages and evidence: ``name``, else the file name, else "image"."""
        if self.name:
            return self.name
        base = Path(self.path).name if self.path else "image"
        return f"{base} p.{self.page}" if self.page else base

    def resolve(self, root: str | os.PathLike[str] | None = None, what: str = "document") -> Path:
        """The file this image is read from (``path`` joined to ``root`` when relative), checked to be under ``root``."""
        assert self.path is not None
        p = Path(self.path).expanduser()
        if not p.is_absolute() and root is not None:
            p = Path(root) / p
        resolved = check_under_root(p, root, what)
        if not resolved.is_file():
            raise MediaError(f"{what}: image file {str(self.path)!r} does not exist ({resolved})")
        return resolved

    def raw(self, root: str | os.PathLike[str] | None = None, what: str = "document") -> bytes | None:
        """The encoded bytes (of the file or given), or ``None`` for an in-memory image."""
        if self.data is not None:
            return bytes(self.data)
        if self.path is not None:
            return self.resolve(root, what).read_bytes()
        return None

    def load(self, root: str | os.PathLike[str] | None = None, what: str = "document") -> Any:
        """The image as an RGB PIL image (see the module docstring for the errors)."""
        image_mod = _pil()
        if self.image is not None:
            if not isinstance(self.image, image_mod.Image):
                raise MediaError(
                    f"{what}: image {self.label!r} is a {type(self.image).__name__}, not a PIL image; give a path, "
                    "bytes or a PIL.Image.Image"
                )
            img = self.image
        else:
            raw = self.raw(root, what) or b""
            if raw[:5] == b"%PDF-":
                return _pdf_page(raw, self.page or 1, f"{what}: image {self.label!r}")
            try:
                img = image_mod.open(io.BytesIO(raw))
                img.load()
            except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
                head = raw[:16] if raw else b""
                raise MediaError(
                    f"{what}: image {self.label!r} is not an image Pillow can read ({type(e).__name__}: {e}; "
                    f"first bytes {head!r}); give PNG, JPEG or another raster image"
                ) from None
        return img if img.mode == "RGB" else img.convert("RGB")

    def digest(self, root: str | os.PathLike[str] | None = None) -> str:
        """sha256 of the image's bytes (of its pixels for an in-memory image): equal images, equal digests."""
        raw = None
        if self.image is None:
            try:
                raw = self.raw(root)
            except MediaError:
                raw = str(self.path).encode("utf-8")
        if raw is None:
            img = self.image
            raw = f"{img.mode}:{img.size}".encode() + img.tobytes()
        if self.page is not None:
            raw += f"#page={self.page}".encode()
        return hashlib.sha256(raw).hexdigest()

    def __str__(self) -> str:  # cache keys (``json.dumps(default=str)``) see the content, not the object
        return f"image:{self.digest()}"

    def __repr__(self) -> str:
        if self.path is not None:
            return f"ImageRef(path={self.path!r}" + (f", page={self.page})" if self.page else ")")
        if self.data is not None:
            return f"ImageRef(data=<{len(self.data)} bytes>)"
        return f"ImageRef(image=<{type(self.image).__name__}>)"


#: the resolution PDF pages are rendered at (Haystack's PDF converters default to 150 DPI too)
PDF_DPI = 150


def _pdf_page(raw: bytes, page: int, what: str) -> Any:
    """Page ``page`` (1-based) of a PDF as an RGB PIL image."""
    try:
        import pypdfium2 as pdfium
    except ImportError:
        raise MediaError(
            f"{what} is a PDF; rendering its pages needs pypdfium2: pip install 'reason2rank[vision]'"
        ) from None
    try:
        pdf = pdfium.PdfDocument(raw)
    except Exception as e:
        raise MediaError(f"{what} is not a PDF pypdfium2 can read ({type(e).__name__}: {e})") from None
    try:
        if not 1 <= page <= len(pdf):
            raise MediaError(f"{what}: the PDF has {len(pdf)} page(s), there is no page {page}")
        img = pdf[page - 1].render(scale=PDF_DPI / 72).to_pil()
    finally:
        pdf.close()
    return img if img.mode == "RGB" else img.convert("RGB")


def as_image_ref(value: Any, what: str = "document") -> ImageRef:
    """An ``ImageRef`` from a path (str or ``os.PathLike``), bytes, a PIL image, an ``ImageRef``, or a Haystack
    ``ByteStream``/``ImageContent``-like object (``.data`` bytes / ``.base64_image``)."""
    if isinstance(value, ImageRef):
        return value
    if isinstance(value, (str, os.PathLike)):
        if not str(value).strip():
            raise MediaError(f"{what}: an image path is empty")
        return ImageRef(path=str(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ImageRef(data=bytes(value))
    b64 = getattr(value, "base64_image", None)
    if isinstance(b64, str):
        import base64

        return ImageRef(data=base64.b64decode(b64))
    data = getattr(value, "data", None)
    if isinstance(data, (bytes, bytearray)):
        meta = getattr(value, "meta", None) or {}
        return ImageRef(data=bytes(data), name=meta.get("file_name") if isinstance(meta, dict) else None)
    if hasattr(value, "tobytes") and hasattr(value, "mode") and hasattr(value, "size"):
        return ImageRef(image=value)
    raise MediaError(
        f"{what}: cannot use a {type(value).__name__} as an image; give a file path, bytes, a PIL image or an ImageRef"
    )


@dataclass(frozen=True)
class PixelBudget:
    """The range of pixels (area) every image is resized into before the model sees it."""

    min_pixels: int = 28 * 28 * 4
    max_pixels: int = 28 * 28 * 1024

    def __post_init__(self) -> None:
        for key in ("min_pixels", "max_pixels"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{key} must be a positive int (pixels), got {v!r}")
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) must not exceed max_pixels ({self.max_pixels})")


def is_table(value: Any) -> bool:
    """Whether ``value`` is a table part of an interleaved document: ``{"table": rows}`` (rows of cells, the first
    the header unless ``"header"`` is given) or a pandas DataFrame."""
    return (isinstance(value, Mapping) and "table" in value) or (
        hasattr(value, "columns") and hasattr(value, "itertuples")
    )


def table_text(value: Any, what: str) -> str:
    """A table part as Markdown (``| a | b |`` rows under a ``|---|`` rule), the text a model reads in its place."""
    if isinstance(value, Mapping):
        rows = value["table"]
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
            raise MediaError(f"{what}: a table part's 'table' must be a non-empty list of rows, got {rows!r}")
        rows = [
            list(r) if isinstance(r, Sequence) and not isinstance(r, (str, bytes)) else None for r in rows
        ]
        if any(r is None for r in rows):
            raise MediaError(f"{what}: every row of a table part must be a list of cells")
        header = list(value["header"]) if value.get("header") is not None else rows.pop(0)
    else:  # a DataFrame
        header = [str(c) for c in value.columns]
        rows = [list(r) for r in value.itertuples(index=False)]
    if any(len(r) != len(header) for r in rows):
        raise MediaError(
            f"{what}: a table part's rows must have as many cells as its header ({len(header)}): "
            f"{[len(r) for r in rows]}"
        )

    def cell(x: Any) -> str:
        return " ".join(str("" if x is None else x).split()).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
