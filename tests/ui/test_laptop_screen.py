"""The window on a 1280×720 laptop and the small things a new user meets first: the documents list
keeps its rows, the trace does not scroll sideways, status words fit, files of the same name in
different folders can be told apart, the question box has the cursor, the shortcut list is clean."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize
from PySide6.QtWidgets import QStyleOptionViewItem

from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter
from rlm_desktop.ui.documents_pane import COL_FOLDER, COL_NAME
from rlm_desktop.ui.main_window import MainWindow, fit_window_size
from rlm_desktop.ui.run_panes import HistoryEntry, HistoryStore
from rlm_desktop.ui.settings import Settings
from rlm_desktop.ui.trace_model import COL_STATUS

LAPTOP = QSize(1280, 720 - 32)          # a 1280×720 screen less a 32-pixel panel


def _deep_trace(path: Path) -> Path:
    """A run as a real one nests: iterations, cells, batched sub-calls, model calls with tokens,
    and steps in every status (cancelled, timed out, limited, failed, never ended)."""
    t = Trace()
    w = TraceWriter(path, {"query": "Which supplier missed the most deliveries in Q1?"}).attach(t)
    run = t.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "Which supplier missed the most deliveries?"})
    usage = {Attr.INPUT_TOKENS: 12_345, Attr.OUTPUT_TOKENS: 1_234, Attr.COST_USD: 0.0123}
    statuses = [SpanStatus.OK, SpanStatus.CANCELLED, SpanStatus.TIMEOUT, SpanStatus.BUDGET,
                SpanStatus.ERROR, None]
    for i, status in enumerate(statuses):
        it = t.start_span(SpanKind.ITERATION, f"iteration {i + 1}", run)
        call = t.start_span(SpanKind.LLM_CALL, "chat a-rather-long-provider-model-name-2025-08", it)
        t.end_span(call, SpanStatus.OK, usage)
        cell = t.start_span(SpanKind.CODE_CELL, "cell: chunks = [context[k] for k in sorted(context)]", it,
                            {Attr.CODE: "print(1)"})
        sub = t.start_span(SpanKind.SUB_CALL, f"llm_query_batched[{i}]", cell)
        inner = t.start_span(SpanKind.LLM_CALL, "chat demo-sub", sub)
        t.end_span(inner, SpanStatus.OK, usage)
        if status is not None:             # None: the file ends before these steps ended
            t.end_span(sub, status)
            t.end_span(cell, status)
            t.end_span(it, status)
    w.close()
    return path


def _laptop_window(qtbot, settings: Settings) -> MainWindow:  # noqa: ANN001
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.resize(fit_window_size(LAPTOP))
    w.show()
    qtbot.waitExposed(w)
    return w


def _docs(folder: Path, n: int) -> Path:
    folder.mkdir()
    for i in range(n):
        (folder / f"supplier-report-{i:02d}-2024-q1.txt").write_text(f"Supplier {i} delivered late.\n")
    return folder


def test_at_1280x720_the_window_fits_shows_documents_and_the_trace_does_not_scroll_sideways(
        qtbot, settings, tmp_path: Path) -> None:  # noqa: ANN001
    w = _laptop_window(qtbot, settings)
    try:
        size = fit_window_size(LAPTOP)
        assert w.size() == size                                # its minimum does not push it off-screen
        assert w.minimumSizeHint().height() <= size.height()
        assert w.minimumSizeHint().width() <= size.width()
        assert not w.query.limits_expanded                     # folded on a short screen…
        assert "iterations" in w.query.limits_summary.text()     # (the summary says what they are)
        run = w.query.run_button
        assert run.isVisible() and run.mapTo(w, run.rect().bottomLeft()).y() < w.height()

        w.open_paths([_docs(tmp_path / "docs", 12)])
        qtbot.waitUntil(lambda: len(w.documents.documents) == 12 and not w.documents.loading, timeout=10_000)
        table = w.documents.table

        def rows_shown() -> int:
            return table.viewport().height() // table.rowHeight(0)
        # (the progress bar of the load goes away; the list takes its room at the next layout pass)
        qtbot.waitUntil(lambda: not w.documents.progress.isVisible(), timeout=3000)
        qtbot.waitUntil(lambda: rows_shown() >= 5, timeout=3000)   # whole rows, no scrolling needed
        name_width = table.horizontalHeader().sectionSize(COL_NAME)
        assert name_width >= table.fontMetrics().horizontalAdvance("supplier-report-01") # readable names

        with qtbot.waitSignal(w.trace_opened, timeout=10_000):
            w.open_trace_file(_deep_trace(tmp_path / "deep.jsonl"))
        w.trace_pane.expand_all()
        view = w.trace_pane.view
        qtbot.waitUntil(lambda: view.horizontalScrollBar().maximum() == 0, timeout=3000)
        assert not view.horizontalScrollBar().isVisible()
        step = view.header().sectionSize(0)
        assert step >= view.fontMetrics().horizontalAdvance("iteration 1") * 2   # the steps can be read

        w.query.set_limits_expanded(True)                      # …and unfolds on request
        assert w.query.limits_box.isVisible() and w.query.limits_summary.text() == ""
    finally:
        w.bridge.shutdown()


def test_status_words_fit_their_columns(qtbot, window, tmp_path: Path) -> None:  # noqa: ANN001
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        window.open_trace_file(_deep_trace(tmp_path / "deep.jsonl"))
    window.trace_pane.expand_all()
    view = window.trace_pane.view
    model = view.model()
    seen: set[str] = set()
    stack = [model.index(0, 0)]
    while stack:
        idx = stack.pop()
        stack.extend(model.index(r, 0, idx) for r in range(model.rowCount(idx)))
        status = idx.siblingAtColumn(COL_STATUS)
        seen.add(status.data())
        opt = QStyleOptionViewItem()
        view.initViewItemOption(opt)
        needed = view.itemDelegate().sizeHint(opt, status).width()
        assert needed <= view.header().sectionSize(COL_STATUS), f"{status.data()!r} is cut"
    assert {"cancelled", "incomplete", "timeout", "limit", "error", "ok"} <= seen

    store = HistoryStore(tmp_path / "history.jsonl")
    for i, status in enumerate(("interrupted", "cancelled", "limit")):
        store.add(HistoryEntry(trace=str(tmp_path / f"gone-{i}.jsonl"), query=f"q{i}", started=float(i),
                               finished=float(i) + 1, status=status))
    history = window.history
    history.store = store
    history.reload()
    table = history.table
    for row in range(table.rowCount()):
        item = table.item(row, 2)
        assert item.text() == "missing" and "missing" in item.toolTip()      # the file is gone
        opt = QStyleOptionViewItem()
        table.initViewItemOption(opt)
        needed = table.itemDelegate().sizeHint(opt, table.model().index(row, 2)).width()
        assert needed <= table.horizontalHeader().sectionSize(2), f"{item.text()!r} is cut"


def test_files_of_the_same_name_in_different_folders_show_their_folder(qtbot, window, tmp_path: Path) -> None:  # noqa: ANN001
    root = tmp_path / "reports"
    for sub in ("2024/q1/north", "2024/q1/south"):
        (root / sub).mkdir(parents=True)
        (root / sub / "summary-of-the-quarter.md").write_text(f"# {sub}\n")
    (root / "index.md").write_text("# index\n")
    window.open_paths([root])
    pane = window.documents
    qtbot.waitUntil(lambda: len(pane.documents) == 3 and not pane.loading, timeout=10_000)
    model = pane.model
    rows = {model.data(model.index(r, COL_FOLDER)): r for r in range(model.rowCount())}
    assert set(rows) == {"", "2024/q1/north", "2024/q1/south"}
    north, south = rows["2024/q1/north"], rows["2024/q1/south"]
    assert model.data(model.index(north, COL_NAME)) == model.data(model.index(south, COL_NAME))
    assert not pane.table.horizontalHeader().isSectionHidden(COL_FOLDER)
    tip = model.data(model.index(north, COL_NAME), 3)                  # ToolTipRole
    assert "2024/q1/north/summary-of-the-quarter.md" in tip
    # A narrow folder column keeps the folder nearest the file (elided at the left).
    opt = QStyleOptionViewItem()
    pane.table.initViewItemOption(opt)
    pane.table.itemDelegateForColumn(COL_FOLDER).initStyleOption(opt, model.index(north, COL_FOLDER))
    assert opt.textElideMode.name == "ElideLeft"
    pane.clear()
    window.open_paths([root / "index.md"])
    qtbot.waitUntil(lambda: len(pane.documents) == 1 and not pane.loading, timeout=10_000)
    assert pane.table.horizontalHeader().isSectionHidden(COL_FOLDER)    # nothing to tell apart


def test_opened_with_documents_the_cursor_is_in_the_question_box(qtbot, window, docs_folder) -> None:  # noqa: ANN001
    window.documents.table.setFocus()
    window.open_paths([docs_folder])                 # what `rlm-desktop FOLDER` does
    assert window.focusWidget() is window.query.question
    qtbot.waitUntil(lambda: not window.documents.loading, timeout=10_000)
    assert window.focusWidget() is window.query.question


def test_the_shortcut_list_names_each_key_once(window) -> None:  # noqa: ANN001
    lines = window.shortcut_lines()
    assert "Quit: Ctrl+Q" in lines
    for line in lines:
        keys = line.split(": ", 1)[1].split(", ")
        assert len(keys) == len(set(keys)), line


def test_settings_fit_a_1280x720_laptop_and_keep_their_buttons_in_view(qtbot) -> None:  # noqa: ANN001
    from rlm_desktop.ui.settings_dialog import SettingsDialog

    d = SettingsDialog(Settings())
    qtbot.addWidget(d)
    d.fit_to(LAPTOP)
    d.show()
    d.add_from_preset("openai")
    assert d.height() <= LAPTOP.height() - 40 and d.width() <= LAPTOP.width()   # a title bar fits too
    ok = d.button_box
    assert ok.mapTo(d, ok.rect().bottomLeft()).y() <= d.height()


def test_at_1280x720_the_history_question_column_and_its_header_are_not_cut(
        qtbot, settings, tmp_path: Path) -> None:  # noqa: ANN001
    w = _laptop_window(qtbot, settings)
    try:
        history = w.history
        history.store = HistoryStore(tmp_path / "history.jsonl")
        history.store.add(HistoryEntry(trace=str(tmp_path / "gone.jsonl"), query="Which supplier missed "
                                       "the most deliveries in the first quarter?", started=1.0, finished=2.0,
                                       status="ok", cost_usd=0.0123))
        history.reload()
        w.left_tabs.setCurrentWidget(history)
        table = history.table
        hh = table.horizontalHeader()
        # the question column holds its header (sort arrow included) and the start of a question
        qtbot.waitUntil(lambda: hh.sectionSize(0) >= hh.sectionSizeFromContents(0).width(), timeout=3000)
        assert hh.sectionSize(0) >= table.fontMetrics().horizontalAdvance("Which supplier missed")
        # (the columns still fit the pane: nothing scrolls sideways)
        assert table.horizontalScrollBar().maximum() == 0
        # to make room the Cost column folds away; the cost is still in the question's tooltip
        assert hh.isSectionHidden(3)
        assert "$0.0123" in table.item(0, 0).toolTip()
        # a wider pane has room for it again
        w.resize(1900, 1000)
        w.main_split.setSizes([900, 1000])
        qtbot.waitUntil(lambda: not hh.isSectionHidden(3), timeout=3000)
        assert hh.sectionSize(0) >= hh.sectionSizeFromContents(0).width()
    finally:
        w.bridge.shutdown()
