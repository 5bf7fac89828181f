"""Window state (geometry, splitter positions, column widths), kept in its own file apart from the
preferences: ``window-state.ini`` next to ``preferences.ini``."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QHeaderView, QMainWindow, QSplitter

from rlm_desktop.ui.settings import preferences_path

# 2: the trace's step column stretches (saved header states of version 1 kept it fixed, which made
# the tree scroll sideways on narrow screens), so older states are not restored.
STATE_VERSION = 2


def window_state_path() -> Path:
    return preferences_path().parent / "window-state.ini"


class WindowState:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or window_state_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._qs = QSettings(str(self.path), QSettings.Format.IniFormat)

    def save(self, window: QMainWindow, splitters: dict[str, QSplitter],
             headers: dict[str, QHeaderView]) -> None:
        qs = self._qs
        qs.setValue("version", STATE_VERSION)
        qs.setValue("window/geometry", window.saveGeometry())
        qs.setValue("window/state", window.saveState(STATE_VERSION))
        for name, sp in splitters.items():
            qs.setValue(f"splitters/{name}", sp.saveState())
        for name, h in headers.items():
            qs.setValue(f"headers/{name}", h.saveState())
        qs.sync()

    def _compatible(self) -> bool:
        try:
            return int(self._qs.value("version", 0)) == STATE_VERSION
        except (TypeError, ValueError):
            return False

    def restore_geometry(self, window: QMainWindow) -> bool:
        """Before the window is shown: its size, position and toolbar state."""
        if not self._compatible():
            return False
        geo = self._qs.value("window/geometry")
        if isinstance(geo, QByteArray):
            window.restoreGeometry(geo)
        st = self._qs.value("window/state")
        if isinstance(st, QByteArray):
            window.restoreState(st, STATE_VERSION)
        return True

    def restore(self, window: QMainWindow, splitters: dict[str, QSplitter],
                headers: dict[str, QHeaderView]) -> bool:
        """Once the window has its size: splitter positions and column widths."""
        if not self._compatible():
            return False
        qs = self._qs
        for name, sp in splitters.items():
            v = qs.value(f"splitters/{name}")
            if isinstance(v, QByteArray):
                sp.restoreState(v)
        for name, h in headers.items():
            v = qs.value(f"headers/{name}")
            if isinstance(v, QByteArray):
                h.restoreState(v)
        return True

    def flag(self, name: str) -> bool | None:
        """A remembered on/off choice about the panes (None: never saved, or an older state)."""
        if not self._compatible():
            return None
        v = self._qs.value(f"panes/{name}")
        if v is None:
            return None
        return str(v).lower() in ("true", "1")

    def set_flag(self, name: str, on: bool) -> None:
        self._qs.setValue(f"panes/{name}", bool(on))
        self._qs.sync()
