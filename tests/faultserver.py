"""A fault-injecting OpenAI-compatible server on 127.0.0.1 that misbehaves at the byte level.

``tests/fakeserver.py`` is the well-behaved scripted server (http.server does the HTTP for it). This
one speaks HTTP/1.1 by hand over raw sockets, so it can send what a broken gateway, a crashed model
server or a runaway model sends: event streams that are not JSON, JSON of the wrong shape, replies
with no choices, HTML with status 200, streams that stop without their terminator, streams that
never stop, connection resets. Every behaviour answers streamed and non-streamed requests.

Usage (the ``fault_server`` fixture in tests/engine/test_streams.py yields a started server)::

    with FaultServer() as srv:
        srv.script(malformed_sse(), cut_mid_code("print('X')"), ok("FINAL(done)"))
        srv.handler = lambda req: ok("echo " + req.last_user)   # when the queue is empty
        ... rlm-desktop run --base-url srv.base_url ...
        srv.chat_requests                    # every chat request, recorded (headers, JSON body)
        srv.served                           # per chat request: (behaviour name, bytes sent, end)
        srv.connections                      # TCP connections accepted (keep-alive reuse shows)
        srv.wait_until(lambda s: s.open_now == 0)

``end`` in ``served`` says how an answer ended: "done" (as scripted), "client" (the client went
away), "limit" (``endless`` hit its own bound), "reset".
"""

from __future__ import annotations

import gzip
import json
import socket
import socketserver
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CRLF = b"\r\n"


@dataclass(frozen=True)
class Behaviour:
    """One scripted answer; build it with the functions below (``ok``, ``malformed_sse``, …)."""

    name: str
    text: str = ""
    chunk_size: int = 16
    chunk_delay_s: float = 0.0
    finish_reason: str | None = "stop"
    status: int = 200
    max_s: float = 60.0                 # endless: stop by itself after this long …
    max_bytes: int = 512 * 1024 * 1024  # … or after this many bytes
    extra: dict[str, Any] = field(default_factory=dict)


def ok(text: str, *, chunk_size: int = 16, usage: Any = None, finish_reason: str | None = "stop",
       done: bool = True, split_done: bool = False) -> Behaviour:
    """A correct answer: finish_reason, usage chunk when asked, ``[DONE]``, proper chunked end.
    ``usage`` replaces the usage object sent (to send one of the wrong shape); ``finish_reason=None``
    or ``done=False`` leave out one of the two terminators (a complete answer has at least one);
    ``split_done`` sends ``data: [DONE]`` in two TCP writes with a pause between them."""
    extra: dict[str, Any] = {"done": done, "split_done": split_done}
    if usage is not None:
        extra["usage"] = usage
    return Behaviour("ok", text, chunk_size=chunk_size, finish_reason=finish_reason, extra=extra)


def slow(text: str, *, chunk_delay_s: float = 0.05, chunk_size: int = 4) -> Behaviour:
    """A correct answer sent a few characters at a time with a pause between chunks."""
    return Behaviour("slow", text, chunk_size=chunk_size, chunk_delay_s=chunk_delay_s)


def malformed_sse(text_before: str = "Let me look") -> Behaviour:
    """Streamed: some good chunks, then a ``data:`` line that is not JSON. Non-streamed: a JSON body
    cut in the middle (``application/json`` that does not parse)."""
    return Behaviour("malformed_sse", text_before)


def garbage_events() -> Behaviour:
    """Streamed: comments, unknown fields, an ``event:`` without data, bytes that are not UTF-8 and
    ``data:`` lines that are prose. Non-streamed: the same bytes as an ``application/json`` body."""
    return Behaviour("garbage_events")


def wrong_shape_json() -> Behaviour:
    """Valid JSON of the wrong shape: objects without ``choices``, a list, a string, choices that
    are not a list; streamed ends with ``[DONE]``."""
    return Behaviour("wrong_shape_json")


def no_choices() -> Behaviour:
    """A well-formed reply whose ``choices`` is empty (streamed: only a usage chunk, then
    ``[DONE]``)."""
    return Behaviour("no_choices")


def non_json_200() -> Behaviour:
    """Status 200 with an HTML body (a captive portal, a login page of a proxy)."""
    return Behaviour("non_json_200")


