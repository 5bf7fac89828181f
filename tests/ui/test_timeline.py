"""The timeline (waterfall): spans to rows and times, parallel sub-calls overlapping, selection both
ways with the trace tree, zoom, painting only the rows in view on a 100,000-span trace, live growth."""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceEvent
from rlm_desktop.ui.timeline import AXIS_H, LABEL_W, ROW_H, TimelineView
from rlm_desktop.ui.trace_model import TraceModel

T0 = 1_700_000_000.0


class Recorder:
    def __init__(self, trace: Trace) -> None:
        self.events: list[TraceEvent] = []
        trace.subscribe(lambda ev, span: self.events.append(ev))

    def take(self) -> list[TraceEvent]:
        out, self.events = self.events, []
        return out


def _parallel_trace() -> tuple[Trace, dict[str, str]]:
    """run 0–10 s › iteration 0–10 › cell 1–9 › three sub-calls running at the same time."""
    t = Trace()
    ids = {}
    ids["run"] = t.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "q"}, now=T0)
    ids["it"] = t.start_span(SpanKind.ITERATION, "iteration 1", ids["run"], now=T0)
    ids["call"] = t.start_span(SpanKind.LLM_CALL, "chat m", ids["it"], now=T0)
    t.end_span(ids["call"], SpanStatus.OK, {Attr.INPUT_TOKENS: 1234, Attr.OUTPUT_TOKENS: 56,
                                            Attr.COST_USD: 0.01}, now=T0 + 1)
    ids["cell"] = t.start_span(SpanKind.CODE_CELL, "cell", ids["it"], now=T0 + 1)
    for name, start in (("a", 2.0), ("b", 2.5), ("c", 3.0)):
        ids[name] = t.start_span(SpanKind.SUB_CALL, f"llm_query_batched[{name}]", ids["cell"],
                                 now=T0 + start)
    for name, start, end in (("a", 2.0, 6.0), ("b", 2.5, 7.0), ("c", 3.0, 5.0)):
        c = t.start_span(SpanKind.LLM_CALL, "chat s", ids[name], now=T0 + start + 0.1)
        t.end_span(c, SpanStatus.OK, {Attr.INPUT_TOKENS: 100, Attr.OUTPUT_TOKENS: 10,
                                      Attr.COST_USD: 0.001}, now=T0 + end - 0.1)
        t.end_span(ids[name], SpanStatus.ERROR if name == "c" else SpanStatus.OK, now=T0 + end)
    t.end_span(ids["cell"], SpanStatus.OK, now=T0 + 9)
    t.end_span(ids["it"], SpanStatus.OK, now=T0 + 10)
    t.end_span(ids["run"], SpanStatus.OK, now=T0 + 10)
    return t, ids


def _view(qtbot, model: TraceModel, w: int = 900, h: int = 500) -> TimelineView:  # noqa: ANN001
    view = TimelineView(model)
    qtbot.addWidget(view)
    view.resize(w, h)
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: view.paints > 0)
    return view


def test_spans_map_to_rows_in_tree_order_and_to_times(qtbot) -> None:  # noqa: ANN001
    trace, ids = _parallel_trace()
    model = TraceModel()
    model.set_trace(trace, live=False)
    view = _view(qtbot, model)
    assert [s.id for s in view.order.rows] == [s.id for s in trace]      # tree (pre-)order
    assert view.row_count() == len(trace) == 10
    assert view.order.depth(trace.spans[ids["a"]]) == 3 and view.order.depth(trace.spans[ids["run"]]) == 0
    assert view.fit and abs(view.duration() - 10.0) < 1e-9
    # Fit: the whole run spans the bar area.
    assert abs(view.scale - view.bar_area_width() / 10.0) < 1e-6
    run = view.bar_rect(trace.spans[ids["run"]])
    assert abs(run.left() - LABEL_W) <= 1 and abs(run.width() - view.bar_area_width()) <= 2
    a, b, c = (view.bar_rect(trace.spans[ids[n]]) for n in "abc")
    # Each starts where its time says (a at 2 s, b half a second later, c a second later) …
    assert abs(a.left() - (LABEL_W + 2.0 * view.scale)) <= 1
    assert abs((b.left() - a.left()) - 0.5 * view.scale) <= 1
    assert abs(a.width() - 4.0 * view.scale) <= 2
    # … on its own row, and the three overlap in time: visibly parallel.
    assert len({a.top(), b.top(), c.top()}) == 3
    assert a.left() < b.left() < c.left() < c.right() < a.right() < b.right()
    assert view.row_of(trace.spans[ids["b"]]) == view.row_of(trace.spans[ids["a"]]) + 2


