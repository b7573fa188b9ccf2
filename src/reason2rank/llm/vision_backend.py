"""A local vision-language model as an LLM backend: chat messages whose content holds images, answered with
``model.generate`` (transformers) on left-padded batches.

A message's content is a string or a list of parts, ``{"type": "text", "text": ...}`` and
``{"type": "image", "image": ImageRef}`` (``reason2rank.media``); the images are read when the request runs,
resized into the pixel budget, and expanded into image tokens by ``VisionInputs``. The response cache keys such
requests by the images' content digests (``str(ImageRef)``), so a rerun over the same pages costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from reason2rank.llm.backend import Backend, GenerationResult, Messages, OnResult
from reason2rank.media import ImageRef, PixelBudget
from reason2rank.scorers.vision_inputs import VisionInputs

__all__ = ["VisionBackend"]


class VisionBackend(Backend):
    """``generate`` over a ``AutoModelForImageTextToText`` model and its ``VisionInputs`` (see the module docstring).

    Honours ``prefix`` (text the answer starts with), ``seed`` (for sampling) and ``stop`` (the answer is cut at
    the first stop string); greedy when ``temperature == 0``.
    """

    supported_options = frozenset({"prefix", "seed", "stop"})

    def __init__(
        self,
        model: Any,
        inputs: VisionInputs,
        *,
        budget: PixelBudget | None = None,
        image_root: str | None = None,
        batch_size: int = 4,
        name: str = "vlm",
    ) -> None:
        self.model = model
        self.inputs = inputs
        self.budget = budget or PixelBudget()
        self.image_root = image_root
        self.batch_size = int(batch_size)
        self.name = name
        self.max_in_flight = self.batch_size
        self.tokenizer = None  # prompts hold images: passages are cut by words, not by this tokenizer

    def identity(self) -> dict[str, Any]:
        """Class, name, dtype and pixel budget (answers differ between them)."""
        return {**super().identity(), "dtype": str(next(self.model.parameters()).dtype),
                "pixels": [self.budget.min_pixels, self.budget.max_pixels]}  # fmt: skip

    def _features(self, messages: Messages, prefix: str) -> dict[str, Any]:
        plain: list[dict[str, Any]] = []
        images: list[Any] = []
        keys: list[str] = []
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                plain.append(dict(m))
                continue
            parts = []
            for c in content:
                if c.get("type") == "image":
                    ref = c["image"]
                    if not isinstance(ref, ImageRef):
                        raise TypeError(
                            f"an image part holds a reason2rank.media.ImageRef, got {type(ref).__name__}"
                        )
                    images.append(ref.load(self.image_root, what=str(c.get("doc", "image part"))))
                    keys.append(ref.digest(self.image_root))
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": c["text"]})
            plain.append({**m, "content": parts})
        return self.inputs.encode(plain, images, self.budget, prefix=prefix, image_keys=keys)

    def generate(
        self,
        messages: Sequence[Messages],
        *,
        on_result: OnResult | None = None,
        json_schema: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        **options: Any,
    ) -> list[GenerationResult]:
        """Answer each conversation (see the class docstring); results are aligned with ``messages``."""
        self.check_options(options)
        prefix = str(options.get("prefix", ""))
        stops = tuple(options.get("stop", ()))
        feats = [self._features(m, prefix) for m in messages]
        order = sorted(range(len(feats)), key=lambda i: -len(feats[i]["input_ids"]))
        results: list[GenerationResult | None] = [None] * len(feats)
        device = next(self.model.parameters()).device
        eos = self.model.generation_config.eos_token_id
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = {k: v.to(device) for k, v in self.inputs.collate([feats[i] for i in idx]).items()}
            t0 = time.perf_counter()
            sample = temperature > 0
            if sample and options.get("seed") is not None:
                torch.manual_seed(int(options["seed"]))
            with torch.inference_mode():
                out = self.model.generate(
                    **batch, max_new_tokens=max_new_tokens, do_sample=sample,
                    temperature=temperature if sample else None, top_p=None, top_k=None,
                    pad_token_id=self.inputs.pad_token_id, eos_token_id=eos,
                )  # fmt: skip
            latency = (time.perf_counter() - t0) / len(idx)
            width = batch["input_ids"].shape[1]
            eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
            for row, i in enumerate(idx):
                new = out[row, width:].tolist()
                ended = next((j for j, t in enumerate(new) if t in eos_ids), None)
                tokens = new if ended is None else new[:ended]
                text = self.inputs.tokenizer.decode(tokens, skip_special_tokens=True)
                finish = "stop" if ended is not None else "length"
                for s in stops:
                    if s in text:
                        text, finish = text[: text.index(s)], "stop"
                res = GenerationResult(text=text, prompt_tokens=len(feats[i]["input_ids"]),
                                       completion_tokens=len(tokens), finish_reason=finish,
                                       latency_s=latency)  # fmt: skip
                results[i] = res
                if on_result is not None:
                    on_result(i, res)
        return [r for r in results if r is not None]
