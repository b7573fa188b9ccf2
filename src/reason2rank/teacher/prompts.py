"""Versioned prompt templates (package files under ``prompts/``) and document cutting.

A template file is plain text: ``# key: value`` header lines, then sections introduced by
``=== <role> ===`` lines, where role is ``system``, ``user`` or ``assistant``. Sections named
``passage user`` / ``passage assistant`` form a block that is repeated once per passage (the listwise
task's RankGPT turns). Placeholders are ``{{name}}``; a template may only use the placeholders of its task,
and rendering fails on a missing value instead of leaving a hole in the prompt.

Documents are shown with whitespace collapsed and are cut to ``max_words`` words (the R2R code cuts to
300) or ``max_tokens`` tokens of a given tokenizer; a token cut keeps the document's own characters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from reason2rank.types import Doc, Query

#: the tasks a teacher can annotate
TASKS = ("direct", "compare", "listwise")

#: placeholders each task may use (``n`` and ``passage`` only inside the passage block)
TASK_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "direct": frozenset({"query", "document"}),
    "compare": frozenset({"query", "document_a", "document_b"}),
    "listwise": frozenset({"query", "num", "n", "passage"}),
}

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_SECTION = re.compile(r"^===\s*(passage\s+)?(system|user|assistant)\s*===\s*$")

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class PromptSection:
    role: str
    text: str
    per_passage: bool = False


@dataclass(frozen=True)
class PromptTemplate:
    """One task's prompt: an ordered list of chat turns with ``{{placeholders}}``.

    ``version`` (e.g. ``direct/v1``) names the prompt in annotation keys; ``sha256`` is the digest of the
    file's text, recorded with every annotation so an edited template is visible in the data.
    """

    task: str
    version: str
    sections: tuple[PromptSection, ...]
    sha256: str
    source: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)

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
                sections.append(PromptSection(role, "\n".join(body).strip("\n"), per_passage))

        for lineno, line in enumerate(text.splitlines(), 1):
            m = _SECTION.match(line)
            if m:
                close()
                role, per_passage, body = m.group(2), bool(m.group(1)), []
            elif role is None:
                if line.startswith("#"):
                    key, sep, value = line[1:].partition(":")
                    if sep and key.strip() in ("task", "version"):
                        meta[key.strip()] = value.strip()
                elif line.strip():
                    raise ValueError(
                        f"{source}:{lineno}: text before the first '=== role ===' section: {line!r}"
                    )
            else:
                body.append(line)
        close()
        task = meta.get("task")
        if task not in TASKS:
            raise ValueError(f"{source}: header '# task: ...' must be one of {TASKS}, got {task!r}")
        if not sections:
            raise ValueError(f"{source}: no '=== role ===' sections")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        version = meta.get("version") or f"{task}/custom-{digest[:12]}"
        allowed = TASK_PLACEHOLDERS[task]
        block = [s.per_passage for s in sections]
        if any(block) and task != "listwise":
            raise ValueError(f"{source}: only the listwise task has per-passage sections")
        if task == "listwise":
            first = block.index(True) if any(block) else -1
            if first < 0 or not all(block[first : first + block.count(True)]):
                raise ValueError(
                    f"{source}: the listwise template needs one contiguous block of 'passage' sections"
                )
        for s in sections:
            for name in _PLACEHOLDER.findall(s.text):
                ok = name in allowed and (s.per_passage or name not in ("n", "passage"))
                if not ok:
                    raise ValueError(
                        f"{source}: placeholder {{{{{name}}}}} is not available in a {task!r} "
                        f"{'passage ' if s.per_passage else ''}{s.role} section (allowed: {sorted(allowed)})"
                    )
        return cls(
            task=task, version=version, sections=tuple(sections), sha256=digest, source=source, meta=meta
        )

    @classmethod
    def from_file(cls, path: str | Path) -> PromptTemplate:
        """Read a template file."""
        path = Path(path)
        return cls.parse(path.read_text(encoding="utf-8"), source=str(path))

    def render(self, values: Mapping[str, Any], passages: Sequence[str] = ()) -> Messages:
        """Render to chat messages (``[{"role", "content"}]``)."""
        messages: Messages = []
        done_block = False
        block = [s for s in self.sections if s.per_passage]
        for s in self.sections:
            if s.per_passage:
                if done_block:
                    continue
                done_block = True
                for n, passage in enumerate(passages, 1):
                    for b in block:
                        content = _fill(b.text, {**values, "n": n, "passage": passage}, self.source)
                        messages.append({"role": b.role, "content": content})
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


def builtin_prompt(task: str, version: int = 1) -> PromptTemplate:
    """The template shipped with the package for ``task`` (``direct``, ``compare`` or ``listwise``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    name = f"{task}_v{version}.txt"
    try:
        text = (
            resources.files("reason2rank.teacher")
            .joinpath("prompts")
            .joinpath(name)
            .read_text(encoding="utf-8")
        )
    except FileNotFoundError:
        raise ValueError(f"no built-in prompt {name!r} for task {task!r}") from None
    return PromptTemplate.parse(text, source=f"reason2rank.teacher/prompts/{name}")


def load_prompts(
    prompts: Mapping[str, PromptTemplate | str | Path] | str | Path | None = None,
) -> dict[str, PromptTemplate]:
    """Built-in templates, overridden by ``prompts``: a mapping task → template/file, or a directory holding
    ``direct*.txt`` / ``compare*.txt`` / ``listwise*.txt`` (one per task at most)."""
    out = {t: builtin_prompt(t) for t in TASKS}
    if prompts is None:
        return out
    if isinstance(prompts, (str, Path)):
        folder = Path(prompts)
        if not folder.is_dir():
            raise ValueError(f"prompt directory {folder} does not exist")
        for task in TASKS:
            files = sorted(folder.glob(f"{task}*.txt"))
            if len(files) > 1:
                raise ValueError(f"{folder} holds several {task} templates: {[f.name for f in files]}")
            if files:
                out[task] = PromptTemplate.from_file(files[0])
        return out
    for task, tpl in prompts.items():
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r} in prompts; choose from {TASKS}")
        if not isinstance(tpl, PromptTemplate):
            tpl = PromptTemplate.from_file(tpl)
        if tpl.task != task:
            raise ValueError(f"template {tpl.source} is for task {tpl.task!r}, given for {task!r}")
        out[task] = tpl
    return out


