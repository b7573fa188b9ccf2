"""Constrained decoding for local models: generation that can only produce text a JSON schema or a regex allows.

Built on xgrammar (Apache-2.0; the structured-generation engine of vLLM, SGLang and TensorRT-LLM): its grammar
compiler works from the tokenizer's vocabulary, and its matcher gives, at each step, the bitmask of tokens that
keep the output inside the grammar, in C++ (a few microseconds per token). Chosen over lm-format-enforcer
(pure Python, a per-step token walk) for speed and over outlines for its smaller footprint and per-step API,
which our own decoding loop (``llm.decoding``) needs. Optional: ``pip install 'reason2rank[constrained]'``;
imported only when a constrained request is decoded.

With a constraint, an answer is *valid by construction* up to the token budget: an answer cut by
``max_new_tokens`` is still incomplete (``finish_reason == "length"``), never repaired into something else.

    compiler = ConstraintCompiler.for_tokenizer(tokenizer, vocab_size)
    matcher = compiler.matcher(Constraint.json(schema))  # or Constraint.regex(r"\\[\\d+\\]( > \\[\\d+\\])*")
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Constraint", "ConstraintCompiler", "RowConstraints", "constraints_available"]


def constraints_available() -> bool:
    """Whether constrained decoding can run here (xgrammar is installed)."""
    return importlib.util.find_spec("xgrammar") is not None


@dataclass(frozen=True)
class Constraint:
    """What an answer must match: ``kind`` is ``"json"`` (``spec``: a JSON schema, serialised) or ``"regex"``."""

    kind: str
    spec: str
    #: keys whose values may not repeat in one answer, with the values allowed (``llm.distinct_values``)
    distinct: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @classmethod
    def json(cls, schema: Mapping[str, Any]) -> Constraint:
        """A JSON-schema constraint. The keys keep their order: xgrammar writes an object's properties in the order
        the schema lists them, and that order is meaningful (the reasoning before the grade it leads to). A string
        with a ``pattern`` loses its ``minLength``/``maxLength`` here: xgrammar ignores them beside a pattern (with
        a warning per compile), so a schema that has both must say its bounds in the pattern too. An array marked
        ``"x-r2r-distinct": KEY`` (``llm.distinct_values``) keeps its entries' KEY values distinct."""
        from reason2rank.llm.distinct_values import distinct_keys

        marks, plain = distinct_keys(schema)
        return cls("json", json.dumps(_lengths_beside_patterns_dropped(plain)), marks)

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """A regular-expression constraint (the whole answer matches ``pattern``)."""
        return cls("regex", pattern)


def _lengths_beside_patterns_dropped(schema: Any) -> Any:
    if isinstance(schema, Mapping):
        drop = {"minLength", "maxLength"} if "pattern" in schema else set()
        return {k: _lengths_beside_patterns_dropped(v) for k, v in schema.items() if k not in drop}
    if isinstance(schema, list):
        return [_lengths_beside_patterns_dropped(v) for v in schema]
    return schema


