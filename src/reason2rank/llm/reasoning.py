"""Reasoning handling in one place: separate a model's reasoning from its answer.

Reasoning models write their thoughts either inline, between ``<think>`` tags, or (OpenAI-compatible reasoning
servers such as vLLM) in a separate ``reasoning`` / ``reasoning_content`` field of the message.
``split_reasoning`` applies one set of rules to both:

* every ``<think>...</think>`` block is removed from the answer and its content kept as reasoning; tags are
  matched case-insensitively, ``<thinking>...</thinking>`` counts the same, any number of blocks may occur
  (nested tags are counted, so an inner pair does not end the outer block), and several blocks are joined
  with a blank line;
* a closing tag with no opening tag before it (chat templates such as Qwen3 or DeepSeek-R1 put ``<think>``
  into the prompt, so the completion starts inside the reasoning) makes everything before it reasoning; with
  several such closing tags the split is at the LAST one, and the rest is the answer;
* an opening tag that is never closed (the generation hit its token budget while thinking) makes the text
  before it the answer (usually empty) and everything after it reasoning, and sets ``truncated``;
* ``server_reasoning`` (the field the server returned, see ``reasoning_field``) comes first in the reasoning;
* reasoning that is empty after stripping is ``None``; a ``None`` or empty text gives the answer ``""``.

Where a block is cut out between two non-space characters a single space takes its place, so ``[1]<think>x
</think>[2]`` reads ``[1] [2]`` and not ``[1][2]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["SplitAnswer", "reasoning_field", "split_reasoning"]

# an opening or closing <think> / <thinking> tag (group 1 is "/" for a closing tag); attributes are tolerated
_TAG = re.compile(r"<\s*(/?)\s*think(?:ing)?\b[^<>]*>", re.IGNORECASE)


@dataclass(frozen=True)
class SplitAnswer:
    """An answer with its reasoning taken out.

    ``answer`` is the text outside reasoning (stripped), ``reasoning`` the reasoning text (stripped; ``None``
    when there was none) and ``truncated`` is True when a ``<think>`` block was opened but never closed.
    """

    answer: str
    reasoning: str | None
    truncated: bool


def _untag(text: str) -> str:
    """Replace every think tag in ``text`` by a line break and strip the result."""
    return _TAG.sub("\n", text).strip()


def _join_answer(parts: list[str]) -> str:
    """Concatenate answer pieces, putting a space where a cut joined two non-space characters."""
    out = ""
    for part in parts:
        if out and part and not out[-1].isspace() and not part[0].isspace():
            out += " "
        out += part
    return out.strip()


def split_reasoning(text: str | None, server_reasoning: str | None = None) -> SplitAnswer:
    """Split ``text`` into answer and reasoning by the rules of the module docstring.

    ``server_reasoning`` is the reasoning the server returned separately (``reasoning_field(message)``); it is
    put first in the returned reasoning.
    """
    blocks: list[str] = []
    if server_reasoning is not None and server_reasoning.strip():
        blocks.append(server_reasoning.strip())
    s = text or ""
    inline: list[str] = []
    answer_parts: list[str] = []
    depth = 0
    pos = 0  # where the text not yet assigned to answer or reasoning starts
    block_start = 0
    for m in _TAG.finditer(s):
        if m.group(1):  # a closing tag
            if depth == 0:
                # no opening tag before it: everything so far was reasoning
                inline = [_untag(s[: m.start()])]
                answer_parts = []
            else:
                depth -= 1
                if depth == 0:
                    inline.append(_untag(s[block_start : m.start()]))
        else:
            if depth == 0:
                answer_parts.append(s[pos : m.start()])
                block_start = m.end()
            depth += 1
        pos = m.end()
    truncated = depth > 0
    if truncated:
        inline.append(_untag(s[block_start:]))
    else:
        answer_parts.append(s[pos:])
    blocks.extend(b for b in inline if b)
    reasoning = "\n\n".join(blocks) if blocks else None
    return SplitAnswer(answer=_join_answer(answer_parts), reasoning=reasoning, truncated=truncated)


def reasoning_field(message: Mapping[str, Any]) -> str | None:
    """Return the reasoning an OpenAI-compatible server put beside the content of a chat ``message``.

    That is ``message["reasoning"]`` or else ``message["reasoning_content"]``, whichever is first a non-empty
    string; ``None`` when neither is.
    """
    for key in ("reasoning", "reasoning_content"):
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None
