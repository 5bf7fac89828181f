"""The run history is private (0600 in a 0700 folder) and keeps one run per line whatever its query."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rlm_desktop.core.paths import data_dir
from rlm_desktop.ui.run_panes import HistoryEntry, HistoryStore


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_the_history_file_is_private() -> None:
    old = os.umask(0)   # hide nothing: the modes checked are the ones the code asks for
    try:
        store = HistoryStore()
        store.add(HistoryEntry(trace="t1", query="what do my contracts say?", started=1.0, finished=2.0,
                               status="ok"))
    finally:
        os.umask(old)
    assert store.path == data_dir() / "history.jsonl"
    assert mode(store.path) == 0o600 and mode(data_dir()) == 0o700
    store.remove({"t1"})            # rewritten atomically: still private
    assert mode(store.path) == 0o600


def test_a_query_with_line_separators_stays_one_entry(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.jsonl")
    odd = "line one\u2028line two\u2029\x85end \udcff"
    store.add(HistoryEntry(trace="a", query=odd, started=1.0, finished=2.0, status="ok"))
    store.add(HistoryEntry(trace="b", query="plain", started=2.0, finished=3.0, status="ok"))
    assert [(e.trace, e.query) for e in store.entries()] == [("b", "plain"), ("a", odd)]
