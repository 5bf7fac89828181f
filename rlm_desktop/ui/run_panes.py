"""Smaller panes around a run: the answer, the status bar (spend meter, tokens, elapsed, sub-calls,
turn and session totals, sandbox isolation badge) and the run history (sessions with their turns:
question, time, status, cost; kept in a JSONL file by the session layer)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence, QMouseEvent, QPalette, QTextDocument
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStatusBar,
    QStyle,
    QTableWidget,
    QTableWidgetItem,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from rlm_desktop.core.citations import Citation
from rlm_desktop.core.totals import Totals
from rlm_desktop.core.trace import Span, Trace
from rlm_desktop.session.history import HistoryEntry, HistoryStore  # noqa: F401 - re-exported
from rlm_desktop.ui import fmt
from rlm_desktop.ui.icons import icon, status_icon
from rlm_desktop.ui.sources_view import SourcesView, SourceTarget, cite_index, link_citations

BUDGET_WARN = 0.8

STOP_REASONS = {
    "final": "the model gave its final answer",
    "interrupted": "the app ended during the run (killed or crashed); the trace holds what was done",
    "running": "still running",
    "max_iterations": "the maximum number of iterations was reached",
    "budget_usd": "the USD budget was reached",
    "max_tokens": "the token budget was reached",
    "max_sub_calls": "the maximum number of sub-calls was reached",
    "run_timeout": "the run time limit was reached",
    "call_timeout": "a model call timed out",
    "cancelled": "you stopped the run",
    "provider_error": "the provider returned an error",
    "sandbox_refused": "the sandbox refused to start",
    "sandbox_error": "the sandbox failed",
    "incomplete": "the trace ends before the run did",
}


# Markdown as GitHub writes it, without raw HTML (an answer is model output, shown, never obeyed).
MARKDOWN = (QTextDocument.MarkdownFeature.MarkdownDialectGitHub
            | QTextDocument.MarkdownFeature.MarkdownNoHTML)


class AnswerView(QTextEdit):
    """Read-only rich view of an answer that never loads what the answer points at: an image
    ``![](http://…)`` or ``![](file:///…)`` written by a prompt-injected model shows as its alt
    text, and nothing is fetched or read (each refused name is kept in ``refused``). A click on a
    citation link (``rlmcite:N``) emits ``citation_clicked(N)``; other links do nothing."""

    citation_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse
                                     | Qt.TextInteractionFlag.TextSelectableByKeyboard)
        self.refused: list[str] = []
        self.viewport().setMouseTracking(True)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        super().mouseMoveEvent(event)
        inside = cite_index(self.anchorAt(event.position().toPoint())) is not None
        self.viewport().setCursor(Qt.CursorShape.PointingHandCursor if inside
                                  else Qt.CursorShape.IBeamCursor)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802 - Qt's name
        super().mouseReleaseEvent(event)
        # Only the app's own citation links do anything; any other link stays text.
        n = cite_index(self.anchorAt(event.position().toPoint()))
        if n is not None and event.button() == Qt.MouseButton.LeftButton \
                and not self.textCursor().hasSelection():
            self.citation_clicked.emit(n)

    def loadResource(self, kind: int, name: QUrl) -> Any:  # noqa: N802 - Qt's name
        self.refused.append(name.toString())
        return None


class AnswerPane(QWidget):
    """The answer (Markdown, its citations as links) and the *Sources* list under it.
    ``source_activated(SourceTarget)``: show a source in the document preview;
    ``step_activated(Span)``: select a step in the trace."""

    source_activated = Signal(object)
    step_activated = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("answerPane")
        self.heading = QLabel("Answer")
        self.heading.setObjectName("answerHeading")
        self._heading = "Answer"
        self._turn_note = ""
        f = self.heading.font()
        f.setBold(True)
        self.heading.setFont(f)
        self.reason = QLabel()
        self.reason.setObjectName("answerReason")
        self.reason.setWordWrap(True)
        self.text = AnswerView()
        self.text.setObjectName("answerText")
        self.text.setPlaceholderText("The final answer appears here when a run ends.")
        self.text.setAccessibleName("Answer")
        self.formatted = QCheckBox("&Formatted")
        self.formatted.setToolTip("Show the answer's Markdown formatted (headings, lists, tables, code); "
                                  "off: the text exactly as the model wrote it")
        self.formatted.setChecked(True)
        self.formatted.toggled.connect(self._render)
        self.copy_btn = QPushButton(icon("copy"), "Cop&y answer")
        self.copy_btn.setToolTip("Copy the answer exactly as the model wrote it (Markdown source)")
        self.copy_btn.clicked.connect(self.copy)
        self._answer = ""
        self.text.citation_clicked.connect(self.activate_citation)
        self.sources = SourcesView()
        self.sources.source_activated.connect(self.source_activated)
        self.sources.step_activated.connect(self.step_activated)
        self.sources.setVisible(False)
        self.sources.setMinimumHeight(3 * self.sources.fontMetrics().lineSpacing() + 8)
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.setObjectName("answerSplit")
        self.split.setChildrenCollapsible(False)
        self.split.addWidget(self.text)
        self.split.addWidget(self.sources)
        self.split.setStretchFactor(0, 3)
        self.split.setStretchFactor(1, 2)
        top = QHBoxLayout()
        top.addWidget(self.heading, 1)
        top.addWidget(self.formatted)
        top.addWidget(self.copy_btn)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.reason)
        lay.addWidget(self.split, 1)
        self.clear()

    def set_turn(self, turn: int, turns: int) -> None:
        """Say which turn of a session the answer belongs to (nothing for a single question)."""
        self._turn_note = f" — turn {turn} of {turns}" if turns > 1 else ""
        self.heading.setText(self._heading + self._turn_note)

    def _set_heading(self, text: str) -> None:
        self._heading = text
        self.heading.setText(text + self._turn_note)

    def clear(self, running: bool = False) -> None:
        self._turn_note = ""
        self._set_heading("Answer")
        self.reason.setText("Running…" if running else "")
        self.reason.setVisible(running)
        self._answer = ""
        self.text.setPlainText("")
        self.copy_btn.setEnabled(False)
        self.sources.set_run(None, None)
        self.sources.setVisible(False)

    def set_sources(self, trace: Trace | None, run: Span | str | None) -> None:
        """Show where the answer of ``run`` came from: its citations become links (unverified ones
        marked in the text) and the Sources list fills. None clears."""
        self.sources.set_run(trace, run)
        shown = trace is not None and run is not None
        self.sources.setVisible(shown)
        sizes = self.split.sizes()
        if shown and sizes[1] < self.sources.minimumHeight():
            total = sum(sizes) or self.split.height()
            self.split.setSizes([max(total - total * 2 // 5, 1), max(total * 2 // 5, 1)])
        self._render()

    def citations(self) -> list[Citation]:
        return list(self.sources.cites)

    def activate_citation(self, n: int) -> None:
        """Show citation ``n`` (as numbered in the answer's links) in the document preview."""
        if 0 <= n < len(self.sources.cites):
            self.source_activated.emit(SourceTarget.of(self.sources.cites[n]))

    def set_result(self, answer: str | None, status: str, stop_reason: str | None,
                   reason: str | None) -> None:
        """``status``: ok | limit | cancelled | error (as RunResult.status)."""
        partial = status != "ok"
        if not partial:
            self._set_heading("Answer")
            self.reason.setVisible(False)
        else:
            why = STOP_REASONS.get(stop_reason or "", stop_reason or status)
            self._set_heading("Partial answer" if answer else "No answer")
            detail = f": {reason.rstrip('.')}" if reason and reason not in why else ""
            self.reason.setText(f"The run stopped because {why}{detail}.")
            self.reason.setVisible(True)
        self._answer = answer or ""
        self._render()
        self.copy_btn.setEnabled(bool(answer))

    def _render(self) -> None:
        if self.formatted.isChecked():
            self.text.document().setMarkdown(link_citations(self._answer, self.sources.cites), MARKDOWN)
        else:
            self.text.setPlainText(self._answer)

    def source(self) -> str:
        """The answer exactly as the model wrote it."""
        return self._answer

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self._answer)


ISOLATION_TIPS = {
    "strong": "Strong: model code runs in its own namespaces with Landlock file rules, a seccomp "
              "filter and resource limits — no network, no access to your files.",
    "good": "Good: Landlock file rules, a seccomp filter and resource limits — no network, no access "
            "to your files outside the loaded documents.",
    "weak": "Weak: only a seccomp filter and resource limits protect your system; file access is "
            "not restricted. Allowed because you enabled weak sandboxes in Settings.",
    "none": "None: only resource limits apply. Model code could read your files.",
}


@dataclass(frozen=True)
class SessionFigures:
    """What the status bar says about a session: the shown turn's totals and the session's (both
    from :func:`rlm_desktop.core.totals.totals`)."""

    turn: int
    turn_totals: Totals
    session_totals: Totals
    turns: int

    def text(self) -> str:
        t, s = self.turn_totals, self.session_totals
        turn_cost = fmt.fmt_usd(t.cost_value, t.cost_known)
        session_cost = fmt.fmt_usd(s.cost_value, s.cost_known)
        return (f"turn {self.turn}: {turn_cost} · session: {session_cost} "
                f"({self.turns} turn{'s' if self.turns != 1 else ''})")


class RunStatusBar(QStatusBar):
    """Live spend against the budget (warns at 80%), tokens, elapsed, sub-calls, isolation badge."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.meter = QProgressBar()
        self.meter.setObjectName("budgetMeter")
        self.meter.setRange(0, 1000)
        self.meter.setMaximumWidth(220)
        self.meter.setTextVisible(True)
        self.tokens = QLabel()
        self.elapsed = QLabel()
        self.subcalls = QLabel()
        self.session = QLabel()
        self.session.setObjectName("sessionTotals")
        self.session.setContentsMargins(12, 0, 6, 0)     # apart from a clipped status message
        self.session.setToolTip("Spend of the turn shown (its budget is the meter's) and of its whole "
                                "session")
        self.badge = QLabel()
        self.badge.setObjectName("isolationBadge")
        self.badge.setMargin(2)
        for w in (self.session, self.meter, self.tokens, self.subcalls, self.elapsed, self.badge):
            self.addPermanentWidget(w)
        self.warned = False
        self.idle()

    def idle(self) -> None:
        """Before any run: nothing has been spent and no run's budget applies yet."""
        self.reset(None)
        self.meter.setFormat("no run yet")
        self.meter.setToolTip("The spend of the run shown, against its USD budget, appears here")
        self.tokens.setText("")
        self.subcalls.setText("")
        self.set_session_totals(None)

    def set_session_totals(self, figures: SessionFigures | None) -> None:
        """"turn 2: $0.0012 · session: $0.0040 (2 turns)"; hidden without a session."""
        self.figures = figures
        self.session.setText(figures.text() if figures is not None else "")
        self.session.setVisible(figures is not None)

    def reset(self, budget: float | None) -> None:
        self._budget = budget
        self.update_figures(0.0, True, 0, 0, 0, 0)
        self.elapsed.setText("")
        self.set_isolation(None)

    def update_figures(self, cost: float, cost_known: bool, tin: int, tout: int, cached: int,
                       sub_calls: int, max_sub_calls: int | None = None, *, estimated: bool = False) -> None:
        """Show the run's spend, tokens and sub-calls. ``estimated``: some model call reported no
        usage, so its tokens (and the cost priced from them) are estimates; they are marked '~'."""
        budget = self._budget
        spent = fmt.fmt_usd(cost, cost_known) if (cost or not cost_known) else "$0"
        if estimated and cost:
            spent = "~" + spent
        est_note = (" Marked '~': some calls reported no token usage, so their tokens are estimated "
                    "(characters ÷ 4) and so is the cost priced from them." if estimated else "")
        if budget:
            frac = min(1.0, cost / budget) if cost_known or cost else 0.0
            self.meter.setValue(int(frac * 1000))
            self.meter.setFormat(f"{spent} of ${budget:.2f}")
            self.warned = frac >= BUDGET_WARN
            self.meter.setToolTip(f"Spend so far against the run's USD budget (${budget:.2f})."
                                  + (" Over 80% used." if self.warned else "")
                                  + ("" if cost_known else " Some prices are unknown: the run stops "
                                     "on tokens instead.") + est_note)
        else:
            self.meter.setValue(0)
            self.meter.setFormat(f"{spent} spent (no USD budget)")
            self.warned = False
            self.meter.setToolTip("Spend so far; this run has no USD budget." + est_note)
        pal = self.meter.palette()
        default = QGuiApplication.palette().color(QPalette.ColorRole.Highlight)
        pal.setColor(QPalette.ColorRole.Highlight, Qt.GlobalColor.darkRed if self.warned else default)
        self.meter.setPalette(pal)
        self.meter.setProperty("warning", self.warned)
        mark = "~" if estimated else ""
        self.tokens.setText(f"tokens in {mark}{tin:,} (cached {cached:,}) · out {mark}{tout:,}")
        self.tokens.setToolTip(est_note.strip() if estimated else
                               "Tokens as the provider reported them, summed over every model call.")
        limit = f" / {max_sub_calls:,}" if max_sub_calls is not None else ""
        self.subcalls.setText(f"sub-calls {sub_calls:,}{limit}")

    def set_elapsed(self, seconds: float | None) -> None:
        self.elapsed.setText("" if seconds is None else f"elapsed {fmt.fmt_duration(seconds)}")

    def set_isolation(self, iso: dict[str, Any] | None) -> None:
        if not iso:
            self.badge.setText("sandbox: —")
            self.badge.setToolTip("The sandbox isolation level is shown once a run has started its REPL.")
            self.badge.setStyleSheet("")
            return
        level = str(iso.get("level", "?"))
        self.badge.setText(f"sandbox: {level}")
        tip = ISOLATION_TIPS.get(level, "")
        summary = iso.get("summary")
        layers = iso.get("layers")
        extra = []
        if summary:
            extra.append(str(summary))
        if isinstance(layers, dict) and layers:
            extra.append("Layers: " + ", ".join(f"{k}={v}" for k, v in layers.items()))
        self.badge.setToolTip("\n\n".join([tip, *extra]).strip())
        color = {"strong": "#2e7d32", "good": "#1565c0", "weak": "#e65100", "none": "#c62828"}.get(level)
        self.badge.setStyleSheet(f"QLabel {{ color: white; background: {color}; border-radius: 3px; "
                                 "padding: 0 4px; }" if color else "")


# -- history ---------------------------------------------------------------------------------------

# The history store is Qt-free and shared by every front end (rlm_desktop.session.history).


RUN_STATUS_ICONS = {"ok": "ok", "limit": "budget", "cancelled": "cancelled", "error": "error",
                    "running": "running", "interrupted": "incomplete"}
MISSING = "missing"        # the status shown for a run whose trace file is gone (the tooltip says more)


@dataclass
class HistoryGroup:
    """A session in the history: its turns (oldest first)."""

    key: str
    turns: list[HistoryEntry] = field(default_factory=list)

    @property
    def latest(self) -> HistoryEntry:
        return max(self.turns, key=lambda e: (e.turn or 0, e.started))

    @property
    def session(self) -> str | None:
        return self.latest.session

    @property
    def source(self) -> str:
        return self.latest.source

    @property
    def is_session(self) -> bool:
        """A named session, or an unnamed run that was continued (more than one turn)."""
        return self.session is not None or len(self.turns) > 1 or bool(self.latest.turn)


def group_entries(entries: list[HistoryEntry]) -> list[HistoryGroup]:
    """Turns grouped by session (its name; an unnamed session by its trace file), the session
    with the newest turn first; turns oldest first inside a session."""
    groups: dict[str, HistoryGroup] = {}
    for e in entries:                      # newest first
        key = f"session:{e.session}" if e.session else f"trace:{e.trace}"
        groups.setdefault(key, HistoryGroup(key)).turns.append(e)
    for g in groups.values():
        g.turns.sort(key=lambda e: (e.turn or 0, e.started))
    return list(groups.values())


SOURCE_TAGS = {"cli": "CLI", "python": "Python"}
# History's date filter: label -> how many days back (None: all).
DATE_RANGES = {"All dates": None, "Today": 0, "Last 7 days": 7, "Last 30 days": 30}
ANY_STATUS, ANY_MODEL = "Any status", "Any model"


def _day_start(days_back: int, now: float | None = None) -> float:
    """Local midnight ``days_back`` days before today (0: today's midnight)."""
    t = time.localtime(time.time() if now is None else now)
    midnight = time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))
    return midnight - days_back * 86_400


