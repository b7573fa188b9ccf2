"""reason2rank: reasoning rerankers on one shared core, with PyTerrier and Haystack adapters."""

from reason2rank.reranker import Reranker
from reason2rank.types import Doc, Query, ScoredDoc

__version__ = "0.1.0"

__all__ = ["Doc", "Query", "Reranker", "ScoredDoc", "load", "__version__"]


def load(path_or_id, **kwargs) -> Reranker:
    """Open a model directory or hub id as a Reranker (see ``reason2rank.load_model.load``)."""
    from reason2rank.load import load as _load

    return _load(path_or_id, **kwargs)
