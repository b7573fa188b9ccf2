"""``R2RQueryDecomposer``: denoise a query and split it into sub-queries with any Haystack ChatGenerator.

The logic (prompt, repairing JSON parser, validation, cap, fallback) is ``reason2rank.rag.QueryDecomposer``; this
component wraps the generator as a reason2rank LLM backend and converts nothing else.
"""

from __future__ import annotations

import copy
from typing import Any

from haystack import component, default_from_dict, default_to_dict
from haystack.core.serialization import component_to_dict
from haystack.utils.deserialization import deserialize_component_inplace

from haystack_integrations.components.generators.reason2rank.chat import R2RChatGenerator
from reason2rank.rag.decompose import QueryDecomposer


@component
class R2RQueryDecomposer:
    """
    Clean a query (spelling, phrasing) and decompose it into sub-queries, as validated JSON from an LLM.

    When the answer is unusable (not JSON, no sub-query, the call failed) the original query alone is returned,
    ``decomposition["ok"]`` is False and a warning names the reason; more than ``max_sub_queries`` sub-queries
    are cut to the cap. An empty query raises ``ValueError``.

    Usage example:
    ```python
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack_r2r import R2RQueryDecomposer, R2RMultiQueryRetriever

    decomposer = R2RQueryDecomposer(chat_generator=OpenAIChatGenerator(model="gpt-4o-mini"), max_sub_queries=4)
    out = decomposer.run(query="does vitamn d prevent fractures and falls?")
    out["queries"]        # ["Does vitamin D prevent fractures and falls?", "vitamin D fractures", ...]
    ```

    :param chat_generator: any Haystack ChatGenerator; ``R2RChatGenerator`` runs any reason2rank LLM backend
        (local transformers ``hf:PATH``, ``openai:MODEL@URL``) and is used through its LLM directly.
    :param max_sub_queries: the cap on sub-queries.
    :param include_query: put the cleaned query first in ``queries`` (retrieved with as well).
    :param max_new_tokens: the answer's length limit.
    :param backend_options: options of reason2rank's Haystack backend, e.g. ``{"settings": "generator"}`` to leave
        generation settings to the generator's own configuration (see ``reason2rank.llm.haystack_backend``).
    """

    def __init__(
        self,
        *,
        chat_generator: Any,
        max_sub_queries: int = 8,
        include_query: bool = True,
        max_new_tokens: int = 256,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        self.chat_generator = chat_generator
        self.max_sub_queries = max_sub_queries
        self.include_query = include_query
        self.max_new_tokens = max_new_tokens
        self.backend_options = dict(backend_options or {})
        self._decomposer: QueryDecomposer | None = None
        if isinstance(max_sub_queries, bool) or not isinstance(max_sub_queries, int) or max_sub_queries < 1:
            raise ValueError(f"max_sub_queries must be a positive int, got {max_sub_queries!r}")

    def warm_up(self) -> None:
        """Warm the generator up and wrap it (idempotent)."""
        if self._decomposer is None:
            if hasattr(self.chat_generator, "warm_up"):
                self.chat_generator.warm_up()
            llm = self.chat_generator
            if isinstance(llm, R2RChatGenerator) and not self.backend_options:
                llm = llm.llm  # our own LLM layer: the JSON schema reaches it (constrained local decoding)
            self._decomposer = QueryDecomposer(
                llm,
                max_sub_queries=self.max_sub_queries,
                include_query=self.include_query,
                max_new_tokens=self.max_new_tokens,
                backend_options=self.backend_options,
            )

    @component.output_types(queries=list[str], query=str, decomposition=dict[str, Any])
    def run(self, query: str) -> dict[str, Any]:
        """
        Decompose ``query``.

        :param query: the user's query.
        :returns: ``queries`` (what to retrieve with), ``query`` (the cleaned query) and ``decomposition`` (the
            original, sub-queries, ``ok``, the problems found and the JSON repairs).
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError("the query is empty: there is nothing to decompose or retrieve")
        self.warm_up()
        assert self._decomposer is not None
        d = self._decomposer.decompose(query)
        return {
            "queries": d.search_queries(self.include_query),
            "query": d.query,
            "decomposition": d.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        """
        Serialize this component to a dictionary.

        :returns: The dictionary, as ``Pipeline.dumps`` writes it.
        """
        return default_to_dict(
            self,
            chat_generator=component_to_dict(obj=self.chat_generator, name="chat_generator"),
            max_sub_queries=self.max_sub_queries,
            include_query=self.include_query,
            max_new_tokens=self.max_new_tokens,
            backend_options=copy.deepcopy(self.backend_options),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> R2RQueryDecomposer:
        """
        Deserialize the component from a dictionary (``data`` is left untouched).

        :param data: The dictionary ``to_dict`` wrote.
        :returns: The component.
        """
        data = copy.deepcopy(data)
        deserialize_component_inplace(data["init_parameters"], key="chat_generator")
        return default_from_dict(cls, data)
