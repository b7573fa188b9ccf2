"""What several subcommands share: model loading arguments, candidate arguments, usage errors."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = [
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "add_candidate_args",
    "add_model_args",
    "model_kwargs",
]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments: reported as one line, exit status 2."""


def add_model_args(p: argparse.ArgumentParser) -> None:
    """--model, --family, --batch-size, --max-length, --device, --dtype, --runtime, --no-progress."""
    p.add_argument("--model", required=True, help="model directory (with r2r_model.json) or hub id")
    p.add_argument("--family", help="model family when the directory has no r2r_model.json "
                   "(cross-encoder, bi-encoder, causal-lm, cascade, listwise, setwise, pairwise, two-stage)")  # fmt: skip
    p.add_argument(
        "--batch-size", type=int, default=None, help="inputs per forward pass (default 32 CPU, 64 GPU)"
    )
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per input: longer documents are cut (LLM strategies: the context length)")  # fmt: skip
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument(
        "--dtype", default=None, help="auto (default), fp32, bf16, fp16; int8 on --runtime onnx/openvino"
    )
    p.add_argument("--runtime", default=None, choices=["auto", "torch", "onnx", "openvino"],
                   help="encoder families: auto (default: OpenVINO, else ONNX Runtime, where the model has an export "
                   "made with `reason2rank export-onnx`; torch otherwise), torch, onnx, openvino")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="switch off progress bars")


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for ``reason2rank.load`` from the model arguments."""
    kw: dict[str, Any] = {
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
        "max_length": args.max_length,
        "runtime": args.runtime,
    }
    kw = {k: v for k, v in kw.items() if v is not None}
    kw["progress"] = not args.no_progress
    if args.family:
        kw["family"] = args.family
    return kw


def add_candidate_args(p: argparse.ArgumentParser, parquet: bool = False) -> argparse._ArgumentGroup:
    """--candidates, or --run with --topics and --docs (files or ir_datasets ids), and --depth; ``parquet``: the
    command also reads Parquet candidates with --ray."""
    src = p.add_argument_group("candidates: a rank_llm JSON file, or --run with --topics and --docs")
    more = " (with --ray also Parquet: one row per pair)" if parquet else ""
    src.add_argument("--candidates", help="rank_llm JSON/JSONL candidate lists" + more)
    src.add_argument("--run", help="first-stage TREC run, or an ir_datasets id with scored docs")
    src.add_argument(
        "--topics", help="topics file (tsv, jsonl, TREC) or ir_datasets id (e.g. msmarco-passage/train)"
    )
    src.add_argument(
        "--docs", help="docs JSONL (docno/_id, text, title) or ir_datasets id (default: the topics dataset)"
    )
    src.add_argument("--depth", type=int, default=None, help="use only the top DEPTH candidates per query")
    return src
