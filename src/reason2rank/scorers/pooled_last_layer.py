"""The last encoder layer computed at the first position only, for heads that read nothing else.

A BERT-style sequence classifier (BERT and MiniLM, RoBERTa, XLM-R, CamemBERT, ELECTRA) scores a pair from the
last layer's hidden state at position 0 (``[CLS]`` / ``<s>``): the pooler or the classification head reads
``hidden[:, 0]`` and nothing else. The other positions of the last layer are computed and thrown away. Here that
layer is computed for position 0 alone: its keys and values still come from every position, but the query, the
attention output, the feed-forward block and both layer norms run on one token instead of ``L``. That is exact
(the same arithmetic on the one row that is read, up to float rounding) and, with the key and value projections
folded into that one query (``pooled_forward``), leaves almost nothing of the layer's work: ~16% of a 6-layer
MiniLM's FLOPs saved, ~8% of a 12-layer BERT's.

``pooled_last_layer(model, attention_mask)`` turns it on for the forwards the calling thread runs inside the
block. Nothing in the model is swapped: the last layer's instance gets, once, a ``forward`` that runs the pooled
computation only for the thread (and the layer) that asked, and the layer's own forward otherwise, so another
thread using the same model at the same time, and anything outside the block (the evidence head's per-token
states, training), sees the full layer; parameters, ``state_dict`` and ``save_pretrained`` are untouched. It does
nothing for a model it does not recognise, so callers can use it unconditionally.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["POOLED_MODEL_TYPES", "pooled_forward", "pooled_last_layer", "pooled_layer_list"]

#: model types whose sequence-classification head reads the last hidden state at position 0 only, and whose
#: layers are the post-layer-norm BERT layer (``attention.self`` q/k/v, ``attention.output``, feed-forward)
POOLED_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "camembert", "electra"})


def pooled_layer_list(model: Any) -> torch.nn.ModuleList | None:
    """The encoder's ``ModuleList`` of layers if ``model``'s score can use the pooled last layer, else ``None``.

    ``model`` is a transformers ``*ForSequenceClassification`` (or a peft model around one); anything else — an
    ONNX session, a decoder, relative position embeddings, a layer that does not have the BERT layout — is
    ``None``.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(inner, "config", None)
    if config is None or getattr(config, "model_type", None) not in POOLED_MODEL_TYPES:
        return None
    if not type(inner).__name__.endswith("ForSequenceClassification"):
        return None
    if getattr(config, "is_decoder", False) or getattr(config, "add_cross_attention", False):
        return None
    if (getattr(config, "position_embedding_type", None) or "absolute") != "absolute":
        return None
    base = getattr(inner, "base_model", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or len(layers) == 0:
        return None
    last = layers[-1]
    attention = getattr(last, "attention", None)
    self_attention = getattr(attention, "self", None)
    needed = (
        all(
            hasattr(self_attention, n)
            for n in ("query", "key", "value", "num_attention_heads", "attention_head_size")
        )  # fmt: skip
        and hasattr(attention, "output")
        and hasattr(last, "feed_forward_chunk")
    )
    return layers if needed else None


#: fold the key and value projections into the query where the weights can be read (see ``pooled_forward``)
FOLD_PROJECTIONS = True


def pooled_forward(layer: Any, hidden_states: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """A BERT ``layer`` run for position 0 only: ``[B, 1, H]`` where the layer returns ``[B, L, H]``.

    ``key_mask`` is the batch's 2-D attention mask (1 = token, 0 = padding); the encoder's own prepared mask
    (whose form depends on the attention implementation) is not read.

    With one query row the key and value projections need not be applied to every token either: per head,
    ``q·(W_k h_j + b_k) = (W_kᵀ q)·h_j + q·b_k``, where ``q·b_k`` is the same for every ``j`` and cancels in the
    softmax, and ``Σ_j p_j (W_v h_j + b_v) = W_v (Σ_j p_j h_j) + b_v``. So the attention reads the hidden states
    twice at ``heads × H`` multiply-adds a token instead of ``2 H²`` (MiniLM: 12 × 384 against 2 × 384²). That
    needs the projections' weights: when they are plain ``nn.Linear`` (not a LoRA or quantised wrapper, which
    must be called) they are read directly, else the keys and values are projected as usual.
    """
    attention = layer.attention
    sa = attention.self
    batch, length, size = hidden_states.shape
    heads, width = int(sa.num_attention_heads), int(sa.attention_head_size)
    first = hidden_states[:, :1]
    query = sa.query(first).view(batch, 1, heads, width).transpose(1, 2)  # [B, heads, 1, width]
    folded = FOLD_PROJECTIONS and type(sa.key) is torch.nn.Linear and type(sa.value) is torch.nn.Linear
    if folded:  # batched matmuls over heads (weights) and over the batch (states): nothing is broadcast
        key_w = sa.key.weight.view(heads, width, size)  # per head [width, H]
        value_w = sa.value.weight.view(heads, width, size)
        per_head = query.reshape(batch, heads, width).transpose(0, 1)  # [heads, B, width]
        reader = torch.bmm(per_head, key_w).transpose(0, 1)  # W_kᵀ q: [B, heads, H]
        scores = torch.bmm(reader, hidden_states.transpose(1, 2)) * (width**-0.5)  # [B, heads, L]
        padding = key_mask[:, None, :] == 0
        probs = torch.softmax(scores.masked_fill(padding, torch.finfo(scores.dtype).min), dim=-1)
        mixed = torch.bmm(probs, hidden_states).transpose(0, 1)  # Σ_j p_j h_j: [heads, B, H]
        context = torch.bmm(mixed, value_w.transpose(1, 2))  # [heads, B, width]
        if sa.value.bias is not None:
            context = context + sa.value.bias.view(heads, 1, width)
        context = context.permute(1, 0, 2).reshape(batch, 1, heads * width)
    else:
        key = sa.key(hidden_states).view(batch, length, heads, width).transpose(1, 2)
        value = sa.value(hidden_states).view(batch, length, heads, width).transpose(1, 2)
        scores = torch.matmul(query, key.transpose(2, 3)) * (width**-0.5)  # [B, heads, 1, L]
        padding = key_mask[:, None, None, :] == 0
        probs = torch.softmax(scores.masked_fill(padding, torch.finfo(scores.dtype).min), dim=-1)
        context = torch.matmul(probs, value).transpose(1, 2).reshape(batch, 1, heads * width)
    attended = attention.output(context, first)  # dense, dropout, LayerNorm(x + residual)
    out: torch.Tensor = layer.feed_forward_chunk(attended)
    return out


class _Requests(threading.local):
    """Per thread: the layer asked to run pooled, and the batch's 2-D mask (``None`` outside every block)."""

    layer: Any = None
    key_mask: torch.Tensor | None = None


_REQUESTS = _Requests()


class _DispatchingForward:
    """The last layer's instance ``forward``: pooled for the thread that asked for this layer, else its own.

    A plain object (not a bound method) so that a model that has one still pickles, and a deep copy gets one
    bound to its own copy of the layer.
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer

    def __call__(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        layer = self.layer
        if _REQUESTS.layer is layer and _REQUESTS.key_mask is not None and not layer.training:
            return pooled_forward(layer, hidden_states, _REQUESTS.key_mask)
        return type(layer).forward(layer, hidden_states, *args, **kwargs)


def _dispatches(layer: Any) -> bool:
    own = layer.__dict__.get("forward")
    return isinstance(own, _DispatchingForward) and own.layer is layer


@contextlib.contextmanager
def pooled_last_layer(model: Any, attention_mask: torch.Tensor | None) -> Iterator[bool]:
    """Within the block, ``model``'s last encoder layer runs at position 0 only (yields ``True``); for a model
    ``pooled_layer_list`` does not recognise, in training mode, or without a mask, nothing changes (``False``).

    Only the classifier logits are then right: ``output_hidden_states`` would hold ``[B, 1, H]`` for the last
    layer, so callers that read per-token states must not use this.
    """
    layers = pooled_layer_list(model) if attention_mask is not None else None
    if layers is None or getattr(model, "training", False):
        yield False
        return
    last = layers[-1]
    if not _dispatches(last):  # once per layer instance
        last.forward = _DispatchingForward(last)
    before = (_REQUESTS.layer, _REQUESTS.key_mask)
    _REQUESTS.layer, _REQUESTS.key_mask = last, attention_mask
    try:
        yield True
    finally:
        _REQUESTS.layer, _REQUESTS.key_mask = before
