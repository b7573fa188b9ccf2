"""The annotation store: an append-only JSONL file, one record per line, keyed by ``annotation_key``.

Crash safety: each record is written as one complete line with a single ``write`` on an ``O_APPEND``
descriptor, so a killed process leaves at most one torn final line. Opening the store for writing cuts
such a torn tail off (it is reported, never merged with the next record), and appends always start on a
fresh line. ``fsync`` runs every ``fsync_interval`` seconds and on close (``0`` = after every line): a
killed process loses nothing it wrote; only a machine crash can lose the last interval. An exclusive
``flock`` keeps a second writer out of the same file.

When a key occurs more than once (a failed item re-done with ``retry_failed``), the reader keeps one
record per key: a finished one (``ok``/``inconsistent``) over a failed one, else the latest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: version of the record layout (see ``reason2rank.teacher`` for the fields)
RECORD_SCHEMA = 1
FINISHED = ("ok", "inconsistent")
STATUSES = ("ok", "inconsistent", "failed")


def annotation_key(
    task: str,
    prompt_version: str,
    teacher: str,
    qid: str,
    query: str,
    docids: Sequence[str],
    options: Mapping[str, Any] | None = None,
) -> str:
    """sha256 (first 32 hex digits) of (task, prompt version, teacher model, query id and text, doc ids in
    order[, task options that change the question, e.g. asking both A/B orders])."""
    material: list[Any] = [task, prompt_version, teacher, str(qid), query, [str(d) for d in docids]]
    if options:
        material.append({k: options[k] for k in sorted(options)})
    blob = json.dumps(material, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


@dataclass
class _Entry:
    status: str
    offset: int  # byte offset of the line in the file, -1 for in-memory stores
    length: int
    record: dict[str, Any] | None = None  # in-memory stores only
    grade: int | None = None  # a direct record's relevance, kept to rank documents for pair selection


@dataclass(frozen=True)
class StoreScan:
    """What reading an existing store found."""

    records: int = 0
    keys: int = 0
    duplicates: int = 0
    corrupt_lines: int = 0
    torn_tail_bytes: int = 0


class AnnotationStore:
    """Append-only JSONL store (``path``) or an in-memory one (``path=None``).

    ``store.has(key)`` / ``store.status(key)`` / ``store.get(key)`` look records up; ``store.append(rec)``
    writes one; iterate ``store.records()`` for one record per key. Use as a context manager or call
    ``close()`` to release the file lock and fsync.
    """

    def __init__(self, path: str | Path | None = None, *, fsync_interval: float = 1.0, lock: bool = True):
        self.path = Path(path) if path is not None else None
        self.fsync_interval = float(fsync_interval)
        self._index: dict[str, _Entry] = {}
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._reader: BinaryIO | None = None
        self._last_sync = time.monotonic()
        self._dirty = False
        self._size = 0
        self.scan = StoreScan()
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        if lock and fcntl is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(self._fd)
                self._fd = None
                raise RuntimeError(
                    f"another process is writing to {self.path}; wait for it or use another --out file"
                ) from None
        self._load()

    # -- reading --------------------------------------------------------------------------------------
    def _load(self) -> None:
        assert self._fd is not None and self.path is not None
        records = duplicates = corrupt = 0
        good_end = 0
        with open(self.path, "rb") as f:
            offset = 0
            for line in f:
                start, offset = offset, offset + len(line)
                complete = line.endswith(b"\n")
                rec = _decode(line)
                if rec is None:
                    if not complete:  # torn tail: cut below
                        break
                    if line.strip():
                        corrupt += 1
                    good_end = offset
                    continue
                good_end = offset
                records += 1
                if self._add(rec, start, len(line)):
                    duplicates += 1
        size = os.fstat(self._fd).st_size
        torn = size - good_end
        if torn:
            warnings.warn(
                f"{self.path}: cut a torn last line of {torn} bytes (a run was killed while writing it)",
                stacklevel=3,
            )
            os.ftruncate(self._fd, good_end)
            os.fsync(self._fd)
            size = good_end
        if corrupt:
            warnings.warn(
                f"{self.path}: skipped {corrupt} unreadable line(s) in the middle of the file", stacklevel=3
            )
        if size and _last_byte(self.path) != b"\n":  # a complete record without its newline
            os.write(self._fd, b"\n")
            size += 1
        self._size = size
        self.scan = StoreScan(records, len(self._index), duplicates, corrupt, torn)

    def _add(self, rec: Mapping[str, Any], offset: int, length: int) -> bool:
        """Index a record; returns True when the key was already there."""
        key = rec["key"]
        status = rec.get("status", "failed")
        old = self._index.get(key)
        grade = None
        if rec.get("task") == "direct" and status == "ok" and isinstance(rec.get("output"), Mapping):
            grade = rec["output"].get("relevance")
        entry = _Entry(status, offset, length, dict(rec) if self.path is None else None, grade)
        if old is None or not (old.status in FINISHED and status not in FINISHED):
            self._index[key] = entry
        return old is not None

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def has(self, key: str) -> bool:
        """Whether the store has a record for ``key``."""
        return key in self._index

    def status(self, key: str) -> str | None:
        """The status of ``key``'s record, or ``None``."""
        e = self._index.get(key)
        return e.status if e else None

    def grade(self, key: str) -> int | None:
        """The relevance grade of a finished direct record, else None."""
        e = self._index.get(key)
        return e.grade if e else None

    def get(self, key: str) -> dict[str, Any] | None:
        """The record of ``key`` (read back from the file), or ``None``."""
        e = self._index.get(key)
        if e is None:
            return None
        if e.record is not None:
            return e.record
        assert self.path is not None
        with self._mutex:
            if self._reader is None:
                self._reader = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            self._reader.seek(e.offset)
            line = self._reader.read(e.length)
        rec = _decode(line)
        if rec is None or rec.get("key") != key:
            raise RuntimeError(f"{self.path} changed under the store (record {key} not at its offset)")
        return rec

    def keys(self) -> list[str]:
        """Every key, in first-written order."""
        return list(self._index)

    def records(self) -> Iterator[dict[str, Any]]:
        """One record per key, in first-written order."""
        for key in list(self._index):
            rec = self.get(key)
            if rec is not None:
                yield rec

    # -- writing --------------------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record (one complete line, fsync'd on the store's schedule)."""
        if "key" not in record or record.get("status") not in STATUSES:
            raise ValueError("a record needs a key and a status in ok/inconsistent/failed")
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._mutex:
            if self.path is None:
                self._add(record, -1, 0)
                return
            if self._fd is None:
                raise RuntimeError(f"store {self.path} is closed")
            offset = self._size
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            self._size += len(data)
            self._dirty = True
            now = time.monotonic()
            if self.fsync_interval <= 0 or now - self._last_sync >= self.fsync_interval:
                os.fsync(self._fd)
                self._last_sync, self._dirty = now, False
            self._add(record, offset, len(data))

    def flush(self) -> None:
        """fsync what was written since the last sync."""
        with self._mutex:
            if self._fd is not None and self._dirty:
                os.fsync(self._fd)
                self._last_sync, self._dirty = time.monotonic(), False

    def close(self) -> None:
        """fsync and release the file and its lock."""
        self.flush()
        with self._mutex:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            if self._fd is not None:
                os.close(self._fd)  # releases the flock
                self._fd = None

    def __enter__(self) -> AnnotationStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"AnnotationStore({str(self.path) if self.path else 'memory'!r}, {len(self)} keys)"


def _decode(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
        return None
    return rec


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1)


def read_annotations(
    path: str | Path, *, status: str | Sequence[str] | None = "ok"
) -> Iterator[dict[str, Any]]:
    """Read a store without locking it (safe while a run appends): one record per key, torn or corrupt
    lines skipped with a warning. ``status`` filters (``None`` for all)."""
    wanted = None if status is None else ({status} if isinstance(status, str) else set(status))
    best: dict[str, dict[str, Any]] = {}
    bad = 0
    with open(path, "rb") as f:
        for line in f:
            rec = _decode(line)
            if rec is None:
                bad += bool(line.strip())
                continue
            old = best.get(rec["key"])
            if old is None or not (old.get("status") in FINISHED and rec.get("status") not in FINISHED):
                best[rec["key"]] = rec
    if bad:
        warnings.warn(f"{path}: skipped {bad} unreadable line(s)", stacklevel=2)
    for rec in best.values():
        if wanted is None or rec.get("status") in wanted:
            yield rec
