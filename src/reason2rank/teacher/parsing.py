"""Parsing teacher answers without lying about them.

``extract_json`` finds the JSON object in an answer and repairs only common, meaning-preserving breakage
(a ``<think>`` block, code fences, text around the object, trailing commas, Python-style literals); every
repair is named in the returned flags. ``validate_*`` then check the task's schema strictly: a wrong type,
a missing field or an out-of-range grade is an error (the item is asked again and, after the last try,
stored as failed with its raw text), never a guess. Evidence sentences are checked against the text the
teacher was shown (``evidence_in_text``, the rule of ``reason2rank.explain.evidence``); a quote that is not there is kept and flagged.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from typing import Any

from reason2rank.explain.evidence import evidence_in_text
from reason2rank.llm.distinct_values import DISTINCT_KEYWORD

__all__ = [
    "COMPARE_SCHEMA",
    "DIRECT_SCHEMA",
    "ParseError",
    "evidence_in_text",
    "extract_json",
    "listwise_schema",
    "quotable_sentences",
    "string_budget",
    "task_schema",
    "validate_compare",
    "validate_direct",
    "validate_listwise",
]


class ParseError(ValueError):
    """The answer holds no usable JSON object, or the object breaks the task's schema."""


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\n?(.*?)```", re.DOTALL)


def extract_json(text: str | None) -> tuple[Any, list[str]]:
    """Return (object, repairs). Raises ``ParseError`` when no JSON object can be recovered."""
    if text is None or not str(text).strip():
        raise ParseError("the answer is empty")
    flags: list[str] = []
    s = str(text).strip()
    if "</think>" in s.lower():
        stripped = _THINK.sub("", s).strip()
        if stripped == s:  # an unclosed-open think: keep what follows the last </think>
            stripped = s[s.lower().rfind("</think>") + len("</think>") :].strip()
        s = stripped
        flags.append("think_removed")
    obj = _loads(s)
    if obj is not _FAIL:
        return obj, flags
    fence = _FENCE.search(s)
    if fence:
        inner = fence.group(1).strip()
        flags.append("code_fence")
        obj = _loads(inner)
        if obj is not _FAIL:
            return obj, flags
        s = inner
    span = _balanced_object(s)
    if span is None:
        if s.lstrip().startswith("{"):
            raise ParseError("the JSON object is not closed (answer cut off?)")
        raise ParseError("no JSON object found in the answer")
    start, end = span
    if s[:start].strip() or s[end:].strip():
        flags.append("surrounding_text")
    body = s[start:end]
    obj = _loads(body)
    if obj is not _FAIL:
        return obj, flags
    fixed = _drop_trailing_commas(body)
    if fixed != body:
        obj = _loads(fixed)
        if obj is not _FAIL:
            return obj, [*flags, "trailing_comma"]
    try:
        lit = ast.literal_eval(_pythonise(fixed))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        lit = _FAIL
    if isinstance(lit, dict):
        extra = ["trailing_comma"] if fixed != body else []
        return lit, [*flags, *extra, "python_literal"]
    try:
        json.loads(fixed)
    except json.JSONDecodeError as e:
        raise ParseError(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    raise ParseError("invalid JSON")  # pragma: no cover - json.loads succeeded above would have returned


_FAIL = object()


def _loads(s: str) -> Any:
    try:
        obj = json.loads(s)
    except (json.JSONDecodeError, RecursionError):
        return _FAIL
    return obj if isinstance(obj, dict) else _FAIL


def _balanced_object(s: str) -> tuple[int, int] | None:
    """Span of the first top-level ``{...}`` that closes, string-aware (both quote kinds)."""
    start = s.find("{")
    while start >= 0:
        depth = 0
        quote: str | None = None
        escape = False
        for i in range(start, len(s)):
            c = s[i]
            if quote:
                if escape:
                    escape = False
                elif c == "\\":
                    escape = True
                elif c == quote:
                    quote = None
            elif c in "\"'":
                # an apostrophe inside bare text (it's) must not open a string: only after : , [ { or space
                if c == '"' or (i > 0 and s[i - 1] in ":,[{ \n\t"):
                    quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return start, i + 1
        start = s.find("{", start + 1)
    return None


def _drop_trailing_commas(s: str) -> str:
    out: list[str] = []
    quote = False
    escape = False
    i = 0
    while i < len(s):
        c = s[i]
        if quote:
            out.append(c)
            if escape:
                escape = False
            elif c == "\\":
                escape = True
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
            out.append(c)
        elif c == ",":
            j = i + 1
            while j < len(s) and s[j] in " \t\r\n":
                j += 1
            if j < len(s) and s[j] in "}]":
                i += 1
                continue
            out.append(c)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _pythonise(s: str) -> str:
    return re.sub(
        r"\b(true|false|null)\b", lambda m: {"true": "True", "false": "False", "null": "None"}[m.group(1)], s
    )


# -- schemas -------------------------------------------------------------------------------------------

#: the shortest reason a schema admits (an empty string or a bare label is not a reason; validation still checks
#: words and loops)
MIN_REASON_CHARS = 16
_REASON: dict[str, Any] = {"type": "string", "minLength": MIN_REASON_CHARS}

DIRECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": _REASON,
        "evidence": {"type": ["string", "null"]},
        "relevance": {"type": "integer", "enum": [0, 1, 2, 3]},
    },
    "required": ["reasoning", "evidence", "relevance"],
    "additionalProperties": False,
}

COMPARE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "reasoning": _REASON,
        "preferred": {"type": "string", "enum": ["A", "B", "tie"]},
    },
    "required": ["reasoning", "preferred"],
    "additionalProperties": False,
}


def listwise_schema(
    num: int, max_chars: int | None = None, sentences: Sequence[Sequence[str]] | None = None
) -> dict[str, Any]:
    """The JSON schema of a listwise answer over ``num`` passages: exactly ``num`` entries (a shorter list is not a
    ranking of the window), each string at most ``max_chars`` characters where given. With ``sentences`` (the
    quotable sentences of each passage, ``quotable_sentences``), an entry's ``direct_answer_sentence`` is one of its
    own passage's sentences or null: an entry is then one of ``num`` shapes, one per identifier."""
    text = _bounded(_REASON, max_chars)

    def entry(ids: list[int], sentence: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "identifier": {"type": "integer", "enum": ids},
                "direct_reason": text,
                "listwise_reason": text,
                "direct_answer_sentence": sentence,
            },
            "required": ["identifier", "direct_reason", "listwise_reason", "direct_answer_sentence"],
            "additionalProperties": False,
        }

    if sentences is None:
        items = entry(list(range(1, num + 1)), _bounded({"type": ["string", "null"]}, max_chars))
    else:
        if len(sentences) != num:
            raise ValueError(f"sentences for {len(sentences)} passages, but the window holds {num}")
        items = {"anyOf": [entry([i + 1], _one_of_or_null(sentences[i])) for i in range(num)]}
    return {
        "type": "object",
        "properties": {
            "ranked_passages": {
                "type": "array",
                "minItems": num,
                "maxItems": num,
                "items": items,
                DISTINCT_KEYWORD: "identifier",  # each passage once (a local constrained decoder enforces it)
            }
        },
        "required": ["ranked_passages"],
        "additionalProperties": False,
    }


#: at most this many sentences of a document are offered as evidence (the first ones)
MAX_QUOTABLE_SENTENCES = 24
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


def quotable_sentences(text: str, max_chars: int | None = None) -> list[str]:
    """The sentences of a shown document an answer may quote as evidence: in order, without repeats, each of at
    least 3 words, cut at a word boundary to ``max_chars`` (a cut sentence is still a verbatim quote), at most
    ``MAX_QUOTABLE_SENTENCES``. Constraining the evidence field to these makes it a quote by construction; a
    free-text evidence field lets a small model write its own sentence instead."""
    out: list[str] = []
    for raw in _SENTENCE_END.split(text or ""):
        sent = " ".join(raw.split())
        if max_chars is not None and len(sent) > max_chars:
            sent = sent[:max_chars].rsplit(" ", 1)[0]
        if len(sent.split()) >= 3 and sent not in out:
            out.append(sent)
        if len(out) == MAX_QUOTABLE_SENTENCES:
            break
    return out


def _one_of_or_null(sentences: Sequence[str]) -> dict[str, Any]:
    return {"enum": [*sentences, None]}


#: characters per generated token assumed when a token budget becomes string lengths (English prose runs about
#: 4 per token in a BPE vocabulary; 3 leaves room for escapes and the JSON around the strings)
CHARS_PER_TOKEN = 3
#: the shortest bound a string gets, whatever the budget (a reason needs a sentence)
MIN_STRING_CHARS = 48
#: tokens of an answer outside its strings (keys, quotes, braces, the grade): fixed, and per listwise passage
_JSON_OVERHEAD = {"direct": (24, 0), "compare": (16, 0), "listwise": (10, 28)}
_STRINGS = {"direct": (2, 0), "compare": (1, 0), "listwise": (0, 3)}


def string_budget(
    task: str, max_new_tokens: int, num: int = 1, chars_per_token: float = CHARS_PER_TOKEN
) -> int:
    """The characters each free-text field of a ``task`` answer (over ``num`` passages for ``listwise``) may
    hold so that the whole JSON fits in ``max_new_tokens``: the budget less the JSON's own tokens, shared by the
    strings, at ``chars_per_token`` (``CHARS_PER_TOKEN`` unless a retry tightens it), and never under
    ``MIN_STRING_CHARS``. Without such a bound a constrained small model can stay inside one string until the
    budget cuts the JSON (no answer at all)."""
    if chars_per_token <= 0:
        raise ValueError(f"chars_per_token must be > 0, got {chars_per_token}")
    if task not in _JSON_OVERHEAD:
        raise ValueError(f"unknown teacher task {task!r}; expected one of {sorted(_JSON_OVERHEAD)}")
    fixed, per = _JSON_OVERHEAD[task]
    s_fixed, s_per = _STRINGS[task]
    strings = s_fixed + s_per * num
    free_tokens = max_new_tokens - fixed - per * num
    return max(MIN_STRING_CHARS, int(free_tokens * chars_per_token) // strings)


def task_schema(
    task: str,
    *,
    num: int = 1,
    max_new_tokens: int | None = None,
    shown: Sequence[str] | None = None,
    chars_per_token: float = CHARS_PER_TOKEN,
) -> dict[str, Any]:
    """The JSON schema that constrains a ``task`` answer; with ``max_new_tokens``, each string is bounded by
    ``string_budget`` (at ``chars_per_token``) so a constrained answer closes inside the budget; with ``shown`` (the document
    texts the prompt shows), the evidence of a direct answer and the answer sentence of each listwise entry must
    be one of that document's ``quotable_sentences`` (or null)."""
    chars = string_budget(task, max_new_tokens, num, chars_per_token) if max_new_tokens is not None else None
    quotes = [quotable_sentences(t, chars) for t in shown] if shown is not None else None
    if task == "listwise":
        return listwise_schema(num, chars, quotes)
    base = DIRECT_SCHEMA if task == "direct" else COMPARE_SCHEMA if task == "compare" else None
    if base is None:
        raise ValueError(f"unknown teacher task {task!r}; expected one of {sorted(_JSON_OVERHEAD)}")
    props = {k: (_bounded(v, chars) if "string" in str(v.get("type")) and "enum" not in v else v)
             for k, v in base["properties"].items()}  # fmt: skip
    if task == "direct" and quotes is not None:
        props["evidence"] = _one_of_or_null(quotes[0])
    return {**base, "properties": props}


#: the longest first word the constrained pattern of a reason admits
REASON_FIRST_WORD_CHARS = 24
#: a word's first character in that pattern: not a space, a control character, a quote, a backslash or ASCII
#: punctuation (so the validator counts it as a word)
_WORD_START = r'[^\s"\\\x00-\x1f!-/:-@\[-`{-~]'


