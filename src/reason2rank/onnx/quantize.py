"""int8 weights for an exported encoder: ONNX Runtime's dynamic quantisation.

The weights of the MatMuls (and of the fused attention, where ONNX Runtime's transformer optimiser could fuse
it) become int8 with one scale per output channel; activations are quantised on the fly, one scale per tensor
and batch, so no calibration data is needed. On CPUs with AVX512-VNNI (or AVX-VNNI) the int8 products run on
the VNNI instructions.

The feed-forward output projections (the MatMul fed by each GELU) stay fp32 by default: the GELU output holds
the outlier activations of BERT-style encoders, and one int8 scale per tensor for it is where most of the score
error came from. Chosen on SciFact *train* queries (100 x BM25 top-30) with the trained student of
``benchmarks/distill_scifact.py``: keeping them fp32 took the mean |int8 - fp32| score difference from 0.164 to
0.095, the mean per-query Spearman from 0.979 to 0.988 and the top-10 overlap from 92% to 95%, at 1.56x instead
of 1.98x ONNX Runtime fp32's speed. ``benchmarks/int8_fidelity.py`` measures the result on DL19 and SciFact test.

``fp32_single_position=True`` also keeps fp32 the MatMuls that read one position per pair: in a scores-only graph
(the pooled last layer, see ``reason2rank.scorers.pooled_last_layer``) the last layer's query, attention-output
and feed-forward projections, and in every graph the pooler and the classifier, found by ONNX Runtime's symbolic
shape inference (their input has no ``sequence`` dimension). It is off by default because it measured as no gain:
on the same selection set with the 340-step student the mean |int8 - fp32| went from 0.1098 to 0.1090, Spearman
0.9960 to 0.9961 and the top-10 overlap 95.6% to 95.7% (150-step student: 0.0354 to 0.0353), at the same speed.
The error is made in the many-position layers before; these rows only carry it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from reason2rank.onnx.record import SEQUENCE_AXIS

__all__ = ["ffn_output_matmuls", "quantize_int8", "single_position_matmuls"]

logger = logging.getLogger(__name__)

#: ops that compute a GELU, fused by ONNX Runtime's optimiser (``BiasGelu``, ...) or decomposed (``Erf``)
_GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Erf"})
#: the elementwise ops between a decomposed GELU's ``Erf`` and the MatMul it feeds
_ELEMENTWISE_OPS = frozenset({"Add", "Mul", "Div", "Sub", "Cast"})


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


def ffn_output_matmuls(graph: Any, hops: int = 4) -> list[str]:
    """Names of the MatMul nodes of ``graph`` (an ``onnx.GraphProto``) fed by a GELU: the feed-forward output
    projections. A decomposed GELU is found through up to ``hops`` elementwise nodes after its ``Erf``."""
    producer = {out: node for node in graph.node for out in node.output}

    def after_gelu(name: str, depth: int) -> bool:
        node = producer.get(name)
        if node is None or depth == 0:
            return False
        if node.op_type in _GELU_OPS:
            return True
        return node.op_type in _ELEMENTWISE_OPS and any(after_gelu(i, depth - 1) for i in node.input)

    return [n.name for n in graph.node if n.op_type == "MatMul" and after_gelu(n.input[0], hops)]


def single_position_matmuls(model: Any, sequence_dim: str = SEQUENCE_AXIS) -> list[str]:
    """Names of the weight MatMuls/Gemms of ``model`` (an ``onnx.ModelProto``) whose input holds one position per
    pair: no ``sequence_dim`` in its shape after ONNX Runtime's symbolic shape inference. [] (and a log line) when
    the inference cannot run on the graph, so the caller quantises as before."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception as e:  # an op the inference does not know: nothing is kept back
        logger.info("symbolic shape inference did not run (%s); no single-position MatMul kept fp32", e)
        return []
    graph = inferred.graph
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*graph.value_info, *graph.input, *graph.output]
        if v.type.tensor_type.HasField("shape")
    }
    weights = {i.name for i in graph.initializer} | {
        out for n in graph.node if n.op_type == "Constant" for out in n.output
    }
    names = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or not any(i in weights for i in node.input[:2]):
            continue
        activation = next((i for i in node.input[:2] if i not in weights), None)
        shape = shapes.get(activation) if activation else None
        if shape and sequence_dim not in shape:
            names.append(node.name)
    return names


def quantize_int8(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, num_heads: int = 0,
                  hidden_size: int = 0, per_channel: bool = True, fp32_ffn_output: bool = True,
                  fp32_single_position: bool = False) -> Path:  # fmt: skip
    """Write an int8 (dynamic quantisation, signed int8 weights) copy of the fp32 graph ``src`` to ``dst``.

    ``num_heads``/``hidden_size`` help the fusion pass (0: read from the graph). ``fp32_ffn_output``: leave the
    feed-forward output projections in fp32; ``fp32_single_position``: also leave the MatMuls that read one
    position per pair in fp32 (see the module's docstring for both; both False quantise every MatMul).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quantize-") as tmp:
        fused = _fused_copy(src, Path(tmp) / "fused.onnx", num_heads, hidden_size)
        model = onnx.load(str(fused), load_external_data=False)
        ffn = ffn_output_matmuls(model.graph) if fp32_ffn_output else []
        rows = single_position_matmuls(model) if fp32_single_position else []
        # the quantiser first rewrites each Gemm as a MatMul named "<gemm>_MatMul" (+ an Add), then reads the list
        gemms = {n.name for n in model.graph.node if n.op_type == "Gemm"}
        keep = list(dict.fromkeys([*ffn, *rows, *(f"{r}_MatMul" for r in rows if r in gemms)]))
        logger.info(
            "int8: %d feed-forward output and %d single-position MatMuls kept in fp32", len(ffn), len(rows)
        )
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            str(fused),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            nodes_to_exclude=keep,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        shutil.move(str(out), dst)
    return dst
