"""Haystack retrieval per sub-query, fused by reciprocal-rank fusion with provenance (reason2rank core)."""

from haystack_integrations.components.retrievers.reason2rank.multi_query import R2RMultiQueryRetriever

__all__ = ["R2RMultiQueryRetriever"]
