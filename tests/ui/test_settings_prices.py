"""Settings shows where prices come from (genai-prices, its data date), the list prices of a
profile's models, keeps a changed price as the user's own, and the Test button says "Key rejected"
where the model list needs no key (issue 8 items 14 and 20)."""

from __future__ import annotations

import re

import pytest
from PySide6.QtWidgets import QLabel
from pytestqt.qtbot import QtBot

from rlm_desktop.core.config import ModelPrice
from rlm_desktop.core.pricing import catalog_price
from rlm_desktop.ui.settings import Settings
from rlm_desktop.ui.settings_dialog import SettingsDialog
from tests.fakeserver import FakeOpenAI

KEY = "sk-prices-SECRET-77aa01"


@pytest.fixture(autouse=True)
def _no_env_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("RLM_DESKTOP_KEY_GW", raising=False)


def _dialog(qtbot: QtBot) -> SettingsDialog:
    d = SettingsDialog(Settings())
    qtbot.addWidget(d)
    d.show()
    return d


def _rows(d: SettingsDialog) -> dict[str, tuple[str, str, str]]:
    t = d.price_table
    return {t.item(r, 0).text(): (t.item(r, 1).text(), t.item(r, 2).text(), t.item(r, 3).text())
            for r in range(t.rowCount())}


def test_prices_show_their_source_and_date_and_an_edit_is_kept(qtbot: QtBot) -> None:
    d = _dialog(qtbot)
    notes = [w.text() for w in d.findChildren(QLabel) if "genai-prices" in w.text()]
    assert notes and re.search(r"genai-prices \d+\.\d+\.\d+, price changes up to \d{4}-\d\d-\d\d", notes[0])
    d.add_from_preset("openai")
    listed = catalog_price("gpt-4.1-mini", "https://api.openai.com/v1")
    assert listed is not None
    rows = _rows(d)
    assert rows["gpt-4.1-mini"][0] == f"{listed.input:g}" and rows["gpt-4.1-mini"][2] == f"{listed.output:g}"
    r = next(i for i in range(d.price_table.rowCount()) if d.price_table.item(i, 0).text() == "gpt-4.1-mini")
    d.price_table.item(r, 1).setText("7")
    qtbot.waitUntil(lambda: not d.busy(), timeout=10_000)
    assert d.apply()
    saved = Settings().profile("openai")
    assert dict(saved.prices) == {"gpt-4.1-mini": ModelPrice(7.0, listed.output, listed.cached_input)}
    assert saved.prices["gpt-4.1-nano"] == catalog_price("gpt-4.1-nano", "https://api.openai.com/v1")


def test_test_button_says_key_rejected_when_the_list_needs_no_key(qtbot: QtBot) -> None:
    with FakeOpenAI(api_key=KEY, models=["fake-root"]) as srv:
        srv.models_need_key = False
        d = _dialog(qtbot)
        d.add_from_preset("custom")
        d.id_edit.setText("gw")
        d.base_url_edit.setText(srv.base_url)
        d.root_model_combo.setEditText("fake-root")
        d.key_edit.setText("sk-wrong-key-00000000")
        d.test_connection()
        qtbot.waitUntil(lambda: not d.busy(), timeout=10_000)
        text = d.status_label.text()
        assert text.startswith("✖ Key rejected (401)") and "sk-wrong" not in text
        assert srv.chat_requests and srv.chat_requests[-1].body["max_tokens"] == 1
