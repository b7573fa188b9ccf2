"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 replaying recorded answers."""

from __future__ import annotations

import json

import pytest
from teacher_replay import FLEA_DOCS, FLEA_QUERY, RECORDED, ScriptedResponder

from mock_openai_server import MockChatServer, Reply
from reason2rank.llm.openai_backend import OpenAIBackend
from reason2rank.teacher import AnnotationStore, Teacher, TeacherUnavailable
from reason2rank.teacher.prompts import builtin_prompt

FAST = {"timeout": 1.0, "backoff": 0.01, "max_backoff": 0.05, "max_in_flight": 4}

# per document: the server's replies, in order, for that document's prompt
SCRIPTS = {
    "d1": [RECORDED["clean"]],
    "d2": [Reply(status=429, headers={"Retry-After": "0"}), RECORDED["fenced"]],
    "d3": [Reply(status=500), Reply(status=503), RECORDED["prose"]],
    "d4": [Reply(content=RECORDED["slow_then_clean"], delay=2.5), RECORDED["slow_then_clean"]],
    "d5": [RECORDED["malformed"], RECORDED["trailing_comma"]],
    "d6": [RECORDED["bad_grade"], RECORDED["refusal_prose"], RECORDED["out_of_range"]],
    "d7": [RECORDED["hallucinated_evidence"]],
    "d8": [RECORDED["think_python"]],
}


@pytest.fixture
def replay():
    docs = {d.id: d for d in FLEA_DOCS}
    responder = ScriptedResponder({docs[k].text: v for k, v in SCRIPTS.items()})
    with MockChatServer(responder) as server:
        yield server, responder, docs


def test_replay_retries_parses_and_stores_one_record_per_item(replay, tmp_path):
    server, responder, docs = replay
    path = tmp_path / "ann.jsonl"
    with Teacher(f"openai:teacher-model@{server.url}", store=path, max_tries=3, backend_options=FAST) as t:
        summary = t.annotate([(FLEA_QUERY, FLEA_DOCS)], tasks="direct")
        keys = {d.id: t.key("direct", FLEA_QUERY, [d]) for d in FLEA_DOCS}

    # exact request counts per document: HTTP retries and parse retries both visible at the server
    calls = {d: responder.calls[docs[d].text] for d in SCRIPTS}
    assert calls == {"d1": 1, "d2": 2, "d3": 3, "d4": 2, "d5": 2, "d6": 3, "d7": 1, "d8": 1}
    assert len(server.requests) == 15

    assert (summary.total, summary.done, summary.failed, summary.errors, summary.skipped) == (8, 7, 1, 0, 0)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 8 and len({r["key"] for r in records}) == 8
    by_doc = {r["docids"][0]: r for r in records}
    assert {d: by_doc[d]["key"] for d in by_doc} == keys

    ok = {d: r for d, r in by_doc.items() if r["status"] == "ok"}
    assert set(ok) == {"d1", "d2", "d3", "d4", "d5", "d7", "d8"}
    assert [by_doc[d]["output"]["relevance"] for d in ("d1", "d2", "d3", "d4", "d5", "d7", "d8")] == [
        3,
        1,
        2,
        0,
        2,
        1,
        2,
    ]
    assert by_doc["d2"]["flags"] == ["code_fence"]
    assert by_doc["d3"]["flags"] == ["surrounding_text"]
    assert by_doc["d5"]["flags"] == ["trailing_comma"] and by_doc["d5"]["tries"] == 2
    assert by_doc["d5"]["attempts"][0]["error"].startswith("the JSON object is not closed")
    assert (
        by_doc["d7"]["flags"] == ["evidence_not_found"] and by_doc["d7"]["output"]["evidence_found"] is False
    )
    assert by_doc["d8"]["flags"] == ["python_literal", "think_removed"]
    assert by_doc["d1"]["output"]["evidence_found"] is True
    assert by_doc["d4"]["output"] == {
        "relevance": 0,
        "reasoning": "The document is about cat food and never mentions fleas.",
        "evidence": None,
        "evidence_found": None,
    }

    failed = by_doc["d6"]
    assert failed["status"] == "failed" and failed["output"] is None and failed["tries"] == 3
    assert [a["raw"] for a in failed["attempts"]] == [
        RECORDED["bad_grade"],
        RECORDED["refusal_prose"],
        RECORDED["out_of_range"],
    ]
    assert failed["error"] == "field 'relevance' must be an integer 0, 1, 2 or 3, got 5"

    # a parse retry shows the teacher its bad answer and the error
    retry = responder.requests_for(docs["d5"].text)[1]["messages"]
    assert retry[-2] == {"role": "assistant", "content": RECORDED["malformed"]}
    assert "could not be used: the JSON object is not closed" in retry[-1]["content"]
    # structured output was asked for with the task's schema
    first = server.requests[0]
    assert first["response_format"]["type"] == "json_schema"
    assert first["response_format"]["json_schema"]["schema"]["required"] == [
        "reasoning",
        "evidence",
        "relevance",
    ]
    assert first["temperature"] == 0.0 and first["model"] == "teacher-model"

    # token counts: the server's usage of every answered request, summed
    assert summary.requests == 11  # answered requests: 15 at the server minus 429, 500, 503 and the timeout
    assert summary.prompt_tokens == sum(r["prompt_tokens"] for r in records)
    assert summary.completion_tokens == sum(r["completion_tokens"] for r in records) > 0

    # a rerun asks nothing and skips all eight
    with Teacher(f"openai:teacher-model@{server.url}", store=path, backend_options=FAST) as t:
        again = t.annotate([(FLEA_QUERY, FLEA_DOCS)], tasks="direct")
    assert (again.skipped, again.done, again.requests) == (8, 0, 0)
    assert len(server.requests) == 15
    assert len(path.read_text(encoding="utf-8").splitlines()) == 8


