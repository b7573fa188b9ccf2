"""The one parser for ranking answers: listwise permutations, setwise choices and pairwise preferences.

Every parser first takes the reasoning out with ``split_reasoning`` (text inside ``<think>`` blocks is never
read as an answer; ``think_removed`` / ``truncated_think`` are recorded), then, when the answer holds an
``<answer>...</answer>`` block (Rank-R1 style, also unclosed), reads only its content. The text is normalised
first: full-width digits, brackets and signs (``［２］ ＞ ［１］``), superscript and subscript digits and the
decimal digits of other scripts become ASCII digits; circled and parenthesised numbers and letters (``①``,
``⑳``, ``❶``, ``⑴``, ``Ⓑ``) become bracketed ids (``[1]``, ``[20]``, ``[1]``, ``[1]``, ``[B]``); ``【】〔〕``
become ``[]``; ``→ ≻ ≫ » ⇒ &gt;`` become ``>``; Markdown emphasis and code marks are dropped.

``parse_permutation`` reads ids in this order of preference, so that numbers in prose do not become ids when
the answer has a clear ranking (at each step numbers before letters; letters ``A``.. only for n <= 26):

a. bracketed ids ``[2]`` / ``[B]`` / ``[Passage 2]``: the longest run of them joined only by ``>``, ``,``, ``;``,
   ``=``, ``|``, quotes or spaces, else all of them in order, when at least two are found (one when n == 1);
b. the longest ``>``-separated chain of bare ids, ``2 > 1 > 3`` / ``B > A > C``;
c. a JSON list ``[2, 1, 3]`` / ``["[2]", "[1]"]`` / ``["B", "A"]``, also the list in an object such as
   ``{"ranking": [2, 1, 3]}`` and inside a ```` ```json ```` fence;
d. the last line that is essentially a list of ids separated by commas, spaces or ``>``, optionally after a
   label (``Ranking: 2, 1, 3``);
e. ids named by a word, ``Passage 3`` / ``Document B`` (at least two, or one when n == 1);
f. as a last resort, any number in the text (``loose_ids``), then any capital letter that is not the pronoun
   "I" or the article "A".

Repair keeps the result a full permutation: out-of-range ids are dropped, later duplicates are dropped, missing
ids are appended in input order, and an answer with no usable id keeps the first-stage order
``list(range(n))`` (``no_ids``). ``problems`` names every such step with 1-based ids, e.g. ``duplicate:3``,
``out_of_range:25``, ``missing:4,5``; ``letters`` says that the answer (in "auto" mode) used letters.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from reason2rank.llm.reasoning import split_reasoning

__all__ = [
    "ParsedChoice",
    "ParsedPermutation",
    "ParsedPreference",
    "parse_choice",
    "parse_permutation",
    "parse_preference",
]

_LABEL_MODES = ("auto", "numbers", "letters")
_MAX_DIGITS = 18
_NUM = "n"
_LET = "l"

# ---------------------------------------------------------------------------------------------- normalising

_TRANSLATE = str.maketrans(
    {
        "【": "[",
        "】": "]",
        "〔": "[",
        "〕": "]",
        "〖": "[",
        "〗": "]",
        "⟦": "[",
        "⟧": "]",
        "→": ">",
        "⟶": ">",
        "≻": ">",
        "≫": ">",
        "»": ">",
        "⇒": ">",
        "➔": ">",
        "、": ",",
        "。": ".",
    }
)
_ANSWER_BLOCK = re.compile(r"<answer\s*>(.*?)(?:</answer\s*>|$)", re.IGNORECASE | re.DOTALL)
_ANSWER_TAG = re.compile(r"</?answer\s*>", re.IGNORECASE)
_FENCE = re.compile(r"```[ \t]*[A-Za-z]*[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_MARKUP = re.compile(r"[*`]|\\(?=[\[\]()])")


def _label_char(c: str) -> str | None:
    """Return ``[n]`` / ``[X]`` for a circled or parenthesised number or letter, else None."""
    name = unicodedata.name(c, "")
    if "CIRCLED" not in name and "PARENTHESIZED" not in name:
        return None
    value = unicodedata.numeric(c, -1.0)
    if value >= 0 and value == int(value):
        return f"[{int(value)}]"
    base = unicodedata.normalize("NFKC", c).strip("()")
    if len(base) == 1 and base.isascii() and base.isalpha():
        return f"[{base}]"
    return None


def _normalize(text: str) -> str:
    """Map the Unicode spellings of ids, brackets and separators to ASCII (see the module docstring)."""
    chars: list[str] = []
    for c in text:
        label = None if c.isascii() else _label_char(c)
        chars.append(c if label is None else label)
    s = unicodedata.normalize("NFKC", "".join(chars))
    if not s.isascii():
        out: list[str] = []
        for c in s:
            if not c.isascii():
                d = unicodedata.decimal(c, None)
                if d is None:
                    d = unicodedata.digit(c, None)
                if d is not None:
                    c = str(d)
            out.append(c)
        s = "".join(out).translate(_TRANSLATE)
    return s.replace("&gt;", ">")


def _prepare(text: str | None) -> tuple[str, str, list[str], str | None, bool]:
    """Split off reasoning and pick the answer block.

    Returns (normalised answer, plain answer without Markdown marks, problems, reasoning, in_answer_block).
    """
    raw = text or ""
    split = split_reasoning(raw)
    problems: list[str] = []
    if split.reasoning is not None or split.answer != raw.strip():
        problems.append("think_removed")
    if split.truncated:
        problems.append("truncated_think")
    answer = split.answer
    blocks = [m.group(1) for m in _ANSWER_BLOCK.finditer(answer)]
    filled = [b for b in blocks if b.strip()]
    in_block = bool(blocks)
    if blocks:
        answer = _ANSWER_TAG.sub(" ", filled[-1] if filled else "").strip()
    norm = _normalize(answer)
    return norm, _MARKUP.sub("", norm), problems, split.reasoning, in_block


def _modes(labels: str, n: int) -> tuple[str, ...]:
    """Return the kinds of id to look for ("n" numbers, "l" letters), in order of preference."""
    if labels not in _LABEL_MODES:
        raise ValueError(f"labels must be one of {_LABEL_MODES}, not {labels!r}")
    if labels == "letters":
        if n > 26:
            raise ValueError(f"letter labels need n <= 26, not {n}")
        return (_LET,)
    if labels == "numbers" or n > 26:
        return (_NUM,)
    return (_NUM, _LET)


def _value(token: str, kind: str) -> int:
    """Return the 1-based id a token names: the number, or A=1, B=2, ..."""
    if kind == _LET:
        return ord(token.upper()) - ord("A") + 1
    digits = token.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS  # absurd lengths stay out of range


# ------------------------------------------------------------------------------------------------ patterns

_PREFIX = r"(?:passages?|documents?|docs?|candidates?|items?|options?)"
_BRACKET = {
    _NUM: re.compile(r"\[\s*(?:(?:passage|document|doc)\s*)?#?\s*(\d+)\s*\]", re.IGNORECASE),
    _LET: re.compile(r"\[\s*(?:(?:passage|document|doc)\s+)?([A-Za-z])\s*\]", re.IGNORECASE),
}
_WORD = {
    _NUM: re.compile(rf"\b(?i:{_PREFIX})\s*#?\s*(\d+)(?![\w]|\.\d)"),
    _LET: re.compile(rf"\b(?i:{_PREFIX})\s+([A-Z])(?![\w'])"),
}
_BARE = {
    _NUM: re.compile(r"(?<![\w.])#?(\d+)(?![\w]|\.\d)"),
    _LET: re.compile(r"(?<![\w'])([A-Za-z])(?![\w'])"),
}
_PAREN = {
    _NUM: re.compile(r"\(\s*#?(\d+)\s*\)"),
    _LET: re.compile(r"\(\s*([A-Za-z])\s*\)"),
}
_CAPITAL = re.compile(r"(?<![\w'])([A-Z])(?![\w'])")
_FOLLOWING_WORD = re.compile(r"\s+([a-z]+)")
# words after which a capital "A" is a label ("A is more relevant"), not the article ("A passage about")
_LABEL_VERBS = frozenset(
    ("is", "was", "seems", "appears", "ranks", "has", "provides", "contains", "answers", "matches", "best")
    + ("and", "or", "then", "because", "wins")
)
_RUN_SEP = re.compile(r"""[\s"'>,;=|-]*""")
_CHAIN_SEP = re.compile(r"\s*(?:>+|-+>|=+>?)\s*")
_LINE_LABEL = re.compile(r"^\s*(?:[-+]\s+)?(?:[A-Za-z][\w ()/-]{1,39}[:=]\s*)?")
_LINE = {
    _NUM: re.compile(r"#?\d+(?:(?:\s*[,>;]\s*|\s+)#?\d+)*\s*\.?"),
    _LET: re.compile(r"[A-Za-z](?:(?:\s*[,>;]\s*|\s+)[A-Za-z])*\s*\.?"),
}
_RANK_KEYS = ("ranking", "rank", "ranked", "order", "permutation", "answer", "result", "ids", "passages")
_JSON_ITEM = re.compile(
    r"\s*\[?\s*(?:(?:passage|document|doc)\s*)?#?\s*(\d+|[A-Za-z])\s*\]?\s*", re.IGNORECASE
)
_MAX_JSON_STARTS = 200


