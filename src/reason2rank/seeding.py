"""Reproducible randomness per query: the same (seed, query id) gives the same draws in every component
(the teacher's pair selection, the training set's negative sampling), whatever else is in the run."""

from __future__ import annotations

import hashlib
import random

__all__ = ["query_rng"]


def query_rng(seed: int, qid: str, purpose: str = "") -> random.Random:
    """A ``random.Random`` seeded from sha256 of ``seed``, the query id and ``purpose`` (a label that keeps two
    uses for the same query independent, e.g. ``"ab"`` for which document is shown first)."""
    material = f"{seed}:{qid}" + (f"\x00{purpose}" if purpose else "")
    digest = hashlib.sha256(material.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
