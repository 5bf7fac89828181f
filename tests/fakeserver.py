"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for tests (real HTTP, real SDK on top).

Usage (the ``fake_openai`` fixture in tests/conftest.py yields a started server)::

    with FakeOpenAI() as srv:                  # or: def test_x(fake_openai): srv = fake_openai
        srv.script("plain text reply",         # queue: one item per /v1/chat/completions request
                   Reply(text="slow", delay=0.5),
                   Reply.error(429, "slow down", retry_after=1),
                   Reply.hanging())            # no answer until the client disconnects
        srv.handler = lambda req: "echo " + req.last_user   # or a callable(Request) -> reply
        client = AsyncOpenAI(base_url=srv.base_url, api_key="k")
        ...
        srv.requests[0].authorization          # every request is recorded (headers, JSON body)
        srv.max_open, srv.open_now             # concurrency seen at the server / open right now
        srv.wait_until(lambda s: s.open_now == 0, timeout=5)

A reply is a ``str`` (the assistant text) or a :class:`Reply`. The queue is used first; when it is
empty ``handler`` is asked; when there is neither, the server answers 400 "script exhausted" (and
counts it in ``unscripted``) so a test notices. Streaming (``"stream": true``) is answered as SSE
chunks, with a final usage chunk when ``stream_options.include_usage`` is set. ``/v1/models`` lists
``models`` (or answers ``models_reply`` when set); so does Ollama's ``/api/tags``. When
``api_key`` is set, requests without ``Authorization: Bearer <api_key>`` (or Azure's ``api-key``
header) get 401; ``models_need_key = False`` lets the model list answer without one. ``latency``
delays every chat reply.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer. ``usage`` keys: prompt_tokens, completion_tokens, cached_tokens."""

    text: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error_message: str | None = None       # for status >= 400: OpenAI-style error body
    delay: float = 0.0                     # seconds before answering (ends early on disconnect)
    hang: bool = False                     # never answer; returns when the client disconnects
    drop: bool = False                     # close the connection without any response
    drop_after: int | None = None          # streaming: cut the connection after this many chunks
    chunk_delay: float = 0.0               # between streamed chunks
    chunk_size: int = 16                   # characters per streamed chunk
    usage: dict[str, int] | None = None    # default: estimated from the request and the text
    finish_reason: str = "stop"
    model: str | None = None               # default: the requested model

    @classmethod
    def error(cls, status: int, message: str = "error", *, retry_after: float | None = None,
              headers: dict[str, str] | None = None) -> Reply:
        h = dict(headers or {})
        if retry_after is not None:
            h["Retry-After"] = f"{retry_after:g}"
        return cls(status=status, error_message=message, headers=h)

    @classmethod
    def hanging(cls) -> Reply:
        """No answer at all; the request ends when the client disconnects (or the server stops)."""
        return cls(hang=True)


@dataclass
class Request:
    """A recorded request. ``headers`` keys are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    time: float
    index: int
    query: str = ""          # the raw query string (e.g. Azure's api-version=…)

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or []) if isinstance(self.body, dict) else []

    @property
    def stream(self) -> bool:
        return bool(isinstance(self.body, dict) and self.body.get("stream"))

    @property
    def last_user(self) -> str:
        """Text of the last user message ('' if none)."""
        for m in reversed(self.messages):
            if m.get("role") == "user":
                c = m.get("content")
                if isinstance(c, list):
                    return "".join(p.get("text", "") for p in c if isinstance(p, dict))
                return str(c or "")
        return ""

    @property
    def system(self) -> str:
        for m in self.messages:
            if m.get("role") == "system":
                return str(m.get("content") or "")
        return ""


Handler = Callable[[Request], Any]


