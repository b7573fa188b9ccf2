"""The ``reason2rank`` command: rerank, eval, teach, train, demo.

Progress goes to stderr, results to files written atomically (a temp file renamed into place), and any
failure exits non-zero with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model directory (with r2r_model.json) or hub id")
    p.add_argument("--family", help="model family when the directory has no r2r_model.json "
                   "(cross-encoder, bi-encoder, causal-lm)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--dtype", default=None, help="auto (default), fp32, bf16, fp16")
    p.add_argument("--no-progress", action="store_true", help="switch off progress bars")


def _model_kwargs(args: argparse.Namespace) -> dict:
    kw = {
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
        "max_length": args.max_length,
    }
    kw = {k: v for k, v in kw.items() if v is not None}
    kw["progress"] = not args.no_progress
    if args.family:
        kw["family"] = args.family
    return kw


def add_candidate_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """--candidates, or --run with --topics and --docs (files or ir_datasets ids), and --depth."""
    src = p.add_argument_group("candidates: a rank_llm JSON file, or --run with --topics and --docs")
    src.add_argument("--candidates", help="rank_llm JSON/JSONL candidate lists")
    src.add_argument("--run", help="first-stage TREC run, or an ir_datasets id with scored docs")
    src.add_argument(
        "--topics", help="topics file (tsv, jsonl, TREC) or ir_datasets id (e.g. msmarco-passage/train)"
    )
    src.add_argument(
        "--docs", help="docs JSONL (docno/_id, text, title) or ir_datasets id (default: the topics dataset)"
    )
    src.add_argument("--depth", type=int, default=None, help="use only the top DEPTH candidates per query")
    return src


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reason2rank", description="Reasoning rerankers for PyTerrier and Haystack"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("rerank", help="rerank candidates and write a TREC run")
    _add_model_args(p)
    add_candidate_args(p)
    p.add_argument("--out", required=True, help="output TREC run")
    p.add_argument("--tag", default="reason2rank", help="run tag written in the last column")
    p.add_argument("--explain", type=int, default=0, metavar="K", help="explain the top K of each query")
    p.add_argument("--explanations-out", help="JSONL of explanations (needed with --explain)")
    p.set_defaults(func=cmd_rerank)

    p = sub.add_parser("eval", help="evaluate a TREC run against qrels (ir_measures)")
    p.add_argument("--run", required=True)
    p.add_argument("--qrels", required=True)
    p.add_argument(
        "--metrics", nargs="+", default=["nDCG@10", "RR@10"], help="ir_measures names, e.g. nDCG@10 RR@10"
    )
    p.add_argument("--per-query", action="store_true", help="also print one line per query")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "demo", help="offline demo: BM25 (pyterrier-pisa) vs BM25 >> all-MiniLM-L6-v2 on bundled data"
    )
    p.add_argument("--queries", type=int, default=None, help="use only the first N demo queries")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train", help="train a student (encoder or decoder) from teacher annotations or qrels; resumes"
    )
    p.add_argument("--config", required=True, help="training config YAML (see reason2rank.distill.config)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=1e-4 --set student.max_length=128 (repeatable)",
    )  # fmt: skip
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.set_defaults(func=cmd_train)

    try:
        from reason2rank.teacher.cli import add_teach_parser
    except ImportError:
        pass
    else:
        add_teach_parser(sub)
    return parser


def cmd_rerank(args: argparse.Namespace) -> int:
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
    model = reason2rank.load(args.model, **_model_kwargs(args))
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


def cmd_eval(args: argparse.Namespace) -> int:
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
    for m in measures:
        print(f"{m}\t{agg[m]:.4f}")
    if missing:
        print(f"note: {len(missing)} judged queries have no results in the run (they count as 0 only if you "
              "add them; ir_measures averages over queries present in both)", file=sys.stderr)  # fmt: skip
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from pt_r2r.demo import main as demo_main
    except ImportError as e:
        raise UsageError(
            f"the demo needs the pyterrier and demo extras: pip install 'reason2rank[demo]' ({e})"
        ) from e
    return demo_main(n_queries=args.queries)


def cmd_train(args: argparse.Namespace) -> int:
    import yaml

    try:
        from reason2rank.distill import TrainConfig, train
    except ImportError as e:
        raise UsageError(f"training needs the train extra: pip install 'reason2rank[train]' ({e})") from e
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE (e.g. train.lr=1e-4), got {item!r}")
        overrides[key] = yaml.safe_load(value)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.no_resume:
        overrides["resume"] = False
    cfg = TrainConfig.from_yaml(args.config, overrides)
    if args.output_dir:
        cfg.output_dir = str(Path(args.output_dir).resolve())
    result = train(cfg)
    shown = " ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    print(
        f"trained {result.steps} steps in {result.seconds:.0f}s {shown}; model: {result.model_dir}",
        file=sys.stderr,
    )
    return EXIT_OK


class UsageError(Exception):
    pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"reason2rank {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        KeyError,
        ImportError,
        OSError,
        TypeError,
    ) as e:
        if args.verbose:
            raise
        print(f"reason2rank {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
