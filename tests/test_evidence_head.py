"""Evidence head of the cross-encoder student: span finding, token offsets, labels, read-out, save/load."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import reason2rank
import reason2rank.explain as explain_module
from reason2rank import Doc, Query
from reason2rank.explain import occlusion_evidence, sentence_spans
from reason2rank.explain.evidence import (
    EVIDENCE_HEAD_FILE,
    doc_token_offsets,
    evidence_token_labels,
    find_evidence_span,
    save_evidence_head,
    sentence_scores,
)
from reason2rank.reranker import Reranker

FP32 = {"dtype": "fp32", "progress": False}
QUERY = "what is the capital of france"
TARGET = Doc("t", "the cat sat on the mat. paris is the capital of france. water is good.")
TARGET_SENTENCE = "paris is the capital of france."
OTHERS = [
    Doc("o1", "music and books. a city in england is london.", title="world data"),
    Doc("o2", "the student has a car. the house is new. " * 4),
    Doc("o3", "no title, one sentence"),
]


def _load(path: str, **kw):
    return reason2rank.load(path, family="cross-encoder", **FP32, **kw)


def _wordpiece(tok: str) -> str:
    return tok[2:] if tok.startswith("##") else tok


def _normalise(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")


# --- find_evidence_span ----------------------------------------------------------------------------------
def test_find_evidence_span_exact():
    text = "Fleas live long. The life cycle takes 3 weeks. Eggs hatch."
    a, b = find_evidence_span(text, "The life cycle takes 3 weeks.")
    assert text[a:b] == "The life cycle takes 3 weeks."
    assert find_evidence_span(text, "  The life cycle takes 3 weeks.\n") == (a, b)  # outer whitespace trimmed


def test_find_evidence_span_case_and_whitespace_insensitive_maps_back_to_original():
    text = "Fleas live long.\nThe  life\tcycle   takes 3 WEEKS. Eggs hatch."
    a, b = find_evidence_span(text, "the life cycle takes 3 weeks.")
    assert text[a:b] == "The  life\tcycle   takes 3 WEEKS."
    a, b = find_evidence_span(text, "THE LIFE CYCLE\n TAKES 3 weeks")
    assert text[a:b] == "The  life\tcycle   takes 3 WEEKS"
    a, b = find_evidence_span("Straße und Weg.", "STRASSE und weg")  # casefold expands ß, still maps back
    assert "Straße und Weg."[a:b] == "Straße und Weg"


@pytest.mark.parametrize("evidence", [None, "", "   ", "Mosquitoes live short.", "life cycle takes 4 weeks"])
def test_find_evidence_span_missing(evidence):
    assert find_evidence_span("Fleas live long. The life cycle takes 3 weeks.", evidence) is None
    assert find_evidence_span("", "anything") is None


# --- offsets, labels, sentence scores (pure functions) ---------------------------------------------------
def test_doc_token_offsets_drops_query_special_and_title_tokens():
    # [CLS] what [SEP] title word text here [SEP]   with full_text = "title word text here" and text at 11
    offsets = [(0, 0), (0, 4), (0, 0), (0, 5), (6, 10), (11, 15), (16, 20), (0, 0)]
    seq = [None, 0, None, 1, 1, 1, 1, None]
    assert doc_token_offsets(offsets, seq, 11) == [None, None, None, None, None, (0, 4), (5, 9), None]
    assert doc_token_offsets(offsets, seq, 0)[3:7] == [(0, 5), (6, 10), (11, 15), (16, 20)]
    assert doc_token_offsets([(8, 14)], [1], 11) == [(0, 3)]  # straddles the boundary: clipped to the text
    with pytest.raises(ValueError):
        doc_token_offsets(offsets, seq[:-1], 0)


def test_evidence_token_labels():
    offsets = [None, (0, 3), (4, 7), (7, 8), (9, 12), (13, 14), None]
    assert evidence_token_labels(offsets, (4, 8)) == [-100, 0, 1, 1, 0, 0, -100]
    assert evidence_token_labels(offsets, (5, 6)) == [-100, 0, 1, 0, 0, 0, -100]  # partial overlap counts
    assert evidence_token_labels(offsets, None) == [-100, 0, 0, 0, 0, 0, -100]


def test_sentence_scores_means_and_skips_sentences_without_tokens():
    text = "Ab cd. Ef gh. Ij."
    offsets = [None, (0, 2), (3, 5), (5, 6), (7, 9), (10, 12), (12, 13), None]
    probs = [9.0, 0.1, 0.2, 0.3, 0.8, 0.6, 1.0, 9.0, float("nan")]  # trailing padding is ignored
    got = sentence_scores(offsets, probs, text)
    assert [span for span, _ in got] == [(0, 6), (7, 13)]  # "Ij." has no token (truncated)
    assert got[0][1] == pytest.approx(0.2) and got[1][1] == pytest.approx(0.8)


# --- encode_pairs_with_offsets ---------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_deberta_v2_dir"])
def test_encode_pairs_with_offsets_matches_encode_pairs(fixture, request):
    model = _load(request.getfixturevalue(fixture), max_length=24)
    docs = [TARGET, *OTHERS, Doc("e", ""), Doc("t2", "", title="only a title")]
    queries = [
        QUERY,
        "why",
        QUERY,
        "a much longer query about the capital city of the country france",
        "x",
        "y",
    ]
    feats, offsets, truncated = model.encode_pairs_with_offsets(queries, docs)
    want, want_truncated = model.encode_pairs(queries, [d.full_text for d in docs])
    assert feats == want and truncated == want_truncated and truncated > 0
    assert [len(o) for o in offsets] == [len(f["input_ids"]) for f in feats]
    assert all(o is None for o in offsets[-1])  # title only: no token of doc.text
    assert all(o is None for o in offsets[-2])
    with pytest.raises(ValueError):
        model.encode_pairs_with_offsets([QUERY], [])


@pytest.mark.parametrize("title", [None, "france data"])
def test_offsets_point_into_doc_text(tiny_bert_dir, title):
    model = _load(tiny_bert_dir)
    doc = Doc("d", TARGET.text, title=title)
    feats, offsets, truncated = model.encode_pairs_with_offsets([QUERY], [doc])
    assert truncated == 0
    tokens = model.tokenizer.convert_ids_to_tokens(feats[0]["input_ids"])
    doc_tokens = [(t, o) for t, o in zip(tokens, offsets[0]) if o is not None]
    assert [_wordpiece(t) for t, _ in doc_tokens] == [doc.text[a:b] for _, (a, b) in doc_tokens]
    assert len(doc_tokens) == len(model.tokenizer(doc.text, add_special_tokens=False)["input_ids"])
    # the title's tokens and the query's are not mapped
    n_query = len(model.tokenizer(QUERY, add_special_tokens=False)["input_ids"])
    n_title = len(model.tokenizer(title, add_special_tokens=False)["input_ids"]) if title else 0
    assert sum(o is None for o in offsets[0]) == n_query + n_title + 3  # + [CLS] [SEP] [SEP]
    span = find_evidence_span(doc.text, TARGET_SENTENCE)
    labels = evidence_token_labels(offsets[0], span)
    tagged = [t for t, lab in zip(tokens, labels) if lab == 1]
    assert tagged == model.tokenizer.tokenize(TARGET_SENTENCE)


def test_offsets_under_truncation(tiny_bert_dir):
    model = _load(tiny_bert_dir, max_length=20)
    doc = OTHERS[1]
    feats, offsets, truncated = model.encode_pairs_with_offsets([QUERY], [doc])
    assert truncated == 1 and len(feats[0]["input_ids"]) == 20
    mapped = [o for o in offsets[0] if o is not None]
    assert mapped and mapped[-1][1] < len(doc.text)
    assert all(a < b <= len(doc.text) for a, b in mapped)
    scored = sentence_scores(offsets[0], [0.5] * len(offsets[0]), doc.text)
    assert 0 < len(scored) < len(sentence_spans(doc.text))  # sentences cut off by truncation are left out


def test_offsets_with_a_real_tokenizer(minilm_dir):
    model = _load(minilm_dir)
    doc = Doc("d", "Café au lait, s'il vous plaît. Ünïcode text: naïve résumé!", title="Menü")
    feats, offsets, _ = model.encode_pairs_with_offsets(["what is café au lait"], [doc])
    tokens = model.tokenizer.convert_ids_to_tokens(feats[0]["input_ids"])
    pairs = [(t, o) for t, o in zip(tokens, offsets[0]) if o is not None]
    assert pairs
    for tok, (a, b) in pairs:
        if tok != model.tokenizer.unk_token:
            assert _normalise(doc.text[a:b]) == _wordpiece(tok)


# --- the head at inference -------------------------------------------------------------------------------
def _hidden_states(model, query: str, doc: Doc):
    """Last hidden states of one pair (no batching), its doc-text offsets, computed independently."""
    tok = model.tokenizer
    enc = tok(
        [query],
        [doc.full_text],
        truncation="only_second",
        max_length=model.max_length,
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    start = len(doc.title) + 1 if doc.title else 0
    offsets = []
    for (a, b), seq in zip(enc["offset_mapping"][0].tolist(), enc.sequence_ids(0)):
        offsets.append((a - start, b - start) if seq == 1 and b > start else None)
    inputs = {k: v for k, v in enc.items() if k != "offset_mapping"}
    with torch.no_grad():
        hidden = model.model(**inputs, output_hidden_states=True).hidden_states[-1][0].double()
    return hidden, offsets


def _fit_head(model, query: str, doc: Doc, sentence: str, margin: float = 6.0) -> torch.nn.Linear:
    """A head whose logit is +margin on the tokens of ``sentence`` and -margin on the doc's other tokens."""
    hidden, offsets = _hidden_states(model, query, doc)
    a = doc.text.index(sentence)
    span = (a, a + len(sentence))
    rows = [i for i, o in enumerate(offsets) if o is not None]
    x = torch.cat([hidden[rows], torch.ones(len(rows), 1, dtype=torch.float64)], dim=1)
    y = torch.tensor(
        [margin if o[0] < span[1] and span[0] < o[1] else -margin for o in (offsets[i] for i in rows)]
    )
    sol = torch.linalg.lstsq(x, y.double().unsqueeze(1)).solution.squeeze(1)
    head = torch.nn.Linear(hidden.shape[1], 1)
    with torch.no_grad():
        head.weight.copy_(sol[:-1].float().unsqueeze(0))
        head.bias.copy_(sol[-1:].float())
    return head


