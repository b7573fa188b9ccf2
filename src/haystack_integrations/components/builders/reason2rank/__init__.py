"""Haystack prompt and answer builders for cited, reasoned answers (reason2rank core)."""

from haystack_integrations.components.builders.reason2rank.citations import (
    R2RCitationPromptBuilder,
    R2RCitedAnswerBuilder,
)

__all__ = ["R2RCitationPromptBuilder", "R2RCitedAnswerBuilder"]
