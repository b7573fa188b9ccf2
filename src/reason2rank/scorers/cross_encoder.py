"""Cross-encoder family: ``AutoModelForSequenceClassification`` (BERT, MiniLM, DeBERTa-v2/v3, ELECTRA, ...)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from reason2rank.engine import Features
from reason2rank.scorers.base import TransformerReranker, attach_adapter


class CrossEncoderReranker(TransformerReranker):
    """Scores each (query, document) pair jointly; score = the relevance logit.

    With one output label the score is that logit; with two, ``logit[1] - logit[0]`` (monotone in the
    softmax probability of "relevant"); otherwise pick the column with ``label_index``. Queries longer than
    ``max_query_length`` tokens are cut; documents are cut to fit ``max_length`` (the query never is).
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
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, **kwargs)
        from transformers import AutoModelForSequenceClassification

        self.tokenizer = self._load_tokenizer()
        model = AutoModelForSequenceClassification.from_pretrained(
            self.model_name_or_path, dtype=self.engine.dtype, **self._pretrained_kwargs()
        )
        self.adapter = str(adapter) if adapter else None
        self.merge_adapter = merge_adapter
        model, self._peft = attach_adapter(model, self.adapter, merge_adapter, **self.hub_kwargs)
        self.model = self._finish_model(model)
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

    def _cut_queries(self, queries: Sequence[str]) -> dict[str, str]:
        """Unique query texts, each cut at a token boundary to ``max_query_length`` tokens."""
        unique = list(dict.fromkeys(queries))
        enc = self.tokenizer(unique, add_special_tokens=False, return_offsets_mapping=True)
        cut = {}
        for q, ids, offsets in zip(unique, enc["input_ids"], enc["offset_mapping"]):
            cut[q] = q[: offsets[self.max_query_length - 1][1]] if len(ids) > self.max_query_length else q
        return cut

    def encode_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> tuple[list[Features], int]:
        if not queries:
            return [], 0
        cut = self._cut_queries(queries)
        enc = self.tokenizer(
            [cut[q] for q in queries],
            list(docs),
            truncation="only_second",
            max_length=self.max_length,
        )
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        features = [{k: enc[k][i] for k in keys} for i in range(len(queries))]
        encodings = getattr(enc, "encodings", None) or []
        truncated = sum(1 for e in encodings if e.overflowing)
        return features, truncated

    def forward(self, batch: dict[str, torch.Tensor], features: Sequence[Features]) -> torch.Tensor:
        logits = self.model(**batch).logits.float()
        if self.label_index is not None:
            return logits[:, self.label_index]
        if logits.shape[-1] == 2:
            return logits[:, 1] - logits[:, 0]
        return logits[:, 0]

    def r2r_config(self) -> dict[str, Any]:
        cfg = super().r2r_config()
        if self.label_index is not None:
            cfg["label_index"] = self.label_index
        cfg["max_query_length"] = self.max_query_length
        return cfg
