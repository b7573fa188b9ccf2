"""The Reranker interface: bad input, explanations, load() errors, the engine's device/dtype choices."""

from __future__ import annotations

import json
import math
import shutil
import warnings

import numpy as np
import pytest
import torch

import reason2rank
from reason2rank import Doc, Query, ScoredDoc
from reason2rank.engine import Engine, pad_batch, resolve_dtype
from reason2rank.explain import sentence_spans, split_sentences
from reason2rank.reranker import Reranker

FP32 = {"dtype": "fp32", "progress": False}


class KeywordReranker(Reranker):
    """Counts query words in the document: enough to test the interface without a model."""

    def __init__(self):
        self.calls = 0
        self.seen = []

    def score_batch(self, items):
        self.calls += 1
        self.seen.extend([d.id for d in docs] for _, docs in items)
        out = []
        for q, docs in items:
            words = set(q.text.lower().split())
            out.append(
                np.array(
                    [sum(w.strip(".,") in words for w in d.full_text.lower().split()) for d in docs], float
                )
            )
        return out


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    return reason2rank.load(tiny_bert_dir, family="cross-encoder", **FP32)


def test_empty_candidate_lists_give_empty_results_without_scoring():
    r = KeywordReranker()
    assert r.rerank("q", []) == []
    assert r.rerank_batch([]) == []
    assert r.calls == 0
    out = r.rerank_batch([(Query("a", "x"), []), (Query("b", "cat"), [Doc("d", "cat")])])
    assert out[0] == [] and out[1][0].doc.id == "d" and r.calls == 1


@pytest.mark.parametrize("text", ["", "   ", None])
def test_query_without_text_is_rejected(text):
    with pytest.raises(ValueError, match="has no text"):
        Query("q1", text)


def test_none_and_nan_doc_text_ranked_last_unscored_with_one_warning():
    docs = [Doc("a", None), Doc("b", float("nan")), Doc("c", "dog"), Doc("d", "", title="cat"), Doc("e", "")]
    r = KeywordReranker()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ranked = r.rerank(Query("q", "cat"), docs)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and msgs[0].startswith("2 document(s) have no text") and "q/a, q/b" in msgs[0]
    assert r.seen == [["c", "d", "e"]]  # the model never sees a document without text
    assert [sd.doc.id for sd in ranked] == ["d", "c", "e", "a", "b"]  # a title is text; "" is an empty text
    lowest = min(sd.score for sd in ranked[:3])
    assert [sd.score for sd in ranked[3:]] == [lowest - 1.0, lowest - 1.0] and [sd.rank for sd in ranked] == [
        0,
        1,
        2,
        3,
        4,
    ]
    assert (
        ranked[3].doc.text is None and ranked[4].doc.text is None and docs[1].text != docs[1].text
    )  # NaN kept
    # explanations skip them; a query whose documents all lack text is ranked without calling the model
    assert r.rerank(Query("q", "cat"), [Doc("a", None)], explain=1)[0].score == -1.0 and len(r.seen) == 1


def test_duplicate_doc_ids_error_names_them():
    with pytest.raises(ValueError, match=r"duplicate doc ids \['x'\]"):
        KeywordReranker().rerank("q", [Doc("x", "a"), Doc("y", "b"), Doc("x", "c")])


def test_non_utf8_bytes_and_mojibake_are_kept(bert):
    mojibake = "1Â¼ cups of flour â€” about 150 g"
    docs = [
        Doc("m", mojibake),
        Doc("b", b"caf\xe9 latte".decode("latin-1")),
        Doc("r", b"na\xefve \xff".decode("utf-8", "replace")),
    ]
    ranked = bert.rerank("how much flour", docs)
    assert {sd.doc.id: sd.doc.text for sd in ranked}["m"] == mojibake
    assert all(math.isfinite(sd.score) for sd in ranked)
    raw = KeywordReranker().rerank(
        "cafe", [Doc("z", b"caf\xe9")]
    )  # bytes: decoded with replacement, not dropped
    assert raw[0].doc.text == "caf\ufffd"


def test_inputs_are_never_mutated_and_results_are_new_objects(bert):
    docs = [Doc("a", "paris is in france", meta={"k": 1}), Doc("b", "cats")]
    before = [(d.id, d.text, dict(d.meta)) for d in docs]
    out = bert.rerank("capital of france", docs, explain=1)
    assert [(d.id, d.text, dict(d.meta)) for d in docs] == before
    assert all(isinstance(sd, ScoredDoc) for sd in out)


def test_bad_explain_and_bad_items_are_rejected():
    r = KeywordReranker()
    with pytest.raises(ValueError, match="explain"):
        r.rerank("q", ["a"], explain=-1)
    with pytest.raises(TypeError, match=r"list of \(query, docs\) pairs"):
        r.rerank_batch(("q", ["a"]))
    with pytest.raises(TypeError, match="must be a reason2rank.Doc or a str"):
        r.rerank("q", [42])


