"""``reason2rank teach``: annotate candidates with an LLM teacher into a resumable JSONL store.

    reason2rank teach --teacher openai:gpt-4o-mini --candidates bm25_top100.json \\
        --tasks direct,compare --out annotations.jsonl

Progress and the final summary go to stderr. Exit status: 0 when every item is in the store (ok,
inconsistent or failed-with-raw-text), 1 when requests went unanswered (rerun to finish them) or the run
stopped, 2 on bad arguments or inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from reason2rank.cli.common import add_candidate_args

EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``teach`` subcommand (``func=run_teach``) to an argparse subparsers object."""
    p = subparsers.add_parser(
        "teach",
        help="annotate candidates with an LLM teacher (direct / comparison / listwise reasoning)",
        description="Annotate candidates with an LLM teacher into a resumable JSONL store; reruns skip what is done.",
    )
    p.add_argument(
        "--teacher",
        required=True,
        help="hf:PATH_OR_ID (local transformers model), openai:MODEL[@BASE_URL] (OpenAI-compatible server), "
        "or haystack:MODULE:ATTR (a Haystack ChatGenerator)",
    )
    p.add_argument(
        "--out", required=True, help="annotation store (JSONL, appended to; reruns skip what is done)"
    )
    p.add_argument(
        "--tasks", default="direct", help="comma-separated: direct, compare, listwise (default: direct)"
    )

    src = add_candidate_args(p)
    src.add_argument("--max-queries", type=int, default=None, help="only the first N queries")
    src.add_argument("--qrels", help="qrels file or ir_datasets id: positives for hard-negative pairs")

    g = p.add_argument_group("prompts and documents")
    g.add_argument(
        "--prompt-dir",
        help="directory with direct*.txt / compare*.txt / listwise*.txt overriding the built-in templates",
    )
    g.add_argument(
        "--doc-max-words", type=int, default=300, help="cut documents to N words (default 300, as R2R)"
    )
    g.add_argument(
        "--doc-max-tokens",
        type=int,
        default=None,
        help="cut documents to N tokens instead (hf teacher's tokenizer or --tokenizer)",
    )
    g.add_argument("--tokenizer", help="local tokenizer path for --doc-max-tokens with a non-hf teacher")
    g.add_argument("--window", type=int, default=5, help="listwise window size (default 5)")
    g.add_argument(
        "--stride", type=int, default=None, help="listwise window stride (default: the window size)"
    )

    g = p.add_argument_group("comparison pairs")
    g.add_argument(
        "--pairs",
        default="adjacent",
        help="strategies in order: adjacent, hard_negative, random (default adjacent)",
    )
    g.add_argument("--pair-budget", type=int, default=10, help="pairs per query (default 10)")
    g.add_argument(
        "--pair-depth", type=int, default=None, help="pairs only among the top N of the teacher's ranking"
    )
    g.add_argument(
        "--swap", action="store_true", help="ask A/B and B/A; keep agreeing answers, record disagreement"
    )
    g.add_argument("--seed", type=int, default=0)

    g = p.add_argument_group("generation")
    g.add_argument(
        "--max-tries", type=int, default=3, help="answers per item before it is stored as failed (default 3)"
    )
    g.add_argument(
        "--max-new-tokens",
        type=_token_budget,
        default=1024,
        metavar="N[,TASK=N...]",
        help="answer budget in tokens, one for all tasks or per task, e.g. '256,listwise=768' (default 1024)",
    )
    g.add_argument(
        "--free-evidence",
        action="store_true",
        help="let a constrained teacher write its evidence as free text (default: one of the document's sentences "
        "or null, a quote by construction)",
    )
    g.add_argument(
        "--comparison-prompt",
        choices=("neutral", "justify"),
        default="neutral",
        help="'neutral' asks which of A and B is more relevant and why (default); 'justify' says A was ranked "
        "above B and asks why (R2R's comparison prompt; not with --swap)",
    )
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--retry-failed", action="store_true", help="ask again the items stored as failed")
    g.add_argument(
        "--price-in", type=float, default=None, help="USD per million prompt tokens (cost summary)"
    )
    g.add_argument("--price-out", type=float, default=None, help="USD per million completion tokens")

    g = p.add_argument_group("openai backend")
    g.add_argument("--max-in-flight", type=int, default=None, help="requests in flight (default 8)")
    g.add_argument("--timeout", type=float, default=None, help="seconds per request (default 120)")
    g.add_argument("--max-retries", type=int, default=None, help="retries on 429/5xx/timeouts (default 6)")
    g.add_argument(
        "--api-key-env",
        default=None,
        help="environment variable holding the API key (default OPENAI_API_KEY)",
    )
    g.add_argument("--response-format", default=None, choices=["auto", "json_schema", "json_object", "none"])
    g.add_argument(
        "--extra-body",
        type=json.loads,
        default=None,
        help='JSON merged into every request, e.g. \'{"chat_template_kwargs": {"enable_thinking": false}}\'',
    )

    g = p.add_argument_group("hf backend")
    g.add_argument("--batch-size", type=int, default=None, help="prompts per generate call (default 8)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: cuda when available)")
    g.add_argument("--dtype", default=None, help="auto (default: bf16 on GPU), fp32, bf16, fp16")

    p.add_argument(
        "--dry-run", action="store_true", help="print the first prompt of each task; call no model"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary-json", help="also write the run summary to this JSON file")
    from reason2rank.cli.rerank import add_ray_args

    add_ray_args(p, "teach")
    p.set_defaults(func=run_teach)
    return p


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    kind = args.teacher.partition(":")[0]
    if kind == "openai":
        return {
            "max_in_flight": args.max_in_flight,
            "timeout": args.timeout,
            "max_retries": args.max_retries,
            "api_key_env": args.api_key_env,
            "response_format": args.response_format,
            "extra_body": args.extra_body,
        }
    if kind == "hf":
        return {"batch_size": args.batch_size, "device": args.device, "dtype": args.dtype}
    if kind == "haystack":
        return {"max_in_flight": args.max_in_flight}
    return {}


def _err(msg: str) -> None:
    print(f"reason2rank teach: error: {msg}", file=sys.stderr)


def run_teach(args: argparse.Namespace) -> int:
    """Run ``reason2rank teach``; returns the exit status (see the module docstring)."""
    from reason2rank.cli.common import UsageError
    from reason2rank.cli.rerank import ray_kwargs
    from reason2rank.llm.backend import parse_backend_spec
    from reason2rank.teacher.annotate import Teacher, TeacherUnavailable
    from reason2rank.teacher.inputs import load_qrels, load_teacher_inputs
    from reason2rank.teacher.pairs import PairPolicy
    from reason2rank.teacher.prompts import TASKS

    try:
        ray_kwargs(args)
    except UsageError as e:
        _err(str(e))
        return EXIT_USAGE
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        _err(f"--tasks must be a comma-separated subset of {','.join(TASKS)}, got {args.tasks!r}")
        return EXIT_USAGE
    try:
        parse_backend_spec(args.teacher)
        if args.candidates is None and args.run is None:
            raise ValueError("give --candidates (rank_llm JSON) or --run with --topics/--docs")
        pairs = PairPolicy(
            strategies=tuple(s.strip() for s in args.pairs.split(",") if s.strip()),
            budget=args.pair_budget,
            depth=args.pair_depth,
            swap=args.swap,
            seed=args.seed,
        )
        items = load_teacher_inputs(
            candidates=args.candidates,
            run=args.run,
            topics=args.topics,
            docs=args.docs,
            depth=args.depth,
            max_queries=args.max_queries,
        )
        qrels = load_qrels(args.qrels) if args.qrels else None
    except (ValueError, FileNotFoundError, ImportError) as e:
        _err(str(e))
        return EXIT_USAGE
    if not items:
        _err("no candidates to annotate")
        return EXIT_USAGE
    n_docs = sum(len(d) for _, d in items)
    print(
        f"reason2rank teach: {len(items)} queries, {n_docs} candidates, tasks {','.join(tasks)}",
        file=sys.stderr,
    )

    if args.dry_run:
        return _dry_run(args, items, tasks, pairs)
    if args.ray:
        return _run_on_ray(args, items, tasks, pairs, qrels)

    try:
        teacher = Teacher(
            args.teacher,
            store=args.out,
            prompts=args.prompt_dir,
            max_tries=args.max_tries,
            max_words=None if args.doc_max_tokens else args.doc_max_words,
            max_tokens=args.doc_max_tokens,
            tokenizer=args.tokenizer,
            window=args.window,
            stride=args.stride,
            pairs=pairs,
            max_new_tokens=args.max_new_tokens,
            comparison_prompt=args.comparison_prompt,
            quote_evidence=not args.free_evidence,
            temperature=args.temperature,
            retry_failed=args.retry_failed,
            price_in=args.price_in,
            price_out=args.price_out,
            progress=not args.no_progress,
            backend_options=_backend_options(args),
        )
    except (ValueError, FileNotFoundError, OSError, RuntimeError, ImportError, TypeError) as e:
        _err(f"cannot start the teacher: {e}")
        return EXIT_USAGE
    code = EXIT_OK
    try:
        try:
            summary = teacher.annotate(items, tasks, qrels=qrels)
        except TeacherUnavailable as e:
            summary = e.summary  # type: ignore[attr-defined]
            code = EXIT_INCOMPLETE
        except KeyboardInterrupt:
            _err(f"interrupted; {args.out} holds every item finished so far, rerun to continue")
            return 130
    finally:
        teacher.close()
    print(summary.format(), file=sys.stderr)
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary.to_dict(), f, indent=2)
    if summary.errors and code == EXIT_OK:
        _err(
            f"{summary.errors} item(s) got no answer from the teacher; rerun the same command to finish them"
        )
        code = EXIT_INCOMPLETE
    elif code != EXIT_OK:
        _err(f"stopped: {summary.aborted}")
    return code