def _run_gap(gap: str) -> bool:
    """True when ``gap`` only separates two ids of one ranking (a line break needs an explicit separator)."""
    if not _RUN_SEP.fullmatch(gap):
        return False
    return "\n" not in gap or any(ch in gap for ch in ">,;=|")


def _runs(text: str, pattern: re.Pattern[str], kind: str, sep: re.Pattern[str] | None) -> list[list[int]]:
    """Group the ids ``pattern`` finds into runs of neighbours whose gaps are separators."""
    runs: list[list[int]] = []
    prev_end = 0
    for m in pattern.finditer(text):
        gap = text[prev_end : m.start()]
        joined = _run_gap(gap) if sep is None else bool(sep.fullmatch(gap))
        if runs and joined:
            runs[-1].append(_value(m.group(1), kind))
        else:
            runs.append([_value(m.group(1), kind)])
        prev_end = m.end()
    return runs


def _best(candidates: list[list[int]], n: int) -> list[int]:
    """The candidate with the most distinct in-range ids, then the most ids, then the last one."""
    best: list[int] = []
    best_key = (-1, -1)
    for cand in candidates:
        key = (len({v for v in cand if 1 <= v <= n}), len(cand))
        if key >= best_key:
            best, best_key = cand, key
    return best


def _enough(ids: list[int], n: int) -> bool:
    """At least two ids, or one when there is a single item."""
    return len(ids) >= 2 or (n == 1 and len(ids) == 1)


