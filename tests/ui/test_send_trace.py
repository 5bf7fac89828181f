"""File ▸ Send trace to…: a demo run's trace sent from the window to a local OTLP receiver (decoded
with the official opentelemetry-proto classes); the auth header goes to the receiver and into the
keyring, never into the preferences file or the app log; a failing endpoint is reported, nothing
crashes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLineEdit

from rlm_desktop.core.logs import log_file, setup_logging, shutdown_logging
from rlm_desktop.core.otlp_send import SendResult
from rlm_desktop.session.secrets import OTLP_HEADERS_USER, SERVICE
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.ui.send_dialog import SendTraceDialog
from tests.otlp_receiver import OtlpReceiver
from tests.ui.conftest import drop_paths

SECRET = "lf-sk-GUI-header-never-shown-7d41"


@pytest.fixture
def logged() -> Iterator[Path]:
    path = setup_logging()
    assert path is not None
    yield path
    shutdown_logging()


def _demo_run(qtbot, window: MainWindow, docs: Path) -> None:  # noqa: ANN001
    drop_paths(window.trace_pane.view.viewport(), [docs])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 4 and not window.documents.loading,
                    timeout=10_000)
    window.query.set_query("Which supplier missed the delivery date?")
    with qtbot.waitSignal(window.run_finished, timeout=60_000):
        window.act_run.trigger()


def _open_dialog(qtbot, window: MainWindow) -> SendTraceDialog:  # noqa: ANN001
    assert window.act_send.isEnabled()
    window.act_send.trigger()
    qtbot.waitUntil(lambda: window.send_dialog is not None and window.send_dialog.isVisible(), timeout=10_000)
    dlg = window.send_dialog
    assert isinstance(dlg, SendTraceDialog)
    return dlg


def _user_files_text() -> str:
    home = Path(os.environ["RLM_DESKTOP_HOME"])
    return "\n".join(p.read_text(errors="replace") for p in home.rglob("*") if p.is_file())


def test_send_via_the_menu_keeps_the_header_in_the_keyring_only(qtbot, window, docs_folder, memory_keyring,  # noqa: ANN001
                                                                 logged) -> None:  # noqa: ANN001
    _demo_run(qtbot, window, docs_folder)
    n = len(window.model.trace)
    with OtlpReceiver() as rx:
        dlg = _open_dialog(qtbot, window)
        assert dlg.endpoint_edit.text() == "" and dlg.headers_edit.text() == ""
        dlg.endpoint_edit.setText(rx.url)
        dlg.headers_edit.setText(f"Authorization=Bearer {SECRET},x-team=analysts")
        dlg.remember_box.setChecked(True)
        with qtbot.waitSignal(window.send_finished, timeout=30_000) as sent:
            qtbot.mouseClick(dlg.send_button, Qt.MouseButton.LeftButton)
        result = sent.args[0]
        assert isinstance(result, SendResult), result
        assert result.spans == n == len(rx.spans) and n > 1
        [req] = rx.requests
        assert req.path == "/v1/traces"
        assert req.headers["Authorization"] == f"Bearer {SECRET}" and req.headers["x-team"] == "analysts"
        assert f"Sent {n} spans to {rx.url}/v1/traces" in window.status.currentMessage()
        # remembered: the endpoint in the preferences, the headers in the keyring
        assert window.settings.otlp_endpoint() == rx.url
        kept = json.loads(memory_keyring.get_password(SERVICE, OTLP_HEADERS_USER))
        assert kept == {"Authorization": f"Bearer {SECRET}", "x-team": "analysts"}
        # the next time, both come back prefilled, the headers masked until "Show"
        dlg = _open_dialog(qtbot, window)
        assert dlg.endpoint_edit.text() == rx.url
        assert dlg.headers_edit.echoMode() == QLineEdit.EchoMode.Password
        assert SECRET in dlg.headers_edit.text() and SECRET not in dlg.headers_edit.displayText()
        dlg.show_box.setChecked(True)
        assert SECRET in dlg.headers_edit.displayText()
        with qtbot.waitSignal(window.send_finished, timeout=30_000) as sent:
            qtbot.mouseClick(dlg.send_button, Qt.MouseButton.LeftButton)
        assert isinstance(sent.args[0], SendResult)
        assert rx.requests[-1].headers["Authorization"] == f"Bearer {SECRET}"
    window.settings.sync()
    assert "sent" in log_file().read_text()
    assert SECRET not in _user_files_text()        # neither the preferences file nor the app log


def test_a_failing_endpoint_is_reported_and_a_credential_url_is_not_remembered(
        qtbot, window, docs_folder, memory_keyring, logged) -> None:  # noqa: ANN001
    _demo_run(qtbot, window, docs_folder)
    with OtlpReceiver() as rx:
        rx.fail = (401, f"bad token Bearer {SECRET}".encode(), "text/plain")
        dlg = _open_dialog(qtbot, window)
        # a password inside the URL cannot be remembered: the dialog says so and stays open
        dlg.endpoint_edit.setText(f"http://user:{SECRET}@127.0.0.1:{rx.port}/v1/traces")
        dlg.remember_box.setChecked(True)
        qtbot.mouseClick(dlg.send_button, Qt.MouseButton.LeftButton)
        assert dlg.isVisible() and "password" in dlg.error.text() and SECRET not in dlg.error.text()
        assert window.settings.otlp_endpoint() == "" and not rx.requests
        dlg.endpoint_edit.setText(rx.url)
        dlg.headers_edit.setText(f"Authorization=Bearer {SECRET}")
        with qtbot.waitSignal(window.send_finished, timeout=30_000) as sent:
            qtbot.mouseClick(dlg.send_button, Qt.MouseButton.LeftButton)
        message = sent.args[0]
        assert isinstance(message, str) and "HTTP 401" in message and "authorization header" in message
        assert SECRET not in message
        assert "Could not send the trace" in window.last_notice.text()
        assert SECRET not in window.last_notice.text() + window.status.currentMessage()
        window.last_notice.close()
    # nothing crashed: the window still works and the trace is still shown
    assert window.act_send.isEnabled() and len(window.model.trace) > 1
    assert SECRET not in _user_files_text()


def test_a_malformed_header_stays_in_the_dialog_and_names_no_value(qtbot, window, docs_folder) -> None:  # noqa: ANN001
    _demo_run(qtbot, window, docs_folder)
    dlg = _open_dialog(qtbot, window)
    dlg.endpoint_edit.setText("http://127.0.0.1:9/v1/traces")
    dlg.headers_edit.setText(SECRET)                  # a credential pasted without a name
    qtbot.mouseClick(dlg.send_button, Qt.MouseButton.LeftButton)
    assert dlg.isVisible() and "NAME=VALUE" in dlg.error.text() and SECRET not in dlg.error.text()
    dlg.reject()
    qtbot.waitUntil(lambda: window.send_dialog is None)


def test_the_endpoint_preference_refuses_secrets_and_forgets_on_empty(tmp_path: Path) -> None:
    from rlm_desktop.core.config import ConfigError
    from rlm_desktop.session.prefs import Preferences

    prefs = Preferences(tmp_path / "prefs.ini")
    prefs.set_otlp_endpoint("https://otel.example.com/v1/traces?api-version=1")
    assert prefs.otlp_endpoint() == "https://otel.example.com/v1/traces?api-version=1"
    for bad in (f"https://otel.example.com/v1/traces?api_key={SECRET}", f"https://u:{SECRET}@otel.example.com",
                "ftp://otel.example.com"):
        with pytest.raises(ConfigError) as err:
            prefs.set_otlp_endpoint(bad)
        assert SECRET not in str(err.value)
    assert prefs.otlp_endpoint() == "https://otel.example.com/v1/traces?api-version=1"
    assert SECRET not in (tmp_path / "prefs.ini").read_text()
    prefs.set_otlp_endpoint("")
    assert prefs.otlp_endpoint() == ""
