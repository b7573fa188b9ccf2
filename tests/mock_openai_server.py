"""A local OpenAI-compatible chat completions server, for tests, benchmarks and dry runs.

It listens on 127.0.0.1 (a free port by default), answers ``POST /v1/chat/completions`` (and
``/chat/completions``) and ``GET /v1/models``, one thread per connection with keep-alive. What it answers
is up to a *responder*: a function from the request body (a dict) to a ``Reply`` (status, content,
delay, raw body, headers) or a plain string. The default responder, ``canned_answer``, gives a valid
answer to each built-in teacher prompt, so ``openai:mock@<url>`` runs a whole pipeline offline.

    with MockChatServer(delay=0.2) as server:
        teacher = Teacher(f"openai:mock@{server.url}")
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """What the server sends back: ``content`` as the assistant message (HTTP 200), or an error
    ``status`` with ``body``; ``delay`` seconds before answering."""

    content: str | None = None
    status: int = 200
    delay: float = 0.0
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"


Responder = Callable[[dict[str, Any]], "Reply | str"]


def _words(text: str) -> int:
    return len(text.split())


def _first_sentence(text: str) -> str | None:
    text = " ".join(text.split())
    if not text:
        return None
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    return m.group(1) if m else text


def canned_answer(request: dict[str, Any]) -> str:
    """A valid answer for the built-in direct, compare and listwise prompts: relevance 2, the document
    sharing more query terms preferred, passages kept in order; the first sentence of a document quoted as
    evidence."""
    messages = request.get("messages") or []
    last = messages[-1]["content"] if messages else ""
    if '"ranked_passages"' in last:
        passages = []
        for m in messages:
            match = re.match(r"\[(\d+)\] (.*)", m["content"], re.DOTALL) if m["role"] == "user" else None
            if match:
                passages.append((int(match.group(1)), match.group(2)))
        ranked = [
            {
                "identifier": n,
                "direct_reason": f"Passage [{n}] addresses the query directly.",
                "listwise_reason": f"Passage [{n}] is more specific than the passages ranked below it.",
                "direct_answer_sentence": _first_sentence(text),
            }
            for n, text in passages
        ]
        return json.dumps({"ranked_passages": ranked})
    if '"preferred"' in last:
        match = re.search(
            r"Search query: (.*?)\n\nDocument A:\n(.*?)\n\nDocument B:\n(.*?)\n\n", last, re.DOTALL
        )
        if match is None:
            return json.dumps({"reasoning": "Document A answers the query more directly.", "preferred": "A"})
        words = set(re.findall(r"\w+", match.group(1).lower()))
        overlap = [len(words & set(re.findall(r"\w+", match.group(i).lower()))) for i in (2, 3)]
        preferred = "A" if overlap[0] > overlap[1] else "B" if overlap[1] > overlap[0] else "tie"
        reasoning = f"Document A shares {overlap[0]} query terms and document B {overlap[1]}."
        return json.dumps({"reasoning": reasoning, "preferred": preferred})
    match = re.search(r"Document:\n(.*?)\n\nRelevance scale", last, re.DOTALL)
    evidence = _first_sentence(match.group(1)) if match else None
    return json.dumps(
        {
            "reasoning": "The document discusses the query topic and answers it.",
            "evidence": evidence,
            "relevance": 2,
        }
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        data = body.encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
            self.close_connection = True

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(
                200, json.dumps({"object": "list", "data": [{"id": self.server.model, "object": "model"}]})
            )
        else:
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
            return
        try:
            request = json.loads(raw)
        except ValueError:
            self._send(400, json.dumps({"error": {"message": "body is not JSON"}}))
            return
        srv = self.server
        with srv.lock:
            srv.requests.append(request)
            srv.headers.append(dict(self.headers))
            srv.in_flight += 1
            srv.max_seen_in_flight = max(srv.max_seen_in_flight, srv.in_flight)
        try:
            reply = srv.responder(request)
            if isinstance(reply, str):
                reply = Reply(content=reply)
            delay = reply.delay or srv.delay
            if delay:
                time.sleep(delay)
            if reply.body is not None:
                body = reply.body
            elif reply.status != 200:
                body = json.dumps({"error": {"message": f"mock error {reply.status}", "code": reply.status}})
            else:
                content = reply.content or ""
                prompt_words = sum(_words(m.get("content") or "") for m in request.get("messages", []))
                body = json.dumps(
                    {
                        "id": f"chatcmpl-mock-{len(srv.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": request.get("model", srv.model),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": reply.finish_reason,
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt_words,
                            "completion_tokens": _words(content),
                            "total_tokens": prompt_words + _words(content),
                        },
                    }
                )
        finally:
            with srv.lock:
                srv.in_flight -= 1
        self._send(reply.status, body, reply.headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    responder: Responder
    delay: float
    model: str
    lock: threading.Lock
    requests: list[dict[str, Any]]
    headers: list[dict[str, str]]
    in_flight: int
    max_seen_in_flight: int


class MockChatServer:
    """Start with ``start()`` or ``with``; ``url`` is the base URL (``http://127.0.0.1:PORT/v1``);
    ``requests`` holds every request body received and ``headers`` their HTTP headers;
    ``max_seen_in_flight`` the peak concurrency."""

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "mock",
    ):
        self._server = _Server((host, port), _Handler)
        self._server.responder = responder or canned_answer
        self._server.delay = delay
        self._server.model = model
        self._server.lock = threading.Lock()
        self._server.requests = []
        self._server.headers = []
        self._server.in_flight = 0
        self._server.max_seen_in_flight = 0
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self._server.requests

    @property
    def headers(self) -> list[dict[str, str]]:
        return self._server.headers

    @property
    def max_seen_in_flight(self) -> int:
        return self._server.max_seen_in_flight

    def start(self) -> MockChatServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, args=(0.05,), name="mock-chat-server", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> MockChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m mock_openai_server --port 8000 --delay 0.2``: serve canned answers."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--delay", type=float, default=0.0)
    args = p.parse_args(argv)
    server = MockChatServer(delay=args.delay, port=args.port).start()
    print(f"serving on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
