"""Losses for the Reason-to-Rank (R2R) distillation and the DeAR pointwise stage (pure torch).

Conventions shared by every function here:

* A *group* is one query with its candidates: ``scores`` has shape ``[B, N]`` (B groups, N slots).
* ``mask`` is an optional bool tensor ``[B, N]``; ``True`` marks a real candidate. Padded slots may hold
  any value (even ``nan``/``inf``): they are replaced before any arithmetic, so they change neither the
  loss nor any gradient, and they receive a zero gradient themselves.
* Reduction is always ``'mean'``, over the units named in each docstring (entries, pairs, groups or
  tokens). When there is no unit to average over (e.g. no graded pair) the loss is a graph-connected zero.
* Inputs are upcast to float32 (or kept in float64) for the arithmetic; the result is a 0-dim tensor.
* Teacher scores are used as given; detach them yourself if the teacher must not be trained.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


# ----------------------------------------------------------------------------------------- helpers
def _f(x: Tensor) -> Tensor:
    """Upcast half/bfloat16 (and integer) tensors to float32; keep float32/float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _mask(mask: Tensor | None, like: Tensor) -> Tensor:
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    if mask.shape != like.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != scores shape {tuple(like.shape)}")
    return mask.to(device=like.device, dtype=torch.bool)


def _clean(x: Tensor, mask: Tensor, fill: float = 0.0) -> Tensor:
    """``x`` with padded slots replaced by ``fill`` (no gradient flows to the padded slots)."""
    return torch.where(mask, _f(x), torch.full((), fill, dtype=_f(x).dtype, device=x.device))


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return values.sum() / mask.sum().clamp_min(1).to(values.dtype)


def _masked_log_softmax(x: Tensor, mask: Tensor) -> Tensor:
    """log_softmax over the last dim restricted to real slots; padded slots get 0 (and no gradient).

    Rows without any real slot give all zeros.
    """
    x = _clean(x, mask)
    neg_inf = torch.full((), float("-inf"), dtype=x.dtype, device=x.device)
    m = torch.where(mask, x, neg_inf).amax(dim=-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.where(mask, torch.exp(x - m), torch.zeros_like(x))
    lse = torch.log(e.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)) + m
    return torch.where(mask, x - lse, torch.zeros_like(x))