class ConstraintCompiler:
    """Compiles constraints for one tokenizer. The last ``MAX_COMPILED`` compiled grammars are kept (one compile per
    schema or regex while it is in use; a teacher run has one schema per document, since evidence is one of the
    document's sentences, so the cache is bounded, and so is xgrammar's own, to ``CACHE_LIMIT_BYTES``)."""

    MAX_COMPILED = 256
    CACHE_LIMIT_BYTES = 256 * 1024 * 1024

    _by_tokenizer: dict[tuple[Any, ...], ConstraintCompiler] = {}
    _lock = threading.Lock()

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int] = ()) -> None:
        try:
            import xgrammar as xgr
        except ImportError as e:
            raise ImportError(
                "constrained decoding needs xgrammar: pip install 'reason2rank[constrained]' (or pass "
                "constrain=False to generate without constraints)"
            ) from e
        self._xgr = xgr
        self._tokenizer = tokenizer  # kept alive: compilers are found by the tokenizer's id
        stops = [int(t) for t in stop_token_ids] or None  # the model's end tokens end a complete answer
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stops)
        self._compiler = xgr.GrammarCompiler(self.info, cache_limit_bytes=self.CACHE_LIMIT_BYTES)
        self._compiled: OrderedDict[Constraint, Any] = OrderedDict()
        # xgrammar's JSON strings admit raw control characters, which JSON (RFC 8259) does not: tokens holding
        # one are barred from JSON answers (compact JSON never needs them; an escaped "\\n" is printable)
        stop = set(self.info.stop_token_ids)
        vocab = self.info.decoded_vocab
        self.control_token_ids = torch.tensor(
            [i for i, b in enumerate(vocab) if i not in stop and any(c < 0x20 for c in b)], dtype=torch.long
        )
        self.utf8 = _Utf8Tables(vocab, stop)
        self._digit_tokens: Any = None

    @property
    def digit_tokens(self) -> Any:
        """The vocabulary's tokens that start with digits (``llm.distinct_values.DigitTokens``), made on first use."""
        if self._digit_tokens is None:
            from reason2rank.llm.distinct_values import DigitTokens

            self._digit_tokens = DigitTokens(self.info.decoded_vocab)
        return self._digit_tokens

    @classmethod
    def for_tokenizer(
        cls, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int] = ()
    ) -> ConstraintCompiler:
        """The compiler of ``tokenizer`` (made once per tokenizer object, vocabulary size and stop tokens)."""
        key = (id(tokenizer), int(vocab_size), tuple(stop_token_ids))
        with cls._lock:
            if key not in cls._by_tokenizer:
                cls._by_tokenizer[key] = cls(tokenizer, vocab_size, stop_token_ids)
            return cls._by_tokenizer[key]

    def compile(self, constraint: Constraint) -> Any:
        """The compiled grammar of ``constraint`` (a clear error for a schema or regex xgrammar cannot take)."""
        with self._lock:
            got = self._compiled.get(constraint)
            if got is not None:
                self._compiled.move_to_end(constraint)
        if got is None:
            try:
                if constraint.kind == "json":
                    got = self._compiler.compile_json_schema(constraint.spec, any_whitespace=False)
                elif constraint.kind == "regex":
                    got = self._compiler.compile_regex(constraint.spec)
                else:
                    raise ValueError(f"unknown constraint kind {constraint.kind!r} (json or regex)")
            except RuntimeError as e:
                raise ValueError(
                    f"cannot compile the {constraint.kind} constraint {constraint.spec[:200]!r}: {e}"
                ) from e
            with self._lock:
                self._compiled[constraint] = got
                while len(self._compiled) > self.MAX_COMPILED:
                    self._compiled.popitem(last=False)
        return got

    def matcher(self, constraint: Constraint) -> Any:
        """A fresh matcher (one per generated row) for ``constraint``."""
        return self._xgr.GrammarMatcher(self.compile(constraint))


#: lead bytes whose first continuation byte has a narrower range (RFC 3629: no overlong forms, no surrogates,
#: nothing above U+10FFFF)
_SECOND_BYTE = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}


class _Utf8Tables:
    """Keeps a byte-level answer valid UTF-8: xgrammar admits a multi-byte character cut short (a lead byte with
    too few continuation bytes) or ill formed (an overlong form or a surrogate such as ED B4 B0), which decodes to
    U+FFFD and breaks a schema's ``maxLength``. Per token: how many continuation bytes it starts with, whether the
    rest is well formed, how many bytes its last character still needs and whether that character's lead byte
    narrows the next byte; ``allowed[r]`` is the tokens that may follow when ``r`` continuation bytes are pending,
    ``second_ok[lead]`` those whose first byte may follow ``lead``."""

    def __init__(self, vocab: Sequence[bytes], stop: set[int]) -> None:
        n = len(vocab)
        # (kind, value, lead): see ``after``
        self.next_pending: list[tuple[int, int, int | None] | None] = [None] * n
        allowed = torch.zeros((4, n), dtype=torch.bool)
        first = torch.full((n,), -1, dtype=torch.long)
        for i, b in enumerate(vocab):
            if i in stop or not b:  # special tokens (empty bytes): free, when no character is open
                allowed[0, i] = True
                self.next_pending[i] = (0, 0, None)
                continue
            first[i] = b[0]
            head = 0
            while head < len(b) and 0x80 <= b[head] <= 0xBF:
                head += 1
            if head == len(b):  # only continuation bytes: fits when at most ``r`` are pending
                for r in range(head, 4):
                    allowed[r, i] = True
                self.next_pending[i] = (1, head, None)
                continue
            need, ok, k, lead = 0, head <= 3, head, None
            while ok and k < len(b):
                c = b[k]
                if need:
                    lo, hi = _SECOND_BYTE.get(lead, (0x80, 0xBF)) if lead is not None else (0x80, 0xBF)
                    ok, need, lead = lo <= c <= hi, need - 1, None
                elif c < 0x80:
                    pass
                elif 0xC2 <= c <= 0xDF:
                    need = 1
                elif 0xE0 <= c <= 0xEF:
                    need, lead = 2, (c if c in _SECOND_BYTE else None)
                elif 0xF0 <= c <= 0xF4:
                    need, lead = 3, (c if c in _SECOND_BYTE else None)
                else:
                    ok = False
                k += 1
            if ok:
                allowed[head, i] = True
                self.next_pending[i] = (0, need, lead)
        self.allowed = allowed
        self.second_ok = {lead: (first >= lo) & (first <= hi) for lead, (lo, hi) in _SECOND_BYTE.items()}

    def after(self, pending: int, lead: int | None, token: int) -> tuple[int, int | None]:
        """Continuation bytes pending after ``token``, and the lead byte that narrows the next one (or ``None``)."""
        kind, value, new_lead = self.next_pending[token] or (0, 0, None)
        return (pending - value, None) if kind == 1 else (value, new_lead)

    def banned(self, pending: int, lead: int | None, width: int) -> torch.Tensor:
        """The tokens (of the first ``width``) that may not come next."""
        ok = self.allowed[pending, :width]
        if lead is not None:
            ok = ok & self.second_ok[lead][:width]
        return ~ok


