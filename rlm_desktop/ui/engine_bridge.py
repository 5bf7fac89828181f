"""The engine thread (its own asyncio loop) and the bridge that carries its trace events to the GUI.

Runs are submitted from the GUI thread; ``run_rlm`` runs on the engine loop with a Trace owned by
that thread, a TraceWriter to the traces folder and a listener that copies every event into a
per-run buffer. The bridge tells the GUI through a queued signal that a buffer has events; the GUI
drains it on its own schedule. Stop cancels the token (kills sandboxes, halts the run), then the run
task as a backstop. Events of a run the GUI no longer shows are discarded by run id.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import itertools
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.config import ConfigError, ProviderConfig, RunConfig
from rlm_desktop.core.paths import traces_dir
from rlm_desktop.core.trace import Attr, Span, SpanStatus, Trace, TraceEvent, TraceWriter

log = logging.getLogger(__name__)

# Modules the engine imports lazily during its first run, imported when the bridge is created so
# the first Run starts at once (PySide6's import hook makes each import slower once Qt is loaded).
_PRELOAD = (
    "rlm_desktop.engine.run", "rlm_desktop.engine.providers", "rlm_desktop.engine.demo",
    "rlm_desktop.sandbox.host", "pydantic", "pydantic.errors", "anyio._backends._asyncio",
    "h11", "httpcore2", "jiter", "truststore", "encodings.idna", "stringprep", "ctypes", "queue",
    "concurrent.futures.thread", "openai.pagination", "openai.lib.streaming.chat",
    "openai.resources.chat.completions.completions", "openai.types.chat.completions",
)


def preload_engine_modules() -> None:
    """Import what the engine thread would otherwise import on its first run (see _PRELOAD)."""
    for name in _PRELOAD:
        if importlib.util.find_spec(name.split(".")[0]) is not None:
            importlib.import_module(name)


# After Stop, the run task itself is cancelled if the cooperative stop has not ended it by then.
STOP_BACKSTOP_S = 0.3


class EngineThread:
    """A daemon thread running one asyncio event loop for all engine work."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="rlm-engine", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            try:
                from rlm_desktop.engine.providers import aclose_clients

                self.loop.run_until_complete(aclose_clients())
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            finally:
                self.loop.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Any, *args: Any) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel what still runs, stop the loop and wait for the thread (idempotent)."""
        if not self._thread.is_alive():
            return

        async def _cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=timeout)

        try:
            self.submit(_cancel_all()).result(timeout)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
            pass   # the loop is stopping regardless; the thread join below bounds the wait
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


@dataclass
class RunRequest:
    """Everything a run needs, prepared on the GUI thread. ``providers`` returns the root and (when
    different) the sub provider with their keys; it is called on a worker thread, since a keyring
    may wait for an unlock prompt, and may raise ConfigError (no key) — the run then never starts."""

    config: RunConfig
    context: str | dict[str, str]
    providers: Callable[[], tuple[ProviderConfig, ProviderConfig | None]]
    provider_name: str
    header: dict[str, Any] = field(default_factory=dict)   # extra trace header facts (no secrets)
    trace_path: Path | None = None


@dataclass
class RunOutcome:
    """How a run ended, as reported to the GUI."""

    run_id: int
    trace_path: Path
    result: Any | None            # rlm_desktop.engine.run.RunResult
    error: str | None = None      # an unexpected failure (the trace says the same)
    not_started: bool = False     # it failed before anything ran (no key): no trace was written
    stopped_by_user: bool = False
    started: float = 0.0
    finished: float = 0.0
    query: str = ""


class _RunHandle:
    def __init__(self, run_id: int, request: RunRequest | None, path: Path) -> None:
        self.run_id = run_id
        self.request = request
        self.path = path
        self.cancel = CancelToken()
        self.task: asyncio.Task[Any] | None = None
        self.lock = threading.Lock()
        self.buffer: list[TraceEvent | dict[str, Any]] = []
        self.stopped = False
        self.done = False
        self.started = time.time()


def new_trace_path(run_id: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return traces_dir() / f"run-{stamp}-{run_id}-{uuid.uuid4().hex[:6]}.jsonl"


class EngineBridge(QObject):
    """GUI-side face of the engine thread. Create and use it on the GUI thread."""

    events_ready = Signal(int)          # run id: its buffer went from empty to non-empty
    run_finished = Signal(object)       # RunOutcome

    _ids = itertools.count(1)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._engine: EngineThread | None = None
        self._runs: dict[int, _RunHandle] = {}
        preload_engine_modules()

    @property
    def engine(self) -> EngineThread:
        if self._engine is None or not self._engine.alive:
            self._engine = EngineThread()
        return self._engine

    # -- runs --------------------------------------------------------------------------------------
    def start_run(self, request: RunRequest) -> int:
        run_id = next(self._ids)
        path = request.trace_path or new_trace_path(run_id)
        handle = _RunHandle(run_id, request, path)
        self._runs[run_id] = handle
        log.info("run %d starting; trace %s", run_id, path)
        self.engine.submit(self._run(handle))
        return run_id

    def is_running(self, run_id: int) -> bool:
        h = self._runs.get(run_id)
        return h is not None and not h.done

    def trace_path(self, run_id: int) -> Path | None:
        h = self._runs.get(run_id)
        return h.path if h else None

    def stop(self, run_id: int, reason: str = "stopped by the user") -> None:
        """Cancel the run: the token kills its sandboxes and halts it; the task is cancelled too
        if it has not ended shortly after (a backstop)."""
        h = self._runs.get(run_id)
        if h is None or h.done:
            return
        h.stopped = True
        h.cancel.cancel(reason)
        if self._engine is not None:
            self._engine.call_soon(self._backstop, h)

    def stop_all(self) -> None:
        for run_id in list(self._runs):
            self.stop(run_id, "the application is closing")

    def take_events(self, run_id: int) -> list[TraceEvent | dict[str, Any]]:
        """Drain the buffered events of ``run_id`` (GUI thread)."""
        h = self._runs.get(run_id)
        if h is None:
            return []
        with h.lock:
            out, h.buffer = h.buffer, []
        return out

    def discard(self, run_id: int) -> None:
        """The GUI no longer shows ``run_id``: drop its buffered and future events."""
        h = self._runs.get(run_id)
        if h is not None:
            with h.lock:
                h.buffer = []

    def shutdown(self, timeout: float = 5.0) -> None:
        self.stop_all()
        if self._engine is not None:
            deadline = time.monotonic() + timeout
            while any(not h.done for h in self._runs.values()) and time.monotonic() < deadline:
                time.sleep(0.01)
            self._engine.shutdown(max(0.5, deadline - time.monotonic()))
            self._engine = None

    def mirror(self, trace: Trace) -> int:
        """Relay the events of ``trace`` (produced on any thread) under a new run id, exactly as a
        run's events are relayed. For traces produced outside the engine thread (benchmarks,
        tools); such a run is never "running" for :meth:`is_running`."""
        run_id = next(self._ids)
        h = _RunHandle(run_id, None, Path())
        h.done = True
        self._runs[run_id] = h
        self._relay(h, trace)
        return run_id

    def _relay(self, h: _RunHandle, trace: Trace) -> None:
        def listener(ev: TraceEvent, span: Span) -> None:
            # A copy through JSON: the GUI never shares mutable objects with the engine thread,
            # and it sees exactly what the file holds.
            self._push(h, TraceEvent.from_dict(json.loads(ev.to_json())))

        trace.subscribe(listener)
        trace.subscribe_header(lambda attrs: self._push(h, json.loads(json.dumps(attrs, default=str))))

    # -- engine thread -----------------------------------------------------------------------------
    def _backstop(self, h: _RunHandle) -> None:
        def cancel_task() -> None:
            if h.task is not None and not h.task.done():
                h.task.cancel()
        asyncio.get_running_loop().call_later(STOP_BACKSTOP_S, cancel_task)

    def _push(self, h: _RunHandle, item: TraceEvent | dict[str, Any]) -> None:
        with h.lock:
            was_empty = not h.buffer
            h.buffer.append(item)
        if was_empty:
            self.events_ready.emit(h.run_id)

    async def _run(self, h: _RunHandle) -> None:
        from rlm_desktop.engine.run import RunResult, run_rlm

        req = h.request
        assert req is not None
        header = {"query": req.config.query, "started": h.started, "run_id": h.run_id,
                  "models": {"root": req.config.root_model, "sub": req.config.sub_model},
                  "provider": req.provider_name, **req.header}
        trace = Trace(header)
        outcome = RunOutcome(h.run_id, h.path, None, started=h.started, query=req.config.query)
        writer: TraceWriter | None = None
        provider = sub_provider = None
        try:
            provider, sub_provider = await asyncio.get_running_loop().run_in_executor(None, req.providers)
        except ConfigError as exc:          # no key for a provider: said plainly, nothing ran
            outcome.error, outcome.not_started = str(exc), True
        except Exception as exc:            # a keyring that failed in an unexpected way
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            outcome.error, outcome.not_started = f"could not get the provider's key: {detail}", True
        if outcome.error is None and h.cancel.cancelled:
            outcome.error, outcome.not_started = "stopped before it started", True
        if outcome.error is None:
            try:
                writer = TraceWriter(h.path, header).attach(trace)
            except OSError as exc:
                outcome.error = (f"could not write the trace file {h.path}: {exc.strerror or exc}; "
                                 "check that the data folder is writable")
                outcome.not_started = True

        self._relay(h, trace)
        if outcome.error is None and provider is not None:
            h.task = asyncio.ensure_future(run_rlm(
                req.config, req.context, provider=provider, sub_provider=sub_provider,
                trace=trace, cancel=h.cancel))
            try:
                outcome.result = await h.task
            except asyncio.CancelledError:
                outcome.result = _result_from_trace(trace, RunResult, h.cancel.reason)
            except Exception as exc:   # a bug in the engine: report it, keep the trace consistent
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                outcome.error = (f"the run failed unexpectedly: {detail}. The trace is saved; "
                                 "please report this with the trace file")
                trace.end_open_spans(SpanStatus.ERROR, reason=outcome.error)
        if writer is not None:
            writer.close()
        outcome.stopped_by_user = h.stopped
        outcome.finished = time.time()
        h.done = True
        self.run_finished.emit(outcome)


def _result_from_trace(trace: Trace, result_cls: Any, reason: str | None) -> Any:
    """A RunResult for a run whose task was cancelled (run_rlm ended the trace, then re-raised)."""
    trace.end_open_spans(SpanStatus.CANCELLED, reason=reason or "cancelled")
    root = trace.roots[0] if trace.roots else None
    a = root.attributes if root is not None else {}
    cost = a.get(Attr.COST_USD)
    return result_cls(
        answer=a.get(Attr.ANSWER), status="cancelled", reason=reason or "cancelled",
        stop_reason="cancelled", cost_usd=cost, cost_known=bool(a.get(Attr.COST_KNOWN, cost is not None)),
        input_tokens=int(a.get(Attr.INPUT_TOKENS) or 0), output_tokens=int(a.get(Attr.OUTPUT_TOKENS) or 0),
        cached_tokens=int(a.get(Attr.CACHED_TOKENS) or 0), iterations=int(a.get(Attr.ITERATIONS) or 0),
        sub_calls=int(a.get(Attr.SUB_CALLS) or 0), isolation=trace.header.get("isolation"))
