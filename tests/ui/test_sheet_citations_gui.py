"""Spreadsheet citations in the window: a run over a real ``book.xlsx`` (openpyxl) against the
scripted server cites ``[book.xlsx:Sales!R12-R18]``; clicking that link opens the preview at row 12's
line with rows 12–18 marked; the Sources list and the detail pane say "book.xlsx Sales R12–R18"; an
unverified sheet citation says why, and a row past the end opens the sheet's header line."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from rlm_desktop.core.documents import load_document
from rlm_desktop.core.trace import SpanKind
from rlm_desktop.ui.documents_pane import COL_SEEN
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.ui.sources_view import cite_index
from tests.core.test_sheets import line_of
from tests.core.workbooks import LAST_SALES_ROW, make_book_xlsx
from tests.engine.conftest import route
from tests.engine.test_sheet_citations import final_cited, read_rows
from tests.ui.test_citations_gui import _anchors_of
from tests.ui.test_sessions_gui import _use_fake


def test_a_sheet_citation_link_opens_the_rows_and_the_panes_name_sheet_and_rows(  # noqa: ANN001
        qtbot, window: MainWindow, settings, fake_openai, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    make_book_xlsx(docs / "book.xlsx")
    (docs / "b.txt").write_text("Board minutes: nothing about sales in here, only the date of the picnic.\n")
    text = load_document(docs / "book.xlsx", "book.xlsx").text or ""
    _use_fake(window, settings, fake_openai)
    window.documents.add_paths([docs])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 2 and not window.documents.loading,
                    timeout=10_000)
    fake_openai.handler = route([read_rows("book.xlsx"), final_cited("book.xlsx")], sub=lambda r: "Steady.")
    window.query.set_query("How were sales?")
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        assert window.start_run() is not None, window.status.currentMessage()
    assert finished.args[0].error is None and finished.args[0].result.status == "ok"
    pane, dp = window.answer, window.documents

    # the Sources list: sheet and rows, verified or why not
    rows = [it.text(0) for it in pane.sources.items()]
    assert "✓ book.xlsx Sales R12–R18 — verified" in rows, rows
    assert "✓ book.xlsx Q1 plan R2 — verified" in rows, rows
    assert ("⚠ book.xlsx Salez R1 — unverified: no sheet 'Salez' in book.xlsx (sheets: Sales, Q1 plan, "
            "Costs)") in rows, rows
    assert f"⚠ book.xlsx Sales R900 — unverified: row 900 is past the last row {LAST_SALES_ROW} of Sales" in rows
    read = next(it for it in pane.sources.items() if it.text(0).startswith("book.xlsx "))
    assert read.text(0) == (f"book.xlsx Sales R12–R18, Sales R{LAST_SALES_ROW - 1}–R{LAST_SALES_ROW}, "
                            "Q1 plan R1–R4 — read, not cited")
    assert read.toolTip(0).startswith("the run's models saw book.xlsx Sales R12–R18, ")
    cited = next(it for it in pane.sources.items() if it.text(0).startswith("✓ book.xlsx Sales"))
    step = cited.child(0)
    assert step.text(0) == "seen by sub-call: llm_query (Sales R12–R18)"
    assert "saw book.xlsx Sales R12–R18" in step.toolTip(0)

    # the detail pane of the sub-call step: what its model saw, by sheet and row
    sub = next(s for s in window.model.trace if s.kind == SpanKind.SUB_CALL)
    window.detail.show_span(sub, window.model.trace)
    assert window.detail.fact_labels["Sources"].text() == "saw book.xlsx Sales R12–R18"
    assert not window.detail.fact_labels["Sources"].isHidden()

    # the Documents row: read, by sheet and row
    m = dp.model
    row = next(i for i, d in enumerate(m.docs) if d.rel_path == "book.xlsx")
    assert m.data(m.index(row, COL_SEEN)) == "read"
    assert m.data(m.index(row, COL_SEEN), Qt.ItemDataRole.ToolTipRole).startswith(
        "seen by models: Sales R12–R18, ")

    # click the sheet citation's link, as a user would: the preview at row 12, rows 12–18 marked
    links = _anchors_of(pane)
    href, pos, shown = links[0]
    assert (cite_index(href), shown) == (0, "[book.xlsx:Sales!R12-R18]")
    dp.preview.moveCursor(QTextCursor.MoveOperation.End)
    window.left_tabs.setCurrentWidget(window.history)
    cur = QTextCursor(pane.text.document())
    cur.setPosition(pos + 2)
    at = pane.text.cursorRect(cur).center()
    assert pane.text.anchorAt(at) == href
    qtbot.mouseClick(pane.text.viewport(), Qt.MouseButton.LeftButton, pos=at)
    assert window.left_tabs.currentWidget() is dp
    r12, r18 = line_of(text, "Sales", 12), line_of(text, "Sales", 18)
    assert r12 != 12                                          # rows are not lines (rows 3, 7 empty)
    c = dp.preview.textCursor()
    assert c.blockNumber() + 1 == r12 and c.block().text().startswith("12\t")
    assert dp.marked_lines() == list(range(r12, r18 + 1))
    assert dp.preview.firstVisibleBlock().blockNumber() <= r12 - 1

    # a row past the end: no rows to mark, the preview opens at the sheet's header line
    n900 = next(i for i, h in enumerate(links) if "R900" in h[2])
    with qtbot.waitSignal(dp.status_message) as said:
        pane.activate_citation(cite_index(links[n900][0]))
    assert said.args[0] == "book.xlsx: the cited rows are not in sheet Sales; showing the sheet's header line."
    assert dp.preview.textCursor().block().text() == "--- sheet 1: Sales ---"
    assert dp.marked_lines() == [1]
