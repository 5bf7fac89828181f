"""A local OTLP/HTTP trace receiver on 127.0.0.1 for tests: decodes each POST to /v1/traces with
the OpenTelemetry project's own protobuf classes (``opentelemetry-proto``), as a collector does.

Usage::

    with OtlpReceiver() as rx:
        ... send to rx.url ...
        rx.spans                   # every received Span (protobuf objects), in arrival order
        rx.requests[0].headers     # what came with each request
        rx.fail = (503, b"queue full", "text/plain")    # answer the next requests with this
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    request: ExportTraceServiceRequest | None


class OtlpReceiver:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.fail: tuple[int, bytes, str] | None = None
        self.fail_times: int | None = None      # answer ``fail`` only this many times, then accept
        self.rejected_spans = 0          # > 0: answer 200 with a partial success
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spans(self) -> list[Any]:
        out = []
        for r in self.requests:
            if r.request is None:
                continue
            for rs in r.request.resource_spans:
                for ss in rs.scope_spans:
                    out.extend(ss.spans)
        return out


def _handler(rx: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            req = None
            if self.headers.get("Content-Type") == "application/x-protobuf":
                req = ExportTraceServiceRequest.FromString(body)
            with rx._lock:
                rx.requests.append(Received(self.path, dict(self.headers.items()), body, req))
            if rx.fail is not None and (rx.fail_times is None or rx.fail_times > 0):
                if rx.fail_times is not None:
                    rx.fail_times -= 1
                status, payload, ctype = rx.fail
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if self.path != "/v1/traces" or req is None:
                self._answer(404 if self.path != "/v1/traces" else 415, b"not an OTLP trace request",
                             "text/plain")
                return
            resp = ExportTraceServiceResponse()
            if rx.rejected_spans:
                resp.partial_success.rejected_spans = rx.rejected_spans
                resp.partial_success.error_message = "some spans were too old"
            self._answer(200, resp.SerializeToString(), "application/x-protobuf")

        def _answer(self, status: int, payload: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return H
