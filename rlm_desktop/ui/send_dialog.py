"""File ▸ Send trace to…: the dialog that asks where to send the shown trace over OTLP/HTTP.

The endpoint comes prefilled from the preferences, the headers from the system keyring (shown
masked until "Show"). The headers use the OpenTelemetry form ``name=value,name2=value2`` (values
URL-encoded where they hold a comma or a percent sign), as ``OTEL_EXPORTER_OTLP_HEADERS``. The
dialog only checks and collects; the window sends on a worker thread and stores what "Remember"
asks for (the endpoint in the preferences, the headers in the keyring, never in a file).
"""

from __future__ import annotations

from urllib.parse import quote

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from rlm_desktop.core.config import ConfigError
from rlm_desktop.core.otlp_send import SendError, headers_from_env, traces_url
from rlm_desktop.session.prefs import check_otlp_url


def headers_text(headers: dict[str, str]) -> str:
    """``headers`` in the form the dialog's box takes (the inverse of :func:`parse_headers_text`)."""
    return ",".join(f"{k}={quote(v, safe=' !#$&()*+-./:;<>=?@[]^_`{|}~')}" for k, v in headers.items())


def parse_headers_text(text: str) -> dict[str, str]:
    """The headers typed in the box; raises SendError naming a bad header, never its value."""
    return headers_from_env({"OTEL_EXPORTER_OTLP_HEADERS": text.strip()})


class SendTraceDialog(QDialog):
    """Endpoint, headers, Remember; ``endpoint``/``headers``/``remember`` hold the checked values
    once the dialog is accepted."""

    def __init__(self, endpoint: str, headers: dict[str, str], note: str = "",
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Send trace to an OTLP endpoint")
        self.endpoint = ""
        self.headers: dict[str, str] = {}
        self.remember = False
        self.endpoint_edit = QLineEdit(endpoint)
        self.endpoint_edit.setPlaceholderText("http://localhost:4318/v1/traces")
        self.headers_edit = QLineEdit(headers_text(headers))
        self.headers_edit.setPlaceholderText("Authorization=Bearer …,x-team=analysts")
        self.headers_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.show_box = QCheckBox("Show")
        self.show_box.toggled.connect(lambda on: self.headers_edit.setEchoMode(
            QLineEdit.EchoMode.Normal if on else QLineEdit.EchoMode.Password))
        row = QHBoxLayout()
        row.addWidget(self.headers_edit, 1)
        row.addWidget(self.show_box)
        self.remember_box = QCheckBox("Remember (the endpoint in the preferences, the headers in the "
                                      "system keyring)")
        self.remember_box.setChecked(bool(endpoint or headers))
        self.error = QLabel(note)
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b00020")
        self.error.setVisible(bool(note))
        form = QFormLayout()
        form.addRow("&Endpoint:", self.endpoint_edit)
        form.addRow("&Headers:", row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.send_button = self.buttons.addButton("&Send", QDialogButtonBox.ButtonRole.AcceptRole)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.remember_box)
        lay.addWidget(self.error)
        lay.addWidget(self.buttons)
        self.resize(560, self.sizeHint().height())

    def _fail(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(True)

    def accept(self) -> None:
        """Check what was typed; stay open with the reason when something is wrong."""
        endpoint = self.endpoint_edit.text().strip()
        remember = self.remember_box.isChecked()
        try:
            traces_url(endpoint)
            headers = parse_headers_text(self.headers_edit.text())
            if remember:
                check_otlp_url(endpoint)
        except (SendError, ConfigError) as exc:
            self._fail(f"Cannot send: {exc}.")
            return
        self.endpoint, self.headers, self.remember = endpoint, headers, remember
        super().accept()
