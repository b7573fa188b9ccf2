"""A format warm-up before GRPO: a few supervised steps that teach the answer *format*, not the answer.

A small instruct model rarely writes ``<think>…</think><answer>[k]</answer>`` on its own (SmolLM2-135M-Instruct:
0 of 24 held-out DL19 prompts), so every group's rewards tie at 0, every advantage is 0 and GRPO learns nothing.
``grpo.format_warmup_steps: N`` first trains LoRA for N steps on completions that are well formed but whose answer
is drawn at random — uniform over the window's ids (setwise), a random order (listwise), a fair coin (binary) —
independently of the label. The warm-up therefore carries no relevance signal: what the model learns afterwards
about *which* document is relevant comes from the GRPO reward alone. The LoRA is merged and the merged weights are
GRPO's starting point (GRPO puts a fresh LoRA on them; the saved model merges both). They are kept in
``OUTPUT/format_warmup`` (written through a temporary directory), so a resumed run does not repeat the warm-up.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WARMUP_SUBDIR", "format_target", "format_warmup"]

WARMUP_SUBDIR = "format_warmup"
#: the reasoning of every warm-up completion: a plain sentence, the same for all (GRPO shapes the reasoning)
WARMUP_REASONING = "I compare each passage with the query and pick the one that answers it best."


def format_target(task: str, example: Mapping[str, Any], rng: random.Random) -> str:
    """A well-formed completion (the text after the example's answer ``prefix``) with a random answer: the
    label of ``example`` is never read."""
    prefix = str(example.get("prefix") or "")
    think = "" if prefix.rstrip().endswith("<think>") else "<think> "
    if task == "setwise":
        k = rng.randint(1, len(example["docids"]))
        return f"{think}{WARMUP_REASONING} </think>\n<answer>[{k}]</answer>"
    if task == "listwise":
        ids = list(range(1, int(example["num_candidates"]) + 1))
        rng.shuffle(ids)
        return f"{think}{WARMUP_REASONING} </think>\n<answer>[{', '.join(map(str, ids))}]</answer>"
    if task == "binary":
        return str(rng.randint(0, 1))
    raise ValueError(f"no warm-up format for task {task!r}")


def _batch(tokenizer: Any, prompts: Sequence[str], targets: Sequence[str]) -> dict[str, Any]:
    """Right-padded prompt + target (+ EOS) ids; labels are -100 on the prompt and the padding."""
    import torch

    eos = tokenizer.eos_token or ""
    rows, labels = [], []
    for prompt, target in zip(prompts, targets):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(target + eos, add_special_tokens=False)["input_ids"]
        rows.append(p + t)
        labels.append([-100] * len(p) + t)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, lb) in enumerate(zip(rows, labels)):
        ids[i, : len(r)] = torch.tensor(r)
        lab[i, : len(lb)] = torch.tensor(lb)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": lab}


def format_warmup(
    model: Any,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    *,
    task: str,
    steps: int,
    out: Path,
    fingerprint: str,
    peft_config: Any = None,
    lr: float = 2e-4,
    batch_size: int = 4,
    seed: int = 0,
) -> tuple[Any, dict[str, Any]]:
    """The warmed-up model (``model`` itself after ``steps`` LoRA steps, merged) and what happened (losses,
    seconds); reused from ``out / WARMUP_SUBDIR`` when a warm-up with the same ``fingerprint`` is stored there.
    ``rows`` are the GRPO dataset rows (``prompt`` and the task's columns); ``peft_config``: a LoRA to train and
    merge, ``None`` to train every weight."""
    import torch
    from transformers import AutoModelForCausalLM

    done = out / WARMUP_SUBDIR
    info_file = done / "warmup.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text(encoding="utf-8"))
        if info.get("fingerprint") == fingerprint:
            warmed = AutoModelForCausalLM.from_pretrained(done, dtype=model.dtype)
            return warmed, {**info, "reused": True}
    start = time.time()
    torch.manual_seed(seed)
    rng = random.Random(f"format-warmup:{seed}")
    if peft_config is not None:  # the run's own LoRA config (trainer._peft_config), merged after the warm-up
        from peft import get_peft_model

        model = get_peft_model(model, peft_config)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    order: list[int] = []
    losses: list[float] = []
    for _ in range(steps):
        picked = []
        for _ in range(min(batch_size, len(rows))):
            if not order:
                order = list(range(len(rows)))
                rng.shuffle(order)
            picked.append(rows[order.pop()])
        batch = _batch(
            tokenizer, [r["prompt"] for r in picked], [format_target(task, r, rng) for r in picked]
        )
        batch = {k: v.to(model.device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    info = {"fingerprint": fingerprint, "steps": steps, "lr": lr, "batch_size": batch_size, "losses": losses,
            "seconds": time.time() - start}  # fmt: skip
    tmp = done.with_name(done.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)  # a whole model directory: it can be loaded, measured or served by itself
    (tmp / "warmup.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if done.exists():
        shutil.rmtree(done)
    os.replace(tmp, done)
    return model, {**info, "reused": False}
