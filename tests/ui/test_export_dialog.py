"""Exporting through the save dialog: the typed extension decides the format, and choosing another
format in the dialog changes the typed extension to match."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QComboBox, QFileDialog, QLineEdit

from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter
from rlm_desktop.ui.main_window import MainWindow, export_target


def _open_small_trace(qtbot, window: MainWindow, folder: Path) -> Path:  # noqa: ANN001
    path = folder / "saved.jsonl"
    t = Trace()
    w = TraceWriter(path, {"query": "how many?"}).attach(t)
    run = t.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "how many?"})
    t.end_span(run, SpanStatus.OK, {Attr.ANSWER: "nine"})
    w.close()
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        window.open_trace_file(path)
    return path


def _export_through_dialog(qtbot, window: MainWindow, fill: Callable[[QFileDialog], None]) -> Path:  # noqa: ANN001
    """Trigger Export, let ``fill`` act on the open save dialog as a user would, press Save."""
    seen: list[QFileDialog] = []
    errors: list[BaseException] = []

    def drive() -> None:
        dlg = window.export_dialog
        if dlg is None or not dlg.isVisible():
            QTimer.singleShot(20, drive)
            return
        seen.append(dlg)
        try:
            fill(dlg)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, after the dialog is closed
            errors.append(exc)
            dlg.reject()              # a failed check must end the modal dialog, not hang the test
            return
        dlg.accept()

    QTimer.singleShot(0, drive)
    with qtbot.waitSignal(window.export_finished, timeout=30_000) as done:
        window.act_export.trigger()   # returns when the (modal) dialog is closed
        if errors:
            raise errors[0]
    assert seen, "the export did not open its save dialog"
    return Path(done.args[0])


def _name_edit(dlg: QFileDialog) -> QLineEdit:
    edit = dlg.findChild(QLineEdit, "fileNameEdit")
    assert edit is not None
    return edit


def test_a_typed_md_name_with_html_selected_writes_markdown(qtbot, window, tmp_path) -> None:  # noqa: ANN001
    _open_small_trace(qtbot, window, tmp_path)

    def fill(dlg: QFileDialog) -> None:
        dlg.selectNameFilter("HTML report (*.html)")
        assert dlg.selectedNameFilter() == "HTML report (*.html)"
        _name_edit(dlg).setText(str(tmp_path / "report.md"))

    out = _export_through_dialog(qtbot, window, fill)
    assert out == tmp_path / "report.md"
    text = out.read_text(encoding="utf-8")
    assert "<html" not in text.lower() and text.lstrip().startswith("#")    # Markdown, not HTML
    assert "how many?" in text


def test_choosing_a_format_in_the_dialog_changes_the_typed_extension(qtbot, window, tmp_path) -> None:  # noqa: ANN001
    _open_small_trace(qtbot, window, tmp_path)

    def fill(dlg: QFileDialog) -> None:
        edit = _name_edit(dlg)
        edit.setText(str(tmp_path / "report.html"))
        combo = dlg.findChild(QComboBox, "fileTypeCombo")
        assert combo is not None and combo.currentText() == "HTML report (*.html)"
        combo.setFocus()
        steps = [(Qt.Key.Key_End, "OpenTelemetry OTLP JSON (*.otlp.json)", "report.otlp.json"),
                 (Qt.Key.Key_Home, "HTML report (*.html)", "report.html"),
                 (Qt.Key.Key_End, "OpenTelemetry OTLP JSON (*.otlp.json)", "report.otlp.json"),
                 (Qt.Key.Key_Up, "JSON tree (*.json)", "report.json"),
                 (Qt.Key.Key_Up, "Markdown (*.md)", "report.md")]
        for key, chosen, name in steps:                      # the user picks formats with the keyboard
            qtbot.keyClick(combo, key)
            assert combo.currentText() == chosen
            assert edit.text() == str(tmp_path / name), chosen

    out = _export_through_dialog(qtbot, window, fill)
    assert out == tmp_path / "report.md" and out.read_text(encoding="utf-8").lstrip().startswith("#")


def test_a_name_without_a_format_gets_the_selected_formats_extension(qtbot, window, tmp_path) -> None:  # noqa: ANN001
    _open_small_trace(qtbot, window, tmp_path)

    def fill(dlg: QFileDialog) -> None:
        dlg.selectNameFilter("JSON tree (*.json)")
        dlg.setDefaultSuffix("json")
        _name_edit(dlg).setText(str(tmp_path / "report.v2"))

    out = _export_through_dialog(qtbot, window, fill)
    assert out.name == "report.v2.json"
    assert isinstance(json.loads(out.read_text(encoding="utf-8")), dict)


def test_export_target_rules() -> None:
    html = "HTML report (*.html)"
    assert export_target("/x/report.md", html) == (Path("/x/report.md"), "markdown")
    assert export_target("/x/report.otlp.json", html) == (Path("/x/report.otlp.json"), "otlp")
    assert export_target("/x/report.JSON", html) == (Path("/x/report.JSON"), "json")
    assert export_target("/x/report", "Markdown (*.md)") == (Path("/x/report.md"), "markdown")
    assert export_target("/x/r.txt", "OpenTelemetry OTLP JSON (*.otlp.json)") == \
        (Path("/x/r.txt.otlp.json"), "otlp")
