"""Ranking strategies that return an order, on the LLM layer (any backend, any decoder LLM):

- ``listwise``: sliding windows (RankGPT, RankZephyr, DeAR stage 2) — ``ListwiseReranker``;
- ``setwise``: heap sort over sets (llm-rankers, Rank-R1) — ``SetwiseReranker``;
- ``pairwise``: both-order comparisons with comparison reasoning (PRP, R2R) — ``PairwiseReranker``;
- ``icr``: in-context reranking from the LLM's attention, two forward passes (ICR) — ``ICRReranker``;
- ``two_stage``: a pointwise first pass, then a strategy over its top-m (DeAR) — ``TwoStageReranker``;
- ``base``: the LLM, prompts, the lockstep scheduler that batches across queries (``LLMStrategy``, ``run_plans``).

Each is a family of ``reason2rank.load`` (``family="listwise"`` and so on), so both adapters take them.
"""

from reason2rank.strategies.base import LLMStrategy, PlanResult, run_plans
from reason2rank.strategies.icr import ICRReranker
from reason2rank.strategies.listwise import ListwiseReranker, sliding_windows
from reason2rank.strategies.pairwise import PairwiseReranker
from reason2rank.strategies.setwise import SetwiseReranker, heap_depths
from reason2rank.strategies.two_stage import TwoStageReranker

__all__ = [
    "ICRReranker",
    "LLMStrategy",
    "ListwiseReranker",
    "PairwiseReranker",
    "PlanResult",
    "SetwiseReranker",
    "TwoStageReranker",
    "heap_depths",
    "run_plans",
    "sliding_windows",
]
