"""Teacher annotation on Ray: the resumable store's semantics, with many actors asking the teacher at once.

Each actor runs an ordinary ``reason2rank.teacher.Teacher`` on whole queries (so listwise windows and the
compare pairs, which follow the teacher's own direct grades, are the ones an in-process run asks) and writes into
its own *shard*, ``<store>.shards/shard-<id>.jsonl`` (an ``AnnotationStore``: complete lines, a lock, fsync).
Items the main store already holds are skipped: each actor reads the main store's keys, statuses and direct
grades when it starts. When every batch is done the driver merges the shards into the main store — appending each
record whose key the store lacks (or holds only as failed) — and deletes them.

A killed job leaves its shards; the next run merges them before it starts, so it loses only the items that
were in flight, and a merge that is itself killed is merged again without duplicates (a key already in the
store is not appended twice). A shard still locked by a live process is left for a later run.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reason2rank.distributed.cluster import actor_pool, import_ray, local_cpus, ray_session, user_error
from reason2rank.distributed.rows import as_dataset, items_table, pack_query
from reason2rank.teacher.store import FINISHED, AnnotationStore, read_annotations
from reason2rank.teacher.summary import RunSummary, TaskCounts
from reason2rank.types import Doc, Query

__all__ = ["AnnotationShards", "TeacherActor", "annotate_dataset"]


class _SeededStore(AnnotationStore):
    """A shard that also answers for the main store's records (statuses and direct grades) it was given."""

    def __init__(
        self, path: Path, known: Mapping[str, tuple[str, int | None]], fsync_interval: float
    ) -> None:
        super().__init__(path, fsync_interval=fsync_interval)
        self.known = known

    def has(self, key: str) -> bool:
        """In the shard or in the main store."""
        return super().has(key) or key in self.known

    def status(self, key: str) -> str | None:
        """The shard's status of ``key`` (newer), else the main store's."""
        status = super().status(key)
        if status is None and key in self.known:
            return self.known[key][0]
        return status

    def grade(self, key: str) -> int | None:
        """The relevance of a finished direct record, from the shard or the main store."""
        grade = super().grade(key)
        if grade is None and key in self.known:
            return self.known[key][1]
        return grade


def _known(store: Path) -> dict[str, tuple[str, int | None]]:
    known: dict[str, tuple[str, int | None]] = {}
    if not store.exists():
        return known
    for rec in read_annotations(store, status=None):
        output = rec.get("output")
        grade = None
        if rec.get("task") == "direct" and rec.get("status") == "ok" and isinstance(output, Mapping):
            grade = output.get("relevance")
        known[rec["key"]] = (str(rec.get("status", "failed")), grade)
    return known


class TeacherActor:
    """One teacher per actor, writing into its own shard (open while a batch runs); each call annotates whole
    queries and returns the run summary of that batch as one JSON row."""

    def __init__(
        self,
        teacher: Any,
        store: str,
        shard_dir: str,
        tasks: Sequence[str],
        options: Mapping[str, Any],
        qrels: Mapping[str, Mapping[str, int]] | None = None,
        fsync_interval: float = 1.0,
    ) -> None:
        from reason2rank.teacher import Teacher

        self.shard = Path(shard_dir) / f"shard-{uuid.uuid4().hex[:16]}.jsonl"
        self.known = _known(Path(store))
        self.fsync_interval = fsync_interval
        self.teacher = Teacher(teacher, store=None, **{"progress": False, **dict(options)})
        self.tasks = list(tasks)
        self.qrels = qrels

    def __call__(self, batch: Any) -> Any:
        """Annotate one pyarrow batch of query rows into the shard; returns the batch's summary (JSON)."""
        import pyarrow as pa

        from reason2rank.teacher import TeacherUnavailable

        cols = batch.to_pydict()
        items = [
            (Query(str(qid), query), [Doc(str(d), t, ti) for d, t, ti in zip(docnos, texts, titles)])
            for qid, query, docnos, texts, titles in zip(
                cols["qid"], cols["query"], cols["docnos"], cols["texts"], cols["titles"]
            )
        ]
        # the shard is open (and locked) only while a batch runs, so the driver can merge it once the run is over
        with warnings.catch_warnings(), _SeededStore(self.shard, self.known, self.fsync_interval) as shard:
            warnings.simplefilter("ignore")
            self.teacher.store = shard
            try:
                summary = self.teacher.annotate(items, tasks=self.tasks, qrels=self.qrels)
            except TeacherUnavailable as e:
                summary = e.summary  # type: ignore[attr-defined]
        return pa.table({"summary": [json.dumps(summary.to_dict())]})


