"""Trace filters (issue 11, "Filters and search"): kind, status, model, minimum cost and minimum
duration, combined with the text filter; matches highlighted in the tree and the detail pane;
clearing the filters restores the expansion the user had."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, Qt
from PySide6.QtGui import QFont

from rlm_desktop.core.trace import Attr, Span, SpanKind, SpanStatus, Trace
from rlm_desktop.ui.detail_pane import DetailPane
from rlm_desktop.ui.trace_model import MatchRole, SpanRole, TraceModel
from rlm_desktop.ui.trace_pane import TracePane

T0 = 1_000_000.0


def _trace() -> Trace:
    """A run: iteration 1 (model "alpha", cheap, fast; a cell with an ok sub-call), iteration 2
    (model "beta", dear, slow; a cell whose sub-call times out)."""
    t = Trace()
    run = t.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "needle question"}, now=T0)
    for i, (model, cost, secs, sub_status) in enumerate(
            [("alpha", 0.001, 0.5, SpanStatus.OK), ("beta", 0.25, 12.0, SpanStatus.TIMEOUT)]):
        base = T0 + 100 * i
        it = t.start_span(SpanKind.ITERATION, f"iteration {i + 1}", run, now=base)
        call = t.start_span(SpanKind.LLM_CALL, f"chat {model}", it, {Attr.MODEL: model}, now=base)
        t.update_span(call, append={Attr.RESPONSE: f"reply {i} with a haystack"}, now=base)
        t.end_span(call, SpanStatus.OK, {Attr.INPUT_TOKENS: 10, Attr.OUTPUT_TOKENS: 5,
                                         Attr.COST_USD: cost, Attr.COST_KNOWN: True}, now=base + secs)
        cell = t.start_span(SpanKind.CODE_CELL, "cell", it, {Attr.CODE: "print('needle')"}, now=base + secs)
        sub = t.start_span(SpanKind.SUB_CALL, "llm_query", cell, {Attr.PROMPT: f"chunk {i}"}, now=base + secs)
        t.end_span(sub, sub_status, now=base + secs + 1)
        t.end_span(cell, SpanStatus.OK, now=base + secs + 2)
        t.end_span(it, SpanStatus.OK, now=base + secs + 2)
    t.end_span(run, SpanStatus.OK, {Attr.ANSWER: "42"}, now=T0 + 200)
    return t


def _pane(qtbot) -> tuple[TracePane, TraceModel]:  # noqa: ANN001
    model = TraceModel()
    pane = TracePane(model)
    qtbot.addWidget(pane)
    pane.resize(900, 500)
    pane.show()
    model.set_trace(_trace(), live=False)
    return pane, model


def _visible(pane: TracePane) -> list[Span]:
    """Every row the view's model shows (expanded or not)."""
    model = pane.view.model()
    out: list[Span] = []
    stack = [QModelIndex()]
    while stack:
        parent = stack.pop()
        for r in range(model.rowCount(parent)):
            idx = model.index(r, 0, parent)
            out.append(idx.data(SpanRole))
            stack.append(idx)
    return out


def _matched(pane: TracePane) -> set[str]:
    model = pane.view.model()
    out: set[str] = set()
    stack = [QModelIndex()]
    while stack:
        parent = stack.pop()
        for r in range(model.rowCount(parent)):
            idx = model.index(r, 0, parent)
            if idx.data(MatchRole):
                out.add(idx.data(SpanRole).name)
            stack.append(idx)
    return out


def _set_combo(combo, data: str | None) -> None:  # noqa: ANN001
    i = combo.findData(data)
    assert i >= 0, f"{data!r} not offered"
    combo.setCurrentIndex(i)


def test_filter_by_kind(qtbot) -> None:  # noqa: ANN001
    pane, _ = _pane(qtbot)
    _set_combo(pane.filters.kind, "sub_call")
    assert pane.visible_model() is pane.proxy
    assert _matched(pane) == {"llm_query"}
    kinds = {s.kind for s in _visible(pane)}
    assert kinds == {SpanKind.RUN, SpanKind.ITERATION, SpanKind.CODE_CELL, SpanKind.SUB_CALL}
    assert pane.filters_btn.text() == "Filters (1)"


def test_filter_by_status(qtbot) -> None:  # noqa: ANN001
    pane, _ = _pane(qtbot)
    _set_combo(pane.filters.status, "timeout")
    names = [s.name for s in _visible(pane)]
    assert names.count("llm_query") == 1 and "iteration 1" not in names
    assert _matched(pane) == {"llm_query"}


def test_filter_by_model_offers_the_trace_models(qtbot) -> None:  # noqa: ANN001
    pane, _ = _pane(qtbot)
    pane._refresh_models()    # what opening the popup does
    offered = [pane.filters.model.itemData(i) for i in range(pane.filters.model.count())]
    assert offered == [None, "alpha", "beta"]
    _set_combo(pane.filters.model, "beta")
    assert _matched(pane) == {"chat beta"}
    assert "chat alpha" not in [s.name for s in _visible(pane)]


