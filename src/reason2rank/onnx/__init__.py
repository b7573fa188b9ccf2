"""ONNX Runtime for the encoder families: export (``export_onnx``, ``reason2rank export-onnx``), int8
quantisation, the ``onnx`` field of ``r2r_model.json`` and the runtime choice (``runtime=``/``dtype=``).

onnxruntime and onnx are an optional extra (``pip install 'reason2rank[onnx]'``), imported only when an ONNX
graph is exported or run.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_onnx"]


def __getattr__(name: str) -> Any:
    if name == "export_onnx":
        from reason2rank.onnx.export import export_onnx

        return export_onnx
    raise AttributeError(f"module 'reason2rank.onnx' has no attribute {name!r}")
