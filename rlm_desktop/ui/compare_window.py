"""The Compare window: two runs side by side (issue 11, "Compare two runs").

Their answers with the word-level differences marked, the facts table with deltas (cost, tokens,
time, iterations, sub-calls, models, limits) and the two trace trees aligned by iteration, scrolling
together. The comparison itself is :mod:`rlm_desktop.core.compare` (the CLI's ``compare`` uses it
too); this module only shows it. A run is a trace file or ``FILE#N`` (turn N of a session trace).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QTextBrowser,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from rlm_desktop.core.compare import (
    NUMERIC,
    CompareError,
    Comparison,
    RunFacts,
    compare,
    run_facts,
    split_spec,
    stop_text,
)
from rlm_desktop.core.trace import Attr, Span, SpanKind, Trace, read_trace
from rlm_desktop.ui import fmt
from rlm_desktop.ui.trace_model import COL_NAME, TraceModel

DELETED_BG = "#f8c9c9"      # words only A has
INSERTED_BG = "#c8ecc9"     # words only B has
WORSE, BETTER = QColor(198, 40, 40), QColor(46, 125, 50)
# Facts where less is better (a positive delta is drawn as worse).
LOWER_IS_BETTER = frozenset({"cost_usd", "input_tokens", "output_tokens", "duration_s", "errors"})


def load(spec: str) -> tuple[Trace, RunFacts, Span]:
    """The trace ``spec`` names, the facts of its run and the run's span. Raises CompareError."""
    path, turn = split_spec(spec)
    if not path.is_file():
        raise CompareError(f"{path}: no such trace file; give a trace (.jsonl) saved by a run, or "
                           "FILE#N for turn N of a session trace")
    try:
        trace = read_trace(path)
    except ValueError as exc:
        raise CompareError(str(exc)) from None
    except OSError as exc:
        raise CompareError(f"cannot read {path}: {exc.strerror or exc}") from None
    facts = run_facts(trace, turn, label=spec)
    runs = [r for r in trace.roots if r.kind == SpanKind.RUN and not r.attributes.get(Attr.REPLAY)]
    run = next((r for r in reversed(runs) if facts.turn is None or r.attributes.get(Attr.TURN) == facts.turn),
               runs[-1])
    return trace, facts, run


def diff_html(cmp: Comparison) -> tuple[str, str]:
    """The two answers as HTML, the words only one side has marked (A: deleted, B: inserted)."""
    a_parts: list[str] = []
    b_parts: list[str] = []
    for op in cmp.answer_diff:
        a, b = html.escape(op["a"]), html.escape(op["b"])
        if op["op"] == "equal":
            a_parts.append(a)
            b_parts.append(b)
            continue
        if a:
            a_parts.append(f'<span style="background:{DELETED_BG}; color:#000">{a}</span>')
        if b:
            b_parts.append(f'<span style="background:{INSERTED_BG}; color:#000">{b}</span>')
    none = "<i>(no answer)</i>"
    return (" ".join(a_parts) if cmp.a.answer else none), (" ".join(b_parts) if cmp.b.answer else none)


def _fmt_value(name: str, v: Any) -> str:
    if v is None:
        return "unknown"
    if name == "cost_usd":
        return fmt.fmt_usd(v, True)
    if name == "duration_s":
        return fmt.fmt_duration(v)
    if isinstance(v, list):
        return ", ".join(str(x) for x in v) or "—"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _fmt_delta(name: str, d: float | int | None, a: Any) -> str:
    if d is None:
        return ""
    if d == 0:
        return "="
    sign = "+" if d > 0 else "−"
    mag = abs(d)
    text = fmt.fmt_usd(mag, True) if name == "cost_usd" else (
        fmt.fmt_duration(mag) if name == "duration_s" else f"{mag:,}")
    pct = ""
    if isinstance(a, int | float) and a:
        r = d / a
        pct = f" ({r:+.1%})" if abs(r) < 0.1 else f" ({r:+.0%})"   # -0.4%, not -0%
    return f"{sign}{text}{pct}"


