"""``reason2rank rerank``: rerank candidates with a model and write a TREC run (and explanations)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reason2rank.cli.common import EXIT_OK, UsageError, add_candidate_args, add_model_args, model_kwargs


def add_parser(sub: Any) -> None:
    """Add the ``rerank`` subcommand."""
    p = sub.add_parser("rerank", help="rerank candidates and write a TREC run")
    add_model_args(p)
    add_candidate_args(p)
    p.add_argument("--out", required=True, help="output TREC run")
    p.add_argument("--tag", default="reason2rank", help="run tag written in the last column")
    p.add_argument("--explain", type=int, default=0, metavar="K", help="explain the top K of each query")
    p.add_argument("--explanations-out", help="JSONL of explanations (needed with --explain)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load candidates, rerank them, write the run (and explanations)."""
    import reason2rank
    from reason2rank.data import atomic_write, load_candidates, write_trec_run

    if args.explain and not args.explanations_out:
        raise UsageError("--explain K needs --explanations-out FILE.jsonl to write the explanations to")
    if args.explain < 0:
        raise UsageError("--explain must be >= 0")
    items = load_candidates(
        args.candidates, topics=args.topics, run=args.run, docs=args.docs, depth=args.depth
    )
    print(
        f"reranking {sum(len(d) for _, d in items)} candidates of {len(items)} queries with {args.model}",
        file=sys.stderr,
    )
    model = reason2rank.load(args.model, **model_kwargs(args))
    results = model.rerank_batch(items, explain=args.explain)
    by_qid = {q.id: ranked for (q, _), ranked in zip(items, results)}
    if args.explanations_out:
        with atomic_write(args.explanations_out) as f:
            for (q, _), ranked in zip(items, results):
                for sd in ranked[: args.explain]:
                    rec = {"qid": q.id, "docno": sd.doc.id, "rank": sd.rank, "score": sd.score,
                           "reasoning": sd.reasoning, "evidence": sd.evidence, "comparison": sd.comparison}  # fmt: skip
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    write_trec_run(args.out, by_qid, tag=args.tag)
    print(f"wrote {args.out}", file=sys.stderr)
    return EXIT_OK
