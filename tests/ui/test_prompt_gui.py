"""The session note and the custom system prompt in the app (issue 10), against the scripted
server: the Note button's text reaches the system prompt and is kept by the session; a custom prompt
from Settings lacking the REPL contract is asked about before the run (Run anyway / Cancel); and the
detail pane's messages of the first model call are, byte for byte, what the server received."""

from __future__ import annotations

from PySide6.QtWidgets import QDialogButtonBox

from rlm_desktop.core.trace import Attr, SpanKind
from rlm_desktop.engine import prompts
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.ui.settings_dialog import SettingsDialog
from tests.engine.conftest import is_root, route
from tests.fakeserver import FakeOpenAI
from tests.ui.conftest import answer_next_question, fake_profile
from tests.ui.test_laptop_screen import LAPTOP, _laptop_window
from tests.ui.test_sessions_gui import _ask, _load_docs, _use_fake

NOTE = "supplier files from 2024; the amount is in column 2"


def _shown_system_prompt(window: MainWindow) -> str:
    """Select the first root model call in the tree's trace and read the detail pane's messages."""
    trace = window.model.trace
    call = next(s for s in trace.spans.values() if s.kind == SpanKind.LLM_CALL
                and s.attributes.get(Attr.DEPTH, 0) == 0)
    window.detail.show_span(call, trace)
    shown = window.detail.messages._messages
    assert shown[0]["role"] == "system"
    return str(shown[0]["content"])


def test_the_note_reaches_the_system_prompt_and_the_session_keeps_it(  # noqa: ANN001
        qtbot, window, settings, fake_openai: FakeOpenAI, docs_folder) -> None:
    _use_fake(window, settings, fake_openai)
    _load_docs(qtbot, window, docs_folder)
    pane = window.query
    dlg = pane.edit_note()
    assert not dlg.editor.isReadOnly()
    dlg.editor.setPlainText("x" * (prompts.MAX_NOTE_CHARS + 1))
    ok = dlg.buttons.button(QDialogButtonBox.StandardButton.Ok)
    assert not ok.isEnabled() and "too long" in dlg.count.text()
    dlg.accept()                                      # refused: it stays open, saying why
    assert dlg.isVisible() and "keep it to 1,000 or fewer" in dlg.count.text()
    dlg.editor.setPlainText(NOTE)
    ok.click()
    assert pane.note() == NOTE and "✓" in pane.note_button.text()

    fake_openai.handler = route(["FINAL(one)", "FINAL(two)"])
    _ask(qtbot, window, "Who is late?")
    locked = pane.edit_note()                         # the session has begun: read-only
    assert locked.editor.isReadOnly() and locked.editor.toPlainText() == NOTE
    locked.reject()
    pane.set_query("And then?")
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        assert window.start_run() is not None
    assert finished.args[0].result.status == "ok" and finished.args[0].turn_number == 2
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert len(sent) == 2 and sent[0] == sent[1]
    assert sent[0].endswith(f"{prompts.NOTE_HEADING}\n<<<\n{NOTE}\n>>>")
    assert _shown_system_prompt(window) == sent[0]    # the detail pane shows what was sent

    window.new_session()                              # a new session may take another note
    assert not pane.edit_note().editor.isReadOnly()


def test_a_custom_prompt_lacking_the_contract_is_asked_about_before_the_run(  # noqa: ANN001
        qtbot, window, settings, fake_openai: FakeOpenAI, docs_folder) -> None:
    _use_fake(window, settings, fake_openai)
    _load_docs(qtbot, window, docs_folder)
    settings.set_custom_system_prompt("You are terse. Look at the context.")
    fake_openai.handler = route(["FINAL(one)"])
    window.query.set_query("Who is late?")
    asked = answer_next_question(window, "Cancel")
    assert window.start_run() is None                 # not started
    assert asked and "does not mention `llm_query` (sub-model calls)" in asked[0]
    assert "FINAL / FINAL_VAR" in asked[0] and "Run anyway" in asked
    assert not fake_openai.chat_requests

    asked = answer_next_question(window, "Run anyway")
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        assert window.start_run() is not None
    assert asked and finished.args[0].result.status == "ok", finished.args[0].result
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert sent[0].startswith("You are terse. Look at the context.\n\n`context` is a dict")
    assert _shown_system_prompt(window) == sent[0]


def test_a_custom_prompt_with_the_contract_runs_without_asking(  # noqa: ANN001
        qtbot, window, settings, fake_openai: FakeOpenAI, docs_folder) -> None:
    _use_fake(window, settings, fake_openai)
    _load_docs(qtbot, window, docs_folder)
    settings.set_custom_system_prompt("Use context, llm_query, ```repl blocks and FINAL.\n"
                                      "{context_description}\nEnd.")
    fake_openai.handler = route(["FINAL(one)"])
    window.query.set_query("Who is late?")
    with qtbot.waitSignal(window.run_finished, timeout=60_000):
        assert window.start_run() is not None and window.question_box is None
    sent = [q.system for q in fake_openai.chat_requests if is_root(q)]
    assert sent[0].startswith("Use context,") and sent[0].endswith("End.")
    assert "- suppliers.txt:" in sent[0]


def test_settings_prompt_tab_warns_and_saves(qtbot, settings, fake_openai: FakeOpenAI) -> None:  # noqa: ANN001
    settings.save_profile(fake_profile(fake_openai))
    dlg = SettingsDialog(settings)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.prompt_edit.setPlainText("Be brief about the context.")
    assert not dlg.prompt_warning.isHidden()
    assert "`llm_query` (sub-model calls)" in dlg.prompt_warning.text()
    dlg.prompt_edit.setPlainText("Use context, llm_query, ```python, FINAL_VAR. {context_description}")
    assert dlg.prompt_warning.isHidden()
    assert dlg.apply()
    assert settings.custom_system_prompt() == "Use context, llm_query, ```python, FINAL_VAR. {context_description}"
    dlg.prompt_edit.setPlainText("  ")
    assert dlg.apply() and settings.custom_system_prompt() == ""


def test_the_note_button_is_on_screen_at_1280x720(qtbot, settings) -> None:  # noqa: ANN001
    w = _laptop_window(qtbot, settings)
    try:
        b = w.query.note_button
        assert b.isVisible() and b.mapTo(w, b.rect().bottomRight()).y() < w.height()
        assert b.mapTo(w, b.rect().bottomRight()).x() < w.width()
        assert w.size().width() <= LAPTOP.width()
    finally:
        w.bridge.shutdown()