@dataclass
class AnnotationShards:
    """The shard folder of a store (``<store>.shards``) and the merge into the store."""

    store: Path

    @property
    def folder(self) -> Path:
        """Where the actors write their shards."""
        return self.store.with_name(self.store.name + ".shards")

    def files(self) -> list[Path]:
        """The shards waiting to be merged (not their ``.runs`` logs)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob("shard-*.jsonl") if not p.name.endswith(".runs.jsonl"))

    def merge(self, store: AnnotationStore) -> int:
        """Append every shard record the store lacks (or holds only as failed), fsync, delete the shard.
        Returns how many records were appended; a shard another process still holds is left in place."""
        added = 0
        for shard in self.files():
            try:
                source = AnnotationStore(shard)  # takes the shard's lock and cuts a torn tail
            except RuntimeError:
                warnings.warn(
                    f"{shard} is still being written by another process; merged by a later run", stacklevel=2
                )
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    for rec in source.records():
                        have = store.status(rec["key"])
                        if have is None or (have not in FINISHED and rec.get("status") in FINISHED):
                            store.append(rec)
                            added += 1
                    store.flush()
                finally:
                    source.close()
            for path in (shard, shard.with_name(shard.stem + ".runs.jsonl")):
                if path.exists():
                    os.unlink(path)
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()
        return added


def _open_when_free(shard: Path, wait_s: float) -> AnnotationStore | None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return AnnotationStore(shard)  # takes the shard's lock and cuts a torn tail
        except RuntimeError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)


def _add(total: RunSummary, part: Mapping[str, Any]) -> None:
    for task, counts in part.get("tasks", {}).items():
        mine = total.tasks.setdefault(task, TaskCounts())
        for name, value in counts.items():
            setattr(mine, name, getattr(mine, name) + int(value))
    total.requests += int(part.get("requests", 0))
    total.prompt_tokens += int(part.get("prompt_tokens", 0))
    total.completion_tokens += int(part.get("completion_tokens", 0))
    if part.get("cost_usd") is not None:
        total.cost_usd = (total.cost_usd or 0.0) + float(part["cost_usd"])
    total.flags.update(part.get("flags", {}))
    total.error_samples.extend(part.get("error_samples", [])[: max(0, 5 - len(total.error_samples))])
    total.notes.extend(n for n in part.get("notes", []) if n not in total.notes)
    if part.get("aborted") and not total.aborted:
        total.aborted = part["aborted"]
    total.teacher = total.teacher or str(part.get("teacher", ""))


def annotate_dataset(
    teacher: str,
    data: Any,
    *,
    store: str | os.PathLike[str],
    tasks: Sequence[str] | str = ("direct",),
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    concurrency: int = 1,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    queries_per_call: int = 4,
    address: str | None = None,
    ray_init: Mapping[str, Any] | None = None,
    progress: bool = False,
    fsync_interval: float = 1.0,
    **teacher_options: Any,
) -> RunSummary:
    """Annotate ``data`` (``[(Query, docs), ...]``, a Ray Dataset or Parquet rows) with ``concurrency`` teacher
    actors into the JSONL ``store``, with the in-process store's semantics (see the module docstring).

    ``teacher`` is a backend spec (``openai:MODEL@URL1,URL2`` spreads each actor's requests over several servers;
    ``hf:PATH`` loads a local model per actor, ``num_gpus=1`` on a GPU cluster); ``teacher_options`` go to
    ``Teacher`` (``max_tries``, ``window``, ``pairs``, ``backend_options``, ``retry_failed``, ...). Returns the
    summed ``RunSummary`` of every actor's batches.
    """
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    for name, value in (("concurrency", concurrency), ("queries_per_call", queries_per_call)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(teacher, str):
        raise TypeError("a distributed teacher is a backend spec string (each actor builds its own backend)")
    ray = import_ray()
    path = Path(store)
    start = time.monotonic()
    summary = RunSummary()
    shards = AnnotationShards(path)
    with AnnotationStore(path) as main:  # the lock keeps a second run off this store
        summary.torn_tail_bytes = main.scan.torn_tail_bytes
        recovered = shards.merge(main)  # what a killed run left
        if recovered:
            summary.notes.append(f"merged {recovered} record(s) a previous run left in {shards.folder}")
        shards.folder.mkdir(parents=True, exist_ok=True)
        args = {"teacher": teacher, "store": str(path), "shard_dir": str(shards.folder), "tasks": list(tasks),
                "options": teacher_options, "qrels": qrels, "fsync_interval": fsync_interval}  # fmt: skip
        remote = actor_pool(ray, concurrency, num_cpus, num_gpus)
        with ray_session(
            address, num_cpus=local_cpus(concurrency, num_cpus), init_options=ray_init, progress=progress
        ):
            if isinstance(data, (list, tuple)):
                table = items_table([(q, d) for q, d in data if d])
                ds = ray.data.from_arrow(
                    [table.slice(i, queries_per_call) for i in range(0, table.num_rows, queries_per_call)]
                    or [table]
                )
            else:
                ds = as_dataset(ray, data).groupby("qid").map_groups(pack_query, batch_format="pyarrow")
            ds = ds.map_batches(TeacherActor, batch_size=queries_per_call, batch_format="pyarrow",
                                fn_constructor_kwargs=args, **remote)  # fmt: skip
            try:
                for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    for part in block.column("summary").to_pylist():
                        _add(summary, json.loads(part))
            except Exception as e:
                err = user_error(e)
                if err is e:
                    raise
                raise err from None
        merged = shards.merge(main)
        summary.notes.append(f"{merged} record(s) merged from {concurrency} actor(s)")
    summary.elapsed_s = time.monotonic() - start
    return summary
