"""Window selectors (IDCM's ESM): cheap scores of every window, so the expensive scorer sees only the best.

``BM25Selector`` (BM25 among the windows of one document, pure python), ``BiEncoderSelector`` (cosine of a
bi-encoder), ``KernelSelector`` (the IDCM kernel model ``IDCMKernelESM``), ``AllSelector`` (no selection), or
any object with ``score_windows(items) -> list[np.ndarray]`` (``WindowSelector``).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from reason2rank.reranker import split_scores

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "IDCM_MUS",
    "AllSelector",
    "BM25Selector",
    "BiEncoderSelector",
    "IDCMKernelESM",
    "KernelSelector",
    "WindowSelector",
    "select_top",
]

_WORD = re.compile(r"\w+")


class WindowSelector(Protocol):
    def score_windows(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """One score per window for each (query text, window texts) item."""


def _terms(text: str) -> list[str]:
    return [t.lower() for t in _WORD.findall(text)]


class BM25Selector:
    """BM25 of the query against the windows of one document, the document being the collection.

    Document frequencies and the average length come from the windows of that document only, so the selector
    needs no index and no statistics of the corpus.
    """

    name = "bm25"

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = float(k1), float(b)

    def score_windows(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """BM25 of each query against the windows of its document."""
        out = []
        for query, windows in items:
            tfs = [Counter(_terms(w)) for w in windows]
            lengths = np.array([sum(tf.values()) for tf in tfs], dtype=np.float64)
            n = len(windows)
            avg = max(lengths.mean(), 1e-9) if n else 1.0
            scores = np.zeros(n, dtype=np.float64)
            for term in set(_terms(query)):
                df = sum(1 for tf in tfs if term in tf)
                if not df:
                    continue
                idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
                tf = np.array([t.get(term, 0) for t in tfs], dtype=np.float64)
                scores += idf * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * lengths / avg))
            out.append(scores)
        return out

    def __repr__(self) -> str:
        return "BM25Selector()"


class BiEncoderSelector:
    """Cosine (or dot) of a bi-encoder between the query and each window, e.g. all-MiniLM-L6-v2."""

    name = "bi-encoder"

    def __init__(self, model: Any, **load_kwargs: Any) -> None:
        if isinstance(model, (str, os.PathLike)):
            from reason2rank.scorers.bi_encoder import BiEncoderReranker

            model = BiEncoderReranker(model, **load_kwargs)
        self.model = model

    def score_windows(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """Bi-encoder similarity of each query and the windows of its document (one engine run)."""
        qs = [q for q, ws in items for _ in ws]
        ws = [w for _, wins in items for w in wins]
        flat = self.model.score_texts(qs, ws, desc="cascade selection") if ws else np.zeros(0)
        return split_scores(flat, [len(w) for _, w in items])

    def __repr__(self) -> str:
        return f"BiEncoderSelector({self.model.model_name_or_path!r})"


#: IDCM kernel centres: 1.0, 0.9, ..., -0.9 (11 kernels)
IDCM_MUS = tuple(round(1.0 - 0.1 * i, 1) for i in range(11))


class IDCMKernelESM(nn.Module):
    """The IDCM efficient student model: frozen embeddings → Conv1d(3) → ReLU → L2 norm → query×passage
    cosine → RBF kernels (μ = 1.0 … −0.9, σ = 0.1) → log of the per-query-token kernel sums, summed over the
    query → linear → one score per (query, passage)."""

    def __init__(
        self,
        embeddings: torch.Tensor,
        conv_channels: int | None = None,
        mus: Sequence[float] = IDCM_MUS,
        sigma: float = 0.1,
        padding_idx: int | None = 0,
        freeze_embeddings: bool = True,
    ) -> None:
        super().__init__()
        vocab, dim = embeddings.shape
        self.config: dict[str, Any] = {"vocab_size": int(vocab), "dim": int(dim), "conv_channels": int(conv_channels or dim),
                       "mus": [float(m) for m in mus], "sigma": float(sigma), "padding_idx": padding_idx,
                       "freeze_embeddings": bool(freeze_embeddings)}  # fmt: skip
        self.embedding = nn.Embedding.from_pretrained(
            embeddings.detach().float().clone(), freeze=freeze_embeddings, padding_idx=padding_idx
        )
        self.conv = nn.Conv1d(dim, self.config["conv_channels"], kernel_size=3, padding=1)
        self.register_buffer("mus", torch.tensor(self.config["mus"]).view(1, 1, 1, -1), persistent=False)
        self.sigma = float(sigma)
        self.dense = nn.Linear(len(mus), 1, bias=False)
        with torch.no_grad():
            self.dense.weight.uniform_(-0.014, 0.014)  # as in the KNRM-family reference code

    @classmethod
    def from_pretrained_embeddings(
        cls, model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> IDCMKernelESM:
        """Initialise the embeddings from a transformers model's input embeddings (e.g. the ETM's backbone)."""
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(model_name_or_path))
        weight = model.get_input_embeddings().weight.detach()
        kwargs.setdefault("padding_idx", getattr(model.config, "pad_token_id", 0))
        return cls(weight, **kwargs)

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Contextual, L2-normalised token vectors (Conv1d over the embeddings), zero at padding."""
        emb = self.embedding(ids) * mask.unsqueeze(-1)
        ctx = torch.relu(self.conv(emb.transpose(1, 2))).transpose(1, 2)
        return nn.functional.normalize(ctx, p=2, dim=-1, eps=1e-9) * mask.unsqueeze(-1)

    def forward(
        self, q_ids: torch.Tensor, q_mask: torch.Tensor, p_ids: torch.Tensor, p_mask: torch.Tensor
    ) -> torch.Tensor:
        """Kernel score of each (query, passage) row."""
        q_mask, p_mask = q_mask.float(), p_mask.float()
        cos = torch.bmm(self.encode(q_ids, q_mask), self.encode(p_ids, p_mask).transpose(1, 2))
        mus: torch.Tensor = self.mus  # type: ignore[assignment]  # a registered buffer
        kernels = torch.exp(-((cos.unsqueeze(-1) - mus) ** 2) / (2 * self.sigma**2))
        kernels = kernels * p_mask[:, None, :, None]
        per_query_token = torch.log(kernels.sum(dim=2).clamp(min=1e-10)) * q_mask.unsqueeze(-1)
        return self.dense(per_query_token.sum(dim=1)).squeeze(-1)


