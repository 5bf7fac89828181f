"""The run history: one JSON line per turn and change of state, in the user data folder.

Written by the session layer for every front end (the app, the CLI, Python), so the History pane
lists CLI runs too. Qt-free. A turn is identified by its trace file and its turn number.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from rlm_desktop.core.paths import data_dir, open_private, write_text_atomic
from rlm_desktop.core.trace import safe_json_line

ANSWER_PREVIEW_CHARS = 2_000


@dataclass
class HistoryEntry:
    trace: str
    query: str
    started: float
    finished: float
    status: str                 # ok | limit | cancelled | error | running | interrupted
    stop_reason: str | None = None
    cost_usd: float | None = None
    cost_known: bool = True
    provider: str = ""
    cost_estimated: bool = False    # priced from estimated tokens (no usage reported)
    pid: int | None = None          # the app process of a run still "running"
    session: str | None = None      # the session's name (None: a one-turn run)
    turn: int | None = None         # the turn's number in its session
    source: str = "app"             # app | cli | python
    answer_preview: str = ""        # the start of the answer (History searches it)

    @property
    def key(self) -> str:
        """One history row per turn: its trace file and its turn."""
        return self.trace if not self.turn else f"{self.trace}#{self.turn}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)            # signal 0: existence check only, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def history_path() -> Path:
    return data_dir() / "history.jsonl"


class HistoryStore:
    """Finished runs, one JSON line each, in the user data folder (private: 0600)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or history_path()

    def add(self, entry: HistoryEntry) -> None:
        # Private (0600 in a 0700 folder): queries say what the user asks about their documents.
        # safe_json_line: a query with U+2028 (or a lone surrogate) must stay one line.
        with open_private(self.path, "a") as fh:
            fh.write(safe_json_line(json.dumps(asdict(entry), ensure_ascii=False)) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def entries(self) -> list[HistoryEntry]:
        """Newest first, one per turn (a turn's later line — its outcome — replaces its "running"
        line); a turn still "running" whose process is gone is shown "interrupted" (the app was
        killed or crashed; its trace on disk holds what happened). Unreadable lines are skipped."""
        by_key: dict[str, HistoryEntry] = {}
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").split("\n")
        except FileNotFoundError:
            return []
        names = set(HistoryEntry.__dataclass_fields__)
        for line in lines:
            try:
                d = json.loads(line)
                e = HistoryEntry(**{k: v for k, v in d.items() if k in names})
            except (json.JSONDecodeError, TypeError, AttributeError):
                continue
            by_key.pop(e.key, None)        # re-inserted: keeps the order of the latest line
            by_key[e.key] = e
        out = list(by_key.values())
        for e in out:
            if e.status == "running" and not (e.pid and _process_alive(e.pid)):
                e.status, e.stop_reason = "interrupted", "interrupted"
        out.sort(key=lambda e: e.started, reverse=True)
        return out

    def remove(self, traces: set[str]) -> int:
        """Forget the runs whose trace path (or ``trace#turn`` key) is in ``traces`` (their trace
        files stay on disk). Unreadable lines are kept as they are. Returns how many were removed."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").split("\n")
        except FileNotFoundError:
            return 0
        kept: list[str] = []
        found: set[str] = set()
        for line in lines:
            if not line:
                continue
            try:
                d = json.loads(line)
                trace = d.get("trace")
                key = f"{trace}#{d['turn']}" if d.get("turn") else trace
            except (json.JSONDecodeError, AttributeError, KeyError):
                trace = key = None
            hit = key if key in traces else trace if trace in traces else None
            if hit is not None:
                found.add(hit)
            else:
                kept.append(line)
        if found:
            write_text_atomic(self.path, "".join(k + "\n" for k in kept if k))   # no blank lines added
        return len(found)
