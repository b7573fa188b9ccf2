"""The one rule that tells a file-system path from an id (a Hugging Face hub id or an ir_datasets id).

Every argument that takes "a path or an id" (``reason2rank.load``, ``--run``/``--topics``/``--docs``/``--qrels``,
``student.model`` in a training config) is read with this rule:

1. something that exists on disk is a path;
2. otherwise it is a path when it *reads* like one: it starts with ``.``, ``/`` or ``~``, is absolute, contains
   a backslash, a space or an empty component (``a//b``), has no ``/`` at all, ends in a known file suffix
   (``.trec``, ``.jsonl``, ``.tsv``, ...), or its first component is an existing directory;
3. anything else is an id: ``owner/name`` for the hub (exactly one ``/``), ``dataset/part[/...]`` for ir_datasets.

A path that reads like one but does not exist is reported as a missing file, never sent to a hub.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

__all__ = ["FILE_SUFFIXES", "is_hub_id", "location_kind"]

#: suffixes that mark a string as a file name rather than an id
FILE_SUFFIXES = frozenset(
    {".trec", ".run", ".txt", ".tsv", ".json", ".jsonl", ".gz", ".qrels", ".xml", ".csv", ".yaml", ".yml",
     ".parquet", ".safetensors", ".bin"}
)  # fmt: skip


def location_kind(value: str | os.PathLike[str]) -> Literal["path", "id"]:
    """``"path"`` or ``"id"`` for ``value``, by the rule in the module docstring."""
    if not isinstance(value, str):
        return "path"
    if os.path.exists(value):
        return "path"
    path = Path(value)
    reads_as_path = (
        value.startswith((".", "/", "~"))
        or os.path.isabs(value)
        or "\\" in value
        or " " in value
        or "/" not in value
        or any(not part for part in value.split("/"))
        or path.suffix.lower() in FILE_SUFFIXES
        or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())
    )
    return "path" if reads_as_path else "id"


def is_hub_id(value: str | os.PathLike[str]) -> bool:
    """Whether ``value`` is read as a Hugging Face hub id (``owner/name``) rather than a local path."""
    return location_kind(value) == "id" and str(value).count("/") == 1
