"""GRPO on page images (task ``vlm-listwise``, MM-R5) with the tiny random Qwen2-VL: examples with image
placeholders, the image-only processor TRL reads, a short run whose prompts carry the images, the saved model
opening as the VLM listwise strategy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grpo_fixtures import WORDS, record_loads, write_config  # noqa: E402

from tiny_vlm import make_tiny_qwen2_vl, random_image  # noqa: E402

pytest.importorskip("trl")

from reason2rank.rl import GRPOTrainConfig, train_grpo  # noqa: E402
from reason2rank.rl.trainer import build_examples, load_training_items  # noqa: E402

#: page sizes: two inside the budget below, one above it, one below it
SIZES = [(56, 84), (84, 56), (140, 140), (28, 28)]
BUDGET = {"min_pixels": 28 * 28 * 2, "max_pixels": 28 * 28 * 16}
#: the size each is resized to, by hand (Qwen2-VL's smart_resize, 28-pixel steps): 140² = 19,600 px > 12,544 shrinks
#: by sqrt(19600/12544) = 1.25 to 112² = 12,544; 28² = 784 < 1,568 grows by sqrt(2) to ceil(1.41)·28 = 56
RESIZED = {(56, 84): (56, 84), (84, 56): (84, 56), (140, 140): (112, 112), (28, 28): (56, 56)}


def write_toy_pages(root: Path, queries: int = 3, negatives: int = 2) -> None:
    """Pages as PNG files with a docs JSONL (``image`` paths relative to it), a TREC run, topics and qrels:
    query *q*'s positive ``q-pos`` and negatives ``q-neg-i``; page sizes cycle through ``SIZES``."""
    (root / "pages").mkdir(parents=True, exist_ok=True)
    docs, run, topics, qrels = [], [], [], []
    n = 0
    for i in range(queries):
        topics.append(f"{i}\t{WORDS[i]} {WORDS[i + 1]}")
        ids = [f"{i}-pos", *(f"{i}-neg-{k}" for k in range(negatives))]
        for rank, doc_id in enumerate(ids):
            h, w = SIZES[n % len(SIZES)]
            random_image(h, w, seed=n).save(root / "pages" / f"{doc_id}.png")
            docs.append({"id": doc_id, "text": "", "image": f"pages/{doc_id}.png"})
            run.append(f"{i} Q0 {doc_id} {rank + 1} {10 - rank} bm25")
            n += 1
        qrels.append(f"{i} 0 {i}-pos 1")
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "run.trec").write_text("\n".join(run) + "\n")
    (root / "topics.tsv").write_text("\n".join(topics) + "\n")
    (root / "qrels.txt").write_text("\n".join(qrels) + "\n")


def _config(root: Path, model: str, **grpo) -> dict:
    return {
        "method": "grpo", "task": "vlm-listwise", "output_dir": "run", "model": model, "seed": 0,
        "data": {"run": "run.trec", "topics": "topics.tsv", "docs": "docs.jsonl", "qrels": "qrels.txt",
                 "window": 3, "depth": 3, "image_root": ".", **BUDGET},
        "grpo": {"max_steps": 1, "prompts_per_step": 1, "num_generations": 2, "max_completion_length": 4, **grpo},
    }  # fmt: skip


def test_examples_hold_image_placeholders_and_their_pages(tmp_path):
    write_toy_pages(tmp_path)
    model = make_tiny_qwen2_vl(tmp_path / "vlm")
    cfg = GRPOTrainConfig.from_dict(_config(tmp_path, str(model)), base_dir=tmp_path)
    items, qrels = load_training_items(cfg)
    examples = build_examples(cfg, items, qrels).examples
    assert len(examples) == 3
    ex = examples[0]
    parts = [c for m in ex["messages"] for c in m["content"]]
    assert [c for c in parts if c["type"] == "image"] == [{"type": "image"}] * 3  # one page per slot
    assert [Path(str(ref.path)).stem for ref in ex["images"]] == ex["docids"]  # in slot order
    text = "".join(c.get("text", "") for c in parts)
    assert "Image 1:" in text and "Image 3:" in text
    assert ex["positives"] == [ex["docids"].index(f"{ex['qid']}-pos") + 1]


