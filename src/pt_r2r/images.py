"""``ImageLoader``: adds a column of page images (or figures) looked up by docno, for the vision-language families."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyterrier as pt

from pt_r2r.text import MissingDocumentsError

__all__ = ["ImageLoader"]

_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")


class ImageLoader(pt.Transformer):
    """Adds an ``image_field`` column: each document's image path (or paths, or bytes) by docno.

    Args:
        source: a directory holding one image per document, named by ``pattern`` (``"{docno}.png"`` by default;
            with ``pattern=None`` any of .png/.jpg/.jpeg/.webp/... is found), a dict ``docno -> image(s)``
            (paths, bytes, PIL images, or a list of them), or a DataFrame with ``docno_field`` and ``image_field``
            columns.
        image_field: the column to write.
        pattern: the file name of a docno's image in a directory source.
        docno_field: the column holding document ids.

    A docno with no image raises ``MissingDocumentsError`` listing up to 5 of them. A directory source keeps every
    path inside it: a docno that would climb out of it (``../x``) is refused.
    """

    schematic = {"label": "ImageLoader", "help_url": None}

    def __init__(
        self,
        source: Any,
        image_field: str = "image",
        pattern: str | None = "{docno}.png",
        docno_field: str = "docno",
    ) -> None:
        self.source = source
        self.image_field = image_field
        self.pattern = pattern
        self.docno_field = docno_field
        self._root: Path | None = None
        self._table: Mapping[Any, Any] | None = None
        if isinstance(source, pd.DataFrame):
            missing = [c for c in (docno_field, image_field) if c not in source.columns]
            if missing:
                raise ValueError(f"ImageLoader: the DataFrame source has no column(s) {missing}")
            self._table = dict(zip(source[docno_field].astype(str), source[image_field]))
        elif isinstance(source, Mapping):
            self._table = {str(k): v for k, v in source.items()}
        elif isinstance(source, (str, os.PathLike)):
            root = Path(source).expanduser()
            if not root.is_dir():
                raise FileNotFoundError(
                    f"ImageLoader: no image directory at {root.resolve()}; pass a directory of page images, a dict "
                    "docno->image path, or a DataFrame with docno and image columns"
                )
            self._root = root.resolve()
        else:
            raise TypeError(
                f"ImageLoader cannot read images from a {type(source).__name__}; pass a directory, a dict or a DataFrame"
            )

    def _find(self, docno: str) -> Any:
        if self._table is not None:
            return self._table.get(docno)
        assert self._root is not None
        names = [self.pattern.format(docno=docno)] if self.pattern else [docno + ext for ext in _EXTENSIONS]
        for name in names:
            path = (self._root / name).resolve()
            if self._root not in path.parents:
                raise ValueError(
                    f"ImageLoader: docno {docno!r} names {path}, outside the image directory {self._root}"
                )
            if path.is_file():
                return str(path)
        return None

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.columns(inp, includes=[self.docno_field])
        out = inp.copy()
        found = {d: self._find(d) for d in dict.fromkeys(out[self.docno_field].astype(str))}
        missing = [d for d, v in found.items() if v is None]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            where = f"in {self._root}" if self._root is not None else "in the source"
            raise MissingDocumentsError(
                f"ImageLoader: no image {where} for {len(missing)} docno(s): {shown}", missing
            )
        out[self.image_field] = pd.Series(
            [found[d] for d in out[self.docno_field].astype(str)], index=out.index, dtype=object
        )
        return out

    def __repr__(self) -> str:
        return f"ImageLoader({str(self.source) if self._root else type(self.source).__name__!r})"
