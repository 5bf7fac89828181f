"""Background jobs for the GUI: run a *blocking* function (file loading, trace parsing, a keyring
call) on a worker thread, report progress and the result back to the GUI thread through queued
signals, cancellable with a CancelToken. Async I/O (provider probes) runs as a qasync task on the
GUI thread instead: see :mod:`rlm_desktop.ui.aio`."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from rlm_desktop.core.cancel import CancelToken


class JobBase(QObject):
    """What every UI job promises: exactly one of ``finished(result)`` / ``failed(message)`` is
    emitted on the GUI thread, and only then does ``done`` become True — ``done`` means "the result
    has been handled by the receivers", never merely "the work has returned"."""

    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.done = False

    def _deliver(self, ok: bool, payload: Any) -> None:
        try:
            try:
                if ok:
                    self.finished.emit(payload)
                else:
                    self.failed.emit(str(payload))
            finally:
                self.done = True
        except RuntimeError:       # the owner (and this job) was deleted meanwhile: nobody to tell
            pass


class ThreadJob(JobBase):
    """``fn(job)`` runs on a daemon thread; it may call ``job.report(done, total, text)`` and check
    ``job.cancel``. Exactly one of ``finished(result)`` / ``failed(message)`` is emitted, on the
    thread the job lives in (the GUI thread), and only then does ``done`` become True: ``done`` means
    "the result has been handled by the receivers", never merely "the worker has returned" (a flag
    set by the worker would be True while the result still waits in the GUI thread's event queue)."""

    progress = Signal(int, int, str)
    _outcome = Signal(bool, object)      # worker → job's thread (queued): (ok, result or message)

    def __init__(self, fn: Callable[[ThreadJob], Any], *, name: str = "job",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._fn = fn
        self.name = name
        self.cancel = CancelToken()
        self._outcome.connect(self._deliver)
        self._thread = threading.Thread(target=self._main, name=f"rlm-{name}", daemon=True)

    def start(self) -> ThreadJob:
        self._thread.start()
        return self

    def report(self, done: int, total: int, text: str = "") -> None:
        self.progress.emit(done, total, text)

    def wait(self, timeout: float | None = None) -> bool:
        """Join the worker thread. The result may still be on its way to the GUI thread: use
        ``done`` or the signals to know when it has been handled."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self) -> None:
        try:
            result = self._fn(self)
        except Exception as exc:   # reported to the user by the receiver of `failed`
            msg = str(exc) or "".join(traceback.format_exception_only(type(exc), exc)).strip()
            self._send(False, msg)
            return
        self._send(True, result)

    def _send(self, ok: bool, payload: Any) -> None:
        try:
            self._outcome.emit(ok, payload)
        except RuntimeError:       # the job's owner (and the job) was deleted meanwhile: nobody to tell
            pass
