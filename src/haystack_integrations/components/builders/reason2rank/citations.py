"""Cited, reasoned answers in Haystack: ``R2RCitationPromptBuilder`` (a chain-of-thought prompt over numbered
documents) → any ChatGenerator → ``R2RCitedAnswerBuilder`` (a ``GeneratedAnswer`` whose citations only name
documents of the prompt). The prompt and the citation reading are ``reason2rank.rag.citations``."""

from __future__ import annotations

from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict, logging
from haystack.dataclasses import ChatMessage, GeneratedAnswer

from haystack_integrations.components.retrievers.reason2rank.multi_query import META_SUB_QUERIES
from reason2rank.llm.prompts import DocCutter
from reason2rank.llm.reasoning import reasoning_field
from reason2rank.rag.citations import answer_messages, parse_cited_answer
from reason2rank.types import Doc

logger = logging.getLogger(__name__)


def _to_doc(d: Document, title_field: str | None) -> Doc:
    title = d.meta.get(title_field) if title_field else None
    return Doc(d.id, d.content or "", title=str(title) if title else None)


@component
class R2RCitationPromptBuilder:
    """
    Build the chat prompt of a cited answer: the top ``num_docs`` documents numbered ``[1]`` … ``[n]`` (title from
    ``meta[title_field]``, text cut to ``max_words``), an instruction to think step by step in
    ``<think>…</think>`` and to cite documents as ``[i]``, then the question.

    Usage example:
    ```python
    builder = R2RCitationPromptBuilder(num_docs=5)
    out = builder.run(query="does vitamin D prevent falls?", documents=ranked_documents)
    out["prompt"]      # list[ChatMessage] for any ChatGenerator
    out["documents"]   # the documents of the prompt, in their numbered order (for R2RCitedAnswerBuilder)
    ```
    """

    def __init__(
        self, *, num_docs: int = 5, max_words: int | None = 200, title_field: str | None = "title"
    ) -> None:
        if isinstance(num_docs, bool) or not isinstance(num_docs, int) or num_docs <= 0:
            raise ValueError(f"num_docs must be a positive int, got {num_docs!r}")
        self.num_docs, self.max_words, self.title_field = num_docs, max_words, title_field
        self._cutter = DocCutter(max_words=max_words)

    @component.output_types(prompt=list[ChatMessage], documents=list[Document])
    def run(self, query: str, documents: list[Document]) -> dict[str, Any]:
        """
        Build the prompt.

        :param query: the question (the user's original query).
        :param documents: ranked documents, best first; repeated ids are kept once.
        :returns: ``prompt`` and ``documents`` (those numbered in the prompt).
        """
        seen: set[str] = set()
        kept = []
        for d in documents:
            if d.id not in seen:
                seen.add(d.id)
                kept.append(d)
        kept = kept[: self.num_docs]
        messages = answer_messages(query, [_to_doc(d, self.title_field) for d in kept], cutter=self._cutter)
        prompt = [
            ChatMessage.from_system(m["content"])
            if m["role"] == "system"
            else ChatMessage.from_user(m["content"])
            for m in messages
        ]
        return {"prompt": prompt, "documents": kept}

    def to_dict(self) -> dict[str, Any]:
        """
        Serialize this component to a dictionary.

        :returns: The dictionary, as ``Pipeline.dumps`` writes it.
        """
        return default_to_dict(
            self, num_docs=self.num_docs, max_words=self.max_words, title_field=self.title_field
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> R2RCitationPromptBuilder:
        """
        Deserialize the component from a dictionary.

        :param data: The dictionary ``to_dict`` wrote.
        :returns: The component.
        """
        return default_from_dict(cls, data)


@component
class R2RCitedAnswerBuilder:
    """
    Read a generator's reply to an ``R2RCitationPromptBuilder`` prompt into a ``GeneratedAnswer``: ``data`` is the
    answer with the reasoning taken out and every citation marker that names no document of the prompt removed;
    ``documents`` are the cited documents; ``meta`` holds ``citations`` (their ids, in citation order),
    ``reasoning``, ``invalid_citations`` (the numbers removed), ``context_document_ids`` and, when the documents
    came from ``R2RMultiQueryRetriever``, ``provenance`` ({cited id: the sub-queries that found it}).

    Usage example:
    ```python
    answer = R2RCitedAnswerBuilder().run(query=q, replies=llm_out["replies"], documents=prompt_out["documents"])
    answer["answers"][0].meta["citations"]
    ```
    """

    @component.output_types(answers=list[GeneratedAnswer])
    def run(self, query: str, replies: list[ChatMessage], documents: list[Document]) -> dict[str, Any]:
        """
        Build the answer.

        :param query: the question.
        :param replies: the generator's replies (the first is read).
        :param documents: the documents of the prompt, in their numbered order.
        :returns: ``answers``: one ``GeneratedAnswer`` (none when there is no reply).
        """
        if not replies:
            logger.warning("R2RCitedAnswerBuilder: the generator gave no reply")
            return {"answers": []}
        reply = replies[0]
        server = reasoning_field(reply.meta) if isinstance(reply.meta, dict) else None
        reasoning_obj = getattr(reply, "reasoning", None)
        if server is None and reasoning_obj is not None:
            server = getattr(reasoning_obj, "reasoning_text", None)
        a = parse_cited_answer(reply.text, [d.id for d in documents], server)
        by_id = {d.id: d for d in documents}
        meta: dict[str, Any] = {
            "citations": list(a.citations),
            "reasoning": a.reasoning,
            "invalid_citations": list(a.invalid),
            "context_document_ids": list(a.doc_ids),
        }
        if any(META_SUB_QUERIES in d.meta for d in documents):
            meta["provenance"] = {i: list(by_id[i].meta.get(META_SUB_QUERIES, [])) for i in a.citations}
        if a.invalid:
            logger.warning(
                "R2RCitedAnswerBuilder: removed citations of documents that were not in the prompt: {numbers}",
                numbers=list(a.invalid),
            )
        answer = GeneratedAnswer(
            data=a.answer, query=query, documents=[by_id[i] for i in a.citations], meta=meta
        )
        return {"answers": [answer]}
