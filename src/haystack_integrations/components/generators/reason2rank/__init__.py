"""A Haystack ChatGenerator over reason2rank's LLM layer (local transformers, OpenAI-compatible servers, vLLM)."""

from haystack_integrations.components.generators.reason2rank.chat import R2RChatGenerator

__all__ = ["R2RChatGenerator"]