def reason_pattern(max_chars: int) -> str | None:
    """The regex a bounded reason matches: at least two words (the first of at most
    ``REASON_FIRST_WORD_CHARS`` characters), ``MIN_REASON_CHARS`` to ``max_chars`` characters in all, no quote or
    backslash (so the text needs no escapes). A length bound alone admits one 16-letter "word", which validation
    then refuses: this makes a short or wordless reason impossible under constraints, not a failed try. ``None``
    when ``max_chars`` is too small for the shape (the plain length bound is used then)."""
    rest_max = max_chars - REASON_FIRST_WORD_CHARS - 2
    rest_min = MIN_REASON_CHARS - 3
    if rest_max < rest_min:
        return None
    return (
        f'^{_WORD_START}[^\\s"\\\\\\x00-\\x1f]{{0,{REASON_FIRST_WORD_CHARS - 1}}} '
        f'{_WORD_START}[^"\\\\\\x00-\\x1f]{{{rest_min},{rest_max}}}$'
    )


def _bounded(schema: dict[str, Any], max_chars: int | None) -> dict[str, Any]:
    if max_chars is None:
        return dict(schema)
    out = {**schema, "maxLength": max_chars}
    if 2 * out.get("minLength", 0) > max_chars:  # a bound this tight (a toy budget) drops the shortest reason
        del out["minLength"]
    elif "minLength" in out and (pattern := reason_pattern(max_chars)) is not None:
        out["pattern"] = pattern  # the lengths stay for other validators; xgrammar reads the pattern
    return out