class FakeOpenAI:
    """The server. Start with ``start()`` or ``with``; ``base_url`` ends in ``/v1``."""

    def __init__(self, *, models: list[str] | None = None, api_key: str | None = None) -> None:
        self.models: list[str] = list(models or ["fake-root", "fake-sub"])
        self.models_reply: Reply | None = None
        self.api_key = api_key
        self.models_need_key = True   # False: the model list answers without a key (many servers do)
        self.handler: Handler | None = None
        self.latency = 0.0
        self.requests: list[Request] = []
        self.unscripted = 0
        self.open_now = 0
        self.max_open = 0
        self.completed = 0          # chat requests answered (or ended) so far
        self.disconnects = 0        # chat requests whose client went away before the answer ended
        self._queue: deque[Any] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        server = _Server(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeOpenAI:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting -------------------------------------------------------------------------------
    def script(self, *replies: Any) -> FakeOpenAI:
        """Queue replies (str or Reply), one per chat request, in order."""
        with self._cond:
            self._queue.extend(replies)
        return self

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    @property
    def chat_requests(self) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def reset_counts(self) -> None:
        with self._cond:
            self.max_open = self.open_now

    def wait_until(self, predicate: Callable[[FakeOpenAI], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(self)`` holds (re-checked on every server event); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    # -- internals -------------------------------------------------------------------------------
    def _record(self, req: Request) -> None:
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    def _opened(self) -> None:
        with self._cond:
            self.open_now += 1
            self.max_open = max(self.max_open, self.open_now)
            self._cond.notify_all()

    def _closed(self, disconnected: bool) -> None:
        with self._cond:
            self.open_now -= 1
            self.completed += 1
            if disconnected:
                self.disconnects += 1
            self._cond.notify_all()

    def _next_reply(self, req: Request) -> Reply | None:
        with self._cond:
            item = self._queue.popleft() if self._queue else None
        if item is None and self.handler is not None:
            item = self.handler(req)
        if item is None:
            with self._cond:
                self.unscripted += 1
            return None
        if isinstance(item, Reply):
            return item
        if callable(item):
            item = item(req)
            if isinstance(item, Reply):
                return item
        return Reply(text=str(item))


class _Server(ThreadingHTTPServer):
    # The listen backlog: socketserver's default of 5 drops connections (ReadError at the client)
    # when tens of sub-calls connect at once, as llm_query_batched at concurrency 32 does.
    request_queue_size = 256


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _make_handler(srv: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeOpenAI/1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
            return

        def setup(self) -> None:
            super().setup()
            # Zero added latency: no Nagle delay between the header, body and SSE event writes.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        # -- helpers ----------------------------------------------------------------------------
        def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
            err_type = {401: "invalid_request_error", 404: "not_found", 429: "rate_limit_exceeded"}
            self._send_json(status, {"error": {"message": message,
                                               "type": err_type.get(status, "server_error"),
                                               "code": str(status)}}, headers)

        def _client_gone(self) -> bool:
            try:
                r, _, _ = select.select([self.connection], [], [], 0)
                if not r:
                    return False
                return self.connection.recv(1, socket.MSG_PEEK) == b""
            except OSError:
                return True

        def _wait(self, seconds: float | None) -> bool:
            """Sleep ``seconds`` (None: forever) unless the client leaves; True if it left."""
            deadline = None if seconds is None else time.monotonic() + seconds
            while True:
                if self._client_gone():
                    return True
                if srv._stop.is_set():
                    return True
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    time.sleep(min(left, 0.02))
                else:
                    time.sleep(0.02)

        def _read_body(self) -> Any:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            if not raw:
                return None
            try:
                return json.loads(raw)
            except json.JSONDecodeError:
                return raw.decode("utf-8", "replace")

        def _record(self, body: Any) -> Request:
            req = Request(self.command, self.path.split("?")[0],
                          {k.lower(): v for k, v in self.headers.items()}, body, time.time(),
                          len(srv.requests), self.path.partition("?")[2])
            srv._record(req)
            return req

        def _auth_ok(self) -> bool:
            if srv.api_key is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {srv.api_key}":
                return True
            if self.headers.get("api-key") == srv.api_key:   # Azure OpenAI's key header
                return True
            self._error(401, "Incorrect API key provided (fake server).")
            return False

        # -- routes -----------------------------------------------------------------------------
        def do_GET(self) -> None:  # noqa: N802
            self._record(None)
            path = self.path.split("?")[0].rstrip("/")
            if path.endswith("/models"):
                if srv.models_need_key and not self._auth_ok():
                    return
                r = srv.models_reply
                if r is not None and r.status >= 400:
                    self._error(r.status, r.error_message or "error", r.headers)
                    return
                self._send_json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in srv.models]})
                return
            if path == "/api/tags":          # Ollama's native model list
                self._send_json(200, {"models": [{"name": m, "model": m} for m in srv.models]})
                return
            self._error(404, f"unknown path {path} (fake server)")

        def do_POST(self) -> None:  # noqa: N802
            body = self._read_body()
            req = self._record(body)
            path = req.path.rstrip("/")
            if not path.endswith("/chat/completions"):
                self._error(404, f"unknown path {path} (fake server)")
                return
            srv._opened()
            gone = False
            try:
                gone = self._chat(req)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                gone = True
            finally:
                srv._closed(gone)

        def _chat(self, req: Request) -> bool:
            if not self._auth_ok():
                return False
            reply = srv._next_reply(req)
            if reply is None:
                self._error(400, "fakeserver: script exhausted (no reply queued and no handler)")
                return False
            if srv.latency and self._wait(srv.latency):
                return True
            if reply.hang:
                self._wait(None)
                self.close_connection = True
                return True
            if reply.delay and self._wait(reply.delay):
                self.close_connection = True
                return True
            if reply.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return False
            if reply.status >= 400:
                self._error(reply.status, reply.error_message or "error", reply.headers)
                return False
            body = req.body if isinstance(req.body, dict) else {}
            model = reply.model or str(body.get("model") or "fake")
            prompt_text = json.dumps(body.get("messages") or [])
            u = dict(reply.usage or {})
            prompt_tokens = u.get("prompt_tokens", _estimate_tokens(prompt_text))
            completion_tokens = u.get("completion_tokens", _estimate_tokens(reply.text))
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens,
                     "prompt_tokens_details": {"cached_tokens": u.get("cached_tokens", 0)}}
            cid = f"chatcmpl-fake{req.index}"
            created = int(time.time())
            if not body.get("stream"):
                self._send_json(200, {
                    "id": cid, "object": "chat.completion", "created": created, "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.text},
                                 "finish_reason": reply.finish_reason}],
                    "usage": usage}, reply.headers)
                return False
            # Server-sent events, chunked transfer encoding so the connection can be reused.
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()

            def event(obj: Any) -> None:
                data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
                return {"id": cid, "object": "chat.completion.chunk", "created": created,
                        "model": model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

            event(chunk({"role": "assistant", "content": ""}, None))
            text = reply.text
            size = max(1, reply.chunk_size)
            for n, i in enumerate(range(0, len(text), size)):
                if reply.chunk_delay and self._wait(reply.chunk_delay):
                    self.close_connection = True
                    return True
                if reply.drop_after is not None and n >= reply.drop_after:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return False
                event(chunk({"content": text[i:i + size]}, None))
            event(chunk({}, reply.finish_reason))
            opts = body.get("stream_options") or {}
            if opts.get("include_usage"):
                event({"id": cid, "object": "chat.completion.chunk", "created": created,
                       "model": model, "choices": [], "usage": usage})
            event("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return False

    return H
