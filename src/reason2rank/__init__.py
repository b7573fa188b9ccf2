"""reason2rank: reasoning rerankers on one shared core, with PyTerrier and Haystack adapters.

``import reason2rank`` is light: torch and transformers are imported only when a model is built.
"""

from reason2rank.load import FAMILIES, load, register_family
from reason2rank.reranker import Ranking, Reranker
from reason2rank.types import Doc, Query, ScoredDoc

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "Doc",
    "Query",
    "Ranking",
    "Reranker",
    "ScoredDoc",
    "__version__",
    "load",
    "register_family",
]
