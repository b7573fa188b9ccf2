"""Reinforcement learning for rerankers: GRPO on TRL for Rank-R1 (setwise), ProRank stage 1 (binary relevance)
and MM-R5 (listwise), with rewards as plain functions (:mod:`reason2rank.rl.rewards`)."""

from __future__ import annotations

from reason2rank.rl.config import GRPOTrainConfig
from reason2rank.rl.rewards import (
    REWARDS,
    binary_relevance_reward,
    listwise_reward,
    rank_r1_reward,
    reciprocal_cube_gain,
)
from reason2rank.rl.trainer import GRPOResult, TieWatch, train_grpo

__all__ = [
    "REWARDS",
    "GRPOResult",
    "GRPOTrainConfig",
    "TieWatch",
    "binary_relevance_reward",
    "listwise_reward",
    "rank_r1_reward",
    "reciprocal_cube_gain",
    "train_grpo",
]
