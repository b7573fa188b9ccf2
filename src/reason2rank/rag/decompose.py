"""Query understanding (Omni-RAG): an LLM denoises a query (spelling, phrasing) and splits it into sub-queries.

The LLM answers a JSON object ``{"query": "<the cleaned query>", "sub_queries": ["...", ...]}``; local models
decode under that schema where the ``constrained`` extra is installed and servers get it as ``response_format``
(the LLM layer decides). The answer is read with the teacher's repairing parser (``extract_json``: think blocks,
code fences, surrounding text, trailing commas) and then validated strictly:

- not JSON, no ``sub_queries`` list, or a list with no usable (non-empty string) entry: the decomposition
  *fails*, the original query alone is used and a warning names the query and the reason;
- more than ``max_sub_queries``: the first ``max_sub_queries`` are kept, with a warning;
- repeated sub-queries (case and space insensitive) are kept once; non-string entries are dropped and named.

An empty query is an error (there is nothing to understand), raised before any LLM call.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reason2rank.llm.backend import GenerationSettings
from reason2rank.llm.client import LLM, LLMRequest
from reason2rank.teacher.parsing import ParseError, extract_json
from reason2rank.types import Query

__all__ = [
    "DECOMPOSE_SCHEMA",
    "Decomposition",
    "QueryDecomposer",
    "decomposition_messages",
    "parse_decomposition",
]

DECOMPOSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string"},
        "sub_queries": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["query", "sub_queries"],
}

_SYSTEM = (
    "You prepare search queries. Fix the spelling and phrasing of the user's query without changing its meaning, "
    "then split it into short, self-contained search queries, one per piece of information needed "
    "(a simple query stays one search query). Answer with JSON only."
)
_EXAMPLE_Q = "does vitamn d lower the risk of fractures and falls in elderly"
_EXAMPLE_A = json.dumps(
    {
        "query": "Does vitamin D lower the risk of fractures and falls in the elderly?",
        "sub_queries": ["vitamin D fracture risk in the elderly", "vitamin D falls in the elderly"],
    }
)


def decomposition_messages(query: str, max_sub_queries: int) -> list[dict[str, str]]:
    """The chat messages asking for the decomposition of ``query`` (at most ``max_sub_queries`` sub-queries)."""
    ask = (
        f'Query: {{q}}\n\nAnswer with a JSON object with the fields "query" (the cleaned query) and '
        f'"sub_queries" (a list of 1 to {max_sub_queries} search queries).'
    )
    return [
        {"role": "system", "content": _SYSTEM},
        {"role": "user", "content": ask.format(q=_EXAMPLE_Q)},
        {"role": "assistant", "content": _EXAMPLE_A},
        {"role": "user", "content": ask.format(q=query)},
    ]


@dataclass(frozen=True)
class Decomposition:
    """How one query was understood.

    ``original``: the query as given; ``query``: the cleaned query (the original when the LLM gave none);
    ``sub_queries``: the validated sub-queries; ``ok``: whether the answer was usable (when not, ``sub_queries``
    is the original query alone); ``problems``: what was wrong or changed, in words; ``repairs``: what the JSON
    parser had to repair; ``raw``: the LLM's answer."""

    original: str
    query: str
    sub_queries: tuple[str, ...]
    ok: bool
    problems: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()
    raw: str | None = None
    qid: str | None = field(default=None, compare=False)

    def search_queries(self, include_query: bool = True) -> list[str]:
        """What to retrieve with: the cleaned query first (when ``include_query``), then the sub-queries,
        each once (case and space insensitive)."""
        out = [self.query, *self.sub_queries] if include_query else list(self.sub_queries)
        return _unique(out)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for Haystack outputs and DataFrame columns)."""
        return {
            "original": self.original,
            "query": self.query,
            "sub_queries": list(self.sub_queries),
            "ok": self.ok,
            "problems": list(self.problems),
            "repairs": list(self.repairs),
        }


def _key(s: str) -> str:
    return " ".join(s.lower().split())


def _unique(items: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for s in items:
        if _key(s) not in seen:
            seen.add(_key(s))
            out.append(s)
    return out


def _check_query(query: Any, qid: str | None) -> str:
    name = f"query {qid!r}" if qid is not None else "the query"
    if not isinstance(query, str):
        raise TypeError(f"{name} must be a string, got {type(query).__name__}")
    if not query.strip():
        raise ValueError(f"{name} is empty: there is nothing to decompose or retrieve")
    return query.strip()


def _fallback(
    query: str, problem: str, raw: str | None, repairs: Sequence[str], qid: str | None
) -> Decomposition:
    return Decomposition(query, query, (query,), False, (problem,), tuple(repairs), raw, qid)


def parse_decomposition(
    text: str | None, query: str, *, max_sub_queries: int = 8, qid: str | None = None
) -> Decomposition:
    """Read and validate an LLM's decomposition answer for ``query`` (see the module docstring)."""
    query = _check_query(query, qid)
    if isinstance(max_sub_queries, bool) or not isinstance(max_sub_queries, int) or max_sub_queries < 1:
        raise ValueError(f"max_sub_queries must be a positive int, got {max_sub_queries!r}")
    try:
        obj, repairs = extract_json(text)
    except ParseError as e:
        return _fallback(query, f"the answer is not usable JSON ({e})", text, (), qid)
    subs = obj.get("sub_queries")
    if subs is None:
        return _fallback(query, 'the answer has no "sub_queries" field', text, repairs, qid)
    if isinstance(subs, str):
        subs = [subs]
    if not isinstance(subs, list):
        return _fallback(query, f'"sub_queries" is a {type(subs).__name__}, not a list', text, repairs, qid)
    problems: list[str] = []
    bad = [s for s in subs if not isinstance(s, str)]
    if bad:
        problems.append(f"dropped {len(bad)} sub-queries that are not strings: {bad[:3]!r}")
    strings = [" ".join(s.split()) for s in subs if isinstance(s, str)]
    blank = sum(1 for s in strings if not s)
    if blank:
        problems.append(f"dropped {blank} empty sub-queries")
    kept = _unique([s for s in strings if s])
    if len(kept) < len([s for s in strings if s]):
        problems.append(f"dropped {len([s for s in strings if s]) - len(kept)} repeated sub-queries")
    if not kept:
        return _fallback(query, "the answer names no sub-query", text, repairs, qid)
    if len(kept) > max_sub_queries:
        problems.append(
            f"{len(kept)} sub-queries, over the cap of {max_sub_queries}: kept the first {max_sub_queries}"
        )
        kept = kept[:max_sub_queries]
    cleaned = obj.get("query")
    if not isinstance(cleaned, str) or not cleaned.strip():
        if cleaned is not None:
            problems.append('"query" is not a non-empty string: the original query is kept')
        cleaned = query
    return Decomposition(
        query, " ".join(cleaned.split()), tuple(kept), True, tuple(problems), tuple(repairs), text, qid
    )


