"""ONNX Runtime path of the encoder families: export, the r2r_model.json record, scores equal to torch fp32,
the evidence head, adapters, int8, stale exports, saving, the runtime choice and its errors."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import reason2rank
import tiny_models
from reason2rank import Doc, Query
from reason2rank.model_dir import R2R_CONFIG

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from reason2rank.onnx import export as export_module  # noqa: E402
from reason2rank.onnx.export import export_onnx  # noqa: E402
from reason2rank.onnx.runtime import EXPORTED_RUNTIMES, OnnxEncoderModel  # noqa: E402

TORCH = {"runtime": "torch", "dtype": "fp32", "progress": False}
#: the exported-graph runtimes installed here, in the order runtime="auto" prefers them
INSTALLED = [
    r for r in EXPORTED_RUNTIMES if importlib.util.find_spec(r if r == "openvino" else "onnxruntime")
]
WORDS = ["paris", "capital", "france", "city", "river", "cat", "sat", "mat", "banana", "yellow", "fruit", "sky",
         "blue", "music", "book", "house", "car", "water"]  # fmt: skip


def _items(n_queries: int = 3, n_docs: int = 7) -> list[tuple[Query, list[Doc]]]:
    rng = np.random.default_rng(0)
    items = []
    for qi in range(n_queries):
        query = Query(str(qi), " ".join(rng.choice(WORDS, size=2 + qi)))
        docs = [
            Doc(f"d{j}", " ".join(rng.choice(WORDS, size=int(rng.integers(3, 40)))) + ".")
            for j in range(n_docs)
        ]
        items.append((query, docs))
    return items


def _scores(model, items) -> np.ndarray:
    return np.concatenate(model.score_batch(items))


def _copy(src: str, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.fixture(scope="module")
def exported_bert(tiny_bert_dir, tmp_path_factory) -> Path:
    """A copy of the tiny BERT cross-encoder with an fp32 and an int8 export."""
    path = _copy(tiny_bert_dir, tmp_path_factory.mktemp("ort") / "bert")
    export_onnx(path, family="cross-encoder", int8=True)
    return path


@pytest.mark.parametrize(
    "fixture,family",
    [("tiny_bert_dir", "cross-encoder"), ("tiny_deberta_v2_dir", "cross-encoder"),
     ("tiny_bert_encoder_dir", "bi-encoder")],
)  # fmt: skip
def test_export_records_it_and_load_opens_it_on_onnx_runtime_with_torch_scores(
    fixture, family, request, tmp_path
):
    path = _copy(request.getfixturevalue(fixture), tmp_path / "model")
    assert not (path / R2R_CONFIG).exists()
    record = export_onnx(path, family=family)
    cfg = json.loads((path / R2R_CONFIG).read_text())
    assert cfg["family"] == family and cfg["onnx"]["fp32"] == "onnx/model.onnx" == record.fp32
    assert (path / "onnx" / "model.onnx").is_file() and "int8" not in cfg["onnx"]
    assert not [p for p in path.iterdir() if p.name.startswith(".onnx")], "no temporary folder is left"

    auto = reason2rank.load(path, progress=False)  # auto: the export is there, this is the CPU
    assert auto.runtime.runtime == INSTALLED[0] and auto.runtime.precision == "fp32"
    torch_model = reason2rank.load(path, **TORCH)
    assert torch_model.runtime.runtime == "torch" and isinstance(torch_model.model, torch.nn.Module)
    items = _items()
    want = _scores(torch_model, items)
    ranked_torch = torch_model.rerank(items[0][0], items[0][1])
    for runtime in INSTALLED:
        model = reason2rank.load(path, runtime=runtime, progress=False)
        assert model.runtime.runtime == runtime and isinstance(model.model, OnnxEncoderModel)
        assert model.describe()["runtime"] == f"{runtime} fp32"
        np.testing.assert_allclose(_scores(model, items), want, atol=1e-4, rtol=0, err_msg=runtime)
        ranked = model.rerank(items[0][0], items[0][1])
        assert [sd.doc.id for sd in ranked] == [sd.doc.id for sd in ranked_torch]


def test_scores_do_not_depend_on_batch_size_on_onnx_runtime(exported_bert):
    items = _items(4, 9)
    small = reason2rank.load(exported_bert, batch_size=3, progress=False)
    large = reason2rank.load(exported_bert, batch_size=64, progress=False)
    np.testing.assert_allclose(_scores(small, items), _scores(large, items), atol=1e-5, rtol=0)


def test_onnx_runtime_threads_follow_the_usable_cores(exported_bert):
    from reason2rank.cpu_isa import usable_cores

    model = reason2rank.load(exported_bert, runtime="onnx", progress=False)
    assert model.model.threads == usable_cores()
    assert model.engine.dtype == torch.float32 and model.engine.device.type == "cpu"


def test_a_ray_actor_holding_one_cpu_runs_its_exported_model_on_one_thread(exported_bert):
    """The actor sets the process's inference threads with torch's: N actors on a node do not each run a thread per
    core on ONNX Runtime / OpenVINO."""
    from reason2rank.cpu_isa import inference_threads, set_inference_threads, usable_cores
    from reason2rank.distributed.rerank import PairScorer

    torch_threads = torch.get_num_threads()
    try:
        actor = PairScorer(str(exported_bert), {"runtime": "onnx"}, threads=1)
        assert actor.model.model.threads == 1 and torch.get_num_threads() == 1 and inference_threads() == 1
        if "openvino" in INSTALLED:
            assert PairScorer(str(exported_bert), {"runtime": "openvino"}, threads=1).model.model.threads == 1
    finally:
        set_inference_threads(None)
        torch.set_num_threads(torch_threads)
    assert inference_threads() == usable_cores()
    with pytest.raises(ValueError, match="threads must be a positive int"):
        set_inference_threads(0)


@pytest.mark.skipif("openvino" not in INSTALLED, reason="OpenVINO is not installed")
def test_openvino_runs_fp32_with_the_cores_as_threads_and_refuses_the_int8_graph(exported_bert):
    from reason2rank.cpu_isa import usable_cores

    ov = reason2rank.load(exported_bert, runtime="openvino", progress=False)
    assert ov.describe()["runtime"] == "openvino fp32" and ov.model.threads == usable_cores()
    with pytest.raises(ValueError, match="runs the fp32 graph only.*runtime='onnx' for int8"):
        reason2rank.load(exported_bert, runtime="openvino", dtype="int8", progress=False)
    assert reason2rank.load(exported_bert, dtype="int8", progress=False).runtime.runtime == "onnx"


@pytest.mark.skipif("openvino" not in INSTALLED, reason="OpenVINO is not installed")
def test_openvino_streams_split_each_batch_and_give_the_one_request_scores(exported_bert):
    from reason2rank.onnx.openvino_model import MAX_STREAMS, OpenVINOEncoderModel, default_streams

    assert [default_streams(t) for t in (1, 2, 3, 16)] == [1, 2, 3, MAX_STREAMS]
    model = reason2rank.load(exported_bert, runtime="openvino", batch_size=5, progress=False)
    one = OpenVINOEncoderModel(model.model.graph, model.model.config, threads=2, streams=1)
    many = OpenVINOEncoderModel(model.model.graph, model.model.config, threads=2, streams=3)
    assert one._queue is None and many.streams == 3
    tok = model.tokenizer(["a query"] * 7, [f"document {'word ' * i}" for i in range(7)], padding=True,
                          return_tensors="pt")  # fmt: skip
    for rows in (7, 2, 1):  # 3 slices of 3/2/2 rows, 2 slices of 1, one request
        batch = {k: v[:rows] for k, v in tok.items() if k in one.input_names}
        a, b = one(**batch).logits, many(**batch).logits
        assert a.shape == b.shape == (rows, 1)
        # float rounding only: the pooled last layer multiplies all of a slice's rows at once (1.5e-8 seen)
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch_scores = _scores(reason2rank.load(exported_bert, **TORCH), _items())
    np.testing.assert_allclose(_scores(model, _items()), torch_scores, atol=1e-4)
    with pytest.raises(ValueError, match="streams must be >= 1"):
        OpenVINOEncoderModel(model.model.graph, model.model.config, streams=0)


def test_auto_keeps_the_fp32_export_on_a_cpu_with_amx(exported_bert, monkeypatch):
    import reason2rank.cpu_isa as cpu_isa

    # AMX-BF16 makes bf16 possibly faster, but bf16 moves scores: auto stays on the fp32 graph
    monkeypatch.setattr(cpu_isa, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    model = reason2rank.load(exported_bert, progress=False)
    assert model.runtime.runtime == INSTALLED[0] and model.runtime.precision == "fp32"


def test_without_openvino_auto_uses_onnx_runtime_and_asking_for_it_says_how_to_install(
    exported_bert, monkeypatch
):
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    assert reason2rank.load(exported_bert, progress=False).runtime.runtime == "onnx"
    with pytest.raises(ImportError, match=r"pip install 'reason2rank\[openvino\]'"):
        reason2rank.load(exported_bert, runtime="openvino", progress=False)


def test_encoder_student_evidence_head_runs_on_onnx_runtime(tiny_bert_dir, tmp_path):
    student = reason2rank.load(tiny_bert_dir, family="cross-encoder", **TORCH)
    torch.manual_seed(3)
    head = student.attach_evidence_head()
    with torch.no_grad():
        head.weight.normal_(0, 2.0)
    path = student.save(tmp_path / "student")
    export_onnx(path)
    ort_model = reason2rank.load(path, progress=False)
    torch_model = reason2rank.load(path, **TORCH)
    assert ort_model.runtime.runtime in EXPORTED_RUNTIMES and ort_model.evidence_head_layer is not None
    items = _items(2, 5)
    np.testing.assert_allclose(_scores(ort_model, items), _scores(torch_model, items), atol=1e-4, rtol=0)
    docs = [Doc("a", "the cat sat on the mat. paris is the capital of france. water is good.")] + items[0][1]
    features, _, _ = torch_model.encode_pairs_with_offsets(["capital of france"] * len(docs), docs)
    probs_ort = ort_model.evidence_token_probs(features)
    probs_torch = torch_model.evidence_token_probs(features)
    np.testing.assert_allclose(probs_ort, probs_torch, atol=1e-4, rtol=0, equal_nan=True)
    assert np.isfinite(probs_ort[0, : len(features[0]["input_ids"])]).all()
    tasks = [(Query("q", "capital of france"), d, 0.0) for d in docs]
    assert ort_model.explain_evidence(tasks) == torch_model.explain_evidence(tasks)


def test_an_unmerged_lora_adapter_is_merged_into_the_export(tiny_bert_dir, tiny_bert_lora_dir, tmp_path):
    with_adapter = reason2rank.load(
        tiny_bert_dir, family="cross-encoder", adapter=tiny_bert_lora_dir, **TORCH
    )
    path = with_adapter.save(tmp_path / "lora")
    assert json.loads((path / R2R_CONFIG).read_text())["adapter"] == "adapter"
    export_onnx(path)
    items = _items(2, 5)
    ort_scores = _scores(reason2rank.load(path, progress=False), items)
    np.testing.assert_allclose(ort_scores, _scores(reason2rank.load(path, **TORCH), items), atol=1e-4, rtol=0)
    base = _scores(reason2rank.load(tiny_bert_dir, family="cross-encoder", **TORCH), items)
    assert np.abs(ort_scores - base).max() > 1e-3, "the adapter must change the scores"


def test_int8_graph_is_quantised_and_its_scores_follow_fp32(exported_bert):
    from scipy.stats import spearmanr

    fp32_file, int8_file = exported_bert / "onnx" / "model.onnx", exported_bert / "onnx" / "model_int8.onnx"
    assert int8_file.stat().st_size < 0.6 * fp32_file.stat().st_size
    fp32 = reason2rank.load(exported_bert, progress=False)
    int8 = reason2rank.load(exported_bert, dtype="int8", progress=False)
    assert int8.runtime.precision == "int8" and int8.describe()["runtime"] == "onnx int8"
    items = _items(4, 12)
    a, b = _scores(fp32, items), _scores(int8, items)
    assert not np.allclose(a, b, atol=1e-6), "int8 weights change the scores a little"
    assert spearmanr(a, b).statistic > 0.9


def _ops_by_name(path: Path) -> dict[str, str]:
    import onnx

    return {n.name: n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_keeps_the_feed_forward_output_projections_fp32_unless_asked(exported_bert, tmp_path):
    import onnx

    from reason2rank.onnx.quantize import ffn_output_matmuls, quantize_int8

    fp32_file = exported_bert / "onnx" / "model.onnx"
    # the torch export's GELU is decomposed (Erf, Add, Mul, Mul): one feed-forward output MatMul per layer
    ffn = ffn_output_matmuls(onnx.load(str(fp32_file)).graph)
    assert len(ffn) == tiny_models.NUM_LAYERS
    # the last layer runs at the first position only (pooled_last_layer), its FFN output under a second name
    assert all(name.endswith(f"layer.{i}/output/dense/MatMul") for i, name in enumerate(ffn[:-1]))
    assert f"layer.{tiny_models.NUM_LAYERS - 1}/output/dense" in ffn[-1]
    kept = _ops_by_name(exported_bert / "onnx" / "model_int8.onnx")
    assert all(kept[name] == "MatMul" for name in ffn)  # left fp32
    assert "QAttention" in kept.values() and "MatMulInteger" in kept.values()  # the rest is int8
    every = _ops_by_name(quantize_int8(fp32_file, tmp_path / "all.onnx", fp32_ffn_output=False))
    assert not any(name in every for name in ffn)  # replaced by their quantised form
    assert list(every.values()).count("MatMulInteger") > list(kept.values()).count("MatMulInteger")


def test_int8_keeps_the_single_position_matmuls_fp32_when_asked(exported_bert, tmp_path):
    import onnx

    from reason2rank.onnx.quantize import quantize_int8, single_position_matmuls

    fp32_file = exported_bert / "onnx" / "model.onnx"
    last = f"layer.{tiny_models.NUM_LAYERS - 1}/"
    rows = single_position_matmuls(onnx.load(str(fp32_file)))
    # the pooled last layer's query, attention-output, FFN-in and FFN-out projections, the pooler, the classifier
    assert sum(last in name for name in rows) == 4
    assert any("pooler" in name for name in rows) and any("classifier" in name for name in rows)
    assert len(rows) == 6  # and nothing from the layers that read every position

    def one_row(ops: dict[str, str]) -> dict[str, str]:
        return {n: op for n, op in ops.items() if last in n or "pooler" in n or "classifier" in n}

    # by default they are int8 like the rest (query, attention output, FFN in, pooler, classifier; FFN out is
    # kept fp32 by fp32_ffn_output)
    default = _ops_by_name(exported_bert / "onnx" / "model_int8.onnx")
    assert list(one_row(default).values()).count("MatMulInteger") == 5
    kept = _ops_by_name(quantize_int8(fp32_file, tmp_path / "rows.onnx", fp32_single_position=True))
    assert "MatMulInteger" not in one_row(kept).values()
    # the quantiser rewrites a Gemm (pooler, classifier) as "<name>_MatMul" first: kept fp32 under that name
    assert sum(n.endswith("Gemm_MatMul") and op == "MatMul" for n, op in kept.items()) == 2
    assert any(
        op == "MatMulInteger" and f"layer.{tiny_models.NUM_LAYERS - 2}/" in n for n, op in kept.items()
    )


def test_single_position_matmuls_is_empty_where_shape_inference_cannot_run():
    from reason2rank.onnx.quantize import single_position_matmuls

    assert single_position_matmuls(object()) == []  # not a model: nothing kept back, quantised as usual


def test_a_stale_export_is_never_used(tmp_path, tiny_bert_dir):
    path = _copy(tiny_bert_dir, tmp_path / "m")
    export_onnx(path, family="cross-encoder")
    cfg = (path / R2R_CONFIG).read_text()
    tiny_models.make_tiny_bert(tmp_path / "other", seed=7)  # other weights over the exported ones
    shutil.copy2(tmp_path / "other" / "model.safetensors", path / "model.safetensors")
    assert (path / R2R_CONFIG).read_text() == cfg
    with pytest.warns(UserWarning, match="weights changed after it was exported"):
        auto = reason2rank.load(path, progress=False)
    assert auto.runtime.runtime == "torch"
    with pytest.raises(ValueError, match="weights changed.*export-onnx"):
        reason2rank.load(path, runtime="onnx", progress=False)


def test_an_unchanged_export_is_checked_by_file_stats_before_hashing(tmp_path, tiny_bert_dir, monkeypatch):
    import reason2rank.onnx.runtime as rt

    path = _copy(tiny_bert_dir, tmp_path / "m")
    export_onnx(path, family="cross-encoder")
    real, calls = rt.weights_fingerprint, []

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(rt, "weights_fingerprint", counting)
    assert reason2rank.load(path, runtime="onnx", progress=False).runtime.graph and not calls  # stats match
    os.utime(path / "model.safetensors", ns=(1, 1))  # same bytes, another time: hashed, still fresh
    assert reason2rank.load(path, runtime="onnx", progress=False).runtime.graph and len(calls) == 1


def test_saving_a_model_opened_on_onnx_runtime_keeps_the_export(exported_bert, tmp_path):
    model = reason2rank.load(exported_bert, progress=False)
    out = model.save(tmp_path / "copy")
    cfg = json.loads((out / R2R_CONFIG).read_text())
    assert cfg["onnx"]["fp32"] == "onnx/model.onnx" and cfg["onnx"]["int8"] == "onnx/model_int8.onnx"
    again = reason2rank.load(out, progress=False)
    assert (
        again.runtime.runtime == model.runtime.runtime and again.runtime.graph == out / "onnx" / "model.onnx"
    )
    items = _items(2, 4)
    np.testing.assert_allclose(_scores(again, items), _scores(model, items), atol=1e-6, rtol=0)
    torch_copy = reason2rank.load(exported_bert, **TORCH).save(tmp_path / "torch-copy")
    assert "onnx" not in json.loads((torch_copy / R2R_CONFIG).read_text()), (
        "torch weights saved anew: no export"
    )


def test_a_failed_check_leaves_the_model_directory_as_it_was(tiny_bert_dir, tmp_path, monkeypatch):
    path = _copy(tiny_bert_dir, tmp_path / "m")
    before = sorted(p.name for p in path.iterdir())
    monkeypatch.setattr(export_module, "_max_difference", lambda *a, **k: 0.5)
    with pytest.raises(ValueError, match="differs from torch fp32 by 5.00e-01"):
        export_onnx(path, family="cross-encoder")
    assert sorted(p.name for p in path.iterdir()) == before


def test_a_new_export_replaces_the_old_one(exported_bert, tmp_path):
    path = _copy(str(exported_bert), tmp_path / "m")
    record = export_onnx(path)  # without --int8 now
    assert record.int8 is None and not (path / "onnx" / "model_int8.onnx").exists()
    assert "int8" not in json.loads((path / R2R_CONFIG).read_text())["onnx"]
    with pytest.raises(FileNotFoundError, match="no int8 ONNX export.*--int8"):
        reason2rank.load(path, dtype="int8", progress=False)


# -- the runtime choice and its errors ------------------------------------------------------------------------
def test_auto_runtime_is_torch_without_an_export(tiny_bert_dir):
    model = reason2rank.load(tiny_bert_dir, family="cross-encoder", progress=False)
    assert model.runtime.runtime == "torch" and isinstance(model.model, torch.nn.Module)


def test_runtime_errors_say_what_to_do(tiny_bert_dir, tiny_llama_dir, exported_bert):
    with pytest.raises(ValueError, match="has no ONNX export; make one with `reason2rank export-onnx"):
        reason2rank.load(tiny_bert_dir, family="cross-encoder", runtime="onnx")
    with pytest.raises(ValueError, match="dtype='int8' runs on an exported graph only"):
        reason2rank.load(exported_bert, runtime="torch", dtype="int8")
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'; use one of auto, torch, onnx"):
        reason2rank.load(exported_bert, runtime="tensorrt")
    with pytest.raises(
        ValueError, match=r"runs fp32 or int8 graphs \(OpenVINO also bf16\), not dtype='fp16'"
    ):
        reason2rank.load(exported_bert, runtime="onnx", dtype="fp16")
    with pytest.raises(ValueError, match="runtime='onnx' runs on the CPU"):
        reason2rank.load(exported_bert, runtime="onnx", device="cuda")
    with pytest.raises(ValueError, match="support the encoder families"):
        reason2rank.load(tiny_llama_dir, family="causal-lm", runtime="onnx")
    bf16 = reason2rank.load(exported_bert, dtype="bf16", progress=False)  # auto + bf16: torch keeps bf16
    assert bf16.runtime.runtime == "torch" and bf16.engine.dtype == torch.bfloat16


def test_export_refuses_what_it_cannot_export(tiny_llama_dir, tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="export-onnx supports the encoder families.*causal-lm"):
        export_onnx(tiny_llama_dir, family="causal-lm")
    with pytest.raises(ValueError, match="has no r2r_model.json; say which family"):
        export_onnx(_copy(tiny_bert_dir, tmp_path / "plain"))
    with pytest.raises(FileNotFoundError, match="no model directory"):
        export_onnx(tmp_path / "missing")
    assert not (Path(tiny_llama_dir) / "onnx").exists()


def test_onnx_model_refuses_a_batch_without_its_inputs(exported_bert):
    model = reason2rank.load(exported_bert, progress=False).model
    with warnings.catch_warnings(), pytest.raises(ValueError, match="needs the input"):
        model(input_ids=torch.ones((1, 4), dtype=torch.long))


@pytest.mark.skipif("openvino" not in INSTALLED, reason="OpenVINO is not installed")
def test_openvino_bf16_compiles_the_fp32_graph_at_bf16_precision_and_onnx_runtime_refuses_bf16(exported_bert):
    items = _items()
    fp32 = reason2rank.load(exported_bert, runtime="openvino", progress=False)
    bf16 = reason2rank.load(exported_bert, runtime="openvino", dtype="bf16", progress=False)
    assert bf16.describe()["runtime"] == "openvino bf16" and bf16.runtime.graph == fp32.runtime.graph
    assert "bfloat16" in str(bf16.model.compiled.get_property("INFERENCE_PRECISION_HINT"))
    assert "float32" in str(fp32.model.compiled.get_property("INFERENCE_PRECISION_HINT"))
    want, got = _scores(fp32, items), _scores(bf16, items)
    # bf16 keeps 8 bits of mantissa: close to fp32, not equal to it (where the CPU runs bf16 at all)
    np.testing.assert_allclose(got, want, atol=0.05 * float(np.abs(want).max()) + 1e-3, rtol=0)
    with pytest.raises(
        ValueError, match=r"runs fp32 or int8 graphs \(OpenVINO also bf16\), not dtype='bf16'"
    ):
        reason2rank.load(exported_bert, runtime="onnx", dtype="bf16", progress=False)
