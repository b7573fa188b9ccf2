"""What every transformers-backed scorer shares: loading options, the engine, pair flattening, saving."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reason2rank.engine import Engine, Features, TruncationWarnings
from reason2rank.model_dir import write_r2r_config
from reason2rank.progress import quiet_transformers_progress
from reason2rank.reranker import Reranker, split_scores
from reason2rank.types import Doc, Query


class TransformerReranker(Reranker):
    """Base of the pointwise families: every (query, doc) pair of every query goes through one engine run.

    Subclasses implement ``encode_pairs`` (token ids per pair, and how many were truncated) and ``forward``
    (a padded batch → one score per row), and may override ``score_batch`` (the bi-encoder does).
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
    ) -> None:
        if not isinstance(max_length, int) or max_length < 8:
            raise ValueError(f"max_length must be an int >= 8, got {max_length!r}")
        self.model_name_or_path = str(model_name_or_path)
        self.max_length = max_length
        self.engine = Engine(device=device, dtype=dtype, batch_size=batch_size, progress=progress)
        self.hub_kwargs: dict[str, Any] = {
            "token": token,
            "revision": revision,
            "trust_remote_code": trust_remote_code,
        }
        self.model_kwargs = dict(model_kwargs or {})
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
        """``auto_class.from_pretrained`` of the backbone in the engine's dtype; transformers' own loading bar
        follows the engine's progress setting."""
        with quiet_transformers_progress(self.engine.progress):
            return auto_class.from_pretrained(
                self.model_name_or_path, dtype=self.engine.dtype, **self._pretrained_kwargs(), **kwargs
            )

    def _finish_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model.eval()
        return model.to(self.engine.device)

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
        """Family and model name."""
        return {"family": self.family, "model": self.model_name_or_path}

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
        """Save the backbone; an unmerged adapter goes to ``adapter/`` beside the clean base weights."""
        peft_model = getattr(self, "_peft", None)
        if peft_model is None:
            self.model.save_pretrained(out)
            return {}
        peft_model.save_pretrained(out / "adapter")
        copy.deepcopy(peft_model).unload().save_pretrained(out)
        return {"adapter": "adapter"}


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
