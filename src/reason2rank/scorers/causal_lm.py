"""Causal-LM pointwise family: one prompt per (query, document), built with the model's chat template.

Two read-outs at the last position of the prompt:
- ``tokens``: logit(positive) - logit(negative), e.g. "yes"/"no" (GMR, Qwen3-Reranker) or "1"/"0" (ProRank,
  mxbai-rerank-v2). Computed in fp32 from the final hidden state, so bf16 does not saturate into ties.
- ``rank_head``: a scalar linear head on the last token's hidden state (the Reason-to-Rank student).

Prompts are left-padded with position ids taken from the attention mask, so a score does not depend on
what else is in the batch. Truncation only ever cuts the document: the instruction, the query (up to
``max_query_length`` tokens) and the chat-template ending the score is read from are always kept.
The same model explains: ``generate_reasoning`` and ``generate_comparisons`` decode greedily.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from reason2rank.engine import Features
from reason2rank.heads import load_linear_head, new_linear_head, save_linear_head
from reason2rank.model_dir import resolve_in
from reason2rank.scorers.base import TransformerReranker, attach_adapter
from reason2rank.scorers.scoring_prompts import PromptPart, load_prompt_template
from reason2rank.types import Doc, Query

READOUTS = ("tokens", "rank_head")
RANK_HEAD_FILE = "rank_head.safetensors"
_SLOT = "\ue000R2R_SLOT_{}\ue000"


#: the comparison prompts of ``CausalLMReranker(comparison_prompt=...)``
COMPARISON_PROMPTS = ("neutral", "justify")


class CausalLMReranker(TransformerReranker):
    """Pointwise LLM reranker over ``AutoModelForCausalLM`` (Llama, Qwen2, Mistral, ...)."""

    family = "causal-lm"
    padding_side = "left"

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        *,
        prompt_template: str | os.PathLike | dict[str, Any] = "yes_no",
        readout: str | dict[str, Any] | None = None,
        adapter: str | os.PathLike | None = None,
        merge_adapter: bool = False,
        rank_head: str | os.PathLike | None = None,
        new_rank_head: bool = False,
        max_query_length: int = 128,
        max_new_tokens: int | None = None,
        comparison_prompt: str = "neutral",
        **kwargs: Any,
    ) -> None:
        if comparison_prompt not in COMPARISON_PROMPTS:
            raise ValueError(
                f"comparison_prompt must be one of {COMPARISON_PROMPTS}, got {comparison_prompt!r}: 'neutral' asks "
                "which of A and B is more relevant and why, 'justify' says A was ranked above B and asks why"
            )
        super().__init__(model_name_or_path, **kwargs)
        from transformers import AutoModelForCausalLM

        base_dir = self.model_dir
        self.template = load_prompt_template(prompt_template, base_dir)
        readout_cfg = (
            {"type": readout} if isinstance(readout, str) else dict(readout or self.template.readout)
        )
        if readout_cfg.get("type") not in READOUTS:
            raise ValueError(f"unknown read-out {readout_cfg.get('type')!r}; known: {', '.join(READOUTS)}")
        self.readout = readout_cfg
        self.max_query_length = max_query_length
        self.max_new_tokens = max_new_tokens
        self.comparison_prompt = comparison_prompt
        if comparison_prompt == "justify" and self.template.comparison_justify is None:
            raise ValueError(
                f"comparison_prompt='justify', but prompt template {self.template.name!r} has no "
                "'comparison_justify' part; add one or use comparison_prompt='neutral'"
            )

        self.tokenizer = self._load_tokenizer()
        model = self._from_pretrained(AutoModelForCausalLM)
        self.adapter = str(adapter) if adapter else None
        self.merge_adapter = merge_adapter
        model, self._peft = attach_adapter(model, self.adapter, merge_adapter, **self.hub_kwargs)
        self.model = self._finish_model(model)
        self.rank_head: torch.nn.Linear | None = None
        if self.readout["type"] == "tokens":
            self.positive_id = self._single_token(
                self.readout.get("positive_id"), self.readout.get("positive")
            )
            self.negative_id = self._single_token(
                self.readout.get("negative_id"), self.readout.get("negative")
            )
        elif new_rank_head:  # a fresh head for training (``reason2rank.distill``)
            hidden = self.model.config.get_text_config().hidden_size
            self.rank_head = new_linear_head(hidden, self.engine.device, scaled_init=True).eval()
        else:
            head_path = rank_head or self.readout.get("file") or RANK_HEAD_FILE
            self.rank_head = self._load_rank_head(head_path, base_dir)
        self._segments_cache: dict[tuple[Any, ...], list[list[int] | int]] = {}
        self._generator: Any = None

    # -- set-up -------------------------------------------------------------------------------------
    def _single_token(self, token_id: Any, word: Any) -> int:
        if token_id is not None:
            return int(token_id)
        if not word:
            raise ValueError("a 'tokens' read-out needs 'positive' and 'negative' words (or *_id token ids)")
        ids = self.tokenizer.encode(word, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"the read-out word {word!r} is {len(ids)} tokens for this tokenizer ({ids}); choose words that are "
                "a single token, or give positive_id/negative_id in the read-out"
            )
        return ids[0]

    def _load_rank_head(self, head: str | os.PathLike[str], base_dir: Path | None) -> torch.nn.Linear:
        hidden = self.model.config.get_text_config().hidden_size
        path = resolve_in(base_dir, head)
        if not path.is_file():
            raise FileNotFoundError(
                f"rank-head read-out needs the head weights at {path}; train a student with `reason2rank train` "
                "or use a 'tokens' read-out"
            )
        return load_linear_head(path, hidden, self.engine.device, what="rank head")

    # -- prompt building ----------------------------------------------------------------------------
    def _render(self, part: PromptPart, query: str, slots: Sequence[str]) -> list[str | int]:
        """Render the chat prompt; returns text segments with slot numbers where documents go."""
        values = {"query": query, **{name: _SLOT.format(i) for i, name in enumerate(slots)}}
        messages = part.template.render(values)
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(m["content"] for m in messages) + "\n"
        text += part.prefix
        pieces: list[str | int] = []
        rest = text
        while True:
            nxt = [(rest.find(_SLOT.format(i)), i) for i in range(len(slots)) if _SLOT.format(i) in rest]
            if not nxt:
                pieces.append(rest)
                return pieces
            pos, i = min(nxt)
            pieces.append(rest[:pos])
            pieces.append(i)
            rest = rest[pos + len(_SLOT.format(i)) :]

    def _cut_query(self, query: str) -> str:
        enc = self.tokenizer(query, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) <= self.max_query_length:
            return query
        return query[: enc["offset_mapping"][self.max_query_length - 1][1]]

    def _segments(self, part: PromptPart, query: str, slots: tuple[str, ...]) -> list[list[int] | int]:
        key = (id(part), query, slots)
        cached = self._segments_cache.get(key)
        if cached is None:
            pieces = self._render(part, self._cut_query(query), slots)
            no_template = not getattr(self.tokenizer, "chat_template", None)
            cached = []
            for j, p in enumerate(pieces):
                if isinstance(p, int):
                    cached.append(p)
                else:
                    add = no_template and j == 0  # BOS etc. only when no chat template writes them
                    cached.append(self.tokenizer(p, add_special_tokens=add)["input_ids"] if p else [])
            if len(self._segments_cache) > 4096:
                self._segments_cache.clear()
            self._segments_cache[key] = cached
        return cached

    def build_features(
        self,
        part: PromptPart,
        queries: Sequence[str],
        doc_groups: Sequence[Sequence[str]],
        slots: tuple[str, ...],
    ) -> tuple[list[Features], int]:
        """Token ids of each prompt: fixed segments kept whole, each document cut to its share of the budget."""
        flat_docs = list(dict.fromkeys(d for group in doc_groups for d in group))
        doc_ids = (
            dict(zip(flat_docs, self.tokenizer(flat_docs, add_special_tokens=False)["input_ids"]))
            if flat_docs
            else {}
        )
        features: list[Features] = []
        truncated = 0
        for query, group in zip(queries, doc_groups):
            segs = self._segments(part, query, slots)
            fixed = sum(len(s) for s in segs if not isinstance(s, int))
            budget = self.max_length - fixed
            if budget < len(slots):
                raise ValueError(
                    f"max_length={self.max_length} leaves no room for the document: the prompt alone is {fixed} "
                    f"tokens; raise max_length or shorten the prompt template"
                )
            share = budget // len(slots)
            ids: list[int] = []
            cut = False
            for s in segs:
                if isinstance(s, int):
                    d = doc_ids[group[s]]
                    if len(d) > share:
                        d, cut = d[:share], True
                    ids.extend(d)
                else:
                    ids.extend(s)
            truncated += cut
            features.append({"input_ids": ids})
        return features, truncated

    def encode_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> tuple[list[Features], int]:
        """Token ids of each scoring prompt (the document cut to fit; the rest always kept)."""
        return self.build_features(self.template.score, queries, [[d] for d in docs], ("document",))

    # -- scoring ------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The read-out at the last position of each (left-padded) prompt."""
        mask = batch["attention_mask"]
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        if self.rank_head is not None:
            out = self.model.get_decoder()(
                input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids
            )
            hidden = out.last_hidden_state[:, -1].float()
            return self.rank_head(hidden).squeeze(-1)
        out = self.model(
            input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids, logits_to_keep=1
        )
        logits = out.logits[:, -1].float()
        return logits[:, self.positive_id] - logits[:, self.negative_id]

    # -- explanations -------------------------------------------------------------------------------
    def _generate(
        self,
        part: PromptPart,
        queries: Sequence[str],
        doc_groups: Sequence[Sequence[str]],
        slots: tuple[str, ...],
    ) -> list[str | None]:
        features, truncated = self.build_features(part, queries, doc_groups, slots)
        self.truncation.report(truncated, len(features), what="reasoning prompts")
        max_new = self.max_new_tokens or part.max_new_tokens
        if self._generator is None:  # the one generation loop (reason2rank.llm.decoding), on this model
            from reason2rank.llm.transformers_backend import TransformersBackend

            self._generator = TransformersBackend(
                self.model,
                self.tokenizer,
                batch_size=self.engine.batch_size,
                name=f"hf:{self.model_name_or_path}",
            )
        results = self._generator.generate_ids([f["input_ids"] for f in features], max_new_tokens=max_new)
        return [r.text.strip() or None for r in results]

    def generate_reasoning(self, query: Query, docs: Sequence[Doc]) -> list[str | None]:
        """Greedy reasoning for each document, from the template's reasoning prompt (``None`` without one)."""
        return self.generate_reasoning_many([(query, d) for d in docs])

    def generate_comparisons(self, query: Query, pairs: Sequence[tuple[Doc, Doc]]) -> list[str | None]:
        """Greedy comparison of each (higher, lower) pair, from the template's comparison prompt (neutral by
        default: the model says which is more relevant and why; ``comparison_prompt="justify"`` asks why the first
        outranks the second)."""
        return self.generate_comparisons_many([(query, a, b) for a, b in pairs])

    def generate_reasoning_many(self, items: Sequence[tuple[Query, Doc]]) -> list[str | None]:
        """Reasoning for (query, doc) items of any number of queries, in one batched generation."""
        if self.template.reasoning is None or not items:
            return [None] * len(items)
        return self._generate(
            self.template.reasoning,
            [q.text for q, _ in items],
            [[d.full_text] for _, d in items],
            ("document",),
        )

    def generate_comparisons_many(self, items: Sequence[tuple[Query, Doc, Doc]]) -> list[str | None]:
        """Comparisons for (query, A, B) items of any number of queries, in one batched generation."""
        part = (
            self.template.comparison_justify
            if self.comparison_prompt == "justify"
            else self.template.comparison
        )
        if part is None or not items:
            return [None] * len(items)
        return self._generate(
            part,
            [q.text for q, _, _ in items],
            [[a.full_text, b.full_text] for _, a, b in items],
            ("document_a", "document_b"),
        )

    # -- saving -------------------------------------------------------------------------------------
    def r2r_config(self) -> dict[str, Any]:
        """The causal LM's fields of ``r2r_model.json``."""
        cfg = super().r2r_config()
        cfg.update(
            prompt_template="prompt_template.json",
            readout=dict(self.readout),
            max_query_length=self.max_query_length,
        )
        if self.rank_head is not None:
            cfg["readout"]["file"] = RANK_HEAD_FILE
        if self.max_new_tokens:
            cfg["max_new_tokens"] = self.max_new_tokens
        if self.comparison_prompt != "neutral":
            cfg["comparison_prompt"] = self.comparison_prompt
        return cfg

    def _save_weights(self, out: Path) -> dict[str, Any]:
        extra = super()._save_weights(out)
        (out / "prompt_template.json").write_text(
            json.dumps(self.template.source, indent=2) + "\n", encoding="utf-8"
        )
        if self.rank_head is not None:
            save_linear_head(self.rank_head, out / RANK_HEAD_FILE)
        return extra