def test_retry_failed_reasks_only_failed_items_and_the_reader_keeps_the_new_record(replay, tmp_path):
    server, responder, docs = replay
    path = tmp_path / "ann.jsonl"
    with Teacher(f"openai:m@{server.url}", store=path, max_tries=1, backend_options=FAST) as t:
        t.annotate([(FLEA_QUERY, [docs["d6"], docs["d1"]])])
    responder.scripts[docs["d6"].text] = [RECORDED["clean"]]
    with Teacher(f"openai:m@{server.url}", store=path, retry_failed=True, backend_options=FAST) as t:
        s = t.annotate([(FLEA_QUERY, [docs["d6"], docs["d1"]])])
        assert (s.done, s.skipped) == (1, 1)
        assert t.store.get(t.key("direct", FLEA_QUERY, [docs["d6"]]))["status"] == "ok"
    with AnnotationStore(path) as store:
        assert store.scan.records == 3 and store.scan.duplicates == 1 and len(store) == 2
        assert sorted(r["status"] for r in store.records()) == ["ok", "ok"]


def test_in_flight_limit_is_respected_and_reached():
    with MockChatServer(delay=0.1) as server:
        backend = OpenAIBackend("m", server.url, max_in_flight=3)
        msgs = [[{"role": "user", "content": f"question {i}"}] for i in range(12)]
        seen: list[int] = []
        results = backend.generate(msgs, on_result=lambda i, r: seen.append(i))
        backend.close()
    assert server.max_seen_in_flight == 3
    assert sorted(seen) == list(range(12)) and all(r.error is None for r in results)


def test_response_format_falls_back_when_the_server_rejects_it():
    def responder(request):
        fmt = (request.get("response_format") or {}).get("type")
        if fmt == "json_schema":
            return Reply(
                status=400, body='{"error": {"message": "response_format json_schema is not supported"}}'
            )
        return RECORDED["clean"]

    with MockChatServer(responder) as server:
        backend = OpenAIBackend("m", server.url, max_in_flight=1, backoff=0.01)
        schema = {"type": "object"}
        out = backend.generate(
            [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]], json_schema=schema
        )
        backend.close()
        formats = [(r.get("response_format") or {}).get("type") for r in server.requests]
    assert [r.text for r in out] == [RECORDED["clean"]] * 2
    assert formats == ["json_schema", "json_object", "json_object"]  # stepped down once, then remembered


