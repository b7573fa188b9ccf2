"""Haystack ranker component over the reason2rank core (``haystack_integrations`` namespace, so saved pipelines
load with a plain ``Pipeline.loads``)."""

from haystack_integrations.components.rankers.reason2rank.ranker import R2RRanker

__all__ = ["R2RRanker"]
