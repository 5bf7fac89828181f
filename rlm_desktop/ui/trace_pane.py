"""Trace pane: the QTreeView over the trace model, a filter box, "errors only", expand/collapse,
and following the newest node unless the user scrolled or selected something."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QMenu,
    QPushButton,
    QStyle,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
    QWidgetAction,
)

from rlm_desktop.core.trace import Attr, EventType, Span, SpanKind, TraceEvent
from rlm_desktop.ui.fmt import STATUS_LABELS
from rlm_desktop.ui.icons import icon
from rlm_desktop.ui.trace_model import (
    COL_COST,
    COL_DURATION,
    COL_NAME,
    COL_STATUS,
    COL_SUBS,
    COL_TOKENS,
    TraceFilterProxy,
    TraceModel,
)

FILTER_DELAY_MS = 200
ANY = "Any"


class FilterPopup(QWidget):
    """The "Filters" popup: kind, status, model, minimum cost, minimum duration (combined with the
    text box and "errors only")."""

    changed = Signal()   # a choice: apply now
    edited = Signal()    # a number being typed: apply once the keys pause

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind = QComboBox()
        self.kind.setObjectName("filterKind")
        self.kind.addItem(ANY, None)
        for k in SpanKind:
            self.kind.addItem(str(k).replace("_", " "), str(k))
        self.status = QComboBox()
        self.status.setObjectName("filterStatus")
        self.status.addItem(ANY, None)
        for key, word in STATUS_LABELS.items():
            self.status.addItem(word, key)
        self.model = QComboBox()
        self.model.setObjectName("filterModel")
        self.model.addItem(ANY, None)
        self.min_cost = QDoubleSpinBox()
        self.min_cost.setObjectName("filterMinCost")
        self.min_cost.setPrefix("$ ")
        self.min_cost.setDecimals(4)
        self.min_cost.setRange(0.0, 1000.0)
        self.min_cost.setSingleStep(0.001)
        self.min_cost.setSpecialValueText("any")
        self.min_cost.setToolTip("Model calls that cost at least this much")
        self.min_duration = QDoubleSpinBox()
        self.min_duration.setObjectName("filterMinDuration")
        self.min_duration.setSuffix(" s")
        self.min_duration.setDecimals(1)
        self.min_duration.setRange(0.0, 86_400.0)
        self.min_duration.setSingleStep(0.5)
        self.min_duration.setSpecialValueText("any")
        self.min_duration.setToolTip("Steps that took at least this long")
        self.clear_btn = QPushButton("C&lear filters")
        self.clear_btn.clicked.connect(self.clear)
        form = QFormLayout(self)
        form.setContentsMargins(8, 8, 8, 8)
        form.addRow("&Kind:", self.kind)
        form.addRow("&Status:", self.status)
        form.addRow("&Model:", self.model)
        form.addRow("Min. &cost:", self.min_cost)
        form.addRow("Min. &duration:", self.min_duration)
        form.addRow(self.clear_btn)
        for combo in (self.kind, self.status, self.model):
            combo.currentIndexChanged.connect(lambda _i: self.changed.emit())
        for spin in (self.min_cost, self.min_duration):
            spin.valueChanged.connect(lambda _v: self.edited.emit())

    def values(self) -> dict[str, object]:
        return {"kind": self.kind.currentData(), "status": self.status.currentData(),
                "model": self.model.currentData(), "min_cost": self.min_cost.value(),
                "min_duration": self.min_duration.value()}

    def set_models(self, models: list[str]) -> None:
        """The models the trace used (kept: the current choice)."""
        current = self.model.currentData()
        self.model.blockSignals(True)
        self.model.clear()
        self.model.addItem(ANY, None)
        for m in models:
            self.model.addItem(m, m)
        i = self.model.findData(current) if current is not None else 0
        self.model.setCurrentIndex(max(i, 0))
        self.model.blockSignals(False)

    def clear(self) -> None:
        for w in (self.kind, self.status, self.model, self.min_cost, self.min_duration):
            w.blockSignals(True)
        self.kind.setCurrentIndex(0)
        self.status.setCurrentIndex(0)
        self.model.setCurrentIndex(0)
        self.min_cost.setValue(0.0)
        self.min_duration.setValue(0.0)
        for w in (self.kind, self.status, self.model, self.min_cost, self.min_duration):
            w.blockSignals(False)
        self.changed.emit()


class TracePane(QWidget):
    span_selected = Signal(object)     # Span | None
    follow_changed = Signal(bool)
    filter_text_changed = Signal(str)  # the text filter applied (the detail pane highlights it)

    def __init__(self, model: TraceModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("tracePane")
        self.model = model
        self.proxy = TraceFilterProxy(self)
        self.proxy.setSourceModel(model)
        self._programmatic = 0
        self._follow = True

        self.filter_edit = QLineEdit()
        self.filter_edit.setObjectName("traceFilter")
        self.filter_edit.setPlaceholderText("Filter steps by name or content (Ctrl+F)")
        self.filter_edit.setClearButtonEnabled(True)
        # Typing is debounced: a 100,000-step trace is searched once the keys pause, not per key.
        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(FILTER_DELAY_MS)
        self._filter_timer.timeout.connect(self._apply_filter)
        self.filter_edit.textChanged.connect(lambda _t: self._filter_timer.start())
        self.filter_edit.returnPressed.connect(self._apply_filter)
        self.errors_only = QCheckBox("&Errors only")
        self.errors_only.setToolTip("Show only failed, timed-out, limited and incomplete steps "
                                    "(with their ancestors)")
        self.errors_only.toggled.connect(self._on_errors_only)
        self.filters = FilterPopup()
        self.filters.changed.connect(self._apply_filter)
        self.filters.edited.connect(lambda: self._filter_timer.start())   # debounced like the text
        self.filters_btn = QToolButton()
        self.filters_btn.setObjectName("traceFiltersButton")
        self.filters_btn.setText("Filters")
        self.filters_btn.setToolTip("Filter by kind, status, model, minimum cost and minimum duration")
        self.filters_btn.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.filters_btn)
        action = QWidgetAction(menu)
        action.setDefaultWidget(self.filters)
        menu.addAction(action)
        menu.aboutToShow.connect(self._refresh_models)
        self.filters_btn.setMenu(menu)
        # Spans expanded before a filter applied: restored when every filter is cleared again.
        self._saved_expanded: list[Span] | None = None
        self.expand_btn = QToolButton()
        self.expand_btn.setIcon(icon("expand"))
        self.expand_btn.setToolTip("Expand all (Ctrl+Shift+Down)")
        self.expand_btn.clicked.connect(self.expand_all)
        self.collapse_btn = QToolButton()
        self.collapse_btn.setIcon(icon("collapse"))
        self.collapse_btn.setToolTip("Collapse all (Ctrl+Shift+Up)")
        self.collapse_btn.clicked.connect(self.collapse_all)
        self.follow_btn = QToolButton()
        self.follow_btn.setText("Follow")
        self.follow_btn.setIcon(icon("follow"))
        self.follow_btn.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.follow_btn.setCheckable(True)
        self.follow_btn.setChecked(True)
        self.follow_btn.setToolTip("Keep the newest step in view (turns off when you scroll or select; "
                                   "Ctrl+L turns it back on)")
        self.follow_btn.toggled.connect(self.set_follow)
        bar = QHBoxLayout()
        bar.addWidget(self.filter_edit, 1)
        bar.addWidget(self.errors_only)
        bar.addWidget(self.filters_btn)
        bar.addWidget(self.expand_btn)
        bar.addWidget(self.collapse_btn)
        bar.addWidget(self.follow_btn)

        self.view = QTreeView()
        self.view.setObjectName("traceView")
        self.view.setUniformRowHeights(True)
        self.view.setAlternatingRowColors(True)
        self.view.setAnimated(False)
        self.view.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.view.setAllColumnsShowFocus(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setAccessibleName("Trace")
        self.view.setModel(model)
        header = self.view.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        # The step's name takes what the other columns leave: the tree never scrolls sideways at
        # the default widths, whatever the pane's width (1280×720 laptops included).
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        header.setMinimumSectionSize(36)
        for col, w in self.default_widths().items():
            header.resizeSection(col, w)
        self.view.verticalScrollBar().actionTriggered.connect(self._on_user_scroll)
        self.view.verticalScrollBar().rangeChanged.connect(self._on_range)
        self._stick_bottom = False
        self._connect_selection()
        model.batch_applied.connect(self._on_batch)
        model.modelReset.connect(self._on_reset)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(bar)
        lay.addWidget(self.view, 1)

    # -- API ---------------------------------------------------------------------------------------
    def default_widths(self) -> dict[int, int]:
        """Column widths that fit their content: the status column fits its longest word with
        its icon (no "cancel…" / "incom…"), the figures fit typical values."""
        fm = self.view.fontMetrics()
        icon_w = self.view.style().pixelMetric(QStyle.PixelMetric.PM_SmallIconSize)
        status = max(fm.horizontalAdvance(w) for w in STATUS_LABELS.values()) + icon_w + 20
        return {COL_STATUS: status, COL_DURATION: fm.horizontalAdvance("999 ms") + 16,
                COL_TOKENS: fm.horizontalAdvance("4,567 / 890 / 890") + 12,   # in / cached / out roll-ups
                COL_COST: fm.horizontalAdvance("$0.0000") + 12,
                COL_SUBS: fm.horizontalAdvance("Subs") + 10}

    @property
    def follow(self) -> bool:
        return self._follow

    def set_follow(self, on: bool) -> None:
        if on == self._follow:
            return
        self._follow = on
        self.follow_btn.blockSignals(True)
        self.follow_btn.setChecked(on)
        self.follow_btn.blockSignals(False)
        self.follow_changed.emit(on)
        if on:
            self._scroll_to_newest()

    def selected_span(self) -> Span | None:
        idx = self.view.currentIndex()
        if not idx.isValid():
            return None
        return self.model.span_for_index(self._to_source(idx))

    def select_span(self, span: Span | None) -> None:
        """Select ``span`` as the user would (stops following)."""
        if span is None:
            self.view.clearSelection()
            return
        idx = self._to_view(self.model.index_for_span(span))
        if not idx.isValid():
            return
        self._expand_ancestors(idx)
        self.view.selectionModel().setCurrentIndex(
            idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.view.scrollTo(idx)

    def expand_all(self) -> None:
        self.view.expandAll()

    def collapse_all(self) -> None:
        self.view.collapseAll()

    def focus_filter(self) -> None:
        self.filter_edit.setFocus()
        self.filter_edit.selectAll()

    def visible_model(self) -> Any:
        return self.view.model()

    # -- internals ---------------------------------------------------------------------------------
    def _connect_selection(self) -> None:
        self.view.selectionModel().currentRowChanged.connect(self._on_current)

    def _to_source(self, idx: QModelIndex) -> QModelIndex:
        return self.proxy.mapToSource(idx) if self.view.model() is self.proxy else idx

    def _to_view(self, idx: QModelIndex) -> QModelIndex:
        return self.proxy.mapFromSource(idx) if self.view.model() is self.proxy else idx

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not self._programmatic and current.isValid():
            self.set_follow(False)
        self.span_selected.emit(self.model.span_for_index(self._to_source(current))
                                if current.isValid() else None)

    def _on_range(self, _lo: int, hi: int) -> None:
        # The layout settled after the scroll (e.g. a horizontal scroll bar appeared): stay at the end.
        if self._follow and self._stick_bottom:
            self._programmatic += 1
            try:
                self.view.verticalScrollBar().setValue(hi)
            finally:
                self._programmatic -= 1

    def _on_user_scroll(self, _action: int) -> None:
        if not self._programmatic:
            self.set_follow(False)

    def _refresh_models(self) -> None:
        models: set[str] = set()
        for span in self.model.trace.spans.values():
            m = span.attributes.get(Attr.MODEL)
            if isinstance(m, str) and m:
                models.add(m)
        self.filters.set_models(sorted(models))

    def expanded_spans(self) -> list[Span]:
        """The spans whose rows are expanded in the view (walks expanded rows only)."""
        out: list[Span] = []
        model = self.view.model()
        stack = [QModelIndex()]
        while stack:
            parent = stack.pop()
            for row in range(model.rowCount(parent)):
                idx = model.index(row, 0, parent)
                if self.view.isExpanded(idx):
                    span = self.model.span_for_index(self._to_source(idx))
                    if span is not None:
                        out.append(span)
                    stack.append(idx)
        return out

    def _restore_expanded(self, spans: list[Span]) -> None:
        for span in spans:
            idx = self._to_view(self.model.index_for_span(span))
            if idx.isValid():
                self.view.setExpanded(idx, True)

    def _use_proxy(self, on: bool, *, keep_saved: bool = False) -> None:
        want = self.proxy if on else self.model
        if self.view.model() is want:
            return
        selected = self.selected_span()
        header_state = self.view.header().saveState()
        if on and self._saved_expanded is None:
            self._saved_expanded = self.expanded_spans()
        self._programmatic += 1
        try:
            self.view.setModel(want)
            self._connect_selection()
            self.view.header().restoreState(header_state)
            if on:
                self.view.expandAll()
            elif self._saved_expanded is not None and not keep_saved:
                self._restore_expanded(self._saved_expanded)
                self._saved_expanded = None
            if selected is not None:
                self.select_span(selected)
        finally:
            self._programmatic -= 1

    def _on_errors_only(self, _on: bool) -> None:
        self._apply_filter()

    def _apply_filter(self) -> None:
        """Apply the filter box and "errors only". The view is detached from the proxy while it
        recomputes: one reset for the view instead of a row removal per hidden step (with a large
        trace expanded, those took minutes)."""
        self._filter_timer.stop()
        text, errors = self.filter_edit.text(), self.errors_only.isChecked()
        fields = self.filters.values()
        n = sum(1 for v in fields.values() if v)
        self.filters_btn.setText(f"Filters ({n})" if n else "Filters")
        wanted = (text.strip().lower(), errors, fields["kind"], fields["status"], fields["model"],
                  max(0.0, float(fields["min_cost"] or 0)),      # type: ignore[arg-type]
                  max(0.0, float(fields["min_duration"] or 0)))  # type: ignore[arg-type]
        if wanted == self.proxy.criteria():
            return
        if self.view.model() is self.proxy:
            self._use_proxy(False, keep_saved=True)   # detached while it recomputes
        self.proxy.set_text(text)
        self.proxy.set_errors_only(errors)
        self.proxy.set_fields(**fields)  # type: ignore[arg-type]
        self.filter_text_changed.emit(self.proxy.text)
        if self.proxy.active:
            self._use_proxy(True)
        elif self._saved_expanded is not None:     # every filter cleared: the user's expansion
            self._programmatic += 1
            try:
                self._restore_expanded(self._saved_expanded)
            finally:
                self._programmatic -= 1
            self._saved_expanded = None

    def _on_reset(self) -> None:
        self._programmatic += 1
        try:
            root = self.model.index(0, 0)
            if root.isValid():
                self.view.expand(self._to_view(root))
        finally:
            self._programmatic -= 1
        self.span_selected.emit(None)

    def _on_batch(self, events: list[TraceEvent]) -> None:
        newest: Span | None = None
        for ev in reversed(events):
            if ev.type is EventType.STARTED:
                newest = self.model.trace.get(ev.span_id)
                break
        if newest is not None:
            self._newest = newest
            if self._follow:
                self._scroll_to(newest)
        current = self.selected_span()
        if current is not None and any(ev.span_id == current.id for ev in events):
            self.span_selected.emit(current)   # the selected step changed: refresh its detail

    def _scroll_to_newest(self) -> None:
        span = getattr(self, "_newest", None)
        if span is not None:
            self._scroll_to(span)

    def _scroll_to(self, span: Span) -> None:
        idx = self._to_view(self.model.index_for_span(span))
        if not idx.isValid():
            return
        self._programmatic += 1
        try:
            self._expand_ancestors(idx)
            self._stick_bottom = not self.view.indexBelow(idx).isValid()
            if self._stick_bottom:
                self.view.scrollToBottom()    # the newest step is the last row: show the end
            else:
                self.view.scrollTo(idx, QAbstractItemView.ScrollHint.EnsureVisible)
        finally:
            self._programmatic -= 1

    def _expand_ancestors(self, idx: QModelIndex) -> None:
        chain = []
        p = idx.parent()
        while p.isValid():
            chain.append(p)
            p = p.parent()
        for p in reversed(chain):
            if not self.view.isExpanded(p):
                self.view.expand(p)
