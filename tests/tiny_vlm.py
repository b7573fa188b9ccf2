"""A tiny random Qwen2-VL built from a config (no downloads), and small images for the vision tests.

``make_tiny_qwen2_vl(path)`` writes a directory that opens with ``AutoModelForImageTextToText`` and reason2rank's
``VisionInputs``: 2 text layers and 1 vision block of width 32, the Qwen2 byte-level BPE tokenizer of
``tiny_models`` plus the vision specials (``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``,
``<|video_pad|>``), a chat template that renders ``{"type": "image"}`` parts the way Qwen2-VL's does, and a
``Qwen2VLImageProcessorPil`` config (patch 14, merge 2: one image token per 28x28 pixels). No video processor is
written (it needs torchvision); ``AutoProcessor`` does not open the directory, ``VisionInputs`` opens its parts.
``shape="2b"`` builds the same with Qwen2-VL-2B's layer shapes (28 text layers of width 1536, 32 vision blocks of
width 1280; random weights, saved in bf16, ~4.4 GB): for timing a forward of a real VLM's cost, never for scores.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from tokenizers import AddedToken

from tiny_models import _prepare_dir, _seeded_init, make_causal_lm_tokenizer

__all__ = ["QWEN2_VL_CHAT_TEMPLATE", "make_tiny_qwen2_vl", "png_bytes", "random_image"]

VISION_SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]

QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


#: the text and vision sizes of each shape: the tiny test model, and Qwen2-VL-2B-Instruct's config.json values
SHAPES = {
    "tiny": (
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             mrope_section=[2, 1, 1], initializer_range=0.1),
        dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, initializer_range=0.1),
    ),
    "2b": (
        dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
             num_key_value_heads=2, mrope_section=[16, 24, 24], initializer_range=0.02),
        dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4, initializer_range=0.02),
    ),
}  # fmt: skip


def make_tiny_qwen2_vl(
    path, seed: int = 0, min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 64, shape: str = "tiny"
):
    """Write a random ``Qwen2VLForConditionalGeneration`` of ``shape`` (see ``SHAPES``) with its tokenizer and image
    processor to ``path``."""
    import torch
    from transformers import GenerationConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    p = _prepare_dir(path)
    tok = make_causal_lm_tokenizer("qwen2")
    tok.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in VISION_SPECIALS], special_tokens=True
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_SPECIALS}
    stop = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {sorted(SHAPES)}, got {shape!r}")
    text, vision = (dict(x) for x in SHAPES[shape])
    mrope = text.pop("mrope_section")
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok), max_position_embeddings=8192, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            pad_token_id=tok.pad_token_id, eos_token_id=stop[0], bos_token_id=None, **text,
        ),
        vision_config=dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3, **vision),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )  # fmt: skip
    with _seeded_init(seed):
        model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        eos_token_id=stop, pad_token_id=tok.pad_token_id, do_sample=False
    )
    tok.chat_template = QWEN2_VL_CHAT_TEMPLATE
    if shape != "tiny":
        model = model.to(torch.bfloat16)  # half the disk; loaded in the dtype asked for
    model.save_pretrained(p)
    tok.save_pretrained(p)
    (Path(p) / "chat_template.jinja").write_text(QWEN2_VL_CHAT_TEMPLATE, encoding="utf-8")
    Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels).save_pretrained(p)
    return path


def random_image(height: int, width: int, seed: int = 0):
    """A deterministic random RGB PIL image."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(height, width, 3) * 255).astype("uint8"))


def png_bytes(image) -> bytes:
    """``image`` encoded as PNG."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
