"""asyncio on the GUI thread, through qasync: UI-side async jobs (provider probes) run as tasks on
a qasync loop that turns whenever Qt's event loop does, so a coroutine awaits the network without a
thread of its own and its result lands on the GUI thread with no queued hop.

The loop is installed in "already running" mode (qasync's own term): asyncio sees a running loop in
the GUI thread while Qt's event loop (``app.exec()``, or pytest-qt's waits) dispatches its timers
and socket notifiers. The engine keeps its own loop on its own thread (see engine_bridge); blocking
work (keyring, file loading, trace parsing) stays on worker threads (see jobs.ThreadJob).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import qasync
from PySide6.QtCore import QCoreApplication, QObject

from rlm_desktop.ui.jobs import JobBase


def gui_loop() -> asyncio.AbstractEventLoop:
    """The GUI thread's asyncio loop, installing a qasync loop on first use."""
    running = asyncio._get_running_loop()
    if running is not None:
        return running
    app = QCoreApplication.instance()
    if app is None:
        raise RuntimeError("the GUI loop needs a QApplication")
    loop = qasync.QEventLoop(app, already_running=True)
    asyncio.set_event_loop(loop)
    return loop


def close_gui_loop() -> None:
    """Cancel what is still scheduled and take the GUI thread's qasync loop down (at app exit, and
    after each GUI test so that plain ``asyncio.run`` works in this thread again)."""
    loop = asyncio._get_running_loop()
    if not isinstance(loop, qasync.QEventLoop):
        return
    for task in asyncio.all_tasks(loop):
        task.cancel()
    app = QCoreApplication.instance()
    with contextlib.suppress(RuntimeError, TypeError):
        if app is not None:
            app.aboutToQuit.disconnect(loop._after_run_forever)
    # Not loop.stop(): in this mode it calls QCoreApplication.exit(), which leaves Qt's "quit now"
    # flag set, so every later QEventLoop.exec() (a modal dialog, a test's wait) returns at once.
    if hasattr(loop, "_QEventLoop__is_running"):
        loop._QEventLoop__is_running = False
    else:                             # a qasync that renamed it: stopping is still better than leaking
        loop.stop()
    asyncio.events._set_running_loop(None)
    loop.close()
    asyncio.set_event_loop(None)


class AsyncJob(JobBase):
    """``coro_fn()`` runs as a task on the GUI loop. Exactly one of ``finished(result)`` /
    ``failed(message)`` is emitted, on the GUI thread, and only then does ``done`` become True (the
    same contract as :class:`~rlm_desktop.ui.jobs.ThreadJob`). Deleting the job's owner cancels the
    task; :meth:`cancel` does too (then ``failed("cancelled")``)."""

    def __init__(self, coro_fn: Callable[[], Awaitable[Any]], *, name: str = "job",
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._coro_fn = coro_fn
        self.name = name
        self._task: asyncio.Task[Any] | None = None

    def start(self) -> AsyncJob:
        task = gui_loop().create_task(self._coro_fn(), name=f"rlm-{self.name}")
        self._task = task
        task.add_done_callback(self._on_task_done)
        self.destroyed.connect(lambda *_: task.cancel())
        return self

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        # Runs on the GUI loop once the task has ended, however it ended (a task cancelled before
        # its first step never enters its coroutine, so this is the one place that sees them all).
        if task.cancelled():
            self._deliver(False, "cancelled")
            return
        exc = task.exception()
        if exc is not None:        # reported to the user by the receiver of `failed`
            self._deliver(False, str(exc) or type(exc).__name__)
        else:
            self._deliver(True, task.result())


__all__ = ["AsyncJob", "close_gui_loop", "gui_loop"]
