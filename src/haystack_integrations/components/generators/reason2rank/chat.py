"""``R2RChatGenerator``: reason2rank's LLM layer as a Haystack ChatGenerator.

Haystack 3.x has no local transformers chat generator in its core; this one runs any ``reason2rank.llm`` backend
spec (``hf:PATH`` — local transformers, batched, greedy by default —, ``openai:MODEL@URL``, ``vllm:PATH``) behind
the ChatGenerator interface, so a pipeline can use a local model such as SmolLM2 for query decomposition and
answers. It converts messages; generation is the LLM layer's.
"""

from __future__ import annotations

import copy
from typing import Any

from haystack import component, default_from_dict, default_to_dict
from haystack.dataclasses import ChatMessage

from reason2rank.llm.backend import GenerationSettings
from reason2rank.llm.client import LLM, LLMRequest

_SETTINGS = ("max_new_tokens", "temperature", "top_p", "seed", "stop")


@component
class R2RChatGenerator:
    """
    Generate chat replies with a reason2rank LLM backend.

    Usage example:
    ```python
    from haystack.dataclasses import ChatMessage
    from haystack_r2r import R2RChatGenerator

    llm = R2RChatGenerator(model="hf:path/to/SmolLM2-135M-Instruct", generation_kwargs={"max_new_tokens": 256})
    llm.run(messages=[ChatMessage.from_user("Say hello")])["replies"][0].text
    ```

    :param model: a backend spec string (``hf:PATH``, ``openai:MODEL@URL``, ``vllm:PATH``).
    :param generation_kwargs: defaults for every call: ``max_new_tokens``, ``temperature``, ``top_p``, ``seed``,
        ``stop``; anything else is refused (never silently dropped).
    :param backend_options: options of the backend's constructor (e.g. ``{"batch_size": 4}``, ``{"device": "cpu"}``).
    """

    def __init__(
        self,
        *,
        model: str,
        generation_kwargs: dict[str, Any] | None = None,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, str) or ":" not in model:
            raise ValueError(f"model must be a backend spec string such as 'hf:PATH', got {model!r}")
        self.model = model
        self.generation_kwargs = dict(generation_kwargs or {})
        self.backend_options = dict(backend_options or {})
        self._settings(None)  # refuse unknown settings now
        self.llm: LLM | None = None

    def _settings(self, override: dict[str, Any] | None) -> GenerationSettings:
        kw = {**self.generation_kwargs, **(override or {})}
        unknown = sorted(set(kw) - set(_SETTINGS))
        if unknown:
            raise ValueError(
                f"R2RChatGenerator: unsupported generation_kwargs {unknown}; supported: {list(_SETTINGS)}"
            )
        if "stop" in kw:
            kw["stop"] = tuple(kw["stop"] or ())
        return GenerationSettings(**kw)

    def warm_up(self) -> None:
        """Build the backend (idempotent)."""
        if self.llm is None:
            self.llm = LLM(self.model, **self.backend_options)

    @component.output_types(replies=list[ChatMessage])
    def run(
        self, messages: list[ChatMessage], generation_kwargs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """
        Reply to ``messages``.

        :param messages: the conversation (system, user and assistant messages).
        :param generation_kwargs: per-call settings (the same names as the constructor's).
        :returns: ``replies``: one assistant message (its meta: token counts, finish reason, reasoning).
        """
        self.warm_up()
        assert self.llm is not None
        chat = [{"role": m.role.value, "content": m.text or ""} for m in messages]
        ((res, _rec),) = self.llm.generate([LLMRequest(chat, self._settings(generation_kwargs))])
        if res.error is not None:
            raise RuntimeError(f"R2RChatGenerator: generation failed: {res.error}")
        meta = {
            "model": self.model,
            "finish_reason": res.finish_reason,
            "usage": {"prompt_tokens": res.prompt_tokens, "completion_tokens": res.completion_tokens},
        }
        if res.reasoning:
            meta["reasoning"] = res.reasoning
        return {"replies": [ChatMessage.from_assistant(res.text or "", meta=meta)]}

    def to_dict(self) -> dict[str, Any]:
        """
        Serialize this component to a dictionary.

        :returns: The dictionary, as ``Pipeline.dumps`` writes it.
        """
        return default_to_dict(
            self,
            model=self.model,
            generation_kwargs=copy.deepcopy(self.generation_kwargs),
            backend_options=copy.deepcopy(self.backend_options),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> R2RChatGenerator:
        """
        Deserialize the component from a dictionary.

        :param data: The dictionary ``to_dict`` wrote.
        :returns: The component.
        """
        return default_from_dict(cls, data)
