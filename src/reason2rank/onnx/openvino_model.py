"""Running an exported encoder on OpenVINO: the same ONNX graph as ONNX Runtime, compiled for the CPU.

``OpenVINOEncoderModel`` is called like :class:`~reason2rank.onnx.runtime.OnnxEncoderModel` (and is one, so the
scorers treat both alike). The graph is compiled with ``INFERENCE_PRECISION_HINT`` f32: OpenVINO otherwise runs
fp32 graphs in bf16 on CPUs that have it, which changes the scores; fp32 graphs give torch fp32's scores (to
1e-4, tested), int8 graphs the quantised ones. ``PERFORMANCE_HINT`` LATENCY (one request at a time, as the engine
calls it) and one inference thread per usable core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reason2rank.cpu_isa import usable_cores
from reason2rank.onnx.runtime import OnnxEncoderModel

__all__ = ["OpenVINOEncoderModel", "require_openvino"]


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

    def __init__(self, graph: str | Path, config: Any, threads: int | None = None) -> None:
        ov = require_openvino()
        self.graph = Path(graph)
        self.threads = threads or usable_cores()
        self.compiled = ov.Core().compile_model(
            str(graph),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": "f32",
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": self.threads,
            },
        )
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]
        self.config = config
        self._request = self.compiled.create_infer_request()

    def __repr__(self) -> str:
        return f"OpenVINOEncoderModel({str(self.graph)!r}, threads={self.threads})"

    def _run(self, wanted: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer(feed)
        by_name = {port.get_any_name(): value for port, value in results.items()}
        return [np.array(by_name[n], copy=True) for n in wanted]
