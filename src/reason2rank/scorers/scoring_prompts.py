"""The causal-LM family's prompts: a JSON bundle of three templates of the one template system
(``reason2rank.llm.prompts``) — ``score`` (the pointwise prompt the read-out is taken from), ``reasoning`` and
``comparison`` (generated explanations) — and the read-out.

    {"name": "yes_no", "version": 2,
     "system": "...", "user": "... {{query}} ... {{document}} ...", "assistant_prefix": "",
     "readout": {"type": "tokens", "positive": "yes", "negative": "no"},
     "reasoning": {"system": "...", "user": "... {{query}} ... {{document}} ...", "max_new_tokens": 96},
     "comparison": {"system": "...", "user": "... {{document_a}} ... {{document_b}} ...", "max_new_tokens": 96},
     "comparison_justify": {...same slots...}}

``comparison`` is the neutral comparison asked at inference (which of A and B is more relevant, and why: the
model's own verdict, which may disagree with the ranking); the optional ``comparison_justify`` tells the model
that A was ranked above B and asks why (``CausalLMReranker(comparison_prompt="justify")``).

Placeholders are ``{{name}}`` as everywhere else. Bundles written before version 2 used ``{query}``; they are read
with their known placeholders (``query``, ``document``, ``document_a``, ``document_b``) converted, so model
directories saved by earlier releases still open.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from reason2rank.llm.prompts import PromptTemplate

__all__ = ["PromptPart", "ScoringPrompts", "builtin_prompts", "load_prompt_template"]

#: the bundle layout this version writes
BUNDLE_VERSION = 2
_LEGACY = re.compile(r"(?<!\{)\{(query|document|document_a|document_b)\}(?!\})")


@dataclass(frozen=True)
class PromptPart:
    """One part of the bundle: its template and the token budget of what it generates."""

    template: PromptTemplate
    max_new_tokens: int = 96

    @property
    def prefix(self) -> str:
        """The text the answer (or the read-out position) follows."""
        return self.template.prefix


@dataclass(frozen=True)
class ScoringPrompts:
    """A causal-LM prompt bundle (see the module docstring)."""

    name: str
    version: int
    score: PromptPart
    readout: dict[str, Any] = field(default_factory=dict)
    reasoning: PromptPart | None = None
    comparison: PromptPart | None = None
    comparison_justify: PromptPart | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoringPrompts:
        """A bundle from its JSON object; earlier ``{query}`` placeholders are converted (see the module docstring)."""
        if "user" not in data:
            raise ValueError("a prompt template needs a 'user' text containing {{query}} and {{document}}")
        name = str(data.get("name", "custom"))

        def part(d: dict[str, Any] | None, task: str, slots: tuple[str, ...]) -> PromptPart | None:
            if not d:
                return None
            texts = {k: _modern(d.get(k)) for k in ("system", "user", "assistant_prefix")}
            for s in slots:
                if "{{" + s + "}}" not in (texts["user"] or ""):
                    raise ValueError(
                        f"prompt template {name!r}, part {task!r}: the user text needs {{{{{s}}}}}"
                    )
            lines = [f"# task: {task}", f"# version: {name}/{task}"]
            if texts["system"]:
                lines += ["=== system ===", texts["system"]]
            lines += ["=== user ===", texts["user"] or ""]
            if texts["assistant_prefix"]:
                lines += ["=== prefix ===", texts["assistant_prefix"]]
            template = PromptTemplate.parse("\n".join(lines) + "\n", source=f"prompt {name!r} ({task})")
            return PromptPart(template, int(d.get("max_new_tokens", 96)))

        score = part(data, "score", ("query", "document"))
        assert score is not None
        return cls(
            name=name,
            version=int(data.get("version", 1)),
            score=score,
            readout=dict(data.get("readout") or {}),
            reasoning=part(data.get("reasoning"), "reasoning", ("query", "document")),
            comparison=part(data.get("comparison"), "comparison", ("query", "document_a", "document_b")),
            comparison_justify=part(
                data.get("comparison_justify"), "comparison", ("query", "document_a", "document_b")
            ),
            source=_modern_bundle(data),
        )


def _modern(text: Any) -> str | None:
    if text is None:
        return None
    return _LEGACY.sub(lambda m: "{{" + m.group(1) + "}}", str(text))


def _modern_bundle(data: dict[str, Any]) -> dict[str, Any]:
    """The bundle as this version writes it: ``{{}}`` placeholders, ``version`` at least 2."""
    out = {k: (_modern(v) if k in ("system", "user", "assistant_prefix") else v) for k, v in data.items()}
    for k in ("reasoning", "comparison", "comparison_justify"):
        if isinstance(data.get(k), dict):
            out[k] = {kk: (_modern(vv) if kk in ("system", "user", "assistant_prefix") else vv)
                      for kk, vv in data[k].items()}  # fmt: skip
    out["version"] = max(int(data.get("version", 1)), BUNDLE_VERSION)
    return out


def builtin_prompts() -> list[str]:
    """Names of the prompt bundles shipped with the package."""
    return sorted(
        p.name[:-5] for p in resources.files("reason2rank.prompts").iterdir() if p.name.endswith(".json")
    )


def load_prompt_template(
    spec: str | os.PathLike[str] | dict[str, Any], base_dir: Path | None = None
) -> ScoringPrompts:
    """A dict, a JSON file path (relative paths resolve against ``base_dir``) or a built-in bundle name."""
    if isinstance(spec, dict):
        return ScoringPrompts.from_dict(spec)
    spec_s = str(spec)
    candidates = [Path(spec_s)]
    if base_dir is not None:
        candidates.insert(0, base_dir / spec_s)
    for path in candidates:
        if path.is_file():
            return ScoringPrompts.from_dict(json.loads(path.read_text(encoding="utf-8")))
    name = spec_s[:-5] if spec_s.endswith(".json") else spec_s
    if name in builtin_prompts():
        text = resources.files("reason2rank.prompts").joinpath(name + ".json").read_text(encoding="utf-8")
        return ScoringPrompts.from_dict(json.loads(text))
    raise FileNotFoundError(
        f"prompt template {spec_s!r} not found (looked for {', '.join(str(c) for c in candidates)} and the "
        f"built-in prompts: {', '.join(builtin_prompts())})"
    )
