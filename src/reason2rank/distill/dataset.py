"""The Reason-to-Rank training set: per query, candidates with the teacher's labels and reasons.

A ``TrainingSet`` is a sequence of ``TrainingQuery`` objects. Each holds the ``Query``, its ``Candidate``
documents (teacher grade, 1-based teacher rank, direct reasoning, evidence sentence; each ``None`` when
unknown) and ``Comparison`` records (the teacher preferred ``better`` over ``worse``, and why). It is built
from a teacher's annotation store (``TrainingSet.from_store``) or, as a fallback teacher without reasons,
from plain qrels (``TrainingSet.from_qrels``)::

    from reason2rank.data import load_candidates
    from reason2rank.distill.dataset import TrainingSet

    candidates = load_candidates(run="bm25.trec", topics="topics.tsv", docs="corpus.jsonl", depth=20)
    train = TrainingSet.from_store("annotations.jsonl", candidates)
    train, dev = train.split(0.1)
    train.save("train.jsonl")

How ``from_store`` reads the store (records as ``reason2rank.teacher`` writes them):

- only ``ok`` records are used; ``failed`` and ``inconsistent`` ones (A/B and B/A answers disagreed) are
  skipped and counted in ``source``; records whose query id, query text or document ids are not among
  the given candidates are ignored and counted as ``unmatched_records``;
- ``direct`` → ``grade`` (the relevance), ``reasoning`` and ``evidence`` (kept when the teacher's sentence
  is in the document by ``explain.evidence.find_evidence_span``; else ``None``);
- ``compare`` → a ``Comparison`` of the preferred and the other document (``tie=True`` for a tie, then
  ``better``/``worse`` are just the A/B order). Its ``reasoning`` is the answer in which ``better`` was
  shown as document A: the A/B answer when the teacher preferred A, the B/A answer (``swapped_reasoning``)
  when it preferred B and was asked both orders; asked once and preferring B, the only answer there is,
  which speaks of ``better`` as document B (``better_first=False``: students show the pair in that order);
- ``listwise`` → ``teacher_rank``. Windows are applied in store order to the query's candidate order
  (restricted to the documents of any window), each window putting its ranking into the positions its
  documents hold at that moment — the merge of RankGPT's sliding windows; non-overlapping windows simply
  keep their first-stage order between windows. Documents of no window get no rank. Each passage's
  ``direct_reason`` is the ``reasoning`` where no direct record exists, its ``direct_answer_sentence`` the
  ``evidence`` where the direct record has none (same rule for keeping it), and each two neighbours of a
  window's ranking give a ``Comparison`` whose reasoning is the better passage's ``listwise_reason``;
- where a query has no listwise record, ``teacher_rank`` follows the grades (descending, ties in
  candidate order; ungraded candidates get none). With ``grade_from_rank`` a query that has ranks but no
  grade at all gets ``grade = 3 * (n - rank) / (n - 1)`` for its ``n`` ranked candidates (3 for the top,
  0 for the last, on the direct 0-3 scale; 3 when ``n == 1``); with ``grade_from_comparisons`` a query
  with neither grades nor ranks (``compare`` records only) gets ``grade = 3 * win rate`` of each compared
  candidate (a tie is half a win), so its pairwise preferences form training groups (``ranknet_pairs``);
- one comparison per document pair: a ``compare`` record beats a listwise neighbour pair, and a later
  record of either kind beats an earlier one, as a later direct record does for a document;
- only annotated candidates are kept (a grade, a rank, a reasoning, an evidence sentence, or a part in a
  comparison), in candidate order; queries with fewer than ``min_candidates`` are dropped and counted.

``Doc.meta`` (first-stage score and rank, ...) is left out of the training set, so that what is in memory
is exactly what ``save`` writes and ``load`` reads back.

File format (JSONL, UTF-8, gzip when the name ends in ``.gz``). The first line is a header::

    {"format": "reason2rank-training-set", "version": 1, "source": {...how it was built, counts...}}

then one line per query::

    {"qid": "q1", "query": "how long is the life cycle of a flea",
     "candidates": [{"docno": "d1", "text": "...", "title": "...", "grade": 3.0, "teacher_rank": 1,
                     "reasoning": "...", "evidence": "..."}, ...],
     "comparisons": [{"better": "d1", "worse": "d2", "reasoning": "...", "tie": false}, ...]}
    (``"better_first": false`` is added when the reasoning saw ``better`` as document B)

Fields that are ``None`` (``title``, ``grade``, ``teacher_rank``, ``reasoning``, ``evidence``) are left
out; ``tie`` is always written. ``load`` also reads files without the header, and rejects unknown keys,
duplicate query ids or docnos, comparisons of documents that are not candidates of the query, non-finite
grades and ranks that are not distinct positive integers, naming the file and line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from reason2rank.data.io import file_error, iter_json_objects, write_text
from reason2rank.messages import listing
from reason2rank.types import Doc, Query

#: the ``format`` value of a training-set file header
FORMAT = "reason2rank-training-set"
#: the version of the file layout this module writes (and the newest it reads)
VERSION = 1

_CANDIDATE_KEYS = ("docno", "text", "title", "grade", "teacher_rank", "reasoning", "evidence")
_COMPARISON_KEYS = ("better", "worse", "reasoning", "tie", "better_first")
_QUERY_KEYS = ("qid", "query", "candidates", "comparisons")
TASKS = ("direct", "compare", "listwise")


# --------------------------------------------------------------------------------------------- records


@dataclass
class Candidate:
    """A candidate document of a query with what the teacher said about it (``None`` = unknown)."""

    doc: Doc
    grade: float | None = None  # teacher relevance (direct 0-3, or qrels grade)
    teacher_rank: int | None = None  # 1-based rank in the teacher's ordering of the query's candidates
    reasoning: str | None = None  # direct reasoning text
    evidence: str | None = None  # evidence sentence (a substring of doc.text when the teacher found it)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the fields (a grade becomes a float); raises ``ValueError``/``TypeError``."""
        if not isinstance(self.doc, Doc):
            raise TypeError(f"Candidate.doc must be a Doc, got {type(self.doc).__name__}")
        self.grade = check_grade(self.grade, self.doc.id)
        if self.teacher_rank is not None and (
            isinstance(self.teacher_rank, bool)
            or not isinstance(self.teacher_rank, int)
            or self.teacher_rank < 1
        ):
            raise ValueError(
                f"candidate {self.doc.id!r}: teacher_rank must be a positive integer or None, "
                f"got {self.teacher_rank!r}"
            )
        check_text(self.reasoning, f"candidate {self.doc.id!r}: reasoning")
        check_text(self.evidence, f"candidate {self.doc.id!r}: evidence")


