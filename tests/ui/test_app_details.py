"""Smaller window behaviours: `rlm-desktop PATH` start-up, Settings, large payload previews,
dark palette highlighting, keyboard paths."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QColor, QGuiApplication, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication

from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter
from rlm_desktop.ui import fmt


def _write_trace(path: Path, stdout: str = "ok\n") -> Path:
    t = Trace()
    w = TraceWriter(path, {"query": "how many?"}).attach(t)
    run = t.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "how many?"})
    cell = t.start_span(SpanKind.CODE_CELL, "cell", run, {Attr.CODE: "for i in range(9):\n    print(i)"})
    t.update_span(cell, append={Attr.STDOUT: stdout})
    t.end_span(cell, SpanStatus.OK)
    t.end_span(run, SpanStatus.OK, {Attr.ANSWER: "nine"})
    w.close()
    return path


def _file_urls_opened_by(action) -> list[str]:  # noqa: ANN001
    """Trigger ``action`` and return the local paths it asked the desktop to open (caught by a
    real Qt URL handler for the file scheme, so no file manager starts)."""
    from PySide6.QtCore import QObject, QUrl, Slot
    from PySide6.QtGui import QDesktopServices

    class Catcher(QObject):
        def __init__(self) -> None:
            super().__init__()
            self.paths: list[str] = []

        @Slot(QUrl)
        def handle(self, url: QUrl) -> None:
            self.paths.append(url.toLocalFile())

    catcher = Catcher()
    QDesktopServices.setUrlHandler("file", catcher, "handle")
    try:
        action.trigger()
    finally:
        QDesktopServices.unsetUrlHandler("file")
    return catcher.paths


_CHILD = r"""
import sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from rlm_desktop.ui.app import make_app
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.cli import main
app = make_app()
def check():
    wins = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
    if wins and wins[0].shown_trace_path is not None and str(wins[0].shown_trace_path) == sys.argv[1]:
        print("ANSWER=" + wins[0].answer.text.toPlainText())
        print("TITLE=" + wins[0].windowTitle())
        wins[0].close()
        app.quit()
    else:
        QTimer.singleShot(20, check)
