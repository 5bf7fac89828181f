"""Send a trace to an OTLP/HTTP endpoint (protobuf: what Phoenix, Langfuse, Jaeger and the
OpenTelemetry Collector accept). Qt-free: the CLI's ``export --endpoint`` calls it, and so will the
app's "Send trace to…".

Headers often carry credentials: their values (and a password inside the URL) are registered as
secrets so no log line shows them, and no message of this module repeats them. Redirects are not
followed (they would carry the headers to another place).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from rlm_desktop.core.exporters import otlp_protobuf_batches
from rlm_desktop.core.logs import redact, register_secret
from rlm_desktop.core.trace import Trace

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"
DEFAULT_TIMEOUT_S = 10.0
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")     # an HTTP token (RFC 9110)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class SendError(RuntimeError):
    """The trace could not be sent (or the endpoint refused it); the message says why and what to
    do. ``usage`` is True when the request itself was wrong (a bad URL or header), not the server."""

    def __init__(self, message: str, *, usage: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.usage = usage
        self.status = status


@dataclass(frozen=True, slots=True)
class SendResult:
    endpoint: str              # with any credentials taken out
    requests: int
    spans: int
    rejected_spans: int = 0
    message: str = ""          # the endpoint's partial-success message, if any


def safe_url(url: str) -> str:
    """``url`` without user name and password (safe to print)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def traces_url(endpoint: str) -> str:
    """The URL to POST to: ``endpoint`` as given, or with ``/v1/traces`` added when it names only a
    server (``http://localhost:4318`` → ``http://localhost:4318/v1/traces``), as OTLP exporters do
    with ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
    endpoint = endpoint.strip()
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SendError(f"the endpoint must be an http:// or https:// URL (got {safe_url(endpoint)!r}), "
                        "e.g. http://localhost:4318/v1/traces", usage=True)
    if parts.password:
        register_secret(parts.password)
        register_secret(unquote(parts.password))
    if parts.path in ("", "/"):
        return urlunsplit((parts.scheme, parts.netloc, TRACES_PATH, parts.query, ""))
    return endpoint


def parse_headers(pairs: Sequence[str]) -> dict[str, str]:
    """``["Authorization=Bearer x", …]`` → a dict; each value is registered as a secret. A bad pair
    raises SendError naming the header, never its value."""
    headers: dict[str, str] = {}
    for i, pair in enumerate(pairs, 1):
        name, sep, value = pair.partition("=")
        name = name.strip()
        if sep:
            register_secret(value.strip())
        else:                       # no "=": the whole text may be a credential given without a name
            register_secret(pair.strip())
        if not sep or not _HEADER_NAME.match(name):
            shown = name if sep and _HEADER_NAME.match(name) else f"number {i}"
            raise SendError(f"header {shown} is not NAME=VALUE with an HTTP header name (e.g. "
                            "--header 'Authorization=Bearer …')", usage=True)
        if _CONTROL.search(value):
            raise SendError(f"header {name}: its value holds control characters", usage=True)
        headers[name] = value.strip()
    return headers


def headers_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers from ``OTEL_EXPORTER_OTLP_TRACES_HEADERS`` or ``OTEL_EXPORTER_OTLP_HEADERS``
    (``k1=v1,k2=v2``, values URL-encoded, as the OpenTelemetry SDKs read them): a way to give a
    credential without putting it on the command line, where other users' ``ps`` would see it."""
    env = os.environ if environ is None else environ
    raw = env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
    pairs = [p for p in raw.split(",") if p.strip()]
    for p in pairs:
        register_secret(p.partition("=")[2].strip())
    headers = parse_headers([p.partition("=")[0] + "=" + unquote(p.partition("=")[2]) if "=" in p else p
                             for p in pairs])
    for v in headers.values():
        register_secret(v)
    return headers


def _body_message(body: bytes, content_type: str) -> str:
    """What an error response says, short, without control characters or anything secret."""
    # A protobuf body is a google.rpc.Status; its message is its one long string, readable once the
    # framing bytes are dropped (the text, not the numbers, is what the user needs).
    text = body[:2000].decode("utf-8", "replace")
    if "json" in content_type:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            text = str(doc.get("message") or doc.get("error") or doc.get("detail") or text)
    text = _CONTROL.sub(" ", text).replace("\ufffd", " ")
    text = " ".join(text.split())
    return redact(text[:300] + ("…" if len(text) > 300 else ""))


