"""Fetch a server's model list and test a connection (Qt-free, async, httpx2), with outcomes in
plain language: bad key (401/403), wrong URL (404), refused, timeout, TLS, unknown host. Testing
proves the key: where the model list answers without one, a 1-token completion is asked for."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2

from rlm_desktop.core.endpoints import endpoint_for
from rlm_desktop.core.logs import register_secret
from rlm_desktop.core.profiles import ProviderProfile
from rlm_desktop.core.redact import mask_url, mask_urls_in

DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ConnectionResult:
    """Outcome of a check. ``kind``: ok, no_key, invalid, auth, not_found, refused, timeout, tls, dns,
    http, bad_response, network. ``message`` is for people and never contains the key."""

    ok: bool
    kind: str
    message: str
    status: int | None = None
    models: tuple[str, ...] = ()
    url: str = ""

    def __post_init__(self) -> None:
        # Whatever built it, a result shown to people never carries a URL's credentials.
        object.__setattr__(self, "message", mask_urls_in(self.message))
        object.__setattr__(self, "url", mask_url(self.url))


def _scrub(text: str, key: str | None) -> str:
    if key and len(key) >= 4:
        text = text.replace(key, "***")
    return text


def _models_url(profile: ProviderProfile) -> str:
    return endpoint_for(profile.base_url).url("models")


def _native_url(profile: ProviderProfile) -> str | None:
    """The server's own model list (Ollama: /api/tags at the server root, beside /v1)."""
    path = profile.native_models_path
    if not path:
        return None
    parts = urlsplit(profile.base_url)
    root = parts.path.rstrip("/")
    if root.endswith("/v1"):
        root = root[:-3]
    return urlunsplit((parts.scheme, parts.netloc, root + path, "", ""))


def _headers(profile: ProviderProfile, key: str | None) -> dict[str, str]:
    h = {"Accept": "application/json", "User-Agent": "rlm-desktop"}
    if profile.needs_key and key:
        h.update(endpoint_for(profile.base_url).key_headers(key))
    return h


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def classify_error(exc: BaseException, url: str, timeout_s: float, key: str | None = None) -> ConnectionResult:
    """A transport exception as a plain-language result."""
    chain = _chain(exc)
    text = _scrub(" ".join(str(e) for e in chain if str(e)), key)
    host = urlsplit(url).netloc or url
    if any(isinstance(e, ssl.SSLError) for e in chain) or "SSL" in text or "CERTIFICATE" in text.upper():
        detail = "certificate not trusted" if "CERTIFICATE" in text.upper() else "TLS handshake failed"
        return ConnectionResult(False, "tls", f"TLS error talking to {host} ({detail}): check that the URL "
                                "uses https:// only if the server speaks HTTPS (local servers usually use "
                                "http://), and that its certificate is valid.", url=url)
    if isinstance(exc, httpx2.TimeoutException) or any(isinstance(e, TimeoutError) for e in chain):
        return ConnectionResult(False, "timeout", f"{host} did not answer within {timeout_s:g} s: the server "
                                "may be overloaded, or a firewall drops the traffic.", url=url)
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in text.lower():
        return ConnectionResult(False, "refused", f"Connection refused by {host}: nothing is listening "
                                "there. Is the server running, and is the port right?", url=url)
    if any(isinstance(e, socket.gaierror) for e in chain) or "name or service not known" in text.lower():
        return ConnectionResult(False, "dns", f"The host name in {url} could not be found: check the "
                                "spelling of the base URL and the network connection.", url=url)
    return ConnectionResult(False, "network", f"Could not reach {host}: {type(exc).__name__}: "
                            f"{text or 'no details'}", url=url)


def _server_said(resp: Any, key: str | None) -> str:
    """`` (server said: …)`` from an error response's message (key scrubbed), or ""."""
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        detail = str(err.get("message") if isinstance(err, dict) else err)[:200]
    except ValueError:
        detail = resp.text[:200].strip()
    detail = _scrub(detail, key)
    return f" (server said: {detail})" if detail else ""


