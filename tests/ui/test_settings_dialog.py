"""The Settings dialog with pytest-qt: every field round-trips through the file, inline validation,
keys go to the keyring (never the file), fetch/test run off the GUI thread against a real server."""

from __future__ import annotations

from dataclasses import replace

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox
from pytestqt.qtbot import QtBot

from rlm_desktop.core.config import ModelPrice, RunLimits, SandboxLimits
from rlm_desktop.core.profiles import ProviderProfile, profile_from_preset
from rlm_desktop.session import secrets
from rlm_desktop.ui.settings import Settings
from rlm_desktop.ui.settings_dialog import UNKNOWN, SettingsDialog
from tests.fakeserver import FakeOpenAI

KEY = "sk-dialog-SECRET-51be7a0c"


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for n in ("RLM_DESKTOP_KEY_GW", "RLM_DESKTOP_KEY_VLLM", "RLM_DESKTOP_KEY_CUSTOM"):
        monkeypatch.delenv(n, raising=False)


def _dialog(qtbot: QtBot, settings: Settings | None = None) -> SettingsDialog:
    d = SettingsDialog(settings or Settings())
    qtbot.addWidget(d)
    d.show()
    return d


def _settled(qtbot: QtBot, d: SettingsDialog) -> None:
    """Wait until the worker-thread keyring/probe results have been shown."""
    qtbot.waitUntil(lambda: not d.busy(), timeout=10_000)


def _ok(qtbot: QtBot, d: SettingsDialog) -> None:
    qtbot.mouseClick(d.button_box.button(QDialogButtonBox.StandardButton.Ok), Qt.MouseButton.LeftButton)


def _set_cell(d: SettingsDialog, row: int, col: int, text: str) -> None:
    d.price_table.item(row, col).setText(text)


def test_first_run_shows_the_demo_and_a_hint(qtbot: QtBot) -> None:
    d = _dialog(qtbot)
    assert d.first_run_hint.isVisible() and d.provider_list.count() == 1
    assert d.provider_list.currentRow() == 0 and d.id_edit.text() == "demo"
    assert not d.id_edit.isEnabled() and not d.remove_button.isEnabled()
    d.add_from_preset("openai")
    assert not d.first_run_hint.isVisible() and d.id_edit.text() == "openai" and d.id_edit.isEnabled()
    _settled(qtbot, d)
    assert "No key stored yet" in d.key_label.text() and "OPENAI_API_KEY" in d.key_label.text()


def test_every_field_round_trips(qtbot: QtBot) -> None:
    d = _dialog(qtbot)
    d.add_from_preset("custom")
    d.id_edit.setText("gw")
    d.name_edit.setText("Work gateway")
    d.preset_combo.setCurrentIndex(d.preset_combo.findData("vllm"))
    d.base_url_edit.setText("http://10.1.2.3:8000/v1")
    d.needs_key_check.setChecked(True)
    d.models_edit.setPlainText("big\nsmall\nextra")
    d.root_model_combo.setEditText("big")
    d.sub_model_combo.setEditText("small")
    d.concurrency_spin.setValue(5)
    d.timeout_spin.setValue(77.5)
    d.price_table.setRowCount(0)
    d._add_price_row("big", ModelPrice(1.5, 6.0, 0.25), 128000)
    d._add_price_row("small", None, None)
    _set_cell(d, 1, 4, "32000")                        # context window known, price unknown
    assert d.price_table.item(1, 1).text() == UNKNOWN
    limits = RunLimits(max_iterations=7, max_depth=2, max_sub_calls=33, budget_usd=None, max_tokens=5000,
                       cell_timeout_s=12.5, call_timeout_s=30, run_timeout_s=600, max_output_chars=999,
                       batch_concurrency=3, max_history_chars=50_000, max_response_chars=250_000)
    d.limits_form.set_value(limits)
    sb = SandboxLimits(memory_mb=512, cpu_s=99, scratch_mb=32, max_file_mb=8, max_open_files=64,
                       max_processes=16, output_cap_bytes=4096, allow_weak=True)
    d.sandbox_form.set_value(sb)
    d.allow_weak_check.setChecked(True)
    assert not d.weak_warning.isHidden() and "weak isolation" in d.weak_warning.text()
    d.memo_check.setChecked(False)
    _settled(qtbot, d)
    with qtbot.waitSignal(d.settings_changed):
        _ok(qtbot, d)
    assert not d.isVisible()

    s = Settings()
    expected = ProviderProfile(id="gw", name="Work gateway", preset="vllm", base_url="http://10.1.2.3:8000/v1",
                               needs_key=True, root_model="big", sub_model="small",
                               models=("big", "small", "extra"), prices={"big": ModelPrice(1.5, 6.0, 0.25)},
                               context_windows={"big": 128000, "small": 32000}, concurrency=5,
                               request_timeout_s=77.5)
    assert s.profile("gw") == expected
    assert s.default_limits() == limits and s.sandbox_limits() == sb and s.memo_cache() is False

    d2 = _dialog(qtbot, s)                             # and back into the widgets
    d2.select_profile("gw")
    _settled(qtbot, d2)
    assert (d2.id_edit.text(), d2.name_edit.text(), d2.preset_combo.currentData(),
            d2.base_url_edit.text(), d2.needs_key_check.isChecked(), d2.root_model_combo.currentText(),
            d2.sub_model_combo.currentText(), d2.models_edit.toPlainText(), d2.concurrency_spin.value(),
            d2.timeout_spin.value()) == ("gw", "Work gateway", "vllm", "http://10.1.2.3:8000/v1", True,
                                         "big", "small", "big\nsmall\nextra", 5, 77.5)
    assert d2.limits_form.value(RunLimits()) == limits
    assert d2.sandbox_form.value(SandboxLimits()) == replace(sb, allow_weak=False)   # the box holds it
    assert d2.allow_weak_check.isChecked() and not d2.memo_check.isChecked()
    assert d2.limits_form.widgets["budget_usd"].text() == "no limit"
    assert d2.price_table.item(1, 1).text() == UNKNOWN and d2.price_table.item(0, 2).text() == "0.25"


