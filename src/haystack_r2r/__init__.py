"""Haystack components for reason2rank.

The components live under ``haystack_integrations.components.*.reason2rank`` (the module paths a saved pipeline
records, which Haystack's deserialisation allowlist accepts by default); they are re-exported here:
``R2RRanker`` (rankers), and for Omni-RAG ``R2RQueryDecomposer`` (query), ``R2RMultiQueryRetriever``
(retrievers), ``R2RCitationPromptBuilder`` and ``R2RCitedAnswerBuilder`` (builders), and ``R2RChatGenerator``
(generators: reason2rank's LLM layer as a ChatGenerator).
"""

from haystack_integrations.components.builders.reason2rank import (
    R2RCitationPromptBuilder,
    R2RCitedAnswerBuilder,
)
from haystack_integrations.components.generators.reason2rank import R2RChatGenerator
from haystack_integrations.components.query.reason2rank import R2RQueryDecomposer
from haystack_integrations.components.rankers.reason2rank import R2RRanker
from haystack_integrations.components.retrievers.reason2rank import R2RMultiQueryRetriever

__all__ = [
    "R2RCitationPromptBuilder",
    "R2RChatGenerator",
    "R2RCitedAnswerBuilder",
    "R2RMultiQueryRetriever",
    "R2RQueryDecomposer",
    "R2RRanker",
]