def _run_on_ray(args: argparse.Namespace, items: list, tasks: list[str], pairs: Any, qrels: Any) -> int:
    """``teach --ray``: teacher actors writing shards merged into ``--out`` (``reason2rank.distributed``)."""
    from reason2rank.cli.rerank import ray_kwargs
    from reason2rank.distributed import annotate_dataset

    try:
        summary = annotate_dataset(
            args.teacher, items, store=args.out, tasks=tasks, qrels=qrels, progress=not args.no_progress,
            prompts=args.prompt_dir, max_tries=args.max_tries,
            max_words=None if args.doc_max_tokens else args.doc_max_words, max_tokens=args.doc_max_tokens,
            tokenizer=args.tokenizer, window=args.window, stride=args.stride, pairs=pairs,
            max_new_tokens=args.max_new_tokens, comparison_prompt=args.comparison_prompt,
            quote_evidence=not args.free_evidence,
            temperature=args.temperature, retry_failed=args.retry_failed,
            price_in=args.price_in, price_out=args.price_out, backend_options=_backend_options(args),
            **ray_kwargs(args),
        )  # fmt: skip
    except KeyboardInterrupt:
        _err(
            f"interrupted; {args.out} and {args.out}.shards hold every item finished so far, rerun to continue"
        )
        return 130
    except (ValueError, FileNotFoundError, OSError, RuntimeError, ImportError, TypeError) as e:
        _err(f"the Ray run failed: {e}")
        return EXIT_INCOMPLETE
    print(summary.format(), file=sys.stderr)
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump(summary.to_dict(), f, indent=2)
    if summary.errors or summary.aborted:
        _err(
            f"{summary.errors} item(s) got no answer ({summary.aborted or 'rerun the same command to finish them'})"
        )
        return EXIT_INCOMPLETE
    return EXIT_OK


