"""Haystack query understanding over the reason2rank core (Omni-RAG decomposition)."""

from haystack_integrations.components.query.reason2rank.decomposer import R2RQueryDecomposer

__all__ = ["R2RQueryDecomposer"]
