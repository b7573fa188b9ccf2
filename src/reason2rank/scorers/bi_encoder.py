"""Bi-encoder family: query and document embedded apart (mean or CLS pooling), scored by cosine or dot.

This is the dense baseline (all-MiniLM-L6-v2 and the like). A sentence-transformers directory's
``1_Pooling/config.json`` and ``modules.json`` (Normalize) set pooling and similarity when not given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reason2rank.engine import Features
from reason2rank.scorers.base import TransformerReranker

POOLINGS = ("mean", "cls", "last")
SIMILARITIES = ("cosine", "dot")


def _sentence_transformers_defaults(path: str) -> dict[str, Any]:
    """Pooling, similarity and max_length from a sentence-transformers model directory, when it is one."""
    root = Path(path)
    out: dict[str, Any] = {}
    if not root.is_dir():
        return out
    modules_file = root / "modules.json"
    if modules_file.is_file():
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        types = [m.get("type", "") for m in modules]
        out["similarity"] = "cosine" if any(t.endswith("Normalize") for t in types) else "dot"
        for m in modules:
            if m.get("type", "").endswith("Pooling"):
                pool_cfg = root / m.get("path", "1_Pooling") / "config.json"
                if pool_cfg.is_file():
                    cfg = json.loads(pool_cfg.read_text(encoding="utf-8"))
                    if cfg.get("pooling_mode_cls_token"):
                        out["pooling"] = "cls"
                    elif cfg.get("pooling_mode_lasttoken"):
                        out["pooling"] = "last"
                    elif cfg.get("pooling_mode_mean_tokens"):
                        out["pooling"] = "mean"
    sbert = root / "sentence_bert_config.json"
    if sbert.is_file():
        cfg = json.loads(sbert.read_text(encoding="utf-8"))
        if cfg.get("max_seq_length"):
            out["max_length"] = int(cfg["max_seq_length"])
    return out


class BiEncoderReranker(TransformerReranker):
    """Embeds unique queries and unique documents once each; score = cosine (or dot) of the embeddings."""

    family = "bi-encoder"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        *,
        pooling: str | None = None,
        similarity: str | None = None,
        query_prefix: str = "",
        doc_prefix: str = "",
        max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        defaults = _sentence_transformers_defaults(str(model_name_or_path))
        super().__init__(
            model_name_or_path, max_length=max_length or defaults.get("max_length", 512), **kwargs
        )
        self.pooling = pooling or defaults.get("pooling", "mean")
        self.similarity = similarity or defaults.get("similarity", "cosine")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; known: {', '.join(POOLINGS)}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"unknown similarity {self.similarity!r}; known: {', '.join(SIMILARITIES)}")
        self.query_prefix = query_prefix
        self.doc_prefix = doc_prefix
        from transformers import AutoModel

        self.tokenizer = self._load_tokenizer()
        self.padding_side = "right"
        self.model, _ = self._load_backbone(AutoModel)

    def encode_texts(self, texts: Sequence[str]) -> tuple[list[Features], int]:
        """Token ids of each text (cut to ``max_length``) and how many were cut."""
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length)
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        features = [{k: enc[k][i] for k in keys} for i in range(len(texts))]
        truncated = sum(1 for e in (getattr(enc, "encodings", None) or []) if e.overflowing)
        return features, truncated

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The pooled (and, for cosine, normalised) embedding of each row."""
        hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            emb = hidden[:, 0]
        elif self.pooling == "last":
            last = batch["attention_mask"].sum(dim=1) - 1  # right padding
            emb = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        else:
            emb = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.similarity == "cosine":
            emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
        return emb

    def embed(self, texts: Sequence[str], desc: str = "embedding") -> np.ndarray:
        """Embeddings of ``texts`` (one engine run), ``[len(texts), hidden]``."""
        features, truncated = self.encode_texts(texts)
        self.truncation.report(truncated, len(features), what="texts")
        if not features:
            return np.zeros((0, self.model.config.hidden_size), dtype=np.float32)
        return self.engine.run(features, self.forward, self.pad_token_id, self.padding_side, desc=desc)

    def score_texts(self, queries: Sequence[str], docs: Sequence[str], desc: str = "scoring") -> np.ndarray:
        """Similarity of aligned (query, doc) texts; each distinct text is embedded once."""
        uq = list(dict.fromkeys(self.query_prefix + q for q in queries))
        ud = list(dict.fromkeys(self.doc_prefix + d for d in docs))
        qe = self.embed(uq, desc="embedding queries")
        de = self.embed(ud, desc=desc)
        qi = {q: i for i, q in enumerate(uq)}
        di = {d: i for i, d in enumerate(ud)}
        qrows = qe[[qi[self.query_prefix + q] for q in queries]]
        drows = de[[di[self.doc_prefix + d] for d in docs]]
        return np.einsum("ij,ij->i", qrows.astype(np.float64), drows.astype(np.float64))

    def r2r_config(self) -> dict[str, Any]:
        """The bi-encoder's fields of ``r2r_model.json``."""
        cfg = super().r2r_config()
        cfg.update(pooling=self.pooling, similarity=self.similarity)
        if self.query_prefix:
            cfg["query_prefix"] = self.query_prefix
        if self.doc_prefix:
            cfg["doc_prefix"] = self.doc_prefix
        return cfg