def test_inline_validation_blocks_saving(qtbot: QtBot) -> None:
    d = _dialog(qtbot)
    d.add_from_preset("custom")
    d.id_edit.setText("Bad Id")
    assert "lower-case" in d.field_error("id")
    assert "base URL is empty" in d.field_error("base_url")
    d.base_url_edit.setText("http://h/v1")
    assert d.field_error("base_url") == ""
    d._add_price_row("m", None, None)
    _set_cell(d, 0, 1, "cheap")
    assert "not a number" in d.field_error("prices")
    _ok(qtbot, d)
    assert d.isVisible() and "Not saved" in d.apply_error.text()
    assert Settings().has_real_provider() is False      # nothing written
    d.id_edit.setText("gw")
    _set_cell(d, 0, 1, "")
    assert d.field_error("id") == "" and d.field_error("prices") == ""
    _ok(qtbot, d)
    assert not d.isVisible() and Settings().profile("gw").prices == {}


def test_duplicate_remove_and_rename_move_the_key(qtbot: QtBot, memory_keyring: KeyringBackend) -> None:
    s = Settings()
    s.save_profile(profile_from_preset("custom", "gw", base_url="http://h/v1", root_model="m"))
    secrets.set_key("gw", KEY)
    d = _dialog(qtbot, s)
    d.select_profile("gw")
    d.duplicate_current()
    assert d.id_edit.text() == "gw-copy" and d.name_edit.text().endswith("(copy)")
    d.remove_current()
    assert [p.id for p in d.profiles] == ["gw"]
    d.select_profile("gw")
    d.id_edit.setText("gw2")
    assert d.apply()
    assert [p.id for p in Settings().providers()] == ["demo", "gw2"]
    assert memory_keyring.entries == {("rlm-desktop", "gw2"): KEY}
    d.select_profile("gw2")
    d.remove_current()
    assert d.apply() and memory_keyring.entries == {} and not Settings().has_real_provider()
    _settled(qtbot, d)


def test_key_goes_to_the_keyring_masked_and_never_to_the_file(qtbot: QtBot,
                                                              memory_keyring: KeyringBackend) -> None:
    d = _dialog(qtbot)
    d.add_from_preset("custom")
    d.id_edit.setText("gw")
    d.base_url_edit.setText("http://h/v1")
    _settled(qtbot, d)
    assert d.key_edit.echoMode() == d.key_edit.EchoMode.Password
    qtbot.keyClicks(d.key_edit, KEY)
    qtbot.mouseClick(d.save_key_button, Qt.MouseButton.LeftButton)
    _settled(qtbot, d)
    assert memory_keyring.entries[("rlm-desktop", "gw")] == KEY and d.key_edit.text() == ""
    assert KEY not in d.key_label.text() and KEY[-4:] in d.key_label.text()
    assert d.apply()
    text = Settings().path.read_text()
    assert KEY not in text and KEY[-4:] not in text
    qtbot.mouseClick(d.delete_key_button, Qt.MouseButton.LeftButton)
    _settled(qtbot, d)
    assert memory_keyring.entries == {} and "No key stored" in d.key_label.text()


