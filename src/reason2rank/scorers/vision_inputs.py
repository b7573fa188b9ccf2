"""The processor side of a vision-language model: chat rendering, image preprocessing, image-token expansion and
batch collation, shared by the VLM pointwise family and the VLM generation backend.

``VisionInputs.load(path)`` opens the model's ``AutoProcessor`` when it can and takes its tokenizer, image
processor and chat template. Qwen2-VL's processor also builds a video processor, which needs torchvision; where
torchvision is missing (or, as with PyPI's build beside the CPU torch 2.13 wheel, does not import) the tokenizer,
the image processor (transformers' PIL backend) and the chat template file are opened one by one instead. Either
way the inputs are built the way Qwen2-VL's processor builds them: each ``<|image_pad|>`` placeholder becomes
``t*h*w / merge_size**2`` image tokens for its image's patch grid, and ``mm_token_type_ids`` marks them (1) for
the multimodal rotary positions. Models whose image processor does not return patch grids (``image_grid_thw``)
are refused with a clear error.

Features are plain Python/numpy (one prompt each); ``collate`` left-pads a batch of them and concatenates the
pixels and grids in row order, which is how the model expects several images across a batch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reason2rank.media import PixelBudget

__all__ = ["VisionFeatures", "VisionInputs"]

logger = logging.getLogger(__name__)

#: one prompt: token ids, modality types, pixels (``None`` without images), grids, and a content key
VisionFeatures = dict[str, Any]


def _chat_template_file(path: str, hub_kwargs: Mapping[str, Any]) -> str | None:
    """The processor's chat template (``chat_template.jinja`` / ``chat_template.json``) of a directory or hub repo."""
    local = Path(path)
    for name in ("chat_template.jinja", "chat_template.json"):
        f = local / name if local.is_dir() else None
        if f is None:
            try:
                from huggingface_hub import hf_hub_download

                kw = {k: v for k, v in hub_kwargs.items() if k in ("token", "revision") and v}
                f = Path(hf_hub_download(path, name, **kw))
            except Exception:
                continue
        if f is not None and f.is_file():
            text = f.read_text(encoding="utf-8")
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None


