"""The ``reason2rank`` command line (one module per subcommand; ``main`` in ``cli.main``)."""

from reason2rank.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
