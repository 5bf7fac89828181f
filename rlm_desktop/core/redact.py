"""Credentials inside URLs: find them and show such a URL with its secret parts masked.

A base URL may carry a secret in its user info (``https://user:pass@host/v1``), in a query value
(``?api_key=…``, ``?sig=…``) or in a fragment (``#access_token=…``). :func:`mask_url` is how the app
shows or records any URL (stderr, ``--json``, traces, exports, history, the log, dialogs);
:func:`url_secrets` lists the secret parts so the log redaction can scrub them from any text,
exception messages of libraries that echo the URL included. Qt-free, no I/O.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

MASK = "***"

# A parameter is secret when its name, lower-cased and stripped of '-', '_' and '.', contains one
# of these (x-api-key, access_token, X-Amz-Signature, client_secret, …) or is one of the short
# names. "api-version", "model", "format" … contain none of them and stay visible.
_SECRET_PARTS = ("key", "token", "secret", "passw", "pwd", "signature", "credential", "auth",
                 "session", "jwt", "bearer", "apikey")
_SECRET_NAMES = frozenset({"sig", "pass", "pw", "code", "hash", "otp"})
_URL_IN_TEXT = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s"'<>`]+""")


def is_secret_param(name: str) -> bool:
    """Whether a query/fragment parameter named ``name`` holds a secret (``api-version``: no)."""
    n = re.sub(r"[-_.\s]", "", unquote_plus(name)).lower()
    return n in _SECRET_NAMES or any(p in n for p in _SECRET_PARTS)


def _mask_params(text: str) -> tuple[str, list[str]]:
    """``a=1&api_key=s`` -> (``a=1&api_key=***``, [``s``]); other parameters kept byte for byte."""
    out: list[str] = []
    found: list[str] = []
    for part in text.split("&"):
        name, eq, value = part.partition("=")
        if eq and value and is_secret_param(name):
            found.append(value)
            out.append(f"{name}={MASK}")
        else:
            out.append(part)
    return "&".join(out), found


def _split(url: str) -> tuple[str, list[str]]:
    """(masked url, raw secret parts)."""
    try:
        parts = urlsplit(url)
        parts.port            # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return _mask_loose(url)
    secrets: list[str] = []
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        if colon:                        # user:password@ -> the user stays readable
            if password:
                secrets.append(password)
            netloc = f"{user}:{MASK}@{hostport}"
        elif user:                       # token@host: the lone user name is the credential
            secrets.append(user)
            netloc = f"{MASK}@{hostport}"
    query, q_secrets = _mask_params(parts.query)
    fragment, f_secrets = _mask_params(parts.fragment) if "=" in parts.fragment else (parts.fragment, [])
    secrets += q_secrets + f_secrets
    if not secrets:
        return url, []
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment)), secrets


def _mask_loose(url: str) -> tuple[str, list[str]]:
    """A URL urlsplit refuses (e.g. a bad port): mask user info and secret parameters by pattern."""
    secrets: list[str] = []

    def userinfo(m: re.Match[str]) -> str:
        user, colon, password = m.group(2).partition(":")
        if colon:
            secrets.append(password)
            return f"{m.group(1)}{user}:{MASK}@"
        secrets.append(user)
        return f"{m.group(1)}{MASK}@"

    masked = re.sub(r"^([a-zA-Z][a-zA-Z0-9+.\-]*://)([^/?#@]+)@", userinfo, url)
    head, sep, tail = masked.partition("?")
    if sep:
        tail, found = _mask_params(tail)
        secrets += found
    return head + sep + tail, [s for s in secrets if s]


def mask_url(url: str) -> str:
    """``url`` with the password, a lone user name and secret-looking parameter values replaced
    by ``***`` (``https://user:***@host/v1?api_key=***&api-version=2024-06-01``)."""
    return _split(url)[0]


def url_secrets(url: str) -> list[str]:
    """The secret parts of ``url`` as they may appear in text: raw, percent-decoded and
    percent-encoded (empty when it has none)."""
    out: list[str] = []
    for s in _split(url)[1]:
        for form in (s, unquote_plus(s), quote(unquote_plus(s), safe="")):
            if form and form not in out:
                out.append(form)
    return out


def mask_urls_in(text: str) -> str:
    """Every URL inside ``text`` (an error message, a log line) shown through :func:`mask_url`."""
    if "://" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        url = m.group(0)
        core = url.rstrip(".,:;!?)]}")          # sentence punctuation after a URL is not part of it
        return mask_url(core) + url[len(core):]
    return _URL_IN_TEXT.sub(one, text)


def strip_query(url: str) -> tuple[str, dict[str, str]]:
    """(``url`` without its query, the query's parameters): an HTTP client that appends paths to a
    base URL (the openai SDK) must get the parameters apart, or they end up inside the path."""
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    params: dict[str, str] = {}
    for part in parts.query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        params[unquote_plus(name)] = unquote_plus(value)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", parts.fragment)), params


__all__ = ["MASK", "is_secret_param", "mask_url", "mask_urls_in", "strip_query", "url_secrets"]
