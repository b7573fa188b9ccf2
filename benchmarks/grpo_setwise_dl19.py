"""Rank-R1 setwise GRPO on the 43 DL19 queries with SmolLM2-135M-Instruct, on CPU, within a time budget.

    flock /tmp/r2r-bench.lock python benchmarks/grpo_setwise_dl19.py --out /tmp/r2r_grpo --train-minutes 12

What it does (figures go to OUT/results.json and a markdown summary on stdout):

1. splits the 43 judged queries (seeded): ``--heldout`` of them are held out, the rest train;
2. before training, on the held-out queries: the format-valid rate and reward of greedy answers to setwise prompts
   built exactly as for training (``--window`` documents, 1 positive of grade >= 2 + negatives of grade 0), and the
   setwise strategy's nDCG@10 reranking BM25's top ``--depth`` (heap sort, answers constrained to the format);
3. with ``--format-warmup-steps N``: N LoRA steps on well-formed answers with random ids first
   (``grpo.format_warmup_steps``: teaches the format, never the label), then the held-out answers of the
   warmed-up model (OUT/run/format_warmup), since a model that never writes the format gives GRPO only ties;
4. GRPO (``reason2rank.rl.train_grpo``, LoRA) on the training queries until ``--train-minutes`` of GRPO steps
   have passed (the step the budget ends at is recorded; the config is OUT/config.yaml and also runs as
   ``reason2rank train``);
5. the same two measurements with the trained model directory (opened by ``reason2rank.load``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "trec-dl19"
TEMPLATE = ROOT / "examples" / "grpo_rank_r1_think.txt"


def heldout_answers(model_dir: str, items: Any, qrels: Any, args: argparse.Namespace) -> dict[str, float]:
    """Greedy answers to held-out setwise prompts: format-valid rate and mean reward (accuracy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reason2rank.rl.examples import render_prompt, setwise_examples
    from reason2rank.rl.rewards import parse_setwise_answer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    ex = setwise_examples(items, qrels, window=args.window, examples_per_query=2, positive_grade=2,
                          seed=1234, prompt=str(TEMPLATE), max_words=args.max_words).examples  # fmt: skip
    valid = correct = 0
    samples = []
    for i in range(0, len(ex), 8):
        chunk = ex[i : i + 8]
        prompts = [render_prompt(tok, e["messages"], e["prefix"]) for e in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=args.completion_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)  # fmt: skip
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        for e, t in zip(chunk, texts):
            got = parse_setwise_answer(e["prefix"] + t)
            valid += got is not None
            correct += got == e["label"]
            if len(samples) < 3:
                samples.append(e["prefix"] + t)
    return {
        "prompts": len(ex),
        "format_valid": valid / len(ex),
        "reward": correct / len(ex),
        "samples": samples,
    }


def setwise_ndcg(model_dir: str, items: Any, qrels: Any, args: argparse.Namespace) -> dict[str, Any]:
    """nDCG@10 of the setwise strategy reranking the top ``depth`` of each held-out query."""
    import ir_measures

    import reason2rank
    from reason2rank.strategies.setwise import SetwiseReranker

    r2r = Path(model_dir) / "r2r_model.json"
    if r2r.is_file():
        ranker = reason2rank.load(model_dir, depth=args.depth)
    else:
        ranker = SetwiseReranker(model_dir, prompt=str(TEMPLATE), num_child=args.window - 1, k=10,
                                 max_words=args.max_words, max_new_tokens=args.completion_tokens,
                                 depth=args.depth)  # fmt: skip
    ranker.progress = False
    rankings = ranker.rank_batch([(q, docs) for q, docs in items])
    run = {}
    unparsed = comparisons = 0
    for (q, docs), rk in zip(items, rankings):
        run[q.id] = {d.id: float(sc) for d, sc in zip(docs, rk.scores)}
        unparsed += rk.info.get("unparsed", 0)
        comparisons += rk.info.get("comparisons", 0)
    bm25 = {q.id: {d.id: float(len(docs) - r) for r, d in enumerate(docs)} for q, docs in items}
    m = ir_measures.nDCG @ 10
    qrels = {q.id: qrels.get(q.id, {}) for q, _ in items}  # the held-out queries only
    score = ir_measures.calc_aggregate([m], qrels, run)[m]
    base = ir_measures.calc_aggregate([m], qrels, bm25)[m]
    return {"ndcg10": score, "bm25_ndcg10": base, "comparisons": comparisons, "unparsed": unparsed}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="/tmp/r2r_grpo")
    p.add_argument("--train-minutes", type=float, default=12.0)
    p.add_argument("--heldout", type=int, default=13)
    p.add_argument(
        "--window", type=int, default=4, help="documents per setwise prompt (1 positive + negatives)"
    )
    p.add_argument("--max-words", type=int, default=30)
    p.add_argument("--completion-tokens", type=int, default=64)
    p.add_argument("--depth", type=int, default=10, help="BM25 candidates the setwise strategy reranks")
    p.add_argument(
        "--max-steps", type=int, default=60, help="the schedule's length (the time budget may end it first)"
    )
    p.add_argument(
        "--model", help="the causal LM to train (default: SmolLM2-135M-Instruct, converted locally)"
    )
    p.add_argument(
        "--no-ndcg", action="store_true", help="skip the setwise nDCG@10 runs (hundreds of generations)"
    )
    p.add_argument("--skip-before", action="store_true", help="reuse the before-training figures of OUT")
    p.add_argument(
        "--ndcg-only",
        action="store_true",
        help="no training: the setwise nDCG@10 of the base model, OUT's warm-up and OUT's trained model",
    )
    p.add_argument(
        "--format-warmup-steps", type=int, default=0, help="format warm-up steps before GRPO (0: none)"
    )
    p.add_argument("--format-warmup-lr", type=float, default=2e-4)
    args = p.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    import yaml
    from transformers import TrainerCallback

    from reason2rank.data.candidates import load_candidates
    from reason2rank.data.trec import read_qrels
    from reason2rank.llm.gguf import smollm2_dir
    from reason2rank.rl import GRPOTrainConfig, train_grpo

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = args.model or str(smollm2_dir())
    items = load_candidates(DATA / "bm25_top100.json")
    qrels = read_qrels(DATA / "qrels.txt")
    qids = sorted(q.id for q, _ in items)
    random.Random(0).shuffle(qids)
    heldout = set(qids[: args.heldout])
    (out / "heldout_qids.txt").write_text("\n".join(sorted(heldout)) + "\n")
    test_items = [(q, list(d)[: args.depth]) for q, d in items if q.id in heldout]
    test_pool = [(q, d) for q, d in items if q.id in heldout]
    results_file = out / "results.json"
    results: dict[str, Any] = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results["setup"] = {"window": args.window, "max_words": args.max_words, "completion_tokens": args.completion_tokens,
                        "depth": args.depth, "heldout": sorted(heldout), "train_queries": len(qids) - len(heldout),
                        "model": "SmolLM2-135M-Instruct", "threads": torch.get_num_threads()}  # fmt: skip

    def save() -> None:
        tmp = results_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
        tmp.replace(results_file)

    if args.ndcg_only:
        models = [("before", base), ("warmup", str(out / "run" / "format_warmup")),
                  ("after", str(out / "run" / "model"))]  # fmt: skip
        for name, model_dir in models:
            if name != "before" and not Path(model_dir).is_dir():
                continue
            t = time.time()
            sw = setwise_ndcg(model_dir, test_items, qrels, args)
            results.setdefault(name, {})["setwise"] = {**sw, "seconds": time.time() - t}
            print(name, sw, f"{time.time() - t:.0f}s", file=sys.stderr, flush=True)
            save()
        print("| | setwise nDCG@10 | unparsed comparisons | seconds |\n|---|---|---|---|")
        for name, _ in models:
            if sw := results.get(name, {}).get("setwise"):
                print(
                    f"| {name} | {sw['ndcg10']:.4f} | {sw['unparsed']}/{sw['comparisons']} | {sw['seconds']:.0f} |"
                )
        print(f"BM25 nDCG@10 on the held-out queries: {sw['bm25_ndcg10']:.4f}")
        return 0

    if not (args.skip_before and "before" in results):
        t = time.time()
        results["before"] = {"answers": heldout_answers(base, test_pool, qrels, args)}
        print(
            "before answers",
            results["before"]["answers"],
            f"{time.time() - t:.0f}s",
            file=sys.stderr,
            flush=True,
        )
        results["before"]["setwise"] = setwise_ndcg(base, test_items, qrels, args)
        results["before"]["seconds"] = time.time() - t
        print("before", results["before"], file=sys.stderr, flush=True)
        save()

    config = {
        "method": "grpo", "task": "setwise", "output_dir": str(out / "run"), "seed": 42, "model": base,
        "lora": {"r": 16, "alpha": 32, "dropout": 0.05},
        "data": {"candidates": str(DATA / "bm25_top100.json"), "qrels": str(DATA / "qrels.txt"),
                 "exclude_queries": str(out / "heldout_qids.txt"), "depth": 100, "window": args.window,
                 "examples_per_query": 4, "positive_grade": 2, "negative_max_grade": 0,
                 "max_words": args.max_words, "prompt": str(TEMPLATE)},
        "grpo": {"max_steps": args.max_steps, "prompts_per_step": 2, "num_generations": 4,
                 "max_completion_length": args.completion_tokens, "temperature": 1.0, "lr": 5.0e-5,
                 "save_every": 5, "keep_checkpoints": 1, "tie_window": 5,
                 "format_warmup_steps": args.format_warmup_steps, "format_warmup_lr": args.format_warmup_lr},
    }  # fmt: skip
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    budget = args.train_minutes * 60

    class TimeBudget(TrainerCallback):
        """Stops GRPO ``budget`` seconds after its first step began (the warm-up is not counted)."""

        def __init__(self) -> None:
            self.start = time.time()

        def on_train_begin(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start = time.time()

        def on_step_end(self, a: Any, state: Any, control: Any, **kw: Any) -> None:
            if time.time() - self.start > budget:
                control.should_training_stop = True

    t = time.time()
    result = train_grpo(GRPOTrainConfig.from_yaml(out / "config.yaml"), callbacks=[TimeBudget()])
    results["train"] = {"steps": result.steps, "seconds": time.time() - t, "examples": result.examples,
                        "skipped": result.skipped, "resumed_from": result.resumed_from,
                        "curve": [{k: h.get(k) for k in ("step", "reward", "reward_std", "frac_reward_zero_std",
                                                         "completions/mean_length")} for h in result.history]}  # fmt: skip
    save()
    print("train", results["train"], file=sys.stderr, flush=True)
    if result.warmup:
        w = result.warmup
        results["warmup"] = {"steps": w["steps"], "seconds": w["seconds"], "loss_first": w["losses"][0],
                             "loss_last": w["losses"][-1], "reused": w["reused"]}  # fmt: skip
        results["warmup"]["answers"] = heldout_answers(
            str(out / "run" / "format_warmup"), test_pool, qrels, args
        )
        print("after warm-up", results["warmup"], file=sys.stderr, flush=True)
        save()
    t = time.time()
    results["after"] = {"answers": heldout_answers(str(result.model_dir), test_pool, qrels, args)}
    save()
    if not args.no_ndcg:
        results["after"]["setwise"] = setwise_ndcg(str(result.model_dir), test_items, qrels, args)
    results["after"]["seconds"] = time.time() - t
    save()
    b, a = results["before"], results["after"]
    print("| | format-valid | reward (held-out) | setwise nDCG@10 | unparsed comparisons |")
    print("|---|---|---|---|---|")
    rows = [("before", b), *([("after format warm-up", results["warmup"])] if "warmup" in results else []),
            ("after GRPO", a)]  # fmt: skip
    for name, r in rows:
        sw = r.get("setwise")
        ndcg = f"{sw['ndcg10']:.4f} | {sw['unparsed']}/{sw['comparisons']}" if sw else "- | -"
        print(f"| {name} | {r['answers']['format_valid']:.3f} | {r['answers']['reward']:.3f} | {ndcg} |")
    bm25 = next((r["setwise"]["bm25_ndcg10"] for _, r in rows if r.get("setwise")), None)
    if bm25 is not None:
        print(f"BM25 nDCG@10 on the held-out queries: {bm25:.4f}")
    print(f"GRPO steps {result.steps}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
