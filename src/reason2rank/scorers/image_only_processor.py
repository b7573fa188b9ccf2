"""A Qwen2-VL processor without the video side, for libraries that need a ``ProcessorMixin`` (TRL's VLM path).

``Qwen2VLProcessor`` declares a video processor, and building one needs torchvision, which does not import beside
the CPU torch wheel this project pins (PyPI's torchvision for it is a CUDA build). Pages are images, never videos,
so :class:`ImageOnlyQwen2VLProcessor` declares only the image processor and the tokenizer (``ProcessorMixin``
takes its parts from the ``__init__`` signature) and is otherwise Qwen2-VL's processor: the same image-token
expansion, chat template and ``apply_chat_template`` with images. Passing ``videos=`` to it is an error.
"""

from __future__ import annotations

from typing import Any

from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

__all__ = ["ImageOnlyQwen2VLProcessor", "training_processor"]


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2-VL's processor with an image processor and a tokenizer only (see the module docstring)."""

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def __call__(self, images: Any = None, text: Any = None, videos: Any = None, **kwargs: Any) -> Any:
        """Qwen2-VL's processing of text and images; ``videos`` is refused (this processor has no video side)."""
        if videos is not None:
            raise ValueError(
                "ImageOnlyQwen2VLProcessor has no video processor (it exists where torchvision does not import); "
                "give page images, or use the model's own AutoProcessor where torchvision is installed"
            )
        return super().__call__(images=images, text=text, **kwargs)


def training_processor(path: str, hub_kwargs: dict[str, Any] | None = None, prefix: str = "") -> Any:
    """A ``ProcessorMixin`` for the VLM at ``path``: its ``AutoProcessor`` where that loads, else the image-only
    one built from the parts ``VisionInputs`` opens. ``prefix`` (text every answer starts with) is appended to the
    chat template after the generation prompt, so that a trainer rendering the template itself starts there."""
    import copy

    from reason2rank.scorers.vision_inputs import VisionInputs

    inputs = VisionInputs.load(path, hub_kwargs)
    if isinstance(inputs.processor, ProcessorMixin):
        processor = copy.copy(inputs.processor)
    else:
        processor = ImageOnlyQwen2VLProcessor(inputs.image_processor, inputs.tokenizer, inputs.chat_template)
    template: Any = processor.chat_template or inputs.chat_template
    if isinstance(template, dict):  # named templates: the one a plain apply_chat_template uses
        template = template.get("default")
    if not template:
        raise ValueError(
            f"{path} has no chat template; a VLM is trained on the chat prompts it will be asked"
        )
    if prefix:
        template += "{% if add_generation_prompt %}{% raw %}" + prefix + "{% endraw %}{% endif %}"
    processor.chat_template = template
    processor.tokenizer.padding_side = "left"  # generation from left-padded prompts
    return processor
