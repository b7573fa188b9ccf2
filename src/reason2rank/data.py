"""Reading and writing the IR files a reranking run needs: runs, qrels, topics, documents, candidates.

Formats:

* TREC run: ``qid Q0 docid rank score tag`` (whitespace-separated, rank 1-based in files);
* qrels: ``qid 0 docid rel`` (TREC) or BEIR's ``query-id<TAB>corpus-id<TAB>score`` with an optional header;
* topics: ``qid<TAB>text`` TSV, BEIR queries JSONL (``{"_id", "text"}``) or TREC ``<top>`` SGML files;
* documents: JSONL, one object per line (BEIR corpus, Pyserini ``{"id", "contents"}``, ...);
* candidates: rank_llm JSON (``[{"query": str, "hits": [{"qid", "docid", "content", "rank", "score"}]}]``),
  or the same objects one per line (JSONL).

Every reader accepts ``str`` or ``pathlib.Path`` and reads ``*.gz`` transparently; every writer writes
atomically (no partial file is ever left behind) and gzip-compresses when the name ends in ``.gz``.
Text is UTF-8; undecodable bytes become U+FFFD, and mojibake already in a collection's text (``Â¼`` in
MS MARCO) is kept exactly. Malformed input raises ``ValueError`` naming the file and the line.

Candidate lists carry the first-stage retrieval score and 1-based rank in ``Doc.meta`` as
``first_stage_score`` and ``first_stage_rank``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from reason2rank.types import Doc, Query, ScoredDoc, clean_text

__all__ = [
    "IRDataset",
    "atomic_write",
    "candidates_from_run",
    "load_candidates",
    "load_ir_dataset",
    "read_docs_jsonl",
    "read_qrels",
    "read_rankllm_candidates",
    "read_topics",
    "read_trec_run",
    "write_qrels",
    "write_rankllm_candidates",
    "write_trec_run",
]

PathLike = str | os.PathLike

FIRST_STAGE_SCORE = "first_stage_score"
FIRST_STAGE_RANK = "first_stage_rank"

_DOC_ID_KEYS = ("_id", "docid", "docno", "id", "doc_id")
_DOC_TEXT_KEYS = ("text", "contents", "body", "content")
_QUERY_ID_KEYS = ("_id", "qid", "query_id", "id")
_QUERY_TEXT_KEYS = ("text", "query")
_TOPIC_HEADER_IDS = {"qid", "query_id", "query-id", "queryid", "id", "_id", "topic", "topic_id", "number"}
_EXPLANATION_KEYS = ("reasoning", "comparison", "evidence")  # ScoredDoc fields written when set
_MAX_LISTED = 5
_DATASETS_HINT = "pip install 'reason2rank[datasets]'"


# --------------------------------------------------------------------------------------------- file helpers


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; move it onto ``path`` only on success.

    ``mode`` is ``"w"``/``"wt"`` (text, ``encoding``) or ``"wb"`` (bytes). If the ``with`` block raises,
    the temporary file is removed and an existing ``path`` is left untouched. The new file gets the
    permissions an ordinary ``open`` would give it (or those of the file it replaces). No compression is
    applied here, whatever the name.
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_write supports modes 'w', 'wt' and 'wb', not {mode!r}")
    path = Path(path)
    directory = path.parent
    tmp = directory / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    # O_EXCL with 0o666 honours the umask, unlike tempfile's 0o600.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        if "b" in mode:
            fh: IO[Any] = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline="")
    except BaseException:
        os.close(fd)
        _remove_quietly(tmp)
        raise
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(OSError):
            if path.exists():
                os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def _write_text(path: PathLike) -> Iterator[IO[str]]:
    """Atomic UTF-8 text writer, gzip-compressed when the name ends in ``.gz``."""
    if str(path).endswith(".gz"):
        with atomic_write(path, "wb") as raw:
            gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
            with gz, io.TextIOWrapper(gz, encoding="utf-8", newline="") as text:
                yield text
    else:
        with atomic_write(path, "w", encoding="utf-8") as text:
            yield text


def _open_text(path: PathLike) -> IO[str]:
    """Open for reading as UTF-8 (BOM dropped, bad bytes replaced), gunzipping ``*.gz``."""
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
    return open(path, encoding="utf-8-sig", errors="replace")


def _read_text(path: PathLike) -> str:
    with _open_text(path) as fh:
        return fh.read()


def _iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline); splits on newlines only (not U+2028 and such)."""
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            yield lineno, line.rstrip("\n")