def _bracketed(plain: str, n: int, kind: str, pattern: re.Pattern[str]) -> list[int]:
    """Step a / e: the longest run of ids, else all of them, when there are enough."""
    runs = _runs(plain, pattern, kind, None)
    best = _best([r for r in runs if len(r) >= 2], n)
    if best:
        return best
    every = [v for r in runs for v in r]
    return every if _enough(every, n) else []


def _chain(plain: str, n: int, kind: str) -> list[int]:
    """Step b: the best ``>``-separated chain of bare ids."""
    return _best([r for r in _runs(plain, _BARE[kind], kind, _CHAIN_SEP) if len(r) >= 2], n)


def _json_objects(norm: str) -> Iterator[Any]:
    """Every JSON value that starts at a ``[`` or ``{`` of the text or of a code fence in it."""
    decoder = json.JSONDecoder()
    texts = [m.group(1) for m in _FENCE.finditer(norm)] + [norm]
    for t in texts:
        starts = [i for i, c in enumerate(t) if c in "[{"][:_MAX_JSON_STARTS]
        for i in starts:
            try:
                obj, _ = decoder.raw_decode(t, i)
            except (ValueError, RecursionError):
                continue
            yield obj


def _json_item(item: Any, kind: str) -> int | None:
    """The 1-based id one JSON list item names, when it is of ``kind``."""
    if isinstance(item, bool):
        return None
    if isinstance(item, float) and item.is_integer():
        item = int(item)
    if isinstance(item, int):
        return item if kind == _NUM else None
    if isinstance(item, str):
        m = _JSON_ITEM.fullmatch(item)
        if m and (m.group(1).isdigit() == (kind == _NUM)):
            return _value(m.group(1), kind)
    return None


def _json_ids(obj: Any, kind: str, depth: int = 0) -> list[int]:
    """The ids of a JSON list, or of the ranking list inside an object."""
    if isinstance(obj, list):
        values = [_json_item(x, kind) for x in obj]
        return [v for v in values if v is not None] if obj and None not in values else []
    if isinstance(obj, dict) and depth < 2:
        keys = sorted(obj, key=lambda k: str(k).lower() not in _RANK_KEYS)
        for k in keys:
            found = _json_ids(obj[k], kind, depth + 1)
            if found:
                return found
    return []


def _json_list(norm: str, n: int, kind: str) -> list[int]:
    """Step c: the best JSON list of ids."""
    return _best([ids for obj in _json_objects(norm) if (ids := _json_ids(obj, kind))], n)