def test_filter_by_minimum_cost_and_duration(qtbot) -> None:  # noqa: ANN001
    pane, _ = _pane(qtbot)
    pane.filters.min_cost.setValue(0.01)
    assert pane.visible_model() is pane.model                 # typed numbers apply once keys pause
    qtbot.waitUntil(lambda: pane.visible_model() is pane.proxy, timeout=5000)
    assert _matched(pane) == {"chat beta"}
    pane.filters.min_cost.setValue(0.0)
    pane.filters.min_duration.setValue(10.0)
    pane._apply_filter()
    # the slow model call, its iteration (12 s + 2 s) and the run (200 s)
    assert _matched(pane) == {"chat beta", "iteration 2", "run"}


def test_filters_combine_with_the_text_filter_and_errors_only(qtbot) -> None:  # noqa: ANN001
    pane, _ = _pane(qtbot)
    pane.filter_edit.setText("needle")
    pane._apply_filter()
    assert _matched(pane) == {"run", "cell"}
    _set_combo(pane.filters.kind, "code_cell")
    assert _matched(pane) == {"cell"} and len([s for s in _visible(pane) if s.name == "cell"]) == 2
    pane.filters.min_duration.setValue(10.0)     # no cell took 10 s
    pane._apply_filter()
    assert _visible(pane) == []
    pane.filters.clear()
    assert _matched(pane) == {"run", "cell"}
    pane.filter_edit.setText("")
    pane._apply_filter()
    pane.errors_only.setChecked(True)
    _set_combo(pane.filters.kind, "sub_call")
    assert _matched(pane) == {"llm_query"}
    assert [s.name for s in _visible(pane)].count("llm_query") == 1
    pane.errors_only.setChecked(False)
    pane.filters.clear()
    assert pane.visible_model() is pane.model and pane.filters_btn.text() == "Filters"


def test_matches_are_bold_with_a_background_ancestors_are_not(qtbot) -> None:  # noqa: ANN001
    pane, _ = _pane(qtbot)
    pane._refresh_models()
    _set_combo(pane.filters.model, "alpha")
    proxy = pane.proxy
    run = proxy.index(0, 0)
    it = proxy.index(0, 0, run)
    call = proxy.index(0, 0, it)
    assert call.data(SpanRole).name == "chat alpha"
    font = call.data(Qt.ItemDataRole.FontRole)
    assert isinstance(font, QFont) and font.bold()
    assert call.data(Qt.ItemDataRole.BackgroundRole) is not None
    assert run.data(Qt.ItemDataRole.FontRole) is None      # kept as an ancestor only
    assert not run.data(MatchRole)


def test_detail_pane_highlights_the_text_filter(qtbot) -> None:  # noqa: ANN001
    pane, model = _pane(qtbot)
    detail = DetailPane()
    qtbot.addWidget(detail)
    pane.filter_text_changed.connect(detail.set_highlight)
    cell = next(s for s in model.trace.spans.values() if s.kind is SpanKind.CODE_CELL)
    detail.show_span(cell, model.trace)
    assert detail.code.highlight_count == 0
    pane.filter_edit.setText("NEEDLE")
    pane._apply_filter()
    assert detail.code.highlight_count == 1
    sel = detail.code.edit.extraSelections()[0]
    assert sel.cursor.selectedText() == "needle"
    call = next(s for s in model.trace.spans.values() if s.kind is SpanKind.LLM_CALL)
    detail.show_span(call, model.trace)           # a new step: marked too
    pane.filter_edit.setText("haystack")
    pane._apply_filter()
    assert detail.response.highlight_count == 1
    pane.filter_edit.setText("")
    pane._apply_filter()
    assert detail.response.highlight_count == 0


def test_clearing_the_filters_restores_the_users_expansion(qtbot) -> None:  # noqa: ANN001
    pane, model = _pane(qtbot)
    view = pane.view
    run = model.index(0, 0)
    it2 = model.index(1, 0, run)
    view.collapseAll()
    view.expand(run)
    view.expand(it2)                              # the user opened iteration 2 only
    before = {s.name for s in pane.expanded_spans()}
    assert before == {"run", "iteration 2"}
    pane.filter_edit.setText("chunk")
    pane._apply_filter()                          # filtering expands everything
    assert len(pane.expanded_spans()) > 2
    _set_combo(pane.filters.kind, "sub_call")     # a second filter change keeps the saved set
    pane.filter_edit.setText("")
    pane._apply_filter()
    pane.filters.clear()
    assert pane.visible_model() is model
    assert {s.name for s in pane.expanded_spans()} == before
