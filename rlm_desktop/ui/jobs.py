"""Background jobs for the GUI: run a function on a worker thread, report progress and the result
back to the GUI thread through queued signals, cancellable with a CancelToken."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from rlm_desktop.core.cancel import CancelToken


class ThreadJob(QObject):
    """``fn(job)`` runs on a daemon thread; it may call ``job.report(done, total, text)`` and check
    ``job.cancel``. Exactly one of ``finished(result)`` / ``failed(message)`` is emitted."""

    progress = Signal(int, int, str)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, fn: Callable[[ThreadJob], Any], *, name: str = "job",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._fn = fn
        self.name = name
        self.cancel = CancelToken()
        self.done = False
        self._thread = threading.Thread(target=self._main, name=f"rlm-{name}", daemon=True)

    def start(self) -> ThreadJob:
        self._thread.start()
        return self

    def report(self, done: int, total: int, text: str = "") -> None:
        self.progress.emit(done, total, text)

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            result = self._fn(self)
        except Exception as exc:   # reported to the user by the receiver of `failed`
            self.done = True
            msg = str(exc) or "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self.failed.emit(msg)
            return
        self.done = True
        self.finished.emit(result)
