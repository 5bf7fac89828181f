"""Roll-ups: every run, iteration, cell and sub-call row shows the tokens, cost and sub-call count of
its subtree (the figures core.totals gives), kept current while the run streams in; a memoized
sub-call says "cached"."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex

from rlm_desktop.core.totals import totals
from rlm_desktop.core.trace import Attr, Span, SpanKind, SpanStatus, Trace, TraceEvent
from rlm_desktop.ui.trace_model import COL_COST, COL_SUBS, COL_TOKENS, ROLLUP_KINDS, TraceModel

COMPARED = ("llm_calls", "sub_calls", "input_tokens", "output_tokens", "cached_tokens",
            "cost_unknown_calls", "estimated_calls", "cache_hits", "incomplete_spans", "errors")


class Recorder:
    def __init__(self, trace: Trace) -> None:
        self.events: list[TraceEvent] = []
        trace.subscribe(lambda ev, span: self.events.append(ev))

    def take(self) -> list[TraceEvent]:
        out, self.events = self.events, []
        return out


def _call(src: Trace, parent: str, tin: int, tout: int, cost: float | None, *, cached: int = 0,
          end: bool = True) -> str:
    c = src.start_span(SpanKind.LLM_CALL, "chat m", parent, {Attr.MODEL: "m"})
    if end:
        src.end_span(c, SpanStatus.OK, {Attr.INPUT_TOKENS: tin, Attr.OUTPUT_TOKENS: tout,
                                        Attr.CACHED_TOKENS: cached, Attr.COST_USD: cost,
                                        Attr.COST_KNOWN: cost is not None})
    return c


def _scripted(src: Trace, model: TraceModel, rec: Recorder) -> dict[str, str]:
    """A run of two iterations: model calls, a cell with three sub-calls (one memoized, one a nested
    run with its own calls, one of unknown price). Flushed into ``model`` step by step."""
    ids: dict[str, str] = {}
    run = ids["run"] = src.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "q", Attr.DEPTH: 0})
    for i in range(2):
        it = ids[f"it{i}"] = src.start_span(SpanKind.ITERATION, f"iteration {i + 1}", run)
        _call(src, it, 1000 + i, 50, 0.002, cached=512)
        model.enqueue(rec.take())
        model.flush()
        _touch_all(model)             # roll-ups cached from here on: the rest arrives as deltas
        cell = ids[f"cell{i}"] = src.start_span(SpanKind.CODE_CELL, "cell", it, {Attr.CODE: "x"})
        a = ids[f"sub{i}a"] = src.start_span(SpanKind.SUB_CALL, "llm_query_batched[0]", cell,
                                             {Attr.BATCH_INDEX: 0})
        b = ids[f"sub{i}b"] = src.start_span(SpanKind.SUB_CALL, "rlm_query", cell)
        _call(src, a, 300, 20, 0.0005)
        model.enqueue(rec.take())
        model.flush()
        nested = src.start_span(SpanKind.RUN, "run", b, {Attr.DEPTH: 1})
        nit = src.start_span(SpanKind.ITERATION, "iteration 1", nested)
        _call(src, nit, 200, 10, None)                       # a price the app does not know
        src.end_span(nit, SpanStatus.OK)
        src.end_span(nested, SpanStatus.OK)
        src.end_span(b, SpanStatus.OK)
        src.end_span(a, SpanStatus.OK, {Attr.CACHE_HIT: False})
        memo = ids[f"memo{i}"] = src.start_span(SpanKind.SUB_CALL, "llm_query", cell)
        src.end_span(memo, SpanStatus.OK, {Attr.CACHE_HIT: True, Attr.COST_USD: 0.0,
                                           Attr.COST_KNOWN: True, Attr.INPUT_TOKENS: 0,
                                           Attr.OUTPUT_TOKENS: 0})
        src.end_span(cell, SpanStatus.OK)
        src.end_span(it, SpanStatus.OK)
        model.enqueue(rec.take())
        model.flush()
    src.end_span(run, SpanStatus.OK)
    model.enqueue(rec.take())
    model.flush()
    return ids


def _touch_all(model: TraceModel) -> None:
    """Ask every row for its roll-up columns, as a fully expanded view would."""
    stack = [QModelIndex()]
    while stack:
        parent = stack.pop()
        for r in range(model.rowCount(parent)):
            idx = model.index(r, 0, parent)
            for col in (COL_TOKENS, COL_COST, COL_SUBS):
                model.data(idx.siblingAtColumn(col))
            stack.append(idx)


def _parents(trace: Trace) -> list[Span]:
    return [s for s in trace if s.kind in ROLLUP_KINDS and not s.attributes.get(Attr.CACHE_HIT)]


def test_rollups_equal_core_totals_of_each_subtree(qtbot) -> None:  # noqa: ANN001
    src = Trace()
    rec = Recorder(src)
    model = TraceModel()
    model.set_trace(Trace(), live=True)
    _scripted(src, model, rec)
    mirror = model.trace
    parents = _parents(mirror)
    assert len(parents) >= 10
    for span in parents:
        want = totals(span)
        got = model.rollup(span)
        assert {k: getattr(got, k) for k in COMPARED} == {k: getattr(want, k) for k in COMPARED}, span
        assert abs(got.cost_usd - want.cost_usd) < 1e-12
    run = mirror.roots[0]
    idx = model.index_for_span(run)
    t = totals(run)
    assert t.sub_calls == 6 and t.llm_calls == 6
    assert model.data(idx.siblingAtColumn(COL_TOKENS)) == \
        f"{t.input_tokens:,} / {t.cached_tokens:,} / {t.output_tokens:,}"
    assert model.data(idx.siblingAtColumn(COL_SUBS)) == "6"
    # Two calls of unknown price among six: a partial sum, never shown as a plain figure.
    assert model.data(idx.siblingAtColumn(COL_COST)).startswith("≥ $0.0050")
    # A cell whose calls are all priced reads as a plain cost; the nested-run sub-call as unknown.
    a = model.index_for_span(mirror.spans[mirror.roots[0].children[0].children[1].children[0].id])
    assert model.data(a.siblingAtColumn(COL_COST)) == "$0.0005"
    assert model.data(a.siblingAtColumn(COL_TOKENS)) == "300 / 0 / 20"
    b = model.index_for_span(mirror.roots[0].children[0].children[1].children[1])
    assert model.data(b.siblingAtColumn(COL_COST)) == "unknown"
    # Leaf model calls keep their own "in / out" figures.
    call = model.index_for_span(mirror.roots[0].children[0].children[0])
    assert model.data(call.siblingAtColumn(COL_TOKENS)) == "1,000 / 50"


def test_rollup_updates_when_a_child_ends(qtbot) -> None:  # noqa: ANN001
    src = Trace()
    rec = Recorder(src)
    model = TraceModel()
    model.set_trace(Trace(), live=True)
    run = src.start_span(SpanKind.RUN, "run", None, {Attr.DEPTH: 0})
    it = src.start_span(SpanKind.ITERATION, "iteration 1", run)
    cell = src.start_span(SpanKind.CODE_CELL, "cell", it)
    sub = src.start_span(SpanKind.SUB_CALL, "llm_query", cell)
    call = _call(src, sub, 0, 0, None, end=False)
    model.enqueue(rec.take())
    model.flush()
    mirror = model.trace
    run_idx = model.index_for_span(mirror.spans[run])
    it_idx = model.index_for_span(mirror.spans[it])
    assert model.data(run_idx.siblingAtColumn(COL_SUBS)) == "1"
    assert model.data(it_idx.siblingAtColumn(COL_COST)) == "…"   # a running call: no cost yet
    assert model.data(it_idx.siblingAtColumn(COL_TOKENS)) == "…"  # nor tokens (not "0 / 0 / 0")
    changed: list[tuple[int, int, str]] = []
    model.dataChanged.connect(lambda tl, br, _roles=(): changed.append(
        (tl.column(), br.column(), model.span_for_index(tl).id)))
    src.end_span(call, SpanStatus.OK, {Attr.INPUT_TOKENS: 4000, Attr.OUTPUT_TOKENS: 300,
                                       Attr.CACHED_TOKENS: 1000, Attr.COST_USD: 0.25,
                                       Attr.TOKENS_ESTIMATED: True})
    model.enqueue(rec.take())
    model.flush()
    assert model.data(run_idx.siblingAtColumn(COL_TOKENS)) == "~4,000 / 1,000 / ~300"
    assert model.data(it_idx.siblingAtColumn(COL_COST)) == "~$0.2500"
    # Every ancestor's roll-up columns were announced as changed (the view repaints them).
    announced = {sid for first, last, sid in changed if first <= COL_TOKENS and last >= COL_SUBS}
    assert {run, it, cell, sub} <= announced
    assert model.rollup(mirror.spans[run]).incomplete_spans == totals(mirror.spans[run]).incomplete_spans


def test_memoized_sub_call_says_cached(qtbot) -> None:  # noqa: ANN001
    src = Trace()
    rec = Recorder(src)
    model = TraceModel()
    model.set_trace(Trace(), live=True)
    ids = _scripted(src, model, rec)
    memo = model.index_for_span(model.trace.spans[ids["memo0"]])
    assert model.data(memo.siblingAtColumn(COL_TOKENS)) == "cached"
    assert model.data(memo.siblingAtColumn(COL_COST)) == "cached"
    assert model.data(memo.siblingAtColumn(COL_SUBS)) == ""
    real = model.index_for_span(model.trace.spans[ids["sub0a"]])
    assert model.data(real.siblingAtColumn(COL_TOKENS)) != "cached"


def test_rollups_of_a_file_trace(qtbot, tmp_path) -> None:  # noqa: ANN001
    """A trace read from a file (no events): the roll-ups are core.totals of each subtree."""
    src = Trace()
    rec = Recorder(src)
    model = TraceModel()
    model.set_trace(Trace(), live=True)
    _scripted(src, model, rec)
    model2 = TraceModel()
    model2.set_trace(src, live=False)
    for span in _parents(src):
        assert model2.rollup(span).input_tokens == totals(span).input_tokens
        assert model2.rollup(span).sub_calls == totals(span).sub_calls


def test_large_saved_trace_sums_its_top_rollups_on_a_worker(qtbot) -> None:  # noqa: ANN001
    """Opening a large saved trace does not freeze on the run row's roll-up: it reads "…" until a
    worker has summed it, then the figures of core.totals."""
    from rlm_desktop.ui.trace_model import BACKGROUND_ROLLUP_SPANS

    t = Trace()
    run = t.start_span(SpanKind.RUN, "run", None, now=1.0)
    while len(t) < BACKGROUND_ROLLUP_SPANS:
        it = t.start_span(SpanKind.ITERATION, "iteration", run, now=1.0)
        _call(t, it, 10, 1, 0.001)
        t.end_span(it, SpanStatus.OK, now=2.0)
    t.end_span(run, SpanStatus.OK, now=3.0)
    model = TraceModel()
    changed: list[str] = []
    model.dataChanged.connect(lambda tl, _br, _r=(): changed.append(model.span_for_index(tl).id))
    model.set_trace(t, live=False)
    idx = model.index(0, COL_TOKENS)
    assert model.rollups_pending and model.data(idx) == "…"
    qtbot.waitUntil(lambda: not model.rollups_pending, timeout=30_000)
    want = totals(t.roots[0])
    assert model.data(idx) == f"{want.input_tokens:,} / 0 / {want.output_tokens:,}"
    assert run in changed                        # the view was told to repaint the row
