"""How error and warning messages name the things they are about (one style everywhere)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["listing"]

#: how many ids a message names before it says "and N more"
MAX_LISTED = 5


def listing(ids: Sequence[object], limit: int = MAX_LISTED) -> str:
    """``'a', 'b', 'c' and 4 more``: the first ``limit`` items quoted, then how many are left out."""
    shown = ", ".join(repr(i) for i in ids[:limit])
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return f"{shown}{more}"
