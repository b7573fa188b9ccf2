"""The training configuration: a YAML file (or a dict) read into dataclasses, checked key by key.

Example (every key is optional except ``output_dir``, ``student.model`` and ``data.train``)::

    output_dir: runs/minilm-scifact
    seed: 42
    student:
      type: encoder              # encoder (cross-encoder + evidence head) | decoder (causal LM + rank head) | vlm
      model: sentence-transformers/all-MiniLM-L6-v2
      max_length: 256
      # decoder only:
      # prompt_template: r2r_student
      # lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: null}   # null = all linear layers
      # max_answer_tokens: 128
      # readout: rank_head     # or tokens: the prompt's own read-out, no new layers (ProRank stage 2 with
      #                        # prompt_template: binary_relevance, i.e. logit("1") - logit("0"), and pointwise_bce)
      # reasoning_per_query: 2   comparisons_per_query: 1
    data:
      train: train.jsonl         # a TrainingSet JSONL, or {qrels|store, run, topics, docs, depth, negatives}
      dev: dev.jsonl             # optional: nDCG@10 every eval_every steps (same two forms)
      group_size: 8              # one positive + 7 negatives per query
    objectives: {group_softmax_ce: 1.0, ranknet_grades: 0.5, evidence: 0.5}
    weighting: fixed             # or uncertainty (learned, Kendall et al.)
    train:
      max_steps: 500             # or epochs: 1.0
      batch_size: 4              # queries per micro-batch and process
      grad_accum: 1
      lr: 3.0e-5
      eval_every: 100
      save_every: 100

Relative paths are resolved against the YAML file's directory. Numbers are read the way people write them
(``lr: 3e-5`` and ``--set train.lr=5e-5`` are floats, although YAML 1.1 reads ``3e-5`` as a string); a value of
the wrong type is an error naming the key and the type it needs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union


@dataclass
class StudentConfig:
    type: str = "encoder"
    model: str = ""
    max_length: int | None = None  # encoder 256, decoder 512
    max_query_length: int | None = None
    gradient_checkpointing: bool = False
    # encoder
    evidence_threshold: float = 0.5
    # decoder
    prompt_template: str = "r2r_student"
    lora: dict[str, Any] | None = field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05})
    max_answer_tokens: int = 128
    reasoning_per_query: int = 2
    comparisons_per_query: int = 1
    token: str | None = None
    revision: str | None = None
    readout: str | None = (
        None  # decoder: rank_head (default) | tokens (the prompt's read-out, e.g. ProRank's)
    )


@dataclass
class DataConfig:
    train: Any = None
    dev: Any = None
    group_size: int = 8
    dev_depth: int | None = None


@dataclass
class OptimConfig:
    max_steps: int | None = None
    epochs: float = 1.0
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 3e-5
    head_lr: float | None = None  # new heads (rank, evidence, a new classifier); default: lr
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    bf16: Any = "auto"  # true | false | auto (CUDA with bf16 support)
    device: str | None = None  # None: what accelerate picks (CUDA when there is one)
    fsdp: bool = False  # shard the student over the GPUs (FSDP2) instead of replicating it (DDP)
    eval_every: int = 0
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 10
    eval_batch_size: int = 32


#: keys that may change between a run and its resumption (they do not change the trained weights)
RESUMABLE_KEYS = {"eval_every", "save_every", "keep_checkpoints", "log_every", "eval_batch_size", "device"}


@dataclass
class TrainConfig:
    output_dir: str = ""
    seed: int = 42
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objectives: dict[str, Any] = field(default_factory=lambda: {"group_softmax_ce": 1.0})
    weighting: str = "fixed"
    train: OptimConfig = field(default_factory=OptimConfig)
    resume: bool = True
    base_dir: str | None = None  # where relative paths resolve (the YAML file's directory)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> TrainConfig:
        """A checked config from a mapping (unknown keys and bad values are errors naming the key)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a training config must be a mapping, got {type(data).__name__}")
        data = dict(data)
        method = data.pop("method", "supervised")
        if method != "supervised":
            raise ValueError(
                f"method {method!r} is not the supervised trainer's; a 'method: grpo' config is read by "
                "reason2rank.rl.GRPOTrainConfig (reason2rank train dispatches on method)"
            )
        sub = {"student": StudentConfig, "data": DataConfig, "train": OptimConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sub:
                kwargs[key] = _build(sub[key], value or {}, key)
            else:
                kwargs[key] = value
        _check_keys(cls, kwargs, "config")
        hints = typing.get_type_hints(cls)
        kwargs = {k: v if k in sub else _check_type(v, hints[k], k) for k, v in kwargs.items()}
        cfg = cls(**kwargs)
        if base_dir is not None and cfg.base_dir is None:
            cfg.base_dir = str(base_dir)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """A checked config from a YAML file, with dotted ``overrides`` (``{"train.lr": 1e-4}``) applied first."""
        data, base_dir = read_yaml_config(path, overrides)
        return cls.from_dict(data, base_dir=base_dir)

    def to_dict(self) -> dict[str, Any]:
        """The config as nested dicts (what ``training.json`` records)."""
        return dataclasses.asdict(self)

    def resolve(self, value: Any) -> Any:
        """A path relative to the config file's directory (hub ids and absolute paths pass through)."""
        return resolve_beside(self.base_dir, value)

    def validate(self) -> None:
        """``ValueError`` naming the first key with a value the trainer cannot use."""
        if not self.output_dir:
            raise ValueError(
                "the config needs output_dir: the directory for checkpoints and the trained model"
            )
        if self.student.type not in ("encoder", "decoder", "vlm"):
            raise ValueError(f"student.type must be 'encoder', 'decoder' or 'vlm', got {self.student.type!r}")
        if self.student.readout not in (None, "rank_head", "tokens"):
            raise ValueError(f"student.readout must be rank_head or tokens, got {self.student.readout!r}")
        if self.student.readout == "tokens" and self.student.type != "decoder":
            raise ValueError(
                "student.readout tokens is for student.type decoder (a causal LM's token logits)"
            )
        if not self.student.model:
            raise ValueError("the config needs student.model: a model directory or hub id to start from")
        if self.data.train is None:
            raise ValueError(
                "the config needs data.train: a TrainingSet JSONL, or {qrels or store, run, topics, docs}"
            )
        t = self.train
        for name in ("batch_size", "grad_accum", "log_every", "eval_batch_size"):
            if not isinstance(getattr(t, name), int) or getattr(t, name) < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {getattr(t, name)!r}")
        for name in ("eval_every", "save_every", "keep_checkpoints"):
            if not isinstance(getattr(t, name), int) or getattr(t, name) < 0:
                raise ValueError(f"train.{name} must be an integer >= 0, got {getattr(t, name)!r}")
        if t.max_steps is not None and (not isinstance(t.max_steps, int) or t.max_steps < 1):
            raise ValueError(f"train.max_steps must be a positive integer, got {t.max_steps!r}")
        if not t.lr > 0:
            raise ValueError(f"train.lr must be > 0, got {t.lr}")
        if not 0 <= t.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {t.warmup_ratio}")
        if t.bf16 not in (True, False, "auto"):
            raise ValueError(f"train.bf16 must be true, false or auto, got {t.bf16!r}")
        if t.fsdp and t.device == "cpu":
            raise ValueError(
                "train.fsdp shards the student over GPUs (accelerate runs FSDP on CUDA devices only); on CPU "
                "remove train.fsdp (several CPU processes train with DDP) or set train.device to cuda"
            )
        if not isinstance(self.data.group_size, int) or self.data.group_size < 2:
            raise ValueError(f"data.group_size must be an integer >= 2, got {self.data.group_size!r}")

    def fingerprint(self) -> str:
        """Digest of everything that changes the trained weights (checked when a run resumes)."""
        d = self.to_dict()
        d.pop("output_dir")
        d.pop("resume")
        d.pop("base_dir")
        if d["student"].get("readout") is None:  # added later: runs written before it keep their fingerprint
            d["student"].pop("readout", None)
        for k in RESUMABLE_KEYS:
            d["train"].pop(k, None)
        if not d["train"].get("fsdp"):  # runs from before the option existed keep their fingerprint
            d["train"].pop("fsdp", None)
        blob = json.dumps(d, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# YAML 1.1 (PyYAML) reads 3e-5 and 1e4 as strings: a float needs a dot there. This resolver reads every
# number form Python's float() accepts, as YAML 1.2 does.
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def read_yaml_config(
    path: str | os.PathLike, overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], Path]:
    """The mapping of a YAML training config with dotted ``overrides`` applied, and the folder its relative paths
    are resolved against; ``FileNotFoundError`` / ``ValueError`` naming the file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"training config {p} does not exist")
    try:
        data = load_yaml(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{p} is not valid YAML: {e}") from e
    for dotted, value in (overrides or {}).items():
        set_dotted(data, dotted, value)
    return data, p.resolve().parent


def resolve_beside(base_dir: str | None, value: Any) -> Any:
    """``value`` as a path relative to a config's folder ``base_dir`` when it is one (it exists there, or it reads
    as a path); hub ids, absolute paths and non-strings pass through."""
    if not isinstance(value, str) or not value or base_dir is None or os.path.isabs(value):
        return value
    from reason2rank.locations import location_kind

    candidate = Path(base_dir) / value
    return str(candidate) if candidate.exists() or location_kind(value) == "path" else value


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``5e-5`` / ``1E4`` as floats (YAML 1.2 numbers)."""
    import yaml

    class NumberLoader(yaml.SafeLoader):
        pass

    NumberLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return yaml.load(text, Loader=NumberLoader)  # noqa: S506 - a SafeLoader subclass


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return isinstance(value, str)


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (ints are accepted and converted for floats);
    ``ValueError`` naming ``key`` and the type it needs."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        for option in options:
            try:
                return _check_type(value, option, key)
            except ValueError:
                continue
        expected = " or ".join(_type_name(typing.get_origin(o) or o) for o in options)
        hint = " (write numbers without quotes)" if _is_number(value) else ""
        raise ValueError(f"{key} must be {expected}, got {value!r} ({type(value).__name__}){hint}")
    base = origin or tp
    ok = {
        type(None): value is None,
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        dict: isinstance(value, Mapping),
        list: isinstance(value, (list, tuple)),
    }.get(base)
    if ok is None:  # a type this check does not know: leave it to validate()
        return value
    if not ok:
        hint = " (write numbers without quotes)" if base in (int, float) and _is_number(value) else ""
        raise ValueError(f"{key} must be {_type_name(base)}, got {value!r} ({type(value).__name__}){hint}")
    return float(value) if base is float else value


def _check_keys(cls: type, data: Mapping[str, Any], where: str) -> None:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; known keys: {', '.join(names)}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"'{where}' must be a mapping of keys, got {type(data).__name__}")
    _check_keys(cls, data, where)
    hints = typing.get_type_hints(cls)
    return cls(**{k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``set_dotted(d, "train.lr", 1e-4)`` sets ``d["train"]["lr"]`` (creating the mapping if needed)."""
    keys = dotted.split(".")
    cur = data
    for k in keys[:-1]:
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict):
            raise ValueError(f"cannot set {dotted}: {k} is not a mapping")
        cur = nxt
    cur[keys[-1]] = value


def build_section(cls: type, data: Any, where: str) -> Any:
    """A dataclass ``cls`` from the mapping ``data``, checked key by key as the training config's sections are
    (unknown keys and values of the wrong type are ``ValueError`` naming ``where.key``); for other configs that
    follow the same rules (``reason2rank.rl``)."""
    return _build(cls, data, where)
