"""Parsing teacher answers: named repairs of common breakage, strict schemas, evidence matching."""

from __future__ import annotations

import pytest
from teacher_replay import RECORDED

from reason2rank.teacher.parsing import (
    ParseError,
    evidence_in_text,
    extract_json,
    validate_compare,
    validate_direct,
    validate_listwise,
)

GOOD = {"reasoning": "on topic", "evidence": None, "relevance": 2}


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ('{"reasoning": "on topic", "evidence": null, "relevance": 2}', []),
        ('```json\n{"reasoning": "on topic", "evidence": null, "relevance": 2}\n```', ["code_fence"]),
        ('```\n{"reasoning": "on topic", "evidence": null, "relevance": 2}\n```', ["code_fence"]),
        (
            'Here you go:\n{"reasoning": "on topic", "evidence": null, "relevance": 2}\nHope it helps!',
            ["surrounding_text"],
        ),
        ('{"reasoning": "on topic", "evidence": null, "relevance": 2,}', ["trailing_comma"]),
        ("{'reasoning': 'on topic', 'evidence': None, 'relevance': 2}", ["python_literal"]),
        (
            '<think>the {doc} is fine</think>\n{"reasoning": "on topic", "evidence": null, "relevance": 2}',
            ["think_removed"],
        ),
        (
            'Sure:\n```json\n{"reasoning": "on topic",\n "evidence": null,\n "relevance": 2,\n}\n```',
            ["code_fence", "trailing_comma"],
        ),
    ],
)
def test_repairs_are_named(text, flags):
    obj, repairs = extract_json(text)
    assert obj == GOOD
    assert repairs == flags


def test_braces_and_commas_inside_strings_are_left_alone():
    text = 'Answer: {"reasoning": "uses {braces}, and ,} inside", "evidence": "a, b,]", "relevance": 1} done'
    obj, flags = extract_json(text)
    assert obj["reasoning"] == "uses {braces}, and ,} inside" and obj["evidence"] == "a, b,]"
    assert flags == ["surrounding_text"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the answer is empty"),
        (None, "the answer is empty"),
        (RECORDED["refusal_prose"], "no JSON object found in the answer"),
        (RECORDED["malformed"], "the JSON object is not closed"),
        ('{"reasoning": "on topic" "relevance": 2}', "invalid JSON: Expecting ',' delimiter"),
    ],
)
def test_unrecoverable_answers_raise(text, message):
    with pytest.raises(ParseError, match=message):
        extract_json(text)


def test_validate_direct_is_strict():
    assert validate_direct(GOOD) == ({"relevance": 2, "reasoning": "on topic", "evidence": None}, [])
    out, flags = validate_direct(
        {"reasoning": " on topic ", "evidence": "", "relevance": "3", "confidence": 0.9}
    )
    assert out == {"relevance": 3, "reasoning": "on topic", "evidence": None}
    assert flags == ["relevance_from_string", "extra_keys:confidence"]
    assert validate_direct({"reasoning": "on topic", "relevance": 0.0})[1] == ["evidence_missing"]
    for bad, msg in [
        ({"reasoning": "on topic", "evidence": None}, "missing field 'relevance'"),
        (
            {"reasoning": "on topic", "evidence": None, "relevance": 4},
            "must be an integer 0, 1, 2 or 3, got 4",
        ),
        ({"reasoning": "on topic", "evidence": None, "relevance": 2.5}, "got 2.5"),
        ({"reasoning": "on topic", "evidence": None, "relevance": True}, "got true"),
        ({"reasoning": "on topic", "evidence": None, "relevance": "high"}, 'got "high"'),
        ({"reasoning": "", "evidence": None, "relevance": 1}, "field 'reasoning' is empty"),
        ({"evidence": None, "relevance": 1}, "missing field 'reasoning'"),
        ({"reasoning": "on topic", "evidence": 3, "relevance": 1}, "'evidence' must be a string or null"),
        ([1, 2], "expected a JSON object"),
    ]:
        with pytest.raises(ParseError, match=msg.replace("(", r"\(")):
            validate_direct(bad)


def test_validate_compare():
    assert validate_compare({"reasoning": "on topic", "preferred": "B"}) == (
        {"preferred": "B", "reasoning": "on topic"},
        [],
    )
    assert validate_compare({"reasoning": "on topic", "preferred": "Document A"}) == (
        {"preferred": "A", "reasoning": "on topic"},
        ["preferred_normalised"],
    )
    assert validate_compare({"reasoning": "on topic", "preferred": "TIE"})[0]["preferred"] == "tie"
    with pytest.raises(ParseError, match='must be "A", "B" or "tie", got "both"'):
        validate_compare({"reasoning": "on topic", "preferred": "both"})
    with pytest.raises(ParseError, match="missing field 'preferred'"):
        validate_compare({"reasoning": "on topic"})


def _entry(i, sentence="s"):
    return {
        "identifier": i,
        "direct_reason": "d reason",
        "listwise_reason": "l reason",
        "direct_answer_sentence": sentence,
    }


def test_validate_listwise_needs_a_full_permutation():
    out, flags = validate_listwise({"ranked_passages": [_entry(2), _entry("[1]", None), _entry(3)]}, 3)
    assert [p["identifier"] for p in out["ranked_passages"]] == [2, 1, 3]
    assert out["ranked_passages"][1]["direct_answer_sentence"] is None
    assert flags == ["identifier_from_string"]
    with pytest.raises(ParseError, match=r"passages \[3\] are missing"):
        validate_listwise({"ranked_passages": [_entry(2), _entry(1)]}, 3)
    with pytest.raises(ParseError, match=r"passage \[2\] is ranked twice"):
        validate_listwise({"ranked_passages": [_entry(2), _entry(2), _entry(1)]}, 3)
    with pytest.raises(ParseError, match=r"identifier must be an integer 1..3, got 4"):
        validate_listwise({"ranked_passages": [_entry(4)]}, 3)
    with pytest.raises(ParseError, match=r"ranked_passages\[0\]: field 'listwise_reason' is empty"):
        validate_listwise({"ranked_passages": [{**_entry(1), "listwise_reason": " "}]}, 1)


DOC = "The flea\u2019s life cycle  can last from two weeks to eight months. Eggs hatch in 2\u201312 days."


@pytest.mark.parametrize(
    ("evidence", "found"),
    [
        ("The flea's life cycle can last from two weeks to eight months.", True),  # curly vs straight quote
        ("the FLEA'S life cycle can last from two weeks to eight months", True),  # case, no final period
        ('"Eggs hatch in 2-12 days."', True),  # surrounding quotes, dash folding
        ("The flea's life cycle ... eight months.", True),  # ellipsis: fragments in order
        ("eight months ... The flea's life cycle", False),  # fragments out of order
        ("The flea's life cycle can last from two weeks to nine months.", False),
        ("Fleas complete their life cycle in exactly 30 days.", False),
        ("...", False),
    ],
)
def test_evidence_normalised_match(evidence, found):
    assert evidence_in_text(evidence, DOC) is found