def _dry_run(args: argparse.Namespace, items: list, tasks: list[str], pairs: Any) -> int:
    from reason2rank.teacher.prompts import (
        DocCutter,
        load_prompts,
        messages_to_text,
        render_compare,
        render_direct,
        render_listwise,
    )

    prompts = load_prompts(args.prompt_dir)
    if args.doc_max_tokens and not args.tokenizer:
        _err("--dry-run with --doc-max-tokens needs --tokenizer")
        return EXIT_USAGE
    cut = DocCutter(
        max_words=None if args.doc_max_tokens else args.doc_max_words,
        max_tokens=args.doc_max_tokens,
        tokenizer=args.tokenizer,
    )
    q, docs = items[0]
    for task in tasks:
        if task == "direct":
            messages, _ = render_direct(prompts[task], q, docs[0], cut)
        elif task == "compare":
            if len(docs) < 2:
                continue
            messages, _ = render_compare(prompts[task], q, docs[0], docs[1], cut)
        else:
            messages, _ = render_listwise(prompts[task], q, docs[: args.window], cut)
        print(f"===== {task} ({prompts[task].version}) =====")
        print(messages_to_text(messages))
    return EXIT_OK


def _token_budget(text: str) -> int | dict[str, int]:
    """``--max-new-tokens``: ``N`` for every task, or ``N,listwise=M`` / ``direct=N,compare=M`` per task."""
    out: dict[str, int] = {}
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            task, _, n = part.rpartition("=")
            out[task.strip() or "default"] = int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a token budget: give N or N,TASK=N (e.g. 256,listwise=768)"
        ) from None
    if not out:
        raise argparse.ArgumentTypeError("--max-new-tokens is empty: give N or N,TASK=N")
    return out["default"] if set(out) == {"default"} else out
