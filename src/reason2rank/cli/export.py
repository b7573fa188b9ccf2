"""``reason2rank export-onnx``: export an encoder model directory to ONNX (fp32, optionally int8) in place."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from reason2rank.cli.common import EXIT_OK, UsageError


def add_parser(sub: Any) -> None:
    """Add the ``export-onnx`` subcommand."""
    p = sub.add_parser(
        "export-onnx",
        help="export a cross-encoder / bi-encoder model directory to ONNX (for runtime='onnx')",
        description="Writes MODEL/onnx/model.onnx (and model_int8.onnx with --int8), checks it against torch fp32, "
        "and records it in MODEL/r2r_model.json; reason2rank.load(MODEL) then runs it on ONNX Runtime.",
    )
    p.add_argument(
        "model", metavar="MODEL", help="local model directory (cross-encoder, bi-encoder, encoder student)"
    )
    p.add_argument("--family", help="family of a plain transformers directory without r2r_model.json "
                   "(cross-encoder or bi-encoder); an r2r_model.json is then written")  # fmt: skip
    p.add_argument("--int8", action="store_true", help="also write an int8 (dynamically quantised) graph")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--token-states", action="store_true",
                   help="keep a cross-encoder's per-token last-layer states in the graph (to attach an evidence "
                   "head later); without it a cross-encoder with no evidence head gets a scores-only graph whose "
                   "last layer runs at the first position only, same scores, less work")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check and record; print what was written."""
    if args.opset < 14:
        raise UsageError(f"--opset must be 14 or newer (the attention export needs it), got {args.opset}")
    from reason2rank.onnx.export import export_onnx

    print(f"exporting {args.model} to ONNX", file=sys.stderr)
    record = export_onnx(
        args.model, family=args.family, int8=args.int8, opset=args.opset, token_states=args.token_states
    )
    files = [record.fp32] + ([record.int8] if record.int8 else [])
    print(f"wrote {', '.join(files)} in {args.model} (largest difference from torch fp32: "
          f"{record.max_abs_diff:.1e}); recorded in r2r_model.json", file=sys.stderr)  # fmt: skip
    return EXIT_OK
