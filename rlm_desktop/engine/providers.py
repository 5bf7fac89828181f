"""Model calls: OpenAI-compatible servers through AsyncOpenAI (pooled, own retries), and the demo."""

# One AsyncOpenAI client per provider and event loop (its connection pool is bound to the loop).
# The SDK's own retries are off (max_retries=0): chat() retries itself with backoff that honours
# Retry-After, so every attempt is visible to the caller (on_retry) and cancellable.
# A 200 that is not a usable chat completion (an event stream that is not JSON, JSON of the wrong
# shape, no choices, an HTML page, a stream that stops without its terminator) is a provider fault
# like a 5xx: retried, then reported naming the server. Every reply is bounded: in characters of
# text (max_response_chars) and, below the SDK, in bytes read from the wire (a stream that never
# sends a newline grows the SDK's line buffer without bound), so a runaway server or model cannot
# fill the trace or the memory.

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import functools
import hashlib
import json
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI, omit
from openai.types.chat import ChatCompletion

from rlm_desktop.core.config import ProviderConfig
from rlm_desktop.core.endpoints import endpoint_for
from rlm_desktop.core.pricing import cost_usd, lookup
from rlm_desktop.core.redact import mask_urls_in, url_secrets
from rlm_desktop.engine.sse import EventDecoder

try:   # the HTTP library under the SDK: httpx2 for openai 3.x, httpx for older releases
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
MAX_RETRY_WAIT_S = 60.0      # a Retry-After longer than this is capped (the run's timers still apply)
BASE_BACKOFF_S = 0.5
MAX_BACKOFF_S = 16.0
# A reply longer than this (characters of text) is stopped as a runaway unless the run sets its own
# cap (RunLimits.max_response_chars); the longest real replies are around 100,000 characters.
DEFAULT_MAX_RESPONSE_CHARS = 1_000_000
# Bytes read from the wire per reply: this many per character of the cap, at least the floor. A
# streamed character costs up to ~200 bytes of SSE when tokens are single characters, but the cap
# is far above real replies, so 64 leaves room (64 MB for the default cap).
WIRE_BYTES_PER_CHAR = 64
MIN_WIRE_BYTES = 32_000_000
# How much of a bad body a message quotes.
PREVIEW_CHARS = 120

DeltaHandler = Callable[[str], None]
# (attempt that failed, readable error, seconds until the next attempt)
RetryHandler = Callable[[int, str, float], None]


@dataclass(frozen=True, slots=True)
class ChatResult:
    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float | None          # None: the model's price is unknown
    cost_known: bool
    finish_reason: str | None
    attempts: int
    tokens_estimated: bool = False  # no usage from the server (or the demo): chars / 4


