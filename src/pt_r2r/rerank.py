"""``R2RReranker``: a PyTerrier transformer over ``reason2rank.Reranker`` (DataFrame rows <-> core types).

No model logic lives here: rows become ``Query``/``Doc`` objects, the whole frame goes through one
``Reranker.rerank_batch`` call (the engine batches across queries), and the scores, ranks and
explanations come back as columns.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
import pyterrier as pt

from pt_r2r.frames import frame_to_items
from reason2rank.reranker import Reranker

__all__ = ["EXPLANATION_COLUMNS", "R2RReranker"]

#: columns added when ``explain > 0``: filled for the top-k of each query, ``None`` elsewhere
EXPLANATION_COLUMNS = ("reasoning", "evidence", "comparison")


class R2RReranker(pt.Transformer):
    """Reranks a result frame with a reason2rank model.

    Example::

        import pyterrier as pt, pt_r2r
        from pyterrier.measures import nDCG
        from pyterrier_pisa import PisaIndex

        bm25 = PisaIndex("./index").bm25()
        r2r = bm25 % 100 >> pt_r2r.TextLoader("corpus.jsonl") >> pt_r2r.R2RReranker("path/to/model")
        pt.Experiment([bm25, r2r], topics, qrels, [nDCG @ 10])

    Args:
        model: a model directory or hub id, opened with ``reason2rank.load`` on the first non-empty
            transform, or an already built ``reason2rank.Reranker``.
        batch_size: pairs per forward pass (default: the engine's, 64 on GPU and 32 on CPU).
        text_field: the column holding the document text.
        explain: explain the top-``explain`` documents of each query in ``reasoning``, ``evidence`` and
            ``comparison`` columns (``None`` below the top-k); 0 adds no columns.
        verbose: progress bars while scoring.
        device: ``"cuda"``, ``"cpu"``, ... (default: GPU when there is one).
        title_field: a column holding titles, read with the text where the model uses titles.
        image_field: a column of page images or figures (a path, bytes, a PIL image or a list of them) for the
            vision-language families (``family="vlm"``, ``"vlm-listwise"``); see ``pt_r2r.ImageLoader``. With it the
            text column may be absent (``text_field=None``).
        **load_kwargs: passed to ``reason2rank.load`` (``family=``, ``dtype=``, ``max_length=``, ...).

    Output: every input column, ``score`` replaced by the model's score, 0-based ``rank``, sorted by
    ``qid`` then ``rank``.
    """

    # help_url set so that pt.schematic does not fetch pyterrier's objects.inv from readthedocs to look one up
    schematic = {"label": "R2RReranker", "help_url": None}

    def __init__(
        self,
        model: str | os.PathLike | Reranker,
        batch_size: int | None = None,
        text_field: str = "text",
        explain: int = 0,
        verbose: bool = True,
        device: str | None = None,
        title_field: str | None = None,
        image_field: str | None = None,
        **load_kwargs: Any,
    ) -> None:
        if text_field is None and image_field is None:
            raise ValueError("R2RReranker needs a text_field, an image_field, or both")
        if isinstance(explain, bool) or not isinstance(explain, int) or explain < 0:
            raise ValueError(
                f"explain must be a non-negative int (how many top documents to explain), got {explain!r}"
            )
        if isinstance(model, Reranker):
            given = {"batch_size": batch_size, "device": device, **load_kwargs}
            given = {k: v for k, v in given.items() if v is not None}
            if given:
                raise ValueError(
                    f"R2RReranker got a built Reranker and loading options {sorted(given)}; those only apply when "
                    "R2RReranker loads the model: pass a path/hub id, or give them to reason2rank.load(...)"
                )
            self._reranker: Reranker | None = model
        elif isinstance(model, (str, os.PathLike)):
            self._reranker = None
        else:
            raise TypeError(
                f"model must be a path, a hub id or a reason2rank.Reranker, got {type(model).__name__}"
            )
        self.model = model
        self.batch_size = batch_size
        self.text_field = text_field
        self.explain = explain
        self.verbose = verbose
        self.device = device
        self.title_field = title_field
        self.image_field = image_field
        self.load_kwargs = dict(load_kwargs)

    # -- the model ------------------------------------------------------------------------------------
    @property
    def reranker(self) -> Reranker:
        """The core ``Reranker`` (loaded on first access when built from a path or hub id)."""
        if self._reranker is None:
            from reason2rank import load

            kwargs = dict(self.load_kwargs)
            if self.batch_size is not None:
                kwargs["batch_size"] = self.batch_size
            if self.device is not None:
                kwargs["device"] = self.device
            kwargs.setdefault("progress", self.verbose)
            self._reranker = load(self.model, **kwargs)
        return self._reranker

    # -- validation -------------------------------------------------------------------------------------
    def _validate(self, inp: pd.DataFrame) -> None:
        fields = [self.text_field, self.title_field, self.image_field]
        extra = ["query"] + [f for f in fields if f]
        try:
            pt.validate.result_frame(inp, extra_columns=extra)
        except pt.validate.InputValidationError as e:
            if self.text_field is None or self.text_field in inp.columns:
                if self.image_field and self.image_field not in inp.columns:
                    raise pt.validate.InputValidationError(
                        f"R2RReranker needs a {self.image_field!r} column with each document's images, but the input "
                        f"has columns {list(inp.columns)}; add one with: pipeline = bm25 >> "
                        f"pt_r2r.ImageLoader('pages/', image_field={self.image_field!r}) >> reranker",
                        e.modes,
                    ) from None
                raise
            loader = "pt_r2r.TextLoader('corpus.jsonl'" + (
                f", text_field={self.text_field!r})" if self.text_field != "text" else ")"
            )
            message = (
                f"R2RReranker needs a {self.text_field!r} column with each document's text, but the input has "
                f"columns {list(inp.columns)} (first-stage retrievers such as PISA return no text); "
                f"add one with: pipeline = bm25 >> {loader} >> reranker "
                "(a dict docno->text, a DataFrame or an ir_datasets docstore work in place of 'corpus.jsonl')."
            )
            raise pt.validate.InputValidationError(message, e.modes) from None

    # -- the transformer ----------------------------------------------------------------------------------
    def transform(self, inp: pd.DataFrame) -> pd.DataFrame:
        self._validate(inp)
        out = inp.copy()
        if len(out) == 0:
            out["score"] = pd.Series(index=out.index, dtype="float64")
            out["rank"] = pd.Series(index=out.index, dtype="int64")
            for col in self._explanation_columns():
                out[col] = pd.Series(index=out.index, dtype=object)
            return out

        items, rows = frame_to_items(inp, self.text_field, self.title_field, image_field=self.image_field)
        ranked = self.reranker.rerank_batch(items, explain=self.explain)
        by_id = [{sd.doc.id: sd for sd in scored} for scored in ranked]

        columns = self._explanation_columns()
        found = [by_id[g][items[g][1][j].id] for g, j in rows]
        scores = np.array([sd.score for sd in found], dtype=np.float64)
        explanations = {c: [getattr(sd, c) for sd in found] for c in columns}

        out["score"] = scores
        for c in columns:
            out[c] = pd.Series(explanations[c], index=out.index, dtype=object)  # None stays None
        out = pt.model.add_ranks(out)  # drops and re-appends rank: put the columns back in input order
        order = list(inp.columns) + [c for c in ("score", "rank", *columns) if c not in inp.columns]
        return out[order].sort_values(["qid", "rank"], kind="stable").reset_index(drop=True)

    def _explanation_columns(self) -> tuple[str, ...]:
        return EXPLANATION_COLUMNS if self.explain else ()

    def __repr__(self) -> str:
        target = self.model if isinstance(self.model, Reranker) else str(self.model)
        args = [repr(target)]
        if "family" in self.load_kwargs:
            args.append(f"family={self.load_kwargs['family']!r}")
        if self.explain:
            args.append(f"explain={self.explain}")
        return f"R2RReranker({', '.join(args)})"


def R2RCascade(
    model: str | os.PathLike,
    *,
    etm_family: str | None = None,
    selector: str = "bm25",
    top_s: int = 4,
    aggregation: str = "max",
    **kwargs: Any,
) -> R2RReranker:
    """The IDCM passage cascade as a PyTerrier reranker: ``model`` is the expensive scorer (ETM), run only
    on the ``top_s`` windows per document that the cheap ``selector`` keeps (see ``reason2rank.cascade``)."""
    return R2RReranker(
        model,
        family="cascade",
        etm_family=etm_family,
        selector=selector,
        top_s=top_s,
        aggregation=aggregation,
        **kwargs,
    )
