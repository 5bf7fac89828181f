"""Keep Python's garbage collector off the GUI's critical path: a full collection over a big heap
(a 100,000-span trace, the SDKs' modules) pauses every thread for 50–150 ms, a visible stall.

While installed, automatic collection is off; young generations are collected on a short timer
(cheap), a full collection runs only when no run is live (after a run, after opening a trace), and
the objects alive at start-up are frozen out of the collector's scans (``gc.freeze``).
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from PySide6.QtCore import QObject, QTimer

YOUNG_INTERVAL_MS = 250
FULL_INTERVAL_TICKS = 240      # at most one idle full collection per minute


class GcPolicy(QObject):
    def __init__(self, busy: Callable[[], bool], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._busy = busy
        self._was_enabled = gc.isenabled()
        self._ticks = 0
        self.full_collections = 0
        gc.collect()
        gc.freeze()
        gc.disable()
        self._timer = QTimer(self)
        self._timer.setInterval(YOUNG_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._timer.start()
        self.active = True

    def _tick(self) -> None:
        self._ticks += 1
        if gc.get_count()[0] > 200:
            gc.collect(1)
        if self._ticks >= FULL_INTERVAL_TICKS and not self._busy():
            self.collect_full()

    def collect_full(self) -> None:
        """A full collection now (call when a pause does not matter: nothing is streaming)."""
        self._ticks = 0
        self.full_collections += 1
        gc.collect()

    def stop(self) -> None:
        """Give the collector back its automatic mode (idempotent)."""
        if not self.active:
            return
        self.active = False
        self._timer.stop()
        gc.unfreeze()
        if self._was_enabled:
            gc.enable()
