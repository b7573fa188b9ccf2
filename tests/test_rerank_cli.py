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
    assert [(r["qid"], r["docno"], r["rank"]) for r in records] == [
        ("1", "a", 1),
        ("2", "d", 1),
    ]  # as in the run
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


@pytest.mark.parametrize("flags", [["--runtime", "onnx"], ["--dtype", "int8"]])
def test_onnx_runtime_with_an_llm_strategy_is_a_usage_error(tmp_path, candidates, capsys, flags):
    out = tmp_path / "r"
    code = main(["rerank", "--model", "x/y", "--strategy", "listwise", "--candidates", str(candidates),
                 "--out", str(out), *flags])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "encoder families" in err and "--strategy listwise" in err
    assert not out.exists()


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


def test_output_paths_are_checked_before_any_work_and_nothing_is_written(
    tmp_path, candidates, capsys, monkeypatch
):
    import reason2rank

    loads = []
    monkeypatch.setattr(reason2rank, "load", lambda *a, **k: loads.append(a) or pytest.fail("model loaded"))
    expl = tmp_path / "expl.jsonl"
    argv = ["rerank", "--model", "m", "--candidates", str(candidates), "--out", str(tmp_path / "no" / "run.trec"),
            "--explain", "1", "--explanations-out", str(expl)]  # fmt: skip
    assert main(argv) == 1 and not loads
    err = capsys.readouterr().err
    assert "--out" in err and "does not exist" in err and ".tmp" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cands.json"]  # explanations not written either
    argv[6] = str(tmp_path)  # a directory
    assert main(argv) == 1 and "is a directory" in capsys.readouterr().err


def test_run_and_explanations_are_written_together_or_not_at_all(
    tmp_path, candidates, minilm_dir, monkeypatch
):
    import reason2rank.cli.rerank as rerank_cli
    import reason2rank.data

    out, expl = tmp_path / "run.trec", tmp_path / "expl.jsonl"
    argv = ["rerank", "--model", minilm_dir, "--family", "bi-encoder", "--dtype", "fp32", "--no-progress",
            "--candidates", str(candidates), "--out", str(out), "--explain", "1", "--explanations-out", str(expl)]  # fmt: skip

    def broken(path, *a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(reason2rank.data, "write_trec_run", broken)
    assert rerank_cli is not None and main(argv) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cands.json"]


def test_rerank_reports_the_padding_of_its_batches(tmp_path, candidates, tiny_bert_dir, capsys):
    import reason2rank

    argv = ["rerank", "--model", tiny_bert_dir, "--family", "cross-encoder", "--batch-size", "3", "--no-progress",
            "--candidates", str(candidates), "--out", str(tmp_path / "run.trec")]  # fmt: skip
    assert main(argv) == 0
    same = reason2rank.load(tiny_bert_dir, family="cross-encoder", batch_size=3, progress=False)
    same.rerank_batch(ITEMS)
    stats = same.engine.padding
    assert 0 < stats.tokens < stats.slots  # 4 pairs of different lengths in batches of 3: some padding
    expected = f"batches held {stats.tokens} tokens in {stats.slots} slots ({100 * stats.padded_fraction:.1f}% padding)"
    assert expected in capsys.readouterr().err


def test_null_content_warns_and_ranks_last(tmp_path, minilm_dir, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([{"query": "capital of france", "hits": [
        {"qid": "1", "docid": "a", "content": None, "rank": 1, "score": 2.0},
        {"qid": "1", "docid": "b", "content": "paris is the capital of france", "rank": 2, "score": 1.0}]}]))  # fmt: skip
    out = tmp_path / "run.trec"
    with pytest.warns(UserWarning, match=r"1 document\(s\) have no text .*1/a"):
        code = main(["rerank", "--model", minilm_dir, "--family", "bi-encoder", "--no-progress",
                     "--candidates", str(path), "--out", str(out)])  # fmt: skip
    assert code == 0 and [d for d, _ in read_trec_run(out)["1"]] == ["b", "a"]


def test_friction_errors_say_what_is_wrong(tmp_path, candidates, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    out = tmp_path / "r.trec"
    assert main(["rerank", "--model", "m", "--candidates", str(empty), "--out", str(out)]) == 1
    assert "nothing to rerank" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            ["rerank", "--model", "m", "--candidates", str(candidates), "--out", str(out), "--explain", "-1"]
        )
        == 2
    )
    assert "--explain must be >= 0" in capsys.readouterr().err
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 a 1 2.0 t\n")
    assert main(["eval", "--run", str(run), "--qrels", str(tmp_path / "none.txt")]) == 1
    assert "--qrels file" in capsys.readouterr().err


def test_eval_note_says_what_the_number_is_and_gives_both(tmp_path, capsys):
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 a 1 2.0 t\n1 Q0 b 2 1.0 t\n")
    qrels = tmp_path / "qrels.txt"
    write_qrels(qrels, {"1": {"a": 1}, "2": {"d": 1}, "3": {"e": 1}, "4": {"f": 1}})
    assert main(["eval", "--run", str(run), "--qrels", str(qrels), "--metrics", "RR@10"]) == 0
    out, err = capsys.readouterr()
    assert "RR@10\t0.2500" in out  # 1 / 4: the three missing queries count as 0
    assert "3 of 4 judged queries have no results" in err and "counted as 0" in err
    assert "Over the 1 judged queries the run has: RR@10 1.0000" in err
    assert (
        main(["eval", "--run", str(run), "--qrels", str(qrels), "--metrics", "RR@10", "--judged-only"]) == 0
    )
    out, err = capsys.readouterr()
    assert (
        "RR@10\t1.0000" in out
        and "Over all 4 judged queries, the missing ones counted as 0: RR@10 0.2500" in err
    )
