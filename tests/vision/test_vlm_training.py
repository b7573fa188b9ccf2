"""VLM training objectives (GMR): yes/no SFT and InfoNCE on p(yes) equal hand computations; the student overfits a
fixed batch of page groups; the trained model opens as the vlm family with the same scores."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import reason2rank  # noqa: E402
from reason2rank import Doc, Query  # noqa: E402
from reason2rank.distill.batching import Group  # noqa: E402
from reason2rank.distill.dataset import Candidate  # noqa: E402
from reason2rank.distill.vlm_student import VLMStudent, infonce_p_yes, yes_no_sft  # noqa: E402
from tiny_vlm import make_tiny_qwen2_vl, random_image  # noqa: E402


def test_yes_no_sft_equals_a_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    got = yes_no_sft(logits, torch.tensor([1.0, 0.0]), positive_id=0, negative_id=2)
    lse = [math.log(sum(math.exp(v) for v in row)) for row in logits.tolist()]
    want = ((lse[0] - 2.0) + (lse[1] - 3.0)) / 2
    assert float(got) == pytest.approx(want, abs=1e-6)


def test_infonce_equals_a_hand_computation_and_ignores_padding():
    lp = torch.tensor([[-0.1, -2.0, -3.0], [-1.0, -0.5, 0.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    got = infonce_p_yes(lp, mask, temperature=0.5)
    g1 = -(-0.2 - math.log(math.exp(-0.2) + math.exp(-4.0) + math.exp(-6.0)))
    g2 = -(-2.0 - math.log(math.exp(-2.0) + math.exp(-1.0)))
    assert float(got) == pytest.approx((g1 + g2) / 2, abs=1e-6)


def _groups():
    out = []
    for qi, q in enumerate(["water treatment", "heart disease"]):
        docs = [
            Doc(f"{qi}-{j}", None, images=[random_image(56 + 28 * j, 56, seed=10 * qi + j)]) for j in range(3)
        ]
        out.append(Group(query=Query(str(qi), q), candidates=[Candidate(doc=d, grade=1 if j == 0 else 0)
                                                             for j, d in enumerate(docs)],
                         targets=[1.0, 0.0, 0.0], labels=[1.0, 0.0, 0.0]))  # fmt: skip
    return out


@pytest.mark.parametrize(("objective", "lr", "steps"), [("yes_no_sft", 2e-2, 150), ("infonce", 2e-2, 60)])
def test_student_overfits_a_fixed_batch_and_reopens_as_the_vlm_family(tmp_path, objective, lr, steps):
    model_dir = make_tiny_qwen2_vl(tmp_path / "vlm")
    torch.manual_seed(0)  # LoRA's initialisation draws from the global RNG
    student = VLMStudent(str(model_dir), {objective: 1.0}, lora={"r": 8, "alpha": 16, "dropout": 0.0})
    visual = student.backbone.model.visual
    assert not any(p.requires_grad for p in visual.parameters())  # frozen by default
    if objective == "yes_no_sft":
        # the yes/no answer of a prompt whose pages the frozen random vision tower barely tells apart cannot reach
        # zero cross-entropy; the tower's merger learns here so the answers can be fitted
        for p in visual.merger.parameters():
            p.requires_grad_(True)
    # the tiny model's random embeddings (std 0.1, width 32) bound its logits; letting the final norm's scale learn
    # lifts that bound, so a full-vocabulary cross-entropy can reach near zero (a real VLM needs no such help)
    student.backbone.model.language_model.norm.weight.requires_grad_(True)
    trainable = [p for p in student.parameters() if p.requires_grad]
    assert trainable
    batch = student.collate(_groups())
    opt = torch.optim.Adam(trainable, lr=lr)
    first = None
    for _ in range(steps):
        loss = student(batch)["loss"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(student(batch)["loss"])
    assert last <= 0.1 * first, (first, last)
    saved = student.save(tmp_path / "trained")
    model = reason2rank.load(saved, dtype="fp32")
    with torch.no_grad():
        want = student.reranker.score_batch([(g.query, g.docs) for g in _groups()])
    got = model.score_batch([(g.query, g.docs) for g in _groups()])
    for a, b in zip(got, want):
        assert a.tolist() == pytest.approx(b.tolist(), abs=1e-4)
    assert all(s[0] == max(s) for s in got)  # the positive of each group ranks first


def test_reason2rank_train_with_a_vlm_student_from_qrels_and_page_images(tmp_path):
    import json as _json

    from reason2rank.distill import train

    model_dir = make_tiny_qwen2_vl(tmp_path / "vlm")
    (tmp_path / "pages").mkdir()
    corpus, run, qrels, topics = [], [], [], []
    for q in range(3):
        topics.append(_json.dumps({"_id": f"q{q}", "text": f"query number {q} about water"}))
        for d in range(3):
            name = f"q{q}d{d}"
            random_image(56 + 28 * d, 84, seed=7 * q + d).save(tmp_path / "pages" / f"{name}.png")
            corpus.append(_json.dumps({"_id": name, "text": f"page {name}", "image": f"pages/{name}.png"}))
            run.append(f"q{q} Q0 {name} {d + 1} {3.0 - d} bm25")
            qrels.append(f"q{q} 0 {name} {1 if d == 0 else 0}")
    (tmp_path / "corpus.jsonl").write_text("\n".join(corpus) + "\n")
    (tmp_path / "topics.jsonl").write_text("\n".join(topics) + "\n")
    (tmp_path / "run.trec").write_text("\n".join(run) + "\n")
    (tmp_path / "qrels.txt").write_text("\n".join(qrels) + "\n")
    cfg = {
        "output_dir": str(tmp_path / "out"),
        "seed": 3,
        "student": {"type": "vlm", "model": str(model_dir), "lora": {"r": 4, "alpha": 8, "dropout": 0.0}},
        "data": {
            "train": {
                "qrels": str(tmp_path / "qrels.txt"),
                "run": str(tmp_path / "run.trec"),
                "topics": str(tmp_path / "topics.jsonl"),
                "docs": str(tmp_path / "corpus.jsonl"),
                "depth": 3,
            },
            "group_size": 3,
        },  # fmt: skip
        "objectives": {"yes_no_sft": 1.0, "infonce": 0.5},
        "train": {
            "max_steps": 4,
            "batch_size": 2,
            "lr": 1e-3,
            "save_every": 0,
            "log_every": 1,
            "device": "cpu",
        },
    }
    result = train(cfg)
    assert [h["step"] for h in result.history if "loss" in h][-1] == 4
    model = reason2rank.load(result.model_dir)
    assert model.family == "vlm"
    page = Doc("q0d0", "page q0d0", images=[str(tmp_path / "pages" / "q0d0.png")])
    assert len(model.rerank("query number 0 about water", [page])) == 1
