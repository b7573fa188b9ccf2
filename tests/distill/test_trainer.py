"""The trainer: config checks, checkpoints, kill-and-resume equality, the CLI, and a student trained on a real
teacher annotation file (over the OpenAI-compatible mock server) opening in both adapters."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from distill_fixtures import toy_training_set
from safetensors.torch import load_file

import reason2rank
from reason2rank.distill import TrainConfig, Trainer, TrainingSet, train
from reason2rank.types import Doc, Query


def _config(tmp_path, model, out="run", **train_overrides):
    ts = toy_training_set(6)
    ts.save(tmp_path / "train.jsonl")
    toy_training_set(3).save(tmp_path / "dev.jsonl")
    t = {"max_steps": 6, "batch_size": 2, "lr": 1e-3, "save_every": 2, "log_every": 1, "device": "cpu"}
    t.update(train_overrides)
    return {
        "output_dir": str(tmp_path / out),
        "seed": 7,
        "student": {"type": "encoder", "model": model, "max_length": 64},
        "data": {"train": str(tmp_path / "train.jsonl"), "dev": str(tmp_path / "dev.jsonl"), "group_size": 4},
        "objectives": {"group_softmax_ce": 1.0, "ranknet_grades": 0.5, "evidence": 0.5},
        "train": t,
    }


def _weights(model_dir) -> dict[str, torch.Tensor]:
    out = load_file(str(Path(model_dir) / "model.safetensors"))
    out.update(
        {f"evidence.{k}": v for k, v in load_file(str(Path(model_dir) / "evidence_head.safetensors")).items()}
    )
    return out


def _assert_same_weights(a, b, atol=1e-6):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


class Crash(Exception):
    pass


def test_kill_and_resume_gives_the_same_weights(tiny_bert_encoder_dir, tmp_path):
    straight = train(_config(tmp_path, tiny_bert_encoder_dir, out="straight"))
    assert straight.steps == 6 and straight.resumed_from is None
    assert 0.0 <= straight.metrics["nDCG@10"] <= 1.0

    cfg = _config(tmp_path, tiny_bert_encoder_dir, out="crashed")

    def crash_at_5(trainer, step, logs):
        if step == 5:  # step 4 is checkpointed, step 5's update is lost with the crash
            raise Crash

    with pytest.raises(Crash):
        Trainer(TrainConfig.from_dict(cfg), callbacks=[crash_at_5]).run()
    ckpts = sorted(p.name for p in (tmp_path / "crashed" / "checkpoints").iterdir())
    assert ckpts == ["step-0000002", "step-0000004"]  # keep_checkpoints=2, no half-written directory
    assert not (tmp_path / "crashed" / "model").exists()

    resumed = train(cfg)
    assert resumed.resumed_from == 4 and resumed.steps == 6
    _assert_same_weights(straight.model_dir, resumed.model_dir)
    # a changed config must not silently resume the old run
    cfg["train"]["lr"] = 2e-3
    with pytest.raises(ValueError, match="different training config"):
        train(cfg)


def test_training_lowers_the_loss_and_the_model_opens_everywhere(tiny_bert_encoder_dir, tmp_path):
    cfg = _config(tmp_path, tiny_bert_encoder_dir, max_steps=80, lr=3e-3, save_every=0, warmup_ratio=0.0)
    result = train(cfg)
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    info = json.loads((result.model_dir / "training.json").read_text())
    assert info["steps"] == 80 and info["metrics"] == result.metrics
    model = reason2rank.load(result.model_dir)
    ts = toy_training_set(3)
    ranked = model.rerank(ts[0].query, [c.doc for c in ts[0].candidates], explain=1)
    assert ranked[0].doc.id == "q0d0"  # learned: the on-topic grade-3 document first
    assert ranked[0].evidence is None or ranked[0].evidence in ranked[0].doc.text


def test_config_errors_are_clear(tmp_path, tiny_bert_encoder_dir):
    good = _config(tmp_path, tiny_bert_encoder_dir)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lrr'\] in train"):
        TrainConfig.from_dict({**good, "train": {"lrr": 1}})
    with pytest.raises(ValueError, match="needs output_dir"):
        TrainConfig.from_dict({k: v for k, v in good.items() if k != "output_dir"})
    with pytest.raises(ValueError, match="student.type"):
        TrainConfig.from_dict({**good, "student": {"type": "seq2seq", "model": "x"}})
    with pytest.raises(ValueError, match="group_size"):
        TrainConfig.from_dict({**good, "data": {**good["data"], "group_size": 1}})
    with pytest.raises(FileNotFoundError, match="training set"):
        train({**good, "data": {**good["data"], "train": str(tmp_path / "missing.jsonl")}})
    flat = TrainingSet([toy_training_set(1)[0]])
    for c in flat[0].candidates:
        c.grade = 1.0
    flat.save(tmp_path / "flat.jsonl")
    with pytest.raises(ValueError, match="different teacher grades"):
        train({**good, "data": {**good["data"], "train": str(tmp_path / "flat.jsonl")}})


@pytest.mark.slow
def test_yaml_cli_with_overrides_and_sigkill_resume(tiny_bert_encoder_dir, tmp_path):
    cfg = _config(tmp_path, tiny_bert_encoder_dir, out="cli", max_steps=40, save_every=3, log_every=1)
    cfg["train"]["keep_checkpoints"] = 0  # keep all
    cfg["output_dir"] = "cli"  # relative: resolved against the YAML file's directory
    cfg_path = tmp_path / "student.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "reason2rank.cli",
        "train",
        "--config",
        str(cfg_path),
        "--set",
        "train.max_steps=12",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpt = tmp_path / "cli" / "checkpoints" / "step-0000003"
    deadline = time.monotonic() + 120
    while not ckpt.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.is_dir(), proc.stderr.read().decode()[-2000:]
    assert not (tmp_path / "cli" / "model").exists(), "the run finished before it could be killed"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"event=resumed step=\d+", done.stderr)
    assert "trained 12 steps" in done.stderr

    reference = train(
        {**cfg, "output_dir": str(tmp_path / "ref"), "train": {**cfg["train"], "max_steps": 12}}
    )
    _assert_same_weights(reference.model_dir, tmp_path / "cli" / "model")

    bad = subprocess.run(
        [sys.executable, "-m", "reason2rank.cli", "train", "--config", str(cfg_path), "--set", "train.lr"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "--set expects KEY=VALUE" in bad.stderr


# ------------------------------------------------------------------ from a teacher's annotation file
TEACHER_DOCS = {
    "q1": ("how do glaciers move", [
        ("g1", "Glaciers move by internal deformation of ice. Meltwater at the base makes glaciers slide."),
        ("g2", "Glaciers are large bodies of ice. They cover ten percent of land."),
        ("g3", "Volcanoes erupt when magma rises. Lava flows downhill."),
        ("g4", "Tomatoes need warm weather. Water them often."),
    ]),
    "q2": ("why do volcanoes erupt", [
        ("v1", "Volcanoes erupt when magma rises through the crust. Gas pressure drives eruptions."),
        ("v2", "Volcanoes are mountains. Some are dormant."),
        ("v3", "Glaciers carve valleys. They move slowly."),
        ("v4", "Copper conducts electricity. It is used in wires."),
    ]),
}  # fmt: skip


def overlap_responder(request):
    """Grades by query-term overlap (0-3), evidence = the sentence with most overlap; compare by overlap."""
    from mock_openai_server import canned_answer

    last = request["messages"][-1]["content"]
    m = re.search(r"Search query: (.*?)\n\nDocument:\n(.*?)\n\nRelevance scale", last, re.DOTALL)
    if m is None:
        return canned_answer(request)
    words = set(re.findall(r"\w+", m.group(1).lower())) - {"how", "do", "why"}
    sentences = [s.strip() for s in re.split(r"(?<=\.)\s+", m.group(2).strip()) if s.strip()]
    hits = [len(words & set(re.findall(r"\w+", s.lower()))) for s in sentences]
    grade = min(3, sum(hits))
    best = sentences[int(np.argmax(hits))] if grade else None
    return json.dumps(
        {"reasoning": f"The document shares {sum(hits)} query terms.", "evidence": best, "relevance": grade}
    )


def test_student_from_teacher_annotations_opens_in_both_adapters(tiny_llama_dir, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyterrier")
    haystack = pytest.importorskip("haystack")
    from haystack_r2r import R2RRanker
    from mock_openai_server import MockChatServer
    from pt_r2r import R2RReranker
    from reason2rank.teacher import PairPolicy, Teacher

    items = [
        (Query(qid, text), [Doc(did, t) for did, t in docs]) for qid, (text, docs) in TEACHER_DOCS.items()
    ]
    store = tmp_path / "annotations.jsonl"
    with (
        MockChatServer(overlap_responder) as server,
        Teacher(f"openai:mock@{server.url}", store=store, pairs=PairPolicy(swap=False)) as teacher,
    ):
        summary = teacher.annotate(items, tasks=("direct", "compare"))
    assert summary.failed == 0 and summary.done > 0

    ts = TrainingSet.from_store(store, items)
    ts.save(tmp_path / "train.jsonl")
    assert ts.stats()["with_reasoning"] > 0 and ts.stats()["comparisons"] > 0
    result = train(
        {
            "output_dir": str(tmp_path / "dec"),
            "student": {
                "type": "decoder",
                "model": tiny_llama_dir,
                "max_length": 128,
                "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
                "max_answer_tokens": 16,
            },
            "data": {
                "train": str(tmp_path / "train.jsonl"),
                "dev": str(tmp_path / "train.jsonl"),
                "group_size": 3,
            },
            "objectives": {
                "group_softmax_ce": 1.0,
                "ranknet_pairs": 0.5,
                "lm_reasoning": 1.0,
                "lm_comparison": 0.5,
            },
            "train": {"max_steps": 3, "batch_size": 2, "lr": 1e-3, "device": "cpu"},
        }  # fmt: skip
    )
    model_dir = result.model_dir
    assert json.loads((model_dir / "r2r_model.json").read_text())["family"] == "causal-lm"

    core = reason2rank.load(model_dir, max_new_tokens=5, progress=False)
    q, docs = items[0]
    want = core.rerank(q, docs, explain=2)
    assert all(isinstance(sd.reasoning, str) for sd in want[:2]) and isinstance(want[0].comparison, str)

    frame = pd.DataFrame([{"qid": q.id, "query": q.text, "docno": d.id, "text": d.text} for d in docs])
    out = R2RReranker(str(model_dir), explain=2, max_new_tokens=5, verbose=False)(frame)
    top = out.sort_values("rank")
    assert list(top["docno"]) == [sd.doc.id for sd in want]
    np.testing.assert_allclose(top["score"].to_numpy(), [sd.score for sd in want], rtol=1e-4, atol=1e-5)
    assert list(top["reasoning"][:2]) == [sd.reasoning for sd in want[:2]]

    ranker = R2RRanker(model=str(model_dir), top_k=4, explain=2, model_kwargs={"max_new_tokens": 5})
    ranker.warm_up()
    hdocs = [haystack.Document(id=d.id, content=d.text) for d in docs]
    ranked = ranker.run(query=q.text, documents=hdocs)["documents"]
    assert [d.id for d in ranked] == [sd.doc.id for sd in want]
    assert ranked[0].meta["r2r_reasoning"] == want[0].reasoning
    assert ranked[0].meta["r2r_comparison"] == want[0].comparison


@pytest.mark.slow
def test_two_process_ddp_run_with_torchrun(tiny_bert_encoder_dir, tmp_path):
    """DDP over gloo on CPU: two processes split the micro-batches; the result opens as a model."""
    cfg = _config(tmp_path, tiny_bert_encoder_dir, out="ddp", max_steps=4, save_every=2, grad_accum=2)
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(port),
           "-m", "reason2rank.cli", "train", "--config", str(cfg_path)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "processes=2" in done.stderr
    state = json.loads((tmp_path / "ddp" / "checkpoints" / "step-0000004" / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    assert reason2rank.load(tmp_path / "ddp" / "model").rerank("q", ["a b", "c d"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _decoder_config(tmp_path, model, **train_overrides) -> dict:
    toy_training_set(6).save(tmp_path / "train.jsonl")
    t = {"max_steps": 4, "batch_size": 2, "lr": 1e-3, "log_every": 1, "save_every": 2, **train_overrides}
    return {
        "output_dir": str(tmp_path / "out"),
        "seed": 7,
        "student": {"type": "decoder", "model": model, "max_length": 128, "max_answer_tokens": 16,
                    "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "data": {"train": str(tmp_path / "train.jsonl"), "group_size": 3},
        "objectives": {"group_softmax_ce": 1.0, "lm_reasoning": 1.0},
        "train": t,
    }  # fmt: skip


@pytest.mark.slow
def test_fsdp2_shards_gather_into_the_weights_of_an_unsharded_replica(tiny_llama_dir, tmp_path):
    """FSDP2 over gloo on CPU (accelerate runs FSDP on GPUs only, so the sharding is done as its
    transformer-based wrap does it): one step through the wrapped decoder student, then ``full_student``
    gathers exactly the replica's weights, and the saved copy opens as a model."""
    cfg_path = tmp_path / "fsdp.yaml"
    cfg_path.write_text(yaml.safe_dump(_decoder_config(tmp_path, tiny_llama_dir, device="cpu")))
    worker = Path(__file__).with_name("fsdp_shard_worker.py")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(worker), str(cfg_path), str(tmp_path / "result.json")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["units"] == 2 and r["sharded"] == "DTensor"  # both decoder layers their own unit; params sharded
    assert r["same_keys"] and r["max_diff"] <= 1e-6
    assert (
        r["changed"] >= r["trainable"] // 2
    )  # the step moved the LoRA B matrices and the head (A gets 0 grad)
    scores = reason2rank.load(tmp_path / "out", progress=False).rerank("q", ["a b", "c d"])
    assert all(np.isfinite(sd.score) for sd in scores)


