"""split_reasoning / reasoning_field: one set of rules for inline <think> blocks and server-side reasoning."""

from __future__ import annotations

import pytest

from reason2rank.llm.reasoning import SplitAnswer, reasoning_field, split_reasoning


def test_closed_block_is_removed_and_kept_as_reasoning():
    out = split_reasoning("<think>compare [1] and [2]</think>\n[2] > [1]")
    assert out == SplitAnswer(answer="[2] > [1]", reasoning="compare [1] and [2]", truncated=False)


def test_text_without_tags_is_all_answer():
    assert split_reasoning("  [2] > [1]\n") == SplitAnswer("[2] > [1]", None, False)


def test_several_blocks_are_joined_with_a_blank_line():
    out = split_reasoning("<think>first</think> [3] <think> second </think> > [1]")
    assert out.answer == "[3]  > [1]"
    assert out.reasoning == "first\n\nsecond"
    assert not out.truncated


def test_a_cut_between_two_words_leaves_a_space():
    assert split_reasoning("[1]<think>x</think>[2]").answer == "[1] [2]"


def test_unclosed_open_block_is_truncated():
    out = split_reasoning("<think>passage [1] mentions 1990 and [2] ...")
    assert out == SplitAnswer(answer="", reasoning="passage [1] mentions 1990 and [2] ...", truncated=True)


def test_text_before_an_unclosed_block_stays_the_answer():
    out = split_reasoning("[2] > [1] <think>on second thought")
    assert out == SplitAnswer("[2] > [1]", "on second thought", True)


def test_unclosed_after_closed_block():
    out = split_reasoning("<think>a</think>[1] > [2]<think>b")
    assert out == SplitAnswer("[1] > [2]", "a\n\nb", True)


def test_closing_tag_only_everything_before_is_reasoning():
    # Qwen3 / DeepSeek-R1 templates put <think> into the prompt, so the completion starts inside the reasoning
    out = split_reasoning("Okay, [3] looks best.\n</think>\n\n[3] > [1] > [2]")
    assert out == SplitAnswer("[3] > [1] > [2]", "Okay, [3] looks best.", False)


def test_closing_only_splits_at_the_last_closing_tag():
    out = split_reasoning("one</think>two</think> [1]")
    assert out.answer == "[1]"
    assert out.reasoning == "one\ntwo"
    assert not out.truncated


def test_closing_only_then_a_closed_block():
    out = split_reasoning("r1</think>[2] <think>r2</think>> [1]")
    assert out.answer == "[2] > [1]"
    assert out.reasoning == "r1\n\nr2"


@pytest.mark.parametrize(
    "text",
    [
        "<thinking>why</thinking>[1]",
        "<THINK>why</THINK>[1]",
        "<Think>why</think>[1]",
        "<Thinking>why</THINKING>[1]",
        "< think >why< /think >[1]",
    ],
)
def test_thinking_tags_and_case(text):
    assert split_reasoning(text) == SplitAnswer("[1]", "why", False)


def test_nested_tags_stay_inside_the_outer_block():
    out = split_reasoning("<think>a <think>b</think> c</think>[1]")
    assert out.answer == "[1]"
    assert out.reasoning is not None
    assert "a" in out.reasoning and "b" in out.reasoning and "c" in out.reasoning
    assert "<" not in out.reasoning


def test_server_reasoning_comes_first():
    out = split_reasoning("<think>inline</think>[1]", server_reasoning="  server side  ")
    assert out == SplitAnswer("[1]", "server side\n\ninline", False)


def test_server_reasoning_alone():
    assert split_reasoning("[2] > [1]", "the server thought") == SplitAnswer(
        "[2] > [1]", "the server thought", False
    )
    assert split_reasoning(None, "thought") == SplitAnswer("", "thought", False)


@pytest.mark.parametrize(
    ("text", "server"),
    [
        ("<think></think>[1]", None),
        ("<think>\n\n</think>\n\n[1]", "   "),
        ("[1]", ""),
        ("</think>[1]", None),
    ],
)
def test_empty_reasoning_is_none(text, server):
    assert split_reasoning(text, server) == SplitAnswer("[1]", None, False)


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_empty_text(text):
    assert split_reasoning(text) == SplitAnswer("", None, False)


def test_only_a_block_gives_an_empty_answer():
    assert split_reasoning("<think>all thought</think>") == SplitAnswer("", "all thought", False)


def test_other_tags_are_left_alone():
    assert (
        split_reasoning("<thinker>x</thinker> <answer>[1]</answer>").answer
        == "<thinker>x</thinker> <answer>[1]</answer>"
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"content": "[1]", "reasoning": "r"}, "r"),
        ({"content": "[1]", "reasoning_content": "rc"}, "rc"),
        ({"reasoning": "r", "reasoning_content": "rc"}, "r"),
        ({"reasoning": "", "reasoning_content": "rc"}, "rc"),
        ({"reasoning": None, "reasoning_content": "rc"}, "rc"),
        ({"reasoning": "  ", "reasoning_content": None}, None),
        ({"reasoning": 3}, None),
        ({"content": "[1]"}, None),
        ({}, None),
    ],
)
def test_reasoning_field(message, expected):
    assert reasoning_field(message) == expected


def test_reasoning_field_feeds_split_reasoning():
    message = {"content": "<think>inline</think>[2] > [1]", "reasoning_content": "from the server"}
    out = split_reasoning(message["content"], reasoning_field(message))
    assert out == SplitAnswer("[2] > [1]", "from the server\n\ninline", False)
