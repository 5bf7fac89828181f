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
