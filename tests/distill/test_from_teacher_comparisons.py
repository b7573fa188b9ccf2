"""A store of ``compare`` records only trains a student (issue 19, item 7): the teacher's pairwise preferences
are the training pairs (``ranknet_pairs``), in the teacher's direction."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reason2rank.distill import TrainingSet, train
from reason2rank.distill.batching import GroupStream
from reason2rank.types import Doc, Query

TOPICS = ["coffee", "volcano", "glacier", "violin", "tomato", "penguin"]


def _items():
    items = []
    for i, topic in enumerate(TOPICS):
        other = TOPICS[(i + 3) % len(TOPICS)]
        docs = [
            Doc(f"q{i}d0", f"The {topic} changes with heat, which explains how the {topic} changes."),
            Doc(f"q{i}d1", f"A short note on the {topic}."),
            Doc(f"q{i}d2", f"A short note on the {other} and the weather."),
            Doc(f"q{i}d3", f"The {other} report number three, about the {other}."),
        ]
        items.append((Query(f"q{i}", f"how does the {topic} change"), docs))
    return items


#: (A, B, the teacher's answer) per query: d0 > d1 (A), d2 vs d1 shown as A/B with B preferred, d2 > d3, d0 > d3
ASKED = [("d0", "d1", "A"), ("d2", "d1", "B"), ("d2", "d3", "A"), ("d0", "d3", "A")]


def _store(items):
    recs = []
    for q, _ in items:
        for a, b, pref in ASKED:
            ids = [f"{q.id}{a}", f"{q.id}{b}"]
            recs.append({
                "key": f"{q.id}-{a}-{b}", "task": "compare", "status": "ok", "teacher": "t", "qid": q.id,
                "query": q.text, "docids": ids,
                "output": {"preferred": pref, "preferred_doc": ids[0] if pref == "A" else ids[1],
                           "reasoning": f"{pref} is about the query's subject."},
            })  # fmt: skip
    return recs


def test_compare_records_alone_give_win_rate_grades_and_pairs_in_the_teachers_direction():
    items = _items()
    ts = TrainingSet.from_store(_store(items), items)
    assert ts.source["queries_graded_from_comparisons"] == len(TOPICS)
    grades = {c.doc.id[2:]: c.grade for c in ts[0].candidates}
    # by hand: d0 beat d1 and d3 (2/2), d1 lost to d0 and beat d2 (1/2), d2 lost to d1 and beat d3 (1/2), d3 0/2
    assert grades == {"d0": 3.0, "d1": 1.5, "d2": 1.5, "d3": 0.0}
    teacher = {(f"{q.id}{a}", f"{q.id}{b}") if p == "A" else (f"{q.id}{b}", f"{q.id}{a}")
               for q, _ in items for a, b, p in ASKED}  # fmt: skip
    stream = GroupStream(ts, batch_size=3, group_size=4, seed=0)
    n_pairs = 0
    for m in range(6):
        for g in stream.batch(m):
            for i, j, p in g.pairs:
                assert p == 1.0 and (g.candidates[i].doc.id, g.candidates[j].doc.id) in teacher
                n_pairs += 1
    assert n_pairs >= 6 * 3 * 3  # every group holds d0 and the documents it was compared with


def test_without_grade_from_comparisons_a_comparisons_only_store_is_refused_as_before():
    items = _items()
    ts = TrainingSet.from_store(_store(items), items, grade_from_comparisons=False)
    with pytest.raises(ValueError, match="no training query has two candidates"):
        GroupStream(ts, batch_size=2, group_size=4, seed=0)


@pytest.mark.slow
def test_a_comparisons_only_store_trains_with_ranknet_pairs(tiny_bert_encoder_dir, tmp_path):
    items = _items()
    TrainingSet.from_store(_store(items), items).save(tmp_path / "train.jsonl")
    result = train({
        "output_dir": str(tmp_path / "run"), "seed": 3,
        "student": {"type": "encoder", "model": tiny_bert_encoder_dir, "max_length": 48},
        "data": {"train": str(tmp_path / "train.jsonl"), "group_size": 4},
        "objectives": {"ranknet_pairs": 1.0},
        "train": {"max_steps": 40, "batch_size": 3, "lr": 3e-3, "save_every": 0, "log_every": 1,
                  "warmup_ratio": 0.0, "device": "cpu"},
    })  # fmt: skip
    losses = [h["loss"] for h in result.history if "loss" in h]
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
