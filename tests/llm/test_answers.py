"""parse_permutation / parse_choice / parse_preference on the answers real model families write.

The tables hold the styles seen in practice (RankGPT/GPT-4 bracket chains, RankZephyr plain chains, Qwen and
DeepSeek think blocks, Llama prose around the ranking, Rank-R1 <answer> blocks, JSON, full-width and circled
digits, truncation, refusals); the property tests render random permutations in every supported format and
throw seeded garbage at the parsers.
"""

from __future__ import annotations

import json
import random
import string

import pytest

from reason2rank.llm.answers import (
    ParsedChoice,
    ParsedPermutation,
    ParsedPreference,
    parse_choice,
    parse_permutation,
    parse_preference,
)

# ------------------------------------------------------------------------------------------ permutations

# (text, n, expected 0-based order, repaired, exact problems)
PERMUTATION_CASES = [
    pytest.param("[2] > [3] > [1]", 3, [1, 2, 0], False, (), id="rankgpt-gpt4"),
    pytest.param("[4] > [2] > [1] > [3]", 4, [3, 1, 0, 2], False, (), id="rankgpt-4"),
    pytest.param("2 > 3 > 1", 3, [1, 2, 0], False, (), id="rankzephyr-plain-chain"),
    pytest.param(
        "<think>\nPassage [1] mentions 1998 and 2 people; [3] is close. Maybe [3] > [1]?\n</think>\n\n[2] > [3] > [1]",
        3,
        [1, 2, 0],
        False,
        ("think_removed",),
        id="qwen-think-with-other-numbers",
    ),
    pytest.param(
        "Let me compare. Passage [1] lists 5 things, [2] only 1.\n</think>\n\n[3] > [1] > [2]",
        3,
        [2, 0, 1],
        False,
        ("think_removed",),
        id="deepseek-closing-tag-only",
    ),
    pytest.param(
        "<think>\n\n</think>\n\n[2] > [1]", 2, [1, 0], False, ("think_removed",), id="qwen-empty-think"
    ),
    pytest.param(
        "Here is the ranking: [3] > [1] > [2]\n\nPassage [3] is about 1990 and answers the query directly, "
        "while [1] only mentions it in passing.",
        3,
        [2, 0, 1],
        False,
        (),
        id="llama-prose-around",
    ),
    pytest.param(
        "Sure! Here is the ranked list:\n\n[2] > [1] > [4] > [3]\n\nLet me know if you need anything else.",
        4,
        [1, 0, 3, 2],
        False,
        (),
        id="llama-sure-here-is",
    ),
    pytest.param(
        "[2] > [3] > [1]\n\nExplanation: [1] is least relevant because [2] covers the same facts in more detail.",
        3,
        [1, 2, 0],
        False,
        (),
        id="ranking-then-explanation-mentions-ids-again",
    ),
    pytest.param("[3] > [1] > [", 3, [2, 0, 1], True, ("missing:2",), id="truncated-answer"),
    pytest.param("[1] > [2] > [1] > [3]", 3, [0, 1, 2], True, ("duplicate:1",), id="duplicate"),
    pytest.param("[2] > [25] > [1] > [3]", 3, [1, 0, 2], True, ("out_of_range:25",), id="out-of-range-25"),
    pytest.param(
        "[0] > [1] > [2]", 3, [0, 1, 2], True, ("out_of_range:0", "missing:3"), id="zero-based-answer"
    ),
    pytest.param(
        "[5] > [3] > [7] > [5] > [1]",
        5,
        [4, 2, 0, 1, 3],
        True,
        ("out_of_range:7", "duplicate:5", "missing:2,4"),
        id="every-repair-at-once",
    ),
    pytest.param("[B] > [A] > [C]", 3, [1, 0, 2], False, ("letters",), id="letters-bracketed"),
    pytest.param("C > A > B", 3, [2, 0, 1], False, ("letters",), id="letters-chain"),
    pytest.param("b > a > c", 3, [1, 0, 2], False, ("letters",), id="letters-lowercase"),
    pytest.param("Answer: B, A, C", 3, [1, 0, 2], False, ("letters",), id="letters-labelled-line"),
    pytest.param("[2, 1, 3]", 3, [1, 0, 2], False, (), id="json-list"),
    pytest.param('["[3]", "[1]", "[2]"]', 3, [2, 0, 1], False, (), id="json-strings"),
    pytest.param('{"ranking": [2, 3, 1]}', 3, [1, 2, 0], False, (), id="json-object"),
    pytest.param(
        'Here you go:\n```json\n{"ranking": [3, 2, 1], "reason": "passage 1 is about 2020"}\n```',
        3,
        [2, 1, 0],
        False,
        (),
        id="fenced-json-with-prose-numbers",
    ),
    pytest.param(
        '```json\n["B", "C", "A"]\n```', 3, [1, 2, 0], False, ("letters",), id="fenced-json-letters"
    ),
    pytest.param("［２］ ＞ ［３］ ＞ ［１］", 3, [1, 2, 0], False, (), id="full-width"),
    pytest.param("② > ③ > ①", 3, [1, 2, 0], False, (), id="circled-chain"),
    pytest.param("③ ① ②", 3, [2, 0, 1], False, (), id="circled-spaced"),
    pytest.param(
        "⑳ > ⑲",
        20,
        [19, 18, *range(18)],
        True,
        ("missing:" + ",".join(map(str, range(1, 19))),),
        id="circled-20",
    ),
    pytest.param("²>³>¹", 3, [1, 2, 0], False, (), id="superscripts"),
    pytest.param("[٢] > [٣] > [١]", 3, [1, 2, 0], False, (), id="arabic-indic-digits"),
    pytest.param("【2】 > 【1】 > 【3】", 3, [1, 0, 2], False, (), id="cjk-lenticular-brackets"),
    pytest.param("**[2]** > **[1]** > **[3]**", 3, [1, 0, 2], False, (), id="markdown-bold"),
    pytest.param(r"\[2\] > \[1\] > \[3\]", 3, [1, 0, 2], False, (), id="markdown-escaped"),
    pytest.param("[2] → [1] → [3]", 3, [1, 0, 2], False, (), id="arrows"),
    pytest.param("[2] &gt; [1] &gt; [3]", 3, [1, 0, 2], False, (), id="html-entity"),
    pytest.param("[2] = [1] > [3]", 3, [1, 0, 2], False, (), id="tie-sign"),
    pytest.param(
        "[Passage 2] > [Passage 1] > [Passage 3]", 3, [1, 0, 2], False, (), id="bracketed-passage-word"
    ),
    pytest.param("[2] >\n[1] >\n[3]", 3, [1, 0, 2], False, (), id="chain-over-lines"),
    pytest.param("[2]\n[3]\n[1]", 3, [1, 2, 0], False, (), id="one-id-per-line"),
    pytest.param("1. [3]\n2. [1]\n3. [2]", 3, [2, 0, 1], False, (), id="numbered-list-of-brackets"),
    pytest.param(
        "1. Passage 3\n2. Passage 1\n3. Passage 2", 3, [2, 0, 1], False, (), id="numbered-list-of-passages"
    ),
    pytest.param("Passage 2 > Passage 1 > Passage 3", 3, [1, 0, 2], False, (), id="passage-word-chain"),
    pytest.param("2, 3, 1", 3, [1, 2, 0], False, (), id="bare-commas"),
    pytest.param("3 1 2", 3, [2, 0, 1], False, (), id="bare-spaces"),
    pytest.param("Ranking: 3, 1, 2", 3, [2, 0, 1], False, (), id="labelled-line"),
    pytest.param(
        "The most relevant passage covers the 2019 events.\nFinal answer:\n3 1 2",
        3,
        [2, 0, 1],
        False,
        (),
        id="last-line-list-after-prose",
    ),
    pytest.param(
        "[2] > [1] > [3]\n\nFinal ranking: [2] > [1] > [3]", 3, [1, 0, 2], False, (), id="ranking-repeated"
    ),
    pytest.param(
        "Initial: [1] > [2] > [3]\nRevised: [3] > [2] > [1]",
        3,
        [2, 1, 0],
        False,
        (),
        id="revised-ranking-wins",
    ),
    pytest.param("<answer>[2] > [1] > [3]</answer>", 3, [1, 0, 2], False, (), id="answer-block"),
    pytest.param(
        "<think>[1] seems off, [3] is close to 2 facts</think>\n<answer>[3] > [2] > [1]</answer>",
        3,
        [2, 1, 0],
        False,
        ("think_removed",),
        id="rank-r1-style",
    ),
    pytest.param(
        "I ranked them: 1 > 2 > 3 at first.\n<answer>[2] > [1]</answer>",
        3,
        [1, 0, 2],
        True,
        ("missing:3",),
        id="answer-block-only-is-read",
    ),
    pytest.param(
        "<think>Let me look at [1] and [2]. Passage [3] mentions 7",
        3,
        [0, 1, 2],
        True,
        ("think_removed", "truncated_think", "no_ids"),
        id="unterminated-think",
    ),
    pytest.param("", 3, [0, 1, 2], True, ("no_ids",), id="empty"),
    pytest.param(None, 3, [0, 1, 2], True, ("no_ids",), id="none"),
    pytest.param(
        "I cannot rank these passages because they are all irrelevant.",
        3,
        [0, 1, 2],
        True,
        ("no_ids",),
        id="refusal",
    ),
    pytest.param(
        "I'm sorry, but I can't help with that.", 3, [0, 1, 2], True, ("no_ids",), id="refusal-apology"
    ),
    pytest.param(
        "All passages discuss the 1990 election; none is clearly better.",
        3,
        [0, 1, 2],
        True,
        ("loose_ids", "out_of_range:1990", "no_ids"),
        id="numbers-only-in-prose",
    ),
    pytest.param(
        "Passage 3 is the most relevant, followed by 1 and then 2.",
        3,
        [2, 0, 1],
        False,
        ("loose_ids",),
        id="ranking-in-prose",
    ),
    pytest.param(
        "The ranking is [2] > [1], since [2] mentions 1990.",
        3,
        [1, 0, 2],
        True,
        ("missing:3",),
        id="short-run",
    ),
    pytest.param("[1]", 1, [0], False, (), id="single-item"),
    pytest.param("", 1, [0], True, ("no_ids",), id="single-item-empty"),
]


