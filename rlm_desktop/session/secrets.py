"""API keys: the OS keyring only (service ``rlm-desktop``, username = profile id), a key for this
session only, and the documented resolution order. Qt-free; no message ever contains a key.

Resolution order for a profile's key (:func:`resolve_key`):

1. ``RLM_DESKTOP_KEY_<ID>`` — the per-profile environment variable (ID upper-cased, ``-`` → ``_``;
   e.g. ``RLM_DESKTOP_KEY_MYGW``). An explicit variable always wins.
2. ``OPENAI_API_KEY`` — only for profiles whose base URL is OpenAI's own (api.openai.com), so an
   OpenAI key is never sent to another server.
3. The keyring entry ``rlm-desktop`` / ``<profile id>``.
4. A key entered for this session only (kept in memory, gone when the program ends).

When no secure keyring backend exists (``keyring``'s fail or null backend, or a plaintext-file
backend from ``keyrings.alt``), nothing is stored: :func:`keyring_status` says so plainly and the
user is offered the session-only key and the environment variable. Keys are never written to a file
by this module.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rlm_desktop.core.logs import register_secret
from rlm_desktop.core.profiles import ProviderProfile, env_var_for

SERVICE = "rlm-desktop"
KEYRING_TIMEOUT_S = 20.0   # a keyring waiting for an unlock prompt nobody can see must not hang us

T = TypeVar("T")

_session_keys: dict[str, str] = {}
_session_lock = threading.Lock()


class SecretsError(RuntimeError):
    """The keyring could not do what was asked. The message names the profile, never the key."""


class NoKeyringError(SecretsError):
    """No secure keyring backend is available on this system."""


@dataclass(frozen=True, slots=True)
class KeyringStatus:
    available: bool
    backend: str          # e.g. "SecretService Keyring", "fail Keyring"
    message: str          # plain language; for the settings dialog and the CLI


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    key: str | None = field(repr=False)
    source: str | None          # "env:NAME", "keyring", "session" or None
    note: str = ""              # e.g. why the keyring was not consulted

    @property
    def found(self) -> bool:
        return bool(self.key)


# -- helpers --------------------------------------------------------------------------------------

def mask(key: str | None) -> str:
    """A display form that never reveals a short key and shows at most the last 4 characters."""
    if not key:
        return "(no key)"
    if len(key) < 12:
        return "•" * 8
    return "•" * 8 + key[-4:]


def _scrub(text: str, *secrets: str | None) -> str:
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "***")
    return text


def _backend_name(backend: Any) -> str:
    name = getattr(backend, "name", None) or type(backend).__name__
    return str(name)


def _is_insecure(backend: Any) -> str | None:
    """Why ``backend`` is not acceptable for keys (None: fine)."""
    from keyring.backends import fail, null

    if isinstance(backend, fail.Keyring):
        return "no keyring backend was found"
    if isinstance(backend, null.Keyring):
        return "the keyring is switched off (null backend)"
    module = type(backend).__module__ or ""
    if module.startswith("keyrings.alt") or "plaintext" in type(backend).__name__.lower():
        return (f"the only keyring backend found ({_backend_name(backend)}) keeps keys in a file, "
                "which RLM Desktop does not use for secrets")
    return None


def _backend() -> Any:
    """The keyring backend to use, or raise NoKeyringError with a plain explanation."""
    import keyring
    from keyring.backends import chainer

    chosen = keyring.get_keyring()
    if isinstance(chosen, chainer.ChainerBackend):
        candidates = [b for b in chosen.backends if _is_insecure(b) is None]
        if candidates:
            return candidates[0]     # highest priority first
        inner = chosen.backends
        reason = _is_insecure(inner[0]) if inner else "no keyring backend was found"
        raise NoKeyringError(_no_keyring_text(reason or "no keyring backend was found"))
    reason = _is_insecure(chosen)
    if reason:
        raise NoKeyringError(_no_keyring_text(reason))
    return chosen


def _no_keyring_text(reason: str) -> str:
    return (f"No secure keyring is available: {reason}. Keys cannot be saved on this system. Use a "
            "key for this session only, or set the environment variable RLM_DESKTOP_KEY_<ID> "
            "(or OPENAI_API_KEY for OpenAI). On Linux, a Secret Service such as gnome-keyring or "
            "KWallet provides a keyring.")


def _call(fn: Callable[[], T], what: str, profile_id: str, secret: str | None = None) -> T:
    """Run a keyring call in a helper thread with a timeout; wrap every error without the key."""
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            error.append(exc)

    t = threading.Thread(target=target, name="keyring-call", daemon=True)
    t.start()
    t.join(KEYRING_TIMEOUT_S)
    if t.is_alive():
        raise SecretsError(f"the keyring did not answer within {KEYRING_TIMEOUT_S:g} s while trying to "
                           f"{what} for provider {profile_id!r} (it may be locked and waiting for a "
                           "password prompt). Unlock it, or use a session key or RLM_DESKTOP_KEY_<ID>.")
    if error:
        from keyring.errors import NoKeyringError as KrNoKeyring

        exc = error[0]
        if isinstance(exc, KrNoKeyring):
            raise NoKeyringError(_no_keyring_text("no keyring backend was found")) from None
        detail = _scrub(f"{type(exc).__name__}: {exc}", secret)
        raise SecretsError(f"the keyring could not {what} for provider {profile_id!r} ({detail})") from None
    return result[0]


# -- public API -----------------------------------------------------------------------------------

def keyring_status() -> KeyringStatus:
    """Whether keys can be stored, which backend, and a plain sentence for the user."""
    try:
        b = _backend()
    except NoKeyringError as exc:
        import keyring

        return KeyringStatus(False, _backend_name(keyring.get_keyring()), str(exc))
    except Exception as exc:  # noqa: BLE001 - a broken backend is reported, not raised
        return KeyringStatus(False, "unknown", f"The keyring could not be opened ({type(exc).__name__}: "
                             f"{exc}). Use a key for this session only or RLM_DESKTOP_KEY_<ID>.")
    return KeyringStatus(True, _backend_name(b), f"Keys are stored in the system keyring "
                         f"({_backend_name(b)}), service '{SERVICE}', user = the provider id.")


def get_key(profile_id: str) -> str | None:
    """The keyring's key for ``profile_id`` (None when none is stored)."""
    b = _backend()
    value = _call(lambda: b.get_password(SERVICE, profile_id), "read the key", profile_id)
    return value or None