class ProviderError(RuntimeError):
    """A model call failed for good. ``kind``: auth, not_found, bad_request, rate_limit, server,
    timeout, connection, bad_response (a 200 that is not a usable chat completion), cut (a stream
    that ended without its terminator), too_long (the reply passed the response cap). The message
    is plain language and never contains the API key."""

    def __init__(self, message: str, *, kind: str, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.attempts = attempts


class _ReplyFault(Exception):
    """One attempt's answer was unusable although the HTTP exchange worked (see ProviderError)."""

    def __init__(self, kind: str, what: str, *, retryable: bool = True) -> None:
        super().__init__(what)
        self.kind = kind
        self.what = what          # completes "<server> …"
        self.retryable = retryable


class _TooLong(_ReplyFault):
    def __init__(self, what: str) -> None:
        super().__init__("too_long", what, retryable=False)


# -- the wire under the SDK -----------------------------------------------------------------------

class _Wire:
    """What one attempt read from the wire: bytes (capped), the head of the body, ``[DONE]`` seen.

    A streamed attempt feeds it the body it reads itself (see :func:`_read_stream`). A non-streamed
    one sets it in a context variable: the client's response hook then wraps the body stream so
    every byte passes through :meth:`feed`, whatever the SDK does with it."""

    HEAD_BYTES = 512

    def __init__(self, max_bytes: int, *, hooked: bool = False) -> None:
        self.max_bytes = max_bytes
        self.hooked = hooked        # fed by the response hook (the SDK reads the body)
        self.bytes = 0
        self.head = bytearray()
        self.done = False
        self.content_type = ""

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        if len(self.head) < self.HEAD_BYTES:
            self.head += data[:self.HEAD_BYTES - len(self.head)]
        if self.bytes > self.max_bytes:
            raise _TooLong(f"sent more than {_size(self.max_bytes)} for one reply (a runaway or "
                           f"broken stream); it was stopped there and not retried. {RAISE_CAP_HINT}")

    def preview(self) -> str:
        return _preview(bytes(self.head).decode("utf-8", "replace"))


_WIRE: contextvars.ContextVar[_Wire | None] = contextvars.ContextVar("rlm_wire", default=None)


class _WatchedStream(_http.AsyncByteStream):
    def __init__(self, inner: Any, wire: _Wire) -> None:
        self._inner = inner
        self._wire = wire

    async def __aiter__(self) -> Any:
        async for data in self._inner:
            self._wire.feed(data)
            yield data

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _watch_response(response: Any) -> None:
    """httpx response hook: route the body through the attempt's :class:`_Wire` (a non-streamed
    attempt's; a streamed one reads its body itself and needs no extra layer per chunk)."""
    wire = _WIRE.get()
    if wire is None or not wire.hooked:
        return
    wire.content_type = response.headers.get("content-type", "")
    response.stream = _WatchedStream(response.stream, wire)


def _size(n: int) -> str:
    return f"{n / 1_000_000:,.0f} MB" if n >= 1_000_000 else f"{n:,} bytes"


def _preview(text: str) -> str:
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "\ufffd" for c in text)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + "…"


# -- client pool ---------------------------------------------------------------------------------

# How a base URL is spoken to, parsed once per URL rather than on every call (the Endpoint is frozen).
_endpoint = functools.lru_cache(maxsize=64)(endpoint_for)

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, ...], AsyncOpenAI]] = (
    weakref.WeakKeyDictionary())


def _pool_key(provider: ProviderConfig) -> tuple[str, ...]:
    key_digest = hashlib.sha256((provider.api_key or "").encode()).hexdigest()[:16]
    return (provider.id, provider.base_url, key_digest)


def client_for(provider: ProviderConfig) -> AsyncOpenAI:
    """The pooled client of ``provider`` on the running loop (created on first use)."""
    loop = asyncio.get_running_loop()
    pool = _pools.setdefault(loop, {})
    key = _pool_key(provider)
    client = pool.get(key)
    if client is None:
        # api_key="" (not None): the SDK would otherwise read OPENAI_API_KEY from the environment
        # and send it to a server that needs no key. Requests then omit Authorization (see chat()).
        # OPENAI_ORG_ID / OPENAI_PROJECT_ID from the environment belong to OpenAI: never send them
        # to another server.
        headers = None if _is_openai(provider.base_url) else {"OpenAI-Organization": omit,
                                                             "OpenAI-Project": omit}
        # A query in the base URL (Azure's api-version) goes on every request; Azure takes the key
        # as the api-key header instead of Authorization (core/endpoints.py).
        ep = _endpoint(provider.base_url)
        if ep.azure:
            headers = {**(headers or {}), **ep.key_headers(provider.api_key)}
        client = AsyncOpenAI(
            base_url=ep.base_url,
            default_query=dict(ep.query) or None,
            api_key=provider.api_key or "",
            max_retries=0,
            timeout=provider.request_timeout_s,
            default_headers=headers,  # type: ignore[arg-type]
            # The SDK's own defaults, plus a hook that bounds and watches every body (see _Wire).
            http_client=openai.DefaultAsyncHttpxClient(
                timeout=provider.request_timeout_s, event_hooks={"response": [_watch_response]}),
            _enforce_credentials=False,
        )
        pool[key] = client
    return client


def _is_openai(base_url: str) -> bool:
    from urllib.parse import urlsplit

    host = (urlsplit(base_url).hostname or "").lower()
    return host == "openai.com" or host.endswith(".openai.com")


async def aclose_clients() -> None:
    """Close the pooled clients of the running loop (call before the loop ends)."""
    loop = asyncio.get_running_loop()
    pool = _pools.pop(loop, {})
    for client in pool.values():
        await client.close()


