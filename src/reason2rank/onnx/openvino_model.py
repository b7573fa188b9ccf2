"""Running an exported encoder on OpenVINO: the same ONNX graph as ONNX Runtime, compiled for the CPU.

``OpenVINOEncoderModel`` is called like :class:`~reason2rank.onnx.runtime.OnnxEncoderModel` (and is one, so the
scorers treat both alike). The graph is compiled with ``INFERENCE_PRECISION_HINT`` f32: OpenVINO otherwise runs
fp32 graphs in bf16 on CPUs that have it, which changes the scores; fp32 graphs give torch fp32's scores (to
1e-4, tested), int8 graphs the quantised ones. One inference thread per usable core, in ``streams`` CPU streams
(``default_streams``: 2 on 2 cores): with more than one, the graph is compiled with the
THROUGHPUT hint and each batch the engine sends is cut into one slice of rows per stream, run as asynchronous
requests at the same time and put back in order (the same padded rows, so the same scores as one request: tested);
with one, the LATENCY hint and one synchronous request. On 2 cores, 2 streams of 1 thread each score a batch
faster than 1 stream of 2 threads (measured in ``benchmarks/cross_encoder_throughput.py``): a small encoder's
kernels do not keep two threads busy. ``precision="bf16"`` (``runtime="openvino", dtype="bf16"``)
compiles the same fp32 graph at bf16 inference precision instead: faster where the CPU has bf16 instructions, and
the scores move by bf16 rounding (measured in ``benchmarks/cross_encoder_throughput.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reason2rank.cpu_isa import inference_threads
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


#: the most CPU streams ``default_streams`` picks
MAX_STREAMS = 4


def default_streams(threads: int) -> int:
    """CPU streams for ``threads`` inference threads: one per thread, at most ``MAX_STREAMS`` (more threads are
    shared among those streams)."""
    return max(1, min(MAX_STREAMS, threads))


class OpenVINOEncoderModel(OnnxEncoderModel):
    """An exported ONNX graph compiled by OpenVINO for the CPU, called like the transformers model."""

    def __init__(
        self,
        graph: str | Path,
        config: Any,
        threads: int | None = None,
        precision: str = "fp32",
        streams: int | None = None,
    ) -> None:
        if precision not in _PRECISION_HINTS:
            raise ValueError(
                f"OpenVINO precision must be one of {sorted(_PRECISION_HINTS)}, got {precision!r}"
            )
        ov = require_openvino()
        self.graph = Path(graph)
        self.precision = precision
        self.threads = threads or inference_threads()
        self.streams = int(streams) if streams is not None else default_streams(self.threads)
        if self.streams < 1:
            raise ValueError(f"OpenVINO streams must be >= 1, got {streams!r}")
        options: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision],
            "INFERENCE_NUM_THREADS": self.threads,
        }
        if self.streams > 1:
            options.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=self.streams)
        else:
            options["PERFORMANCE_HINT"] = "LATENCY"
        self.compiled = ov.Core().compile_model(str(graph), "CPU", options)
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]
        self.config = config
        self._request = self.compiled.create_infer_request()
        self._queue = ov.AsyncInferQueue(self.compiled, self.streams) if self.streams > 1 else None

    def __repr__(self) -> str:
        return (
            f"OpenVINOEncoderModel({str(self.graph)!r}, threads={self.threads}, streams={self.streams}, "
            f"precision={self.precision!r})"
        )

    def _run(self, wanted: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        rows = len(next(iter(feed.values())))
        if self._queue is None or rows < 2:
            results = self._request.infer(feed)
            by_name = {port.get_any_name(): value for port, value in results.items()}
            return [np.array(by_name[n], copy=True) for n in wanted]
        slices = [s for s in np.array_split(np.arange(rows), min(self.streams, rows)) if len(s)]
        parts: list[dict[str, np.ndarray] | None] = [None] * len(slices)
        ports = list(self.compiled.outputs)

        def done(request: Any, slot: int) -> None:
            parts[slot] = {p.get_any_name(): np.array(request.get_tensor(p).data, copy=True) for p in ports}

        self._queue.set_callback(done)
        for slot, rows_of in enumerate(slices):
            start, stop = int(rows_of[0]), int(rows_of[-1]) + 1
            self._queue.start_async({k: np.ascontiguousarray(v[start:stop]) for k, v in feed.items()}, slot)
        self._queue.wait_all()
        if any(p is None for p in parts):
            raise RuntimeError(
                f"OpenVINO returned {sum(p is not None for p in parts)} of {len(parts)} slices"
            )
        return [np.concatenate([p[n] for p in parts if p is not None]) for n in wanted]
