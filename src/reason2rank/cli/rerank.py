"""``reason2rank rerank``: rerank candidates with a model and write a TREC run (and explanations).

``--ray`` reranks on Ray Data (``reason2rank.distributed.rerank_dataset``): ``--actors`` actors, each loading the
model once, on a local Ray or the cluster at ``--address``; the run is the same as in-process.

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
    add_candidate_args(p, parquet=True)
    p.add_argument("--out", required=True, help="output TREC run (rank 1-based), or Parquet (*.parquet: qid, docno, "
                   "score, rank 0-based)")  # fmt: skip
    p.add_argument("--tag", default="reason2rank", help="run tag written in the last column")
    p.add_argument("--explain", type=int, default=0, metavar="K", help="explain the top K of each query")
    p.add_argument(
        "--explanations-out",
        help="JSONL of explanations, one line per explained document (needed with --explain; rank 1-based, "
        "as in the run)",
    )
    g = p.add_argument_group("LLM ranking strategies (--strategy listwise | setwise | pairwise | icr)")
    g.add_argument("--strategy", choices=["listwise", "setwise", "pairwise", "icr"],
                   help="rank with an LLM: --model is the LLM's directory or hub id, or give --backend (icr: "
                   "attention of a local model)")  # fmt: skip
    g.add_argument("--backend", help="LLM backend instead of a local model: openai:MODEL@URL, hf:PATH, vllm:PATH, "
                   "haystack:MODULE:ATTR")  # fmt: skip
    g.add_argument("--prompt", help="prompt template: a built-in name (listwise: rankzephyr_v1, rankgpt_v1, "
                   "reasoning_v1; setwise: plain_v1, rank_r1_v1; pairwise: prp_v1, reasoning_v1; icr: icr_v1) or a file")  # fmt: skip
    g.add_argument("--window", type=int, help="listwise window (default 20); icr: documents per prompt (default: "
                   "as many as the context holds)")  # fmt: skip
    g.add_argument("--stride", type=int, help="listwise stride (default 10)")
    g.add_argument("--num-child", type=int, help="setwise children per heap node (default 3)")
    g.add_argument("--k", type=int, help="setwise documents to extract / pairwise passes (default 10)")
    g.add_argument("--mode", choices=["sorting", "allpairs"], help="pairwise mode (default sorting)")
    g.add_argument("--readout", choices=["generation", "likelihood"], help="setwise/pairwise read-out")
    g.add_argument("--rerank-depth", type=int, help="rerank only the top N of each query with the LLM")
    g.add_argument("--max-new-tokens", type=int, help="answer token budget")
    g.add_argument("--cache", help="response cache file (SQLite): a rerun of the same prompts costs nothing")
    g.add_argument("--llm-log", help="write every LLM call (tokens, latency, repaired or not) to this JSONL")
    add_ray_args(p, "rerank")
    p.set_defaults(func=run)


def add_ray_args(p: argparse.ArgumentParser, command: str) -> None:
    """--ray, --address, --actors, --actor-cpus, --actor-gpus and the batch an actor gets (rerank and teach)."""
    g = p.add_argument_group("scale-out on Ray Data (pip install 'reason2rank[ray]')")
    g.add_argument(
        "--ray", action="store_true", help="run on Ray Data: a pool of actors, each loading the model once"
    )
    g.add_argument(
        "--address", help="Ray cluster to join (auto, ray://HOST:10001, HOST:6379; default: a local Ray)"
    )
    g.add_argument("--actors", type=int, default=1, help="actors in the pool (default 1)")
    g.add_argument("--actor-cpus", type=float, default=1.0, help="logical CPUs per actor (default 1)")
    g.add_argument(
        "--actor-gpus", type=float, default=0.0, help="GPUs per actor (default 0; 1 = one model per GPU)"
    )
    if command == "rerank":
        g.add_argument("--pairs-per-call", type=int, default=None,
                       help="pairs per actor call for pointwise models (default: about 4 calls per actor, "
                            "64-4096 pairs)")  # fmt: skip
    g.add_argument("--queries-per-call", type=int, default=None,
                   help="whole queries per actor call (default: 8 for rerank, 4 for teach)")  # fmt: skip


def ray_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``rerank_dataset`` / ``annotate_dataset`` options of the Ray arguments; usage errors for bad ones."""
    if not args.ray:
        given = [f"--{k.replace('_', '-')}" for k in ("address",) if getattr(args, k)]
        if args.actors != 1 or args.actor_cpus != 1.0 or args.actor_gpus != 0.0:
            given.append("--actors/--actor-cpus/--actor-gpus")
        if given:
            raise UsageError(f"{given[0]} needs --ray")
        return {}
    if args.actors < 1:
        raise UsageError(f"--actors must be >= 1, got {args.actors}")
    if args.actor_cpus < 0 or args.actor_gpus < 0:
        raise UsageError("--actor-cpus and --actor-gpus must be >= 0")
    kw: dict[str, Any] = {"address": args.address, "concurrency": args.actors, "num_cpus": args.actor_cpus,
                          "num_gpus": args.actor_gpus}  # fmt: skip
    if getattr(args, "pairs_per_call", None) is not None:
        if args.pairs_per_call < 1:
            raise UsageError(f"--pairs-per-call must be >= 1, got {args.pairs_per_call}")
        kw["pairs_per_call"] = args.pairs_per_call
    if args.queries_per_call is not None:
        if args.queries_per_call < 1:
            raise UsageError(f"--queries-per-call must be >= 1, got {args.queries_per_call}")
        kw["queries_per_call"] = args.queries_per_call
    return kw


