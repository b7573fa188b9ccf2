"""The vision-language side of GRPO (task ``vlm-listwise``: MM-R5 on page images).

TRL's ``GRPOTrainer`` trains a VLM when its ``processing_class`` is a ``ProcessorMixin`` and each example's prompt
is a conversation whose ``{"type": "image"}`` placeholders are filled from an ``images`` column. This module loads
the policy (``AutoModelForImageTextToText``) and that processor (``training_processor``: the model's own, or the
image-only Qwen2-VL processor where torchvision does not import), sets the processor's image budget to
``data.min_pixels`` / ``data.max_pixels``, turns examples into such rows (images read and checked against
``data.image_root`` by ``ImageRef.load``), and writes the processor beside the trained weights. The vision tower
stays frozen: LoRA (the default) goes on the language model's projections, and with ``lora: null`` the vision
tower's parameters are frozen. A ``lora.target_modules`` of one's own is used as given.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from reason2rank.rl.config import GRPOTrainConfig
from reason2rank.rl.examples import ExampleSet

__all__ = ["LANGUAGE_MODEL_LINEAR", "load_vlm_policy", "longest_vlm_prompt", "save_vlm_processor", "vlm_rows"]

#: LoRA targets of a Qwen2-VL-style model: the language model's projections, not the vision tower's
LANGUAGE_MODEL_LINEAR = (
    r"^(?!.*(visual|vision_model|vision_tower)).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
)
#: parameters of the vision tower (frozen in full fine-tuning)
VISION_TOWER = re.compile(r"(^|\.)(visual|vision_model|vision_tower)\.")


def load_vlm_policy(cfg: GRPOTrainConfig, prefix: str) -> tuple[Any, Any]:
    """The VLM to train (fp32) and its ``ProcessorMixin`` (left padding, the answer ``prefix`` after the
    generation prompt, images resized into the data's pixel budget)."""
    from transformers import AutoModelForImageTextToText

    from reason2rank.scorers.image_only_processor import training_processor

    path = cfg.resolve(cfg.model)
    kw = {"token": cfg.token} if cfg.token else {}
    model = AutoModelForImageTextToText.from_pretrained(path, dtype="float32", **kw)
    if cfg.lora is None:  # full fine-tuning of the language model; the vision tower stays as it is
        for name, param in model.named_parameters():
            if VISION_TOWER.search(name):
                param.requires_grad_(False)
    processor = training_processor(str(path), kw, prefix=prefix)
    ip = processor.image_processor
    ip.size = {"shortest_edge": cfg.data.min_pixels, "longest_edge": cfg.data.max_pixels}
    for key in ("min_pixels", "max_pixels"):
        if hasattr(ip, key):
            setattr(ip, key, getattr(cfg.data, key))
    return model, processor


def _token_side(processor: Any) -> int:
    """The side in pixels of the square one image token covers: patch size × merge size (28 for Qwen2-VL)."""
    ip = processor.image_processor
    return int(getattr(ip, "patch_size", 14)) * int(getattr(ip, "merge_size", 2))


def vlm_rows(cfg: GRPOTrainConfig, examples: ExampleSet, processor: Any) -> list[dict[str, Any]]:
    """One training row per example: ``prompt`` (the conversation), ``images`` (PIL, in placeholder order) and
    the reward's columns. Each page is resized here into the pixel budget, to the size the processor's own resize
    gives (a multiple of patch × merge pixels a side), so that a generator that preprocesses images itself — vLLM,
    with the model's default budget — sees the same pixels; the copies carry no file format, so datasets stores
    them as PNG (a JPEG page would otherwise be re-encoded at quality 75)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    factor = _token_side(processor)
    root = cfg.resolve(cfg.data.image_root) if cfg.data.image_root else None
    rows = []
    for ex in examples.examples:
        row = {k: v for k, v in ex.items() if k not in ("messages", "images")}
        row["prompt"] = ex["messages"]
        row["images"] = []
        for ref in ex["images"]:
            img = ref.load(root, what=f"a page of query {ex['qid']!r}")
            h, w = smart_resize(img.height, img.width, factor=factor, min_pixels=cfg.data.min_pixels,
                                max_pixels=cfg.data.max_pixels)  # fmt: skip
            img = img.resize((w, h), resample=3) if (h, w) != (img.height, img.width) else img.copy()
            row["images"].append(img)  # resample 3: bicubic, the processor's own
        rows.append(row)
    return rows


def longest_vlm_prompt(processor: Any, rows: list[dict[str, Any]]) -> int:
    """The most tokens a row's prompt takes: its rendered text (one placeholder token per page) with each placeholder
    expanded into the page's (h/f)·(w/f) image tokens, f = patch × merge pixels (``vlm_rows`` resized every page to
    multiples of f, so no page is preprocessed here a second time)."""
    from trl.data_utils import prepare_multimodal_messages

    factor = _token_side(processor)
    longest = 0
    for row in rows:
        messages = prepare_multimodal_messages(row["prompt"], images=row["images"])
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        n_text = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        n_images = sum(img.height * img.width // factor**2 - 1 for img in row["images"])
        longest = max(longest, n_text + n_images)
    return longest


def save_vlm_processor(cfg: GRPOTrainConfig, directory: Path) -> None:
    """Write the starting model's processor (its own, or its tokenizer, image processor and chat template)
    into ``directory``, without the training-time prefix."""
    from reason2rank.scorers.vision_inputs import VisionInputs

    kw = {"token": cfg.token} if cfg.token else {}
    inputs = VisionInputs.load(str(cfg.resolve(cfg.model)), kw)
    inputs.tokenizer.padding_side = "left"
    if inputs.processor is not None:
        inputs.processor.save_pretrained(directory)
    else:
        inputs.save(directory)
