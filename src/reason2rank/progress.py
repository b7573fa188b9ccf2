"""Progress bars, one policy for the whole library (engine runs, teacher runs, training, the demo).

``progress=None`` (the default everywhere) shows a bar only when stderr is a terminal, so logs, CI output and
notebooks piped to files get no bar lines; ``True`` forces one (redrawn at most every few seconds when stderr
is not a terminal); ``False`` switches bars off. The environment variable ``R2R_NO_PROGRESS=1`` switches them
off whatever the argument says.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["Progress", "progress_bar", "progress_enabled", "quiet_transformers_progress"]

#: seconds between redraws on a terminal, and when a bar is forced onto a non-terminal stream
TTY_INTERVAL = 0.5
LOG_INTERVAL = 10.0


class Progress(Protocol):
    """What callers use of a progress bar."""

    def update(self, n: int = 1) -> Any:
        """Advance by ``n``."""

    def set_postfix(self, **kwargs: Any) -> Any:
        """Show extra counters next to the bar."""

    def close(self) -> Any:
        """Remove the bar."""


class _NoBar:
    """A progress bar that shows nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **kwargs: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def progress_enabled(progress: bool | None) -> bool:
    """Whether a bar is shown for the setting ``progress`` (``None``: only on a terminal)."""
    if os.environ.get("R2R_NO_PROGRESS"):
        return False
    if progress is None:
        return _stderr_is_tty()
    return bool(progress)


def progress_bar(total: int, desc: str, progress: bool | None = None, unit: str = "it") -> Progress:
    """A tqdm bar on stderr following the module's policy, or one that shows nothing."""
    if not progress_enabled(progress):
        return _NoBar()
    from tqdm.auto import tqdm

    interval = TTY_INTERVAL if _stderr_is_tty() else LOG_INTERVAL
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        leave=False,
        mininterval=interval,
        dynamic_ncols=True,
    )


@contextlib.contextmanager
def quiet_transformers_progress(progress: bool | None) -> Iterator[None]:
    """Hide transformers' own bars ("Loading weights", ...) while the block runs, unless bars are on."""
    if progress_enabled(progress):
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
