"""Teacher schemas bounded by the answer budget: a listwise answer must rank the whole window, and the longest
answer a bounded schema admits, written in English, fits the token budget of a real tokenizer (SmolLM2's)."""

from __future__ import annotations

import json

import pytest

from real_models import smollm2_or_skip
from reason2rank.llm.backend import Backend, GenerationResult
from reason2rank.teacher.annotate import Teacher, _task_budgets
from reason2rank.teacher.parsing import (
    CHARS_PER_TOKEN,
    MIN_STRING_CHARS,
    evidence_in_text,
    listwise_schema,
    quotable_sentences,
    string_budget,
    task_schema,
)
from reason2rank.types import Doc, Query

jsonschema = pytest.importorskip("jsonschema")

PROSE = (
    "The passage explains how the query topic is defined, names the main causes and gives a short example, "
    "so it answers most of what the user asked although it leaves out the exact figures that were requested. "
) * 40


def _fill(schema: dict, chars: int) -> str:
    """The longest English value for a bounded string of ``schema`` (cut at a word boundary)."""
    import re

    limit = schema.get("maxLength", chars)
    text = PROSE[:limit].rsplit(" ", 1)[0]
    while "pattern" in schema and not re.search(schema["pattern"], text):  # its first word is under the bound
        text = text.rsplit(" ", 1)[0]
    return text


def _longest_answer(task: str, schema: dict, num: int) -> dict:
    props = schema["properties"]
    if task == "direct":
        return {
            "reasoning": _fill(props["reasoning"], 0),
            "evidence": _fill(props["evidence"], 0),
            "relevance": 3,
        }
    if task == "compare":
        return {"reasoning": _fill(props["reasoning"], 0), "preferred": "tie"}
    item = props["ranked_passages"]["items"]["properties"]
    return {
        "ranked_passages": [
            {
                "identifier": i,
                "direct_reason": _fill(item["direct_reason"], 0),
                "listwise_reason": _fill(item["listwise_reason"], 0),
                "direct_answer_sentence": _fill(item["direct_answer_sentence"], 0),
            }  # fmt: skip
            for i in range(num, 0, -1)
        ]
    }


def test_string_budget_by_hand():
    assert string_budget("direct", 256) == (256 - 24) * CHARS_PER_TOKEN // 2 == 348
    assert string_budget("compare", 256) == (256 - 16) * CHARS_PER_TOKEN == 720
    assert string_budget("listwise", 768, num=5) == (768 - 10 - 28 * 5) * CHARS_PER_TOKEN // 15 == 123
    assert string_budget("listwise", 256, num=5) == MIN_STRING_CHARS  # too small a budget: the floor
    with pytest.raises(ValueError, match="unknown teacher task 'setwise'"):
        string_budget("setwise", 256)


def test_a_listwise_answer_must_rank_every_passage_of_the_window():
    schema = listwise_schema(4)
    entry = {"direct_reason": "it defines the term", "listwise_reason": "best of the four",
             "direct_answer_sentence": None}  # fmt: skip
    whole = {"ranked_passages": [{"identifier": i, **entry} for i in (2, 1, 4, 3)]}
    jsonschema.validate(whole, schema)
    for short in ([], whole["ranked_passages"][:3]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"ranked_passages": short}, schema)
    bounded = task_schema("listwise", num=4, max_new_tokens=768)
    assert bounded["properties"]["ranked_passages"]["items"]["properties"]["direct_reason"]["maxLength"] == (
        string_budget("listwise", 768, num=4)
    )
    too_long = json.loads(json.dumps(whole))
    too_long["ranked_passages"][0]["listwise_reason"] = "x" * 1000
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(too_long, bounded)


def test_unbounded_without_a_budget_and_enums_never_bounded():
    assert "maxLength" not in task_schema("direct")["properties"]["reasoning"]
    compare = task_schema("compare", max_new_tokens=128)["properties"]
    assert "maxLength" not in compare["preferred"] and compare["reasoning"]["maxLength"] == (128 - 16) * 3


@pytest.mark.parametrize(
    "task,budget,num", [("direct", 256, 1), ("compare", 256, 1), ("listwise", 768, 5), ("listwise", 1024, 10)]
)
def test_the_longest_admitted_english_answer_fits_the_budget_of_a_real_tokenizer(task, budget, num):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_or_skip())
    schema = task_schema(task, num=num, max_new_tokens=budget)
    answer = _longest_answer(task, schema, num)
    jsonschema.validate(answer, schema)
    text = json.dumps(answer, separators=(",", ":"))  # the constrained form: no optional whitespace
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    assert budget * 0.5 < n <= budget, (task, n, budget)


