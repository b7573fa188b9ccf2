"""Cross-encoder family: ``AutoModelForSequenceClassification`` (BERT, MiniLM, DeBERTa-v2/v3, ELECTRA, ...)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reason2rank.engine import Features
from reason2rank.explain.evidence import (
    EVIDENCE_HEAD_FILE,
    Span,
    best_sentence,
    doc_text_start,
    doc_token_offsets,
    load_evidence_head,
    new_evidence_head,
    save_evidence_head,
    sentence_scores,
)
from reason2rank.model_dir import resolve_in
from reason2rank.scorers.base import TransformerReranker
from reason2rank.scorers.pooled_last_layer import pooled_last_layer, pooled_layer_list
from reason2rank.types import Doc, Query


class CrossEncoderReranker(TransformerReranker):
    """Scores each (query, document) pair jointly; score = the relevance logit.

    With one output label the score is that logit; with two, ``logit[1] - logit[0]`` (monotone in the
    softmax probability of "relevant"); otherwise pick the column with ``label_index``. Queries longer than
    ``max_query_length`` tokens are cut; documents are cut to fit ``max_length`` (the query never is).

    An optional *evidence head* (``evidence_head=``: a safetensors file, relative paths resolving against the
    model directory; or ``attach_evidence_head``) is a ``Linear(hidden_size, 1)`` on the last hidden state of
    every token. With it, ``explain=k`` evidence is the sentence of ``doc.text`` whose tokens have the highest
    mean probability (one batched forward, no occlusion passes), or ``None`` below ``evidence_threshold``.

    Scoring runs the last layer at the first position only when the head reads nothing else (BERT, RoBERTa,
    XLM-R, CamemBERT, ELECTRA; see ``scorers.pooled_last_layer``): the same scores (to float rounding) for
    almost none of that layer's work (~16% less arithmetic on a 6-layer MiniLM). ``pooled_last_layer=False`` runs
    the full layer.
    """

    family = "cross-encoder"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        *,
        adapter: str | os.PathLike | None = None,
        merge_adapter: bool = False,
        label_index: int | None = None,
        max_query_length: int | None = None,
        evidence_head: str | os.PathLike | None = None,
        evidence_threshold: float = 0.5,
        pooled_last_layer: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        if (
            isinstance(evidence_threshold, bool)
            or not isinstance(evidence_threshold, (int, float))
            or not 0.0 <= evidence_threshold <= 1.0
        ):
            raise ValueError(f"evidence_threshold must be a number in [0, 1], got {evidence_threshold!r}")
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = self._load_tokenizer()
        self.adapter = str(adapter) if adapter else None
        self.merge_adapter = merge_adapter
        self.model, self._peft = self._load_backbone(
            AutoModelForSequenceClassification, self.adapter, merge_adapter
        )
        num_labels = self.model.config.num_labels
        if label_index is None and num_labels > 2:
            raise ValueError(
                f"{self.model_name_or_path} has {num_labels} output labels; pass label_index= to say which "
                "one is the relevance score"
            )
        if label_index is not None and not 0 <= label_index < num_labels:
            raise ValueError(
                f"label_index={label_index} is out of range for a model with {num_labels} labels"
            )
        self.label_index = label_index
        self.max_query_length = max_query_length or self.max_length // 2
        self.padding_side = "right"
        self.evidence_threshold = float(evidence_threshold)
        #: whether scoring runs the last layer at position 0 only (the model supports it and it was not turned off)
        self.pooled_last_layer = bool(pooled_last_layer) and pooled_layer_list(self.model) is not None
        #: the evidence head (fp32 ``Linear(hidden_size, 1)``) or ``None``; set it with ``attach_evidence_head``
        self.evidence_head_layer: torch.nn.Linear | None = None
        if evidence_head:
            path = resolve_in(self.model_dir, evidence_head)
            self.evidence_head_layer = load_evidence_head(path, self.hidden_size, self.engine.device)

    @property
    def hidden_size(self) -> int:
        """Width of the backbone's hidden states (the evidence head's input)."""
        return int(self.model.config.get_text_config().hidden_size)

    def attach_evidence_head(self, layer: torch.nn.Linear | None = None) -> torch.nn.Linear:
        """Attach ``layer`` (default: a freshly initialised fp32 ``Linear(hidden_size, 1)`` on the engine device)
        as the evidence head and return it; ``save`` writes it and ``explain=k`` uses it."""
        if layer is None:
            layer = new_evidence_head(self.hidden_size, self.engine.device)
        self.evidence_head_layer = layer
        return layer

    def _cut_queries(self, queries: Sequence[str]) -> dict[str, str]:
        """Unique query texts, each cut at a token boundary to ``max_query_length`` tokens."""
        unique = list(dict.fromkeys(queries))
        enc = self.tokenizer(unique, add_special_tokens=False, return_offsets_mapping=True)
        cut = {}
        for q, ids, offsets in zip(unique, enc["input_ids"], enc["offset_mapping"]):
            cut[q] = q[: offsets[self.max_query_length - 1][1]] if len(ids) > self.max_query_length else q
        return cut

    def _encode(
        self, queries: Sequence[str], docs: Sequence[str], offsets: bool = False
    ) -> tuple[list[Features], int, Any]:
        """The one tokeniser call of every (query, doc text) pair: returns (features, truncated, encoding)."""
        cut = self._cut_queries(queries)
        enc = self.tokenizer(
            [cut[q] for q in queries],
            list(docs),
            truncation="only_second",
            max_length=self.max_length,
            return_offsets_mapping=offsets,
        )
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        features = [{k: enc[k][i] for k in keys} for i in range(len(queries))]
        encodings = getattr(enc, "encodings", None) or []
        truncated = sum(1 for e in encodings if e.overflowing)
        return features, truncated, enc

    def encode_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> tuple[list[Features], int]:
        """Token ids of each (query, doc text) pair: the query cut to ``max_query_length``, the doc to fit."""
        if not queries:
            return [], 0
        features, truncated, _ = self._encode(queries, docs)
        return features, truncated

    def encode_pairs_with_offsets(
        self, queries: Sequence[str], docs: Sequence[Doc]
    ) -> tuple[list[Features], list[list[Span | None]], int]:
        """Encode (query, ``doc.full_text``) pairs exactly as scoring does, plus each token's span in ``doc.text``.

        Returns ``(features, offsets, truncated)``: ``features`` equal ``encode_pairs`` on the full texts;
        ``offsets[i][t]`` is the character span in ``docs[i].text`` of token ``t`` (``None`` for query, special
        and title tokens); ``truncated`` counts the pairs whose document was cut. Evidence labels for training
        (``evidence.evidence_token_labels``) and the head's read-out at inference both use this.
        """
        if len(queries) != len(docs):
            raise ValueError(f"{len(queries)} queries but {len(docs)} documents; they must be aligned")
        if not queries:
            return [], [], 0
        features, truncated, enc = self._encode(queries, [d.full_text for d in docs], offsets=True)
        offsets = [
            doc_token_offsets(enc["offset_mapping"][i], enc.sequence_ids(i), doc_text_start(d))
            for i, d in enumerate(docs)
        ]
        return features, offsets, truncated

    def _scores_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.label_index is not None:
            return logits[:, self.label_index]
        if logits.shape[-1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits[:, 0]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The relevance score of each row of a padded batch (see the class docstring)."""
        mask = batch.get("attention_mask") if self.pooled_last_layer else None
        with pooled_last_layer(self.model, mask):  # no mask: the full layer
            return self._scores_from_logits(self.model(**batch).logits)

    def forward_with_evidence(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One backbone pass giving the scores ``[B]`` and the evidence head's token logits ``[B, L]`` (fp32).

        Differentiable (no inference mode here), so a trainer can take both losses from the same forward.
        """
        head = self.evidence_head_layer
        if head is None:
            raise RuntimeError(
                "this cross-encoder has no evidence head; load one or call attach_evidence_head()"
            )
        out = self.model(**batch, output_hidden_states=True)
        hidden = out.hidden_states[-1]
        token_logits = head(hidden.to(torch.float32)).squeeze(-1).float()
        return self._scores_from_logits(out.logits), token_logits

    # -- evidence -------------------------------------------------------------------------------------
    def explain_evidence(self, tasks: Sequence[tuple[Query, Doc, float]]) -> list[str | None]:
        """With an evidence head: the best sentence by mean token probability (``None`` below
        ``evidence_threshold``), from one engine run over all tasks; without one: occlusion."""
        if self.evidence_head_layer is None:
            return super().explain_evidence(tasks)
        if not tasks:
            return []
        docs = [d for _, d, _ in tasks]
        features, offsets, _ = self.encode_pairs_with_offsets([q.text for q, _, _ in tasks], docs)
        probs = self.evidence_token_probs(features)
        out: list[str | None] = []
        for doc, offs, p in zip(docs, offsets, probs):
            span = best_sentence(sentence_scores(offs, p[: len(offs)], doc.body), self.evidence_threshold)
            out.append(doc.body[span[0] : span[1]] if span is not None else None)
        return out

    def evidence_token_probs(self, features: Sequence[Features]) -> np.ndarray:
        """The evidence head's per-token probabilities (sigmoid, fp32) of encoded pairs, one engine run.

        Returns ``[N, width]`` aligned with each feature's tokens; positions past a pair's length are NaN.
        """
        if not features:
            return np.zeros((0, 0), dtype=np.float32)
        width = max(len(f["input_ids"]) for f in features)

        def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            _, logits = self.forward_with_evidence(batch)
            probs = torch.sigmoid(logits)
            mask = batch["attention_mask"].bool()
            out = torch.full((mask.shape[0], width), math.nan, dtype=torch.float32, device=probs.device)
            for j in range(mask.shape[0]):  # real tokens first, whatever side the batch was padded on
                row = probs[j][mask[j]]
                out[j, : row.shape[0]] = row
            return out

        return self.engine.run(features, forward, self.pad_token_id, self.padding_side, desc="evidence head")

    # -- saving -------------------------------------------------------------------------------------------
    def r2r_config(self) -> dict[str, Any]:
        """The cross-encoder's fields of ``r2r_model.json``."""
        cfg = super().r2r_config()
        if self.label_index is not None:
            cfg["label_index"] = self.label_index
        cfg["max_query_length"] = self.max_query_length
        if self.evidence_head_layer is not None:
            cfg["evidence_head"] = EVIDENCE_HEAD_FILE
            cfg["evidence_threshold"] = self.evidence_threshold
        return cfg

    def _save_weights(self, out: Path) -> dict[str, Any]:
        extra = super()._save_weights(out)
        if self.evidence_head_layer is not None:
            save_evidence_head(self.evidence_head_layer, out / EVIDENCE_HEAD_FILE)
        return extra
