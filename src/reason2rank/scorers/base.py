"""What every transformers-backed scorer shares: loading options, the engine, pair flattening, saving."""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reason2rank.engine import Engine, Features, TruncationWarnings
from reason2rank.model_dir import write_r2r_config
from reason2rank.onnx.runtime import (
    EXPORTED_RUNTIMES,
    ONNX_FAMILIES,
    RUNTIMES,
    OnnxEncoderModel,
    RuntimeChoice,
    choose_runtime,
)
from reason2rank.progress import quiet_transformers_progress
from reason2rank.reranker import Reranker, split_scores
from reason2rank.types import Doc, Query


class TransformerReranker(Reranker):
    """Base of the pointwise families: every (query, doc) pair of every query goes through one engine run.

    Subclasses implement ``encode_pairs`` (token ids per pair, and how many were truncated) and ``forward``
    (a padded batch → one score per row), and may override ``score_batch`` (the bi-encoder does).

    ``runtime`` (``"auto"``, ``"torch"``, ``"onnx"``, ``"openvino"``) and ``dtype`` (``"auto"``, ``"fp32"``, ``"bf16"``,
    ``"fp16"``, and ``"int8"`` on ONNX Runtime) choose what the encoder families run on; see
    ``reason2rank.onnx.runtime.choose_runtime``. ``onnx`` is the ``onnx`` field of ``r2r_model.json`` (written
    by ``reason2rank export-onnx``). ``loaded``: the backbone of ``model_name_or_path`` already in memory (the
    merged policy a trainer has just saved there), used as it is instead of being read again; only moved to
    ``device`` (``dtype`` and ``model_kwargs`` are not applied to it).
    """

    family: str = ""
    padding_side: str = "right"
    #: the transformers model and tokenizer (set by each family's constructor)
    model: Any
    tokenizer: Any
    _peft: Any = None

    def __init__(
        self,
        model_name_or_path: str | os.PathLike,
        *,
        max_length: int = 512,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        progress: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        model_kwargs: dict[str, Any] | None = None,
        model_dir: str | os.PathLike | None = None,
        runtime: str | None = None,
        onnx: dict[str, Any] | None = None,
        loaded: Any = None,
    ) -> None:
        if not isinstance(max_length, int) or max_length < 8:
            raise ValueError(f"max_length must be an int >= 8, got {max_length!r}")
        if runtime is not None and str(runtime).lower() not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        wants_onnx = str(runtime).lower() in EXPORTED_RUNTIMES or (
            isinstance(dtype, str) and dtype.lower() == "int8"
        )
        if wants_onnx and self.family not in ONNX_FAMILIES:
            raise ValueError(
                f"runtime='onnx'/'openvino' and dtype='int8' support the encoder families ({', '.join(ONNX_FAMILIES)}), "
                f"not {self.family}; use runtime='torch' with dtype auto, fp32, bf16 or fp16"
            )
        self.model_name_or_path = str(model_name_or_path)
        self.max_length = max_length
        self._runtime_request = (runtime, dtype, device, batch_size)
        self.onnx_record = onnx
        engine_dtype = "fp32" if isinstance(dtype, str) and dtype.lower() == "int8" else dtype
        self.engine = Engine(device=device, dtype=engine_dtype, batch_size=batch_size, progress=progress)
        #: what the model runs on (set when the backbone is loaded; torch until then)
        self.runtime = RuntimeChoice("torch")
        self.hub_kwargs: dict[str, Any] = {
            "token": token,
            "revision": revision,
            "trust_remote_code": trust_remote_code,
        }
        self.model_kwargs = dict(model_kwargs or {})
        self._loaded = loaded
        self.model_dir = Path(model_dir) if model_dir else None
        self.truncation = TruncationWarnings(max_length)

    # -- loading helpers --------------------------------------------------------------------------------
    def _pretrained_kwargs(self) -> dict[str, Any]:
        kw = {k: v for k, v in self.hub_kwargs.items() if v not in (None, False)}
        kw.update(self.model_kwargs)
        return kw

    def _load_tokenizer(self, path: str | None = None) -> Any:
        from transformers import AutoTokenizer

        kw = {k: v for k, v in self.hub_kwargs.items() if v not in (None, False)}
        return AutoTokenizer.from_pretrained(path or self.model_name_or_path, **kw)

    def _from_pretrained(self, auto_class: Any, **kwargs: Any) -> Any:
        """``auto_class.from_pretrained`` of the backbone in the engine's dtype (the ``loaded`` model when one was
        given); transformers' own loading bar follows the engine's progress setting."""
        if self._loaded is not None:
            model, self._loaded = self._loaded, None
            return model
        with quiet_transformers_progress(self.engine.progress):
            return auto_class.from_pretrained(
                self.model_name_or_path, dtype=self.engine.dtype, **self._pretrained_kwargs(), **kwargs
            )

    def _finish_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model.eval()
        return model.to(self.engine.device)

    def _load_backbone(
        self, auto_class: Any, adapter: str | None = None, merge_adapter: bool = False
    ) -> tuple[Any, Any]:
        """The model to run and its live peft model (or ``None``): the torch model in the engine's dtype, or an
        ``OnnxEncoderModel`` over the exported graph (adapter merged at export) when the runtime is ONNX."""
        runtime, dtype, device, batch_size = self._runtime_request
        self.runtime = choose_runtime(runtime, dtype, device, family=self.family, record=self.onnx_record,
                                      model_dir=self.model_dir, backbone=self.model_name_or_path,
                                      adapter=adapter)  # fmt: skip
        if self.runtime.runtime in EXPORTED_RUNTIMES and self.runtime.graph is not None:
            from transformers import AutoConfig

            self.engine = Engine(
                device="cpu", dtype="fp32", batch_size=batch_size, progress=self.engine.progress
            )
            kw = {k: v for k, v in self.hub_kwargs.items() if v not in (None, False)}
            config = AutoConfig.from_pretrained(self.model_name_or_path, **kw)
            if self.runtime.runtime == "openvino":
                from reason2rank.onnx.openvino_model import OpenVINOEncoderModel

                return OpenVINOEncoderModel(
                    self.runtime.graph, config, precision=self.runtime.precision or "fp32"
                ), None
            return OnnxEncoderModel(self.runtime.graph, config), None
        model = self._from_pretrained(auto_class)
        model, peft_model = attach_adapter(model, adapter, merge_adapter, **self.hub_kwargs)
        return self._finish_model(model), peft_model

    # -- what a family implements -------------------------------------------------------------------
    def encode_pairs(self, queries: Sequence[str], docs: Sequence[str]) -> tuple[list[Features], int]:
        """Token ids of each (query, doc text) pair, and how many pairs had their document cut."""
        raise NotImplementedError

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One score per row of a padded batch."""
        raise NotImplementedError

    @property
    def pad_token_id(self) -> int:
        """The id batches are padded with (the tokenizer's pad token, else its EOS token, else 0)."""
        tok = self.tokenizer
        pid = tok.pad_token_id
        if pid is None:
            pid = tok.eos_token_id if tok.eos_token_id is not None else 0
        return int(pid)

    # -- scoring --------------------------------------------------------------------------------------
    def score_texts(self, queries: Sequence[str], docs: Sequence[str], desc: str = "scoring") -> np.ndarray:
        """Scores of aligned (query text, doc text) pairs, in input order."""
        features, truncated = self.encode_pairs(queries, docs)
        self.truncation.report(truncated, len(features))
        return self.engine.run(
            features, self.forward, self.pad_token_id, self.padding_side, desc=desc
        ).reshape(-1)

    def score_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[np.ndarray]:
        """Scores of every document of every query, from one engine run."""
        qs: list[str] = []
        ds: list[str] = []
        for q, docs in items:
            for d in docs:
                qs.append(q.text)
                ds.append(d.full_text)
        flat = self.score_texts(qs, ds, desc=f"{self.family} rerank")
        return split_scores(flat, [len(docs) for _, docs in items])

    # -- self-description and saving ----------------------------------------------------------------
    def r2r_config(self) -> dict[str, Any]:
        """Family-specific fields of ``r2r_model.json`` (the family, backbone and version are added by save)."""
        return {"max_length": self.max_length}

    def describe(self) -> dict[str, Any]:
        """Family, model name and runtime (``"torch"``, ``"onnx fp32"``, ``"onnx int8"``, ``"openvino fp32"``/``"openvino bf16"``)."""
        runtime = " ".join(x for x in (self.runtime.runtime, self.runtime.precision) if x)
        return {"family": self.family, "model": self.model_name_or_path, "runtime": runtime}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name_or_path!r})"

    def save(self, path: str | os.PathLike) -> Path:
        """Write a self-describing model directory: weights, tokenizer and ``r2r_model.json``."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        extra = self._save_weights(out)
        self.tokenizer.save_pretrained(out)
        cfg: dict[str, Any] = {"family": self.family, "backbone": "."}
        cfg.update(self.r2r_config())
        cfg.update(extra)
        write_r2r_config(out, cfg)
        return out

    def _save_weights(self, out: Path) -> dict[str, Any]:
        """Save the backbone; an unmerged adapter goes to ``adapter/`` beside the clean base weights. On ONNX
        Runtime the files the model was opened from (weights, adapter, the ONNX export) are copied."""
        if isinstance(self.model, OnnxEncoderModel):
            return self._copy_exported_files(out)
        peft_model = getattr(self, "_peft", None)
        if peft_model is None:
            self.model.save_pretrained(out)
            return {}
        peft_model.save_pretrained(out / "adapter")
        copy.deepcopy(peft_model).unload().save_pretrained(out)
        return {"adapter": "adapter"}

    def _copy_exported_files(self, out: Path) -> dict[str, Any]:
        from reason2rank.onnx.record import ONNX_DIR, OnnxRecord, weight_files

        src = Path(self.model_name_or_path)
        for f in weight_files(src):
            if (out / f.name).resolve() != f.resolve():
                shutil.copy2(f, out / f.name)
        extra: dict[str, Any] = {}
        adapter = getattr(self, "adapter", None)
        if adapter:
            if (out / "adapter").resolve() != Path(adapter).resolve():
                shutil.copytree(adapter, out / "adapter", dirs_exist_ok=True)
            extra["adapter"] = "adapter"
        record = OnnxRecord.from_config(self.onnx_record, self.model_dir)
        (out / ONNX_DIR).mkdir(exist_ok=True)
        for precision in ("fp32", "int8") if record.int8 else ("fp32",):
            graph = record.file(precision, self.model_dir)
            target = out / ONNX_DIR / graph.name
            if target.resolve() != graph.resolve():
                shutil.copy2(graph, target)
            setattr(record, precision, f"{ONNX_DIR}/{graph.name}")
        extra["onnx"] = record.to_config()
        return extra


def attach_adapter(
    model: torch.nn.Module, adapter: str | None, merge: bool, **hub_kwargs: Any
) -> tuple[Any, Any]:
    """Load a peft (LoRA) adapter onto ``model``; merge it into the weights when ``merge`` is true.

    Returns ``(model_to_run, peft_model_or_None)``: unmerged adapters stay live in the injected layers of the
    returned base model, so scoring code needs no peft-specific path.
    """
    if not adapter:
        return model, None
    try:
        from peft import PeftModel
    except ImportError as e:  # pragma: no cover - peft is a core dependency
        raise ImportError("loading an adapter needs peft: pip install peft") from e
    kw = {k: v for k, v in hub_kwargs.items() if v not in (None, False) and k in ("token", "revision")}
    peft_model = PeftModel.from_pretrained(model, str(adapter), **kw)
    if merge:
        return peft_model.merge_and_unload(), None
    return peft_model.get_base_model(), peft_model
