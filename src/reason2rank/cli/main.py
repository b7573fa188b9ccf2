"""The ``reason2rank`` command: rerank, eval, teach, train, demo, export-onnx.

Progress goes to stderr, results to files written atomically (a temp file renamed into place), and any
failure exits non-zero with a one-line reason. Only the command that runs imports what it needs (torch,
transformers, pyterrier), so ``reason2rank --help`` is quick.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from reason2rank.cli import demo, evaluate, export, rerank, teach, train
from reason2rank.cli.common import EXIT_ERROR, UsageError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="reason2rank", description="Reasoning rerankers for PyTerrier and Haystack"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (rerank, evaluate, demo, train, teach, export):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        print(f"reason2rank {args.command}: {e}", file=sys.stderr)
        return 2
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