def cut_stream(text: str = "The answer is going to be", *, chunk_size: int = 16) -> Behaviour:
    """Streamed: content chunks, then the body ends cleanly (``Connection: close``, no length, no
    chunking) with no finish_reason and no ``[DONE]``. Non-streamed: a JSON body shorter than its
    ``Content-Length``."""
    return Behaviour("cut_stream", text, chunk_size=chunk_size, finish_reason=None)


def cut_mid_code(code: str, *, before: str = "I will run this:\n") -> Behaviour:
    """A ``cut_stream`` that stops inside a ```repl block holding ``code`` (no closing fence)."""
    return Behaviour("cut_mid_code", f"{before}```repl\n{code}\n", finish_reason=None)


def endless(token: str = "tok ", *, chunk_size: int = 64, max_s: float = 60.0,
            max_bytes: int = 512 * 1024 * 1024) -> Behaviour:
    """Tokens forever, until the client disconnects; bounded here too (``max_s``, ``max_bytes``) so
    the server stops by itself. Non-streamed: a JSON body whose content string never ends."""
    return Behaviour("endless", token, chunk_size=chunk_size, max_s=max_s, max_bytes=max_bytes,
                     finish_reason=None)


def endless_line(*, max_s: float = 60.0, max_bytes: int = 512 * 1024 * 1024) -> Behaviour:
    """Streamed: one ``data:`` line that never ends (no newline ever comes), bounded as ``endless``."""
    return Behaviour("endless_line", max_s=max_s, max_bytes=max_bytes, finish_reason=None)


def gzip_endless_line(*, max_s: float = 60.0) -> Behaviour:
    """Streamed: ``endless_line`` compressed with gzip (``Content-Encoding: gzip``): each MB of the
    line is about 1 KB on the wire, so a bound on the bytes read from the socket would let
    gigabytes of text through; only a bound on the decoded bytes stops it in time and memory."""
    return Behaviour("gzip_endless_line", max_s=max_s, finish_reason=None)


def error_event(message: str = "The server is overloaded") -> Behaviour:
    """Streamed: a content chunk, then ``data: {"error": {...}}`` (how some servers give up
    mid-answer), then the end of the stream. Non-streamed: a 200 whose JSON body is that error."""
    return Behaviour("error_event", "Let me", extra={"message": message})


def two_choices(first: str, second: str) -> Behaviour:
    """Streamed: chunks of two choices (index 0 and 1) interleaved, as with n=2."""
    return Behaviour("two_choices", first, extra={"second": second})


def reset(text_before: str = "Half an ans") -> Behaviour:
    """Some content, then a TCP RST (SO_LINGER 0 and close)."""
    return Behaviour("reset", text_before, finish_reason=None)


def odd_sse(text: str, *, byte_delay_s: float = 0.001) -> Behaviour:
    """Streamed: a correct answer in the other forms the SSE spec allows and servers use: CRLF line
    ends, ``data:`` without the space, comments (``: keep-alive``), ``event:``, ``id:`` and
    ``retry:`` lines, one chunk's JSON spread over several ``data:`` lines, UTF-8 text sent raw
    (not as \\u escapes), the terminator as ``data:[DONE]``; sent one byte per TCP write with a
    pause between, so lines, CRLFs and UTF-8 characters are split between reads."""
    return Behaviour("odd_sse", text, chunk_delay_s=byte_delay_s)


def gzipped(text: str, *, finish_reason: str | None = "stop") -> Behaviour:
    """Streamed: a correct answer as a gzip-compressed body (``Content-Encoding: gzip``), sent in
    small pieces; ``finish_reason=None`` leaves ``[DONE]`` as its only terminator."""
    return Behaviour("gzipped", text, finish_reason=finish_reason)


def status(code: int, message: str = "error") -> Behaviour:
    """An OpenAI-style error body with this HTTP status."""
    return Behaviour("status", status=code, extra={"message": message})


