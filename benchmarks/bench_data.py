"""Where the benchmarks read their data: ``../shared/data`` beside the repository, or ``$R2R_SHARED_DATA``
(TREC DL19 and BEIR SciFact; research use, never committed). The scripts import it as ``bench_data`` (Python puts
a script's own folder first on ``sys.path``)."""

from __future__ import annotations

import os
from pathlib import Path

#: the shared data folder (holds ``trec-dl19`` and ``beir-scifact``)
SHARED_DATA = Path(
    os.environ.get("R2R_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)