def _status_result(resp: Any, url: str, profile: ProviderProfile, key: str | None) -> ConnectionResult:
    status = resp.status_code
    suffix = _server_said(resp, key)
    if status in (401, 403):
        if not profile.needs_key:
            msg = (f"The server refused the request ({status}): it wants a key, but this profile is set to "
                   "send none. Tick 'needs a key' and store the key.")
        elif status == 401:
            msg = (f"Bad key: the server rejected the API key (401){suffix}. Replace the key for "
                   f"provider {profile.id!r}.")
        else:
            msg = f"The key was accepted but has no access here (403){suffix}. Check its permissions."
        return ConnectionResult(False, "auth", msg, status=status, url=url)
    if status == 404:
        return ConnectionResult(False, "not_found", f"Wrong URL: {url} was not found (404). Check the "
                                "base URL; for most servers it ends in /v1.", status=status, url=url)
    return ConnectionResult(False, "http", f"The server answered {status} at {url}{suffix}.",
                            status=status, url=url)


async def _get_json(client: httpx2.AsyncClient, url: str, profile: ProviderProfile, key: str | None,
                    timeout_s: float) -> tuple[Any, ConnectionResult | None]:
    try:
        resp = await client.get(url, headers=_headers(profile, key))
    except httpx2.HTTPError as exc:
        return None, classify_error(exc, url, timeout_s, key)
    except (OSError, ssl.SSLError) as exc:
        return None, classify_error(exc, url, timeout_s, key)
    if resp.status_code != 200:
        return None, _status_result(resp, url, profile, key)
    try:
        return resp.json(), None
    except ValueError:
        return None, ConnectionResult(False, "bad_response", f"{url} answered, but not with JSON: is this "
                                      "an OpenAI-compatible server?", status=200, url=url)


def _model_ids(body: Any, native: bool) -> list[str] | None:
    items = body.get("models" if native else "data") if isinstance(body, dict) else None
    if not isinstance(items, list):
        return None
    out: list[str] = []
    for it in items:
        if isinstance(it, dict):
            name = it.get("name") or it.get("model") or it.get("id") if native else it.get("id")
            if name:
                out.append(str(name))
    return out