@dataclass
class Request:
    """A recorded request. ``headers`` keys are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    index: int

    @property
    def stream(self) -> bool:
        return bool(isinstance(self.body, dict) and self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or []) if isinstance(self.body, dict) else []

    @property
    def system(self) -> str:
        return next((str(m.get("content") or "") for m in self.messages if m.get("role") == "system"), "")

    @property
    def last_user(self) -> str:
        return next((str(m.get("content") or "") for m in reversed(self.messages)
                     if m.get("role") == "user"), "")


class _ClientGone(Exception):
    pass


class FaultServer:
    """The server. ``base_url`` ends in ``/v1``. Thread per connection; HTTP/1.1 keep-alive for the
    answers that end properly, ``Connection: close`` for the ones that end by closing."""

    def __init__(self) -> None:
        self.handler: Callable[[Request], Behaviour | str] | None = None
        self.requests: list[Request] = []
        self.served: list[tuple[str, int, str]] = []
        self.connections = 0                # TCP connections accepted so far
        self.open_now = 0
        self._queue: deque[Behaviour | str] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._server: socketserver.ThreadingTCPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FaultServer:
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                owner._serve_connection(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         name="fault-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- scripting -------------------------------------------------------------------------------
    def script(self, *behaviours: Behaviour | str) -> FaultServer:
        """Queue behaviours (a str is ``ok(str)``), one per chat request, in order."""
        with self._cond:
            self._queue.extend(behaviours)
        return self

    @property
    def chat_requests(self) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def wait_until(self, predicate: Callable[[FaultServer], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def _next(self, req: Request) -> Behaviour:
        with self._cond:
            item = self._queue.popleft() if self._queue else None
        if item is None and self.handler is not None:
            item = self.handler(req)
        if item is None:
            return status(400, "faultserver: script exhausted (no behaviour queued and no handler)")
        return ok(item) if isinstance(item, str) else item

    def _served(self, name: str, sent: int, end: str) -> None:
        with self._cond:
            self.served.append((name, sent, end))
            self._cond.notify_all()

    # -- HTTP by hand ----------------------------------------------------------------------------
    def _serve_connection(self, sock: socket.socket) -> None:
        with self._cond:
            self.connections += 1
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(30)
        buf = b""
        try:
            while not self._stop.is_set():
                req, buf = self._read_request(sock, buf)
                if req is None:
                    return
                if not req.path.rstrip("/").endswith("/chat/completions"):
                    self._send_json(sock, 404, {"error": {"message": f"unknown path {req.path}"}})
                    continue
                behaviour = self._next(req)
                with self._cond:
                    self.open_now += 1
                    self._cond.notify_all()
                wire = _Wire(sock, self._stop)
                end = "done"
                try:
                    keep = _answer(wire, behaviour, req)
                except _ClientGone:
                    end, keep = "client", False
                except _Limit:
                    end, keep = "limit", False
                except OSError:
                    end, keep = "client", False
                finally:
                    with self._cond:
                        self.open_now -= 1
                        self._cond.notify_all()
                if behaviour.name == "reset" and end == "done":
                    end = "reset"
                self._served(behaviour.name, wire.sent, end)
                if not keep:
                    return
        except (OSError, ValueError):
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _read_request(self, sock: socket.socket, buf: bytes) -> tuple[Request | None, bytes]:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return None, b""
            buf += data
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length") or 0)
        while len(buf) < n:
            data = sock.recv(65536)
            if not data:
                return None, b""
            buf += data
        raw, buf = buf[:n], buf[n:]
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with self._cond:
            req = Request(method, path.split("?")[0], headers, body, len(self.requests))
            self.requests.append(req)
            self._cond.notify_all()
        return req, buf

    @staticmethod
    def _send_json(sock: socket.socket, code: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        sock.sendall(_head(code, {"Content-Type": "application/json", "Content-Length": str(len(data))})
                     + data)


class _Limit(Exception):
    """``endless`` reached its own bound."""


class _Wire:
    """The connection of one answer: counts what was sent, notices a client that went away."""

    def __init__(self, sock: socket.socket, stop: threading.Event) -> None:
        self.sock = sock
        self.stop = stop
        self.sent = 0

    def send(self, data: bytes) -> None:
        if self.stop.is_set():
            raise _ClientGone()
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise _ClientGone() from exc
        self.sent += len(data)

    def chunk(self, data: bytes) -> None:
        """One HTTP chunk (Transfer-Encoding: chunked)."""
        self.send(f"{len(data):x}".encode() + CRLF + data + CRLF)

    def end_chunks(self) -> None:
        self.send(b"0" + CRLF + CRLF)

    def pause(self, seconds: float) -> None:
        if seconds > 0 and self.stop.wait(seconds):
            raise _ClientGone()


def _head(code: int, headers: dict[str, str]) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
              500: "Internal Server Error", 503: "Service Unavailable"}.get(code, "Status")
    lines = [f"HTTP/1.1 {code} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _chunk_obj(req: Request, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"id": f"chatcmpl-fault{req.index}", "object": "chat.completion.chunk", "created": 0,
            "model": _model(req), "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def _model(req: Request) -> str:
    return str(req.body.get("model") or "fault") if isinstance(req.body, dict) else "fault"


def _usage(req: Request, text: str) -> dict[str, Any]:
    p = max(1, len(json.dumps(req.messages)) // 4)
    c = max(1, len(text) // 4)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def _completion(req: Request, text: str, finish: str | None) -> dict[str, Any]:
    return {"id": f"chatcmpl-fault{req.index}", "object": "chat.completion", "created": 0,
            "model": _model(req), "usage": _usage(req, text),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish}]}


def _sse(obj: Any) -> bytes:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()


def _answer(w: _Wire, b: Behaviour, req: Request) -> bool:
    """Send the behaviour's answer. True: the connection can carry another request."""
    stream = req.stream
    sse_chunked = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                   "Transfer-Encoding": "chunked"}
    sse_to_close = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "Connection": "close"}
    if b.name == "status":
        data = json.dumps({"error": {"message": b.extra.get("message", "error"), "type": "server_error",
                                     "code": str(b.status)}}).encode()
        w.send(_head(b.status, {"Content-Type": "application/json", "Content-Length": str(len(data))}) + data)
        return True
    if b.name == "non_json_200":
        data = (b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><h1>Please sign in "
                b"to the corporate proxy</h1></body></html>")
        w.send(_head(200, {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(data))})
               + data)
        return True
    if not stream:
        return _answer_plain(w, b, req)
    if b.name in ("ok", "slow"):
        w.send(_head(200, sse_chunked))
        w.chunk(_sse(_chunk_obj(req, {"role": "assistant", "content": ""}, None)))
        size = max(1, b.chunk_size)
        for i in range(0, len(b.text), size):
            w.pause(b.chunk_delay_s)
            w.chunk(_sse(_chunk_obj(req, {"content": b.text[i:i + size]}, None)))
        w.chunk(_sse(_chunk_obj(req, {}, b.finish_reason)))
        if (req.body.get("stream_options") or {}).get("include_usage"):
            w.chunk(_sse({**_chunk_obj(req, {}, None), "choices": [],
                          "usage": b.extra.get("usage", _usage(req, b.text))}))
        if b.extra.get("split_done"):
            w.chunk(b"data: [DO")
            w.pause(0.1)
            w.chunk(b"NE]\n\n")
        elif b.extra.get("done", True):
            w.chunk(_sse("[DONE]"))
        w.end_chunks()
        return True
    if b.name == "odd_sse":
        w.send(_head(200, sse_chunked))
        body = b": keep-alive\r\n\r\nretry: 3000\r\n\r\n"
        first = json.dumps(_chunk_obj(req, {"role": "assistant", "content": ""}, None))
        body += f"event: message\r\nid: 1\r\ndata:{first}\r\n\r\n".encode()
        for i in range(0, len(b.text), 3):
            obj = json.dumps(_chunk_obj(req, {"content": b.text[i:i + 3]}, None), ensure_ascii=False,
                             indent=1)        # the JSON over several data: lines
            body += ("".join(f"data: {line}\r\n" for line in obj.split("\n")) + "\r\n").encode()
            body += b": keep-alive\r\n"
        body += f"\r\ndata: {json.dumps(_chunk_obj(req, {}, 'stop'))}\r\n\r\n".encode()
        body += b"data:[DONE]\r\n\r\n"
        for i in range(len(body)):
            w.chunk(body[i:i + 1])
            w.pause(b.chunk_delay_s)
        w.end_chunks()
        return True
    if b.name == "gzipped":
        w.send(_head(200, {**sse_chunked, "Content-Encoding": "gzip"}))
        body = _sse(_chunk_obj(req, {"role": "assistant", "content": ""}, None))
        for i in range(0, len(b.text), 16):
            body += _sse(_chunk_obj(req, {"content": b.text[i:i + 16]}, None))
        body += _sse(_chunk_obj(req, {}, b.finish_reason)) + _sse("[DONE]")
        packed = gzip.compress(body)
        for i in range(0, len(packed), 7):
            w.chunk(packed[i:i + 7])
        w.end_chunks()
        return True
    if b.name == "malformed_sse":
        w.send(_head(200, sse_chunked))
        w.chunk(_sse(_chunk_obj(req, {"role": "assistant", "content": b.text}, None)))
        w.chunk(b'data: {"id": "chatcmpl-x", "choices": [{"delta": {"content": "oops"\n\n')
        w.chunk(b"data: this is not JSON at all\n\n")
        w.chunk(_sse("[DONE]"))
        w.end_chunks()
        return True
    if b.name == "garbage_events":
        w.send(_head(200, sse_chunked))
        w.chunk(b": keep-alive comment\n\nlorem ipsum dolor sit amet\n\n")
        w.chunk(b"data: \xff\xfe\xfd not utf-8 \xc3\x28\n\n")
        w.chunk(b"id: 42\nretry: soon\n\nevent: ping\n\n")
        w.chunk(b"data: <html>502 Bad Gateway</html>\n\n")
        w.chunk(_sse("[DONE]"))
        w.end_chunks()
        return True
    if b.name == "wrong_shape_json":
        w.send(_head(200, sse_chunked))
        for obj in ({"id": "x", "object": "chat.completion.chunk", "text": "no choices key"},
                    [1, 2, 3], "just a string", 42,
                    {"id": "x", "choices": "not a list"},
                    {"id": "x", "choices": [{"index": 0, "delta": "not an object"}]},
                    {"id": "x", "choices": [{"index": 0, "delta": {"content": ["a", "list"]}}]}):
            w.chunk(f"data: {json.dumps(obj)}\n\n".encode())
        w.chunk(_sse("[DONE]"))
        w.end_chunks()
        return True
    if b.name == "error_event":
        w.send(_head(200, sse_chunked))
        w.chunk(_sse(_chunk_obj(req, {"role": "assistant", "content": b.text}, None)))
        w.chunk(_sse({"error": {"message": b.extra["message"], "type": "server_error"}}))
        w.end_chunks()
        return True
    if b.name == "two_choices":
        w.send(_head(200, sse_chunked))
        second = b.extra["second"]
        for i in range(max(len(b.text), len(second))):
            for index, text in ((0, b.text), (1, second)):
                if i < len(text):
                    obj = _chunk_obj(req, {"content": text[i]}, None)
                    obj["choices"][0]["index"] = index
                    w.chunk(_sse(obj))
        w.chunk(_sse(_chunk_obj(req, {}, "stop")))
        w.chunk(_sse("[DONE]"))
        w.end_chunks()
        return True
    if b.name == "no_choices":
        w.send(_head(200, sse_chunked))
        w.chunk(_sse({**_chunk_obj(req, {}, None), "choices": []}))
        w.chunk(_sse({**_chunk_obj(req, {}, None), "choices": [], "usage": _usage(req, "")}))
        w.chunk(_sse("[DONE]"))
        w.end_chunks()
        return True
    if b.name in ("cut_stream", "cut_mid_code"):
        # No length, no chunking, Connection: close: the end of the body is the clean end of the
        # connection, so the client sees a normal end of stream with no terminator.
        w.send(_head(200, sse_to_close))
        w.send(_sse(_chunk_obj(req, {"role": "assistant", "content": ""}, None)))
        size = max(1, b.chunk_size)
        for i in range(0, len(b.text), size):
            w.send(_sse(_chunk_obj(req, {"content": b.text[i:i + size]}, None)))
        w.sock.shutdown(socket.SHUT_WR)
        return False
    if b.name == "reset":
        w.send(_head(200, sse_chunked))
        w.chunk(_sse(_chunk_obj(req, {"role": "assistant", "content": b.text}, None)))
        _rst(w.sock)
        return False
    if b.name == "endless":
        w.send(_head(200, sse_chunked))
        deadline = time.monotonic() + b.max_s
        piece = (b.text * (b.chunk_size // max(1, len(b.text)) + 1))[:b.chunk_size]
        event = _sse(_chunk_obj(req, {"content": piece}, None))
        while True:
            if time.monotonic() > deadline or w.sent > b.max_bytes:
                raise _Limit()
            w.chunk(event)
    if b.name == "endless_line":
        w.send(_head(200, sse_chunked))
        w.chunk(b'data: {"choices": [{"index": 0, "delta": {"content": "')
        deadline = time.monotonic() + b.max_s
        filler = b"a" * 65536
        while True:
            if time.monotonic() > deadline or w.sent > b.max_bytes:
                raise _Limit()
            w.chunk(filler)
    if b.name == "gzip_endless_line":
        w.send(_head(200, {**sse_chunked, "Content-Encoding": "gzip"}))
        packer = zlib.compressobj(9, zlib.DEFLATED, 31)      # 31: a gzip header and trailer
        w.chunk(packer.compress(b'data: {"choices": [{"index": 0, "delta": {"content": "'))
        deadline = time.monotonic() + b.max_s
        filler = b"a" * (1 << 20)
        while True:
            if time.monotonic() > deadline:
                raise _Limit()
            w.chunk(packer.compress(filler) + packer.flush(zlib.Z_SYNC_FLUSH))
    raise ValueError(f"faultserver: unknown behaviour {b.name!r}")


def _answer_plain(w: _Wire, b: Behaviour, req: Request) -> bool:
    """The non-streamed form of each behaviour."""
    json_head = {"Content-Type": "application/json"}
    if b.name in ("ok", "slow"):
        w.pause(b.chunk_delay_s)
        body = _completion(req, b.text, b.finish_reason)
        if "usage" in b.extra:
            body["usage"] = b.extra["usage"]
        data = json.dumps(body).encode()
        w.send(_head(200, {**json_head, "Content-Length": str(len(data))}) + data)
        return True
    if b.name == "malformed_sse":
        data = json.dumps(_completion(req, b.text, "stop")).encode()[:60]
        w.send(_head(200, {**json_head, "Content-Length": str(len(data))}) + data)
        return True
    if b.name == "garbage_events":
        data = b"\xff\xfe garbage \xc3\x28 lorem ipsum"
        w.send(_head(200, {**json_head, "Content-Length": str(len(data))}) + data)
        return True
    if b.name == "wrong_shape_json":
        data = json.dumps({"id": "x", "object": "chat.completion", "text": "no choices key"}).encode()
        w.send(_head(200, {**json_head, "Content-Length": str(len(data))}) + data)
        return True
    if b.name == "error_event":
        data = json.dumps({"error": {"message": b.extra["message"], "type": "server_error"}}).encode()
        w.send(_head(200, {**json_head, "Content-Length": str(len(data))}) + data)
        return True
    if b.name == "no_choices":
        data = json.dumps({**_completion(req, "", "stop"), "choices": []}).encode()
        w.send(_head(200, {**json_head, "Content-Length": str(len(data))}) + data)
        return True
    if b.name in ("cut_stream", "cut_mid_code"):
        data = json.dumps(_completion(req, b.text, None)).encode()
        w.send(_head(200, {**json_head, "Content-Length": str(len(data) + 100), "Connection": "close"})
               + data)
        w.sock.shutdown(socket.SHUT_WR)
        return False
    if b.name == "reset":
        w.send(_head(200, {**json_head, "Content-Length": "1000"}) + b'{"id": "x", "choi')
        _rst(w.sock)
        return False
    if b.name in ("endless", "endless_line"):
        w.send(_head(200, {**json_head, "Connection": "close"}))
        w.send(b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": '
               b'{"role": "assistant", "content": "')
        deadline = time.monotonic() + b.max_s
        filler = (b.text or "a").encode() * (65536 // max(1, len(b.text or "a")))
        while True:
            if time.monotonic() > deadline or w.sent > b.max_bytes:
                raise _Limit()
            w.send(filler)
    raise ValueError(f"faultserver: unknown behaviour {b.name!r}")


def _rst(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
