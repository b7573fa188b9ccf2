"""In-context reranking (ICR, Chen et al., 2025): zero-shot relevance from a decoder LLM's attention.

One prompt holds an instruction and all the documents (``[i] text``, each cut to ``max_words``), then the query
and the chat template's ending. A document's relevance is the attention the query's tokens pay to it: for every
query-span token (everything after the last document), its attention to each earlier token, averaged over the
query-span tokens and summed over heads and layers (``layers`` picks a subset); a document scores the sum over
its tokens. Calibration removes the model's bias towards some tokens and positions: the same prompt with the
content-free query ``"N/A"`` gives s_NA; per token Δ = s_q − s_NA; within each document, tokens with
Δ ≤ mean(Δ) − 2·std(Δ) are dropped and the score is Σ Δ over the kept tokens.

Cost: the instruction and documents are encoded once into a KV cache; only the two short query suffixes run on
it (the cache is cut back to the documents between them), so N documents take one long and two short forward
passes, not N generations. Attention weights come from ``reason2rank.llm.attention`` (SDPA plus the softmax rows
of the query span in fp32, on unmodified transformers; never NaN).

Token spans come from the tokenizer's offset mapping over the rendered prompt, so any fast tokenizer works. When
the documents do not fit the context (or ``window`` is set), they are split into windows, each calibrated the
same way, and merged by score. ``reverse`` (the paper's setting, default) lists the documents in reverse
first-stage order, so the first-stage best sits next to the query. Each document's evidence is its sentence with
the most calibrated attention.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from reason2rank.explain.sentences import sentence_spans
from reason2rank.llm.attention import attention_recording, using_weights_attention
from reason2rank.llm.decoding import forward_with_cache
from reason2rank.reranker import Ranking
from reason2rank.strategies.base import LLMStrategy
from reason2rank.types import Doc, Query

__all__ = ["CALIBRATION_QUERY", "ICRPrompt", "ICRReranker", "build_icr_prompt", "calibrated_scores",
           "query_attention"]  # fmt: skip

#: the content-free query of the calibration pass
CALIBRATION_QUERY = "N/A"

_SENTINEL = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class ICRPrompt:
    """One ICR prompt, tokenised: the shared prefix (instruction and documents), the query suffix of each query
    (the real one first, then the calibration one), each document's token span ``[start, end)`` in the prefix and
    character span in ``text`` (the rendered prompt of the real query), and each prefix token's character
    offsets."""

    prefix_ids: list[int]
    suffixes: list[list[int]]
    spans: list[tuple[int, int]]
    char_spans: list[tuple[int, int]]
    offsets: list[tuple[int, int]]
    text: str

    @property
    def tokens(self) -> int:
        """Tokens of the longest prompt (the prefix and the longest suffix)."""
        return len(self.prefix_ids) + max(len(s) for s in self.suffixes)


def _render_with_passages(
    backend: Any, messages: list[dict[str, str]], passages: Sequence[str]
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered prompt with the sentinels replaced by the passages, and each passage's character span."""
    rendered = backend.render(messages)
    out, spans, pos = [], [], 0
    length = 0
    for m in _SENTINEL.finditer(rendered):
        i = int(m.group(1))
        out.append(rendered[pos : m.start()])
        length += m.start() - pos
        spans.append((i, length, length + len(passages[i])))
        out.append(passages[i])
        length += len(passages[i])
        pos = m.end()
    out.append(rendered[pos:])
    if [s[0] for s in spans] != list(range(len(passages))):
        raise ValueError(
            "the ICR prompt must show every passage exactly once, in order (through {{passages}} or a passage "
            "block), and the chat template must keep the passages' text as it is"
        )
    return "".join(out), [(a, b) for _, a, b in spans]