@pytest.mark.parametrize(("text", "n", "order", "repaired", "problems"), PERMUTATION_CASES)
def test_parse_permutation_table(text, n, order, repaired, problems):
    out = parse_permutation(text, n)
    assert isinstance(out, ParsedPermutation)
    assert out.order == order
    assert out.repaired is repaired
    assert out.problems == problems
    assert sorted(out.order) == list(range(n))


def test_permutation_table_is_large_enough():
    assert len(PERMUTATION_CASES) >= 30


def test_ids_are_read_before_repair():
    out = parse_permutation("[2] > [25] > [2] > [1]", 3)
    assert out.ids == [1, 24, 1, 0]
    assert out.order == [1, 0, 2]


def test_reasoning_is_kept():
    out = parse_permutation("<think>[1] is off-topic</think>[2] > [1]", 2)
    assert out.reasoning == "[1] is off-topic"
    assert parse_permutation("[2] > [1]", 2).reasoning is None


def test_labels_numbers_ignores_letters():
    out = parse_permutation("[B] > [A] > [C]", 3, labels="numbers")
    assert out.order == [0, 1, 2]
    assert "no_ids" in out.problems


def test_labels_letters_ignores_numbers_and_is_no_problem():
    assert parse_permutation("[2] > [1]", 2, labels="letters").problems == ("no_ids",)
    out = parse_permutation("[B] > [A]", 2, labels="letters")
    assert out.order == [1, 0]
    assert out.problems == ()