def entry_matches(e: HistoryEntry, *, text: str = "", status: str | None = None,
                  model: str | None = None, since: float | None = None) -> bool:
    """Whether a turn passes History's search (question and answer, case-insensitive) and its
    status, model and date filters."""
    if status is not None and e.status != status:
        return False
    if model is not None and e.provider != model:
        return False
    if since is not None and e.started < since:
        return False
    if text:
        needle = text.strip().lower()
        if needle not in e.query.lower() and needle not in (e.answer_preview or "").lower() \
                and needle not in (e.session or "").lower():
            return False
    return True


def _group_cost(g: HistoryGroup) -> float:
    costs = [e.cost_usd for e in g.turns if e.cost_usd is not None]
    return sum(costs) if costs else -1.0


# The sort key of a session (and of a one-turn run) for each column.
GROUP_SORT_KEYS = (
    lambda g: (g.session or g.latest.query).lower(),
    lambda g: g.latest.started,
    lambda g: g.latest.status,
    _group_cost,
)
TIME_FORMAT = "%m-%d %H:%M"      # the year is in the tooltip; the question gets the width


class HistoryPane(QWidget):
    """The history as sessions with their turns: a session row (name, where it was asked from,
    turns, total cost) followed by its turns, indented; a one-turn run is one row. Open, Continue,
    Ask again and Remove act on the selected row."""

    open_requested = Signal(str)        # trace path
    ask_again_requested = Signal(str)   # the question of a past turn
    continue_requested = Signal(object)  # HistoryEntry: the latest turn of the session to continue
    compare_requested = Signal(str, str)  # two runs (trace path, or path#turn)

    def __init__(self, store: HistoryStore, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("historyPane")
        self.store = store
        self.table = QTableWidget(0, 4)
        self.table.setObjectName("historyTable")
        self.table.setHorizontalHeaderLabels(["Session / question", "Time", "Status", "Cost"])
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # Two rows (Ctrl+click) can be compared.
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.setWordWrap(False)
        self.table.setShowGrid(False)
        hh = self.table.horizontalHeader()
        hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)   # the question takes what is left
        hh.setStretchLastSection(False)
        hh.setMinimumSectionSize(40)
        fm = self.table.fontMetrics()
        longest_status = max((*RUN_STATUS_ICONS, MISSING), key=fm.horizontalAdvance)
        for col, sample, extra in ((1, "11-24 12:00", 0), (3, "$0.0000", 0),
                                   (2, longest_status, self.table.style().pixelMetric(
                                       QStyle.PixelMetric.PM_SmallIconSize) + 8)):
            hh.resizeSection(col, fm.horizontalAdvance(sample) + 16 + extra)
        # A narrow pane folds the Cost column away rather than cut the question column (_fit_columns).
        self.table.viewport().installEventFilter(self)
        self.table.itemActivated.connect(lambda item: self.open_row(item.row()))
        self.open_btn = QPushButton(icon("open-trace"), "&Open")
        self.open_btn.setToolTip("Show the selected session's (or run's) trace")
        self.open_btn.clicked.connect(lambda: self.open_row(self.table.currentRow()))
        self.continue_btn = QPushButton(icon("run"), "Co&ntinue")
        self.continue_btn.setToolTip("Make the selected session the window's session: the next question "
                                     "is a follow-up (its REPL is rebuilt from the recording first, "
                                     "without a model request)")
        self.continue_btn.clicked.connect(self.continue_selected)
        self.again_btn = QPushButton("Ask a&gain")
        self.again_btn.setToolTip("Put this turn's question in the question box (the documents loaded "
                                  "now are the ones it will run on)")
        self.again_btn.clicked.connect(self.ask_again)
        self.remove_btn = QPushButton(icon("remove"), "Re&move")
        self.remove_btn.setToolTip("Remove the selected turn (or a whole session's turns) from the history "
                                   "(Delete). Trace files stay on disk and can still be opened with "
                                   "File → Open trace; `rlm-desktop sessions remove` deletes a session.")
        self.remove_btn.clicked.connect(self.remove_selected)
        self.compare_btn = QPushButton("Com&pare")
        self.compare_btn.setObjectName("historyCompare")
        self.compare_btn.setToolTip("Compare the two selected runs (Ctrl+click a second row): answers, "
                                    "cost, tokens, time, models, limits, and their traces side by side")
        self.compare_btn.clicked.connect(self.compare_selected)
        remove_act = QAction("Remove from history", self.table)
        remove_act.setShortcut(QKeySequence.StandardKey.Delete)
        remove_act.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        remove_act.triggered.connect(self.remove_selected)
        self.table.addAction(remove_act)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        # Search and filters: one compact row over the table.
        self.search = QLineEdit()
        self.search.setObjectName("historySearch")
        self.search.setPlaceholderText("Search questions and answers")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self.rebuild())   # no re-reading per key
        self.status_filter = QComboBox()
        self.status_filter.setObjectName("historyStatus")
        self.status_filter.setToolTip("Show the turns that ended this way")
        self.model_filter = QComboBox()
        self.model_filter.setObjectName("historyModel")
        self.model_filter.setToolTip("Show the turns asked of this provider and model")
        self.date_filter = QComboBox()
        self.date_filter.setObjectName("historyDate")
        for label, days in DATE_RANGES.items():
            self.date_filter.addItem(label, days)
        for combo in (self.status_filter, self.model_filter, self.date_filter):
            combo.activated.connect(lambda _i: self.rebuild())
            # Narrow (the left pane is narrow at 1280×720); the open list shows the whole names.
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(5)
        # Sorting by any column: sessions move as a whole (by their latest turn / total cost);
        # the turns inside a session stay in their order.
        self.sort_column, self.sort_descending = 1, True
        hh.setSectionsClickable(True)
        hh.setSortIndicatorShown(True)
        hh.setSortIndicator(1, Qt.SortOrder.DescendingOrder)
        hh.sectionClicked.connect(self._on_header_clicked)
        self.hint = QLabel("Sessions and their turns appear here (from the app, the CLI and Python). "
                           "Double-click or press Enter to inspect one; Continue asks a follow-up.")
        self.hint.setWordWrap(True)
        self.hint.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.hint)
        search_row = QHBoxLayout()
        search_row.addWidget(self.search, 1)
        search_row.addWidget(self.compare_btn)
        filter_row = QHBoxLayout()
        filter_row.addWidget(self.status_filter, 1)
        filter_row.addWidget(self.model_filter, 2)
        filter_row.addWidget(self.date_filter, 1)
        lay.addLayout(search_row)
        lay.addLayout(filter_row)
        lay.addWidget(self.table, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_btn, 1)
        buttons.addWidget(self.continue_btn, 1)
        buttons.addWidget(self.again_btn)
        buttons.addWidget(self.remove_btn)
        lay.addLayout(buttons)
        self._entries: list[HistoryEntry] = []
        self.rows: list[HistoryGroup | HistoryEntry] = []   # what each table row shows
        self.reload()

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Resize and obj is self.table.viewport():
            self._fit_columns()
        return super().eventFilter(obj, event)

    def _fit_columns(self) -> None:
        """On a narrow pane (the left tabs at 1280×720) the Cost column folds away, so the question
        column keeps its header and the start of each question; each question's tooltip says the cost."""
        hh = self.table.horizontalHeader()
        room = self.table.viewport().width() - hh.sectionSize(1) - hh.sectionSize(2) - hh.sectionSize(3)
        hh.setSectionHidden(3, room < hh.sectionSizeFromContents(0).width())

    @property
    def entries(self) -> list[HistoryEntry]:
        """Every turn, newest first."""
        return list(self._entries)

    def _on_header_clicked(self, col: int) -> None:
        if col == self.sort_column:
            self.sort_descending = not self.sort_descending
        else:
            self.sort_column, self.sort_descending = col, col != 0   # names A→Z, the rest biggest first
        self.table.horizontalHeader().setSortIndicator(
            col, Qt.SortOrder.DescendingOrder if self.sort_descending else Qt.SortOrder.AscendingOrder)
        self.rebuild()

    def sort_by(self, col: int, descending: bool) -> None:
        self.sort_column, self.sort_descending = col, descending
        self.table.horizontalHeader().setSortIndicator(
            col, Qt.SortOrder.DescendingOrder if descending else Qt.SortOrder.AscendingOrder)
        self.rebuild()

    def _fill_combo(self, combo: QComboBox, any_label: str, values: list[str]) -> None:
        current = combo.currentData()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(any_label, None)
        for v in values:
            combo.addItem(v, v)
        i = combo.findData(current) if current is not None else 0
        if i < 0:                         # the chosen value is gone from the history: keep it
            combo.addItem(current, current)
            i = combo.count() - 1
        combo.setCurrentIndex(i)
        combo.blockSignals(False)

    def filter_criteria(self) -> dict[str, Any]:
        days = self.date_filter.currentData()
        return {"text": self.search.text(), "status": self.status_filter.currentData(),
                "model": self.model_filter.currentData(),
                "since": None if days is None else _day_start(days)}

    @property
    def filtering(self) -> bool:
        c = self.filter_criteria()
        return bool(c["text"].strip()) or any(c[k] is not None for k in ("status", "model", "since"))

    def reload(self) -> None:
        """Read the history again and show it (searched, filtered and sorted as chosen)."""
        self._entries = self.store.entries()
        self.rebuild()

    def rebuild(self) -> None:
        """Show the entries read last, searched, filtered and sorted as chosen now."""
        self._fill_combo(self.status_filter, ANY_STATUS, sorted({e.status for e in self._entries}))
        self._fill_combo(self.model_filter, ANY_MODEL, sorted({e.provider for e in self._entries if e.provider}))
        crit = self.filter_criteria()
        groups = []
        for g in group_entries(self._entries):
            turns = [e for e in g.turns if entry_matches(e, **crit)]
            if turns:
                groups.append((g, turns))
        key = GROUP_SORT_KEYS[self.sort_column] if 0 <= self.sort_column < len(GROUP_SORT_KEYS) \
            else GROUP_SORT_KEYS[1]
        groups.sort(key=lambda gt: key(gt[0]), reverse=self.sort_descending)
        self.rows = []
        for g, turns in groups:
            if g.is_session:
                self.rows.append(g)
            self.rows.extend(turns)
        self.table.clearSpans()
        self.table.setRowCount(len(self.rows))
        for row, item in enumerate(self.rows):
            cells = self._group_cells(item) if isinstance(item, HistoryGroup) else self._turn_cells(item)
            for col, cell in enumerate(cells):
                self.table.setItem(row, col, cell)
            if isinstance(item, HistoryGroup):
                self.table.setSpan(row, 0, 1, 2)     # the session's name over the time column too
        self._update_buttons()

    def _group_cells(self, g: HistoryGroup) -> tuple[QTableWidgetItem, ...]:
        last = g.latest
        tag = SOURCE_TAGS.get(g.source)
        n = len(g.turns)
        title = (g.session or "Session (unnamed)") + (f" [{tag}]" if tag else "") \
            + f" · {n} turn{'s' if n != 1 else ''}"
        q = QTableWidgetItem(title)
        f = q.font()
        f.setBold(True)
        q.setFont(f)
        known = all(e.cost_known for e in g.turns)
        costs = [e.cost_usd for e in g.turns if e.cost_usd is not None]
        total = sum(costs) if costs else None
        q.setToolTip(f"{title}\nLatest turn: {time.strftime('%Y-%m-%d %H:%M', time.localtime(last.started))}"
                     f"\nCost: {fmt.fmt_usd(total, known)}"
                     f"\nTrace: {last.trace}" + (f"\nModels: {last.provider}" if last.provider else ""))
        t = QTableWidgetItem(time.strftime(TIME_FORMAT, time.localtime(last.started)))
        st = QTableWidgetItem(last.status)
        st.setIcon(status_icon(RUN_STATUS_ICONS.get(last.status, "error")))
        st.setToolTip("The latest turn: " + STOP_REASONS.get(last.stop_reason or "", last.stop_reason or ""))
        c = QTableWidgetItem(fmt.fmt_usd(total, known))
        c.setToolTip("Every turn of the session together")
        c.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return q, t, st, c

    def _turn_cells(self, e: HistoryEntry) -> tuple[QTableWidgetItem, ...]:
        exists = Path(e.trace).is_file()
        grouped = bool(e.session or e.turn)
        tag = SOURCE_TAGS.get(e.source)
        text = fmt.one_line(e.query, 120)
        if grouped:
            text = f"    {e.turn or 1}. {text}"       # indented under its session's row
        elif tag:
            text = f"[{tag}] {text}"
        q = QTableWidgetItem(text)
        cost = ("~" if e.cost_estimated and e.cost_usd else "") + fmt.fmt_usd(e.cost_usd, e.cost_known)
        q.setToolTip(e.query + f"\n\nCost: {cost}" + (f"\n\nAsked from: {tag}" if tag else "")
                     + (f"\n\nModels: {e.provider}" if e.provider else "")
                     + ("" if exists else f"\n\nThe trace file is missing: {e.trace}"))
        t = QTableWidgetItem(time.strftime(TIME_FORMAT, time.localtime(e.started)))
        t.setToolTip(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.started)))
        missing = not exists and e.status != "running"
        st = QTableWidgetItem(MISSING if missing else e.status)   # one short word: it fits
        st.setIcon(status_icon(RUN_STATUS_ICONS.get(e.status, "error")))
        why = STOP_REASONS.get(e.stop_reason or "", e.stop_reason or "")
        st.setToolTip(f"{e.status}: the trace file is missing ({e.trace}). {why}".strip()
                      if missing else why)
        c = QTableWidgetItem(cost)
        if e.cost_estimated and e.cost_usd:
            c.setToolTip("Estimated: some model calls reported no token usage.")
        c.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return q, t, st, c

    def _current(self) -> HistoryGroup | HistoryEntry | None:
        row = self.table.currentRow()
        if 0 <= row < len(self.rows) and self.table.selectedItems():
            return self.rows[row]
        return None

    def _update_buttons(self) -> None:
        cur = self._current()
        selected = {i.row() for i in self.table.selectedItems()}
        one = cur is not None and len(selected) <= 1     # Continue / Ask again act on one row
        self.open_btn.setEnabled(bool(self.rows))
        self.again_btn.setEnabled(one)
        self.remove_btn.setEnabled(bool(selected))       # removes every selected row
        self.continue_btn.setEnabled(one)
        self.compare_btn.setEnabled(len(self.selected_runs()) == 2)

    def selected_runs(self) -> list[HistoryEntry]:
        """The turns the selected rows stand for (a session row: its latest turn), top to bottom."""
        out: list[HistoryEntry] = []
        for r in sorted({i.row() for i in self.table.selectedItems()}):
            if 0 <= r < len(self.rows):
                item = self.rows[r]
                e = item.latest if isinstance(item, HistoryGroup) else item
                if e not in out:
                    out.append(e)
        return out

    def compare_selected(self) -> None:
        runs = self.selected_runs()
        if len(runs) == 2:
            # The older run is A: "before and after".
            a, b = sorted(runs, key=lambda e: e.started)
            self.compare_requested.emit(a.key, b.key)

    def row_of(self, item: HistoryGroup | HistoryEntry) -> int:
        return next(i for i, r in enumerate(self.rows) if r is item)

    def groups(self) -> list[HistoryGroup]:
        return [r for r in self.rows if isinstance(r, HistoryGroup)]

    def ask_again(self) -> None:
        cur = self._current()
        if cur is not None:
            e = cur.latest if isinstance(cur, HistoryGroup) else cur
            self.ask_again_requested.emit(e.query)

    def continue_selected(self) -> None:
        cur = self._current()
        if cur is None:
            return
        if isinstance(cur, HistoryEntry):      # a turn row continues its whole session
            key = f"session:{cur.session}" if cur.session else f"trace:{cur.trace}"
            cur = next(g for g in group_entries(self._entries) if g.key == key)
        self.continue_requested.emit(cur.latest)

    def remove_selected(self) -> int:
        rows = {i.row() for i in self.table.selectedItems()}
        keys: set[str] = set()
        for r in rows:
            if 0 <= r < len(self.rows):
                item = self.rows[r]
                turns = item.turns if isinstance(item, HistoryGroup) else [item]
                keys.update(e.key for e in turns)
        removed = self.store.remove(keys) if keys else 0
        self.reload()
        return removed

    def add(self, entry: HistoryEntry) -> None:
        self.store.add(entry)
        self.reload()

    def open_row(self, row: int) -> None:
        if 0 <= row < len(self.rows):
            item = self.rows[row]
            self.open_requested.emit(item.latest.trace if isinstance(item, HistoryGroup) else item.trace)