# -- errors ---------------------------------------------------------------------------------------

def scrub(text: str, provider: ProviderConfig) -> str:
    """Remove the provider's API key and the credentials inside its base URL from a text (servers
    and HTTP libraries sometimes echo them); any URL in it is shown masked."""
    key = provider.api_key
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    text = mask_urls_in(text)
    for part in sorted(url_secrets(provider.base_url), key=len, reverse=True):
        text = text.replace(part, "***")
    return text


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _backoff(attempt: int) -> float:
    base = min(MAX_BACKOFF_S, BASE_BACKOFF_S * (2 ** (attempt - 1)))
    return base * random.uniform(0.75, 1.25)


# What to do once the retries are spent, per kind of failure (auth/404 messages carry their own).
GIVE_UP_ADVICE = {
    "connection": ". Check that the server is running and reachable, and that the base URL is right.",
    "timeout": ". The server or model may be overloaded: try again, or raise the call timeout.",
    "rate_limit": ". Wait a little, lower the provider's concurrency in Settings, or raise the account's "
                  "rate limit.",
    "server": ". The provider is having trouble: try again later, or pick another model or provider.",
    "bad_response": ". This is not an OpenAI-compatible answer: check that the base URL points at the "
                    "API (it usually ends in /v1) and not at a web page or a proxy's login, or try "
                    "again later.",
    "cut": ". The server or a proxy between you cuts replies short: try again later, raise the "
           "server's or the proxy's time limit, or pick another provider.",
}


def _classify(exc: BaseException, provider: ProviderConfig, model: str,
              timeout_s: float) -> tuple[str, int | None, bool, str, float | None]:
    """(kind, status, retryable, message, retry_after) for an attempt's exception."""
    where = _where(provider)
    if isinstance(exc, _ReplyFault):
        return (exc.kind, None, exc.retryable, scrub(f"{where} {exc.what}", provider), None)
    if isinstance(exc, openai.APIResponseValidationError):
        # e.g. a 200 whose body is not JSON (the SDK checks the content type)
        return ("bad_response", exc.status_code, True, scrub(
            f"{where} answered {exc.status_code} with a body that is not a chat completion "
            f"({_body_preview(exc)})", provider), None)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = scrub(_server_message(exc), provider)
        ra = _retry_after(exc.response.headers if exc.response is not None else None)
        if status == 401:
            return ("auth", status, False, f"{where} rejected the API key (401): {detail}. Check the "
                    "key for this provider (or OPENAI_API_KEY).", None)
        if status == 403:
            return ("auth", status, False, f"{where} refused access (403): {detail}. Check the key's "
                    f"permissions for model {model!r}.", None)
        if status == 404:
            return ("not_found", status, False, f"{where} answered 404 not found: {detail}. Check the "
                    f"base URL and the model name {model!r}.", None)
        if status == 429:
            return ("rate_limit", status, True, f"{where} is rate limiting (429): {detail}", ra)
        if status in RETRYABLE_STATUS or status >= 500:
            return ("server", status, True, f"{where} had a server error ({status}): {detail}", ra)
        return ("bad_request", status, False, f"{where} refused the request ({status}): {detail}", None)
    if isinstance(exc, (openai.APITimeoutError, TimeoutError)):
        return ("timeout", None, True, f"{where} did not answer within {timeout_s:g} s (per-call "
                "timeout)", None)
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        reason = scrub((str(cause) or _plain_name(cause)) if cause else str(exc), provider)
        return ("connection", None, True, f"cannot reach {where}: {reason}", None)
    if isinstance(exc, _http.TimeoutException):
        return ("timeout", None, True, f"{where} did not answer within {timeout_s:g} s (per-call "
                "timeout)", None)
    if isinstance(exc, (_http.TransportError, _http.DecodingError)):
        reason = scrub(str(exc) or _plain_name(exc), provider)
        return ("connection", None, True, f"the connection to {where} broke during the answer: "
                f"{reason}", None)
    if isinstance(exc, openai.APIError):
        # an error event inside a 200 stream ({"error": …} as a data line): the server gave up
        return ("server", None, True, scrub(f"{where} reported an error during the answer: "
                                            f"{exc.message}", provider), None)
    return ("server", None, False, scrub(f"{where}: {type(exc).__name__}: {exc}", provider), None)