def test_fsdp_config_is_checked():
    base = {"output_dir": "o", "student": {"model": "m"}, "data": {"train": "x"}}
    with pytest.raises(ValueError, match="train.fsdp must be bool"):
        TrainConfig.from_dict({**base, "train": {"fsdp": "yes"}})
    with pytest.raises(ValueError, match="accelerate runs FSDP on CUDA devices only"):
        TrainConfig.from_dict({**base, "train": {"fsdp": True, "device": "cpu"}})
    plain = TrainConfig.from_dict(base).fingerprint()
    assert TrainConfig.from_dict({**base, "train": {"fsdp": False}}).fingerprint() == plain
    assert TrainConfig.from_dict({**base, "train": {"fsdp": True}}).fingerprint() != plain


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FSDP through accelerate needs CUDA")
def test_fsdp_training_run_on_the_gpus(tiny_llama_dir, tmp_path):
    """``train.fsdp`` on every visible GPU (torchrun), with a checkpoint, a resume and the saved model."""
    n = torch.cuda.device_count()
    cfg = _decoder_config(tmp_path, tiny_llama_dir, fsdp=True, bf16=True)
    cfg_path = tmp_path / "fsdp.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "reason2rank.cli", "train", "--config", str(cfg_path)]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fsdp=True" in done.stderr or n == 1  # one process: accelerate does not shard
    assert (tmp_path / "out" / "checkpoints" / "step-0000004" / "trainer_state.json").is_file()
    assert reason2rank.load(tmp_path / "out" / "model").rerank("q", ["a b", "c d"])


