"""``export_onnx(M)``: write an ONNX export of an encoder model directory into ``M/onnx/`` and record it in
``M/r2r_model.json`` (``reason2rank export-onnx M`` on the command line).

What is exported is the transformers forward the torch scorer runs (a LoRA adapter merged in), with dynamic
batch and sequence axes, eager attention (the form ONNX Runtime fuses into its ``Attention`` kernel) and
opset 17. Before anything is moved into place the graph is checked against torch fp32 on padded batches of
lengths it was not traced with: a graph whose outputs differ by more than ``tolerance`` is refused. The files
are written into a temporary folder inside ``M`` and renamed into place, so a failed or interrupted export
leaves ``M`` as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

from reason2rank.model_dir import R2R_CONFIG, read_r2r_config, write_r2r_config
from reason2rank.onnx.record import (
    ONNX_DIR,
    ONNX_FP32_FILE,
    ONNX_INT8_FILE,
    SEQUENCE_AXIS,
    OnnxRecord,
    weights_fingerprint,
    weights_stat,
)
from reason2rank.onnx.runtime import ONNX_FAMILIES, OnnxEncoderModel, require_onnxruntime

__all__ = ["DEFAULT_OPSET", "export_onnx"]

DEFAULT_OPSET = 17
#: the largest difference from torch fp32 an fp32 graph may show on the check batches
DEFAULT_TOLERANCE = 1e-4

_CHECK_QUERIES = ["what is the capital of france?", "effects of caffeine on sleep", "rna"]
_CHECK_DOCS = [
    "Paris is the capital and most populous city of France. It lies on the Seine.",
    "Caffeine blocks adenosine receptors; taken late in the day it delays sleep onset and shortens deep sleep.",
    "Messenger RNA carries genetic information from DNA to the ribosome.",
]


def _family_of(path: Path, cfg: dict[str, Any] | None, family: str | None) -> str:
    from reason2rank.load import family_class

    name = family or (cfg or {}).get("family")
    if name is None:
        raise ValueError(
            f"{path} has no {R2R_CONFIG}; say which family it is (family='cross-encoder' or 'bi-encoder'; on the "
            "command line --family)"
        )
    canonical = getattr(family_class(name), "family", name)
    if canonical not in ONNX_FAMILIES:
        raise ValueError(
            f"export-onnx supports the encoder families ({', '.join(ONNX_FAMILIES)}, and encoder students, which "
            f"are saved as cross-encoders); {path} is a {canonical} model"
        )
    return str(canonical)


def _graph_module(model: Any, input_names: list[str], family: str, pooled: bool = False) -> Any:
    """The module that is traced: named tensor inputs in, the transformers outputs the scorer reads out.

    ``pooled`` (cross-encoders): the logits only, with the last layer run at position 0 (``pooled_last_layer``).
    """
    import torch

    from reason2rank.scorers.pooled_last_layer import pooled_last_layer

    class EncoderGraph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            inputs = dict(zip(input_names, tensors))
            if family == "cross-encoder" and pooled:
                with pooled_last_layer(self.model, inputs["attention_mask"]):
                    return (self.model(**inputs).logits,)
            if family == "cross-encoder":
                out = self.model(**inputs, output_hidden_states=True)
                return out.logits, out.hidden_states[-1]
            return (self.model(**inputs).last_hidden_state,)

    return EncoderGraph().eval()


def _check_batches(scorer: Any, family: str) -> list[dict[str, Any]]:
    """Padded batches of sample inputs: one to trace with, others (other lengths and sizes) to check with."""
    from reason2rank.engine import pad_batch

    if family == "cross-encoder":
        features, _ = scorer.encode_pairs(_CHECK_QUERIES, _CHECK_DOCS)
    else:
        features, _ = scorer.encode_texts(_CHECK_QUERIES + _CHECK_DOCS)
    pad = scorer.pad_token_id
    trace = pad_batch(features[:2], pad, scorer.padding_side)
    checks = [
        pad_batch(features, pad, scorer.padding_side),
        pad_batch(features[-1:], pad, scorer.padding_side),
    ]
    return [trace, *checks]


def _max_difference(graph: Path, reference: Any, batches: list[dict[str, Any]], names: list[str],
                    config: Any) -> float:  # fmt: skip
    """The largest difference between the graph's outputs and the full torch forward ``reference``'s."""
    import torch

    session = OnnxEncoderModel(graph, config)
    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            expected = reference(*[batch[n] for n in names])
            states = "last_hidden_state" in session.output_names
            got = session(output_hidden_states=states, **{n: batch[n] for n in names})
            if len(expected) == 2:  # cross-encoder: logits, and the token states where the graph has them
                pairs = [(expected[0], got.logits)]
                if states:
                    pairs.append((expected[1], got.last_hidden_state))
            else:
                pairs = [(expected[0], got.last_hidden_state)]
            mask = batch["attention_mask"].bool()
            for e, a in pairs:
                if e.dim() == 3:  # hidden states: padding positions are never read
                    e, a = e[mask], a[mask]
                worst = max(worst, float((e.float() - a.float()).abs().max()))
    return worst


def _trace(
    module: Any, batch: dict[str, Any], names: list[str], outputs: list[str], path: Path, opset: int
) -> None:
    import torch

    axes = {n: {0: "batch", 1: SEQUENCE_AXIS} for n in names}
    axes.update({o: ({0: "batch"} if o == "logits" else {0: "batch", 1: SEQUENCE_AXIS}) for o in outputs})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter chatter about constants that are checked below
        torch.onnx.export(
            module,
            tuple(batch[n] for n in names),
            str(path),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` onto ``target``; an existing ``target`` is moved aside first and removed afterwards."""
    old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old.exists():
            os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def export_onnx(path: str | os.PathLike[str], *, family: str | None = None, int8: bool = False,
                opset: int = DEFAULT_OPSET, tolerance: float = DEFAULT_TOLERANCE,
                token_states: bool = False) -> OnnxRecord:  # fmt: skip
    """Export the encoder model directory ``path`` to ONNX (fp32, and int8 with ``int8=True``) into
    ``path/onnx/``, check it against torch, and record it in ``path/r2r_model.json``; returns the record.

    A cross-encoder's graph gives the logits only, its last layer run at the first position
    (``scorers.pooled_last_layer``), unless the model has an evidence head or ``token_states=True`` (to attach
    one later): the graph then also gives the last layer's per-token states, at the full layer's cost.

    ``family`` is needed only for a plain transformers directory (no ``r2r_model.json``); one is then written.
    Errors: ``FileNotFoundError`` (no such directory), ``ValueError`` (not an encoder family, a hub backbone,
    a graph that does not match torch), ``ImportError`` (onnxruntime/onnx missing).
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no model directory at {root}; export-onnx needs a local model directory")
    cfg, _ = read_r2r_config(root)
    fam = _family_of(root, cfg, family)
    ort = require_onnxruntime()
    try:
        import onnx  # noqa: F401  (the exporter writes through it)
        import torch
        import transformers
    except ImportError as e:
        raise ImportError(f"export-onnx needs onnx: pip install 'reason2rank[onnx]' ({e})") from e
    import reason2rank

    options: dict[str, Any] = {"runtime": "torch", "dtype": "fp32", "device": "cpu", "progress": False,
                               "model_kwargs": {"attn_implementation": "eager"}}  # fmt: skip
    if fam == "cross-encoder":
        options["merge_adapter"] = True  # the graph holds the merged weights
    scorer: Any = reason2rank.load(root, family=fam, **options)
    backbone = Path(scorer.model_name_or_path)
    if not backbone.is_dir():
        raise ValueError(
            f"the backbone of {root} is {scorer.model_name_or_path!r}, not a local directory; save the model "
            "locally first (reason2rank.load(...).save(DIR)) and export that"
        )
    adapter = scorer.adapter if fam == "cross-encoder" else None
    stat, fingerprint = weights_stat(backbone, adapter), weights_fingerprint(backbone, adapter)
    batches = _check_batches(scorer, fam)
    names: list[str] = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in batches[0]]
    # a cross-encoder without an evidence head needs the logits only: its graph runs the last layer at position 0
    pooled = (fam == "cross-encoder" and scorer.pooled_last_layer and scorer.evidence_head_layer is None
              and not token_states)  # fmt: skip
    if fam != "cross-encoder":
        outputs = ["last_hidden_state"]
    else:
        outputs = ["logits"] if pooled else ["logits", "last_hidden_state"]
    module = _graph_module(scorer.model, names, fam, pooled=pooled)
    reference = _graph_module(scorer.model, names, fam) if pooled else module
    config = scorer.model.config
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".onnx-export-"))
    try:
        _trace(module, batches[0], names, outputs, tmp / ONNX_FP32_FILE, opset)
        diff = _max_difference(tmp / ONNX_FP32_FILE, reference, batches[1:], names, config)
        if not diff <= tolerance:
            raise ValueError(
                f"the ONNX graph of {root} differs from torch fp32 by {diff:.2e} (> {tolerance:.0e}) on the check "
                "batches; this architecture does not export faithfully with torch.onnx (nothing was written)"
            )
        record = OnnxRecord(
            fp32=f"{ONNX_DIR}/{ONNX_FP32_FILE}",
            weights_sha256=fingerprint,
            weights_stat=stat,
            outputs=outputs,
            opset=opset,
            max_abs_diff=float(f"{diff:.3g}"),
            exported_with={
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "onnxruntime": ort.__version__,
            },
        )
        if int8:
            from reason2rank.onnx.quantize import quantize_int8

            text = config.get_text_config()
            quantize_int8(tmp / ONNX_FP32_FILE, tmp / ONNX_INT8_FILE,
                          num_heads=int(getattr(text, "num_attention_heads", 0) or 0),
                          hidden_size=int(getattr(text, "hidden_size", 0) or 0))  # fmt: skip
            OnnxEncoderModel(tmp / ONNX_INT8_FILE, config)  # it opens
            record.int8 = f"{ONNX_DIR}/{ONNX_INT8_FILE}"
        _replace_dir(tmp, root / ONNX_DIR)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    full = dict(cfg) if cfg is not None else {"family": fam, "backbone": ".", **scorer.r2r_config()}
    full["onnx"] = record.to_config()
    write_r2r_config(root, full)
    return record
