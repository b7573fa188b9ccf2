"""OpenAI-compatible chat completions over HTTP (vLLM, SGLang, Ollama, llama.cpp server, hosted APIs).

Why httpx and not the ``openai`` package: we need exact control of the retry policy (which statuses, how
long, ``Retry-After``), of the in-flight limit and of the fallback when a server rejects
``response_format``, and we must work with servers that only speak a subset of the API; the ``openai``
client hides those behind its own retries. httpx is already installed with haystack/openai.

Requests run on a pool of ``max_in_flight`` worker threads sharing one ``httpx.Client`` (one keep-alive
connection per worker), so at most ``max_in_flight`` requests are ever in flight; answers are handed to
``on_result`` in the calling thread as they complete. Why threads and not ``httpx.AsyncClient``: the async
client burns ~12 ms of CPU per request at 64 in flight (encode/httpx#3215) and caps out near 80 requests/s,
while the threaded sync client keeps up (see benchmarks/teacher_concurrency.py). ``generate`` is an
ordinary blocking call, safe from notebooks that already run an event loop.

Several servers (vLLM replicas of one model): ``base_url`` may be a list, or URLs separated by commas
(``openai:MODEL@http://a:8000/v1,http://b:8000/v1``). Each request goes to the healthy server with the fewest
requests in flight, never more than ``server_max_in_flight`` on one server. A server that fails (connection
error, timeout, 429 or 5xx) is taken out for ``server_cooldown`` seconds, doubled on each failure in a row up
to ``max_server_cooldown``, and the request is retried on another server at once; a success brings it back.
When every server is out, the request waits for the usual backoff and probes the one that comes back first.
``server_stats()`` says what each server did.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import httpx

from reason2rank.llm.backend import Backend, GenerationResult, Messages, OnResult, schema_for
from reason2rank.llm.distinct_values import server_schema
from reason2rank.llm.reasoning import reasoning_field

#: statuses worth retrying: rate limits, timeouts, conflicts and server errors
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529})
_FORMATS = ("json_schema", "json_object", "none")


@dataclass
class ServerState:
    """One server of the pool: its base URL, requests in flight, and whether (until when) it is out."""

    base_url: str
    in_flight: int = 0
    requests: int = 0
    failures: int = 0  # in a row
    errors: int = 0  # in all
    down_until: float = 0.0

    @property
    def url(self) -> str:
        """The chat completions endpoint."""
        return self.base_url + "/chat/completions"


class ServerPool:
    """Spreads requests over servers: the healthy one with the fewest in flight, at most ``per_server`` each;
    failing servers are out for a cooldown that doubles per failure in a row (see the module docstring)."""

    def __init__(
        self, base_urls: Sequence[str], per_server: int, cooldown: float = 5.0, max_cooldown: float = 120.0
    ) -> None:
        self.servers = [ServerState(u) for u in base_urls]
        self.per_server = int(per_server)
        self.cooldown = float(cooldown)
        self.max_cooldown = float(max_cooldown)
        self._cond = threading.Condition()
        self._next = 0

    def healthy(self, exclude: Iterable[ServerState] = ()) -> bool:
        """Whether a server outside ``exclude`` is in (not cooling down)."""
        now = time.monotonic()
        skip = set(map(id, exclude))
        return any(s.down_until <= now and id(s) not in skip for s in self.servers)

    def acquire(self, exclude: Iterable[ServerState] = ()) -> ServerState:
        """A server for one request (blocks while every usable one is at ``per_server``). ``exclude``: servers
        this request already failed on, avoided while another is in."""
        skip = set(map(id, exclude))
        with self._cond:
            while True:
                now = time.monotonic()
                free = [s for s in self.servers if s.in_flight < self.per_server]
                up = [s for s in free if s.down_until <= now]
                pick = [s for s in up if id(s) not in skip] or up
                if not pick and free and not any(s.down_until <= now for s in self.servers):
                    pick = [min(free, key=lambda s: s.down_until)]  # all out: probe the first to come back
                if pick:
                    n = len(self.servers)
                    order = {id(s): (i - self._next) % n for i, s in enumerate(self.servers)}
                    server = min(pick, key=lambda s: (s.in_flight, order[id(s)]))
                    self._next = (self.servers.index(server) + 1) % n
                    server.in_flight += 1
                    server.requests += 1
                    return server
                self._cond.wait(0.05)

    def release(self, server: ServerState, ok: bool | None) -> None:
        """End a request: ``ok`` True brings the server back, False takes it out for its cooldown, None (an
        answer that says nothing about the server's health, such as HTTP 400) changes nothing."""
        with self._cond:
            server.in_flight -= 1
            if ok is True:
                server.failures, server.down_until = 0, 0.0
            elif ok is False:
                server.failures += 1
                server.errors += 1
                wait = min(self.max_cooldown, self.cooldown * 2 ** (server.failures - 1))
                server.down_until = time.monotonic() + wait
            self._cond.notify_all()

    def stats(self) -> list[dict[str, object]]:
        """Per server: base URL, requests sent, errors, in flight, and whether it is out now."""
        now = time.monotonic()
        with self._cond:
            return [
                {"base_url": s.base_url, "requests": s.requests, "errors": s.errors, "in_flight": s.in_flight,
                 "out": s.down_until > now}
                for s in self.servers
            ]  # fmt: skip


def split_base_urls(base_url: str | Sequence[str]) -> list[str]:
    """One URL, URLs separated by commas, or a list of them -> the list (trailing slashes dropped)."""
    parts = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    urls = [str(u).strip().rstrip("/") for u in parts if str(u).strip()]
    if not urls:
        raise ValueError(f"base_url names no server: {base_url!r}")
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"server URLs must start with http:// or https://, got {bad}")
    if len(set(urls)) != len(urls):
        raise ValueError(f"a server is listed twice in {urls}")
    return urls