def test_without_keyring_offers_session_key_and_env(qtbot: QtBot) -> None:
    keyring.set_keyring(fail.Keyring())
    d = _dialog(qtbot)
    d.add_from_preset("custom")
    d.id_edit.setText("gw")
    _settled(qtbot, d)
    assert "No system keyring" in d.key_label.text() and "RLM_DESKTOP_KEY_GW" in d.key_label.text()
    assert not d.save_key_button.isEnabled() and d.session_key_button.isEnabled()
    qtbot.keyClicks(d.key_edit, KEY)
    qtbot.mouseClick(d.session_key_button, Qt.MouseButton.LeftButton)
    _settled(qtbot, d)
    assert secrets.get_session_key("gw") == KEY and "this session only" in d.key_label.text()
    d.base_url_edit.setText("http://h/v1")
    assert d.apply() and KEY not in Settings().path.read_text()
    assert Settings().provider_config("gw").api_key == KEY


def test_fetch_models_and_test_connection_never_block_the_gui(qtbot: QtBot) -> None:
    with FakeOpenAI(api_key=KEY, models=["gpt-4o-mini", "house-model"]) as srv:
        d = _dialog(qtbot)
        d.add_from_preset("custom")
        d.id_edit.setText("gw")
        d.base_url_edit.setText(srv.base_url)
        srv.latency = 0
        d.key_edit.setText("sk-wrong-key-00000000")      # typed, not saved: used for the test
        job = d.test_connection()
        assert job is not None and not d.test_button.isEnabled()   # returned at once; GUI not waiting
        # A task on the GUI thread's qasync loop: nothing has run yet (no event processed since),
        # the dialog says what it is doing, and only the loop turning delivers the answer.
        assert d.busy() and not job.done and d.status_label.text() == "Testing the connection…"
        assert srv.requests == []
        qtbot.waitUntil(lambda: not d.busy(), timeout=10_000)
        assert job.done
        assert "Bad key" in d.status_label.text() and "sk-wrong" not in d.status_label.text()
        d.key_edit.setText(KEY)
        d.fetch_models()
        qtbot.waitUntil(lambda: not d.busy() and "found" in d.status_label.text(), timeout=10_000)
        assert d.models_edit.toPlainText().splitlines() == ["gpt-4o-mini", "house-model"]
        rows = {d.price_table.item(r, 0).text(): d.price_table.item(r, 1).text()
                for r in range(d.price_table.rowCount())}
        assert rows == {"gpt-4o-mini": "0.15"}           # built-in list price; the other stays unknown
        assert srv.requests[-1].authorization == f"Bearer {KEY}"
        d.key_edit.clear()
        srv.stop()
        d.test_connection()
        qtbot.waitUntil(lambda: not d.busy() and d.status_label.text().startswith("✖"), timeout=10_000)
        assert "No key" in d.status_label.text()


def test_ollama_fetch_sends_no_key(qtbot: QtBot, fake_openai: FakeOpenAI) -> None:
    d = _dialog(qtbot)
    d.add_from_preset("ollama")
    d.base_url_edit.setText(fake_openai.base_url)
    assert not d.key_edit.isEnabled()
    d.fetch_models()
    qtbot.waitUntil(lambda: not d.busy() and "found" in d.status_label.text(), timeout=10_000)
    assert {r.path for r in fake_openai.requests} == {"/v1/models", "/api/tags"}
    assert all(r.authorization is None for r in fake_openai.requests)


def test_no_key_message_names_the_real_buttons_and_goes_once_a_key_is_saved(
        qtbot: QtBot, memory_keyring: KeyringBackend) -> None:
    with FakeOpenAI(api_key=KEY, models=["house-model"]) as srv:
        srv.latency = 0
        d = _dialog(qtbot)
        d.add_from_preset("custom")
        d.id_edit.setText("gw")
        d.base_url_edit.setText(srv.base_url)
        _settled(qtbot, d)
        d.test_connection()
        qtbot.waitUntil(lambda: not d.busy() and d.status_label.text().startswith("✖"), timeout=10_000)
        said = d.status_label.text()
        assert "No key" in said and "Replace key" not in said
        assert d.save_key_button.text() in said                 # it names a button that exists
        qtbot.keyClicks(d.key_edit, KEY)
        qtbot.mouseClick(d.save_key_button, Qt.MouseButton.LeftButton)
        _settled(qtbot, d)
        assert "No key" not in d.status_label.text()             # the stale message is gone
        d.test_connection()
        qtbot.waitUntil(lambda: not d.busy() and d.status_label.text().startswith("✔"), timeout=10_000)
        assert "lists 1 model." in d.status_label.text()          # not "1 models"


def test_a_url_with_credentials_points_at_the_real_key_field(qtbot: QtBot) -> None:
    d = _dialog(qtbot)
    d.add_from_preset("custom")
    d.base_url_edit.setText("https://user:pw@h.example/v1")
    said = d.field_error("base_url")
    assert "Replace key" not in said and "Save key" in said
