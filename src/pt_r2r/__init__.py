"""PyTerrier transformers over the reason2rank core: ``R2RReranker``, ``TextLoader`` and ``R2RTeacher``.

Example::

    import pyterrier as pt, pt_r2r
    from pyterrier.measures import nDCG, RR
    from pyterrier_pisa import PisaIndex

    bm25 = PisaIndex("./index").bm25()
    reranker = pt_r2r.R2RReranker("path/to/model")
    pipeline = bm25 % 100 >> pt_r2r.TextLoader("corpus.jsonl") >> reranker
    pt.Experiment([bm25, pipeline], topics, qrels, [nDCG @ 10, RR @ 10])

``R2RTeacher`` (``pt_r2r.teacher``) and the Omni-RAG transformers (``pt_r2r.rag``: ``R2RQueryDecomposer``,
``R2RSubQueryRetriever``, ``R2RFusion``, ``R2RAnswerer``) are imported on first use, so ``import pt_r2r`` works without it.
"""

from __future__ import annotations

from typing import Any

from pt_r2r.images import ImageLoader
from pt_r2r.rerank import R2RCascade, R2RReranker
from pt_r2r.text import MissingDocumentsError, TextLoader, text

__all__ = ["ImageLoader", "MissingDocumentsError", "R2RCascade", "R2RReranker", "TextLoader", "text"]

_LAZY = {
    "R2RTeacher": "pt_r2r.teacher",
    "R2RQueryDecomposer": "pt_r2r.rag",
    "R2RSubQueryRetriever": "pt_r2r.rag",
    "R2RFusion": "pt_r2r.rag",
    "R2RAnswerer": "pt_r2r.rag",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pt_r2r' has no attribute {name!r}")
    import importlib

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise  # the module exists but one of its imports is missing: show that error
        raise AttributeError(f"pt_r2r.{name} is not available: {module_name} is not installed") from e
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
