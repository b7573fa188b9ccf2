"""TREC runs (``qid Q0 docid rank score tag``, rank 1-based in files) and qrels (``qid 0 docid rel`` or BEIR's
``query-id<TAB>corpus-id<TAB>score`` with an optional header)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from reason2rank.data.io import PathLike, check_field, file_error, format_score, iter_lines, write_text
from reason2rank.types import Doc, ScoredDoc

__all__ = ["read_qrels", "read_trec_run", "write_qrels", "write_trec_run"]


def read_trec_run(path: PathLike) -> dict[str, list[tuple[str, float]]]:
    """Read a TREC run: per qid (in first-seen order) the (docid, score) pairs ordered by rank.

    Ties in rank are broken by descending score; the rank itself is used only for ordering. Blank lines
    are skipped. A line without exactly six fields, a non-integer rank, a non-numeric score or a docid
    listed twice for one query raises ``ValueError`` naming the file and line.
    """
    rows: dict[str, list[tuple[int, float, str]]] = {}
    seen: dict[str, dict[str, int]] = {}
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise file_error(
                path, lineno, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}: {line!r}"
            )
        qid, _q0, docid, rank_s, score_s, _tag = fields
        try:
            rank = int(rank_s)
        except ValueError:
            raise file_error(path, lineno, f"rank {rank_s!r} is not an integer") from None
        try:
            score = float(score_s)
        except ValueError:
            raise file_error(path, lineno, f"score {score_s!r} is not a number") from None
        docs_seen = seen.setdefault(qid, {})
        if docid in docs_seen:
            raise file_error(
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
    check_field(tag, "run tag")
    lines: list[str] = []
    for qid, items in results.items():
        qid = check_field(str(qid), "query id")
        rows: list[tuple[Any, Any, int]] = []
        if items and all(isinstance(item, ScoredDoc) for item in items):
            scored = [item for item in items if isinstance(item, ScoredDoc)]
            rows = [(sd.doc.id, sd.score, sd.rank + 1) for sd in sorted(scored, key=lambda sd: sd.rank)]
        else:
            for position, item in enumerate(items):
                if isinstance(item, ScoredDoc):
                    raise ValueError(f"query {qid!r}: do not mix ScoredDoc objects and (docid, score) pairs")
                pair: Any = item
                try:
                    docid, score = pair
                except (TypeError, ValueError):
                    raise ValueError(
                        f"query {qid!r}, item {position}: expected a ScoredDoc or a (docid, score) pair, got {item!r}"
                    ) from None
                if isinstance(docid, Doc):
                    docid = docid.id
                rows.append((docid, score, position + 1))
        for docid, score, rank in rows:
            docid = check_field(str(docid), f"document id (query {qid!r})")
            lines.append(f"{qid} Q0 {docid} {rank} {format_score(score)} {tag}\n")
    with write_text(path) as fh:
        fh.writelines(lines)


def read_qrels(path: PathLike) -> dict[str, dict[str, int]]:
    """Read qrels: ``qid 0 docid rel`` (TREC) or ``query-id corpus-id score`` (BEIR TSV, header optional).

    Returns qid -> {docid: relevance}; a later line for the same pair overrides an earlier one.
    """
    qrels: dict[str, dict[str, int]] = {}
    first = True
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        is_first, first = first, False
        if len(fields) == 4:
            qid, _iteration, docid, rel_s = fields
        elif len(fields) == 3:
            qid, docid, rel_s = fields
        else:
            raise file_error(
                path,
                lineno,
                f"expected 'qid 0 docid rel' or 'query-id corpus-id score', got {len(fields)} fields",
            )
        rel = _parse_relevance(rel_s)
        if rel is None:
            if is_first:  # a header such as "query-id corpus-id score"
                continue
            raise file_error(path, lineno, f"relevance {rel_s!r} is not an integer")
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
        qid = check_field(str(qid), "query id")
        for docid, rel in judged.items():
            docid = check_field(str(docid), f"document id (query {qid!r})")
            lines.append(f"{qid} 0 {docid} {int(rel)}\n")
    with write_text(path) as fh:
        fh.writelines(lines)