def send_otlp(trace: Trace, endpoint: str, headers: Mapping[str, str] | None = None, *,
              timeout_s: float = DEFAULT_TIMEOUT_S, max_bytes: int = 3_000_000) -> SendResult:
    """POST ``trace`` as OTLP protobuf to ``endpoint`` (in requests of at most about ``max_bytes``).

    Raises SendError: the endpoint unreachable, too slow, redirecting, or answering 4xx/5xx (with
    what it said). Header values never appear in a message or a log line.
    """
    import httpx2

    url = traces_url(endpoint)
    shown = safe_url(url)
    hdrs = dict(headers or {})
    for v in hdrs.values():
        register_secret(v)
    hdrs["Content-Type"] = "application/x-protobuf"
    parts = urlsplit(url)
    auth = None              # credentials in the URL become Basic auth, unless a header says otherwise
    if (parts.username or parts.password) and not any(k.lower() == "authorization" for k in hdrs):
        auth = httpx2.BasicAuth(unquote(parts.username or ""), unquote(parts.password or ""))
    url = shown
    requests = spans = rejected = 0
    message = ""
    with httpx2.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        for body, n in otlp_protobuf_batches(trace, max_bytes=max_bytes):
            try:
                resp = _post(client, url, body, hdrs, auth)
            except httpx2.TimeoutException:
                raise SendError(f"{shown} did not answer within {timeout_s:g} s; check that the "
                                "collector is running, or give more time with --timeout") from None
            except httpx2.ConnectError as exc:
                raise SendError(f"cannot connect to {shown} ({redact(_reason(exc))}); check the URL and "
                                "that the collector is running") from None
            except httpx2.HTTPError as exc:
                raise SendError(f"sending to {shown} failed: {redact(_reason(exc))}") from None
            ctype = resp.headers.get("content-type", "")
            if 300 <= resp.status_code < 400:
                raise SendError(f"{shown} answered {resp.status_code} (a redirect, not followed so "
                                "the headers go nowhere else); give the final URL "
                                f"({safe_url(resp.headers.get('location', '?'))})",
                                status=resp.status_code)
            if resp.status_code >= 400:
                said = _body_message(resp.content, ctype)
                hint = {401: " (check the authorization header)", 403: " (check the credentials)",
                        404: " (is the path right? OTLP/HTTP traces usually go to /v1/traces)",
                        413: " (the request was too big for it)",
                        415: " (it does not take OTLP protobuf here)"}.get(resp.status_code, "")
                raise SendError(f"{shown} refused the trace: HTTP {resp.status_code}"
                                f"{': ' + said if said else ''}{hint}", status=resp.status_code)
            requests += 1
            spans += n
            got_rejected, got_message = _partial_success(resp.content, ctype)
            rejected += got_rejected
            message = message or got_message
    log.info("sent %d spans in %d requests to %s (%d rejected)", spans, requests, shown, rejected)
    return SendResult(shown, requests, spans, rejected, message)


RETRYABLE = (429, 502, 503, 504)     # the OTLP/HTTP specification's "retryable" answers
RETRIES = 2
MAX_WAIT_S = 5.0


def _post(client: Any, url: str, body: bytes, headers: dict[str, str], auth: Any) -> Any:
    """POST once, and again (at most RETRIES times) after an answer OTLP calls retryable, waiting
    what its Retry-After asks (capped) or a short back-off."""
    for attempt in range(RETRIES + 1):
        resp = client.post(url, content=body, headers=headers, auth=auth)
        if resp.status_code not in RETRYABLE or attempt == RETRIES:
            return resp
        try:
            wait = float(resp.headers.get("retry-after", ""))
        except ValueError:
            wait = 0.5 * 2 ** attempt
        log.info("%s answered %d; retrying in %.1f s", safe_url(url), resp.status_code, min(wait, MAX_WAIT_S))
        time.sleep(max(0.0, min(wait, MAX_WAIT_S)))
    return resp


def _reason(exc: BaseException) -> str:
    """The innermost cause's words (e.g. 'Connection refused')."""
    for _ in range(20):                  # a chain is short; never loop on a cyclic one
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return _CONTROL.sub(" ", str(text))[:200]


def _partial_success(body: bytes, content_type: str) -> tuple[int, str]:
    """(rejected spans, message) of an ExportTraceServiceResponse, when the endpoint sent one."""
    if not body or "protobuf" not in content_type:
        return 0, ""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    try:
        resp = ExportTraceServiceResponse.FromString(body)
    except DecodeError:
        return 0, ""
    ps = resp.partial_success
    return int(ps.rejected_spans), redact(_CONTROL.sub(" ", ps.error_message)[:300])
