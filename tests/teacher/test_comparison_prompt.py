"""Item 6 of issue 19: the teacher's comparison prompt is neutral by default (which of A and B is more relevant,
and why); ``comparison_prompt="justify"`` tells it that A (its higher-graded document) was ranked above B. Either
way the stored ``preferred`` is the teacher's own answer, not the ranking's."""

from __future__ import annotations

import json

import pytest

from reason2rank.llm.backend import Backend, GenerationResult
from reason2rank.teacher import Teacher
from reason2rank.teacher.pairs import PairPolicy
from reason2rank.types import Doc, Query

QUERY = Query("q1", "how long is the life cycle of a flea")
DOCS = [  # first-stage order: the teacher's grades put d2 above d1
    Doc("d1", "Fleas are insects."),
    Doc("d2", "The flea life cycle lasts from two weeks to eight months."),
]
GRADES = {"d1": 1, "d2": 3}


class AnswersByPrompt(Backend):
    """Direct: the grade of the document shown; compare: always "B" (disagreeing with the grades)."""

    name = "by-prompt"

    def __init__(self):
        self.compare_prompts: list[str] = []

    def generate(self, messages, *, on_result=None, json_schema=None, max_new_tokens=1024, temperature=0.0):
        out = []
        for m in messages:
            user = next(x["content"] for x in m if x["role"] == "user")
            if "Document A" in user:
                self.compare_prompts.append(user)
                text = json.dumps(
                    {"reasoning": "Document B says more about the flea life cycle than A.", "preferred": "B"}
                )
            else:
                doc = next(d for d in DOCS if d.text in user)
                text = json.dumps(
                    {
                        "reasoning": "It says what it says about fleas.",
                        "evidence": doc.text,
                        "relevance": GRADES[doc.id],
                    }
                )
            out.append(GenerationResult(text=text, prompt_tokens=1, completion_tokens=1))
        return out


def _compare_record(teacher: Teacher) -> dict:
    teacher.annotate([(QUERY, DOCS)], tasks=("direct", "compare"))
    (rec,) = [r for r in teacher.store.records() if r["task"] == "compare"]
    return rec


def test_the_default_comparison_prompt_is_neutral_and_preferred_is_the_teachers_answer():
    backend = AnswersByPrompt()
    with Teacher(backend, pairs=PairPolicy(shuffle_ab=False)) as t:
        rec = _compare_record(t)
    (prompt,) = backend.compare_prompts
    assert "ranked above" not in prompt and "Decide which one is more relevant" in prompt
    assert rec["docids"] == ["d2", "d1"]  # A = the higher-graded document (no shuffling asked)
    assert rec["output"]["preferred"] == "B" and rec["output"]["preferred_doc"] == "d1"


def test_justify_tells_the_teacher_that_the_higher_graded_document_was_ranked_above():
    backend = AnswersByPrompt()
    with Teacher(backend, comparison_prompt="justify") as t:  # shuffle_ab is turned off for justify
        rec = _compare_record(t)
        neutral_key = Teacher(AnswersByPrompt()).key("compare", QUERY, ["d2", "d1"])
        assert t.key("compare", QUERY, ["d2", "d1"]) != neutral_key  # another prompt, another item
    (prompt,) = backend.compare_prompts
    assert "Document A was ranked above document B." in prompt
    a_text = prompt.split("Document A:\n")[1].split("\n")[0]
    assert a_text == DOCS[1].text and rec["docids"] == ["d2", "d1"]
    # the teacher disagreed with the order it was told: the record keeps its answer
    assert rec["output"]["preferred"] == "B" and rec["output"]["preferred_doc"] == "d1"


def test_comparison_prompt_errors_say_what_to_change(tmp_path):
    with pytest.raises(ValueError, match="comparison_prompt must be one of"):
        Teacher(AnswersByPrompt(), comparison_prompt="ranked")
    with pytest.raises(ValueError, match="swap=False"):
        Teacher(AnswersByPrompt(), comparison_prompt="justify", pairs=PairPolicy(swap=True))
    (tmp_path / "compare_mine.txt").write_text(
        "# task: compare\n=== user ===\n{{query}} {{document_a}} {{document_b}}\n", encoding="utf-8"
    )
    with pytest.raises(ValueError, match="give one or the other"):
        Teacher(AnswersByPrompt(), comparison_prompt="justify", prompts=tmp_path)
