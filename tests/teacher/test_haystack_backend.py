"""Any Haystack ChatGenerator as teacher: a hand-written one, and Haystack's own OpenAIChatGenerator
pointed at the local server."""

from __future__ import annotations

import sys
import threading
import types

import pytest
from haystack.dataclasses import ChatMessage

from mock_openai_server import MockChatServer
from reason2rank.llm.haystack_backend import HaystackBackend, import_generator
from reason2rank.teacher import Teacher, make_backend
from reason2rank.types import Doc, Query

ITEMS = [
    (Query("q1", "flea life cycle"), [Doc("d1", "Fleas live for weeks. They bite."), Doc("d2", "Cats purr.")])
]


class EchoGenerator:
    """A minimal ChatGenerator: grades by whether the document mentions fleas; fails on 'Cats'."""

    model = "echo-1"

    def __init__(self):
        self.calls = []
        self.warmed = 0
        self.lock = threading.Lock()

    def warm_up(self):
        self.warmed += 1

    def run(self, messages, generation_kwargs=None):
        with self.lock:
            self.calls.append((messages, generation_kwargs))
        prompt = messages[-1].text
        if "Cats purr." in prompt:
            raise RuntimeError("quota exceeded")
        reply = ChatMessage.from_assistant(
            '{"reasoning": "mentions fleas", "evidence": "Fleas live for weeks.", "relevance": 3}',
            meta={"usage": {"prompt_tokens": 100, "completion_tokens": 20}, "finish_reason": "stop"},
        )
        return {"replies": [reply]}


def test_a_chat_generator_object_is_used_as_it_is_when_asked():
    gen = EchoGenerator()
    options = {"generation_kwargs": {"temperature": 0}, "settings": "generator"}
    with Teacher(gen, backend_options=options, abort_after_errors=10) as t:
        assert t.name == "haystack:EchoGenerator:echo-1"
        s = t.annotate(ITEMS)
        recs = list(t.store.records())
    assert (s.done, s.errors, s.prompt_tokens, s.completion_tokens) == (1, 1, 100, 20)
    assert "RuntimeError: quota exceeded" in s.error_samples[0]
    assert len(recs) == 1 and recs[0]["output"]["evidence_found"] is True
    messages, kwargs = gen.calls[0]
    assert [m.role.value for m in messages] == ["system", "user"] and kwargs == {"temperature": 0}
    assert gen.warmed == 1


def test_threads_when_more_in_flight():
    gen = EchoGenerator()
    backend = HaystackBackend(gen, max_in_flight=4, settings="generator")
    msgs = [[{"role": "user", "content": f"q{i}"}] for i in range(10)]
    seen = []
    out = backend.generate(msgs, on_result=lambda i, r: seen.append(i))
    assert len(out) == 10 and sorted(seen) == list(range(10)) and all(r.error is None for r in out)


def test_haystack_spec_string_imports_an_object_a_factory_or_a_class(monkeypatch):
    mod = types.ModuleType("r2r_test_generators")
    mod.instance = EchoGenerator()
    mod.factory = lambda: EchoGenerator()
    mod.EchoGenerator = EchoGenerator
    monkeypatch.setitem(sys.modules, "r2r_test_generators", mod)
    assert import_generator("r2r_test_generators:instance") is mod.instance
    assert isinstance(import_generator("r2r_test_generators:factory"), EchoGenerator)
    assert isinstance(make_backend("haystack:r2r_test_generators:EchoGenerator"), HaystackBackend)
    with pytest.raises(ValueError, match="has no attribute"):
        import_generator("r2r_test_generators:nothing")
    with pytest.raises(ValueError, match="haystack:MODULE:ATTR"):
        import_generator("r2r_test_generators")
    with pytest.raises(ValueError, match="unknown LLM backend"):
        make_backend("vertex:gemini")


def test_haystack_openai_chat_generator_against_the_local_server(monkeypatch):
    from haystack.components.generators.chat import OpenAIChatGenerator
    from haystack.utils import Secret

    with MockChatServer() as server:
        gen = OpenAIChatGenerator(
            api_key=Secret.from_token("sk-local"),
            model="mock-teacher",
            api_base_url=server.url,
            max_retries=0,
            timeout=10,
        )
        with Teacher(gen) as t:
            assert t.name == "haystack:OpenAIChatGenerator:mock-teacher"
            s = t.annotate(ITEMS)
            recs = sorted(t.store.records(), key=lambda r: r["docids"])
        assert len(server.requests) == 2 and server.requests[0]["model"] == "mock-teacher"
    assert (s.done, s.errors) == (2, 0) and s.prompt_tokens > 0
    assert [r["output"]["relevance"] for r in recs] == [2, 2]
    assert (
        recs[0]["output"]["evidence"] == "Fleas live for weeks."
        and recs[0]["output"]["evidence_found"] is True
    )


def test_settings_are_honoured_or_refused_never_dropped():
    msgs = [[{"role": "user", "content": "q"}]]
    # an unknown generator: the call's settings cannot be applied, so it refuses and says how to choose
    with pytest.raises(ValueError, match="settings='generator'"):
        HaystackBackend(EchoGenerator()).generate(msgs, max_new_tokens=7)
    # your names for your generator
    gen = EchoGenerator()
    backend = HaystackBackend(gen, settings={"max_new_tokens": "n_tokens", "temperature": "temp"})
    backend.generate(msgs, max_new_tokens=7, temperature=0.5)
    assert gen.calls[-1][1] == {"n_tokens": 7, "temp": 0.5}
    with pytest.raises(ValueError, match="no generation_kwargs name for 'seed'"):
        backend.generate(msgs, seed=3)
    # a known generator class: translated to its own names; the user's generation_kwargs win
    OpenAIChatGenerator = type("OpenAIChatGenerator", (EchoGenerator,), {})
    gen = OpenAIChatGenerator()
    backend = HaystackBackend(gen, generation_kwargs={"temperature": 0.2})
    backend.generate(msgs, max_new_tokens=9, temperature=0.0, seed=4, stop=("###",),
                     json_schema={"type": "object"})  # fmt: skip
    sent = gen.calls[-1][1]
    assert sent["max_completion_tokens"] == 9 and sent["seed"] == 4 and sent["stop"] == ["###"]
    assert sent["temperature"] == 0.2 and sent["response_format"]["json_schema"]["schema"] == {
        "type": "object"
    }
    with pytest.raises(ValueError, match="cannot continue an answer prefix"):
        backend.generate(msgs, prefix="<think>")
