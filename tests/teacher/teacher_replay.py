"""Test support for the teacher tests: recorded teacher answers and a scripted responder for the local
OpenAI-compatible server (``mock_openai_server.MockChatServer``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mock_openai_server import Reply, canned_answer
from reason2rank.types import Doc, Query

HERE = Path(__file__).resolve().parent
RECORDED: dict[str, str] = json.loads((HERE / "data" / "recorded_answers.json").read_text(encoding="utf-8"))

#: one query, eight documents; each document's text is the marker the scripted server recognises
FLEA_QUERY = Query("264014", "how long is life cycle of flea")
FLEA_DOCS = [
    Doc("d1", "The flea life cycle can last from two weeks to eight months. It depends on conditions."),
    Doc("d2", "Female fleas lay their eggs on the host animal. The eggs fall off into the carpet."),
    Doc(
        "d3",
        "Eggs hatch in two to twelve days, larvae feed for one to two weeks and pupae can wait for months.",
    ),
    Doc("d4", "Our premium cat food keeps your pet healthy. Buy two bags and save."),
    Doc("d5", "Adult fleas can live for several weeks on a host. They feed on blood."),
    Doc("d6", "Flea markets are open every Sunday in the town square."),
    Doc("d7", "Flea control products kill adults and larvae. Treat the whole house for best results."),
    Doc("d8", "Temperature matters. In warm, humid homes the whole cycle can be as short as two weeks."),
]


def prompt_text(request: Mapping[str, Any]) -> str:
    """The first user message of a request: the item's own prompt, whatever retries appended."""
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


class ScriptedResponder:
    """Answers each item from its script: the first script whose marker occurs in the item's prompt
    gives its replies in order (the last one repeats). Unmatched requests get ``canned_answer``."""

    def __init__(self, scripts: Mapping[str, Sequence[Reply | str]]):
        self.scripts = {k: list(v) for k, v in scripts.items()}
        self.calls: dict[str, int] = {k: 0 for k in scripts}
        self.log: list[tuple[str | None, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def __call__(self, request: dict[str, Any]) -> Reply | str:
        prompt = prompt_text(request)
        with self._lock:
            for marker, script in self.scripts.items():
                if marker in prompt:
                    n = self.calls[marker]
                    self.calls[marker] = n + 1
                    self.log.append((marker, request))
                    return script[min(n, len(script) - 1)]
            self.log.append((None, request))
        return canned_answer(request)

    def requests_for(self, marker: str) -> list[dict[str, Any]]:
        return [r for m, r in self.log if m == marker]