def _precheck(profile: ProviderProfile, key: str | None) -> ConnectionResult | None:
    if profile.is_demo:
        return ConnectionResult(True, "ok", "The offline demo needs no connection.",
                                models=tuple(profile.models))
    parts = urlsplit(profile.base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ConnectionResult(False, "invalid", f"The base URL {mask_url(profile.base_url)!r} is not an http:// or "
                                "https:// address.")
    if profile.needs_key and not key:
        return ConnectionResult(False, "no_key", f"No key for provider {profile.id!r}: paste one under API "
                                "key in Settings and press Save key, or set the environment variable first.")
    return None


async def fetch_models(profile: ProviderProfile, key: str | None, *,
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> ConnectionResult:
    """The server's models (``/models`` under the base URL; for Ollama also its native ``/api/tags``)."""
    register_secret(key)
    pre = _precheck(profile, key)
    if pre is not None:
        return pre
    url = _models_url(profile)
    native_url = _native_url(profile)
    async with httpx2.AsyncClient(timeout=timeout_s, follow_redirects=True) as client:
        body, err = await _get_json(client, url, profile, key, timeout_s)
        models = _model_ids(body, native=False) if err is None else None
        if err is None and models is None:
            err = ConnectionResult(False, "bad_response", f"{url} answered without a model list (no "
                                   "'data' array): is this an OpenAI-compatible server?", status=200, url=url)
        native: list[str] | None = None
        native_err: ConnectionResult | None = None
        if native_url and (err is None or err.kind in ("not_found", "bad_response", "http")):
            nbody, native_err = await _get_json(client, native_url, profile, key, timeout_s)
            native = _model_ids(nbody, native=True) if native_err is None else None
    if models is None and native is None:
        assert err is not None
        if native_err is not None and err.kind in ("not_found", "bad_response", "http"):
            return ConnectionResult(False, err.kind, f"{err.message} The native list at {native_url} "
                                    f"failed too: {native_err.message}", status=err.status, url=url)
        return err
    merged: list[str] = []
    for m in (models or []) + (native or []):
        if m not in merged:
            merged.append(m)
    where = url if models is not None else native_url or url
    n = len(merged)
    msg = (f"{n} model{'s' if n != 1 else ''} found at {where}." if n else
           f"The server at {where} answered but lists no models" +
           (" (pull one with `ollama pull NAME`)." if native_url else "."))
    return ConnectionResult(True, "ok", msg, status=200, models=tuple(merged), url=where)


async def test_connection(profile: ProviderProfile, key: str | None, *,
                          timeout_s: float = DEFAULT_TIMEOUT_S) -> ConnectionResult:
    """Reach the server with the key and say, in plain words, whether it works.

    A model list fetched with the key proves the key only when the list refuses requests without
    one. Many servers list their models to anyone (OpenRouter, gateways, vLLM with --api-key), so
    then a minimal completion (max_tokens=1) with the chosen model is asked for: a wrong key is
    "key rejected" there. Azure's deployment URLs have no model list: the completion alone tests."""
    ep = endpoint_for(profile.base_url)
    deployment_url = ep.azure and "/deployments/" in ep.base_url
    if deployment_url and not profile.is_demo:
        pre = _precheck(profile, key)
        if pre is not None:
            return pre
        res = ConnectionResult(True, "ok", "", url=ep.base_url)
    else:
        res = await fetch_models(profile, key, timeout_s=timeout_s)
        if not res.ok or profile.is_demo:
            return res
    name = profile.name or profile.id
    n = len(res.models)
    listed = "" if deployment_url else f"the server answered and lists {n} model{'s' if n != 1 else ''}"
    msg = f"Connected to {name}: {listed}." if listed else f"Connected to {name}."
    missing = [m for m in dict.fromkeys((profile.root_model, profile.sub_model)) if m and res.models
               and m not in res.models]
    if profile.needs_key and key:
        async with httpx2.AsyncClient(timeout=timeout_s, follow_redirects=True) as client:
            proven = (not deployment_url) and await _list_refused_without_key(client, profile, timeout_s)
            if proven:
                msg += " The key works (the model list refuses requests without it)."
            else:
                model = profile.root_model or profile.sub_model or (res.models[0] if res.models else "")
                if not model:
                    msg += (" The key is not proven yet: the server lists models without a key; choose a "
                            "model and test again (a 1-token test reply proves the key).")
                else:
                    probe = await _probe_completion(client, profile, key, model, timeout_s)
                    if not probe.ok:
                        return probe
                    msg += " " + probe.message
    if missing:
        msg += f" Note: {', '.join(repr(m) for m in missing)} is not among them; check the model names."
    return ConnectionResult(True, "ok", msg, status=res.status or 200, models=res.models, url=res.url)


async def _list_refused_without_key(client: httpx2.AsyncClient, profile: ProviderProfile,
                                    timeout_s: float) -> bool:
    """Whether the model list answers 401/403 to a request that carries no key."""
    try:
        resp = await client.get(_models_url(profile), headers={"Accept": "application/json",
                                                               "User-Agent": "rlm-desktop"})
    except (httpx2.HTTPError, OSError, ssl.SSLError):
        return False
    return resp.status_code in (401, 403)


async def _probe_completion(client: httpx2.AsyncClient, profile: ProviderProfile, key: str, model: str,
                            timeout_s: float) -> ConnectionResult:
    """A 1-token completion with ``model``: proves (or rejects) the key."""
    ep = endpoint_for(profile.base_url)
    url = ep.url("chat/completions")
    body = {"model": model, "messages": [{"role": "user", "content": "Reply with OK."}], "max_tokens": 1,
            "stream": False}
    try:
        resp = await client.post(url, json=body, headers={**_headers(profile, key),
                                                          "Content-Type": "application/json"})
    except (httpx2.HTTPError, OSError, ssl.SSLError) as exc:
        return classify_error(exc, url, timeout_s, key)
    status = resp.status_code
    shown = ep.base_url + "/chat/completions"
    if status == 200:
        return ConnectionResult(True, "ok", f"The key works (a 1-token test reply from {model}).",
                                status=200, url=shown)
    suffix = _server_said(resp, key)
    if status in (401, 403):
        why = ("the server refused the API key" if status == 401 else
               "the key is not allowed to use this model or server")
        return ConnectionResult(False, "auth", f"Key rejected ({status}): {why} on a 1-token test "
                                f"completion with {model}{suffix}, although the model list answered. "
                                f"Replace the key for provider {profile.id!r}.", status=status, url=shown)
    if status == 429:
        return ConnectionResult(True, "ok", f"The key was accepted, but the server is rate-limiting it or "
                                f"its quota is used up (429){suffix}.", status=status, url=shown)
    if status in (400, 404, 422):
        return ConnectionResult(True, "ok", f"The key was not rejected, but a 1-token test completion with "
                                f"{model} failed ({status}){suffix}: check the model name.",
                                status=status, url=shown)
    return ConnectionResult(False, "http", f"The model list answered, but a 1-token test completion with "
                            f"{model} got {status} at {shown}{suffix}; the key could not be checked.",
                            status=status, url=shown)


test_connection.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported
