"""The trace adapter model: qtmodeltester while spans stream in, batching, filters, file traces."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QModelIndex, Qt

from rlm_desktop.core.trace import (
    Attr,
    EventType,
    SpanKind,
    SpanStatus,
    Trace,
    TraceEvent,
    TraceWriter,
    read_trace,
)
from rlm_desktop.ui.trace_model import (
    COL_COST,
    COL_NAME,
    COL_STATUS,
    COL_TOKENS,
    TraceFilterProxy,
    TraceModel,
)


class Recorder:
    """Collects a producer Trace's events, as the engine bridge does."""

    def __init__(self, trace: Trace) -> None:
        self.events: list[TraceEvent] = []
        trace.subscribe(lambda ev, span: self.events.append(ev))

    def take(self) -> list[TraceEvent]:
        out, self.events = self.events, []
        return out


def _produce_run(src: Trace, iterations: int = 3, batch: int = 4) -> None:
    run = src.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "what?", Attr.DEPTH: 0})
    for i in range(iterations):
        it = src.start_span(SpanKind.ITERATION, f"iteration {i + 1}", run)
        call = src.start_span(SpanKind.LLM_CALL, "chat m", it, {Attr.MODEL: "m"})
        src.update_span(call, append={Attr.RESPONSE: "```repl\nprint(1)\n```"})
        src.end_span(call, SpanStatus.OK, {Attr.INPUT_TOKENS: 100, Attr.OUTPUT_TOKENS: 10,
                                           Attr.COST_USD: None, Attr.COST_KNOWN: False})
        cell = src.start_span(SpanKind.CODE_CELL, "cell", it, {Attr.CODE: "x = llm_query_batched(p)"})
        for b in range(batch):
            sub = src.start_span(SpanKind.SUB_CALL, "llm_query", cell, {Attr.PROMPT: f"chunk {b}",
                                                                         Attr.BATCH_INDEX: b})
            status = SpanStatus.ERROR if (i, b) == (1, 2) else SpanStatus.OK
            src.end_span(sub, status, {Attr.ERROR: "boom"} if status is SpanStatus.ERROR else None)
        src.update_span(cell, append={Attr.STDOUT: "out\n"})
        src.end_span(cell, SpanStatus.OK)
        src.end_span(it, SpanStatus.OK)
    src.end_span(run, SpanStatus.OK, {Attr.ANSWER: "42"})


def test_qtmodeltester_while_spans_stream_in(qtmodeltester) -> None:  # noqa: ANN001
    src = Trace()
    rec = Recorder(src)
    model = TraceModel()
    model.set_trace(Trace(), live=True)
    qtmodeltester.check(model, force_py=True)
    _produce_run(src, iterations=4, batch=5)
    events = rec.take()
    # Stream in small batches; the tester re-checks the model after every signal it sees.
    for start in range(0, len(events), 7):
        model.enqueue(events[start:start + 7])
        model.flush()
    assert model.rowCount() == 1
    run = model.index(0, 0)
    assert model.rowCount(run) == 4
    it1 = model.index(0, 0, run)
    assert model.rowCount(it1) == 2
    cell = model.index(1, 0, it1)
    assert model.rowCount(cell) == 5
    assert model.data(model.index(0, COL_STATUS, run)) == "ok"
    assert model.dropped_events == 0


def test_one_insert_per_parent_per_batch_and_changed_nodes(qtbot) -> None:  # noqa: ANN001
    src = Trace()
    rec = Recorder(src)
    model = TraceModel()
    model.set_trace(Trace(), live=True)
    inserts: list[tuple[QModelIndex, int, int]] = []
    changes: list[str] = []
    model.rowsInserted.connect(lambda p, a, b: inserts.append((p, a, b)))
    model.dataChanged.connect(lambda tl, br, roles=(): changes.append(model.span_for_index(tl).id))
    run = src.start_span(SpanKind.RUN, "run")
    cell = src.start_span(SpanKind.CODE_CELL, "cell", run)
    model.enqueue(rec.take())
    model.flush()
    assert len(inserts) == 2   # run under the root, cell under run
    inserts.clear()
    subs = [src.start_span(SpanKind.SUB_CALL, "llm_query", cell) for _ in range(50)]
    for s in subs:
        src.update_span(s, {Attr.RESPONSE: "a"})
    src.update_span(cell, append={Attr.STDOUT: "x"})
    src.update_span(cell, append={Attr.STDOUT: "y"})
    model.enqueue(rec.take())
    with qtbot.waitSignal(model.batch_applied, timeout=2000):
        pass   # the flush timer applies the buffer
    assert len(inserts) == 1 and (inserts[0][1], inserts[0][2]) == (0, 49)
    assert changes == [cell]   # new spans are not reported as changed; the cell once
    assert model.trace.get(cell).attributes[Attr.STDOUT] == "xy"