def _hand_lengths(processor, rows) -> list[int]:
    """Each row's prompt length by hand: its text with one placeholder token per page, each placeholder then
    becoming (h/28)·(w/28) image tokens for the page's resized size."""
    from trl.data_utils import prepare_multimodal_messages

    out = []
    for row in rows:
        text = processor.apply_chat_template(
            prepare_multimodal_messages(row["prompt"], images=row["images"]),
            add_generation_prompt=True,
            tokenize=False,
        )
        n_text = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        out.append(n_text + sum(img.height * img.width // 28**2 - 1 for img in row["images"]))
    return out


def test_image_only_processor_expands_each_page_into_its_grid_of_tokens(tmp_path):
    from trl.data_utils import prepare_multimodal_messages

    from reason2rank.rl.vlm import load_vlm_policy, longest_vlm_prompt, vlm_rows

    write_toy_pages(tmp_path)
    model_dir = make_tiny_qwen2_vl(
        tmp_path / "vlm"
    )  # its own budget (3,136 .. 50,176 px) differs from BUDGET
    cfg = GRPOTrainConfig.from_dict(_config(tmp_path, str(model_dir)), base_dir=tmp_path)
    items, qrels = load_training_items(cfg)
    examples = build_examples(cfg, items, qrels)
    _model, processor = load_vlm_policy(cfg, prefix="")
    from transformers.processing_utils import ProcessorMixin

    assert isinstance(processor, ProcessorMixin)  # what TRL's VLM path requires
    rows = vlm_rows(cfg, examples, processor)
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    from PIL import Image

    for ex, row in zip(examples.examples, rows):
        originals = [Image.open(ref.path) for ref in ex["images"]]
        # the pages were resized into the data's budget, by hand
        assert [(i.height, i.width) for i in row["images"]] == [
            RESIZED[(o.height, o.width)] for o in originals
        ]
        assert all(
            i.format is None for i in row["images"]
        )  # stored as PNG by datasets, not re-encoded as JPEG
        grid_tokens = sum(h * w // 28**2 for h, w in (RESIZED[(o.height, o.width)] for o in originals))
        # the processor resizes the original pages into the same budget (load_vlm_policy set it)
        out = processor.apply_chat_template([prepare_multimodal_messages(row["prompt"], images=originals)],
                                            add_generation_prompt=True, tokenize=True, return_dict=True)  # fmt: skip
        assert (
            list(out["input_ids"][0]).count(pad) == grid_tokens
        )  # one token per 28x28 pixels (patch 14, merge 2)
        assert out["pixel_values"].shape[0] == 4 * grid_tokens  # 2x2 patches per token
    assert longest_vlm_prompt(processor, rows) == max(_hand_lengths(processor, rows))
    with pytest.raises(ValueError, match="no video processor"):
        processor(text=["x"], videos=[[rows[0]["images"][0]]])


def test_vlm_listwise_run_trains_on_pages_and_opens_as_the_vlm_listwise_strategy(tmp_path, monkeypatch):
    from transformers import AutoModelForImageTextToText

    import reason2rank
    from reason2rank.strategies.vlm_listwise import VLMListwiseReranker
    from reason2rank.types import Doc, Query

    write_toy_pages(tmp_path)
    model_dir = make_tiny_qwen2_vl(tmp_path / "vlm")
    cfg_file = write_config(tmp_path / "v.yaml", _config(tmp_path, str(model_dir)))
    loads = record_loads(monkeypatch, AutoModelForImageTextToText)
    result = train_grpo(GRPOTrainConfig.from_yaml(cfg_file))
    assert loads and not [
        p for p in loads if p.parent == result.model_dir.parent
    ]  # saving reads nothing back
    assert result.steps == 1 and result.history[0]["reward"] == 0.0  # 4 random tokens never hold the format
    info = json.loads((result.model_dir / "training.json").read_text())
    assert info["task"] == "vlm-listwise" and info["examples"] == 3
    # the prompts the policy saw held the pages: text tokens plus (h/28)(w/28) tokens per resized page
    from reason2rank.rl.vlm import load_vlm_policy, vlm_rows

    cfg = GRPOTrainConfig.from_yaml(cfg_file)
    _model, processor = load_vlm_policy(cfg, prefix="")
    rows = vlm_rows(cfg, build_examples(cfg, *load_training_items(cfg)), processor)
    assert info["longest_prompt_tokens"] == max(_hand_lengths(processor, rows))
    ranker = reason2rank.load(result.model_dir)
    assert isinstance(ranker, VLMListwiseReranker)
    assert ranker.window == 3 and ranker.prompt.version == "listwise/mm-r5-v1"
    assert (ranker.budget.min_pixels, ranker.budget.max_pixels) == (
        BUDGET["min_pixels"],
        BUDGET["max_pixels"],
    )
    docs = [Doc(id=f"p{i}", text=None, images=[str(tmp_path / "pages" / f"0-neg-{i}.png")]) for i in range(2)]
    out = ranker.rerank(Query(id="q", text="cat dog"), docs)
    assert sorted(d.doc.id for d in out) == ["p0", "p1"]
    assert out.info["windows"] == 1 and out.info["backend_calls"] == 1  # the VLM saw the two pages


def test_full_fine_tuning_freezes_the_vision_tower_and_lora_skips_it(tmp_path):
    import re

    from reason2rank.rl.trainer import _peft_config
    from reason2rank.rl.vlm import load_vlm_policy

    model_dir = make_tiny_qwen2_vl(tmp_path / "vlm")
    cfg = GRPOTrainConfig.from_dict({**_config(tmp_path, str(model_dir)), "lora": None}, base_dir=tmp_path)
    model, _ = load_vlm_policy(cfg, prefix="")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("visual" not in n for n in trainable)
    assert {n for n, _ in model.named_parameters() if "visual" not in n} == trainable
    pattern = _peft_config(GRPOTrainConfig.from_dict(_config(tmp_path, str(model_dir)))).target_modules
    names = [n for n, _ in model.named_modules()]
    hit = [n for n in names if re.fullmatch(pattern, n)]
    assert hit and not [n for n in hit if "visual" in n]  # LoRA on the language model's projections only
    assert any(
        re.search(r"visual.*\.(qkv|proj|fc1|fc2)$", n) for n in names
    )  # the tower has linears of its own


def test_the_answer_prefix_follows_the_generation_prompt(tmp_path):
    from reason2rank.scorers.image_only_processor import training_processor

    model_dir = make_tiny_qwen2_vl(tmp_path / "vlm")
    messages = [{"role": "user", "content": [{"type": "text", "text": "rank {{these}}"}]}]
    plain = training_processor(str(model_dir)).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    prefixed = training_processor(str(model_dir), prefix="<think>{%").apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    assert plain.endswith("<|im_start|>assistant\n") and prefixed == plain + "<think>{%"  # taken literally


def test_vlm_listwise_config_errors(tmp_path):
    base = _config(tmp_path, "m")
    bad = {**base, "data": {**base["data"], "min_pixels": 0}}
    with pytest.raises(ValueError, match="data.min_pixels must be a positive int"):
        GRPOTrainConfig.from_dict(bad)
    bad = {**base, "grpo": {**base["grpo"], "format_warmup_steps": 5}}
    with pytest.raises(ValueError, match="no format warm-up"):
        GRPOTrainConfig.from_dict(bad)
    # a text task's fingerprint does not see the image keys (earlier runs resume)
    text = {**base, "task": "listwise", "data": {k: v for k, v in base["data"].items() if k not in BUDGET}}
    moved = {**text, "data": {**text["data"], "min_pixels": 28 * 28 * 8}}
    assert GRPOTrainConfig.from_dict(text).fingerprint() == GRPOTrainConfig.from_dict(moved).fingerprint()