class QueryDecomposer:
    """Denoise and decompose queries with any LLM backend of ``reason2rank.llm``.

    ``llm``: an ``LLM``, a ``Backend``, a spec string (``hf:PATH``, ``openai:MODEL@URL``, ``haystack:MOD:ATTR``) or
    a Haystack ChatGenerator object; ``backend_options`` go to the backend when one is built here.
    ``max_sub_queries`` caps the sub-queries kept; ``include_query``: retrieve with the cleaned query too.

    Example::

        dec = QueryDecomposer("hf:path/to/SmolLM2-135M-Instruct", max_sub_queries=4)
        d = dec.decompose("vitamn d and fractures or falls?")
        d.sub_queries, d.ok, d.problems
    """

    def __init__(
        self,
        llm: Any,
        *,
        max_sub_queries: int = 8,
        include_query: bool = True,
        max_new_tokens: int = 256,
        constrained: bool = True,
        warn: bool = True,
        cache: Any = None,
        backend_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(max_sub_queries, bool) or not isinstance(max_sub_queries, int) or max_sub_queries < 1:
            raise ValueError(f"max_sub_queries must be a positive int, got {max_sub_queries!r}")
        self.llm = llm if isinstance(llm, LLM) else LLM(llm, cache=cache, **dict(backend_options or {}))
        self.max_sub_queries = max_sub_queries
        self.include_query = include_query
        self.settings = GenerationSettings(
            max_new_tokens=max_new_tokens, json_schema=DECOMPOSE_SCHEMA if constrained else None
        )
        self.warn = warn

    def decompose(self, query: str | Query) -> Decomposition:
        """Decompose one query (a string or a ``Query``)."""
        return self.decompose_batch([query])[0]

    def decompose_batch(self, queries: Sequence[str | Query]) -> list[Decomposition]:
        """Decompose several queries in one batch of LLM calls (an empty query raises ``ValueError`` first)."""
        items = [(q.id, q.text) if isinstance(q, Query) else (None, q) for q in queries]
        texts = [_check_query(text, qid) for qid, text in items]
        requests = [
            LLMRequest(
                decomposition_messages(t, self.max_sub_queries),
                self.settings,
                {"purpose": "rag_decompose", **({"qid": qid} if qid is not None else {})},
            )
            for (qid, _), t in zip(items, texts)
        ]
        out = []
        for (qid, _), text, (res, _rec) in zip(items, texts, self.llm.generate(requests)):
            if res.error is not None:
                d = _fallback(text, f"the LLM call failed ({res.error})", None, (), qid)
            else:
                d = parse_decomposition(res.text, text, max_sub_queries=self.max_sub_queries, qid=qid)
            if self.warn and (not d.ok or d.problems):
                name = f"query {qid!r}" if qid is not None else f"query {text!r}"
                what = "decomposition failed, using the original query alone" if not d.ok else "decomposition"
                warnings.warn(f"{name}: {what}: {'; '.join(d.problems)}", stacklevel=2)
            out.append(d)
        return out

    def close(self) -> None:
        """Release the backend (when this decomposer built it)."""
        self.llm.close()

    def __repr__(self) -> str:
        return f"QueryDecomposer({self.llm.name}, max_sub_queries={self.max_sub_queries})"
