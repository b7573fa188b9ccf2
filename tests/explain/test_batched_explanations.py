"""``explain=k`` batches the causal LM's generation across queries (issue 19, item 9), and the comparison prompt
at inference is neutral by default with the justification prompt as an option (item 6)."""

from __future__ import annotations

import json

import pytest

import reason2rank
from reason2rank import Doc, Query

FP32 = {"dtype": "fp32", "device": "cpu"}
QUERIES = [Query("q1", "capital of france"), Query("q2", "small cats"), Query("q3", "yellow fruit")]
DOCS = [
    [Doc("a", "paris is in france"), Doc("b", "cats are small"), Doc("c", "bananas"), Doc("d", "dogs")],
    [Doc("e", "kittens are tiny cats"), Doc("f", "lions are large"), Doc("g", "a house")],
    [Doc("h", "bananas are yellow and sweet"), Doc("i", "apples can be red"), Doc("j", "the sea")],
]


@pytest.fixture(scope="module")
def model(tiny_llama_dir):
    m = reason2rank.load(tiny_llama_dir, family="causal-lm", max_new_tokens=6, batch_size=4, **FP32)
    m.evidence = False
    return m


def test_explain_generates_once_for_all_queries_and_equals_query_by_query(model, monkeypatch):
    calls = []
    generate = model._generate

    def counting(part, queries, doc_groups, slots):
        calls.append(len(queries))
        return generate(part, queries, doc_groups, slots)

    monkeypatch.setattr(model, "_generate", counting)
    ranked = model.rerank_batch(list(zip(QUERIES, DOCS)), explain=2)
    assert calls == [6, 3]  # reasoning for 3 x top-2, then the 3 adjacent pairs: two generations in all
    calls.clear()
    for q, r in zip(QUERIES, ranked):  # greedy: the batched texts are the query-by-query texts
        top = [sd.doc for sd in r[:2]]
        assert [sd.reasoning for sd in r[:2]] == model.generate_reasoning(q, top)
        assert [r[0].comparison] == model.generate_comparisons(q, [(top[0], top[1])])
        assert all(isinstance(sd.reasoning, str) for sd in r[:2]) and r[1].comparison is None
    assert calls == [2, 1] * 3


def _prompt_text(model, part):
    features, _ = model.build_features(part, ["q"], [["DOC A", "DOC B"]], ("document_a", "document_b"))
    return model.tokenizer.decode(features[0]["input_ids"])


def test_the_comparison_prompt_is_neutral_unless_justify_is_asked(
    model, tiny_llama_dir, tmp_path, monkeypatch
):
    assert model.comparison_prompt == "neutral"
    neutral = _prompt_text(model, model.template.comparison)
    assert (
        "Which document is more relevant to the query, A or B?" in neutral and "ranked above" not in neutral
    )
    justify = reason2rank.load(
        tiny_llama_dir, family="causal-lm", comparison_prompt="justify", max_new_tokens=4, **FP32
    )
    seen = []
    monkeypatch.setattr(justify, "_generate", lambda part, *a: seen.append(part) or [None])
    q, (a, b) = QUERIES[0], DOCS[0][:2]
    justify.generate_comparisons(q, [(a, b)])
    assert seen == [justify.template.comparison_justify]
    assert "Document A was ranked above document B." in _prompt_text(justify, seen[0])
    assert (
        justify.r2r_config()["comparison_prompt"] == "justify"
        and "comparison_prompt" not in model.r2r_config()
    )


def test_comparison_prompt_errors_say_what_to_change(tiny_llama_dir, tmp_path):
    with pytest.raises(ValueError, match="comparison_prompt must be one of"):
        reason2rank.load(tiny_llama_dir, family="causal-lm", comparison_prompt="ranked", **FP32)
    bundle = json.loads(json.dumps(reason2rank.scorers.scoring_prompts.load_prompt_template("yes_no").source))
    del bundle["comparison_justify"]
    with pytest.raises(ValueError, match="no 'comparison_justify' part"):
        reason2rank.load(
            tiny_llama_dir, family="causal-lm", prompt_template=bundle, comparison_prompt="justify", **FP32
        )
