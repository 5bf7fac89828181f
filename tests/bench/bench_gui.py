"""Benchmark the desktop window (offscreen): open a 100,000-span trace; the timeline's paint time and
the longest GUI-thread stall while scrolling and zooming it on that trace; the longest GUI-thread stall
while 1,000 trace events/s stream in for 10 s; and the time from Stop to every model call closed and
every sandbox process dead (scripted server, a hanging batch). Goals: ≤ 2 s, ≤ 50 ms, ≤ 200 ms.

``run(args) -> dict``; alone: ``python -m tests.bench.bench_gui [--seconds S] [--rate N]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.proctree import descendants

OPEN_GOAL_S = 2.0
STALL_GOAL_MS = 50.0
STOP_GOAL_MS = 200.0
HEARTBEAT_MS = 5


def _app() -> Any:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from rlm_desktop.ui.app import make_app

    return make_app()


def _spin(app: Any, cond: Callable[[], bool], timeout: float) -> bool:
    from PySide6.QtCore import QEventLoop

    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            return False
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 5)
    return True


def _window(app: Any) -> Any:
    from rlm_desktop.ui.main_window import MainWindow

    w = MainWindow()
    w.resize(1400, 900)
    w.show()
    _spin(app, lambda: False, 0.2)
    return w


def bench_open(app: Any, tmp: Path, spans: int) -> dict[str, Any]:
    from tests.bench.bench_trace import generate_trace

    path = tmp / "big.jsonl"
    count = generate_trace(path, spans)
    w = _window(app)
    opened: list[str] = []
    w.trace_opened.connect(opened.append)
    t0 = time.perf_counter()
    w.open_trace_file(path)
    if not _spin(app, lambda: bool(opened), 60):
        raise RuntimeError("the trace did not open within 60 s")
    w.trace_pane.view.viewport().repaint()      # the view drawn with the new model
    elapsed = time.perf_counter() - t0
    if len(w.model.trace) != count:
        raise AssertionError(f"opened {len(w.model.trace)} spans, expected {count}")
    # The filter box on the same trace: a search that matches nothing, then one that matches
    # most steps (every match expanded in the view).
    pane = w.trace_pane
    filter_s = {}
    for name, text in (("none", "no step says this"), ("most", "cell")):
        t0 = time.perf_counter()
        pane.filter_edit.setText(text)
        pane._apply_filter()
        pane.view.viewport().repaint()
        filter_s[name] = round(time.perf_counter() - t0, 3)
    shown = pane.proxy.rowCount()
    pane.filter_edit.clear()
    pane._apply_filter()
    w.close()
    if shown == 0:
        raise AssertionError("the filter 'cell' matched nothing in the generated trace")
    return {"open_100k_s": round(elapsed, 3), "spans": count,
            "filter_100k_no_match_s": filter_s["none"], "filter_100k_most_match_s": filter_s["most"]}


def bench_timeline(app: Any, tmp: Path, spans: int) -> dict[str, Any]:
    """The timeline on a ``spans``-span trace: paint time while scrolling through it and zooming in
    and out (one step every 16 ms, as wheel events come), and the longest GUI-thread stall meanwhile
    (a 5 ms heartbeat timer's worst gap)."""
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    from tests.bench.bench_trace import generate_trace

    path = tmp / "timeline.jsonl"
    if not path.exists():
        generate_trace(path, spans)
    w = _window(app)
    opened: list[str] = []
    w.trace_opened.connect(opened.append)
    w.open_trace_file(path)
    if not _spin(app, lambda: bool(opened), 60):
        raise RuntimeError("the trace did not open within 60 s")
    view = w.timeline.view
    _spin(app, lambda: view.row_count() == len(w.model.trace), 10)
    _spin(app, lambda: False, 0.2)
    paints: list[float] = []
    gaps: list[float] = []
    last = [time.perf_counter()]

    def beat() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    vb = view.verticalScrollBar()
    steps: list[Callable[[], None]] = []
    for i in range(120):                          # scroll from the top to the bottom …
        steps.append(lambda i=i: vb.setValue(int(vb.maximum() * i / 119)))
    for _ in range(30):                           # … zoom in around the middle, then out again
        steps.append(lambda: view.zoom(1.25))
    for i in range(40):                           # scroll while zoomed in
        steps.append(lambda i=i: vb.setValue(int(vb.maximum() * (1 - i / 39))))
    for _ in range(30):
        steps.append(lambda: view.zoom(0.8))
    steps.append(view.zoom_to_fit)
    rows_per_paint: list[int] = []

    def step() -> None:
        if not steps:
            loop.quit()
            return
        steps.pop(0)()
        t0 = time.perf_counter()
        view.viewport().repaint()
        paints.append(time.perf_counter() - t0)
        rows_per_paint.append(view.rows_painted_last)

    hb = QTimer()
    hb.setTimerType(Qt.TimerType.PreciseTimer)
    hb.setInterval(HEARTBEAT_MS)
    hb.timeout.connect(beat)
    driver = QTimer()
    driver.setInterval(16)
    driver.timeout.connect(step)
    loop = QEventLoop()
    QTimer.singleShot(60_000, loop.quit)
    last[0] = time.perf_counter()
    hb.start()
    driver.start()
    loop.exec()
    driver.stop()
    hb.stop()
    spans_shown = view.row_count()
    w.close()
    if steps:
        raise RuntimeError(f"the timeline bench did not finish: {len(steps)} steps left")
    gaps = gaps[3:]
    paints.sort()
    return {"timeline_spans": spans_shown,
            "timeline_paint_ms_median": round(paints[len(paints) // 2] * 1000, 2),
            "timeline_paint_ms_max": round(paints[-1] * 1000, 2),
            "timeline_rows_per_paint_max": max(rows_per_paint),
            "timeline_stall_ms_max": round(max(gaps) * 1000 - HEARTBEAT_MS, 1) if gaps else float("nan")}


def _produce(trace: Any, rate: int, seconds: float, stop: threading.Event) -> int:
    """Emit about ``rate`` events per second into ``trace`` (this thread owns it)."""
    from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus

    n = 0
    t0 = time.perf_counter()
    run = trace.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "stream test", Attr.DEPTH: 0})
    it_no = 0

    def pace() -> None:
        nonlocal n
        n += 1
        due = t0 + n / rate
        delay = due - time.perf_counter()
        if delay > 0.002:
            time.sleep(delay)

    while time.perf_counter() - t0 < seconds and not stop.is_set():
        it_no += 1
        it = trace.start_span(SpanKind.ITERATION, f"iteration {it_no}", run)
        pace()
        call = trace.start_span(SpanKind.LLM_CALL, "chat m", it, {Attr.MODEL: "m",
                                                                  Attr.MESSAGES: [{"role": "user",
                                                                                   "content": "go on"}]})
        pace()
        for piece in ("Let me ", "look at ", "the data.\n```repl\nx = 1\n```"):
            trace.update_span(call, append={Attr.RESPONSE: piece})
            pace()
        trace.end_span(call, SpanStatus.OK, {Attr.INPUT_TOKENS: 900, Attr.OUTPUT_TOKENS: 40,
                                             Attr.COST_USD: 0.001})
        pace()
        cell = trace.start_span(SpanKind.CODE_CELL, "cell", it, {Attr.CODE: "llm_query_batched(p)"})
        pace()
        for b in range(10):
            sub = trace.start_span(SpanKind.SUB_CALL, f"llm_query_batched[{b}]", cell,
                                   {Attr.PROMPT: f"chunk {b}", Attr.BATCH_INDEX: b})
            pace()
            trace.update_span(cell, append={Attr.STDOUT: f"item {b}\n"})
            pace()
            trace.end_span(sub, SpanStatus.OK, {Attr.RESPONSE: "fine"})
            pace()
        trace.end_span(cell, SpanStatus.OK)
        pace()
        trace.end_span(it, SpanStatus.OK)
        pace()
    trace.end_span(run, SpanStatus.OK)
    return n + 1


def bench_stream(app: Any, rate: int, seconds: float) -> dict[str, Any]:
    from PySide6.QtCore import QEventLoop, Qt, QTimer

    from rlm_desktop.core.trace import Trace

    w = _window(app)
    producer = Trace({"query": "stream test"})
    w.watch_trace(producer)
    gaps: list[float] = []
    last = [time.perf_counter()]

    def beat() -> None:
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    hb = QTimer()
    hb.setTimerType(Qt.TimerType.PreciseTimer)
    hb.setInterval(HEARTBEAT_MS)
    hb.timeout.connect(beat)
    stop = threading.Event()
    produced: list[int] = []
    th = threading.Thread(target=lambda: produced.append(_produce(producer, rate, seconds, stop)),
                          name="bench-producer", daemon=True)
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000) + 300, loop.quit)
    last[0] = time.perf_counter()
    hb.start()
    th.start()
    loop.exec()
    hb.stop()
    stop.set()
    th.join(5)
    _spin(app, lambda: w.model.pending == 0 and not w.model._timer.isActive(), 5)
    applied = len(w.model.trace)
    gaps = gaps[3:]   # the loop's first beats include its start-up
    worst = max(gaps) * 1000 - HEARTBEAT_MS if gaps else float("nan")
    spans_expected = len(producer)
    w.close()
    if applied != spans_expected:
        raise AssertionError(f"the window shows {applied} spans, the producer made {spans_expected}")
    return {"stall_ms_max": round(worst, 1),
            "stall_ms_p99": round(sorted(gaps)[int(len(gaps) * 0.99)] * 1000 - HEARTBEAT_MS, 1),
            "events_per_second": round(produced[0] / seconds) if produced else 0, "stream_s": seconds,
            "spans_streamed": applied}


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def bench_stop(app: Any, tmp: Path) -> dict[str, Any]:
    from rlm_desktop.core.profiles import ProviderProfile
    from tests.fakeserver import FakeOpenAI, Reply

    batch = 8
    with FakeOpenAI() as srv:
        srv.handler = lambda r: (f"```repl\nprint(llm_query_batched([str(i) for i in range({batch})]))\n```"
                                 if r.system else Reply.hanging())
        w = _window(app)
        w.settings.save_profile(ProviderProfile(id="bench", name="Scripted", preset="custom",
                                                base_url=srv.base_url, needs_key=False,
                                                root_model="r", sub_model="s", concurrency=batch))
        w.settings.set_last_root_choice("bench", "r")
        w.settings.set_last_sub_choice("bench", "s")
        w.reload_settings()
        folder = Path(tempfile.mkdtemp(prefix="rlm-bench-docs-", dir=tmp))
        (folder / "a.txt").write_text("Acme was late.\n")
        w.open_paths([folder])
        _spin(app, lambda: len(w.documents.documents) == 1 and not w.documents.loading, 10)
        w.query.set_query("Who was late?")
        finished: list[Any] = []
        w.run_finished.connect(finished.append)
        if w.start_run() is None:
            raise RuntimeError("the run did not start: " + w.status.currentMessage())
        if not _spin(app, lambda: srv.open_now >= batch, 30):
            raise RuntimeError(f"the batch never reached the server (open: {srv.open_now})")
        procs = {p for p in descendants(os.getpid()) if _alive(p)}
        t0 = time.perf_counter()
        w.stop_run()
        ok = _spin(app, lambda: srv.open_now == 0 and not any(_alive(p) for p in procs), 10)
        closed = time.perf_counter() - t0
        _spin(app, lambda: bool(finished), 10)
        done = time.perf_counter() - t0
        status = finished[0].result.status if finished and finished[0].result else "?"
        w.close()
    if not ok:
        raise RuntimeError("after Stop, requests or sandbox processes were still alive after 10 s")
    return {"stop_to_closed_ms": round(closed * 1000, 1), "stop_to_run_finished_ms": round(done * 1000, 1),
            "sandbox_processes": len(procs), "calls_cancelled": batch, "stopped_status": status}


