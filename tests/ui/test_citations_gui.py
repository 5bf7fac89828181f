"""Citations and sources in the window (issue 10, "Showing it"), against the scripted server: the
run's code reads ``b.txt`` lines 3–4 and passes them to ``llm_query``; the answer cites
``[b.txt:L3-L4]`` (verified) and ``[missing.txt:L1-L2]`` (no such document). The answer's citations
are links; clicking the b.txt link shows the preview at line 3 with lines 3–4 highlighted; the
Sources list says which are verified and why not; the documents row of b.txt says it was read."""

from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCursor

from rlm_desktop.core.trace import Span
from rlm_desktop.ui.documents_pane import COL_NAME, COL_SEEN
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.ui.settings import Settings
from rlm_desktop.ui.sources_view import READ_LABEL, cite_index, link_citations
from tests.core.pdfs import make_pdf
from tests.engine.conftest import route
from tests.engine.test_citations import A_TXT, B_TXT, FINAL_CITED, READ_AND_ASK
from tests.fakeserver import FakeOpenAI
from tests.ui.test_sessions_gui import _use_fake

# b.txt as in the engine test, then filler lines so the preview must scroll to reach line 3.
B_LONG = B_TXT + "".join(f"Filler line {i} of the minutes, unrelated to the launch.\n" for i in range(6, 200))


def _anchors(window: MainWindow) -> list[tuple[str, int, str]]:
    """(href, position, text) of every link in the rendered answer."""
    return _anchors_of(window.answer)


def _run_cited(qtbot, window: MainWindow, settings: Settings, srv: FakeOpenAI, tmp_path: Path) -> None:  # noqa: ANN001
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "b.txt").write_text(B_LONG)
    (docs / "a.txt").write_text(A_TXT)
    _use_fake(window, settings, srv)
    window.documents.add_paths([docs])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 2 and not window.documents.loading,
                    timeout=10_000)
    srv.handler = route([READ_AND_ASK, FINAL_CITED], sub=lambda r: "Launch March 3; revenue +12%.")
    window.query.set_query("When is the launch?")
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        assert window.start_run() is not None, window.status.currentMessage()
    outcome = finished.args[0]
    assert outcome.error is None and outcome.result.status == "ok", (outcome.error, outcome.result)


