"""The GRPO rewards against hand-computed values, adversarial answers included."""

from __future__ import annotations

import pytest

from reason2rank.rl.rewards import (
    binary_relevance_reward,
    completion_text,
    listwise_reward,
    parse_listwise_answer,
    rank_r1_reward,
    reciprocal_cube_gain,
)

# (completion, label, reward)
RANK_R1 = [
    ("<think>doc 3 answers it</think><answer>[3]</answer>", 3, 1.0),
    ("<think>doc 3 answers it</think> <answer>[3]</answer>", 3, 1.0),
    ("\n<think>\nmulti\nline\n</think>\n<answer> [ 3 ] </answer>\n", 3, 1.0),
    ("<think></think><answer>[3]</answer>", 3, 1.0),  # empty reasoning is still the format
    ("<think>doc 2</think><answer>[2]</answer>", 3, 0.0),  # well formed, wrong document
    ("<answer>[3]</answer>", 3, 0.0),  # missing think
    ("<think>doc 3 is best", 3, 0.0),  # think without answer
    ("<think>doc 3 is best</think>", 3, 0.0),
    ("<think>x</think><answer>3</answer>", 3, 0.0),  # no brackets
    ("<think>x</think><answer>[3]</answer> and also [1]", 3, 0.0),  # extra text after the answer
    ("Sure! <think>x</think><answer>[3]</answer>", 3, 0.0),  # extra text before
    ("<think>x</think><answer>[3]</answer><answer>[1]</answer>", 3, 0.0),  # two answers: hedging
    ("<think>x</think><answer>[1]</answer><answer>[3]</answer>", 3, 0.0),
    ("<think>x <answer>[3]</answer></think><answer>[3]</answer>", 3, 0.0),  # answer hidden in the reasoning
    ("<think>a</think><think>b</think><answer>[3]</answer>", 3, 0.0),
    ("<think>x</think><answer>[3, 3]</answer>", 3, 0.0),  # a list is not a setwise answer
    ("<think>x</think><answer>[03]</answer>", 3, 1.0),  # the number 3
    ("", 3, 0.0),
]


@pytest.mark.parametrize("completion,label,expected", RANK_R1)
def test_rank_r1_reward_table(completion, label, expected):
    assert rank_r1_reward(["p"], [completion], label=[label]) == [expected]


def test_rank_r1_reward_batch_prefix_and_conversational():
    got = rank_r1_reward(
        ["p"] * 3,
        [
            " x</think><answer>[2]</answer>",
            "<think>x</think><answer>[2]</answer>",
            [{"role": "assistant", "content": "x</think><answer>[1]</answer>"}],
        ],  # fmt: skip
        label=[2, 2, 1],
        prefix=["<think>", "<think>", "<think>"],
    )
    # the second completion repeats the prefix's <think>: "<think><think>x..." is not the format
    assert got == [1.0, 0.0, 1.0]


def test_rewards_need_their_columns():
    with pytest.raises(ValueError, match="column 'label'"):
        rank_r1_reward(["p"], ["x"])
    with pytest.raises(ValueError, match="'label' has 1 values for 2"):
        rank_r1_reward(["p", "p"], ["x", "y"], label=[1])
    with pytest.raises(TypeError, match="completion must be"):
        completion_text(3)


BINARY = [
    ("1", 1, 1.0),
    (" 1\n", 1, 1.0),
    ("0", 0, 1.0),
    ("0", 1, 0.0),
    ("1", 0, 0.0),
    ("10", 1, 0.0),  # two digits
    ("1 0", 1, 0.0),  # both answers: hedging
    ("1.", 1, 0.0),
    ("Relevant: 1", 1, 0.0),
    ("yes", 1, 0.0),
    ("", 0, 0.0),
]


@pytest.mark.parametrize("completion,label,expected", BINARY)
def test_binary_relevance_reward_table(completion, label, expected):
    assert binary_relevance_reward(["p"], [completion], label=[label]) == [expected]


def test_reciprocal_cube_gain_by_hand():
    ideal2 = 1 + 1 / 8
    assert reciprocal_cube_gain([3, 1, 2], [3]) == 1.0
    assert reciprocal_cube_gain([1, 3, 2], [3]) == pytest.approx(1 / 8)
    assert reciprocal_cube_gain([2, 1, 3], [3]) == pytest.approx(1 / 27)
    assert reciprocal_cube_gain([2, 1, 3], [1, 3]) == pytest.approx((1 / 8 + 1 / 27) / ideal2)
    assert reciprocal_cube_gain([1, 3], [1, 3]) == pytest.approx(1.0)
    assert reciprocal_cube_gain([2], [1, 3]) == 0.0  # positives not listed add nothing
    assert reciprocal_cube_gain([1, 2], []) == 0.0


ideal2 = 1 + 1 / 8
# (completion, positives, n, reward)
LISTWISE = [
    ("<think>r</think><answer>[3, 1, 2]</answer>", [3], 3, 1.0),
    ("<think>r</think><answer>[1,3,2]</answer>", [3], 3, 1 / 8),
    ("<think>r</think><answer>[2, 1, 3]</answer>", [1, 3], 3, (1 / 8 + 1 / 27) / ideal2),
    ("<think>r</think><answer>[3]</answer>", [3], 5, 1.0),  # a single id is a valid answer (MM-R5 gives 0)
    ("<think>r</think><answer>[3,3,3,3,3]</answer>", [3], 5, 0.0),  # duplicates (MM-R5 gives full marks)
    ("<think>r</think><answer>[3, 6]</answer>", [3], 5, 0.0),  # out of range
    ("<think>r</think><answer>[0, 3]</answer>", [3], 5, 0.0),
    ("<answer>[3, 1]</answer>", [3], 3, 0.0),  # missing think
    ("<think>[3, 1, 2]</think>", [3], 3, 0.0),  # think without answer
    ("<think>r</think><answer>[3, 1, 2]</answer> extra", [3], 3, 0.0),
    ("<think>r</think><answer>3 > 1 > 2</answer>", [3], 3, 0.0),
    ("<think>r</think><answer>[]</answer>", [3], 3, 0.0),
]


@pytest.mark.parametrize("completion,positives,n,expected", LISTWISE)
def test_listwise_reward_table(completion, positives, n, expected):
    got = listwise_reward(["p"], [completion], positives=[positives], num_candidates=[n])
    assert got == [pytest.approx(expected)]


def test_parse_listwise_answer():
    assert parse_listwise_answer("<think>a</think><answer>[2, 1]</answer>", 2) == [2, 1]
    assert parse_listwise_answer("<think>a</think><answer>[2, 2]</answer>", 2) is None