def test_hover_tells_name_duration_tokens_and_cost(qtbot) -> None:  # noqa: ANN001
    trace, ids = _parallel_trace()
    model = TraceModel()
    model.set_trace(trace, live=False)
    view = _view(qtbot, model)
    row = view.row_of(trace.spans[ids["cell"]])
    tip = view.tooltip_at(QPoint(LABEL_W + 50, AXIS_H + row * ROW_H + ROW_H // 2))
    assert "cell" in tip and "8.0 s" in tip
    assert "Tokens: 300 / 0 / 30" in tip    # the roll-up of the cell: its three sub-calls
    assert "$0.0030" in tip and "Sub-calls: 3" in tip
    row = view.row_of(trace.spans[ids["call"]])
    tip = view.tooltip_at(QPoint(LABEL_W + 5, AXIS_H + row * ROW_H + 2))
    assert "model call: chat m" in tip and "1,234 / 56" in tip and "$0.0100" in tip


def test_zoom_changes_the_scale_and_fit_restores_it(qtbot) -> None:  # noqa: ANN001
    trace, ids = _parallel_trace()
    model = TraceModel()
    model.set_trace(trace, live=False)
    view = _view(qtbot, model)
    fit = view.scale
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_Plus)
    assert view.scale > fit * 1.2 and not view.fit
    assert view.horizontalScrollBar().maximum() > 0          # wider than the view: pan
    zoomed = view.scale
    pos = QPointF(LABEL_W + 200, 100)
    t_under = view.time_at(pos.x())
    wheel = QWheelEvent(pos, view.viewport().mapToGlobal(pos), QPoint(0, 0), QPoint(0, 240),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.ControlModifier,
                        Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(view.viewport(), wheel)
    assert view.scale > zoomed * 1.5
    assert abs(view.time_at(pos.x()) - t_under) < 2 / view.scale     # zoomed around the cursor
    qtbot.keyClick(view, Qt.Key.Key_Minus)
    assert view.scale < zoomed * 1.5 * 1.25
    # Dragging pans.
    hv = view.horizontalScrollBar().value()
    qtbot.mousePress(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(400, 200))
    qtbot.mouseMove(view.viewport(), QPoint(300, 200))
    qtbot.mouseRelease(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(300, 200))
    assert view.horizontalScrollBar().value() == min(hv + 100, view.horizontalScrollBar().maximum())
    qtbot.keyClick(view, Qt.Key.Key_0)
    assert view.fit and abs(view.scale - fit) < 1e-9


def test_click_selects_in_the_tree_and_the_tree_selects_in_the_timeline(qtbot, window) -> None:  # noqa: ANN001
    trace, ids = _parallel_trace()
    window.model.set_trace(trace, live=False)
    tl = window.timeline.view
    qtbot.waitUntil(lambda: tl.row_count() == len(trace))
    # Click the bar of sub-call b: the tree selects it (and the detail pane shows it).
    span_b = trace.spans[ids["b"]]
    rect = tl.bar_rect(span_b)
    qtbot.mouseClick(tl.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.trace_pane.selected_span() is span_b
    assert tl.selected is span_b
    # Select in the tree: the timeline highlights it and brings it into view.
    span_c = trace.spans[ids["c"]]
    window.trace_pane.select_span(span_c)
    assert tl.selected is span_c
    assert tl.row_of(span_c) in tl.visible_rows()


def test_tree_selection_scrolls_the_timeline_of_a_long_trace(qtbot) -> None:  # noqa: ANN001
    from rlm_desktop.ui.timeline import TimelinePane
    from rlm_desktop.ui.trace_pane import TracePane

    trace = Trace()
    run = trace.start_span(SpanKind.RUN, "run", None, now=T0)
    last = None
    for i in range(500):
        last = trace.start_span(SpanKind.ITERATION, f"iteration {i + 1}", run, now=T0 + i)
        trace.end_span(last, SpanStatus.OK, now=T0 + i + 0.5)
    model = TraceModel()
    pane = TracePane(model)
    tl = TimelinePane(model, pane)
    qtbot.addWidget(pane)
    qtbot.addWidget(tl)
    tl.resize(800, 300)
    tl.show()
    model.set_trace(trace, live=False)
    span = trace.spans[last]
    assert tl.view.row_of(span) not in tl.view.visible_rows()
    pane.select_span(span)
    assert tl.view.selected is span
    assert tl.view.row_of(span) in tl.view.visible_rows()


def _big_trace(n: int) -> Trace:
    t = Trace()
    run = t.start_span(SpanKind.RUN, "run", None, now=T0)
    i = 0
    while len(t) < n:
        it = t.start_span(SpanKind.ITERATION, f"iteration {i}", run, now=T0 + i * 0.01)
        for b in range(min(8, n - len(t))):
            s = t.start_span(SpanKind.SUB_CALL, "llm_query_batched", it, now=T0 + i * 0.01 + 0.001)
            t.end_span(s, SpanStatus.OK, now=T0 + i * 0.01 + 0.002 + b * 0.0005)
        t.end_span(it, SpanStatus.OK, now=T0 + i * 0.01 + 0.008)
        i += 1
    t.end_span(run, SpanStatus.OK, now=T0 + i * 0.01)
    return t


def test_painting_100k_spans_touches_only_the_visible_rows(qtbot) -> None:  # noqa: ANN001
    trace = _big_trace(100_000)
    assert len(trace) >= 100_000
    model = TraceModel()
    model.set_trace(trace, live=False)
    view = _view(qtbot, model, 900, 600)
    assert view.row_count() == len(trace)
    per_view = (view.viewport().height() - AXIS_H) // ROW_H + 2
    view.viewport().repaint()
    assert 0 < view.rows_painted_last <= per_view
    for frac in (0.5, 0.999):
        vb = view.verticalScrollBar()
        vb.setValue(int(vb.maximum() * frac))
        view.viewport().repaint()
        assert 0 < view.rows_painted_last <= per_view
        assert view.visible_rows().start == vb.value() // ROW_H
    for _ in range(5):
        view.zoom(2.0)
        view.viewport().repaint()
        assert 0 < view.rows_painted_last <= per_view
    view.zoom_to_fit()
    before = view.rows_painted_total
    view.viewport().repaint()
    assert view.rows_painted_total - before <= per_view


def test_live_run_grows_in_tree_order(qtbot) -> None:  # noqa: ANN001
    src = Trace()
    rec = Recorder(src)
    model = TraceModel()
    model.set_trace(Trace(), live=True)
    view = _view(qtbot, model)
    assert view.row_count() == 0
    run = src.start_span(SpanKind.RUN, "run", None)
    it = src.start_span(SpanKind.ITERATION, "iteration 1", run)
    cell = src.start_span(SpanKind.CODE_CELL, "cell", it)
    subs = [src.start_span(SpanKind.SUB_CALL, f"llm_query_batched[{b}]", cell) for b in range(3)]
    model.enqueue(rec.take())
    model.flush()
    assert view.row_count() == 6
    paints = view.paints
    # The children of the parallel sub-calls start after all three sub-calls did: each goes under
    # its own sub-call, not at the end.
    calls = [src.start_span(SpanKind.LLM_CALL, "chat s", s) for s in reversed(subs)]
    src.end_span(calls[0], SpanStatus.OK)
    model.enqueue(rec.take())
    model.flush()
    mirror = model.trace
    assert [s.id for s in view.order.rows] == [s.id for s in mirror]
    assert view.order.depth(mirror.spans[calls[1]]) == 4
    # A later iteration goes at the end; a call started in the first iteration goes inside it.
    it2 = src.start_span(SpanKind.ITERATION, "iteration 2", run)
    late = src.start_span(SpanKind.LLM_CALL, "chat late", it)
    model.enqueue(rec.take())
    model.flush()
    assert [s.id for s in view.order.rows] == [s.id for s in mirror]
    assert view.row_of(mirror.spans[it2]) == len(mirror) - 1
    assert view.row_of(mirror.spans[late]) < view.row_of(mirror.spans[it2])
    # One repaint per batch, not one per event; running bars reach the live edge.
    qtbot.waitUntil(lambda: view.paints > paints)
    running = view.bar_rect(mirror.spans[subs[0]])
    ended = view.bar_rect(mirror.spans[calls[0]])
    assert running.right() >= ended.right()
    assert view._tick.isActive()
    for sid in [*calls, *subs, cell, it, late, it2, run]:
        if mirror.spans[sid].end is None:
            src.end_span(sid, SpanStatus.OK)
    model.enqueue(rec.take())
    model.flush()
    model.set_live(False)
    qtbot.waitUntil(lambda: not view._tick.isActive(), timeout=2000)


def test_timeline_follows_the_newest_step_while_the_tree_does(qtbot) -> None:  # noqa: ANN001
    from rlm_desktop.ui.timeline import TimelinePane
    from rlm_desktop.ui.trace_pane import TracePane

    src = Trace()
    rec = Recorder(src)
    model = TraceModel()
    pane = TracePane(model)
    tl = TimelinePane(model, pane)
    qtbot.addWidget(pane)
    qtbot.addWidget(tl)
    tl.resize(800, 300)
    tl.show()
    qtbot.waitExposed(tl)
    model.set_trace(Trace(), live=True)
    run = src.start_span(SpanKind.RUN, "run", None)
    for i in range(200):
        src.start_span(SpanKind.ITERATION, f"iteration {i + 1}", run)
    model.enqueue(rec.take())
    model.flush()
    assert pane.follow
    newest = model.trace.roots[0].children[-1]
    assert tl.view.row_of(newest) in tl.view.visible_rows()
    pane.set_follow(False)
    tl.view.verticalScrollBar().setValue(0)
    src.start_span(SpanKind.ITERATION, "iteration 201", run)
    model.enqueue(rec.take())
    model.flush()
    assert tl.view.visible_rows().start == 0          # not following: the user's place is kept


def test_zooming_far_into_a_long_run_stays_within_the_scroll_range(qtbot) -> None:  # noqa: ANN001
    t = Trace()
    run = t.start_span(SpanKind.RUN, "run", None, now=T0)
    t.end_span(run, SpanStatus.OK, now=T0 + 36_000)          # a ten-hour run
    model = TraceModel()
    model.set_trace(t, live=False)
    view = _view(qtbot, model)
    for _ in range(200):
        view.zoom(2.0)
    assert view.scale * view.duration() <= 1_000_000_000
    assert 0 < view.horizontalScrollBar().maximum() < 2**31 - 1


def test_timeline_height_is_kept_with_the_window_state(qtbot, settings) -> None:  # noqa: ANN001
    from rlm_desktop.ui.main_window import MainWindow

    w1 = MainWindow(settings)
    qtbot.addWidget(w1)
    w1.resize(780, 700)
    w1.show()
    w1.center_split.setSizes([200, 380])
    sizes = w1.center_split.sizes()
    w1.close()
    w2 = MainWindow(settings)
    qtbot.addWidget(w2)
    w2.show()
    assert w2.center_split.sizes() == sizes
    w2.close()
