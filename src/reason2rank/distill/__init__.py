"""Reason-to-Rank distillation: students that learn to rank and to explain from a teacher.

- :mod:`.dataset` — the training set (teacher grades, ranks, reasoning, evidence, comparisons per query),
  built from a teacher's annotation store or from plain qrels; a documented JSONL format.
- :mod:`.batching` — groups of one positive and its negatives, reproducible from (seed, step).
- :mod:`.losses` — every objective (pointwise, pairwise, listwise, DeAR, LM, evidence tagging) and the
  fixed / uncertainty / sigmoid loss weightings.
- :mod:`.students` — :class:`EncoderStudent` (cross-encoder + evidence head) and :class:`DecoderStudent`
  (causal LM + LoRA + rank head, learns the teacher's reasoning).
- :mod:`.trainer` — the accelerate trainer (``reason2rank train --config``), checkpoints and resume.
"""

from reason2rank.distill.config import TrainConfig
from reason2rank.distill.dataset import Candidate, Comparison, TrainingQuery, TrainingSet
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
from reason2rank.distill.trainer import Trainer, TrainResult, evaluate, train

__all__ = [
    "Candidate",
    "Comparison",
    "FixedWeights",
    "SigmoidWeights",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingQuery",
    "TrainingSet",
    "UncertaintyWeights",
    "dear_loss",
    "evaluate",
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
    "train",
]