def _own_evidence(model, query: str, doc: Doc, head: torch.nn.Linear, threshold: float) -> str | None:
    """The evidence by hand: unbatched forward, sigmoid of the head, mean per sentence, argmax, threshold."""
    hidden, offsets = _hidden_states(model, query, doc)
    with torch.no_grad():
        probs = torch.sigmoid(head(hidden.float())).squeeze(-1).tolist()
    best, best_p = None, -1.0
    for a, b in sentence_spans(doc.text):
        ps = [p for o, p in zip(offsets, probs) if o is not None and o[0] < b and a < o[1]]
        if ps and sum(ps) / len(ps) > best_p:
            best, best_p = doc.text[a:b], sum(ps) / len(ps)
    return best if best_p >= threshold else None


@pytest.mark.parametrize("fixture", ["tiny_bert_dir", "tiny_deberta_v2_dir"])
def test_head_picks_the_tagged_sentence(fixture, request, monkeypatch):
    model = _load(request.getfixturevalue(fixture), batch_size=2)
    head = _fit_head(model, QUERY, TARGET, TARGET_SENTENCE)
    # the construction really tags that sentence
    hidden, offsets = _hidden_states(model, QUERY, TARGET)
    with torch.no_grad():
        probs = torch.sigmoid(head(hidden.float())).squeeze(-1)
    tagged = [o for o, p in zip(offsets, probs.tolist()) if o is not None and p > 0.9]
    assert tagged and all(TARGET.text.index(TARGET_SENTENCE) <= a < b <= len(TARGET.text) for a, b in tagged)

    assert model.attach_evidence_head(head) is head and model.evidence_head_layer is head
    occluded = []
    monkeypatch.setattr(explain_module, "occlusion_evidence", lambda *a: occluded.append(a) or [])
    docs = [*OTHERS, TARGET]
    ranked = model.rerank(QUERY, docs, explain=len(docs))
    assert not occluded
    by_id = {sd.doc.id: sd for sd in ranked}
    assert by_id["t"].evidence == TARGET_SENTENCE
    for d in docs:
        assert by_id[d.id].evidence == _own_evidence(model, QUERY, d, head, 0.5)
        if by_id[d.id].evidence is not None:
            assert by_id[d.id].evidence in d.text
    # explain=k leaves the rest empty and scores do not change with the head
    assert model.rerank(QUERY, docs, explain=1)[1].evidence is None
    plain = _load(request.getfixturevalue(fixture))
    assert [sd.score for sd in plain.rerank(QUERY, docs)] == pytest.approx(
        [sd.score for sd in ranked], abs=1e-5
    )


