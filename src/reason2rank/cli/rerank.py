"""``reason2rank rerank``: rerank candidates with a model and write a TREC run (and explanations).

Output paths are checked before any work; the run and the explanations are written together (both or
neither). Ranks are 1-based in both files, as TREC runs have them.
"""

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
    p.add_argument("--out", required=True, help="output TREC run (rank 1-based)")
    p.add_argument("--tag", default="reason2rank", help="run tag written in the last column")
    p.add_argument("--explain", type=int, default=0, metavar="K", help="explain the top K of each query")
    p.add_argument(
        "--explanations-out",
        help="JSONL of explanations, one line per explained document (needed with --explain; rank 1-based, "
        "as in the run)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load candidates, rerank them, write the run (and explanations)."""
    import reason2rank
    from reason2rank.data import load_candidates, write_trec_run
    from reason2rank.data.io import check_writable, staged_outputs

    if args.explain < 0:
        raise UsageError(
            f"--explain must be >= 0 (the number of top documents to explain), got {args.explain}"
        )
    if args.explain and not args.explanations_out:
        raise UsageError("--explain K needs --explanations-out FILE.jsonl to write the explanations to")
    if args.explanations_out and not args.explain:
        raise UsageError("--explanations-out needs --explain K (how many top documents to explain)")
    outputs = [check_writable(args.out, "--out")]
    if args.explanations_out:
        outputs.append(check_writable(args.explanations_out, "--explanations-out"))
        if outputs[0].resolve() == outputs[1].resolve():
            raise UsageError("--out and --explanations-out must be different files")
    items = load_candidates(
        args.candidates, topics=args.topics, run=args.run, docs=args.docs, depth=args.depth
    )
    n_docs = sum(len(d) for _, d in items)
    if not n_docs:
        source = args.candidates or args.run
        raise ValueError(f"nothing to rerank: {source} holds {len(items)} queries and no candidates")
    print(f"reranking {n_docs} candidates of {len(items)} queries with {args.model}", file=sys.stderr)
    model = reason2rank.load(args.model, **model_kwargs(args))
    results = model.rerank_batch(items, explain=args.explain)
    by_qid = {q.id: ranked for (q, _), ranked in zip(items, results)}
    with staged_outputs(*outputs) as staged:
        write_trec_run(staged[0], by_qid, tag=args.tag)
        if args.explanations_out:
            lines = []
            for (q, _), ranked in zip(items, results):
                for sd in ranked[: args.explain]:
                    rec = {"qid": q.id, "docno": sd.doc.id, "rank": sd.rank + 1, "score": sd.score,
                           "reasoning": sd.reasoning, "evidence": sd.evidence, "comparison": sd.comparison}  # fmt: skip
                    lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
            with open(staged[1], "w", encoding="utf-8") as f:
                f.writelines(lines)
    shown = " and ".join(str(p) for p in outputs)
    print(f"wrote {shown}", file=sys.stderr)
    return EXIT_OK
