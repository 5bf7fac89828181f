"""Read marks cover the session, not only the shown turn: in a session of two turns (issue 9) the
Documents pane says which turns read each document (the shown turn's in bold) and the preview's
"seen by model" highlight shows what every turn saw, the shown turn's darker; a session opened again
from History shows the same. Scripted server, real REPL, pytest-qt."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QFont

from rlm_desktop.ui.documents_pane import COL_SEEN, SEEN_SESSION, SEEN_SHOWN
from rlm_desktop.ui.main_window import MainWindow
from tests.engine.conftest import route
from tests.engine.test_citations import A_TXT, B_TXT, READ_AND_ASK
from tests.ui.test_sessions_gui import _ask, _use_fake

C_TXT = ("Delivery log for the northern warehouse, written by the night shift.\n"
         "Pallet 17 arrived damaged and was sent back to the supplier in Lyon.\n"
         "Pallet 18 arrived on time; the driver asked for a signed receipt.\n")
# turn 1: b.txt lines 3–4 to a sub-call, c.txt line 2 printed; turn 2: a.txt and c.txt line 3 printed
TURN1 = (READ_AND_ASK.replace("print(summary)", "print(summary)\nprint(context['c.txt'].split('\\n')[1])"),
         "FINAL(March 3.)")
TURN2 = ("```repl\nprint(context['a.txt'])\nprint(context['c.txt'].split('\\n')[2])\n```", "FINAL(Nothing.)")


def _row(window: MainWindow, name: str) -> int:
    return next(i for i, d in enumerate(window.documents.model.docs) if d.rel_path == name)


def _seen(window: MainWindow, name: str, role: Qt.ItemDataRole = Qt.ItemDataRole.DisplayRole) -> object:
    m = window.documents.model
    return m.data(m.index(_row(window, name), COL_SEEN), role)


def _bold(window: MainWindow, name: str) -> bool:
    f = _seen(window, name, Qt.ItemDataRole.FontRole)
    return isinstance(f, QFont) and f.bold()


def _marks(window: MainWindow, name: str) -> dict[int, str]:
    dp = window.documents
    dp.select_row(_row(window, name))
    return dp.mark_kinds()


def _assert_session_marks(window: MainWindow) -> None:
    # which turns read each document; bold where the shown turn (2) read it
    assert (_seen(window, "b.txt"), _bold(window, "b.txt")) == ("turn 1", False)
    assert (_seen(window, "a.txt"), _bold(window, "a.txt")) == ("turn 2", True)
    assert (_seen(window, "c.txt"), _bold(window, "c.txt")) == ("turns 1, 2", True)
    assert _seen(window, "b.txt", Qt.ItemDataRole.ToolTipRole) == (
        "read in turn 1; the shown turn (2) did not\nturn 1: seen by models: L3–L4")
    assert _seen(window, "c.txt", Qt.ItemDataRole.ToolTipRole) == (
        "read in turns 1, 2; the shown turn (2) read it\nturn 1: seen by models: L2\n"
        "turn 2: seen by models: L3")
    # the preview: every turn's reads, the shown turn's told apart
    window.documents.show_seen.setChecked(True)
    assert _marks(window, "b.txt") == {3: SEEN_SESSION, 4: SEEN_SESSION}
    assert _marks(window, "c.txt") == {2: SEEN_SESSION, 3: SEEN_SHOWN}
    assert set(_marks(window, "a.txt").values()) == {SEEN_SHOWN}


def _load_three(qtbot, window, settings, fake_openai, tmp_path: Path) -> None:  # noqa: ANN001
    """a.txt, b.txt, c.txt loaded in the window; the scripted server answers TURN1 then TURN2."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in (("a.txt", A_TXT), ("b.txt", B_TXT), ("c.txt", C_TXT)):
        (docs / name).write_text(text)
    _use_fake(window, settings, fake_openai)
    window.documents.add_paths([docs])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 3 and not window.documents.loading,
                    timeout=10_000)
    fake_openai.handler = route([*TURN1, *TURN2], sub=lambda r: "Launch March 3.")


def test_read_marks_cover_every_turn_of_the_session_and_reopen_the_same(  # noqa: ANN001
        qtbot, window, settings, fake_openai, tmp_path: Path) -> None:
    _load_three(qtbot, window, settings, fake_openai, tmp_path)
    _ask(qtbot, window, "When is the launch?")
    # one turn so far: the plain "read" mark, as for a single run
    assert (_seen(window, "b.txt"), _seen(window, "c.txt"), _seen(window, "a.txt")) == ("read", "read", "")
    second = _ask(qtbot, window, "Anything else?")
    assert second.turn_number == 2
    _assert_session_marks(window)

    # a new session clears them; the session opened again from History shows the same marks
    window.new_session()
    assert _seen(window, "b.txt") == "" and _seen(window, "c.txt") == ""
    pane = window.history
    pane.reload()
    group = next(g for g in pane.groups() if g.session == second.session)
    pane.table.selectRow(pane.row_of(group))
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        qtbot.mouseClick(pane.open_btn, Qt.MouseButton.LeftButton)
    _assert_session_marks(window)


def test_selecting_a_step_of_an_earlier_turn_shows_that_turns_answer_sources_and_marks(  # noqa: ANN001
        qtbot, window, settings, fake_openai, tmp_path: Path) -> None:
    _load_three(qtbot, window, settings, fake_openai, tmp_path)
    _ask(qtbot, window, "When is the launch?")
    _ask(qtbot, window, "Anything else?")
    assert window.answer.source() == "Nothing." and window.answer.heading.text() == "Answer — turn 2 of 2"
    runs = window.model.trace.roots
    assert len(runs) == 2
    # a step inside turn 1, selected in the tree: turn 1's answer, heading and read marks
    step = next(s for s in window.model.trace.spans.values() if s.parent is not None and s.parent.parent is runs[0])
    window.trace_pane.select_span(step)
    assert window.answer.source() == "March 3." and window.answer.heading.text() == "Answer — turn 1 of 2"
    assert "Showing turn 1 of 2: When is the launch?" in window.status.currentMessage()
    assert (_seen(window, "b.txt"), _bold(window, "b.txt")) == ("turn 1", True)
    assert (_seen(window, "a.txt"), _bold(window, "a.txt")) == ("turn 2", False)
    window.documents.show_seen.setChecked(True)
    assert _marks(window, "b.txt") == {3: SEEN_SHOWN, 4: SEEN_SHOWN}
    # back to turn 2
    window.trace_pane.select_span(runs[1])
    assert window.answer.source() == "Nothing." and window.answer.heading.text() == "Answer — turn 2 of 2"
    assert (_seen(window, "b.txt"), _bold(window, "b.txt")) == ("turn 1", False)
