"""Where a teacher's candidates come from: a TREC run + docs JSONL (+ topics), rank_llm JSON candidates, or an
ir_datasets id with a first-stage run — ``load_teacher_inputs``, which delegates to
``reason2rank.data.load_candidates``. (A PyTerrier result frame is converted by the adapter, ``pt_r2r``.)"""

from __future__ import annotations

from collections.abc import Mapping

from reason2rank.types import Doc, Query

__all__ = ["load_qrels", "load_teacher_inputs"]


def load_teacher_inputs(
    *,
    candidates: str | None = None,
    run: str | None = None,
    topics: str | None = None,
    docs: str | None = None,
    depth: int | None = None,
    max_queries: int | None = None,
) -> list[tuple[Query, list[Doc]]]:
    """rank_llm ``candidates``, or ``run`` + ``topics`` + ``docs`` (files or ir_datasets ids), see
    ``reason2rank.data.load_candidates``; ``max_queries`` keeps the first N queries."""
    from reason2rank.data import load_candidates

    items = load_candidates(candidates, topics=topics, run=run, docs=docs, depth=depth)
    return items[:max_queries] if max_queries else items


def load_qrels(source: str) -> Mapping[str, Mapping[str, int]]:
    """A qrels file, or the qrels of an ir_datasets id (``reason2rank.locations`` tells which)."""
    from reason2rank.data import load_ir_dataset, read_qrels
    from reason2rank.data.irds import dataset_id

    name = dataset_id(source, "qrels")
    return read_qrels(source) if name is None else load_ir_dataset(name).qrels
