"""Haystack components for reason2rank.

The component lives in ``haystack_integrations.components.rankers.reason2rank`` (the module path a saved
pipeline records, which Haystack's deserialisation allowlist accepts by default); it is re-exported here.
"""

from haystack_integrations.components.rankers.reason2rank import R2RRanker

__all__ = ["R2RRanker"]