def _line_list(plain: str, n: int, kind: str) -> list[int]:
    """Step d: the last line that is a list of ids."""
    for line in reversed(plain.splitlines()):
        if not line.strip():
            continue
        label = _LINE_LABEL.match(line)
        rest = (line[label.end() :] if label else line).strip()
        if _LINE[kind].fullmatch(rest):
            ids = [_value(t, kind) for t in re.findall(r"\d+" if kind == _NUM else r"[A-Za-z]", rest)]
            if _enough(ids, n):
                return ids
    return []


def _capitals(plain: str) -> list[int]:
    """Capital letters standing alone, except the pronoun "I" and the article "A"."""
    out: list[int] = []
    for m in _CAPITAL.finditer(plain):
        letter = m.group(1)
        if letter in "AI":
            nxt = _FOLLOWING_WORD.match(plain, m.end())
            if nxt and (letter == "I" or nxt.group(1) not in _LABEL_VERBS):
                continue
        out.append(_value(letter, _LET))
    return out


def _loose(plain: str, kind: str) -> list[int]:
    """Step f: every id anywhere."""
    if kind == _NUM:
        return [_value(m.group(1), kind) for m in _BARE[_NUM].finditer(plain)]
    return _capitals(plain)


def _read_ids(norm: str, plain: str, n: int, kinds: tuple[str, ...]) -> tuple[list[int], str, bool]:
    """Return (1-based ids, kind, loose) by the order of preference of the module docstring."""
    steps = (
        lambda k: _bracketed(plain, n, k, _BRACKET[k]),
        lambda k: _chain(plain, n, k),
        lambda k: _json_list(norm, n, k),
        lambda k: _line_list(plain, n, k),
        lambda k: _bracketed(plain, n, k, _WORD[k]),
    )
    for step in steps:
        for kind in kinds:
            ids = step(kind)
            if ids:
                return ids, kind, False
    for kind in kinds:
        ids = _loose(plain, kind)
        if ids:
            return ids, kind, True
    return [], _NUM, False


# ------------------------------------------------------------------------------------------- permutations


@dataclass(frozen=True)
class ParsedPermutation:
    """A listwise answer read as a permutation.

    ``order`` holds 0-based indices and is always a full permutation of ``range(n)``; ``ids`` are the 0-based
    ids as read from the answer, before any repair (they may hold duplicates and out-of-range values);
    ``repaired`` is True when ``order`` differs from ``ids`` or nothing usable was found; ``problems`` says why
    (1-based ids in the messages); ``reasoning`` is the reasoning found in the answer.
    """

    order: list[int]
    ids: list[int]
    repaired: bool
    problems: tuple[str, ...]
    reasoning: str | None


