"""Distillation losses for Reason-to-Rank / DeAR training (pure torch); see :mod:`.losses`."""

from reason2rank.distill.losses import (
    FixedWeights,
    SigmoidWeights,
    UncertaintyWeights,
    dear_loss,
    evidence_tagging,
    group_softmax_ce,
    kl_distill,
    lambda_loss,
    listnet,
    lm_loss,
    mask_prompt_labels,
    pointwise_bce,
    pointwise_mse,
    ranknet_grades,
    ranknet_pairs,
)

__all__ = [
    "FixedWeights",
    "SigmoidWeights",
    "UncertaintyWeights",
    "dear_loss",
    "evidence_tagging",
    "group_softmax_ce",
    "kl_distill",
    "lambda_loss",
    "listnet",
    "lm_loss",
    "mask_prompt_labels",
    "pointwise_bce",
    "pointwise_mse",
    "ranknet_grades",
    "ranknet_pairs",
]