@dataclass
class Comparison:
    """The teacher preferred document ``better`` over ``worse`` (ids of candidates of the same query)."""

    better: str  # doc id preferred by the teacher
    worse: str
    reasoning: str | None = None  # why `better` beats `worse` (see the module docstring for its framing)
    tie: bool = False  # teacher said tie (better/worse then just the A/B order)
    #: whether ``reasoning`` was written with ``better`` shown as document A (False: it was document B)
    better_first: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check the fields; raises ``ValueError``/``TypeError``."""
        for name in ("better", "worse"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"Comparison.{name} must be a doc id string, got {getattr(self, name)!r}")
        if self.better == self.worse:
            raise ValueError(f"a comparison needs two different documents, got {self.better!r} twice")
        check_text(self.reasoning, f"comparison {self.better!r} > {self.worse!r}: reasoning")
        if not isinstance(self.tie, bool):
            raise TypeError(f"Comparison.tie must be True or False, got {self.tie!r}")
        if not isinstance(self.better_first, bool):
            raise TypeError(f"Comparison.better_first must be True or False, got {self.better_first!r}")


@dataclass
class TrainingQuery:
    """One query of the training set: its candidates (distinct docnos) and the teacher's comparisons."""

    query: Query
    candidates: list[Candidate]
    comparisons: list[Comparison] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.candidates = list(self.candidates)
        self.comparisons = list(self.comparisons)
        self.validate()

    def validate(self) -> None:
        """Check the query's consistency (run on construction and before saving); raises ``ValueError``."""
        if not isinstance(self.query, Query):
            raise TypeError(f"TrainingQuery.query must be a Query, got {type(self.query).__name__}")
        qid = self.query.id
        ids: set[str] = set()
        ranks: dict[int, str] = {}
        for c in self.candidates:
            if not isinstance(c, Candidate):
                raise TypeError(
                    f"query {qid!r}: candidates must be Candidate objects, got {type(c).__name__}"
                )
            c.validate()
            if c.doc.id in ids:
                raise ValueError(f"query {qid!r}: docno {c.doc.id!r} occurs twice among the candidates")
            ids.add(c.doc.id)
            if c.teacher_rank is not None:
                if c.teacher_rank in ranks:
                    raise ValueError(
                        f"query {qid!r}: candidates {ranks[c.teacher_rank]!r} and {c.doc.id!r} share "
                        f"teacher_rank {c.teacher_rank}"
                    )
                ranks[c.teacher_rank] = c.doc.id
        for comp in self.comparisons:
            if not isinstance(comp, Comparison):
                raise TypeError(
                    f"query {qid!r}: comparisons must be Comparison objects, got {type(comp).__name__}"
                )
            comp.validate()
            unknown = [d for d in (comp.better, comp.worse) if d not in ids]
            if unknown:
                raise ValueError(
                    f"query {qid!r}: comparison {comp.better!r} > {comp.worse!r} refers to "
                    f"{', '.join(map(repr, unknown))}, not a candidate of this query"
                )

    @property
    def doc_ids(self) -> list[str]:
        """The candidates' docnos, in order."""
        return [c.doc.id for c in self.candidates]

    def candidate(self, docid: str) -> Candidate:
        """The candidate with docno ``docid``; ``KeyError`` when the query has none."""
        for c in self.candidates:
            if c.doc.id == docid:
                return c
        raise KeyError(
            f"query {self.query.id!r} has no candidate {docid!r} (it has {len(self.candidates)}: "
            f"{listing(self.doc_ids)})"
        )


