"""ProRank stage 2 through the supervised trainer: the binary_relevance read-out (logit("1") - logit("0")) trained
with BCE, no new layers; the result opens as the causal-lm family with that read-out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpo_fixtures import write_toy_data  # noqa: E402

from reason2rank.data.candidates import read_rankllm_candidates  # noqa: E402
from reason2rank.distill import TrainConfig, TrainingSet, train  # noqa: E402


def _margin(scorer, items) -> float:
    """Mean score of the positive minus mean score of the negatives, over the toy queries."""
    gaps = []
    for q, docs in items:
        scores = {r.doc.id: r.score for r in scorer.rerank(q, docs)}
        neg = [s for d, s in scores.items() if not d.endswith("-pos")]
        gaps.append(scores[f"{q.id}-pos"] - sum(neg) / len(neg))
    return sum(gaps) / len(gaps)


@pytest.mark.slow
def test_tokens_readout_student_learns_without_new_layers(tmp_path, tiny_llama_dir):
    import reason2rank
    from reason2rank.scorers.causal_lm import RANK_HEAD_FILE, CausalLMReranker

    write_toy_data(tmp_path)
    items = read_rankllm_candidates(tmp_path / "candidates.json")
    TrainingSet.from_qrels(tmp_path / "qrels.txt", items).save(tmp_path / "train.jsonl")
    cfg = TrainConfig.from_dict({
        "output_dir": str(tmp_path / "out"), "seed": 0,
        "student": {"type": "decoder", "model": tiny_llama_dir, "max_length": 160, "readout": "tokens",
                    "prompt_template": "binary_relevance", "lora": None},
        "data": {"train": str(tmp_path / "train.jsonl"), "group_size": 3},
        "objectives": {"pointwise_bce": 1.0},
        "train": {"max_steps": 30, "batch_size": 2, "lr": 5e-3, "log_every": 1, "device": "cpu", "warmup_ratio": 0.0},
    })  # fmt: skip
    before = _margin(
        CausalLMReranker(tiny_llama_dir, prompt_template="binary_relevance", max_length=160), items
    )
    result = train(cfg)
    model = reason2rank.load(result.model_dir)
    assert isinstance(model, CausalLMReranker)
    assert model.readout["type"] == "tokens" and model.rank_head is None
    assert (model.readout["positive"], model.readout["negative"]) == ("1", "0")
    assert not (result.model_dir / RANK_HEAD_FILE).exists()  # no new layers
    after = _margin(model, items)
    assert after > before + 0.5, (before, after)


def test_tokens_readout_needs_a_tokens_prompt_and_a_decoder(tiny_llama_dir):
    from reason2rank.distill.students import DecoderStudent

    with pytest.raises(ValueError, match="tokens read-out"):
        DecoderStudent(tiny_llama_dir, {"pointwise_bce": 1.0}, readout="tokens", prompt_template="r2r_student",
                       lora=None)  # fmt: skip
    base = {"output_dir": "o", "student": {"model": "m"}, "data": {"train": "t"}}
    with pytest.raises(ValueError, match="for student.type decoder"):
        TrainConfig.from_dict({**base, "student": {"model": "m", "readout": "tokens"}})
    with pytest.raises(ValueError, match="rank_head or tokens"):
        TrainConfig.from_dict({**base, "student": {"model": "m", "type": "decoder", "readout": "logits"}})