class KernelSelector:
    """Runs an ``IDCMKernelESM`` over all windows with the tokenizer its embeddings belong to."""

    name = "kernel"
    WEIGHTS, CONFIG = "idcm_esm.pt", "idcm_esm.json"

    def __init__(
        self,
        esm: IDCMKernelESM,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 256,
        max_query_length: int = 30,
        device: str | torch.device | None = None,
    ) -> None:
        self.esm, self.tokenizer = esm, tokenizer
        self.batch_size, self.max_query_length = batch_size, max_query_length
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.esm.to(self.device)

    @classmethod
    def from_pretrained(cls, model_name_or_path: str | os.PathLike, **kwargs: Any) -> KernelSelector:
        """An untrained kernel selector over the embeddings and tokenizer of a transformers model."""
        from transformers import AutoTokenizer

        esm_kwargs = {k: kwargs.pop(k) for k in ("conv_channels", "sigma", "mus") if k in kwargs}
        esm = IDCMKernelESM.from_pretrained_embeddings(model_name_or_path, **esm_kwargs)
        return cls(esm, AutoTokenizer.from_pretrained(str(model_name_or_path)), **kwargs)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ESM weights, its config and the tokenizer into the directory ``path``."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.cpu() for k, v in self.esm.state_dict().items()}, out / self.WEIGHTS)
        (out / self.CONFIG).write_text(json.dumps(self.esm.config, indent=2) + "\n", encoding="utf-8")
        self.tokenizer.save_pretrained(out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str], **kwargs: Any) -> KernelSelector:
        """Open a directory written by ``save``; ``kwargs`` (``device``, ``batch_size``) go to the constructor."""
        from transformers import AutoTokenizer

        root = Path(path)
        if not (root / cls.CONFIG).is_file():
            raise FileNotFoundError(
                f"{root} has no {cls.CONFIG}; write a kernel selector with KernelSelector.save"
            )
        cfg = json.loads((root / cls.CONFIG).read_text(encoding="utf-8"))
        esm = IDCMKernelESM(torch.zeros(cfg["vocab_size"], cfg["dim"]), conv_channels=cfg["conv_channels"],
                            mus=cfg["mus"], sigma=cfg["sigma"], padding_idx=cfg["padding_idx"],
                            freeze_embeddings=cfg["freeze_embeddings"])  # fmt: skip
        esm.load_state_dict(torch.load(root / cls.WEIGHTS, map_location="cpu", weights_only=True))
        return cls(esm.eval(), AutoTokenizer.from_pretrained(str(root)), **kwargs)

    def tensors(self, queries: Sequence[str], windows: Sequence[str]) -> tuple[torch.Tensor, ...]:
        """Padded (q_ids, q_mask, p_ids, p_mask) for aligned query and window texts."""
        pad = self.tokenizer.pad_token_id or 0
        q = self.tokenizer(
            list(queries), add_special_tokens=False, truncation=True, max_length=self.max_query_length
        )
        p = self.tokenizer(list(windows), add_special_tokens=False, verbose=False)

        def padded(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
            width = max(1, max(len(x) for x in ids))
            t = torch.full((len(ids), width), pad, dtype=torch.long)
            m = torch.zeros((len(ids), width), dtype=torch.long)
            for i, x in enumerate(ids):
                t[i, : len(x)] = torch.tensor(x, dtype=torch.long)
                m[i, : len(x)] = 1
            return t, m

        return (*padded(q["input_ids"]), *padded(p["input_ids"]))

    def score_pairs(self, queries: Sequence[str], windows: Sequence[str]) -> np.ndarray:
        """ESM scores of aligned (query, window) texts, in batches on the selector's device."""
        out = []
        self.esm.eval()
        with torch.inference_mode():
            for s in range(0, len(windows), self.batch_size):
                t = self.tensors(queries[s : s + self.batch_size], windows[s : s + self.batch_size])
                out.append(self.esm(*(x.to(self.device) for x in t)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    def score_windows(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[np.ndarray]:
        """ESM scores of each query and the windows of its document."""
        qs = [q for q, ws in items for _ in ws]
        ws = [w for _, wins in items for w in wins]
        return split_scores(self.score_pairs(qs, ws), [len(w) for _, w in items])

    def __repr__(self) -> str:
        return "KernelSelector()"


class AllSelector:
    """No selection: every window is scored (max-passage)."""

    name = "all"

    def __repr__(self) -> str:
        return "all windows"


def select_top(scores: np.ndarray, s: int | None) -> list[int]:
    """Indices of the ``s`` highest scores in document order; ties go to the earlier window."""
    n = len(scores)
    if s is None or s >= n:
        return list(range(n))
    return sorted(np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:s].tolist())
