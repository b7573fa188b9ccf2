"""The one prompt template system: versioned chat templates with ``{{placeholders}}``, and document cutting.

Every prompt the library sends an LLM (the teacher's tasks, the listwise/setwise/pairwise strategies, the
causal-LM family's scoring, reasoning and comparison prompts) is a ``PromptTemplate``. A template file is plain
text: ``# key: value`` header lines, then sections introduced by ``=== <kind> ===`` lines:

- ``=== system ===`` / ``=== user ===`` / ``=== assistant ===``: one chat message each;
- ``=== passage user ===`` / ``=== passage assistant ===``: a block of messages repeated once per passage (the
  RankGPT turns; placeholders ``{{n}}``, ``{{label}}``, ``{{passage}}``);
- ``=== item ===``: how one passage is written inside ``{{passages}}`` (placeholders ``{{n}}``, ``{{label}}``,
  ``{{passage}}``); items are joined by the ``# item_separator:`` header (``\\n`` escapes; default one newline);
- ``=== prefix ===``: text the answer starts with, after the chat template's generation prompt (e.g. `` Passage:``
  or ``<think>``); kept verbatim except for its final newline.

Headers: ``task`` (required; decides the placeholders a template may use, ``TASK_PLACEHOLDERS``), ``version``
(e.g. ``setwise/rank-r1-v1``; a template without one gets ``<task>/custom-<digest>``), ``labels`` (``numbers`` or
``letters``: how passages are labelled), ``item_separator``. Rendering fails on a missing value instead of
leaving a hole in the prompt. ``sha256`` is the digest of the template text: store it with results, so an edited
template is visible in the data.

Documents are shown with whitespace collapsed and cut to ``max_words`` words (R2R and RankGPT cut to 300) or
``max_tokens`` tokens of a given tokenizer (``DocCutter``); a token cut keeps the document's own characters.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "TASK_PLACEHOLDERS",
    "DocCutter",
    "Messages",
    "PromptSection",
    "PromptTemplate",
    "builtin_template",
    "builtin_templates",
    "load_template",
    "messages_to_text",
    "passage_label",
]

Messages = list[dict[str, str]]

#: the placeholders each task's templates may use (``n``, ``label`` and ``passage`` only inside passage blocks
#: and the item format)
TASK_PLACEHOLDERS: dict[str, frozenset[str]] = {
    # the R2R teacher
    "direct": frozenset({"query", "document"}),
    "compare": frozenset({"query", "document_a", "document_b"}),
    "listwise": frozenset({"query", "num", "n", "passage"}),
    # ranking strategies
    "rank_listwise": frozenset({"query", "num", "passages", "n", "label", "passage"}),
    "setwise": frozenset({"query", "num", "passages", "n", "label", "passage"}),
    "pairwise": frozenset({"query", "document_a", "document_b"}),
    # in-context reranking from attention (the query after the passages)
    "attention": frozenset({"query", "num", "passages", "n", "label", "passage"}),
    # the causal-LM family (pointwise scoring and its explanations)
    "score": frozenset({"query", "document"}),
    "reasoning": frozenset({"query", "document"}),
    "comparison": frozenset({"query", "document_a", "document_b"}),
}
_ITEM_ONLY = frozenset({"n", "label", "passage"})
#: tasks whose templates show a list of passages (passage blocks, ``{{passages}}``)
LIST_TASKS = frozenset({"listwise", "rank_listwise", "setwise", "attention"})

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SECTION = re.compile(r"^===\s*(passage\s+)?(system|user|assistant|item|prefix)\s*===\s*$")


@dataclass(frozen=True)
class PromptSection:
    """One section of a template: a chat turn (``role``), part of the per-passage block, the item format or the
    answer prefix."""

    role: str
    text: str
    per_passage: bool = False


def passage_label(i: int, labels: str) -> str:
    """The label of the ``i``-th passage (0-based): ``"1"``, ``"2"``, ... or ``"A"``, ``"B"``, ..."""
    if labels == "letters":
        if i >= 26:
            raise ValueError("letter labels go up to 26 passages; use number labels for more")
        return string.ascii_uppercase[i]
    return str(i + 1)


@dataclass(frozen=True)
class PromptTemplate:
    """One task's prompt: chat turns with ``{{placeholders}}`` (see the module docstring)."""

    task: str
    version: str
    sections: tuple[PromptSection, ...]
    sha256: str
    source: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)
    text: str = ""

    @property
    def labels(self) -> str:
        """How passages are labelled: ``numbers`` (default) or ``letters``."""
        return self.meta.get("labels", "numbers")

    @property
    def prefix(self) -> str:
        """The text the answer starts with ("" when the template has no prefix section)."""
        return next((s.text for s in self.sections if s.role == "prefix"), "")

    @property
    def placeholders(self) -> frozenset[str]:
        """The placeholders the template uses."""
        return frozenset(n for s in self.sections for n in _PLACEHOLDER.findall(s.text))

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> PromptTemplate:
        """Read a template from its text (see the module docstring for the format)."""
        meta: dict[str, str] = {}
        sections: list[PromptSection] = []
        role: str | None = None
        per_passage = False
        body: list[str] = []

        def close() -> None:
            if role is not None:
                content = "\n".join(body)
                content = content[:-1] if role == "prefix" and content.endswith("\n") else content
                sections.append(
                    PromptSection(role, content if role == "prefix" else content.strip("\n"), per_passage)
                )

        for lineno, line in enumerate(text.splitlines(), 1):
            m = _SECTION.match(line)
            if m:
                close()
                role, per_passage, body = m.group(2), bool(m.group(1)), []
            elif role is None:
                if line.startswith("#"):
                    key, sep, value = line[1:].partition(":")
                    if sep and key.strip() in ("task", "version", "labels", "item_separator"):
                        meta[key.strip()] = value.strip()
                elif line.strip():
                    raise ValueError(
                        f"{source}:{lineno}: text before the first '=== role ===' section: {line!r}"
                    )
            else:
                body.append(line)
        close()
        return cls._checked(meta, sections, text, source)

    @classmethod
    def _checked(
        cls, meta: dict[str, str], sections: list[PromptSection], text: str, source: str
    ) -> PromptTemplate:
        task = meta.get("task")
        if task not in TASK_PLACEHOLDERS:
            raise ValueError(
                f"{source}: header '# task: ...' must be one of {tuple(TASK_PLACEHOLDERS)}, got {task!r}"
            )
        if not any(s.role in ("system", "user", "assistant") for s in sections):
            raise ValueError(f"{source}: no '=== role ===' sections")
        if meta.get("labels", "numbers") not in ("numbers", "letters"):
            raise ValueError(f"{source}: '# labels:' must be numbers or letters, got {meta['labels']!r}")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        version = meta.get("version") or f"{task}/custom-{digest[:12]}"
        allowed = TASK_PLACEHOLDERS[task]
        block = [s.per_passage for s in sections]
        if (any(block) or any(s.role == "item" for s in sections)) and task not in LIST_TASKS:
            raise ValueError(
                f"{source}: only tasks with a list of passages ({', '.join(sorted(LIST_TASKS))}) have per-passage "
                "sections or an item format"
            )
        if any(block):
            first = block.index(True)
            if not all(block[first : first + block.count(True)]):
                raise ValueError(f"{source}: the per-passage sections must form one contiguous block")
        for s in sections:
            for name in _PLACEHOLDER.findall(s.text):
                item_scope = s.per_passage or s.role == "item"
                ok = name in allowed and (item_scope or name not in _ITEM_ONLY)
                if not ok:
                    where = "passage " if s.per_passage else ""
                    raise ValueError(
                        f"{source}: placeholder {{{{{name}}}}} is not available in a {task!r} {where}{s.role} "
                        f"section (allowed: {sorted(allowed)})"
                    )
        return cls(task=task, version=version, sections=tuple(sections), sha256=digest, source=source,
                   meta=meta, text=text)  # fmt: skip

    @classmethod
    def from_file(cls, path: str | Path) -> PromptTemplate:
        """Read a template file."""
        path = Path(path)
        return cls.parse(path.read_text(encoding="utf-8"), source=str(path))

    def format_items(self, passages: Sequence[str]) -> str:
        """The ``{{passages}}`` text: each passage in the item format (default ``[{{label}}] {{passage}}``),
        joined by the item separator."""
        item = next((s.text for s in self.sections if s.role == "item"), "[{{label}}] {{passage}}")
        sep = self.meta.get("item_separator", "\\n").encode("utf-8").decode("unicode_escape")
        return sep.join(
            _fill(item, {"n": i + 1, "label": passage_label(i, self.labels), "passage": p}, self.source)
            for i, p in enumerate(passages)
        )

    def render(self, values: Mapping[str, Any], passages: Sequence[str] = ()) -> Messages:
        """Render to chat messages (``[{"role", "content"}]``); ``passages`` fill the per-passage block and
        ``{{passages}}`` (the prefix is not a message: see ``prefix``)."""
        values = dict(values)
        if "passages" in self.placeholders:
            values["passages"] = self.format_items(passages)
        values.setdefault("num", len(passages))
        messages: Messages = []
        done_block = False
        block = [s for s in self.sections if s.per_passage]
        for s in self.sections:
            if s.role in ("item", "prefix"):
                continue
            if s.per_passage:
                if done_block:
                    continue
                done_block = True
                for i, passage in enumerate(passages):
                    item = {**values, "n": i + 1, "label": passage_label(i, self.labels), "passage": passage}
                    for b in block:
                        messages.append({"role": b.role, "content": _fill(b.text, item, self.source)})
                continue
            messages.append({"role": s.role, "content": _fill(s.text, values, self.source)})
        return messages


