"""``load(path_or_hub_id)``: open a self-describing model directory (``r2r_model.json``) as a Reranker.

``r2r_model.json`` fields: ``family`` (required), ``backbone`` (path relative to the directory, absolute path
or hub id; default "."), ``adapter`` (peft adapter dir or id), ``merge_adapter``, ``prompt_template`` and
``readout`` (causal-lm), ``pooling``/``similarity`` (bi-encoder), ``max_length``, ``version``. Any keyword
passed to ``load`` overrides the file. A plain transformers directory loads with an explicit ``family=``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reason2rank.locations import is_hub_id
from reason2rank.model_dir import R2R_CONFIG, check_model_dir, check_version, read_r2r_config, resolve_in
from reason2rank.reranker import Reranker

#: families: pointwise scorers, the cascade, and the LLM ranking strategies (which return orders)
FAMILIES: dict[str, str] = {
    "cross-encoder": "reason2rank.scorers.cross_encoder:CrossEncoderReranker",
    "bi-encoder": "reason2rank.scorers.bi_encoder:BiEncoderReranker",
    "causal-lm": "reason2rank.scorers.causal_lm:CausalLMReranker",
    "cascade": "reason2rank.cascade:CascadeReranker",
    "listwise": "reason2rank.strategies.listwise:ListwiseReranker",
    "setwise": "reason2rank.strategies.setwise:SetwiseReranker",
    "pairwise": "reason2rank.strategies.pairwise:PairwiseReranker",
    "two-stage": "reason2rank.strategies.two_stage:TwoStageReranker",
    "icr": "reason2rank.strategies.icr:ICRReranker",
    "vlm": "reason2rank.scorers.vlm:VLMReranker",
    "vlm-embed": "reason2rank.scorers.vlm_embed:VLMEmbedder",
    "vlm-listwise": "reason2rank.strategies.vlm_listwise:VLMListwiseReranker",
}
_ALIASES = {
    "cross_encoder": "cross-encoder", "crossencoder": "cross-encoder", "cross": "cross-encoder",
    "bi_encoder": "bi-encoder", "biencoder": "bi-encoder", "dense": "bi-encoder",
    "causal_lm": "causal-lm", "causallm": "causal-lm", "llm": "causal-lm", "decoder": "causal-lm",
    "two_stage": "two-stage", "dear": "two-stage", "rankgpt": "listwise", "prp": "pairwise",
    "in-context": "icr", "attention": "icr",
    "vision": "vlm", "gmr": "vlm", "monovlm": "vlm", "vlm_listwise": "vlm-listwise", "mm-r5": "vlm-listwise",
    "vlm_embed": "vlm-embed", "identify": "vlm-embed",
}  # fmt: skip
_META_KEYS = {"format", "version", "family", "backbone", "description"}


def register_family(name: str, target: str) -> None:
    """Register a family ``name`` implemented by ``"module:Class"`` (a Reranker subclass)."""
    FAMILIES[name] = target


def family_class(name: str) -> Callable[..., Reranker]:
    """The ``Reranker`` class registered for family ``name`` (aliases accepted), imported now."""
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
    if key not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known families: {', '.join(sorted(FAMILIES))}")
    module, _, cls = FAMILIES[key].partition(":")
    return getattr(importlib.import_module(module), cls)


def load(path_or_id: str | os.PathLike, *, family: str | None = None, **kwargs: Any) -> Reranker:
    """Open a model directory or hub id as a Reranker.

    ``family`` is needed only when there is no ``r2r_model.json``; keyword arguments (``batch_size``,
    ``device``, ``dtype``, ``max_length``, ``adapter``, ...) override the file's settings.
    """
    if family is not None and kwargs.get("backend") is not None and not Path(str(path_or_id)).exists():
        # an LLM strategy over a backend (openai:..., haystack:...): the model is the backend's
        return family_class(family)(None, **kwargs)
    hub_kwargs = {k: kwargs.get(k) for k in ("token", "revision")}
    cfg, root = read_r2r_config(path_or_id, **hub_kwargs)
    if cfg is None:
        if family is None:
            where = f"{root / R2R_CONFIG}" if root is not None else f"{R2R_CONFIG} in hub repo {path_or_id}"
            raise FileNotFoundError(
                f"no {where}; for a plain transformers model pass family= (one of: {', '.join(sorted(FAMILIES))}), "
                f"e.g. reason2rank.load({str(path_or_id)!r}, family='cross-encoder')"
            )
        cls = family_class(family)
        if root is not None:
            check_model_dir(root, "model directory")
        return cls(str(root) if root is not None else str(path_or_id), **kwargs)

    check_version(cfg, root)
    cls = family_class(family or cfg["family"])
    if cfg.get("backbone", ".") is None:  # a composite model (two stages): its parts are model directories
        options = {k: v for k, v in cfg.items() if k not in _META_KEYS}
        options.update(kwargs)
        return cls(str(root), model_dir=str(root), **options)
    backbone = str(cfg.get("backbone", "."))
    backbone_path = (root / backbone) if root is not None and not os.path.isabs(backbone) else Path(backbone)
    if backbone_path.is_dir():
        check_model_dir(backbone_path, "backbone directory")
        backbone = str(backbone_path)
    elif not is_hub_id(backbone):
        raise FileNotFoundError(
            f"{R2R_CONFIG} names backbone {cfg.get('backbone')!r}, but {backbone_path} does not exist"
        )
    options = {k: v for k, v in cfg.items() if k not in _META_KEYS}
    adapter = options.get("adapter")
    if adapter and root is not None and (root / adapter).is_dir():
        options["adapter"] = str(resolve_in(root, adapter))
    if root is not None:
        options["model_dir"] = str(root)  # relative files (prompt, rank head) resolve against it
    options.update(kwargs)
    try:
        return cls(backbone, **options)
    except TypeError as e:
        raise ValueError(f"{R2R_CONFIG} in {root} has an option {cls.__name__} does not take: {e}") from e