def test_rejected_max_tokens_and_temperature_are_adapted_once():
    def responder(request):
        if "max_tokens" in request:
            return Reply(
                status=400, body="Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead."
            )
        if "temperature" in request:
            return Reply(
                status=400, body="Unsupported value: 'temperature' does not support 0 with this model."
            )
        return RECORDED["clean"]

    with MockChatServer(responder) as server:
        backend = OpenAIBackend("m", server.url, max_in_flight=1, extra_body={"seed": 7})
        out = backend.generate([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]])
        backend.close()
        sent = [sorted(k for k in r if k not in ("model", "messages")) for r in server.requests]
    assert [r.text for r in out] == [RECORDED["clean"]] * 2
    assert sent == [
        ["max_tokens", "seed", "temperature"],
        ["max_completion_tokens", "seed", "temperature"],
        ["max_completion_tokens", "seed"],
        ["max_completion_tokens", "seed"],
    ]


def test_auth_error_is_not_retried_and_a_dead_teacher_stops_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("R2R_TEST_KEY", "sk-test")
    with MockChatServer(lambda req: Reply(status=401, body='{"error": "bad key"}')) as server:
        t = Teacher(
            f"openai:m@{server.url}",
            store=tmp_path / "ann.jsonl",
            abort_after_errors=4,
            backend_options={**FAST, "api_key_env": "R2R_TEST_KEY", "max_in_flight": 1},
        )
        with pytest.raises(TeacherUnavailable) as err:
            t.annotate([(FLEA_QUERY, FLEA_DOCS)])
        t.close()
        assert len(server.requests) == 8  # one request per item: a 401 is not retried
        assert server.headers[0]["Authorization"] == "Bearer sk-test"
    summary = err.value.summary
    assert summary.errors == 8 and summary.done == 0 and summary.aborted
    assert "HTTP 401" in summary.error_samples[0] and "R2R_TEST_KEY" in summary.error_samples[0]
    assert (tmp_path / "ann.jsonl").read_text() == ""  # nothing stored: the next run asks again


def test_no_api_key_for_the_official_api_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")


def test_compare_with_swap_keeps_agreeing_answers_and_records_disagreement(tmp_path):
    a, b, c = FLEA_DOCS[0], FLEA_DOCS[1], FLEA_DOCS[3]
    tpl = builtin_prompt("compare")
    assert tpl.version == "compare/v1"

    def responder(request):
        prompt = request["messages"][1]["content"]
        shown_first = prompt.split("Document A:\n")[1].split("\n\nDocument B:")[0]
        if c.text in prompt:  # position-biased teacher: always A
            return RECORDED["compare_position_biased"]
        return RECORDED["compare_clean"] if shown_first == a.text else RECORDED["compare_swapped_b"]

    from reason2rank.teacher import PairPolicy

    with MockChatServer(responder) as server:
        policy = PairPolicy(strategies=("random",), budget=3, swap=True)
        with Teacher(f"openai:m@{server.url}", pairs=policy, backend_options=FAST) as t:
            s = t.annotate([(FLEA_QUERY, [a, b, c])], tasks="compare")
            recs = list(t.store.records())
        assert len(server.requests) == 6
    assert (s.total, s.done, s.inconsistent) == (3, 1, 2)
    agreed = next(r for r in recs if r["status"] == "ok")
    assert set(agreed["docids"]) == {a.id, b.id}
    assert agreed["output"]["preferred_doc"] == a.id and agreed["output"]["consistent"] is True
    assert agreed["options"] == {"swap": True} and [x["order"] for x in agreed["attempts"]] == ["AB", "BA"]
    for r in recs:
        if r["status"] == "inconsistent":
            assert c.id in r["docids"]
            assert r["output"]["preferred"] is None and r["output"]["answers"] == {"AB": "A", "BA": "A"}