def test_auto_prefers_numbers_over_letters_at_the_same_step():
    assert parse_permutation("[2] > [1] > [3] and [A]", 3).order == [1, 0, 2]


def test_auto_has_no_letters_beyond_26():
    out = parse_permutation("[B] > [A]", 27)
    assert "no_ids" in out.problems


@pytest.mark.parametrize(("n", "labels"), [(0, "auto"), (-1, "numbers"), (3, "roman"), (27, "letters")])
def test_bad_arguments(n, labels):
    with pytest.raises(ValueError):
        parse_permutation("[1]", n, labels=labels)


# --------------------------------------------------------------------------------------- property tests

_FULL_WIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")
_ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
_CIRCLED = [chr(0x2460 + i) for i in range(20)]  # ① .. ⑳
_LETTERS = string.ascii_uppercase


def _noise(rng: random.Random) -> str:
    return f"Passage [{rng.randint(1, 60)}] mentions {rng.randint(1900, 2030)} and {rng.randint(1, 9)} > {rng.randint(1, 9)}."


def _num(p: list[int]) -> list[str]:
    return [str(i + 1) for i in p]


NUMBER_FORMATS = {
    "brackets-chain": lambda p, rng: " > ".join(f"[{s}]" for s in _num(p)),
    "brackets-spaces": lambda p, rng: " ".join(f"[{s}]" for s in _num(p)),
    "brackets-commas": lambda p, rng: ", ".join(f"[{s}]" for s in _num(p)),
    "bare-chain": lambda p, rng: " > ".join(_num(p)),
    "bare-commas": lambda p, rng: ", ".join(_num(p)),
    "bare-spaces": lambda p, rng: " ".join(_num(p)),
    "json-list": lambda p, rng: json.dumps([i + 1 for i in p]),
    "json-strings": lambda p, rng: json.dumps([f"[{s}]" for s in _num(p)]),
    "json-object": lambda p, rng: json.dumps(
        {"ranking": [i + 1 for i in p], "note": "checked 1990 and 2005"}
    ),
    "fenced-json": lambda p, rng: (
        "```json\n" + json.dumps({"ranking": [i + 1 for i in p]}, indent=2) + "\n```"
    ),
    "full-width": lambda p, rng: " ＞ ".join(f"［{s.translate(_FULL_WIDTH_DIGITS)}］" for s in _num(p)),
    "arabic-indic": lambda p, rng: " > ".join(f"[{s.translate(_ARABIC_INDIC)}]" for s in _num(p)),
    "superscript": lambda p, rng: " > ".join(s.translate(_SUPERSCRIPT) for s in _num(p)),
    "think-then-brackets": lambda p, rng: (
        f"<think>{_noise(rng)}\n{_noise(rng)}</think>\n\n" + " > ".join(f"[{s}]" for s in _num(p))
    ),
    "closing-think-then-chain": lambda p, rng: f"{_noise(rng)}\n</think>\n" + " > ".join(_num(p)),
    "rank-r1-answer": lambda p, rng: (
        f"<think>{_noise(rng)}</think> <answer>" + " > ".join(f"[{s}]" for s in _num(p)) + "</answer>"
    ),
    "prose-around": lambda p, rng: (
        "Here is the ranking of the passages:\n\n"
        + " > ".join(f"[{s}]" for s in _num(p))
        + (
            f"\n\nPassage [{p[0] + 1}] is the most relevant; it mentions {rng.randint(1900, 2030)}."
            if len(p) > 1
            else ""
        )
    ),
    "labelled-last-line": lambda p, rng: (
        f"I read the passages about {rng.randint(1900, 2030)}.\nFinal ranking: " + ", ".join(_num(p))
    ),
}
CIRCLED_FORMATS = {
    "circled-chain": lambda p, rng: " > ".join(_CIRCLED[i] for i in p),
    "circled-spaces": lambda p, rng: " ".join(_CIRCLED[i] for i in p),
}
LETTER_FORMATS = {
    "letters-brackets": lambda p, rng: " > ".join(f"[{_LETTERS[i]}]" for i in p),
    "letters-chain": lambda p, rng: " > ".join(_LETTERS[i] for i in p),
    "letters-commas": lambda p, rng: ", ".join(_LETTERS[i] for i in p),
    "letters-spaces": lambda p, rng: " ".join(_LETTERS[i] for i in p),
    "letters-json": lambda p, rng: json.dumps([_LETTERS[i] for i in p]),
    "letters-full-width": lambda p, rng: " ＞ ".join(f"［{chr(ord(_LETTERS[i]) + 0xFEE0)}］" for i in p),
}


