"""The self-describing model directory: ``r2r_model.json`` read and written, its format version, and how the
paths it names are resolved.

A reason2rank model directory holds the weights and tokenizer a transformers ``from_pretrained`` reads, plus
``r2r_model.json``::

    {"format": "reason2rank", "version": 1, "family": "cross-encoder", "backbone": ".", ...family options}

``backbone`` is ``"."`` (the directory itself), a path relative to the directory, an absolute path or a hub id;
files a family names (``adapter``, ``evidence_head``, a rank head, a prompt template, a selector model) are
resolved against the directory by ``resolve_in``. Hub ids are read with ``huggingface_hub`` (only when the
string is a hub id by ``reason2rank.locations``); nothing is downloaded for a local path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reason2rank.locations import is_hub_id

__all__ = [
    "FORMAT_VERSION",
    "R2R_CONFIG",
    "check_model_dir",
    "check_version",
    "read_r2r_config",
    "resolve_in",
    "write_r2r_config",
]

#: the file that makes a directory a reason2rank model
R2R_CONFIG = "r2r_model.json"
#: the newest layout of ``r2r_model.json`` this version reads and the one it writes
FORMAT_VERSION = 1
#: the ``format`` field written into every ``r2r_model.json``
FORMAT_NAME = "reason2rank"

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "spiece.model")


def check_model_dir(root: Path, what: str) -> None:
    """``FileNotFoundError`` listing what a transformers directory ``root`` lacks (config, weights, tokenizer)."""
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
    path_or_id: str | os.PathLike[str], **hub_kwargs: Any
) -> tuple[dict[str, Any] | None, Path | None]:
    """Return (config or ``None``, local directory or ``None``) for a model directory or a hub id.

    A directory without ``r2r_model.json`` gives ``(None, dir)``; a hub repo without one (or one that cannot be
    reached: offline, gated) gives ``(None, None)`` and transformers reports the precise error later.
    """
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
    if not is_hub_id(s):
        raise FileNotFoundError(
            f"no model directory at {p.resolve()} (looked for {p / R2R_CONFIG} or a transformers config.json "
            "there), and it is not a hub id of the form 'owner/name'"
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


def check_version(cfg: Mapping[str, Any], where: Path | None) -> None:
    """``ValueError`` when ``cfg`` has no family or was written by a newer reason2rank."""
    if "family" not in cfg:
        from reason2rank.load import FAMILIES

        raise ValueError(
            f"{R2R_CONFIG} in {where} has no 'family'; known families: {', '.join(sorted(FAMILIES))}"
        )
    version = cfg.get("version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ValueError(f"{R2R_CONFIG} in {where} has a version that is not an integer: {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{R2R_CONFIG} in {where} has format version {version}, newer than this reason2rank understands "
            f"({FORMAT_VERSION}); upgrade reason2rank"
        )


def write_r2r_config(directory: Path, cfg: Mapping[str, Any]) -> None:
    """Write ``r2r_model.json`` into ``directory`` atomically (``format`` and ``version`` added when absent)."""
    full = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **cfg}
    tmp = directory / (R2R_CONFIG + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, directory / R2R_CONFIG)


def resolve_in(model_dir: Path | None, name: str | os.PathLike[str]) -> Path:
    """A file or directory a model directory names: absolute paths as they are; a relative one inside
    ``model_dir`` when it exists there, else relative to the working directory."""
    path = Path(name)
    if path.is_absolute() or model_dir is None:
        return path
    inside = model_dir / path
    return inside if inside.exists() else path