class OpenAIBackend(Backend):
    """``POST {base_url}/chat/completions`` with retries, backoff and a limit on requests in flight.

    - ``api_key``: given directly, else read from the environment variable ``api_key_env``
      (default ``OPENAI_API_KEY``); no key means no ``Authorization`` header (fine for local servers).
    - ``timeout``: seconds per request; a request that takes longer is abandoned and retried.
    - ``max_retries``: retries after the first try on 429/5xx/timeouts/connection errors, waiting
      ``backoff * 2**attempt`` seconds (with jitter, at most ``max_backoff``) or the server's
      ``Retry-After``. Other 4xx answers are not retried.
    - ``response_format``: ``auto`` asks for ``json_schema`` structured output and steps down to
      ``json_object``, then to plain text, the first time the server rejects it (HTTP 400/422);
      or force one of ``json_schema``, ``json_object``, ``none``.
    - a server that rejects ``max_tokens`` in favour of ``max_completion_tokens``, or any ``temperature``
      (reasoning models), gets the request again in the form it accepts; the change is remembered.
    - ``assistant_prefill``: the server continues a final assistant message (vLLM's ``continue_final_message``),
      so a ``prefix`` setting can be honoured;
    - ``extra_body``: fields merged into every request (e.g. vLLM's
      ``{"chat_template_kwargs": {"enable_thinking": false}}``).
    - several servers: ``base_url`` a list or comma-separated URLs; ``server_max_in_flight`` caps each one
      (default: ``max_in_flight``, the cap of the whole backend), ``server_cooldown`` / ``max_server_cooldown``
      how long a failing one is out (see the module docstring).
    """

    def __init__(
        self,
        model: str,
        base_url: str | Sequence[str] = "https://api.openai.com/v1",
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        max_in_flight: int = 8,
        response_format: str = "auto",
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        assistant_prefill: bool = False,
        name: str | None = None,
        server_max_in_flight: int | None = None,
        server_cooldown: float = 5.0,
        max_server_cooldown: float = 120.0,
    ):
        if not model:
            raise ValueError("openai backend needs a model name, e.g. openai:gpt-4o-mini")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if response_format not in ("auto", *_FORMATS):
            raise ValueError(
                f"response_format must be auto, json_schema, json_object or none, got {response_format!r}"
            )
        if server_max_in_flight is not None and server_max_in_flight < 1:
            raise ValueError(f"server_max_in_flight must be >= 1, got {server_max_in_flight}")
        if server_cooldown < 0 or max_server_cooldown < server_cooldown:
            raise ValueError(
                f"need 0 <= server_cooldown <= max_server_cooldown, got {server_cooldown} and {max_server_cooldown}"
            )
        self.model = model
        self.base_urls = split_base_urls(base_url)
        self.base_url = self.base_urls[0]
        self.url = self.base_url + "/chat/completions"
        self.servers = ServerPool(
            self.base_urls, server_max_in_flight or max_in_flight, server_cooldown, max_server_cooldown
        )
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env) or None
        if api_key is None and any("api.openai.com" in u for u in self.base_urls):
            raise ValueError(f"no API key: set the environment variable {api_key_env} (or pass api_key)")
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_in_flight = int(max_in_flight)
        self.response_format = response_format
        self._format_level = 0 if response_format == "auto" else _FORMATS.index(response_format)
        self._max_tokens_field = "max_tokens"
        self._send_temperature = True
        self.extra_body = dict(extra_body or {})
        self.name = name or f"openai:{model}"
        self.supported_options = frozenset(
            {"top_p", "seed", "stop"} | ({"prefix"} if assistant_prefill else set())
        )
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _resources(self) -> tuple[httpx.Client, ThreadPoolExecutor]:
        with self._lock:
            if self._client is None:
                n = self.max_in_flight
                limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
                self._client = httpx.Client(
                    headers=self._headers, limits=limits, timeout=httpx.Timeout(self.timeout)
                )
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.max_in_flight, thread_name_prefix="reason2rank-openai")
            return self._client, self._pool

    def server_stats(self) -> list[dict[str, object]]:
        """Per server: base URL, requests sent, errors, requests in flight, and whether it is out now."""
        return self.servers.stats()

    def close(self) -> None:
        """Stop the worker threads and close the HTTP client."""
        with self._lock:
            pool, self._pool = self._pool, None
            client, self._client = self._client, None
        if pool is not None:  # queued requests are dropped; one still running ends with the closed client
            pool.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()

    def generate(
        self,
        messages: Sequence[Messages],
        *,
        on_result: OnResult | None = None,
        json_schema: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
        **options: Any,
    ) -> list[GenerationResult]:
        """Answer every message list (``max_in_flight`` requests at a time); see ``Backend.generate``.

        ``top_p``, ``seed`` and ``stop`` go into the request; ``prefix`` is sent as a final assistant message the
        server continues (``continue_final_message``, as vLLM does) when the backend was built with
        ``assistant_prefill=True``, and refused otherwise."""
        self.check_options(options)
        if not messages:
            return []
        client, pool = self._resources()
        futures: dict[Future[GenerationResult], int] = {
            pool.submit(
                self._request,
                client,
                messages[i],
                schema_for(json_schema, i),
                max_new_tokens,
                temperature,
                options,
            ): i
            for i in range(len(messages))
        }
        results: list[GenerationResult | None] = [None] * len(messages)
        try:
            for fut in as_completed(futures):
                i = futures[fut]
                result = results[i] = fut.result()
                if on_result is not None:
                    on_result(i, result)
        except BaseException:  # Ctrl-C or a failing callback: drop what has not started
            for fut in futures:
                fut.cancel()
            raise
        return [r for r in results if r is not None]

    def _payload(
        self,
        messages: Messages,
        schema: Mapping[str, Any] | None,
        max_new_tokens: int,
        temperature: float,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        options = options or {}
        payload: dict[str, Any] = {"model": self.model, "messages": list(messages)}
        if self._send_temperature:
            payload["temperature"] = temperature
        payload[self._max_tokens_field] = max_new_tokens
        for key in ("top_p", "seed"):
            if key in options:
                payload[key] = options[key]
        if options.get("stop"):
            payload["stop"] = list(options["stop"])
        if options.get("prefix"):
            payload["messages"] = [*payload["messages"], {"role": "assistant", "content": options["prefix"]}]
            payload["continue_final_message"] = True
            payload["add_generation_prompt"] = False
        payload.update(self.extra_body)
        fmt = _FORMATS[self._format_level]
        if schema is not None and fmt == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": server_schema(schema), "strict": True},
            }
        elif schema is not None and fmt == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

    def _adapt(self, payload: Mapping[str, Any], level: int, body: str) -> bool:
        """After an HTTP 400/422: change what we send when the server said which parameter it rejects.
        Returns True when there is something new to try."""
        text = body.lower()
        with self._lock:
            if "response_format" in payload and _mentions_format(text):
                if self._format_level == level and level < len(_FORMATS) - 1:
                    self._format_level = level + 1
                return True
            if "max_tokens" in payload and "max_completion_tokens" in text:
                self._max_tokens_field = "max_completion_tokens"  # newer OpenAI models
                return True
            if (
                "temperature" in payload
                and "temperature" in text
                and ("support" in text or "unsupported" in text)
            ):
                self._send_temperature = False  # models that only run at their default temperature
                return True
        return False

    def _request(
        self,
        client: httpx.Client,
        messages: Messages,
        schema: Mapping[str, Any] | None,
        max_new_tokens: int,
        temperature: float,
        options: Mapping[str, Any] | None = None,
    ) -> GenerationResult:
        attempt = adaptations = 0
        last_error = "no attempt made"
        started = time.perf_counter()
        failed_on: list[ServerState] = []
        many = len(self.servers.servers) > 1
        while True:
            retry_after: float | None = None
            level = self._format_level
            payload = self._payload(messages, schema, max_new_tokens, temperature, options)
            server = self.servers.acquire(failed_on)
            healthy: bool | None = False
            where = f" from {server.base_url}" if many else ""
            try:
                resp = client.post(server.url, json=payload)
            except httpx.TimeoutException:
                last_error = f"timeout: no answer{where} within {self.timeout:g} s"
            except httpx.TransportError as e:
                last_error = f"connection error{where}: {type(e).__name__}: {e}"
            else:
                status = resp.status_code
                healthy = None if status not in RETRY_STATUSES else False
                if status == 200:
                    result = _parse_completion(resp, time.perf_counter() - started)
                    if result is not None:
                        self.servers.release(server, True)
                        return result
                    last_error = f"HTTP 200 with an unreadable body{where}: {resp.text[:200]!r}"
                elif status in (400, 422) and adaptations < 3 and self._adapt(payload, level, resp.text):
                    self.servers.release(server, None)
                    adaptations += 1  # the server rejected an optional parameter: resend without it
                    continue
                elif status in RETRY_STATUSES:
                    last_error = f"HTTP {status}{where}: {resp.text[:200]}"
                    retry_after = _retry_after(resp)
                else:
                    self.servers.release(server, None)
                    hint = ""
                    if status in (401, 403):
                        hint = f" (is the API key right? it is read from ${self.api_key_env})"
                    return GenerationResult(error=f"HTTP {status}{where}{hint}: {resp.text[:300]}")
            self.servers.release(server, healthy)
            if attempt >= self.max_retries:
                return GenerationResult(error=f"gave up after {attempt + 1} tries; last error: {last_error}")
            if healthy is False:
                failed_on.append(server)
                if self.servers.healthy(failed_on):  # another server is in: try it now, no backoff
                    attempt += 1
                    continue
            delay = min(self.max_backoff, self.backoff * (2**attempt)) * (0.5 + random.random() / 2)
            if retry_after is not None:
                delay = min(self.max_backoff, max(delay, retry_after))
            attempt += 1
            time.sleep(delay)


def _mentions_format(text: str) -> bool:
    t = text.lower()
    return any(k in t for k in ("response_format", "json_schema", "json_object", "structured", "guided"))


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _parse_completion(resp: httpx.Response, latency_s: float = 0.0) -> GenerationResult | None:
    try:
        body = resp.json()
        choice = body["choices"][0]
        message = choice.get("message") or {}
        if not isinstance(message, dict):
            return None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    content = message.get("content")
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None:
        refusal = message.get("refusal")
        content = f"(refusal) {refusal}" if refusal else ""
    usage = body.get("usage") or {}
    return GenerationResult(
        text=str(content),
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        finish_reason=choice.get("finish_reason"),
        reasoning=reasoning_field(message),  # reasoning servers return it apart (vLLM: "reasoning")
        latency_s=latency_s,
    )


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0