def _random_permutations(seed: int, max_n: int, count: int = 60) -> list[list[int]]:
    rng = random.Random(seed)
    out = [[0], list(range(max_n))]  # both ends always
    for _ in range(count):
        p = list(range(rng.randint(1, max_n)))
        rng.shuffle(p)
        out.append(p)
    return out


@pytest.mark.parametrize("fmt", sorted(NUMBER_FORMATS))
def test_every_number_format_round_trips(fmt):
    rng = random.Random(fmt)
    for p in _random_permutations(sum(map(ord, fmt)), 40):
        text = NUMBER_FORMATS[fmt](p, rng)
        for labels in ("auto", "numbers"):
            out = parse_permutation(text, len(p), labels=labels)
            assert out.order == p, (text, out)
            assert out.ids == p
            assert out.repaired is False
            assert not any(
                x.startswith(("missing", "duplicate", "out_of_range", "no_ids")) for x in out.problems
            )


@pytest.mark.parametrize("fmt", sorted(CIRCLED_FORMATS))
def test_circled_formats_round_trip(fmt):
    rng = random.Random(fmt)
    for p in _random_permutations(7, 20):
        text = CIRCLED_FORMATS[fmt](p, rng)
        out = parse_permutation(text, len(p))
        assert (out.order, out.repaired, out.problems) == (p, False, ()), text


