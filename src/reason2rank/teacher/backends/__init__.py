"""Teacher backends: anything that turns chat messages into text.

The interface is deliberately small::

    backend.generate(list_of_message_lists, on_result=None, json_schema=None,
                     max_new_tokens=..., temperature=0.0) -> list[GenerationResult]

``on_result(i, result)`` is called as each answer arrives (from a worker thread for the HTTP backend), so
the annotator can store an item the moment it is final. ``json_schema`` (one dict, or one per item) asks
for structured output where the backend supports it. A result with ``error`` set carries no answer (the
request failed after the backend's own retries); an answer that is empty or malformed is *not* an error
here — judging it is the parser's job.

Backends are chosen by a string (``make_backend``):

- ``hf:PATH_OR_ID`` — a local transformers causal LM (``TransformersBackend``);
- ``openai:MODEL`` or ``openai:MODEL@BASE_URL`` — an OpenAI-compatible server: vLLM, SGLang, Ollama,
  hosted APIs (``OpenAIBackend``);
- ``haystack:MODULE:ATTR`` — a Haystack ChatGenerator object, a factory returning one, or a class
  instantiated without arguments (``HaystackBackend``); from Python, pass the generator object itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Messages = list[dict[str, str]]
OnResult = Callable[[int, "GenerationResult"], None]


@dataclass(frozen=True)
class GenerationResult:
    """One answer: its text, token counts (0 when the backend cannot tell), why generation stopped, and
    ``error`` when no answer came back at all."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    finish_reason: str | None = None


class Backend(ABC):
    """Base class of teacher backends. ``name`` identifies the teacher model in annotation keys."""

    name: str = "backend"
    #: how many requests the backend keeps in flight at once (the annotator sizes its chunks from it)
    max_in_flight: int = 1
    #: a transformers tokenizer when the backend has one (used to cut documents by tokens)
    tokenizer: Any = None

    @abstractmethod
    def generate(
        self,
        messages: Sequence[Messages],
        *,
        on_result: OnResult | None = None,
        json_schema: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
    ) -> list[GenerationResult]:
        """Answer every message list; results are aligned with the input."""

    def close(self) -> None:
        """Release connections, threads or memory; the backend may not be used afterwards."""
        return None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def schema_for(json_schema: Any, i: int) -> Mapping[str, Any] | None:
    """The schema of item ``i`` from a single schema or a per-item list."""
    if json_schema is None or isinstance(json_schema, Mapping):
        return json_schema
    return json_schema[i]


def parse_backend_spec(spec: str) -> tuple[str, str]:
    """Split ``kind:rest``; raises a ValueError naming the accepted forms."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("hf", "openai", "haystack") or not rest:
        raise ValueError(
            f"unknown teacher {spec!r}; use hf:PATH_OR_ID, openai:MODEL[@BASE_URL] or haystack:MODULE:ATTR"
        )
    return kind, rest


def make_backend(spec: Any, **options: Any) -> Backend:
    """Build a backend from a spec string, or wrap an object.

    ``spec`` may be a ``Backend`` (returned as is), a Haystack ChatGenerator (any object with a
    ``run(messages=...)`` method) or a string as described in the module docstring. ``options`` go to the
    backend's constructor (e.g. ``max_in_flight``, ``timeout``, ``api_key_env`` for ``openai:``;
    ``batch_size``, ``device`` for ``hf:``); options set to ``None`` are dropped.
    """
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(spec, Backend):
        if options:
            raise ValueError(f"options {sorted(options)} cannot be applied to an existing backend object")
        return spec
    if not isinstance(spec, str):
        if callable(getattr(spec, "run", None)):
            from reason2rank.teacher.backends.haystack_chat import HaystackBackend

            return HaystackBackend(spec, **options)
        raise TypeError(
            f"a teacher must be a spec string, a Backend or a Haystack ChatGenerator; got {type(spec).__name__}"
        )
    kind, rest = parse_backend_spec(spec)
    if kind == "openai":
        from reason2rank.teacher.backends.openai_http import OpenAIBackend

        model, base_url = split_model_url(rest)
        if base_url is not None:
            options.setdefault("base_url", base_url)
        return OpenAIBackend(model, **options)
    if kind == "hf":
        from reason2rank.teacher.backends.transformers_lm import TransformersBackend

        return TransformersBackend(rest, **options)
    from reason2rank.teacher.backends.haystack_chat import HaystackBackend, import_generator

    return HaystackBackend(import_generator(rest), **options)


def split_model_url(rest: str) -> tuple[str, str | None]:
    """``MODEL@http://host/v1`` → (MODEL, URL). The split is at the last ``@`` followed by a URL scheme,
    so model names containing ``@`` stay whole."""
    for scheme in ("@http://", "@https://"):
        idx = rest.rfind(scheme)
        if idx > 0:
            return rest[:idx], rest[idx + 1 :]
    return rest, None


__all__ = [
    "Backend",
    "GenerationResult",
    "Messages",
    "OnResult",
    "make_backend",
    "parse_backend_spec",
    "schema_for",
    "split_model_url",
]
