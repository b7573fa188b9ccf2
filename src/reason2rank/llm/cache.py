"""A response cache: the answer of every request, keyed by (backend, model, prompt, decoding settings).

A rerun of the same experiment (same backend and model, same prompts, same settings) then costs nothing and
returns the same answers, so it gives the same ranking. The cache is a SQLite file (safe to share between threads
and between processes that run one after the other), or in memory with ``ResponseCache(None)``. Only answers are
cached, never errors. Sampled answers (``temperature > 0``) are cached under their seed; without a seed a rerun
gets the answer the first run sampled.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reason2rank.llm.backend import GenerationResult, GenerationSettings, Messages

__all__ = ["ResponseCache", "request_key"]

_FIELDS = ("text", "prompt_tokens", "completion_tokens", "finish_reason", "reasoning", "constrained")


def request_key(identity: Mapping[str, Any], messages: Messages, settings: GenerationSettings) -> str:
    """sha256 of the backend identity, the messages and every setting that changes the answer."""
    blob = json.dumps(
        {"backend": dict(identity), "messages": list(messages), "settings": settings.key()},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """``get(key)`` / ``put(key, result)`` over a SQLite file (``path``) or memory (``path=None``)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._memory: dict[str, dict[str, Any]] = {}
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            self._db.commit()

    def get(self, key: str) -> GenerationResult | None:
        """The cached answer of ``key`` (``cached=True``, no latency), or ``None``."""
        with self._lock:
            if self._db is None:
                value = self._memory.get(key)
            else:
                row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
                value = json.loads(row[0]) if row else None
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
        fields: dict[str, Any] = {k: value[k] for k in _FIELDS if k in value}
        return GenerationResult(**fields, cached=True)

    def put(self, key: str, result: GenerationResult) -> None:
        """Store an answer (errors are not stored: the next run asks again)."""
        if result.error is not None:
            return
        value = {k: getattr(result, k) for k in _FIELDS}
        with self._lock:
            if self._db is None:
                self._memory[key] = value
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", (key, json.dumps(value))
                )
                self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            if self._db is None:
                return len(self._memory)
            return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path) if self.path else 'memory'!r}, {len(self)} answers)"