def run(args: Any = None) -> dict[str, Any]:
    seconds = float(getattr(args, "seconds", None) or 10.0)
    rate = int(getattr(args, "rate", None) or 1000)
    spans = int(getattr(args, "spans", None) or 100_000)
    with tempfile.TemporaryDirectory(prefix="rlm-bench-gui-") as tmp:
        home = Path(tmp) / "home"
        old_home = os.environ.get("RLM_DESKTOP_HOME")
        os.environ["RLM_DESKTOP_HOME"] = str(home)   # settings, traces, window state: all temporary
        try:
            app = _app()
            figures: dict[str, Any] = {"name": "gui"}
            figures.update(bench_open(app, Path(tmp), spans))
            figures.update(bench_timeline(app, Path(tmp), spans))
            figures.update(bench_stream(app, rate, seconds))
            figures.update(bench_stop(app, Path(tmp)))
        finally:
            if old_home is None:
                os.environ.pop("RLM_DESKTOP_HOME", None)
            else:
                os.environ["RLM_DESKTOP_HOME"] = old_home
    figures["goals"] = (f"open ≤ {OPEN_GOAL_S} s, stall ≤ {STALL_GOAL_MS} ms (streaming, and scrolling or "
                        f"zooming the timeline), stop ≤ {STOP_GOAL_MS} ms")
    figures["ok"] = (figures["open_100k_s"] <= OPEN_GOAL_S and figures["stall_ms_max"] <= STALL_GOAL_MS
                     and figures["timeline_stall_ms_max"] <= STALL_GOAL_MS
                     and figures["stop_to_closed_ms"] <= STOP_GOAL_MS)
    return figures


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--spans", type=int, default=100_000)
    for k, v in run(ap.parse_args()).items():
        print(f"{k}: {v}")