def test_citation_links_open_the_preview_at_the_cited_lines_and_sources_list_says_what_holds(  # noqa: ANN001
        qtbot, window, settings, fake_openai, tmp_path) -> None:
    _run_cited(qtbot, window, settings, fake_openai, tmp_path)
    pane = window.answer
    # a link per citation, in the order written; the unverified one is flagged in the text
    links = _anchors(window)
    assert [(cite_index(h), t) for h, _, t in links] == [(0, "[b.txt:L3-L4]"), (1, "[missing.txt:L1-L2]")]
    shown = pane.text.toPlainText()
    assert "[missing.txt:L1-L2] ⚠ unverified" in shown and "[b.txt:L3-L4] ⚠" not in shown
    assert pane.source() == pane.source().strip() and "rlmcite" not in pane.source()   # copy: as written

    # the Sources list: b.txt verified, missing.txt unverified with the reason in words, the steps
    rows = [it.text(0) for it in pane.sources.items()]
    assert pane.sources.isVisible()
    assert any(r.startswith("✓ b.txt L3–L4 — verified") for r in rows), rows
    assert any(r.startswith("⚠ missing.txt L1–L2 — unverified: no such document") for r in rows), rows
    assert any(r.startswith(READ_LABEL) for r in rows), rows
    b_item = next(it for it in pane.sources.items() if it.text(0).startswith("✓ b.txt"))
    steps = [b_item.child(i) for i in range(b_item.childCount())]
    assert steps and all(s.text(0).startswith("seen by ") for s in steps)
    # clicking a step selects it in the trace tree
    span = steps[0].data(0, Qt.ItemDataRole.UserRole)
    assert isinstance(span, Span)
    pane.sources.expandItem(b_item)
    pane.sources.scrollToItem(steps[0])
    rect = pane.sources.visualItemRect(steps[0])
    assert pane.sources.itemAt(rect.center()) is steps[0]
    qtbot.mouseClick(pane.sources.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert window.trace_pane.selected_span() is span

    # the documents row of b.txt says it was read (and which lines), a.txt's does not
    dp = window.documents
    m = dp.model
    row_b = next(i for i, d in enumerate(m.docs) if d.rel_path == "b.txt")
    row_a = next(i for i, d in enumerate(m.docs) if d.rel_path == "a.txt")
    assert m.data(m.index(row_b, COL_SEEN)) == "read"
    tip = m.data(m.index(row_b, COL_SEEN), Qt.ItemDataRole.ToolTipRole)
    assert tip == "seen by models: L3–L4", tip
    assert "seen by models" in m.data(m.index(row_b, COL_NAME), Qt.ItemDataRole.ToolTipRole)
    assert m.data(m.index(row_a, COL_SEEN)) == ""

    # b.txt already in the preview, scrolled to its end: the link must bring line 3 into view
    dp.select_row(row_b)
    dp.preview.moveCursor(QTextCursor.MoveOperation.End)
    dp.preview.ensureCursorVisible()
    assert dp.preview.firstVisibleBlock().blockNumber() > 10
    window.left_tabs.setCurrentWidget(window.history)
    # click the b.txt link in the answer, as a user would
    href, pos, _ = links[0]
    cur = QTextCursor(pane.text.document())
    cur.setPosition(pos + 2)
    at = pane.text.cursorRect(cur).center()
    assert pane.text.anchorAt(at) == href
    qtbot.mouseClick(pane.text.viewport(), Qt.MouseButton.LeftButton, pos=at)
    assert window.left_tabs.currentWidget() is dp
    c = dp.preview.textCursor()
    assert c.blockNumber() == 2                               # at line 3
    assert c.positionInBlock() == 0 and c.block().text() == B_TXT.split("\n")[2]
    assert dp.marked_lines() == [3, 4]                        # lines 3–4 highlighted
    first = dp.preview.firstVisibleBlock().blockNumber()
    assert first <= 2, first                                  # line 3 is on screen
    vis = dp.preview.blockBoundingGeometry(dp.preview.document().findBlockByNumber(2)).translated(
        dp.preview.contentOffset())
    assert 0 <= vis.top() < dp.preview.viewport().height()

    # the missing document: nothing to show, said in the status bar, the preview untouched
    with qtbot.waitSignal(dp.status_message) as said:
        pane.activate_citation(1)
    assert "missing.txt is not in the Documents list" in said.args[0]
    assert dp.marked_lines() == [3, 4]

    # "show what the models saw": the seen ranges highlighted too (lines 3–4 are what the sub-call saw)
    dp.show_seen.setChecked(True)
    assert {3, 4} <= set(dp.marked_lines())
    # another document: no cited mark left behind
    dp.select_row(row_a)
    assert dp.marked_lines() == []

    if os.environ.get("RLM_SCREENSHOT"):
        dp.select_row(row_b)
        pane.activate_citation(0)
        qtbot.wait(200)
        window.grab().save(os.environ["RLM_SCREENSHOT"])


def test_link_citations_makes_each_citation_a_link_and_leaves_other_brackets() -> None:
    from rlm_desktop.core.citations import Citation
    ok = Citation("[a.txt:L1-L2]", "a.txt", 1, 2, None, True)
    bad = Citation("[b.txt:L5]", "b.txt", 5, 5, None, False, "no such document")
    md = link_citations("See [a.txt:L1-L2; b.txt:L5] and [1].", [ok, bad])
    assert md == ("See [\\[a.txt:L1-L2\\]](rlmcite:0) [\\[b.txt:L5\\]](rlmcite:1) ⚠ *unverified* and [1].")
    assert link_citations("no cites [x]", []) == "no cites [x]"
    assert cite_index("rlmcite:3") == 3 and cite_index("https://example.com") is None
    assert cite_index("rlmcite:x") is None
    # in code the citation stays as written (and the numbering still follows the parser's order)
    md = link_citations("`[a.txt:L1-L2]` then [b.txt:L5]\n\n```\nx = '[a.txt:L1]'\n```\n", [ok, bad, ok])
    assert md == "`[a.txt:L1-L2]` then [\\[b.txt:L5\\]](rlmcite:1) ⚠ *unverified*\n\n```\nx = '[a.txt:L1]'\n```\n"


def test_a_page_citation_opens_the_pages_first_line_and_an_opened_trace_shows_its_sources(  # noqa: ANN001
        qtbot, window, settings, fake_openai, tmp_path) -> None:
    _run_cited(qtbot, window, settings, fake_openai, tmp_path)
    trace_path = window.shown_trace_path
    # the trace opened again (as from History): same links, same Sources list, same "read" mark
    window.answer.clear()
    window.documents.set_seen([])
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        assert window.open_trace_file(Path(trace_path))
    assert [cite_index(h) for h, _, _ in _anchors(window)] == [0, 1]
    assert any(it.text(0).startswith("⚠ missing.txt") for it in window.answer.sources.items())
    m = window.documents.model
    row_b = next(i for i, d in enumerate(m.docs) if d.rel_path == "b.txt")
    assert m.data(m.index(row_b, COL_SEEN)) == "read"
    # a PDF cited by page: the preview opens at the page's first line
    pdf_dir = tmp_path / "pdf"
    pdf_dir.mkdir()
    make_pdf(pdf_dir / "report.pdf", ["Page one text.", "Page two: the launch moved.", "Page three."])
    window.documents.add_paths([pdf_dir / "report.pdf"])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 3 and not window.documents.loading,
                    timeout=10_000)
    doc = window.documents.find("report.pdf")
    assert doc is not None and doc.page_lines
    assert window.documents.show_range("report.pdf", None, None, page=2)
    c = window.documents.preview.textCursor()
    assert c.blockNumber() + 1 == doc.page_lines[1]
    assert window.documents.marked_lines() == [doc.page_lines[1]]


    # a new session: no turn shown, so no document is marked read
    window.new_session()
    row_b = next(i for i, d in enumerate(m.docs) if d.rel_path == "b.txt")
    assert m.data(m.index(row_b, COL_SEEN)) == ""
    assert not window.answer.sources.isVisibleTo(window.answer)


