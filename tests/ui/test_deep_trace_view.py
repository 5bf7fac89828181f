"""A trace nested thousands deep in the GUI (issue 8 item 11): the tree view nests at most
MAX_NESTING levels, so Qt's recursive C++ walks (expand all, the filter proxy) stay shallow."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QModelIndex

from rlm_desktop.core.exporters import MAX_NESTING
from rlm_desktop.core.trace import SpanKind, SpanStatus, Trace, TraceEvent, read_trace
from rlm_desktop.ui.trace_model import COL_NAME, TraceModel
from rlm_desktop.ui.trace_pane import TracePane
from tests.core.test_deep_traces import DEEP, write_deep_trace


def _path_to(model: TraceModel, idx: QModelIndex) -> list[int]:
    rows = []
    while idx.isValid():
        rows.append(idx.row())
        idx = idx.parent()
    return rows[::-1]


def test_a_50000_deep_trace_opens_selects_and_expands_all(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    trace = read_trace(write_deep_trace(tmp_path / "deep.jsonl"))
    model = TraceModel()
    pane = TracePane(model)
    qtbot.addWidget(pane)
    pane.resize(900, 600)
    pane.show()
    model.set_trace(trace, live=False)
    deepest = trace.get(f"s{DEEP}")
    assert deepest is not None
    pane.select_span(deepest)                  # expands every ancestor it is shown under
    assert pane.selected_span() is deepest
    pane.expand_all()                          # crashed Qt (C++ stack) before the nesting cap
    pane.collapse_all()
    idx = model.index_for_span(deepest)
    assert len(_path_to(model, idx)) == MAX_NESTING + 1
    assert idx.parent().data() == model.index_for_span(trace.get(f"s{MAX_NESTING}")).data()
    assert model.span_for_index(idx.parent()) is trace.get(f"s{MAX_NESTING}")
    assert model.data(idx).startswith(f"[level {DEEP - 1}] ")
    assert model.nesting_depth(deepest) == DEEP - 1
    anchor = model.index_for_span(trace.get(f"s{MAX_NESTING}"))
    assert model.rowCount(anchor) == DEEP - MAX_NESTING
    assert [model.span_for_index(model.index(r, COL_NAME, anchor)).id for r in (0, 1, DEEP - MAX_NESTING - 1)] \
        == [f"s{MAX_NESTING + 1}", f"s{MAX_NESTING + 2}", f"s{DEEP}"]


def test_filtering_a_deep_trace_shows_the_match_under_its_shown_ancestors(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    trace = read_trace(write_deep_trace(tmp_path / "deep.jsonl", 3_000))
    model = TraceModel()
    pane = TracePane(model)
    qtbot.addWidget(pane)
    pane.show()
    model.set_trace(trace, live=False)
    pane.filter_edit.setText("step 2999")
    pane._apply_filter()
    proxy = pane.visible_model()
    assert proxy is pane.proxy
    idx = QModelIndex()
    names = []
    while proxy.rowCount(idx):
        assert proxy.rowCount(idx) == 1
        idx = proxy.index(0, COL_NAME, idx)
        names.append(proxy.data(idx))
    assert len(names) == MAX_NESTING + 1 and names[-1].endswith("step 2999")


def test_model_stays_consistent_while_a_deep_chain_streams_in(qtmodeltester) -> None:  # noqa: ANN001
    src = Trace({})
    events: list[TraceEvent] = []
    src.subscribe(lambda ev, span: events.append(ev))
    model = TraceModel()
    model.set_trace(Trace({}), live=True)
    qtmodeltester.check(model)
    parent = None
    ids = []
    for batch in range(6):                        # deeper than the cap, in several batches
        for i in range(30):
            n = batch * 30 + i
            parent = src.start_span(SpanKind.SUB_CALL if n else SpanKind.RUN, f"n{n}", parent)
            ids.append(parent)
            if n % 7 == 0:                        # a side branch at every few levels
                side = src.start_span(SpanKind.CODE_CELL, f"side{n}", parent)
                src.end_span(side, SpanStatus.OK)
        if batch % 2:
            src.end_span(ids[batch * 30], SpanStatus.OK)
        model.enqueue(events)
        events.clear()
        model.flush()
    assert model.trace.get(ids[-1]) is not None
    deepest = model.index_for_span(model.trace.get(ids[-1]))
    assert model.span_for_index(deepest).name == "n179"
    assert len(_path_to(model, deepest)) == MAX_NESTING + 1
    model.set_live(False)
    fresh = TraceModel()                          # the same tree opened from scratch agrees
    fresh.set_trace(model.trace, live=False)
    qtmodeltester.check(fresh)
    for sid in ids:
        span = model.trace.get(sid)
        assert _path_to(model, model.index_for_span(span)) == _path_to(fresh, fresh.index_for_span(span))
