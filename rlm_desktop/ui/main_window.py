"""The main window: composes the documents, history, query, trace, detail and answer panes and the
status bar; runs go through the engine bridge, saved traces open on a worker thread."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QSize, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDesktopServices,
    QDropEvent,
    QGuiApplication,
    QKeySequence,
    QScreen,
)
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QLayout,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QSplitter,
    QTabWidget,
    QToolBar,
    QWidget,
)

from rlm_desktop.core.citations import sources_for
from rlm_desktop.core.config import ConfigError, ProviderConfig
from rlm_desktop.core.exporters import ExportError, format_for_path
from rlm_desktop.core.logs import log_file, redact
from rlm_desktop.core.paths import traces_dir
from rlm_desktop.core.profiles import ProviderProfile
from rlm_desktop.core.sources import SourceRange
from rlm_desktop.core.totals import totals
from rlm_desktop.core.trace import FORMAT_NAME, Attr, Span, SpanKind, Trace, TraceEvent, read_trace
from rlm_desktop.session.store import SessionStore
from rlm_desktop.ui.detail_pane import DetailPane
from rlm_desktop.ui.documents_pane import DocumentsPane
from rlm_desktop.ui.engine_bridge import EngineBridge, RunOutcome, TurnRequest
from rlm_desktop.ui.gc_policy import GcPolicy
from rlm_desktop.ui.icons import icon
from rlm_desktop.ui.jobs import ThreadJob
from rlm_desktop.ui.query_pane import ModelChoice, QueryPane
from rlm_desktop.ui.run_panes import (
    AnswerPane,
    HistoryEntry,
    HistoryPane,
    HistoryStore,
    RunStatusBar,
    SessionFigures,
)
from rlm_desktop.ui.settings import Settings, provider_config_for
from rlm_desktop.ui.sources_view import SourceTarget
from rlm_desktop.ui.timeline import TimelinePane
from rlm_desktop.ui.trace_model import TraceModel
from rlm_desktop.ui.trace_pane import TracePane
from rlm_desktop.ui.window_state import WindowState

APP_TITLE = "RLM Desktop"
EXPORT_FILTERS = {       # the save dialog's filter -> (export format, the extension it writes)
    "HTML report (*.html)": ("html", ".html"),
    "Markdown (*.md)": ("markdown", ".md"),
    "JSON tree (*.json)": ("json", ".json"),
    "OpenTelemetry OTLP JSON (*.otlp.json)": ("otlp", ".otlp.json"),
}


def export_target(chosen: str | Path, name_filter: str = "") -> tuple[Path, str]:
    """The file and format of an export the user chose in the save dialog. The typed extension
    wins over the selected filter (``report.md`` with "HTML report" selected is Markdown); a name
    that says no format gets the filter's extension, so the file always says what it holds."""
    path = Path(chosen)
    try:
        return path, format_for_path(path)
    except ExportError:
        fmt, suffix = EXPORT_FILTERS.get(name_filter, EXPORT_FILTERS["HTML report (*.html)"])
        return path.with_name(path.name + suffix), fmt


def is_trace_file(path: Path) -> bool:
    """A .jsonl file whose first line is an rlm-trace header."""
    if path.suffix.lower() != ".jsonl" or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            first = fh.readline(1_000_000)
        head = json.loads(first)
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT_NAME


def _export_stem(name: str) -> str:
    """``name`` without the extension of an export format (``x.otlp.json``, ``x.otlp.md`` -> ``x``)."""
    for ext in (".otlp.json", ".otel.json"):
        if name.lower().endswith(ext):
            return name[:-len(ext)]
    stem = name.rsplit(".", 1)[0] if "." in Path(name).name else name
    return stem[:-len(".otlp")] if stem.lower().endswith(".otlp") else stem



_SESSION_IDS = itertools.count(1)


@dataclass
class _WindowSession:
    """The window's session as the GUI sees it (the Session itself lives on the engine loop)."""

    id: int
    name: str | None = None              # app-YYYYMMDD-HHMMSS, or a continued session's name
    continue_trace: Path | None = None   # an unnamed run's trace, continued from History
    docs: tuple[str, ...] = ()           # the document files it has had since its last turn
    opened: bool = False                 # the engine loop has a Session for it
    models: tuple[str, str, str, str] | None = None   # root profile, root model, sub profile, sub model
    turns: int = 0
    trace_path: Path | None = None


PREFERRED_SIZE = QSize(1400, 900)
SHORT_WINDOW_HEIGHT = 820     # below this the run's limits start folded (a 1280×720 laptop)


def default_window_size(screen: QScreen | None) -> QSize:
    """The first-start size: the preferred size, shrunk to fit the screen's available area (a
    1366×768 laptop must see the Run button and the answer pane without moving the window)."""
    if screen is None:
        return QSize(PREFERRED_SIZE)
    return fit_window_size(screen.availableGeometry().size())


def fit_window_size(available: QSize) -> QSize:
    """The preferred size shrunk to a screen's available area (room left for the window frame)."""
    return QSize(min(PREFERRED_SIZE.width(), int(available.width() * 0.95)),
                 min(PREFERRED_SIZE.height(), int(available.height() * 0.92)))


