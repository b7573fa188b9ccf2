"""``reason2rank export-onnx``: the happy path (then ``rerank --runtime onnx`` on it) and the error paths."""

from __future__ import annotations

import json
import shutil

import pytest

from reason2rank import Doc, Query
from reason2rank.cli import main
from reason2rank.data import read_trec_run, write_rankllm_candidates
from reason2rank.model_dir import R2R_CONFIG

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

ITEMS = [
    (Query("1", "capital of france"), [Doc("a", "paris is the capital of france."), Doc("b", "cats sleep.")]),
    (Query("2", "yellow fruit"), [Doc("c", "the sky is blue."), Doc("d", "bananas are yellow fruit.")]),
]


def test_export_onnx_then_rerank_on_onnx_runtime_gives_the_torch_run(tmp_path, tiny_bert_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_bert_dir, model)
    assert main(["export-onnx", str(model), "--family", "cross-encoder", "--int8"]) == 0
    err = capsys.readouterr().err
    assert "wrote onnx/model.onnx, onnx/model_int8.onnx" in err and "recorded in r2r_model.json" in err
    cfg = json.loads((model / R2R_CONFIG).read_text())
    assert cfg["family"] == "cross-encoder" and set(cfg["onnx"]) >= {"fp32", "int8", "weights_sha256"}

    cands = tmp_path / "cands.json"
    write_rankllm_candidates(cands, ITEMS)
    runs = {}
    for runtime in ("onnx", "torch"):
        out = tmp_path / f"{runtime}.trec"
        argv = ["rerank", "--model", str(model), "--runtime", runtime, "--dtype", "fp32", "--no-progress",
                "--candidates", str(cands), "--out", str(out)]  # fmt: skip
        assert main(argv) == 0
        runs[runtime] = read_trec_run(out)
    for qid in ("1", "2"):
        onnx_run, torch_run = runs["onnx"][qid], runs["torch"][qid]
        assert [d for d, _ in onnx_run] == [d for d, _ in torch_run]
        assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(onnx_run, torch_run))


def test_export_onnx_refuses_a_causal_lm(tmp_path, tiny_llama_dir, capsys):
    model = tmp_path / "llm"
    shutil.copytree(tiny_llama_dir, model)
    assert main(["export-onnx", str(model), "--family", "causal-lm"]) == 1
    err = capsys.readouterr().err
    assert (
        "export-onnx supports the encoder families (cross-encoder, bi-encoder" in err and "causal-lm" in err
    )
    assert not (model / "onnx").exists() and not (model / R2R_CONFIG).exists()


def test_export_onnx_errors_name_the_problem(tmp_path, tiny_bert_dir, capsys):
    assert main(["export-onnx", str(tmp_path / "missing")]) == 1
    assert "no model directory at" in capsys.readouterr().err
    plain = tmp_path / "plain"
    shutil.copytree(tiny_bert_dir, plain)
    assert main(["export-onnx", str(plain)]) == 1
    assert "has no r2r_model.json; say which family it is" in capsys.readouterr().err
    assert main(["export-onnx", str(plain), "--opset", "9"]) == 2
    assert "--opset must be 14 or newer" in capsys.readouterr().err
    assert not (plain / "onnx").exists()


def test_rerank_on_onnx_runtime_without_an_export_says_how_to_make_one(tmp_path, tiny_bert_dir, capsys):
    cands = tmp_path / "cands.json"
    write_rankllm_candidates(cands, ITEMS)
    argv = ["rerank", "--model", tiny_bert_dir, "--family", "cross-encoder", "--runtime", "onnx",
            "--candidates", str(cands), "--out", str(tmp_path / "run.trec")]  # fmt: skip
    assert main(argv) == 1
    assert "has no ONNX export; make one with `reason2rank export-onnx" in capsys.readouterr().err
    assert not (tmp_path / "run.trec").exists()