@pytest.mark.parametrize("fmt", sorted(LETTER_FORMATS))
def test_every_letter_format_round_trips(fmt):
    rng = random.Random(fmt)
    for p in _random_permutations(11, 26):
        text = LETTER_FORMATS[fmt](p, rng)
        auto = parse_permutation(text, len(p))
        assert (auto.order, auto.repaired, auto.problems) == (p, False, ("letters",)), text
        strict = parse_permutation(text, len(p), labels="letters")
        assert (strict.order, strict.repaired, strict.problems) == (p, False, ()), text


_GARBAGE_PIECES = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "[",
    "]",
    ">",
    " > ",
    ",",
    "{",
    "}",
    '"',
    ":",
    "```json\n",
    "```",
    "\n",
    " ",
    "1",
    "7",
    "23",
    "99",
    "1990",
    "0",
    "A",
    "B",
    "I ",
    "a ",
    "passage ",
    "Document ",
    "①",
    "⑳",
    "［",
    "２",
    "＞",
    "٣",
    "¹",
    "【",
    "→",
    "tie",
    "both",
    "**",
    "(",
    ")",
    "ranking",
]


def _garbage(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 60)):
        if rng.random() < 0.5:
            parts.append(rng.choice(_GARBAGE_PIECES))
        else:
            parts.append("".join(rng.choice(string.printable) for _ in range(rng.randint(1, 8))))
    return "".join(parts)


