"""``R2RTeacher``: a PyTerrier transformer that annotates a result frame with an LLM teacher.

No teacher logic lives here: rows become ``Query``/``Doc`` objects, ``reason2rank.teacher.Teacher`` does
the direct-relevance annotation (stored, resumable), and the records come back as columns.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd
import pyterrier as pt

from pt_r2r.frames import frame_to_items
from reason2rank.teacher import AnnotationStore, Teacher

__all__ = ["TEACHER_COLUMNS", "R2RTeacher"]

#: columns added to every row
TEACHER_COLUMNS = ("relevance", "reasoning", "evidence", "evidence_found", "teacher_status")


class R2RTeacher(pt.Transformer):
    """Annotates each (query, document) row with the teacher's direct relevance reasoning.

    Example (training data for a student)::

        import pyterrier as pt, pt_r2r
        teacher = pt_r2r.R2RTeacher("openai:gpt-4o-mini", store="annotations.jsonl")
        (bm25 % 20 >> pt_r2r.TextLoader("corpus.jsonl") >> teacher)(train_topics)

    Args:
        teacher: a spec string (``hf:PATH``, ``openai:MODEL[@URL]``, ``haystack:MODULE:ATTR``), a
            teacher ``Backend``, a Haystack ChatGenerator, or a built ``reason2rank.teacher.Teacher``.
        store: the annotation store (a JSONL path): reruns reuse what is there; ``None`` keeps the
            annotations in memory.
        text_field / title_field: columns with the document text / title.
        verbose: a progress bar while annotating.
        **teacher_kwargs: passed to ``Teacher`` (``max_tries``, ``max_words``, ``max_new_tokens``,
            ``backend_options={...}``, ...).

    Output: every input row and column, in the input order, plus ``relevance`` (nullable Int64, 0-3),
    ``reasoning``, ``evidence`` (a sentence of the document or None), ``evidence_found`` and
    ``teacher_status`` (``ok`` / ``failed``; None when the request got no answer). The input's
    ``score`` and ``rank`` are left as they are.
    """

    schematic = {"label": "R2RTeacher"}

    def __init__(
        self,
        teacher: Any,
        *,
        store: str | os.PathLike | AnnotationStore | None = None,
        text_field: str = "text",
        title_field: str | None = None,
        verbose: bool = False,
        **teacher_kwargs: Any,
    ) -> None:
        if isinstance(teacher, Teacher):
            if store is not None or teacher_kwargs:
                raise ValueError(
                    "R2RTeacher got a built Teacher: give store and options to Teacher(...) instead"
                )
            self._teacher: Teacher | None = teacher
        else:
            self._teacher = None
        self.teacher = teacher
        self.store = store
        self.text_field = text_field
        self.title_field = title_field
        self.verbose = verbose
        self.teacher_kwargs = dict(teacher_kwargs)

    @property
    def core(self) -> Teacher:
        """The core ``Teacher`` (built on first use)."""
        if self._teacher is None:
            kwargs = {"progress": self.verbose, **self.teacher_kwargs}
            self._teacher = Teacher(self.teacher, store=self.store, **kwargs)
        return self._teacher

    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        extra = ["query", self.text_field] + ([self.title_field] if self.title_field else [])
        pt.validate.result_frame(inp, extra_columns=extra)
        out = inp.copy()
        if len(out) == 0:
            out["relevance"] = pd.Series(index=out.index, dtype="Int64")
            for col in TEACHER_COLUMNS[1:]:
                out[col] = pd.Series(index=out.index, dtype=object)
            return out

        # a repeated row is annotated once; rows without text are not shown to the teacher (the core's policy)
        items, rows = frame_to_items(inp, self.text_field, self.title_field, dedupe=True)

        teacher = self.core
        teacher.annotate(items, tasks=("direct",))
        records = teacher.records("direct", items)

        values: dict[str, list[Any]] = {c: [None] * len(out) for c in TEACHER_COLUMNS}
        for i, (g, j) in enumerate(rows):
            rec = records[g][j]
            if rec is None:
                continue
            values["teacher_status"][i] = rec["status"]
            output = rec.get("output") or {}
            for col in ("relevance", "reasoning", "evidence", "evidence_found"):
                values[col][i] = output.get(col)
        out["relevance"] = pd.array(values["relevance"], dtype="Int64")
        for col in TEACHER_COLUMNS[1:]:
            out[col] = pd.Series(values[col], index=out.index, dtype=object)
        return out

    def close(self) -> None:
        if self._teacher is not None and not isinstance(self.teacher, Teacher):
            self._teacher.close()
            self._teacher = None

    def __repr__(self) -> str:
        name = (
            self.teacher.name
            if isinstance(self.teacher, Teacher)
            else getattr(self.teacher, "name", self.teacher)
        )
        return f"R2RTeacher({str(name)!r})"
