"""Model calls: OpenAI-compatible servers through AsyncOpenAI (pooled, own retries), and the demo."""

# One AsyncOpenAI client per provider and event loop (its connection pool is bound to the loop).
# The SDK's own retries are off (max_retries=0): chat() retries itself with backoff that honours
# Retry-After, so every attempt is visible to the caller (on_retry) and cancellable.

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
from openai import AsyncOpenAI, omit

from rlm_desktop.core.config import ProviderConfig
from rlm_desktop.core.endpoints import endpoint_for
from rlm_desktop.core.pricing import cost_usd, lookup

try:   # the HTTP library under the SDK: httpx2 for openai 3.x, httpx for older releases
    import httpx2 as _http
except ImportError:  # pragma: no cover - depends on the installed openai
    import httpx as _http  # type: ignore[no-redef]

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524, 529})
MAX_RETRY_WAIT_S = 60.0      # a Retry-After longer than this is capped (the run's timers still apply)
BASE_BACKOFF_S = 0.5
MAX_BACKOFF_S = 16.0

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
    timeout, connection. The message is plain language and never contains the API key."""

    def __init__(self, message: str, *, kind: str, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.attempts = attempts


# -- client pool ---------------------------------------------------------------------------------

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
        ep = endpoint_for(provider.base_url)
        if ep.azure:
            headers = {**(headers or {}), **ep.key_headers(provider.api_key)}
        client = AsyncOpenAI(
            base_url=ep.base_url,
            default_query=dict(ep.query) or None,
            api_key=provider.api_key or "",
            max_retries=0,
            timeout=provider.request_timeout_s,
            default_headers=headers,  # type: ignore[arg-type]
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
    """Remove the provider's API key from a text (servers sometimes echo it)."""
    key = provider.api_key
    if key and len(key) >= 4:
        text = text.replace(key, "***")
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
}


def _classify(exc: BaseException, provider: ProviderConfig, model: str,
              timeout_s: float) -> tuple[str, int | None, bool, str, float | None]:
    """(kind, status, retryable, message, retry_after) for an attempt's exception."""
    where = provider.name if provider.name == provider.base_url else f"{provider.name} ({provider.base_url})"
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
        reason = scrub(str(cause) if cause else str(exc), provider)
        return ("connection", None, True, f"cannot reach {where}: {reason}", None)
    if isinstance(exc, _http.TimeoutException):
        return ("timeout", None, True, f"{where} did not answer within {timeout_s:g} s (per-call "
                "timeout)", None)
    if isinstance(exc, (_http.TransportError, _http.DecodingError)):
        reason = scrub(str(exc) or type(exc).__name__, provider)
        return ("connection", None, True, f"the connection to {where} broke during the answer: "
                f"{reason}", None)
    return ("server", None, False, scrub(f"{where}: {type(exc).__name__}: {exc}", provider), None)


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


def price_cost(provider: ProviderConfig, model: str, input_tokens: int, output_tokens: int,
               cached_tokens: int) -> tuple[float | None, bool]:
    if provider.is_demo:
        return 0.0, True
    price = lookup(provider.prices, model)
    c = cost_usd(price, input_tokens, output_tokens, cached_tokens)
    return c, c is not None


async def chat(provider: ProviderConfig, model: str, messages: list[dict[str, Any]], *,
               timeout_s: float, on_delta: DeltaHandler | None = None,
               on_retry: RetryHandler | None = None, stream: bool = True) -> ChatResult:
    """One chat completion, streamed, with retries. Raises :class:`ProviderError` when it gives up.

    ``timeout_s`` bounds each attempt (connect + the whole streamed answer). Cancelling the awaiting
    task closes the HTTP request at once.
    """
    if provider.is_demo:
        from rlm_desktop.engine import demo

        return await demo.chat(model, messages, on_delta=on_delta)
    if not model:
        raise ProviderError(f"no model chosen for {provider.name}: set a model (--model, or the "
                            "provider's default model)", kind="bad_request")
    client = client_for(provider)
    # No key, or Azure (its key goes in the api-key header): the SDK must not send Authorization.
    extra_headers = (None if provider.api_key and not endpoint_for(provider.base_url).azure
                     else {"Authorization": omit})
    attempts_allowed = max(1, provider.max_retries + 1)
    attempt = 0
    include_usage = True
    while True:
        attempt += 1
        try:
            async with asyncio.timeout(timeout_s):
                return await _attempt(client, provider, model, messages, extra_headers, timeout_s,
                                      on_delta, stream, attempt, include_usage)
        except asyncio.CancelledError:
            raise
        except (openai.APIError, TimeoutError, _http.TransportError, _http.DecodingError) as exc:
            # (transport errors raised while a streamed body is read are not wrapped by the SDK)
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


def _as_is(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """``messages`` for ``chat.completions.create``, sent as they are: the SDK walks every message
    through its typed-dict transform (~0.15 ms of CPU per message here, so 80% of a call's CPU by
    the 30th iteration), an identity for our role/content dicts of text. ``extra_body`` keys are
    merged over the SDK's body untouched (documented), so the request is the same JSON."""
    return {"messages": [], "extra_body": {"messages": messages}}


async def _attempt(client: AsyncOpenAI, provider: ProviderConfig, model: str,
                   messages: list[dict[str, Any]], extra_headers: dict[str, Any] | None,
                   timeout_s: float, on_delta: DeltaHandler | None, stream: bool,
                   attempt: int, include_usage: bool = True) -> ChatResult:
    if not stream:
        resp = await client.chat.completions.create(
            model=model, **_as_is(messages), timeout=timeout_s,  # type: ignore[arg-type]
            extra_headers=extra_headers)
        choice = resp.choices[0] if resp.choices else None
        text = (choice.message.content if choice else "") or ""
        if on_delta is not None and text:
            on_delta(text)
        return _result(provider, model, text, resp.usage, messages,
                       choice.finish_reason if choice else None, attempt, resp.model)
    parts: list[str] = []
    usage = None
    finish: str | None = None
    served_model = None
    s = await client.chat.completions.create(
        model=model, **_as_is(messages), stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True} if include_usage else omit, timeout=timeout_s,
        extra_headers=extra_headers)
    try:
        async for chunk in s:
            served_model = served_model or chunk.model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices or []:
                delta = choice.delta.content if choice.delta else None
                if delta:
                    parts.append(delta)
                    if on_delta is not None:
                        on_delta(delta)
                if choice.finish_reason:
                    finish = choice.finish_reason
    finally:
        await s.close()
    return _result(provider, model, "".join(parts), usage, messages, finish, attempt, served_model)


def _result(provider: ProviderConfig, model: str, text: str, usage: Any,
            messages: list[dict[str, Any]], finish: str | None, attempt: int,
            served_model: str | None) -> ChatResult:
    if usage is not None and usage.prompt_tokens is not None:
        inp = int(usage.prompt_tokens or 0)
        out = int(usage.completion_tokens or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0) if details is not None else 0
        estimated = False
    else:
        inp = max(1, _messages_chars(messages) // 4)
        out = estimate_tokens(text)
        cached = 0
        estimated = True
    cost, known = price_cost(provider, model, inp, out, cached)
    return ChatResult(text=text, model=served_model or model, input_tokens=inp, output_tokens=out,
                      cached_tokens=cached, cost_usd=cost, cost_known=known, finish_reason=finish,
                      attempts=attempt, tokens_estimated=estimated)
