"""The GPU checks, as one prepared script for a machine with a CUDA device (none was lent to this project's sessions
so far, so this script has run on the CPU only, in its ``--quick`` smoke form).

Each step runs in its own process with its own time limit, so one failure or hang does not cost the others; what
each step measured goes to ``OUT/<step>.json`` and its output to ``OUT/<step>.log``, and ``OUT/summary.json``
says how each ended. Steps (``--steps`` picks some):

- ``scoring``: TREC DL19 BM25 top-100 (4,300 pairs, max_length 256) with all-MiniLM-L6-v2 as a cross-encoder
  (the head seeded as in ``cross_encoder_throughput.py``): sentence-transformers ``CrossEncoder.predict`` on the
  GPU in fp32 and in bf16, against reason2rank torch in fp32 and in bf16 (the GPU default; attention through
  transformers' SDPA). Pairs/s (medians of ``--rounds``), the ratio to sentence-transformers fp32, Spearman
  against reason2rank fp32, the attention implementation, peak GPU memory.
- ``oom``: the engine's out-of-memory back-off with a real batch too large for the GPU: distinct ~300-token pairs
  (65,536 by default), ``batch_size`` = all of them; the engine must warn, halve until a batch fits and score every
  pair; its scores are compared with the same pairs scored at ``batch_size=256``.
- ``pytest-gpu``: the tests marked ``gpu`` (the accelerate FSDP training run in bf16 with a resume, and Ray
  actors holding ``num_gpus``).
- ``vlm``: ``benchmarks/vlm_pages.py --shape 2b --device cuda --dtype bf16`` (pages/s batched vs one page at a
  time: the multimodal issue's >= 3x target).

    python benchmarks/gpu_check.py --out gpu-figures          # on the GPU machine (an estimate: 5-8 min)
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/g   # a smoke run of the script itself
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = ("scoring", "oom", "pytest-gpu", "vlm")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _gpu_facts(torch) -> dict:
    if not torch.cuda.is_available():
        return {"device": "cpu"}
    p = torch.cuda.get_device_properties(0)
    return {"device": p.name, "memory_gib": round(p.total_memory / 2**30, 1), "bf16": torch.cuda.is_bf16_supported(),
            "torch": torch.__version__, "cuda": torch.version.cuda}  # fmt: skip


def _sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_scoring(args) -> dict:
    import numpy as np
    import torch
    from cross_encoder_throughput import build_cross_encoder_dir, spearman
    from sentence_transformers import CrossEncoder

    import reason2rank
    from reason2rank.data import read_rankllm_candidates

    items = read_rankllm_candidates(Path(args.data) / "bm25_top100.json")[: 2 if args.quick else None]
    pairs = [(q.text, d.full_text) for q, docs in items for d in docs]
    bs, ml, dev = args.batch_size, 256, args.device
    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_cross_encoder_dir(Path(tmp) / "minilm-ce"))
        systems = {}
        for dtype in ("fp32", "bf16"):
            st_kwargs = {"model_kwargs": {"dtype": torch.bfloat16}} if dtype == "bf16" else {}
            st = CrossEncoder(path, max_length=ml, device=dev, **st_kwargs)
            systems[f"sentence-transformers {dtype}"] = lambda st=st: np.asarray(
                st.predict(pairs, batch_size=bs, show_progress_bar=False), dtype=np.float64
            )
        ours = {d: reason2rank.load(path, family="cross-encoder", device=dev, dtype=d, batch_size=bs, max_length=ml,
                                    progress=False) for d in ("fp32", "bf16")}  # fmt: skip
        for d, model in ours.items():
            systems[f"reason2rank {d}"] = lambda model=model: np.concatenate(model.score_batch(items)).astype(
                np.float64
            )
        attn = getattr(ours["bf16"].model.config, "_attn_implementation", None)
        for fn in systems.values():  # warm-up: kernels, allocator
            fn()
        times: dict[str, list[float]] = {k: [] for k in systems}
        scores, peak = {}, {}
        for _ in range(args.rounds):
            for name, fn in systems.items():
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                _sync(torch)
                t0 = time.perf_counter()
                scores[name] = fn()
                _sync(torch)
                times[name].append(time.perf_counter() - t0)
                if torch.cuda.is_available():
                    peak[name] = round(torch.cuda.max_memory_allocated() / 2**20)
    ref, base = scores["reason2rank fp32"], "sentence-transformers fp32"
    rows = {}
    for name in systems:
        tput = len(pairs) / statistics.median(times[name])
        rows[name] = {"pairs_per_s": round(tput, 1), "spearman_vs_reason2rank_fp32": round(spearman(scores[name], ref), 5),
                      "peak_gpu_mib": peak.get(name)}  # fmt: skip
    for name in rows:
        rows[name]["ratio_to_st_fp32"] = round(rows[name]["pairs_per_s"] / rows[base]["pairs_per_s"], 2)
        print(f"{name:>28}: {rows[name]}", flush=True)
    return {
        "pairs": len(pairs),
        "batch_size": bs,
        "max_length": ml,
        "attn_implementation": attn,
        "systems": rows,
    }


def step_oom(args) -> dict:
    import warnings

    import numpy as np
    from cross_encoder_throughput import build_cross_encoder_dir, spearman

    import reason2rank
    from reason2rank.data import read_rankllm_candidates

    items = read_rankllm_candidates(Path(args.data) / "bm25_top100.json")
    queries = [q.text for q, _ in items]
    texts = [d.full_text for _, docs in items for d in docs]
    n = 512 if args.quick else args.oom_pairs
    # distinct pairs (the engine scores identical pairs once), each of three passages and a number: ~300 tokens,
    # ~3 MB of bf16 activations a pair in MiniLM, so the default 65,536 in one batch needs ~200 GB
    qs = [queries[i % len(queries)] for i in range(n)]
    ds = [" ".join([texts[i % len(texts)], texts[(i * 7919) % len(texts)], texts[(i * 104729) % len(texts)], str(i)])
          for i in range(n)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = str(build_cross_encoder_dir(Path(tmp) / "minilm-ce"))
        big = reason2rank.load(path, family="cross-encoder", device=args.device, dtype="bf16", batch_size=n,
                               max_length=512, progress=False)  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            t0 = time.perf_counter()
            got = np.asarray(big.score_texts(qs, ds), dtype=np.float64)
            elapsed = time.perf_counter() - t0
        backoff = [str(w.message) for w in caught if "out of memory" in str(w.message)]
        small = reason2rank.load(path, family="cross-encoder", device=args.device, dtype="bf16", batch_size=256,
                                 max_length=512, progress=False)  # fmt: skip
        want = np.asarray(small.score_texts(qs, ds), dtype=np.float64)
    out = {"pairs": n, "first_batch_size": n, "backoff_warnings": backoff, "seconds": round(elapsed, 1),
           "all_scored": bool(np.isfinite(got).all() and len(got) == n),
           "max_abs_diff_vs_batch_256": float(np.abs(got - want).max()), "spearman_vs_batch_256": spearman(got, want)}  # fmt: skip
    if args.device == "cuda" and not backoff:
        out["note"] = "no out-of-memory happened: raise --oom-pairs for this GPU"
    out["passed"] = (
        out["all_scored"]
        and out["spearman_vs_batch_256"] > 0.999
        and (bool(backoff) or args.device != "cuda")
    )
    print(json.dumps(out, indent=1), flush=True)
    return out


def run_step(step: str, args, out: Path) -> dict:
    """Runs one step in a child process with a time limit; returns how it ended."""
    log = out / f"{step}.log"
    if step == "pytest-gpu":
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", "tests/distill", "tests/distributed"]
    elif step == "vlm":
        cmd = [sys.executable, str(HERE / "vlm_pages.py"), "--shape", "tiny" if args.quick else "2b",
               "--device", args.device, "--dtype", "bf16" if args.device == "cuda" else "fp32",
               "--queries", "1" if args.quick else "10", "--depth", "4" if args.quick else "10",
               "--out", str(out / "vlm.json")]  # fmt: skip
    else:
        cmd = [sys.executable, __file__, "--inner", step, "--out", str(out), "--device", args.device,
               "--data", args.data, "--rounds", str(args.rounds), "--batch-size", str(args.batch_size),
               "--oom-pairs", str(args.oom_pairs)] + (["--quick"] if args.quick else [])  # fmt: skip
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(
                cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=args.step_timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    ended = {"step": step, "returncode": rc, "seconds": round(time.perf_counter() - t0, 1), "log": log.name}
    print(json.dumps(ended), flush=True)
    return ended


def main() -> None:
    from bench_data import SHARED_DATA

    from reason2rank.data.io import atomic_write

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the figures and logs")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS)}")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--data", default=str(SHARED_DATA / "trec-dl19"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--oom-pairs", type=int, default=65536, help="pairs (and first batch size) of the oom step"
    )
    ap.add_argument("--step-timeout", type=int, default=240, help="seconds each step may run")
    ap.add_argument("--quick", action="store_true", help="a few pairs only: a smoke run of this script")
    ap.add_argument("--inner", choices=("scoring", "oom"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.inner:
        import torch

        result = {"gpu": _gpu_facts(torch), **(step_scoring if args.inner == "scoring" else step_oom)(args)}
        with atomic_write(out / f"{args.inner}.json") as f:
            f.write(json.dumps(result, indent=1))
        if result.get("passed") is False:  # the oom step's check failed: say so in the step's return code
            raise SystemExit(1)
        return
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        raise SystemExit(f"unknown step(s) {unknown}; the steps are {', '.join(STEPS)}")
    summary = [run_step(s, args, out) for s in steps]
    with atomic_write(out / "summary.json") as f:
        f.write(json.dumps(summary, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
