"""A training set from a teacher's annotation store (``TrainingSet.from_store``; the mapping of records onto
candidates is documented in ``reason2rank.distill.dataset``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reason2rank.distill.dataset import (
    TASKS,
    Candidate,
    Comparison,
    TrainingQuery,
    TrainingSet,
    check_grade,
    check_min_candidates,
    check_text,
    index_candidates,
)
from reason2rank.explain.evidence import find_evidence_span
from reason2rank.types import Doc, Query

__all__ = ["build_from_store", "win_rates"]


def build_from_store(
    store: Any,
    candidates: Iterable[tuple[Query, Sequence[Doc]]],
    *,
    teacher: str | None = None,
    min_candidates: int = 2,
    grade_from_rank: bool = True,
    grade_from_comparisons: bool = True,
) -> TrainingSet:
    """Build the training set from a teacher's annotations (see the module docstring for the rules).

    ``store``: an ``AnnotationStore``, the path of a store JSONL, or an iterable of record dicts.
    ``candidates``: ``[(Query, [Doc, ...]), ...]`` as ``reason2rank.data.load_candidates`` gives them;
    they supply the texts and the candidate order (the store holds only ids). ``teacher`` picks one
    teacher's records; it is required when the store holds several. ``source`` counts ``records``
    (of the chosen teacher), ``used_records`` per task, ``skipped_failed``, ``skipped_inconsistent``,
    ``unmatched_records`` (of which ``query_text_mismatch``), ``queries_without_records``,
    ``queries_too_few_candidates``, ``unannotated_candidates``, ``queries_graded_from_rank`` and
    ``queries_graded_from_comparisons``.

    ``grade_from_comparisons``: a query whose kept candidates have neither a grade nor a rank (a store of
    ``compare`` records only) gets, for each compared candidate, ``grade = 3 * win rate`` over its comparisons
    (a tie is half a win), so that it forms training groups; the comparisons themselves stay the query's
    pairwise preferences (``ranknet_pairs`` learns from them, in the teacher's direction). A query whose
    preferences are a pure cycle gets equal grades and is not trainable.
    """
    check_min_candidates(min_candidates)
    records, store_name = _store_records(store)
    items = index_candidates(candidates)
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
        if task not in TASKS:
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
                grade = check_grade(output.get("relevance"), doc.id)
                if grade is None:
                    raise ValueError("output.relevance is missing")
                reasoning = _opt_text(output.get("reasoning"), "output.reasoning")
                evidence = _kept_evidence(output.get("evidence"), doc)
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
                lw_evidence[docid] = _kept_evidence(p.get("direct_answer_sentence"), docs[docid])
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
        if (
            grade_from_comparisons
            and comparisons
            and all(c.grade is None and c.teacher_rank is None for c in kept)
        ):
            rates = win_rates(comparisons)
            for c in kept:
                if c.doc.id in rates:
                    c.grade = 3.0 * rates[c.doc.id]
            counts["queries_graded_from_comparisons"] += 1
        queries.append(TrainingQuery(query, kept, comparisons))

    source: dict[str, Any] = {
        "kind": "teacher_store",
        "store": store_name,
        "teacher": chosen,
        "records": len(records),
        "used_records": {t: used[t] for t in TASKS},
        "min_candidates": min_candidates,
        "grade_from_rank": bool(grade_from_rank),
        "grade_from_comparisons": bool(grade_from_comparisons),
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
        "queries_graded_from_comparisons",
    ):
        source[key] = counts[key]
    return TrainingSet(queries, source)


def win_rates(comparisons: Iterable[Comparison]) -> dict[str, float]:
    """Per document of ``comparisons``: its wins over its comparisons (a tie counts half for both)."""
    wins: dict[str, float] = {}
    seen: Counter[str] = Counter()
    for c in comparisons:
        seen[c.better] += 1
        seen[c.worse] += 1
        wins[c.better] = wins.get(c.better, 0.0) + (0.5 if c.tie else 1.0)
        wins[c.worse] = wins.get(c.worse, 0.0) + (0.5 if c.tie else 0.0)
    return {d: wins[d] / n for d, n in seen.items()}


def _opt_text(value: Any, what: str) -> str | None:
    check_text(value, what)
    return value


def _norm(text: str) -> str:
    return " ".join(text.split())


def _kept_evidence(sentence: Any, doc: Doc) -> str | None:
    """The teacher's evidence sentence when it is in the document (``find_evidence_span``), else ``None``."""
    if not isinstance(sentence, str) or not sentence.strip():
        return None
    return sentence if find_evidence_span(doc.body, sentence) is not None else None


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