def set_key(profile_id: str, key: str) -> None:
    """Store ``key`` in the keyring (replacing any old one). Raises NoKeyringError / SecretsError."""
    key = key.strip()
    if not key:
        raise SecretsError(f"the key for provider {profile_id!r} is empty: nothing was stored")
    if any(c.isspace() for c in key):
        raise SecretsError(f"the key for provider {profile_id!r} contains spaces or line breaks: "
                           "paste only the key")
    b = _backend()
    _call(lambda: b.set_password(SERVICE, profile_id, key), "store the key", profile_id, key)


def delete_key(profile_id: str) -> bool:
    """Remove the stored key (True if one was there). The session key is cleared too."""
    from keyring.errors import PasswordDeleteError

    clear_session_key(profile_id)
    b = _backend()

    def go() -> bool:
        try:
            b.delete_password(SERVICE, profile_id)
        except PasswordDeleteError:
            return False
        return True
    return _call(go, "delete the key", profile_id)


def set_session_key(profile_id: str, key: str) -> None:
    """Keep ``key`` in memory for this session only (nothing is written anywhere)."""
    key = key.strip()
    if not key:
        raise SecretsError(f"the session key for provider {profile_id!r} is empty")
    with _session_lock:
        _session_keys[profile_id] = key


def get_session_key(profile_id: str) -> str | None:
    with _session_lock:
        return _session_keys.get(profile_id)


def clear_session_key(profile_id: str | None = None) -> None:
    """Forget the session key of ``profile_id`` (all of them when None)."""
    with _session_lock:
        if profile_id is None:
            _session_keys.clear()
        else:
            _session_keys.pop(profile_id, None)


def env_vars_for(profile: ProviderProfile) -> list[str]:
    """The environment variables consulted for ``profile``, in order."""
    names = [env_var_for(profile.id)]
    if profile.is_openai_host:
        names.append("OPENAI_API_KEY")
    return names


def resolve_key(profile: ProviderProfile) -> ResolvedKey:
    """The key to send for ``profile`` following the documented order (see the module docstring).

    A keyring that is missing or fails is not fatal here: the note says why it was skipped, and the
    session key is still consulted. Profiles that need no key resolve to no key.
    """
    resolved = _resolve_key(profile)
    register_secret(resolved.key)      # whatever happens next, it never reaches the log
    return resolved


def _resolve_key(profile: ProviderProfile) -> ResolvedKey:
    if profile.is_demo or not profile.needs_key:
        return ResolvedKey(None, None, "this provider needs no key")
    for name in env_vars_for(profile):
        value = (os.environ.get(name) or "").strip()
        if value:
            return ResolvedKey(value, f"env:{name}")
    note = ""
    try:
        stored = get_key(profile.id)
    except SecretsError as exc:
        stored = None
        note = str(exc)
    if stored:
        return ResolvedKey(stored, "keyring")
    session = get_session_key(profile.id)
    if session:
        return ResolvedKey(session, "session", note)
    return ResolvedKey(None, None, note)


def describe_source(resolved: ResolvedKey) -> str:
    """Plain words for where a key came from (for the dialog and `provider list`)."""
    src = resolved.source
    if src is None:
        return "no key"
    if src.startswith("env:"):
        return f"from the environment variable {src[4:]}"
    if src == "keyring":
        return "stored in the system keyring"
    return "for this session only (not saved)"


# -- the headers of File ▸ Send trace to… (OTLP) ------------------------------------------------------

OTLP_HEADERS_USER = "otlp-headers"     # the keyring username: one JSON object {name: value}


def get_otlp_headers() -> dict[str, str]:
    """The OTLP headers kept in the keyring ({} when none). Every value is registered as a secret."""
    import json

    b = _backend()
    raw = _call(lambda: b.get_password(SERVICE, OTLP_HEADERS_USER), "read the headers", "OTLP export")
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        raise SecretsError("the OTLP headers kept in the keyring are unreadable: enter them again "
                           "and tick Remember") from None
    if not isinstance(doc, dict):
        raise SecretsError("the OTLP headers kept in the keyring are unreadable: enter them again "
                           "and tick Remember")
    headers = {str(k): str(v) for k, v in doc.items()}
    for v in headers.values():
        register_secret(v)
    return headers


def set_otlp_headers(headers: dict[str, str]) -> None:
    """Keep ``headers`` in the keyring (replacing the old ones; empty: forget them)."""
    import json

    for v in headers.values():
        register_secret(v)
    if not headers:
        delete_otlp_headers()
        return
    raw = json.dumps(headers)
    b = _backend()
    _call(lambda: b.set_password(SERVICE, OTLP_HEADERS_USER, raw), "store the headers", "OTLP export", raw)


def delete_otlp_headers() -> bool:
    """Forget the kept OTLP headers (True if some were there)."""
    from keyring.errors import PasswordDeleteError

    b = _backend()

    def go() -> bool:
        try:
            b.delete_password(SERVICE, OTLP_HEADERS_USER)
        except PasswordDeleteError:
            return False
        return True
    return _call(go, "delete the headers", "OTLP export")
