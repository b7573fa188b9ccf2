"""Scorer families against plain transformers forwards, batching invariance, truncation, LoRA, save/load."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import reason2rank
from reason2rank import Doc, Query
from reason2rank.scorers.causal_lm import CausalLMReranker

QUERY = "what is the capital of france"
DOCS = [
    "paris is the capital of france. it is a large city.",
    "the cat sat on the mat.",
    "bananas are yellow. they grow in warm places. people eat them.",
    "france is a country in europe and its capital city is paris",
    "",
    "a long document about many things " * 12,
]
FP32 = {"dtype": "fp32", "progress": False}


def _items():
    return [
        (Query("q1", QUERY), [Doc(f"d{i}", t) for i, t in enumerate(DOCS)]),
        (Query("q2", "why do cats sit on mats"), [Doc(f"e{i}", t) for i, t in enumerate(reversed(DOCS))]),
    ]


def _scores(model, items):
    return {
        (q.id, sd.doc.id): sd.score
        for (q, _), ranked in zip(items, model.rerank_batch(items))
        for sd in ranked
    }


# --- cross-encoder ---------------------------------------------------------------------------------------
def test_cross_encoder_equals_plain_forward(tiny_bert_dir):
    model = reason2rank.load(tiny_bert_dir, family="cross-encoder", max_length=64, **FP32)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    ref = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, dtype=torch.float32).eval()
    ranked = model.rerank(QUERY, DOCS)
    got = {int(sd.doc.id): sd.score for sd in ranked}
    for i, d in enumerate(DOCS):
        # list form: a single-pair call would treat the empty document as "no pair"
        enc = tok([QUERY], [d], truncation="only_second", max_length=64, return_tensors="pt")
        with torch.no_grad():
            want = ref(**enc).logits[0, 0].item()
        assert got[i] == pytest.approx(want, abs=1e-5)


def test_deberta_cross_encoder_equals_plain_forward(tiny_deberta_v2_dir):
    model = reason2rank.load(tiny_deberta_v2_dir, family="cross-encoder", **FP32)
    tok = AutoTokenizer.from_pretrained(tiny_deberta_v2_dir)
    ref = AutoModelForSequenceClassification.from_pretrained(tiny_deberta_v2_dir, dtype=torch.float32).eval()
    got = {int(sd.doc.id): sd.score for sd in model.rerank(QUERY, DOCS[:3])}
    for i, d in enumerate(DOCS[:3]):
        with torch.no_grad():
            want = ref(**tok(QUERY, d, return_tensors="pt")).logits[0, 0].item()
        assert got[i] == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("family_dir", ["tiny_bert_dir", "tiny_bert_encoder_dir", "tiny_llama_dir"])
def test_batch_size_and_order_do_not_change_scores(family_dir, request):
    path = request.getfixturevalue(family_dir)
    family = {"tiny_bert_dir": "cross-encoder", "tiny_bert_encoder_dir": "bi-encoder"}.get(
        family_dir, "causal-lm"
    )
    base = _scores(reason2rank.load(path, family=family, batch_size=32, **FP32), _items())
    small = _scores(reason2rank.load(path, family=family, batch_size=1, **FP32), _items())
    shuffled_items = [(q, list(reversed(docs))) for q, docs in reversed(_items())]
    shuffled = _scores(reason2rank.load(path, family=family, batch_size=3, **FP32), shuffled_items)
    for key, value in base.items():
        assert small[key] == pytest.approx(value, abs=1e-5)
        assert shuffled[key] == pytest.approx(value, abs=1e-5)


def test_ranks_sorted_zero_based_and_ties_keep_input_order(tiny_bert_dir):
    model = reason2rank.load(tiny_bert_dir, family="cross-encoder", **FP32)
    docs = [Doc("a", "same text"), Doc("b", "paris is the capital of france"), Doc("c", "same text")]
    ranked = model.rerank(QUERY, docs)
    assert [sd.rank for sd in ranked] == [0, 1, 2]
    assert all(ranked[i].score >= ranked[i + 1].score for i in range(2))
    same = [sd.doc.id for sd in ranked if sd.doc.id in ("a", "c")]
    assert same == ["a", "c"]  # equal scores: input order kept
    assert model.rerank(QUERY, docs) == ranked  # deterministic


def test_cross_encoder_truncation_cuts_only_the_document_and_warns_once(tiny_bert_dir):
    model = reason2rank.load(tiny_bert_dir, family="cross-encoder", max_length=16, **FP32)
    feats, truncated = model.encode_pairs([QUERY, QUERY], [DOCS[5], "short"])
    assert truncated == 1
    ids = feats[0]["input_ids"]
    tok = model.tokenizer
    q_ids = tok(QUERY, add_special_tokens=False)["input_ids"]
    assert len(ids) == 16 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert ids[1 : 1 + len(q_ids)] == q_ids  # the query is whole
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.rerank(QUERY, [DOCS[5], DOCS[5] + " x", "short"])
    messages = [str(w.message) for w in caught if "truncated" in str(w.message)]
    assert len(messages) == 1 and messages[0].startswith("2 of 3")


def test_two_label_cross_encoder_scores_logit_difference(tmp_path):
    from tiny_models import make_tiny_bert

    path = make_tiny_bert(tmp_path / "two", num_labels=2)
    model = reason2rank.load(path, family="cross-encoder", **FP32)
    ref = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    with torch.no_grad():
        logits = ref(**tok(QUERY, DOCS[0], return_tensors="pt")).logits[0]
    assert model.rerank(QUERY, [DOCS[0]])[0].score == pytest.approx((logits[1] - logits[0]).item(), abs=1e-5)


def test_cross_encoder_lora_merged_equals_unmerged(tiny_bert_dir, tiny_bert_lora_dir):
    plain = _scores(reason2rank.load(tiny_bert_dir, family="cross-encoder", **FP32), _items())
    unmerged = _scores(
        reason2rank.load(tiny_bert_dir, family="cross-encoder", adapter=tiny_bert_lora_dir, **FP32), _items()
    )
    merged = _scores(
        reason2rank.load(
            tiny_bert_dir, family="cross-encoder", adapter=tiny_bert_lora_dir, merge_adapter=True, **FP32
        ),
        _items(),
    )
    assert any(abs(unmerged[k] - plain[k]) > 1e-3 for k in plain)  # the adapter does something
    for k in plain:
        assert merged[k] == pytest.approx(unmerged[k], abs=1e-4)


# --- bi-encoder --------------------------------------------------------------------------------------------
def test_bi_encoder_equals_mean_pooled_cosine(tiny_bert_encoder_dir):
    model = reason2rank.load(tiny_bert_encoder_dir, family="bi-encoder", **FP32)
    assert (model.pooling, model.similarity) == (
        "mean",
        "cosine",
    )  # read from the sentence-transformers files
    tok = AutoTokenizer.from_pretrained(tiny_bert_encoder_dir)
    ref = AutoModel.from_pretrained(tiny_bert_encoder_dir, dtype=torch.float32).eval()

    def embed(text):
        enc = tok(text, return_tensors="pt", truncation=True, max_length=model.max_length)
        with torch.no_grad():
            h = ref(**enc).last_hidden_state[0]
        return torch.nn.functional.normalize(h.mean(0), dim=-1)

    q = embed(QUERY)
    got = {int(sd.doc.id): sd.score for sd in model.rerank(QUERY, DOCS[:4])}
    for i, d in enumerate(DOCS[:4]):
        assert got[i] == pytest.approx(float(q @ embed(d)), abs=1e-5)


def test_real_minilm_matches_sentence_transformers(minilm_dir):
    st = pytest.importorskip("sentence_transformers")
    model = reason2rank.load(minilm_dir, family="bi-encoder", **FP32)
    enc = st.SentenceTransformer(minilm_dir, device="cpu")
    texts = [
        "Paris is the capital and most populous city of France.",
        "The mitochondrion is the powerhouse of the cell.",
        "France's capital hosts the Eiffel Tower.",
        "Bananas are berries, botanically speaking.",
    ]
    emb = enc.encode(
        ["What is the capital of France?", *texts], normalize_embeddings=True, convert_to_numpy=True
    )
    want = emb[1:] @ emb[0]
    ranked = model.rerank("What is the capital of France?", texts)
    got = np.array([next(sd.score for sd in ranked if sd.doc.id == str(i)) for i in range(4)])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert [sd.doc.id for sd in ranked[:2]] == ["0", "2"]


# --- causal LM ---------------------------------------------------------------------------------------------
def _plain_causal_score(path, model: CausalLMReranker, doc: str) -> float:
    ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    feats, _ = model.encode_pairs([QUERY], [doc])
    with torch.no_grad():
        logits = ref(torch.tensor([feats[0]["input_ids"]])).logits[0, -1]
    return (logits[model.positive_id] - logits[model.negative_id]).item()


@pytest.mark.parametrize("arch_dir", ["tiny_llama_dir", "tiny_qwen2_dir"])
def test_causal_lm_token_readout_equals_plain_forward(arch_dir, request):
    path = request.getfixturevalue(arch_dir)
    model = reason2rank.load(path, family="causal-lm", **FP32)
    tok = AutoTokenizer.from_pretrained(path)
    feats, _ = model.encode_pairs([QUERY], [DOCS[0]])
    rendered = tok.decode(feats[0]["input_ids"])
    # the prompt is the chat template with the query and the document in place, ending in the generation prompt
    bundle = model.template.source  # the yes_no prompt as the JSON file writes it
    user = bundle["user"].replace("{{query}}", QUERY).replace("{{document}}", DOCS[0])
    messages = [{"role": "system", "content": bundle["system"]}, {"role": "user", "content": user}]
    assert rendered == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    got = {int(sd.doc.id): sd.score for sd in model.rerank(QUERY, DOCS[:3])}
    for i in range(3):
        assert got[i] == pytest.approx(_plain_causal_score(path, model, DOCS[i]), abs=1e-5)


def test_causal_lm_truncation_keeps_instruction_and_template_ending(tiny_llama_dir):
    model = reason2rank.load(tiny_llama_dir, family="causal-lm", max_length=140, **FP32)
    full, _ = model.encode_pairs([QUERY], ["short"])
    feats, truncated = model.encode_pairs([QUERY], [DOCS[5] * 3])
    assert truncated == 1
    ids = feats[0]["input_ids"]
    assert len(ids) == 140
    segments = model._segments(model.template.score, QUERY, ("document",))
    prefix, suffix = segments[0], segments[-1]
    assert ids[: len(prefix)] == prefix and ids[-len(suffix) :] == suffix
    assert full[0]["input_ids"][-len(suffix) :] == suffix
    # the truncated prompt still scores exactly like a plain forward of the same ids
    score = model.rerank(QUERY, [DOCS[5] * 3])[0].score
    assert score == pytest.approx(_plain_causal_score(tiny_llama_dir, model, DOCS[5] * 3), abs=1e-5)


def test_causal_lm_over_an_already_loaded_model_is_not_read_again(tiny_llama_dir, monkeypatch):
    """``loaded=``: the model in memory is used as it is (the same object, not a copy) and scores like a load."""
    expected = _scores(CausalLMReranker(tiny_llama_dir, **FP32), _items())
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)

    def refuse(*args, **kwargs):
        raise AssertionError("read again")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    scorer = CausalLMReranker(tiny_llama_dir, loaded=model, **FP32)
    assert scorer.model is model
    assert _scores(scorer, _items()) == pytest.approx(expected, abs=1e-6)


def test_causal_lm_lora_merged_equals_unmerged(tiny_llama_dir, tiny_llama_lora_dir):
    kw = {"family": "causal-lm", "adapter": tiny_llama_lora_dir, **FP32}
    plain = _scores(reason2rank.load(tiny_llama_dir, family="causal-lm", **FP32), _items())
    unmerged = _scores(reason2rank.load(tiny_llama_dir, **kw), _items())
    merged = _scores(reason2rank.load(tiny_llama_dir, merge_adapter=True, **kw), _items())
    assert any(abs(unmerged[k] - plain[k]) > 1e-4 for k in plain)
    for k in plain:
        assert merged[k] == pytest.approx(unmerged[k], abs=1e-4)


def test_causal_lm_rank_head_readout(tiny_llama_dir, tmp_path):
    from safetensors.torch import save_file

    hidden = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).config.hidden_size
    g = torch.Generator().manual_seed(0)
    head = {"weight": torch.randn(1, hidden, generator=g), "bias": torch.tensor([0.25])}
    save_file(head, str(tmp_path / "head.safetensors"))
    model = reason2rank.load(
        tiny_llama_dir,
        family="causal-lm",
        prompt_template="r2r_student",
        rank_head=str(tmp_path / "head.safetensors"),
        **FP32,
    )
    ref = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    feats, _ = model.encode_pairs([QUERY], [DOCS[0]])
    with torch.no_grad():
        h = ref(torch.tensor([feats[0]["input_ids"]]), output_hidden_states=True).hidden_states[-1][0, -1]
    want = float(h @ head["weight"][0] + head["bias"][0])
    assert model.rerank(QUERY, [DOCS[0]])[0].score == pytest.approx(want, abs=1e-5)
    # save -> load keeps the head
    out = model.save(tmp_path / "student")
    again = reason2rank.load(out, **FP32)
    assert again.rerank(QUERY, [DOCS[0]])[0].score == pytest.approx(want, abs=1e-5)


def test_causal_lm_rejects_multi_token_readout_words(tiny_llama_dir):
    with pytest.raises(ValueError, match="single token"):
        reason2rank.load(
            tiny_llama_dir,
            family="causal-lm",
            readout={"type": "tokens", "positive": "absolutely relevant", "negative": "no"},
        )


# --- save / load ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "fixture,family,extra",
    [
        ("tiny_bert_dir", "cross-encoder", {}),
        ("tiny_bert_encoder_dir", "bi-encoder", {"pooling": "cls", "similarity": "dot"}),
        ("tiny_llama_dir", "causal-lm", {"prompt_template": "binary_relevance"}),
    ],
)
def test_save_load_same_scores(fixture, family, extra, request, tmp_path):
    model = reason2rank.load(request.getfixturevalue(fixture), family=family, **extra, **FP32)
    before = _scores(model, _items())
    out = model.save(tmp_path / "saved")
    assert (out / "r2r_model.json").is_file()
    again = reason2rank.load(out, **FP32)
    assert type(again) is type(model)
    after = _scores(again, _items())
    for k in before:
        assert after[k] == pytest.approx(before[k], abs=1e-6)


def test_save_unmerged_adapter_keeps_adapter_separate(tiny_llama_dir, tiny_llama_lora_dir, tmp_path):
    model = reason2rank.load(tiny_llama_dir, family="causal-lm", adapter=tiny_llama_lora_dir, **FP32)
    before = _scores(model, _items())
    out = model.save(tmp_path / "with_adapter")
    assert (out / "adapter" / "adapter_config.json").is_file()
    again = reason2rank.load(out, **FP32)
    after = _scores(again, _items())
    for k in before:
        assert after[k] == pytest.approx(before[k], abs=1e-5)


def test_a_prompt_bundle_written_before_version_2_still_opens(tiny_llama_dir, tmp_path):
    legacy = {"name": "old", "version": 1, "system": "S", "user": "Q: {query}\nD: {document}",
              "readout": {"type": "tokens", "positive": "yes", "negative": "no"},
              "reasoning": {"user": "why {query} / {document}"}}  # fmt: skip
    old = reason2rank.load(tiny_llama_dir, family="causal-lm", prompt_template=legacy, **FP32)
    new = reason2rank.load(
        tiny_llama_dir, family="causal-lm", **FP32,
        prompt_template={**legacy, "user": "Q: {{query}}\nD: {{document}}", "reasoning": {"user": "why {{query}} / {{document}}"}},
    )  # fmt: skip
    assert old.encode_pairs([QUERY], [DOCS[0]]) == new.encode_pairs([QUERY], [DOCS[0]])
    out = old.save(tmp_path / "m")
    saved = json.loads((out / "prompt_template.json").read_text())
    assert saved["version"] == 2 and saved["user"] == "Q: {{query}}\nD: {{document}}"