class RecordsSettings(Backend):
    """Answers nothing usable; records the budget and the schema of every request."""

    name = "records-settings"

    def __init__(self):
        self.seen: list[tuple[int, dict]] = []

    def generate(self, messages, *, on_result=None, json_schema=None, max_new_tokens=1024, temperature=0.0):
        schemas = json_schema if isinstance(json_schema, list) else [json_schema] * len(messages)
        self.seen += [(max_new_tokens, s) for s in schemas]
        return [GenerationResult(text="no idea", prompt_tokens=1, completion_tokens=1) for _ in messages]


def test_the_teacher_asks_each_task_with_its_budget_and_a_schema_bounded_by_it():
    docs = [Doc(f"d{i}", f"fleas live {i} weeks in warm homes") for i in range(3)]
    backend = RecordsSettings()
    with Teacher(backend, max_new_tokens={"default": 200, "listwise": 700}, window=3, max_tries=1) as t:
        t.annotate([(Query("q", "flea life"), docs)], tasks=("direct", "compare", "listwise"))
    by_kind = {}
    for budget, schema in backend.seen:
        kind = "listwise" if "ranked_passages" in schema["properties"] else (
            "compare" if "preferred" in schema["properties"] else "direct")  # fmt: skip
        by_kind.setdefault(kind, set()).add(budget)
        if kind == "listwise":
            arr = schema["properties"]["ranked_passages"]
            assert arr["minItems"] == arr["maxItems"] == 3
            assert [e["properties"]["identifier"]["enum"] for e in arr["items"]["anyOf"]] == [[1], [2], [3]]
            entry = arr["items"]["anyOf"][0]["properties"]
            assert entry["direct_reason"]["maxLength"] == string_budget("listwise", 700, 3)
        else:
            assert schema["properties"]["reasoning"]["maxLength"] == string_budget(kind, 200)
    assert by_kind == {"direct": {200}, "compare": {200}, "listwise": {700}}


class CutByTheBudget(RecordsSettings):
    """Every answer is a constrained one cut by the token budget (finish_reason "length")."""

    name = "cut-by-the-budget"

    def generate(self, messages, *, on_result=None, json_schema=None, max_new_tokens=1024, temperature=0.0):
        super().generate(messages, json_schema=json_schema, max_new_tokens=max_new_tokens)
        return [GenerationResult(text='{"reasoning": "The passage', finish_reason="length", constrained=True)
                for _ in messages]  # fmt: skip


def test_a_retry_after_a_constrained_answer_ran_out_of_tokens_bounds_its_strings_tighter():
    from reason2rank.teacher.annotate import TIGHTER_CHANGE, TIGHTER_CHARS_PER_TOKEN

    backend = CutByTheBudget()
    docs = [Doc(f"d{i}", f"fleas live {i} weeks in warm homes") for i in range(3)]
    with Teacher(backend, max_new_tokens={"default": 200, "listwise": 700}, window=3, max_tries=3) as t:
        t.annotate([(Query("q", "flea life"), docs)], tasks=("direct", "listwise"))
        records = {r["task"]: r for r in t.store.records()}
    direct = [
        s["properties"]["reasoning"]["maxLength"] for _, s in backend.seen if "relevance" in s["properties"]
    ]
    listwise = [s["properties"]["ranked_passages"]["items"]["anyOf"][0]["properties"]["direct_reason"]["maxLength"]
                for _, s in backend.seen if "ranked_passages" in s["properties"]]  # fmt: skip
    loose, tight = string_budget("direct", 200), string_budget("direct", 200, 1, TIGHTER_CHARS_PER_TOKEN)
    assert tight < loose and direct == [loose] * 3 + [tight] * 6  # 3 documents: tightened once, then kept
    assert listwise == [string_budget("listwise", 700, 3), *[string_budget("listwise", 700, 3, 1.5)] * 2]
    for r in records.values():
        assert r["status"] == "failed" and r["decoding"] == "constrained"
        assert all(a["truncated"] for a in r["attempts"])
        assert (
            TIGHTER_CHANGE in r["attempts"][1]["change"] and TIGHTER_CHANGE not in r["attempts"][2]["change"]
        )
    with pytest.raises(ValueError, match="chars_per_token must be > 0"):
        string_budget("direct", 200, 1, 0)


