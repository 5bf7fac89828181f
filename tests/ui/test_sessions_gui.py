"""Sessions in the window, against the scripted server: a follow-up in the same window uses turn 1's
variable; the status bar's turn and session totals are core.totals of the trace; New session starts
clean; History lists the session with its turns and a CLI run marked as CLI; Continue from History
rebuilds the REPL with no model request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from PySide6.QtCore import Qt

from rlm_desktop.core.config import ModelPrice
from rlm_desktop.core.totals import totals
from rlm_desktop.core.trace import Attr, read_trace
from rlm_desktop.session.store import SessionStore
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.ui.run_panes import HistoryGroup, SessionFigures
from rlm_desktop.ui.settings import Settings
from tests.engine.conftest import is_root, route
from tests.fakeserver import FakeOpenAI
from tests.ui.conftest import drop_paths, fake_profile

ROOT = Path(__file__).resolve().parents[2]
TURN1 = ("```repl\nlate = sorted(k for k, v in context.items() if 'missed' in v)\nprint(late)\n```",
         "FINAL(suppliers.txt)")
TURN2 = ("```repl\nFINAL('turn 2 sees ' + ','.join(late))\n```",)
NO_LATE = ("```repl\nFINAL('has late' if 'late' in globals() else 'no late')\n```",)


def _use_fake(window: MainWindow, settings: Settings, srv: FakeOpenAI) -> None:
    prices = {"fake-root": ModelPrice(1.0, 2.0), "fake-sub": ModelPrice(0.5, 1.0)}
    settings.save_profile(replace(fake_profile(srv), prices=prices))
    settings.set_last_root_choice("fake", "fake-root")
    settings.set_last_sub_choice("fake", "fake-sub")
    window.reload_settings()


def _load_docs(qtbot, window: MainWindow, folder: Path) -> None:  # noqa: ANN001
    drop_paths(window.trace_pane.view.viewport(), [folder])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 4 and not window.documents.loading,
                    timeout=10_000)


def _ask(qtbot, window: MainWindow, question: str):  # noqa: ANN001, ANN202 - returns the RunOutcome
    window.query.set_query(question)
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        qtbot.keyClick(window.query.question, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    outcome = finished.args[0]
    assert outcome.error is None and outcome.result.status == "ok", (outcome.error, outcome.result)
    return outcome


def _two_turns(qtbot, window: MainWindow, srv: FakeOpenAI) -> tuple:  # noqa: ANN001
    srv.handler = route([*TURN1, *TURN2], sub=lambda r: "unused")
    first = _ask(qtbot, window, "Which supplier missed a delivery?")
    assert first.turn_number == 1 and first.session.startswith("app-")
    # The box now asks for a follow-up in the same session.
    assert window.query.query() == "" and window.query.follow_up
    assert "Ask a follow-up" in window.query.question.placeholderText()
    second = _ask(qtbot, window, "Which of them did we note?")
    return first, second


def test_a_follow_up_uses_turn_1s_variable_and_new_session_starts_clean(  # noqa: ANN001
        qtbot, window, settings, fake_openai, docs_folder) -> None:
    _use_fake(window, settings, fake_openai)
    _load_docs(qtbot, window, docs_folder)
    first, second = _two_turns(qtbot, window, fake_openai)
    assert second.turn_number == 2 and second.session == first.session
    assert second.trace_path == first.trace_path                      # one session, one trace
    assert window.answer.source() == "turn 2 sees suppliers.txt"     # the latest turn's answer

    # The trace view shows the session: one root node per turn.
    m = window.model
    assert m.rowCount() == 2
    assert [r.attributes.get(Attr.TURN) for r in m.trace.roots] == [1, 2]

    # The status bar: turn totals and session totals, both core.totals of the trace on disk.
    trace = read_trace(second.trace_path)
    turn_t, session_t = totals(trace.roots[-1]), totals(trace)
    assert session_t.cost_usd > turn_t.cost_usd > 0
    expected = SessionFigures(2, turn_t, session_t, 2).text()
    assert window.status.session.text() == expected
    assert expected.startswith("turn 2: $") and "· session: $" in expected and expected.endswith("(2 turns)")
    assert f"tokens in {turn_t.input_tokens:,} " in window.status.tokens.text()

    # New session (Ctrl+N): a clean slate; the next question cannot see `late`.
    fake_openai.handler = route([*NO_LATE])
    qtbot.keyClick(window.query.question, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert m.rowCount() == 0 and not window.query.follow_up
    assert window.status.session.text() == ""
    third = _ask(qtbot, window, "Is there a list of late suppliers?")
    assert window.answer.source() == "no late"
    assert third.turn_number == 1 and third.session != first.session
    assert third.trace_path != first.trace_path


def test_new_session_asks_before_discarding_a_running_turn(qtbot, window, settings, fake_openai,  # noqa: ANN001
                                                           docs_folder) -> None:
    from tests.fakeserver import Reply

    _use_fake(window, settings, fake_openai)
    _load_docs(qtbot, window, docs_folder)
    fake_openai.handler = lambda r: Reply.hanging()
    window.query.set_query("Who was late?")
    run = window.start_run()
    assert fake_openai.wait_until(lambda s: s.open_now >= 1, timeout=20)
    asked: list[str] = []
    window.confirm_discard = lambda text: asked.append(text) or False
    assert not window.new_session() and window.bridge.is_running(run)   # declined: nothing changes
    window.confirm_discard = lambda text: asked.append(text) or True
    assert window.new_session()
    assert len(asked) == 2 and "still running" in asked[0]
    qtbot.waitUntil(lambda: not window.bridge.is_running(run), timeout=20_000)
    assert fake_openai.wait_until(lambda s: s.open_now == 0, timeout=10)
    assert window.model.rowCount() == 0 and window.query.run_button.isEnabled()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-cli", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "rlm_desktop", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_history_lists_sessions_with_turns_and_cli_runs_and_continue_rebuilds_without_a_request(  # noqa: ANN001
        qtbot, window, settings, fake_openai, docs_folder) -> None:
    srv = fake_openai
    srv.handler = route(["FINAL(from the CLI)"])
    r = _cli("run", "--session", "from-cli", "--docs", str(docs_folder), "--query", "Asked in a terminal?",
             "--json", "--base-url", srv.base_url, "--model", "fake-root", "--allow-weak-sandbox")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["session"] == "from-cli"

    _use_fake(window, settings, srv)
    _load_docs(qtbot, window, docs_folder)
    first, _second = _two_turns(qtbot, window, srv)
    pane = window.history
    pane.reload()
    groups = {g.session: g for g in pane.groups()}
    app, cli = groups[first.session], groups["from-cli"]
    assert [(e.turn, e.source, e.status) for e in app.turns] == [(1, "app", "ok"), (2, "app", "ok")]
    assert [(e.turn, e.source) for e in cli.turns] == [(1, "cli")]
    # Rows: the session row, then its turns indented under it; the CLI session is marked.
    row = pane.row_of(app)
    texts = [pane.table.item(row + i, 0).text() for i in range(3)]
    assert texts[0] == f"{first.session} · 2 turns"
    assert texts[1] == "    1. Which supplier missed a delivery?" and texts[2].startswith("    2. ")
    assert pane.table.item(pane.row_of(cli), 0).text() == "from-cli [CLI] · 1 turn"
    assert isinstance(pane.rows[row], HistoryGroup)

    # Continue the app session from History after a New session: the REPL is rebuilt from the
    # recording (no model request) and the follow-up sees turn 1's `late`.
    window.new_session()
    window.left_tabs.setCurrentWidget(pane)
    pane.table.selectRow(pane.row_of(app) + 1)                      # a turn row continues its session
    assert pane.continue_btn.isEnabled()
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        qtbot.mouseClick(pane.continue_btn, Qt.MouseButton.LeftButton)
    assert window.model.rowCount() == 2 and window.query.follow_up
    assert not window.documents.loading        # its documents are the ones loaded: nothing reloaded
    assert first.session in window.query.session_label.text()
    before = len(srv.chat_requests)
    srv.handler = route(["```repl\nFINAL('continued: ' + ','.join(late))\n```"], sub=lambda r: "unused")
    third = _ask(qtbot, window, "And now?")
    assert window.answer.source() == "continued: suppliers.txt"
    assert third.session == first.session and third.turn_number == 3
    assert third.trace_path == SessionStore().trace_path(first.session)
    new = srv.chat_requests[before:]
    assert len(new) == 1 and is_root(new[0])        # only the new turn's request; the rebuild made none
    rebuild = third.turn.rebuild
    assert rebuild is not None and rebuild.cells >= 1 and not rebuild.problems
    assert window.model.rowCount() == 3
    trace = read_trace(third.trace_path)
    assert window.status.session.text() == SessionFigures(3, totals(trace.roots[-1]), totals(trace), 3).text()


def test_an_unnamed_cli_run_is_continued_from_history_in_its_own_trace(  # noqa: ANN001
        qtbot, window, settings, fake_openai, docs_folder) -> None:
    srv = fake_openai
    srv.handler = route(["```repl\nkeys = sorted(context)\nprint(keys)\n```", "FINAL(listed)"])
    r = _cli("run", "--docs", str(docs_folder), "--query", "Which files are there?", "--json",
             "--base-url", srv.base_url, "--model", "fake-root", "--allow-weak-sandbox")
    assert r.returncode == 0, r.stderr
    cli_trace = json.loads(r.stdout)["trace"]
    _use_fake(window, settings, srv)
    _load_docs(qtbot, window, docs_folder)
    pane = window.history
    pane.reload()
    assert len(pane.rows) == 1 and pane.table.item(0, 0).text() == "[CLI] Which files are there?"
    pane.table.selectRow(0)
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        pane.continue_selected()
    before = len(srv.chat_requests)
    srv.handler = route(["```repl\nFINAL(str(len(keys)))\n```"])
    turn = _ask(qtbot, window, "How many?")
    assert window.answer.source() == "3" and turn.turn_number == 2 and str(turn.trace_path) == cli_trace
    assert len(srv.chat_requests) - before == 1                       # the rebuild asked nothing
    assert [r.attributes.get(Attr.TURN) for r in read_trace(cli_trace).roots] == [1, 2]
    pane.reload()
    group = pane.groups()[0]                                          # now a session of two turns
    assert [e.turn or 1 for e in group.turns] == [1, 2] and group.session is None


def test_documents_added_mid_session_reach_the_next_turn_and_the_model_is_told(  # noqa: ANN001
        qtbot, window, settings, fake_openai, docs_folder, tmp_path) -> None:
    srv = fake_openai
    _use_fake(window, settings, srv)
    _load_docs(qtbot, window, docs_folder)
    srv.handler = route([*TURN1], sub=lambda r: "unused")
    first = _ask(qtbot, window, "Which supplier missed a delivery?")
    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "memo.txt").write_text("Gamma also missed a delivery.\n")
    window.open_paths([extra / "memo.txt"])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 5 and not window.documents.loading,
                    timeout=10_000)
    before = len(srv.chat_requests)
    srv.handler = route(["```repl\nFINAL(','.join(late) + ' + ' + str('memo.txt' in context))\n```"])
    second = _ask(qtbot, window, "Any other late supplier?")
    assert second.session == first.session and second.turn_number == 2
    # `late` is back (the REPL is rebuilt by replaying turn 1's cells over the new `context`, so it
    # now counts the added memo too) and `context` holds the added document.
    assert window.answer.source() == "memo.txt,suppliers.txt + True"
    asked = srv.chat_requests[before:]
    assert len(asked) == 1                                              # the rebuild asked nothing
    told = json.dumps(asked[0].messages)
    assert "documents were added" in told and "memo.txt" in told


def test_continue_says_what_the_rebuild_could_not_bring_back(  # noqa: ANN001
        qtbot, window, settings, fake_openai, docs_folder) -> None:
    srv = fake_openai
    _use_fake(window, settings, srv)
    _load_docs(qtbot, window, docs_folder)
    srv.handler = route(["```repl\nkept = 1\n```", "```repl\nbroken = 1 / 0\n```", "FINAL(done)"])
    first = _ask(qtbot, window, "Compute something")
    window.new_session()
    pane = window.history
    pane.reload()
    pane.table.selectRow(pane.row_of({g.session: g for g in pane.groups()}[first.session]))
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        pane.continue_selected()
    before = len(srv.chat_requests)
    srv.handler = route(["```repl\nFINAL(str(kept))\n```"])
    second = _ask(qtbot, window, "Still there?")
    assert window.answer.source() == "1" and len(srv.chat_requests) - before == 1
    problems = second.turn.rebuild.problems
    assert problems, "the failed cell should be reported"
    notice = window.last_notice.text()
    assert "not all of its state came back" in notice and problems[0].text() in notice


def test_the_offline_demo_answers_a_follow_up_too(qtbot, window, docs_folder) -> None:  # noqa: ANN001
    _load_docs(qtbot, window, docs_folder)          # no provider: the offline demo
    first = _ask(qtbot, window, "Which supplier missed the delivery date?")
    assert "Acme" in window.answer.source()
    second = _ask(qtbot, window, "Did Acme promise a refund?")
    assert second.turn_number == 2 and second.session == first.session
    assert second.result.stop_reason == "final" and "refund" in window.answer.source().lower()
    assert window.model.rowCount() == 2


def test_a_follow_up_with_another_model_of_the_same_provider_keeps_the_session(  # noqa: ANN001
        qtbot, window, settings, fake_openai, docs_folder) -> None:
    _use_fake(window, settings, fake_openai)
    _load_docs(qtbot, window, docs_folder)
    fake_openai.handler = route([*TURN1, *TURN2], sub=lambda r: "unused")
    first = _ask(qtbot, window, "Which supplier missed a delivery?")
    before = len(fake_openai.chat_requests)
    window.query.root_picker.model.setEditText("fake-root-large")      # a stronger model, same provider
    window.query.set_query("Which of them did we note?")
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        assert window.start_run() is not None
        said = window.status.currentMessage()                         # said when the turn starts
    second = finished.args[0]
    assert second.error is None and second.result.status == "ok", (second.error, second.result)
    assert "This turn uses fake-root-large / fake-sub (the session had fake-root / fake-sub)" in said
    assert second.session == first.session and second.turn_number == 2   # the same session went on
    assert second.result.answer.startswith("turn 2 sees ")              # turn 1's `late` is still there
    models = {r.body["model"] for r in fake_openai.chat_requests[before:] if is_root(r)}
    assert models == {"fake-root-large"}