# --------------------------------------------------------------------------------------------- the set


class TrainingSet(Sequence[TrainingQuery]):
    """A sequence of ``TrainingQuery`` (distinct query ids) and ``source``, a JSON-able dict describing
    how it was built (kind, teacher, counts of what was skipped or dropped)."""

    def __init__(self, queries: Iterable[TrainingQuery], source: Mapping[str, Any] | None = None):
        self.queries: list[TrainingQuery] = list(queries)
        self.source: dict[str, Any] = dict(source or {})
        seen: set[str] = set()
        for q in self.queries:
            if not isinstance(q, TrainingQuery):
                raise TypeError(f"a TrainingSet holds TrainingQuery objects, got {type(q).__name__}")
            if q.query.id in seen:
                raise ValueError(f"query id {q.query.id!r} occurs twice in the training set")
            seen.add(q.query.id)

    # -- sequence -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.queries)

    @overload
    def __getitem__(self, index: int) -> TrainingQuery: ...

    @overload
    def __getitem__(self, index: slice) -> TrainingSet: ...

    def __getitem__(self, index: int | slice) -> TrainingQuery | TrainingSet:
        if isinstance(index, slice):
            return TrainingSet(self.queries[index], self.source)
        return self.queries[index]

    def __iter__(self) -> Iterator[TrainingQuery]:
        return iter(self.queries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrainingSet):
            return NotImplemented
        return self.queries == other.queries and self.source == other.source

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kind = self.source.get("kind", "?")
        return (
            f"TrainingSet({len(self)} queries, {sum(len(q.candidates) for q in self)} candidates, "
            f"source={kind!r})"
        )

    @property
    def qids(self) -> list[str]:
        """The query ids, in order."""
        return [q.query.id for q in self.queries]

    def get(self, qid: str, default: TrainingQuery | None = None) -> TrainingQuery | None:
        """The query with id ``qid``, else ``default``."""
        return next((q for q in self.queries if q.query.id == qid), default)

    # -- building -------------------------------------------------------------------------------------

    @classmethod
    def from_store(
        cls,
        store: Any,
        candidates: Iterable[tuple[Query, Sequence[Doc]]],
        *,
        teacher: str | None = None,
        min_candidates: int = 2,
        grade_from_rank: bool = True,
        grade_from_comparisons: bool = True,
    ) -> TrainingSet:
        """Build the training set from a teacher's annotation store (``reason2rank.distill.from_teacher``; the
        rules are in this module's docstring)."""
        from reason2rank.distill.from_teacher import build_from_store

        return build_from_store(
            store,
            candidates,
            teacher=teacher,
            min_candidates=min_candidates,
            grade_from_rank=grade_from_rank,
            grade_from_comparisons=grade_from_comparisons,
        )

    @classmethod
    def from_qrels(
        cls,
        qrels: Mapping[str, Mapping[str, int | float]] | str | Path,
        candidates: Iterable[tuple[Query, Sequence[Doc]]],
        *,
        negatives: int | None = None,
        add_unretrieved_positives: bool = True,
        docs: Any = None,
        seed: int = 0,
        min_candidates: int = 2,
        sample_negatives: bool = False,
    ) -> TrainingSet:
        """Qrels as a teacher without reasons (``reason2rank.distill.from_qrels.build_from_qrels``)."""
        from reason2rank.distill.from_qrels import build_from_qrels

        return build_from_qrels(
            qrels,
            candidates,
            negatives=negatives,
            add_unretrieved_positives=add_unretrieved_positives,
            docs=docs,
            seed=seed,
            min_candidates=min_candidates,
            sample_negatives=sample_negatives,
        )

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the set as JSONL (header, then one line per query; see the module docstring), atomically:
        a failure leaves an existing file untouched. Returns the path."""
        path = Path(path)
        header = {"format": FORMAT, "version": VERSION, "source": self.source}
        try:
            lines = [json.dumps(header, ensure_ascii=False, allow_nan=False)]
        except (TypeError, ValueError) as e:
            raise ValueError(f"cannot write {path}: the source must be JSON-serialisable ({e})") from None
        for q in self.queries:
            q.validate()  # the fields may have been changed after construction
            lines.append(json.dumps(_query_to_json(q), ensure_ascii=False, allow_nan=False))
        payload = "\n".join(lines) + "\n"
        with write_text(path) as fh:
            fh.write(payload)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainingSet:
        """Read a file written by ``save`` (the header line is optional). A bad line raises ``ValueError``
        naming the file and line."""
        source: dict[str, Any] = {}
        queries: list[TrainingQuery] = []
        lines: dict[str, int] = {}
        first = True
        for lineno, obj in iter_json_objects(path):
            if "format" in obj:
                if not first:
                    raise file_error(path, lineno, "a header line may only come first")
                first = False
                source = _read_header(path, lineno, obj)
                continue
            first = False
            try:
                q = _query_from_json(obj)
            except (ValueError, TypeError) as e:
                raise file_error(path, lineno, str(e)) from None
            if q.query.id in lines:
                raise file_error(path, lineno, f"query {q.query.id!r} already on line {lines[q.query.id]}")
            lines[q.query.id] = lineno
            queries.append(q)
        return cls(queries, source)

    # -- summaries and splits -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts: queries, candidates (and per query min/mean/max), graded, positives (grade > 0), ranked,
        with_reasoning, with_evidence, comparisons (with reasoning, ties), grade_counts, and the
        ``source`` (what was skipped or dropped while building)."""
        cands = [c for q in self.queries for c in q.candidates]
        comps = [c for q in self.queries for c in q.comparisons]
        sizes = [len(q.candidates) for q in self.queries]
        grades = Counter(c.grade for c in cands if c.grade is not None)
        return {
            "queries": len(self.queries),
            "candidates": len(cands),
            "candidates_per_query": {
                "min": min(sizes, default=0),
                "mean": sum(sizes) / len(sizes) if sizes else 0.0,
                "max": max(sizes, default=0),
            },
            "graded": sum(c.grade is not None for c in cands),
            "positives": sum(c.grade is not None and c.grade > 0 for c in cands),
            "ranked": sum(c.teacher_rank is not None for c in cands),
            "with_reasoning": sum(c.reasoning is not None for c in cands),
            "with_evidence": sum(c.evidence is not None for c in cands),
            "comparisons": len(comps),
            "comparisons_with_reasoning": sum(c.reasoning is not None for c in comps),
            "ties": sum(c.tie for c in comps),
            "grade_counts": dict(sorted(grades.items())),
            "source": dict(self.source),
        }

    def split(self, dev_fraction: float, seed: int = 0) -> tuple[TrainingSet, TrainingSet]:
        """(train, dev) by query: ``round(len * dev_fraction)`` queries (at least one when the fraction is
        above 0) go to dev, chosen by a hash of ``seed`` and the query id — the same split every time,
        whatever the order of the queries. Both keep the original order; their ``source`` notes the split."""
        if (
            isinstance(dev_fraction, bool)
            or not isinstance(dev_fraction, (int, float))
            or not 0 <= dev_fraction <= 1
        ):
            raise ValueError(f"dev_fraction must be a number in [0, 1], got {dev_fraction!r}")
        n = len(self.queries)
        n_dev = round(n * dev_fraction)
        if dev_fraction > 0 and n:
            n_dev = max(1, n_dev)
        by_hash = sorted(
            self.queries, key=lambda q: hashlib.sha256(f"{seed}\x00{q.query.id}".encode()).hexdigest()
        )
        dev_ids = {q.query.id for q in by_hash[:n_dev]}
        note = {"dev_fraction": dev_fraction, "seed": seed}
        train = TrainingSet(
            [q for q in self.queries if q.query.id not in dev_ids],
            {**self.source, "split": {"part": "train", **note}},
        )
        dev = TrainingSet(
            [q for q in self.queries if q.query.id in dev_ids],
            {**self.source, "split": {"part": "dev", **note}},
        )
        return train, dev


