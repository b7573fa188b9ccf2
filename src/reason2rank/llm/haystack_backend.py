"""Any Haystack ChatGenerator as an LLM backend, so Haystack users reuse the generator they already configured.

We call ``run(messages=[ChatMessage, ...], generation_kwargs=...)`` and read ``replies[0]``; Haystack is
imported lazily, inside this module only. Generation settings are honoured, never accepted and dropped:

- ``settings="auto"`` (default): the call's settings (``max_new_tokens``, ``temperature``, ``top_p``, ``seed``,
  ``stop``) are translated into the generator's own ``generation_kwargs`` names for the generators we know
  (OpenAI/Azure OpenAI, Hugging Face API and local, Ollama; ``SETTING_NAMES``); for another generator the call
  raises ``UnsupportedOption``, saying how to choose;
- ``settings={"max_new_tokens": "max_tokens", "temperature": "temperature", ...}``: your names for your
  generator (a setting left out cannot be honoured and raises when it is asked for);
- ``settings="generator"``: the generator's own configuration decides; the call's settings are not sent (a
  choice you make explicitly, e.g. for a generator configured with everything it needs).

``generation_kwargs`` given here are sent on every call and win over translated settings. A requested JSON
schema becomes ``response_format`` for OpenAI-style generators; elsewhere structured output is not requested
(the answer is parsed and validated all the same).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from reason2rank.llm.backend import (
    Backend,
    GenerationResult,
    Messages,
    OnResult,
    UnsupportedOption,
    schema_for,
)
from reason2rank.llm.reasoning import split_reasoning

__all__ = ["SETTING_NAMES", "HaystackBackend", "import_generator"]

_OPENAI = {"max_new_tokens": "max_completion_tokens", "temperature": "temperature", "top_p": "top_p",
           "seed": "seed", "stop": "stop", "json_schema": "response_format"}  # fmt: skip
#: generation_kwargs names of the generators whose settings ``settings="auto"`` knows
SETTING_NAMES: dict[str, dict[str, str]] = {
    "OpenAIChatGenerator": _OPENAI,
    "AzureOpenAIChatGenerator": _OPENAI,
    "HuggingFaceAPIChatGenerator": {
        "max_new_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "seed": "seed",
        "stop": "stop",
    },  # fmt: skip
    "HuggingFaceLocalChatGenerator": {
        "max_new_tokens": "max_new_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
    },  # fmt: skip
    "OllamaChatGenerator": {
        "max_new_tokens": "num_predict",
        "temperature": "temperature",
        "top_p": "top_p",
        "seed": "seed",
        "stop": "stop",
    },  # fmt: skip
}


class HaystackBackend(Backend):
    """Wraps an object with ``run(messages=[ChatMessage...]) -> {"replies": [ChatMessage]}``.

    ``max_in_flight`` > 1 runs that many ``run`` calls at once in threads (only for generators that are safe to
    call concurrently, such as the HTTP-based ones). See the module docstring for ``settings`` and
    ``generation_kwargs``. An exception from ``run`` becomes an error result for that item.
    """

    def __init__(
        self,
        generator: Any,
        *,
        max_in_flight: int = 1,
        generation_kwargs: Mapping[str, Any] | None = None,
        settings: str | Mapping[str, str] = "auto",
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
        self.generation_kwargs = dict(generation_kwargs) if generation_kwargs else {}
        kind = type(generator).__name__
        if settings == "auto":
            self.setting_names: dict[str, str] | None = SETTING_NAMES.get(kind)
            self._unknown = self.setting_names is None
        elif settings == "generator":
            self.setting_names, self._unknown = None, False
        elif isinstance(settings, Mapping):
            self.setting_names, self._unknown = dict(settings), False
        else:
            raise ValueError(f"settings must be 'auto', 'generator' or a mapping of names, got {settings!r}")
        self.settings_mode = settings if isinstance(settings, str) else "mapping"
        self.supported_options = frozenset(
            k for k in ("top_p", "seed", "stop") if self.setting_names and k in self.setting_names
        )
        model = getattr(generator, "model", None) or getattr(generator, "model_name", None)
        self.name = name or f"haystack:{kind}" + (f":{model}" if model else "")
        self._warmed = False

    def _warm_up(self) -> None:
        if not self._warmed:
            warm = getattr(self.generator, "warm_up", None)
            if callable(warm):
                warm()
            self._warmed = True

    def _call_kwargs(
        self,
        schema: Mapping[str, Any] | None,
        max_new_tokens: int,
        temperature: float,
        options: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The generation_kwargs of one call (see the module docstring)."""
        if self._unknown:
            raise UnsupportedOption(
                f"{self.name}: reason2rank does not know the generation_kwargs names of "
                f"{type(self.generator).__name__}, so it cannot apply max_new_tokens/temperature; pass "
                "settings={'max_new_tokens': '<its name>', 'temperature': '<its name>', ...} to HaystackBackend, "
                "or settings='generator' to use the generator's own configuration"
            )
        out: dict[str, Any] = {}
        names = self.setting_names
        if names is not None:
            wanted: dict[str, Any] = {"max_new_tokens": max_new_tokens, "temperature": temperature, **options}
            for key, value in wanted.items():
                if key not in names:
                    raise UnsupportedOption(
                        f"{self.name} has no generation_kwargs name for {key!r}; add it to settings=..."
                    )
                out[names[key]] = list(value) if key == "stop" else value
            if type(self.generator).__name__ == "HuggingFaceLocalChatGenerator":
                out["do_sample"] = temperature > 0
                if temperature == 0:
                    out.pop(names["temperature"], None)
            if schema is not None and "json_schema" in names:
                out[names["json_schema"]] = {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": dict(schema), "strict": True},
                }
        out.update(self.generation_kwargs)  # the user's own kwargs win
        return out

    def _one(self, messages: Messages, kwargs: Mapping[str, Any]) -> GenerationResult:
        from haystack.dataclasses import ChatMessage

        make = {
            "system": ChatMessage.from_system,
            "user": ChatMessage.from_user,
            "assistant": ChatMessage.from_assistant,
        }
        chat = [make[m["role"]](m["content"]) for m in messages]
        call: dict[str, Any] = {"messages": chat}
        if kwargs:
            call["generation_kwargs"] = dict(kwargs)
        started = time.perf_counter()
        try:
            out = self.generator.run(**call)
            replies = out["replies"]
        except Exception as e:  # the generator's own failure: report it for this item, keep going
            return GenerationResult(error=f"{type(e).__name__}: {e}", latency_s=time.perf_counter() - started)
        if not replies:
            return GenerationResult(error="the generator returned no reply")
        reply = replies[0]
        text = reply.text if hasattr(reply, "text") else str(reply)
        meta = getattr(reply, "meta", None) or {}
        usage = meta.get("usage") or {}
        reasoning = getattr(reply, "reasoning", None)
        reasoning_text = getattr(reasoning, "reasoning_text", None) if reasoning is not None else None
        return GenerationResult(
            text=text or "",
            prompt_tokens=_int(usage.get("prompt_tokens", usage.get("input_tokens"))),
            completion_tokens=_int(usage.get("completion_tokens", usage.get("output_tokens"))),
            finish_reason=meta.get("finish_reason"),
            reasoning=split_reasoning("", reasoning_text).reasoning if reasoning_text else None,
            latency_s=time.perf_counter() - started,
        )

    def generate(
        self,
        messages: Sequence[Messages],
        *,
        on_result: OnResult | None = None,
        json_schema: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        **options: Any,
    ) -> list[GenerationResult]:
        """Answer every message list through the generator's ``run`` (settings as the module docstring says)."""
        if options.get("prefix"):
            raise UnsupportedOption(f"{self.name} cannot continue an answer prefix")
        kwargs = [
            self._call_kwargs(schema_for(json_schema, i), max_new_tokens, temperature, options)
            for i in range(len(messages))
        ]
        self._warm_up()
        results: list[GenerationResult] = []
        if self.max_in_flight == 1:
            for i, m in enumerate(messages):
                res = self._one(m, kwargs[i])
                results.append(res)
                if on_result is not None:
                    on_result(i, res)
            return results
        out: list[GenerationResult | None] = [None] * len(messages)
        with ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="reason2rank-haystack") as pool:
            futures = {pool.submit(self._one, m, kwargs[i]): i for i, m in enumerate(messages)}
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
            f"haystack backend must be haystack:MODULE:ATTR (e.g. haystack:my_gens:teacher), got {target!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import module {module_name!r} for the haystack backend: {e}") from None
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