class VisionInputs:
    """Builds a VLM's inputs from chat messages whose content is a list of ``{"type": "text"|"image"}`` parts."""

    def __init__(
        self, tokenizer: Any, image_processor: Any, chat_template: str | None, processor: Any = None
    ) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template
        self.processor = processor
        self.image_token = getattr(processor, "image_token", None) or "<|image_pad|>"
        image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        if image_token_id is None or image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"the tokenizer has no {self.image_token!r} token; reason2rank's VLM family reads Qwen2-VL-style "
                "models (Qwen2-VL, Qwen2.5-VL and models whose processor follows the same API)"
            )
        self.image_token_id = int(image_token_id)
        self.merge_size = int(getattr(image_processor, "merge_size", 0) or 0)
        if not self.merge_size:
            raise ValueError(
                f"the image processor {type(image_processor).__name__} gives no patch grid (merge_size / "
                "image_grid_thw); reason2rank's VLM family reads Qwen2-VL-style models"
            )
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))

    @classmethod
    def load(cls, path: str, hub_kwargs: Mapping[str, Any] | None = None) -> VisionInputs:
        """Open the processor of a model directory or hub id (see the module docstring)."""
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        kw = {k: v for k, v in (hub_kwargs or {}).items() if v not in (None, False)}
        try:
            processor = AutoProcessor.from_pretrained(path, **kw)
        except (
            Exception
        ) as e:  # ImportError (no torchvision), AttributeError/ValueError from the video side, ...
            logger.info(
                "AutoProcessor(%s) did not load (%s: %s); opening its parts", path, type(e).__name__, e
            )
            processor = None
        if (
            processor is not None
            and hasattr(processor, "image_processor")
            and hasattr(processor, "tokenizer")
        ):
            template = getattr(processor, "chat_template", None) or processor.tokenizer.chat_template
            return cls(processor.tokenizer, processor.image_processor, template, processor)
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
        image_processor = AutoImageProcessor.from_pretrained(path, **kw)
        template = _chat_template_file(path, kw) or getattr(tokenizer, "chat_template", None)
        return cls(tokenizer, image_processor, template)

    def save(self, out: str | os.PathLike[str]) -> None:
        """Write the tokenizer, the image processor and the chat template (``chat_template.jinja``)."""
        self.tokenizer.save_pretrained(out)
        self.image_processor.save_pretrained(out)
        if self.chat_template:
            (Path(out) / "chat_template.jinja").write_text(self.chat_template, encoding="utf-8")

    # -- building one prompt ---------------------------------------------------------------------------------
    def render(self, messages: Sequence[Mapping[str, Any]], prefix: str = "") -> str:
        """The prompt text (the chat template with the generation prompt), image placeholders not yet expanded."""
        if self.chat_template:
            text = self.tokenizer.apply_chat_template(
                list(messages), chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
            )
        else:  # no chat template: the parts in order, images as their placeholders
            chunks = []
            for m in messages:
                content = m["content"]
                if isinstance(content, str):
                    chunks.append(content)
                    continue
                chunks.append(
                    "".join(
                        f"<|vision_start|>{self.image_token}<|vision_end|>"
                        if c["type"] == "image"
                        else c["text"]
                        for c in content
                    )
                )
            text = "\n\n".join(chunks) + "\n"
        return text + prefix

    def encode(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Any],
        budget: PixelBudget,
        prefix: str = "",
        image_keys: Sequence[str] = (),
    ) -> VisionFeatures:
        """One prompt's features; ``images`` (PIL, in placeholder order) are resized into ``budget``; ``image_keys``
        (their digests) go into the feature's key so identical prompts are computed once."""
        text = self.render(messages, prefix)
        n_slots = text.count(self.image_token)
        if n_slots != len(images):
            raise ValueError(
                f"the prompt has {n_slots} image placeholder(s) for {len(images)} image(s); the chat template must "
                "render each {'type': 'image'} part as one image token"
            )
        pixels = grids = None
        if images:
            out = self.image_processor(
                images=list(images),
                size={"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels},
                return_tensors="np",
            )
            pixels = np.asarray(out["pixel_values"], dtype=np.float32)
            grids = [tuple(int(x) for x in g) for g in np.asarray(out["image_grid_thw"])]
            pieces = text.split(self.image_token)
            text = pieces[0]
            for g, piece in zip(grids, pieces[1:]):
                text += self.image_token * (g[0] * g[1] * g[2] // self.merge_size**2) + piece
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        mm = [1 if t == self.image_token_id else 0 for t in ids]
        key = hashlib.sha256(
            json.dumps([ids, list(image_keys), budget.min_pixels, budget.max_pixels]).encode()
        ).hexdigest()
        return {"input_ids": ids, "mm_token_type_ids": mm, "pixel_values": pixels, "image_grid_thw": grids,
                "key": key}  # fmt: skip

    # -- batches ---------------------------------------------------------------------------------------------
    def collate(self, features: Sequence[VisionFeatures]) -> dict[str, torch.Tensor]:
        """Left-pad token ids (attention mask, modality types); pixels and grids of every row, concatenated."""
        n = len(features)
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        mm = torch.zeros((n, width), dtype=torch.long)
        for i, f in enumerate(features):
            length = len(f["input_ids"])
            ids[i, width - length :] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            mm[i, width - length :] = torch.as_tensor(f["mm_token_type_ids"], dtype=torch.long)
            mask[i, width - length :] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        pixels = [f["pixel_values"] for f in features if f["pixel_values"] is not None]
        if pixels:
            batch["pixel_values"] = torch.from_numpy(np.concatenate(pixels))
            batch["image_grid_thw"] = torch.tensor(
                [g for f in features for g in (f["image_grid_thw"] or [])], dtype=torch.long
            )
            batch["mm_token_type_ids"] = mm
        return batch