def _fill(text: str, values: Mapping[str, Any], source: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise KeyError(f"prompt {source} needs a value for {{{{{name}}}}}")
        return str(values[name])

    return _PLACEHOLDER.sub(sub, text)


def builtin_templates() -> list[str]:
    """Names of the templates shipped with the package (``reason2rank/llm/templates/<name>.txt``)."""
    root = resources.files("reason2rank.llm").joinpath("templates")
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".txt"))


def builtin_template(name: str) -> PromptTemplate:
    """A template shipped with the package, by name (e.g. ``direct_v1``, ``setwise_rank_r1_v1``)."""
    if name not in builtin_templates():
        raise ValueError(f"no built-in prompt template {name!r}; built-in: {', '.join(builtin_templates())}")
    text = resources.files("reason2rank.llm").joinpath("templates").joinpath(name + ".txt").read_text("utf-8")
    return PromptTemplate.parse(text, source=f"reason2rank/llm/templates/{name}.txt")


def load_template(
    spec: PromptTemplate | str | os.PathLike[str], task: str, base_dir: Path | None = None
) -> PromptTemplate:
    """A template for ``task``: a ``PromptTemplate``, a file path (relative to ``base_dir`` when given), or a
    built-in name (with or without the task's prefix: ``rank_r1_v1`` or ``setwise_rank_r1_v1``)."""
    if isinstance(spec, PromptTemplate):
        tpl = spec
    else:
        s = str(spec)
        candidates = ([base_dir / s] if base_dir is not None else []) + [Path(s)]
        path = next((c for c in candidates if c.is_file()), None)
        if path is not None:
            tpl = PromptTemplate.from_file(path)
        else:
            names = builtin_templates()
            prefix = {"rank_listwise": "listwise_", "setwise": "setwise_", "pairwise": "pairwise_",
                      "attention": "icr_"}.get(  # fmt: skip
                task, ""
            )
            name = next((n for n in (s, prefix + s) if n in names), None)
            if name is None:
                raise FileNotFoundError(
                    f"prompt template {s!r} not found for task {task!r} (no such file, and not a built-in: "
                    f"{', '.join(n for n in names if n.startswith(prefix) or not prefix)})"
                )
            tpl = builtin_template(name)
    if tpl.task != task:
        raise ValueError(f"template {tpl.source} is for task {tpl.task!r}, but a {task!r} template is needed")
    return tpl


