"""Running an exported encoder on ONNX Runtime, and choosing between it and torch.

``OnnxEncoderModel`` stands where the transformers model stands in a scorer: it takes the engine's padded
batch (torch tensors) and returns ``.logits`` / ``.last_hidden_state`` / ``.hidden_states`` as torch tensors,
so the scorer's read-out code is the same for both runtimes. Sessions run on the CPU execution provider with
every graph optimisation on and one intra-op thread per usable core (``reason2rank.cpu_isa.inference_threads``:
the usable cores, or the CPUs a Ray actor holds).

``choose_runtime`` decides what a scorer runs on (see ``RUNTIMES``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reason2rank.cpu_isa import inference_threads
from reason2rank.onnx.record import OnnxRecord, weights_fingerprint, weights_stat

__all__ = [
    "ONNX_FAMILIES",
    "RUNTIMES",
    "OnnxEncoderModel",
    "RuntimeChoice",
    "choose_runtime",
    "require_onnxruntime",
]

#: ``runtime=`` values: ``onnx`` = ONNX Runtime, ``openvino`` = OpenVINO, both on the exported ONNX graph on the CPU;
#: ``auto`` = OpenVINO fp32 (else ONNX Runtime fp32) where the model directory has a current export, the device is
#: the CPU and the runtime is installed; torch otherwise
RUNTIMES = ("auto", "torch", "onnx", "openvino")
#: the runtimes that run the exported graph, in the order ``auto`` tries them (OpenVINO measured faster)
EXPORTED_RUNTIMES = ("openvino", "onnx")
_RUNTIME_NAMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}
#: the families an ONNX export exists for
ONNX_FAMILIES = ("cross-encoder", "bi-encoder")
_ONNX_DTYPES = {"auto": "fp32", "fp32": "fp32", "float32": "fp32", "float": "fp32", "int8": "int8"}
#: dtype names of bf16; on OpenVINO they compile the fp32 graph with a bf16 inference precision
_BF16 = ("bf16", "bfloat16", "torch.bfloat16")


def require_onnxruntime() -> Any:
    """``import onnxruntime``, or an ``ImportError`` that says how to install it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(
            "the ONNX runtime needs onnxruntime: pip install 'reason2rank[onnx]' (or pass runtime='torch')"
        ) from e
    return onnxruntime


def _require(runtime: str) -> Any:
    if runtime == "openvino":
        from reason2rank.onnx.openvino_model import require_openvino

        return require_openvino()
    return require_onnxruntime()


def _installed(runtime: str) -> bool:
    try:
        _require(runtime)
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class RuntimeChoice:
    """What a scorer runs on: ``runtime`` ``"torch"``, ``"onnx"`` or ``"openvino"``; ``precision`` of the ONNX graph
    (``"fp32"``/``"int8"``; ``"bf16"`` on OpenVINO: the fp32 graph at bf16 inference precision; ``None`` on torch);
    ``graph`` the ONNX file; ``why`` a short reason."""

    runtime: str
    precision: str | None = None
    graph: Path | None = None
    why: str = ""


def choose_runtime(
    runtime: str | None,
    dtype: Any,
    device: Any,
    *,
    family: str,
    record: Any,
    model_dir: Path | None,
    backbone: str,
    adapter: str | None = None,
) -> RuntimeChoice:
    """Resolve ``runtime=``/``dtype=`` of a scorer to torch or an ONNX graph; ``ValueError`` (saying what to do)
    for a combination that cannot run. ``record`` is the ``onnx`` field of ``r2r_model.json`` (or ``None``)."""
    name = "auto" if runtime is None else str(runtime).lower()
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
    if isinstance(dtype, torch.dtype):
        dtype_name: str | None = "fp32" if dtype == torch.float32 else str(dtype)
    else:
        dtype_name = "auto" if dtype is None else str(dtype).lower()
    wants_int8 = dtype_name == "int8"
    if name == "torch":
        if wants_int8:
            raise ValueError("dtype='int8' runs on an exported graph only: pass runtime='onnx' (or 'auto')")
        return RuntimeChoice("torch", why="runtime='torch' was asked for")
    device_name = "auto" if device is None else str(device)
    on_cpu = device_name == "cpu" or (device_name == "auto" and not torch.cuda.is_available())
    explicit = name in EXPORTED_RUNTIMES or wants_int8
    engine = name if name in EXPORTED_RUNTIMES else "onnx"  # int8 under auto: ONNX Runtime (its quantiser)
    if explicit:
        label = f"runtime={engine!r}"
        if family not in ONNX_FAMILIES:
            raise ValueError(
                f"{label} supports the encoder families ({', '.join(ONNX_FAMILIES)}), not {family}; "
                "use runtime='torch'"
            )
        if not on_cpu:
            raise ValueError(
                f"{label} runs on the CPU, but device={device_name!r} was asked for (or CUDA is the auto "
                "choice); pass device='cpu', or runtime='torch' for the GPU"
            )
        if engine == "openvino" and dtype_name in _BF16:
            dtype_name = "bf16"  # OpenVINO runs the fp32 graph at bf16 inference precision (CPUs with bf16)
        elif dtype_name not in _ONNX_DTYPES:
            raise ValueError(
                f"{label} runs fp32 or int8 graphs (OpenVINO also bf16), not dtype={dtype!r}; pass dtype='fp32' "
                "or 'int8', or runtime='torch' for bf16/fp16"
            )
        _require(engine)
    precision = "bf16" if dtype_name == "bf16" else _ONNX_DTYPES.get(dtype_name or "", "")
    if engine == "openvino" and precision == "int8":
        raise ValueError(
            "runtime='openvino' runs the fp32 graph only: the int8 graph is quantised after ONNX Runtime's fusions "
            "and uses its own operators (QAttention, QEmbedLayerNormalization), which OpenVINO cannot read; "
            "pass runtime='onnx' for int8, or dtype='fp32'"
        )
    if not explicit:  # auto: an exported graph in fp32 where that is the fastest path that keeps fp32 scores
        if family not in ONNX_FAMILIES or record is None or not on_cpu or precision != "fp32":
            return RuntimeChoice("torch", why="auto: no ONNX export, not the CPU, or not fp32")
        installed = [r for r in EXPORTED_RUNTIMES if _installed(r)]
        if not installed:
            return RuntimeChoice("torch", why="auto: neither OpenVINO nor onnxruntime is installed")
        engine = installed[0]
    where = model_dir or Path(backbone)
    if record is None:
        raise ValueError(
            f"{where} has no ONNX export; make one with `reason2rank export-onnx {where}`"
            + (" --int8" if wants_int8 else "")
            + " (or pass runtime='torch')"
        )
    rec = OnnxRecord.from_config(record, model_dir)
    graph = rec.file("fp32" if precision == "bf16" else precision, model_dir)
    stale = _stale_reason(rec, graph, backbone, adapter)
    if stale:
        message = (
            f"the ONNX export in {where} is not usable: {stale}; run `reason2rank export-onnx {where}` again"
        )
        if explicit:
            raise ValueError(message)
        warnings.warn(message + " (scoring with torch meanwhile)", stacklevel=4)
        return RuntimeChoice("torch", why="auto: the ONNX export is stale")
    return RuntimeChoice(engine, precision, graph, why=f"{name}: {_RUNTIME_NAMES[engine]} {precision}")


