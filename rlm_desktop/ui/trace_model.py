"""The Qt adapter over a core :class:`Trace`: a thin ``QAbstractItemModel`` for the trace tree view.

The GUI thread owns a mirror ``Trace``; events from the engine are buffered (:meth:`enqueue`) and
applied on a short timer as one ``beginInsertRows``/``endInsertRows`` per parent per batch and one
``dataChanged`` per changed node. Indexes carry the ``Span`` objects the Trace keeps alive (never
Python ints as internal pointers).

The view nests at most :data:`MAX_NESTING` levels (as the exports do): a step deeper than that is
shown, in the order it started, among the children of its ancestor at the last nested level, with
its level in its label. Qt walks a tree view's and a filter proxy's rows recursively in C++, so a
trace nested thousands deep (a crafted file) would otherwise crash the app on "expand all".
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QFont

from rlm_desktop.core.exporters import MAX_NESTING
from rlm_desktop.core.totals import Totals, totals
from rlm_desktop.core.trace import Attr, EventType, Span, SpanKind, Trace, TraceEvent
from rlm_desktop.ui import fmt
from rlm_desktop.ui.icons import status_icon
from rlm_desktop.ui.jobs import ThreadJob
from rlm_desktop.ui.sources_view import SOURCES_IN_TREE, sources_fact

COL_NAME, COL_STATUS, COL_DURATION, COL_TOKENS, COL_COST, COL_SUBS = range(6)
HEADERS = ("Step", "Status", "Duration", "Tokens", "Cost", "Subs")
HEADER_TIPS = (
    "Run → iterations → model call, code cells, sub-calls (nested runs under their sub-call), final",
    "running, ok, error, timeout, cancelled, limit (budget), incomplete (never ended in the file)",
    "Wall-clock time of the step (… while it runs)",
    "A model call: input / output tokens reported by the provider. A run, iteration, cell or "
    "sub-call: input / cached / output tokens of every model call inside it (~ marks estimates; "
    "'cached' for a sub-call answered from the memo cache)",
    "USD cost (of everything inside, for a run, iteration, cell or sub-call); 'unknown' when the "
    "model's price is not configured (never shown as 0), '≥ … (part unknown)' when only some are",
    "Sub-calls (llm_query, rlm_query) inside the step, at any depth",
)
# Rows that show the roll-up of their subtree rather than their own attributes.
ROLLUP_KINDS = frozenset({SpanKind.RUN, SpanKind.ITERATION, SpanKind.CODE_CELL, SpanKind.SUB_CALL})
ROLLUP_COLUMNS = (COL_TOKENS, COL_COST, COL_SUBS)
# The additive (scalar) figures of a Totals; a roll-up keeps these, not the per-model breakdown.
_SUMMED = tuple(f.name for f in fields(Totals) if f.type in ("int", "float", int, float))
_ZERO = Totals()
# A saved trace this large gets its top-level roll-ups summed on a worker thread (a 100,000-step run
# takes a few hundred ms): the rows say "…" meanwhile instead of the window freezing on open.
BACKGROUND_ROLLUP_SPANS = 20_000
SpanRole = Qt.ItemDataRole.UserRole + 1
StatusRole = Qt.ItemDataRole.UserRole + 2
MatchRole = Qt.ItemDataRole.UserRole + 3   # the filter proxy: the row matches the filter itself
# A translucent yellow: readable over light and dark alternating rows alike.
MATCH_BACKGROUND = QColor(255, 214, 0, 70)

AnyIndex = QModelIndex | QPersistentModelIndex
FLUSH_INTERVAL_MS = 75


class TraceModel(QAbstractItemModel):
    """Tree model over a mirror Trace. Only the GUI thread calls it."""

    batch_applied = Signal(list)        # list[TraceEvent] applied in this batch
    header_changed = Signal(dict)       # header attributes updated (e.g. isolation)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._trace = Trace()
        self._live = False
        self._pending: list[TraceEvent | dict[str, Any]] = []
        self._shown: dict[str | None, int] = {}   # announced child counts of touched parents
        self._new: set[str] = set()               # spans created after the last reset
        self._running: dict[str, Span] = {}       # live spans still running (duration ticks)
        # Nesting shown (see the module docstring): every span's depth; for spans at MAX_NESTING
        # and below, the ancestor they are shown under and their row there.
        self._depth: dict[str, int] = {}
        # "saw b.txt L3–L4" per span with recorded sources: (ranges counted, short, full) — a
        # trace's sources do not change once recorded, but a live span's may still arrive.
        self._saw: dict[str, tuple[int, str, str]] = {}
        self._anchor: dict[str, Span] = {}
        self._flat: dict[str, list[Span]] = {}    # anchor id -> the deep spans shown under it
        self._flat_row: dict[str, int] = {}
        # Roll-ups: core.totals of a span's subtree, computed when a row first shows it, then kept
        # up to date by adding each event's change to the cached ancestors (O(depth) per event).
        self._rollup: dict[str, Totals] = {}
        self._rollup_job: ThreadJob | None = None
        self._rollup_waiting: set[str] = set()     # roots whose roll-up a worker is summing
        self.dropped_events = 0
        self._timer = QTimer(self)
        self._timer.setInterval(FLUSH_INTERVAL_MS)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush)
        self._tick = QTimer(self)
        self._tick.setInterval(1000)
        self._tick.timeout.connect(self._on_tick)

    # -- the trace -------------------------------------------------------------------------------
    @property
    def trace(self) -> Trace:
        return self._trace

    @property
    def live(self) -> bool:
        return self._live

    def set_trace(self, trace: Trace, *, live: bool) -> None:
        """Show ``trace`` (a live mirror fed by :meth:`enqueue`, or one read from a file)."""
        old = self._trace
        self.beginResetModel()
        self._pending.clear()
        self._timer.stop()
        self._trace = trace
        self._live = live
        self._shown = {}
        self._new = set()
        self._running = {s.id: s for s in trace.spans.values() if s.end is None} if live else {}
        self._depth, self._anchor, self._flat, self._flat_row = {}, {}, {}, {}
        self._saw = {}
        depth = self._depth
        for span in trace.spans.values():      # parents come before their children
            p = span.parent
            d = depth[span.id] = 0 if p is None else depth[p.id] + 1
            if d >= MAX_NESTING:
                self._place(span)
        self._rollup = {}
        self._rollup_waiting = set()
        self._rollup_job = None
        self.endResetModel()
        del old  # released only after the views dropped every index into it
        self._update_tick()
        if not live and len(trace) >= BACKGROUND_ROLLUP_SPANS:
            self._start_rollup_job(trace)

    def _start_rollup_job(self, trace: Trace) -> None:
        roots = list(trace.roots)
        self._rollup_waiting = {r.id for r in roots}
        job = ThreadJob(lambda _job: {r.id: totals(r) for r in roots}, name="rollups", parent=self)

        def done(result: dict[str, Totals]) -> None:
            if self._rollup_job is not job:
                return                             # another trace is shown by now
            self._rollup_job = None
            self._rollup_waiting = set()
            for sid, t in result.items():
                self._rollup.setdefault(sid, _slim(t))
            for r in roots:
                self._emit_changed(r, COL_TOKENS)

        def failed(_message: str) -> None:
            if self._rollup_job is job:
                self._rollup_job = None
                self._rollup_waiting = set()       # summed on demand instead

        job.finished.connect(done)
        job.failed.connect(failed)
        self._rollup_job = job
        job.start()

    @property
    def rollups_pending(self) -> bool:
        """A worker is still summing the top-level roll-ups of a large saved trace."""
        return bool(self._rollup_waiting)

    def set_live(self, live: bool) -> None:
        """A live run ended: spans still open now read as incomplete instead of running."""
        if live == self._live:
            return
        self.flush()
        self._live = live
        if not live and self._running:
            for span in list(self._running.values()):
                self._emit_changed(span)
            self._running.clear()
        self._update_tick()

    # -- streaming -------------------------------------------------------------------------------
    def enqueue(self, events: Iterable[TraceEvent | dict[str, Any]]) -> None:
        """Buffer events (a dict is a header update); they are applied on the next flush."""
        self._pending.extend(events)
        if self._pending and not self._timer.isActive():
            self._timer.start()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        """Apply the buffered events: one insert per parent, one dataChanged per changed node."""
        self._timer.stop()
        if not self._pending:
            return
        events, self._pending = self._pending, []
        trace = self._trace
        grown: dict[str | None, Span | None] = {}
        changed: dict[str, Span] = {}
        rolled: dict[str, Span] = {}              # ancestors whose roll-up changed
        created: set[str] = set()
        applied: list[TraceEvent] = []
        header: dict[str, Any] = {}
        for ev in events:
            if isinstance(ev, dict):
                trace.header.update(ev)
                header.update(ev)
                continue
            if ev.type is EventType.STARTED:
                host = self._host_of_child(trace.spans.get(ev.parent_id) if ev.parent_id else None)
                key = host.id if host is not None else None
                if key not in self._shown:
                    if key is not None and key in self._new:
                        self._shown[key] = 0
                    else:
                        self._shown[key] = len(self._kids(host))
            before = None
            if self._rollup and ev.type is not EventType.STARTED:
                old = trace.spans.get(ev.span_id)
                before = _own_totals(old) if old is not None else None
            try:
                span = trace.apply(ev)
            except (KeyError, ValueError):
                self.dropped_events += 1   # an event for a span this mirror never saw start
                continue
            applied.append(ev)
            if self._rollup:
                self._roll(span, before, rolled)
            if ev.type is EventType.STARTED:
                self._new.add(span.id)
                created.add(span.id)
                host = self._place(span)
                grown.setdefault(host.id if host is not None else None, host)
                if self._live and span.end is None:
                    self._running[span.id] = span
            else:
                if span.end is not None:
                    self._running.pop(span.id, None)
                if span.id not in created:
                    changed[span.id] = span
        for key, parent in grown.items():
            children = self._kids(parent)
            old = self._shown.get(key, 0)
            new = len(children)
            if new > old:
                self.beginInsertRows(self.index_for_span(parent), old, new - 1)
                self._shown[key] = new
                self.endInsertRows()
        for span in changed.values():
            self._emit_changed(span)
        for sid, span in rolled.items():
            if sid not in changed and sid not in created:
                self._emit_changed(span, COL_TOKENS)
        self._update_tick()
        if header:
            self.header_changed.emit(header)
        if applied:
            self.batch_applied.emit(applied)

    # -- roll-ups --------------------------------------------------------------------------------
    def rollup(self, span: Span) -> Totals:
        """core.totals of ``span``'s subtree, kept current while the run streams in."""
        t = self._rollup.get(span.id)
        if t is None:
            t = self._rollup[span.id] = _slim(totals(span))
        return t

    def _roll(self, span: Span, before: Totals | None, rolled: dict[str, Span]) -> None:
        """Add the change of ``span``'s own figures to every cached roll-up on its ancestor chain."""
        after = _own_totals(span)
        delta = [(name, getattr(after, name) - getattr(before or _ZERO, name)) for name in _SUMMED]
        delta = [(name, d) for name, d in delta if d]
        if not delta:
            return
        s: Span | None = span
        while s is not None:
            t = self._rollup.get(s.id)
            if t is not None:
                for name, d in delta:
                    setattr(t, name, getattr(t, name) + d)
            if s is not span:
                rolled.setdefault(s.id, s)
            s = s.parent

    def _rollup_text(self, span: Span, col: int) -> str:
        a = span.attributes
        if a.get(Attr.CACHE_HIT) and not span.children:
            return "cached" if col != COL_SUBS else ""
        if span.id in self._rollup_waiting:
            return "…"
        t = self.rollup(span)
        if col == COL_SUBS:
            return fmt.fmt_int(t.sub_calls) if t.sub_calls else ""
        if not t.llm_calls:
            return ""
        mark = "~" if t.tokens_estimated else ""
        if col == COL_TOKENS:
            if not (t.input_tokens or t.output_tokens) and t.incomplete_spans:
                return "…" if self._live else ""     # its model calls have not reported yet
            # cached tokens are only ever reported by a provider: never marked as an estimate
            return (f"{mark}{fmt.fmt_int(t.input_tokens)} / {fmt.fmt_int(t.cached_tokens)} / "
                    f"{mark}{fmt.fmt_int(t.output_tokens)}")
        value = t.cost_value
        if value is None:
            return "unknown"
        if not value and t.incomplete_spans:
            return "…" if self._live else "unknown"   # calls still running (or never ended)
        text = fmt.fmt_usd(value, t.cost_known)
        return "~" + text if value and t.tokens_estimated else text

    def _rollup_tip(self, span: Span) -> str:
        if span.attributes.get(Attr.CACHE_HIT) and not span.children:
            return "Answered from the memo cache: no model call, no tokens, no cost."
        if span.id in self._rollup_waiting:
            return "Adding up the tokens and cost inside this step…"
        t = self.rollup(span)
        est = " (estimated)" if t.tokens_estimated else ""
        cost = t.cost_value
        return (f"Inside this {span.kind}: {t.llm_calls:,} model call(s), {t.sub_calls:,} sub-call(s)"
                f"{f' ({t.cache_hits:,} from the memo cache)' if t.cache_hits else ''}\n"
                f"Tokens{est}: {t.input_tokens:,} in ({t.cached_tokens:,} of them cached), "
                f"{t.output_tokens:,} out\n"
                f"Cost: {'unknown' if cost is None else fmt.fmt_usd(cost, t.cost_known)}"
                f"{f' — {t.cost_unknown_calls:,} call(s) of unknown price' if t.cost_unknown_calls and cost is not None else ''}")

    def _emit_changed(self, span: Span, first: int = 0) -> None:
        row = self._row(span)
        left = self.createIndex(row, first, span)
        right = self.createIndex(row, len(HEADERS) - 1, span)
        self.dataChanged.emit(left, right)

    def _update_tick(self) -> None:
        if self._live and self._running:
            if not self._tick.isActive():
                self._tick.start()
        else:
            self._tick.stop()

    def _on_tick(self) -> None:
        for span in self._running.values():
            if self._is_shown(span):
                idx = self.createIndex(self._row(span), COL_DURATION, span)
                self.dataChanged.emit(idx, idx, [Qt.ItemDataRole.DisplayRole])

    def _is_shown(self, span: Span) -> bool:
        host = self._host(span)
        return self._row(span) < self._child_count(host.id if host is not None else None, host)

    # -- nesting shown -----------------------------------------------------------------------------
    def _place(self, span: Span) -> Span | None:
        """Record a new span's depth (and, below MAX_NESTING, its place under its anchor); returns
        the span it is shown under (None: a top-level row)."""
        p = span.parent
        d = 0 if p is None else self._depth.get(p.id, 0) + 1
        self._depth[span.id] = d
        if d < MAX_NESTING:
            return p
        anchor = p if d == MAX_NESTING else self._anchor[p.id]   # type: ignore[union-attr]
        assert anchor is not None
        self._anchor[span.id] = anchor
        rows = self._flat.setdefault(anchor.id, [])
        self._flat_row[span.id] = len(rows)
        rows.append(span)
        return anchor

    def _host_of_child(self, parent: Span | None) -> Span | None:
        """The span a new child of ``parent`` will be shown under."""
        if parent is None or self._depth.get(parent.id, 0) < MAX_NESTING:
            return parent
        return self._anchor[parent.id]

    def _host(self, span: Span) -> Span | None:
        """The span ``span`` is shown under (its parent, or its anchor when it is deeper)."""
        if self._depth.get(span.id, 0) <= MAX_NESTING:
            return span.parent
        return self._anchor[span.id]

    def _row(self, span: Span) -> int:
        if self._depth.get(span.id, 0) < MAX_NESTING:
            return span.index
        return self._flat_row[span.id]

    def _kids(self, span: Span | None) -> list[Span]:
        """The rows shown under ``span`` (None: the top level)."""
        if span is None:
            return self._trace.roots
        d = self._depth.get(span.id, 0)
        if d < MAX_NESTING - 1:
            return span.children
        return self._flat.get(span.id, []) if d == MAX_NESTING - 1 else []

    def nesting_depth(self, span: Span) -> int:
        """How deep ``span`` really is (0: a top-level step), whatever level it is shown at."""
        return self._depth.get(span.id, 0)

    # -- lookup ----------------------------------------------------------------------------------
    def span_for_index(self, index: AnyIndex) -> Span | None:
        if not index.isValid() or index.model() is not self:
            return None     # an index of a proxy (or another model) carries no Span: never deref it
        span = index.internalPointer()
        return span if isinstance(span, Span) else None

    def child_span(self, parent: AnyIndex, row: int) -> Span | None:
        """The span at ``row`` under ``parent`` (as :meth:`index` would give), without building an
        index: the filter proxy asks this once per step of the trace."""
        if parent.isValid():
            pspan = self.span_for_index(parent)
            if pspan is None or not 0 <= row < self._child_count(pspan.id, pspan):
                return None
            return self._kids(pspan)[row]
        return self._trace.roots[row] if 0 <= row < self._child_count(None, None) else None

    def index_for_span(self, span: Span | None, column: int = 0) -> QModelIndex:
        if span is None:
            return QModelIndex()
        return self.createIndex(self._row(span), column, span)

    def _child_count(self, key: str | None, span: Span | None) -> int:
        n = self._shown.get(key)
        if n is not None:
            return n
        if key is not None and key in self._new:
            return 0
        return len(self._kids(span))

    # -- QAbstractItemModel ----------------------------------------------------------------------
    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's default
        if not parent.isValid():
            return self._child_count(None, None)
        if parent.column() != 0:
            return 0
        span = self.span_for_index(parent)
        return 0 if span is None else self._child_count(span.id, span)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's default
        return len(HEADERS)

    def index(self, row: int, column: int, parent: AnyIndex = QModelIndex()) -> QModelIndex:  # noqa: B008
        if row < 0 or column < 0 or column >= len(HEADERS):
            return QModelIndex()
        if parent.isValid():
            if parent.column() != 0:
                return QModelIndex()
            pspan = self.span_for_index(parent)
            if pspan is None or row >= self._child_count(pspan.id, pspan):
                return QModelIndex()
            return self.createIndex(row, column, self._kids(pspan)[row])
        if row >= self._child_count(None, None):
            return QModelIndex()
        return self.createIndex(row, column, self._trace.roots[row])

    def parent(self, index: AnyIndex | None = None) -> Any:  # type: ignore[override]
        if index is None:
            return super().parent()   # QObject.parent()
        span = self.span_for_index(index)
        p = None if span is None else self._host(span)
        if p is None:
            return QModelIndex()
        return self.createIndex(self._row(p), 0, p)

    def hasChildren(self, parent: AnyIndex = QModelIndex()) -> bool:  # noqa: B008
        return self.rowCount(parent) > 0

    def flags(self, index: AnyIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def headerData(self, section: int, orientation: Qt.Orientation,
                   role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(HEADERS):
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return HEADER_TIPS[section]
        return None

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        span = self.span_for_index(index)
        if span is None:
            return None
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_NAME:
                d = self._depth.get(span.id, 0)
                label = fmt.span_label(span) if d < MAX_NESTING else f"[level {d}] {fmt.span_label(span)}"
                saw = self._saw_texts(span)
                return f"{label}  · {saw[0]}" if saw else label
            if col == COL_STATUS:
                return fmt.STATUS_LABELS.get(fmt.span_status(span, self._live), "?")
            if col == COL_DURATION:
                return fmt.span_duration(span, self._live)
            if col in ROLLUP_COLUMNS and span.kind in ROLLUP_KINDS:
                return self._rollup_text(span, col)
            if col == COL_TOKENS:
                return fmt.fmt_tokens(span.attributes)
            if col == COL_COST:
                return fmt.fmt_cost(span.attributes)
            return None
        if role == Qt.ItemDataRole.DecorationRole and col == COL_STATUS:
            return status_icon(fmt.span_status(span, self._live))
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_STATUS:
                return fmt.STATUS_EXPLANATIONS.get(fmt.span_status(span, self._live))
            if col == COL_NAME:
                saw = self._saw_texts(span)
                tip = f"{span.kind}: {fmt.one_line(fmt.span_label(span), 300)}"
                return f"{tip}\n{saw[1]}" if saw else tip
            if col in ROLLUP_COLUMNS and span.kind in ROLLUP_KINDS:
                return self._rollup_tip(span)
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and col in (COL_DURATION, *ROLLUP_COLUMNS):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == SpanRole:
            return span
        if role == StatusRole:
            return fmt.span_status(span, self._live)
        return None


    def _saw_texts(self, span: Span) -> tuple[str, str] | None:
        """(short, full) "saw …" of the documents this step's model saw; None when none recorded."""
        value = span.attributes.get(Attr.SOURCES)
        if not value or not isinstance(value, list):
            return None
        hit = self._saw.get(span.id)
        if hit is None or hit[0] != len(value):
            hit = (len(value), sources_fact(value, SOURCES_IN_TREE), sources_fact(value))
            self._saw[span.id] = hit
        return (hit[1], hit[2]) if hit[1] else None


def _slim(t: Totals) -> Totals:
    """A roll-up keeps the summed figures only (the per-model breakdown is not kept current)."""
    t.by_model = {}
    t.by_depth = {}
    t.iterations = 0
    return t


def _own_totals(span: Span) -> Totals:
    """core.totals of ``span`` alone (its children left out): what the span adds to its ancestors."""
    alone = Span(span.id, span.parent_id, span.kind, span.name, span.start, span.end, span.status,
                 span.attributes)
    return totals(alone)


ERROR_STATUSES = frozenset({"error", "timeout", "budget", "incomplete"})


class TraceFilterProxy(QSortFilterProxyModel):
    """Filters the trace by text (names and contents), "errors only", kind, status, model, minimum
    cost and minimum duration (all combined); ancestors stay visible. Rows that match themselves (not
    only kept as an ancestor) are bold with a highlight background (:data:`MatchRole` says which)."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.setRecursiveFilteringEnabled(True)
        self.setDynamicSortFilter(True)
        self._text = ""
        self._errors_only = False
        self._kind: str | None = None
        self._status: str | None = None
        self._model: str | None = None
        self._min_cost = 0.0
        self._min_duration = 0.0
        # Lower-cased searchable text of ended spans (they no longer change): a 100,000-step trace
        # is searched again on every filter change, and building the text was most of the time.
        self._search: dict[str, str] = {}
        self.modelReset.connect(self._search.clear)

    @property
    def active(self) -> bool:
        return bool(self._text) or self._errors_only or self.field_filters_active

    @property
    def field_filters_active(self) -> bool:
        """A kind, status, model, minimum cost or minimum duration filter is set."""
        return (self._kind is not None or self._status is not None or self._model is not None
                or self._min_cost > 0 or self._min_duration > 0)

    @property
    def text(self) -> str:
        return self._text

    @property
    def errors_only(self) -> bool:
        return self._errors_only

    def criteria(self) -> tuple[Any, ...]:
        """Everything the filter depends on (to skip recomputing when nothing changed)."""
        return (self._text, self._errors_only, self._kind, self._status, self._model,
                self._min_cost, self._min_duration)

    def set_text(self, text: str) -> None:
        text = text.strip().lower()
        if text != self._text:
            self.beginFilterChange()
            self._text = text
            self.endFilterChange()

    def set_errors_only(self, on: bool) -> None:
        if on != self._errors_only:
            self.beginFilterChange()
            self._errors_only = on
            self.endFilterChange()

    def set_fields(self, *, kind: str | None = None, status: str | None = None,
                   model: str | None = None, min_cost: float = 0.0,
                   min_duration: float = 0.0) -> None:
        """Kind (a SpanKind value), status (a status word as :func:`fmt.span_status` gives it),
        model (exact), minimum cost in USD and minimum duration in seconds; None / 0 = any."""
        new = (kind or None, status or None, model or None, max(0.0, float(min_cost)),
               max(0.0, float(min_duration)))
        if new != (self._kind, self._status, self._model, self._min_cost, self._min_duration):
            self.beginFilterChange()
            self._kind, self._status, self._model, self._min_cost, self._min_duration = new
            self.endFilterChange()

    def matches(self, span: Span, live: bool) -> bool:
        """Whether ``span`` itself passes every filter (its descendants not considered)."""
        if self._kind is not None and str(span.kind) != self._kind:
            return False
        if self._errors_only or self._status is not None:
            status = fmt.span_status(span, live)
            if self._errors_only and status not in ERROR_STATUSES:
                return False
            if self._status is not None and status != self._status:
                return False
        a = span.attributes
        if self._model is not None and self._model not in (a.get(Attr.MODEL), a.get(Attr.RESPONSE_MODEL)):
            return False
        if self._min_cost > 0:
            cost = a.get(Attr.COST_USD)
            if not isinstance(cost, int | float) or cost < self._min_cost:
                return False
        if self._min_duration > 0:
            end = span.end if span.end is not None else (time.time() if live else None)
            if end is None or end - span.start < self._min_duration:
                return False
        return not self._text or self._text in self._search_text(span)

    def filterAcceptsRow(self, source_row: int, source_parent: AnyIndex) -> bool:
        model = self.sourceModel()
        if not isinstance(model, TraceModel):
            return True
        span = model.child_span(source_parent, source_row)
        if span is None:
            return False
        if not self._errors_only and not self.field_filters_active:   # the text alone: the hot path
            return not self._text or self._text in self._search_text(span)
        return self.matches(span, model.live)

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role in (MatchRole, Qt.ItemDataRole.FontRole, Qt.ItemDataRole.BackgroundRole):
            model = self.sourceModel()
            span = index.data(SpanRole) if index.isValid() else None
            hit = (self.active and isinstance(model, TraceModel) and isinstance(span, Span)
                   and self.matches(span, model.live))
            if role == MatchRole:
                return bool(hit)
            if not hit:
                return super().data(index, role)
            if role == Qt.ItemDataRole.FontRole:
                font = QFont()
                font.setBold(True)
                return font
            return QBrush(MATCH_BACKGROUND)
        return super().data(index, role)

    def _search_text(self, span: Span) -> str:
        if span.end is None:               # still changing (streamed text): not cached
            return fmt.span_search_text(span)
        key = span.id
        text = self._search.get(key)
        if text is None:
            text = self._search[key] = fmt.span_search_text(span)
        return text