def build_icr_prompt(
    backend: Any,
    template: Any,
    query: str,
    passages: Sequence[str],
    calibration_query: str = CALIBRATION_QUERY,
) -> ICRPrompt:
    """Render and tokenise the ICR prompt of ``query`` over ``passages`` (already cut), with its calibration twin.

    ``backend`` is a local transformers backend (``render`` and a fast ``tokenizer``); ``template`` a
    ``PromptTemplate`` of task ``attention`` whose query comes after the passages."""
    tok = backend.tokenizer
    if not getattr(tok, "is_fast", False):
        raise ValueError(
            f"ICR maps documents to tokens with the tokenizer's offset mapping, which {type(tok).__name__} (a slow "
            "tokenizer) does not give; use the model's fast tokenizer (tokenizer.json)"
        )
    sentinels = [f"\ue000{i}\ue001" for i in range(len(passages))]
    texts, char_spans = [], []
    for q in (query, calibration_query):
        messages = template.render({"query": q}, sentinels)
        text, spans = _render_with_passages(backend, messages, passages)
        texts.append(text)
        char_spans.append(spans)
    spans_q = char_spans[0]
    split = spans_q[-1][1] if spans_q else 0
    differ = next((i for i, (a, b) in enumerate(zip(texts[0], texts[1])) if a != b), min(map(len, texts)))
    if spans_q and (char_spans[1] != spans_q or differ < split):
        raise ValueError(
            f"prompt {template.version} shows the query before (or among) the passages; ICR needs every passage "
            "before the query, so the documents are encoded once for the query and its calibration"
        )
    encoded = [tok(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    offsets = [(int(a), int(b)) for a, b in encoded[0]["offset_mapping"]]
    ids = [list(map(int, e["input_ids"])) for e in encoded]
    cut = next((i for i, (s, e) in enumerate(offsets) if s >= split and e > s), len(offsets))
    if ids[1][:cut] != ids[0][:cut]:
        raise ValueError(
            "the tokenizer splits the documents' part of the prompt differently for the query and for the "
            "calibration query; end the passages with a separator (e.g. a newline) before the query"
        )
    if cut >= len(ids[0]) or cut >= len(ids[1]):
        raise ValueError(
            f"prompt {template.version} has nothing after the passages: ICR needs the query there"
        )
    doc_spans = []
    for a, b in spans_q:
        inside = [i for i, (s, e) in enumerate(offsets[:cut]) if e > s and s < b and e > a]
        doc_spans.append((inside[0], inside[-1] + 1) if inside else (0, 0))
    return ICRPrompt(
        prefix_ids=ids[0][:cut],
        suffixes=[ids[0][cut:], ids[1][cut:]],
        spans=doc_spans,
        char_spans=spans_q,
        offsets=offsets[:cut],
        text=texts[0],
    )


def query_attention(
    model: Any,
    prefix_ids: Sequence[int],
    suffixes: Sequence[Sequence[int]],
    layers: frozenset[int] | None = None,
) -> list[torch.Tensor]:
    """Per prefix token, the attention each suffix's tokens pay to it (averaged over the suffix's tokens, summed
    over heads and the recorded layers; fp32, on the CPU): one forward pass over the prefix into a KV cache, then
    one per suffix on that cache (cut back to the prefix in between)."""
    device = next(model.parameters()).device
    n = len(prefix_ids)
    out = []
    with torch.inference_mode(), using_weights_attention(model):
        prefix = torch.tensor([list(prefix_ids)], device=device)
        _, cache = forward_with_cache(model, prefix, torch.ones_like(prefix))
        for k, suffix in enumerate(suffixes):
            ids = torch.tensor([list(suffix)], device=device)
            mask = torch.ones((1, n + ids.shape[1]), dtype=torch.long, device=device)
            with attention_recording(model, layers=layers) as rec:
                _, cache = forward_with_cache(model, ids, mask, cache)
            out.append(rec.total()[0, :n].float().cpu())
            if k + 1 < len(suffixes):
                cache.crop(-len(suffix))  # back to the prefix (a negative count removes tokens)
    return out


def calibrated_scores(
    s_q: torch.Tensor,
    s_na: torch.Tensor | None,
    spans: Sequence[tuple[int, int]],
    n_std: float = 2.0,
) -> tuple[np.ndarray, list[torch.Tensor]]:
    """Document scores from per-token attention: with calibration (``s_na`` given), Σ Δ over each document's
    tokens whose Δ = s_q − s_NA is above mean(Δ) − ``n_std``·std(Δ) (the document's own tokens; std with
    Bessel's correction; a one-token document keeps its token); without, Σ s_q. Also returns each document's
    per-token contribution (0 for a dropped token)."""
    scores = np.zeros(len(spans), dtype=np.float64)
    per_token = []
    for j, (a, b) in enumerate(spans):
        delta = s_q[a:b] if s_na is None else s_q[a:b] - s_na[a:b]
        if s_na is not None and delta.numel() >= 2:
            threshold = delta.mean() - n_std * delta.std()
            delta = torch.where(delta > threshold, delta, torch.zeros_like(delta))
        scores[j] = float(delta.double().sum())
        per_token.append(delta)
    return scores, per_token


def _best_sentence(text: str, offsets: Sequence[tuple[int, int]], span: tuple[int, int],
                   char_span: tuple[int, int], contrib: torch.Tensor) -> str | None:  # fmt: skip
    """The sentence of the passage whose tokens have the most calibrated attention."""
    start, end = char_span
    passage = text[start:end]
    sentences = sentence_spans(passage)
    if not sentences:
        return None
    totals = [0.0] * len(sentences)
    for t in range(span[0], span[1]):
        mid = (max(offsets[t][0], start) + min(offsets[t][1], end)) / 2 - start
        k = next((i for i, (a, b) in enumerate(sentences) if a <= mid < b), None)
        if k is not None:
            totals[k] += float(contrib[t - span[0]])
    a, b = sentences[int(np.argmax(totals))]
    return passage[a:b]


class ICRReranker(LLMStrategy):
    """In-context reranking from attention (see the module docstring); a local transformers decoder LLM.

    Args (beyond ``LLMStrategy``'s): ``window`` (most documents per prompt; default: as many as fit the
    context), ``reverse`` (documents in reverse first-stage order, default True), ``calibrate`` (the "N/A"
    calibration, default True), ``layers`` (layer indices to read, negative from the top; default all),
    ``prompt`` (``icr_v1``, a file or a ``PromptTemplate`` of task ``attention``).
    """

    family = "icr"
    task = "attention"
    default_prompt = "icr_v1"

    def __init__(
        self,
        model: Any = None,
        *,
        window: int | None = None,
        reverse: bool = True,
        calibrate: bool = True,
        layers: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be a positive int (documents per prompt) or None, got {window!r}")
        super().__init__(model, **kwargs)
        backend = self.llm.backend
        if getattr(backend, "model", None) is None or not hasattr(backend, "render"):
            raise ValueError(
                f"ICR reads the LLM's attention, so it needs a local transformers model (a model path or "
                f"backend='hf:PATH'), not {self.llm.name}"
            )
        self._model: Any = backend.model  # type: ignore[attr-defined]
        n_layers = int(self._model.config.get_text_config().num_hidden_layers)
        if layers is not None:
            bad = [x for x in layers if not -n_layers <= int(x) < n_layers]
            if bad or not layers:
                raise ValueError(
                    f"layers must be indices of the model's {n_layers} layers, got {list(layers)}"
                )
        self.layers = None if layers is None else sorted({int(x) % n_layers for x in layers})
        self.window = window
        self.reverse = bool(reverse)
        self.calibrate = bool(calibrate)

    # -- one window ---------------------------------------------------------------------------------------------
    def _prompt(self, query: Query, passages: Sequence[str]) -> ICRPrompt:
        return build_icr_prompt(self.llm.backend, self.prompt, query.text, passages)

    def _windows(
        self, query: Query, passages: list[str], idx: list[int]
    ) -> list[tuple[list[int], ICRPrompt]]:
        """Windows of documents (indices into ``passages``, in prompt order) that fit the context, with prompts."""
        size = self.window or len(idx)
        pending = [idx[i : i + size] for i in range(0, len(idx), size)]
        out = []
        while pending:
            chunk = pending.pop(0)
            prompt = self._prompt(query, [passages[i] for i in chunk])
            if self.context_length is None or prompt.tokens <= self.context_length:
                out.append((chunk, prompt))
            elif len(chunk) == 1:
                raise ValueError(
                    f"one document's ICR prompt takes {prompt.tokens} tokens, more than the context "
                    f"({self.context_length}); lower max_words (now {self.max_words}) or max_tokens"
                )
            else:
                half = len(chunk) // 2
                pending[:0] = [chunk[:half], chunk[half:]]
        return out

    def _rank_one(self, query: Query, docs: Sequence[Doc]) -> Ranking:
        depth = min(self.depth or len(docs), len(docs))
        passages = [self.cutter(d.full_text) for d in docs[:depth]]
        shown = list(range(depth))
        if self.reverse:
            shown.reverse()
        model = self._model
        layers = frozenset(self.layers) if self.layers is not None else None
        scores = np.zeros(len(docs), dtype=np.float64)
        evidence: dict[int, str | None] = {}
        info: dict[str, Any] = {"strategy": self.family, "windows": 0, "forward_passes": 0, "prompt_tokens": 0,
                                "tokens_dropped": 0}  # fmt: skip
        for chunk, prompt in self._windows(query, passages, shown):
            suffixes = prompt.suffixes if self.calibrate else prompt.suffixes[:1]
            attn = query_attention(model, prompt.prefix_ids, suffixes, layers)
            got, contrib = calibrated_scores(attn[0], attn[1] if self.calibrate else None, prompt.spans)
            for j, i in enumerate(chunk):
                scores[i] = got[j]
                evidence[i] = _best_sentence(prompt.text, prompt.offsets, prompt.spans[j], prompt.char_spans[j],
                                             contrib[j])  # fmt: skip
                span = prompt.spans[j]
                if self.calibrate and span[1] - span[0] >= 2:
                    info["tokens_dropped"] += int((contrib[j] == 0).sum())
            info["windows"] += 1
            info["forward_passes"] += 1 + len(suffixes)
            info["prompt_tokens"] += len(prompt.prefix_ids) + sum(len(s) for s in suffixes)
        if depth < len(docs):  # the rest follow in first-stage order, below every reranked document
            low = scores[:depth].min() if depth else 0.0
            scores[depth:] = low - 1.0 - np.arange(len(docs) - depth)
        return Ranking(scores, evidence=evidence, info=info)

    # -- the Reranker interface -------------------------------------------------------------------------------
    def rank_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[Ranking]:
        """Score each query's documents (one query at a time: its documents are one prompt)."""
        from reason2rank.progress import progress_bar

        bar = progress_bar(len(items), "ICR", self.progress, unit="query")
        out = []
        try:
            for q, docs in items:
                out.append(self._rank_one(q, docs))
                bar.update(1)
        finally:
            bar.close()
        return out

    def r2r_config(self) -> dict[str, Any]:
        """The ICR fields of ``r2r_model.json``."""
        cfg = {
            k: v
            for k, v in super().r2r_config().items()
            if k not in ("temperature", "max_new_tokens", "seed")
        }
        cfg.update(reverse=self.reverse, calibrate=self.calibrate)
        if self.window is not None:
            cfg["window"] = self.window
        if self.layers is not None:
            cfg["layers"] = self.layers
        return cfg