# --- explanations ----------------------------------------------------------------------------------------
def test_sentence_spans_reproduce_text():
    text = "First sentence. Second one!  Third? \n\nLast line without a stop"
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == [
        "First sentence.",
        "Second one!",
        "Third?",
        "Last line without a stop",
    ]
    assert split_sentences("") == []


def test_evidence_is_the_sentence_whose_removal_costs_most_and_only_top_k():
    r = KeywordReranker()
    docs = [
        Doc("a", "Cats are small. Dogs bark loudly at night. The capital of France is Paris."),
        Doc("b", "France is in Europe. Paris hosts the Tour de France finish."),
        Doc("c", "Unrelated text here."),
    ]
    ranked = r.rerank(Query("q", "capital of france paris"), docs, explain=2)
    assert ranked[0].doc.id == "a"
    assert ranked[0].evidence == "The capital of France is Paris."
    assert ranked[1].evidence in split_sentences(ranked[1].doc.text)
    assert ranked[2].evidence is None  # not in the top-k
    assert all(
        sd.reasoning is None and sd.comparison is None for sd in ranked
    )  # cannot generate: None, not ""


def test_evidence_from_a_real_model_is_a_sentence_of_the_document(minilm_dir):
    model = reason2rank.load(minilm_dir, family="bi-encoder", **FP32)
    doc = Doc(
        "d",
        "The Eiffel Tower was completed in 1889. Paris is the capital and largest city of France. "
        "Bananas are rich in potassium.",
    )
    ranked = model.rerank("What is the capital of France?", [doc, Doc("e", "Cats sleep a lot.")], explain=1)
    assert ranked[0].doc.id == "d"
    assert ranked[0].evidence == "Paris is the capital and largest city of France."
    assert ranked[1].evidence is None


def test_causal_lm_generates_reasoning_and_comparisons_for_top_k_only(tiny_llama_dir):
    model = reason2rank.load(tiny_llama_dir, family="causal-lm", max_new_tokens=8, **FP32)
    model.evidence = False
    docs = [Doc(str(i), t) for i, t in enumerate(["paris is in france", "cats are small", "bananas", "dogs"])]
    ranked = model.rerank("capital of france", docs, explain=2)
    assert all(isinstance(sd.reasoning, str) and sd.reasoning for sd in ranked[:2])
    assert isinstance(ranked[0].comparison, str) and ranked[1].comparison is None  # pairs inside the top-2
    assert all(sd.reasoning is None and sd.evidence is None for sd in ranked[2:])
    # greedy decoding: the same text again, and scores unaffected by explaining
    again = model.rerank("capital of france", docs, explain=2)
    assert [sd.reasoning for sd in again] == [sd.reasoning for sd in ranked]
    assert [sd.score for sd in model.rerank("capital of france", docs)] == [sd.score for sd in ranked]


# --- load() -------------------------------------------------------------------------------------------------
def test_load_wrong_path_names_what_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match="r2r_model.json"):
        reason2rank.load(tmp_path / "nope")


def test_load_plain_dir_without_family_asks_for_it(tiny_bert_dir):
    with pytest.raises(FileNotFoundError, match="pass family="):
        reason2rank.load(tiny_bert_dir)


def test_unknown_family_lists_known_ones(tiny_bert_dir):
    with pytest.raises(ValueError, match="known families: bi-encoder, cascade, causal-lm, cross-encoder"):
        reason2rank.load(tiny_bert_dir, family="quantum")


def test_model_dir_missing_files_is_reported(tiny_bert_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bert_dir, broken)
    (broken / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing weights"):
        reason2rank.load(broken, family="cross-encoder")
    saved = reason2rank.load(tiny_bert_dir, family="cross-encoder", **FP32).save(tmp_path / "saved")
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="missing config.json"):
        reason2rank.load(saved)


