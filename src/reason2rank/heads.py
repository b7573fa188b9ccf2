"""Scalar heads: a ``Linear(hidden_size, 1)`` in fp32 on a backbone's hidden states, saved as safetensors.

The rank head of a decoder student (``rank_head.safetensors``, on the last token of each prompt) and the
evidence head of an encoder student (``evidence_head.safetensors``, on every token) are both this layer; they
are written and read here, with keys ``weight`` ``[1, H]`` and ``bias`` ``[1]``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["load_linear_head", "new_linear_head", "save_linear_head"]


def new_linear_head(
    hidden_size: int, device: str | torch.device | None = None, *, scaled_init: bool = False
) -> torch.nn.Linear:
    """A fresh fp32 ``Linear(hidden_size, 1)``. ``scaled_init``: weights ~ N(0, 1/hidden_size), bias 0 (a
    head whose first outputs have unit scale); otherwise torch's default initialisation."""
    layer = torch.nn.Linear(hidden_size, 1, dtype=torch.float32, device=device)
    if scaled_init:
        torch.nn.init.normal_(layer.weight, std=hidden_size**-0.5)
        torch.nn.init.zeros_(layer.bias)
    return layer


def save_linear_head(layer: torch.nn.Linear, path: str | os.PathLike[str]) -> Path:
    """Write ``layer`` as safetensors (``weight`` ``[1, H]``, ``bias`` ``[1]``, fp32) to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    bias = layer.bias if layer.bias is not None else torch.zeros(1)
    save_file(
        {
            "weight": layer.weight.detach().float().cpu().reshape(1, -1).contiguous(),
            "bias": bias.detach().float().cpu().reshape(1).contiguous(),
        },
        str(path),
    )
    return path


def load_linear_head(
    path: str | os.PathLike[str], hidden_size: int, device: str | torch.device | None = None, *, what: str
) -> torch.nn.Linear:
    """Read a head written by ``save_linear_head`` as an fp32 Linear in eval mode; ``what`` names it in errors
    (e.g. ``"evidence head"``)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    state = load_file(str(path))
    missing = {"weight", "bias"} - set(state)
    if missing:
        raise ValueError(f"{what} {path} lacks the tensor(s) {sorted(missing)}")
    weight, bias = state["weight"].float(), state["bias"].float()
    if weight.numel() != hidden_size or bias.numel() != 1:
        raise ValueError(
            f"{what} {path} has weight {tuple(weight.shape)} and bias {tuple(bias.shape)}; this model needs "
            f"[1, {hidden_size}] and [1]"
        )
    layer = new_linear_head(hidden_size)
    layer.load_state_dict({"weight": weight.reshape(1, hidden_size), "bias": bias.reshape(1)})
    return layer.to(device).eval()
