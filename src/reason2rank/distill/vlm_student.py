"""Vision-language student (GMR, "SFT or contrastive learning?"): the VLM family trained on yes/no relevance.

Two objectives, selectable and combinable, so the GMR comparison can be run with the existing trainer:

- ``yes_no_sft``: cross-entropy of the answer token over the whole vocabulary at the last prompt position — the
  target is the positive word ("yes") for a relevant document (label >= 0.5) and the negative word ("no") else;
- ``infonce``: InfoNCE on log p(yes) over each group (its first slot is the positive, the rest its negatives):
  ``-log softmax(log p_yes / temperature)[positive]``.

The ranking objectives of the other students (``pointwise_bce``, ``listnet``, ...) also apply, on the score the
family ranks with (logit(yes) − logit(no)). LoRA goes on the language model (``lora`` in the config); the vision
tower stays frozen unless ``train_vision: true``. The trained model opens as the ``vlm`` family.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from reason2rank.distill.batching import Group
from reason2rank.distill.students import RANKING_OBJECTIVES, Student
from reason2rank.scorers.vlm import VLMReranker

__all__ = ["VLM_OBJECTIVES", "VLMStudent", "infonce_p_yes", "yes_no_sft"]

VLM_OBJECTIVES: dict[str, dict[str, Any]] = {"yes_no_sft": {}, "infonce": {"temperature": 1.0}}


def yes_no_sft(logits: Tensor, labels: Tensor, positive_id: int, negative_id: int) -> Tensor:
    """Mean cross-entropy of the answer token: ``logits`` (n, vocab) at the last position, ``labels`` (n,) in [0, 1]
    (>= 0.5: the answer is the positive word)."""
    target = torch.where(labels >= 0.5, positive_id, negative_id).long()
    return F.cross_entropy(logits.float(), target)


def infonce_p_yes(log_p_yes: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """InfoNCE over groups: ``log_p_yes`` (groups, slots), slot 0 the positive, ``mask`` the real slots."""
    x = (log_p_yes.float() / temperature).masked_fill(~mask, float("-inf"))
    return -(x.log_softmax(-1)[:, 0]).mean()


class VLMStudent(Student):
    """The ``vlm`` family as a trainable student (see the module docstring)."""

    reranker: VLMReranker

    kind = "vlm"
    known_objectives = {**RANKING_OBJECTIVES, **VLM_OBJECTIVES}

    def __init__(
        self,
        model: str | os.PathLike[str],
        objectives: Mapping[str, Any],
        *,
        weighting: str = "fixed",
        lora: Mapping[str, Any] | None = None,
        train_vision: bool = False,
        max_length: int = 4096,
        device: str | torch.device | None = None,
        token: str | None = None,
        revision: str | None = None,
        **family_options: Any,
    ) -> None:
        reranker = VLMReranker(model, max_length=max_length, device=device, dtype="fp32", progress=False,
                               token=token, revision=revision, freeze_vision=not train_vision,
                               **family_options)  # fmt: skip
        super().__init__(reranker, objectives, weighting)
        base = reranker.model
        if lora:
            from peft import LoraConfig, get_peft_model

            known = {"r", "alpha", "dropout", "target_modules"}
            extra = set(lora) - known
            if extra:
                raise ValueError(f"unknown LoRA option(s) {sorted(extra)}; known: {', '.join(sorted(known))}")
            # the language model's projections only: names under the vision tower ("visual") are left out
            targets = lora.get("target_modules") or (
                r"^(?!.*visual).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
            )
            cfg = LoraConfig(r=int(lora.get("r", 16)), lora_alpha=int(lora.get("alpha", 32)),
                             lora_dropout=float(lora.get("dropout", 0.05)), target_modules=targets)  # fmt: skip
            reranker._peft = get_peft_model(base, cfg)
        self.backbone = base
        reranker.trainable()
        self.train()

    @classmethod
    def from_config(cls, cfg: Any, device: torch.device | str | None = None) -> VLMStudent:
        """A VLM student from a training config (``student.type: vlm``)."""
        s = cfg.student
        return cls(cfg.resolve(s.model), cfg.objectives, weighting=cfg.weighting, lora=s.lora,
                   max_length=s.max_length or 4096, device=device, token=s.token, revision=s.revision)  # fmt: skip

    def train(self, mode: bool = True) -> VLMStudent:
        """Training mode, with a frozen vision tower kept in eval mode."""
        super().train(mode)
        if mode and getattr(self, "reranker", None) is not None:
            self.reranker.trainable()
        return self

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        """The VLM prompts of every (query, document) of every group, and the group tensors."""
        r = self.reranker
        pairs = [(g.query.text, r.document_parts(d), d.id) for g in groups for d in g.docs]
        feats, _ = r.features(pairs)
        batch: dict[str, Any] = {"score": r.inputs.collate(feats)}
        batch.update(self._group_tensors(groups))
        return batch

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss": total, **parts}``: the answer-token logits at the last position give every objective."""
        r = self.reranker
        out = self.backbone.model(**batch["score"])
        hidden = out.last_hidden_state[:, -1].float()
        logits = self.backbone.get_output_embeddings()(hidden.to(out.last_hidden_state.dtype)).float()
        score = logits[:, r.positive_id] - logits[:, r.negative_id]
        parts = self.ranking_losses(score, batch)
        slots, mask = batch["slots"], batch["mask"]
        if "yes_no_sft" in self.objectives:
            flat_labels = torch.zeros(score.shape[0], device=score.device)
            flat_labels[slots[mask]] = batch["labels"][mask].float().to(score.device)
            parts["yes_no_sft"] = yes_no_sft(logits, flat_labels, r.positive_id, r.negative_id)
        if "infonce" in self.objectives:
            log_p_yes = logits.log_softmax(-1)[:, r.positive_id]
            grouped = log_p_yes[slots.clamp(min=0)]
            parts["infonce"] = infonce_p_yes(grouped, mask, float(self.objectives["infonce"]["temperature"]))
        return {"loss": self.combine(parts), **parts}
