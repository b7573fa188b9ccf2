"""GRPO example builders: the label names the positive, draws are seeded and recorded, prompts match inference."""

from __future__ import annotations

import random

import pytest

from reason2rank.rl.examples import (
    binary_examples,
    listwise_examples,
    render_prompt,
    select_queries,
    setwise_examples,
)
from reason2rank.types import Doc, Query


def _items():
    q1 = Query(id="q1", text="what is a flea")
    docs1 = [Doc(id=f"d{i}", text=f"passage number {i} " + "word " * 50) for i in range(10)]
    q2 = Query(id="q2", text="no positive here")
    docs2 = [Doc(id=f"e{i}", text=f"text {i}") for i in range(10)]
    return [(q1, docs1), (q2, docs2)]


QRELS = {"q1": {"d3": 2, "d7": 1, "d5": 0, "d6": 1}, "q2": {"e1": 0}}


def test_setwise_label_names_the_positive_and_draws_are_recorded():
    out = setwise_examples(_items(), QRELS, window=4, examples_per_query=3, positive_grade=2, seed=7,
                           max_words=5)  # fmt: skip
    assert out.skipped == {"no positive among the candidates": 1}
    assert len(out.examples) == 3
    for i, ex in enumerate(out.examples):
        assert ex["qid"] == "q1" and ex["seed"] == 7 and ex["example"] == i
        assert ex["docids"][ex["label"] - 1] == "d3"  # the only grade >= 2
        # negatives: judged 0 or unjudged, never the grade-1 d7 / d6
        assert not {"d7", "d6"} & set(ex["docids"]) and len(set(ex["docids"])) == 4
        text = ex["messages"][-1]["content"]
        assert f"[{ex['label']}] passage number 3 word word" in text  # cut to 5 words, labelled [k]
        assert "passage number 3 word word word" not in text
    # the draw is random.Random(f"{seed}:{qid}:{i}"): recompute example 0 by hand
    rng = random.Random("7:q1:0")
    neg = [d for d in _items()[0][1] if d.id not in ("d3", "d7", "d6")]
    pos = ["d3"][rng.randrange(1)]
    shown = [d.id for d in rng.sample(neg, 3)] + [pos]
    rng.shuffle(shown)
    assert out.examples[0]["docids"] == shown
    again = setwise_examples(
        _items(), QRELS, window=4, examples_per_query=3, positive_grade=2, seed=7, max_words=5
    )
    assert again.examples == out.examples
    other = setwise_examples(
        _items(), QRELS, window=4, examples_per_query=3, positive_grade=2, seed=8, max_words=5
    )
    assert [e["docids"] for e in other.examples] != [e["docids"] for e in out.examples]


def test_setwise_needs_enough_negatives():
    out = setwise_examples(_items()[:1], QRELS, window=9, positive_grade=2)
    assert out.examples == [] and out.skipped == {"fewer than 8 negatives": 1}


def test_setwise_prompt_is_the_strategy_prompt(tiny_llama_dir):
    from transformers import AutoTokenizer

    from reason2rank.llm.transformers_backend import TransformersBackend

    ex = setwise_examples(_items(), QRELS, window=3, positive_grade=2, max_words=4).examples[0]
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    backend = TransformersBackend(tiny_llama_dir)
    assert render_prompt(tok, ex["messages"], ex["prefix"]) == backend.render(ex["messages"], ex["prefix"])


def test_binary_examples_are_balanced():
    out = binary_examples(_items(), QRELS, examples_per_query=2, positive_grade=2, seed=0)
    assert [e["label"] for e in out.examples] == [1, 0, 1, 0]
    assert {e["docid"] for e in out.examples if e["label"] == 1} == {"d3"}
    assert all(QRELS["q1"].get(e["docid"], 0) == 0 for e in out.examples if e["label"] == 0)
    assert out.examples[0]["messages"][-1]["content"].endswith("Relevance:")


def test_listwise_positives_are_the_ids_of_the_relevant_passages():
    out = listwise_examples(_items(), QRELS, window=5, examples_per_query=4, positive_grade=1, seed=3)
    assert len(out.examples) == 4
    for ex in out.examples:
        rel = sorted(i + 1 for i, d in enumerate(ex["docids"]) if QRELS["q1"].get(d, 0) >= 1)
        assert ex["positives"] == rel and 1 <= len(rel) <= 3 and ex["num_candidates"] == 5


def test_select_queries(tmp_path):
    items = _items()
    assert [q.id for q, _ in select_queries(items, ["q2"])] == ["q2"]
    f = tmp_path / "held.txt"
    f.write_text("q2\n")
    assert [q.id for q, _ in select_queries(items, exclude=str(f))] == ["q1"]
    with pytest.raises(ValueError, match="no candidates"):
        select_queries(items, ["q9"])
