"""Test-wide setup: offscreen Qt, and no test writes outside a temporary directory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# tests/ helpers (the scripted OpenAI-compatible server) importable as `tests.…` and plainly.
_TESTS = Path(__file__).resolve().parent
if str(_TESTS.parent) not in sys.path:
    sys.path.insert(0, str(_TESTS.parent))

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_user_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every per-user location (data, config, cache, QSettings) into a temporary directory."""
    home = tmp_path_factory.mktemp("home")
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state")):
        d = home / sub
        d.mkdir()
        monkeypatch.setenv(var, str(d))
    monkeypatch.setenv("RLM_DESKTOP_HOME", str(home))


@pytest.fixture
def fake_openai():  # noqa: ANN201 - yields tests.fakeserver.FakeOpenAI
    """A started scripted OpenAI-compatible server on 127.0.0.1 (see tests/fakeserver.py)."""
    from tests.fakeserver import FakeOpenAI

    with FakeOpenAI() as server:
        yield server


class MemoryKeyring:
    """A real keyring backend (a ``keyring.backend.KeyringBackend``) that keeps entries in memory."""

    def __new__(cls):  # noqa: ANN204 - built lazily so importing conftest does not import keyring
        from keyring.backend import KeyringBackend
        from keyring.errors import PasswordDeleteError

        class _Memory(KeyringBackend):
            priority = 1  # type: ignore[assignment]

            def __init__(self) -> None:
                super().__init__()
                self.entries: dict[tuple[str, str], str] = {}

            def get_password(self, service: str, username: str) -> str | None:
                return self.entries.get((service, username))

            def set_password(self, service: str, username: str, password: str) -> None:
                self.entries[(service, username)] = password

            def delete_password(self, service: str, username: str) -> None:
                if self.entries.pop((service, username), None) is None:
                    raise PasswordDeleteError(f"no entry for {username!r}")

        return _Memory()


@pytest.fixture(autouse=True)
def memory_keyring(request: pytest.FixtureRequest):  # noqa: ANN201 - yields the backend (or None)
    """No test reaches the user's real keyring: each test gets a fresh in-memory backend and no
    session keys, except tests marked ``keyring_real`` (those start their own Secret Service)."""
    if request.node.get_closest_marker("keyring_real"):
        yield None
        return
    import keyring

    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    secrets_mod = sys.modules.get("rlm_desktop.session.secrets")
    if secrets_mod is not None:
        secrets_mod.clear_session_key()
    yield backend
    if sys.modules.get("rlm_desktop.session.secrets") is not None:
        sys.modules["rlm_desktop.session.secrets"].clear_session_key()
