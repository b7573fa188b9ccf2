"""The OpenAI-compatible backend over several servers (vLLM replicas): requests spread over the healthy ones,
a per-server in-flight cap, a failing server taken out and brought back, specs with several URLs."""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mock_openai_server import MockChatServer, Reply  # noqa: E402
from reason2rank.llm.backend import make_backend  # noqa: E402
from reason2rank.llm.openai_backend import OpenAIBackend, split_base_urls  # noqa: E402

MESSAGES = [[{"role": "user", "content": f"say {i}"}] for i in range(24)]


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens here: connection refused


def test_requests_spread_over_servers_with_a_per_server_cap():
    with MockChatServer(lambda r: "ok", delay=0.05) as a, MockChatServer(lambda r: "ok", delay=0.05) as b:
        backend = OpenAIBackend(
            "mock", [a.url, b.url], max_in_flight=6, server_max_in_flight=2, max_retries=0
        )
        try:
            results = backend.generate(MESSAGES)
        finally:
            backend.close()
    assert [r.text for r in results] == ["ok"] * len(MESSAGES) and all(r.error is None for r in results)
    assert len(a.requests) + len(b.requests) == len(MESSAGES)
    assert min(len(a.requests), len(b.requests)) >= len(MESSAGES) // 3  # both did a share of the work
    assert a.max_seen_in_flight <= 2 and b.max_seen_in_flight <= 2  # the cap per server holds
    assert a.max_seen_in_flight + b.max_seen_in_flight >= 3  # and the servers ran side by side


def test_a_failing_server_is_taken_out_and_its_requests_go_elsewhere():
    failing = MockChatServer(lambda r: Reply(status=503), delay=0.0)
    with failing, MockChatServer(lambda r: "ok", delay=0.02) as good:
        dead = _closed_port_url()
        backend = OpenAIBackend(
            "mock", f"{failing.url},{dead},{good.url}", max_in_flight=4, server_cooldown=30, max_retries=3,
            backoff=0.01,
        )  # fmt: skip
        try:
            results = backend.generate(MESSAGES)
            stats = {s["base_url"]: s for s in backend.server_stats()}
        finally:
            backend.close()
    assert all(r.error is None and r.text == "ok" for r in results)  # no request lost to the bad servers
    assert len(good.requests) == len(MESSAGES)
    # each bad server saw only the requests in flight when it first failed, then was out for the cooldown
    assert len(failing.requests) <= 4
    assert stats[failing.url]["out"] and stats[dead]["out"] and not stats[good.url]["out"]
    assert stats[failing.url]["errors"] == len(failing.requests)


def test_a_server_comes_back_after_its_cooldown():
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky(request):
        with lock:
            calls["n"] += 1
            first = calls["n"] <= 1
        return Reply(status=500) if first else "ok"

    with MockChatServer(flaky) as a, MockChatServer(lambda r: "ok") as b:
        backend = OpenAIBackend("mock", [a.url, b.url], max_in_flight=1, server_cooldown=0.2, max_retries=2)
        try:
            first = backend.generate(MESSAGES[:1])  # a fails, b answers
            time.sleep(0.3)
            later = backend.generate(MESSAGES[:6])
        finally:
            backend.close()
    assert first[0].text == "ok" and all(r.text == "ok" for r in later)
    assert len(a.requests) >= 2  # asked again once its cooldown was over


def test_all_servers_down_gives_a_clear_error():
    backend = OpenAIBackend("mock", [_closed_port_url(), _closed_port_url()], max_retries=1, backoff=0.01)
    try:
        (result,) = backend.generate(MESSAGES[:1])
    finally:
        backend.close()
    assert (
        result.error is not None
        and "gave up after 2 tries" in result.error
        and "connection error from" in result.error
    )


def test_spec_with_several_urls_and_bad_urls():
    backend = make_backend("openai:m@http://a:1/v1,http://b:2/v1/")
    assert isinstance(backend, OpenAIBackend)
    assert backend.base_urls == ["http://a:1/v1", "http://b:2/v1"] and backend.name == "openai:m"
    backend.close()
    with pytest.raises(ValueError, match="must start with http"):
        split_base_urls("http://a/v1,localhost:8000")
    with pytest.raises(ValueError, match="listed twice"):
        split_base_urls(["http://a/v1", "http://a/v1/"])
    with pytest.raises(ValueError, match="server_max_in_flight"):
        OpenAIBackend("m", "http://a/v1", server_max_in_flight=0)
