"""Tools → Evaluate: the window runs a real evaluation on the engine thread, shows rows, charts and
items, opens an item's trace in the main window, and stops cleanly keeping what finished."""

from __future__ import annotations

from pathlib import Path

from rlm_desktop.core.trace import SpanStatus, read_trace
from rlm_desktop.ui.evaluate_window import EvaluateWindow
from rlm_desktop.ui.main_window import MainWindow
from tests.fakeserver import FakeOpenAI, Reply
from tests.ui.conftest import fake_profile


def _open(window: MainWindow) -> EvaluateWindow:
    window.act_evaluate.trigger()
    ew = window.evaluate_window
    assert isinstance(ew, EvaluateWindow) and ew.isVisible()
    return ew


def test_tools_evaluate_runs_the_demo_and_opens_an_items_trace(qtbot, window: MainWindow) -> None:  # noqa: ANN001
    assert "&Evaluate…" in [a.text() for m in window.menuBar().actions() if m.text() == "&Tools"
                            for a in m.menu().actions()]
    ew = _open(window)
    ew.provider.setCurrentIndex(ew.provider.findData("demo"))
    ew.task_boxes["aggregate"].setChecked(False)
    ew.sizes.setText("8k,16k")
    ew.items.setValue(1)
    with qtbot.waitSignal(ew.evaluation_finished, timeout=90_000) as sig:
        assert ew.start()
        assert not ew.start_button.isEnabled() and ew.stop_button.isEnabled()
    outcome = sig.args[0]
    assert outcome.stopped is None and len(outcome.rows) == 4
    assert ew.rows_table.rowCount() == 4 and ew.items_table.rowCount() == 4
    assert ew.rows_table.item(0, 0).text() == "needle" and ew.rows_table.item(0, 2).text() in ("rlm", "direct")
    assert ew.progress.value() == ew.progress.maximum() == 4
    assert ew.accuracy_chart.renderer().isValid() and ew.cost_chart.renderer().isValid()
    assert ew.report_button.isEnabled() and (ew.out_dir / "report.html").exists()
    assert "Finished: 4 runs" in ew.status.text()
    path = ew.trace_of_row(0)
    assert path is not None and path.exists()
    ew._on_item_double_clicked(0, 0)            # what a double-click on the row does
    qtbot.waitUntil(lambda: window.shown_trace_path is not None and Path(window.shown_trace_path) == path,
                    timeout=10_000)


def test_bad_choices_are_said_and_nothing_starts(qtbot, window: MainWindow) -> None:  # noqa: ANN001
    ew = _open(window)
    ew.sizes.setText("8q")
    assert not ew.start() and "is not a size" in ew.status.text()
    ew.sizes.setText("8k")
    for box in ew.task_boxes.values():
        box.setChecked(False)
    assert not ew.start() and "at least one task" in ew.status.text()


def test_stop_cancels_running_items_and_keeps_finished_ones(qtbot, window: MainWindow,  # noqa: ANN001
                                                            fake_openai: FakeOpenAI) -> None:
    window.settings.add_profile(fake_profile(fake_openai))
    calls: list[int] = []

    def first_answers_then_hang(req):  # noqa: ANN001, ANN202
        calls.append(1)
        if len(calls) == 1:
            return "```repl\nFINAL('1234567')\n```"
        return Reply.hanging()
    fake_openai.handler = first_answers_then_hang
    ew = _open(window)
    ew.provider.setCurrentIndex(ew.provider.findData("fake"))
    ew.task_boxes["aggregate"].setChecked(False)
    ew.sizes.setText("8k")
    ew.items.setValue(3)
    ew.method_boxes["direct"].setChecked(False)
    assert ew.start()
    qtbot.waitUntil(lambda: len(calls) == 2 and fake_openai.open_now == 1, timeout=60_000)
    with qtbot.waitSignal(ew.evaluation_finished, timeout=30_000) as sig:
        ew.stop()
    outcome = sig.args[0]
    assert outcome.stopped == "stopped by the user"
    assert [r.status for r in outcome.results] == ["ok", "cancelled"]
    assert ew.rows_table.rowCount() == 1 and ew.rows_table.item(0, 3).text() == "1"
    assert "Stopped early (stopped by the user): 1 of 3 runs" in ew.status.text()
    assert read_trace(outcome.results[1].trace).roots[0].status == SpanStatus.CANCELLED
    assert fake_openai.wait_until(lambda s: s.open_now == 0, timeout=10)
    assert ew.start_button.isEnabled() and not ew.stop_button.isEnabled()


def test_your_documents_task_runs_every_question_and_reports_unreadable_files(  # noqa: D103
        qtbot, window: MainWindow, tmp_path: Path) -> None:  # noqa: ANN001
    docs = tmp_path / "mine"
    docs.mkdir()
    (docs / "notes.txt").write_text("The magic number for Oslo is 4711.\nNothing else here.\n")
    (docs / "broken.docx").write_bytes(b"PK\x03\x04 not really a Word file")
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "What is the magic number for Oslo?", "answer": "4711"}\n'
                         '{"question": "Which city is named?", "answer": "Oslo"}\n')
    ew = _open(window)
    ew.provider.setCurrentIndex(ew.provider.findData("demo"))
    for t in ("needle", "aggregate"):
        ew.task_boxes[t].setChecked(False)
    ew.task_boxes["docs"].setChecked(True)
    ew.sizes.setText("")                       # sizes belong to the generated tasks only
    assert not ew.start() and "choose a folder and a questions file" in ew.status.text()
    ew.docs_folder.setText(str(docs))
    ew.questions_file.setText(str(tmp_path / "nope.jsonl"))
    assert not ew.start() and "cannot read the questions file" in ew.status.text()
    ew.questions_file.setText(str(questions))
    ew.method_boxes["direct"].setChecked(False)
    with qtbot.waitSignal(ew.evaluation_finished, timeout=90_000) as sig:
        assert ew.start()
    outcome = sig.args[0]
    assert [(r.task, r.method) for r in outcome.rows] == [("docs", "rlm")]
    assert outcome.rows[0].items == 2 and len(outcome.results) == 2
    assert ew.progress.value() == ew.progress.maximum() == 2
    assert "Finished: 2 runs" in ew.status.text()
    assert "broken.docx" in ew.status.text()          # the unreadable file is named, not hidden


def test_the_window_fits_a_1280x720_screen(qtbot, window: MainWindow) -> None:  # noqa: ANN001
    ew = _open(window)
    hint = ew.minimumSizeHint()
    assert hint.width() <= 1280 and hint.height() <= 720 - 32, hint