def test_only_the_apps_citation_links_do_anything(qtbot) -> None:  # noqa: ANN001
    from rlm_desktop.ui.run_panes import AnswerPane
    pane = AnswerPane()
    qtbot.addWidget(pane)
    pane.resize(500, 300)
    pane.show()
    pane.set_result("Go to [the site](https://example.com/x) ![img](http://example.com/i.png)", "ok",
                    "final", None)
    links = [(h, p) for h, p, _ in _anchors_of(pane)]
    assert links and links[0][0] == "https://example.com/x"
    clicked: list[int] = []
    pane.text.citation_clicked.connect(clicked.append)
    cur = QTextCursor(pane.text.document())
    cur.setPosition(links[0][1] + 2)
    at = pane.text.cursorRect(cur).center()
    assert pane.text.anchorAt(at) == "https://example.com/x"
    qtbot.mouseClick(pane.text.viewport(), Qt.MouseButton.LeftButton, pos=at)
    assert clicked == []                                      # an outside link stays text
    assert set(pane.text.refused) == {"http://example.com/i.png"}  # and nothing was loaded


def _anchors_of(pane) -> list[tuple[str, int, str]]:  # noqa: ANN001
    out = []
    block = pane.text.document().begin()
    while block.isValid():
        it = block.begin()
        while not it.atEnd():
            frag = it.fragment()
            if frag.isValid() and frag.charFormat().isAnchor():
                out.append((frag.charFormat().anchorHref(), frag.position(), frag.text()))
            it += 1
        block = block.next()
    return out


def test_the_trace_tree_names_what_each_step_saw(qtbot, window, settings, fake_openai, tmp_path) -> None:  # noqa: ANN001
    """Issue 10: "The tree and the detail pane show them (saw contracts/acme.md L120–L188)"."""
    _run_cited(qtbot, window, settings, fake_openai, tmp_path)
    model = window.model
    saw: list[tuple[str, str]] = []
    for span in model.trace.spans.values():
        idx = model.index_for_span(span)
        if not idx.isValid():
            continue
        text = model.data(idx, Qt.ItemDataRole.DisplayRole)
        if "· saw " in text:
            saw.append((text, model.data(idx, Qt.ItemDataRole.ToolTipRole)))
    assert saw, "no step in the tree says what it saw"
    assert any("saw b.txt L3–L4" in text or "saw b.txt L3" in text for text, _ in saw), saw
    assert all("\nsaw b.txt" in tip for text, tip in saw if "saw b.txt" in text), saw
