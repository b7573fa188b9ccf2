"""``reason2rank demo``: the offline demo, which lives with the PyTerrier adapter (``pt_r2r.demo``)."""

from __future__ import annotations

import argparse
from typing import Any

from reason2rank.cli.common import UsageError


def add_parser(sub: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = sub.add_parser(
        "demo", help="offline demo: BM25 (pyterrier-pisa) vs BM25 >> all-MiniLM-L6-v2 on bundled data"
    )
    p.add_argument("--queries", type=int, default=None, help="use only the first N demo queries")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``pt_r2r.demo.main`` (imported only now: it needs the pyterrier and demo extras)."""
    try:
        from pt_r2r.demo import main as demo_main
    except ImportError as e:
        raise UsageError(
            f"the demo needs the pyterrier and demo extras: pip install 'reason2rank[demo]' ({e})"
        ) from e
    return demo_main(n_queries=args.queries)