def test_data_spec_builds_the_training_set_from_qrels_files(tmp_path):
    from reason2rank.data import (
        candidates_from_run,
        read_docs_jsonl,
        read_topics,
        read_trec_run,
        write_qrels,
        write_trec_run,
    )
    from reason2rank.distill.trainer import load_dev_set, load_training_set

    ts = toy_training_set(3)
    with open(tmp_path / "docs.jsonl", "w") as f:
        for tq in ts:
            for c in tq.candidates:
                f.write(json.dumps({"docno": c.doc.id, "text": c.doc.text, "title": c.doc.title}) + "\n")
    (tmp_path / "topics.tsv").write_text("".join(f"{tq.query.id}\t{tq.query.text}\n" for tq in ts))
    # the run misses each query's best document: the spec must add it back from the corpus
    write_trec_run(tmp_path / "run.trec", {tq.query.id: [(c.doc.id, -i) for i, c in enumerate(tq.candidates[1:])]
                                           for tq in ts})  # fmt: skip
    write_qrels(tmp_path / "qrels.txt", {tq.query.id: {tq.candidates[0].doc.id: 1} for tq in ts})
    cfg = TrainConfig.from_dict(
        {"output_dir": "o", "student": {"model": "m"}, "data": {"train": "x"}}, base_dir=tmp_path
    )
    spec = {
        "qrels": "qrels.txt",
        "run": "run.trec",
        "topics": "topics.tsv",
        "docs": "docs.jsonl",
        "negatives": 2,
    }
    built = load_training_set(spec, cfg)
    corpus = read_docs_jsonl(tmp_path / "docs.jsonl")
    items = candidates_from_run(
        read_trec_run(tmp_path / "run.trec"), read_topics(tmp_path / "topics.tsv"), corpus
    )
    expected = TrainingSet.from_qrels(tmp_path / "qrels.txt", items, negatives=2, docs=corpus)
    assert built.queries == expected.queries, (built.source, expected.source)
    assert [c.doc.id for c in built[0].candidates][-1] == "q0d0"  # the missed positive, added
    dev = load_dev_set(spec, cfg)
    assert [d.id for d in dev.items[0][1]] == [c.doc.id for c in ts[0].candidates[1:]]
    assert dev.qrels["q0"] == {"q0d0": 1}


