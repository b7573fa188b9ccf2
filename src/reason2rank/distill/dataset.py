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
  was found in the document it was shown, or occurs verbatim in ``doc.text``; else ``None``);
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
  0 for the last, on the direct 0-3 scale; 3 when ``n == 1``);
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

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

from reason2rank.data import _fail, _lookup_docs, _write_text, iter_json_objects, read_qrels
from reason2rank.types import Doc, Query

#: the ``format`` value of a training-set file header
FORMAT = "reason2rank-training-set"
#: the version of the file layout this module writes (and the newest it reads)
VERSION = 1

_CANDIDATE_KEYS = ("docno", "text", "title", "grade", "teacher_rank", "reasoning", "evidence")
_COMPARISON_KEYS = ("better", "worse", "reasoning", "tie", "better_first")
_QUERY_KEYS = ("qid", "query", "candidates", "comparisons")
_TASKS = ("direct", "compare", "listwise")


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
        self.grade = _check_grade(self.grade, self.doc.id)
        if self.teacher_rank is not None and (
            isinstance(self.teacher_rank, bool)
            or not isinstance(self.teacher_rank, int)
            or self.teacher_rank < 1
        ):
            raise ValueError(
                f"candidate {self.doc.id!r}: teacher_rank must be a positive integer or None, "
                f"got {self.teacher_rank!r}"
            )
        _check_text(self.reasoning, f"candidate {self.doc.id!r}: reasoning")
        _check_text(self.evidence, f"candidate {self.doc.id!r}: evidence")


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
        _check_text(self.reasoning, f"comparison {self.better!r} > {self.worse!r}: reasoning")
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
            f"{_listing(self.doc_ids)})"
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
    ) -> TrainingSet:
        """Build the training set from a teacher's annotations (see the module docstring for the rules).

        ``store``: an ``AnnotationStore``, the path of a store JSONL, or an iterable of record dicts.
        ``candidates``: ``[(Query, [Doc, ...]), ...]`` as ``reason2rank.data.load_candidates`` gives them;
        they supply the texts and the candidate order (the store holds only ids). ``teacher`` picks one
        teacher's records; it is required when the store holds several. ``source`` counts ``records``
        (of the chosen teacher), ``used_records`` per task, ``skipped_failed``, ``skipped_inconsistent``,
        ``unmatched_records`` (of which ``query_text_mismatch``), ``queries_without_records``,
        ``queries_too_few_candidates``, ``unannotated_candidates`` and ``queries_graded_from_rank``.
        """
        _check_min(min_candidates)
        records, store_name = _store_records(store)
        items = _index_candidates(candidates)
        teachers = sorted({str(r.get("teacher")) for r in records})
        if teacher is None:
            if len(teachers) > 1:
                raise ValueError(
                    f"the store holds annotations of {len(teachers)} teachers ({', '.join(teachers)}); "
                    "pass teacher=NAME to build the training set from one of them"
                )
            chosen = teachers[0] if teachers else None
        else:
            if teacher not in teachers:
                raise ValueError(
                    f"the store holds no annotations of teacher {teacher!r}; it holds: "
                    f"{', '.join(teachers) if teachers else 'none'}"
                )
            chosen = teacher
            records = [r for r in records if str(r.get("teacher")) == teacher]

        counts: Counter[str] = Counter()
        used: Counter[str] = Counter()
        direct: dict[str, dict[str, tuple[float, str | None, str | None]]] = {}
        windows: dict[str, list[tuple[list[str], dict[str, Mapping[str, Any]]]]] = {}
        compares: dict[str, dict[frozenset[str], Comparison]] = {}
        for rec in records:
            status = rec.get("status")
            if status == "inconsistent":
                counts["skipped_inconsistent"] += 1
                continue
            if status != "ok":
                counts["skipped_failed"] += 1
                continue
            task = rec.get("task")
            if task not in _TASKS:
                raise _bad_record(rec, f"unknown task {task!r}")
            qid = str(rec.get("qid"))
            raw_ids = rec.get("docids")
            docids = [str(d) for d in raw_ids] if isinstance(raw_ids, list) else []
            item = items.get(qid)
            if item is None or not docids or any(d not in item[1] for d in docids):
                counts["unmatched_records"] += 1
                continue
            rec_query = rec.get("query")
            if isinstance(rec_query, str) and _norm(rec_query) != _norm(item[0].text):
                counts["unmatched_records"] += 1
                counts["query_text_mismatch"] += 1
                continue
            output = rec.get("output")
            if not isinstance(output, Mapping):
                raise _bad_record(rec, "an ok record needs an output object")
            try:
                if task == "direct":
                    if len(docids) != 1:
                        raise ValueError(f"a direct record has one docid, got {len(docids)}")
                    doc = item[1][docids[0]]
                    grade = _check_grade(output.get("relevance"), doc.id)
                    if grade is None:
                        raise ValueError("output.relevance is missing")
                    reasoning = _opt_text(output.get("reasoning"), "output.reasoning")
                    evidence = _kept_evidence(output.get("evidence"), output.get("evidence_found"), doc)
                    direct.setdefault(qid, {})[doc.id] = (grade, reasoning, evidence)
                elif task == "compare":
                    comp = _comparison_from_record(docids, output)
                    compares.setdefault(qid, {}).pop(frozenset(docids), None)  # a later record goes last
                    compares[qid][frozenset(docids)] = comp
                else:
                    windows.setdefault(qid, []).append(_window_from_record(docids, output))
            except (ValueError, TypeError, KeyError) as e:
                raise _bad_record(rec, str(e)) from None
            used[task] += 1

        queries: list[TrainingQuery] = []
        for qid, (query, docs) in items.items():
            q_direct = direct.get(qid, {})
            q_windows = windows.get(qid, [])
            q_compares = compares.get(qid, {})
            if not (q_direct or q_windows or q_compares):
                counts["queries_without_records"] += 1
                continue
            lw_reason: dict[str, str | None] = {}
            lw_evidence: dict[str, str | None] = {}
            lw_pairs: dict[frozenset[str], Comparison] = {}
            for ranking, passages in q_windows:
                for docid in ranking:
                    p = passages.get(docid, {})
                    lw_reason[docid] = _opt_text(p.get("direct_reason"), "direct_reason")
                    lw_evidence[docid] = _kept_evidence(
                        p.get("direct_answer_sentence"), p.get("evidence_found"), docs[docid]
                    )
                for better, worse in zip(ranking, ranking[1:]):
                    reason = _opt_text(passages.get(better, {}).get("listwise_reason"), "listwise_reason")
                    lw_pairs.pop(frozenset((better, worse)), None)
                    lw_pairs[frozenset((better, worse))] = Comparison(better, worse, reason)
            comparisons = list(q_compares.values()) + [c for k, c in lw_pairs.items() if k not in q_compares]
            in_comparisons = {d for c in comparisons for d in (c.better, c.worse)}

            order = list(docs)
            if q_windows:
                merged = _merge_windows(order, [ranking for ranking, _ in q_windows])
                ranks = {docid: i + 1 for i, docid in enumerate(merged)}
            else:
                graded = [d for d in order if d in q_direct]
                graded.sort(key=lambda d: -q_direct[d][0])  # stable: ties keep candidate order
                ranks = {docid: i + 1 for i, docid in enumerate(graded)}

            kept: list[Candidate] = []
            for docid, doc in docs.items():
                grade, reasoning, evidence = q_direct.get(docid, (None, None, None))
                if docid not in q_direct:
                    reasoning = lw_reason.get(docid)
                if evidence is None:
                    evidence = lw_evidence.get(docid)
                rank = ranks.get(docid)
                annotated = (grade, rank, reasoning, evidence) != (None, None, None, None)
                if not annotated and docid not in in_comparisons:
                    counts["unannotated_candidates"] += 1
                    continue
                kept.append(Candidate(doc, grade, rank, reasoning, evidence))
            if len(kept) < min_candidates:
                counts["queries_too_few_candidates"] += 1
                continue
            if grade_from_rank and all(c.grade is None for c in kept):
                ranked = [c for c in kept if c.teacher_rank is not None]
                if ranked:
                    n = len(ranked)
                    for c in ranked:
                        assert c.teacher_rank is not None
                        c.grade = 3.0 * (n - c.teacher_rank) / (n - 1) if n > 1 else 3.0
                    counts["queries_graded_from_rank"] += 1
            queries.append(TrainingQuery(query, kept, comparisons))

        source: dict[str, Any] = {
            "kind": "teacher_store",
            "store": store_name,
            "teacher": chosen,
            "records": len(records),
            "used_records": {t: used[t] for t in _TASKS},
            "min_candidates": min_candidates,
            "grade_from_rank": bool(grade_from_rank),
        }
        for key in (
            "skipped_failed",
            "skipped_inconsistent",
            "unmatched_records",
            "query_text_mismatch",
            "queries_without_records",
            "queries_too_few_candidates",
            "unannotated_candidates",
            "queries_graded_from_rank",
        ):
            source[key] = counts[key]
        return cls(queries, source)

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
        """Qrels as a teacher without reasons: grade = the qrels grade (unjudged = 0), teacher_rank by
        grade (descending, ties in candidate order), no reasoning, evidence or comparisons.

        ``qrels``: qid -> {docid: grade}, or a qrels file (``reason2rank.data.read_qrels``). Positives are
        grade > 0. ``negatives=k`` keeps every positive candidate and the first ``k`` non-positive ones in
        candidate order (the first stage's hard negatives); with ``sample_negatives=True``, ``k`` drawn at
        random instead, from a generator seeded with ``seed`` and the query id (``seed`` has no other use).
        ``add_unretrieved_positives``: positives the candidates miss are appended (in qrels order) when
        ``docs`` (docid -> ``Doc`` or text, a ``get_many`` lookup or a callable, as for
        ``reason2rank.data.candidates_from_run``) has them; otherwise they are counted. Queries left with
        no positive or fewer than ``min_candidates`` candidates are dropped and counted in ``source``.
        """
        _check_min(min_candidates)
        if negatives is not None and (
            isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 0
        ):
            raise ValueError(f"negatives must be a non-negative integer or None, got {negatives!r}")
        qrels_name = None
        if isinstance(qrels, (str, Path)):
            qrels_name = str(qrels)
            qrels = read_qrels(qrels)
        qrels = {str(qid): judged for qid, judged in qrels.items()}
        items = _index_candidates(candidates)
        counts: Counter[str] = Counter()
        counts["qrels_queries_without_candidates"] = sum(1 for qid in qrels if str(qid) not in items)
        queries: list[TrainingQuery] = []
        for qid, (query, retrieved) in items.items():
            judged = {str(d): g for d, g in (qrels.get(qid) or {}).items()}
            grades = {d: _check_grade(g, d) for d, g in judged.items()}
            positives = [d for d in retrieved if (grades.get(d) or 0.0) > 0]
            others = [d for d in retrieved if (grades.get(d) or 0.0) <= 0]
            if negatives is not None:
                if sample_negatives and len(others) > negatives:
                    chosen = set(_rng(seed, qid).sample(others, negatives))
                    others = [d for d in others if d in chosen]
                else:
                    others = others[:negatives]
            keep = set(positives) | set(others)
            kept = [doc for d, doc in retrieved.items() if d in keep]
            if add_unretrieved_positives:
                missing = [d for d, g in grades.items() if g is not None and g > 0 and d not in retrieved]
                if missing and docs is None:
                    counts["unretrieved_positives_skipped"] += len(missing)
                elif missing:
                    found = _lookup_docs(docs, missing)
                    for d in missing:
                        if d in found:
                            kept.append(Doc(id=d, text=found[d].text, title=found[d].title))
                            counts["unretrieved_positives_added"] += 1
                        else:
                            counts["unretrieved_positives_without_text"] += 1
            if not any((grades.get(doc.id) or 0.0) > 0 for doc in kept):
                counts["queries_without_positives"] += 1
                continue
            if len(kept) < min_candidates:
                counts["queries_too_few_candidates"] += 1
                continue
            by_grade = sorted(range(len(kept)), key=lambda i: (-(grades.get(kept[i].id) or 0.0), i))
            ranks = {kept[i].id: r + 1 for r, i in enumerate(by_grade)}
            queries.append(
                TrainingQuery(
                    query, [Candidate(doc, grades.get(doc.id) or 0.0, ranks[doc.id]) for doc in kept]
                )
            )
        source: dict[str, Any] = {
            "kind": "qrels",
            "qrels": qrels_name,
            "negatives": negatives,
            "sample_negatives": bool(sample_negatives),
            "seed": seed,
            "add_unretrieved_positives": bool(add_unretrieved_positives),
            "min_candidates": min_candidates,
        }
        for key in (
            "qrels_queries_without_candidates",
            "unretrieved_positives_added",
            "unretrieved_positives_skipped",
            "unretrieved_positives_without_text",
            "queries_without_positives",
            "queries_too_few_candidates",
        ):
            source[key] = counts[key]
        return cls(queries, source)

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
        with _write_text(path) as fh:
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
                    raise _fail(path, lineno, "a header line may only come first")
                first = False
                source = _read_header(path, lineno, obj)
                continue
            first = False
            try:
                q = _query_from_json(obj)
            except (ValueError, TypeError) as e:
                raise _fail(path, lineno, str(e)) from None
            if q.query.id in lines:
                raise _fail(path, lineno, f"query {q.query.id!r} already on line {lines[q.query.id]}")
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
        by_hash = sorted(self.queries, key=lambda q: _digest(f"{seed}\x00{q.query.id}"))
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