QTimer.singleShot(0, check)
QTimer.singleShot(20000, app.quit)
print("RC=%d" % main([sys.argv[1]]))
"""


def test_cli_without_subcommand_opens_the_window_with_the_trace(tmp_path) -> None:  # noqa: ANN001
    """`rlm-desktop PATH` (the CLI dispatcher → run_app with its qasync loop), in a child process."""
    path = _write_trace(tmp_path / "saved.jsonl")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True,
                          timeout=60, env=env, cwd=str(Path(__file__).resolve().parents[2]))
    assert "ANSWER=nine" in proc.stdout, proc.stderr[-2000:]
    assert "TITLE=RLM Desktop — saved.jsonl" in proc.stdout
    assert "RC=0" in proc.stdout


def test_without_a_display_the_app_says_so_instead_of_aborting(tmp_path) -> None:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run([sys.executable, "-m", "rlm_desktop"], capture_output=True, text=True,
                          timeout=60, env=env, cwd=str(Path(__file__).resolve().parents[2]))
    assert proc.returncode == 2
    assert "no graphical display" in proc.stderr and "rlm-desktop run" in proc.stderr
    assert "Reinstalling" not in proc.stderr


def test_settings_dialog_opens_without_blocking(qtbot, window) -> None:  # noqa: ANN001
    window.act_settings.trigger()
    dlg = window.settings_dialog
    qtbot.waitUntil(dlg.isVisible, timeout=3000)
    dlg.reject()
    qtbot.waitUntil(lambda: not dlg.isVisible(), timeout=3000)


def test_large_output_preview_then_show_all_and_copy(qtbot, window, tmp_path) -> None:  # noqa: ANN001
    big = "line of output\n" * 5000     # 75,000 characters
    path = _write_trace(tmp_path / "big.jsonl", stdout=big)
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        window.open_trace_file(path)
    cell = next(s for s in window.model.trace if s.kind == SpanKind.CODE_CELL)
    window.trace_pane.select_span(cell)
    out = window.detail.stdout
    assert out.truncated and len(out.edit.toPlainText()) == fmt.PREVIEW_CHARS
    assert "Preview" in out.note.text() and out.show_all_btn.isVisibleTo(out)
    out.copy()
    assert QGuiApplication.clipboard().text() == big
    out.show_all()
    assert out.edit.toPlainText() == big and not out.show_all_btn.isVisibleTo(out)


def test_dark_palette_switches_the_code_style(qtbot, window) -> None:  # noqa: ANN001
    app = QApplication.instance()
    old = app.palette()
    dark = QPalette(old)
    dark.setColor(QPalette.ColorRole.Window, QColor("#202020"))
    dark.setColor(QPalette.ColorRole.Base, QColor("#181818"))
    dark.setColor(QPalette.ColorRole.Text, QColor("#e0e0e0"))
    try:
        app.setPalette(dark)
        qtbot.waitUntil(lambda: window.detail.code.highlighter.style_name == "monokai", timeout=3000)
    finally:
        app.setPalette(old)
    qtbot.waitUntil(lambda: window.detail.code.highlighter.style_name == "default", timeout=3000)


def test_every_menu_action_has_a_keyboard_path(window) -> None:  # noqa: ANN001
    missing = []
    for menu_action in window.menuBar().actions():
        assert "&" in menu_action.text(), menu_action.text()
        for act in menu_action.menu().actions():
            if act.isSeparator() or act.menu() is not None:
                continue
            if act.shortcut().isEmpty() and "&" not in act.text():
                missing.append(act.text())
    assert missing == []
    assert QKeySequence("Ctrl+Return") in window.act_run.shortcuts()
    assert QKeySequence("Esc") in window.act_stop.shortcuts()


def test_budget_meter_warns_at_80_percent_and_unknown_cost_is_not_zero(window) -> None:  # noqa: ANN001
    bar = window.status
    bar.reset(2.0)
    bar.update_figures(1.0, True, 1000, 100, 0, 3, 500)
    assert not bar.warned and bar.meter.value() == 500
    bar.update_figures(1.7, True, 1000, 100, 0, 3, 500)
    assert bar.warned and "80%" in bar.meter.toolTip()
    assert bar.meter.text().startswith("$1.7000 of $2.00")
    bar.update_figures(0.0, False, 1000, 100, 0, 3, 500)
    assert bar.meter.text() == "unknown of $2.00"
    bar.set_isolation({"level": "strong", "summary": "namespaces, Landlock, seccomp", "layers": {"seccomp": 2}})
    assert bar.badge.text() == "sandbox: strong" and "Landlock" in bar.badge.toolTip()


def test_status_bar_marks_estimated_tokens_and_cost(window) -> None:  # noqa: ANN001
    bar = window.status
    bar.reset(2.0)
    bar.update_figures(0.25, True, 1000, 100, 0, 3, 500)
    assert bar.tokens.text() == "tokens in 1,000 (cached 0) · out 100" and "~" not in bar.meter.text()
    assert "reported" in bar.tokens.toolTip()
    bar.update_figures(0.25, True, 1000, 100, 0, 3, 500, estimated=True)
    assert bar.tokens.text() == "tokens in ~1,000 (cached 0) · out ~100"
    assert bar.meter.text().startswith("~$0.2500 of $2.00")
    assert "estimated" in bar.tokens.toolTip() and "estimated" in bar.meter.toolTip()


def test_trace_view_follows_newest_until_the_user_scrolls(qtbot, window) -> None:  # noqa: ANN001
    from PySide6.QtWidgets import QAbstractSlider

    producer = Trace({"query": "q"})
    window.watch_trace(producer)
    run = producer.start_span(SpanKind.RUN, "run")

    def grow(n: int) -> None:
        for i in range(n):
            producer.end_span(producer.start_span(SpanKind.ITERATION, f"iteration {i}", run), SpanStatus.OK)
        qtbot.waitUntil(lambda: len(window.model.trace) == len(producer), timeout=5000)
        window.model.flush()

    bar = window.trace_pane.view.verticalScrollBar()
    grow(200)
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum(), timeout=3000)
    bar.triggerAction(QAbstractSlider.SliderAction.SliderPageStepSub)   # the user scrolls up
    assert window.trace_pane.follow is False
    held = bar.value()
    grow(100)
    qtbot.wait(100)
    assert bar.value() == held and bar.value() < bar.maximum()
    window.act_follow.trigger()                                          # Ctrl+L resumes
    qtbot.waitUntil(lambda: bar.value() == bar.maximum(), timeout=3000)


def test_first_start_window_fits_the_screen(window) -> None:  # noqa: ANN001
    from rlm_desktop.ui.main_window import PREFERRED_SIZE, default_window_size

    avail = window.screen().availableGeometry()
    size = default_window_size(window.screen())
    assert size.width() <= avail.width() and size.height() <= avail.height()
    assert size.width() <= PREFERRED_SIZE.width() and size.height() <= PREFERRED_SIZE.height()
    assert default_window_size(None) == PREFERRED_SIZE


@pytest.mark.qt_no_exception_capture
def test_unhandled_errors_are_logged_and_reported_on_the_gui_thread(qtbot) -> None:  # noqa: ANN001
    import json
    import threading

    from PySide6.QtCore import QThread, QTimer

    from rlm_desktop.core.logs import setup_logging, shutdown_logging
    from rlm_desktop.ui.app import install_error_hooks

    path = setup_logging()
    assert path is not None
    reports: list[tuple[str, bool]] = []
    gui = QThread.currentThread()
    restore = install_error_hooks(lambda s: reports.append((s, QThread.currentThread() is gui)))

    def boom() -> None:
        raise ValueError("slot exploded")

    def thread_boom() -> None:
        raise RuntimeError("thread exploded")
    try:
        QTimer.singleShot(0, boom)
        qtbot.waitUntil(lambda: len(reports) == 1, timeout=5000)
        t = threading.Thread(target=thread_boom)
        t.start()
        t.join()
        qtbot.waitUntil(lambda: len(reports) == 2, timeout=5000)
    finally:
        restore()
        shutdown_logging()
    assert reports == [("ValueError: slot exploded", True), ("RuntimeError: thread exploded", True)]
    crit = [r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r["level"] == "critical"]
    assert len(crit) == 2
    assert "Traceback" in crit[0]["exc"] and "slot exploded" in crit[0]["exc"]
    assert "thread exploded" in crit[1]["exc"]


def test_internal_error_dialog_is_not_a_flood_and_points_at_the_log(qtbot, window) -> None:  # noqa: ANN001
    from rlm_desktop.core.logs import log_file

    window.report_internal_error("KeyError: 'x'")
    first = window.last_notice
    assert first is not None and str(log_file()) in first.text() and "KeyError" in first.text()
    window.report_internal_error("KeyError: 'y'")
    assert window.last_notice is first                      # no second dialog within a minute
    assert "KeyError: 'y'" in window.status.currentMessage()
    first.close()


def test_help_opens_the_log_folder(qtbot, window) -> None:  # noqa: ANN001

    from rlm_desktop.core.logs import log_file

    assert _file_urls_opened_by(window.act_open_logs) == [str(log_file().parent)]
    assert log_file().parent.is_dir()


def test_answer_is_shown_formatted_never_loads_what_it_points_at_and_copies_the_source(window) -> None:  # noqa: ANN001
    pane = window.answer
    md = ("# Late suppliers\n\n**Acme** was late *twice*:\n\n| order | days |\n|---|---|\n| A-1 | 3 |\n\n"
          "![chart](http://127.0.0.1:9/track.png) ![key](file:///etc/shadow)\n\n<b>raw html</b>")
    pane.set_result(md, "ok", "final", None)
    shown = pane.text.toPlainText()
    assert "Late suppliers" in shown and "**" not in shown and "# " not in shown
    assert pane.text.document().toMarkdown().count("|") >= 6           # the table is a table
    assert "<b>" in shown                                                # raw HTML is text, not markup
    assert sorted(pane.text.refused) == ["file:///etc/shadow", "http://127.0.0.1:9/track.png"]
    pane.formatted.setChecked(False)
    assert pane.text.toPlainText() == md
    pane.formatted.setChecked(True)
    pane.copy()
    assert QGuiApplication.clipboard().text() == md == pane.source()


def test_history_ask_again_and_remove_keep_the_trace_files(qtbot, window, tmp_path: Path) -> None:  # noqa: ANN001
    from PySide6.QtCore import Qt

    from rlm_desktop.ui.run_panes import HistoryEntry

    pane = window.history
    window.left_tabs.setCurrentWidget(pane)
    window.activateWindow()
    traces = [_write_trace(tmp_path / f"run{i}.jsonl") for i in range(3)]
    for i, t in enumerate(traces):
        pane.add(HistoryEntry(trace=str(t), query=f"question {i}?", started=1000.0 + i, finished=1001.0 + i,
                              status="ok"))
    with pane.store.path.open("a", encoding="utf-8") as fh:
        fh.write("{not json\n")                                   # a damaged line is kept, not lost
    pane.reload()
    assert [e.query for e in pane.entries] == ["question 2?", "question 1?", "question 0?"]
    assert not pane.again_btn.isEnabled() and not pane.remove_btn.isEnabled()

    pane.table.selectRow(1)
    assert pane.again_btn.isEnabled()
    qtbot.mouseClick(pane.again_btn, Qt.MouseButton.LeftButton)
    assert window.query.query() == "question 1?"
    assert "loaded now" in window.status.currentMessage()

    pane.table.selectRow(1)
    pane.table.setFocus()
    qtbot.keyClick(pane.table, Qt.Key.Key_Delete)
    assert [e.query for e in pane.entries] == ["question 2?", "question 0?"]
    assert all(t.is_file() for t in traces)                      # only forgotten, never deleted
    lines = pane.store.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and "{not json" in lines


def test_the_query_pane_warns_when_the_budget_cannot_bound_an_unpriced_model(qtbot, settings) -> None:  # noqa: ANN001
    from dataclasses import replace

    from rlm_desktop.core.config import ModelPrice
    from rlm_desktop.ui.main_window import MainWindow
    from rlm_desktop.ui.query_pane import ModelChoice
    from tests.fakeserver import FakeOpenAI
    from tests.ui.conftest import fake_profile

    with FakeOpenAI() as srv:
        prof = replace(fake_profile(srv), prices={"fake-root": ModelPrice(1.0, 2.0, 0.5)})
    settings.save_profile(prof)
    settings.set_last_root_choice("fake", "fake-root")
    settings.set_last_sub_choice("fake", "fake-sub")
    w = MainWindow(settings)
    qtbot.addWidget(w)
    assert w.status.meter.text() == "no run yet" and w.status.tokens.text() == ""   # not "$0 of …"
    q = w.query
    assert q.root_choice() == ModelChoice("fake", "fake-root") and q.budget.value() > 0
    note = q.price_note
    assert note.isVisibleTo(w) and "fake-sub" in note.text() and "fake-root" not in note.text()
    assert "cannot stop it" in note.text() and "Set a token limit" in note.text()
    q.max_tokens.setValue(200_000)
    assert "The 200,000-token limit still applies." in note.text()
    assert w.query.limits().max_tokens == 200_000
    q.budget.setValue(0)                         # no USD budget: nothing to warn about
    assert not note.isVisibleTo(w)
    q.budget.setValue(2)
    q.sub_picker.model.setEditText("fake-root")  # both models priced
    assert not note.isVisibleTo(w)
    q.root_picker.provider.setCurrentIndex(q.root_picker.provider.findData("demo"))
    q.sub_picker.provider.setCurrentIndex(q.sub_picker.provider.findData("demo"))
    assert not note.isVisibleTo(w)              # the demo costs nothing
    w.bridge.shutdown()


_KILLED_CHILD = r"""
import sys
from pathlib import Path
from PySide6.QtCore import QTimer
from rlm_desktop.core.profiles import ProviderProfile
from rlm_desktop.ui.app import make_app
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.ui.settings import Settings
app = make_app()
s = Settings()
s.save_profile(ProviderProfile(id="fake", name="Scripted server", preset="custom", base_url=sys.argv[1],
                               needs_key=False, root_model="fake-root", sub_model="fake-sub",
                               models=("fake-root", "fake-sub")))