def parse_permutation(text: str | None, n: int, *, labels: str = "auto") -> ParsedPermutation:
    """Read a ranking of ``n`` items from a model's answer and repair it into a full permutation.

    ``labels`` is "numbers" (``[1]`` .. ``[n]``), "letters" (``[A]`` .., n <= 26) or "auto" (decided from the
    answer). The formats, the order in which they are preferred and the repair rules are in the module
    docstring. Raises ``ValueError`` when ``n < 1`` or ``labels`` is not one of the three.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    kinds = _modes(labels, n)
    norm, plain, problems, reasoning, _ = _prepare(text)
    read, kind, loose = _read_ids(norm, plain, n, kinds)
    if read and kind == _LET and labels == "auto":
        problems.append("letters")
    if loose:
        problems.append("loose_ids")
    ids = [v - 1 for v in read]
    seen: set[int] = set()
    order: list[int] = []
    out_of_range: list[int] = []
    duplicates: list[int] = []
    for i in ids:
        if not 0 <= i < n:
            if i + 1 not in out_of_range:
                out_of_range.append(i + 1)
        elif i in seen:
            if i + 1 not in duplicates:
                duplicates.append(i + 1)
        else:
            seen.add(i)
            order.append(i)
    problems += [f"out_of_range:{v}" for v in out_of_range]
    problems += [f"duplicate:{v}" for v in duplicates]
    if order:
        missing = [i for i in range(n) if i not in seen]
        if missing:
            problems.append("missing:" + ",".join(str(i + 1) for i in missing))
        order += missing
    else:
        problems.append("no_ids")
        order = list(range(n))
    repaired = not seen or order != ids
    return ParsedPermutation(
        order=order, ids=ids, repaired=repaired, problems=tuple(problems), reasoning=reasoning
    )


# ------------------------------------------------------------------------------------------------ choices

_WHOLE_CHOICE = re.compile(
    r"(?:(?:the\s+)?(?:final\s+)?(?:answer|choice|output|selection|"
    r"most\s+relevant(?:\s+(?:passage|document|one))?)\s*(?:is|:|=)?\s*)?#?(\d+|[A-Za-z])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedChoice:
    """A setwise answer: the 0-based chosen item (``None`` when the answer names none), problems, reasoning."""

    index: int | None
    problems: tuple[str, ...]
    reasoning: str | None


def _choice_levels(plain: str, kind: str) -> Iterator[list[int]]:
    """The ids of one kind, level by level: brackets, a naming word, parentheses, the whole answer, anywhere."""
    for pattern in (_BRACKET[kind], _WORD[kind], _PAREN[kind]):
        yield [_value(m.group(1), kind) for m in pattern.finditer(plain)]
    whole = _WHOLE_CHOICE.fullmatch(plain.strip(" \t\r\n\"'.:!,;"))
    token = whole.group(1) if whole else ""
    yield [_value(token, kind)] if token and token.isdigit() == (kind == _NUM) else []
    yield _loose(plain, kind)


def parse_choice(text: str | None, n: int, *, labels: str = "auto") -> ParsedChoice:
    """Read which of ``n`` items a setwise answer chose.

    Accepts Rank-R1 style ``<think>...</think> <answer>[3]</answer>`` (an ``<answer>`` block anywhere, also
    without think), ``[3]``, ``3``, ``Document 3``, ``Passage C``, ``C``, ``(c)``, ``**[2]**`` and sentences such
    as ``The most relevant document is [2].``; letters map A to 0. Several different ids: the first in an
    ``<answer>`` block, else ``None`` with ``ambiguous``; an id outside 1..n gives ``None`` with
    ``out_of_range:k``; nothing gives ``None`` with ``no_choice``. Raises ``ValueError`` like
    ``parse_permutation``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, not {n}")
    kinds = _modes(labels, n)
    _, plain, problems, reasoning, in_block = _prepare(text)
    levels = [list(_choice_levels(plain, kind)) for kind in kinds]
    for depth in range(len(levels[0])):
        for kind, per_kind in zip(kinds, levels):
            found = per_kind[depth]
            if not found:
                continue
            if len(set(found)) > 1 and not in_block:
                return ParsedChoice(None, (*problems, "ambiguous"), reasoning)
            if kind == _LET and labels == "auto":
                problems.append("letters")
            if not 1 <= found[0] <= n:
                return ParsedChoice(None, (*problems, f"out_of_range:{found[0]}"), reasoning)
            return ParsedChoice(found[0] - 1, tuple(problems), reasoning)
    return ParsedChoice(None, (*problems, "no_choice"), reasoning)


# -------------------------------------------------------------------------------------------- preferences

_PREF_KEYS = ("preferred", "preference", "winner", "answer", "choice", "more_relevant", "better", "output")
_REASON_KEYS = ("reasoning", "explanation", "rationale", "reason")
_TIE_WORDS = re.compile(r"\b(?:tie|tied|both|equal|equally|same|neither|draw|none)\b", re.IGNORECASE)
_L = r"(?P<pre>(?:passage|document|doc|option|response|text)\s*|[\[(]\s*)?(?<![\w'])(?P<l>[ab])(?![\w'])\s*[\])]?"
_PREF_WHOLE = re.compile(
    r"(?:(?:the\s+)?(?:final\s+)?(?:answer|choice|output|preference|preferred|winner|verdict)\s*(?:is|:|=)?\s*)?"
    r"(?:(?:passage|document|doc|option|response)\s*)?[\[(]?\s*([ab]|tie|both|equal|equally\s+relevant|"
    r"same|neither|none|draw)\s*[\])]?",
    re.IGNORECASE,
)
_INDICATORS: tuple[tuple[re.Pattern[str], bool], ...] = tuple(
    (re.compile(p, re.IGNORECASE), same)
    for p, same in (
        (
            _L + r"\s*(?:is|seems|appears|was|ranks|would\s+be)\s+(?:\w+ly\s+|much\s+|far\s+)?(?:the\s+)?"
            r"(?:more|most|better|best|higher|preferred|winner)",
            True,
        ),
        (r"\b(?:prefer|choose|select|pick|favou?r)\s+" + _L, True),
        (r"\b(?:more|most)\s+relevant(?:\s+(?:passage|document|one))?\s+(?:is|:)\s*" + _L, True),
        (r"\b(?:answer|choice|output|verdict|winner|preference)\s*(?:is|:|=)\s*" + _L, True),
        (_L + r"\s*(?:is|seems|was)\s+(?:\w+ly\s+)?(?:less|not\s+as|worse|lower)", False),
        (r"\b(?:more|better|higher)\s+(?:relevant\s+)?than\s+" + _L, False),
        (r"\b(?:less|worse|lower)\s+(?:relevant\s+)?than\s+" + _L, True),
    )
)
_MENTION = re.compile(_L, re.IGNORECASE)


