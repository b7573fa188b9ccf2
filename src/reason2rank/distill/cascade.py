"""Training the passage cascade (``reason2rank.cascade``): the ETM with RankNet over all windows, and the kernel
selector (ESM) distilled from the ETM's window ranking (IDCM's two training stages)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from reason2rank.cascade.reranker import CascadeReranker, WeightedTopK
from reason2rank.cascade.selectors import KernelSelector
from reason2rank.reranker import split_scores

__all__ = ["distill_esm", "etm_scores_with_grad", "kl_list_loss", "lambda_pair_loss", "train_etm_ranknet"]


def etm_scores_with_grad(etm: Any, queries: Sequence[str], texts: Sequence[str]) -> torch.Tensor:
    """ETM scores of aligned (query, text) pairs, differentiable (no inference mode), on the ETM's device."""
    from reason2rank.engine import pad_batch
    from reason2rank.scorers.bi_encoder import BiEncoderReranker

    device = etm.engine.device
    if isinstance(etm, BiEncoderReranker):

        def embed(strings: Sequence[str]) -> torch.Tensor:
            feats, _ = etm.encode_texts(strings)
            return etm.forward(pad_batch(feats, etm.pad_token_id, etm.padding_side, device))

        q = embed([etm.query_prefix + s for s in queries])
        d = embed([etm.doc_prefix + s for s in texts])
        return (q * d).sum(-1)
    feats, _ = etm.encode_pairs(queries, texts)
    return etm.forward(pad_batch(feats, etm.pad_token_id, etm.padding_side, device)).float().reshape(-1)


def _torch_aggregate(scores: torch.Tensor, how: str, weighted: WeightedTopK | None) -> torch.Tensor:
    if how == "first":
        return scores[0]
    if how == "weighted" and weighted is not None:
        return weighted(scores)
    return scores.max()


def train_etm_ranknet(
    cascade: CascadeReranker,
    triples: Sequence[tuple[str, str, str]],
    steps: int = 10,
    lr: float = 2e-5,
    batch_size: int = 4,
    aggregation_lr: float = 1e-2,
    seed: int = 0,
) -> list[float]:
    """Fine-tune the cascade's ETM on *all* windows with RankNet: for each (query, relevant doc, non-relevant
    doc), the document scores (aggregated over every window) should order the pair. With ``aggregation=
    "weighted"`` the top-k weights are learned too (and written back to ``cascade.aggregation_weights``).
    Returns the loss of each step."""
    etm: Any = cascade.etm
    model = etm.model
    weighted = (
        WeightedTopK(len(cascade.aggregation_weights), cascade.aggregation_weights)
        if cascade.aggregation == "weighted"
        else None
    )
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    if weighted is not None:
        groups.append({"params": list(weighted.parameters()), "lr": aggregation_lr})
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    losses = []
    model.train()
    try:
        for _ in range(steps):
            batch = [triples[i] for i in rng.integers(0, len(triples), size=min(batch_size, len(triples)))]
            docs = [t for _, pos, neg in batch for t in (pos, neg)]
            wins = cascade.windows(docs)
            qs = [q for q, _, _ in batch for _ in range(2)]
            flat_q = [q for q, ws in zip(qs, wins) for _ in ws]
            flat_w = [w.text for ws in wins for w in ws]
            scores = etm_scores_with_grad(etm, flat_q, flat_w)
            doc_scores, start = [], 0
            for ws in wins:
                doc_scores.append(
                    _torch_aggregate(scores[start : start + len(ws)], cascade.aggregation, weighted)
                )
                start += len(ws)
            ds = torch.stack(doc_scores).view(-1, 2)
            loss = nn.functional.softplus(ds[:, 1] - ds[:, 0]).mean()  # RankNet: -log sigmoid(pos - neg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        model.eval()
    if weighted is not None:
        cascade.aggregation_weights = [float(w) for w in weighted.weight.detach()]
    return losses


def lambda_pair_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """LambdaRank-weighted pairwise logistic loss: pairs the teacher orders (i above j) weighted by the
    |ΔnDCG| of swapping them, with gains from the teacher's ranks (the top window gain 1, then 1/log2(r+1))."""
    n = teacher.shape[0]
    rank = torch.empty(n, dtype=torch.long)
    rank[torch.argsort(teacher, descending=True)] = torch.arange(n)
    gain = 1.0 / torch.log2(rank.float() + 2.0)
    disc = 1.0 / torch.log2(rank.float() + 2.0)
    diff = teacher[:, None] - teacher[None, :]
    delta = ((gain[:, None] - gain[None, :]) * (disc[:, None] - disc[None, :])).abs()
    pairs = (diff > 0).float() * delta
    if pairs.sum() == 0:
        return student.sum() * 0.0
    logistic = nn.functional.softplus(-(student[:, None] - student[None, :]))
    return (pairs * logistic).sum() / pairs.sum()


def kl_list_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) over one document's windows."""
    t = torch.log_softmax(teacher / temperature, dim=0)
    s = torch.log_softmax(student / temperature, dim=0)
    return torch.sum(t.exp() * (t - s))


def distill_esm(
    selector: KernelSelector,
    cascade: CascadeReranker,
    pairs: Sequence[tuple[str, str]],
    steps: int = 20,
    lr: float = 1e-3,
    loss: str = "lambda",
    batch_size: int = 8,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Train the kernel selector to rank each document's windows as the cascade's ETM does.

    ``pairs``: (query, document text). The ETM scores every window once (one engine run); then each step
    takes ``batch_size`` documents and applies ``loss`` (``"lambda"`` or ``"kl"``) per document. Returns the
    loss of each step."""
    if loss not in ("lambda", "kl"):
        raise ValueError(f"unknown loss {loss!r}; use 'lambda' or 'kl'")
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
        lambda_pair_loss if loss == "lambda" else (lambda s, t: kl_list_loss(s, t, temperature))
    )
    wins = cascade.windows([d for _, d in pairs])
    qs = [q for (q, _), ws in zip(pairs, wins) for _ in ws]
    ws_flat = [w.text for ws in wins for w in ws]
    teacher = split_scores(cascade.etm.score_texts(qs, ws_flat, desc="ETM teacher"), [len(w) for w in wins])
    usable = [i for i, w in enumerate(wins) if len(w) > 1]
    if not usable:
        raise ValueError("distill_esm needs documents with at least two windows")
    esm = selector.esm
    opt = torch.optim.Adam([p for p in esm.parameters() if p.requires_grad], lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    esm.train()
    try:
        for _ in range(steps):
            chosen = [usable[i] for i in rng.integers(0, len(usable), size=min(batch_size, len(usable)))]
            q = [pairs[i][0] for i in chosen for _ in wins[i]]
            w = [x.text for i in chosen for x in wins[i]]
            student = esm(*selector.tensors(q, w))
            total, start = student.new_zeros(()), 0
            for i in chosen:
                n = len(wins[i])
                total = total + loss_fn(
                    student[start : start + n], torch.as_tensor(teacher[i], dtype=torch.float32)
                )
                start += n
            total = total / len(chosen)
            opt.zero_grad()
            total.backward()
            opt.step()
            losses.append(float(total.detach()))
    finally:
        esm.eval()
    return losses