def iter_json_objects(path: PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file; ``ValueError`` naming the line on
    invalid JSON or a line that is not an object."""
    for lineno, line in _iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(path, lineno, f"invalid JSON: {e.msg}") from None
        if not isinstance(obj, dict):
            raise _fail(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def _fail(path: PathLike, lineno: int | None, message: str) -> ValueError:
    where = f"{path}, line {lineno}" if lineno is not None else str(path)
    return ValueError(f"{where}: {message}")


def _check_field(value: str, what: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError(
            f"{what} {value!r} cannot be written to a whitespace-separated file (empty or has spaces)"
        )
    return value


def _format_score(score: float) -> str:
    return repr(float(score))


def _listing(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_LISTED])
    more = f" and {len(ids) - _MAX_LISTED} more" if len(ids) > _MAX_LISTED else ""
    return f"{shown}{more}"


# --------------------------------------------------------------------------------------------- TREC runs


def read_trec_run(path: PathLike) -> dict[str, list[tuple[str, float]]]:
    """Read a TREC run: per qid (in first-seen order) the (docid, score) pairs ordered by rank.

    Ties in rank are broken by descending score; the rank itself is used only for ordering. Blank lines
    are skipped. A line without exactly six fields, a non-integer rank, a non-numeric score or a docid
    listed twice for one query raises ``ValueError`` naming the file and line.
    """
    rows: dict[str, list[tuple[int, float, str]]] = {}
    seen: dict[str, dict[str, int]] = {}
    for lineno, line in _iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise _fail(
                path, lineno, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}: {line!r}"
            )
        qid, _q0, docid, rank_s, score_s, _tag = fields
        try:
            rank = int(rank_s)
        except ValueError:
            raise _fail(path, lineno, f"rank {rank_s!r} is not an integer") from None
        try:
            score = float(score_s)
        except ValueError:
            raise _fail(path, lineno, f"score {score_s!r} is not a number") from None
        docs_seen = seen.setdefault(qid, {})
        if docid in docs_seen:
            raise _fail(
                path,
                lineno,
                f"document {docid!r} appears twice for query {qid!r} (first on line {docs_seen[docid]})",
            )
        docs_seen[docid] = lineno
        rows.setdefault(qid, []).append((rank, score, docid))
    run: dict[str, list[tuple[str, float]]] = {}
    for qid, entries in rows.items():
        entries.sort(key=lambda e: (e[0], -e[1]))
        run[qid] = [(docid, score) for _rank, score, docid in entries]
    return run


def write_trec_run(
    path: PathLike,
    results: Mapping[str, Sequence[ScoredDoc] | Sequence[tuple[str, float]]],
    tag: str = "reason2rank",
) -> None:
    """Write ``qid Q0 docid rank score tag`` lines, atomically.

    ``results`` maps qid to ``ScoredDoc`` objects (written with rank ``ScoredDoc.rank + 1``, in rank order)
    or to ``(docid, score)`` pairs (rank = position + 1, in the order given). Ids and the tag must be
    non-empty and contain no whitespace.
    """
    _check_field(tag, "run tag")
    lines: list[str] = []
    for qid, items in results.items():
        qid = _check_field(str(qid), "query id")
        if items and all(isinstance(item, ScoredDoc) for item in items):
            rows = [(sd.doc.id, sd.score, sd.rank + 1) for sd in sorted(items, key=lambda sd: sd.rank)]
        else:
            rows = []
            for position, item in enumerate(items):
                if isinstance(item, ScoredDoc):
                    raise ValueError(f"query {qid!r}: do not mix ScoredDoc objects and (docid, score) pairs")
                try:
                    docid, score = item
                except (TypeError, ValueError):
                    raise ValueError(
                        f"query {qid!r}, item {position}: expected a ScoredDoc or a (docid, score) pair, got {item!r}"
                    ) from None
                if isinstance(docid, Doc):
                    docid = docid.id
                rows.append((docid, score, position + 1))
        for docid, score, rank in rows:
            docid = _check_field(str(docid), f"document id (query {qid!r})")
            lines.append(f"{qid} Q0 {docid} {rank} {_format_score(score)} {tag}\n")
    with _write_text(path) as fh:
        fh.writelines(lines)


# --------------------------------------------------------------------------------------------- qrels


def read_qrels(path: PathLike) -> dict[str, dict[str, int]]:
    """Read qrels: ``qid 0 docid rel`` (TREC) or ``query-id corpus-id score`` (BEIR TSV, header optional).

    Returns qid -> {docid: relevance}; a later line for the same pair overrides an earlier one.
    """
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for lineno, line in _iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        is_first, first = first, False
        if len(fields) == 4:
            qid, _iteration, docid, rel_s = fields
        elif len(fields) == 3:
            qid, docid, rel_s = fields
        else:
            raise _fail(
                path,
                lineno,
                f"expected 'qid 0 docid rel' or 'query-id corpus-id score', got {len(fields)} fields",
            )
        rel = _parse_relevance(rel_s)
        if rel is None:
            if is_first:  # a header such as "query-id corpus-id score"
                continue
            raise _fail(path, lineno, f"relevance {rel_s!r} is not an integer")
        qrels.setdefault(qid, {})[docid] = rel
    return qrels


def _parse_relevance(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def write_qrels(path: PathLike, qrels: Mapping[str, Mapping[str, int]]) -> None:
    """Write TREC qrels (``qid 0 docid rel``), atomically."""
    lines: list[str] = []
    for qid, judged in qrels.items():
        qid = _check_field(str(qid), "query id")
        for docid, rel in judged.items():
            docid = _check_field(str(docid), f"document id (query {qid!r})")
            lines.append(f"{qid} 0 {docid} {int(rel)}\n")
    with _write_text(path) as fh:
        fh.writelines(lines)


# --------------------------------------------------------------------------------------------- topics

_TOP_RE = re.compile(r"<top>(.*?)(?:</top>|(?=<top>)|\Z)", re.IGNORECASE | re.DOTALL)
_NUM_RE = re.compile(r"<num>\s*(?:Number\s*:)?\s*([^\s<]+)", re.IGNORECASE)
_TITLE_RE = re.compile(r"<title>\s*(?:Topic\s*:)?(.*?)(?=<|\Z)", re.IGNORECASE | re.DOTALL)
_TOPIC_RE = re.compile(r"<topic\b([^>]*)>(.*?)</topic>", re.IGNORECASE | re.DOTALL)
_NUMBER_ATTR_RE = re.compile(r"""\bnumber\s*=\s*["']?([^"'\s>]+)""", re.IGNORECASE)
_QUERY_TAG_RE = re.compile(r"<(query|title)>(.*?)</\1>", re.IGNORECASE | re.DOTALL)


def read_topics(path: PathLike) -> dict[str, str]:
    """Read topics as qid -> query text; the format is decided by the content.

    * ``<top> <num> ... <title> ...`` (TREC SGML; the title is the query) or
      ``<topic number="..."><query>...</query>`` (TREC web-track XML);
    * JSON lines (BEIR queries: ``{"_id", "text"}``; also ``qid``/``query_id``/``id`` and ``query``) or a
      JSON array of such objects;
    * otherwise TSV ``qid<TAB>text`` (a header line such as ``qid<TAB>query`` is skipped).
    """
    text = _read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return _topics_from_jsonl(path, text)
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise _fail(path, e.lineno, f"invalid JSON: {e.msg}") from None
        if not isinstance(records, list):
            raise _fail(path, None, "expected a JSON list of query objects")
        topics: dict[str, str] = {}
        for index, record in enumerate(records):
            _add_topic(path, None, topics, *_topic_from_record(path, None, record, f"item {index}: "))
        return topics
    if stripped.startswith("<"):
        if re.search(r"<top>", text, re.IGNORECASE):
            return _topics_from_sgml(path, text)
        if re.search(r"<topic\b", text, re.IGNORECASE):
            return _topics_from_xml(path, text)
        raise _fail(path, None, "looks like markup but has no TREC <top> or <topic> elements")
    return _topics_from_tsv(path, text)


def _add_topic(path: PathLike, lineno: int | None, topics: dict[str, str], qid: str, query: str) -> None:
    if not query.strip():
        raise _fail(path, lineno, f"topic {qid!r} has an empty text")
    if qid in topics and topics[qid] != query:
        raise _fail(path, lineno, f"topic {qid!r} is given twice with different texts")
    topics[qid] = query


def _topic_from_record(path: PathLike, lineno: int | None, record: Any, prefix: str = "") -> tuple[str, str]:
    if not isinstance(record, dict):
        raise _fail(path, lineno, f"{prefix}expected a JSON object, got {type(record).__name__}")
    qid = next((record[k] for k in _QUERY_ID_KEYS if record.get(k) is not None), None)
    query = next((record[k] for k in _QUERY_TEXT_KEYS if record.get(k) is not None), None)
    if qid is None or query is None:
        raise _fail(
            path,
            lineno,
            f"{prefix}a query object needs an id ({'/'.join(_QUERY_ID_KEYS)}) and a text "
            f"({'/'.join(_QUERY_TEXT_KEYS)}); keys were {sorted(record)}",
        )
    return str(qid), clean_text(query)[0]


def _topics_from_jsonl(path: PathLike, text: str) -> dict[str, str]:
    topics: dict[str, str] = {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise _fail(path, lineno, f"invalid JSON: {e.msg}") from None
        _add_topic(path, lineno, topics, *_topic_from_record(path, lineno, record))
    return topics


def _topics_from_tsv(path: PathLike, text: str) -> dict[str, str]:
    topics: dict[str, str] = {}
    first = True
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        is_first, first = first, False
        if "\t" not in line:
            raise _fail(path, lineno, f"expected 'qid<TAB>text' (or a JSONL / TREC topic file), got {line!r}")
        qid, query = line.split("\t", 1)
        qid = qid.strip()
        if is_first and qid.lower() in _TOPIC_HEADER_IDS:
            continue
        if not qid:
            raise _fail(path, lineno, "empty query id")
        _add_topic(path, lineno, topics, qid, query.strip())
    return topics


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _topics_from_sgml(path: PathLike, text: str) -> dict[str, str]:
    topics: dict[str, str] = {}
    for match in _TOP_RE.finditer(text):
        block = match.group(1)
        lineno = _line_of(text, match.start())
        num = _NUM_RE.search(block)
        title = _TITLE_RE.search(block)
        if num is None or title is None:
            raise _fail(path, lineno, "a <top> block needs both <num> and <title>")
        _add_topic(path, lineno, topics, num.group(1), " ".join(title.group(1).split()))
    return topics


def _topics_from_xml(path: PathLike, text: str) -> dict[str, str]:
    topics: dict[str, str] = {}
    for match in _TOPIC_RE.finditer(text):
        lineno = _line_of(text, match.start())
        number = _NUMBER_ATTR_RE.search(match.group(1))
        query = _QUERY_TAG_RE.search(match.group(2))
        if number is None or query is None:
            raise _fail(path, lineno, 'a <topic> needs a number="..." attribute and a <query> or <title>')
        _add_topic(path, lineno, topics, number.group(1), " ".join(query.group(2).split()))
    return topics


# --------------------------------------------------------------------------------------------- documents


def read_docs_jsonl(path: PathLike) -> dict[str, Doc]:
    """Read a JSONL corpus into docid -> ``Doc``.

    The id comes from the first of ``_id``, ``docid``, ``docno``, ``id``, ``doc_id``; the text from the first
    of ``text``, ``contents``, ``body``, ``content`` (a null text is read as empty); ``title`` is optional;
    every other key goes into ``Doc.meta``. A duplicate id raises ``ValueError``.
    """
    docs: dict[str, Doc] = {}
    lines: dict[str, int] = {}
    for lineno, record in iter_json_objects(path):
        try:
            doc = _doc_from_record(record)
        except ValueError as e:
            raise _fail(path, lineno, str(e)) from None
        if doc.id in docs:
            raise _fail(path, lineno, f"document id {doc.id!r} already used on line {lines[doc.id]}")
        docs[doc.id] = doc
        lines[doc.id] = lineno
    return docs


def _doc_from_record(record: Mapping[str, Any]) -> Doc:
    id_key = next((k for k in _DOC_ID_KEYS if record.get(k) is not None), None)
    if id_key is None:
        raise ValueError(f"no document id (one of {', '.join(_DOC_ID_KEYS)}); keys were {sorted(record)}")
    text_key = next((k for k in _DOC_TEXT_KEYS if k in record), None)
    if text_key is None and record.get("title") is None:
        raise ValueError(f"no document text (one of {', '.join(_DOC_TEXT_KEYS)}); keys were {sorted(record)}")
    text = clean_text(record[text_key])[0] if text_key else ""
    title = record.get("title")
    title = clean_text(title)[0] if title is not None else None
    meta = {k: v for k, v in record.items() if k not in (id_key, text_key, "title")}
    return Doc(id=str(record[id_key]), text=text, title=title, meta=meta)


# --------------------------------------------------------------------------------------------- candidates


def read_rankllm_candidates(path: PathLike) -> list[tuple[Query, list[Doc]]]:
    """Read rank_llm candidates (a JSON list, or JSONL with one object per line) as (Query, docs) pairs.

    Each object is ``{"query": str, "hits": [{"qid", "docid", "content", "rank", "score"}, ...]}``; the
    newer ``{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc": {...}}]}`` form is accepted
    too. The query id is the top-level ``qid`` or the query's own ``qid``, else the first hit's ``qid``.
    Hits are ordered by ``rank`` (input order where absent); ``score`` and ``rank`` are kept in
    ``Doc.meta`` as ``first_stage_score`` / ``first_stage_rank``, other hit keys in ``Doc.meta`` as they are.
    """
    text = _read_text(path)
    records: list[tuple[int | None, Any]]
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError as e:
        if text.lstrip().startswith("[") or e.msg != "Extra data":
            raise _fail(path, e.lineno, f"invalid JSON: {e.msg}") from None
        records = []
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e2:
                raise _fail(path, lineno, f"invalid JSON: {e2.msg}") from None
    else:
        if isinstance(loaded, dict):
            records = [(None, loaded)]
        elif isinstance(loaded, list):
            records = [(None, record) for record in loaded]
        else:
            raise _fail(path, None, f"expected a JSON list of query objects, got {type(loaded).__name__}")
    items = []
    for index, (lineno, record) in enumerate(records):
        try:
            items.append(_candidates_from_record(record))
        except (ValueError, TypeError, KeyError) as e:
            where = "" if lineno is not None else f"item {index}: "
            raise _fail(path, lineno, f"{where}{e}") from None
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
        text = clean_text(hit["content"])[0]
    elif isinstance(hit.get("doc"), dict):
        body = hit["doc"]
        text_key = next((k for k in ("contents", "text", "segment", "body", "content") if k in body), None)
        text = clean_text(body[text_key])[0] if text_key else ""
        if title is None:
            title = body.get("title")
        meta.update((k, v) for k, v in body.items() if k not in (text_key, "title"))
    elif "text" in hit:
        text = clean_text(hit["text"])[0]
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
        if docs and all(isinstance(d, ScoredDoc) for d in docs):
            for sd in sorted(docs, key=lambda sd: sd.rank):
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
    with _write_text(path) as fh:
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
    _check_depth(depth)
    trimmed = {
        str(qid): list(ranked)[:depth] if depth is not None else list(ranked) for qid, ranked in run.items()
    }
    missing_topics = [qid for qid in trimmed if qid not in topics]
    if missing_topics:
        raise ValueError(
            f"{len(missing_topics)} run queries have no topic text: {_listing(missing_topics)}; supply a topics "
            "file (TSV qid<TAB>text, BEIR queries JSONL or TREC topics) that contains them"
        )
    wanted = list(dict.fromkeys(str(docid) for ranked in trimmed.values() for docid, _score in ranked))
    found = _lookup_docs(docs, wanted)
    missing_docs = [docid for docid in wanted if docid not in found]
    if missing_docs:
        raise ValueError(
            f"{len(missing_docs)} run documents have no text: {_listing(missing_docs)}; supply a documents "
            "JSONL file (or ir_datasets id) whose corpus contains them"
        )
    items = []
    for qid, ranked in trimmed.items():
        query = Query(id=qid, text=topics[qid])
        candidates = []
        for position, (docid, score) in enumerate(ranked):
            doc = found[str(docid)]
            meta = {**doc.meta, FIRST_STAGE_SCORE: float(score), FIRST_STAGE_RANK: position + 1}
            candidates.append(Doc(id=doc.id, text=doc.text, title=doc.title, meta=meta))
        items.append((query, candidates))
    return items


def _lookup_docs(docs: Any, ids: list[str]) -> dict[str, Doc]:
    found: dict[str, Any] = {}
    if isinstance(docs, Mapping):
        found = {docid: docs[docid] for docid in ids if docid in docs}
    elif hasattr(docs, "get_many"):
        found = dict(docs.get_many(ids))
    elif callable(docs):
        for docid in ids:
            try:
                doc = docs(docid)
            except KeyError:
                doc = None
            if doc is not None:
                found[docid] = doc
    else:
        raise TypeError(f"docs must be a mapping docid -> Doc or a callable, got {type(docs).__name__}")
    result = {}
    for docid, doc in found.items():
        if isinstance(doc, Doc):
            result[docid] = doc
        elif doc is not None:
            result[docid] = Doc(id=docid, text=clean_text(doc)[0])
    return result


def _check_depth(depth: int | None) -> None:
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
    _check_depth(depth)
    if candidates is not None:
        if any(x is not None for x in (topics, run, docs)):
            raise ValueError("give either a candidates file or run + topics + docs, not both")
        _require_file(candidates, "candidates")
        items = read_rankllm_candidates(candidates)
        return [(query, list(docs_)[:depth]) for query, docs_ in items] if depth else items
    if run is None:
        raise ValueError(
            "nothing to rerank: give a candidates file (rank_llm JSON/JSONL) or a run with topics and docs"
        )

    datasets: dict[str, Any] = {}

    def dataset(dataset_id: str) -> Any:
        if dataset_id not in datasets:
            datasets[dataset_id] = _ir_datasets_load(dataset_id)
        return datasets[dataset_id]

    run_id = _dataset_id(run, "run")
    topics_id = _dataset_id(topics, "topics") if topics is not None else None
    docs_id = _dataset_id(docs, "docs") if docs is not None else None

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
        topics_dict = _dataset_topics(dataset(default_id), default_id)
    elif topics_id is not None:
        topics_dict = _dataset_topics(dataset(topics_id), topics_id)
    else:
        topics_dict = read_topics(topics)

    docs_source: Any
    if docs is None:
        if default_id is None:
            raise ValueError("a run file needs documents: give a JSONL corpus or an ir_datasets id")
        docs_source = _DocsLookup(dataset(default_id), default_id)
    elif docs_id is not None:
        docs_source = _DocsLookup(dataset(docs_id), docs_id)
    else:
        docs_source = read_docs_jsonl(docs)
    return candidates_from_run(run_dict, topics_dict, docs_source, depth=depth)


_FILE_SUFFIXES = {".trec", ".run", ".txt", ".tsv", ".json", ".jsonl", ".gz", ".qrels", ".xml", ".csv"}


def _require_file(path: PathLike, what: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")


def _dataset_id(value: PathLike, what: str) -> str | None:
    """The ir_datasets id ``value`` stands for, or None when it is a file (which must then exist)."""
    if isinstance(value, str) and "/" in value and not os.path.exists(value):
        path = Path(value)
        looks_like_path = (
            path.suffix.lower() in _FILE_SUFFIXES
            or value.startswith((".", "/", "~"))
            or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())
        )
        if not looks_like_path:
            return value
    _require_file(value, what)
    return None


# --------------------------------------------------------------------------------------------- ir_datasets


def _import_ir_datasets() -> Any:
    try:
        import ir_datasets
    except ImportError as e:
        raise ImportError(
            f"reading ir_datasets collections needs the ir_datasets package: {_DATASETS_HINT}"
        ) from e
    return ir_datasets


def _ir_datasets_load(dataset_id: str) -> Any:
    ir_datasets = _import_ir_datasets()
    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        raise ValueError(f"{dataset_id!r} is neither an existing file nor a known ir_datasets id") from None


def _record_fields(record: Any) -> dict[str, Any]:
    if hasattr(record, "_asdict"):
        return dict(record._asdict())
    if isinstance(record, Mapping):
        return dict(record)
    return dict(vars(record))


def _query_text(record: Any) -> str:
    fields = _record_fields(record)
    text = fields.get("text")
    if isinstance(text, str) and text.strip():
        return text
    for key, value in fields.items():
        if key != "query_id" and isinstance(value, str) and value.strip():
            return value
    return ""


def _dataset_topics(ds: Any, dataset_id: str) -> dict[str, str]:
    if hasattr(ds, "has_queries") and not ds.has_queries():
        raise ValueError(f"ir_datasets {dataset_id!r} has no queries; give a topics file")
    return {str(q.query_id): _query_text(q) for q in ds.queries_iter()}


def _doc_from_ir_datasets(record: Any) -> Doc:
    fields = _record_fields(record)
    docid = str(fields.pop("doc_id"))
    title = fields.pop("title", None)
    text_key = next((k for k in ("text", "body", "contents", "content", "passage") if k in fields), None)
    if text_key is None:
        text_key = next((k for k, v in fields.items() if isinstance(v, (str, bytes))), None)
    text = clean_text(fields.pop(text_key))[0] if text_key is not None else ""
    title = clean_text(title)[0] if title is not None else None
    return Doc(id=docid, text=text, title=title or None, meta=fields)


class _DocsLookup:
    """docid -> ``Doc`` over an ir_datasets docs_store: call it, index it, or ``get_many(ids)``."""

    def __init__(self, ds: Any, dataset_id: str) -> None:
        if hasattr(ds, "has_docs") and not ds.has_docs():
            raise ValueError(f"ir_datasets {dataset_id!r} has no documents; give a JSONL corpus")
        self._ds = ds
        self._store: Any = None
        self.dataset_id = dataset_id

    @property
    def store(self) -> Any:
        if self._store is None:
            self._store = self._ds.docs_store()
        return self._store

    def get_many(self, ids: Iterable[str]) -> dict[str, Doc]:
        return {
            str(docid): _doc_from_ir_datasets(doc) for docid, doc in self.store.get_many(list(ids)).items()
        }

    def __getitem__(self, docid: str) -> Doc:
        found = self.get_many([docid])
        if docid not in found:
            raise KeyError(docid)
        return found[docid]

    def __call__(self, docid: str) -> Doc:
        return self[docid]

    def __contains__(self, docid: object) -> bool:
        return isinstance(docid, str) and docid in self.get_many([docid])

    def __repr__(self) -> str:
        return f"<documents of ir_datasets {self.dataset_id!r}>"


@dataclass(frozen=True)
class IRDataset:
    """What ``load_ir_dataset`` gives: topics, qrels and a document lookup (``None`` when the dataset has none).

    Unpacks as ``topics, qrels, docs = load_ir_dataset(...)``.
    """

    dataset_id: str
    topics: dict[str, str]
    qrels: dict[str, dict[str, int]]
    docs: _DocsLookup | None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.topics, self.qrels, self.docs))


def load_ir_dataset(dataset_id: str) -> IRDataset:
    """Open an ir_datasets dataset (``reason2rank[datasets]``); ir_datasets may download on first use.

    Returns topics (qid -> text: the ``text`` field, else the first non-empty text field, e.g. a TREC
    title), qrels (qid -> {docid: relevance}) and ``docs``, a lookup docid -> ``Doc`` over the dataset's
    docs_store (callable, indexable, and ``get_many(ids)`` for batches). Parts the dataset lacks are empty
    (``docs`` is ``None``).
    """
    ds = _ir_datasets_load(dataset_id)

    def has(part: str) -> bool:
        return bool(getattr(ds, f"has_{part}", lambda: True)())

    topics = _dataset_topics(ds, dataset_id) if has("queries") else {}
    qrels: dict[str, dict[str, int]] = {}
    if has("qrels"):
        for qrel in ds.qrels_iter():
            qrels.setdefault(str(qrel.query_id), {})[str(qrel.doc_id)] = int(qrel.relevance)
    docs = _DocsLookup(ds, dataset_id) if has("docs") else None
    return IRDataset(dataset_id=dataset_id, topics=topics, qrels=qrels, docs=docs)