def fact_rows(cmp: Comparison) -> list[tuple[str, str, str, str, int]]:
    """(fact, A, B, delta, sign) rows; sign: 1 = B is worse, -1 = B is better, 0 = neither."""
    a, b = cmp.a, cmp.b
    rows: list[tuple[str, str, str, str, int]] = [
        ("question", fmt.one_line(a.query, 80), fmt.one_line(b.query, 80),
         "" if a.query == b.query else "differs", 0),
        ("status", stop_text(a), stop_text(b), "" if a.status == b.status else "differs", 0),
    ]
    for name, label in NUMERIC:
        va, vb = getattr(a, name), getattr(b, name)
        d = cmp.delta.get(name)
        sign = 0
        if isinstance(d, int | float) and d and name in LOWER_IS_BETTER:
            sign = 1 if d > 0 else -1
        rows.append((label, _fmt_value(name, va), _fmt_value(name, vb), _fmt_delta(name, d, va), sign))
    for name, label in (("root_model", "root model"), ("sub_model", "sub model"), ("models", "models called")):
        va, vb = getattr(a, name), getattr(b, name)
        rows.append((label, _fmt_value(name, va), _fmt_value(name, vb), "" if va == vb else "differs", 0))
    for key in sorted(set(a.limits) | set(b.limits)):
        va, vb = a.limits.get(key), b.limits.get(key)
        rows.append((f"limit: {key}", "—" if va is None else str(va), "—" if vb is None else str(vb),
                     "" if va == vb else "differs", 0))
    return rows


class CompareTree(QTreeView):
    """A read-only tree of one run (its iterations at the top level)."""

    def __init__(self, trace: Trace, run: Span, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.trace_model = TraceModel(self)
        self.trace_model.set_trace(trace, live=False)
        self.setModel(self.trace_model)
        self.setRootIndex(self.trace_model.index_for_span(run))
        self.setUniformRowHeights(True)
        self.setAlternatingRowColors(True)
        self.setAnimated(False)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        for col in range(1, self.trace_model.columnCount()):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)

    def iteration_index(self, number: int) -> QModelIndex:
        """The top-level row of iteration ``number`` (1-based), or an invalid index."""
        root = self.rootIndex()
        row = number - 1
        if 0 <= row < self.trace_model.rowCount(root):
            return self.trace_model.index(row, 0, root)
        return QModelIndex()

    def top_iteration(self) -> tuple[int, int]:
        """The iteration whose row (or subtree) is at the top of the view, and how many pixels the
        view is scrolled past that iteration's row."""
        idx = self.indexAt(self.viewport().rect().topLeft())
        if not idx.isValid():
            return 0, 0
        root = self.rootIndex()
        while idx.parent().isValid() and idx.parent() != root:
            idx = idx.parent()
        rect = self.visualRect(idx)
        return idx.row() + 1, -rect.top()