def _check_2d(name: str, x: Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [B, N], got {tuple(x.shape)}")


# --------------------------------------------------------------------------------------- pointwise
def pointwise_bce(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits, one term per candidate.

    ``L = mean_{real e} [ -y_e·log σ(s_e) - (1-y_e)·log(1-σ(s_e)) ]``

    Args:
        scores: logits, any shape (typically ``[B, N]`` or ``[B]``).
        labels: targets in ``[0, 1]``, same shape (normalise graded labels first, e.g. ``g / g_max``).
        mask: optional bool, same shape; padded entries are ignored.
    """
    m = _mask(mask, scores)
    s, y = _clean(scores, m), _clean(labels, m)
    return _masked_mean(F.binary_cross_entropy_with_logits(s, y, reduction="none"), m)


def pointwise_mse(scores: Tensor, grades: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error ``L = mean_{real e} (s_e - g_e)^2``; ``scores``/``grades``/``mask`` same shape."""
    m = _mask(mask, scores)
    s, g = _clean(scores, m), _clean(grades, m)
    return _masked_mean((s - g) ** 2, m)


# ------------------------------------------------------------------------------------------- pairs
def ranknet_pairs(scores_i: Tensor, scores_j: Tensor, prefs: Tensor, weights: Tensor | None = None) -> Tensor:
    """RankNet on explicit pairs (e.g. teacher comparison records "i is more relevant than j").

    ``l_p = BCEWithLogits(s_i - s_j, p) = softplus(s_i - s_j) - p·(s_i - s_j)``, with target preference
    ``p = 1`` (i preferred), ``0`` (j preferred) or ``0.5`` (tie; any value in [0, 1] works).
    ``L = mean_p l_p``, or with ``weights``: ``L = Σ w_p·l_p / Σ w_p`` (zero weights drop a pair).

    Args:
        scores_i, scores_j, prefs: shape ``[P]`` (any equal shape works).
        weights: optional non-negative ``[P]`` (e.g. teacher confidence).
    """
    d = _f(scores_i) - _f(scores_j)
    p = _f(prefs).to(d.dtype)
    if weights is None:
        return F.binary_cross_entropy_with_logits(d, p)
    w = _f(weights).to(d.dtype)
    nz = w != 0  # a zero weight drops the pair entirely, even a nan/inf one
    d = torch.where(nz, d, torch.zeros_like(d))
    losses = F.binary_cross_entropy_with_logits(d, torch.where(nz, p, torch.zeros_like(p)), reduction="none")
    return (w * losses).sum() / w.sum().clamp_min(torch.finfo(d.dtype).tiny)


def _graded_pairs(
    scores: Tensor, grades: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_2d("scores", scores)
    m = _mask(mask, scores)
    s, g = _clean(scores, m), _clean(grades, m)
    pair_mask = m.unsqueeze(2) & m.unsqueeze(1) & (g.unsqueeze(2) > g.unsqueeze(1))  # [B, N, N]: i > j
    return s, g, m, pair_mask


def ranknet_grades(
    scores: Tensor, grades: Tensor, mask: Tensor | None = None, soft_targets: bool = False
) -> Tensor:
    """RankNet over all pairs of a group with ``grade_i > grade_j`` (both real).

    ``l_ij = BCEWithLogits(s_i - s_j, t_ij)`` with ``t_ij = 1`` (default), or the DeAR-style soft target
    ``t_ij = σ(y_i - y_j)`` when ``soft_targets=True``. ``L = mean over all such pairs of the batch``;
    tied pairs are not used.

    Args:
        scores: ``[B, N]`` student scores. grades: ``[B, N]`` relevance grades / teacher scores.
        mask: optional ``[B, N]`` bool.
    """
    s, g, _, pm = _graded_pairs(scores, grades, mask)
    d = s.unsqueeze(2) - s.unsqueeze(1)
    t = torch.sigmoid(g.unsqueeze(2) - g.unsqueeze(1)) if soft_targets else torch.ones_like(d)
    losses = F.binary_cross_entropy_with_logits(d, t.to(d.dtype), reduction="none")
    return _masked_mean(losses, pm)


def lambda_loss(scores: Tensor, grades: Tensor, mask: Tensor | None = None) -> Tensor:
    """NDCG-weighted LambdaRank loss of a group (Burges' LambdaRank as a RankNet reweighting).

    For each real pair with ``g_i > g_j``::

        l_ij = |ΔNDCG_ij| · log(1 + exp(-(s_i - s_j)))
        |ΔNDCG_ij| = |(2^g_i - 2^g_j)·(1/log2(1 + r_i) - 1/log2(1 + r_j))| / IDCG

    where ``r`` are the 1-based ranks by the current (detached) student scores among real candidates
    and ``IDCG = Σ_k (2^{g_(k)} - 1) / log2(1 + k)`` over the ideal order. Per group the pair terms are
    summed; ``L`` is the mean over groups that have at least one graded pair.

    Args: scores, grades: ``[B, N]``; mask: optional ``[B, N]`` bool.
    """
    s, g, m, pm = _graded_pairs(scores, grades, mask)
    neg_inf = torch.full((), float("-inf"), dtype=s.dtype, device=s.device)
    n = s.shape[1]
    with torch.no_grad():
        order = torch.argsort(torch.where(m, s, neg_inf), dim=1, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ar = torch.arange(1, n + 1, device=s.device).expand_as(order)
        ranks.scatter_(1, order, ar)  # 1-based rank of each slot; padded slots rank last
        disc = 1.0 / torch.log2(1.0 + ranks.to(s.dtype))
        gain = torch.pow(2.0, g)
        ideal = torch.sort(torch.where(m, g, neg_inf), dim=1, descending=True).values
        ideal_gain = torch.where(torch.isfinite(ideal), torch.pow(2.0, ideal) - 1.0, torch.zeros_like(ideal))
        idcg = (ideal_gain / torch.log2(1.0 + ar.to(s.dtype))).sum(dim=1)  # [B]
        delta = (gain.unsqueeze(2) - gain.unsqueeze(1)).abs() * (disc.unsqueeze(2) - disc.unsqueeze(1)).abs()
        delta = delta / idcg.clamp_min(torch.finfo(s.dtype).tiny).view(-1, 1, 1)
    d = s.unsqueeze(2) - s.unsqueeze(1)
    pair_l = torch.where(pm, delta * F.softplus(-d), torch.zeros_like(d))
    has_pair = pm.flatten(1).any(dim=1)
    return _masked_mean(pair_l.flatten(1).sum(dim=1), has_pair)


# ---------------------------------------------------------------------------------------- listwise
def listnet(
    scores: Tensor, teacher_scores: Tensor, mask: Tensor | None = None, temperature: float = 1.0
) -> Tensor:
    """ListNet (top-1) cross-entropy between teacher and student distributions over a group.

    ``L = mean_b [ -Σ_{real i} softmax(t_b/T)_i · log_softmax(s_b/T)_i ]``

    Args:
        scores: ``[B, N]`` student scores. teacher_scores: ``[B, N]`` teacher scores or grades.
        mask: optional ``[B, N]`` bool. temperature: ``T > 0``.
    Groups without a real candidate are left out of the mean.
    """
    _check_2d("scores", scores)
    m = _mask(mask, scores)
    log_q = _masked_log_softmax(_clean(scores, m) / temperature, m)
    p = torch.exp(_masked_log_softmax(_clean(teacher_scores, m) / temperature, m)) * m
    return _masked_mean(-(p * log_q).sum(dim=1), m.any(dim=1))


def kl_distill(
    student: Tensor, teacher: Tensor, mask: Tensor | None = None, temperature: float = 2.0
) -> Tensor:
    """Temperature-scaled distillation: ``L = T² · mean_b KL(softmax(t_b/T) ‖ softmax(s_b/T))``.

    ``KL(p ‖ q) = Σ_{real i} p_i (log p_i - log q_i)`` ("batchmean": summed over candidates, averaged
    over groups that have a real candidate). Shapes ``[B, N]``; mask optional ``[B, N]`` bool.
    """
    _check_2d("student", student)
    m = _mask(mask, student)
    log_q = _masked_log_softmax(_clean(student, m) / temperature, m)
    log_p = _masked_log_softmax(_clean(teacher, m) / temperature, m)
    kl = (torch.exp(log_p) * m * (log_p - log_q)).sum(dim=1)
    return temperature**2 * _masked_mean(kl, m.any(dim=1))


def group_softmax_ce(scores: Tensor, positive_index: int | Tensor = 0, mask: Tensor | None = None) -> Tensor:
    """Softmax cross-entropy over a group of one positive and its negatives (InfoNCE-style).

    ``L = mean_b [ -log softmax(s_b)_{pos_b} ]`` with the softmax over real candidates only.

    Args:
        scores: ``[B, N]``. positive_index: int (same slot for every group) or LongTensor ``[B]``.
        mask: optional ``[B, N]`` bool; the positive slot must be real (``ValueError`` otherwise).
    """
    _check_2d("scores", scores)
    m = _mask(mask, scores)
    b = scores.shape[0]
    if isinstance(positive_index, int):
        pos = torch.full((b,), positive_index, dtype=torch.long, device=scores.device)
    else:
        pos = positive_index.to(device=scores.device, dtype=torch.long).reshape(b)
    if mask is not None and not bool(m.gather(1, pos.unsqueeze(1)).all()):
        raise ValueError("group_softmax_ce: a positive slot is masked out")
    log_q = _masked_log_softmax(scores, m)
    return -log_q.gather(1, pos.unsqueeze(1)).mean()


def dear_loss(
    student: Tensor,
    teacher: Tensor,
    positive_index: int | Tensor = 0,
    mask: Tensor | None = None,
    alpha: float = 0.1,
    temperature: float = 2.0,
) -> Tensor:
    """DeAR stage-1 objective: ``L = (1-α)·CE + α·T²·KL(softmax(t/T) ‖ softmax(s/T))``.

    ``CE = group_softmax_ce(student, positive_index, mask)`` (at temperature 1) and the KL term is
    :func:`kl_distill`. Defaults follow DeAR: ``α = 0.1``, ``T = 2``. Shapes ``[B, N]``.
    """
    ce = group_softmax_ce(student, positive_index, mask)
    return (1.0 - alpha) * ce + alpha * kl_distill(student, teacher, mask, temperature)


# ------------------------------------------------------------------------------------ token losses
def lm_loss(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Causal-LM token cross-entropy with the usual shift: position ``t`` predicts token ``t+1``.

    ``L = mean_{(b,t): labels[b,t+1] != ignore_index} -log softmax(logits[b,t])[labels[b,t+1]]``

    The mean is over all counted tokens of the batch. Set ``labels = ignore_index`` on prompt and padding
    tokens (see :func:`mask_prompt_labels`) so only the reasoning / answer tokens carry loss; logits at
    positions whose next label is ignored do not affect the loss or get a gradient.

    Args:
        logits: ``[B, L, V]``. labels: ``[B, L]`` token ids (the input ids) or ``ignore_index``.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, L, V] and labels [B, L], got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    shift_logits = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(device=logits.device, dtype=torch.long)
    keep = shift_labels != ignore_index
    if not bool(keep.any()):
        return _f(shift_logits[keep]).sum()  # graph-connected zero
    return F.cross_entropy(_f(shift_logits[keep]), shift_labels[keep])


def mask_prompt_labels(
    input_ids: Tensor,
    prompt_lengths: Tensor | Sequence[int],
    pad_token_id: int | None = None,
    padding_side: str = "right",
    ignore_index: int = -100,
    attention_mask: Tensor | None = None,
) -> Tensor:
    """Labels for :func:`lm_loss`: a copy of ``input_ids`` with prompt and padding set to ``ignore_index``.

    Row ``b`` is ``[pads] prompt (prompt_lengths[b] tokens) answer [pads]``. Padding is found from
    ``attention_mask == 0`` when given, else as the run of ``pad_token_id`` at the padded end
    (leading run for ``padding_side='left'``, trailing run for ``'right'``). Without either, no padding
    is assumed. Caveat: when ``pad_token_id == eos_token_id`` and no ``attention_mask`` is passed, a real
    final EOS is indistinguishable from padding and gets masked too; pass ``attention_mask`` then.

    Args:
        input_ids: ``[B, L]``. prompt_lengths: ``[B]`` number of prompt tokens (excluding padding).
    Returns: LongTensor ``[B, L]``.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [B, L], got {tuple(input_ids.shape)}")
    b, n = input_ids.shape
    dev = input_ids.device
    plen = torch.as_tensor(prompt_lengths, device=dev, dtype=torch.long).reshape(b, 1)
    if attention_mask is not None:
        is_pad = attention_mask.to(dev) == 0
    elif pad_token_id is not None:
        eq = input_ids == pad_token_id
        if padding_side == "left":
            is_pad = torch.cumprod(eq.long(), dim=1).bool()
        else:
            is_pad = torch.cumprod(eq.long().flip(1), dim=1).flip(1).bool()
    else:
        is_pad = torch.zeros_like(input_ids, dtype=torch.bool)
    if padding_side == "left":
        start = torch.cumprod(is_pad.long(), dim=1).sum(dim=1, keepdim=True)  # leading padding
    else:
        start = torch.zeros((b, 1), dtype=torch.long, device=dev)
    pos = torch.arange(n, device=dev).unsqueeze(0)
    drop = is_pad | (pos < start + plen)
    labels = input_ids.clone().long()
    labels[drop] = ignore_index
    return labels


def evidence_tagging(
    token_logits: Tensor, token_labels: Tensor, mask: Tensor, pos_weight: float | Tensor | None = None
) -> Tensor:
    """Token-level BCE tagging the evidence (answer) sentence inside a passage.

    ``L = mean_{real tokens} [ -w·y·log σ(z) - (1-y)·log(1-σ(z)) ]`` with ``w = pos_weight`` (default 1).

    Args:
        token_logits: ``[B, L]`` one logit per token. token_labels: ``[B, L]`` in {0, 1} (1 = evidence).
        mask: ``[B, L]`` bool, ``True`` on the passage tokens that count (no special/pad/prompt tokens).
    """
    m = _mask(mask, token_logits)
    z, y = _clean(token_logits, m), _clean(token_labels, m)
    pw = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=z.dtype, device=z.device)
    return _masked_mean(F.binary_cross_entropy_with_logits(z, y, reduction="none", pos_weight=pw), m)


# --------------------------------------------------------------------------------------- combiners
def _check_keys(losses: Mapping[str, Tensor], known: Iterable[str]) -> None:
    unknown = set(losses) - set(known)
    if unknown:
        raise KeyError(f"no weight for loss(es) {sorted(unknown)}")
    if not losses:
        raise ValueError("no losses to combine")


class FixedWeights:
    """Constant weights: ``L = Σ_k w_k · L_k`` over the keys of ``losses`` (each must have a weight)."""

    def __init__(self, weights: Mapping[str, float]):
        self.weights = dict(weights)

    def __call__(self, losses: Mapping[str, Tensor]) -> Tensor:
        """The weighted sum of the losses given (each must have a weight)."""
        _check_keys(losses, self.weights)
        return sum(self.weights[k] * v for k, v in losses.items())  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"FixedWeights({self.weights})"


class UncertaintyWeights(nn.Module):
    """Homoscedastic-uncertainty weighting (Kendall et al., 2018) with learned log-variances ``s_k``.

    ``L = Σ_k exp(-s_k)·L_k + s_k`` over the keys present in ``losses``; ``s_k`` starts at ``init``
    (0 → weight 1). Register this module's parameters with the optimizer.
    """

    def __init__(self, names: Sequence[str], init: float = 0.0):
        super().__init__()
        self.names = list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError("duplicate loss names")
        self.log_vars = nn.Parameter(torch.full((len(self.names),), float(init)))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        """``Σ exp(-s_k)·L_k + s_k`` over the losses given."""
        _check_keys(losses, self.names)
        total: Tensor | int = 0
        for k, v in losses.items():
            s = self.log_vars[self.names.index(k)]
            total = total + torch.exp(-s) * v + s
        return total  # type: ignore[return-value]

    def weights(self) -> dict[str, float]:
        """Current effective weights ``exp(-s_k)`` (for logging)."""
        return {k: math.exp(-float(s)) for k, s in zip(self.names, self.log_vars.detach())}


class SigmoidWeights(nn.Module):
    """R2R's learnable weighting: ``L = Σ_k σ(a_k)·L_k`` with one learnable logit ``a_k`` per loss
    (the paper's α, β, γ); ``a_k`` starts at ``init`` (0 → weight 0.5).

    Note: without a regulariser, minimising this drives every weight towards 0; the learned weights are
    therefore only meaningful relative to each other (or use :class:`UncertaintyWeights`).
    """

    def __init__(self, names: Sequence[str], init: float = 0.0):
        super().__init__()
        self.names = list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError("duplicate loss names")
        self.logits = nn.Parameter(torch.full((len(self.names),), float(init)))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        """``Σ σ(a_k)·L_k`` over the losses given."""
        _check_keys(losses, self.names)
        total: Tensor | int = 0
        for k, v in losses.items():
            total = total + torch.sigmoid(self.logits[self.names.index(k)]) * v
        return total  # type: ignore[return-value]

    def weights(self) -> dict[str, float]:
        """Current weights ``σ(a_k)`` (for logging)."""
        return {k: float(torch.sigmoid(a)) for k, a in zip(self.names, self.logits.detach())}
