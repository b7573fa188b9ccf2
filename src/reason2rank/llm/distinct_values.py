"""Distinct values under constrained decoding: a JSON key whose integer values may not repeat inside one answer.

A JSON schema cannot say "every entry of this list has a different ``identifier``" (``uniqueItems`` compares whole
entries), so a listwise answer constrained to its schema can still rank a passage twice. A schema marks such a key
with ``"x-r2r-distinct": "<key>"`` on the array (``teacher.parsing.listwise_schema`` does); ``Constraint.json``
takes the mark out of the schema xgrammar compiles and keeps the key and its enum, and while a row writes that key's
value the decoder bans the tokens that would complete a value the row has already written. Compact JSON only (the
constrained form: ``"key": 12``); integer enums only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DISTINCT_KEYWORD", "DigitTokens", "DistinctValues", "distinct_keys", "server_schema"]

#: the schema keyword (on an array) naming the key whose values its entries may not repeat
DISTINCT_KEYWORD = "x-r2r-distinct"


def distinct_keys(schema: Any) -> tuple[tuple[Any, ...], Any]:
    """``(marks, schema without them)``: each mark is ``(key, values)`` — the key an array marked with
    ``DISTINCT_KEYWORD`` may not repeat, and the integer values its entries' enums allow."""
    marks: list[tuple[str, tuple[int, ...]]] = []

    def enums_of(node: Any, key: str) -> set[int]:
        found: set[int] = set()
        if isinstance(node, Mapping):
            props = node.get("properties")
            if isinstance(props, Mapping) and isinstance(props.get(key), Mapping):
                found |= {v for v in props[key].get("enum", ()) if isinstance(v, int)}
            for v in node.values():
                found |= enums_of(v, key)
        elif isinstance(node, list):
            for v in node:
                found |= enums_of(v, key)
        return found

    def strip(node: Any) -> Any:
        if isinstance(node, Mapping):
            if DISTINCT_KEYWORD in node:
                key = node[DISTINCT_KEYWORD]
                values = enums_of(node.get("items"), key)
                if not isinstance(key, str) or not values:
                    raise ValueError(
                        f"{DISTINCT_KEYWORD} must name a key whose entries have an integer enum, got {key!r}"
                    )
                marks.append((key, tuple(sorted(values))))
            return {k: strip(v) for k, v in node.items() if k != DISTINCT_KEYWORD}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    plain = strip(schema)  # fills marks
    return tuple(marks), plain


def server_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` as a server gets it: without the marks only the local decoder reads (a strict server refuses
    keywords it does not know)."""
    return dict(distinct_keys(schema)[1])


class DigitTokens:
    """The tokens of a vocabulary that start with ASCII digits: their digits, and whether more text follows."""

    def __init__(self, vocab: Sequence[bytes]) -> None:
        import torch

        only: dict[str, list[int]] = {}  # digits and nothing else
        then_more: dict[str, list[int]] = {}  # digits, then something that ends the number
        non_digit: list[int] = []
        for i, b in enumerate(vocab):
            m = re.match(rb"[0-9]+", b)
            if m is None:
                if b:
                    non_digit.append(i)
                continue
            d = m.group().decode()
            (only if m.end() == len(b) else then_more).setdefault(d, []).append(i)
        self.only = {d: torch.tensor(ids, dtype=torch.long) for d, ids in only.items()}
        self.then_more = {d: torch.tensor(ids, dtype=torch.long) for d, ids in then_more.items()}
        self.non_digit = torch.tensor(non_digit, dtype=torch.long)


class DistinctValues:
    """One row's guard: follows the text the row writes and, while it writes a marked key's value, says which
    tokens would complete a value already written (or no value left unused)."""

    def __init__(
        self, marks: Sequence[tuple[str, tuple[int, ...]]], vocab: Sequence[bytes], digits: DigitTokens
    ):
        self.vocab = vocab
        self.digits = digits
        self.keys = {key: {str(v) for v in values} for key, values in marks}
        self.used: dict[str, set[str]] = {key: set() for key in self.keys}
        self.text = b""
        self._value = re.compile(
            rb'"(' + b"|".join(re.escape(k.encode()) for k in self.keys) + rb')": ?([0-9]*)$'
        )
        self._done = re.compile(
            rb'"(' + b"|".join(re.escape(k.encode()) for k in self.keys) + rb')": ?([0-9]+)[^0-9]'
        )

    def accept(self, token: int) -> None:
        """The row generated ``token``."""
        before = len(self.text)
        self.text += self.vocab[token]
        for m in self._done.finditer(self.text, max(0, before - 64)):
            self.used[m.group(1).decode()].add(m.group(2).decode())

    def banned(self) -> Any:
        """The tokens (a LongTensor) that would repeat a value, while the row is writing a marked key's value;
        else None."""
        import torch

        m = self._value.search(self.text[-64:])
        if m is None:
            return None
        key, typed = m.group(1).decode(), m.group(2).decode()
        free = self.keys[key] - self.used[key]
        if not typed and not free:  # nothing left to write (the grammar should not get here)
            return None
        out = [ids for d, ids in self.digits.only.items()  # the number may go on: a free value must start so
               if not any(v.startswith(typed + d) for v in free)]  # fmt: skip
        out += [ids for d, ids in self.digits.then_more.items() if typed + d not in free]  # it ends: free?
        if typed and typed not in free:  # a token without digits ends the number typed so far
            out.append(self.digits.non_digit)
        return torch.cat(out) if out else None