def test_numbers_as_people_write_them_in_the_file_and_in_set(tmp_path):
    from reason2rank.distill.config import TrainConfig

    (tmp_path / "c.yaml").write_text(
        "output_dir: out\nstudent: {model: m}\ndata: {train: t.jsonl}\ntrain: {lr: 3e-5, max_steps: 10}\n"
    )
    cfg = TrainConfig.from_yaml(tmp_path / "c.yaml")
    assert cfg.train.lr == 3e-5 and isinstance(cfg.train.lr, float)
    from reason2rank.distill.config import load_yaml

    cfg = TrainConfig.from_yaml(
        tmp_path / "c.yaml", {"train.lr": load_yaml("5e-5"), "train.head_lr": load_yaml("1E-3")}
    )
    assert (cfg.train.lr, cfg.train.head_lr) == (5e-5, 1e-3)
    assert TrainConfig.from_yaml(tmp_path / "c.yaml", {"train.lr": 1}).train.lr == 1.0  # an int is a float


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train.lr": "fast"}, r"train\.lr must be float, got 'fast' \(str\)$"),
        (
            {"train.max_steps": "10"},
            r"train\.max_steps must be int or null, got '10' \(str\) \(write numbers without quotes\)",
        ),
        ({"train.batch_size": 2.5}, r"train\.batch_size must be int, got 2\.5"),
        ({"seed": True}, r"seed must be int, got True"),
        ({"student.lora": 3}, r"student\.lora must be dict or null"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key_and_the_type(tmp_path, override, message):
    from reason2rank.distill.config import TrainConfig

    (tmp_path / "c.yaml").write_text("output_dir: out\nstudent: {model: m}\ndata: {train: t.jsonl}\n")
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_yaml(tmp_path / "c.yaml", override)


def test_cli_set_lr_in_scientific_notation_trains(tiny_bert_encoder_dir, tmp_path):
    from distill_fixtures import toy_training_set

    from reason2rank.cli import main

    toy_training_set(4).save(tmp_path / "t.jsonl")
    (tmp_path / "c.yaml").write_text(
        f"output_dir: {tmp_path / 'run'}\nstudent: {{type: encoder, model: {tiny_bert_encoder_dir}, max_length: 64}}\n"
        "data: {train: t.jsonl, group_size: 3}\ntrain: {max_steps: 1, batch_size: 2, lr: 3e-5, device: cpu}\n"
    )
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--set", "train.lr=5e-5"]) == 0
    info = json.loads((tmp_path / "run" / "model" / "training.json").read_text())
    assert info["config"]["train"]["lr"] == 5e-5


def test_evidence_objective_without_evidence_in_the_data_is_refused(tiny_bert_encoder_dir, tmp_path):
    from distill_fixtures import toy_training_set

    from reason2rank.distill import TrainingSet, train

    ts = toy_training_set(4)
    for tq in ts:
        for c in tq.candidates:
            c.evidence = None
    TrainingSet(ts.queries, ts.source).save(tmp_path / "t.jsonl")
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "student": {"type": "encoder", "model": tiny_bert_encoder_dir, "max_length": 64},
        "data": {"train": str(tmp_path / "t.jsonl"), "group_size": 3},
        "objectives": {"group_softmax_ce": 1.0, "evidence": 0.5},
        "train": {"max_steps": 1, "batch_size": 2, "device": "cpu"},
    }
    with pytest.raises(ValueError, match="objective 'evidence' .* the training set has none"):
        train(cfg)
    assert not (tmp_path / "run" / "model").exists()  # nothing saved, so no untrained head can be used
