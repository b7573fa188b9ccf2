"""A tiny random Qwen2-VL built from a config (no downloads), and small images for the vision tests.

``make_tiny_qwen2_vl(path)`` writes a directory that opens with ``AutoModelForImageTextToText`` and reason2rank's
``VisionInputs``: 2 text layers and 1 vision block of width 32, the Qwen2 byte-level BPE tokenizer of
``tiny_models`` plus the vision specials (``<|vision_start|>``, ``<|vision_end|>``, ``<|image_pad|>``,
``<|video_pad|>``), a chat template that renders ``{"type": "image"}`` parts the way Qwen2-VL's does, and a
``Qwen2VLImageProcessorPil`` config (patch 14, merge 2: one image token per 28x28 pixels). No video processor is
written (it needs torchvision); ``AutoProcessor`` does not open the directory, ``VisionInputs`` opens its parts.
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


def make_tiny_qwen2_vl(path, seed: int = 0, min_pixels: int = 28 * 28 * 4, max_pixels: int = 28 * 28 * 64):
    """Write a tiny random ``Qwen2VLForConditionalGeneration`` with its tokenizer and image processor to ``path``."""
    from transformers import GenerationConfig, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    p = _prepare_dir(path)
    tok = make_causal_lm_tokenizer("qwen2")
    tok.add_tokens(
        [AddedToken(t, special=True, normalized=False) for t in VISION_SPECIALS], special_tokens=True
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in VISION_SPECIALS}
    stop = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=8192, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
            pad_token_id=tok.pad_token_id, eos_token_id=stop[0], bos_token_id=None, initializer_range=0.1,
        ),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_channels=3, initializer_range=0.1),
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
