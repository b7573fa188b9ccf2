"""Candidate lists: rank_llm JSON (``[{"query": str, "hits": [{"qid", "docid", "content", "rank", "score"}]}]``,
or the same objects one per line), runs joined with topics and documents, and ``load_candidates`` (what a
command line gets).

Candidate lists carry the first-stage retrieval score and 1-based rank in ``Doc.meta`` as
``first_stage_score`` and ``first_stage_rank``. A hit whose text is ``null`` keeps ``Doc.text = None`` (the
core ranks it last, with one warning, see ``reason2rank.reranker``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from reason2rank.data.docs import lookup_docs, read_docs_jsonl
from reason2rank.data.io import PathLike, file_error, read_text, require_file, write_text
from reason2rank.data.irds import DocsLookup, dataset_id, dataset_topics, open_dataset
from reason2rank.data.topics import read_topics
from reason2rank.data.trec import read_trec_run
from reason2rank.messages import listing
from reason2rank.types import Doc, Query, ScoredDoc, clean_text, text_or_none

__all__ = [
    "FIRST_STAGE_RANK",
    "FIRST_STAGE_SCORE",
    "candidates_from_run",
    "check_depth",
    "load_candidates",
    "read_rankllm_candidates",
    "write_rankllm_candidates",
]

FIRST_STAGE_SCORE = "first_stage_score"
FIRST_STAGE_RANK = "first_stage_rank"
_EXPLANATION_KEYS = ("reasoning", "comparison", "evidence")  # ScoredDoc fields written when set


def read_rankllm_candidates(path: PathLike) -> list[tuple[Query, list[Doc]]]:
    """Read rank_llm candidates (a JSON list, or JSONL with one object per line) as (Query, docs) pairs.

    Each object is ``{"query": str, "hits": [{"qid", "docid", "content", "rank", "score"}, ...]}``; the
    newer ``{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc": {...}}]}`` form is accepted
    too. The query id is the top-level ``qid`` or the query's own ``qid``, else the first hit's ``qid``.
    Hits are ordered by ``rank`` (input order where absent); ``score`` and ``rank`` are kept in
    ``Doc.meta`` as ``first_stage_score`` / ``first_stage_rank``, other hit keys in ``Doc.meta`` as they are.
    """
    text = read_text(path)
    records: list[tuple[int | None, Any]]
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("[") or e.msg != "Extra data":
            raise file_error(path, e.lineno, f"invalid JSON: {e.msg}") from None
        records = []
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e2:
                raise file_error(path, lineno, f"invalid JSON: {e2.msg}") from None
    else:
        if isinstance(loaded, dict):
            records = [(None, loaded)]
        elif isinstance(loaded, list):
            records = [(None, record) for record in loaded]
        else:
            raise file_error(
                path, None, f"expected a JSON list of query objects, got {type(loaded).__name__}"
            )
    items: list[tuple[Query, list[Doc]]] = []
    for index, (record_line, record) in enumerate(records):
        try:
            items.append(_candidates_from_record(record))
        except (ValueError, TypeError, KeyError) as e:
            where = "" if record_line is not None else f"item {index}: "
            raise file_error(path, record_line, f"{where}{e}") from None
    return items


def _candidates_from_record(record: Any) -> tuple[Query, list[Doc]]:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    if "query" not in record:
        raise ValueError(f"no 'query' key; keys were {sorted(record)}")
    query = record["query"]
    qid = record.get("qid")
    if isinstance(query, dict):
        if qid is None:
            qid = query.get("qid")
        query_text = query.get("text")
    else:
        query_text = query
    if isinstance(query_text, list):  # some rank_llm versions store the text as a list of strings
        query_text = " ".join(str(t) for t in query_text)
    hits = record.get("hits", record.get("candidates"))
    if hits is None:
        raise ValueError(f"no 'hits' (or 'candidates') list; keys were {sorted(record)}")
    if not isinstance(hits, list):
        raise ValueError(f"'hits' must be a list, got {type(hits).__name__}")
    if qid is None:
        if not hits or not isinstance(hits[0], dict) or hits[0].get("qid") is None:
            raise ValueError("no query id: give a top-level 'qid' or a 'qid' in the hits")
        qid = hits[0]["qid"]
    qid = str(qid)
    if not isinstance(query_text, str):
        raise ValueError(f"query {qid!r}: the query text must be a string, got {query_text!r}")
    order = []
    for position, hit in enumerate(hits):
        if not isinstance(hit, dict):
            raise ValueError(f"query {qid!r}: hit {position} is not an object")
        rank = hit.get("rank")
        if rank is not None and not isinstance(rank, (int, float)):
            raise ValueError(f"query {qid!r}: hit {position} has a non-numeric rank {rank!r}")
        order.append((math.inf if rank is None else rank, position, hit))
    order.sort(key=lambda t: (t[0], t[1]))
    docs: list[Doc] = []
    seen: set[str] = set()
    for _rank, position, hit in order:
        doc = _doc_from_hit(hit, qid, position)
        if doc.id in seen:
            raise ValueError(f"query {qid!r}: document {doc.id!r} is listed twice")
        seen.add(doc.id)
        docs.append(doc)
    return Query(id=qid, text=query_text), docs


def _doc_from_hit(hit: Mapping[str, Any], qid: str, position: int) -> Doc:
    if hit.get("docid") is None:
        raise ValueError(f"query {qid!r}: hit {position} has no 'docid'")
    docid = str(hit["docid"])
    meta: dict[str, Any] = {}
    title = hit.get("title")
    if "content" in hit:
        text = text_or_none(hit["content"])
    elif isinstance(hit.get("doc"), dict):
        body = hit["doc"]
        text_key = next((k for k in ("contents", "text", "segment", "body", "content") if k in body), None)
        text = text_or_none(body[text_key]) if text_key else None
        if title is None:
            title = body.get("title")
        meta.update((k, v) for k, v in body.items() if k not in (text_key, "title"))
    elif "text" in hit:
        text = text_or_none(hit["text"])
    else:
        raise ValueError(f"query {qid!r}: hit {docid!r} has no 'content'")
    reserved = {"qid", "docid", "content", "doc", "text", "title", "rank", "score"}
    meta.update((k, v) for k, v in hit.items() if k not in reserved)
    if hit.get("score") is not None:
        meta[FIRST_STAGE_SCORE] = float(hit["score"])
    if hit.get("rank") is not None:
        meta[FIRST_STAGE_RANK] = hit["rank"]
    return Doc(id=docid, text=text, title=clean_text(title)[0] if title is not None else None, meta=meta)


def write_rankllm_candidates(
    path: PathLike, items: Iterable[tuple[Query, Sequence[Doc] | Sequence[ScoredDoc]]]
) -> None:
    """Write (Query, docs) pairs as rank_llm JSON (a list), atomically; ``*.jsonl`` names get JSONL.

    For ``ScoredDoc`` lists the hits are written in rank order with ``rank = ScoredDoc.rank + 1`` and the
    reranker's score, plus ``reasoning``/``comparison``/``evidence`` when set (so the file's rank/score are the reranker's;
    the earlier first-stage values are not repeated). For ``Doc`` lists, ``rank`` and ``score`` are
    the first-stage values from ``Doc.meta`` (rank defaults to position + 1; score is omitted when unknown).
    The query id is written both as a top-level ``qid`` and in every hit; a title goes in ``title``; other
    ``Doc.meta`` keys are written as extra hit keys.
    """
    records = []
    for query, docs in items:
        hits = []
        scored = [d for d in docs if isinstance(d, ScoredDoc)]
        if docs and len(scored) == len(docs):
            for sd in sorted(scored, key=lambda sd: sd.rank):
                hit = _hit_from_doc(query.id, sd.doc, rank=sd.rank + 1, score=float(sd.score))
                for key in _EXPLANATION_KEYS:
                    value = getattr(sd, key, None)
                    if value is not None:
                        hit[key] = value
                hits.append(hit)
        else:
            for position, doc in enumerate(docs):
                if not isinstance(doc, Doc):
                    raise TypeError(
                        f"query {query.id!r}: expected Doc or ScoredDoc objects (not mixed), got {type(doc).__name__}"
                    )
                rank = doc.meta.get(FIRST_STAGE_RANK, position + 1)
                score = doc.meta.get(FIRST_STAGE_SCORE)
                hits.append(_hit_from_doc(query.id, doc, rank=rank, score=score))
        records.append({"query": query.text, "qid": query.id, "hits": hits})
    try:  # serialise first: an unserialisable meta value must not cost the existing file
        if str(path).removesuffix(".gz").endswith(".jsonl"):
            payload = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        else:
            payload = json.dumps(records, ensure_ascii=False, indent=2) + "\n"
    except (TypeError, ValueError) as e:
        raise ValueError(f"cannot write {path}: Doc.meta values must be JSON-serialisable ({e})") from None
    with write_text(path) as fh:
        fh.write(payload)


def _hit_from_doc(qid: str, doc: Doc, *, rank: Any, score: Any) -> dict[str, Any]:
    hit: dict[str, Any] = {"content": doc.text, "qid": qid, "docid": doc.id, "rank": rank}
    if score is not None:
        hit["score"] = score
    if doc.title is not None:
        hit["title"] = doc.title
    for key, value in doc.meta.items():
        if key in hit or key in ("doc", "text", FIRST_STAGE_SCORE, FIRST_STAGE_RANK, *_EXPLANATION_KEYS):
            continue
        hit[key] = value
    return hit


def candidates_from_run(
    run: Mapping[str, Sequence[tuple[str, float]]],
    topics: Mapping[str, str],
    docs: Mapping[str, Doc | str] | Callable[[str], Doc | None],
    depth: int | None = None,
) -> list[tuple[Query, list[Doc]]]:
    """Join a run with query and document texts into (Query, docs) pairs, in the run's query order.

    ``docs`` is a mapping docid -> ``Doc`` (or plain text), an object with ``get_many(ids)`` (such as the
    lookup from ``load_ir_dataset``), or a callable docid -> ``Doc`` (returning ``None`` or raising
    ``KeyError`` when missing). ``depth`` keeps the top ``depth`` documents per query. Each ``Doc.meta``
    gets the run's score and 1-based rank as ``first_stage_score`` / ``first_stage_rank``. Queries or
    documents that cannot be found raise ``ValueError`` listing (up to five of) their ids.
    """
    check_depth(depth)
    trimmed = {
        str(qid): list(ranked)[:depth] if depth is not None else list(ranked) for qid, ranked in run.items()
    }
    missing_topics = [qid for qid in trimmed if qid not in topics]
    if missing_topics:
        raise ValueError(
            f"{len(missing_topics)} run queries have no topic text: {listing(missing_topics)}; supply a topics "
            "file (TSV qid<TAB>text, BEIR queries JSONL or TREC topics) that contains them"
        )
    wanted = list(dict.fromkeys(str(docid) for ranked in trimmed.values() for docid, _score in ranked))
    found = lookup_docs(docs, wanted)
    missing_docs = [docid for docid in wanted if docid not in found]
    if missing_docs:
        raise ValueError(
            f"{len(missing_docs)} run documents have no text: {listing(missing_docs)}; supply a documents "
            "JSONL file (or ir_datasets id) whose corpus contains them"
        )
    items = []
    for qid, ranked in trimmed.items():
        query = Query(id=qid, text=topics[qid])
        candidates = []
        for position, (docid, score) in enumerate(ranked):
            doc = found[str(docid)]
            meta = {**doc.meta, FIRST_STAGE_SCORE: float(score), FIRST_STAGE_RANK: position + 1}
            candidates.append(dataclasses.replace(doc, meta=meta))
        items.append((query, candidates))
    return items


def check_depth(depth: int | None) -> None:
    """``ValueError`` unless ``depth`` is a positive integer or ``None``."""
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be a positive integer or None, got {depth!r}")


def load_candidates(
    candidates: PathLike | None = None,
    *,
    topics: PathLike | None = None,
    run: PathLike | None = None,
    docs: PathLike | None = None,
    depth: int | None = None,
) -> list[tuple[Query, list[Doc]]]:
    """Load (Query, docs) pairs for reranking, as a command line gets them.

    Either ``candidates`` (a rank_llm JSON/JSONL file) or ``run`` with ``topics`` and ``docs``: ``run`` a TREC
    run file, ``topics`` a topics file (see ``read_topics``), ``docs`` a JSONL corpus. A string that is not
    an existing file and contains a ``/`` is taken as an ir_datasets id (needs ``reason2rank[datasets]``):
    as ``run`` it gives the dataset's scored documents, as ``topics`` its queries, as ``docs`` its
    documents; topics and docs default to those of the ``run``/``topics`` dataset when left out.
    ``depth`` keeps the top ``depth`` candidates per query.
    """
    check_depth(depth)
    if candidates is not None:
        if any(x is not None for x in (topics, run, docs)):
            raise ValueError("give either a candidates file or run + topics + docs, not both")
        require_file(candidates, "candidates")
        items = read_rankllm_candidates(candidates)
        return [(query, list(docs_)[:depth]) for query, docs_ in items] if depth else items
    if run is None:
        raise ValueError(
            "nothing to rerank: give a candidates file (rank_llm JSON/JSONL) or a run with topics and docs"
        )

    datasets: dict[str, Any] = {}

    def dataset(dataset_id: str) -> Any:
        if dataset_id not in datasets:
            datasets[dataset_id] = open_dataset(dataset_id)
        return datasets[dataset_id]

    run_id = dataset_id(run, "run")
    topics_id = dataset_id(topics, "topics") if topics is not None else None
    docs_id = dataset_id(docs, "docs") if docs is not None else None

    if run_id is not None:
        ds = dataset(run_id)
        if not ds.has_scoreddocs():
            raise ValueError(
                f"ir_datasets {run_id!r} has no scored documents to use as a run; give a TREC run file"
            )
        run_dict: dict[str, list[tuple[str, float]]] = {}
        for sd in ds.scoreddocs_iter():
            run_dict.setdefault(str(sd.query_id), []).append((str(sd.doc_id), float(sd.score)))
        for ranked in run_dict.values():
            ranked.sort(key=lambda pair: -pair[1])
    else:
        run_dict = read_trec_run(run)

    default_id = topics_id or run_id
    if topics is None:
        if default_id is None:
            raise ValueError("a run file needs topics: give a topics file or an ir_datasets id")
        topics_dict = dataset_topics(dataset(default_id), default_id)
    elif topics_id is not None:
        topics_dict = dataset_topics(dataset(topics_id), topics_id)
    else:
        topics_dict = read_topics(topics)

    docs_source: Any
    if docs is None:
        if default_id is None:
            raise ValueError("a run file needs documents: give a JSONL corpus or an ir_datasets id")
        docs_source = DocsLookup(dataset(default_id), default_id)
    elif docs_id is not None:
        docs_source = DocsLookup(dataset(docs_id), docs_id)
    else:
        docs_source = read_docs_jsonl(docs)
    return candidates_from_run(run_dict, topics_dict, docs_source, depth=depth)