_STRATEGY_ARGS = {
    "window": ("listwise", "icr"), "stride": ("listwise",), "num_child": ("setwise",), "k": ("setwise", "pairwise"),
    "mode": ("pairwise",), "readout": ("setwise", "pairwise"), "prompt": ("listwise", "setwise", "pairwise", "icr"),
    "backend": ("listwise", "setwise", "pairwise", "icr"), "rerank_depth": ("listwise", "setwise", "pairwise", "icr"),
    "max_new_tokens": ("listwise", "setwise", "pairwise"), "cache": ("listwise", "setwise", "pairwise"),
    "llm_log": ("listwise", "setwise", "pairwise"),
}  # fmt: skip


def strategy_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``reason2rank.load`` options of the LLM strategy arguments; a usage error for one that does not apply."""
    given = {k: getattr(args, k) for k in _STRATEGY_ARGS if getattr(args, k, None) is not None}
    if args.strategy is None:
        if given:
            raise UsageError(
                f"--{next(iter(given)).replace('_', '-')} needs --strategy (listwise, setwise, pairwise, icr)"
            )
        return {}
    if getattr(args, "runtime", None) not in (None, "auto", "torch") or str(args.dtype).lower() == "int8":
        raise UsageError(
            "--runtime onnx/openvino and --dtype int8 are for the encoder families (cross-encoder, bi-encoder); "
            f"--strategy {args.strategy} generates with an LLM: drop them (use --dtype fp32, bf16 or fp16)"
        )
    for key in given:
        if args.strategy not in _STRATEGY_ARGS[key]:
            raise UsageError(f"--{key.replace('_', '-')} does not apply to --strategy {args.strategy}")
    kw = {k: v for k, v in given.items() if k not in ("rerank_depth", "llm_log")}
    if "rerank_depth" in given:
        kw["depth"] = given["rerank_depth"]
    kw["family"] = args.strategy
    return kw


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
    strategy_kwargs(args)  # argument mistakes before any work
    distributed = ray_kwargs(args)
    if args.ray and (args.llm_log or args.cache):
        raise UsageError(
            f"--{'llm-log' if args.llm_log else 'cache'} does not work with --ray: the LLM calls are made in the actors "
            "(each has its own log, and one SQLite cache file is not shared safely between processes)"
        )
    outputs = [check_writable(args.out, "--out")]
    if args.llm_log:
        check_writable(args.llm_log, "--llm-log")
    if args.explanations_out:
        outputs.append(check_writable(args.explanations_out, "--explanations-out"))
        if outputs[0].resolve() == outputs[1].resolve():
            raise UsageError("--out and --explanations-out must be different files")
    parquet = bool(args.candidates) and str(args.candidates).endswith(".parquet")
    if parquet and not args.ray:
        raise UsageError(
            "Parquet candidates (one row per pair) are read by Ray Data: add --ray, or give rank_llm JSON or a "
            "TREC run with --topics and --docs"
        )
    if parquet and args.depth is not None:
        raise UsageError("--depth applies to rank_llm JSON and TREC runs; cut a Parquet input before the run")
    items: Any = None
    if parquet:
        print(f"reranking the pairs of {args.candidates} with {args.model}", file=sys.stderr)
    else:
        items = load_candidates(
            args.candidates, topics=args.topics, run=args.run, docs=args.docs, depth=args.depth
        )
        n_docs = sum(len(d) for _, d in items)
        if not n_docs:
            source = args.candidates or args.run
            raise ValueError(f"nothing to rerank: {source} holds {len(items)} queries and no candidates")
        print(f"reranking {n_docs} candidates of {len(items)} queries with {args.model}", file=sys.stderr)
    options = {**model_kwargs(args), **strategy_kwargs(args)}
    if args.strategy:
        options.pop("progress", None)
        options["progress"] = None if not args.no_progress else False
    if args.ray:
        from reason2rank.distributed import rerank_dataset

        options.pop("progress", None)
        run_ = rerank_dataset(args.model, str(args.candidates) if parquet else items, explain=args.explain,
                              progress=not args.no_progress, **distributed, **options)  # fmt: skip
        print(f"{run_.actors} actor(s), by {run_.mode}: {run_.elapsed_s:.1f} s", file=sys.stderr)
        by_qid = dict(run_.results)
    else:
        model = reason2rank.load(args.model, **options)
        results = model.rerank_batch(items, explain=args.explain)
        by_qid = {q.id: ranked for (q, _), ranked in zip(items, results)}
        padding = getattr(getattr(model, "engine", None), "padding", None)
        if padding is not None and padding.slots:  # a pointwise family: how much of its batches was padding
            print(f"batches held {padding.tokens} tokens in {padding.slots} slots "
                  f"({100 * padding.padded_fraction:.1f}% padding)", file=sys.stderr)  # fmt: skip
        log = getattr(getattr(model, "llm", None), "log", None)
        if args.llm_log and log is not None:
            log.save(args.llm_log)
    with staged_outputs(*outputs) as staged:
        if str(args.out).endswith(".parquet"):
            from reason2rank.distributed.rows import write_results

            write_results(staged[0], list(by_qid.items()), explain=bool(args.explain))
        else:
            write_trec_run(staged[0], by_qid, tag=args.tag)
        if args.explanations_out:
            lines = []
            for qid, ranked in by_qid.items():
                for sd in ranked[: args.explain]:
                    rec = {"qid": qid, "docno": sd.doc.id, "rank": sd.rank + 1, "score": sd.score,
                           "reasoning": sd.reasoning, "evidence": sd.evidence, "comparison": sd.comparison}  # fmt: skip
                    lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
            with open(staged[1], "w", encoding="utf-8") as f:
                f.writelines(lines)
    shown = " and ".join(str(p) for p in outputs)
    print(f"wrote {shown}", file=sys.stderr)
    return EXIT_OK
