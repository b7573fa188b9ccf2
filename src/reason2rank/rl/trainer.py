"""GRPO training of reasoning rerankers on TRL's ``GRPOTrainer`` (trl 1.x), LoRA by default.

    from reason2rank.rl import GRPOTrainConfig, train_grpo
    result = train_grpo(GRPOTrainConfig.from_yaml("rank_r1.yaml"))
    ranker = reason2rank.load(result.model_dir)        # setwise (Rank-R1), causal-lm, listwise or vlm-listwise

or ``reason2rank train --config rank_r1.yaml`` with ``method: grpo``. What it does:

- builds the examples of the task from candidates and qrels (:mod:`reason2rank.rl.examples`), renders each as
  the prompt text the local transformers backend would send at inference (chat template + answer prefix), and
  hands them to ``GRPOTrainer`` with the task's reward (:mod:`reason2rank.rl.rewards`);
- each step samples ``num_generations`` completions for each of ``prompts_per_step`` prompts (through vLLM when
  it is installed and there is a GPU, ``colocate`` or ``server`` mode, else transformers ``generate``);
- logs every step to ``output_dir/grpo_log.jsonl`` (reward, its std, ``frac_reward_zero_std`` = the fraction of
  groups whose rewards all tie, so their advantage and gradient are zero) and warns when that fraction averaged
  over ``tie_window`` steps stays above ``tie_warning``: the run is then not learning (make the task easier, the
  group larger or the temperature higher);
- checkpoints (TRL/accelerate: adapter, optimizer, scheduler, RNG states, trainer state) every ``save_every``
  steps in ``output_dir/checkpoints``; run again with the same config and it resumes from the latest complete
  checkpoint (a changed config is refused, ``resume: false`` starts over);
- the trained model (LoRA merged into the weights) goes to ``output_dir/model`` through a temporary directory, with
  ``r2r_model.json`` naming the family it opens as and ``training.json`` (config, history, example counts).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reason2rank.rl.config import TASKS, GRPOTrainConfig
from reason2rank.rl.examples import (
    ExampleSet,
    binary_examples,
    listwise_examples,
    render_prompt,
    select_queries,
    setwise_examples,
)
from reason2rank.rl.rewards import REWARDS

__all__ = ["GRPOResult", "TieWatch", "build_examples", "load_training_items", "train_grpo"]

MODEL_SUBDIR = "model"
CHECKPOINTS_SUBDIR = "checkpoints"
RUN_FILE = "grpo_run.json"
LOG_FILE = "grpo_log.jsonl"
LOGGED = ("reward", "reward_std", "frac_reward_zero_std", "loss", "grad_norm", "learning_rate",
          "completions/mean_length", "completions/clipped_ratio", "entropy", "kl", "step_time")  # fmt: skip


@dataclass
class GRPOResult:
    model_dir: Path
    steps: int
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int | None = None
    seconds: float = 0.0
    examples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    warmup: dict[str, Any] | None = None  # the format warm-up's losses and seconds (grpo.format_warmup_steps)

    @property
    def metrics(self) -> dict[str, float]:
        """Mean reward and tie fraction of the last logged step (what the CLI prints)."""
        last: dict[str, Any] = next((h for h in reversed(self.history) if "reward" in h), {})
        return {k: float(last[k]) for k in ("reward", "frac_reward_zero_std") if last.get(k) is not None}


# -- data -----------------------------------------------------------------------------------------------------
def load_training_items(cfg: GRPOTrainConfig) -> tuple[list[Any], dict[str, dict[str, int]]]:
    """The (query, candidates) the config selects, and the qrels."""
    from reason2rank.data.candidates import load_candidates
    from reason2rank.data.trec import read_qrels

    d = cfg.data
    r = cfg.resolve
    items = load_candidates(r(d.candidates), topics=r(d.topics), run=r(d.run), docs=r(d.docs), depth=d.depth)
    qrels = read_qrels(r(d.qrels))
    queries = r(d.queries) if isinstance(d.queries, str) else d.queries
    exclude = r(d.exclude_queries) if isinstance(d.exclude_queries, str) else d.exclude_queries
    return select_queries(items, queries, exclude), qrels


def build_examples(cfg: GRPOTrainConfig, items: Any, qrels: Any) -> ExampleSet:
    """The examples of ``cfg.task`` (``ValueError`` when none could be made, saying why)."""
    d = cfg.data
    common = dict(examples_per_query=d.examples_per_query, positive_grade=d.positive_grade,
                  negative_max_grade=d.negative_max_grade, seed=cfg.seed, prompt=cfg.prompt,
                  max_words=d.max_words)  # fmt: skip
    if cfg.task == "setwise":
        out = setwise_examples(items, qrels, window=d.window, **common)  # type: ignore[arg-type]
    elif cfg.task in ("listwise", "vlm-listwise"):
        out = listwise_examples(items, qrels, window=d.window, images=cfg.task == "vlm-listwise", **common)  # type: ignore[arg-type]
    else:
        out = binary_examples(items, qrels, **common)  # type: ignore[arg-type]
    if not out.examples:
        raise ValueError(
            f"no {cfg.task} examples from {len(items)} queries ({out.skipped or 'no queries selected'}); check "
            "data.qrels against the candidates, data.positive_grade / negative_max_grade, data.window and depth"
        )
    return out


# -- logging --------------------------------------------------------------------------------------------------
def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class TieWatch:
    """Watches ``frac_reward_zero_std`` (TRL's fraction of groups whose rewards all tie): warns when its mean over
    the last ``window`` logged steps exceeds ``threshold`` (once, then again only after it came back down)."""

    def __init__(self, threshold: float = 0.9, window: int = 10) -> None:
        self.threshold, self.window = threshold, window
        self.recent: collections.deque[float] = collections.deque(maxlen=window)
        self.warned = False

    def update(self, frac: float, step: int) -> str | None:
        """Record one step's tie fraction; the warning text when it is raised now."""
        self.recent.append(float(frac))
        if len(self.recent) < self.window:
            return None
        mean = sum(self.recent) / len(self.recent)
        if mean <= self.threshold:
            self.warned = False
            return None
        if self.warned:
            return None
        self.warned = True
        msg = (
            f"GRPO step {step}: {mean:.0%} of groups had all-equal rewards over the last {self.window} steps (zero "
            f"advantage, no gradient). The model rarely gets the answer both right and wrong for one prompt: raise "
            "grpo.num_generations or temperature, shorten data.window, or warm the model up (SFT) first"
        )
        warnings.warn(msg, stacklevel=2)
        return msg


def _log_callback(path: Path, watch: TieWatch) -> Any:
    class GRPOLog(_callback_base()):  # type: ignore[misc]
        """Appends each logged step to ``grpo_log.jsonl`` and feeds the tie watch."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if not state.is_world_process_zero or not logs or "reward" not in logs:
                return
            row = {"step": int(state.global_step), **{k: logs[k] for k in LOGGED if logs.get(k) is not None}}
            frac = logs.get("frac_reward_zero_std")
            if frac is not None and (msg := watch.update(float(frac), state.global_step)):
                row["warning"] = msg
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            shown = " ".join(f"{k}={v:.4g}" for k, v in row.items() if isinstance(v, float))
            print(f"grpo step {row['step']}: {shown}", file=sys.stderr, flush=True)

    return GRPOLog()


# -- the run --------------------------------------------------------------------------------------------------
def _use_vllm(setting: Any) -> bool:
    if setting == "auto":
        import torch

        return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    if setting and importlib.util.find_spec("vllm") is None:
        raise ValueError(
            "grpo.use_vllm is true but vLLM is not installed (pip install vllm, or use_vllm: auto)"
        )
    return bool(setting)


def _bf16(setting: Any) -> bool:
    import torch

    if setting == "auto":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(setting)


def _last_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint (its ``trainer_state.json``, written last, exists)."""
    if not root.is_dir():
        return None
    done = [
        p for p in root.glob("checkpoint-*") if (p / "trainer_state.json").is_file() and p.name[11:].isdigit()
    ]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def _check_run(cfg: GRPOTrainConfig, out: Path) -> None:
    """Record the config's fingerprint; refuse to resume a run written with another config."""
    run_file = out / RUN_FILE
    if run_file.is_file() and cfg.resume:
        old = json.loads(run_file.read_text(encoding="utf-8"))
        if old.get("fingerprint") != cfg.fingerprint():
            raise ValueError(
                f"{out} holds a GRPO run with a different config (fingerprint {old.get('fingerprint')} vs "
                f"{cfg.fingerprint()}); resuming would not give the run this config describes. Use another "
                "output_dir, restore the config, or set resume: false (--no-resume) to start over"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = run_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": cfg.fingerprint(), "config": cfg.to_dict()}, indent=1) + "\n")
    os.replace(tmp, run_file)


def _grpo_args(cfg: GRPOTrainConfig, checkpoints: Path, use_vllm: bool) -> Any:
    import torch
    from trl import GRPOConfig

    g = cfg.grpo
    kwargs: dict[str, Any] = dict(
        output_dir=str(checkpoints), seed=cfg.seed, data_seed=cfg.seed, report_to="none",
        max_steps=g.max_steps or -1, num_train_epochs=g.epochs,
        per_device_train_batch_size=g.prompts_per_step * g.num_generations,
        gradient_accumulation_steps=g.grad_accum, num_generations=g.num_generations,
        max_completion_length=g.max_completion_length, temperature=g.temperature, top_p=g.top_p,
        learning_rate=g.lr, weight_decay=g.weight_decay, max_grad_norm=g.max_grad_norm,
        beta=g.beta, loss_type=g.loss_type, scale_rewards=g.scale_rewards, num_iterations=g.num_iterations,
        bf16=_bf16(g.bf16), gradient_checkpointing=g.gradient_checkpointing,
        save_strategy="steps" if g.save_every else "no", save_steps=g.save_every or 500,
        save_total_limit=g.keep_checkpoints or None, logging_steps=g.log_every,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, log_completions=False,
        use_vllm=use_vllm, generation_kwargs=dict(g.generation_kwargs) if g.generation_kwargs else None,
    )  # fmt: skip
    if g.warmup_ratio:
        kwargs["warmup_steps"] = g.warmup_ratio  # transformers reads a float below 1 as a ratio
    if use_vllm:
        kwargs.update(vllm_mode=g.vllm_mode, vllm_gpu_memory_utilization=g.vllm_gpu_memory_utilization)
        if g.vllm_server_url:
            kwargs["vllm_server_base_url"] = g.vllm_server_url
    return GRPOConfig(**kwargs)


def _load_policy(cfg: GRPOTrainConfig) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cfg.resolve(cfg.model)
    kw = {"token": cfg.token} if cfg.token else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    tokenizer.padding_side = "left"  # TRL generates from left-padded prompts
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", **kw)
    return model, tokenizer


def _peft_config(cfg: GRPOTrainConfig) -> Any:
    if cfg.lora is None:
        return None
    from peft import LoraConfig

    targets = cfg.lora.get("target_modules")
    if not targets:
        from reason2rank.rl.vlm import LANGUAGE_MODEL_LINEAR

        targets = LANGUAGE_MODEL_LINEAR if cfg.task == "vlm-listwise" else "all-linear"
    return LoraConfig(r=int(cfg.lora.get("r", 16)), lora_alpha=int(cfg.lora.get("alpha", 32)),
                      lora_dropout=float(cfg.lora.get("dropout", 0.05)), target_modules=targets,
                      task_type="CAUSAL_LM")  # fmt: skip


def train_grpo(
    cfg: GRPOTrainConfig | dict[str, Any] | str | os.PathLike, callbacks: list[Any] | None = None
) -> GRPOResult:
    """Train (or resume) the GRPO run ``cfg`` describes; returns where the model went and the logged history.
    ``callbacks`` are extra transformers ``TrainerCallback`` objects (for tests and dashboards)."""
    if isinstance(cfg, (str, os.PathLike)):
        cfg = GRPOTrainConfig.from_yaml(cfg)
    elif isinstance(cfg, dict):
        cfg = GRPOTrainConfig.from_dict(cfg)
    from datasets import Dataset
    from trl import GRPOTrainer

    start = time.time()
    out = Path(cfg.resolve(cfg.output_dir))
    checkpoints = out / CHECKPOINTS_SUBDIR
    if not cfg.resume:
        shutil.rmtree(checkpoints, ignore_errors=True)
        (out / LOG_FILE).unlink(missing_ok=True)
        (out / RUN_FILE).unlink(missing_ok=True)
    _check_run(cfg, out)
    resume_from = _last_checkpoint(checkpoints)

    items, qrels = load_training_items(cfg)
    examples = build_examples(cfg, items, qrels)
    if cfg.task == "vlm-listwise":
        from reason2rank.rl.vlm import load_vlm_policy, longest_vlm_prompt, vlm_rows

        model, tokenizer = load_vlm_policy(cfg, examples.examples[0]["prefix"])
        rows = vlm_rows(cfg, examples, tokenizer)
        longest = longest_vlm_prompt(tokenizer, rows)
    else:
        model, tokenizer = _load_policy(cfg)
        rows = []
        for ex in examples.examples:
            row = {k: v for k, v in ex.items() if k != "messages"}
            row["prompt"] = render_prompt(tokenizer, ex["messages"], ex["prefix"])
            rows.append(row)
        longest = max(len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows)
    text_config = getattr(model.config, "text_config", None) or model.config
    limit = getattr(text_config, "max_position_embeddings", None)
    if limit and longest + cfg.grpo.max_completion_length > limit:
        raise ValueError(
            f"the longest prompt is {longest} tokens; with grpo.max_completion_length="
            f"{cfg.grpo.max_completion_length} it exceeds the model's {limit} positions: lower data.max_words, "
            "data.window or max_completion_length"
        )
    warmup = None
    if cfg.grpo.format_warmup_steps:
        from reason2rank.rl.format_warmup import format_warmup

        model, warmup = format_warmup(
            model, tokenizer, rows, task=cfg.task, steps=cfg.grpo.format_warmup_steps, out=out,
            fingerprint=cfg.fingerprint(), peft_config=_peft_config(cfg), lr=cfg.grpo.format_warmup_lr,
            seed=cfg.seed,
        )  # fmt: skip
        what = "reused" if warmup["reused"] else f"{warmup['seconds']:.0f} s"
        print(f"format warm-up: {warmup['steps']} steps ({what}), loss {warmup['losses'][0]:.3f} -> "
              f"{warmup['losses'][-1]:.3f}", file=sys.stderr)  # fmt: skip
    use_vllm = _use_vllm(cfg.grpo.use_vllm)
    watch = TieWatch(cfg.grpo.tie_warning, cfg.grpo.tie_window)
    trainer = GRPOTrainer(
        model=model, reward_funcs=REWARDS[cfg.task], args=_grpo_args(cfg, checkpoints, use_vllm),
        train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=_peft_config(cfg),
        callbacks=[_log_callback(out / LOG_FILE, watch), *(callbacks or [])],
    )  # fmt: skip
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # grpo_log.jsonl and one stderr line per step instead
    if resume_from is not None:
        print(f"resuming GRPO from {resume_from}", file=sys.stderr)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    history = [h for h in trainer.state.log_history if "reward" in h]
    model_dir = save_trained(cfg, trainer.model, tokenizer, out / MODEL_SUBDIR, history, examples, longest,
                             warmup=warmup)  # fmt: skip
    resumed = int(resume_from.name[11:]) if resume_from else None
    return GRPOResult(model_dir, int(trainer.state.global_step), history, resumed, time.time() - start,
                      len(examples.examples), examples.skipped, warmup)  # fmt: skip


# -- the trained model ----------------------------------------------------------------------------------------
def save_trained(cfg: GRPOTrainConfig, model: Any, tokenizer: Any, model_dir: Path, history: list[dict[str, Any]],
                 examples: ExampleSet, longest_prompt: int, warmup: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Merge LoRA into the weights and write a model directory of the task's family (via a temporary directory,
    renamed at the end: a kill never leaves a half-written model)."""
    import copy

    from reason2rank.model_dir import write_r2r_config

    tmp = model_dir.with_name(model_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged = copy.deepcopy(model)
    if hasattr(merged, "merge_and_unload"):
        merged = merged.merge_and_unload()
    merged.eval()
    merged.save_pretrained(tmp)
    if cfg.task == "vlm-listwise":
        from reason2rank.rl.vlm import save_vlm_processor

        save_vlm_processor(cfg, tmp)
    else:
        tok = copy.deepcopy(tokenizer)
        tok.padding_side = "left"
        tok.save_pretrained(tmp)
    family = TASKS[cfg.task]
    write_r2r_config(tmp, {"family": family, "backbone": ".", **_family_config(cfg, tmp, merged, tokenizer)})
    info = {"method": "grpo", "task": cfg.task, "config": cfg.to_dict(), "fingerprint": cfg.fingerprint(),
            "history": history, "examples": len(examples.examples), "skipped": examples.skipped,
            "longest_prompt_tokens": longest_prompt, "format_warmup": warmup}  # fmt: skip
    (tmp / "training.json").write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.replace(tmp, model_dir)
    return model_dir


def _family_config(cfg: GRPOTrainConfig, directory: Path, model: Any, tokenizer: Any) -> dict[str, Any]:
    """The family fields of ``r2r_model.json`` (the strategy or scorer's own ``r2r_config``, so the directory
    opens with the prompt, window and read-out it was trained with). The strategies are built over ``model``, the
    merged model in memory, not a second copy read from ``directory`` (a 7B policy would be held twice)."""
    d, g = cfg.data, cfg.grpo
    if cfg.task == "binary":
        from reason2rank.scorers.causal_lm import CausalLMReranker

        device = str(next(model.parameters()).device)
        scorer = CausalLMReranker(directory, prompt_template=cfg.prompt, device=device, loaded=model,
                                  progress=False)  # fmt: skip
        (directory / "prompt_template.json").write_text(
            json.dumps(scorer.template.source, indent=2) + "\n", encoding="utf-8"
        )
        return scorer.r2r_config()
    from reason2rank.llm.transformers_backend import TransformersBackend
    from reason2rank.strategies.base import PROMPT_FILE
    from reason2rank.strategies.listwise import ListwiseReranker
    from reason2rank.strategies.setwise import SetwiseReranker

    common: dict[str, Any] = dict(
        prompt=cfg.prompt, max_words=d.max_words, max_new_tokens=g.max_completion_length
    )
    strategy: Any
    if cfg.task == "vlm-listwise":
        from reason2rank.strategies.vlm_listwise import VLMListwiseReranker

        strategy = VLMListwiseReranker(str(directory), window=d.window, stride=max(1, d.window // 2),
                                       min_pixels=d.min_pixels, max_pixels=d.max_pixels, loaded=model,
                                       **common)  # fmt: skip
    else:
        backend = TransformersBackend(model, tokenizer)
        if cfg.task == "setwise":
            strategy = SetwiseReranker(str(directory), backend=backend, num_child=d.window - 1, **common)
        else:
            strategy = ListwiseReranker(str(directory), backend=backend, window=d.window,
                                        stride=max(1, d.window // 2), **common)  # fmt: skip
    fields = dict(strategy.r2r_config())
    if fields.get("prompt") == PROMPT_FILE:  # a template file, not a built-in: it travels with the model
        (directory / PROMPT_FILE).write_text(strategy.prompt.text, encoding="utf-8")
    return fields
