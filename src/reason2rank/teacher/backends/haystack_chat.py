"""Any Haystack ChatGenerator as teacher, so Haystack users reuse the generator they already configured.

The generator is used as it is: its model, API key, timeouts, retries and generation settings are the
user's. We only call ``run(messages=[ChatMessage, ...])`` (plus ``generation_kwargs`` when given here —
their names differ between generators, so we never invent them) and read ``replies[0]``. Haystack is
imported lazily, inside this module only.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from reason2rank.teacher.backends import Backend, GenerationResult, Messages, OnResult


class HaystackBackend(Backend):
    """Wraps an object with ``run(messages=[ChatMessage...]) -> {"replies": [ChatMessage]}``.

    ``max_in_flight`` > 1 runs that many ``run`` calls at once in threads (only for generators that are
    safe to call concurrently, such as the HTTP-based ones). ``generation_kwargs`` are passed verbatim to
    every ``run`` call. An exception from ``run`` becomes an error result for that item.
    """

    def __init__(
        self,
        generator: Any,
        *,
        max_in_flight: int = 1,
        generation_kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
    ):
        if not callable(getattr(generator, "run", None)):
            raise TypeError(
                f"{type(generator).__name__} has no run(messages=...) method; not a ChatGenerator"
            )
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.generator = generator
        self.max_in_flight = int(max_in_flight)
        self.generation_kwargs = dict(generation_kwargs) if generation_kwargs else None
        model = getattr(generator, "model", None) or getattr(generator, "model_name", None)
        self.name = name or f"haystack:{type(generator).__name__}" + (f":{model}" if model else "")
        self._warmed = False

    def _warm_up(self) -> None:
        if not self._warmed:
            warm = getattr(self.generator, "warm_up", None)
            if callable(warm):
                warm()
            self._warmed = True

    def _one(self, messages: Messages) -> GenerationResult:
        from haystack.dataclasses import ChatMessage

        make = {
            "system": ChatMessage.from_system,
            "user": ChatMessage.from_user,
            "assistant": ChatMessage.from_assistant,
        }
        chat = [make[m["role"]](m["content"]) for m in messages]
        kwargs: dict[str, Any] = {"messages": chat}
        if self.generation_kwargs:
            kwargs["generation_kwargs"] = dict(self.generation_kwargs)
        try:
            out = self.generator.run(**kwargs)
            replies = out["replies"]
        except Exception as e:  # the generator's own failure: report it for this item, keep going
            return GenerationResult(error=f"{type(e).__name__}: {e}")
        if not replies:
            return GenerationResult(error="the generator returned no reply")
        reply = replies[0]
        text = reply.text if hasattr(reply, "text") else str(reply)
        meta = getattr(reply, "meta", None) or {}
        usage = meta.get("usage") or {}
        return GenerationResult(
            text=text or "",
            prompt_tokens=_int(usage.get("prompt_tokens", usage.get("input_tokens"))),
            completion_tokens=_int(usage.get("completion_tokens", usage.get("output_tokens"))),
            finish_reason=meta.get("finish_reason"),
        )

    def generate(
        self,
        messages: Sequence[Messages],
        *,
        on_result: OnResult | None = None,
        json_schema: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
    ) -> list[GenerationResult]:
        """Answer every message list through the generator's ``run``."""
        self._warm_up()
        results: list[GenerationResult] = []
        if self.max_in_flight == 1:
            for i, m in enumerate(messages):
                res = self._one(m)
                results.append(res)
                if on_result is not None:
                    on_result(i, res)
            return results
        out: list[GenerationResult | None] = [None] * len(messages)
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="reason2rank-haystack") as pool:
            futures = {pool.submit(self._one, m): i for i, m in enumerate(messages)}
            for fut in as_completed(futures):
                i = futures[fut]
                result = out[i] = fut.result()
                if on_result is not None:
                    on_result(i, result)
        return [r for r in out if r is not None]


def import_generator(target: str) -> Any:
    """``package.module:attr`` → the generator: attr may be an object, a factory or a class (called with no
    arguments)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"haystack teacher must be haystack:MODULE:ATTR (e.g. haystack:my_gens:teacher), got {target!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {module_name!r} for the haystack teacher: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, type) or (callable(obj) and not callable(getattr(obj, "run", None))):
        obj = obj()
    return obj


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0
