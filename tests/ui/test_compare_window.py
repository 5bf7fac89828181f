"""The Compare window (issue 11, "Compare two runs"): answers side by side with the word-level
differences marked, the facts with deltas, the two trees aligned by iteration and scrolling
together; opened from History (two rows) and File → Compare runs…."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QAbstractItemView

from rlm_desktop.core.compare import CompareError
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter
from rlm_desktop.session.history import HistoryEntry, HistoryStore
from rlm_desktop.ui.compare_window import DELETED_BG, INSERTED_BG, CompareDialog, CompareWindow
from rlm_desktop.ui.run_panes import HistoryPane
from tests.core.test_compare import write_run


def _long_run(path: Path, iterations: int, model: str, answer: str) -> Path:
    """A run with ``iterations`` iterations, each a model call and a cell with 6 sub-calls."""
    tr = Trace()
    w = TraceWriter(path, {"query": "q"}).attach(tr)
    t = 1_700_000_000.0
    run = tr.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: f"question for {model}",
                                                    Attr.MODELS: {"root": model, "sub": model}}, now=t)
    for i in range(iterations):
        it = tr.start_span(SpanKind.ITERATION, f"iteration {i + 1}", run, now=t + i)
        c = tr.start_span(SpanKind.LLM_CALL, f"chat {model}", it, {Attr.MODEL: model}, now=t + i)
        tr.end_span(c, SpanStatus.OK, {Attr.INPUT_TOKENS: 10, Attr.OUTPUT_TOKENS: 5, Attr.COST_USD: 0.001},
                    now=t + i + 0.2)
        cell = tr.start_span(SpanKind.CODE_CELL, "cell", it, {Attr.CODE: "x"}, now=t + i + 0.2)
        for b in range(6):
            s = tr.start_span(SpanKind.SUB_CALL, "llm_query", cell, {Attr.PROMPT: f"p{b}"}, now=t + i + 0.3)
            tr.end_span(s, SpanStatus.OK, now=t + i + 0.4)
        tr.end_span(cell, SpanStatus.OK, now=t + i + 0.5)
        tr.end_span(it, SpanStatus.OK, now=t + i + 0.9)
    tr.end_span(run, SpanStatus.OK, {Attr.ANSWER: answer}, now=t + iterations)
    w.close()
    return path


def test_answers_facts_and_deltas(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    a = write_run(tmp_path / "a.jsonl", model="gpt-4o", cost=0.01, calls=3,
                  answer="The launch date is March 3 in Berlin.")
    b = write_run(tmp_path / "b.jsonl", model="gpt-4o-mini", cost=0.001, calls=2, max_iterations=10,
                  answer="The launch date is March 4 in Berlin.")
    w = CompareWindow(str(a), str(b))
    qtbot.addWidget(w)
    a_html, b_html = w.answer_a.toHtml(), w.answer_b.toHtml()
    # Only the differing word is marked, on each side in its colour.
    assert w.answer_a.toPlainText() == "The launch date is March 3 in Berlin."
    assert a_html.count(DELETED_BG) == 1 and INSERTED_BG not in a_html
    assert b_html.count(INSERTED_BG) == 1 and DELETED_BG not in b_html
    rows = {w.facts.item(r, 0).text(): [w.facts.item(r, c).text() for c in (1, 2, 3)]
            for r in range(w.facts.rowCount())}
    assert rows["iterations"] == ["3", "2", "−1 (-33%)"]
    assert rows["cost (USD)"][2].startswith("−$0.02")
    assert rows["input tokens"] == ["3,000", "2,000", "−1,000 (-33%)"]
    assert rows["root model"] == ["gpt-4o", "gpt-4o-mini", "differs"]
    assert rows["limit: max_iterations"] == ["20", "10", "differs"]
    assert rows["limit: budget_usd"][2] == ""
    assert rows["sub-calls"][2] == "="
    assert "alike" in w.similarity_label.text()


def test_a_session_turn_and_a_bad_file(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    s = write_run(tmp_path / "s.jsonl", model="m", cost=0.01, calls=2, turns=3, answer="x")
    w = CompareWindow(f"{s}#1", f"{s}#3")
    qtbot.addWidget(w)
    assert w.answer_a.toPlainText() == "x (turn 1)" and w.answer_b.toPlainText() == "x (turn 3)"
    # Each tree shows its own turn's iterations at the top level.
    assert w.tree_a.trace_model.span_for_index(w.tree_a.rootIndex()).attributes[Attr.TURN] == 1
    assert w.tree_b.trace_model.span_for_index(w.tree_b.rootIndex()).attributes[Attr.TURN] == 3
    with pytest.raises(CompareError, match="no such trace file"):
        CompareWindow(str(tmp_path / "nope.jsonl"), str(s))
    with pytest.raises(CompareError, match="no turn 7"):
        CompareWindow(f"{s}#7", str(s))


def test_trees_expand_and_scroll_together_by_iteration(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    a = _long_run(tmp_path / "a.jsonl", 30, "big", "one answer")
    b = _long_run(tmp_path / "b.jsonl", 25, "small", "another answer")
    w = CompareWindow(str(a), str(b))
    qtbot.addWidget(w)
    w.resize(1200, 680)
    w.show()
    qtbot.waitExposed(w)
    ta, tb = w.tree_a, w.tree_b
    assert ta.trace_model.rowCount(ta.rootIndex()) == 30
    # Expanding an iteration on one side expands the same iteration on the other.
    ta.expand(ta.iteration_index(12))
    assert tb.isExpanded(tb.iteration_index(12))
    tb.collapse(tb.iteration_index(12))
    assert not ta.isExpanded(ta.iteration_index(12))
    ta.expandAll()
    assert tb.isExpanded(tb.iteration_index(5))
    tb.expandAll()
    # Scrolling A to iteration 10 shows iteration 10 at the top of B too.
    ta.scrollTo(ta.iteration_index(10), QAbstractItemView.ScrollHint.PositionAtTop)
    assert ta.top_iteration()[0] == 10
    assert tb.top_iteration()[0] == 10
    # And the other way round, part-way into an iteration's rows.
    tb.verticalScrollBar().setValue(tb.verticalScrollBar().value() + 3 * tb.sizeHintForRow(0))
    assert ta.top_iteration() == tb.top_iteration()
    assert ta.top_iteration()[1] > 0
    # B has fewer iterations: scrolling A past them keeps B at its end.
    ta.scrollTo(ta.iteration_index(28), QAbstractItemView.ScrollHint.PositionAtTop)
    assert tb.verticalScrollBar().value() == tb.verticalScrollBar().maximum()


def test_history_compares_two_selected_runs(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    store = HistoryStore(tmp_path / "history.jsonl")
    for name, started in (("old", 1000.0), ("new", 2000.0)):
        store.add(HistoryEntry(trace=str(tmp_path / f"{name}.jsonl"), query=name, started=started,
                               finished=started + 1, status="ok"))
    pane = HistoryPane(store)
    qtbot.addWidget(pane)
    assert not pane.compare_btn.isEnabled()
    pane.table.selectRow(0)
    assert not pane.compare_btn.isEnabled()        # one row: nothing to compare with
    sel = pane.table.selectionModel()
    sel.select(pane.table.model().index(1, 0), sel.SelectionFlag.Select | sel.SelectionFlag.Rows)
    assert pane.compare_btn.isEnabled()
    # Two rows: Remove removes both; Continue and Ask again want one row.
    assert pane.remove_btn.isEnabled() and not pane.continue_btn.isEnabled() and not pane.again_btn.isEnabled()
    with qtbot.waitSignal(pane.compare_requested) as got:
        pane.compare_btn.click()
    assert got.args == [str(tmp_path / "old.jsonl"), str(tmp_path / "new.jsonl")]   # older is A


def test_file_compare_opens_a_window(qtbot, window, tmp_path: Path) -> None:  # noqa: ANN001
    a = write_run(tmp_path / "a.jsonl", model="m1", cost=0.01, calls=2, answer="yes it is")
    b = write_run(tmp_path / "b.jsonl", model="m2", cost=0.02, calls=3, answer="no it is not")
    assert window.act_compare in window.menuBar().actions()[0].menu().actions()
    dlg = CompareDialog(window)
    qtbot.addWidget(dlg)
    ok = dlg.buttons.buttons()[0]
    assert not ok.isEnabled()
    dlg.edit_a.setText(str(a))
    dlg.edit_b.setText(str(b))
    assert ok.isEnabled() and dlg.specs() == (str(a), str(b))
    w = window.open_compare(*dlg.specs())
    assert w is not None and w.isVisible()
    assert w.comparison.a.root_model == "m1" and w.comparison.b.root_model == "m2"
    w.close()
