"""vLLM's offline engine (``vllm.LLM``) as an LLM backend, in this process (``pip install 'reason2rank[vllm]'``).

vLLM is imported only when the first request is generated (it needs a GPU build); constructing the backend and
building requests does not import it, so request building is testable anywhere. Every prompt of a call goes to
vLLM at once (its scheduler batches them, with automatic prefix caching); greedy decoding is
``temperature=0``. Structured output (a JSON schema) uses vLLM's structured outputs when requested.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from reason2rank.llm.backend import Backend, GenerationResult, Messages, OnResult, schema_for
from reason2rank.llm.distinct_values import server_schema

__all__ = ["VLLMBackend", "sampling_kwargs"]


def sampling_kwargs(
    max_new_tokens: int,
    temperature: float,
    options: Mapping[str, Any],
    json_schema: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The keyword arguments of ``vllm.SamplingParams`` for one request (``structured_outputs`` holds the JSON
    schema as a plain dict; ``VLLMBackend`` turns it into vLLM's parameter object)."""
    kw: dict[str, Any] = {"max_tokens": int(max_new_tokens), "temperature": float(temperature)}
    if options.get("top_p") is not None:
        kw["top_p"] = float(options["top_p"])
    if options.get("seed") is not None:
        kw["seed"] = int(options["seed"])
    if options.get("stop"):
        kw["stop"] = list(options["stop"])
    if options.get("repetition_penalty") is not None:
        kw["repetition_penalty"] = float(options["repetition_penalty"])
    if json_schema is not None:
        kw["structured_outputs"] = {"json": server_schema(json_schema)}
    return kw


class VLLMBackend(Backend):
    """``vllm:PATH_OR_ID``: a model served by ``vllm.LLM`` in this process.

    ``engine_kwargs`` go to ``vllm.LLM`` (``tensor_parallel_size``, ``gpu_memory_utilization``, ``max_model_len``,
    ``dtype``, ...); ``enable_prefix_caching`` defaults to True. Pass ``llm=`` to use an engine you built.
    """

    supported_options = frozenset({"top_p", "seed", "stop", "prefix", "repetition_penalty"})

    def __init__(self, model: str, *, llm: Any = None, name: str | None = None, **engine_kwargs: Any) -> None:
        self.model = str(model)
        self.name = name or f"vllm:{self.model}"
        self.engine_kwargs = {"enable_prefix_caching": True, **engine_kwargs}
        self._llm = llm
        self.max_in_flight = 256

    def _engine(self) -> Any:
        if self._llm is None:
            try:
                import vllm
            except ImportError as e:
                raise ImportError(
                    "the vllm backend needs vLLM (a GPU build): pip install 'reason2rank[vllm]'"
                ) from e
            self._llm = vllm.LLM(model=self.model, **self.engine_kwargs)
        return self._llm

    @staticmethod
    def conversation(messages: Messages, prefix: str = "") -> tuple[list[dict[str, str]], dict[str, Any]]:
        """The conversation ``vllm.LLM.chat`` gets and its chat options: a ``prefix`` becomes a final assistant
        message that vLLM continues."""
        conv = [dict(m) for m in messages]
        if prefix:
            conv.append({"role": "assistant", "content": prefix})
            return conv, {"add_generation_prompt": False, "continue_final_message": True}
        return conv, {"add_generation_prompt": True, "continue_final_message": False}

    def requests(
        self,
        messages: Sequence[Messages],
        *,
        json_schema: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        **options: Any,
    ) -> list[tuple[list[dict[str, str]], dict[str, Any], dict[str, Any]]]:
        """(conversation, chat options, sampling kwargs) of each request, without importing vLLM."""
        self.check_options(options)
        prefix = str(options.get("prefix", ""))
        out = []
        for i, m in enumerate(messages):
            conv, chat = self.conversation(m, prefix)
            out.append(
                (
                    conv,
                    chat,
                    sampling_kwargs(max_new_tokens, temperature, options, schema_for(json_schema, i)),
                )
            )
        return out

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
        """Generate every request with one ``LLM.chat`` call per chat-option group; see ``Backend.generate``."""
        reqs = self.requests(
            messages,
            json_schema=json_schema,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            **options,
        )
        if not reqs:
            return []
        engine = self._engine()
        import vllm

        results: list[GenerationResult | None] = [None] * len(reqs)
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, (_, chat, _) in enumerate(reqs):
            groups.setdefault((chat["add_generation_prompt"], chat["continue_final_message"]), []).append(i)
        for (add_prompt, cont), idx in groups.items():
            params = [vllm.SamplingParams(**_vllm_params(vllm, reqs[i][2])) for i in idx]
            started = time.perf_counter()
            outputs = engine.chat(
                [reqs[i][0] for i in idx],
                sampling_params=params,
                use_tqdm=False,
                add_generation_prompt=add_prompt,
                continue_final_message=cont,
            )
            elapsed = time.perf_counter() - started
            for i, out in zip(idx, outputs):
                choice = out.outputs[0]
                res = GenerationResult(
                    text=choice.text,
                    prompt_tokens=len(out.prompt_token_ids or []),
                    completion_tokens=len(choice.token_ids),
                    finish_reason=choice.finish_reason,
                    latency_s=elapsed,
                )
                results[i] = res
                if on_result is not None:
                    on_result(i, res)
        return [r for r in results if r is not None]


def _vllm_params(vllm: Any, kw: Mapping[str, Any]) -> dict[str, Any]:
    """``sampling_kwargs`` with the structured-output dict turned into the parameter object this vLLM has."""
    out = dict(kw)
    spec = out.pop("structured_outputs", None)
    if spec is not None:
        sampling: Any = getattr(vllm, "sampling_params", None)
        cls = getattr(sampling, "StructuredOutputsParams", None)
        if cls is not None:
            out["structured_outputs"] = cls(**spec)
        else:  # older vLLM
            out["guided_decoding"] = sampling.GuidedDecodingParams(**spec)
    return out
