"""The ``onnx`` field of ``r2r_model.json``: which ONNX files a model directory holds, and the weights they were
exported from.

``reason2rank export-onnx M`` writes, beside the torch weights::

    M/onnx/model.onnx          fp32 graph: the transformers forward of the backbone (adapter merged)
    M/onnx/model_int8.onnx     the same graph with int8 weights (dynamic quantisation), when asked for

and records them in ``M/r2r_model.json``::

    "onnx": {"fp32": "onnx/model.onnx", "int8": "onnx/model_int8.onnx", "weights_sha256": "...",
             "outputs": ["logits", "last_hidden_state"], "opset": 17, "max_abs_diff": 2e-07,
             "exported_with": {"torch": "2.13.0", "transformers": "5.24.0", "onnxruntime": "1.32.0"}}

The graph ends where the transformers model ends (logits, last hidden state); every read-out (label choice,
pooling, normalisation, the evidence head) stays in the scorer's own code, shared by both runtimes. A
cross-encoder without an evidence head whose last layer can run at the first position only
(``scorers.pooled_last_layer``) is exported that way, with ``"outputs": ["logits"]``: the scores are the same and
the per-token states, which nothing then reads, are not computed.
``weights_sha256`` fingerprints the files the graph was made from (config, weights, adapter weights): weights
changed after the export make the export stale, and a stale export is never used.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ONNX_DIR",
    "ONNX_FP32_FILE",
    "ONNX_INT8_FILE",
    "OnnxRecord",
    "SEQUENCE_AXIS",
    "weight_files",
    "weights_fingerprint",
]

#: the folder of a model directory the export is written to
ONNX_DIR = "onnx"
ONNX_FP32_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
#: the symbolic name of the token axis of an exported graph's inputs and per-token outputs
SEQUENCE_AXIS = "sequence"

_WEIGHT_PATTERNS = ("config.json", "model*.safetensors", "model.safetensors.index.json", "pytorch_model*.bin",
                    "pytorch_model.bin.index.json")  # fmt: skip
_ADAPTER_PATTERNS = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def _files(directory: Path, patterns: Iterable[str]) -> list[Path]:
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in directory.glob(pattern) if p.is_file())
    return sorted(found)


def weight_files(backbone: str | os.PathLike[str]) -> list[Path]:
    """The config and weight files of a transformers directory (what ``weights_fingerprint`` reads)."""
    return _files(Path(backbone), _WEIGHT_PATTERNS)


def _fingerprinted_files(
    backbone: str | os.PathLike[str], adapter: str | os.PathLike[str] | None
) -> list[Path]:
    groups: list[tuple[Path, tuple[str, ...]]] = [(Path(backbone), _WEIGHT_PATTERNS)]
    if adapter:
        groups.append((Path(adapter), _ADAPTER_PATTERNS))
    out: list[Path] = []
    for directory, patterns in groups:
        files = _files(directory, patterns)
        if not files:
            raise FileNotFoundError(f"no config or weight files in {directory} to fingerprint")
        out.extend(files)
    return out


def weights_stat(
    backbone: str | os.PathLike[str], adapter: str | os.PathLike[str] | None = None
) -> list[list[Any]]:
    """``[name, size, mtime_ns]`` of each file :func:`weights_fingerprint` reads. Loading compares it first and
    hashes only when it differs (as git's index does), so an unchanged directory opens without reading its
    weights twice; a copy that resets the times costs one hash, never a wrong answer."""
    stats = []
    for path in _fingerprinted_files(backbone, adapter):
        st = path.stat()
        stats.append([path.name, st.st_size, st.st_mtime_ns])
    return stats


def weights_fingerprint(
    backbone: str | os.PathLike[str], adapter: str | os.PathLike[str] | None = None
) -> str:
    """SHA-256 over the config and weight files of ``backbone`` (and of ``adapter``): what an export depends on."""
    digest = hashlib.sha256()
    for path in _fingerprinted_files(backbone, adapter):
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class OnnxRecord:
    """What ``r2r_model.json`` says about a model directory's ONNX export (see the module docstring)."""

    fp32: str
    weights_sha256: str
    int8: str | None = None
    outputs: list[str] = field(default_factory=list)
    opset: int | None = None
    max_abs_diff: float | None = None
    exported_with: dict[str, str] = field(default_factory=dict)
    weights_stat: list[list[Any]] | None = None  # see weights_stat()

    @classmethod
    def from_config(cls, value: Any, where: Path | None) -> OnnxRecord:
        """Read the ``onnx`` field; ``ValueError`` naming the field when it is malformed."""
        if isinstance(value, OnnxRecord):
            return value
        if not isinstance(value, Mapping) or not isinstance(value.get("fp32"), str):
            raise ValueError(
                f"the 'onnx' field of r2r_model.json in {where} must be an object with an 'fp32' file name, got "
                f"{value!r}; run `reason2rank export-onnx {where or 'MODEL_DIR'}` again to rewrite it"
            )
        if not isinstance(value.get("weights_sha256"), str):
            raise ValueError(
                f"the 'onnx' field of r2r_model.json in {where} lacks 'weights_sha256'; run "
                f"`reason2rank export-onnx {where or 'MODEL_DIR'}` again to rewrite it"
            )
        int8 = value.get("int8")
        return cls(
            fp32=value["fp32"],
            weights_sha256=value["weights_sha256"],
            int8=int8 if isinstance(int8, str) else None,
            outputs=[str(o) for o in value.get("outputs") or []],
            opset=value.get("opset"),
            max_abs_diff=value.get("max_abs_diff"),
            exported_with={str(k): str(v) for k, v in (value.get("exported_with") or {}).items()},
            weights_stat=value.get("weights_stat") if isinstance(value.get("weights_stat"), list) else None,
        )

    def to_config(self) -> dict[str, Any]:
        """The ``onnx`` field as written into ``r2r_model.json``."""
        out: dict[str, Any] = {"fp32": self.fp32, "weights_sha256": self.weights_sha256}
        if self.int8:
            out["int8"] = self.int8
        if self.outputs:
            out["outputs"] = list(self.outputs)
        if self.opset is not None:
            out["opset"] = self.opset
        if self.max_abs_diff is not None:
            out["max_abs_diff"] = self.max_abs_diff
        if self.weights_stat is not None:
            out["weights_stat"] = self.weights_stat
        if self.exported_with:
            out["exported_with"] = dict(self.exported_with)
        return out

    def file(self, precision: str, model_dir: Path | None) -> Path:
        """The graph file of ``precision`` (``"fp32"`` or ``"int8"``), resolved against ``model_dir``."""
        name = self.fp32 if precision == "fp32" else self.int8
        if name is None:
            where = model_dir or "this model directory"
            raise FileNotFoundError(
                f"{where} has no int8 ONNX export; make one with `reason2rank export-onnx {where} --int8`"
            )
        path = Path(name)
        return path if path.is_absolute() or model_dir is None else model_dir / path