def test_r2r_model_json_is_self_describing_and_overridable(tiny_bert_dir, tmp_path):
    saved = reason2rank.load(tiny_bert_dir, family="cross-encoder", max_length=96, **FP32).save(
        tmp_path / "m"
    )
    cfg = json.loads((saved / "r2r_model.json").read_text())
    assert cfg["family"] == "cross-encoder" and cfg["max_length"] == 96 and cfg["version"] == 1
    assert reason2rank.load(saved, **FP32).max_length == 96
    assert reason2rank.load(saved, max_length=48, **FP32).max_length == 48
    cfg["version"] = 99
    (saved / "r2r_model.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="upgrade reason2rank"):
        reason2rank.load(saved)


# --- engine -------------------------------------------------------------------------------------------------
def test_dtype_resolution_rules(monkeypatch):
    import reason2rank.cpu_isa as cpu_isa

    cpu = torch.device("cpu")
    assert resolve_dtype("fp32", cpu) is torch.float32 and resolve_dtype(torch.float16, cpu) is torch.float16
    assert resolve_dtype("bf16", cpu) is torch.bfloat16
    # auto keeps fp32 scores on every CPU, AMX-BF16 included (bf16 is asked for, never picked)
    monkeypatch.setattr(cpu_isa, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16", "amx_bf16"}))
    assert resolve_dtype(None, cpu) is torch.float32 and resolve_dtype("auto", cpu) is torch.float32
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int3", cpu)


def test_pad_batch_left_and_right():
    feats = [{"input_ids": [5, 6, 7]}, {"input_ids": [8]}]
    right = pad_batch(feats, 0, "right")
    left = pad_batch(feats, 0, "left")
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]] and right["attention_mask"].tolist() == [
        [1, 1, 1],
        [1, 0, 0],
    ]
    assert left["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]] and left["attention_mask"].tolist() == [
        [1, 1, 1],
        [0, 0, 1],
    ]


def test_engine_returns_input_order_and_sorts_batches_by_length():
    seen = []

    def forward(batch):
        seen.append(batch["input_ids"].shape[1])
        return batch["attention_mask"].sum(1).float()

    feats = [{"input_ids": [1] * n} for n in (3, 9, 1, 5, 7)]
    out = Engine(device="cpu", batch_size=2, progress=False).run(feats, forward, pad_token_id=0)
    assert out.tolist() == [3, 9, 1, 5, 7]
    assert seen == [9, 5, 1]  # longest first, each batch padded to its own longest


def test_engine_runs_each_distinct_input_once_so_identical_inputs_get_identical_outputs():
    rows = []

    def forward(batch):
        rows.append(batch["input_ids"].shape[0])
        # an output that depends on the batch it is in: equal inputs in different batches would differ
        return batch["input_ids"].sum(1).float() + 0.001 * batch["input_ids"].shape[0] * len(rows)

    feats = [
        {"input_ids": [2, 3]},
        {"input_ids": [4]},
        {"input_ids": [2, 3]},
        {"input_ids": [2, 3], "x": [1, 1]},
    ]
    out = Engine(device="cpu", batch_size=1, progress=False).run(feats, forward, pad_token_id=0)
    assert sum(rows) == 3  # [2, 3] runs once; the one with other features is a different input
    assert out[0] == out[2] and out[0] != out[3]


def test_engine_halves_batch_on_cuda_oom(monkeypatch):
    engine = Engine(device="cpu", batch_size=4, progress=False)
    engine.device = torch.device("cuda")  # pretend; pad_batch moves tensors, so keep them on cpu
    monkeypatch.setattr("reason2rank.engine.pad_batch", lambda f, p, s, d: pad_batch(f, p, s, None))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    sizes = []

    def forward(batch):
        sizes.append(batch["input_ids"].shape[0])
        if batch["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return batch["attention_mask"].sum(1).float()

    with pytest.warns(UserWarning, match="batch_size=1"):
        out = engine.run([{"input_ids": [1] * n} for n in (2, 3, 4)], forward, pad_token_id=0)
    assert out.tolist() == [2, 3, 4] and sizes == [3, 2, 1, 1, 1]  # 4 -> 2 -> 1


def test_progress_policy_terminal_only_by_default_forced_with_true(monkeypatch, capsys):
    import io

    from reason2rank import progress

    monkeypatch.delenv("R2R_NO_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "_stderr_is_tty", lambda: False)
    assert not progress.progress_enabled(None) and progress.progress_enabled(True)
    assert not progress.progress_enabled(False)
    monkeypatch.setattr(progress, "_stderr_is_tty", lambda: True)
    assert progress.progress_enabled(None)
    monkeypatch.setenv("R2R_NO_PROGRESS", "1")
    assert not progress.progress_enabled(True)
    monkeypatch.delenv("R2R_NO_PROGRESS")
    # forced onto a log file: redrawn at most every LOG_INTERVAL seconds, not once per batch
    monkeypatch.setattr(progress, "_stderr_is_tty", lambda: False)
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    bar = progress.progress_bar(1000, "scoring", True)
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert buf.getvalue().count("scoring") <= 3


def test_no_progress_hides_transformers_loading_bar(tiny_bert_dir, capfd, monkeypatch):
    from reason2rank import progress

    monkeypatch.setattr(progress, "_stderr_is_tty", lambda: True)  # bars would show on a terminal
    reason2rank.load(tiny_bert_dir, family="cross-encoder", progress=False)
    assert "Loading weights" not in capfd.readouterr().err
