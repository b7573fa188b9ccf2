"""``load(path_or_hub_id)``: open a self-describing model directory (``r2r_model.json``) as a Reranker.

``r2r_model.json`` fields: ``family`` (required), ``backbone`` (path relative to the directory, absolute path
or hub id; default "."), ``adapter`` (peft adapter dir or id), ``merge_adapter``, ``prompt_template`` and
``readout`` (causal-lm), ``pooling``/``similarity`` (bi-encoder), ``max_length``, ``version``. Any keyword
passed to ``load`` overrides the file. A plain transformers directory loads with an explicit ``family=``.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from reason2rank.reranker import Reranker
from reason2rank.scorers.base import FORMAT_VERSION, R2R_CONFIG

FAMILIES: dict[str, str] = {
    "cross-encoder": "reason2rank.scorers.cross_encoder:CrossEncoderReranker",
    "bi-encoder": "reason2rank.scorers.bi_encoder:BiEncoderReranker",
    "causal-lm": "reason2rank.scorers.causal_lm:CausalLMReranker",
    "cascade": "reason2rank.cascade:CascadeReranker",
}
_ALIASES = {
    "cross_encoder": "cross-encoder", "crossencoder": "cross-encoder", "cross": "cross-encoder",
    "bi_encoder": "bi-encoder", "biencoder": "bi-encoder", "dense": "bi-encoder",
    "causal_lm": "causal-lm", "causallm": "causal-lm", "llm": "causal-lm", "decoder": "causal-lm",
}  # fmt: skip
_META_KEYS = {"format", "version", "family", "backbone", "description"}
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "spiece.model")


def register_family(name: str, target: str) -> None:
    """Register a family ``name`` implemented by ``"module:Class"`` (a Reranker subclass)."""
    FAMILIES[name] = target


def family_class(name: str) -> type[Reranker]:
    key = _ALIASES.get(name.lower(), name.lower()) if isinstance(name, str) else name
    if key not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known families: {', '.join(sorted(FAMILIES))}")
    module, _, cls = FAMILIES[key].partition(":")
    return getattr(importlib.import_module(module), cls)


def _looks_like_hub_id(s: str) -> bool:
    return (
        s.count("/") == 1
        and not s.startswith((".", "/", "~"))
        and not os.path.isabs(s)
        and all(part and " " not in part for part in s.split("/"))
    )


def _check_model_dir(root: Path, what: str) -> None:
    missing = []
    if not (root / "config.json").is_file():
        missing.append("config.json")
    if not any((root / f).is_file() for f in _WEIGHT_FILES):
        missing.append("weights (one of " + ", ".join(_WEIGHT_FILES) + ")")
    if not any((root / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer files (one of " + ", ".join(_TOKENIZER_FILES) + ")")
    if missing:
        raise FileNotFoundError(f"{what} {root} is missing {'; '.join(missing)}")


def read_r2r_config(
    path_or_id: str | os.PathLike, **hub_kwargs: Any
) -> tuple[dict[str, Any] | None, Path | None]:
    """Return (config or None, local directory or None) for a path or a hub id."""
    s = str(path_or_id)
    p = Path(s).expanduser()
    if p.is_dir():
        f = p / R2R_CONFIG
        if f.is_file():
            try:
                return json.loads(f.read_text(encoding="utf-8")), p
            except json.JSONDecodeError as e:
                raise ValueError(f"{f} is not valid JSON ({e}); fix or regenerate it with .save()") from e
        return None, p
    if p.exists():
        raise NotADirectoryError(
            f"{s} is a file; reason2rank.load expects a model directory (with {R2R_CONFIG})"
        )
    if not _looks_like_hub_id(s):
        raise FileNotFoundError(
            f"no model directory at {p.resolve()} (looked for {p / R2R_CONFIG} or a transformers config.json there), "
            "and it is not a hub id of the form 'owner/name'"
        )
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None, None
    kw = {k: v for k, v in hub_kwargs.items() if k in ("token", "revision") and v}
    try:
        local = hf_hub_download(s, R2R_CONFIG, **kw)
    except EntryNotFoundError:
        return None, None
    except Exception:  # offline, gated, or not found: transformers gives the precise error later
        return None, None
    return json.loads(Path(local).read_text(encoding="utf-8")), Path(local).parent


def load(path_or_id: str | os.PathLike, *, family: str | None = None, **kwargs: Any) -> Reranker:
    """Open a model directory or hub id as a Reranker.

    ``family`` is needed only when there is no ``r2r_model.json``; keyword arguments (``batch_size``,
    ``device``, ``dtype``, ``max_length``, ``adapter``, ...) override the file's settings.
    """
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
            _check_model_dir(root, "model directory")
        return cls(str(root) if root is not None else str(path_or_id), **kwargs)

    if "family" not in cfg:
        raise ValueError(
            f"{R2R_CONFIG} in {root} has no 'family'; known families: {', '.join(sorted(FAMILIES))}"
        )
    if int(cfg.get("version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise ValueError(
            f"{root / R2R_CONFIG} has format version {cfg['version']}, newer than this reason2rank understands "
            f"({FORMAT_VERSION}); upgrade reason2rank"
        )
    cls = family_class(family or cfg["family"])
    backbone = str(cfg.get("backbone", "."))
    backbone_path = (root / backbone) if root is not None and not os.path.isabs(backbone) else Path(backbone)
    if backbone_path.is_dir():
        _check_model_dir(backbone_path, "backbone directory")
        backbone = str(backbone_path)
    elif not _looks_like_hub_id(backbone):
        raise FileNotFoundError(
            f"{R2R_CONFIG} names backbone {cfg.get('backbone')!r}, but {backbone_path} does not exist"
        )
    options = {k: v for k, v in cfg.items() if k not in _META_KEYS}
    adapter = options.get("adapter")
    if adapter and root is not None and not os.path.isabs(adapter) and (root / adapter).is_dir():
        options["adapter"] = str(root / adapter)
    if root is not None:
        options["model_dir"] = str(root)  # relative files (prompt, rank head) resolve against it
    options.update(kwargs)
    try:
        return cls(backbone, **options)
    except TypeError as e:
        raise ValueError(f"{R2R_CONFIG} in {root} has an option {cls.__name__} does not take: {e}") from e
