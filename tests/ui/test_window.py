"""The real window against the scripted OpenAI-compatible server: drop a folder, run a multi-iteration
query with a batch and a nested run, inspect nodes, stop mid-batch, reopen traces."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from pygments.token import Token
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor

from rlm_desktop.core.trace import Attr, Span, SpanKind, SpanStatus, Trace, TraceWriter
from rlm_desktop.ui.documents_pane import COL_STATUS as COL_STATUS_DOC
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.ui.settings import Settings
from rlm_desktop.ui.trace_model import COL_STATUS, StatusRole
from tests.fakeserver import FakeOpenAI, Reply, Request
from tests.proctree import pidfds, sandbox_processes, still_alive_after
from tests.ui.conftest import answer_next_question, drop_paths, fake_profile

QUERY = "Which supplier missed a delivery?"


def _is_root(r: Request) -> bool:
    return bool(r.system)


def _script(r: Request) -> str:
    if not _is_root(r):
        return "sub says: " + r.last_user[:40]
    step = sum(1 for m in r.messages if m.get("role") == "assistant")
    if "nested run at depth 1" in r.system:
        return "```repl\nFINAL('nested saw ' + context)\n```"
    if step == 0:
        return ("Let me look at every document.\n```repl\n"
                "def shout(text):\n    return text.upper()\n"
                "parts = llm_query_batched([f'summarise {k}' for k in sorted(context)])\n"
                "print(len(parts), parts[0])\n```")
    if step == 1:
        return "```repl\nresult = shout(rlm_query('dig deeper', context='inner text'))\nprint(result)\n```"
    return "FINAL_VAR(result)"


def _use_fake(window: MainWindow, settings: Settings, srv: FakeOpenAI, *, max_depth: int = 1) -> None:
    settings.save_profile(fake_profile(srv))
    settings.set_last_root_choice("fake", "fake-root")
    settings.set_last_sub_choice("fake", "fake-sub")
    window.reload_settings()
    window.query.max_depth.setValue(max_depth)


def _load_docs(qtbot, window: MainWindow, folder: Path) -> None:  # noqa: ANN001
    drop_paths(window.trace_pane.view.viewport(), [folder])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 4 and not window.documents.loading,
                    timeout=10_000)


def _spans(window: MainWindow, kind: SpanKind) -> list[Span]:
    return [s for s in window.model.trace if s.kind == kind]


def test_drop_folder_run_batched_and_nested_then_inspect(qtbot, window, settings, fake_openai,  # noqa: ANN001
                                                         docs_folder) -> None:
    srv = fake_openai
    srv.handler = _script
    _use_fake(window, settings, srv)
    _load_docs(qtbot, window, docs_folder)
    docs = {d.rel_path: d for d in window.documents.documents}
    assert docs["suppliers.txt"].ok and docs["image.bin"].error   # per-file error on its row
    row = window.documents.documents.index(docs["image.bin"])
    assert window.documents.model.data(window.documents.model.index(row, COL_STATUS_DOC)).startswith("error:")
    assert "3 documents" in window.documents.totals.text()
    assert "estimated" in window.documents.totals.text()

    window.query.set_query(QUERY)
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        qtbot.keyClick(window.query.question, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
        assert window.current_run is not None   # Ctrl+Enter started the run
        qtbot.waitUntil(lambda: len(window.model.trace) > 3, timeout=20_000)   # the tree grows live
    outcome = finished.args[0]
    assert outcome.result.status == "ok", outcome.result.reason
    assert window.answer.text.toPlainText() == "NESTED SAW INNER TEXT"
    assert window.answer.heading.text() == "Answer"
    assert window.query.run_button.text().startswith("&Run")

    trace = window.model.trace
    runs = _spans(window, SpanKind.RUN)
    assert [r.attributes.get(Attr.DEPTH) for r in runs] == [0, 1]
    assert runs[1].parent is not None and runs[1].parent.kind == SpanKind.SUB_CALL
    subs = [s for s in _spans(window, SpanKind.SUB_CALL) if s.name != "rlm_query"]
    assert len(subs) == 3 and all(s.parent.kind == SpanKind.CODE_CELL for s in subs)
    assert all(s.status == SpanStatus.OK for s in trace)
    # every span is reachable through the model (the view shows what the trace holds)
    model = window.model
    seen = 0
    stack = [model.index(0, 0)]
    while stack:
        idx = stack.pop()
        seen += 1
        stack.extend(model.index(r, 0, idx) for r in range(model.rowCount(idx)))
    assert seen == len(trace)
    # live figures in the status bar
    assert "sub-calls 4" in window.status.subcalls.text()
    assert window.status.badge.text().startswith("sandbox: ")

    # select the first code cell: its code is shown, highlighted by pygments
    cell = _spans(window, SpanKind.CODE_CELL)[0]
    window.trace_pane.select_span(cell)
    assert window.trace_pane.follow is False
    code = window.detail.code
    assert window.detail.tabs.currentWidget() is code
    assert "llm_query_batched" in code.edit.toPlainText()
    hl = code.highlighter
    assert hl is not None
    keyword = hl.format_for(Token.Keyword)
    assert keyword is not None

    def has_keyword_format() -> bool:
        block = code.edit.document().firstBlock()   # "def shout(text):"
        return any(r.start == 0 and r.length == 3 and r.format.foreground().color() ==
                   keyword.foreground().color() for r in block.layout().formats())
    qtbot.waitUntil(has_keyword_format, timeout=3000)
    assert keyword.foreground().color() != QColor(Qt.GlobalColor.black) or hl.style_name == "default"

    # a model call shows its role-labelled messages, tokens and cost
    call = [c for c in _spans(window, SpanKind.LLM_CALL)
            if c.parent.kind == SpanKind.ITERATION and c.attributes.get(Attr.DEPTH) == 0][1]
    window.trace_pane.select_span(call)
    text = window.detail.messages.edit.toPlainText()
    assert text.startswith("SYSTEM") and "USER" in text and "ASSISTANT" in text
    assert "input" in window.detail.fact_labels["Tokens"].text()
    assert window.detail.fact_labels["Cost"].text() == "unknown"

    # the history lists the run; reopening it shows the same tree, read from the file
    assert window.history.entries[0].query == QUERY
    assert window.history.entries[0].status == "ok"
    n = len(trace)
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        window.history.open_row(0)
    assert window.model.trace is not trace and len(window.model.trace) == n
    assert not window.model.live
    assert window.model.data(window.model.index(0, COL_STATUS)) == "ok"
    assert window.answer.text.toPlainText() == "NESTED SAW INNER TEXT"
    # the meter shows the budget the run was given (recorded in the trace), not "no budget"
    assert " of $" in window.status.meter.format()

    target = window.shown_trace_path.with_suffix(".html")
    with qtbot.waitSignal(window.export_finished, timeout=30_000) as exported:
        job = window.export_trace(target)
        assert job is not None and not job.done      # rendered on a worker thread
    assert exported.args[0] == target and "<html" in target.read_text().lower()


def test_stop_mid_batch_cancels_nodes_and_closes_requests(qtbot, window, settings, fake_openai,  # noqa: ANN001
                                                         docs_folder) -> None:
    srv = fake_openai

    def handler(r: Request) -> object:
        if _is_root(r):
            return "```repl\nprint(llm_query_batched(['a', 'b', 'c', 'd']))\n```"
        return Reply.hanging()
    srv.handler = handler
    _use_fake(window, settings, srv)
    _load_docs(qtbot, window, docs_folder)
    window.query.set_query(QUERY)
    window.start_run()
    assert window.query.run_button.text().startswith("&Stop")   # Run became Stop
    assert srv.wait_until(lambda s: s.open_now >= 4, timeout=20)
    qtbot.waitUntil(lambda: len(_spans(window, SpanKind.SUB_CALL)) == 4, timeout=5000)
    # Exporting while it runs: from the file on disk, everything recorded so far, steps open.
    live_md = window.shown_trace_path.with_name("live.md")
    with qtbot.waitSignal(window.export_finished, timeout=30_000):
        window.export_trace(live_md, "markdown")
    exported = live_md.read_text(encoding="utf-8")
    assert QUERY in exported and "llm_query_batched" in exported and "never ended" in exported
    # Its "running" row in the history is this run: opening it shows it, it does not stop it.
    assert window.history.entries[0].status == "running"
    window.history.open_row(0)
    assert window.bridge.is_running(window.current_run) and "still going" in window.status.currentMessage()
    boxes = pidfds(sandbox_processes(os.getpid()))
    assert boxes, "no sandbox process was found while the cell ran"
    with qtbot.waitSignal(window.run_finished, timeout=10_000) as finished:
        qtbot.keyClick(window.trace_pane.view, Qt.Key.Key_Escape)   # Esc stops
    assert finished.args[0].result.status == "cancelled"
    assert still_alive_after(boxes, 10) == set(), "sandbox processes outlived Stop"
    assert srv.wait_until(lambda s: s.open_now == 0, timeout=5), "requests left open after Stop"
    subs = _spans(window, SpanKind.SUB_CALL)
    assert [window.model.index_for_span(s).data(StatusRole) for s in subs] == ["cancelled"] * 4
    assert all(not s.running for s in window.model.trace)
    assert "you stopped the run" in window.answer.reason.text()
    assert window.history.entries[0].status == "cancelled"
    assert window.act_run.isEnabled() and not window.act_stop.isEnabled()


def test_stop_kills_a_spinning_cell_at_once_even_while_the_engine_is_busy(qtbot, window, settings,  # noqa: ANN001
                                                                          fake_openai, docs_folder) -> None:
    """Stop kills the REPL from the GUI thread, at once: not when the engine loop (held busy here)
    next gets to it."""
    srv = fake_openai
    srv.handler = lambda r: ("```repl\nprint('spinning', flush=True)\nwhile True: pass\n```"
                             if _is_root(r) else "unused")
    _use_fake(window, settings, srv)
    window.query.cell_timeout.setValue(300)            # only Stop ends this cell
    _load_docs(qtbot, window, docs_folder)
    window.query.set_query(QUERY)
    window.start_run()
    qtbot.waitUntil(lambda: any("spinning" in str(s.attributes.get(Attr.STDOUT, ""))
                                for s in _spans(window, SpanKind.CODE_CELL)), timeout=30_000)
    boxes = pidfds(sandbox_processes(os.getpid()))
    assert boxes, "no sandbox process was found while the cell ran"
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        release.wait(60)
    window.bridge.engine.call_soon(hold)
    try:
        assert busy.wait(10)
        window.stop_run()
        left = still_alive_after(boxes, 10)
    finally:
        release.set()
    assert left == set(), f"sandbox processes {sorted(left)} outlived Stop while the engine was busy"
    qtbot.waitUntil(lambda: not window.bridge.is_running(window.current_run), timeout=20_000)
    assert sandbox_processes(os.getpid()) == set()


def test_events_of_an_old_run_are_ignored(qtbot, window, settings, fake_openai, docs_folder) -> None:  # noqa: ANN001
    srv = fake_openai
    srv.handler = lambda r: ("```repl\nprint(llm_query('x'))\n```" if _is_root(r) else Reply.hanging())
    _use_fake(window, settings, srv)
    _load_docs(qtbot, window, docs_folder)
    window.query.set_query(QUERY)
    old = window.start_run()
    assert srv.wait_until(lambda s: s.open_now >= 1, timeout=20)
    # open a saved trace while the run is going: the run is stopped, its late events ignored
    saved = window.shown_trace_path.parent / "other.jsonl"
    t = Trace()
    w = TraceWriter(saved, {"query": "older"}).attach(t)
    rid = t.start_span(SpanKind.RUN, "run")
    t.end_span(rid, SpanStatus.OK, {Attr.ANSWER: "old answer"})
    w.close()
    asked = answer_next_question(window, "Stop the run and open")
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        assert window.open_trace_file(saved)
    assert asked and "other.jsonl" in asked[0]        # it asked before stopping anything
    qtbot.waitUntil(lambda: not window.bridge.is_running(old), timeout=10_000)
    qtbot.wait(200)   # let any late queued events arrive
    assert len(window.model.trace) == 1 and window.model.trace.header["query"] == "older"
    assert window.answer.text.toPlainText() == "old answer"
    assert window.status.currentMessage().startswith("Stopped the run in progress (its trace is saved")


def test_opening_a_trace_during_a_run_asks_and_cancel_keeps_the_run(qtbot, window, settings,  # noqa: ANN001
                                                                    fake_openai, docs_folder) -> None:
    srv = fake_openai
    srv.handler = lambda r: ("```repl\nprint(llm_query('x'))\n```" if _is_root(r) else Reply.hanging())
    _use_fake(window, settings, srv)
    _load_docs(qtbot, window, docs_folder)
    window.query.set_query(QUERY)
    run = window.start_run()
    assert srv.wait_until(lambda s: s.open_now >= 1, timeout=20)
    saved = window.shown_trace_path.parent / "other.jsonl"
    t = Trace()
    w = TraceWriter(saved, {"query": "older"}).attach(t)
    t.end_span(t.start_span(SpanKind.RUN, "run"), SpanStatus.OK, {Attr.ANSWER: "old answer"})
    w.close()
    shown = window.model.trace
    asked = answer_next_question(window, "Cancel")
    assert window.open_trace_file(saved) is False
    assert asked[1:] == ["Stop the run and open", "Cancel"]
    assert window.bridge.is_running(run) and window.current_run == run      # the run goes on
    assert window.model.trace is shown and window.model.live
    assert "the run goes on" in window.status.currentMessage()
    # it also goes on through a drop of the trace file (same question)
    asked = answer_next_question(window, "Cancel")
    drop_paths(window.trace_pane.view.viewport(), [saved])
    qtbot.waitUntil(lambda: bool(asked), timeout=5000)
    assert "the run goes on" in window.status.currentMessage()
    assert window.bridge.is_running(run) and window.model.trace is shown
    assert srv.open_now >= 1                                   # its sub-call is still in flight
    with qtbot.waitSignal(window.run_finished, timeout=10_000):
        window.stop_run()


def test_drop_truncated_trace_opens_with_incomplete_nodes(qtbot, window, tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "crashed.jsonl"
    t = Trace()
    w = TraceWriter(path, {"query": "what happened?"}).attach(t)
    run = t.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "what happened?"})
    it = t.start_span(SpanKind.ITERATION, "iteration 1", run)
    call = t.start_span(SpanKind.LLM_CALL, "chat m", it)
    t.end_span(call, SpanStatus.OK, {Attr.INPUT_TOKENS: 1234, Attr.OUTPUT_TOKENS: 56, Attr.COST_USD: 0.01})
    t.start_span(SpanKind.CODE_CELL, "cell", it, {Attr.CODE: "while True:\n    pass"})
    w.close()
    path.write_text(path.read_text() + '{"event": "span_upd')
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        drop_paths(window.answer.text.viewport(), [path])
    m = window.model
    it_idx = m.index(0, 0, m.index(0, 0))
    assert [m.index(r, COL_STATUS, it_idx).data() for r in range(m.rowCount(it_idx))] == ["ok", "incomplete"]
    assert "cut short" in window.status.currentMessage()
    assert "cut short" in window.answer.reason.text()
    # The run never recorded totals: the status bar sums what its model calls recorded.
    assert "tokens in 1,234" in window.status.tokens.text() and "out 56" in window.status.tokens.text()
    window.trace_pane.errors_only.setChecked(True)
    view_model = window.trace_pane.visible_model()
    assert view_model is window.trace_pane.proxy
    assert view_model.rowCount() == 1
    window.trace_pane.errors_only.setChecked(False)
    assert window.trace_pane.visible_model() is window.model
    # Typing in the filter box applies once the keys pause (one search per pause, not per key).
    pane = window.trace_pane
    qtbot.keyClicks(pane.filter_edit, "no such words")
    assert pane.visible_model() is window.model                 # not yet: still typing
    qtbot.waitUntil(lambda: pane.visible_model() is pane.proxy, timeout=5000)
    assert pane.proxy.rowCount() == 0
    pane.filter_edit.clear()
    qtbot.waitUntil(lambda: pane.visible_model() is window.model, timeout=5000)


def test_bad_trace_file_reports_error(qtbot, window, tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "notes.jsonl"
    bad.write_text('{"hello": 1}\n')
    with qtbot.waitSignal(window.trace_open_failed, timeout=10_000) as sig:
        window.open_trace_file(bad)
    assert "not an RLM Desktop trace" in sig.args[0]


def test_cli_paths_open_documents_and_trace(qtbot, window, docs_folder, tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "t.jsonl"
    t = Trace()
    w = TraceWriter(path, {"query": "q"}).attach(t)
    t.end_span(t.start_span(SpanKind.RUN, "run"), SpanStatus.OK)
    w.close()
    with qtbot.waitSignal(window.trace_opened, timeout=10_000):
        window.open_paths([docs_folder / "suppliers.txt", path, tmp_path / "missing.txt"])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 1, timeout=10_000)
    assert window.shown_trace_path == path


def test_demo_run_streams_under_qtmodeltester(qtbot, qtmodeltester, window, docs_folder) -> None:  # noqa: ANN001
    _load_docs(qtbot, window, docs_folder)
    assert window.query.hint.isVisible() is False or "demo" in window.query.hint.text()
    assert window.query.root_picker.provider.currentText().startswith("Offline demo")
    qtmodeltester.check(window.model, force_py=True)
    window.query.set_query("Which supplier missed the delivery date?")
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        window.act_run.trigger()
    assert finished.args[0].result.status == "ok"
    assert "Acme" in window.answer.text.toPlainText()
    assert window.model.rowCount() == 1
    # The demo reports no usage: its token counts are estimates and the status bar says so.
    assert finished.args[0].result.tokens_estimated
    assert window.status.tokens.text().startswith("tokens in ~")
    entry = window.history.store.entries()[0]
    assert entry.provider == "Offline demo (no model): demo-root / demo-sub"   # the session layer writes it
    assert entry.cost_estimated and entry.cost_usd == 0


def test_window_state_restored(qtbot, settings) -> None:  # noqa: ANN001
    w1 = MainWindow(settings)
    qtbot.addWidget(w1)
    w1.resize(780, 700)   # within the offscreen screen, so the geometry is kept as is
    w1.show()
    w1.main_split.setSizes([200, 300, 280])
    w1.trace_pane.view.header().resizeSection(1, 131)    # (the step column takes what is left)
    sizes = w1.main_split.sizes()
    w1.close()
    w2 = MainWindow(settings)
    qtbot.addWidget(w2)
    w2.show()
    assert w2.size() == w1.size()
    assert w2.main_split.sizes() == sizes
    assert w2.trace_pane.view.header().sectionSize(1) == 131
    w2.close()


def test_large_folder_needs_confirmation(qtbot, window, docs_folder) -> None:  # noqa: ANN001
    asked: list[str] = []
    window.documents.confirm_files = 2
    window.documents.confirm = lambda text: asked.append(text) or False
    window.open_paths([docs_folder])
    qtbot.waitUntil(lambda: bool(asked) and not window.documents.loading, timeout=10_000)
    assert "4 files" in asked[0] and window.documents.documents == []
    window.documents.confirm = lambda text: True
    window.open_paths([docs_folder])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 4, timeout=10_000)
    window.documents.select_row(0)
    assert window.documents.preview.toPlainText()
    window.documents.remove_selected()
    assert len(window.documents.documents) == 3
    window.documents.clear()
    assert window.documents.documents == []


def test_closing_during_a_run_stops_it_and_records_it(qtbot, settings, fake_openai, docs_folder) -> None:  # noqa: ANN001
    srv = fake_openai
    srv.handler = lambda r: ("```repl\nprint(llm_query('x'))\n```" if _is_root(r) else Reply.hanging())
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    _use_fake(w, settings, srv)
    _load_docs(qtbot, w, docs_folder)
    w.query.set_query(QUERY)
    w.start_run()
    assert srv.wait_until(lambda s: s.open_now >= 1, timeout=20)
    path = w.shown_trace_path
    boxes = pidfds(sandbox_processes(os.getpid()))
    assert boxes, "no sandbox process was found while the cell ran"
    w.close()
    assert still_alive_after(boxes, 10) == set(), "sandbox processes outlived the window"
    assert srv.wait_until(lambda s: s.open_now == 0, timeout=5)
    assert w.history.entries and w.history.entries[0].status == "cancelled"
    lines = path.read_text().splitlines()
    assert '"status":"cancelled"' in lines[-1]   # the trace was closed properly


def test_keys_are_read_off_the_gui_thread_and_a_missing_key_stops_nothing_but_the_start(
        qtbot, window, settings, fake_openai, docs_folder, memory_keyring, monkeypatch) -> None:  # noqa: ANN001
    import threading
    from dataclasses import replace

    from rlm_desktop.session import secrets

    gui = threading.get_ident()
    reads: list[int] = []
    real_get = memory_keyring.get_password
    monkeypatch.setattr(memory_keyring, "get_password",
                        lambda s, u: reads.append(threading.get_ident()) or real_get(s, u))
    settings.save_profile(replace(fake_profile(fake_openai), needs_key=True))
    settings.set_last_root_choice("fake", "fake-root")
    settings.set_last_sub_choice("fake", "fake-sub")
    window.reload_settings()
    _load_docs(qtbot, window, docs_folder)
    window.query.set_query("Who was late?")
    history_before = len(window.history.entries)
    with qtbot.waitSignal(window.run_finished, timeout=30_000) as finished:
        assert window.start_run() is not None
    outcome = finished.args[0]
    assert outcome.not_started and "no key for provider 'fake'" in outcome.error
    assert reads and gui not in reads                       # the keyring was asked off the GUI thread
    assert not outcome.trace_path.exists() and len(window.history.entries) == history_before
    assert not window.query.running and "Settings" in window.last_notice.text()
    assert fake_openai.requests == []

    secrets.set_key("fake", "sk-fake-key-1234567890")      # with a key the same run goes ahead
    fake_openai.handler = lambda req: "FINAL(Acme)"
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        window.start_run()
    assert finished.args[0].result.status == "ok" and gui not in reads
    assert fake_openai.chat_requests[0].authorization == "Bearer sk-fake-key-1234567890"