def test_head_pass_is_one_engine_run_without_rescoring(tiny_bert_dir, monkeypatch):
    model = _load(tiny_bert_dir)
    model.attach_evidence_head(_fit_head(model, QUERY, TARGET, TARGET_SENTENCE))
    runs = []
    original = model.engine.run
    monkeypatch.setattr(model.engine, "run", lambda *a, **k: runs.append(k.get("desc")) or original(*a, **k))
    items = [(Query("q1", QUERY), [TARGET, *OTHERS]), (Query("q2", "why is water good"), OTHERS)]
    model.rerank_batch(items, explain=3)
    assert len(runs) == 2 and runs[1] == "evidence head"  # scoring, then one pass for all 6 top documents


def test_threshold_gives_none(tiny_bert_dir, tmp_path):
    model = _load(tiny_bert_dir)
    save_evidence_head(_fit_head(model, QUERY, TARGET, TARGET_SENTENCE), tmp_path / EVIDENCE_HEAD_FILE)
    # relative paths resolve against the model directory
    kept = _load(tiny_bert_dir, evidence_head=EVIDENCE_HEAD_FILE, model_dir=str(tmp_path))
    assert kept.rerank(QUERY, [TARGET], explain=1)[0].evidence == TARGET_SENTENCE
    strict = _load(tiny_bert_dir, evidence_head=tmp_path / EVIDENCE_HEAD_FILE, evidence_threshold=0.9999)
    assert strict.rerank(QUERY, [TARGET], explain=1)[0].evidence is None  # best mean ≈ sigmoid(6) < 0.9999
    with pytest.raises(ValueError, match="evidence_threshold"):
        _load(tiny_bert_dir, evidence_threshold=1.5)
    with pytest.raises(FileNotFoundError):
        _load(tiny_bert_dir, evidence_head=tmp_path / "missing.safetensors")


