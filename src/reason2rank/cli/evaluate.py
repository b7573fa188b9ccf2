"""``reason2rank eval``: evaluate a TREC run against qrels with ir_measures."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reason2rank.cli.common import EXIT_OK, UsageError


def add_parser(sub: Any) -> None:
    """Add the ``eval`` subcommand."""
    p = sub.add_parser("eval", help="evaluate a TREC run against qrels (ir_measures)")
    p.add_argument("--run", required=True)
    p.add_argument("--qrels", required=True)
    p.add_argument(
        "--metrics", nargs="+", default=["nDCG@10", "RR@10"], help="ir_measures names, e.g. nDCG@10 RR@10"
    )
    p.add_argument("--per-query", action="store_true", help="also print one line per query")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the aggregate (and per-query) measures of a run."""
    import ir_measures

    from reason2rank.data import read_qrels, read_trec_run

    try:
        measures = [ir_measures.parse_measure(m) for m in args.metrics]
    except (ValueError, NameError, SyntaxError) as e:
        raise UsageError(
            f"unknown metric in {args.metrics}: {e}; use ir_measures names such as nDCG@10 RR@10 AP"
        ) from e
    qrels = read_qrels(args.qrels)
    run = {qid: dict(docs) for qid, docs in read_trec_run(args.run).items()}
    missing = set(qrels) - set(run)
    if args.per_query:
        for m in ir_measures.iter_calc(measures, qrels, run):
            print(f"{m.measure}\t{m.query_id}\t{m.value:.4f}")
    agg = ir_measures.calc_aggregate(measures, qrels, run)
    for measure in measures:
        print(f"{measure}\t{agg[measure]:.4f}")
    if missing:
        print(f"note: {len(missing)} judged queries have no results in the run (they count as 0 only if you "
              "add them; ir_measures averages over queries present in both)", file=sys.stderr)  # fmt: skip
    return EXIT_OK