# --------------------------------------------------------------------------------------------- helpers


def check_min_candidates(min_candidates: int) -> None:
    """``ValueError`` unless ``min_candidates`` is a positive integer."""
    if isinstance(min_candidates, bool) or not isinstance(min_candidates, int) or min_candidates < 1:
        raise ValueError(f"min_candidates must be a positive integer, got {min_candidates!r}")


def check_grade(grade: Any, docid: str) -> float | None:
    """A grade as a float (``None`` stays); ``ValueError`` for a non-finite or non-numeric one."""
    if grade is None:
        return None
    if isinstance(grade, bool) or not isinstance(grade, (int, float)) or not math.isfinite(grade):
        raise ValueError(f"candidate {docid!r}: the grade must be a finite number or None, got {grade!r}")
    return float(grade)


def check_text(value: Any, what: str) -> None:
    """``TypeError`` unless ``value`` is a string or ``None``."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a string or None, got {type(value).__name__}")


def index_candidates(
    candidates: Iterable[tuple[Query, Sequence[Doc]]],
) -> dict[str, tuple[Query, dict[str, Doc]]]:
    """qid -> (query, docid -> Doc without meta, in candidate order; a repeated docid keeps its first place)."""
    items: dict[str, tuple[Query, dict[str, Doc]]] = {}
    for entry in candidates:
        try:
            query, docs = entry
        except (TypeError, ValueError):
            raise TypeError(f"candidates must be (Query, [Doc, ...]) pairs, got {entry!r:.80}") from None
        if not isinstance(query, Query):
            raise TypeError(
                f"candidates must be (Query, [Doc, ...]) pairs, got a {type(query).__name__} query"
            )
        if query.id in items:
            raise ValueError(f"query {query.id!r} occurs twice in the candidates")
        by_id: dict[str, Doc] = {}
        for doc in docs:
            if not isinstance(doc, Doc):
                raise TypeError(
                    f"query {query.id!r}: candidates must be Doc objects, got {type(doc).__name__}"
                )
            by_id.setdefault(doc.id, dataclasses.replace(doc, meta={}))
        items[query.id] = (query, by_id)
    return items


# --------------------------------------------------------------------------------------------- JSON


def _query_to_json(q: TrainingQuery) -> dict[str, Any]:
    candidates = []
    for c in q.candidates:
        record: dict[str, Any] = {"docno": c.doc.id, "text": c.doc.text}
        for key, value in (
            ("title", c.doc.title),
            ("grade", c.grade),
            ("teacher_rank", c.teacher_rank),
            ("reasoning", c.reasoning),
            ("evidence", c.evidence),
        ):
            if value is not None:
                record[key] = value
        candidates.append(record)
    comparisons = []
    for comp in q.comparisons:
        record = {"better": comp.better, "worse": comp.worse}
        if comp.reasoning is not None:
            record["reasoning"] = comp.reasoning
        record["tie"] = comp.tie
        if not comp.better_first:
            record["better_first"] = False
        comparisons.append(record)
    return {"qid": q.query.id, "query": q.query.text, "candidates": candidates, "comparisons": comparisons}


def _read_header(path: str | Path, lineno: int, obj: Mapping[str, Any]) -> dict[str, Any]:
    if obj.get("format") != FORMAT:
        raise file_error(
            path, lineno, f"not a training-set file: format {obj.get('format')!r}, expected {FORMAT!r}"
        )
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
        raise file_error(
            path,
            lineno,
            f"training-set version {version!r} is not supported (this reader knows 1..{VERSION})",
        )
    source = obj.get("source") or {}
    if not isinstance(source, dict):
        raise file_error(path, lineno, "the header's source must be an object")
    return source


def _check_keys(obj: Mapping[str, Any], allowed: Sequence[str], required: Sequence[str], what: str) -> None:
    missing = [k for k in required if k not in obj]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(map(repr, missing))}")
    unknown = [k for k in obj if k not in allowed]
    if unknown:
        raise ValueError(
            f"{what} has unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}"
        )


def _id(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{what} must be a string, got {value!r}")
    return str(value)


def _query_from_json(obj: Mapping[str, Any]) -> TrainingQuery:
    _check_keys(obj, _QUERY_KEYS, ("qid", "query", "candidates"), "the query record")
    qid = _id(obj["qid"], "qid")
    if not isinstance(obj["query"], str):
        raise ValueError(f"query {qid!r}: the query text must be a string")
    query = Query(qid, obj["query"])
    raw_candidates, raw_comparisons = obj["candidates"], obj.get("comparisons", [])
    if not isinstance(raw_candidates, list) or not isinstance(raw_comparisons, list):
        raise ValueError(f"query {qid!r}: candidates and comparisons must be lists")
    candidates = []
    for i, rec in enumerate(raw_candidates):
        what = f"query {qid!r}: candidate {i}"
        if not isinstance(rec, dict):
            raise ValueError(f"{what} must be an object")
        _check_keys(rec, _CANDIDATE_KEYS, ("docno", "text"), what)
        title = rec.get("title")
        if not isinstance(rec["text"], str) or not (title is None or isinstance(title, str)):
            raise ValueError(f"{what}: text and title must be strings")
        doc = Doc(id=_id(rec["docno"], f"{what}: docno"), text=rec["text"], title=title)
        candidates.append(
            Candidate(
                doc, rec.get("grade"), rec.get("teacher_rank"), rec.get("reasoning"), rec.get("evidence")
            )
        )
    comparisons = []
    for i, rec in enumerate(raw_comparisons):
        what = f"query {qid!r}: comparison {i}"
        if not isinstance(rec, dict):
            raise ValueError(f"{what} must be an object")
        _check_keys(rec, _COMPARISON_KEYS, ("better", "worse"), what)
        comparisons.append(
            Comparison(
                _id(rec["better"], f"{what}: better"),
                _id(rec["worse"], f"{what}: worse"),
                rec.get("reasoning"),
                rec.get("tie", False),
                rec.get("better_first", True),
            )
        )
    return TrainingQuery(query, candidates, comparisons)
