"""What a teacher run did: per-task counts, tokens, cost, flags and errors (``Teacher.annotate`` returns it)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunSummary", "TaskCounts"]


@dataclass
class TaskCounts:
    total: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    inconsistent: int = 0
    errors: int = 0


@dataclass
class RunSummary:
    """What a run did. ``done`` = stored as ok in this run, ``skipped`` = already in the store,
    ``failed`` = stored as failed after ``max_tries``, ``inconsistent`` = A/B and B/A answers disagreed,
    ``errors`` = requests that got no answer (nothing stored; the next run asks again)."""

    teacher: str = ""
    tasks: dict[str, TaskCounts] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    cost_usd: float | None = None
    elapsed_s: float = 0.0
    flags: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    torn_tail_bytes: int = 0
    aborted: str | None = None
    notes: list[str] = field(default_factory=list)

    def _sum(self, name: str) -> int:
        return sum(getattr(c, name) for c in self.tasks.values())

    @property
    def done(self) -> int:
        """Items stored as ok in this run."""
        return self._sum("done")

    @property
    def skipped(self) -> int:
        """Items already in the store."""
        return self._sum("skipped")

    @property
    def failed(self) -> int:
        """Items stored as failed after ``max_tries``."""
        return self._sum("failed")

    @property
    def inconsistent(self) -> int:
        """Compare items whose A/B and B/A answers disagreed."""
        return self._sum("inconsistent")

    @property
    def errors(self) -> int:
        """Requests that got no answer (nothing stored)."""
        return self._sum("errors")

    @property
    def total(self) -> int:
        """Items of the run."""
        return self._sum("total")

    @property
    def complete(self) -> bool:
        """Every item of the run is in the store (as ok, inconsistent or failed)."""
        return self.errors == 0 and self.aborted is None

    def to_dict(self) -> dict[str, Any]:
        """The summary as a JSON-able dict."""
        return {
            "teacher": self.teacher,
            "total": self.total,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "inconsistent": self.inconsistent,
            "errors": self.errors,
            "tasks": {t: vars(c).copy() for t, c in self.tasks.items()},
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "elapsed_s": round(self.elapsed_s, 3),
            "flags": dict(self.flags),
            "error_samples": list(self.error_samples),
            "torn_tail_bytes": self.torn_tail_bytes,
            "aborted": self.aborted,
            "notes": list(self.notes),
        }

    def format(self) -> str:
        """The summary as the lines ``reason2rank teach`` prints."""
        lines = [
            f"teacher {self.teacher}: done {self.done}, skipped {self.skipped}, failed {self.failed}, "
            f"inconsistent {self.inconsistent}, errors {self.errors} (of {self.total}) in {self.elapsed_s:.1f} s"
        ]
        for t, c in self.tasks.items():
            lines.append(
                f"  {t:<8} total {c.total}: done {c.done}, skipped {c.skipped}, failed {c.failed}, "
                f"inconsistent {c.inconsistent}, errors {c.errors}"
            )
        cost = f", cost ${self.cost_usd:.4f}" if self.cost_usd is not None else ""
        lines.append(
            f"  tokens: {self.prompt_tokens} prompt + {self.completion_tokens} completion "
            f"in {self.requests} requests{cost}"
        )
        if self.flags:
            lines.append("  flags: " + ", ".join(f"{k} {v}" for k, v in sorted(self.flags.items())))
        if self.torn_tail_bytes:
            lines.append(f"  cut a torn last line of {self.torn_tail_bytes} bytes left by a killed run")
        for e in self.error_samples:
            lines.append(f"  error: {e}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        if self.aborted:
            lines.append(f"  ABORTED: {self.aborted}")
        return "\n".join(lines)
