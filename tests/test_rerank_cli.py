"""The reason2rank command: rerank and eval end to end, errors, no partial output files."""

from __future__ import annotations

import json

import pytest

from reason2rank import Doc, Query
from reason2rank.cli import main
from reason2rank.data import read_trec_run, write_qrels, write_rankllm_candidates

ITEMS = [
    (
        Query("1", "capital of france"),
        [Doc("a", "paris is the capital of france. it is big."), Doc("b", "cats sleep.")],
    ),
    (
        Query("2", "yellow fruit"),
        [Doc("c", "the sky is blue."), Doc("d", "bananas are yellow. they are fruit.")],
    ),
]


@pytest.fixture()
def candidates(tmp_path):
    path = tmp_path / "cands.json"
    write_rankllm_candidates(path, ITEMS)
    return path


def test_rerank_writes_run_and_explanations(tmp_path, candidates, minilm_dir):
    out, expl = tmp_path / "run.trec", tmp_path / "expl.jsonl"
    argv = ["rerank", "--model", minilm_dir, "--family", "bi-encoder", "--dtype", "fp32", "--no-progress",
            "--candidates", str(candidates), "--out", str(out), "--explain", "1", "--explanations-out", str(expl)]  # fmt: skip
    assert main(argv) == 0
    run = read_trec_run(out)
    assert [d for d, _ in run["1"]] == ["a", "b"] and [d for d, _ in run["2"]] == ["d", "c"]
    records = [json.loads(line) for line in expl.read_text().splitlines()]
    assert [(r["qid"], r["docno"], r["rank"]) for r in records] == [("1", "a", 0), ("2", "d", 0)]
    assert records[0]["evidence"] == "paris is the capital of france." and records[0]["reasoning"] is None


def test_eval_prints_ir_measures(tmp_path, capsys):
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 a 1 2.0 t\n1 Q0 b 2 1.0 t\n2 Q0 c 1 2.0 t\n2 Q0 d 2 1.0 t\n")
    qrels = tmp_path / "qrels.txt"
    write_qrels(qrels, {"1": {"a": 1}, "2": {"d": 1}})
    assert main(["eval", "--run", str(run), "--qrels", str(qrels), "--metrics", "RR@10", "P@1"]) == 0
    out = capsys.readouterr().out
    assert "RR@10\t0.7500" in out and "P@1\t0.5000" in out


def test_bad_model_fails_without_leaving_an_output_file(tmp_path, candidates, capsys):
    out = tmp_path / "run.trec"
    code = main(
        ["rerank", "--model", str(tmp_path / "missing"), "--candidates", str(candidates), "--out", str(out)]
    )
    assert code == 1 and not out.exists()
    err = capsys.readouterr().err
    assert "error" in err and "r2r_model.json" in err
    assert list(tmp_path.iterdir()) == [candidates]  # no temp file left behind either


def test_usage_errors_exit_2(tmp_path, candidates, capsys):
    code = main(
        [
            "rerank",
            "--model",
            "x/y",
            "--candidates",
            str(candidates),
            "--out",
            str(tmp_path / "r"),
            "--explain",
            "2",
        ]
    )
    assert code == 2 and "--explanations-out" in capsys.readouterr().err
    assert main(["eval", "--run", "r", "--qrels", "q", "--metrics", "NotAMetric@3"]) == 2


def test_unknown_family_error_lists_families(tmp_path, candidates, tiny_bert_dir, capsys):
    code = main(
        [
            "rerank",
            "--model",
            tiny_bert_dir,
            "--family",
            "nope",
            "--candidates",
            str(candidates),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 1 and "known families" in capsys.readouterr().err