def _listing(ids: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(i) for i in ids[:limit])
    return shown + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _check_min(min_candidates: int) -> None:
    if isinstance(min_candidates, bool) or not isinstance(min_candidates, int) or min_candidates < 1:
        raise ValueError(f"min_candidates must be a positive integer, got {min_candidates!r}")


def _check_grade(grade: Any, docid: str) -> float | None:
    if grade is None:
        return None
    if isinstance(grade, bool) or not isinstance(grade, (int, float)) or not math.isfinite(grade):
        raise ValueError(f"candidate {docid!r}: the grade must be a finite number or None, got {grade!r}")
    return float(grade)


def _check_text(value: Any, what: str) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a string or None, got {type(value).__name__}")


def _opt_text(value: Any, what: str) -> str | None:
    _check_text(value, what)
    return value


def _norm(text: str) -> str:
    return " ".join(text.split())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _rng(seed: int, qid: str) -> random.Random:
    return random.Random(int(_digest(f"{seed}\x00{qid}")[:16], 16))


def _kept_evidence(sentence: Any, found: Any, doc: Doc) -> str | None:
    """The teacher's evidence sentence when it was found in the document shown, or occurs in its text."""
    if not isinstance(sentence, str) or not sentence.strip():
        return None
    return sentence if found is True or sentence in doc.text else None


