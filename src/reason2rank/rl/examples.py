"""GRPO training examples from candidates and qrels: the prompts the trained strategy will see at inference.

- :func:`setwise_examples` (Rank-R1): one positive and ``window - 1`` negatives drawn from a query's candidates,
  shuffled; ``label`` is the 1-based place of the positive (the ``[k]`` of ``<answer>[k]</answer>``). The prompt is
  the setwise strategy's template (``rank_r1_v1`` by default), passages cut as its ``DocCutter`` cuts them.
- :func:`binary_examples` (ProRank stage 1): (query, document) prompts of the ``binary_relevance`` bundle, one
  positive (label 1) and one negative (label 0) per example, so the labels are balanced.
- :func:`listwise_examples` (MM-R5): ``window`` candidates with one to three positives, shuffled; ``positives``
  are their 1-based ids, ``num_candidates`` the window. With ``images=True`` (MM-R5 on pages) each candidate's page
  images go in its ``Image i:`` slot as the VLM listwise strategy shows them (``image_window_messages``): the
  messages hold ``{"type": "image"}`` placeholders and ``images`` the ``ImageRef`` of each, in order (the form
  TRL's VLM path reads); a window whose documents have no image is skipped (counted).

Every draw comes from ``random.Random(f"{seed}:{qid}:{i}")`` (Python's string seeding is stable across runs and
platforms), and each example records its ``seed``, ``qid`` and shown ``docids``, so the training set can be rebuilt
and audited. A query without a positive, or with too few negatives for a window, gives no example (counted).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reason2rank.llm.prompts import DocCutter, load_template
from reason2rank.types import Doc, Query

__all__ = [
    "ExampleSet",
    "binary_examples",
    "listwise_examples",
    "render_prompt",
    "select_queries",
    "setwise_examples",
]

Items = Sequence[tuple[Query, Sequence[Doc]]]
Qrels = Mapping[str, Mapping[str, int]]


@dataclass
class ExampleSet:
    """Examples (dicts with ``messages``, ``prefix`` and the reward's columns) and what was skipped and why."""

    examples: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        """Count one query (or one of its examples) left out, by reason."""
        self.skipped[why] = self.skipped.get(why, 0) + 1


def select_queries(
    items: Items, queries: Any = None, exclude: Any = None
) -> list[tuple[Query, Sequence[Doc]]]:
    """The items of the qids in ``queries`` (a list, or a file with one qid a line), or all but ``exclude``'s;
    ``ValueError`` naming qids that are not among the candidates."""

    def qids(value: Any, what: str) -> set[str]:
        if isinstance(value, (str, Path)):
            p = Path(value)
            if not p.is_file():
                raise FileNotFoundError(f"data.{what}: {p} is not a file of qids (one a line)")
            return {line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()}
        if isinstance(value, (list, tuple)):
            return {str(v) for v in value}
        raise ValueError(f"data.{what} must be a list of qids or a file of qids, got {type(value).__name__}")

    known = {q.id for q, _ in items}
    for value, what in ((queries, "queries"), (exclude, "exclude_queries")):
        if value is not None:
            missing = sorted(qids(value, what) - known)
            if missing:
                raise ValueError(f"data.{what} names qid(s) with no candidates: {missing[:10]}")
    if queries is not None:
        keep = qids(queries, "queries")
        return [(q, d) for q, d in items if q.id in keep]
    if exclude is not None:
        drop = qids(exclude, "exclude_queries")
        return [(q, d) for q, d in items if q.id not in drop]
    return list(items)


def render_prompt(tokenizer: Any, messages: list[dict[str, str]], prefix: str = "") -> str:
    """The prompt text a local transformers backend generates from: the chat template with its generation
    prompt, then the answer prefix (as ``TransformersBackend.render``); a plain rendering without a template."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    else:
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
    return str(text) + prefix


def _split(
    docs: Sequence[Doc], grades: Mapping[str, int], positive: int, negative_max: int
) -> tuple[list[Doc], list[Doc]]:
    pos = [d for d in docs if grades.get(d.id, -1) >= positive]
    neg = [d for d in docs if d.id not in grades or grades[d.id] <= negative_max]
    return pos, neg


def setwise_examples(
    items: Items,
    qrels: Qrels,
    *,
    window: int = 20,
    examples_per_query: int = 1,
    positive_grade: int = 1,
    negative_max_grade: int = 0,
    seed: int = 0,
    prompt: str = "rank_r1_v1",
    max_words: int | None = 300,
) -> ExampleSet:
    """Rank-R1 examples (see the module docstring): columns ``label``, ``qid``, ``docids``, ``seed``."""
    template = load_template(prompt, "setwise")
    cutter = DocCutter(max_words=max_words)
    out = ExampleSet()
    for query, docs in items:
        pos, neg = _split(docs, qrels.get(query.id, {}), positive_grade, negative_max_grade)
        if not pos:
            out.skip("no positive among the candidates")
            continue
        if len(neg) < window - 1:
            out.skip(f"fewer than {window - 1} negatives")
            continue
        for i in range(examples_per_query):
            rng = random.Random(f"{seed}:{query.id}:{i}")
            positive = pos[rng.randrange(len(pos))]
            shown = [*rng.sample(neg, window - 1), positive]
            rng.shuffle(shown)
            messages = template.render({"query": query.text}, [cutter(d.full_text) for d in shown])
            out.examples.append({
                "messages": messages, "prefix": template.prefix, "label": shown.index(positive) + 1,
                "qid": query.id, "docids": [d.id for d in shown], "seed": seed, "example": i,
            })  # fmt: skip
    return out


def listwise_examples(
    items: Items,
    qrels: Qrels,
    *,
    window: int = 20,
    examples_per_query: int = 1,
    positive_grade: int = 1,
    negative_max_grade: int = 0,
    seed: int = 0,
    prompt: str = "mm_r5_v1",
    max_words: int | None = 300,
    max_positives: int = 3,
    images: bool = False,
) -> ExampleSet:
    """MM-R5 examples (see the module docstring): columns ``positives``, ``num_candidates``, ``qid``, ``docids``
    (and ``images`` with ``images=True``)."""
    template = load_template(prompt, "rank_listwise")
    cutter = DocCutter(max_words=max_words)
    out = ExampleSet()
    for query, docs in items:
        pos, neg = _split(docs, qrels.get(query.id, {}), positive_grade, negative_max_grade)
        if not pos:
            out.skip("no positive among the candidates")
            continue
        for i in range(examples_per_query):
            rng = random.Random(f"{seed}:{query.id}:{i}")
            k = rng.randint(1, min(max_positives, len(pos), window - 1))
            if len(neg) < window - k:
                out.skip(f"fewer than {window - k} negatives")
                continue
            chosen = rng.sample(pos, k)
            shown = [*rng.sample(neg, window - k), *chosen]
            rng.shuffle(shown)
            ids = sorted(shown.index(p) + 1 for p in chosen)
            example = {"prefix": template.prefix, "positives": ids, "num_candidates": window, "qid": query.id,
                       "docids": [d.id for d in shown], "seed": seed, "example": i}  # fmt: skip
            if images:
                from reason2rank.strategies.vlm_listwise import image_window_messages

                if not any(d.images for d in shown):
                    out.skip("no page image in the window (images=True)")
                    continue
                example["messages"], example["images"] = _image_placeholders(
                    image_window_messages(template, cutter, query, shown)
                )
            else:
                example["messages"] = template.render(
                    {"query": query.text}, [cutter(d.full_text) for d in shown]
                )
            out.examples.append(example)
    return out


def _image_placeholders(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """Messages whose image parts are ``{"type": "image"}`` placeholders, text given as text parts, and the
    images in placeholder order."""
    refs: list[Any] = []
    plain = []
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            plain.append({"role": m["role"], "content": [{"type": "text", "text": content}]})
            continue
        parts = []
        for c in content:
            if c["type"] == "image":
                refs.append(c["image"])
                parts.append({"type": "image"})
            else:
                parts.append({"type": "text", "text": c["text"]})
        plain.append({"role": m["role"], "content": parts})
    return plain, refs


def binary_examples(
    items: Items,
    qrels: Qrels,
    *,
    examples_per_query: int = 1,
    positive_grade: int = 1,
    negative_max_grade: int = 0,
    seed: int = 0,
    prompt: str | Path = "binary_relevance",
    max_words: int | None = 300,
) -> ExampleSet:
    """ProRank stage-1 examples (see the module docstring): columns ``label`` (0 or 1), ``qid``, ``docid``."""
    from reason2rank.scorers.scoring_prompts import load_prompt_template

    part = load_prompt_template(prompt, None).score
    cutter = DocCutter(max_words=max_words)
    out = ExampleSet()
    for query, docs in items:
        pos, neg = _split(docs, qrels.get(query.id, {}), positive_grade, negative_max_grade)
        if not pos or not neg:
            out.skip("no positive or no negative among the candidates")
            continue
        for i in range(examples_per_query):
            rng = random.Random(f"{seed}:{query.id}:{i}")
            for doc, label in ((pos[rng.randrange(len(pos))], 1), (neg[rng.randrange(len(neg))], 0)):
                messages = part.template.render({"query": query.text, "document": cutter(doc.full_text)})
                out.examples.append({
                    "messages": messages, "prefix": part.prefix, "label": label, "qid": query.id,
                    "docid": doc.id, "seed": seed, "example": i,
                })  # fmt: skip
    return out
