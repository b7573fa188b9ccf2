"""``rerank_dataset``: a run of any size reranked on Ray Data by a pool of stateful actors.

Each actor loads the model once (``reason2rank.load``) and is fed batches: pointwise families get *pairs* of
many queries in one batch (their scores do not depend on the other documents of a query), and order-returning
families (listwise, setwise, pairwise, ICR, two stages, the cascade) and every explained run get *whole
queries* (a Dataset input is grouped with ``groupby("qid").map_groups`` first). The driver puts each query's
scores in order with the core's own ``rank_docs`` (ties in first-stage order, documents without text last at
``min - 1``), so the rows and ranks are the in-process reranker's. A pointwise score may differ from the
in-process one in the last bits of a float32 (about 1e-7): an fp32 forward's sums depend on how far the batch it
ran in was padded, and the in-process engine batches all queries at once, the actors a slice each. With
``batch_size=1`` both give the same bits (tested), when MKL is told to be reproducible in every process
(``MKL_CBWR=AVX512,STRICT``, e.g. through ``ray_init={"runtime_env": {"env_vars": {...}}}``); without it MKL picks
kernels by buffer alignment and the same pair can differ in its last bit between two processes.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reason2rank.distributed.cluster import actor_pool, import_ray, local_cpus, ray_session, user_error
from reason2rank.distributed.rows import (
    EXPLANATION_COLUMNS,
    as_dataset,
    items_table,
    ordered_docs,
    pack_query,
    pairs_table,
    results_table,
    sort_pairs_by_length,
    write_results,
)
from reason2rank.reranker import Reranker, prepare_items, rank_docs
from reason2rank.types import Doc, Query, ScoredDoc, is_readable

__all__ = [
    "DistributedRun",
    "PairScorer",
    "QueryRanker",
    "auto_pairs_per_call",
    "rank_mode",
    "rerank_dataset",
]

MODES = ("auto", "pairs", "queries")
#: an automatic pairs_per_call gives each actor about this many calls of an in-memory run
CALLS_PER_ACTOR = 4
#: its bounds, and the size for a Dataset input (whose length is not known)
AUTO_PAIRS_PER_CALL = (64, 4096, 512)


def auto_pairs_per_call(n_pairs: int | None, concurrency: int) -> int:
    """Pairs per actor call when none is given: an in-memory run of ``n_pairs`` is cut into about
    ``CALLS_PER_ACTOR`` calls per actor (few calls: each call's length-sorted batches pad less — the in-process
    engine sorts the whole run at once — and the per-call cost is paid less often; several per actor: the actors
    stay busy while the driver collects, and a slow actor is not left with a large share), within
    ``AUTO_PAIRS_PER_CALL``'s bounds; a Dataset input gets its default."""
    low, high, unknown = AUTO_PAIRS_PER_CALL
    if not n_pairs:
        return unknown
    return max(low, min(high, -(-n_pairs // (CALLS_PER_ACTOR * concurrency))))


@dataclass
class DistributedRun:
    """What ``rerank_dataset`` returns: per query (in input order; a Dataset's queries by qid) its ranked
    ``ScoredDoc`` list (documents carry their id only), and how the run went."""

    results: list[tuple[str, list[ScoredDoc]]]
    mode: str
    actors: int
    pairs: int
    elapsed_s: float
    missing_text: int = 0
    explain: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def by_qid(self) -> dict[str, list[ScoredDoc]]:
        """qid -> ranked list."""
        return dict(self.results)

    def table(self) -> Any:
        """The output rows as a pyarrow Table (``qid, docno, score, rank`` [+ explanations]; rank 0-based)."""
        return results_table(self.results, explain=bool(self.explain))

    def write(self, path: str | os.PathLike[str], tag: str = "reason2rank") -> Path:
        """Write atomically: Parquet for ``*.parquet``, else a TREC run (rank + 1)."""
        write_results(path, self.results, tag=tag, explain=bool(self.explain))
        return Path(path)


def rank_mode(model: str | os.PathLike[str] | None, family: str | None = None, explain: int = 0) -> str:
    """``"pairs"`` for a pointwise family (it implements ``score_batch`` only), else ``"queries"``; explained
    runs always go by whole queries (the top-k of a query is known only once all of it is scored)."""
    return "queries" if explain else _mode_of(_family(model, family))


def _mode_of(cls: Any) -> str:
    """``"pairs"`` for a family that only scores (``Reranker.rank_batch`` is its own), else ``"queries"``."""
    return "pairs" if cls.rank_batch is Reranker.rank_batch else "queries"


def _family(model: str | os.PathLike[str] | None, family: str | None) -> type[Reranker]:
    """The reranker class ``model`` opens as (``family``, else its ``r2r_model.json``)."""
    from reason2rank.load import family_class
    from reason2rank.model_dir import read_r2r_config

    name = family
    if name is None:
        cfg, _root = read_r2r_config(str(model))
        if cfg is None:
            raise ValueError(
                f"{model} has no r2r_model.json: pass family= (e.g. family='cross-encoder') so the actors know "
                "how to open it"
            )
        name = str(cfg["family"])
    return family_class(name)  # type: ignore[return-value]


class _ModelActor:
    """Loads the model once per actor; CPU actors use as many torch threads as they hold logical CPUs."""

    def __init__(
        self,
        model: Any,
        options: Mapping[str, Any],
        threads: int | None = None,
        explain: int = 0,
    ) -> None:
        if threads:
            import torch

            from reason2rank.cpu_isa import set_inference_threads

            torch.set_num_threads(threads)
            set_inference_threads(threads)  # an exported model's ONNX Runtime / OpenVINO threads too
        import reason2rank

        opts = {"progress": False, **dict(options)}
        self.model = reason2rank.load(model, **opts)
        self.explain = explain


class PairScorer(_ModelActor):
    """A pointwise family's scores for a batch of (query, document) rows of any queries; ``r2r_score`` is null
    for a document without text (the driver ranks it last)."""

    def __call__(self, batch: Any) -> Any:
        """Score one pyarrow batch of pair rows; returns ``qid, docno`` (+ ``rank``/``score``) and ``r2r_score``."""
        import pyarrow as pa

        cols = batch.to_pydict()
        n = len(cols["qid"])
        titles = cols.get("title") or [None] * n
        groups: dict[str, list[int]] = {}
        for i, qid in enumerate(cols["qid"]):
            groups.setdefault(str(qid), []).append(i)
        items = [
            (
                Query(qid, cols["query"][rows[0]]),
                [Doc(str(cols["docno"][i]), cols["text"][i], titles[i]) for i in rows],
            )
            for qid, rows in groups.items()
        ]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # documents without text: the driver counts and reports them
            prepared = prepare_items(items, reads_images=self.model.reads_images)
            work = [
                [j for j, d in enumerate(docs) if is_readable(d, self.model.reads_images)]
                for _, docs in prepared
            ]
            todo = [(prepared[k][0], [prepared[k][1][j] for j in idx]) for k, idx in enumerate(work) if idx]
            rankings = self.model.rank_batch(todo) if todo else []
        scores: list[float | None] = [None] * n
        it = iter(rankings)
        for rows, idx in zip(groups.values(), work):
            if not idx:
                continue
            ranking = next(it)
            for j, s in zip(idx, ranking.scores):
                scores[rows[j]] = float(s)
        out = {"qid": [str(q) for q in cols["qid"]], "docno": [str(d) for d in cols["docno"]]}
        for key in ("rank", "score"):
            if key in cols:
                out[key] = cols[key]
        table = pa.table(out)
        return table.append_column("r2r_score", pa.array(scores, pa.float64()))


class QueryRanker(_ModelActor):
    """Whole queries (one row each: ``qid``, ``query``, lists ``docnos``, ``texts``, ``titles``) ranked with
    ``rerank_batch`` (explained when asked); one row per document comes back."""

    def __call__(self, batch: Any) -> Any:
        """Rank one pyarrow batch of query rows; returns one row per document with its score and rank."""
        import pyarrow as pa

        cols = batch.to_pydict()
        images = cols.get("images") or [None] * len(cols["qid"])
        items = [(Query(str(cols["qid"][r]), cols["query"][r]), _row_docs(cols, r, images[r]))
                 for r in range(len(cols["qid"]))]  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ranked = self.model.rerank_batch(items, explain=self.explain)
        out: dict[str, list[Any]] = {
            k: [] for k in ("qid", "docno", "score", "rank", "readable", *EXPLANATION_COLUMNS)
        }
        for (query, _docs), lst in zip(items, ranked):
            for sd in lst:
                out["qid"].append(query.id)
                out["docno"].append(sd.doc.id)
                out["score"].append(float(sd.score))
                out["rank"].append(int(sd.rank))
                out["readable"].append(is_readable(sd.doc, self.model.reads_images))
                for k in EXPLANATION_COLUMNS:
                    out[k].append(getattr(sd, k))
        types = {"score": pa.float64(), "rank": pa.int64(), "readable": pa.bool_()}
        return pa.table({k: pa.array(v, types.get(k, pa.string())) for k, v in out.items()})


def _row_docs(cols: Mapping[str, list[Any]], row: int, images: Sequence[Any] | None) -> list[Doc]:
    """The documents of one whole-query row (``items_table``'s list columns), with their image paths if any."""
    docnos, texts = cols["docnos"][row], cols["texts"][row]
    titles = cols["titles"][row] or [None] * len(docnos)
    pages = images or [None] * len(docnos)
    return [Doc(str(d), t, ti, images=tuple(im or ())) for d, t, ti, im in zip(docnos, texts, titles, pages)]


def length_tokenizer(model: str | os.PathLike[str] | None, options: Mapping[str, Any]) -> Any | None:
    """The model's tokenizer when the driver can open it from local files alone (a model directory, or a hub id
    already in the cache), for ordering pairs by tokens; else ``None`` (pairs are ordered by characters). Only
    the tokenizer is read; the model itself is loaded by the actors."""
    if model is None:
        return None
    from transformers import AutoTokenizer

    kw = {k: options[k] for k in ("revision", "token", "trust_remote_code") if options.get(k)}
    try:
        return AutoTokenizer.from_pretrained(str(model), local_files_only=True, **kw)
    except Exception:  # no tokenizer files there (a GGUF file, an adapter only): the character order is used
        return None


def _chunks(table: Any, size: int) -> list[Any]:
    return [table.slice(start, size) for start in range(0, table.num_rows, size)] or [table]


def rerank_dataset(
    model: str | os.PathLike[str] | None,
    data: Any,
    *,
    out: str | os.PathLike[str] | None = None,
    tag: str = "reason2rank",
    family: str | None = None,
    explain: int = 0,
    concurrency: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    pairs_per_call: int | None = None,
    queries_per_call: int = 8,
    mode: str = "auto",
    address: str | None = None,
    ray_init: Mapping[str, Any] | None = None,
    progress: bool = False,
    **load_options: Any,
) -> DistributedRun:
    """Rerank ``data`` with ``concurrency`` actors, each holding ``model`` (``reason2rank.load(model, family=...,
    **load_options)``), and write ``out`` when given (atomically; Parquet for ``*.parquet``, else a TREC run).

    ``data``: ``[(Query, docs), ...]`` (what ``reason2rank.data.load_candidates`` reads from a TREC run + topics +
    docs or a rank_llm JSON), a Ray Dataset, or Parquet file(s) with the columns of ``reason2rank.distributed.rows``.
    ``num_cpus`` / ``num_gpus``: what each actor holds (``num_gpus=1`` on a GPU cluster: one model per GPU).
    ``pairs_per_call`` / ``queries_per_call``: the batch an actor is given at a time (its engine batches inside);
    ``pairs_per_call=None``: ``auto_pairs_per_call`` (about 4 calls per actor of an in-memory run, 512 for a Dataset).
    ``mode``: ``auto`` (pointwise families by pairs, the rest by queries), ``pairs`` or ``queries``. Ray: the
    running one, else ``address``, else a local start (``ray_init``: more ``ray.init`` options).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    for name, value in (("concurrency", concurrency), ("pairs_per_call", pairs_per_call),
                        ("queries_per_call", queries_per_call)):  # fmt: skip
        if name == "pairs_per_call" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if num_cpus < 0 or num_gpus < 0:
        raise ValueError(f"num_cpus and num_gpus must be >= 0, got {num_cpus} and {num_gpus}")
    if isinstance(explain, bool) or not isinstance(explain, int) or explain < 0:
        raise ValueError(f"explain must be a non-negative int, got {explain!r}")
    cls = _family(model, family)
    reads = bool(cls.reads_images)  # a vision family: its pages travel as paths
    natural = _mode_of(cls)
    chosen = ("queries" if explain else natural) if mode == "auto" else mode
    if chosen == "pairs" and explain:
        raise ValueError("explain=k needs whole queries: use mode='auto' or mode='queries'")
    if chosen == "pairs" and natural == "queries":
        raise ValueError(
            f"mode='pairs' scores each (query, document) pair apart from the others, which only a pointwise family "
            f"can do; {model} ranks a query's documents together (listwise, setwise, pairwise, ICR, ...): use "
            "mode='auto' or mode='queries'"
        )
    ray = import_ray()
    options = dict(load_options)
    if family is not None:
        options["family"] = family
    threads = max(1, int(num_cpus)) if not num_gpus and num_cpus >= 1 else None
    actor_args = {"model": model, "options": options, "threads": threads, "explain": explain}
    remote = actor_pool(ray, concurrency, num_cpus, num_gpus)
    start = time.perf_counter()

    query_order: list[str] | None = None
    items: list[tuple[Query, list[Doc]]] | None = None
    if isinstance(data, (list, tuple)):
        items = prepare_items(list(data), reads_images=reads)  # the in-process validation, on the driver
        query_order = [q.id for q, _ in items]
        if len({*query_order}) != len(query_order):
            raise ValueError("two items have the same query id; give each query one (Query, docs) item")
    n_pairs = sum(len(d) for _, d in items) if items is not None else 0
    if pairs_per_call is None:
        pairs_per_call = auto_pairs_per_call(n_pairs, concurrency)
    if items is not None and n_pairs == 0:
        run = DistributedRun([(q.id, []) for q, _ in items], chosen, 0, 0, 0.0, explain=explain)
        if out is not None:
            run.write(out, tag=tag)
        return run

    blocks = None  # an in-memory run's rows, built (and checked) before Ray starts
    if items is not None and chosen == "pairs":
        table = sort_pairs_by_length(pairs_table(items), length_tokenizer(model, options))
        blocks = _chunks(table, pairs_per_call)
    elif items is not None:
        blocks = _chunks(items_table([(q, d) for q, d in items if d], images=reads), queries_per_call)
    with ray_session(
        address, num_cpus=local_cpus(concurrency, num_cpus), init_options=ray_init, progress=progress
    ):
        if blocks is not None:
            ds = ray.data.from_arrow(blocks)
        else:
            ds = as_dataset(ray, data)
            if chosen == "queries":
                ds = ds.groupby("qid").map_groups(pack_query, batch_format="pyarrow")
        actor = PairScorer if chosen == "pairs" else QueryRanker
        size = pairs_per_call if chosen == "pairs" else queries_per_call
        ds = ds.map_batches(
            actor, batch_size=size, batch_format="pyarrow", fn_constructor_kwargs=actor_args, **remote
        )
        try:
            rows: dict[str, dict[str, list[Any]]] = {}
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                _collect(rows, block.to_pydict())
        except Exception as e:
            err = user_error(e)
            if err is e:
                raise
            raise err from None
    if query_order is None:
        query_order = sorted(rows)
    results, missing = _finish(rows, query_order, chosen)
    run = DistributedRun(results, chosen, concurrency, n_pairs or sum(len(r) for _, r in results),
                         time.perf_counter() - start, missing_text=missing, explain=explain,
                         info={"pairs_per_call": pairs_per_call} if chosen == "pairs" else {})  # fmt: skip
    if missing and items is None:  # for (Query, docs) items prepare_items has said it already
        warnings.warn(
            f"{missing} document(s) have no text (None/NaN) and were ranked last, unscored", stacklevel=2
        )
    if out is not None:
        run.write(out, tag=tag)
    return run


def _collect(rows: dict[str, dict[str, list[Any]]], block: Mapping[str, list[Any]]) -> None:
    keys = [k for k in block if k != "qid"]
    for i, qid in enumerate(block["qid"]):
        dest = rows.get(qid)
        if dest is None:
            dest = rows[qid] = {k: [] for k in keys}
        for k in keys:
            dest[k].append(block[k][i])


def _finish(
    rows: Mapping[str, Mapping[str, list[Any]]], query_order: Sequence[str], mode: str
) -> tuple[list[tuple[str, list[ScoredDoc]]], int]:
    results: list[tuple[str, list[ScoredDoc]]] = []
    missing = 0
    for qid in query_order:
        got = rows.get(qid)
        if got is None:
            results.append((qid, []))
            continue
        if mode == "queries":
            ranked = [
                ScoredDoc(Doc(got["docno"][i], None), got["score"][i], got["rank"][i],
                          *(got[k][i] for k in EXPLANATION_COLUMNS))
                for i in range(len(got["docno"]))
            ]  # fmt: skip
            missing += sum(1 for r in got["readable"] if not r)
            results.append((qid, sorted(ranked, key=lambda sd: sd.rank)))
            continue
        order = ordered_docs({"qid": [qid] * len(got["docno"]), **got})
        docnos = [got["docno"][i] for i in order]
        if len(set(docnos)) != len(docnos):
            dups = sorted({d for d in docnos if docnos.count(d) > 1})
            raise ValueError(
                f"query {qid!r} has duplicate doc ids {dups}; each candidate needs a unique id (drop the duplicates, "
                "e.g. DataFrame.drop_duplicates(['qid', 'docno']))"
            )
        scores = [got["r2r_score"][i] for i in order]
        scored = [j for j, s in enumerate(scores) if s is not None]
        missing += len(order) - len(scored)
        import numpy as np

        ranked = rank_docs(
            [Doc(d, None) for d in docnos], np.array([scores[j] for j in scored]), scored=scored
        )
        results.append((qid, ranked))
    return results, missing