@pytest.mark.parametrize("seed", range(5))
def test_garbage_always_gives_a_full_permutation(seed):
    rng = random.Random(seed)
    for _ in range(300):
        text = _garbage(rng)
        n = rng.randint(1, 40)
        labels = rng.choice(["auto", "numbers", "letters"]) if n <= 26 else rng.choice(["auto", "numbers"])
        out = parse_permutation(text, n, labels=labels)
        assert sorted(out.order) == list(range(n)), text
        assert out.repaired is (out.order != out.ids or "no_ids" in out.problems)
        if not out.repaired:
            assert out.order == out.ids
        choice = parse_choice(text, n, labels=labels)
        assert choice.index is None or 0 <= choice.index < n
        assert (choice.index is None) == any(
            p in ("ambiguous", "no_choice") or p.startswith("out_of_range") for p in choice.problems
        )
        assert parse_preference(text).preferred in ("A", "B", "tie", None)


@pytest.mark.parametrize(
    "text",
    [
        "[[" * 5000,
        "1" * 6000,
        ">" * 20000 + "x",
        "[1]" + " " * 20000 + "x",
        "{" * 5000,
        "[1] >" * 3000,
        "A " * 5000,
    ],
)
def test_pathological_inputs_stay_fast_and_valid(text):
    out = parse_permutation(text, 10)
    assert sorted(out.order) == list(range(10))
    parse_choice(text, 10)
    parse_preference(text)


# ---------------------------------------------------------------------------------------------- choices

# (text, n, expected index, exact problems)
CHOICE_CASES = [
    pytest.param(
        "<think>compare [1] and [2]; [4] mentions 1990</think> <answer>[3]</answer>",
        4,
        2,
        ("think_removed",),
        id="rank-r1",
    ),
    pytest.param("<answer>[3]</answer>", 4, 2, (), id="answer-block-without-think"),
    pytest.param("Looking at all four, <answer> 2 </answer>", 4, 1, (), id="answer-block-bare-number"),
    pytest.param("[3]", 4, 2, (), id="bracketed"),
    pytest.param("3", 4, 2, (), id="bare-number"),
    pytest.param("Document 3", 4, 2, (), id="document-number"),
    pytest.param("Passage C", 4, 2, ("letters",), id="passage-letter"),
    pytest.param("C", 4, 2, ("letters",), id="bare-letter"),
    pytest.param("(c)", 4, 2, ("letters",), id="parenthesised-letter"),
    pytest.param("A", 4, 0, ("letters",), id="letter-a-is-index-0"),
    pytest.param("**[2]**", 4, 1, (), id="markdown-bold"),
    pytest.param("The most relevant document is [2].", 4, 1, (), id="sentence"),
    pytest.param("The answer is B.", 4, 1, ("letters",), id="answer-is-letter"),
    pytest.param("Answer: 2", 4, 1, (), id="answer-colon"),
    pytest.param("［３］", 4, 2, (), id="full-width"),
    pytest.param("③", 4, 2, (), id="circled"),
    pytest.param("<answer>[2] or maybe [3]</answer>", 4, 1, (), id="answer-block-first-id-wins"),
    pytest.param("Document [2] is more relevant than [3].", 4, None, ("ambiguous",), id="ambiguous"),
    pytest.param("[7]", 4, None, ("out_of_range:7",), id="out-of-range"),
    pytest.param("", 4, None, ("no_choice",), id="empty"),
    pytest.param(None, 4, None, ("no_choice",), id="none"),
    pytest.param("None of these passages is relevant.", 4, None, ("no_choice",), id="refusal"),
    pytest.param(
        "<think>[1] or [2]? the query asks about 1990",
        4,
        None,
        ("think_removed", "truncated_think", "no_choice"),
        id="truncated-think",
    ),
    pytest.param("Passage [2] is the most relevant. [2] names the year.", 4, 1, (), id="same-id-twice"),
]


@pytest.mark.parametrize(("text", "n", "index", "problems"), CHOICE_CASES)
def test_parse_choice_table(text, n, index, problems):
    out = parse_choice(text, n)
    assert isinstance(out, ParsedChoice)
    assert out.index == index
    assert out.problems == problems


