"""The GRPO training configuration (``method: grpo``): a YAML file read into dataclasses, checked key by key with
the supervised trainer's rules (unknown keys and wrong types are errors naming the key; relative paths resolve
against the YAML file's directory; ``5e-5`` is a float).

Example (every key is optional except ``output_dir``, ``model`` and the data)::

    method: grpo
    task: setwise                # setwise (Rank-R1) | binary (ProRank stage 1) | listwise (MM-R5, text)
                                 # | vlm-listwise (MM-R5 on page images: a Qwen2-VL-style model)
    output_dir: runs/rank-r1-smollm2
    seed: 42
    model: HuggingFaceTB/SmolLM2-135M-Instruct
    lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: null}   # null = all linear layers (vlm-listwise: the
                                 # language model's); lora: null = full (vlm-listwise: vision tower frozen)
    data:
      candidates: ../shared/data/trec-dl19/bm25_top100.json          # or run + topics + docs
      qrels: ../shared/data/trec-dl19/qrels.txt
      queries: null              # train on these qids only (a list, or a file of one qid a line)
      exclude_queries: null      # ... or on all but these (a held-out split)
      depth: 100                 # candidates per query the examples are drawn from
      window: 20                 # documents per prompt: 1 positive + window-1 negatives (setwise, listwise)
      examples_per_query: 1
      positive_grade: 1          # a qrels grade >= this is a positive
      negative_max_grade: 0      # a judged grade <= this, or an unjudged candidate, is a negative
      max_words: 300             # words per passage in the prompt
      prompt: null               # the task's default: setwise_rank_r1_v1, listwise_mm_r5_v1, binary_relevance
      min_pixels: 3136           # vlm-listwise: the pixel budget of each page image (28*28*4 .. 28*28*256)
      max_pixels: 200704
      image_root: null           # vlm-listwise: image paths must lie under this directory (null: anywhere)
    grpo:
      max_steps: 100             # or epochs: 1.0
      prompts_per_step: 2        # prompts per optimizer step (each sampled num_generations times)
      num_generations: 4
      max_completion_length: 256
      temperature: 1.0
      lr: 1.0e-5
      beta: 0.0                  # KL to the reference model (TRL's default: none)
      loss_type: dapo
      save_every: 25             # a TRL/accelerate checkpoint every N steps; a rerun resumes from the latest
      use_vllm: auto             # auto: vLLM when it is installed and there is a GPU; else transformers
      vllm_mode: colocate        # or server (vllm_server_url)
      tie_warning: 0.9           # warn when the fraction of all-tied groups stays above this
      format_warmup_steps: 0     # N > 0: N LoRA steps on well-formed answers with random ids first
      format_warmup_lr: 2.0e-4   # (teaches the format, not the answer: see reason2rank.rl.format_warmup)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reason2rank.distill.config import build_section, read_yaml_config, resolve_beside

__all__ = ["GRPODataConfig", "GRPOOptions", "GRPOTrainConfig", "TASKS"]

#: the GRPO tasks and the inference family the trained model opens as
TASKS = {"setwise": "setwise", "binary": "causal-lm", "listwise": "listwise", "vlm-listwise": "vlm-listwise"}
#: the prompt each task uses unless ``data.prompt`` names another
DEFAULT_PROMPTS = {"setwise": "rank_r1_v1", "binary": "binary_relevance", "listwise": "mm_r5_v1",
                   "vlm-listwise": "mm_r5_v1"}  # fmt: skip
#: the data keys of page images (left out of the fingerprint of a text task, so earlier runs keep theirs)
IMAGE_KEYS = ("min_pixels", "max_pixels", "image_root")


@dataclass
class GRPODataConfig:
    candidates: str | None = None
    run: str | None = None
    topics: str | None = None
    docs: str | None = None
    qrels: str | None = None
    queries: Any = None
    exclude_queries: Any = None
    depth: int | None = 100
    window: int = 20
    examples_per_query: int = 1
    positive_grade: int = 1
    negative_max_grade: int = 0
    max_words: int = 300
    prompt: str | None = None
    min_pixels: int = 28 * 28 * 4
    max_pixels: int = 28 * 28 * 256
    image_root: str | None = None


@dataclass
class GRPOOptions:
    max_steps: int | None = None
    epochs: float = 1.0
    prompts_per_step: int = 2
    grad_accum: int = 1
    num_generations: int = 4
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    lr: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    beta: float = 0.0
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    num_iterations: int = 1
    bf16: Any = "auto"
    gradient_checkpointing: bool = False
    save_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 1
    use_vllm: Any = "auto"
    vllm_mode: str = "colocate"
    vllm_server_url: str | None = None
    vllm_gpu_memory_utilization: float = 0.3
    generation_kwargs: dict[str, Any] | None = None
    tie_warning: float = 0.9
    tie_window: int = 10
    format_warmup_steps: int = 0
    format_warmup_lr: float = 2e-4


#: keys that may change between a run and its resumption (they do not change the trained weights)
RESUMABLE_KEYS = {"save_every", "keep_checkpoints", "log_every", "tie_warning", "tie_window", "max_steps"}
LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "bnpo")


@dataclass
class GRPOTrainConfig:
    method: str = "grpo"
    task: str = "setwise"
    output_dir: str = ""
    seed: int = 42
    model: str = ""
    lora: dict[str, Any] | None = field(default_factory=lambda: {"r": 16, "alpha": 32, "dropout": 0.05})
    data: GRPODataConfig = field(default_factory=GRPODataConfig)
    grpo: GRPOOptions = field(default_factory=GRPOOptions)
    resume: bool = True
    token: str | None = None
    base_dir: str | None = None  # where relative paths resolve (the YAML file's directory)

    # -- reading ------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> GRPOTrainConfig:
        """A checked config from a mapping (unknown keys and bad values are errors naming the key)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a training config must be a mapping, got {type(data).__name__}")
        sub = {"data": GRPODataConfig, "grpo": GRPOOptions}
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in data if k not in names]
        if unknown:
            hint = ""
            if any(k in ("student", "objectives", "train", "weighting") for k in unknown):
                hint = " (student/objectives/train are keys of the supervised trainer; GRPO uses model, lora, grpo)"
            raise ValueError(f"unknown key(s) {unknown} in config{hint}; known keys: {', '.join(names)}")
        top = {k: v for k, v in data.items() if k not in sub}
        cfg = build_section(cls, top, "config")
        for key, section in sub.items():
            if key in data:
                setattr(cfg, key, build_section(section, data[key] or {}, key))
        if base_dir is not None and cfg.base_dir is None:
            cfg.base_dir = str(base_dir)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(
        cls, path: str | os.PathLike, overrides: Mapping[str, Any] | None = None
    ) -> GRPOTrainConfig:
        """A checked config from a YAML file, with dotted ``overrides`` (``{"grpo.lr": 1e-4}``) applied first."""
        data, base_dir = read_yaml_config(path, overrides)
        return cls.from_dict(data, base_dir=base_dir)

    def to_dict(self) -> dict[str, Any]:
        """The config as nested dicts (what the run records)."""
        return dataclasses.asdict(self)

    def resolve(self, value: Any) -> Any:
        """A path relative to the config file's directory (hub ids and absolute paths pass through)."""
        return resolve_beside(self.base_dir, value)

    @property
    def prompt(self) -> str:
        """The prompt of the task: ``data.prompt`` (a file relative to the config, or a built-in name)."""
        value = self.data.prompt or DEFAULT_PROMPTS[self.task]
        beside = self.base_dir is not None and (Path(self.base_dir) / value).exists()
        return self.resolve(value) if beside or os.path.isabs(value) else value

    # -- checking -----------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """``ValueError`` naming the first key with a value the trainer cannot use, and how to fix it."""
        if self.method != "grpo":
            raise ValueError(f"method must be 'grpo' for this trainer, got {self.method!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if not self.output_dir:
            raise ValueError(
                "the config needs output_dir: the directory for checkpoints and the trained model"
            )
        if not self.model:
            raise ValueError("the config needs model: a causal LM directory or hub id to start from")
        if self.lora is not None:
            extra = set(self.lora) - {"r", "alpha", "dropout", "target_modules"}
            if extra:
                raise ValueError(
                    f"unknown LoRA option(s) {sorted(extra)}; known: alpha, dropout, r, target_modules"
                )
        d = self.data
        if d.candidates is None and d.run is None:
            raise ValueError(
                "the config needs data.candidates (a rank_llm JSON of queries and their candidates) or data.run "
                "with data.topics and data.docs"
            )
        if d.candidates is not None and any(x is not None for x in (d.run, d.topics, d.docs)):
            raise ValueError("give data.candidates or data.run + data.topics + data.docs, not both")
        if d.run is not None and (d.topics is None or d.docs is None):
            raise ValueError("data.run needs data.topics and data.docs (the query and passage texts)")
        if d.qrels is None:
            raise ValueError(
                "the config needs data.qrels: the relevance labels the rewards are computed from"
            )
        if d.queries is not None and d.exclude_queries is not None:
            raise ValueError("give data.queries or data.exclude_queries, not both")
        for name in ("window", "examples_per_query", "max_words"):
            v = getattr(d, name)
            if isinstance(v, bool) or v < 1:
                raise ValueError(f"data.{name} must be a positive integer, got {v!r}")
        if self.task != "binary" and d.window < 2:
            raise ValueError(
                f"data.window must be >= 2 for task {self.task} (a positive and a negative), got {d.window}"
            )
        if self.task == "vlm-listwise":
            from reason2rank.media import PixelBudget

            try:
                PixelBudget(d.min_pixels, d.max_pixels)
            except ValueError as e:
                raise ValueError(f"data.{e}") from None
            if self.grpo.format_warmup_steps:
                raise ValueError(
                    "grpo.format_warmup_steps is for text tasks; the vlm-listwise task has no format warm-up yet "
                    "(set it to 0)"
                )
        if d.depth is not None and d.depth < d.window:
            raise ValueError(f"data.depth ({d.depth}) must be at least data.window ({d.window})")
        if d.negative_max_grade >= d.positive_grade:
            raise ValueError(
                f"data.negative_max_grade ({d.negative_max_grade}) must be below data.positive_grade "
                f"({d.positive_grade}), else a document could be both"
            )
        g = self.grpo
        for name in ("prompts_per_step", "grad_accum", "max_completion_length", "log_every", "num_iterations",
                     "tie_window"):  # fmt: skip
            v = getattr(g, name)
            if isinstance(v, bool) or v < 1:
                raise ValueError(f"grpo.{name} must be a positive integer, got {v!r}")
        if g.num_generations < 2:
            raise ValueError(
                f"grpo.num_generations must be >= 2, got {g.num_generations}: GRPO's advantage is a completion's "
                "reward minus its group's mean, so a group of one never learns"
            )
        for name in ("save_every", "keep_checkpoints"):
            if getattr(g, name) < 0:
                raise ValueError(f"grpo.{name} must be an integer >= 0, got {getattr(g, name)!r}")
        if g.max_steps is not None and g.max_steps < 1:
            raise ValueError(f"grpo.max_steps must be a positive integer, got {g.max_steps!r}")
        if not g.epochs > 0:
            raise ValueError(f"grpo.epochs must be > 0, got {g.epochs}")
        if not g.lr > 0:
            raise ValueError(f"grpo.lr must be > 0, got {g.lr}")
        if not g.temperature > 0:
            raise ValueError(
                f"grpo.temperature must be > 0, got {g.temperature}: GRPO samples several completions per prompt"
            )
        if not 0 < g.top_p <= 1:
            raise ValueError(f"grpo.top_p must be in (0, 1], got {g.top_p}")
        if not 0 <= g.warmup_ratio < 1:
            raise ValueError(f"grpo.warmup_ratio must be in [0, 1), got {g.warmup_ratio}")
        if g.beta < 0:
            raise ValueError(f"grpo.beta must be >= 0, got {g.beta}")
        if g.loss_type not in LOSS_TYPES:
            raise ValueError(f"grpo.loss_type must be one of {', '.join(LOSS_TYPES)}, got {g.loss_type!r}")
        if g.scale_rewards not in ("group", "batch", "none"):
            raise ValueError(f"grpo.scale_rewards must be group, batch or none, got {g.scale_rewards!r}")
        if g.bf16 not in (True, False, "auto"):
            raise ValueError(f"grpo.bf16 must be true, false or auto, got {g.bf16!r}")
        if g.use_vllm not in (True, False, "auto"):
            raise ValueError(f"grpo.use_vllm must be true, false or auto, got {g.use_vllm!r}")
        if g.vllm_mode not in ("colocate", "server"):
            raise ValueError(f"grpo.vllm_mode must be colocate or server, got {g.vllm_mode!r}")
        if isinstance(g.format_warmup_steps, bool) or g.format_warmup_steps < 0:
            raise ValueError(
                f"grpo.format_warmup_steps must be an integer >= 0, got {g.format_warmup_steps!r} (0: no warm-up)"
            )
        if not g.format_warmup_lr > 0:
            raise ValueError(f"grpo.format_warmup_lr must be > 0, got {g.format_warmup_lr}")
        if not 0 <= g.tie_warning <= 1:
            raise ValueError(f"grpo.tie_warning must be a fraction in [0, 1], got {g.tie_warning}")

    def fingerprint(self) -> str:
        """Digest of everything that changes the trained weights (checked when a run resumes)."""
        d = self.to_dict()
        for k in ("output_dir", "resume", "base_dir", "token"):
            d.pop(k)
        for k in RESUMABLE_KEYS:
            d["grpo"].pop(k, None)
        d["data"].pop("image_root", None)  # where the pages lie, not what they are
        if self.task != "vlm-listwise":
            for k in IMAGE_KEYS:
                d["data"].pop(k, None)
        if not d["grpo"].get("format_warmup_steps"):  # runs from before the warm-up existed keep their digest
            d["grpo"].pop("format_warmup_steps", None)
            d["grpo"].pop("format_warmup_lr", None)
        blob = json.dumps(d, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
