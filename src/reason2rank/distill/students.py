"""Students: small models that learn to rank and to explain from a teacher.

Each student wraps the inference family it will be loaded as, so training and inference share one
tokenisation and one forward path, and ``student.save(dir)`` writes a directory ``reason2rank.load``,
``R2RReranker`` and ``R2RRanker`` open:

- :class:`EncoderStudent` (BERT, MiniLM, DeBERTa, ...) is a ``cross-encoder``: the relevance logit of
  ``AutoModelForSequenceClassification`` (one label) plus an *evidence head*, a linear layer over the last
  hidden state of every token that tags the teacher's evidence sentence. It explains with evidence.
- :class:`DecoderStudent` (Llama, Qwen2, ...) is a ``causal-lm`` with the ``rank_head`` read-out: a scalar
  head on the last token of each (query, document) prompt, so each document is scored from its own input.
  With LoRA (peft) by default. The same model learns to write the teacher's direct reasoning and
  comparison reasoning; the language-model loss covers the answer tokens only.

``student(batch)`` returns the weighted total loss and its parts; ``student.collate(groups)`` builds the
batch from :class:`reason2rank.distill.batching.Group` objects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from reason2rank.distill import losses as L
from reason2rank.distill.batching import Group, pad_groups
from reason2rank.distill.config import TrainConfig
from reason2rank.engine import pad_batch
from reason2rank.scorers.base import TransformerReranker

if TYPE_CHECKING:
    from reason2rank.scorers.causal_lm import CausalLMReranker
    from reason2rank.scorers.cross_encoder import CrossEncoderReranker

#: objectives on the scores of a group, with their options and defaults
RANKING_OBJECTIVES: dict[str, dict[str, Any]] = {
    "pointwise_bce": {},
    "pointwise_mse": {},
    "ranknet_grades": {"soft_targets": False},
    "ranknet_pairs": {},
    "listnet": {"temperature": 1.0},
    "kl": {"temperature": 2.0},
    "lambda": {},
    "group_softmax_ce": {},
    "dear": {"alpha": 0.1, "temperature": 2.0},
}
ENCODER_OBJECTIVES: dict[str, dict[str, Any]] = {"evidence": {"pos_weight": None}}
DECODER_OBJECTIVES: dict[str, dict[str, Any]] = {"lm_reasoning": {}, "lm_comparison": {}}
#: loss weightings: fixed weights, learned uncertainty weights (Kendall et al.), R2R's learned sigmoid weights
WEIGHTINGS = ("fixed", "uncertainty", "sigmoid")


def parse_objectives(
    spec: Mapping[str, Any], known: Mapping[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``{name: weight}`` or ``{name: {weight: w, option: value}}`` → ``{name: {weight, **options}}``."""
    if not spec:
        raise ValueError(f"no objectives given; choose from: {', '.join(known)}")
    out: dict[str, dict[str, Any]] = {}
    for name, value in spec.items():
        if name not in known:
            raise ValueError(f"unknown objective {name!r} for this student; known: {', '.join(known)}")
        opts = dict(known[name])
        if isinstance(value, Mapping):
            extra = set(value) - set(opts) - {"weight"}
            if extra:
                raise ValueError(
                    f"objective {name!r} has no option(s) {sorted(extra)}; it takes: weight"
                    + "".join(f", {k}" for k in opts)
                )
            opts.update(value)
            weight = float(value.get("weight", 1.0))
        else:
            weight = float(value)
        if not weight > 0:
            raise ValueError(f"objective {name!r} needs a positive weight, got {weight}")
        opts["weight"] = weight
        out[name] = opts
    return out


