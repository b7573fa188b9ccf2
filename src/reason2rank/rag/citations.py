"""The generator's side of RAG: a chain-of-thought prompt over numbered documents, and answers whose citations
can only name those documents.

``answer_messages`` numbers the kept documents ``[1]`` … ``[n]`` (title and text, cut by a ``DocCutter``) and asks
the LLM to reason inside ``<think>…</think>`` and then answer, citing documents as ``[i]``. ``parse_cited_answer``
takes the reasoning out (``reason2rank.llm.reasoning``), reads every citation marker (``[2]``, ``[1, 3]``,
``[1][3]``, ``[2-3]``), maps the numbers of kept documents to their ids and *removes* every other number from
the answer text, reporting it in ``invalid``: an answer never cites a document that was not in its prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reason2rank.llm.backend import GenerationSettings
from reason2rank.llm.client import LLM, LLMRequest
from reason2rank.llm.prompts import DocCutter
from reason2rank.llm.reasoning import split_reasoning
from reason2rank.types import Doc

__all__ = ["CitedAnswer", "CitingAnswerer", "answer_messages", "parse_cited_answer"]

_SYSTEM = (
    "You answer questions from the numbered documents you are given, and only from them. First think step by "
    "step inside <think> and </think>: what the question asks, which documents say something about it, and what "
    "they say. Then write the answer after </think>, citing the documents it rests on by their numbers in square "
    "brackets, e.g. [1] or [2][3]. If the documents do not answer the question, say so."
)

# a bracketed group of numbers: [1], [1, 3], [1; 2], [2-4]
_MARKER = re.compile(r"\[\s*(\d+(?:\s*(?:,|;|-|–|and)\s*\d+)*)\s*\]")


def _doc_block(i: int, doc: Doc, cutter: DocCutter) -> str:
    text = cutter(doc.text or "")
    title = f"{doc.title}. " if doc.title else ""
    return f"[{i}] {title}{text}".rstrip()


def answer_messages(
    query: str, docs: Sequence[Doc], *, cutter: DocCutter | None = None
) -> list[dict[str, str]]:
    """Chat messages asking for a cited answer to ``query`` from ``docs`` (numbered from 1 in the given order)."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("the query is empty: there is nothing to answer")
    cutter = cutter or DocCutter(max_words=200)
    blocks = "\n\n".join(_doc_block(i, d, cutter) for i, d in enumerate(docs, start=1))
    if not docs:
        blocks = "(no documents were found)"
    user = f"Documents:\n\n{blocks}\n\nQuestion: {query.strip()}"
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]


@dataclass(frozen=True)
class CitedAnswer:
    """A generated answer: ``answer`` (reasoning taken out, invalid citation markers removed), ``reasoning``
    (``None`` when there was none), ``citations`` (ids of the cited documents, in order of first citation, each
    once), ``cited`` (their 1-based numbers in the prompt), ``invalid`` (numbers that named no document, removed),
    ``doc_ids`` (the documents of the prompt, in order), ``truncated`` (a think block never closed) and ``raw``."""

    answer: str
    reasoning: str | None
    citations: tuple[str, ...]
    cited: tuple[int, ...]
    invalid: tuple[int, ...]
    doc_ids: tuple[str, ...]
    truncated: bool = False
    raw: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "answer": self.answer,
            "reasoning": self.reasoning,
            "citations": list(self.citations),
            "cited": list(self.cited),
            "invalid": list(self.invalid),
            "doc_ids": list(self.doc_ids),
            "truncated": self.truncated,
            "error": self.error,
        }


def _numbers(group: str) -> list[int]:
    out: list[int] = []
    for part in re.split(r"\s*(?:,|;|and)\s*", group):
        m = re.fullmatch(r"(\d+)\s*[-–]\s*(\d+)", part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            if a <= b and b - a < 50:
                out.extend(range(a, b + 1))
                continue
            out.extend([a, b])
        elif part.strip().isdigit():
            out.append(int(part))
    return out


def parse_cited_answer(
    text: str | None, doc_ids: Sequence[str], server_reasoning: str | None = None
) -> CitedAnswer:
    """Read an answer to a prompt over the documents ``doc_ids`` (``[1]`` is ``doc_ids[0]``)."""
    ids = tuple(str(d) for d in doc_ids)
    split = split_reasoning(text, server_reasoning)
    cited: list[int] = []
    invalid: list[int] = []

    def rewrite(m: re.Match[str]) -> str:
        nums = _numbers(m.group(1))
        good = [n for n in nums if 1 <= n <= len(ids)]
        for n in nums:
            if 1 <= n <= len(ids):
                if n not in cited:
                    cited.append(n)
            elif n not in invalid:
                invalid.append(n)
        return "".join(f"[{n}]" for n in dict.fromkeys(good))

    answer = _MARKER.sub(rewrite, split.answer)
    answer = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", answer)).strip()
    return CitedAnswer(
        answer=answer,
        reasoning=split.reasoning,
        citations=tuple(ids[n - 1] for n in cited),
        cited=tuple(cited),
        invalid=tuple(invalid),
        doc_ids=ids,
        truncated=split.truncated,
        raw=text,
    )


class CitingAnswerer:
    """Generate cited, reasoned answers from ranked documents with any LLM backend of ``reason2rank.llm``.

    ``num_docs``: how many of the given documents (best first) go into the prompt; ``max_words`` cuts each.

    Example::

        answerer = CitingAnswerer("hf:path/to/SmolLM2-135M-Instruct", num_docs=5)
        a = answerer.answer("does vitamin D prevent fractures?", ranked_docs)
        a.answer, a.citations   # citations name only documents that were in the prompt
    """

    def __init__(
        self,
        llm: Any,
        *,
        num_docs: int = 5,
        max_words: int | None = 200,
        max_new_tokens: int = 512,
        cache: Any = None,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(num_docs, bool) or not isinstance(num_docs, int) or num_docs < 1:
            raise ValueError(f"num_docs must be a positive int, got {num_docs!r}")
        self.llm = llm if isinstance(llm, LLM) else LLM(llm, cache=cache, **dict(backend_options or {}))
        self.num_docs = num_docs
        self.cutter = DocCutter(max_words=max_words)
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens)

    def answer(self, query: str, docs: Sequence[Doc]) -> CitedAnswer:
        """Answer one query from its ranked documents."""
        return self.answer_batch([(query, docs)])[0]

    def answer_batch(self, items: Sequence[tuple[str, Sequence[Doc]]]) -> list[CitedAnswer]:
        """Answer several (query, ranked documents) items in one batch of LLM calls."""
        kept = [list(docs)[: self.num_docs] for _, docs in items]
        requests = [
            LLMRequest(answer_messages(q, d, cutter=self.cutter), self.settings, {"purpose": "rag_answer"})
            for (q, _), d in zip(items, kept)
        ]
        out = []
        for d, (res, _rec) in zip(kept, self.llm.generate(requests)):
            ids = [doc.id for doc in d]
            if res.error is not None:
                out.append(CitedAnswer("", None, (), (), (), tuple(ids), error=str(res.error)))
            else:
                out.append(parse_cited_answer(res.text, ids, res.reasoning))
        return out

    def close(self) -> None:
        """Release the backend."""
        self.llm.close()

    def __repr__(self) -> str:
        return f"CitingAnswerer({self.llm.name}, num_docs={self.num_docs})"
