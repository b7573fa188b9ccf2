"""The images a Haystack ``Document`` carries, read the way Haystack's own image components read them.

In order of preference: the ``ImageContent`` given for it (``R2RRanker.run(image_contents=...)``, aligned with the
documents, e.g. from ``DocumentToImageContent``), its ``blob`` (a ``ByteStream`` of an image), or
``meta["file_path"]`` naming an image file (relative paths resolve against ``image_root``, and a path that leaves
``image_root`` is refused, as ``DocumentToImageContent`` guards against path traversal); a PDF ``file_path`` is read
at ``meta["page_number"]`` (1-based; page 1 without one), rendered with pypdfium2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from haystack import Document

from reason2rank.media import ImageRef, MediaError, as_image_ref, check_under_root

__all__ = ["IMAGE_SUFFIXES", "document_images"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def document_images(
    doc: Document, image_content: Any = None, image_root: str | None = None
) -> tuple[ImageRef, ...]:
    """The images of ``doc`` (see the module docstring); ``()`` when it has none."""
    what = f"Document {doc.id!r}"
    if image_content is not None:
        return (as_image_ref(image_content, what),)
    blob = doc.blob
    if blob is not None and (blob.mime_type or "image/").startswith("image/"):
        return (ImageRef(data=bytes(blob.data), name=(blob.meta or {}).get("file_name")),)
    path = doc.meta.get("file_path") if doc.meta else None
    if not path:
        return ()
    p = Path(str(path)).expanduser()
    pdf = p.suffix.lower() == ".pdf"
    if not pdf and p.suffix.lower() not in IMAGE_SUFFIXES:
        return ()  # a text file the document was converted from: nothing to look at
    if not p.is_absolute() and image_root is not None:
        p = Path(image_root) / p
    resolved = check_under_root(p, image_root, what)
    if not resolved.is_file():
        raise MediaError(f"{what}: meta['file_path'] {str(path)!r} does not exist ({resolved})")
    if not pdf:
        return (ImageRef(path=str(resolved)),)
    page = doc.meta.get("page_number") or 1
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise MediaError(f"{what}: meta['page_number'] must be a 1-based int, got {page!r}")
    return (ImageRef(path=str(resolved), page=page),)
