"""Attention weights from any decoder model of current transformers, without eager attention.

``ATTENTION_NAME`` is registered in transformers' ``AttentionInterface``: it returns the output of PyTorch's SDPA
(so a forward is as fast as with ``sdpa``) and, while an ``AttentionRecorder`` is active, also computes, in fp32,
the softmax rows of the recorded queries (the last ``rows`` query positions of the pass, by default all) and
reduces them as the recorder asks. The same name is registered in ``AttentionMaskInterface`` with SDPA's mask
function: without it transformers builds no mask for an unknown implementation, and a pass over a KV-cache
prefix would get SDPA's top-left aligned causal mask (wrong weights, and wrong outputs).

Weights are computed from the same query and key states the model uses (after rotary embeddings, with grouped
key heads repeated), scaled by the module's scaling, masked by the pass's mask; rows with no visible key (left
padding) are zero, never NaN, in any model dtype.

    with attention_recording(model) as rec:
        model(input_ids=..., past_key_values=cache)
    rec.per_layer  # {layer: (batch, kv_len) fp32: sum over heads of the mean over recorded query rows}
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["ATTENTION_NAME", "AttentionRecorder", "attention_recording", "attention_weights", "register"]

#: the attention implementation name registered in transformers
ATTENTION_NAME = "r2r_sdpa_with_weights"

_ACTIVE: contextvars.ContextVar[AttentionRecorder | None] = contextvars.ContextVar(
    "r2r_attention", default=None
)
_registered = False


@dataclass
class AttentionRecorder:
    """What to record in the passes run while it is active.

    Args:
        rows: record the last ``rows`` query positions of each pass (``None``: all of them).
        layers: the layer indices to record (``None``: all).
        full: keep the whole weights ``(batch, heads, rows, kv_len)`` per layer in ``full_weights`` (for tests
            and inspection) besides the reduced ``per_layer``.
        row_mask: ``(batch, rows)`` bool, the recorded query rows that count in the mean (e.g. not padding);
            ``None``: all of them.
    """

    rows: int | None = None
    layers: frozenset[int] | None = None
    full: bool = False
    row_mask: torch.Tensor | None = None
    per_layer: dict[int, torch.Tensor] = field(default_factory=dict)
    full_weights: dict[int, torch.Tensor] = field(default_factory=dict)
    _calls: int = 0

    def wants(self, layer: int) -> bool:
        """Whether ``layer`` is recorded."""
        return self.layers is None or layer in self.layers

    def add(self, layer: int, weights: torch.Tensor) -> None:
        """Reduce and keep one layer's weights ``(batch, heads, rows, kv_len)`` (fp32)."""
        if self.full:
            self.full_weights[layer] = weights
        if self.row_mask is not None:
            m = self.row_mask.to(weights.device, torch.float32)[:, None, :, None]
            mean = (weights * m).sum(2) / m.sum(2).clamp(min=1.0)
        else:
            mean = weights.mean(2)
        reduced = mean.sum(1)  # (batch, kv_len)
        self.per_layer[layer] = self.per_layer[layer] + reduced if layer in self.per_layer else reduced

    def total(self) -> torch.Tensor:
        """The recorded layers' reduced weights summed: ``(batch, kv_len)``."""
        if not self.per_layer:
            raise RuntimeError(
                "no attention was recorded: the model did not run through reason2rank's attention function "
                "(is it a transformers decoder model whose attention layers use the AttentionInterface?)"
            )
        return torch.stack(list(self.per_layer.values())).sum(0)


def attention_weights(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    rows: int | None = None,
) -> torch.Tensor:
    """The softmax attention rows ``(batch, heads, rows, kv_len)`` in fp32 of the last ``rows`` queries.

    ``query`` is ``(batch, heads, q_len, dim)``, ``key`` ``(batch, kv_heads, kv_len, dim)`` (grouped heads are
    repeated), ``attention_mask`` a boolean (True: visible) or additive 4-D mask as transformers builds it, or
    ``None``: causal when ``q_len > 1`` (SDPA's ``is_causal``, top-left aligned, as transformers uses it) and
    nothing masked for a single query."""
    b, h, q_len, d = query.shape
    groups = h // key.shape[1]
    k = key.float()
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
    kv_len = k.shape[2]
    n = q_len if rows is None else min(rows, q_len)
    q = query[:, :, q_len - n :].float()
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling  # (b, h, n, kv)
    if attention_mask is not None:
        mask = attention_mask[:, :, q_len - n :, :kv_len]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    elif q_len > 1:
        qi = torch.arange(q_len - n, q_len, device=q.device)[:, None]
        ki = torch.arange(kv_len, device=q.device)[None, :]
        scores = scores.masked_fill(ki > qi, float("-inf"))
    top = scores.amax(-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    exp = torch.exp(scores - top)  # exp(-inf) = 0: masked keys
    total = exp.sum(-1, keepdim=True)
    return torch.where(
        total > 0, exp / total.clamp(min=torch.finfo(torch.float32).tiny), torch.zeros_like(exp)
    )


def _attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    out, _ = sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )
    rec = _ACTIVE.get()
    if rec is not None:
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            layer, rec._calls = rec._calls, rec._calls + 1
        if rec.wants(int(layer)):
            scale = scaling if scaling is not None else query.shape[-1] ** -0.5
            with torch.no_grad():
                rec.add(int(layer), attention_weights(query, key, attention_mask, scale, rec.rows))
    return out, None


def register() -> str:
    """Register the attention and mask functions in transformers (once); returns ``ATTENTION_NAME``."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(ATTENTION_NAME, _attention_forward)
        AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
        _registered = True
    return ATTENTION_NAME


@contextlib.contextmanager
def attention_recording(
    model: Any,
    rows: int | None = None,
    layers: frozenset[int] | None = None,
    full: bool = False,
    row_mask: torch.Tensor | None = None,
) -> Iterator[AttentionRecorder]:
    """Run ``model`` with ``ATTENTION_NAME`` and record attention while inside (see ``AttentionRecorder``); the
    model's own attention implementation is restored on exit."""
    with using_weights_attention(model):
        rec = AttentionRecorder(rows=rows, layers=layers, full=full, row_mask=row_mask)
        token = _ACTIVE.set(rec)
        try:
            yield rec
        finally:
            _ACTIVE.reset(token)


@contextlib.contextmanager
def using_weights_attention(model: Any) -> Iterator[None]:
    """``model`` with ``ATTENTION_NAME`` as its attention implementation while inside (restored on exit)."""
    name = register()
    config = model.config
    before = getattr(config, "_attn_implementation", None)
    if before == name:
        yield
        return
    if not hasattr(model, "set_attn_implementation"):
        raise TypeError(f"{type(model).__name__} is not a transformers model with a settable attention")
    try:
        model.set_attn_implementation(name)
    except (ValueError, ImportError) as e:
        raise ValueError(
            f"{type(model).__name__} cannot run reason2rank's attention function ({e}); ICR needs a decoder model "
            "whose attention goes through transformers' AttentionInterface (most current decoder LLMs)"
        ) from e
    try:
        yield
    finally:
        model.set_attn_implementation(before or "sdpa")