@dataclass(frozen=True)
class ParsedPreference:
    """A pairwise answer: ``preferred`` is "A", "B", "tie" or ``None``, with problems and reasoning."""

    preferred: str | None
    problems: tuple[str, ...]
    reasoning: str | None


def _letters(pattern: re.Pattern[str], text: str, same: bool = True) -> list[str]:
    """The A/B labels ``pattern`` finds (a bare lower-case letter does not count), flipped when not ``same``."""
    out: list[str] = []
    for m in pattern.finditer(text):
        letter = m.group("l")
        if letter.islower() and not m.group("pre"):
            continue
        if letter == "A" and not m.group("pre"):
            nxt = _FOLLOWING_WORD.match(text, m.end("l"))
            if nxt and nxt.group(1) not in _LABEL_VERBS:
                continue  # the article
        letter = letter.upper()
        out.append(letter if same else ("B" if letter == "A" else "A"))
    return out


def _pref_token(value: str) -> str | None:
    """Return "A", "B" or "tie" when ``value`` as a whole names one, else None."""
    m = _PREF_WHOLE.fullmatch(_MARKUP.sub("", _normalize(value)).strip(" \t\r\n\"'.:!,;"))
    if not m:
        return None
    token = m.group(1).lower()
    return token.upper() if token in ("a", "b") else "tie"


def _json_preference(norm: str) -> tuple[str | None, str | None] | None:
    """(preferred, reasoning) from the first JSON object with a preference key, else None."""
    for obj in _json_objects(norm):
        if not isinstance(obj, dict):
            continue
        lowered = {str(k).lower(): v for k, v in obj.items()}
        key = next((k for k in _PREF_KEYS if k in lowered), None)
        if key is None:
            continue
        reason = next((lowered[k] for k in _REASON_KEYS if isinstance(lowered.get(k), str)), None)
        value = lowered[key]
        return (_pref_token(value) if isinstance(value, str) else None), reason
    return None


def parse_preference(text: str | None) -> ParsedPreference:
    """Read which of two passages (A or B) a pairwise answer prefers.

    Accepts ``Passage A``, ``A``, ``[B]``, ``Document B is more relevant`` (also "A is less relevant than B",
    "I prefer B"), ``<answer>A</answer>`` and JSON ``{"preferred": "B", "reasoning": "..."}`` (the reasoning is
    then that field); "tie", "both", "equal" give "tie". Both A and B named with no clear answer: ``None`` with
    ``ambiguous``; neither: ``None`` with ``no_preference``.
    """
    norm, plain, problems, reasoning, _ = _prepare(text)
    from_json = _json_preference(norm)
    if from_json is not None:
        preferred, reason = from_json
        if reason is not None and reason.strip():
            reasoning = reason.strip()
        if preferred is not None:
            return ParsedPreference(preferred, tuple(problems), reasoning)
        return ParsedPreference(None, (*problems, "bad_value"), reasoning)
    whole = _pref_token(plain)
    if whole is not None:
        return ParsedPreference(whole, tuple(problems), reasoning)
    indicated = {x for pattern, same in _INDICATORS for x in _letters(pattern, plain, same)}
    if len(indicated) == 1:
        return ParsedPreference(indicated.pop(), tuple(problems), reasoning)
    mentioned = set(_letters(_MENTION, plain))
    if not indicated and len(mentioned) == 1:
        return ParsedPreference(mentioned.pop(), tuple(problems), reasoning)
    if _TIE_WORDS.search(plain):
        return ParsedPreference("tie", tuple(problems), reasoning)
    if indicated or mentioned:
        return ParsedPreference(None, (*problems, "ambiguous"), reasoning)
    return ParsedPreference(None, (*problems, "no_preference"), reasoning)
