"""The one generation loop for local causal LMs: batched, left-padded, greedy or sampled, with a shared-prefix
KV cache.

Prompts of a batch often share a long beginning (the system prompt and instruction of a listwise window, the
query of every setwise comparison of one query). ``decode`` runs that common prefix once, copies its KV cache to
every row, and runs only the suffixes; the rows' suffixes are left-padded *after* the prefix and the attention
mask hides the gap, with position ids counted over the real tokens only, so every row sees exactly the tokens it
would see alone. Decoding stops per row at an end-of-sequence token, a stop string, or the token budget.

``decode`` is used by ``TransformersBackend`` (the teacher, the listwise/setwise/pairwise strategies) and by the
causal-LM family's reasoning generation.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Decoded", "common_prefix_length", "decode", "forward_with_cache"]

#: the shortest shared prefix worth a separate forward pass
MIN_SHARED_PREFIX = 16


@dataclass(frozen=True)
class Decoded:
    """One row's result: the generated token ids (without the end-of-sequence token) and why it stopped
    (``"stop"``: an end-of-sequence token or a stop string; ``"length"``: the token budget)."""

    ids: list[int]
    finish_reason: str
    stopped_by: str | None = None  # the stop string that ended it, when one did


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token id lists."""
    if not rows:
        return 0
    first = rows[0]
    n = min(len(r) for r in rows)
    for i in range(n):
        t = first[i]
        if any(r[i] != t for r in rows):
            return i
    return n


def _cache_name(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _cache_of(out: Any) -> Any:
    cache = out.get("cache") if hasattr(out, "get") else None
    return cache if cache is not None else out.past_key_values


def forward_with_cache(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: Any = None,
) -> tuple[torch.Tensor, Any]:
    """One forward pass continuing ``cache`` (``None``: a fresh one); ``attention_mask`` covers the cached tokens
    and the new ones. Returns the fp32 logits of the last position and the updated cache."""
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
    kwargs = {_cache_name(model): cache} if cache is not None else {}
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        use_cache=True,
        logits_to_keep=1,
        **kwargs,
    )
    return out.logits[:, -1].float(), _cache_of(out)


def _pick(
    logits: torch.Tensor, temperature: float, top_p: float | None, generator: torch.Generator | None
) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, idx = torch.sort(probs, descending=True, dim=-1)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # the smallest set whose mass reaches top_p
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        probs = torch.zeros_like(probs).scatter(-1, idx, sorted_probs)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


def _penalise_repeats(
    logits: torch.Tensor, generated: Sequence[Sequence[int]], penalty: float
) -> torch.Tensor:
    """``logits`` with each row's already generated tokens made less likely by ``penalty``."""
    logits = logits.clone()
    for i, toks in enumerate(generated):
        if toks:
            idx = torch.tensor(sorted(set(toks)), dtype=torch.long, device=logits.device)
            seen = logits[i, idx]
            logits[i, idx] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def decode(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    eos_token_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    tokenizer: Any = None,
    share_prefix: bool = True,
    constraints: Any = None,
    repetition_penalty: float | None = None,
) -> list[Decoded]:
    """Generate a continuation of every prompt (token id lists) in one batch; see the module docstring.

    ``stop`` strings need ``tokenizer`` (to read the text generated so far). Sampling (``temperature > 0``)
    draws from a generator seeded with ``seed`` (a fresh one per call), so a seeded call is reproducible.
    ``constraints`` (``llm.constraints.RowConstraints``) limits each constrained row to the tokens its grammar
    allows at every step; a row whose grammar has ended stops. ``repetition_penalty`` (> 1) divides the positive
    logits (multiplies the negative ones) of the tokens a row has generated so far, as in CTRL (Keskar et al.,
    2019) and transformers' ``RepetitionPenaltyLogitsProcessor``, but over the answer only, not the prompt.
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if stop and tokenizer is None:
        raise ValueError("stop strings need the tokenizer")
    device = next(model.parameters()).device
    n = len(prompts)
    shared = common_prefix_length(prompts) if share_prefix and n > 1 else 0
    shared = min(shared, min(len(p) for p in prompts) - 1)  # every row keeps a suffix token
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    generator = torch.Generator().manual_seed(seed) if (temperature > 0 and seed is not None) else None
    eos = set(int(e) for e in eos_token_ids)
    with torch.inference_mode():
        cache = None
        if shared:
            prefix = torch.tensor([list(prompts[0][:shared])], dtype=torch.long, device=device)
            _, cache = forward_with_cache(model, prefix, torch.ones_like(prefix))
            cache.batch_repeat_interleave(n)
        suffixes = [list(p[shared:]) for p in prompts]
        width = max(len(s) for s in suffixes)
        ids = torch.full((n, width), pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((n, shared + width), dtype=torch.long, device=device)
        mask[:, :shared] = 1
        for i, s in enumerate(suffixes):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long, device=device)
            mask[i, shared + width - len(s) :] = 1
        logits, cache = forward_with_cache(model, ids, mask, cache)
        out: list[list[int]] = [[] for _ in range(n)]
        finish: list[str | None] = [None] * n
        stopped_by: list[str | None] = [None] * n
        for step in range(max_new_tokens):
            if repetition_penalty is not None and repetition_penalty != 1.0:
                logits = _penalise_repeats(logits, out, repetition_penalty)
            if constraints is not None:
                logits = constraints.mask(logits, [f is None for f in finish])
            nxt = _pick(logits, temperature, top_p, generator)
            tokens = nxt.tolist()
            for i, t in enumerate(tokens):
                if finish[i] is not None:
                    continue
                if t in eos:
                    finish[i] = "stop"
                    continue
                out[i].append(t)
                if constraints is not None:
                    constraints.accept(i, t)
                    if constraints.done(i):
                        finish[i] = "stop"
                        continue
                if stop:
                    tail = tokenizer.decode(out[i][-32:], skip_special_tokens=True)
                    hit = next((s for s in stop if s in tail), None)
                    if hit is not None:
                        finish[i], stopped_by[i] = "stop", hit
            if all(f is not None for f in finish) or step == max_new_tokens - 1:
                break
            feed = torch.tensor(
                [t if finish[i] is None else pad_token_id for i, t in enumerate(tokens)],
                dtype=torch.long,
                device=device,
            )[:, None]
            mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long, device=device)], dim=1)
            logits, cache = forward_with_cache(model, feed, mask, cache)
    return [Decoded(o, f or "length", s) for o, f, s in zip(out, finish, stopped_by)]
