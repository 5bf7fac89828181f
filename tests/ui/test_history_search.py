"""History search and filters (issue 11, "Filters and search"): search by question and answer,
filter by status, model and date, sort by any column with sessions kept together."""

from __future__ import annotations

import time
from pathlib import Path

from rlm_desktop.session.history import HistoryEntry, HistoryStore
from rlm_desktop.ui.run_panes import HistoryGroup, HistoryPane

DAY = 86_400.0


def _store(tmp_path: Path) -> HistoryStore:
    store = HistoryStore(tmp_path / "history.jsonl")
    # "now" when the test runs, not when the module was imported: the suite once crossed midnight
    # between the two, and the "today" filter rightly found no entry from yesterday's 23:58.
    now = time.time()

    def add(query: str, answer: str, status: str, provider: str, age_days: float, cost: float,
            session: str | None = None, turn: int | None = None) -> None:
        started = now - age_days * DAY
        store.add(HistoryEntry(trace=str(tmp_path / f"{session or query}.jsonl"), query=query,
                               started=started, finished=started + 5, status=status,
                               cost_usd=cost, provider=provider, session=session, turn=turn,
                               answer_preview=answer))

    add("Which contracts renew in 2027?", "acme and globex", "ok", "openai: gpt-a", 0.0, 0.02,
        session="contracts", turn=1)
    add("Of those, which have a price clause?", "only acme", "ok", "openai: gpt-a", 0.0, 0.03,
        session="contracts", turn=2)
    add("Summarise the board minutes", "The board approved the budget", "limit", "local: llama",
        3.0, 0.50)
    add("List the invoices over 10k", "none found", "error", "openai: gpt-b", 40.0, 0.01)
    return store


def _pane(qtbot, tmp_path: Path) -> HistoryPane:  # noqa: ANN001
    pane = HistoryPane(_store(tmp_path))
    qtbot.addWidget(pane)
    return pane


def _turns(pane: HistoryPane) -> list[str]:
    return [r.query for r in pane.rows if isinstance(r, HistoryEntry)]


def _choose(combo, data: object) -> None:  # noqa: ANN001
    i = combo.findData(data)
    assert i >= 0, f"{data!r} not offered"
    combo.setCurrentIndex(i)
    combo.activated.emit(i)


def test_search_finds_questions_and_answers(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    pane = _pane(qtbot, tmp_path)
    assert len(_turns(pane)) == 4
    pane.search.setText("BUDGET")                 # only in an answer
    assert _turns(pane) == ["Summarise the board minutes"]
    pane.search.setText("price clause")           # a question inside a session: shown under it
    assert _turns(pane) == ["Of those, which have a price clause?"]
    assert isinstance(pane.rows[0], HistoryGroup) and pane.rows[0].session == "contracts"
    pane.search.setText("nothing says this")
    assert pane.rows == [] and pane.table.rowCount() == 0
    pane.search.clear()
    assert len(_turns(pane)) == 4


def test_filter_by_status_model_and_date(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    pane = _pane(qtbot, tmp_path)
    statuses = [pane.status_filter.itemData(i) for i in range(pane.status_filter.count())]
    assert statuses == [None, "error", "limit", "ok"]
    _choose(pane.status_filter, "limit")
    assert _turns(pane) == ["Summarise the board minutes"]
    _choose(pane.status_filter, None)
    _choose(pane.model_filter, "openai: gpt-a")
    assert sorted(_turns(pane)) == ["Of those, which have a price clause?", "Which contracts renew in 2027?"]
    _choose(pane.model_filter, None)
    _choose(pane.date_filter, 0)                  # today
    assert len(_turns(pane)) == 2
    _choose(pane.date_filter, 7)
    assert len(_turns(pane)) == 3
    _choose(pane.date_filter, 30)
    assert "List the invoices over 10k" not in _turns(pane)
    _choose(pane.status_filter, "ok")             # combined: ok and within 30 days
    assert len(_turns(pane)) == 2
    assert pane.filtering
    _choose(pane.date_filter, None)
    _choose(pane.status_filter, None)
    assert not pane.filtering and len(_turns(pane)) == 4


def test_sort_by_any_column_keeps_sessions_together(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    pane = _pane(qtbot, tmp_path)

    def order() -> list[str]:
        return [r.session if isinstance(r, HistoryGroup) else r.query for r in pane.rows]

    session_block = ["contracts", "Which contracts renew in 2027?", "Of those, which have a price clause?"]
    # Default: newest first.
    assert order() == [*session_block, "Summarise the board minutes", "List the invoices over 10k"]
    pane.sort_by(3, descending=True)              # cost: the session's total (0.05) after 0.50
    assert order() == ["Summarise the board minutes", *session_block, "List the invoices over 10k"]
    pane.sort_by(2, descending=False)             # status: error, limit, ok
    assert order() == ["List the invoices over 10k", "Summarise the board minutes", *session_block]
    pane.sort_by(0, descending=False)             # name: "contracts" < "list…" < "summarise…"
    assert order() == [*session_block, "List the invoices over 10k", "Summarise the board minutes"]
    pane.table.horizontalHeader().sectionClicked.emit(0)    # the same header again: reversed
    assert order() == ["Summarise the board minutes", "List the invoices over 10k", *session_block]
    # The table shows what the rows say (the session row, then its turns indented).
    assert pane.table.item(2, 0).text().startswith("contracts")
    assert pane.table.item(3, 0).text().startswith("    1. Which contracts")