def _where(provider: ProviderConfig) -> str:
    """The provider as an error message names it: its name and its URL, credentials masked."""
    shown = provider.shown_url
    return shown if provider.name in (provider.base_url, shown) else f"{provider.name} ({shown})"


def _plain_name(exc: BaseException) -> str:
    """A readable stand-in for an exception without a message (a reset connection has none)."""
    return {"ReadError": "the connection was closed or reset by the server",
            "RemoteProtocolError": "the server broke the HTTP protocol"}.get(
                type(exc).__name__, type(exc).__name__)


def _body_preview(exc: openai.APIResponseValidationError) -> str:
    ctype = exc.response.headers.get("content-type", "no content type")
    try:
        text = exc.response.text
    except (_http.ResponseNotRead, UnicodeDecodeError):
        text = ""
    return f"{ctype}: {_preview(text)}" if text.strip() else ctype


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(exc.message)


# -- the call -------------------------------------------------------------------------------------

def estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _messages_chars(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "")) + 8 for m in messages)


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Input tokens of ``messages`` when the server reports none (characters ÷ 4)."""
    return max(1, _messages_chars(messages) // 4)


def price_cost(provider: ProviderConfig, model: str, input_tokens: int, output_tokens: int,
               cached_tokens: int) -> tuple[float | None, bool]:
    if provider.is_demo:
        return 0.0, True
    price = lookup(provider.prices, model)
    c = cost_usd(price, input_tokens, output_tokens, cached_tokens)
    return c, c is not None


async def chat(provider: ProviderConfig, model: str, messages: list[dict[str, Any]], *,
               timeout_s: float, on_delta: DeltaHandler | None = None,
               on_retry: RetryHandler | None = None, stream: bool = True,
               max_response_chars: int | None = None) -> ChatResult:
    """One chat completion, streamed, with retries. Raises :class:`ProviderError` when it gives up.

    ``timeout_s`` bounds each attempt (connect + the whole streamed answer). Cancelling the awaiting
    task closes the HTTP request at once. ``max_response_chars`` bounds the reply's text (default
    :data:`DEFAULT_MAX_RESPONSE_CHARS`): a longer reply is stopped and not retried. Text passed to
    ``on_delta`` belongs to the current attempt; ``on_retry`` marks the end of a failed one.
    """
    if provider.is_demo:
        from rlm_desktop.engine import demo

        return await demo.chat(model, messages, on_delta=on_delta)
    if not model:
        raise ProviderError(f"no model chosen for {provider.name}: set a model (--model, or the "
                            "provider's default model)", kind="bad_request")
    cap = max_response_chars or DEFAULT_MAX_RESPONSE_CHARS
    client = client_for(provider)
    # No key, or Azure (its key goes in the api-key header): the SDK must not send Authorization.
    extra_headers = (None if provider.api_key and not _endpoint(provider.base_url).azure
                     else {"Authorization": omit})
    attempts_allowed = max(1, provider.max_retries + 1)
    attempt = 0
    include_usage = True
    while True:
        attempt += 1
        wire = _Wire(max(MIN_WIRE_BYTES, WIRE_BYTES_PER_CHAR * cap), hooked=not stream)
        token = _WIRE.set(wire)
        try:
            async with asyncio.timeout(timeout_s):
                return await _attempt(client, provider, model, messages, extra_headers, timeout_s,
                                      on_delta, stream, attempt, include_usage, cap, wire)
        except asyncio.CancelledError:
            raise
        except (openai.APIError, TimeoutError, _http.TransportError, _http.DecodingError,
                _ReplyFault) as exc:
            # (transport errors raised while a streamed body is read come as they are: we read it)
            kind, status, retryable, message, retry_after = _classify(exc, provider, model, timeout_s)
            if kind == "bad_request" and include_usage and "stream_options" in message:
                include_usage = False    # an older server: stream without the usage chunk
                attempts_allowed += 1
                continue
            if not retryable or attempt >= attempts_allowed:
                suffix = f" (gave up after {attempt} attempts)" if attempt > 1 else ""
                advice = GIVE_UP_ADVICE.get(kind, "") if retryable else ""
                raise ProviderError(message + suffix + advice, kind=kind, status=status,
                                    attempts=attempt) from None
            wait = min(MAX_RETRY_WAIT_S, retry_after) if retry_after is not None else _backoff(attempt)
            if on_retry is not None:
                on_retry(attempt, message, wait)
            await asyncio.sleep(wait)
        finally:
            _WIRE.reset(token)


RAISE_CAP_HINT = ("If replies this long are expected, raise the cap: --max-response-chars on the "
                  "command line, or \"Longest model reply\" in Settings → Limits")


def _too_long_message(cap: int) -> str:
    # Not retried: a runaway reply (a model looping, a server that never ends the stream) usually
    # repeats, and every try is billed up to the cap.
    return (f"sent a reply longer than {cap:,} characters, the cap for one reply; it was stopped "
            f"there and not retried (a runaway reply usually repeats, and each try is billed). "
            f"{RAISE_CAP_HINT}")


def _as_is(model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """``model`` and ``messages`` for ``chat.completions.create``, sent as they are: the SDK walks
    every message through its typed-dict transform (~0.15 ms of CPU per message here, so 80% of a
    call's CPU by the 30th iteration), an identity for our role/content dicts of text, and checks
    the model name against its union with a Literal of every OpenAI model name (~65 µs a request,
    hashing that Literal in its caches), an identity for a string. ``extra_body`` keys are merged
    over the SDK's body untouched (documented), so the request is the same JSON; the SDK leaves out
    an ``omit`` argument."""
    return {"model": omit, "messages": [], "extra_body": {"model": model, "messages": messages}}


async def _attempt(client: AsyncOpenAI, provider: ProviderConfig, model: str,
                   messages: list[dict[str, Any]], extra_headers: dict[str, Any] | None,
                   timeout_s: float, on_delta: DeltaHandler | None, stream: bool,
                   attempt: int, include_usage: bool, cap: int, wire: _Wire) -> ChatResult:
    if not stream:
        try:
            resp = await client.chat.completions.create(
                **_as_is(model, messages), timeout=timeout_s,  # type: ignore[arg-type]
                extra_headers=extra_headers)
        except ValueError:
            # the SDK parses a JSON content type with json.loads and lets the error through
            raise _ReplyFault("bad_response", "answered with a body that is not valid JSON "
                                              f"({wire.content_type or 'no content type'}: "
                                              f"{wire.preview()})") from None
        text, finish = _completion_text(resp, wire)
        if len(text) > cap:
            raise _TooLong(_too_long_message(cap))
        if on_delta is not None and text:
            on_delta(text)
        return _result(provider, model, text, getattr(resp, "usage", None), messages, finish, attempt,
                       getattr(resp, "model", None))
    async with client.chat.completions.with_streaming_response.create(
            **_as_is(model, messages), stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True} if include_usage else omit, timeout=timeout_s,
            extra_headers=extra_headers) as raw:
        return await _read_stream(raw.http_response, provider, model, messages, on_delta, attempt,
                                  cap, wire)


# Reading on after [DONE] lets an HTTP/1.1 connection be reused (the end of the chunked body
# usually arrives with it); a server that sends nothing more is left after this long (the SDK's).
DRAIN_AFTER_DONE_S = 0.1


async def _read_stream(response: Any, provider: ProviderConfig, model: str,
                       messages: list[dict[str, Any]], on_delta: DeltaHandler | None, attempt: int,
                       cap: int, wire: _Wire) -> ChatResult:
    """The reply of a streamed attempt, read from the HTTP response the SDK opened (status already
    checked by the SDK): server-sent events (engine/sse.py) whose data are JSON chunks, handled as
    plain dicts."""
    wire.content_type = response.headers.get("content-type", "")
    decoder = EventDecoder()
    parts: list[str] = []
    size = 0
    usage = None
    finish: str | None = None
    served_model = None
    choices_seen = False
    chunks = 0
    # A compressed body is decoded by httpx (aiter_bytes); a plain one is read as it comes off the
    # wire (aiter_raw: the same bytes without the decoder and chunker layer per piece).
    encoding = response.headers.get("content-encoding", "").strip().lower()
    body = response.aiter_raw() if encoding in ("", "identity") else response.aiter_bytes()
    try:
        async for piece in body:
            wire.feed(piece)
            for data in decoder.feed(piece):
                if data.startswith("[DONE]"):
                    wire.done = True
                    break
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise _ReplyFault("bad_response", _malformed_what(exc)) from None
                chunks += 1
                delta, chunk_finish, has_choices, chunk_usage, chunk_model = _chunk_parts(chunk)
                choices_seen = choices_seen or has_choices
                served_model = served_model or chunk_model
                if chunk_usage is not None:
                    usage = chunk_usage
                if delta:
                    if size + len(delta) > cap:
                        keep = delta[:cap - size]
                        if keep and on_delta is not None:
                            on_delta(keep)
                        raise _TooLong(_too_long_message(cap))
                    size += len(delta)
                    parts.append(delta)
                    if on_delta is not None:
                        on_delta(delta)
                if chunk_finish:
                    finish = chunk_finish
            if wire.done:
                await _drain(body)
                break
            if decoder.error is not None:
                raise _ReplyFault("bad_response", "sent an event stream that is not UTF-8 text "
                                                  "(malformed server-sent events)")
        else:
            decoder.finish()
    finally:
        await body.aclose()
    wire.done = wire.done or decoder.done
    ctype = wire.content_type.split(";")[0].strip().lower() or "no content type"
    if not chunks and ctype != "text/event-stream":
        # e.g. an HTML page with status 200: the SSE decoder finds no events in it (a stream with
        # events is judged by its events, whatever its content type says)
        raise _ReplyFault("bad_response", f"answered 200 with {ctype} instead of an event stream "
                                          f"({wire.preview()})")
    if not chunks:
        raise _ReplyFault("bad_response", "sent an event stream with no events in it"
                                          + (f" ({wire.preview()})" if wire.head.strip() else ""))
    if not choices_seen:
        raise _ReplyFault("bad_response", "sent an event stream without any choices (no reply text "
                                          "at all)" + ("" if wire.done else ", and no [DONE]"))
    if finish is None and not wire.done:
        raise _ReplyFault("cut", f"stopped the reply after {size:,} characters without finishing it "
                                 "(no finish_reason, no [DONE]): the reply was cut short and is not "
                                 "used")
    return _result(provider, model, "".join(parts), usage, messages, finish, attempt, served_model)


async def _drain(body: Any) -> None:
    """Read what follows [DONE] (normally just the end of the body) for a little while, ignoring
    it and any error: the reply is complete."""
    try:
        async with asyncio.timeout(DRAIN_AFTER_DONE_S):
            async for _ in body:
                pass
    except (TimeoutError, _http.TransportError, _http.DecodingError):
        pass


def _malformed_what(exc: ValueError) -> str:
    doc = exc.doc if isinstance(exc, json.JSONDecodeError) else ""
    if not doc.strip():
        return "sent an event without data where a JSON chunk belongs (malformed server-sent events)"
    return f"sent an event stream with a data line that is not JSON: {_preview(doc)!r}"


def _chunk_parts(chunk: Any) -> tuple[str, str | None, bool, Any, str | None]:
    """(text delta, finish_reason, carried choices, usage, model) of one stream chunk (a JSON
    value), checking its shape. The checks are the ones made when the SDK built the chunks (it
    does not validate them): a choice that is not an object carries nothing, a delta that is not
    an object or text that is not a string is a wrong shape."""
    if not isinstance(chunk, dict):
        raise _ReplyFault("bad_response", "sent an event that is not a chat completion chunk: "
                                          f"{_preview(json.dumps(chunk, default=str))!r}")
    error = chunk.get("error")
    if error:
        # how some servers give up in the middle of a 200 stream (the SDK raised APIError for it)
        message = error.get("message") if isinstance(error, dict) else None
        if not message or not isinstance(message, str):
            message = "An error occurred during streaming"
        raise _ReplyFault("server", f"reported an error during the answer: {message}")
    raw = chunk.get("choices")
    if not isinstance(raw, list):
        raise _ReplyFault("bad_response", "sent a chunk without a list of choices: "
                                          f"{_preview(json.dumps(chunk, default=str))!r}")
    text = ""
    finish = None
    for choice in raw:
        if not isinstance(choice, dict):
            continue    # nothing in it (as before: an attribute lookup on it found nothing)
        if choice.get("index", 0) not in (0, None):
            continue    # only the first choice is the reply (n=1); others would interleave with it
        delta = choice.get("delta")
        content = delta.get("content") if isinstance(delta, dict) else None
        reason = choice.get("finish_reason")
        if (delta is not None and not isinstance(delta, dict)) or not (
                content is None or isinstance(content, str)) or not (
                reason is None or isinstance(reason, str)):
            raise _ReplyFault("bad_response", "sent a chunk whose choice is not a chat delta: "
                                              f"{_preview(json.dumps(chunk, default=str))!r}")
        if content:
            text += content
        finish = reason or finish
    model = chunk.get("model")
    return text, finish, bool(raw), chunk.get("usage"), model if isinstance(model, str) else None


def _usage_tokens(usage: Any) -> tuple[int, int, int] | None:
    """(input, output, cached) tokens of a usage object (a dict from a stream, the SDK's model from
    a non-streamed reply); None when absent or not numbers (then the caller estimates them)."""
    if usage is None:
        return None
    if isinstance(usage, dict):
        inp = usage.get("prompt_tokens")
        out = usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
    else:
        inp = getattr(usage, "prompt_tokens", None)
        out = getattr(usage, "completion_tokens", None)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = getattr(details, "cached_tokens", None) if details is not None else None
    if not isinstance(inp, int) or not isinstance(out or 0, int) or not isinstance(cached or 0, int):
        return None
    return max(0, inp), max(0, out or 0), max(0, cached or 0)


def _completion_text(resp: Any, wire: _Wire) -> tuple[str, str | None]:
    """(text, finish_reason) of a non-streamed reply, checking its shape."""
    if not isinstance(resp, ChatCompletion):
        raise _ReplyFault("bad_response", "answered with a body that is not a chat completion "
                                          f"({wire.content_type or 'no content type'}: {wire.preview()})")
    choices = getattr(resp, "choices", None)
    error = getattr(resp, "error", None)
    if not choices and isinstance(error, dict) and error.get("message"):
        # some servers give up with status 200 and an OpenAI-style error body
        raise _ReplyFault("server", f"reported an error: {_preview(str(error['message']))}")
    if not isinstance(choices, list):
        raise _ReplyFault("bad_response", "answered without a list of choices: "
                                          f"{_preview(_dump(resp))!r}")
    if not choices:
        raise _ReplyFault("bad_response", "answered with no choices (no reply text at all)")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if message is None or not (content is None or isinstance(content, str)):
        raise _ReplyFault("bad_response", "answered with a choice that is not a chat message: "
                                          f"{_preview(_dump(resp))!r}")
    return content or "", getattr(choices[0], "finish_reason", None)


def _dump(model: Any) -> str:
    try:
        return json.dumps(model.model_dump(mode="json", exclude_unset=True, warnings=False), default=str)
    except (TypeError, ValueError, AttributeError):
        return repr(model)


def _result(provider: ProviderConfig, model: str, text: str, usage: Any,
            messages: list[dict[str, Any]], finish: str | None, attempt: int,
            served_model: str | None) -> ChatResult:
    counted = _usage_tokens(usage)
    if counted is not None:
        inp, out, cached = counted
        estimated = False
    else:
        inp = estimate_prompt_tokens(messages)
        out = estimate_tokens(text)
        cached = 0
        estimated = True
    cost, known = price_cost(provider, model, inp, out, cached)
    served = served_model if isinstance(served_model, str) and served_model else model
    return ChatResult(text=text, model=served, input_tokens=inp, output_tokens=out,
                      cached_tokens=cached, cost_usd=cost, cost_known=known, finish_reason=finish,
                      attempts=attempt, tokens_estimated=estimated)