class Student(nn.Module):
    """What both students share: objectives, their weighting, ranking losses, saving."""

    kind = ""
    known_objectives: dict[str, dict[str, Any]] = RANKING_OBJECTIVES

    def __init__(
        self, reranker: TransformerReranker, objectives: Mapping[str, Any], weighting: str = "fixed"
    ) -> None:
        super().__init__()
        self.reranker = reranker
        self.objectives = parse_objectives(objectives, self.known_objectives)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
        self.weighting = weighting
        if weighting == "uncertainty":
            self.weigher: nn.Module | None = L.UncertaintyWeights(list(self.objectives))
            self._fixed = None
        elif weighting == "sigmoid":
            self.weigher = L.SigmoidWeights(list(self.objectives))
            self._fixed = None
        else:
            self.weigher = None
            self._fixed = L.FixedWeights({k: v["weight"] for k, v in self.objectives.items()})

    # -- pieces subclasses use -------------------------------------------------------------------------
    @staticmethod
    def _group_tensors(groups: Sequence[Group]) -> dict[str, Tensor]:
        slots, mask, targets, labels = pad_groups(groups)
        pb, pi, pj, pp = [], [], [], []
        for b, g in enumerate(groups):
            for i, j, p in g.pairs:
                pb.append(b)
                pi.append(i)
                pj.append(j)
                pp.append(p)
        return {
            "slots": torch.as_tensor(slots),
            "mask": torch.as_tensor(mask),
            "targets": torch.as_tensor(targets),
            "labels": torch.as_tensor(labels),
            "pair_b": torch.as_tensor(pb, dtype=torch.long),
            "pair_i": torch.as_tensor(pi, dtype=torch.long),
            "pair_j": torch.as_tensor(pj, dtype=torch.long),
            "pair_p": torch.as_tensor(pp, dtype=torch.float32),
        }

    def ranking_losses(self, flat_scores: Tensor, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Every configured ranking objective on the group scores (flat scores mapped to their slots)."""
        slots, mask = batch["slots"], batch["mask"]
        scores = flat_scores.float()[slots.clamp(min=0)]
        scores = torch.where(mask, scores, torch.zeros_like(scores))
        t, y = batch["targets"], batch["labels"]
        out: dict[str, Tensor] = {}
        for name, o in self.objectives.items():
            if name == "pointwise_bce":
                out[name] = L.pointwise_bce(scores, y, mask)
            elif name == "pointwise_mse":
                out[name] = L.pointwise_mse(scores, t, mask)
            elif name == "ranknet_grades":
                out[name] = L.ranknet_grades(scores, t, mask, soft_targets=bool(o["soft_targets"]))
            elif name == "ranknet_pairs" and batch["pair_b"].numel():
                b, i, j = batch["pair_b"], batch["pair_i"], batch["pair_j"]
                out[name] = L.ranknet_pairs(scores[b, i], scores[b, j], batch["pair_p"])
            elif name == "listnet":
                out[name] = L.listnet(scores, t, mask, temperature=float(o["temperature"]))
            elif name == "kl":
                out[name] = L.kl_distill(scores, t, mask, temperature=float(o["temperature"]))
            elif name == "lambda":
                out[name] = L.lambda_loss(scores, t, mask)
            elif name == "group_softmax_ce":
                out[name] = L.group_softmax_ce(scores, 0, mask)
            elif name == "dear":
                out[name] = L.dear_loss(
                    scores, t, 0, mask, alpha=float(o["alpha"]), temperature=float(o["temperature"])
                )
        return out

    def combine(self, parts: Mapping[str, Tensor]) -> Tensor:
        """The total loss of the parts present, under the configured weighting."""
        if not parts:
            raise RuntimeError(
                "no objective applies to this batch (e.g. only reasoning losses and no reasoning)"
            )
        if self.weigher is not None:
            return self.weigher(parts)
        assert self._fixed is not None
        return self._fixed(parts)

    @property
    def _no_split_modules(self) -> Any:
        """The backbone's transformer block classes: accelerate's FSDP wraps each as its own shard unit."""
        backbone = self._modules.get("backbone")
        return getattr(backbone, "_no_split_modules", None) if backbone is not None else None

    def loss_weights(self) -> dict[str, float]:
        """The current weight of each objective (learned ones change as training goes; the trainer logs them)."""
        if self.weigher is not None:
            return self.weigher.weights()  # type: ignore[operator]
        return {k: v["weight"] for k, v in self.objectives.items()}

    def to_device(self, batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
        """Tensors of a (possibly nested) batch moved to ``device``."""
        return {
            k: self.to_device(v, device)
            if isinstance(v, Mapping)
            else v.to(device)
            if isinstance(v, Tensor)
            else v
            for k, v in batch.items()
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model directory (weights, heads, tokenizer, ``r2r_model.json``)."""
        was_training = self.training
        self.eval()
        try:
            return self.reranker.save(path)
        finally:
            self.train(was_training)

    @classmethod
    def from_config(cls, cfg: TrainConfig, device: torch.device | str | None = None) -> Student:
        """The student a training config describes (``cfg.student``, ``cfg.objectives``, ``cfg.weighting``)."""
        raise NotImplementedError

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        """The tensors of one micro-batch of groups."""
        raise NotImplementedError

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """``{"loss": total, **parts}`` for a collated batch."""
        raise NotImplementedError


def enable_checkpointing(model: Any) -> None:
    """Activation (gradient) checkpointing, non-reentrant, under the name this transformers version uses."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _num_labels(path: str, hub_kwargs: Mapping[str, Any]) -> int | None:
    """The number of output labels of a sequence classifier at ``path``; ``None`` for a plain encoder."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path, **{k: v for k, v in hub_kwargs.items() if v})
    archs = getattr(cfg, "architectures", None) or []
    is_classifier = any(a.endswith("ForSequenceClassification") for a in archs)
    return cfg.num_labels if is_classifier else None


class EncoderStudent(Student):
    """Cross-encoder student with a ranking head (the sequence-classification logit) and an evidence head."""

    reranker: CrossEncoderReranker

    kind = "encoder"
    known_objectives = {**RANKING_OBJECTIVES, **ENCODER_OBJECTIVES}

    def __init__(
        self,
        model: str | os.PathLike,
        objectives: Mapping[str, Any],
        *,
        weighting: str = "fixed",
        max_length: int = 256,
        max_query_length: int | None = None,
        device: str | torch.device | None = None,
        evidence_threshold: float = 0.5,
        gradient_checkpointing: bool = False,
        token: str | None = None,
        revision: str | None = None,
    ) -> None:
        from reason2rank.scorers.cross_encoder import CrossEncoderReranker

        hub: dict[str, Any] = {"token": token, "revision": revision}
        labels = _num_labels(str(model), hub)
        model_kwargs: dict[str, Any] = {}
        if labels != 1:  # a plain encoder, or a classifier with another number of labels: new 1-logit head
            model_kwargs = {"num_labels": 1, "ignore_mismatched_sizes": labels is not None}
        reranker = CrossEncoderReranker(
            model,
            max_length=max_length,
            max_query_length=max_query_length,
            device=device,
            dtype="fp32",
            runtime="torch",  # trained in torch; an ONNX export of the initial model is never used here
            progress=False,
            model_kwargs=model_kwargs,
            evidence_threshold=evidence_threshold,
            **hub,
        )
        super().__init__(reranker, objectives, weighting)
        self.backbone = reranker.model
        #: freshly initialised layers: the trainer gives them ``train.head_lr``
        self.new_head_prefixes = ("backbone.classifier.", "backbone.score.") if labels != 1 else ()
        # a fresh fp32 Linear(hidden, 1) only when it is trained: an untrained head would replace occlusion
        self.evidence_head = reranker.attach_evidence_head() if "evidence" in self.objectives else None
        self.tag_negatives = False  # set by the trainer when the teacher gives evidence at all
        if gradient_checkpointing:
            enable_checkpointing(self.backbone)
        self.train()

    @classmethod
    def from_config(cls, cfg: TrainConfig, device: torch.device | str | None = None) -> EncoderStudent:
        """An encoder student from a training config (``max_length`` 256 unless set)."""
        s = cfg.student
        return cls(
            cfg.resolve(s.model),
            cfg.objectives,
            weighting=cfg.weighting,
            max_length=s.max_length or 256,
            max_query_length=s.max_query_length,
            device=device,
            evidence_threshold=s.evidence_threshold,
            gradient_checkpointing=s.gradient_checkpointing,
            token=s.token,
            revision=s.revision,
        )

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        """Encoded pairs of every group, group tensors and the evidence token labels."""
        from reason2rank.explain.evidence import evidence_token_labels, find_evidence_span

        qtexts = [g.query.text for g in groups for _ in g.candidates]
        docs = [d for g in groups for d in g.docs]
        cands = [c for g in groups for c in g.candidates]
        features, offsets, _ = self.reranker.encode_pairs_with_offsets(qtexts, docs)
        batch: dict[str, Any] = pad_batch(features, self.reranker.pad_token_id, "right")
        batch.update(self._group_tensors(groups))
        if "evidence" in self.objectives:
            width = batch["input_ids"].shape[1]
            ev = torch.full((len(features), width), -100, dtype=torch.long)
            for r, (c, offs) in enumerate(zip(cands, offsets)):
                span = find_evidence_span(c.doc.body, c.evidence) if c.evidence else None
                if span is not None:
                    row = evidence_token_labels(offs, span)
                elif self.tag_negatives and not c.reasoning and (c.grade is not None and c.grade <= 0):
                    row = evidence_token_labels(offs, None)  # an irrelevant document has no evidence
                else:
                    continue
                ev[r, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            batch["evidence_labels"] = ev
        return batch

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Ranking losses (and the evidence loss, from the same backbone pass) of a collated batch."""
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        ev = batch.get("evidence_labels")
        tag = ev is not None and bool((ev != -100).any())
        if tag:  # one backbone pass for both heads, the path explain=k takes at inference
            scores, token_logits = self.reranker.forward_with_evidence(inputs)
        else:
            scores = self.reranker.forward(inputs)
        parts = self.ranking_losses(scores, batch)
        if tag:
            assert ev is not None
            pw = self.objectives["evidence"]["pos_weight"]
            labels = torch.as_tensor(ev)
            parts["evidence"] = L.evidence_tagging(
                token_logits, labels.clamp(min=0), labels != -100, pos_weight=pw
            )
        total = self.combine(parts)
        return {"loss": total, **{k: v.detach() for k, v in parts.items()}}


class DecoderStudent(Student):
    """Decoder LLM student: rank head on the last prompt token, LoRA adapters, reasoning generation."""

    reranker: CausalLMReranker

    kind = "decoder"
    known_objectives = {**RANKING_OBJECTIVES, **DECODER_OBJECTIVES}

    def __init__(
        self,
        model: str | os.PathLike,
        objectives: Mapping[str, Any],
        *,
        weighting: str = "fixed",
        prompt_template: str | os.PathLike | dict[str, Any] = "r2r_student",
        lora: Mapping[str, Any] | None = None,
        max_length: int = 512,
        max_query_length: int = 128,
        max_answer_tokens: int = 128,
        device: str | torch.device | None = None,
        gradient_checkpointing: bool = False,
        token: str | None = None,
        revision: str | None = None,
        readout: str = "rank_head",
    ) -> None:
        from reason2rank.scorers.causal_lm import RANK_HEAD_FILE, CausalLMReranker

        if readout not in ("rank_head", "tokens"):
            raise ValueError(f"a decoder student's readout must be rank_head or tokens, got {readout!r}")
        if readout == "tokens":
            from reason2rank.scorers.scoring_prompts import load_prompt_template

            bundle = load_prompt_template(prompt_template)
            if bundle.readout.get("type") != "tokens":
                raise ValueError(
                    f"student.readout tokens needs a prompt template with a tokens read-out (e.g. binary_relevance); "
                    f"{bundle.name!r} reads out {bundle.readout.get('type')!r}"
                )
        reranker = CausalLMReranker(
            model,
            prompt_template=prompt_template,
            # tokens: the prompt's own read-out (binary_relevance: logit("1") - logit("0")), no new layers
            readout={"type": "rank_head", "file": RANK_HEAD_FILE} if readout == "rank_head" else None,
            new_rank_head=readout == "rank_head",
            max_length=max_length,
            max_query_length=max_query_length,
            device=device,
            dtype="fp32",
            progress=False,
            token=token,
            revision=revision,
        )
        super().__init__(reranker, objectives, weighting)
        t = reranker.template
        if "lm_reasoning" in self.objectives and t.reasoning is None:
            raise ValueError(f"objective lm_reasoning needs a 'reasoning' part in prompt template {t.name!r}")
        if "lm_comparison" in self.objectives and t.comparison is None:
            raise ValueError(
                f"objective lm_comparison needs a 'comparison' part in prompt template {t.name!r}"
            )
        self.max_answer_tokens = max_answer_tokens
        base = reranker.model
        if gradient_checkpointing:
            base.config.use_cache = False
            enable_checkpointing(base)
        self.lora = dict(lora) if lora else None
        if self.lora is not None:
            from peft import LoraConfig, get_peft_model

            known = {"r", "alpha", "dropout", "target_modules"}
            extra = set(self.lora) - known
            if extra:
                raise ValueError(f"unknown LoRA option(s) {sorted(extra)}; known: {', '.join(sorted(known))}")
            cfg = LoraConfig(
                r=int(self.lora.get("r", 16)),
                lora_alpha=int(self.lora.get("alpha", 32)),
                lora_dropout=float(self.lora.get("dropout", 0.05)),
                target_modules=self.lora.get("target_modules") or "all-linear",
                task_type="CAUSAL_LM",
            )
            reranker._peft = get_peft_model(base, cfg)  # injects the adapters into ``base`` in place
        self.backbone = base
        self.rank_head = reranker.rank_head
        eos = reranker.tokenizer.eos_token_id
        self.eos_id = int(eos) if eos is not None else None
        self.train()

    def _answer_features(
        self,
        part: Any,
        queries: list[str],
        doc_groups: list[list[str]],
        slots: tuple[str, ...],
        answers: list[str],
    ) -> tuple[list[dict[str, list[int]]], list[int]]:
        features, _ = self.reranker.build_features(part, queries, doc_groups, slots)
        tok = self.reranker.tokenizer
        answer_ids = tok(list(answers), add_special_tokens=False)["input_ids"] if answers else []
        out, prompt_lengths = [], []
        for f, a in zip(features, answer_ids):
            ids = list(a[: self.max_answer_tokens]) + ([self.eos_id] if self.eos_id is not None else [])
            prompt_lengths.append(len(f["input_ids"]))
            out.append({"input_ids": list(f["input_ids"]) + ids})
        return out, prompt_lengths

    def _lm_batch(self, features: list[dict[str, list[int]]], prompt_lengths: list[int]) -> dict[str, Tensor]:
        batch = pad_batch(features, self.reranker.pad_token_id, "left")
        batch["labels"] = L.mask_prompt_labels(
            batch["input_ids"], prompt_lengths, padding_side="left", attention_mask=batch["attention_mask"]
        )
        return batch

    @classmethod
    def from_config(cls, cfg: TrainConfig, device: torch.device | str | None = None) -> DecoderStudent:
        """A decoder student from a training config (``max_length`` 512 unless set)."""
        s = cfg.student
        return cls(
            cfg.resolve(s.model),
            cfg.objectives,
            weighting=cfg.weighting,
            prompt_template=_resolve_prompt(cfg, s.prompt_template),
            lora=s.lora,
            max_length=s.max_length or 512,
            max_query_length=s.max_query_length or 128,
            max_answer_tokens=s.max_answer_tokens,
            device=device,
            gradient_checkpointing=s.gradient_checkpointing,
            token=s.token,
            revision=s.revision,
            readout=s.readout or "rank_head",
        )

    def collate(self, groups: Sequence[Group]) -> dict[str, Any]:
        """Scoring prompts of every group, group tensors, and LM batches of reasoning and comparisons."""
        r = self.reranker
        qtexts = [g.query.text for g in groups for _ in g.candidates]
        dtexts = [d.full_text for g in groups for d in g.docs]
        features, _ = r.encode_pairs(qtexts, dtexts)
        batch: dict[str, Any] = {"score": pad_batch(features, r.pad_token_id, "left")}
        batch.update(self._group_tensors(groups))
        if "lm_reasoning" in self.objectives:
            items = [(g.query.text, d.full_text, text) for g in groups for d, text in g.reasoning]
            if items:
                f, pl = self._answer_features(
                    r.template.reasoning,
                    [q for q, _, _ in items],
                    [[d] for _, d, _ in items],
                    ("document",),
                    [t for _, _, t in items],
                )
                batch["reasoning"] = self._lm_batch(f, pl)
        if "lm_comparison" in self.objectives:
            pairs = [(g.query.text, a.full_text, b.full_text, t) for g in groups for a, b, t in g.comparisons]
            if pairs:
                f, pl = self._answer_features(
                    r.template.comparison,
                    [q for q, _, _, _ in pairs],
                    [[a, b] for _, a, b, _ in pairs],
                    ("document_a", "document_b"),
                    [t for *_, t in pairs],
                )
                batch["comparison"] = self._lm_batch(f, pl)
        return batch

    def _lm(self, b: Mapping[str, Tensor]) -> Tensor:
        mask = b["attention_mask"]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.backbone(
            input_ids=b["input_ids"], attention_mask=mask, position_ids=position_ids
        ).logits
        return L.lm_loss(logits, b["labels"])

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Ranking losses on the rank head and LM losses on the reasoning and comparison answers."""
        scores = self.reranker.forward(batch["score"])
        parts = self.ranking_losses(scores, batch)
        if "reasoning" in batch:
            parts["lm_reasoning"] = self._lm(batch["reasoning"])
        if "comparison" in batch:
            parts["lm_comparison"] = self._lm(batch["comparison"])
        total = self.combine(parts)
        return {"loss": total, **{k: v.detach() for k, v in parts.items()}}


STUDENTS: dict[str, type[Student]] = {"encoder": EncoderStudent, "decoder": DecoderStudent}


def _resolve_prompt(cfg: Any, value: Any) -> Any:
    """A prompt template of a training config: a file relative to the config's folder when there is one, else a
    built-in name (``r2r_student``) as it is, else the path rule of ``cfg.resolve``."""
    from reason2rank.scorers.scoring_prompts import builtin_prompts

    beside = isinstance(value, str) and cfg.base_dir is not None and (Path(cfg.base_dir) / value).exists()
    if isinstance(value, str) and not beside and value in builtin_prompts():
        return value
    return cfg.resolve(value)