def test_columns_unknown_cost_and_running(qtbot) -> None:  # noqa: ANN001
    src = Trace()
    rec = Recorder(src)
    model = TraceModel()
    model.set_trace(Trace(), live=True)
    run = src.start_span(SpanKind.RUN, "run")
    call = src.start_span(SpanKind.LLM_CALL, "chat m", run)
    model.enqueue(rec.take())
    model.flush()
    ci = model.index(0, 0, model.index(0, 0))
    assert model.data(ci.siblingAtColumn(COL_STATUS)) == "running"
    src.end_span(call, SpanStatus.OK, {Attr.INPUT_TOKENS: 1200, Attr.OUTPUT_TOKENS: 30,
                                       Attr.COST_USD: None, Attr.COST_KNOWN: False})
    model.enqueue(rec.take())
    model.flush()
    assert model.data(ci.siblingAtColumn(COL_COST)) == "unknown"
    assert model.data(ci.siblingAtColumn(COL_TOKENS)) == "1,200 / 30"
    assert model.data(ci.siblingAtColumn(COL_STATUS)) == "ok"
    assert "chat m" in model.data(ci.siblingAtColumn(COL_NAME))


def test_truncated_file_shows_incomplete_nodes(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    src = Trace()
    w = TraceWriter(path, {"query": "q"}).attach(src)
    run = src.start_span(SpanKind.RUN, "run")
    it = src.start_span(SpanKind.ITERATION, "iteration 1", run)
    done = src.start_span(SpanKind.LLM_CALL, "chat m", it)
    src.end_span(done, SpanStatus.OK)
    src.start_span(SpanKind.CODE_CELL, "cell", it, {Attr.CODE: "while True: pass"})
    w.close()
    raw = path.read_text()
    path.write_text(raw + '{"event":"span_upd')   # a crash mid-line
    trace = read_trace(path)
    assert trace.truncated
    model = TraceModel()
    model.set_trace(trace, live=False)
    it_idx = model.index(0, 0, model.index(0, 0))
    statuses = [model.data(model.index(r, COL_STATUS, it_idx)) for r in range(model.rowCount(it_idx))]
    assert statuses == ["ok", "incomplete"]
    assert model.data(model.index(0, COL_STATUS)) == "incomplete"


def _filtered_run(iterations: int, batch: int) -> tuple[TraceModel, TraceFilterProxy]:
    """A finished run in the adapter model, behind a filter proxy."""
    src = Trace()
    _produce_run(src, iterations=iterations, batch=batch)
    model = TraceModel()
    model.set_trace(src, live=False)
    proxy = TraceFilterProxy()
    proxy.setSourceModel(model)
    return model, proxy


def test_filter_text_and_errors_only(qtmodeltester) -> None:  # noqa: ANN001
    model, proxy = _filtered_run(iterations=3, batch=4)
    qtmodeltester.check(proxy, force_py=True)
    proxy.set_errors_only(True)
    # only the failed sub-call and its ancestors remain
    run = proxy.index(0, 0)
    assert proxy.rowCount(run) == 1
    it = proxy.index(0, 0, run)
    assert "iteration 2" in proxy.data(it)
    cell = proxy.index(0, 0, it)
    assert proxy.rowCount(cell) == 1
    assert proxy.data(proxy.index(0, COL_STATUS, cell)) == "error"
    proxy.set_errors_only(False)
    proxy.set_text("chunk 3")
    assert proxy.rowCount(proxy.index(0, 0)) == 3
    proxy.set_text("no such text anywhere")
    assert proxy.rowCount() == 0


def test_events_for_unknown_spans_are_dropped_not_half_applied() -> None:
    model = TraceModel()
    model.set_trace(Trace(), live=True)
    model.enqueue([TraceEvent(EventType.UPDATED, "s99", 1.0, attributes={"x": 1})])
    model.flush()
    assert model.dropped_events == 1 and model.rowCount() == 0
    assert model.data(model.index(0, 0), Qt.ItemDataRole.DisplayRole) is None


def test_an_index_of_another_model_is_never_dereferenced() -> None:
    """Proxy indexes carry the proxy's own internal pointer, not a Span: handing one to the source
    model by mistake (a view switched between proxy and source) must give nothing, not a crash."""
    model, proxy = _filtered_run(iterations=2, batch=2)
    proxy.set_text("chunk")
    run = proxy.index(0, 0)
    it = proxy.index(0, 0, run)
    assert it.isValid() and it.model() is proxy
    assert model.span_for_index(it) is None
    assert not model.index(0, 0, it).isValid()
    assert model.rowCount(it) == 0 and not model.parent(it).isValid()
    assert model.span_for_index(proxy.mapToSource(it)).name == "iteration 1"
