"""The GRPO config: clear errors for bad values, relative paths, the method dispatch of ``reason2rank train``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpo_fixtures import write_config, write_toy_data  # noqa: E402

from reason2rank.distill.config import TrainConfig  # noqa: E402
from reason2rank.rl.config import GRPOTrainConfig  # noqa: E402

GOOD = {"output_dir": "run", "model": "m", "data": {"candidates": "c.json", "qrels": "q.txt"}}


def _with(**changes):
    cfg = {**GOOD, "data": dict(GOOD["data"]), "grpo": {}}
    for dotted, value in changes.items():
        *path, key = dotted.split("__")
        cur = cfg
        for p in path:
            cur = cur.setdefault(p, {})
        if value is _DROP:
            cur.pop(key, None)
        else:
            cur[key] = value
    return cfg


_DROP = object()

BAD = [
    (_with(output_dir=_DROP), "needs output_dir"),
    (_with(model=_DROP), "needs model"),
    (_with(task="pairwise"), "task must be one of setwise, binary, listwise"),
    (_with(method="supervised"), "method must be 'grpo'"),
    (_with(data__candidates=_DROP), "needs data.candidates"),
    (_with(data__qrels=_DROP), "needs data.qrels"),
    (_with(data__run="r.trec"), "not both"),
    (_with(data__candidates=_DROP, data__run="r.trec"), "needs data.topics and data.docs"),
    (_with(data__window=1), "data.window must be >= 2"),
    (_with(data__window=0), "data.window must be a positive integer"),
    (_with(data__depth=10, data__window=20), "depth (10) must be at least data.window (20)"),
    (_with(data__positive_grade=1, data__negative_max_grade=1), "could be both"),
    (_with(data__queries=["1"], data__exclude_queries=["2"]), "not both"),
    (_with(data__windw=3), "unknown key(s) ['windw'] in data"),
    (_with(grpo__num_generations=1), "num_generations must be >= 2"),
    (_with(grpo__temperature=0.0), "temperature must be > 0"),
    (_with(grpo__lr="fast"), "grpo.lr must be float"),
    (_with(grpo__loss_type="ppo"), "loss_type must be one of"),
    (_with(grpo__use_vllm="yes"), "use_vllm must be true, false or auto"),
    (_with(grpo__vllm_mode="remote"), "vllm_mode must be colocate or server"),
    (_with(grpo__tie_warning=1.5), "tie_warning must be a fraction"),
    (_with(grpo__max_steps=0), "max_steps must be a positive integer"),
    (_with(lora={"rank": 8}), "unknown LoRA option"),
    ({**GOOD, "student": {"model": "m"}}, "keys of the supervised trainer"),
    (_with(seed="x"), "config.seed must be int"),
]


@pytest.mark.parametrize("cfg,message", BAD)
def test_bad_configs_say_what_is_wrong(cfg, message):
    with pytest.raises(ValueError) as e:
        GRPOTrainConfig.from_dict(cfg)
    assert message in str(e.value)


def test_numbers_and_relative_paths_follow_the_supervised_rules(tmp_path):
    (tmp_path / "c.json").write_text("[]")
    (tmp_path / "prompt.txt").write_text("x")
    f = write_config(tmp_path / "g.yaml", {**GOOD, "data": {**GOOD["data"], "prompt": "prompt.txt"}})
    f.write_text(f.read_text() + "grpo:\n  lr: 3e-5\n")  # YAML 1.1 reads 3e-5 as a string; we read a float
    cfg = GRPOTrainConfig.from_yaml(f, {"grpo.num_generations": 8})
    assert cfg.grpo.lr == 3e-5 and cfg.grpo.num_generations == 8
    assert cfg.resolve(cfg.data.candidates) == str(tmp_path / "c.json")
    assert cfg.resolve(cfg.output_dir) == str(tmp_path / "run")
    assert cfg.prompt == str(tmp_path / "prompt.txt")
    assert GRPOTrainConfig.from_dict(GOOD).prompt == "rank_r1_v1"  # a built-in name stays a name


def test_fingerprint_ignores_what_does_not_change_the_weights():
    a = GRPOTrainConfig.from_dict(GOOD)
    b = GRPOTrainConfig.from_dict(
        {**GOOD, "output_dir": "elsewhere", "grpo": {"save_every": 7, "log_every": 3}}
    )
    c = GRPOTrainConfig.from_dict({**GOOD, "grpo": {"lr": 1e-3}})
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_supervised_config_accepts_method_supervised_and_refuses_grpo():
    base = {"output_dir": "o", "student": {"model": "m"}, "data": {"train": "t.jsonl"}}
    assert (
        TrainConfig.from_dict({**base, "method": "supervised"}).fingerprint()
        == TrainConfig.from_dict(base).fingerprint()
    )
    with pytest.raises(ValueError, match="GRPOTrainConfig"):
        TrainConfig.from_dict({**base, "method": "grpo"})


def test_cli_train_dispatches_method_grpo(tmp_path, tiny_llama_dir, capsys):
    from reason2rank.cli.main import main

    write_toy_data(tmp_path)
    f = write_config(tmp_path / "g.yaml", {
        "method": "grpo", "task": "setwise", "output_dir": "run", "model": tiny_llama_dir,
        "data": {"candidates": "candidates.json", "qrels": "qrels.txt", "window": 2, "max_words": 4},
        "grpo": {"max_steps": 1, "prompts_per_step": 1, "num_generations": 2, "max_completion_length": 2},
    })  # fmt: skip
    assert main(["train", "--config", str(f), "--set", "grpo.lr=1e-4"]) == 0
    assert "GRPO: 1 steps" in capsys.readouterr().err
    assert (tmp_path / "run" / "model" / "r2r_model.json").is_file()
    assert GRPOTrainConfig.from_yaml(f).grpo.lr == 1e-5  # the file is not changed by --set
    assert '"lr": 0.0001' in (tmp_path / "run" / "grpo_run.json").read_text()


def test_the_shipped_dl19_example_config_is_valid():
    root = Path(__file__).resolve().parents[2]
    cfg = GRPOTrainConfig.from_yaml(root / "examples" / "grpo_rank_r1_dl19.yaml")
    assert cfg.task == "setwise" and cfg.data.window == 4 and len(cfg.data.exclude_queries) == 13
    assert cfg.prompt == str(root / "examples" / "grpo_rank_r1_think.txt")
    qrels = Path(cfg.resolve(cfg.data.qrels)).resolve()
    assert qrels == (root.parent / "shared" / "data" / "trec-dl19" / "qrels.txt").resolve()
    from reason2rank.llm.prompts import load_template

    assert load_template(cfg.prompt, "setwise").prefix == "<think>"
