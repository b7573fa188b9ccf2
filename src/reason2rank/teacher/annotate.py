"""The teacher run: build the questions, ask the backend, parse, retry, store, summarise.

A run goes task by task — ``direct`` first, then ``listwise``, then ``compare`` (whose pairs come from the
teacher's own direct grades) — in chunks a few times the backend's in-flight limit. An item is stored the
moment its last answer arrives, so a killed run loses only the items in flight; a rerun skips every key
already in the store.

Per item, an answer that does not parse or breaks the schema is asked again (up to ``max_tries`` in all)
with the bad answer and the error shown to the teacher; a greedy teacher's retries are *sampled*
(``RETRY_TEMPERATURE``, a seed per item and try), since the same prompt at temperature 0 gives the same tokens
again, and every retry carries a repetition penalty where the backend takes one
(``RETRY_REPETITION_PENALTY``: a small model's failed answers mostly loop); after a constrained answer that ran
out of tokens the retry's strings are bounded at half the length (``TIGHTER_CHARS_PER_TOKEN``: the answer spent
more tokens per character than the bound assumed). Each attempt records what changed. After the last try the item is stored as ``failed`` with every raw
answer. Each record says how its answer was obtained (``decoding``): ``constrained`` (decoded under the task's
JSON schema, valid by construction), ``repaired`` (free text the parser had to repair) or ``free``. A request the backend could not complete at all (network down, HTTP
401, ...) stores nothing: it is counted under ``errors`` and is asked again by the next run.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reason2rank.llm.backend import Backend, GenerationResult, GenerationSettings, Messages, make_backend
from reason2rank.llm.cache import ResponseCache
from reason2rank.llm.client import LLM, CallRecord, LLMRequest
from reason2rank.llm.prompts import builtin_template
from reason2rank.progress import progress_bar
from reason2rank.reranker import prepare_items
from reason2rank.teacher.pairs import PairPolicy, select_pairs
from reason2rank.teacher.parsing import (
    CHARS_PER_TOKEN,
    ParseError,
    evidence_in_text,
    extract_json,
    task_schema,
    validate_compare,
    validate_direct,
    validate_listwise,
)
from reason2rank.teacher.prompts import (
    COMPARISON_PROMPTS,
    TASKS,
    DocCutter,
    PromptTemplate,
    builtin_prompt,
    load_prompts,
    render_compare,
    render_direct,
    render_listwise,
)
from reason2rank.teacher.store import RECORD_SCHEMA, AnnotationStore, annotation_key
from reason2rank.teacher.summary import RunSummary, TaskCounts
from reason2rank.types import Doc, Query, has_text

#: what the teacher is told after an unusable answer
RETRY_MESSAGE = (
    "Your answer could not be used: {error}. Answer again with only the JSON object in the format asked "
    "for, and no other text."
)
_RAW_ECHO_CHARS = 4000  # how much of a bad answer is shown back to the teacher
#: the temperature of a greedy teacher's retries (a different answer is possible; the same prompt at 0 is not)
RETRY_TEMPERATURE = 0.7
#: the repetition penalty of every retry, where the backend takes one (a small model's failed answers mostly loop)
RETRY_REPETITION_PENALTY = 1.3
#: characters per token assumed for the string bounds of a retry after a constrained answer ran out of tokens
TIGHTER_CHARS_PER_TOKEN = CHARS_PER_TOKEN / 2
TIGHTER_CHANGE = "strings bounded at half the length (the last answer ran out of tokens)"
#: the parser's repairs of free text (``extract_json``)
_REPAIR_FLAGS = frozenset(
    {"think_removed", "code_fence", "surrounding_text", "python_literal", "trailing_comma"}
)


class TeacherUnavailable(RuntimeError):
    """Too many requests in a row failed outright; the run stops instead of grinding through every item."""


@dataclass
class _Ask:
    """One prompt of an item (compare with ``swap`` has two: A/B and B/A)."""

    messages: Messages
    shown: list[str]
    docs: list[Doc]
    schema: dict[str, Any]
    order: str | None = None
    tries: int = 0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    output: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)
    final: bool = False
    transport_error: str | None = None
    #: the schema with tighter string bounds, for a retry after a constrained answer ran out of tokens
    tighter: Callable[[], dict[str, Any]] | None = None
    change: str | None = None  # what the next attempt changes beyond the usual retry

    def tighten(self) -> None:
        """Bound the next attempt's strings tighter (once)."""
        if self.tighter is not None:
            self.schema = self.tighter()
            self.tighter = None
            self.change = TIGHTER_CHANGE

    def next_messages(self) -> Messages:
        if not self.attempts:
            return self.messages
        last = self.attempts[-1]
        extra: Messages = []
        if last["raw"].strip():
            extra.append({"role": "assistant", "content": last["raw"][:_RAW_ECHO_CHARS]})
        extra.append({"role": "user", "content": RETRY_MESSAGE.format(error=last["error"])})
        return [*self.messages, *extra]


