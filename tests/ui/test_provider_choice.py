"""Choosing models: a provider added in Settings is offered for the next runs, and a run that would
send a real root model's sub-calls to the offline demo asks first."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from rlm_desktop.core.profiles import DEMO_ID
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.ui.settings import Settings
from tests.fakeserver import FakeOpenAI, Reply, Request
from tests.ui.conftest import answer_next_question, drop_paths, fake_profile


def _add_provider_in_settings(qtbot, window: MainWindow, srv: FakeOpenAI, answer: str) -> list[str]:  # noqa: ANN001
    window.open_settings()
    dlg = window.settings_dialog
    prof = dlg.add_from_preset("custom")
    dlg.id_edit.setText("house")
    dlg.name_edit.setText("House server")
    dlg.base_url_edit.setText(srv.base_url)
    dlg.needs_key_check.setChecked(False)
    dlg.root_model_combo.setEditText("house-large")
    dlg.sub_model_combo.setEditText("house-small")
    assert prof.id != "house"                      # renamed in the form before saving
    asked = answer_next_question(window, answer)
    ok = dlg.button_box.button(QDialogButtonBox.StandardButton.Ok)
    qtbot.mouseClick(ok, Qt.MouseButton.LeftButton)     # returns once the offer is answered
    assert "house" in [p.id for p in Settings().providers()], "the Settings dialog did not save"
    return asked


def test_a_provider_added_in_settings_is_offered_for_root_and_sub(qtbot, window, settings, fake_openai) -> None:  # noqa: ANN001
    assert window.query.root_choice().profile_id == DEMO_ID
    asked = _add_provider_in_settings(qtbot, window, fake_openai, "Use it")
    assert asked and "House server" in asked[0] and "house-large" in asked[0]
    assert asked[1:] == ["Use it", "Not now"]
    root, sub = window.query.root_choice(), window.query.sub_choice()
    assert (root.profile_id, root.model) == ("house", "house-large")
    assert (sub.profile_id, sub.model) == ("house", "house-small")
    assert Settings().last_root_choice() == ("house", "house-large")     # kept for the next start


def test_not_now_keeps_the_models_chosen_before(qtbot, window, settings, fake_openai) -> None:  # noqa: ANN001
    asked = _add_provider_in_settings(qtbot, window, fake_openai, "Not now")
    assert asked                                                   # it was offered…
    assert window.query.root_choice().profile_id == DEMO_ID        # …and declined
    assert window.query.sub_choice().profile_id == DEMO_ID
    assert "house" in [p.id for p in settings.providers()]         # the provider itself is saved


def _mixed(window: MainWindow, settings: Settings, srv: FakeOpenAI, docs: Path, qtbot) -> None:  # noqa: ANN001
    settings.save_profile(fake_profile(srv))
    settings.set_last_root_choice("fake", "fake-root")
    settings.set_last_sub_choice(DEMO_ID, "")
    window.reload_settings()
    drop_paths(window.trace_pane.view.viewport(), [docs])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 4 and not window.documents.loading,
                    timeout=10_000)
    window.query.set_query("Which supplier missed a delivery?")


def _script(r: Request) -> object:
    if r.system:
        return "```repl\nprint(llm_query('who was late?'))\n```" if not any(
            m.get("role") == "assistant" for m in r.messages) else "FINAL(done)"
    return "sub answer from the real model"


def test_a_real_root_with_the_demo_as_sub_model_asks_before_running(qtbot, window, settings,  # noqa: ANN001
                                                                    fake_openai, docs_folder) -> None:
    srv = fake_openai
    srv.handler = _script
    _mixed(window, settings, srv, docs_folder, qtbot)
    asked = answer_next_question(window, "Cancel")
    assert window.start_run() is None
    assert asked and "offline demo" in asked[0] and "fake-root" in asked[0]
    assert asked[1:] == ["Use Scripted server [fake] for sub-calls too", "Run with the demo", "Cancel"]
    assert window.current_run is None and srv.requests == []           # nothing ran, nothing spent

    answer_next_question(window, "Use Scripted server [fake] for sub-calls too")
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        assert window.start_run() is not None
    assert finished.args[0].result.status == "ok", finished.args[0].result.reason
    assert window.query.sub_choice().profile_id == "fake"
    subs = [r for r in srv.requests if r.path.endswith("/chat/completions") and not r.system]
    assert subs and {r.model for r in subs} == {"fake-sub"}          # sub-calls went to the real model


def test_run_with_the_demo_as_sub_model_when_the_user_says_so(qtbot, window, settings, fake_openai,  # noqa: ANN001
                                                              docs_folder) -> None:
    srv = fake_openai
    srv.handler = _script
    _mixed(window, settings, srv, docs_folder, qtbot)
    asked = answer_next_question(window, "Run with the demo")
    with qtbot.waitSignal(window.run_finished, timeout=60_000) as finished:
        assert window.start_run() is not None
    assert asked                                                       # it asked first
    assert finished.args[0].result.status == "ok", finished.args[0].result.reason
    assert all(r.system for r in srv.requests if r.path.endswith("/chat/completions"))  # only the root
    assert window.query.sub_choice().profile_id == DEMO_ID


def test_no_question_when_root_and_sub_are_both_real(qtbot, window, settings, fake_openai, docs_folder) -> None:  # noqa: ANN001
    srv = fake_openai
    srv.handler = lambda r: Reply.hanging() if not r.system else "FINAL(ok)"
    _mixed(window, settings, srv, docs_folder, qtbot)
    settings.set_last_sub_choice("fake", "fake-sub")
    window.reload_settings()
    with qtbot.waitSignal(window.run_finished, timeout=60_000):
        assert window.start_run() is not None and window.question_box is None


def test_a_did_not_start_for_lack_of_a_key_message_goes_once_settings_close(qtbot, window, settings,  # noqa: ANN001
                                                                            fake_openai, docs_folder) -> None:
    from dataclasses import replace

    settings.save_profile(replace(fake_profile(fake_openai), needs_key=True))
    settings.set_last_root_choice("fake", "fake-root")
    settings.set_last_sub_choice("fake", "fake-sub")
    window.reload_settings()
    drop_paths(window.trace_pane.view.viewport(), [docs_folder])
    qtbot.waitUntil(lambda: len(window.documents.documents) == 4 and not window.documents.loading,
                    timeout=10_000)
    window.query.set_query("Who was late?")
    with qtbot.waitSignal(window.run_finished, timeout=30_000) as finished:
        window.start_run()
    assert finished.args[0].not_started
    assert "no key" in window.answer.reason.text()
    window.last_notice.close()

    window.open_settings()
    dlg = window.settings_dialog
    dlg.select_profile("fake")
    qtbot.waitUntil(lambda: not dlg.busy(), timeout=10_000)
    dlg.key_edit.setText("sk-house-key-1234567890")
    qtbot.mouseClick(dlg.save_key_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dlg.busy(), timeout=10_000)
    dlg.reject()                                     # the key is stored already; Cancel closes
    assert "no key" not in window.answer.reason.text() and window.answer.heading.text() == "Answer"
    assert "tries again" in window.status.currentMessage()
