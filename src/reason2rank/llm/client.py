"""``LLM``: a backend with a response cache and an invocation log — what the strategies and the teacher call.

Every request is one ``LLMRequest`` (messages, decoding settings, and tags such as the query id and what the
call is for). ``LLM.generate`` answers cached requests from the cache (no backend call), sends the others to the
backend in as few calls as their settings allow, stores new answers in the cache, and appends one ``CallRecord``
per request to the log: prompt and completion tokens, latency, cached or not, and — set by the caller once it has
parsed the answer — whether the answer had to be repaired. ``CallLog.save`` writes the log as JSONL next to a run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reason2rank.llm.backend import Backend, GenerationResult, GenerationSettings, Messages
from reason2rank.llm.cache import ResponseCache, request_key

__all__ = ["LLM", "CallLog", "CallRecord", "LLMRequest", "OnCall"]


@dataclass(frozen=True)
class LLMRequest:
    """One prompt: chat messages, how to decode, and tags that say what it is for (``qid``, ``purpose``, ...)."""

    messages: Messages
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class CallRecord:
    """What one request cost and how its answer fared."""

    backend: str
    tags: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cached: bool = False
    finish_reason: str | None = None
    error: str | None = None
    repaired: bool | None = None  # set by the caller after parsing (None: not judged)
    problems: list[str] = field(default_factory=list)


#: called as each answer arrives: (request index, answer, its log record)
OnCall = Callable[[int, GenerationResult, CallRecord], None]


class CallLog:
    """The invocation log: one ``CallRecord`` per request, thread-safe; ``summary`` and ``save``."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []
        self._lock = threading.Lock()

    def add(self, record: CallRecord) -> CallRecord:
        """Append a record and return it (the caller may still set ``repaired``)."""
        with self._lock:
            self.records.append(record)
        return record

    def summary(self, records: Sequence[CallRecord] | None = None) -> dict[str, Any]:
        """Counts over ``records`` (default: all): calls, backend calls (not cached), errors, repaired answers,
        prompt and completion tokens, seconds of latency, and problems by kind."""
        recs = list(self.records if records is None else records)
        problems: Counter[str] = Counter(p.split(":")[0] for r in recs for p in r.problems)
        return {
            "calls": len(recs),
            "backend_calls": sum(not r.cached for r in recs),
            "cached": sum(r.cached for r in recs),
            "errors": sum(r.error is not None for r in recs),
            "repaired": sum(bool(r.repaired) for r in recs),
            "prompt_tokens": sum(r.prompt_tokens for r in recs if not r.cached),
            "completion_tokens": sum(r.completion_tokens for r in recs if not r.cached),
            "latency_s": round(sum(r.latency_s for r in recs), 3),
            "problems": dict(problems),
        }

    def by_tag(self, tag: str) -> dict[Any, dict[str, Any]]:
        """``summary`` per value of a tag (e.g. ``"qid"``)."""
        groups: dict[Any, list[CallRecord]] = {}
        for r in self.records:
            groups.setdefault(r.tags.get(tag), []).append(r)
        return {k: self.summary(v) for k, v in groups.items()}

    def save(self, path: str | Path) -> Path:
        """Write every record as one JSON line, atomically."""
        from reason2rank.data.io import write_text

        with self._lock:
            lines = [json.dumps(asdict(r), ensure_ascii=False, default=str) + "\n" for r in self.records]
        with write_text(path) as fh:
            fh.writelines(lines)
        return Path(path)

    def __len__(self) -> int:
        return len(self.records)


