"""Toy GRPO data: queries whose positive passage repeats the query, written as rank_llm JSON + qrels files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

WORDS = ["cat", "dog", "tree", "house", "river", "stone", "bird", "road", "fish", "cloud", "apple", "music"]


def write_toy_data(root: Path, queries: int = 6, negatives: int = 4) -> None:
    """``root/candidates.json`` (rank_llm format) and ``root/qrels.txt``: query *q* has candidates ``q-pos``
    (grade 2, the query's words repeated) and ``q-neg-i`` (unjudged, other words)."""
    root.mkdir(parents=True, exist_ok=True)
    records, qrels = [], []
    for i in range(queries):
        words = [WORDS[(i + j) % len(WORDS)] for j in range(2)]
        text = " ".join(words)
        hits = [{"qid": str(i), "docid": f"{i}-pos", "content": f"{text} {text}", "rank": 1, "score": 10.0}]
        for n in range(negatives):
            other = " ".join(WORDS[(i + 5 + n + j) % len(WORDS)] for j in range(3))
            hits.append(
                {"qid": str(i), "docid": f"{i}-neg-{n}", "content": other, "rank": n + 2, "score": 9.0 - n}
            )
        records.append({"query": {"text": text, "qid": str(i)}, "hits": hits})
        qrels.append(f"{i} 0 {i}-pos 2")
    (root / "candidates.json").write_text(json.dumps(records))
    (root / "qrels.txt").write_text("\n".join(qrels) + "\n")


def digits_only(model_dir: str) -> list[int]:
    """Every token id except the digits 0-9 (for ``suppress_tokens``: a tiny random model then answers a digit,
    so the binary reward has variance from the first step)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    keep = {tok.convert_tokens_to_ids(str(d)) for d in range(10)}
    return [i for i in range(len(tok)) if i not in keep]


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    """``cfg`` as YAML at ``path``."""
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def record_loads(monkeypatch: Any, auto_class: Any) -> list[Path]:
    """Every path ``auto_class.from_pretrained`` reads from here on (the load itself still happens)."""
    loads: list[Path] = []
    original = auto_class.from_pretrained

    def from_pretrained(path: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(Path(str(path)))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(auto_class, "from_pretrained", from_pretrained)
    return loads
