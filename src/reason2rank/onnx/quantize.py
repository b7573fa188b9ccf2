"""int8 weights for an exported encoder: ONNX Runtime's dynamic quantisation.

The weights of every MatMul/Gemm (and of the fused attention, where ONNX Runtime's transformer optimiser could
fuse it) become int8 with one scale per output channel; activations are quantised on the fly per batch, so no
calibration data is needed. On CPUs with AVX512-VNNI (or AVX-VNNI) the int8 products run on the VNNI
instructions. Scores move: ``benchmarks/int8_fidelity.py`` measures by how much on a trained cross-encoder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["quantize_int8"]

logger = logging.getLogger(__name__)


def _fused_copy(src: Path, dst: Path, num_heads: int, hidden_size: int) -> Path:
    """ONNX Runtime's BERT-style fusions (attention, embedding/skip layer norms, GELU) applied offline, so the
    quantiser sees fused attention; the unfused graph where the optimiser cannot run."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
        )
        optimized.save_model_to_file(str(dst))
        return dst
    except Exception as e:  # an architecture the optimiser does not know: quantise the graph as it is
        logger.info(
            "ONNX Runtime's transformer optimiser did not run on %s (%s); quantising it unfused", src, e
        )
        return src


def quantize_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, num_heads: int = 0,
                  hidden_size: int = 0, per_channel: bool = True) -> Path:  # fmt: skip
    """Write an int8 (dynamic quantisation, signed int8 weights) copy of the fp32 graph ``src`` to ``dst``.

    ``num_heads``/``hidden_size`` help the fusion pass (0: read from the graph).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quantize-") as tmp:
        fused = _fused_copy(src, Path(tmp) / "fused.onnx", num_heads, hidden_size)
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            str(fused),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        shutil.move(str(out), dst)
    return dst
