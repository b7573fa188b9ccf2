"""Running an exported encoder on OpenVINO: the same ONNX graph as ONNX Runtime, compiled for the CPU.

``OpenVINOEncoderModel`` is called like :class:`~reason2rank.onnx.runtime.OnnxEncoderModel` (and is one, so the
scorers treat both alike). The graph is compiled with ``INFERENCE_PRECISION_HINT`` f32: OpenVINO otherwise runs
fp32 graphs in bf16 on CPUs that have it, which changes the scores; fp32 graphs give torch fp32's scores (to
1e-4, tested), int8 graphs the quantised ones. ``PERFORMANCE_HINT`` LATENCY (one request at a time, as the engine
calls it) and one inference thread per usable core. ``precision="bf16"`` (``runtime="openvino", dtype="bf16"``)
compiles the same fp32 graph at bf16 inference precision instead: faster where the CPU has bf16 instructions, and
the scores move by bf16 rounding (measured in ``benchmarks/cross_encoder_throughput.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reason2rank.cpu_isa import usable_cores
from reason2rank.onnx.runtime import OnnxEncoderModel

__all__ = ["OpenVINOEncoderModel", "require_openvino"]

#: our precision names -> OpenVINO's INFERENCE_PRECISION_HINT (fp32 must be asked for: see the module docstring)
_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


def require_openvino() -> Any:
    """``import openvino``, or an ``ImportError`` that says how to install it."""
    try:
        import openvino
    except ImportError as e:
        raise ImportError(
            "runtime='openvino' needs OpenVINO: pip install 'reason2rank[openvino]' (or pass runtime='onnx' or "
            "'torch')"
        ) from e
    return openvino


class OpenVINOEncoderModel(OnnxEncoderModel):
    """An exported ONNX graph compiled by OpenVINO for the CPU, called like the transformers model."""

    def __init__(
        self, graph: str | Path, config: Any, threads: int | None = None, precision: str = "fp32"
    ) -> None:
        if precision not in _PRECISION_HINTS:
            raise ValueError(
                f"OpenVINO precision must be one of {sorted(_PRECISION_HINTS)}, got {precision!r}"
            )
        ov = require_openvino()
        self.graph = Path(graph)
        self.precision = precision
        self.threads = threads or usable_cores()
        self.compiled = ov.Core().compile_model(
            str(graph),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision],
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": self.threads,
            },
        )
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]
        self.config = config
        self._request = self.compiled.create_infer_request()

    def __repr__(self) -> str:
        return (
            f"OpenVINOEncoderModel({str(self.graph)!r}, threads={self.threads}, precision={self.precision!r})"
        )

    def _run(self, wanted: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer(feed)
        by_name = {port.get_any_name(): value for port, value in results.items()}
        return [np.array(by_name[n], copy=True) for n in wanted]
