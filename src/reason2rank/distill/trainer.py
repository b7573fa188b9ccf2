"""The distillation trainer, on accelerate: CPU, one GPU, or several (``accelerate launch``: DDP, or FSDP2
with ``train.fsdp``, each transformer block a shard unit).

    from reason2rank.distill import TrainConfig, train
    result = train(TrainConfig.from_yaml("student.yaml"))
    model = reason2rank.load(result.model_dir)          # or R2RReranker(result.model_dir), R2RRanker(...)

or ``reason2rank train --config student.yaml``. What the trainer does:

- one optimizer step = ``grad_accum`` micro-batches per process, each of ``batch_size`` query groups
  (:mod:`reason2rank.distill.batching`); AdamW with linear warm-up and decay; gradient clipping;
  bf16 autocast on GPUs that support it (``train.bf16``); gradient checkpointing (``student``);
- every ``eval_every`` steps (and at the end) nDCG@10 / RR@10 on the dev candidates;
- every ``save_every`` steps a checkpoint in ``output_dir/checkpoints/step-N`` (weights, optimizer,
  scheduler, every process's RNG state, trainer state), written to a temporary directory and renamed,
  so a kill never leaves a half checkpoint. Started again with the same config, the trainer resumes
  from the latest checkpoint and ends with the same weights as a run that was never interrupted (the
  data order is a pure function of the seed and the step; a changed config is refused);
- the trained model goes to ``output_dir/model`` with ``training.json`` (config, history, metrics).
  Under FSDP the shards are gathered into a whole copy on the main process's CPU for evaluation and
  saving; the training forward always goes through the wrapped module.

Log lines go to stderr and ``output_dir/log.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from reason2rank.distill.batching import GroupStream
from reason2rank.distill.config import TrainConfig
from reason2rank.distill.dataset import TrainingSet
from reason2rank.distill.students import Student
from reason2rank.types import Doc, Query

STATE_FILE = "trainer_state.json"
MODEL_SUBDIR = "model"
CHECKPOINTS_SUBDIR = "checkpoints"


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: int | None = None
    seconds: float = 0.0


@dataclass
class DevSet:
    items: list[tuple[Query, list[Doc]]]
    qrels: dict[str, dict[str, int]]


# -------------------------------------------------------------------------------------------- data
def load_training_set(spec: Any, cfg: TrainConfig) -> TrainingSet:
    """``spec``: a TrainingSet JSONL path, or a mapping that builds one from qrels or a teacher store::

    {qrels: FILE, run: FILE, topics: FILE, docs: FILE, depth: 100, negatives: 30}
    {store: annotations.jsonl, candidates: FILE | run/topics/docs, teacher: NAME}
    """
    from reason2rank.data import read_qrels

    if isinstance(spec, (str, os.PathLike)):
        path = cfg.resolve(str(spec))
        if not Path(path).is_file():
            raise FileNotFoundError(f"training set {path} does not exist")
        return TrainingSet.load(path)
    if not isinstance(spec, Mapping):
        raise ValueError(f"data.train must be a path or a mapping, got {type(spec).__name__}")
    known = {"qrels", "store", "teacher", "candidates", "run", "topics", "docs", "depth", "negatives"}
    unknown = set(spec) - known
    if unknown:
        raise ValueError(
            f"unknown key(s) {sorted(unknown)} in the data spec; known: {', '.join(sorted(known))}"
        )
    if ("qrels" in spec) == ("store" in spec):
        raise ValueError(
            "a data spec needs exactly one teacher: 'qrels' (a qrels file) or 'store' (annotations)"
        )
    r = {k: cfg.resolve(v) for k, v in spec.items()}
    items, corpus = _spec_candidates(r)
    if "store" in spec:
        return TrainingSet.from_store(r["store"], items, teacher=r.get("teacher"))
    return TrainingSet.from_qrels(read_qrels(r["qrels"]), items, negatives=r.get("negatives"), docs=corpus)


def _spec_candidates(
    r: Mapping[str, Any], depth: int | None = None
) -> tuple[list[tuple[Query, list[Doc]]], dict[str, Doc] | None]:
    """Candidates of a data spec, and the corpus when it is a JSONL file (read once, used for both)."""
    from reason2rank.data import (
        candidates_from_run,
        load_candidates,
        read_docs_jsonl,
        read_topics,
        read_trec_run,
    )

    depth = r.get("depth", depth)
    files = [r.get(k) for k in ("run", "topics", "docs")]
    if r.get("candidates") is None and all(f and Path(f).is_file() for f in files):
        corpus = read_docs_jsonl(r["docs"])
        items = candidates_from_run(read_trec_run(r["run"]), read_topics(r["topics"]), corpus, depth=depth)
        return items, corpus
    items = load_candidates(
        r.get("candidates"), topics=r.get("topics"), run=r.get("run"), docs=r.get("docs"), depth=depth
    )
    return items, None


def load_dev_set(spec: Any, cfg: TrainConfig) -> DevSet | None:
    """Dev candidates and qrels: a TrainingSet JSONL (qrels from its grades) or {qrels, run, topics, docs}."""
    from reason2rank.data import read_qrels

    if spec is None:
        return None
    depth = cfg.data.dev_depth
    if isinstance(spec, Mapping) and "qrels" in spec and "store" not in spec:
        r = {k: cfg.resolve(v) for k, v in spec.items()}
        return DevSet(items=_spec_candidates(r, depth)[0], qrels=read_qrels(r["qrels"]))
    ts = load_training_set(spec, cfg)
    items, qrels = [], {}
    for tq in ts:
        cands = tq.candidates[:depth] if depth else tq.candidates
        items.append((tq.query, [c.doc for c in cands]))
        qrels[tq.query.id] = {c.doc.id: int(round(c.grade)) for c in tq.candidates if c.grade is not None}
    return DevSet(items=items, qrels=qrels)


def evaluate(reranker: Any, dev: DevSet, batch_size: int | None = None) -> dict[str, float]:
    """nDCG@10 and RR@10 of ``reranker`` on the dev candidates."""
    import ir_measures

    engine = reranker.engine
    saved = engine.batch_size, engine.progress
    try:
        if batch_size:
            engine.batch_size = batch_size
        engine.progress = False
        results = reranker.rerank_batch(dev.items)
    finally:
        engine.batch_size, engine.progress = saved
    run = {q.id: {sd.doc.id: sd.score for sd in ranked} for (q, _), ranked in zip(dev.items, results)}
    measures = [ir_measures.nDCG @ 10, ir_measures.RR @ 10]
    agg = ir_measures.calc_aggregate(measures, dev.qrels, run)
    return {str(m): float(agg[m]) for m in measures}


# ---------------------------------------------------------------------------------------- students
def build_student(cfg: TrainConfig, device: torch.device | str | None = None) -> Student:
    """The student ``cfg.student.type`` names (``reason2rank.distill.students.STUDENTS``), built from the config."""
    from reason2rank.distill.students import STUDENTS
    from reason2rank.distill.vlm_student import VLMStudent

    try:
        cls: type[Student] = {**STUDENTS, "vlm": VLMStudent}[cfg.student.type]
    except KeyError:
        raise ValueError(
            f"student.type must be one of {', '.join(STUDENTS)}, got {cfg.student.type!r}"
        ) from None
    return cls.from_config(cfg, device=device)


def _param_groups(
    student: torch.nn.Module, lr: float, head_lr: float | None, weight_decay: float
) -> list[dict[str, Any]]:
    heads = ("evidence_head.", "rank_head.", "weigher.", *getattr(student, "new_head_prefixes", ()))
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        is_head = name.startswith(heads)
        decay = p.ndim >= 2 and not name.startswith("weigher.")
        groups.setdefault((is_head, decay), []).append(p)
    out = []
    for (is_head, decay), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": (head_lr or lr) if is_head else lr,
                "weight_decay": weight_decay if decay else 0.0,
            }
        )
    if not out:
        raise ValueError("the student has no trainable parameters")
    return out


# ---------------------------------------------------------------------------------------- trainer
class Trainer:
    """Runs one training configuration; see the module docstring. ``callbacks`` are called as
    ``callback(trainer, step, logs)`` after every optimizer step (logs: the step's mean losses)."""

    def __init__(
        self, config: TrainConfig, callbacks: Sequence[Callable[[Trainer, int, dict[str, float]], None]] = ()
    ):
        self.cfg = config
        self.callbacks = list(callbacks)
        self.out = Path(config.resolve(config.output_dir))
        self.history: list[dict[str, Any]] = []
        self._whole: Student | None = None  # under FSDP: the gathered copy, built once and refilled

    # -- checkpoints ----------------------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        """Where checkpoints are written (``output_dir/checkpoints``)."""
        return self.out / CHECKPOINTS_SUBDIR

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.checkpoint_root.is_dir():
            return []
        done = [p for p in self.checkpoint_root.glob("step-*") if p.is_dir() and (p / STATE_FILE).is_file()]
        return sorted(done, key=lambda p: int(p.name.split("-")[1]) if p.name.split("-")[1].isdigit() else -1)

    def _save_checkpoint(self, acc: Any, step: int) -> None:
        final = self.checkpoint_root / f"step-{step:07d}"
        tmp = self.checkpoint_root / f".step-{step:07d}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {
                "step": step,
                "fingerprint": self.cfg.fingerprint(),
                "history": self.history,
                "world_size": acc.num_processes,
            }
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            keep = self.cfg.train.keep_checkpoints
            if keep:
                for old in self.checkpoints()[:-keep]:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    def _resume(self, acc: Any) -> int:
        ckpts = self.checkpoints() if self.cfg.resume else []
        if not ckpts:
            return 0
        latest = ckpts[-1]
        state = json.loads((latest / STATE_FILE).read_text(encoding="utf-8"))
        if state.get("fingerprint") != self.cfg.fingerprint():
            raise ValueError(
                f"{latest} was written with a different training config (fingerprint {state.get('fingerprint')} "
                f"vs {self.cfg.fingerprint()}); resuming would not give the run the config describes. Use a new "
                "output_dir, delete the checkpoints, or set resume: false to start over"
            )
        if state.get("world_size", 1) != acc.num_processes:
            raise ValueError(
                f"{latest} was written by {state.get('world_size')} processes, this run has {acc.num_processes}; "
                "resume with the same number of processes (the data order depends on it)"
            )
        acc.load_state(str(latest))
        self.history = list(state.get("history", []))
        self._log(acc, {"event": "resumed", "step": state["step"], "checkpoint": str(latest)})
        return int(state["step"])

    # -- logging -------------------------------------------------------------------------------------
    def _log(self, acc: Any, record: dict[str, Any]) -> None:
        if not acc.is_main_process:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        print(f"[reason2rank train] {shown}", file=sys.stderr, flush=True)

    # -- the run -------------------------------------------------------------------------------------
    def total_steps(self, stream: GroupStream, world: int) -> int:
        """Optimizer steps of the run (``max_steps``, else from ``epochs``)."""
        t = self.cfg.train
        if t.max_steps:
            return t.max_steps
        return max(1, math.ceil(t.epochs * stream.per_epoch / (t.grad_accum * world)))

    def run(self) -> TrainResult:
        """Train, evaluate, checkpoint and save the model (resuming from the latest checkpoint)."""
        try:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs, set_seed
        except ImportError as e:  # pragma: no cover - accelerate comes with reason2rank[train]
            raise ImportError("training needs accelerate: pip install 'reason2rank[train]'") from e
        from transformers import get_linear_schedule_with_warmup

        cfg, t = self.cfg, self.cfg.train
        started = time.monotonic()
        bf16 = (
            t.bf16 if t.bf16 != "auto" else bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        )
        _reset_accelerate_state()  # a second training run in one process may use other settings
        acc = Accelerator(
            cpu=(t.device == "cpu"),
            mixed_precision="bf16" if bf16 else "no",
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            fsdp_plugin=fsdp_plugin() if t.fsdp else None,
        )
        sharded = is_sharded(acc)
        set_seed(cfg.seed)
        train_set = load_training_set(cfg.data.train, cfg)
        dev = load_dev_set(cfg.data.dev, cfg)
        s = cfg.student
        stream = GroupStream(
            train_set,
            batch_size=t.batch_size,
            group_size=cfg.data.group_size,
            seed=cfg.seed,
            reasoning_per_query=s.reasoning_per_query if s.type == "decoder" else 0,
            comparisons_per_query=s.comparisons_per_query if s.type == "decoder" else 0,
        )
        with_evidence = any(c.evidence for tq in train_set for c in tq.candidates)
        if "evidence" in cfg.objectives and not with_evidence:
            raise ValueError(
                "objective 'evidence' trains the evidence head on the teacher's evidence sentences, but the training "
                "set has none (a qrels teacher gives no evidence): remove 'evidence' from objectives, or build the "
                "set from a teacher store with direct annotations. An untrained head would pick sentences at random."
            )
        student: Any = build_student(cfg, device=acc.device)
        if s.type == "encoder":
            student.tag_negatives = with_evidence
        total = self.total_steps(stream, acc.num_processes)
        optimizer = torch.optim.AdamW(_param_groups(student, t.lr, t.head_lr, t.weight_decay), lr=t.lr)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(t.warmup_ratio * total), total)
        model, optimizer = acc.prepare(student, optimizer)
        acc.register_for_checkpointing(scheduler)
        self._log(
            acc,
            {
                "event": "start",
                "student": s.type,
                "model": str(s.model),
                "queries": len(stream.queries),
                "skipped_queries": stream.dropped,
                "steps": total,
                "processes": acc.num_processes,
                "device": str(acc.device),
                "bf16": bf16,
                "fsdp": sharded,
            },
        )
        step = start = self._resume(acc)
        world, rank, accum = acc.num_processes, acc.process_index, t.grad_accum
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        window: dict[str, list[float]] = {}  # per-step mean losses since the last log line
        tick, since_log = time.monotonic(), 0
        while step < total:
            logs: dict[str, list[float]] = {}
            for a in range(accum):
                groups = stream.batch((step * accum + a) * world + rank)
                batch = student.to_device(student.collate(groups), acc.device)
                sync = contextlib.nullcontext() if a == accum - 1 else acc.no_sync(model)
                with sync:
                    out = model(batch)
                    acc.backward(out["loss"] / accum)
                for k, v in out.items():
                    logs.setdefault(k, []).append(float(v.detach()))
            if t.max_grad_norm:
                acc.clip_grad_norm_(params, t.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            since_log += 1
            step_logs = {k: sum(v) / len(v) for k, v in logs.items()}
            for k, v in step_logs.items():
                window.setdefault(k, []).append(v)
            if step % t.log_every == 0 or step == total:
                rec = {"step": step, **{k: sum(v) / len(v) for k, v in window.items()}}
                rec["lr"] = float(scheduler.get_last_lr()[0])
                if cfg.weighting != "fixed":  # learned weightings: how the weights move
                    rec.update({f"weight_{k}": v for k, v in student.loss_weights().items()})
                rec["s_per_step"] = (time.monotonic() - tick) / since_log
                self.history.append(rec)
                self._log(acc, rec)
                window, tick, since_log = {}, time.monotonic(), 0
            if dev is not None and t.eval_every and step % t.eval_every == 0 and step < total:
                self._eval(acc, model, student, dev, step)
            if t.save_every and step % t.save_every == 0 and step < total:
                self._save_checkpoint(acc, step)
            for cb in self.callbacks:
                cb(self, step, step_logs)
        metrics: dict[str, float] = {}
        if dev is not None:
            metrics = self._eval(acc, model, student, dev, step)
        if t.save_every and start < total:
            self._save_checkpoint(acc, step)
        model_dir = self.out / MODEL_SUBDIR
        whole = full_student(model, cfg, acc.is_main_process, self._whole) if sharded else student
        if acc.is_main_process:
            self._save_model(acc, whole, model_dir, step, metrics, time.monotonic() - started)
        acc.wait_for_everyone()
        return TrainResult(
            model_dir=model_dir,
            steps=step,
            history=self.history,
            metrics=metrics,
            resumed_from=start or None,
            seconds=time.monotonic() - started,
        )

    def _eval(self, acc: Any, model: Any, student: Any, dev: DevSet, step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        if is_sharded(acc):  # the shards gathered into a whole copy on the main process's CPU
            student = self._whole = full_student(model, self.cfg, acc.is_main_process, self._whole)
        if acc.is_main_process:
            student.eval()
            try:
                metrics = evaluate(student.reranker, dev, self.cfg.train.eval_batch_size)
            finally:
                student.train()
            rec = {"step": step, "event": "eval", **metrics}
            self.history.append(rec)
            self._log(acc, rec)
        acc.wait_for_everyone()
        return metrics

    def _save_model(
        self, acc: Any, student: Any, model_dir: Path, step: int, metrics: dict[str, float], seconds: float
    ) -> None:
        tmp = model_dir.with_name(model_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        student.save(tmp)
        info = {
            "steps": step,
            "metrics": metrics,
            "seconds": round(seconds, 1),
            "config": self.cfg.to_dict(),
            "fingerprint": self.cfg.fingerprint(),
            "history": self.history,
        }
        (tmp / "training.json").write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")
        shutil.rmtree(model_dir, ignore_errors=True)
        os.replace(tmp, model_dir)
        self._log(acc, {"event": "saved", "step": step, "model_dir": str(model_dir)})


def fsdp_plugin() -> Any:
    """accelerate's FSDP2 settings for a student: each transformer block its own shard unit (the classes the
    backbone's ``_no_split_modules`` names, which :class:`Student` passes on), sharded checkpoints."""
    from accelerate import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        state_dict_type="SHARDED_STATE_DICT",
        reshard_after_forward=True,
    )


def is_sharded(acc: Any) -> bool:
    """Whether ``acc`` shards the model (FSDP, from ``train.fsdp`` or ``accelerate launch`` with FSDP)."""
    from accelerate.utils import DistributedType

    return bool(acc.distributed_type == DistributedType.FSDP)


def full_student(
    model: torch.nn.Module, cfg: TrainConfig, main: bool, into: Student | None = None
) -> Student | None:
    """A whole copy of a sharded student, on the CPU of the main process (``None`` elsewhere). Every process
    must call it: the full state dict is gathered from all shards. The copy is what is evaluated and saved
    (the sharded student's own modules hold only this process's shard)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not main:
        return None
    whole = into if into is not None else build_student(cfg, device="cpu")  # ``into``: a copy built before
    whole.load_state_dict(state, strict=True)
    whole.train(model.training)
    return whole


def _reset_accelerate_state() -> None:
    """accelerate keeps its settings in process-wide singletons; forget them (and, outside a distributed
    run, the process state too) so that each run's ``Accelerator`` gets the settings it asks for."""
    from accelerate.state import AcceleratorState

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    AcceleratorState._reset_state(reset_partial_state=not distributed)


def train(config: TrainConfig | Mapping[str, Any] | str | os.PathLike, **kwargs: Any) -> TrainResult:
    """Train a student from a :class:`TrainConfig`, a config dict, or a YAML file path."""
    if isinstance(config, Mapping):
        config = TrainConfig.from_dict(config)
    elif not isinstance(config, TrainConfig):
        config = TrainConfig.from_yaml(config)
    return Trainer(config, **kwargs).run()