class LLM:
    """A backend, a response cache (``cache``: a ``ResponseCache``, a file path, or ``None`` for none) and a log.

    ``LLM(spec_or_backend, cache=..., **backend_options)`` builds the backend with ``make_backend``.
    """

    def __init__(
        self,
        backend: Any,
        *,
        cache: ResponseCache | str | os.PathLike[str] | None = None,
        log: CallLog | None = None,
        **backend_options: Any,
    ) -> None:
        from reason2rank.llm.backend import make_backend

        self._own_backend = not isinstance(backend, Backend)
        self.backend = make_backend(backend, **backend_options)
        self.cache = cache if isinstance(cache, ResponseCache) or cache is None else ResponseCache(cache)
        self.log = log if log is not None else CallLog()
        self._identity = self.backend.identity()

    @property
    def name(self) -> str:
        """The backend's name."""
        return self.backend.name

    @property
    def tokenizer(self) -> Any:
        """The backend's tokenizer, when it has one."""
        return self.backend.tokenizer

    @property
    def max_in_flight(self) -> int:
        """How many requests the backend works on at once."""
        return self.backend.max_in_flight

    def generate(
        self, requests: Sequence[LLMRequest], *, on_result: OnCall | None = None
    ) -> list[tuple[GenerationResult, CallRecord]]:
        """Answer every request (see the module docstring); results are aligned with ``requests``."""
        results: list[tuple[GenerationResult, CallRecord] | None] = [None] * len(requests)
        lock = threading.Lock()

        def finish(i: int, res: GenerationResult, key: str | None) -> None:
            rec = CallRecord(
                backend=self.backend.name,
                tags=dict(requests[i].tags),
                prompt_tokens=res.prompt_tokens,
                completion_tokens=res.completion_tokens,
                latency_s=res.latency_s,
                cached=res.cached,
                finish_reason=res.finish_reason,
                error=res.error,
            )
            if key is not None and self.cache is not None and not res.cached:
                self.cache.put(key, res)
            with lock:
                if results[i] is not None:
                    return
                results[i] = (res, self.log.add(rec))
            if on_result is not None:
                on_result(i, res, rec)

        groups: dict[tuple[Any, ...], list[int]] = {}
        keys: list[str | None] = [None] * len(requests)
        for i, req in enumerate(requests):
            if self.cache is not None:
                keys[i] = request_key(self._identity, req.messages, req.settings)
                hit = self.cache.get(keys[i])  # type: ignore[arg-type]
                if hit is not None:
                    finish(i, hit, keys[i])
                    continue
            s = req.settings
            options = s.options()
            if "answer_regex" not in self.backend.supported_options:
                options.pop("answer_regex", None)  # structured output where the backend supports it
            groups.setdefault(
                (s.max_new_tokens, s.temperature, tuple(sorted(options.items()))), []
            ).append(i)
        for (max_new, temperature, options), idx in groups.items():
            schemas = [requests[i].settings.json_schema for i in idx]

            def on_one(j: int, res: GenerationResult, idx: list[int] = idx) -> None:
                finish(idx[j], res, keys[idx[j]])

            out = self.backend.generate(
                [requests[i].messages for i in idx],
                on_result=on_one,
                json_schema=schemas if any(s is not None for s in schemas) else None,
                max_new_tokens=max_new,
                temperature=temperature,
                **dict(options),
            )
            for j, res in enumerate(out):  # backends that do not call on_result
                finish(idx[j], res, keys[idx[j]])
        return [r for r in results if r is not None]

    def label_logprobs(self, requests: Sequence[LLMRequest], labels: Sequence[str]) -> list[Any]:
        """The backend's likelihood read-out (``Backend.label_logprobs``: the log-probability of each label as
        the first answer token, after the request's ``prefix``), for all requests in one call; each request is
        logged as a call that generated nothing. Requests are grouped by prefix."""
        out: list[Any] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(req.settings.prefix, []).append(i)
        for prefix, idx in groups.items():
            started = time.perf_counter()
            got = self.backend.label_logprobs([requests[i].messages for i in idx], labels, prefix=prefix)
            elapsed = time.perf_counter() - started
            for i, logp in zip(idx, got):
                out[i] = logp
                tokens = (
                    len(self.backend.encode(requests[i].messages, prefix)) if self.backend.tokenizer else 0
                )
                self.log.add(CallRecord(backend=self.backend.name, tags={**requests[i].tags, "readout": "likelihood"},
                                        prompt_tokens=tokens, latency_s=elapsed))  # fmt: skip
        return out

    def close(self) -> None:
        """Close the backend (when this LLM built it) and the cache."""
        if self._own_backend:
            self.backend.close()
        if self.cache is not None:
            self.cache.close()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LLM({self.backend!r}, cache={self.cache!r}, {len(self.log)} calls)"
