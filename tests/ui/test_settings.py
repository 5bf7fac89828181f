"""Typed preferences: profiles, limits, choices, key resolution in provider_config, the file never
holding a key, the v0 → v1 upgrade, bad stored values, and where the file lives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from PySide6.QtCore import QSettings

from rlm_desktop.core.config import ModelPrice, RunLimits, SandboxLimits
from rlm_desktop.core.profiles import ProfileError, profile_from_preset
from rlm_desktop.engine.demo import DEMO_PROVIDER
from rlm_desktop.session import secrets
from rlm_desktop.ui.settings import (
    SCHEMA_VERSION,
    MissingKeyError,
    Settings,
    SettingsError,
    UnknownProfileError,
    preferences_path,
)

KEY = "sk-settings-SECRET-7c2e55aa"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RLM_DESKTOP_KEY_MYGW", raising=False)


def _gw(pid: str = "mygw", **kw: object):  # noqa: ANN202
    return profile_from_preset("custom", pid, base_url="http://127.0.0.1:1/v1", root_model="r",
                               sub_model="s").with_changes(**kw)


def test_file_lives_in_the_test_config_dir_never_the_real_one(monkeypatch: pytest.MonkeyPatch) -> None:
    real = Path.home() / ".config"
    s = Settings()
    assert s.path == Path(os.environ["RLM_DESKTOP_HOME"]) / "config" / "rlm-desktop" / "preferences.ini"
    monkeypatch.delenv("RLM_DESKTOP_HOME")
    p = preferences_path()
    assert p == Path(os.environ["XDG_CONFIG_HOME"]) / "rlm-desktop" / "preferences.ini"
    assert not p.is_relative_to(real) or Path(os.environ["XDG_CONFIG_HOME"]).is_relative_to(real)
    Settings().set_memo_cache(False)
    assert p.exists() and "XDG_CONFIG_HOME" in os.environ


def test_first_run_has_only_the_demo_selected() -> None:
    s = Settings()
    assert [p.id for p in s.providers()] == ["demo"] and not s.has_real_provider()
    assert s.last_root_choice() == ("demo", DEMO_PROVIDER.root_model)
    assert s.last_sub_choice() == ("demo", DEMO_PROVIDER.sub_model)
    assert s.provider_config("demo") is DEMO_PROVIDER
    assert s.schema_version == SCHEMA_VERSION and s.notices == []


def test_profiles_saved_in_order_demo_first_and_reloaded() -> None:
    s = Settings()
    a = _gw("a", prices={"r": ModelPrice(1, 2, 0.5)}, context_windows={"r": 32000})
    s.save_profile(a)
    s.save_profile(profile_from_preset("ollama", "local", root_model="llama3.1"))
    again = Settings()
    assert [p.id for p in again.providers()] == ["demo", "a", "local"] and again.has_real_provider()
    assert again.profile("a") == a
    with pytest.raises(ProfileError, match="already exists"):
        again.add_profile(_gw("local"))
    with pytest.raises(ProfileError, match="reserved"):
        again.add_profile(_gw("demo"))
    with pytest.raises(SettingsError, match="cannot be removed"):
        again.remove_profile("demo")


def test_rename_keeps_position_and_choice() -> None:
    s = Settings()
    s.save_profile(_gw("a"))
    s.save_profile(_gw("b"))
    s.set_last_root_choice("a", "r")
    s.save_profile(_gw("c"), replace_id="a")
    assert [p.id for p in s.providers()] == ["demo", "c", "b"]
    assert s.last_root_choice() == ("c", "r")
    s.remove_profile("c")
    assert s.last_root_choice()[0] == "demo"          # a removed profile falls back to the demo
    with pytest.raises(UnknownProfileError):
        s.remove_profile("c")


def test_provider_config_resolves_the_key_and_the_file_never_holds_it(
        memory_keyring: KeyringBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    s.save_profile(_gw())
    with pytest.raises(MissingKeyError) as ei:
        s.provider_config("mygw")
    assert "`rlm-desktop provider set-key mygw`" in str(ei.value) and "RLM_DESKTOP_KEY_MYGW" in str(ei.value)
    with pytest.raises(UnknownProfileError, match="'nope'"):
        s.provider_config("nope")
    secrets.set_key("mygw", KEY)
    cfg = s.provider_config("mygw")
    assert cfg.api_key == KEY and cfg.root_model == "r" and cfg.sub_model == "s"
    assert KEY not in repr(cfg)
    monkeypatch.setenv("RLM_DESKTOP_KEY_MYGW", "sk-from-env-0001")
    assert s.provider_config("mygw").api_key == "sk-from-env-0001"
    s.set_default_limits(RunLimits(budget_usd=None))
    s.sync()
    assert KEY not in s.path.read_text() and "sk-from-env" not in s.path.read_text()
    assert memory_keyring.entries[("rlm-desktop", "mygw")] == KEY


def test_no_key_profile_needs_none(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    s.save_profile(profile_from_preset("ollama", "local", root_model="llama3.1"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-not-for-ollama")
    cfg = s.provider_config("local")
    assert cfg.api_key is None and not cfg.needs_key


def test_limits_memo_and_choices_round_trip() -> None:
    s = Settings()
    limits = RunLimits(max_iterations=7, max_depth=2, max_sub_calls=33, budget_usd=None, max_tokens=12345,
                       cell_timeout_s=12.5, call_timeout_s=30, run_timeout_s=600, max_output_chars=999,
                       batch_concurrency=3, max_history_chars=50_000)
    sb = SandboxLimits(memory_mb=512, cpu_s=99, scratch_mb=32, max_file_mb=8, max_open_files=64,
                       max_processes=16, output_cap_bytes=4096, allow_weak=True)
    s.set_default_limits(limits)
    s.set_sandbox_limits(sb)
    s.set_memo_cache(False)
    s.save_profile(_gw())
    s.set_last_root_choice("mygw", "r")
    s.set_last_sub_choice("mygw", "s2")
    again = Settings()
    assert again.default_limits() == limits and again.sandbox_limits() == sb
    assert again.allow_weak_sandbox() is True and again.memo_cache() is False
    assert again.last_root_choice() == ("mygw", "r") and again.last_sub_choice() == ("mygw", "s2")
    assert again.notices == []


def test_bad_stored_values_fall_back_with_a_notice() -> None:
    s = Settings()
    qs = QSettings(str(s.path), QSettings.Format.IniFormat)
    qs.setValue("limits/max_iterations", "lots")
    qs.setValue("limits/cell_timeout_s", -5)
    qs.setValue("providers/_order", '["ok", "broken"]')
    qs.setValue("providers/broken", "{not json")
    qs.sync()
    del qs
    s.save_profile(_gw("ok"))
    again = Settings()
    assert again.default_limits() == RunLimits()
    assert [p.id for p in again.providers()] == ["demo", "ok"]
    text = " ".join(again.notices)
    assert "max_iterations" in text and "'broken'" in text and "defaults are used" in text


def _legacy_file(path: Path, **values: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    qs = QSettings(str(path), QSettings.Format.IniFormat)
    for k, v in values.items():
        qs.setValue(k, v)
    qs.sync()


LEGACY = {"base_url": "http://127.0.0.1:8000/v1", "model": "qwen", "sub_model": "qwen-small",
          "max_iterations": 9, "budget_usd": 1.5, "cell_timeout": 45, "memory_mb": 1024,
          "allow_weak_sandbox": "true", "memo_cache": "false"}


def test_upgrade_v0_flat_layout_moves_the_key_to_the_keyring(memory_keyring: KeyringBackend) -> None:
    path = preferences_path()
    _legacy_file(path, api_key=KEY, **LEGACY)
    assert KEY in path.read_text()
    s = Settings()
    assert s.schema_version == SCHEMA_VERSION
    prof = s.profile("legacy")
    assert (prof.base_url, prof.root_model, prof.sub_model, prof.needs_key) == (
        "http://127.0.0.1:8000/v1", "qwen", "qwen-small", True)
    lim = s.default_limits()
    assert (lim.max_iterations, lim.budget_usd, lim.cell_timeout_s) == (9, 1.5, 45.0)
    assert s.sandbox_limits().memory_mb == 1024 and s.sandbox_limits().allow_weak is True
    assert s.memo_cache() is False
    assert s.last_root_choice() == ("legacy", "qwen")
    assert memory_keyring.entries[("rlm-desktop", "legacy")] == KEY
    text = path.read_text()
    assert KEY not in text and "api_key" not in text and "\nbase_url" not in text
    assert any("moved to the system keyring" in n for n in s.notices)
    assert s.provider_config("legacy").api_key == KEY
    assert Settings().notices == []                    # upgraded once


def test_upgrade_without_keyring_keeps_the_key_for_the_session_only() -> None:
    keyring.set_keyring(fail.Keyring())
    path = preferences_path()
    _legacy_file(path, api_key=KEY, **LEGACY)
    s = Settings()
    assert KEY not in path.read_text()
    assert secrets.get_session_key("legacy") == KEY
    note = " ".join(s.notices)
    assert "this session only" in note and "provider set-key legacy" in note and KEY not in note


def test_a_newer_schema_is_read_not_downgraded() -> None:
    path = preferences_path()
    _legacy_file(path, schema_version=SCHEMA_VERSION + 1, **{"run/memo_cache": "false"})
    s = Settings()
    assert s.schema_version == SCHEMA_VERSION + 1 and s.memo_cache() is False
    assert "newer version" in s.notices[0]


def test_headless_without_any_qt_application(tmp_path: Path) -> None:
    code = ("from rlm_desktop.ui.settings import Settings\n"
            "from rlm_desktop.core.profiles import profile_from_preset\n"
            "from PySide6.QtCore import QCoreApplication\n"
            "s = Settings(); s.save_profile(profile_from_preset('vllm', 'v', root_model='m'))\n"
            "assert QCoreApplication.instance() is None\n"
            "print(Settings().provider_config('v').base_url)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("QT_QPA_PLATFORM", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "http://localhost:8000/v1"
    assert (Path(os.environ["RLM_DESKTOP_HOME"]) / "config" / "rlm-desktop" / "preferences.ini").exists()