@dataclass
class _Job:
    task: str
    key: str
    query: Query
    docs: list[Doc]
    asks: list[_Ask]
    options: dict[str, Any] | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: bool = False


def _schemas(
    task: str, budget: int, *, num: int = 1, shown: Sequence[str] | None = None
) -> Callable[[float], dict[str, Any]]:
    """The task's schema as a function of the characters per token its string bounds assume."""

    def schema(chars_per_token: float) -> dict[str, Any]:
        return task_schema(task, num=num, max_new_tokens=budget, shown=shown, chars_per_token=chars_per_token)

    return schema


def _tighter(schema: Callable[[float], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    return lambda: schema(TIGHTER_CHARS_PER_TOKEN)


class Teacher:
    """An LLM teacher that writes Reason-to-Rank annotations into a store.

    >>> teacher = Teacher("openai:gpt-4o-mini", store="annotations.jsonl")        # doctest: +SKIP
    >>> summary = teacher.annotate(candidates, tasks=("direct", "compare"))       # doctest: +SKIP

    ``backend``: a spec string (``hf:...``, ``openai:MODEL[@URL]``, ``haystack:MODULE:ATTR``), a
    ``Backend`` or a Haystack ChatGenerator; ``backend_options`` go to ``make_backend``. The calls go through
    ``reason2rank.llm.LLM``: ``cache`` (a ``ResponseCache`` or a path) answers a repeated prompt without a
    request, and ``teacher.llm.log`` records every call (tokens, latency, repaired or not).
    ``store``: a JSONL path, an ``AnnotationStore`` or ``None`` (in memory).
    ``max_words`` / ``max_tokens`` (+ ``tokenizer``; the hf backend's own by default) cut documents.
    ``window`` / ``stride``: listwise windows over each candidate list; ``pairs``: a ``PairPolicy``.
    ``price_in`` / ``price_out``: USD per million prompt / completion tokens, for the cost summary.
    ``comparison_prompt``: ``"neutral"`` (default; the teacher is asked which of A and B is more relevant and
    why, with A/B shown in a shuffled order) or ``"justify"`` (the built-in ``compare_justify_v1``: the teacher
    is told that A, the document its direct grades (or qrels) put higher, was ranked above B and asked why; pairs
    are then shown higher-first and cannot be swapped). Either way ``preferred`` is the teacher's own answer.
    ``max_new_tokens``: the answer budget, one int or per task (``{"default": 256, "listwise": 768}``); where the
    backend constrains answers to the task's JSON schema, each string in it is bounded to fit that budget
    (``parsing.string_budget``), so a constrained answer closes before the budget cuts it; with ``quote_evidence``
    (default) a direct answer's evidence and a listwise entry's answer sentence are constrained to one of the shown
    document's sentences or null (``parsing.quotable_sentences``), so a constrained answer quotes, never invents;
    ``quote_evidence=False`` leaves them free text (still checked against the document).
    """

    def __init__(
        self,
        backend: Any,
        *,
        store: str | Path | AnnotationStore | None = None,
        prompts: Any = None,
        max_tries: int = 3,
        max_words: int | None = 300,
        max_tokens: int | None = None,
        tokenizer: Any = None,
        window: int = 5,
        stride: int | None = None,
        pairs: PairPolicy | None = None,
        max_new_tokens: int | Mapping[str, int] = 1024,
        temperature: float = 0.0,
        chunk_size: int | None = None,
        retry_failed: bool = False,
        price_in: float | None = None,
        price_out: float | None = None,
        abort_after_errors: int = 20,
        progress: bool | None = False,
        teacher_name: str | None = None,
        backend_options: Mapping[str, Any] | None = None,
        cache: ResponseCache | str | Path | None = None,
        comparison_prompt: str = "neutral",
        quote_evidence: bool = True,
    ):
        if comparison_prompt not in COMPARISON_PROMPTS:
            raise ValueError(
                f"comparison_prompt must be one of {COMPARISON_PROMPTS}, got {comparison_prompt!r}: 'neutral' asks "
                "which of A and B is more relevant and why, 'justify' says A was ranked above B and asks why"
            )
        if comparison_prompt == "justify" and pairs is not None and pairs.swap:
            raise ValueError(
                "comparison_prompt='justify' tells the teacher that A was ranked above B, which is false for the "
                "swapped B/A question; use PairPolicy(swap=False) or comparison_prompt='neutral'"
            )
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        if window < 2:
            raise ValueError(f"the listwise window must hold at least 2 passages, got {window}")
        if stride is not None and stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self._own_backend = not isinstance(backend, Backend)
        self.backend = make_backend(backend, **dict(backend_options or {}))
        self.llm = LLM(self.backend, cache=cache)
        try:
            if max_tokens is not None:
                tokenizer = tokenizer if tokenizer is not None else self.backend.tokenizer
                max_words = None
            self.cutter = DocCutter(max_words=max_words, max_tokens=max_tokens, tokenizer=tokenizer)
            self.prompts: dict[str, PromptTemplate] = load_prompts(prompts)
            if comparison_prompt == "justify":
                if self.prompts["compare"].version != builtin_prompt("compare").version:
                    raise ValueError(
                        "comparison_prompt='justify' selects the built-in compare_justify_v1 template, but a "
                        f"compare template was given ({self.prompts['compare'].source}); give one or the other"
                    )
                self.prompts["compare"] = builtin_template("compare_justify_v1")
            self._own_store = not isinstance(store, AnnotationStore)
            self.store = store if isinstance(store, AnnotationStore) else AnnotationStore(store)
        except BaseException:
            if self._own_backend:
                self.backend.close()
            raise
        self.max_tries = int(max_tries)
        self.window = int(window)
        self.stride = int(stride) if stride is not None else int(window)
        self.comparison_prompt = comparison_prompt
        self.quote_evidence = bool(quote_evidence)
        self.pairs = pairs or PairPolicy()
        if comparison_prompt == "justify":  # A must be the higher-ranked document of each pair
            self.pairs = dataclasses.replace(self.pairs, shuffle_ab=False)
        self.max_new_tokens = _task_budgets(max_new_tokens)
        self.temperature = float(temperature)
        self.chunk_size = int(chunk_size) if chunk_size else max(16, 4 * self.backend.max_in_flight)
        self.retry_failed = bool(retry_failed)
        self.price_in = price_in
        self.price_out = price_out
        self.abort_after_errors = int(abort_after_errors)
        self.progress = progress
        self.name = teacher_name or self.backend.name
        self._lock = threading.Lock()
        self._consecutive_errors = 0

    # -- keys -----------------------------------------------------------------------------------------
    def key(
        self, task: str, query: Query, docs: Sequence[Doc | str], options: Mapping[str, Any] | None = None
    ) -> str:
        """The store key of one item: ``direct`` (1 doc), ``compare`` (A, B), ``listwise`` (a window)."""
        ids = [d.id if isinstance(d, Doc) else str(d) for d in docs]
        return annotation_key(task, self.prompts[task].version, self.name, query.id, query.text, ids, options)

    def _compare_options(self) -> dict[str, Any] | None:
        return {"swap": True} if self.pairs.swap else None

    # -- the items of each task -----------------------------------------------------------------------
    def direct_items(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> Iterator[tuple[Query, list[Doc]]]:
        """One direct item per (query, document)."""
        for q, docs in items:
            for d in docs:
                yield q, [d]

    def listwise_items(
        self, items: Sequence[tuple[Query, Sequence[Doc]]]
    ) -> Iterator[tuple[Query, list[Doc]]]:
        """Listwise windows of each query's candidates (``window`` documents every ``stride``)."""
        for q, docs in items:
            for start in range(0, len(docs), self.stride):
                window = list(docs[start : start + self.window])
                if len(window) >= 2:
                    yield q, window
                if start + self.window >= len(docs):
                    break

    def compare_items(
        self,
        items: Sequence[tuple[Query, Sequence[Doc]]],
        qrels: Mapping[str, Mapping[str, int]] | None = None,
    ) -> Iterator[tuple[Query, list[Doc]]]:
        """Pairs per query from the pair policy, using the teacher's direct grades already in the store."""
        for q, docs in items:
            grades = {d.id: self.store.grade(self.key("direct", q, [d])) for d in docs}
            judged = (qrels or {}).get(q.id) or None
            for a, b in select_pairs(q, docs, self.pairs, grades=grades, qrels=judged):
                yield q, [a, b]

    # -- running --------------------------------------------------------------------------------------
    def annotate(
        self,
        items: Iterable[tuple[Query | str, Sequence[Doc | str]]] | Any,
        tasks: Sequence[str] | str = ("direct",),
        *,
        qrels: Mapping[str, Mapping[str, int]] | None = None,
    ) -> RunSummary:
        """Annotate candidates for ``tasks``; returns the run's summary. ``items``: ``[(query, docs), ...]``
        (``pt_r2r.R2RTeacher`` converts a PyTerrier result frame). Documents without text are not shown to the
        teacher (one warning names them, and the summary counts them).

        Raises ``TeacherUnavailable`` after ``abort_after_errors`` requests in a row got no answer (the
        summary so far is on the exception as ``.summary``)."""
        if isinstance(tasks, str):
            tasks = [t.strip() for t in tasks.split(",") if t.strip()]
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"tasks must be among {TASKS}, got {list(tasks)}")
        prepared = prepare_items(list(items))
        without_text = sum(1 for _, docs in prepared for d in docs if not has_text(d))
        prepared = [(q, [d for d in docs if has_text(d)]) for q, docs in prepared]
        summary = RunSummary(teacher=self.name, torn_tail_bytes=self.store.scan.torn_tail_bytes)
        if without_text:
            summary.notes.append(f"{without_text} document(s) without text were not shown to the teacher")
        self._consecutive_errors = 0
        start = time.monotonic()
        try:
            for task in [t for t in TASKS if t in tasks]:  # direct before compare: pairs use the grades
                direct = summary.tasks.get("direct")
                if task == "compare" and direct is not None and direct.errors:
                    # pairs follow the teacher's grades: choosing them from incomplete grades would ask
                    # questions a rerun (with all grades) would not ask again
                    summary.notes.append(
                        f"compare postponed: {direct.errors} direct item(s) got no answer; rerun to finish both"
                    )
                    continue
                if task == "direct":
                    specs = list(self.direct_items(prepared))
                elif task == "listwise":
                    specs = list(self.listwise_items(prepared))
                else:
                    specs = list(self.compare_items(prepared, qrels))
                self._run_task(task, specs, summary)
        except TeacherUnavailable as e:
            summary.aborted = str(e)
            e.summary = summary  # type: ignore[attr-defined]
            raise
        finally:
            summary.elapsed_s = time.monotonic() - start
            if self.price_in is not None or self.price_out is not None:
                summary.cost_usd = (
                    summary.prompt_tokens * (self.price_in or 0.0)
                    + summary.completion_tokens * (self.price_out or 0.0)
                ) / 1e6
            self.store.flush()
            self._log_run(summary, tasks)
        return summary

    def _log_run(self, summary: RunSummary, tasks: Sequence[str]) -> None:
        path = self.store.path
        if path is None:
            return
        log = path.with_name(path.stem + ".runs" + (path.suffix or ".jsonl"))
        entry = {"finished": _now(), "requested_tasks": list(tasks), **summary.to_dict()}
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def _run_task(self, task: str, specs: list[tuple[Query, list[Doc]]], summary: RunSummary) -> None:
        counts = summary.tasks.setdefault(task, TaskCounts())
        options = self._compare_options() if task == "compare" else None
        todo: list[tuple[Query, list[Doc], str]] = []
        seen: set[str] = set()
        for q, docs in specs:
            key = self.key(task, q, docs, options)
            if key in seen:
                continue
            seen.add(key)
            counts.total += 1
            status = self.store.status(key)
            if status is not None and (status != "failed" or not self.retry_failed):
                counts.skipped += 1
            else:
                todo.append((q, docs, key))
        bar = progress_bar(counts.total, f"teach {task}", self.progress, unit="item")
        bar.update(counts.skipped)
        try:
            for i in range(0, len(todo), self.chunk_size):
                jobs = [
                    self._make_job(task, q, docs, key, options)
                    for q, docs, key in todo[i : i + self.chunk_size]
                ]
                self._run_chunk(jobs, summary, counts, bar)
        finally:
            bar.close()

    def _make_job(
        self, task: str, q: Query, docs: list[Doc], key: str, options: dict[str, Any] | None
    ) -> _Job:
        tpl = self.prompts[task]
        budget = self.max_new_tokens[task]
        if task == "direct":
            messages, shown_doc = render_direct(tpl, q, docs[0], self.cutter)
            quote = [shown_doc] if self.quote_evidence else None
            schema = _schemas("direct", budget, shown=quote)
            asks = [_Ask(messages, [shown_doc], docs, schema(CHARS_PER_TOKEN), tighter=_tighter(schema))]
        elif task == "compare":
            a, b = docs
            messages, shown = render_compare(tpl, q, a, b, self.cutter)
            schema = _schemas("compare", budget)
            asks = [_Ask(messages, shown, [a, b], schema(CHARS_PER_TOKEN), "AB", tighter=_tighter(schema))]
            if self.pairs.swap:
                messages2, shown2 = render_compare(tpl, q, b, a, self.cutter)
                asks.append(
                    _Ask(messages2, shown2, [b, a], schema(CHARS_PER_TOKEN), "BA", tighter=_tighter(schema))
                )
        else:
            messages, shown = render_listwise(tpl, q, docs, self.cutter)
            quotes = shown if self.quote_evidence else None
            schema = _schemas("listwise", budget, num=len(docs), shown=quotes)
            asks = [_Ask(messages, shown, docs, schema(CHARS_PER_TOKEN), tighter=_tighter(schema))]
        return _Job(task, key, q, docs, asks, options)

    def _run_chunk(self, jobs: list[_Job], summary: RunSummary, counts: TaskCounts, bar: Any) -> None:
        pending: list[tuple[_Job, _Ask]] = [(job, ask) for job in jobs for ask in job.asks]
        while pending:
            handled: set[int] = set()

            def on_result(
                i: int,
                res: GenerationResult,
                record: CallRecord,
                pending: list[tuple[_Job, _Ask]] = pending,
                handled: set[int] = handled,
            ) -> None:
                with self._lock:
                    if i in handled:
                        return
                    handled.add(i)
                    job, ask = pending[i]
                    self._on_result(job, ask, res, summary, counts, bar)
                    record.repaired = bool(ask.flags) if ask.output is not None else None
                    record.problems = list(ask.flags)

            requests = [
                LLMRequest(
                    ask.next_messages(),
                    self._settings(job, ask),
                    {"purpose": f"teach {job.task}", "qid": job.query.id, "key": job.key},
                )
                for job, ask in pending
            ]
            self.llm.generate(requests, on_result=on_result)
            if self._consecutive_errors >= self.abort_after_errors:
                raise TeacherUnavailable(
                    f"{self._consecutive_errors} requests in a row got no answer from {self.name}; "
                    f"last: {summary.error_samples[-1] if summary.error_samples else '?'}"
                )
            pending = [(job, ask) for job, ask in pending if not ask.final]

    def _retry_penalty(self) -> float | None:
        return (
            RETRY_REPETITION_PENALTY if "repetition_penalty" in self.llm.backend.supported_options else None
        )

    def _settings(self, job: _Job, ask: _Ask) -> GenerationSettings:
        """The first try as configured; retries with a repetition penalty where the backend takes one, and a
        greedy teacher's retries sampled (seeded by the item and the try)."""
        budget = self.max_new_tokens[job.task]
        if ask.tries == 0:
            return GenerationSettings(budget, self.temperature, json_schema=ask.schema)
        if self.temperature > 0:
            return GenerationSettings(
                budget, self.temperature, json_schema=ask.schema, repetition_penalty=self._retry_penalty()
            )
        seed = None
        if "seed" in self.llm.backend.supported_options:  # reproducible where the backend takes a seed
            seed = (
                int(job.key[:8], 16) if all(c in "0123456789abcdef" for c in job.key[:8]) else 0
            ) + ask.tries
        return GenerationSettings(
            budget,
            RETRY_TEMPERATURE,
            seed=seed,
            json_schema=ask.schema,
            repetition_penalty=self._retry_penalty(),
        )

    def _on_result(
        self, job: _Job, ask: _Ask, res: GenerationResult, summary: RunSummary, counts: TaskCounts, bar: Any
    ) -> None:
        summary.requests += 1
        summary.prompt_tokens += res.prompt_tokens
        summary.completion_tokens += res.completion_tokens
        job.prompt_tokens += res.prompt_tokens
        job.completion_tokens += res.completion_tokens
        if res.error is not None:
            ask.final = True
            ask.transport_error = res.error
            self._consecutive_errors += 1
        else:
            self._consecutive_errors = 0
            ask.tries += 1
            attempt: dict[str, Any] = {"raw": res.text, "error": None, "constrained": res.constrained}
            if ask.tries > 1:
                changes = ["the error shown"]
                if self.temperature == 0:
                    changes.append(f"sampled at temperature {RETRY_TEMPERATURE}")
                if self._retry_penalty():
                    changes.append(f"repetition penalty {RETRY_REPETITION_PENALTY}")
                if ask.change:
                    changes.append(ask.change)
                    ask.change = None
                attempt["change"] = "; ".join(changes)
            if ask.order is not None and self.pairs.swap:
                attempt["order"] = ask.order
            if res.finish_reason == "length":
                attempt["truncated"] = True
                if res.constrained:
                    ask.tighten()
            try:
                ask.output, ask.flags = self._parse(job.task, ask, res.text)
                ask.final = True
            except ParseError as e:
                attempt["error"] = str(e)
                if ask.tries >= self.max_tries:
                    ask.final = True
            ask.attempts.append(attempt)
        if not job.finished and all(a.final for a in job.asks):
            job.finished = True
            self._finish(job, summary, counts)
            bar.update(1)
            bar.set_postfix(ok=counts.done, failed=counts.failed, errors=counts.errors, refresh=False)

    def _parse(self, task: str, ask: _Ask, text: str) -> tuple[dict[str, Any], list[str]]:
        obj, repairs = extract_json(text)
        if task == "direct":
            out, flags = validate_direct(obj)
            out["evidence_found"] = (
                None if out["evidence"] is None else evidence_in_text(out["evidence"], ask.shown[0])
            )
            if out["evidence_found"] is False:
                flags.append("evidence_not_found")
            return out, repairs + flags
        if task == "compare":
            out, flags = validate_compare(obj)
            return out, repairs + flags
        out, flags = validate_listwise(obj, len(ask.docs))
        passages = []
        for item in out["ranked_passages"]:
            i = item["identifier"] - 1
            sentence = item["direct_answer_sentence"]
            found = None if sentence is None else evidence_in_text(sentence, ask.shown[i])
            passages.append({"docid": ask.docs[i].id, **item, "evidence_found": found})
        if any(p["evidence_found"] is False for p in passages):
            flags.append("evidence_not_found")
        return {"ranking": [p["docid"] for p in passages], "passages": passages}, repairs + flags

    def _finish(self, job: _Job, summary: RunSummary, counts: TaskCounts) -> None:
        errors = [a.transport_error for a in job.asks if a.transport_error]
        if errors:
            counts.errors += 1
            if len(summary.error_samples) < 5:
                summary.error_samples.append(
                    f"{job.task} {job.query.id}/{','.join(d.id for d in job.docs)}: {errors[0]}"
                )
            return
        attempts = [att for a in job.asks for att in a.attempts]
        flags = sorted({f for a in job.asks for f in a.flags})
        parsed = all(a.output is not None for a in job.asks)
        output: dict[str, Any] | None = None
        error: str | None = None
        if not parsed:
            status = "failed"
            error = next(att["error"] for a in job.asks if a.output is None for att in a.attempts[-1:])
        elif job.task == "compare":
            status, output = self._compare_output(job)
        else:
            status, output = "ok", job.asks[0].output
        final = [a.attempts[-1] for a in job.asks if a.attempts]
        if final and all(att.get("constrained") for att in final):  # a failed constrained answer too
            decoding = "constrained"
        elif parsed and any(f in _REPAIR_FLAGS for f in flags):
            decoding = "repaired"
        else:
            decoding = "free"
        record = {
            "schema": RECORD_SCHEMA,
            "key": job.key,
            "task": job.task,
            "prompt_version": self.prompts[job.task].version,
            "prompt_sha256": self.prompts[job.task].sha256,
            "teacher": self.name,
            "qid": job.query.id,
            "query": job.query.text,
            "docids": [d.id for d in job.docs],
            "options": job.options,
            "status": status,
            "decoding": decoding,
            "output": output,
            "flags": flags,
            "error": error,
            "attempts": attempts,
            "tries": len(attempts),
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "doc_cut": self.cutter.describe(),
            "elapsed_s": round(time.monotonic() - job.started, 3),
            "created": _now(),
        }
        self.store.append(record)
        summary.flags.update(flags)
        if status == "ok":
            counts.done += 1
        elif status == "failed":
            counts.failed += 1
        else:
            counts.inconsistent += 1

    def _compare_output(self, job: _Job) -> tuple[str, dict[str, Any]]:
        a, b = job.docs
        first = job.asks[0].output
        assert first is not None
        pref_doc = {"A": a.id, "B": b.id, "tie": None}[first["preferred"]]
        out = {"preferred": first["preferred"], "preferred_doc": pref_doc, "reasoning": first["reasoning"]}
        if len(job.asks) == 1:
            return "ok", out
        second = job.asks[1].output
        assert second is not None
        swapped_doc = {"A": b.id, "B": a.id, "tie": None}[second["preferred"]]  # B/A frame: A is doc b
        consistent = swapped_doc == pref_doc
        out.update(
            swapped_preferred=second["preferred"],
            swapped_reasoning=second["reasoning"],
            consistent=consistent,
        )
        if not consistent:
            out["preferred"], out["preferred_doc"] = None, None
            out["answers"] = {"AB": first["preferred"], "BA": second["preferred"]}
        return ("ok" if consistent else "inconsistent"), out

    # -- reading results back -------------------------------------------------------------------------
    def records(
        self, task: str, items: Sequence[tuple[Query, Sequence[Doc]]]
    ) -> list[list[dict[str, Any] | None]]:
        """For ``direct``: per query, the stored record of each document (None where there is none)."""
        if task != "direct":
            raise ValueError(
                "records() looks up direct annotations per document; read the store for other tasks"
            )
        return [[self.store.get(self.key("direct", q, [d])) for d in docs] for q, docs in items]

    def close(self) -> None:
        """Close the store and the backend when this teacher opened them."""
        if self._own_store:
            self.store.close()
        if self._own_backend:
            self.backend.close()
        if self.llm.cache is not None:
            self.llm.cache.close()

    def __enter__(self) -> Teacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Teacher({self.name!r}, store={self.store!r})"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


_TASKS = ("direct", "compare", "listwise")


def _task_budgets(max_new_tokens: int | Mapping[str, int]) -> dict[str, int]:
    """``max_new_tokens`` per task: one int for all, or a mapping with a ``default`` and/or per-task values."""
    if isinstance(max_new_tokens, Mapping):
        unknown = sorted(set(max_new_tokens) - {*_TASKS, "default"})
        if unknown:
            raise ValueError(
                f"max_new_tokens names unknown tasks {unknown}; use {list(_TASKS)} or 'default' as keys"
            )
        default = max_new_tokens.get("default", 1024)
        out = {t: max_new_tokens.get(t, default) for t in _TASKS}
    else:
        out = dict.fromkeys(_TASKS, max_new_tokens)
    for task, n in out.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_new_tokens for {task!r} must be a positive int, got {n!r}")
    return out