class RowConstraints:
    """The matchers of one batch's rows (``None`` for an unconstrained row), applied step by step by
    ``llm.decoding.decode``: ``mask`` limits the logits to allowed tokens, ``accept`` advances a row, and
    ``done`` says when a row's grammar has reached its end (the answer is complete)."""

    def __init__(self, compiler: ConstraintCompiler, constraints: Sequence[Constraint | None]) -> None:
        xgr = compiler._xgr
        self._xgr = xgr
        self.matchers: list[Any] = [compiler.matcher(c) if c is not None else None for c in constraints]
        self.json_rows = [i for i, c in enumerate(constraints) if c is not None and c.kind == "json"]
        self.control_token_ids = compiler.control_token_ids
        self.utf8 = compiler.utf8
        self.pending = [0] * len(self.matchers)
        self.lead: list[int | None] = [None] * len(self.matchers)
        self.rows = [i for i, m in enumerate(self.matchers) if m is not None]
        self.bitmask = xgr.allocate_token_bitmask(len(self.matchers), compiler.info.vocab_size)
        self.distinct: list[Any] = [None] * len(self.matchers)
        for i, c in enumerate(constraints):
            if c is not None and c.distinct:
                from reason2rank.llm.distinct_values import DistinctValues

                self.distinct[i] = DistinctValues(
                    c.distinct, compiler.info.decoded_vocab, compiler.digit_tokens
                )

    def mask(self, logits: torch.Tensor, active: Sequence[bool]) -> torch.Tensor:
        """``logits`` (rows × vocab) with the tokens each active constrained row may not take set to -inf."""
        rows = [i for i in self.rows if active[i]]
        if not rows:
            return logits
        self.bitmask.fill_(-1)  # all allowed, for unconstrained rows
        for i in rows:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
        out = logits.float().contiguous()
        self._xgr.apply_token_bitmask_inplace(out, self.bitmask.to(out.device), indices=rows)
        width = min(out.shape[1], self.utf8.allowed.shape[1])
        for i in rows:  # a multi-byte character that was started must be finished, and well formed
            bad = self.utf8.banned(self.pending[i], self.lead[i], width).to(out.device)
            out[i, :width] = out[i, :width].masked_fill(bad, float("-inf"))
        json_rows = [i for i in self.json_rows if active[i]]
        if json_rows and len(self.control_token_ids):
            ids = self.control_token_ids.to(out.device)
            out[torch.tensor(json_rows, device=out.device)[:, None], ids[None, :]] = float("-inf")
        for i in rows:  # a value already written under a distinct key is not written again
            guard = self.distinct[i]
            banned = guard.banned() if guard is not None else None
            if banned is not None:
                row = out[i].index_fill(0, banned.to(out.device), float("-inf"))
                if torch.isfinite(row).any():  # never a row with no token left (the grammar decides then)
                    out[i] = row
        return out

    def accept(self, row: int, token: int) -> None:
        """Advance ``row``'s matcher by the generated ``token``."""
        m = self.matchers[row]
        if m is not None:
            if not m.accept_token(int(token)):
                raise RuntimeError(
                    f"the constrained row {row} generated token {token}, which its grammar rejects"
                )
            self.pending[row], self.lead[row] = self.utf8.after(self.pending[row], self.lead[row], int(token))
            if self.distinct[row] is not None:
                self.distinct[row].accept(int(token))

    def done(self, row: int) -> bool:
        """Whether ``row``'s grammar has ended (its answer is complete)."""
        m = self.matchers[row]
        return m is not None and m.is_terminated()