class MainWindow(QMainWindow):
    trace_opened = Signal(str)        # path of a saved trace now shown
    trace_open_failed = Signal(str)   # message
    run_started = Signal(int)
    run_finished = Signal(object)     # RunOutcome of the run shown
    export_finished = Signal(object)  # Path of a finished export
    send_finished = Signal(object)    # File ▸ Send trace to…: a SendResult, or the error message (str)

    def __init__(self, settings: Settings | None = None, *, history: HistoryStore | None = None,
                 window_state: WindowState | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(APP_TITLE)
        self.setWindowIcon(icon("app"))
        self.setObjectName("mainWindow")
        self.settings = settings if settings is not None else Settings()
        self.window_state = window_state or WindowState()
        self.bridge = EngineBridge(self)
        self.bridge.events_ready.connect(self._on_events_ready)
        self.bridge.run_finished.connect(self._on_run_finished)
        self.model = TraceModel(self)
        self.model.batch_applied.connect(self._on_batch)
        self.model.header_changed.connect(self._on_header)

        self.current_run: int | None = None
        self._answer_run: Span | None = None       # the turn whose answer the answer pane shows
        self.last_outcome: RunOutcome | None = None
        self._shown_path: Path | None = None
        self._run_t0 = 0.0
        self._max_sub_calls: int | None = None
        self._figures_t = 0.0
        self._figures_dirty = False
        self._open_job: ThreadJob | None = None
        self.session_store = SessionStore()
        self._session = _WindowSession(next(_SESSION_IDS))
        self._showing_session = False       # the trace view shows the window session's turns
        self._turn_docs: tuple[str, ...] = ()
        self._history_seen = False
        self.confirm_discard: Callable[[str], bool] = self._confirm
        self._last_error_dialog = -1e9
        self._open_note = ""       # said with "Opened …" (e.g. that a run was stopped for it)
        self.send_dialog: QWidget | None = None     # File ▸ Send trace to…'s dialog while it is open
        self.export_dialog: QFileDialog | None = None     # the export's save dialog while it is open
        self.question_box: QMessageBox | None = None      # a question waiting for the user's answer

        # panes
        self.documents = DocumentsPane()
        self.history = HistoryPane(history or HistoryStore())
        self.query = QueryPane()
        self.trace_pane = TracePane(self.model)
        self.detail = DetailPane()
        self.answer = AnswerPane()
        self.status = RunStatusBar()
        self.setStatusBar(self.status)

        self.left_tabs = QTabWidget()
        self.left_tabs.setObjectName("leftTabs")
        self.left_tabs.addTab(self.documents, "&Documents")
        self.left_tabs.addTab(self.history, "&History")
        self.left_split = QSplitter(Qt.Orientation.Vertical)
        self.left_split.setObjectName("leftSplit")
        self.left_split.addWidget(self.left_tabs)
        self.left_split.addWidget(self.query)
        self.left_split.setStretchFactor(0, 3)
        self.left_split.setStretchFactor(1, 2)
        self.right_split = QSplitter(Qt.Orientation.Vertical)
        self.right_split.setObjectName("rightSplit")
        self.right_split.addWidget(self.detail)
        self.right_split.addWidget(self.answer)
        self.right_split.setStretchFactor(0, 3)
        self.right_split.setStretchFactor(1, 1)
        self.main_split = QSplitter(Qt.Orientation.Horizontal)
        self.main_split.setObjectName("mainSplit")
        self.main_split.addWidget(self.left_split)
        # The timeline (waterfall) of the shown run, under the tree.
        self.timeline = TimelinePane(self.model, self.trace_pane)
        self.center_split = QSplitter(Qt.Orientation.Vertical)
        self.center_split.setObjectName("centerSplit")
        self.center_split.addWidget(self.trace_pane)
        self.center_split.addWidget(self.timeline)
        self.center_split.setStretchFactor(0, 3)
        self.center_split.setStretchFactor(1, 2)
        self.main_split.addWidget(self.center_split)
        self.main_split.addWidget(self.right_split)
        self.main_split.setStretchFactor(0, 2)
        self.main_split.setStretchFactor(1, 4)
        self.main_split.setStretchFactor(2, 3)
        self.main_split.setSizes([460, 570, 370])
        self.setCentralWidget(self.main_split)

        # wiring
        self.documents.status_message.connect(lambda m: self.status.showMessage(m, 8000))
        self.documents.loading_changed.connect(self._update_actions)
        self.history.open_requested.connect(self._open_from_history)
        self.history.ask_again_requested.connect(self._ask_again)
        self.history.continue_requested.connect(self.continue_session)
        self.history.compare_requested.connect(self.open_compare)
        self.query.run_requested.connect(self.start_run)
        self.query.new_session_requested.connect(self.new_session)
        self.query.stop_requested.connect(self.stop_run)
        self.query.settings_requested.connect(self.open_settings)
        self.trace_pane.span_selected.connect(self._on_span_selected)
        self.answer.source_activated.connect(self._show_source)
        self.answer.step_activated.connect(self.trace_pane.select_span)
        self.trace_pane.filter_text_changed.connect(self.detail.set_highlight)
        self._elapsed = QTimer(self)
        self._elapsed.setInterval(500)
        self._elapsed.timeout.connect(self._tick_elapsed)

        self._build_actions()
        self.setAcceptDrops(True)
        for w in self.findChildren(QWidget):
            if w.acceptDrops():
                w.installEventFilter(self)
        self.reload_settings()
        first_size = default_window_size(self.screen())
        # The limits' fold before any size is restored: it sets the query pane's minimum height,
        # which bounds the window's and the splitters'. On a short screen they start folded.
        expanded = self.window_state.flag("limits_expanded")
        self.query.set_limits_expanded(first_size.height() >= SHORT_WINDOW_HEIGHT
                                       if expanded is None else expanded)
        self.resize(first_size)
        self.window_state.restore_geometry(self)
        self.gc_policy = GcPolicy(lambda: self.model.live, self)
        self._state_restored = False
        self._update_actions()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        if not self._state_restored:
            self._state_restored = True
            # Splitter sizes are bounded by the panes' minimums, which are right only once the
            # widgets are styled (now): layouts computed before keep stale ones until invalidated.
            for lay in self.findChildren(QLayout):
                lay.invalidate()
            self.layout().activate()
            if not self.window_state.restore(self, self._splitters(), self._headers()):
                self.apply_default_layout()

    def apply_default_layout(self) -> None:
        """Splitter positions for a first start, from the window's real size: documents, trace and
        detail share the width; on a short screen (a 1280×720 laptop) the run's limits fold to
        one line and the preview under the documents starts small, so the documents list keeps
        its rows and the Run button stays in view."""
        width = max(self.main_split.width(), self.width())
        left = max(int(width * 0.31), self.left_split.minimumSizeHint().width())
        detail = int(width * 0.24)
        self.main_split.setSizes([left, max(width - left - detail, 1), detail])
        short = self.height() < SHORT_WINDOW_HEIGHT
        self.layout().activate()
        height = max(self.left_split.height(), 1)
        # The question box gets a few lines; the documents list gets the rest.
        query = min(self.query.minimumSizeHint().height() + self.fontMetrics().lineSpacing(),
                    height // 2)
        self.left_split.setSizes([height - query, query])
        self.right_split.setSizes([int(height * 0.62), height - int(height * 0.62)])
        docs = max(self.documents.splitter.height(), height - query)
        preview = max(int(docs * (0.2 if short else 0.3)), self.documents.preview.minimumHeight() + 24)
        self.documents.splitter.setSizes([docs - preview, preview])

    # -- construction ------------------------------------------------------------------------------
    def _action(self, text: str, slot: Any, shortcuts: Iterable[str | QKeySequence.StandardKey] = (),
                icon_name: str | None = None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if icon_name:
            act.setIcon(icon(icon_name))
        # One entry per key: QKeySequence.StandardKey.Quit is Ctrl+Q on Linux and Windows, so
        # ["Quit", "Ctrl+Q"] would list (and bind) the same key twice.
        seqs = list({k.toString(): k for k in (QKeySequence(s) for s in shortcuts)
                     if not k.isEmpty()}.values())
        if seqs:
            act.setShortcuts(seqs)
        if tip:
            act.setStatusTip(tip)
            act.setToolTip(tip + (f" ({seqs[0].toString(QKeySequence.SequenceFormat.NativeText)})"
                                  if seqs else ""))
        act.triggered.connect(lambda _checked=False: slot())
        self.addAction(act)
        return act

    def _build_actions(self) -> None:
        mb = self.menuBar()
        a = self._action
        self.act_add_files = a("Add &files…", self.documents.choose_files, ["Ctrl+O"], "add-files",
                               "Add documents")
        self.act_add_folder = a("Add f&older…", self.documents.choose_folder, ["Ctrl+Shift+O"],
                                "add-folder", "Add a folder of documents")
        self.act_open_trace = a("Open &trace…", self.choose_trace, ["Ctrl+Shift+T"], "open-trace",
                                "Open a saved trace (.jsonl)")
        self.act_export = a("&Export trace…", self.export_trace, ["Ctrl+E"], "export",
                            "Export the shown trace as HTML, Markdown, JSON or OTLP")
        self.act_send = a("Se&nd trace to…", self.send_trace, [], tip="Send the shown trace to an "
                          "OpenTelemetry (OTLP/HTTP) endpoint: Phoenix, Langfuse, Jaeger, a Collector")
        self.act_show_trace = a("Show the trace &file", self.show_trace_file, [],
                                tip="Open the folder that holds the shown trace's .jsonl file")
        self.act_copy_trace_path = a("Cop&y the trace file's path", self.copy_trace_path, [])
        self.act_compare = a("Co&mpare runs…", self.choose_compare, [],
                             tip="Put two runs side by side: answers, cost, tokens, time, models, limits, traces")
        self.act_settings = a("&Settings…", self.open_settings, ["Ctrl+,"], "settings",
                              "Providers, keys, default limits, sandbox")
        self.act_quit = a("&Quit", self.close, [QKeySequence.StandardKey.Quit, "Ctrl+Q"])
        file_menu = mb.addMenu("&File")
        for act in (self.act_add_files, self.act_add_folder, None, self.act_open_trace, self.act_export,
                    self.act_send, self.act_show_trace, self.act_copy_trace_path, self.act_compare, None, self.act_settings, None,
                    self.act_quit):
            file_menu.addSeparator() if act is None else file_menu.addAction(act)

        self.act_run = a("&Run query", self.start_run, ["Ctrl+Return", "Ctrl+Enter"], "run",
                         "Run the question over the documents")
        self.act_stop = a("&Stop run", self.stop_run, ["Esc"], "stop",
                          "Cancel every model call, kill the REPL, save the trace")
        self.act_new_session = a("&New session", self.new_session, ["Ctrl+N"], "clear",
                                 "Start clean: the next question gets an empty REPL and no earlier turns")
        self.act_clear_docs = a("&Clear documents", self.documents.clear, [])
        run_menu = mb.addMenu("&Run")
        for act in (self.act_run, self.act_stop, self.act_new_session, None, self.act_clear_docs):
            run_menu.addSeparator() if act is None else run_menu.addAction(act)

        # Tools → Evaluate: RLM vs a direct call on generated tasks (ui/evaluate_window.py).
        self.act_evaluate = a("&Evaluate…", self.open_evaluate, [],
                              tip="Compare RLM runs with direct calls on generated long-context tasks")
        mb.addMenu("&Tools").addAction(self.act_evaluate)

        tp = self.trace_pane
        self.act_find = a("&Find in trace", tp.focus_filter, [QKeySequence.StandardKey.Find])
        self.act_errors = a("&Errors only", lambda: tp.errors_only.toggle(), ["Ctrl+Shift+E"])
        self.act_expand = a("E&xpand all", tp.expand_all, ["Ctrl+Shift+Down"])
        self.act_collapse = a("C&ollapse all", tp.collapse_all, ["Ctrl+Shift+Up"])
        self.act_follow = a("F&ollow newest step", lambda: tp.set_follow(True), ["Ctrl+L"])
        view_menu = mb.addMenu("&View")
        for act in (self.act_find, self.act_errors, self.act_expand, self.act_collapse, self.act_follow):
            view_menu.addAction(act)
        view_menu.addSeparator()
        focus = [("&Documents", lambda: self._focus_tab(0, self.documents.table), "Alt+1"),
                 ("&History", lambda: self._focus_tab(1, self.history.table), "Alt+2"),
                 ("&Question", lambda: self.query.question.setFocus(), "Alt+3"),
                 ("&Trace", lambda: tp.view.setFocus(), "Alt+4"),
                 ("D&etail", lambda: self.detail.tabs.setFocus(), "Alt+5"),
                 ("&Answer", lambda: self.answer.text.setFocus(), "Alt+6")]
        go = view_menu.addMenu("&Go to pane")
        for text, slot, key in focus:
            go.addAction(a(text, slot, [key]))

        self.act_remove_docs = QAction("Remove selected documents", self.documents.table)
        self.act_remove_docs.setShortcut(QKeySequence.StandardKey.Delete)
        self.act_remove_docs.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        self.act_remove_docs.triggered.connect(self.documents.remove_selected)
        self.documents.table.addAction(self.act_remove_docs)

        help_menu = mb.addMenu("&Help")
        help_menu.addAction(a("&Keyboard shortcuts", self._show_shortcuts, ["F1"]))
        self.act_open_logs = a("Open the &log folder", self.open_log_folder, [])
        help_menu.addAction(self.act_open_logs)
        help_menu.addAction(a("&About RLM Desktop", self._show_about, []))

        tb = QToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for act in (self.act_add_files, self.act_add_folder, None, self.act_open_trace, self.act_export,
                    None, self.act_settings):
            tb.addSeparator() if act is None else tb.addAction(act)
        self.addToolBar(tb)

    def _focus_tab(self, index: int, widget: QWidget) -> None:
        self.left_tabs.setCurrentIndex(index)
        widget.setFocus()

    def _splitters(self) -> dict[str, QSplitter]:
        return {"main": self.main_split, "left": self.left_split, "right": self.right_split,
                "documents": self.documents.splitter, "center": self.center_split}

    def _headers(self) -> dict[str, Any]:
        return {"trace": self.trace_pane.view.header(),
                "documents": self.documents.table.horizontalHeader(),
                "history": self.history.table.horizontalHeader()}

    def reload_settings(self) -> None:
        s = self.settings
        root_pid, root_model = s.last_root_choice()
        sub_pid, sub_model = s.last_sub_choice()
        self.query.set_providers(s.providers(), ModelChoice(root_pid, root_model),
                                 ModelChoice(sub_pid, sub_model))
        self.query.set_limits(s.default_limits())
        self.documents.follow_outside_links = s.follow_outside_links()

    def _update_actions(self, *_args: Any) -> None:
        running = self.current_run is not None and self.bridge.is_running(self.current_run)
        self.act_run.setEnabled(not running)
        self.act_stop.setEnabled(running)
        self.act_export.setEnabled(len(self.model.trace) > 0)
        self.act_send.setEnabled(len(self.model.trace) > 0)
        has_file = self.shown_trace_path is not None
        self.act_show_trace.setEnabled(has_file)
        self.act_copy_trace_path.setEnabled(has_file)
        self.act_open_trace.setEnabled(True)

    # -- documents and drops -----------------------------------------------------------------------
    def open_paths(self, paths: Iterable[str | Path]) -> None:
        """Load documents and open trace files (the last trace given is shown)."""
        plist = [Path(p).expanduser() for p in paths]
        missing = [p for p in plist if not p.exists()]
        if missing:
            self.status.showMessage("Not found: " + ", ".join(str(p) for p in missing), 10000)
        traces = [p for p in plist if p.exists() and is_trace_file(p)]
        docs = [p for p in plist if p.exists() and p not in traces]
        if docs:
            self.left_tabs.setCurrentWidget(self.documents)
            self.documents.add_paths(docs)
            if not traces:
                # Documents given (`rlm-desktop FOLDER`, a drop): the next thing is the question,
                # so the first keystrokes go into it.
                self.activateWindow()
                self.query.question.setFocus(Qt.FocusReason.OtherFocusReason)
        if traces:
            self.open_trace_file(traces[-1])

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() in (QEvent.Type.DragEnter, QEvent.Type.DragMove, QEvent.Type.Drop):
            mime = event.mimeData()  # type: ignore[attr-defined]
            if mime is not None and mime.hasUrls() and any(u.isLocalFile() for u in mime.urls()):
                if event.type() == QEvent.Type.Drop:
                    self._handle_drop(event)  # type: ignore[arg-type]
                else:
                    event.acceptProposedAction()  # type: ignore[attr-defined]
                return True
        return super().eventFilter(obj, event)

    def dragEnterEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dragMoveEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        self._handle_drop(event)

    def _handle_drop(self, event: QDropEvent) -> None:
        paths = [Path(u.toLocalFile()) for u in event.mimeData().urls() if u.isLocalFile()]
        if not paths:
            return
        event.acceptProposedAction()
        # After the drop has returned to its source: opening a trace during a run asks a question,
        # and a modal question inside a drop handler would keep the drag source waiting.
        QTimer.singleShot(0, lambda: self.open_paths(paths))

    # -- runs: one window session (documents + a live REPL + turns) through the session layer -----
    @property
    def shown_trace_path(self) -> Path | None:
        """The file of the trace shown (a turn in progress: its session's file once it is open)."""
        if self._shown_path is None and self.current_run is not None and self.bridge.is_running(self.current_run):
            path = self.bridge.trace_path(self.current_run)
            return path if path is not None and path.is_file() else None
        return self._shown_path

    @shown_trace_path.setter
    def shown_trace_path(self, path: Path | None) -> None:
        self._shown_path = path

    def _new_session_name(self) -> str:
        """A fresh name for the window's session: app-YYYYMMDD-HHMMSS (so Continue works after a
        restart, and `rlm-desktop sessions list` shows it)."""
        base = "app-" + time.strftime("%Y%m%d-%H%M%S")
        name, n = base, 2
        while self.session_store.folder(name).exists():
            name, n = f"{base}-{n}", n + 1
        return name

    def _close_window_session(self) -> None:
        """Close the window's session on the engine loop; the next question starts a new one."""
        old = self._session
        if old.opened or old.name is not None:
            self.bridge.close_session(old.id)
        self._session = _WindowSession(next(_SESSION_IDS))
        self._showing_session = False
        self.query.set_session(None)

    def start_run(self) -> int | None:
        """Ask the question of the query pane: the next turn of the window's session (a new session
        on the first question). Returns the run id, or None (the reason is shown)."""
        if self.current_run is not None and self.bridge.is_running(self.current_run):
            return None
        if self.documents.loading:
            self._warn("Documents are still loading; wait for them (or cancel) before running.")
            return None
        ds = self.documents.document_set()
        if not ds.documents:
            self._warn("Add at least one readable document first (drop files or a folder on the window, "
                       "or use Add files / Add folder).")
            return None
        query = self.query.query()
        if not query:
            self._warn("Type a question about the documents first.")
            self.query.question.setFocus()
            return None
        root, sub = self.query.root_choice(), self.query.sub_choice()
        try:
            limits = self.query.limits()
            root_prof = self.settings.profile(root.profile_id)
            sub_prof = root_prof if sub.profile_id == root.profile_id else self.settings.profile(sub.profile_id)
            root_model = root.model or root_prof.root_model
            chosen = self._confirm_model_mix(root_prof, root_model, sub_prof)
            if chosen is None:
                return None
            custom_prompt = self._custom_prompt_confirmed()
            if custom_prompt is False:
                return None
            if chosen is not sub_prof:              # the root's provider answers sub-calls too
                sub_prof, sub = root_prof, ModelChoice(root_prof.id, root_prof.sub_model or root_model)
                self.query.sub_picker.set_profiles(self.settings.providers(), sub, sub=True)
            sub_model = sub.model or sub_prof.sub_model or sub_prof.root_model or root_model
            sandbox = self.settings.sandbox_limits()
            memo = self.settings.memo_cache()
        except ConfigError as exc:
            self._warn(str(exc), title="Cannot start the run")
            return None
        self.settings.set_last_root_choice(root.profile_id, root_model)
        self.settings.set_last_sub_choice(sub.profile_id, sub_model)
        paths = tuple(str(d.path) for d in ds.documents)
        note = ""
        ws = self._session
        if ws.opened and any(p not in paths for p in ws.docs):
            self._close_window_session()
            ws = self._session
            note = "Documents were removed since the last turn, so this question starts a new session. "
        added = tuple(p for p in paths if p not in ws.docs) if ws.opened else ()
        chosen = (root_prof.id, root_model, sub_prof.id, sub_model)
        turn_models: tuple[str, str] | None = None
        if ws.opened and ws.models is not None and ws.models != chosen:
            if (ws.models[0], ws.models[2]) == (chosen[0], chosen[2]) and not root_prof.is_demo:
                # the same providers, other models: the session goes on with them (REPL kept)
                turn_models = (root_model, sub_model)
                note += (f"This turn uses {root_model} / {sub_model} (the session had {ws.models[1]} / "
                         f"{ws.models[3]}); its REPL and earlier turns stay. ")
                ws.models = chosen
            else:
                same = ws.models[0] if ws.models[0] == ws.models[2] else f"{ws.models[0]} / {ws.models[2]}"
                note += (f"This session keeps the provider it started with ({same}); another model of "
                         "it can be chosen, and New session (Ctrl+N) uses another provider. ")
        elif not ws.opened:
            ws.models = chosen
        # A new session takes the pane's note; a continued one keeps its own (the session refuses
        # another: its system prompt is fixed).
        session_note = self.query.note() if ws.name is None and ws.continue_trace is None else None
        if ws.name is None and ws.continue_trace is None:
            ws.name = self._new_session_name()
        name, cont = ws.name, ws.continue_trace
        store, history, follow = self.session_store, self.history.store, self.documents.follow_outside_links

        def providers() -> tuple[ProviderConfig, ProviderConfig | None]:
            # On a worker thread: the keyring may wait for an unlock prompt.
            p = provider_config_for(root_prof)
            return p, (None if sub_prof is root_prof else provider_config_for(sub_prof))

        def open_session(p: ProviderConfig, sp: ProviderConfig | None) -> Any:
            from rlm_desktop.session.session import Session

            return Session(list(paths), documents=ds, name=name, provider=p, sub_provider=sp,
                           model=root_model, sub_model=sub_model, limits=limits, sandbox=sandbox,
                           memo_cache=memo, source="app", store=store, history=history,
                           follow_outside_links=follow, trace_path=cont, continue_trace=cont is not None,
                           note=session_note, custom_prompt=custom_prompt or None)

        expected = cont if cont is not None else store.trace_path(name) if name else None
        request = TurnRequest(session_id=ws.id, question=query, limits=limits, providers=providers,
                              open_session=open_session, trace_path=expected, added=added, documents=ds,
                              models=turn_models)
        if self.current_run is not None:
            self.bridge.discard(self.current_run)
        if self._showing_session and len(self.model.trace) > 0:
            self.model.set_live(True)               # a follow-up: the earlier turns stay in the tree
        else:
            self.model.set_trace(Trace({"query": query}), live=True)
            self.shown_trace_path = None
        self._showing_session = True
        self._turn_docs = paths
        self.detail.show_span(None, None)
        self.answer.clear(running=True)
        self._show_read_marks(last_shown=False)   # the session's earlier turns keep their read marks
        self._max_sub_calls = limits.max_sub_calls
        self.status.reset(limits.budget_usd)
        self._figures_t = 0.0
        self.trace_pane.set_follow(True)
        run_id = self.bridge.start_turn(request)
        self.current_run = run_id
        self._history_seen = False
        self._run_t0 = time.monotonic()
        self._elapsed.start()
        self.query.set_running(True)
        self.setWindowTitle(f"{APP_TITLE} — running: {query[:60]}")
        self.status.showMessage(f"{note}Running…", 8000 if note else 3000)
        self._update_actions()
        self.run_started.emit(run_id)
        return run_id

    def new_session(self) -> bool:
        """Start clean: the window's session is closed (its REPL stops; it stays in History and can
        be continued). A turn in progress is stopped, after asking."""
        if self.current_run is not None and self.bridge.is_running(self.current_run):
            if not self.confirm_discard("A question is still running in this session. Stop it and "
                                        "start a new session? (Its trace is saved and listed in History.)"):
                return False
            self.stop_run()
            self.bridge.discard(self.current_run)
            self.current_run = None
            self._elapsed.stop()
            self.query.set_running(False)
        self._close_window_session()
        self.model.set_trace(Trace(), live=False)
        self.shown_trace_path = None
        self.detail.show_span(None, None)
        self.answer.clear()
        self.documents.set_seen([])
        self.status.idle()
        self.setWindowTitle(APP_TITLE)
        self.query.question.setFocus()
        self.status.showMessage("New session: the next question starts with an empty REPL.", 8000)
        self._update_actions()
        return True

    def _confirm(self, text: str) -> bool:
        answer = QMessageBox.question(self, "Start a new session?", text,
                                      QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                                      QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def continue_session(self, entry: HistoryEntry) -> bool:
        """History → Continue: the window's session becomes the one of ``entry`` (a named session,
        or an unnamed run's trace). Its REPL is rebuilt from the recording on the next question,
        without a model request."""
        if self.current_run is not None and self.bridge.is_running(self.current_run):
            if not self.confirm_discard("A question is still running. Stop it and continue the "
                                        "chosen session instead?"):
                return False
            self.stop_run()
        store = self.session_store
        docs: list[str] = []
        if entry.session and store.exists(entry.session):
            path = store.trace_path(entry.session)
            docs = [str(p) for p in store.load_meta(entry.session).get("docs") or []]
            ws = _WindowSession(next(_SESSION_IDS), name=entry.session)
        elif Path(entry.trace).is_file():
            path = Path(entry.trace)
            ws = _WindowSession(next(_SESSION_IDS), continue_trace=path)
        else:
            self._warn(f"The session's trace file is missing ({entry.trace}); it cannot be continued.")
            return False
        self._close_window_session()
        ws.trace_path = path
        self._session = ws
        loaded = sorted(str(d.path) for d in self.documents.document_set().documents)
        if docs and loaded != sorted(docs):
            self.documents.clear()
            self.left_tabs.setCurrentWidget(self.documents)
            self.documents.add_paths(docs)
        label = entry.session or "this run"
        self.open_trace_file(path)
        self.query.set_session(label, follow_up=True)
        self.query.set_query("")
        self.query.question.setFocus()
        where = "" if docs else " Its documents were not recorded: the ones loaded now are used."
        self.status.showMessage(f"Continuing {label}: the next question is a follow-up; its REPL is "
                                f"rebuilt from the recorded cells first, without a model request.{where}",
                                15000)
        return True

    def _open_from_history(self, path: str) -> None:
        # The "running" row of the run in progress is that run: it is already shown, and opening
        # its file would stop it.
        if (self.current_run is not None and self.bridge.is_running(self.current_run)
                and self.shown_trace_path is not None and Path(path) == Path(self.shown_trace_path)):
            self.status.showMessage("That run is still going and is the one shown; Stop (Esc) ends it.",
                                    10000)
            self.trace_pane.view.setFocus()
            return
        self.open_trace_file(Path(path))

    def _ask_again(self, question: str) -> None:
        self.query.set_query(question)
        self.query.question.setFocus()
        n = len(self.documents.documents)
        self.status.showMessage(f"Question taken from the history; Run (Ctrl+Enter) asks it over the "
                                f"{n} document{'s' if n != 1 else ''} loaded now.", 10000)

    def watch_trace(self, producer: Trace) -> int:
        """Show a trace produced elsewhere (any thread) live, through the same relay as a run."""
        if self.current_run is not None:
            self.bridge.discard(self.current_run)
        run_id = self.bridge.mirror(producer)
        self.model.set_trace(Trace(dict(producer.header)), live=True)
        self._showing_session = False
        self.current_run = run_id
        self.detail.show_span(None, None)
        self.trace_pane.set_follow(True)
        return run_id

    def stop_run(self) -> None:
        if self.current_run is None or not self.bridge.is_running(self.current_run):
            return
        self.bridge.stop(self.current_run)
        self.query.set_stopping()
        self.status.showMessage("Stopping: cancelling model calls and killing the REPL…")

    def _on_events_ready(self, run_id: int) -> None:
        if run_id != self.current_run:
            self.bridge.discard(run_id)     # a run this window no longer shows
            return
        events = self.bridge.take_events(run_id)
        if not self._history_seen and any(isinstance(e, TraceEvent) for e in events):
            self._history_seen = True       # the session listed the turn before its first step
            self.history.reload()
        self.model.enqueue(events)

    def _on_batch(self, events: list[TraceEvent]) -> None:
        if not self.model.live:
            return
        # Totals walk the turn's steps: at most twice a second while a turn streams.
        if time.monotonic() - self._figures_t >= 0.5:
            self._refresh_figures()
        else:
            self._figures_dirty = True
        self._update_actions()

    def _refresh_figures(self) -> None:
        """Turn and session totals of the shown trace, from the one totals function."""
        self._figures_t, self._figures_dirty = time.monotonic(), False
        trace = self.model.trace
        if not trace.roots:
            self.status.update_figures(0.0, True, 0, 0, 0, 0, self._max_sub_calls)
            self.status.set_session_totals(None)
            return
        turn_span = trace.roots[-1]
        t = totals(turn_span)
        self.status.update_figures(t.cost_usd, t.cost_known, t.input_tokens, t.output_tokens,
                                   t.cached_tokens, t.sub_calls, self._max_sub_calls,
                                   estimated=t.tokens_estimated)
        number = turn_span.attributes.get(Attr.TURN)
        self.status.set_session_totals(SessionFigures(number if isinstance(number, int) else len(trace.roots),
                                                      t, totals(trace), len(trace.roots)))

    def _on_header(self, attrs: dict[str, Any]) -> None:
        if "isolation" in attrs:
            iso = attrs["isolation"]
            self.status.set_isolation(iso if isinstance(iso, dict) else None)

    def _tick_elapsed(self) -> None:
        self.status.set_elapsed(time.monotonic() - self._run_t0)
        if self._figures_dirty:
            self._refresh_figures()

    def _on_run_finished(self, outcome: RunOutcome) -> None:
        self.history.reload()               # the session recorded the turn's outcome
        if outcome.not_started:
            self._on_run_not_started(outcome)
            return
        ws = self._session
        if outcome.session_id == ws.id:
            ws.opened, ws.docs, ws.trace_path = True, self._turn_docs, outcome.trace_path
            ws.turns = max(ws.turns, outcome.turn_number)
        if outcome.run_id != self.current_run:
            return
        res = outcome.result
        status = res.status if res is not None else "error"
        self.model.enqueue(self.bridge.take_events(outcome.run_id))
        self.model.flush()
        self.model.set_live(False)
        self.shown_trace_path = outcome.trace_path
        QTimer.singleShot(0, self.gc_policy.collect_full)
        self._elapsed.stop()
        self.status.set_elapsed(outcome.finished - outcome.started)
        self.query.set_running(False)
        self.last_outcome = outcome
        self._refresh_figures()
        if res is not None:
            self.answer.set_result(res.answer, res.status, res.stop_reason, res.reason)
            self._show_sources()
            if res.isolation:
                self.status.set_isolation(res.isolation)
        label = outcome.session or "this run"
        if outcome.session_id == ws.id:
            self.query.set_session(label, follow_up=True, turns=ws.turns)
            if res is not None and res.status == "ok":
                self.query.set_query("")            # the box now asks for a follow-up
        rebuild = outcome.turn.rebuild if outcome.turn is not None else None
        if outcome.error:
            self.answer.set_result(None, "error", "error", outcome.error)
            self.status.showMessage(outcome.error, 15000)
        elif rebuild is not None and rebuild.problems:
            self._warn("The session's REPL was rebuilt from its recorded cells, but not all of its state "
                       "came back:\n\n" + "\n".join("• " + p.text() for p in rebuild.problems)
                       + "\n\nThe model was told; it recomputes what it needs.",
                       title="Session rebuilt with gaps")
        else:
            rebuilt = (f" The REPL was rebuilt from {rebuild.cells} recorded cell(s) with no model request."
                       if rebuild is not None else "")
            self.status.showMessage(f"Turn {outcome.turn_number} finished: {status}.{rebuilt} Trace saved "
                                    f"to {outcome.trace_path}", 10000)
        self.setWindowTitle(f"{APP_TITLE} — {outcome.query[:60]}")
        self.detail.show_span(self.trace_pane.selected_span(), self.model.trace, live=False)
        self._update_actions()
        self.run_finished.emit(outcome)

    def _show_sources(self) -> None:
        """The shown turn's citations and sources: links and the Sources list in the answer pane;
        the session's read marks on the documents' rows (the shown turn's told apart)."""
        trace = self.model.trace
        runs = [r for r in trace.roots if r.kind == SpanKind.RUN]
        run = runs[-1] if runs else None
        self._answer_run = run
        self.answer.set_sources(trace if run is not None else None, run)
        self.answer.set_turn(len(runs), len(runs))
        self._show_read_marks()

    def _show_turn(self, run: Span) -> None:
        """Show an earlier (or the latest) turn of the shown session: its answer, why it stopped,
        its citations and Sources list, and the read marks with that turn's own reads told apart."""
        trace = self.model.trace
        runs = [r for r in trace.roots if r.kind == SpanKind.RUN]
        if run not in runs:
            return
        self._answer_run = run
        a = run.attributes
        self._set_answer_of(run)
        self.answer.set_sources(trace, run)
        k = runs.index(run) + 1
        self.answer.set_turn(k, len(runs))
        self._show_read_marks(shown=run)
        if len(runs) > 1:
            question = " ".join(str(a.get(Attr.QUERY) or "").split())
            self.status.showMessage(f"Showing turn {k} of {len(runs)}"
                                    + (f": {question[:120]}" if question else ""), 8000)

    def _set_answer_of(self, run: Span) -> None:
        """The answer pane shows ``run``'s recorded answer and why it stopped."""
        a = run.attributes
        if run.end is None:
            self.answer.set_result(a.get(Attr.ANSWER), "error", "incomplete",
                                   "the trace was cut short (the app or the run was interrupted)")
        else:
            status = "ok" if str(run.status) == "ok" else (
                "cancelled" if str(run.status) == "cancelled" else "limit")
            self.answer.set_result(a.get(Attr.ANSWER), status, a.get(Attr.STOP_REASON), a.get(Attr.ERROR))

    def _show_read_marks(self, *, last_shown: bool = True, shown: Span | None = None) -> None:
        """What every turn of the shown session read, on the documents' rows and in the preview;
        ``shown`` is the turn shown (default the last in the trace; none while a follow-up starts,
        ``last_shown`` False)."""
        trace = self.model.trace
        turns: list[tuple[int, list[SourceRange]]] = []
        shown_n: int | None = None
        for i, run in enumerate((r for r in trace.roots if r.kind == SpanKind.RUN), 1):
            n = run.attributes.get(Attr.TURN)
            n = n if isinstance(n, int) and not isinstance(n, bool) else i
            turns.append((n, sources_for(trace, run)))
            if run is shown:
                shown_n = n
        if shown is None and turns and last_shown:
            shown_n = turns[-1][0]
        self.documents.set_session_seen(turns, shown_n)

    def _show_source(self, target: SourceTarget) -> None:
        """A citation or source activated in the answer pane: its lines in the document preview."""
        self.left_tabs.setCurrentWidget(self.documents)
        self.documents.show_range(target.document, target.start_line, target.end_line, target.page,
                                  target.sheet)

    def _on_run_not_started(self, outcome: RunOutcome) -> None:
        """No key (or the session could not be opened): nothing ran and nothing was spent."""
        if outcome.run_id != self.current_run:
            return
        self.model.set_live(False)
        self._elapsed.stop()
        self.query.set_running(False)
        self.last_outcome = outcome
        self.status.idle()
        self.answer.set_result(None, "error", "error", outcome.error)
        if outcome.error != "stopped before it started":
            self._warn(f"The run did not start: {outcome.error}", title="Cannot start the run")
        self.setWindowTitle(APP_TITLE)
        self._update_actions()
        self.run_finished.emit(outcome)

    def choose_compare(self) -> None:
        """File → Compare runs…: pick two traces (or FILE#N turns), then compare them."""
        from rlm_desktop.ui.compare_window import CompareDialog

        dlg = CompareDialog(self)
        if dlg.exec():
            self.open_compare(*dlg.specs())

    def open_compare(self, spec_a: str, spec_b: str) -> QWidget | None:
        """Show two runs side by side (a window of their own; several can be open)."""
        from rlm_desktop.core.compare import CompareError
        from rlm_desktop.ui.compare_window import CompareWindow

        try:
            w = CompareWindow(spec_a, spec_b, parent=self)
        except CompareError as exc:
            QMessageBox.warning(self, "Cannot compare", f"{exc}")
            return None
        w.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        w.show()
        w.raise_()
        self.compare_window = w
        return w

    def open_evaluate(self) -> QWidget:
        """Show the Evaluate window (one per main window; its item traces open here)."""
        from rlm_desktop.ui.evaluate_window import EvaluateWindow

        w = getattr(self, "evaluate_window", None)
        if w is None:
            w = EvaluateWindow(self.settings, engine=self.bridge.engine, open_trace=self.open_trace_file,
                               parent=self)
            self.evaluate_window = w
        w.show()
        w.raise_()
        w.activateWindow()
        return w

    # -- traces ------------------------------------------------------------------------------------
    def choose_trace(self) -> None:
        from rlm_desktop.core.paths import traces_dir

        path, _ = QFileDialog.getOpenFileName(self, "Open a saved trace", str(traces_dir()),
                                              "RLM traces (*.jsonl);;All files (*)")
        if path:
            self.open_trace_file(Path(path))

    def open_trace_file(self, path: Path) -> bool:
        """Read ``path`` on a worker thread, then show it. While a run is going the user is asked
        first: stop it and open, or cancel (the run goes on). False: not opened."""
        stopped = ""
        if self.current_run is not None and self.bridge.is_running(self.current_run):
            if not self._ask_stop_for_open(path):
                self.status.showMessage(f"Not opened {path.name}: the run goes on.", 8000)
                return False
            if self.current_run is not None and self.bridge.is_running(self.current_run):
                # (still going: it may have ended by itself while the question was open)
                stopped = "Stopped the run in progress (its trace is saved and listed in History). "
                self.stop_run()
        if self._open_job is not None:
            self._open_job.cancel.cancel("another trace was opened")
        job = ThreadJob(lambda _j: read_trace(path), name="open-trace", parent=self)
        self._open_job = job
        job.finished.connect(lambda trace: self._on_trace_read(job, path, trace))
        job.failed.connect(lambda msg: self._on_trace_failed(job, path, msg))
        self._open_note = stopped
        self.status.showMessage(f"{stopped}Opening {path.name}…")
        job.start()
        return True

    def _ask_stop_for_open(self, path: Path) -> bool:
        """Ask whether to stop the run in progress to show ``path`` (the default is Cancel)."""
        return self.ask("A run is going", f"A run is still going. Opening {path.name} stops it (what it "
                        "did so far stays saved in its trace and in History).",
                        ["&Stop the run and open"]) == 0

    def ask(self, title: str, text: str, choices: list[str], *, cancel: str | None = None) -> int | None:
        """A question with ``choices`` (button texts) and a Cancel button, the default and Esc.
        Returns the index of the choice, or None for Cancel. While it waits, the event loop turns
        (a run keeps streaming); the open box is ``question_box``."""
        box = QMessageBox(QMessageBox.Icon.Question, title, text, QMessageBox.StandardButton.NoButton, self)
        buttons = [box.addButton(c, QMessageBox.ButtonRole.AcceptRole) for c in choices]
        if cancel is None:
            no = box.addButton(QMessageBox.StandardButton.Cancel)
        else:
            no = box.addButton(cancel, QMessageBox.ButtonRole.RejectRole)
        box.setDefaultButton(no)
        box.setEscapeButton(no)
        self.question_box = box
        try:
            box.exec()
            clicked = box.clickedButton()
            return next((i for i, b in enumerate(buttons) if b is clicked), None)
        finally:
            self.question_box = None
            box.deleteLater()

    def _on_trace_read(self, job: ThreadJob, path: Path, trace: Trace) -> None:
        if job is not self._open_job or job.cancel.cancelled:
            return
        self._open_job = None
        if self.current_run is not None:
            self.bridge.discard(self.current_run)
            self.current_run = None
            self._elapsed.stop()
            self.query.set_running(False)
        ws = self._session
        if ws.trace_path is None or Path(path) != ws.trace_path:
            if ws.opened or ws.continue_trace is not None or ws.turns:
                self._close_window_session()     # another trace: the next question starts anew
            self._showing_session = False
        else:
            self._showing_session = True         # the session's own file (Continue, or Open)
        self.model.set_trace(trace, live=False)
        self.shown_trace_path = path
        QTimer.singleShot(0, self.gc_policy.collect_full)   # frees the previous trace, off the open path
        self.detail.show_span(None, None)
        root = trace.roots[-1] if trace.roots else None     # a session's latest turn
        a = root.attributes if root is not None else {}
        recorded = a.get(Attr.LIMITS)
        budget = recorded.get("budget_usd") if isinstance(recorded, dict) else None
        self.status.reset(float(budget) if isinstance(budget, (int, float)) and budget > 0 else None)
        self._max_sub_calls = None
        self._refresh_figures()      # the latest turn's and the session's totals, as recorded
        if root is not None and root.duration is not None:
            self.status.set_elapsed(root.duration)
        iso = trace.header.get("isolation") or a.get(Attr.ISOLATION)
        self.status.set_isolation(iso if isinstance(iso, dict) else None)
        incomplete = sum(1 for s in trace.spans.values() if s.end is None)
        if root is None:
            self.answer.set_result(None, "error", None, "the trace file has no steps")
        else:
            self._set_answer_of(root)
        self._show_sources()
        query = str(trace.header.get("query") or a.get(Attr.QUERY) or "")
        self.setWindowTitle(f"{APP_TITLE} — {path.name}")
        if query and not self.query.query():
            self.query.set_query(query)
        msg = f"{self._open_note}Opened {path.name}: {len(trace):,} steps"
        self._open_note = ""
        if trace.truncated or incomplete:
            msg += (f"; cut short — {incomplete:,} step(s) never finished and are marked incomplete")
        if trace.skipped_lines:
            msg += f"; {trace.skipped_lines} unreadable line(s) skipped"
        self.status.showMessage(msg, 15000)
        self._update_actions()
        self.trace_opened.emit(str(path))

    def _on_trace_failed(self, job: ThreadJob, path: Path, message: str) -> None:
        if job is not self._open_job:
            return
        self._open_job = None
        text = f"Could not open {path.name}: {message}"
        self.status.showMessage(text, 15000)
        self.trace_open_failed.emit(text)
        self._notify("Trace not opened", text, QMessageBox.Icon.Warning)

    def export_trace(self, path: Path | None = None, fmt: str | None = None) -> ThreadJob | None:
        """Export the shown trace on a worker thread (a 100,000-step trace takes seconds to render);
        without ``path`` a file dialog asks. ``export_finished(path)`` follows; failures are said.
        A run still in progress is exported from its file on disk: everything recorded so far."""
        from rlm_desktop.core.exporters import write_export

        trace = self.model.trace
        if len(trace) == 0:
            self._warn("There is no trace to export yet: run a query or open a trace.")
            return None
        if path is None:
            base = (self.shown_trace_path.with_suffix("") if self.shown_trace_path else Path.home() / "trace")
            dlg = self._export_dialog(base)
            self.export_dialog = dlg
            try:
                if not dlg.exec() or not dlg.selectedFiles():
                    return None
                path, fmt = export_target(dlg.selectedFiles()[0], dlg.selectedNameFilter())
            finally:
                self.export_dialog = None
                dlg.deleteLater()
        target = Path(path)
        # The mirror trace is changed by the GUI thread while a run is live: the worker reads the
        # file instead. A finished or opened trace is never changed again, so it is read as it is.
        source = self.shown_trace_path if self.model.live else None

        def work(_job: ThreadJob) -> Path:
            return write_export(read_trace(source) if source is not None else trace, target, fmt)

        def failed(message: str) -> None:
            self._warn(f"Could not export to {target}: {message}", title="Export failed")

        def done(out: Path) -> None:
            self.status.showMessage(f"Exported to {out}", 10000)
            self.export_finished.emit(out)

        job = ThreadJob(work, name="export", parent=self)
        job.finished.connect(done)
        job.failed.connect(failed)
        self.status.showMessage(f"Exporting to {target}…")
        return job.start()

    def send_trace(self) -> ThreadJob | None:
        """File ▸ Send trace to…: read the kept headers from the keyring (off the GUI thread), ask in
        :class:`SendTraceDialog`, then remember what was asked and send, on a worker thread. The
        result or the error goes to the status bar and a message; ``send_finished`` follows."""
        from rlm_desktop.session import secrets

        if len(self.model.trace) == 0:
            self._warn("There is no trace to send yet: run a query or open a trace.")
            return None

        def read(_job: ThreadJob) -> tuple[dict[str, str], str]:
            try:
                return secrets.get_otlp_headers(), ""
            except secrets.SecretsError as exc:
                return {}, f"The kept headers could not be read: {exc}"

        job = ThreadJob(read, name="otlp-headers", parent=self)
        job.finished.connect(lambda got: self._ask_send(*got))
        job.failed.connect(lambda message: self._ask_send({}, message))
        return job.start()

    def _ask_send(self, headers: dict[str, str], note: str) -> None:
        from rlm_desktop.core.otlp_send import send_otlp
        from rlm_desktop.session import secrets
        from rlm_desktop.ui.send_dialog import SendTraceDialog

        dlg = SendTraceDialog(self.settings.otlp_endpoint(), headers, note, self)
        self.send_dialog = dlg
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        trace = self.model.trace
        source = self.shown_trace_path if self.model.live else None    # as export_trace does

        def go() -> None:
            self.send_dialog = None
            endpoint, hdrs, remember = dlg.endpoint, dlg.headers, dlg.remember
            if remember:
                self.settings.set_otlp_endpoint(endpoint)    # checked by the dialog already

            def work(_job: ThreadJob) -> tuple[Any, str]:
                kept = ""
                if remember:
                    try:
                        secrets.set_otlp_headers(hdrs)
                    except secrets.SecretsError as exc:
                        kept = f" (the headers were not remembered: {exc})"
                return send_otlp(read_trace(source) if source is not None else trace, endpoint, hdrs), kept

            def done(got: tuple[Any, str]) -> None:
                result, kept = got
                extra = f", {result.rejected_spans} rejected" if result.rejected_spans else ""
                self.status.showMessage(f"Sent {result.spans} spans to {result.endpoint}{extra}{kept}", 15000)
                self.send_finished.emit(result)

            def failed(message: str) -> None:
                self._warn(f"Could not send the trace: {message}", title="Send failed")
                self.send_finished.emit(message)

            job = ThreadJob(work, name="otlp-send", parent=self)
            job.finished.connect(done)
            job.failed.connect(failed)
            self.status.showMessage("Sending the trace…")
            job.start()

        dlg.accepted.connect(go)
        dlg.rejected.connect(lambda: setattr(self, "send_dialog", None))
        dlg.open()

    def _export_dialog(self, base: Path) -> QFileDialog:
        """The save dialog of an export. Choosing another format changes the extension of the
        typed name to match (where the dialog lets us see the name: Qt's own dialog); whatever
        is typed, ``export_target`` makes the typed extension decide the format."""
        dlg = QFileDialog(self, "Export trace", str(base.parent))
        dlg.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dlg.setNameFilters(list(EXPORT_FILTERS))
        dlg.setDefaultSuffix("html")
        dlg.selectFile(base.name + ".html")

        def filter_selected(name_filter: str) -> None:
            fmt, suffix = EXPORT_FILTERS.get(name_filter, ("html", ".html"))
            dlg.setDefaultSuffix(suffix.lstrip("."))
            edit = dlg.findChild(QLineEdit, "fileNameEdit")     # None in a native dialog
            if edit is None:
                return
            typed = edit.text().strip()
            try:
                format_for_path(Path(typed))
            except ExportError:
                return                                            # no format in it: the suffix is added
            wanted = _export_stem(typed) + suffix
            if wanted != typed:
                edit.setText(wanted)

        # Qt's own dialog changes the typed extension on the format combo's `activated`, but turns
        # "x.otlp.json" into "x.md" wrongly ("x.otlp.md") and back into "x.json"; this slot runs after
        # it (connected later) and sets the whole extension. A native dialog reports filterSelected.
        combo = dlg.findChild(QComboBox, "fileTypeCombo")
        if combo is not None:
            combo.activated.connect(lambda _i: filter_selected(dlg.selectedNameFilter()))
        else:
            dlg.filterSelected.connect(filter_selected)
        return dlg

    # -- misc --------------------------------------------------------------------------------------
    def _on_span_selected(self, span: Any) -> None:
        self.detail.show_span(span, self.model.trace, live=self.model.live)
        if span is None or self.model.live:
            return
        run = span
        while run.parent is not None:
            run = run.parent
        if run.kind == SpanKind.RUN and run is not self._answer_run:
            self._show_turn(run)        # a step of another turn: that turn's answer and sources

    def open_settings(self) -> None:
        try:
            from rlm_desktop.ui.settings_dialog import SettingsDialog
        except ImportError as exc:
            self._warn(f"The Settings dialog could not be loaded: {exc}")
            return
        dlg = SettingsDialog(self.settings, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dlg.accepted.connect(lambda: self._after_settings(dlg.added_profiles()))
        dlg.finished.connect(lambda _r: self._forget_not_started())
        dlg.open()          # window-modal, without blocking the event loop (a run keeps streaming)
        self.settings_dialog = dlg

    def _after_settings(self, added: list[ProviderProfile]) -> None:
        """Settings were saved: show them, and offer a provider just added for the next run (a
        user who added one means to use it; the pickers would otherwise stay on the demo)."""
        self.reload_settings()
        if not added or self.query.running:
            return
        prof = added[-1]
        root = prof.root_model or (prof.models[0] if prof.models else "")
        sub = prof.sub_model or root
        if not root or self.query.root_choice() == ModelChoice(prof.id, root):
            return
        models = f"{root}" + (f", sub-calls {sub}" if sub != root else "")
        if self.ask("Use the new provider?", f"Use {prof.label} for the root and sub model of the next "
                    f"runs ({models})?", ["&Use it"], cancel="&Not now") == 0:
            self.settings.set_last_root_choice(prof.id, root)
            self.settings.set_last_sub_choice(prof.id, sub)
            self.reload_settings()
            self.status.showMessage(f"Runs now use {prof.label}: {models}.", 8000)

    def _forget_not_started(self) -> None:
        """Settings closed (a key may have been saved, even with Cancel: keys are stored at once):
        a "did not start: no key" result shown from before is no longer the last word."""
        out = self.last_outcome
        if out is None or not out.not_started or self.query.running or out.run_id != self.current_run:
            return
        self.last_outcome = None
        self.answer.clear()
        self.status.showMessage("Settings closed: Run (Ctrl+Enter) tries again with them.", 10000)

    def _confirm_model_mix(self, root_prof: ProviderProfile, root_model: str,
                           sub_prof: ProviderProfile) -> ProviderProfile | None:
        """A real root model with the offline demo answering its sub-calls is almost always a
        leftover choice: say so before anything is spent. Returns the sub-call profile to use
        (the root's own, the demo), or None to not run."""
        if root_prof.is_demo or not sub_prof.is_demo:
            return sub_prof
        answer = self.ask("The sub model is the offline demo",
                          f"The root model is {root_model} ({root_prof.label}), but the sub model is "
                          "the offline demo: every llm_query would get a canned, extractive answer "
                          "instead of a model's.",
                          [f"Use {root_prof.label} for sub-calls too", "Run with the &demo"])
        if answer is None:
            self.status.showMessage("Not started: choose the sub model, then Run.", 8000)
            return None
        return root_prof if answer == 0 else sub_prof

    def _custom_prompt_confirmed(self) -> str | bool | None:
        """The custom system prompt from Settings (None: the built-in one), or False when it lacks
        part of the REPL contract and the user chose not to run. Asked before a session's first
        turn only: later turns reuse the system prompt the session started with."""
        from rlm_desktop.engine.prompts import missing_contract

        ws = self._session
        if ws.opened or ws.name is not None or ws.continue_trace is not None:
            return None
        custom = self.settings.custom_system_prompt()
        if not custom.strip():
            return None
        missing = missing_contract(custom)
        if missing and self.ask(
                "The custom system prompt lacks the REPL contract",
                "The custom system prompt (Settings ▸ Prompt) does not mention " + ", ".join(missing)
                + ". Without them the model may not know how to use the REPL, and the run may end "
                  "without an answer.", ["&Run anyway"]) is None:
            self.status.showMessage("Not started: fix the system prompt in Settings ▸ Prompt, or Run "
                                    "anyway.", 8000)
            return False
        return custom

    def _warn(self, text: str, title: str = APP_TITLE) -> None:
        self.status.showMessage(text, 10000)
        self._notify(title, text, QMessageBox.Icon.Information)

    def _notify(self, title: str, text: str, kind: QMessageBox.Icon) -> QMessageBox:
        """A window-modal message that does not block the event loop (runs keep streaming)."""
        box = QMessageBox(kind, title, text, QMessageBox.StandardButton.Ok, self)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()
        self.last_notice = box
        return box

    def shortcut_lines(self) -> list[str]:
        """"Action: keys" for every action with a shortcut (what Help ▸ Keyboard shortcuts shows)."""
        lines = []
        for act in self.actions():
            if act.shortcut().isEmpty():
                continue
            keys = ", ".join(dict.fromkeys(s.toString(QKeySequence.SequenceFormat.NativeText)
                                           for s in act.shortcuts()))
            lines.append(f"{act.text().replace('&', '')}: {keys}")
        return lines

    def _show_shortcuts(self) -> None:
        self._notify("Keyboard shortcuts", "\n".join(self.shortcut_lines()), QMessageBox.Icon.Information)

    def show_trace_file(self) -> bool:
        """The folder of the shown trace's file, in the file manager."""
        path = self.shown_trace_path
        if path is None:
            return False
        if QDesktopServices.openUrl(QUrl.fromLocalFile(str(Path(path).parent))):
            return True
        self._warn(f"No file manager could be opened. The trace is {path}")
        return False

    def copy_trace_path(self) -> None:
        if self.shown_trace_path is not None:
            QGuiApplication.clipboard().setText(str(self.shown_trace_path))
            self.status.showMessage(f"Copied: {self.shown_trace_path}", 5000)

    def open_log_folder(self) -> bool:
        """Show the folder of the app's log (JSON Lines; keys are never in it) in the file manager."""
        folder = log_file().parent
        folder.mkdir(parents=True, exist_ok=True)
        if QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder))):
            return True
        self._warn(f"No file manager could be opened. The log is in {folder}")
        return False

    def report_internal_error(self, summary: str) -> None:
        """Say that something inside the app failed (the details are in the log), without a flood:
        one dialog per minute at most, the status bar every time."""
        text = (f"RLM Desktop hit an internal error: {redact(summary)}\n\nThe details are in the log "
                f"({log_file()}). A run in progress carries on; if something looks wrong, save what "
                "you need (the trace is already on disk) and restart the app. Please include the log "
                "in a bug report.")
        self.status.showMessage(f"Internal error: {redact(summary)} (details in the log)", 15000)
        now = time.monotonic()
        if now - self._last_error_dialog >= 60.0:
            self._last_error_dialog = now
            self._notify("Internal error", text, QMessageBox.Icon.Warning)

    def _show_about(self) -> None:
        from rlm_desktop import __version__

        QMessageBox.about(self, "About RLM Desktop",
                          f"RLM Desktop {__version__}\n\nRun Recursive Language Models over folders of "
                          "documents, watch every step, control spend, stop at once.\n\n"
                          f"Traces: {traces_dir()}\nLog: {log_file()}")

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self.detail.update_palette()
        super().changeEvent(event)

    def save_state(self) -> None:
        self.window_state.save(self, self._splitters(), self._headers())
        self.window_state.set_flag("limits_expanded", self.query.limits_expanded)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.save_state()
        self.documents.cancel_and_wait()
        self.bridge.shutdown()
        # A run stopped by closing has reported its end by a queued signal: record it in the
        # history now, before the event loop ends.
        QCoreApplication.sendPostedEvents(self, QEvent.Type.MetaCall)
        self.gc_policy.stop()
        super().closeEvent(event)

