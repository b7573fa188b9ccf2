"""A local transformers causal LM as teacher: chat template, left-padded batches, greedy decoding.

Prompts are sorted by length so a batch pads little; on CUDA out-of-memory the batch is halved and
retried (down to one prompt, after which that prompt is reported as an error). Token counts are exact:
the prompt's tokens and the generated tokens up to and including the end-of-sequence token.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reason2rank.teacher.backends import Backend, GenerationResult, Messages, OnResult


class TransformersBackend(Backend):
    """``hf:PATH_OR_ID``: a causal LM loaded with ``AutoModelForCausalLM``.

    ``model`` is a local directory, a hub id (loaded from the local cache; set ``local_files_only=False``
    to allow a download) or an already loaded model (then pass ``tokenizer``). ``device`` defaults to CUDA
    when available, and ``dtype`` to bfloat16 on a GPU that supports it, float32 otherwise.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        batch_size: int = 8,
        device: str | None = None,
        dtype: Any = None,
        local_files_only: bool = True,
        trust_remote_code: bool = False,
        name: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(dtype, str):  # the engine's vocabulary: auto, fp32, bf16, fp16 (and torch's names)
            from reason2rank.engine import resolve_device, resolve_dtype

            dtype = resolve_dtype(dtype, resolve_device(device))
        if isinstance(model, (str, Path)):
            path = str(model)
            self.name = name or f"hf:{path.rstrip('/')}"
            if device is None:
                device = "cuda" if torch.cuda.is_available() else "cpu"
            if dtype is None:
                use_bf16 = torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()
                dtype = torch.bfloat16 if use_bf16 else torch.float32
            try:
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(
                    path, local_files_only=local_files_only, trust_remote_code=trust_remote_code
                )
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=dtype, local_files_only=local_files_only, trust_remote_code=trust_remote_code
                )
            except OSError as e:
                if local_files_only and not Path(path).is_dir():
                    raise OSError(
                        f"hf:{path} is neither a local model directory nor in the Hugging Face cache; download it "
                        f"first (hf download {path}) or pass local_files_only=False"
                    ) from e
                raise
        else:  # an already loaded model: moved/cast only when asked
            if tokenizer is None:
                raise ValueError("pass the tokenizer together with an already loaded model")
            self.name = name or f"hf:{getattr(model.config, '_name_or_path', type(model).__name__)}"
            if dtype is not None:
                model = model.to(dtype=dtype)
            if device is None:
                device = str(next(model.parameters()).device)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.max_in_flight = self.batch_size
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        if isinstance(pad, list):
            pad = pad[0]
        if pad is None:
            raise ValueError(f"{self.name}: the tokenizer has neither a pad nor an eos token")
        self.pad_token_id = int(pad)
        self._warned_template = False

    def render(self, messages: Messages) -> str:
        """The prompt string for one conversation, with the generation prompt appended."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        if not self._warned_template:
            warnings.warn(
                f"{self.name} has no chat template; using a plain 'role: content' rendering", stacklevel=3
            )
            self._warned_template = True
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def generate(
        self,
        messages: Sequence[Messages],
        *,
        on_result: OnResult | None = None,
        json_schema: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
    ) -> list[GenerationResult]:
        """Answer every message list with batched, left-padded generation; see ``Backend.generate``."""
        import torch

        prompts = [self.render(m) for m in messages]
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[GenerationResult | None] = [None] * len(prompts)
        pos = 0
        batch_size = self.batch_size
        while pos < len(order):
            idx = order[pos : pos + batch_size]
            try:
                outs = self._generate_batch([encoded[i] for i in idx], max_new_tokens, temperature)
            except torch.cuda.OutOfMemoryError as e:
                torch.cuda.empty_cache()
                if batch_size > 1:
                    batch_size = max(1, batch_size // 2)
                    continue
                outs = [
                    GenerationResult(
                        error=f"CUDA out of memory for a prompt of {len(encoded[idx[0]])} tokens: {e}"
                    )
                ]
            for i, res in zip(idx, outs):
                results[i] = res
                if on_result is not None:
                    on_result(i, res)
            pos += len(idx)
        return [r for r in results if r is not None]

    def _generate_batch(
        self, ids: list[list[int]], max_new_tokens: int, temperature: float
    ) -> list[GenerationResult]:
        import torch

        tok = self.tokenizer
        from reason2rank.engine import pad_batch

        # left padding, done here so the caller's tokenizer is not changed
        batch = pad_batch([{"input_ids": x} for x in ids], self.pad_token_id, "left", self.device)
        width = batch["input_ids"].shape[1]
        gen: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "pad_token_id": self.pad_token_id,
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            gen["temperature"] = temperature
        else:  # greedy: silence sampling settings a checkpoint's generation_config may carry
            gen.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self.model.generate(**batch, **gen)
        new = out[:, width:].tolist()
        eos = tok.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        gen_eos = getattr(self.model.generation_config, "eos_token_id", None)
        if gen_eos is not None:
            eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        results = []
        for prompt_ids, row in zip(ids, new):
            stop = next((j for j, t in enumerate(row) if t in eos_ids), None)
            used = row if stop is None else row[:stop]
            text = tok.decode(used, skip_special_tokens=True)
            results.append(
                GenerationResult(
                    text=text,
                    prompt_tokens=len(prompt_ids),
                    completion_tokens=len(used) + (0 if stop is None else 1),
                    finish_reason="length" if stop is None else "stop",
                )
            )
        return results

    def close(self) -> None:
        """Release the model."""
        self.model = None