class DocCutter:
    """Shows a document to an LLM: whitespace collapsed, cut to ``max_words`` words or ``max_tokens`` tokens (of
    ``tokenizer``, a transformers tokenizer or a path/id to load one locally). ``None`` for both keeps the whole
    text. The cut keeps the document's own characters so evidence can be matched."""

    def __init__(self, max_words: int | None = 300, max_tokens: int | None = None, tokenizer: Any = None):
        if max_words is not None and max_tokens is not None:
            raise ValueError(
                "cut documents by words or by tokens, not both (set one of max_words/max_tokens to None)"
            )
        for name, v in (("max_words", max_words), ("max_tokens", max_tokens)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ValueError(f"{name} must be a positive int or None, got {v!r}")
        if max_tokens is not None and tokenizer is None:
            raise ValueError(
                "max_tokens needs a tokenizer (a transformers tokenizer or a local path); "
                "the hf: backend passes its own"
            )
        if isinstance(tokenizer, (str, Path)):
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
        self.max_words = max_words
        self.max_tokens = max_tokens
        self.tokenizer = tokenizer

    def describe(self) -> str:
        """How documents are cut, as recorded with results (``words:300``)."""
        if self.max_words is not None:
            return f"words:{self.max_words}"
        if self.max_tokens is not None:
            return f"tokens:{self.max_tokens}"
        return "full"

    def __call__(self, text: str) -> str:
        """``text`` as the LLM sees it: whitespace collapsed, cut."""
        text = " ".join(text.split())
        if self.max_words is not None:
            return " ".join(text.split(" ")[: self.max_words]) if text else text
        if self.max_tokens is not None and text:
            return self._cut_tokens(text)
        return text

    def _cut_tokens(self, text: str) -> str:
        tok = self.tokenizer
        assert self.max_tokens is not None
        try:
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, TypeError, ValueError, KeyError):
            ids = tok(text, add_special_tokens=False)["input_ids"]
            if len(ids) <= self.max_tokens:
                return text
            return str(tok.decode(ids[: self.max_tokens], skip_special_tokens=True)).strip()
        if len(offsets) <= self.max_tokens:
            return text
        end = offsets[self.max_tokens - 1][1]
        return text[:end].rstrip()


def messages_to_text(messages: Messages, prefix: str = "") -> str:
    """A readable, exact dump of chat messages (used for golden files and ``--dry-run``)."""
    out = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
    return out + (f"<|prefix|>\n{prefix}\n" if prefix else "")
