"""Interleaved-document embeddings from a vision-language model (IDentIfy's first stage): a document's embedding
merged from the embeddings of its parts.

Each part of a document (a text passage or an image; a document without ``parts`` is one part: its images and text)
is encoded alone, in a prompt ``"<prefix><part>"``, and represented by the L2-normalised final hidden state of its
last token; the document's embedding is the normalised mean of its parts' embeddings (IDentIfy merges passage
embeddings into one document embedding). The query is encoded the same way from its text. The score is the cosine
of the two. ``embed_documents`` gives the embeddings for an index; a second stage that picks the part answering the
query is the ``vlm`` family with ``parts="best"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from reason2rank.media import ImageRef
from reason2rank.reranker import split_scores
from reason2rank.scorers.vlm import VLMReranker
from reason2rank.types import Doc, Query

__all__ = ["VLMEmbedder"]


class VLMEmbedder(VLMReranker):
    """Cosine of query and merged document embeddings from a VLM (see the module docstring).

    Args (beyond ``VLMReranker``'s loading options): ``query_prefix`` and ``document_prefix``, the text before a
    query or a part in its prompt.
    """

    family = "vlm-embed"

    def __init__(
        self,
        model_name_or_path: Any,
        *,
        query_prefix: str = "Query: ",
        document_prefix: str = "Document: ",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("parts", None)
        super().__init__(model_name_or_path, **kwargs)
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix

    def _messages(self, prefix: str, part: str | ImageRef) -> tuple[list[dict[str, Any]], list[Any]]:
        content: list[dict[str, Any]] = [{"type": "text", "text": prefix}]
        if isinstance(part, ImageRef):
            content.append({"type": "image"})
            return [{"role": "user", "content": content}], [part]
        text, _ = self._cut(part)
        content.append({"type": "text", "text": text})
        return [{"role": "user", "content": content}], []

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The L2-normalised final hidden state of each prompt's last token (fp32)."""
        hidden = self.model.model(**batch).last_hidden_state[:, -1].float()
        return torch.nn.functional.normalize(hidden, dim=-1)

    def _embed(self, prompts: Sequence[tuple[str, str | ImageRef, str]], desc: str) -> np.ndarray:
        feats = []
        for prefix, part, owner in prompts:
            msgs, refs = self._messages(prefix, part)
            what = f"document {owner!r}"
            imgs = [r.load(self.image_root, what) for r in refs]
            keys = [r.digest(self.image_root) for r in refs]
            feats.append(self.inputs.encode(msgs, imgs, self.budget, image_keys=keys))
        return self.engine.run(
            feats, self.forward, self.pad_token_id, self.padding_side, desc=desc,
            collate=self.inputs.collate, key=lambda f: f["key"],
        )  # fmt: skip

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """One normalised embedding per query text."""
        return self._embed([(self.query_prefix, q, "query") for q in queries], desc="vlm embed queries")

    def embed_documents(self, docs: Sequence[Doc]) -> np.ndarray:
        """One normalised embedding per document: the normalised mean of its parts' embeddings."""
        prompts, owner = [], []
        for i, d in enumerate(docs):
            parts = list(d.parts) or self.document_parts(d)
            if not parts:
                raise ValueError(f"document {d.id!r} has no text, image or part to embed")
            for p in parts:
                prompts.append((self.document_prefix, p, d.id))
                owner.append(i)
        flat = self._embed(prompts, desc="vlm embed documents")
        out = np.zeros((len(docs), flat.shape[1]), dtype=np.float32)
        np.add.at(out, np.asarray(owner), flat)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def score_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[np.ndarray]:
        """Cosine of each query with each of its documents."""
        q = self.embed_queries([query.text for query, _ in items])
        d = self.embed_documents([doc for _, docs in items for doc in docs])
        owners = np.repeat(np.arange(len(items)), [len(docs) for _, docs in items])
        flat = np.einsum("ij,ij->i", d, q[owners]) if len(owners) else np.zeros(0)
        return split_scores(flat, [len(docs) for _, docs in items])

    def score_windows(self, items: Sequence[tuple[str, Sequence[str | ImageRef]]]) -> list[np.ndarray]:
        """Cosine of each query with each of its parts alone (texts or images): the cascade's selector protocol, so
        the ``vlm`` family can read only the parts this ranks highest (``top_parts``)."""
        queries = list(dict.fromkeys(q for q, _ in items))
        q = self.embed_queries(queries)
        row = {text: i for i, text in enumerate(queries)}
        prompts = [(self.document_prefix, part, "part") for _, parts in items for part in parts]
        flat = (
            self._embed(prompts, desc="vlm embed parts") if prompts else np.zeros((0, q.shape[1]), np.float32)
        )
        out, start = [], 0
        for text, parts in items:
            out.append(flat[start : start + len(parts)] @ q[row[text]])
            start += len(parts)
        return out

    def rank_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[Any]:
        """Scores of ``score_batch`` (no part selection here)."""
        return super(VLMReranker, self).rank_batch(items)

    def r2r_config(self) -> dict[str, Any]:
        """The embedder's fields of ``r2r_model.json``."""
        cfg = super().r2r_config()
        cfg.pop("parts", None)
        cfg.update(query_prefix=self.query_prefix, document_prefix=self.document_prefix)
        return cfg
