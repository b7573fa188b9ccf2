"""Where the development data is (../shared/data beside the repository, or $R2R_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

#: the shared development data (trec-dl19, beir-scifact); tests that need it skip when it is absent
SHARED_DATA = Path(
    os.environ.get("R2R_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
