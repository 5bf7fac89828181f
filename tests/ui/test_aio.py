"""UI-side async jobs on the qasync loop of the GUI thread."""

from __future__ import annotations

import asyncio
import threading

from PySide6.QtCore import QObject

from rlm_desktop.ui.aio import AsyncJob, close_gui_loop, gui_loop
from tests.fakeserver import FakeOpenAI


def test_a_job_awaits_real_http_on_the_gui_thread_and_delivers_there(qtbot, fake_openai: FakeOpenAI) -> None:  # noqa: ANN001
    import httpx2

    seen: list[tuple[str, int]] = []

    async def fetch() -> int:
        seen.append(("awaiting on", threading.get_ident()))
        async with httpx2.AsyncClient() as client:
            r = await client.get(fake_openai.base_url + "/models")
        return r.status_code

    job = AsyncJob(fetch, name="probe")
    results: list[object] = []
    job.finished.connect(lambda v: results.append((v, threading.get_ident(), job.done)))
    job.start()
    assert not job.done                          # nothing ran yet: the GUI thread was not blocked
    qtbot.waitUntil(lambda: job.done, timeout=10_000)
    gui = threading.get_ident()
    assert seen == [("awaiting on", gui)]
    assert results == [(200, gui, False)]         # delivered on the GUI thread before `done`


def test_failure_cancel_and_owner_deletion(qtbot) -> None:  # noqa: ANN001
    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("the server said no")

    failed: list[str] = []
    bad = AsyncJob(boom)
    bad.failed.connect(failed.append)
    bad.start()
    qtbot.waitUntil(lambda: bad.done, timeout=5000)
    assert failed == ["the server said no"]

    gate = asyncio.Event()
    finished_after: list[str] = []

    async def forever() -> str:
        await gate.wait()
        finished_after.append("ran on")
        return "late"

    slow = AsyncJob(forever)
    cancelled: list[str] = []
    slow.failed.connect(cancelled.append)
    slow.start()
    slow.cancel()
    qtbot.waitUntil(lambda: slow.done, timeout=5000)
    assert cancelled == ["cancelled"] and finished_after == []

    owner = QObject()
    orphan = AsyncJob(forever, parent=owner).start()
    task = orphan._task
    owner.deleteLater()
    qtbot.waitUntil(lambda: task.done(), timeout=5000)
    assert task.cancelled() and finished_after == []


def test_the_gui_loop_is_closed_so_plain_asyncio_and_qt_waits_work_again(qtbot) -> None:  # noqa: ANN001
    import time

    loop = gui_loop()
    assert gui_loop() is loop and asyncio.get_running_loop() is loop
    close_gui_loop()
    assert loop.is_closed() and asyncio._get_running_loop() is None
    assert asyncio.run(asyncio.sleep(0, result="plain asyncio")) == "plain asyncio"
    # Qt's own nested loops still wait (closing must not leave Qt's "quit now" flag set).
    t0 = time.monotonic()
    qtbot.wait(150)
    assert time.monotonic() - t0 >= 0.1
    # And a new GUI loop turns again.
    ran: list[int] = []

    async def step() -> None:
        ran.append(1)
    job = AsyncJob(step).start()
    qtbot.waitUntil(lambda: job.done, timeout=5000)
    assert ran == [1]