s.set_last_root_choice("fake", "fake-root")
s.set_last_sub_choice("fake", "fake-sub")
w = MainWindow(s)
w.show()
w.open_paths([Path(sys.argv[2])])
def go():
    if w.documents.loading or not w.documents.documents:
        QTimer.singleShot(20, go)
        return
    w.query.set_query("Which supplier was late?")
    print("RUN=%s" % w.start_run(), flush=True)
QTimer.singleShot(0, go)
app.exec()
"""


def test_a_run_the_app_did_not_live_to_finish_is_listed_as_interrupted(tmp_path: Path, fake_openai) -> None:  # noqa: ANN001
    import json
    import signal

    from rlm_desktop.core.paths import data_dir
    from rlm_desktop.core.trace import read_trace
    from rlm_desktop.ui.run_panes import HistoryStore
    from tests.fakeserver import Reply

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Acme was late twice.\n")
    fake_openai.handler = lambda req: Reply(hang=True)             # the model never answers
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, fake_openai.base_url, str(docs)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                             cwd=str(Path(__file__).resolve().parents[2]))
    try:
        fake_openai.wait_until(lambda s: bool(s.requests) or child.poll() is not None, timeout=60)
        assert fake_openai.requests, child.stderr.read() if child.poll() is not None else "no request"
        running = HistoryStore().entries()
        assert [(e.status, e.pid) for e in running] == [("running", child.pid)]
    finally:
        child.send_signal(signal.SIGKILL)                           # the app dies mid-run
        child.wait(30)
    entries = HistoryStore().entries()
    assert len(entries) == 1 and entries[0].status == "interrupted"
    assert entries[0].query == "Which supplier was late?" and "Scripted server" in entries[0].provider
    trace = read_trace(entries[0].trace)                            # readable, its open steps marked
    assert trace.roots and trace.roots[0].running
    lines = (data_dir() / "history.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["status"] == "running"              # the record the crash left


def test_history_shows_one_row_per_run_with_its_latest_state(tmp_path: Path) -> None:
    from rlm_desktop.ui.run_panes import HistoryEntry, HistoryStore

    store = HistoryStore(tmp_path / "h.jsonl")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.add(HistoryEntry(trace="a", query="qa", started=1.0, finished=0.0, status="running", pid=os.getpid()))
    store.add(HistoryEntry(trace="b", query="qb", started=2.0, finished=0.0, status="running", pid=dead.pid))
    store.add(HistoryEntry(trace="c", query="qc", started=3.0, finished=0.0, status="running", pid=os.getpid()))
    store.add(HistoryEntry(trace="c", query="qc", started=3.0, finished=4.0, status="ok"))
    got = [(e.trace, e.status) for e in store.entries()]
    assert got == [("c", "ok"), ("b", "interrupted"), ("a", "running")]
    assert store.remove({"c"}) == 1 and [e.trace for e in store.entries()] == ["b", "a"]


def test_the_shown_trace_file_can_be_revealed_and_its_path_copied(qtbot, window, tmp_path: Path) -> None:  # noqa: ANN001

    assert not window.act_show_trace.isEnabled() and not window.act_copy_trace_path.isEnabled()
    path = _write_trace(tmp_path / "saved.jsonl")
    window.open_trace_file(path)
    qtbot.waitUntil(lambda: window.shown_trace_path == path, timeout=10_000)
    assert window.act_show_trace.isEnabled()

    assert _file_urls_opened_by(window.act_show_trace) == [str(tmp_path)]
    window.act_copy_trace_path.trigger()
    assert QGuiApplication.clipboard().text() == str(path)
