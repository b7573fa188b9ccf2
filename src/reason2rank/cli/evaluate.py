"""``reason2rank eval``: evaluate a TREC run against qrels with ir_measures."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reason2rank.cli.common import EXIT_OK, UsageError


def add_parser(sub: Any) -> None:
    """Add the ``eval`` subcommand."""
    p = sub.add_parser("eval", help="evaluate a TREC run against qrels (ir_measures)")
    p.add_argument("--run", required=True, help="TREC run to evaluate")
    p.add_argument("--qrels", required=True, help="qrels file (TREC or BEIR TSV)")
    p.add_argument(
        "--metrics", nargs="+", default=["nDCG@10", "RR@10"], help="ir_measures names, e.g. nDCG@10 RR@10"
    )
    p.add_argument("--per-query", action="store_true", help="also print one line per query")
    p.add_argument(
        "--judged-only", action="store_true",
        help="average over the judged queries the run has (default: over all judged queries, missing ones as 0)",
    )  # fmt: skip
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
    from reason2rank.data.io import require_file

    require_file(args.run, "--run")
    require_file(args.qrels, "--qrels")
    qrels = read_qrels(args.qrels)
    run = {qid: dict(docs) for qid, docs in read_trec_run(args.run).items()}
    missing = sorted(set(qrels) - set(run))
    present = {qid: judged for qid, judged in qrels.items() if qid in run}
    main_qrels = present if args.judged_only else qrels
    if args.per_query:
        for m in ir_measures.iter_calc(measures, main_qrels, run):
            print(f"{m.measure}\t{m.query_id}\t{m.value:.4f}")
    agg = ir_measures.calc_aggregate(measures, main_qrels, run)
    for measure in measures:
        print(f"{measure}\t{agg[measure]:.4f}")
    if missing:
        if args.judged_only:
            scope = f"the figures above average over the {len(present)} judged queries the run has"
            other_qrels, other = qrels, f"over all {len(qrels)} judged queries, the missing ones counted as 0"
        else:
            scope = f"the figures above average over all {len(qrels)} judged queries, the missing ones counted as 0"
            other_qrels, other = present, f"over the {len(present)} judged queries the run has"
        alt = ir_measures.calc_aggregate(measures, other_qrels, run) if other_qrels else {}
        shown = " ".join(f"{m} {alt[m]:.4f}" for m in measures if m in alt)
        print(
            f"note: {len(missing)} of {len(qrels)} judged queries have no results in the run; {scope}. "
            f"{other.capitalize()}: {shown or 'nothing to average'}",
            file=sys.stderr,
        )
    return EXIT_OK
