"""The teacher's prompts: the built-in templates of its tasks (``direct``, ``compare``, ``listwise``; files in
``reason2rank/llm/templates``, in the one template format of ``reason2rank.llm.prompts``), overrides from a
directory, and rendering a task's messages with the documents cut as the teacher shows them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from reason2rank.llm.prompts import DocCutter, Messages, PromptTemplate, builtin_template, messages_to_text
from reason2rank.types import Doc, Query

__all__ = [
    "COMPARISON_PROMPTS",
    "TASKS",
    "DocCutter",
    "PromptTemplate",
    "builtin_prompt",
    "doc_text",
    "load_prompts",
    "messages_to_text",
    "render_compare",
    "render_direct",
    "render_listwise",
]

#: the tasks a teacher can annotate
TASKS = ("direct", "compare", "listwise")
#: ``Teacher(comparison_prompt=...)``: ``neutral`` (compare_v1, which is more relevant and why) or ``justify``
#: (compare_justify_v1, A was ranked above B: why)
COMPARISON_PROMPTS = ("neutral", "justify")


def builtin_prompt(task: str, version: int = 1) -> PromptTemplate:
    """The template shipped with the package for ``task`` (``direct``, ``compare`` or ``listwise``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {TASKS}")
    try:
        return builtin_template(f"{task}_v{version}")
    except ValueError:
        raise ValueError(f"no built-in prompt {task}_v{version} for task {task!r}") from None


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
