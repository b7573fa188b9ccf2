"""Topics: ``qid<TAB>text`` TSV, BEIR queries JSONL (``{"_id", "text"}``) or TREC ``<top>`` / ``<topic>`` files."""

from __future__ import annotations

import json
import re
from typing import Any

from reason2rank.data.io import PathLike, file_error, read_text
from reason2rank.types import clean_text

__all__ = ["read_topics"]

_QUERY_ID_KEYS = ("_id", "qid", "query_id", "id")
_QUERY_TEXT_KEYS = ("text", "query")
_TOPIC_HEADER_IDS = {"qid", "query_id", "query-id", "queryid", "id", "_id", "topic", "topic_id", "number"}

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
    text = read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("{"):
        return _topics_from_jsonl(path, text)
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise file_error(path, e.lineno, f"invalid JSON: {e.msg}") from None
        if not isinstance(records, list):
            raise file_error(path, None, "expected a JSON list of query objects")
        topics: dict[str, str] = {}
        for index, record in enumerate(records):
            _add_topic(path, None, topics, *_topic_from_record(path, None, record, f"item {index}: "))
        return topics
    if stripped.startswith("<"):
        if re.search(r"<top>", text, re.IGNORECASE):
            return _topics_from_sgml(path, text)
        if re.search(r"<topic\b", text, re.IGNORECASE):
            return _topics_from_xml(path, text)
        raise file_error(path, None, "looks like markup but has no TREC <top> or <topic> elements")
    return _topics_from_tsv(path, text)


def _add_topic(path: PathLike, lineno: int | None, topics: dict[str, str], qid: str, query: str) -> None:
    if not query.strip():
        raise file_error(path, lineno, f"topic {qid!r} has an empty text")
    if qid in topics and topics[qid] != query:
        raise file_error(path, lineno, f"topic {qid!r} is given twice with different texts")
    topics[qid] = query


def _topic_from_record(path: PathLike, lineno: int | None, record: Any, prefix: str = "") -> tuple[str, str]:
    if not isinstance(record, dict):
        raise file_error(path, lineno, f"{prefix}expected a JSON object, got {type(record).__name__}")
    qid = next((record[k] for k in _QUERY_ID_KEYS if record.get(k) is not None), None)
    query = next((record[k] for k in _QUERY_TEXT_KEYS if record.get(k) is not None), None)
    if qid is None or query is None:
        raise file_error(
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
            raise file_error(path, lineno, f"invalid JSON: {e.msg}") from None
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
            raise file_error(
                path, lineno, f"expected 'qid<TAB>text' (or a JSONL / TREC topic file), got {line!r}"
            )
        qid, query = line.split("\t", 1)
        qid = qid.strip()
        if is_first and qid.lower() in _TOPIC_HEADER_IDS:
            continue
        if not qid:
            raise file_error(path, lineno, "empty query id")
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
            raise file_error(path, lineno, "a <top> block needs both <num> and <title>")
        _add_topic(path, lineno, topics, num.group(1), " ".join(title.group(1).split()))
    return topics


def _topics_from_xml(path: PathLike, text: str) -> dict[str, str]:
    topics: dict[str, str] = {}
    for match in _TOPIC_RE.finditer(text):
        lineno = _line_of(text, match.start())
        number = _NUMBER_ATTR_RE.search(match.group(1))
        query = _QUERY_TAG_RE.search(match.group(2))
        if number is None or query is None:
            raise file_error(
                path, lineno, 'a <topic> needs a number="..." attribute and a <query> or <title>'
            )
        _add_topic(path, lineno, topics, number.group(1), " ".join(query.group(2).split()))
    return topics