def _stale_reason(rec: OnnxRecord, graph: Path, backbone: str, adapter: str | None) -> str | None:
    if not graph.is_file():
        return f"{graph} is missing"
    try:
        if rec.weights_stat is not None and weights_stat(backbone, adapter) == rec.weights_stat:
            return None  # the files are as they were at export: no need to hash them
        current = weights_fingerprint(backbone, adapter)
    except FileNotFoundError as e:
        return str(e)
    if current != rec.weights_sha256:
        return "the weights changed after it was exported"
    return None


class OnnxOutput:
    """The outputs of one ONNX forward as torch tensors (``hidden_states`` holds the last layer only)."""

    def __init__(self, values: Mapping[str, torch.Tensor]) -> None:
        self._values = dict(values)

    @property
    def logits(self) -> torch.Tensor:
        """Classifier logits ``[B, num_labels]`` (cross-encoder graphs)."""
        return self._values["logits"]

    @property
    def last_hidden_state(self) -> torch.Tensor:
        """The last layer's hidden states ``[B, L, H]``."""
        return self._values["last_hidden_state"]

    @property
    def hidden_states(self) -> tuple[torch.Tensor, ...]:
        """``(last_hidden_state,)``: only the last layer leaves the graph, so only ``[-1]`` is defined."""
        return (self.last_hidden_state,)


class OnnxEncoderModel:
    """An ONNX Runtime session that is called like the transformers model it was exported from.

    ``model(input_ids=..., attention_mask=..., token_type_ids=..., output_hidden_states=False)`` returns an
    ``OnnxOutput``; only the outputs the call needs are fetched (``logits`` when the graph has them, and the last
    hidden state when asked for or when it is the only output). ``config`` is the transformers config.
    """

    def __init__(self, graph: str | Path, config: Any, threads: int | None = None) -> None:
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or inference_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.graph = Path(graph)
        self.session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.config = config
        self.threads = options.intra_op_num_threads

    def __repr__(self) -> str:
        return f"OnnxEncoderModel({str(self.graph)!r}, threads={self.threads})"

    def eval(self) -> OnnxEncoderModel:
        """No-op (there is no training mode); returns ``self`` as ``torch.nn.Module.eval`` does."""
        return self

    def to(self, device: Any) -> OnnxEncoderModel:
        """Only the CPU is supported; returns ``self``."""
        if torch.device(device).type != "cpu":
            raise ValueError(f"an exported ONNX model runs on the CPU, not {device}")
        return self

    def __call__(self, output_hidden_states: bool = False, **inputs: torch.Tensor) -> OnnxOutput:
        """One forward over a padded batch; ``ValueError`` when an input the graph needs is missing."""
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ValueError(
                f"the ONNX graph {self.graph} needs the input(s) {missing}, got {sorted(inputs)}"
            )
        feed = {n: inputs[n].detach().cpu().numpy() for n in self.input_names}
        wanted = [n for n in ("logits",) if n in self.output_names]
        if output_hidden_states and "last_hidden_state" not in self.output_names:
            raise ValueError(
                f"the ONNX graph {self.graph} gives the scores only (a cross-encoder exported without an evidence "
                "head runs its last layer at the first position), so it has no per-token states; attach the "
                "evidence head, save, and export again, or export again with --token-states (token_states=True) "
                "(the graph then keeps them), or use runtime='torch'"
            )
        if (output_hidden_states or not wanted) and "last_hidden_state" in self.output_names:
            wanted.append("last_hidden_state")
        values = self._run(wanted, feed)
        return OnnxOutput({n: torch.from_numpy(v) for n, v in zip(wanted, values)})

    def _run(self, wanted: list[str], feed: dict[str, Any]) -> list[Any]:
        """The ``wanted`` outputs (numpy arrays) of one call on ``feed``."""
        return list(self.session.run(wanted, feed))