def _require_dict(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ParseError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


#: answers that are labels, not reasons
_LABELS = {"a", "b", "tie", "document a", "document b", "passage a", "passage b", "0", "1", "2", "3", "yes", "no",
           "relevant", "irrelevant", "not relevant"}  # fmt: skip
MIN_REASON_WORDS = 2


def check_reason(text: str, name: str) -> None:
    """A ``ParseError`` for a reason that is not one: a bare label (``"A"``), fewer than ``MIN_REASON_WORDS``
    words, or text that loops (its 5-word sequences mostly repeats of each other)."""
    norm = re.sub(r"[\s\W_]+", " ", text).strip().lower()
    if norm in _LABELS:
        raise ParseError(f"field {name!r} is a label ({text[:20]!r}), not a reason: say why")
    words = norm.split()
    if len(words) < MIN_REASON_WORDS:
        raise ParseError(f"field {name!r} is too short to be a reason ({len(words)} words): say why")
    grams = [tuple(words[i : i + 5]) for i in range(len(words) - 4)]
    if len(grams) >= 10 and len(set(grams)) < 0.6 * len(grams):
        raise ParseError(f"field {name!r} repeats itself (looping text); answer with one short reason")


def _contradicts(reasoning: str, preferred: str) -> bool:
    """Whether the reasoning's last sentence names the other document as the more relevant one."""
    last = re.split(r"(?<=[.!?])\s+", reasoning.strip())[-1].lower()
    named = set(re.findall(r"\b(?:document|passage)\s+([ab])\b[^.]*?\bmore relevant\b", last))
    return preferred in ("A", "B") and named == {("b" if preferred == "A" else "a")}


def _text_field(obj: dict[str, Any], name: str, *, nullable: bool = False) -> str | None:
    if name not in obj:
        raise ParseError(f"missing field {name!r}")
    v = obj[name]
    if v is None and nullable:
        return None
    if not isinstance(v, str):
        raise ParseError(
            f"field {name!r} must be a string{' or null' if nullable else ''}, got {json.dumps(v)[:60]}"
        )
    v = v.strip()
    if not v:
        if nullable:
            return None
        raise ParseError(f"field {name!r} is empty")
    return v


def _extra_keys(obj: dict[str, Any], allowed: set[str], flags: list[str]) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        flags.append("extra_keys:" + ",".join(extra))


def validate_direct(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """A direct answer checked and normalised, and the flags of what was normalised."""
    obj = _require_dict(obj)
    flags: list[str] = []
    if "relevance" not in obj:
        raise ParseError("missing field 'relevance'")
    rel = obj["relevance"]
    if isinstance(rel, str) and rel.strip() in ("0", "1", "2", "3"):
        rel = int(rel.strip())
        flags.append("relevance_from_string")
    elif isinstance(rel, float) and rel.is_integer():
        rel = int(rel)
    if isinstance(rel, bool) or not isinstance(rel, int) or rel not in (0, 1, 2, 3):
        raise ParseError(f"field 'relevance' must be an integer 0, 1, 2 or 3, got {json.dumps(rel)[:40]}")
    reasoning = _text_field(obj, "reasoning")
    check_reason(reasoning or "", "reasoning")
    evidence = _text_field(obj, "evidence", nullable=True) if "evidence" in obj else None
    if "evidence" not in obj:
        flags.append("evidence_missing")
    _extra_keys(obj, {"relevance", "reasoning", "evidence"}, flags)
    return {"relevance": rel, "reasoning": reasoning, "evidence": evidence}, flags


def validate_compare(obj: Any) -> tuple[dict[str, Any], list[str]]:
    """A compare answer checked and normalised, and the flags of what was normalised."""
    obj = _require_dict(obj)
    flags: list[str] = []
    if "preferred" not in obj:
        raise ParseError("missing field 'preferred'")
    pref = obj["preferred"]
    norm = pref.strip().strip("[]()\"' .").lower() if isinstance(pref, str) else None
    mapping = {"a": "A", "b": "B", "tie": "tie", "document a": "A", "document b": "B"}
    if norm not in mapping:
        raise ParseError(f'field \'preferred\' must be "A", "B" or "tie", got {json.dumps(pref)[:40]}')
    value = mapping[norm]
    if pref != value:
        flags.append("preferred_normalised")
    reasoning = _text_field(obj, "reasoning")
    check_reason(reasoning or "", "reasoning")
    if _contradicts(reasoning or "", value):
        raise ParseError(f"the reasoning concludes for the other document, but 'preferred' is {value!r}")
    _extra_keys(obj, {"preferred", "reasoning"}, flags)
    return {"preferred": value, "reasoning": reasoning}, flags


def validate_listwise(obj: Any, num: int) -> tuple[dict[str, Any], list[str]]:
    """A listwise answer over ``num`` passages checked (each passage exactly once), and its flags."""
    obj = _require_dict(obj)
    flags: list[str] = []
    ranked = obj.get("ranked_passages")
    if not isinstance(ranked, list):
        raise ParseError("field 'ranked_passages' must be a list")
    items: list[dict[str, Any]] = []
    seen: set[int] = set()
    for i, entry in enumerate(ranked):
        if not isinstance(entry, dict):
            raise ParseError(f"ranked_passages[{i}] must be an object")
        ident = entry.get("identifier")
        if isinstance(ident, str):
            m = re.fullmatch(r"\s*\[?\s*(\d+)\s*\]?\s*", ident)
            if not m:
                raise ParseError(f"ranked_passages[{i}].identifier {ident!r} is not a passage number")
            ident = int(m.group(1))
            if "identifier_from_string" not in flags:
                flags.append("identifier_from_string")
        if isinstance(ident, bool) or not isinstance(ident, int) or not 1 <= ident <= num:
            raise ParseError(
                f"ranked_passages[{i}].identifier must be an integer 1..{num}, got {json.dumps(ident)[:40]}"
            )
        if ident in seen:
            raise ParseError(f"passage [{ident}] is ranked twice")
        seen.add(ident)
        try:
            direct = _text_field(entry, "direct_reason")
            listwise = _text_field(entry, "listwise_reason")
            check_reason(direct or "", f"ranked_passages[{i}].direct_reason")
            sentence = (
                _text_field(entry, "direct_answer_sentence", nullable=True)
                if "direct_answer_sentence" in entry
                else None
            )
        except ParseError as e:
            raise ParseError(f"ranked_passages[{i}]: {e}") from None
        items.append(
            {
                "identifier": ident,
                "direct_reason": direct,
                "listwise_reason": listwise,
                "direct_answer_sentence": sentence,
            }
        )
    missing = sorted(set(range(1, num + 1)) - seen)
    if missing:
        raise ParseError(f"passages {missing} are missing from the ranking; rank all {num} passages")
    _extra_keys(obj, {"ranked_passages"}, flags)
    return {"ranked_passages": items}, flags