class CompareWindow(QWidget):
    """Two runs side by side; see the module docstring."""

    failed = Signal(str)

    def __init__(self, spec_a: str, spec_b: str, parent: QWidget | None = None) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("compareWindow")
        self.setWindowTitle(f"Compare — {Path(split_spec(spec_a)[0]).name} ↔ {Path(split_spec(spec_b)[0]).name}")
        trace_a, facts_a, run_a = load(spec_a)
        trace_b, facts_b, run_b = load(spec_b)
        self.comparison = cmp = compare(facts_a, facts_b)
        self._syncing = False

        # Answers, side by side, differences marked.
        self.answer_a = QTextBrowser()
        self.answer_a.setObjectName("compareAnswerA")
        self.answer_b = QTextBrowser()
        self.answer_b.setObjectName("compareAnswerB")
        a_html, b_html = diff_html(cmp)
        self.answer_a.setHtml(a_html)
        self.answer_b.setHtml(b_html)
        sim = QLabel(f"Answers {'identical' if cmp.delta.get('answers_equal') else f'{cmp.similarity:.0%} alike'}"
                     f" · <span style='background:{DELETED_BG}; color:#000'>&nbsp;only A&nbsp;</span>"
                     f" <span style='background:{INSERTED_BG}; color:#000'>&nbsp;only B&nbsp;</span>")
        self.similarity_label = sim

        # The facts with deltas.
        rows = fact_rows(cmp)
        self.facts = QTableWidget(len(rows), 4)
        self.facts.setObjectName("compareFacts")
        self.facts.setHorizontalHeaderLabels(["", "A", "B", "B − A"])
        self.facts.verticalHeader().setVisible(False)
        self.facts.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.facts.setWordWrap(False)
        for r, (label, va, vb, d, sign) in enumerate(rows):
            for c, text in enumerate((label, va, vb, d)):
                item = QTableWidgetItem(text)
                item.setToolTip(text)
                if c == 3 and sign:
                    item.setForeground(QBrush(WORSE if sign > 0 else BETTER))
                if c in (1, 2, 3) and r >= 2 and r < 2 + len(NUMERIC):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.facts.setItem(r, c, item)
        hh = self.facts.horizontalHeader()
        hh.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        for c in (1, 2, 3):
            hh.setSectionResizeMode(c, QHeaderView.ResizeMode.Stretch)
        vh = self.facts.verticalHeader()
        vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        vh.setDefaultSectionSize(self.facts.fontMetrics().height() + 6)   # compact rows: all facts fit

        # The two trees, aligned by iteration.
        self.tree_a = CompareTree(trace_a, run_a)
        self.tree_a.setObjectName("compareTreeA")
        self.tree_b = CompareTree(trace_b, run_b)
        self.tree_b.setObjectName("compareTreeB")
        for src, dst in ((self.tree_a, self.tree_b), (self.tree_b, self.tree_a)):
            src.verticalScrollBar().valueChanged.connect(lambda _v, s=src, d=dst: self._sync_scroll(s, d))
            src.expanded.connect(lambda idx, s=src, d=dst: self._sync_expand(s, d, idx, True))
            src.collapsed.connect(lambda idx, s=src, d=dst: self._sync_expand(s, d, idx, False))

        def side(title: str, facts: RunFacts, *widgets: QWidget) -> QWidget:
            w = QWidget()
            lay = QVBoxLayout(w)
            lay.setContentsMargins(0, 0, 0, 0)
            head = QLabel(f"<b>{html.escape(title)}</b> {html.escape(fmt.one_line(facts.label, 70))}")
            head.setToolTip(facts.query)
            lay.addWidget(head)
            for x in widgets:
                lay.addWidget(x, 1)
            return w

        answers = QSplitter(Qt.Orientation.Horizontal)
        answers.addWidget(side("A", facts_a, self.answer_a))
        answers.addWidget(side("B", facts_b, self.answer_b))
        answers_box = QWidget()
        al = QVBoxLayout(answers_box)
        al.setContentsMargins(0, 0, 0, 0)
        al.addWidget(answers, 1)
        al.addWidget(sim)
        trees = QSplitter(Qt.Orientation.Horizontal)
        trees.addWidget(side("A", facts_a, self.tree_a))
        trees.addWidget(side("B", facts_b, self.tree_b))
        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(self.facts)
        bottom.addWidget(trees)
        bottom.setSizes([420, 860])      # the facts readable with their deltas; the trees get the rest
        main = QSplitter(Qt.Orientation.Vertical)
        main.addWidget(answers_box)
        main.addWidget(bottom)
        main.setSizes([170, 550])
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.addWidget(main)
        self.resize(1200, 680)
        self.tree_a.expand(self.tree_a.iteration_index(1))   # the first iteration open on both sides

    # -- trees together ------------------------------------------------------------------------------
    def _sync_expand(self, src: CompareTree, dst: CompareTree, idx: QModelIndex, on: bool) -> None:
        if self._syncing or idx.parent() != src.rootIndex():
            return                                   # iterations only: their subtrees differ
        self._syncing = True
        try:
            other = dst.iteration_index(idx.row() + 1)
            if other.isValid():
                dst.setExpanded(other, on)
        finally:
            self._syncing = False

    def _sync_scroll(self, src: CompareTree, dst: CompareTree) -> None:
        """The other tree shows the same iteration at the top, scrolled as far past its row."""
        if self._syncing:
            return
        self._syncing = True
        try:
            number, past = src.top_iteration()
            target = dst.iteration_index(number) if number else QModelIndex()
            if not target.isValid():                 # that side has fewer iterations: follow to the end
                bar = dst.verticalScrollBar()
                bar.setValue(bar.maximum() if number else 0)
                return
            bar = dst.verticalScrollBar()
            bar.setValue(bar.value() + dst.visualRect(target).top() + past)
        finally:
            self._syncing = False


class CompareDialog(QDialog):
    """File → Compare…: two runs (trace files, or FILE#N for a session's turn N)."""

    def __init__(self, parent: QWidget | None = None, start_dir: str = "") -> None:
        super().__init__(parent)
        self.setWindowTitle("Compare two runs")
        self._dir = start_dir
        self.edit_a = QLineEdit()
        self.edit_a.setObjectName("compareSpecA")
        self.edit_b = QLineEdit()
        self.edit_b.setObjectName("compareSpecB")
        form = QFormLayout(self)
        for label, edit in (("Run &A:", self.edit_a), ("Run &B:", self.edit_b)):
            edit.setPlaceholderText("trace.jsonl, or trace.jsonl#N for turn N of a session")
            edit.textChanged.connect(self._update_ok)
            browse = QPushButton("Browse…")
            browse.clicked.connect(lambda _c=False, e=edit: self._browse(e))
            row = QHBoxLayout()
            row.addWidget(edit, 1)
            row.addWidget(browse)
            form.addRow(label, row)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                        | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Compare")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        self.resize(560, self.sizeHint().height())
        self._update_ok()

    def _update_ok(self) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(
            bool(self.edit_a.text().strip() and self.edit_b.text().strip()))

    def _browse(self, edit: QLineEdit) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a trace", self._dir, "Traces (*.jsonl);;All files (*)")
        if path:
            edit.setText(path)
            self._dir = str(Path(path).parent)

    def specs(self) -> tuple[str, str]:
        return self.edit_a.text().strip(), self.edit_b.text().strip()