def _store_records(store: Any) -> tuple[list[dict[str, Any]], str | None]:
    """(records, a name for ``source``): one record per key, in first-written order, any status."""
    from reason2rank.teacher.store import FINISHED, AnnotationStore, read_annotations

    if isinstance(store, AnnotationStore):
        return list(store.records()), str(store.path) if store.path is not None else None
    if isinstance(store, (str, Path)):
        return list(read_annotations(store, status=None)), str(store)
    if isinstance(store, Mapping) or not isinstance(store, Iterable):
        raise TypeError(
            f"store must be an AnnotationStore, a store path or an iterable of records, got {type(store).__name__}"
        )
    best: dict[Any, dict[str, Any]] = {}
    for i, rec in enumerate(store):
        if not isinstance(rec, Mapping):
            raise TypeError(f"annotation record {i} is a {type(rec).__name__}, not a dict")
        key = rec.get("key", ("no key", i))
        old = best.get(key)
        if old is None or not (old.get("status") in FINISHED and rec.get("status") not in FINISHED):
            best[key] = dict(rec)
    return list(best.values()), None


def _index_candidates(
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
            by_id.setdefault(doc.id, Doc(id=doc.id, text=doc.text, title=doc.title))
        items[query.id] = (query, by_id)
    return items


def _bad_record(rec: Mapping[str, Any], message: str) -> ValueError:
    return ValueError(
        f"annotation record {rec.get('key')!r} ({rec.get('task')} for query {rec.get('qid')!r}, "
        f"docs {rec.get('docids')!r}): {message}"
    )


def _comparison_from_record(docids: list[str], output: Mapping[str, Any]) -> Comparison:
    if len(docids) != 2:
        raise ValueError(f"a compare record has two docids, got {len(docids)}")
    a, b = docids
    reasoning = _opt_text(output.get("reasoning"), "output.reasoning")
    if output.get("preferred") == "tie":
        return Comparison(a, b, reasoning, tie=True)
    preferred = output.get("preferred_doc")
    if preferred is not None:
        preferred = str(preferred)
    if preferred not in (a, b):
        raise ValueError(f"output.preferred_doc {preferred!r} is neither of the record's documents")
    if preferred == a:
        return Comparison(a, b, reasoning)
    swapped = _opt_text(output.get("swapped_reasoning"), "output.swapped_reasoning")
    if swapped is not None:
        return Comparison(b, a, swapped)
    return Comparison(b, a, reasoning, better_first=False)  # the answer saw the better document as B


def _window_from_record(
    docids: list[str], output: Mapping[str, Any]
) -> tuple[list[str], dict[str, Mapping[str, Any]]]:
    ranking = output.get("ranking")
    if not isinstance(ranking, list):
        raise ValueError("output.ranking must be a list of docids")
    ranking = [str(d) for d in ranking]
    if sorted(ranking) != sorted(docids):
        raise ValueError(f"output.ranking {ranking} is not an ordering of the window {docids}")
    passages: dict[str, Mapping[str, Any]] = {}
    for p in output.get("passages") or []:
        if not isinstance(p, Mapping):
            raise ValueError("output.passages must hold objects")
        passages[str(p.get("docid"))] = p
    return ranking, passages


def _merge_windows(order: Sequence[str], rankings: Sequence[Sequence[str]]) -> list[str]:
    """Apply listwise windows in turn to ``order`` (restricted to their documents): each window's ranking
    fills the positions its documents hold at that moment."""
    members = {d for ranking in rankings for d in ranking}
    current = [d for d in order if d in members]
    for ranking in rankings:
        where = {d: i for i, d in enumerate(current)}
        for position, docid in zip(sorted(where[d] for d in ranking), ranking):
            current[position] = docid
    return current


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
        raise _fail(
            path, lineno, f"not a training-set file: format {obj.get('format')!r}, expected {FORMAT!r}"
        )
    version = obj.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
        raise _fail(
            path,
            lineno,
            f"training-set version {version!r} is not supported (this reader knows 1..{VERSION})",
        )
    source = obj.get("source") or {}
    if not isinstance(source, dict):
        raise _fail(path, lineno, "the header's source must be an object")
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
