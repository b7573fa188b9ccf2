"""File I/O shared by every reader and writer: atomic writes, transparent gzip, JSON lines, error locations.

Every reader accepts ``str`` or ``pathlib.Path`` and reads ``*.gz`` transparently; every writer writes
atomically (a temporary file renamed into place, so no partial file is ever left behind) and gzip-compresses
when the name ends in ``.gz``. Text is UTF-8; undecodable bytes become U+FFFD. Malformed input raises
``ValueError`` naming the file and the line (``file_error``).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "PathLike",
    "atomic_write",
    "check_field",
    "check_writable",
    "file_error",
    "format_score",
    "iter_json_objects",
    "iter_lines",
    "open_text",
    "read_text",
    "require_file",
    "staged_outputs",
    "write_text",
]

PathLike = str | os.PathLike[str]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; move it onto ``path`` only on success.

    ``mode`` is ``"w"``/``"wt"`` (text, ``encoding``) or ``"wb"`` (bytes). If the ``with`` block raises,
    the temporary file is removed and an existing ``path`` is left untouched. The new file gets the
    permissions an ordinary ``open`` would give it (or those of the file it replaces). No compression is
    applied here, whatever the name.
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_write supports modes 'w', 'wt' and 'wb', not {mode!r}")
    path = Path(path)
    directory = path.parent
    tmp = directory / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    # O_EXCL with 0o666 honours the umask, unlike tempfile's 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        if "b" in mode:
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline="")
    except BaseException:
        os.close(fd)
        _remove_quietly(tmp)
        raise
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def write_text(path: PathLike) -> Iterator[IO[str]]:
    """Atomic UTF-8 text writer, gzip-compressed when the name ends in ``.gz``."""
    if str(path).endswith(".gz"):
        with atomic_write(path, "wb") as raw:
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            with gz, io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
                yield text
    else:
        with atomic_write(path, "w", encoding="utf-8") as text:
            yield text


def open_text(path: PathLike) -> IO[str]:
    """Open for reading as UTF-8 (BOM dropped, bad bytes replaced), gunzipping ``*.gz``."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
    return open(path, encoding="utf-8-sig", errors="replace")


def read_text(path: PathLike) -> str:
    """The whole file as text (``open_text``)."""
    with open_text(path) as fh:
        return fh.read()


def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline); splits on newlines only (not U+2028 and such)."""
    with open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            yield lineno, line.rstrip("\n")


def iter_json_objects(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; ``ValueError`` naming the line on
    invalid JSON or a line that is not an object."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise file_error(path, lineno, f"invalid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise file_error(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def file_error(path: PathLike, lineno: int | None, message: str) -> ValueError:
    """A ``ValueError`` whose message starts with the file (and line) it is about."""
    where = f"{path}, line {lineno}" if lineno is not None else str(path)
    return ValueError(f"{where}: {message}")


def check_field(value: str, what: str) -> str:
    """``value`` when it can be written to a whitespace-separated file, else ``ValueError`` naming ``what``."""
    if not value or any(c.isspace() for c in value):
        raise ValueError(
            f"{what} {value!r} cannot be written to a whitespace-separated file (empty or has spaces)"
        )
    return value


def format_score(score: float) -> str:
    """A score as TREC files hold it (shortest repr that reads back to the same float)."""
    return repr(float(score))


def check_writable(path: PathLike, what: str) -> Path:
    """``path`` as a ``Path`` when a file can be written there, else an ``OSError`` naming ``what`` (e.g.
    ``"--out"``) and what is wrong; meant to run before any long work."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise IsADirectoryError(f"{what} {str(path)!r} is a directory; give a file name")
    if not parent.is_dir():
        raise FileNotFoundError(
            f"{what} {str(path)!r}: the directory {str(parent)!r} does not exist (create it first)"
        )
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"{what} {str(path)!r}: the directory {str(parent)!r} is not writable")
    return out


@contextlib.contextmanager
def staged_outputs(*paths: PathLike) -> Iterator[list[Path]]:
    """Temporary paths next to each of ``paths`` (same suffixes, so ``.gz`` still compresses); when the block
    succeeds every one is moved into place, when it fails none is and the temporary files are removed, so a
    command writes all its outputs or none of them."""
    finals = [Path(p) for p in paths]
    tag = uuid.uuid4().hex[:12]
    staged = [p.parent / f".r2r-{tag}-{p.name}" for p in finals]
    try:
        yield staged
        for tmp, final in zip(staged, finals):
            if tmp.exists():
                os.replace(tmp, final)
    finally:
        for tmp in staged:
            _remove_quietly(tmp)


def require_file(path: PathLike, what: str) -> None:
    """``FileNotFoundError`` naming ``what`` (e.g. ``"candidates"``) when ``path`` is not an existing file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
