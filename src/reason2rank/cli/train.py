"""``reason2rank train``: train a student from a YAML config (``reason2rank.distill``); resumes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reason2rank.cli.common import EXIT_OK, UsageError


def add_parser(sub: Any) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser(
        "train",
        help="train a student from teacher annotations or qrels, or a reranker by GRPO (method: grpo); resumes",
    )
    p.add_argument("--config", required=True, help="training config YAML (see reason2rank.distill.config)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set train.lr=1e-4 --set student.max_length=128 (repeatable)",
    )  # fmt: skip
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the config (with overrides) and train."""
    try:
        from reason2rank.distill import TrainConfig, train
        from reason2rank.distill.config import load_yaml
    except ImportError as e:
        raise UsageError(f"training needs the train extra: pip install 'reason2rank[train]' ({e})") from e
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE (e.g. train.lr=1e-4), got {item!r}")
        overrides[key] = load_yaml(value)
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.no_resume:
        overrides["resume"] = False
    if _method(args.config, overrides) == "grpo":
        return _run_grpo(args, overrides)
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


def _method(path: str, overrides: dict[str, Any]) -> str:
    """The config's ``method``: ``supervised`` (the default) or ``grpo`` (``reason2rank.rl``)."""
    from reason2rank.distill.config import load_yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"training config {p} does not exist")
    data = load_yaml(p.read_text(encoding="utf-8"))
    method = overrides.get(
        "method", data.get("method", "supervised") if isinstance(data, dict) else "supervised"
    )
    if method not in ("supervised", "grpo"):
        raise UsageError(f"method must be 'supervised' or 'grpo' in {p}, got {method!r}")
    return str(method)


def _run_grpo(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    """``method: grpo``: reinforcement learning with TRL (``reason2rank.rl``)."""
    try:
        from reason2rank.rl import GRPOTrainConfig, train_grpo
    except ImportError as e:
        raise UsageError(
            f"GRPO training needs the train extra (trl): pip install 'reason2rank[train]' ({e})"
        ) from e
    cfg = GRPOTrainConfig.from_yaml(args.config, {k: v for k, v in overrides.items() if k != "method"})
    if args.output_dir:
        cfg.output_dir = str(Path(args.output_dir).resolve())
    result = train_grpo(cfg)
    shown = " ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
    print(
        f"GRPO: {result.steps} steps in {result.seconds:.0f}s {shown}; model: {result.model_dir}",
        file=sys.stderr,
    )
    return EXIT_OK