class DocCutter:
    """Shows a document to the teacher: whitespace collapsed, cut to ``max_words`` words or ``max_tokens``
    tokens (of ``tokenizer``, a transformers tokenizer or a path/id to load one locally). ``None`` for
    both keeps the whole text. The cut keeps the document's own characters so evidence can be matched."""

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
        """How documents are cut, as recorded in annotations (``words:300``)."""
        if self.max_words is not None:
            return f"words:{self.max_words}"
        if self.max_tokens is not None:
            return f"tokens:{self.max_tokens}"
        return "full"

    def __call__(self, text: str) -> str:
        """``text`` as the teacher sees it: whitespace collapsed, cut."""
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
            return tok.decode(ids[: self.max_tokens], skip_special_tokens=True).strip()
        if len(offsets) <= self.max_tokens:
            return text
        end = offsets[self.max_tokens - 1][1]
        return text[:end].rstrip()


def doc_text(doc: Doc) -> str:
    """What the teacher reads of a document: title and text (as the scorers read it)."""
    return doc.full_text


def render_direct(tpl: PromptTemplate, query: Query, doc: Doc, cut: DocCutter) -> tuple[Messages, str]:
    """The direct prompt for (query, doc) and the document text shown."""
    shown = cut(doc_text(doc))
    return tpl.render({"query": query.text, "document": shown}), shown


def render_compare(
    tpl: PromptTemplate, query: Query, a: Doc, b: Doc, cut: DocCutter
) -> tuple[Messages, list[str]]:
    """The compare prompt for (query, A, B) and the two document texts shown."""
    shown = [cut(doc_text(a)), cut(doc_text(b))]
    return tpl.render({"query": query.text, "document_a": shown[0], "document_b": shown[1]}), shown


def render_listwise(
    tpl: PromptTemplate, query: Query, docs: Sequence[Doc], cut: DocCutter
) -> tuple[Messages, list[str]]:
    """The listwise prompt for a window of documents and the texts shown."""
    shown = [cut(doc_text(d)) for d in docs]
    return tpl.render({"query": query.text, "num": len(docs)}, passages=shown), shown


def messages_to_text(messages: Messages) -> str:
    """A readable, exact dump of chat messages (used for golden files and ``--dry-run``)."""
    return "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