def test_choice_table_is_large_enough():
    assert len(CHOICE_CASES) >= 12


def test_choice_keeps_reasoning_and_honours_labels():
    assert parse_choice("<think>[1] is weak</think>[2]", 3).reasoning == "[1] is weak"
    assert parse_choice("[B]", 3, labels="numbers").index is None
    assert parse_choice("[2]", 3, labels="letters").index is None
    assert parse_choice("[B]", 3, labels="letters").problems == ()
    with pytest.raises(ValueError):
        parse_choice("[1]", 0)


# ------------------------------------------------------------------------------------------ preferences

# (text, expected preferred, exact problems)
PREFERENCE_CASES = [
    pytest.param("Passage A", "A", (), id="passage-a"),
    pytest.param("A", "A", (), id="bare-a"),
    pytest.param("b", "B", (), id="bare-lowercase-b"),
    pytest.param("[B]", "B", (), id="bracketed"),
    pytest.param("(A)", "A", (), id="parenthesised"),
    pytest.param("Document B is more relevant", "B", (), id="document-b-more-relevant"),
    pytest.param(
        "Passage A is more relevant than Passage B because it mentions the year.", "A", (), id="a-more-than-b"
    ),
    pytest.param("Passage B is less relevant than passage A.", "A", (), id="b-less-than-a"),
    pytest.param("Passage A is less relevant.", "B", (), id="a-less-relevant"),
    pytest.param("I prefer B.", "B", (), id="prefer"),
    pytest.param("<answer>A</answer>", "A", (), id="answer-block"),
    pytest.param("<think>A or B? A is better</think>B", "B", ("think_removed",), id="think-ignored"),
    pytest.param("tie", "tie", (), id="tie"),
    pytest.param("Both", "tie", (), id="both"),
    pytest.param("Equal", "tie", (), id="equal"),
    pytest.param("Passage A and Passage B are both relevant.", "tie", (), id="both-named-tie"),
    pytest.param(
        "Both passages are relevant, but Passage B answers the question directly.", "B", (), id="both-but-b"
    ),
    pytest.param("A passage about cats is not the answer; B is.", "B", (), id="article-a-is-not-a-label"),
    pytest.param("［Ｂ］", "B", (), id="full-width"),
    pytest.param("Passage A mentions X while passage B mentions Y.", None, ("ambiguous",), id="ambiguous"),
    pytest.param("", None, ("no_preference",), id="empty"),
    pytest.param(None, None, ("no_preference",), id="none"),
    pytest.param("I cannot decide.", None, ("no_preference",), id="refusal"),
    pytest.param('{"preferred": "C"}', None, ("bad_value",), id="json-bad-value"),
]


@pytest.mark.parametrize(("text", "preferred", "problems"), PREFERENCE_CASES)
def test_parse_preference_table(text, preferred, problems):
    out = parse_preference(text)
    assert isinstance(out, ParsedPreference)
    assert out.preferred == preferred
    assert out.problems == problems


def test_preference_table_is_large_enough():
    assert len(PREFERENCE_CASES) >= 12


@pytest.mark.parametrize(
    "text",
    [
        '{"preferred": "B", "reasoning": "B names the year."}',
        'Sure:\n```json\n{"reasoning": "B names the year.", "preferred": "Passage B"}\n```',
        '<think>hmm</think>{"preferred": "[B]", "reasoning": "B names the year."}',
    ],
)
def test_json_preference_takes_the_reasoning_field(text):
    out = parse_preference(text)
    assert out.preferred == "B"
    assert out.reasoning == "B names the year."


def test_json_tie_and_reasoning_from_think():
    assert parse_preference('{"preferred": "tie"}').preferred == "tie"
    out = parse_preference("<think>both match</think>\nA")
    assert (out.preferred, out.reasoning) == ("A", "both match")
