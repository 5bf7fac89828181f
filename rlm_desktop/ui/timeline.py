"""Timeline (waterfall) of the shown trace: one bar per span on a time axis, rows in tree order and
indented by depth, coloured by kind and status; parallel sub-calls overlap in time on their own rows.

The view paints only the rows in view (the row order and each span's depth are kept incrementally as
batches arrive from the :class:`TraceModel`, never rebuilt per paint), so a 100,000-span trace
scrolls and zooms as smoothly as a small one. It follows the model's batched updates (one repaint
per batch, plus a slow tick while spans run so running bars grow at the right edge). Clicking a bar
selects the step in the trace tree; selecting in the tree highlights and scrolls to the bar.
Zoom: Ctrl+wheel, +/-, 0 or F to fit; pan: drag or the scroll bars.
"""

from __future__ import annotations

import math
import time
from typing import Any

from PySide6.QtCore import QEvent, QPoint, QRect, Qt, QTimer, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFontMetrics,
    QHelpEvent,
    QKeyEvent,
    QMouseEvent,
    QPainter,
    QPaintEvent,
    QPalette,
    QPen,
    QResizeEvent,
    QWheelEvent,
)
from PySide6.QtWidgets import (
    QAbstractScrollArea,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QToolButton,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from rlm_desktop.core.trace import EventType, Span, SpanKind, TraceEvent
from rlm_desktop.ui import fmt
from rlm_desktop.ui.trace_model import COL_COST, COL_SUBS, COL_TOKENS, TraceModel

ROW_H = 18
AXIS_H = 22
LABEL_W = 210
INDENT = 12
MAX_INDENT_LEVELS = 8
MIN_SCALE = 1e-4          # px per second (a year-long trace still fits)
MAX_SCALE = 1e7           # px per second (0.1 µs per pixel)
MAX_CONTENT_PX = 1_000_000_000
ZOOM_STEP = 1.25
TICK_MS = 250             # running bars grow this often while a live run has open spans

# Kind colours: mid-tone hues that read on light and dark bases alike.
KIND_COLORS: dict[str, str] = {
    SpanKind.RUN: "#5b6f95",
    SpanKind.ITERATION: "#8391ab",
    SpanKind.LLM_CALL: "#2f80ed",
    SpanKind.CODE_CELL: "#1f9e78",
    SpanKind.SUB_CALL: "#8e5bd6",
    SpanKind.FINAL: "#c99a1a",
}
OTHER_KIND_COLOR = "#8a8a8a"
# Status colours: those of the status icons (resources/icons/status-*.svg).
STATUS_COLORS: dict[str, str] = {
    "error": "#c62828",
    "timeout": "#d35400",
    "budget": "#b26a00",
    "cancelled": "#6b7785",
    "incomplete": "#7b5ea7",
}
KIND_NAMES = {SpanKind.RUN: "run", SpanKind.ITERATION: "iteration", SpanKind.LLM_CALL: "model call",
              SpanKind.CODE_CELL: "cell", SpanKind.SUB_CALL: "sub-call", SpanKind.FINAL: "final"}


class RowOrder:
    """The spans of a trace in tree order (pre-order), with each one's row.

    Built once (iteratively) on first use; spans that start later are inserted where the tree puts
    them: after the last placed descendant of their previous sibling. Children only ever append and
    start in order, so a span's placed children are a prefix of its children. A live run inserts
    near the end, so only the few rows after the insertion point are renumbered.
    """

    def __init__(self) -> None:
        self.rows: list[Span] = []
        self._row_of: dict[str, int] | None = {}
        self.t0: float | None = None
        self.t_end: float | None = None      # latest start or end seen

    def build(self, roots: list[Span]) -> None:
        rows: list[Span] = []
        append = rows.append
        stack = list(reversed(roots))
        pop = stack.pop
        extend = stack.extend
        while stack:
            s = pop()
            append(s)
            if s.children:
                extend(reversed(s.children))
        self.rows = rows
        self._row_of = None                  # numbered when first needed (selection, live insert)
        if rows:
            self.t0 = min(r.start for r in roots)
            self.t_end = max(s.start if s.end is None else s.end for s in rows)
        else:
            self.t0 = self.t_end = None

    @property
    def row_of(self) -> dict[str, int]:
        if self._row_of is None:
            self._row_of = {s.id: i for i, s in enumerate(self.rows)}
        return self._row_of

    @staticmethod
    def depth(span: Span) -> int:
        d = 0
        p = span.parent
        while p is not None:
            d += 1
            p = p.parent
        return d

    def insert(self, span: Span) -> None:
        """Place a span that just started (its parent and earlier siblings are placed already)."""
        row_of = self.row_of
        if span.id in row_of:
            return
        parent = span.parent
        if parent is None or parent.id not in row_of:
            pos = len(self.rows)
        else:
            x = parent if span.index == 0 else parent.children[span.index - 1]
            while x is not parent:           # down to the last placed descendant of that sibling
                kids = x.children
                k = len(kids) - 1
                while k >= 0 and kids[k].id not in row_of:
                    k -= 1
                if k < 0:
                    break
                x = kids[k]
            pos = row_of[x.id] + 1
        rows = self.rows
        rows.insert(pos, span)
        for i in range(pos, len(rows)):
            row_of[rows[i].id] = i
        self.see_time(span.start)

    def see_time(self, t: float) -> None:
        if self.t0 is None or t < self.t0:
            self.t0 = t
        if self.t_end is None or t > self.t_end:
            self.t_end = t


class TimelineView(QAbstractScrollArea):
    """The waterfall itself. ``span_clicked`` when the user clicks a bar's row."""

    span_clicked = Signal(object)      # Span
    scale_changed = Signal(float)      # px per second

    def __init__(self, model: TraceModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("timelineView")
        self.setAccessibleName("Timeline")
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.viewport().setMouseTracking(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.verticalScrollBar().setSingleStep(ROW_H)
        self.horizontalScrollBar().setSingleStep(20)
        self.model = model
        self.order = RowOrder()
        self._built = False
        self._scale = 100.0        # px per second
        self._fit = True
        self._selected: Span | None = None
        self._press: QPoint | None = None
        self._press_scroll = (0, 0)
        self._dragging = False
        self._running: set[str] = set()
        # Test hooks: rows drawn by the last paint, and in all paints since the counter was reset.
        self.rows_painted_last = 0
        self.rows_painted_total = 0
        self.paints = 0
        self._tick = QTimer(self)
        self._tick.setInterval(TICK_MS)
        self._tick.timeout.connect(self._on_tick)
        model.modelReset.connect(self._on_reset)
        model.batch_applied.connect(self._on_batch)
        self._on_reset()

    # -- state -------------------------------------------------------------------------------------
    @property
    def scale(self) -> float:
        """Pixels per second of the time axis."""
        return self._scale

    @property
    def fit(self) -> bool:
        return self._fit

    @property
    def selected(self) -> Span | None:
        return self._selected

    def ensure_built(self) -> RowOrder:
        if not self._built:
            self.order.build(self.model.trace.roots)
            self._built = True
            self._running = ({s.id for s in self.order.rows if s.end is None}
                             if self.model.live else set())
            self._update_tick()
            self._relayout()
        return self.order

    def row_count(self) -> int:
        return len(self.ensure_built().rows)

    def row_of(self, span: Span) -> int | None:
        return self.ensure_built().row_of.get(span.id)

    def span_at_row(self, row: int) -> Span | None:
        rows = self.ensure_built().rows
        return rows[row] if 0 <= row < len(rows) else None

    def _now_edge(self) -> float:
        o = self.order
        t_end = o.t_end if o.t_end is not None else 0.0
        if self._running and self.model.live:
            return max(t_end, time.time())
        return t_end

    def duration(self) -> float:
        o = self.ensure_built()
        if o.t0 is None:
            return 0.0
        return max(0.0, self._now_edge() - o.t0)

    # -- geometry ----------------------------------------------------------------------------------
    def bar_area_width(self) -> int:
        return max(10, self.viewport().width() - LABEL_W - 8)

    def x_of(self, t: float) -> float:
        """Viewport x of time ``t`` (seconds since the epoch)."""
        t0 = self.order.t0 or 0.0
        return LABEL_W + (t - t0) * self._scale - self.horizontalScrollBar().value()

    def time_at(self, x: float) -> float:
        t0 = self.order.t0 or 0.0
        return t0 + (x - LABEL_W + self.horizontalScrollBar().value()) / self._scale

    def row_at(self, y: int) -> int | None:
        if y < AXIS_H:
            return None
        row = (y - AXIS_H + self.verticalScrollBar().value()) // ROW_H
        return row if 0 <= row < len(self.order.rows) else None

    def bar_rect(self, span: Span) -> QRect | None:
        """The bar's rectangle in viewport coordinates (None when the span is not placed)."""
        row = self.row_of(span)
        if row is None:
            return None
        y = AXIS_H + row * ROW_H - self.verticalScrollBar().value()
        x0 = self.x_of(span.start)
        end = span.end if span.end is not None else self._now_edge()
        x1 = max(self.x_of(end), x0 + 2)
        return QRect(int(x0), y + 3, max(2, int(x1 - x0)), ROW_H - 6)

    def visible_rows(self) -> range:
        """The rows that intersect the viewport (what a paint draws)."""
        n = len(self.order.rows)
        top = self.verticalScrollBar().value()
        first = max(0, top // ROW_H)
        last = min(n, (top + max(0, self.viewport().height() - AXIS_H)) // ROW_H + 1)
        return range(first, max(first, last))

    def _relayout(self) -> None:
        """Scroll ranges from the row count and the time span; in fit mode, the scale too."""
        if self._fit:
            d = self.duration()
            new = self.bar_area_width() / d if d > 0 else 100.0
            new = min(MAX_SCALE, max(MIN_SCALE, new))
            if new != self._scale:
                self._scale = new
                self.scale_changed.emit(new)
        content_w = min(int(self.duration() * self._scale) + 8, 2 * MAX_CONTENT_PX)
        hb = self.horizontalScrollBar()
        hb.setPageStep(self.bar_area_width())
        hb.setRange(0, max(0, content_w - self.bar_area_width()))
        vb = self.verticalScrollBar()
        page = max(ROW_H, self.viewport().height() - AXIS_H)
        vb.setPageStep(page)
        vb.setRange(0, max(0, len(self.order.rows) * ROW_H - page))

    # -- zoom and pan ------------------------------------------------------------------------------
    def set_scale(self, scale: float, anchor_x: float | None = None) -> None:
        """Zoom to ``scale`` px/s keeping the time under ``anchor_x`` (viewport x) in place."""
        self.ensure_built()
        # the content width must stay within a scroll bar's int range (2**31 px)
        scale = min(MAX_SCALE, MAX_CONTENT_PX / max(self.duration(), 1e-9), max(MIN_SCALE, scale))
        if anchor_x is None:
            anchor_x = LABEL_W + self.bar_area_width() / 2
        t = self.time_at(anchor_x)
        self._fit = False
        self._scale = scale
        self._relayout()
        t0 = self.order.t0 or 0.0
        self.horizontalScrollBar().setValue(int(round((t - t0) * scale - (anchor_x - LABEL_W))))
        self.scale_changed.emit(scale)
        self.viewport().update()

    def zoom(self, factor: float, anchor_x: float | None = None) -> None:
        self.set_scale(self._scale * factor, anchor_x)

    def zoom_to_fit(self) -> None:
        self._fit = True
        self._relayout()
        self.horizontalScrollBar().setValue(0)
        self.viewport().update()

    # -- selection ---------------------------------------------------------------------------------
    def set_selected(self, span: Span | None, *, scroll: bool = True) -> None:
        """Highlight ``span`` (a step selected in the tree) and bring its bar into view."""
        self._selected = span
        if span is not None and scroll:
            self.scroll_to(span)
        self.viewport().update()

    def scroll_to(self, span: Span, *, horizontal: bool = True) -> None:
        row = self.row_of(span)
        if row is None:
            return
        vb = self.verticalScrollBar()
        y = row * ROW_H
        page = max(ROW_H, self.viewport().height() - AXIS_H)
        if y < vb.value() or y + ROW_H > vb.value() + page:
            vb.setValue(y - page // 2)
        rect = self.bar_rect(span) if horizontal else None
        if rect is not None and (rect.left() < LABEL_W or rect.left() > self.viewport().width() - 20):
            hb = self.horizontalScrollBar()
            hb.setValue(hb.value() + rect.left() - LABEL_W - 20)

    # -- model -------------------------------------------------------------------------------------
    def _on_reset(self) -> None:
        self.order = RowOrder()
        self._built = False
        self._running = set()
        self._selected = None
        self._fit = True
        self.verticalScrollBar().setValue(0)
        self.horizontalScrollBar().setValue(0)
        if self.isVisible():
            self.ensure_built()
        self._update_tick()
        self.viewport().update()

    def _on_batch(self, events: list[TraceEvent]) -> None:
        """Apply one batch of the model (already in its Trace): place new spans, extend the axis."""
        if not self._built:
            return                       # built in full (with these spans) when first shown
        hb = self.horizontalScrollBar()
        at_right = hb.value() >= hb.maximum() - 2
        spans = self.model.trace.spans
        o = self.order
        for ev in events:
            span = spans.get(ev.span_id)
            if span is None:
                continue
            if ev.type is EventType.STARTED:
                o.insert(span)
                if span.end is None and self.model.live:
                    self._running.add(span.id)
            if span.end is not None:
                self._running.discard(span.id)
                o.see_time(span.end)
        self._relayout()
        if at_right and not self._fit and self._running:
            hb.setValue(hb.maximum())    # a live run zoomed in: keep its growing edge in view
        self._update_tick()
        self.viewport().update()

    def _update_tick(self) -> None:
        if self._running and self.model.live:
            if not self._tick.isActive():
                self._tick.start()
        else:
            self._tick.stop()

    def _on_tick(self) -> None:
        if not self.model.live:
            self._running.clear()
            self._update_tick()
        hb = self.horizontalScrollBar()
        at_right = hb.value() >= hb.maximum() - 2
        self._relayout()
        if at_right and not self._fit:
            hb.setValue(hb.maximum())
        self.viewport().update()

    # -- painting ----------------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        o = self.ensure_built()
        p = QPainter(self.viewport())
        pal = self.palette()
        base = pal.color(QPalette.ColorRole.Base)
        text = pal.color(QPalette.ColorRole.Text)
        dark = base.lightness() < 128
        p.fillRect(event.rect(), base)
        w = self.viewport().width()
        h = self.viewport().height()
        rows = self.visible_rows()
        top = self.verticalScrollBar().value()
        fm = QFontMetrics(self.font())
        alt = pal.color(QPalette.ColorRole.AlternateBase)
        hl = QColor(pal.color(QPalette.ColorRole.Highlight))
        hl.setAlpha(90)
        grid = QColor(text)
        grid.setAlpha(40)
        self._paint_grid(p, w, h, grid, text, fm)
        p.setClipRect(0, AXIS_H, w, h - AXIS_H)
        selected_id = self._selected.id if self._selected is not None else None
        now_edge = self._now_edge()
        t0 = o.t0 or 0.0
        xoff = LABEL_W - self.horizontalScrollBar().value()
        scale = self._scale
        for r in rows:
            span = o.rows[r]
            y = AXIS_H + r * ROW_H - top
            if span.id == selected_id:
                p.fillRect(0, y, w, ROW_H, hl)
            elif r % 2:
                p.fillRect(0, y, w, ROW_H, alt)
            status = fmt.span_status(span, self.model.live)
            x0 = xoff + (span.start - t0) * scale
            end = span.end if span.end is not None else now_edge
            x1 = max(xoff + (end - t0) * scale, x0 + 2)
            if x1 >= LABEL_W and x0 <= w:
                left = max(x0, LABEL_W - 1.0)
                rect = QRect(int(left), y + 3, max(2, int(min(x1, w + 2) - left)), ROW_H - 6)
                color = QColor(STATUS_COLORS.get(status) or KIND_COLORS.get(span.kind, OTHER_KIND_COLOR))
                p.fillRect(rect, color)
                if status in ("running", "incomplete"):
                    stripes = QColor("#ffffff" if not dark else "#000000")
                    stripes.setAlpha(110)
                    p.fillRect(rect, QBrush(stripes, Qt.BrushStyle.BDiagPattern))
                if span.id == selected_id:
                    p.setPen(QPen(text, 2))
                    p.drawRect(rect.adjusted(0, 0, -1, -1))
            # the label gutter (drawn over any bar that scrolled under it)
            p.fillRect(0, y, LABEL_W - 2, ROW_H, hl if span.id == selected_id else (alt if r % 2 else base))
            indent = min(o.depth(span), MAX_INDENT_LEVELS) * INDENT
            kind_color = QColor(KIND_COLORS.get(span.kind, OTHER_KIND_COLOR))
            p.fillRect(4 + indent, y + 5, 8, ROW_H - 10, kind_color)
            p.setPen(text)
            label = fm.elidedText(fmt.span_label(span), Qt.TextElideMode.ElideRight,
                                  LABEL_W - 22 - indent)
            p.drawText(QRect(16 + indent, y, LABEL_W - 20 - indent, ROW_H),
                       int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), label)
        p.setClipping(False)
        p.setPen(grid)
        p.drawLine(LABEL_W - 2, 0, LABEL_W - 2, h)
        p.end()
        n = len(rows)
        self.rows_painted_last = n
        self.rows_painted_total += n
        self.paints += 1

    def _paint_grid(self, p: QPainter, w: int, h: int, grid: QColor, text: QColor,
                    fm: QFontMetrics) -> None:
        """The time axis along the top: 'nice' steps at least 70 px apart, with light grid lines."""
        p.fillRect(0, 0, w, AXIS_H, self.palette().color(QPalette.ColorRole.Window))
        if self.order.t0 is None:
            p.setPen(text)
            p.drawText(QRect(0, 0, w, h), int(Qt.AlignmentFlag.AlignCenter),
                       "No run shown: run a query or open a trace.")
            return
        step = _nice_step(70.0 / self._scale)
        hv = self.horizontalScrollBar().value()
        first = math.floor(hv / self._scale / step)
        last = math.ceil((hv + w) / self._scale / step)
        p.setPen(text)
        p.drawText(QRect(6, 0, LABEL_W - 10, AXIS_H), int(Qt.AlignmentFlag.AlignVCenter),
                   f"{fmt.fmt_duration(self.duration())} · {len(self.order.rows):,} steps")
        for k in range(max(0, first), last + 1):
            x = LABEL_W + k * step * self._scale - hv
            if x < LABEL_W or x > w:
                continue
            p.setPen(grid)
            p.drawLine(int(x), AXIS_H - 4, int(x), h)
            p.setPen(text)
            p.drawText(int(x) + 3, AXIS_H - 7, _fmt_tick(k * step))

    # -- input -------------------------------------------------------------------------------------
    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._relayout()

    def showEvent(self, event: Any) -> None:
        super().showEvent(event)
        self.ensure_built()
        self._relayout()

    def wheelEvent(self, event: QWheelEvent) -> None:
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            steps = event.angleDelta().y() / 120.0
            if steps:
                self.zoom(ZOOM_STEP ** steps, event.position().x())
            event.accept()
            return
        super().wheelEvent(event)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        key = event.key()
        if key in (Qt.Key.Key_Plus, Qt.Key.Key_Equal):
            self.zoom(ZOOM_STEP)
        elif key in (Qt.Key.Key_Minus, Qt.Key.Key_Underscore):
            self.zoom(1 / ZOOM_STEP)
        elif key in (Qt.Key.Key_0, Qt.Key.Key_F):
            self.zoom_to_fit()
        else:
            super().keyPressEvent(event)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self._press = event.position().toPoint()
            self._press_scroll = (self.horizontalScrollBar().value(), self.verticalScrollBar().value())
            self._dragging = False
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._press is not None and event.buttons() & Qt.MouseButton.LeftButton:
            d = event.position().toPoint() - self._press
            if self._dragging or d.manhattanLength() > 4:
                if not self._dragging:
                    self._dragging = True
                    self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
                self.horizontalScrollBar().setValue(self._press_scroll[0] - d.x())
                self.verticalScrollBar().setValue(self._press_scroll[1] - d.y())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        if event.button() == Qt.MouseButton.LeftButton and self._press is not None:
            was_drag = self._dragging
            self._press = None
            self._dragging = False
            self.viewport().unsetCursor()
            if not was_drag:
                row = self.row_at(int(event.position().y()))
                span = self.span_at_row(row) if row is not None else None
                if span is not None:
                    self.set_selected(span, scroll=False)
                    self.span_clicked.emit(span)
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            he = event  # a QHelpEvent
            assert isinstance(he, QHelpEvent)
            tip = self.tooltip_at(he.pos())
            if tip:
                QToolTip.showText(he.globalPos(), tip, self.viewport())
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().viewportEvent(event)

    def tooltip_at(self, pos: QPoint) -> str:
        """The hover text for viewport position ``pos``: name, status, duration, tokens and cost."""
        row = self.row_at(pos.y())
        span = self.span_at_row(row) if row is not None else None
        if span is None:
            return ""
        m = self.model
        idx = m.index_for_span(span)
        status = fmt.span_status(span, m.live)
        lines = [f"{KIND_NAMES.get(span.kind, str(span.kind))}: {fmt.one_line(fmt.span_label(span), 120)}",
                 f"{fmt.STATUS_LABELS.get(status, status)} · {fmt.span_duration(span, m.live) or '—'}"
                 f" · starts at +{fmt.fmt_duration(span.start - (self.order.t0 or span.start))}"]
        tokens = m.data(idx.siblingAtColumn(COL_TOKENS))
        cost = m.data(idx.siblingAtColumn(COL_COST))
        subs = m.data(idx.siblingAtColumn(COL_SUBS)) if idx.isValid() else ""
        if tokens:
            lines.append(f"Tokens: {tokens}")
        if cost:
            lines.append(f"Cost: {cost}")
        if subs:
            lines.append(f"Sub-calls: {subs}")
        return "\n".join(lines)


def _nice_step(min_seconds: float) -> float:
    """The smallest 1/2/5×10^k seconds step ≥ ``min_seconds``."""
    if min_seconds <= 0:
        return 1.0
    exp = math.floor(math.log10(min_seconds))
    for m in (1, 2, 5, 10):
        step = m * 10.0 ** exp
        if step >= min_seconds * 0.999:
            return step
    return 10.0 ** (exp + 1)


def _fmt_tick(seconds: float) -> str:
    if seconds == 0:
        return "0"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.4g} ms"
    if seconds < 60:
        return f"{seconds:.4g} s"
    m, s = divmod(seconds, 60)
    return f"{int(m)}:{s:04.1f}" if s % 1 else f"{int(m)}:{int(s):02d}"


class TimelinePane(QWidget):
    """The timeline with its zoom buttons and a colour legend; keeps its selection in step with the
    trace pane's (through the tree's selection model)."""

    def __init__(self, model: TraceModel, trace_pane: Any = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("timelinePane")
        self.view = TimelineView(model)
        self.fit_btn = QToolButton()
        self.fit_btn.setText("Fit")
        self.fit_btn.setToolTip("Fit the whole run in the width (0 or F)")
        self.fit_btn.clicked.connect(self.view.zoom_to_fit)
        self.zoom_in_btn = QToolButton()
        self.zoom_in_btn.setText("+")
        self.zoom_in_btn.setToolTip("Zoom in (+, or Ctrl+wheel)")
        self.zoom_in_btn.clicked.connect(lambda: self.view.zoom(ZOOM_STEP))
        self.zoom_out_btn = QToolButton()
        self.zoom_out_btn.setText("−")
        self.zoom_out_btn.setToolTip("Zoom out (-, or Ctrl+wheel)")
        self.zoom_out_btn.clicked.connect(lambda: self.view.zoom(1 / ZOOM_STEP))
        self.legend = QLabel(_legend_html())
        # The legend may be cut on a narrow window; it must never make the window wider than a
        # 1280-pixel screen (its full text is in the tooltip).
        self.legend.setMinimumWidth(0)
        self.legend.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.legend.setToolTip("Bars take their step's colour; failed, stopped and limited steps the "
                               "colour of their status; striped bars are still running (or never "
                               "ended). Drag to pan, click a bar to select its step.")
        bar = QHBoxLayout()
        bar.setContentsMargins(0, 0, 0, 0)
        title = QLabel("<b>Timeline</b>")
        bar.addWidget(title)
        bar.addWidget(self.legend, 1)
        for b in (self.zoom_out_btn, self.zoom_in_btn, self.fit_btn):
            bar.addWidget(b)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 0, 4, 4)
        lay.addLayout(bar)
        lay.addWidget(self.view, 1)
        self.trace_pane = trace_pane
        if trace_pane is not None:
            self.view.span_clicked.connect(trace_pane.select_span)
            trace_pane.span_selected.connect(self._on_tree_selected)
            model.batch_applied.connect(self._on_batch)

    def _on_batch(self, events: list[TraceEvent]) -> None:
        """While the tree follows the newest step, the timeline keeps it in view too."""
        if not self.trace_pane.follow or not self.view.isVisible():
            return
        for ev in reversed(events):
            if ev.type is EventType.STARTED:
                span = self.view.model.trace.get(ev.span_id)
                if span is not None:
                    self.view.scroll_to(span, horizontal=False)
                return

    def _on_tree_selected(self, span: Span | None) -> None:
        if span is not self.view.selected:
            self.view.set_selected(span)


def _legend_html() -> str:
    items = [(KIND_COLORS[k], KIND_NAMES[k]) for k in (SpanKind.LLM_CALL, SpanKind.CODE_CELL,
                                                        SpanKind.SUB_CALL, SpanKind.ITERATION)]
    items += [(STATUS_COLORS["error"], "error"), (STATUS_COLORS["budget"], "limit")]
    return "&nbsp;&nbsp;".join(f"<span style='color:{c}'>■</span>&nbsp;{n}" for c, n in items)
