"""Vision-language pointwise family (GMR, MonoQwen2-VL): page images and interleaved documents scored by a VLM.

Each (query, document) pair is one chat prompt: the instruction with the query, then the document — its images
(page images, figures), then its title and text, or its interleaved ``parts`` (texts and images in reading order)
— then the question. The score is logit(positive) − logit(negative) ("yes"/"no" by default; "True"/"False" for
MonoQwen2-VL) at the last position, computed in fp32 from the final hidden state and the two rows of the LM head,
so bf16 does not tie it; it is a monotone function of the normalised p(yes) that GMR's SFT model scores with.

Inputs go through ``VisionInputs`` (the model's processor; see there) and one engine run: prompts are sorted by
length (image tokens included, so by pixels), left-padded, and the pixels and patch grids of each batch
concatenated; identical prompts are computed once. ``min_pixels``/``max_pixels`` bound what each image costs.

``parts="best"`` scores each part of an interleaved document on its own (IDentIfy's second stage: which passage
or page answers the query); the document's score is its best part's, and that part is its evidence (a text part's
text, or an image part's label). ``parts="whole"`` (default) reads the document as one interleaved sequence.
With ``top_parts=k`` and a ``part_selector`` (a ``vlm-embed`` model directory, or any object with the cascade's
``score_windows(items)``), a cheap selector scores every part first and the VLM reads only each document's ``k``
best — the cascade's window selection, with pages and passages as the windows.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reason2rank.media import ImageRef, PixelBudget
from reason2rank.reranker import Ranking, split_scores
from reason2rank.scorers.base import TransformerReranker, attach_adapter
from reason2rank.scorers.vision_inputs import VisionFeatures, VisionInputs
from reason2rank.types import Doc, Query

__all__ = ["DEFAULT_VLM_PROMPT", "VLMReranker"]

#: the GMR-style yes/no prompt; ``{{query}}`` is filled in, the document goes between ``before`` and ``after``
DEFAULT_VLM_PROMPT: dict[str, Any] = {
    "name": "vlm_yes_no",
    "system": "You judge whether a document is relevant to a search query.",
    "before": "Query: {{query}}\nDocument:",
    "after": "Is the document relevant to the query? Answer yes or no.",
    "readout": {"positive": "yes", "negative": "no"},
}
PART_MODES = ("whole", "best")
#: prompts a scoring call encodes at once, in batches: the pixels of this many batches are in memory together
CHUNK_BATCHES = 4


def _check_prompt(prompt: Any) -> dict[str, Any]:
    if not isinstance(prompt, dict):
        raise ValueError(
            f"a VLM prompt is a dict with 'before', 'after' and 'readout', got {type(prompt).__name__}"
        )
    merged = {**DEFAULT_VLM_PROMPT, **prompt}
    if "{{query}}" not in merged["before"] + merged["after"]:
        raise ValueError("the VLM prompt needs {{query}} in its 'before' or 'after' text")
    readout = merged["readout"]
    if not isinstance(readout, dict) or not readout.get("positive") or not readout.get("negative"):
        raise ValueError("the VLM prompt's readout needs 'positive' and 'negative' words, e.g. yes and no")
    return merged


class VLMReranker(TransformerReranker):
    """Pointwise VLM reranker over ``AutoModelForImageTextToText`` (Qwen2-VL, Qwen2.5-VL); see the module docstring.

    Args (beyond the shared loading options): ``prompt`` (a dict like ``DEFAULT_VLM_PROMPT``), ``min_pixels`` /
    ``max_pixels`` (the pixel budget per image), ``max_doc_tokens`` (text of a document kept), ``image_root`` (image
    paths must lie under it), ``parts`` ("whole" or "best"), ``top_parts`` / ``part_selector`` (with
    ``parts="best"``: the VLM scores only the ``top_parts`` parts of a document the selector ranks highest),
    ``adapter`` / ``merge_adapter`` (a LoRA adapter).
    """

    family = "vlm"
    padding_side = "left"
    reads_images = True
    evidence = False  # no occlusion evidence: a page's evidence is the part ``parts="best"`` picks

    def __init__(
        self,
        model_name_or_path: str | os.PathLike[str],
        *,
        prompt: dict[str, Any] | None = None,
        min_pixels: int = 28 * 28 * 4,
        max_pixels: int = 28 * 28 * 256,
        max_doc_tokens: int = 256,
        image_root: str | os.PathLike[str] | None = None,
        parts: str = "whole",
        top_parts: int | None = None,
        part_selector: Any = None,
        adapter: str | os.PathLike[str] | None = None,
        merge_adapter: bool = False,
        freeze_vision: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_length", 4096)
        super().__init__(model_name_or_path, **kwargs)
        from transformers import AutoModelForImageTextToText

        if parts not in PART_MODES:
            raise ValueError(f"parts must be one of {', '.join(PART_MODES)}, got {parts!r}")
        if isinstance(max_doc_tokens, bool) or not isinstance(max_doc_tokens, int) or max_doc_tokens < 1:
            raise ValueError(f"max_doc_tokens must be a positive int, got {max_doc_tokens!r}")
        self.prompt = _check_prompt(prompt or {})
        self.budget = PixelBudget(min_pixels, max_pixels)
        self.max_doc_tokens = max_doc_tokens
        self.image_root = str(image_root) if image_root is not None else None
        self.parts = parts
        self.top_parts, self.part_selector, self.part_selector_path = self._part_selection(
            top_parts, part_selector, kwargs
        )
        self.freeze_vision = freeze_vision
        self.inputs = VisionInputs.load(self.model_name_or_path, self.hub_kwargs)
        self.tokenizer = self.inputs.tokenizer
        model = self._from_pretrained(AutoModelForImageTextToText)
        self.adapter = str(adapter) if adapter else None
        self.merge_adapter = merge_adapter
        model, self._peft = attach_adapter(model, self.adapter, merge_adapter, **self.hub_kwargs)
        self.model = self._finish_model(model)
        self.positive_id = self._single_token(self.prompt["readout"]["positive"])
        self.negative_id = self._single_token(self.prompt["readout"]["negative"])

    def _part_selection(self, top_parts: Any, selector: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
        """``top_parts``, the selector object and the selector's directory (saved in ``r2r_model.json``)."""
        if top_parts is None and selector is None:
            return None, None, None
        if isinstance(top_parts, bool) or not isinstance(top_parts, int) or top_parts < 1:
            raise ValueError(f"top_parts must be a positive int, got {top_parts!r}")
        if self.parts != "best":
            raise ValueError("top_parts selects the parts a document is scored by: it needs parts='best'")
        if selector is None:
            raise ValueError(
                "top_parts needs a part_selector: a vlm-embed model directory (or hub id), or an object with "
                "score_windows([(query, [parts])]) -> [scores per part]"
            )
        if isinstance(selector, (str, os.PathLike)):
            from reason2rank.scorers.vlm_embed import VLMEmbedder

            opts = {k: kwargs[k] for k in ("device", "dtype", "batch_size", "progress") if k in kwargs}
            embedder = VLMEmbedder(selector, min_pixels=self.budget.min_pixels, max_pixels=self.budget.max_pixels,
                                   image_root=self.image_root, **opts)  # fmt: skip
            return top_parts, embedder, str(selector)
        if not callable(getattr(selector, "score_windows", None)):
            raise TypeError(f"part_selector must have score_windows(items), got {type(selector).__name__}")
        return top_parts, selector, None

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"the read-out word {word!r} is {len(ids)} tokens for this tokenizer ({ids}); choose a word that is "
                "one token (e.g. yes/no, True/False)"
            )
        return int(ids[0])

    @property
    def pad_token_id(self) -> int:
        """The id prompts are left-padded with."""
        return self.inputs.pad_token_id

    # -- prompts ----------------------------------------------------------------------------------------------
    def _cut(self, text: str) -> tuple[str, bool]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= self.max_doc_tokens:
            return text, False
        return text[: enc["offset_mapping"][self.max_doc_tokens - 1][1]], True

    def document_parts(self, doc: Doc) -> list[str | ImageRef]:
        """What the model reads of ``doc``, in order: its interleaved parts, or its images then title and text."""
        if doc.parts:
            return list(doc.parts)
        parts: list[str | ImageRef] = list(doc.images)
        if doc.full_text:
            parts.append(doc.full_text)
        return parts

    def messages(
        self, query: str, parts: Sequence[str | ImageRef]
    ) -> tuple[list[dict[str, Any]], list[Any], int]:
        """The chat messages of one prompt, the images in placeholder order, and how many texts were cut."""
        before = self.prompt["before"].replace("{{query}}", query)
        after = self.prompt["after"].replace("{{query}}", query)
        content: list[dict[str, Any]] = [{"type": "text", "text": before}]
        images: list[Any] = []
        cut = 0
        for p in parts:
            if isinstance(p, ImageRef):
                content.append({"type": "image"})
                images.append(p)
            else:
                text, was_cut = self._cut(p)
                cut += was_cut
                content.append({"type": "text", "text": "\n" + text})
        content.append({"type": "text", "text": "\n" + after})
        msgs: list[dict[str, Any]] = []
        if self.prompt.get("system"):
            msgs.append({"role": "system", "content": [{"type": "text", "text": self.prompt["system"]}]})
        msgs.append({"role": "user", "content": content})
        return msgs, images, cut

    def features(
        self, pairs: Sequence[tuple[str, Sequence[str | ImageRef], str]]
    ) -> tuple[list[VisionFeatures], int]:
        """Features of each (query, parts, document id) prompt, and how many document texts were cut."""
        out: list[VisionFeatures] = []
        truncated = 0
        loaded: dict[int, tuple[Any, str]] = {}
        for query, parts, doc_id in pairs:
            msgs, refs, cut = self.messages(query, parts)
            truncated += bool(cut)
            images, keys = [], []
            for ref in refs:
                if id(ref) not in loaded:
                    what = f"document {doc_id!r}"
                    loaded[id(ref)] = (ref.load(self.image_root, what), ref.digest(self.image_root))
                img, key = loaded[id(ref)]
                images.append(img)
                keys.append(key)
            f = self.inputs.encode(msgs, images, self.budget, image_keys=keys)
            if len(f["input_ids"]) > self.max_length:
                raise ValueError(
                    f"document {doc_id!r}: the prompt is {len(f['input_ids'])} tokens (images included), more than "
                    f"max_length={self.max_length}; lower max_pixels or max_doc_tokens, or raise max_length"
                )
            out.append(f)
        return out, truncated

    # -- scoring ----------------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """logit(positive) − logit(negative) at the last position, in fp32 from the final hidden state."""
        out = self.model.model(**batch)
        hidden = out.last_hidden_state[:, -1].float()
        head = self.model.get_output_embeddings()
        rows = head.weight[[self.positive_id, self.negative_id]].float()
        logits = hidden @ rows.T
        if getattr(head, "bias", None) is not None:
            logits = logits + head.bias[[self.positive_id, self.negative_id]].float()
        return logits[:, 0] - logits[:, 1]

    def score_prompts(
        self, pairs: Sequence[tuple[str, Sequence[str | ImageRef], str]], desc: str
    ) -> np.ndarray:
        """Scores of (query, parts, document id) prompts, in input order. Prompts are encoded and scored
        ``CHUNK_BATCHES × batch_size`` at a time (each chunk one length-sorted engine run), so a call with thousands
        of pages holds one chunk's pixels, not all of them (a 256-token page is ~5 MB of fp32 patches)."""
        chunk = CHUNK_BATCHES * self.engine.batch_size
        scores: list[np.ndarray] = []
        truncated = 0
        for start in range(0, len(pairs), chunk):
            feats, cut = self.features(pairs[start : start + chunk])
            truncated += cut
            scores.append(self.engine.run(
                feats, self.forward, self.pad_token_id, self.padding_side, desc=desc,
                collate=self.inputs.collate, key=lambda f: f["key"],
            ).reshape(-1))  # fmt: skip
        self.truncation.report(
            truncated, len(pairs), what="VLM prompts (document text cut to max_doc_tokens)"
        )
        return np.concatenate(scores) if scores else np.zeros((0,), dtype=np.float32)

    def score_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[np.ndarray]:
        """Scores of every document of every query (``parts="whole"``), in chunks of prompts (``score_prompts``)."""
        pairs = [(q.text, self.document_parts(d), d.id) for q, docs in items for d in docs]
        flat = self.score_prompts(pairs, desc="vlm rerank")
        return split_scores(flat, [len(docs) for _, docs in items])

    def rank_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[Ranking]:
        """``parts="best"``: every part of every document scored alone; a document scores as its best part, which
        is its evidence. Otherwise the scores of ``score_batch``."""
        if self.parts == "whole":
            return super().rank_batch(items)
        doc_parts = [[self.document_parts(d) for d in docs] for _, docs in items]
        kept = self._selected_parts(items, doc_parts)
        pairs, owner = [], []
        for qi, (q, docs) in enumerate(items):
            for di, d in enumerate(docs):
                parts = doc_parts[qi][di]
                for pi in kept.get((qi, di), range(len(parts))):
                    pairs.append((q.text, [parts[pi]], d.id))
                    owner.append((qi, di, pi))
        flat = self.score_prompts(pairs, desc="vlm parts")
        scored = Counter(qi for qi, _, _ in owner)
        best: dict[tuple[int, int], tuple[float, int]] = {}
        for (qi, di, pi), s in zip(owner, flat):
            if (qi, di) not in best or s > best[(qi, di)][0]:
                best[(qi, di)] = (float(s), pi)
        out = []
        for qi, (_, docs) in enumerate(items):
            scores = np.array([best[(qi, di)][0] for di in range(len(docs))], dtype=np.float64)
            evidence: dict[int, str | None] = {}
            chosen: dict[str, int] = {}
            for di, d in enumerate(docs):
                pi = best[(qi, di)][1]
                part = doc_parts[qi][di][pi]
                evidence[di] = part.label if isinstance(part, ImageRef) else part
                chosen[d.id] = pi
            info: dict[str, Any] = {"best_part": chosen}
            if self.top_parts is not None:
                info["parts_scored"] = scored[qi]
            out.append(Ranking(scores, evidence=evidence, info=info))
        return out

    def _selected_parts(
        self, items: Sequence[tuple[Query, Sequence[Doc]]], doc_parts: Sequence[Sequence[list[Any]]]
    ) -> dict[tuple[int, int], list[int]]:
        """With ``top_parts``: the parts (indices, in document order) the selector keeps of each document that has
        more; one ``score_windows`` call for all of them."""
        if self.top_parts is None:
            return {}
        from reason2rank.cascade.selectors import select_top

        where, windows = [], []
        for qi, (q, _) in enumerate(items):
            for di, parts in enumerate(doc_parts[qi]):
                if len(parts) > self.top_parts:
                    where.append((qi, di))
                    windows.append((q.text, list(parts)))
        scores = self.part_selector.score_windows(windows) if windows else []
        return {k: select_top(np.asarray(sc), self.top_parts) for k, sc in zip(where, scores)}

    # -- training support -------------------------------------------------------------------------------------
    def trainable(self) -> None:
        """Put the model in training mode with the vision tower frozen (when ``freeze_vision``)."""
        self.model.train()
        visual = getattr(getattr(self.model, "model", None), "visual", None)
        if self.freeze_vision and visual is not None:
            for p in visual.parameters():
                p.requires_grad_(False)

    # -- saving -----------------------------------------------------------------------------------------------
    def r2r_config(self) -> dict[str, Any]:
        """The VLM family's fields of ``r2r_model.json``."""
        cfg = super().r2r_config()
        cfg.update(prompt=dict(self.prompt), min_pixels=self.budget.min_pixels, max_pixels=self.budget.max_pixels,
                   max_doc_tokens=self.max_doc_tokens, parts=self.parts)  # fmt: skip
        if self.top_parts is not None:
            if self.part_selector_path is None:
                raise TypeError(
                    "this VLM selects parts with an object, which a model directory cannot hold; give part_selector "
                    "as a vlm-embed model directory to save it"
                )
            cfg.update(top_parts=self.top_parts, part_selector=self.part_selector_path)
        return cfg

    def _save_weights(self, out: Path) -> dict[str, Any]:
        extra = super()._save_weights(out)
        self.inputs.save(out)
        return extra
