"""Keys: keyring round trip (in-memory backend), the documented resolution order, no backend,
plaintext backends refused, errors without the key, the session-only key, the masked display."""

from __future__ import annotations

import threading

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail, null

from rlm_desktop.core.profiles import profile_from_preset
from rlm_desktop.session import secrets

KEY = "sk-unit-SECRET-93f0a1c2"


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for name in ("RLM_DESKTOP_KEY_GW", "RLM_DESKTOP_KEY_OA", "RLM_DESKTOP_KEY_MY_GW"):
        monkeypatch.delenv(name, raising=False)


def test_round_trip_uses_service_and_profile_id(memory_keyring: KeyringBackend) -> None:
    assert secrets.keyring_status().available
    secrets.set_key("my-gw", f"  {KEY}\n")
    assert memory_keyring.entries == {("rlm-desktop", "my-gw"): KEY}     # stripped, right names
    assert secrets.get_key("my-gw") == KEY
    assert secrets.delete_key("my-gw") is True
    assert secrets.get_key("my-gw") is None
    assert secrets.delete_key("my-gw") is False


def test_empty_or_multiline_keys_are_refused() -> None:
    with pytest.raises(secrets.SecretsError, match="empty"):
        secrets.set_key("gw", "   ")
    with pytest.raises(secrets.SecretsError, match="line breaks"):
        secrets.set_key("gw", "sk-a\nsk-b")


def test_resolution_order(monkeypatch: pytest.MonkeyPatch) -> None:
    gw = profile_from_preset("custom", "gw", base_url="http://127.0.0.1:1/v1")
    assert not secrets.resolve_key(gw).found
    secrets.set_session_key("gw", "sk-session-key-1234")
    r = secrets.resolve_key(gw)
    assert (r.key, r.source) == ("sk-session-key-1234", "session")
    secrets.set_key("gw", KEY)
    r = secrets.resolve_key(gw)
    assert (r.key, r.source) == (KEY, "keyring")                 # keyring before session
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-env-5678")
    assert secrets.resolve_key(gw).source == "keyring"          # OpenAI's key never goes elsewhere
    monkeypatch.setenv("RLM_DESKTOP_KEY_GW", "sk-profile-env-9999")
    r = secrets.resolve_key(gw)
    assert (r.key, r.source) == ("sk-profile-env-9999", "env:RLM_DESKTOP_KEY_GW")
    oa = profile_from_preset("openai", "oa")
    secrets.set_key("oa", "sk-stored-openai-0000")
    r = secrets.resolve_key(oa)
    assert (r.key, r.source) == ("sk-openai-env-5678", "env:OPENAI_API_KEY")   # env before keyring
    assert "sk-openai-env-5678" not in repr(r)


def test_no_key_needed_resolves_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLM_DESKTOP_KEY_LOCAL", "sk-ignored-000000")
    r = secrets.resolve_key(profile_from_preset("ollama", "local"))
    assert r.key is None and r.source is None


@pytest.mark.parametrize("backend", [fail.Keyring(), null.Keyring()], ids=["fail", "null"])
def test_no_backend_is_said_plainly_and_session_key_still_works(backend: KeyringBackend) -> None:
    keyring.set_keyring(backend)
    status = secrets.keyring_status()
    assert not status.available and "No secure keyring" in status.message
    assert "session" in status.message and "RLM_DESKTOP_KEY_" in status.message
    with pytest.raises(secrets.NoKeyringError):
        secrets.set_key("gw", KEY)
    gw = profile_from_preset("custom", "gw", base_url="http://127.0.0.1:1/v1")
    r = secrets.resolve_key(gw)
    assert not r.found and "No secure keyring" in r.note
    secrets.set_session_key("gw", KEY)
    r = secrets.resolve_key(gw)
    assert r.key == KEY and r.source == "session"
    assert secrets.describe_source(r) == "for this session only (not saved)"


class _FileLike(KeyringBackend):
    """Shaped like keyrings.alt's PlaintextKeyring: a backend that would keep keys in a file."""

    priority = 0.5  # type: ignore[assignment]
    written: list[str] = []

    def get_password(self, service: str, username: str) -> str | None:
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self.written.append(password)

    def delete_password(self, service: str, username: str) -> None:
        return None


_FileLike.__module__ = "keyrings.alt.file"
_FileLike.__name__ = _FileLike.__qualname__ = "PlaintextKeyring"


def test_plaintext_file_backend_is_never_used_silently() -> None:
    keyring.set_keyring(_FileLike())
    status = secrets.keyring_status()
    assert not status.available and "keeps keys in a file" in status.message
    with pytest.raises(secrets.NoKeyringError):
        secrets.set_key("gw", KEY)
    assert _FileLike.written == []


def test_chainer_skips_plaintext_backends(memory_keyring: KeyringBackend) -> None:
    from keyring.backends.chainer import ChainerBackend

    class _Chain(ChainerBackend):
        backends = [_FileLike(), memory_keyring]  # type: ignore[assignment]

    keyring.set_keyring(_Chain())
    secrets.set_key("gw", KEY)
    assert memory_keyring.entries[("rlm-desktop", "gw")] == KEY and _FileLike.written == []


class _Failing(KeyringBackend):
    """A backend whose errors echo the secret (some do): the app's messages must not."""

    priority = 1  # type: ignore[assignment]

    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError("dbus said no")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise RuntimeError(f"cannot store {password!r} for {username}")

    def delete_password(self, service: str, username: str) -> None:
        raise RuntimeError("locked")


def test_keyring_errors_are_wrapped_without_the_key() -> None:
    keyring.set_keyring(_Failing())
    with pytest.raises(secrets.SecretsError) as ei:
        secrets.set_key("gw", KEY)
    text = str(ei.value)
    assert "'gw'" in text and "store the key" in text and KEY not in text
    assert ei.value.__cause__ is None and ei.value.__suppress_context__
    gw = profile_from_preset("custom", "gw", base_url="http://127.0.0.1:1/v1")
    r = secrets.resolve_key(gw)
    assert not r.found and "dbus said no" in r.note


class _Hanging(KeyringBackend):
    """A locked keyring waiting for a prompt nobody answers."""

    priority = 1  # type: ignore[assignment]
    release = threading.Event()

    def get_password(self, service: str, username: str) -> str | None:
        self.release.wait(30)
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self.release.wait(30)

    def delete_password(self, service: str, username: str) -> None:
        self.release.wait(30)


def test_a_hanging_keyring_becomes_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secrets, "KEYRING_TIMEOUT_S", 0.2)
    keyring.set_keyring(_Hanging())
    try:
        with pytest.raises(secrets.SecretsError, match="did not answer"):
            secrets.get_key("gw")
    finally:
        _Hanging.release.set()


def test_mask_never_shows_short_keys_or_more_than_four_chars() -> None:
    assert secrets.mask(None) == "(no key)"
    assert secrets.mask("abc123") == "•" * 8
    m = secrets.mask(KEY)
    assert m.endswith(KEY[-4:]) and KEY[:-4] not in m and len(m) == 12
