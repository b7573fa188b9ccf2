"""The backend protocol: anything that turns chat messages into text.

    backend.generate(list_of_message_lists, on_result=None, json_schema=None,
                     max_new_tokens=..., temperature=0.0, **options) -> list[GenerationResult]

``on_result(i, result)`` is called as each answer arrives (from a worker thread for the HTTP backend), so a
caller can store an item the moment it is final. ``json_schema`` (one dict, or one per item) asks for structured
output where the backend supports it. A result with ``error`` set carries no answer (the request failed after
the backend's own retries); an answer that is empty or malformed is *not* an error here — judging it is the
parser's job.

``options`` are the other generation settings (``GenerationSettings``): ``top_p``, ``seed``, ``stop``,
``prefix`` (text the answer starts with, after the chat template's generation prompt). A backend honours each
option it is given or raises ``UnsupportedOption`` naming it: a setting is never accepted and then ignored.

Backends are chosen by a string (``make_backend``):

- ``hf:PATH_OR_ID`` — a local transformers causal LM (``llm.transformers_backend.TransformersBackend``);
- ``openai:MODEL`` or ``openai:MODEL@BASE_URL`` — an OpenAI-compatible server: vLLM, SGLang, Ollama,
  hosted APIs (``llm.openai_backend.OpenAIBackend``);
- ``haystack:MODULE:ATTR`` — a Haystack ChatGenerator object, a factory returning one, or a class
  instantiated without arguments (``llm.haystack_backend.HaystackBackend``); from Python, pass the generator;
- ``vllm:PATH_OR_ID`` — vLLM's offline engine in this process (``llm.vllm_backend.VLLMBackend``, ``vllm`` extra).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Backend",
    "GenerationResult",
    "GenerationSettings",
    "Messages",
    "OnResult",
    "UnsupportedOption",
    "make_backend",
    "parse_backend_spec",
    "schema_for",
    "split_model_url",
]

Messages = list[dict[str, str]]
OnResult = Callable[[int, "GenerationResult"], None]


class UnsupportedOption(ValueError):
    """A generation setting the backend cannot honour (it raises instead of ignoring it)."""


@dataclass(frozen=True)
class GenerationResult:
    """One answer: its text, the reasoning a server returned apart (``reasoning``/``reasoning_content``),
    token counts (0 when the backend cannot tell), why generation stopped, the seconds it took, whether it came
    from the response cache, whether decoding was constrained to the request's schema or regex, and ``error`` when no
    answer came back at all."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    finish_reason: str | None = None
    reasoning: str | None = None
    latency_s: float = 0.0
    cached: bool = False
    constrained: bool = False  # generated under a JSON-schema or regex constraint (valid by construction)


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode: greedy when ``temperature == 0``; ``stop`` strings end the answer; ``prefix`` is text the
    answer starts with (it is part of the prompt, and not of the returned text); ``json_schema`` asks for
    structured output where the backend supports it; ``answer_regex`` asks, where the backend supports it, that the
    answer (after ``prefix``) match a regular expression (e.g. a ranking ``[2] > [1]``); ``repetition_penalty``
    (> 1, where the backend supports it) lowers the logits of the tokens the answer already holds, which breaks the
    loops small models fall into (the prompt's tokens are not penalised, so quoting the document is not)."""

    max_new_tokens: int = 1024
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    prefix: str = ""
    json_schema: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    answer_regex: str | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.max_new_tokens, bool)
            or not isinstance(self.max_new_tokens, int)
            or self.max_new_tokens < 1
        ):
            raise ValueError(f"max_new_tokens must be a positive int, got {self.max_new_tokens!r}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.repetition_penalty is not None and not self.repetition_penalty >= 1.0:
            raise ValueError(f"repetition_penalty must be >= 1 (1: none), got {self.repetition_penalty!r}")

    def options(self) -> dict[str, Any]:
        """The settings beyond ``max_new_tokens``/``temperature``/``json_schema`` that differ from the defaults,
        as the keyword options of ``Backend.generate``."""
        out: dict[str, Any] = {}
        if self.top_p is not None:
            out["top_p"] = self.top_p
        if self.seed is not None:
            out["seed"] = self.seed
        if self.stop:
            out["stop"] = self.stop
        if self.prefix:
            out["prefix"] = self.prefix
        if self.answer_regex:
            out["answer_regex"] = self.answer_regex
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            out["repetition_penalty"] = self.repetition_penalty
        return out

    def key(self) -> dict[str, Any]:
        """Everything that changes the answer, as JSON-able data (for the response cache)."""
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        d["json_schema"] = dict(self.json_schema) if self.json_schema is not None else None
        if d["repetition_penalty"] is None:  # the keys of caches written before this setting existed
            del d["repetition_penalty"]
        return d


class Backend(ABC):
    """Base class of LLM backends. ``name`` identifies the backend and model (in caches, logs, annotation keys)."""

    name: str = "backend"
    #: how many requests the backend keeps in flight at once (callers size their chunks from it)
    max_in_flight: int = 1
    #: a transformers tokenizer when the backend has one (used to cut documents by tokens)
    tokenizer: Any = None
    #: the generation options this backend honours (see the module docstring)
    supported_options: frozenset[str] = frozenset()

    @abstractmethod
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
        """Answer every message list; results are aligned with the input."""

    def label_logprobs(
        self, messages: Sequence[Messages], labels: Sequence[str], *, prefix: str = ""
    ) -> list[np.ndarray]:
        """Log-probabilities of each label as the first answer token (a likelihood read-out, no generation).

        Only backends that run the model here implement it (``TransformersBackend``)."""
        raise UnsupportedOption(
            f"{self.name} cannot read label likelihoods; use a local transformers backend (hf:...) or the "
            "generation read-out"
        )

    def encode(self, messages: Messages, prefix: str = "") -> list[int]:
        """The token ids of a prompt as this backend would run it (backends with a tokenizer implement it)."""
        raise UnsupportedOption(f"{self.name} does not tokenise prompts here")

    def check_options(self, options: Mapping[str, Any]) -> None:
        """``UnsupportedOption`` naming the first option this backend does not honour."""
        bad = sorted(set(options) - set(self.supported_options))
        if bad:
            raise UnsupportedOption(
                f"{self.name} cannot honour the generation setting(s) {bad}; it honours "
                f"{sorted(self.supported_options) or 'none beyond max_new_tokens and temperature'}"
            )

    def identity(self) -> dict[str, Any]:
        """What identifies the answers this backend gives (for the response cache): its class and name."""
        return {"backend": type(self).__name__, "name": self.name}

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


_KINDS = ("hf", "openai", "haystack", "vllm")


def parse_backend_spec(spec: str) -> tuple[str, str]:
    """Split ``kind:rest``; raises a ValueError naming the accepted forms."""
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in _KINDS or not rest:
        raise ValueError(
            f"unknown LLM backend {spec!r}; use hf:PATH_OR_ID, openai:MODEL[@BASE_URL], haystack:MODULE:ATTR "
            "or vllm:PATH_OR_ID"
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
            from reason2rank.llm.haystack_backend import HaystackBackend

            return HaystackBackend(spec, **options)
        raise TypeError(
            f"an LLM backend must be a spec string, a Backend or a Haystack ChatGenerator; got {type(spec).__name__}"
        )
    kind, rest = parse_backend_spec(spec)
    if kind == "openai":
        from reason2rank.llm.openai_backend import OpenAIBackend

        model, base_url = split_model_url(rest)
        if base_url is not None:
            options.setdefault("base_url", base_url)
        return OpenAIBackend(model, **options)
    if kind == "hf":
        from reason2rank.llm.transformers_backend import TransformersBackend

        return TransformersBackend(rest, **options)
    if kind == "vllm":
        from reason2rank.llm.vllm_backend import VLLMBackend

        return VLLMBackend(rest, **options)
    from reason2rank.llm.haystack_backend import HaystackBackend, import_generator

    return HaystackBackend(import_generator(rest), **options)


def split_model_url(rest: str) -> tuple[str, str | None]:
    """``MODEL@http://host/v1`` → (MODEL, URL). The split is at the last ``@`` followed by a URL scheme,
    so model names containing ``@`` stay whole."""
    for scheme in ("@http://", "@https://"):
        idx = rest.rfind(scheme)
        if idx > 0:
            return rest[:idx], rest[idx + 1 :]
    return rest, None
