"""Omni-RAG in PyTerrier: query understanding, retrieval per sub-query fused with provenance, cited answers.

    decompose = R2RQueryDecomposer("hf:path/to/llm")          # topics -> one row per (qid, search query)
    retrieve = R2RSubQueryRetriever(bm25, num_results=50)     # -> one fused result list per qid (RRF, k=60)
    rag = decompose >> retrieve >> pt_r2r.TextLoader(docs) >> (R2RReranker(model) % 5) >> R2RAnswerer(llm)
    rag(topics)  # qid, query, qanswer, citations, provenance, ...

``R2RAnswerer`` follows pyterrier-rag's data model (one row per qid, the answer in ``qanswer``) so its measures
and frames read our output; it generates with our LLM layer. ``R2RFusion`` fuses several retrievers on the same
topics (hybrid BM25 + dense, RRF or min-max linear), recording which retrievers found each document.
The logic is in ``reason2rank.rag``; this module converts frames, nothing more.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import pandas as pd
import pyterrier as pt

from pt_r2r.frames import frame_to_items
from reason2rank.rag.citations import CitingAnswerer
from reason2rank.rag.decompose import QueryDecomposer
from reason2rank.rag.fusion import RRF_K, FusedDoc, linear_fusion, reciprocal_rank_fusion
from reason2rank.types import Query

__all__ = ["R2RAnswerer", "R2RFusion", "R2RQueryDecomposer", "R2RSubQueryRetriever"]


class R2RQueryDecomposer(pt.Transformer):
    """Topics → one row per search query: ``qid``, ``query`` (the search query), ``query_0`` (the original, as
    PyTerrier's query rewriters keep it), ``sub_query`` (its number, 0 = the cleaned query when
    ``include_query``), ``decomposition_ok``. ``llm``: a spec string, a backend, an ``LLM`` or a Haystack
    ChatGenerator; other arguments go to ``reason2rank.rag.QueryDecomposer``."""

    schematic = {"label": "R2RQueryDecomposer", "help_url": None}

    def __init__(self, llm: Any, *, max_sub_queries: int = 8, include_query: bool = True, **kwargs: Any):
        self.decomposer = QueryDecomposer(
            llm, max_sub_queries=max_sub_queries, include_query=include_query, **kwargs
        )
        self.include_query = include_query

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.query_frame(inp, extra_columns=["query"])
        cols = ["qid", "query", "query_0", "sub_query", "decomposition_ok"]
        if len(inp) == 0:
            return pd.DataFrame(columns=cols)
        if inp["qid"].duplicated().any():
            dup = inp["qid"][inp["qid"].duplicated()].tolist()[:3]
            raise ValueError(f"R2RQueryDecomposer takes one row per query (topics); repeated qids: {dup}")
        queries = []
        for qid, text in zip(inp["qid"], inp["query"]):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"query {str(qid)!r} is empty: there is nothing to decompose or retrieve")
            queries.append(Query(str(qid), text))
        rows = []
        for qid, d in zip(inp["qid"], self.decomposer.decompose_batch(queries)):
            for j, q in enumerate(d.search_queries(self.include_query)):
                rows.append(
                    {"qid": qid, "query": q, "query_0": d.original, "sub_query": j, "decomposition_ok": d.ok}
                )
        return pd.DataFrame(rows, columns=cols)

    def __repr__(self) -> str:
        return f"R2RQueryDecomposer({self.decomposer.llm.name!r})"


def _ranked_lists(res: pd.DataFrame) -> dict[str, list[tuple[str, float]]]:
    """Per qid of a result frame: [(docno, score)] best first (by rank when there is one, else by score)."""
    res = res.sort_values(["qid", "rank"] if "rank" in res.columns else ["qid", "score"],
                          ascending=[True, "rank" in res.columns], kind="stable")  # fmt: skip
    out: dict[str, list[tuple[str, float]]] = {}
    for qid, docno, score in zip(res["qid"], res["docno"], res["score"]):
        out.setdefault(str(qid), []).append((str(docno), float(score)))
    return out


def _first_rows(frames: Sequence[pd.DataFrame], drop: set[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(qid, docno) → the other columns of its first row in ``frames`` (e.g. text a retriever returned)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for f in frames:
        extra = [c for c in f.columns if c not in drop]
        for rec in f[["qid", "docno", *extra]].to_dict("records"):
            out.setdefault((str(rec.pop("qid")), str(rec.pop("docno"))), rec)
    return out


def _fused_rows(qid: Any, query: str, fused: list[FusedDoc], extra: dict[tuple[str, str], dict[str, Any]],
                found_col: str, ranks_col: str) -> list[dict[str, Any]]:  # fmt: skip
    return [
        {"qid": qid, "query": query, "docno": f.doc_id, **extra.get((str(qid), f.doc_id), {}),
         "score": f.score, "rank": f.rank - 1, found_col: list(f.found_by), ranks_col: dict(f.ranks)}
        for f in fused
    ]  # fmt: skip


class R2RSubQueryRetriever(pt.Transformer):
    """Run ``retriever`` once per search query (the rows of ``R2RQueryDecomposer``) and fuse each qid's lists by
    reciprocal-rank fusion (``k``), deduplicated by docno. Output: a result frame per qid with the original
    query, ``score`` (the RRF score), 0-based ``rank``, ``sub_queries`` (the search queries that found the
    document) and ``sub_query_ranks`` ({search query: 1-based rank}). Topics without ``query_0`` are taken as
    their own single search query. A search query that retrieves nothing is warned about and contributes
    nothing; a qid whose every search query retrieved nothing has no rows (and a warning)."""

    schematic = {"label": "R2RSubQueryRetriever", "help_url": None}

    def __init__(self, retriever: pt.Transformer, *, k: float = RRF_K, num_results: int | None = 100):
        self.retriever = retriever
        self.k = k
        self.num_results = num_results

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.query_frame(inp, extra_columns=["query"])
        cols = ["qid", "query", "docno", "score", "rank", "sub_queries", "sub_query_ranks"]
        if len(inp) == 0:
            return pd.DataFrame(columns=cols)
        inp = inp.reset_index(drop=True)
        originals = inp["query_0"] if "query_0" in inp.columns else inp["query"]
        # each search query gets a qid of its own, so the retriever's lists cannot mix
        temp = [f"r2r-sq{i}" for i in range(len(inp))]
        owner = dict(zip(temp, inp["qid"].astype(str)))
        res = self.retriever(pd.DataFrame({"qid": temp, "query": inp["query"].tolist()}))
        lists = _ranked_lists(res) if len(res) else {}
        extra = _first_rows(
            [res.assign(qid=res["qid"].astype(str).map(owner))] if len(res) else [],
            {"qid", "docno", "query", "score", "rank", "docid"},
        )
        order: dict[Any, list[int]] = {}
        for i, qid in enumerate(inp["qid"]):
            order.setdefault(qid, []).append(i)
        rows: list[dict[str, Any]] = []
        for qid, idx in order.items():
            per_query = []
            for i in idx:
                found = [d for d, _ in lists.get(temp[i], [])]
                if not found:
                    warnings.warn(
                        f"query {str(qid)!r}: search query {inp['query'][i]!r} retrieved nothing",
                        stacklevel=2,
                    )
                per_query.append((inp["query"][i], found))
            fused = reciprocal_rank_fusion(per_query, k=self.k, top_k=self.num_results)
            if not fused:
                warnings.warn(f"query {str(qid)!r}: no search query retrieved anything", stacklevel=2)
            rows.extend(_fused_rows(qid, originals[idx[0]], fused, extra, "sub_queries", "sub_query_ranks"))
        out = pd.DataFrame(rows)
        return out if len(out) else pd.DataFrame(columns=cols)

    def __repr__(self) -> str:
        return f"R2RSubQueryRetriever({self.retriever!r}, k={self.k})"


class R2RFusion(pt.Transformer):
    """Hybrid retrieval: run each of ``retrievers`` on the same topics and fuse per qid, ``method="rrf"``
    (``k``) or ``"linear"`` (min-max normalised scores, ``weights``). ``names`` label the retrievers (default
    their repr); ``found_by`` lists the retrievers that found each document, ``found_ranks`` their ranks."""

    schematic = {"label": "R2RFusion", "help_url": None}

    def __init__(
        self,
        retrievers: Sequence[pt.Transformer],
        *,
        method: str = "rrf",
        names: Sequence[str] | None = None,
        weights: Sequence[float] | None = None,
        k: float = RRF_K,
        num_results: int | None = 1000,
    ):
        if method not in ("rrf", "linear"):
            raise ValueError(f"method must be 'rrf' or 'linear', got {method!r}")
        if len(retrievers) < 2:
            raise ValueError("R2RFusion fuses two retrievers or more")
        self.retrievers = list(retrievers)
        self.names = list(names) if names is not None else [repr(r) for r in retrievers]
        if len(self.names) != len(self.retrievers):
            raise ValueError(f"{len(self.names)} names for {len(self.retrievers)} retrievers")
        if weights is not None and method == "rrf":
            raise ValueError("weights apply to method='linear' only")
        self.method, self.weights, self.k, self.num_results = method, weights, k, num_results

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        pt.validate.query_frame(inp, extra_columns=["query"])
        cols = ["qid", "query", "docno", "score", "rank", "found_by", "found_ranks"]
        if len(inp) == 0:
            return pd.DataFrame(columns=cols)
        frames = [r(inp) for r in self.retrievers]
        lists = [_ranked_lists(f) if len(f) else {} for f in frames]
        extra = _first_rows(
            [f for f in frames if len(f)], {"qid", "docno", "query", "score", "rank", "docid"}
        )
        rows: list[dict[str, Any]] = []
        for qid, query in zip(inp["qid"], inp["query"]):
            per = [(n, lst.get(str(qid), [])) for n, lst in zip(self.names, lists)]
            if self.method == "rrf":
                fused = reciprocal_rank_fusion(
                    [(n, [d for d, _ in p]) for n, p in per], k=self.k, top_k=self.num_results
                )
            else:
                fused = linear_fusion(per, weights=self.weights, top_k=self.num_results)
            rows.extend(_fused_rows(qid, query, fused, extra, "found_by", "found_ranks"))
        out = pd.DataFrame(rows)
        return out if len(out) else pd.DataFrame(columns=cols)

    def __repr__(self) -> str:
        return f"R2RFusion({self.method}, {self.names})"


class R2RAnswerer(pt.Transformer):
    """A result frame (qid, query, docno, text, rank) → one row per qid in pyterrier-rag's data model:
    ``qid``, ``query``, ``qanswer`` (the answer, citation markers [i] kept), plus ``citations`` (the cited
    docnos, only ever documents of the prompt), ``context_docnos`` (the documents of the prompt, numbered from
    1), ``reasoning`` (the chain of thought), ``invalid_citations`` (numbers the LLM cited that named no
    document, removed from the answer) and, when the input has ``sub_queries``, ``provenance`` ({cited docno:
    the search queries that found it}). The top ``num_docs`` documents by rank go into the prompt."""

    schematic = {"label": "R2RAnswerer", "help_url": None}

    def __init__(self, llm: Any, *, num_docs: int = 5, text_field: str = "text", title_field: str | None = None,
                 **kwargs: Any):  # fmt: skip
        self.answerer = CitingAnswerer(llm, num_docs=num_docs, **kwargs)
        self.text_field, self.title_field = text_field, title_field

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        cols = ["qid", "query", "qanswer", "citations", "context_docnos", "reasoning", "invalid_citations"]
        if len(inp) == 0:
            return pd.DataFrame(columns=cols)
        pt.validate.result_frame(inp, extra_columns=["query", self.text_field])
        inp = inp.sort_values(["qid", "rank"] if "rank" in inp.columns else ["qid", "score"],
                              ascending=[True, "rank" in inp.columns], kind="stable")  # fmt: skip
        title = self.title_field if self.title_field in inp.columns else None
        items, _ = frame_to_items(inp, self.text_field, title, dedupe=True)
        answers = self.answerer.answer_batch([(q.text, docs) for q, docs in items])
        prov: dict[tuple[str, str], list[str]] = {}
        if "sub_queries" in inp.columns:
            for qid, docno, subs in zip(inp["qid"], inp["docno"], inp["sub_queries"]):
                prov.setdefault((str(qid), str(docno)), list(subs))
        first_qid = dict(zip(inp["qid"].astype(str), inp["qid"]))
        rows = []
        for (q, _), a in zip(items, answers):
            row = {"qid": first_qid[q.id], "query": q.text, "qanswer": a.answer, "citations": list(a.citations),
                   "context_docnos": list(a.doc_ids), "reasoning": a.reasoning, "invalid_citations": list(a.invalid)}  # fmt: skip
            if prov:
                row["provenance"] = {d: prov.get((q.id, d), []) for d in a.citations}
            if a.error is not None:
                warnings.warn(f"query {q.id!r}: the answer could not be generated ({a.error})", stacklevel=2)
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        return f"R2RAnswerer({self.answerer.llm.name!r}, num_docs={self.answerer.num_docs})"
