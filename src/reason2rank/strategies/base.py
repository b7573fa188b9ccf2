"""What the LLM ranking strategies share: the LLM, the lockstep scheduler, document cutting, accounting.

Each strategy writes its algorithm for *one* query as a generator (a *plan*): it yields the list of requests it
needs answered next (several when they are independent, e.g. every sift-down of one heap level) and receives
their answers. ``run_plans`` runs the plans of all queries in lockstep: at each step it gathers the pending
requests of every query into one LLM call (window *i* of every query in one batch, one heap level of every query
in one batch, ...), so batching across queries and siblings never changes what any query is asked — a batched
run gives the same orders as one query at a time.

A plan returns a ``PlanResult``: the new order of the query's documents, and the reasoning and comparisons the
LLM gave. Scores come from the order (``Ranking.from_order``). Answers that cannot be parsed are repaired as each
strategy documents (the first-stage order kept for a window, the parent kept in a heap), counted, and reported in
one warning per call; a request the backend could not answer after its own retries stops the run with an error
naming the query.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from reason2rank.llm.backend import GenerationResult, GenerationSettings
from reason2rank.llm.cache import ResponseCache
from reason2rank.llm.client import LLM, CallRecord, LLMRequest
from reason2rank.llm.prompts import DocCutter, PromptTemplate, load_template
from reason2rank.llm.reasoning import split_reasoning
from reason2rank.model_dir import write_r2r_config
from reason2rank.progress import progress_bar
from reason2rank.reranker import Ranking, Reranker
from reason2rank.types import Doc, Query

__all__ = ["Answer", "LLMStrategy", "Plan", "PlanResult", "Step", "run_plans"]

T = TypeVar("T")

#: where a saved strategy keeps a prompt template that is not built in
PROMPT_FILE = "prompt.txt"


def _builtin_name(tpl: PromptTemplate) -> str | None:
    prefix = "reason2rank/llm/templates/"
    return tpl.source[len(prefix) : -4] if tpl.source.startswith(prefix) else None


#: one answered request: the backend's answer and its log record (set ``record.repaired`` after parsing)
Answer = tuple[GenerationResult, CallRecord]


@dataclass
class PlanResult:
    """What a plan found for one query: the order (indices of its documents, best first), reasoning per document,
    comparisons per document (why it outranks the next one), and counts (``repaired``, ``unparsed``, ...)."""

    order: list[int]
    reasoning: dict[int, str | None] = field(default_factory=dict)
    comparisons: dict[int, str | None] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


#: a part of a plan that returns ``T`` (a comparison step returns its winners)
Step = Generator[list[LLMRequest], list[Answer], T]
Plan = Step[PlanResult]


def run_plans(
    plans: Sequence[Plan], llm: LLM, qids: Sequence[str], progress: bool | None = None
) -> list[PlanResult]:
    """Run every plan to its end in lockstep (see the module docstring); results align with ``plans``."""
    results: list[PlanResult | None] = [None] * len(plans)
    pending: dict[int, list[LLMRequest]] = {}
    for i, plan in enumerate(plans):
        try:
            pending[i] = next(plan)
        except StopIteration as stop:
            results[i] = stop.value
    bar = progress_bar(len(plans), "LLM ranking", progress, unit="query")
    bar.update(len(plans) - len(pending))
    try:
        while pending:
            order = sorted(pending)
            flat = [req for i in order for req in pending[i]]
            answers = llm.generate(flat)
            pos = 0
            for i in order:
                n = len(pending[i])
                mine = answers[pos : pos + n]
                pos += n
                failed = next((res.error for res, _ in mine if res.error is not None), None)
                if failed is not None:
                    raise RuntimeError(f"query {qids[i]!r}: the LLM gave no answer ({llm.name}): {failed}")
                try:
                    pending[i] = plans[i].send(mine)
                except StopIteration as stop:
                    results[i] = stop.value
                    del pending[i]
                    bar.update(1)
    finally:
        bar.close()
    return [r for r in results if r is not None]


class LLMStrategy(Reranker):
    """Base of the strategies: an ``LLM`` (a backend spec, or the model directory for a local transformers model),
    a prompt template, document cutting, and the plan scheduler. Subclasses implement ``plan``.

    Args:
        model: a local causal LM directory or hub id (the ``hf:`` backend), unless ``backend`` is given.
        backend: an LLM backend spec (``openai:MODEL@URL``, ``hf:PATH``, ``haystack:MODULE:ATTR``, ``vllm:PATH``),
            a ``Backend`` or a Haystack ChatGenerator.
        prompt: a template name (built-in), a template file, or a ``PromptTemplate``.
        max_words: words per passage shown (documents are also cut to fit the context, see ``fit``).
        max_tokens: cut passages to this many tokens of the backend's tokenizer instead (as llm-rankers does).
        context_length: tokens the prompt may take (default: the model's, when the backend has a tokenizer).
        depth: rerank only the top ``depth`` candidates (the rest follow in first-stage order).
        cache: a response cache (a ``ResponseCache`` or a file path): a rerun costs nothing.
        max_new_tokens / temperature / seed: decoding (greedy by default).
        backend_options: passed to the backend (``batch_size``, ``device``, ``dtype``, ``max_in_flight``, ...).
        constrain_answers: ask for the strategy's answer format as a regex constraint (``[2] > [1] > ...``,
            ``<answer>[k]</answer>``, a passage label), enforced by backends that can (local transformers with
            xgrammar); answers are still parsed, and repaired where a backend could not constrain them.
    """

    family = ""
    task = ""
    default_prompt = ""
    evidence = False  # an LLM strategy gives no occlusion evidence (it would be one LLM pass per sentence)

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        backend: Any = None,
        prompt: str | os.PathLike[str] | PromptTemplate | None = None,
        max_words: int | None = 300,
        max_tokens: int | None = None,
        context_length: int | None = None,
        depth: int | None = None,
        cache: ResponseCache | str | os.PathLike[str] | None = None,
        max_new_tokens: int | None = None,
        temperature: float = 0.0,
        seed: int | None = None,
        progress: bool | None = None,
        backend_options: dict[str, Any] | None = None,
        model_dir: str | os.PathLike[str] | None = None,
        constrain_answers: bool = True,
        **device_options: Any,
    ) -> None:
        if backend is None and model is None:
            raise ValueError(f"{type(self).__name__} needs an LLM: a model path/hub id, or backend=...")
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
            raise ValueError(f"depth must be a positive int or None, got {depth!r}")
        options = {**(backend_options or {})}
        for key in ("batch_size", "device", "dtype"):
            if device_options.get(key) is not None:
                options[key] = device_options.pop(key)
        max_length = device_options.pop("max_length", None)  # load(..., max_length=N): the context length
        context_length = context_length or max_length
        if device_options:
            raise TypeError(f"{type(self).__name__} got unknown option(s) {sorted(device_options)}")
        self.model_dir = Path(model_dir) if model_dir else None
        self.model_name_or_path = str(model) if model is not None else None
        spec = backend if backend is not None else f"hf:{model}"
        local = backend is None or (isinstance(backend, str) and backend.startswith("hf:"))
        if options and not local and backend_options is None:
            options = {}  # batch_size/device/dtype are for a local model; a server or generator keeps its own
        self.llm = LLM(spec, cache=cache, **options)
        self.prompt = load_template(prompt or self.default_prompt, self.task, self.model_dir)
        if max_tokens is not None:
            if self.llm.tokenizer is None:
                raise ValueError(
                    f"max_tokens needs a backend with a tokenizer; {self.llm.name} has none (use max_words)"
                )
            self.cutter = DocCutter(max_words=None, max_tokens=max_tokens, tokenizer=self.llm.tokenizer)
        else:
            self.cutter = DocCutter(max_words=max_words)
        self.max_words = None if max_tokens is not None else max_words
        self.max_tokens = max_tokens
        self.depth = depth
        self.temperature = float(temperature)
        self.seed = seed
        self.max_new_tokens = max_new_tokens
        self.progress = progress
        self.constrain_answers = bool(constrain_answers)
        tok = self.llm.tokenizer
        model_max = getattr(getattr(getattr(self.llm.backend, "model", None), "config", None),
                            "max_position_embeddings", None)  # fmt: skip
        self.context_length = context_length or (int(model_max) if tok is not None and model_max else None)
        self._cut_counts: dict[str, int] = {}

    # -- what a strategy implements ---------------------------------------------------------------------------
    def plan(self, query: Query, docs: Sequence[Doc]) -> Plan:
        """The algorithm for one query (see the module docstring)."""
        raise NotImplementedError

    def answer_regex(self, n: int) -> str | None:
        """The regex an answer over ``n`` passages must match (``None``: free text); see ``constrain_answers``."""
        return None

    def settings(self, default_max_new_tokens: int, n: int | None = None) -> GenerationSettings:
        """The decoding settings of this strategy's requests (over ``n`` passages, for the answer regex)."""
        regex = self.answer_regex(n) if (n is not None and self.constrain_answers) else None
        return GenerationSettings(
            max_new_tokens=self.max_new_tokens or default_max_new_tokens,
            temperature=self.temperature,
            seed=self.seed,
            prefix=self.prompt.prefix,
            answer_regex=regex,
        )

    # -- prompts ----------------------------------------------------------------------------------------------
    def fit(
        self, values: dict[str, Any], passages: Sequence[str], reserve: int
    ) -> tuple[list[dict[str, str]], int]:
        """The rendered messages with each passage cut (``cut``) and, when the prompt would leave fewer than
        ``reserve`` tokens of the context for the answer, cut shorter until it fits; returns (messages, the limit
        used, in the cutter's unit). Without a tokenizer only the configured cut applies."""
        cut = [self.cutter(p) for p in passages]
        messages = self.prompt.render(values, cut)
        backend = self.llm.backend
        limit = self.cutter.max_tokens or self.cutter.max_words or 0
        if self.context_length is None or backend.tokenizer is None:
            return messages, limit
        budget = self.context_length - reserve
        unit = "tokens" if self.cutter.max_tokens else "words"
        limit = limit or max((len(p.split()) for p in cut), default=0)
        shrunk = False
        while len(backend.encode(messages, self.prompt.prefix)) > budget:
            if limit <= 8:
                raise ValueError(
                    f"the prompt does not fit in {self.context_length} tokens even with passages cut to 8 {unit}; "
                    "raise context_length, lower the window, or use a shorter prompt"
                )
            limit, shrunk = max(8, int(limit * 0.8)), True
            shorter = (DocCutter(max_words=None, max_tokens=limit, tokenizer=self.cutter.tokenizer)
                       if unit == "tokens" else DocCutter(max_words=limit))  # fmt: skip
            messages = self.prompt.render(values, [shorter(p) for p in passages])
        if shrunk:
            self._cut_counts["passages_cut_to_fit"] = self._cut_counts.get("passages_cut_to_fit", 0) + 1
        return messages, limit

    @staticmethod
    def answer_text(res: GenerationResult) -> str:
        """The answer with the server's reasoning field in front as a think block (one input for the parsers)."""
        if res.reasoning:
            return f"<think>{res.reasoning}</think>{res.text}"
        return res.text

    @staticmethod
    def reasoning_of(res: GenerationResult) -> str | None:
        """The reasoning of an answer (its think blocks and the server's reasoning field)."""
        return split_reasoning(res.text, res.reasoning).reasoning

    # -- the Reranker interface -------------------------------------------------------------------------------
    def rank_batch(self, items: Sequence[tuple[Query, Sequence[Doc]]]) -> list[Ranking]:
        """Run the plans of every query in lockstep; scores from the orders; counts in ``Ranking.info``."""
        self._cut_counts = {}
        start = len(self.llm.log)
        plans = []
        for q, docs in items:
            depth = min(self.depth or len(docs), len(docs))
            plans.append(self._with_tail(self.plan(q, docs[:depth]), len(docs)))
        results = run_plans(plans, self.llm, [q.id for q, _ in items], self.progress)
        records = self.llm.log.records[start:]
        rankings = []
        repaired_total = 0
        for (q, _), res in zip(items, results):
            mine = [r for r in records if r.tags.get("qid") == q.id]
            info = {"strategy": self.family, **self.llm.log.summary(mine), **res.counts}
            repaired_total += info.get("repaired", 0)
            rankings.append(
                Ranking.from_order(res.order, reasoning=res.reasoning, comparisons=res.comparisons, info=info)
            )
        if repaired_total:
            warnings.warn(
                f"{repaired_total} LLM answer(s) could not be used as given and were repaired "
                f"({self.family}: see each list's info and the call log for why)",
                stacklevel=3,
            )
        if self._cut_counts.get("passages_cut_to_fit"):
            warnings.warn(
                f"{self._cut_counts['passages_cut_to_fit']} prompt(s) were longer than the context "
                f"({self.context_length} tokens): their passages were cut to fit",
                stacklevel=3,
            )
        return rankings

    @staticmethod
    def _with_tail(plan: Plan, n: int) -> Plan:
        """The plan over the top ``depth`` documents, with the rest appended in first-stage order."""
        result = yield from plan
        result.order = list(result.order) + list(range(len(result.order), n))
        return result

    def tags(self, query: Query, **more: Any) -> dict[str, Any]:
        """The log tags of a request for ``query``."""
        return {"qid": query.id, "purpose": self.family, **more}

    # -- self-description -------------------------------------------------------------------------------------
    def r2r_config(self) -> dict[str, Any]:
        """The strategy's fields of ``r2r_model.json``."""
        cfg: dict[str, Any] = {"prompt": _builtin_name(self.prompt) or PROMPT_FILE, "max_words": self.max_words,
                               "temperature": self.temperature}  # fmt: skip
        for key in ("depth", "seed", "max_new_tokens", "context_length", "max_tokens"):
            if getattr(self, key) is not None:
                cfg[key] = getattr(self, key)
        if not self.constrain_answers:
            cfg["constrain_answers"] = False
        return cfg

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a model directory that opens this strategy again (``r2r_model.json`` naming the backbone)."""
        if self.model_name_or_path is None:
            raise TypeError(
                f"{type(self).__name__} over a backend ({self.llm.name}) has no local model to point at; "
                "save the backend's settings yourself"
            )
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        backbone = Path(self.model_name_or_path)
        cfg = {
            "family": self.family,
            "backbone": str(backbone.resolve()) if backbone.exists() else str(backbone),
        }
        if _builtin_name(self.prompt) is None:
            (out / PROMPT_FILE).write_text(self.prompt.text, encoding="utf-8")
        write_r2r_config(out, {**cfg, **self.r2r_config()})
        return out

    def describe(self) -> dict[str, Any]:
        """Family (strategy), model and prompt."""
        return {"family": self.family, "model": self.model_name_or_path or self.llm.name,
                "prompt": self.prompt.version}  # fmt: skip

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.model_name_or_path or self.llm.name!r}, prompt={self.prompt.version!r})"