def test_save_load_restores_head_evidence_and_scores(tiny_bert_dir, tmp_path):
    model = _load(tiny_bert_dir, evidence_threshold=0.4)
    model.attach_evidence_head(_fit_head(model, QUERY, TARGET, TARGET_SENTENCE))
    docs = [TARGET, *OTHERS]
    before = model.rerank(QUERY, docs, explain=len(docs))
    out = model.save(tmp_path / "student")
    cfg = json.loads((out / "r2r_model.json").read_text())
    assert cfg["evidence_head"] == EVIDENCE_HEAD_FILE and cfg["evidence_threshold"] == 0.4
    state = load_file(str(out / EVIDENCE_HEAD_FILE))
    assert state["weight"].shape == (1, model.hidden_size) and state["bias"].shape == (1,)
    assert state["weight"].dtype == state["bias"].dtype == torch.float32
    again = reason2rank.load(out, **FP32)
    assert again.evidence_head_layer is not None and again.evidence_threshold == 0.4
    after = again.rerank(QUERY, docs, explain=len(docs))
    assert [sd.doc.id for sd in after] == [sd.doc.id for sd in before]
    assert [sd.score for sd in after] == pytest.approx([sd.score for sd in before], abs=1e-6)
    assert [sd.evidence for sd in after] == [sd.evidence for sd in before]
    assert any(sd.evidence == TARGET_SENTENCE for sd in after)


def test_without_head_occlusion_is_used_unchanged(tiny_bert_dir, tmp_path, monkeypatch):
    model = _load(tiny_bert_dir)
    assert model.evidence_head_layer is None
    docs = [TARGET, *OTHERS]
    calls = []

    def spy(reranker, tasks):
        calls.append(len(tasks))
        return occlusion_evidence(reranker, tasks)

    monkeypatch.setattr(explain_module, "occlusion_evidence", spy)
    ranked = model.rerank(QUERY, docs, explain=2)
    assert calls == [2]
    tasks = [(Query("0", QUERY), sd.doc, sd.score) for sd in ranked[:2]]
    assert [sd.evidence for sd in ranked[:2]] == occlusion_evidence(model, tasks)
    # a plain save writes no head and records none
    out = model.save(tmp_path / "plain")
    assert not (out / EVIDENCE_HEAD_FILE).exists()
    assert "evidence_head" not in json.loads((out / "r2r_model.json").read_text())


def test_explain_top_k_uses_the_hook():
    class Fixed(Reranker):
        def score_batch(self, items):
            return [np.arange(len(docs), dtype=float) for _, docs in items]

        def explain_evidence(self, tasks):
            return [f"{q.id}:{d.id}" for q, d, _ in tasks]

    ranked = Fixed().rerank_batch([("a", ["x", "y", "z"]), ("b", ["u"])], explain=2)
    assert [sd.evidence for sd in ranked[0]] == ["0:2", "0:1", None]
    assert [sd.evidence for sd in ranked[1]] == ["1:0"]

    class Broken(Fixed):
        def explain_evidence(self, tasks):
            return []

    with pytest.raises(RuntimeError, match="explain_evidence"):
        Broken().rerank("q", ["x"], explain=1)