def test_the_teacher_takes_a_budget_per_task_and_names_a_bad_one():
    assert _task_budgets(256) == {"direct": 256, "compare": 256, "listwise": 256}
    assert _task_budgets({"default": 200, "listwise": 700}) == {
        "direct": 200,
        "compare": 200,
        "listwise": 700,
    }
    assert _task_budgets({"compare": 64})["direct"] == 1024
    with pytest.raises(ValueError, match="unknown tasks \\['setwise'\\]"):
        _task_budgets({"setwise": 10})
    with pytest.raises(ValueError, match="'listwise' must be a positive int, got 0"):
        _task_budgets({"listwise": 0})


def test_the_cli_budget_is_one_number_or_per_task():
    import argparse

    from reason2rank.cli.teach import _token_budget

    assert _token_budget("256") == 256
    assert _token_budget("256,listwise=768") == {"default": 256, "listwise": 768}
    assert _token_budget("direct=100, compare=50") == {"direct": 100, "compare": 50}
    with pytest.raises(argparse.ArgumentTypeError, match="not a token budget"):
        _token_budget("lots")


DOC = (
    "The flea life cycle lasts from two weeks to eight months. Eggs hatch in two to twelve days!\n"
    "Larvae feed on debris. Fine.  The flea life cycle lasts from two weeks to eight months."
)


def test_quotable_sentences_split_dedupe_cut_and_drop_fragments():
    assert quotable_sentences(DOC) == [
        "The flea life cycle lasts from two weeks to eight months.",
        "Eggs hatch in two to twelve days!",
        "Larvae feed on debris.",
    ]  # "Fine." is too short to be evidence; the repeat is offered once
    assert quotable_sentences(DOC, max_chars=30) == [
        "The flea life cycle lasts",
        "Eggs hatch in two to twelve",
        "Larvae feed on debris.",
    ]
    assert all(evidence_in_text(s, DOC) for s in quotable_sentences(DOC, max_chars=30))
    assert quotable_sentences("") == [] and quotable_sentences("  ok  ") == []


def test_evidence_is_one_of_the_shown_sentences_or_null():
    schema = task_schema("direct", max_new_tokens=256, shown=[DOC])
    assert schema["properties"]["evidence"] == {"enum": [*quotable_sentences(DOC, 348), None]}
    ok = {"reasoning": "It gives the length of the cycle.", "relevance": 3}
    jsonschema.validate({**ok, "evidence": "Eggs hatch in two to twelve days!"}, schema)
    jsonschema.validate({**ok, "evidence": None}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**ok, "evidence": "Fleas are mammals that live forever."}, schema)


def test_listwise_answer_sentences_come_from_the_entrys_own_passage():
    other = "Flea markets open every Sunday in the square. Bring cash."
    schema = task_schema("listwise", num=2, max_new_tokens=512, shown=[DOC, other])
    base = {"direct_reason": "says how long it lasts", "listwise_reason": "more on topic than two"}
    good = {"ranked_passages": [{"identifier": 1, **base, "direct_answer_sentence": "Larvae feed on debris."},
                                {"identifier": 2, **base, "direct_answer_sentence": None}]}  # fmt: skip
    jsonschema.validate(good, schema)
    swapped = json.loads(json.dumps(good))
    swapped["ranked_passages"][1]["direct_answer_sentence"] = "Larvae feed on debris."  # passage 1's sentence
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(swapped, schema)
    with pytest.raises(ValueError, match="sentences for 1 passages, but the window holds 2"):
        listwise_schema(2, 100, [["a b c"]])


def test_the_teacher_quotes_by_default_and_free_evidence_is_an_option():
    docs = [Doc("d1", DOC)]
    for quote, want in (
        (True, {"enum": [*quotable_sentences(DOC, string_budget("direct", 200)), None]}),
        (False, None),
    ):
        backend = RecordsSettings()
        with Teacher(backend, max_new_tokens=200, max_tries=1, quote_evidence=quote) as t:
            t.annotate([(Query("q", "flea life"), docs)], tasks=("direct",))
        ((_, schema),) = backend.seen
        ev = schema["properties"]["evidence"]
        assert (
            ev == want
            if quote
            else ev == {"type": ["string", "null"], "maxLength": string_budget("direct", 200)}
        )
