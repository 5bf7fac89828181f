"""The engine thread (its own asyncio loop) and the bridge that carries a session's trace events to
the GUI: a thin adapter over :class:`rlm_desktop.session.Session`.

The engine loop owns one ``Session`` per window session (keyed by an id the GUI picks); a question is
``await session.run_turn(...)`` on that loop — the session writes the trace header, the file, the
history entry and the outcome. The bridge subscribes to the session's Trace for the turn and copies
every event into a per-run buffer; it tells the GUI through a queued signal that a buffer has
events, and the GUI drains it on its own schedule. Stop cancels the token (kills sandboxes, halts
the turn), then the turn's task as a backstop. Events of a run the GUI no longer shows are
discarded by run id. Sessions are closed (``aclose``) on the engine loop.
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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.config import ConfigError, ProviderConfig, RunLimits
from rlm_desktop.core.trace import Attr, Span, SpanStatus, Trace, TraceEvent

if TYPE_CHECKING:
    from rlm_desktop.core.documents import DocumentSet
    from rlm_desktop.session.session import Session, TurnResult

log = logging.getLogger(__name__)

# Modules the engine imports lazily during its first run, imported when the bridge is created so
# the first Run starts at once (PySide6's import hook makes each import slower once Qt is loaded).
_PRELOAD = (
    "rlm_desktop.engine.run", "rlm_desktop.engine.providers", "rlm_desktop.session.session", "rlm_desktop.engine.demo",
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
class TurnRequest:
    """One question of a window session, prepared on the GUI thread.

    ``providers`` returns the root and (when different) the sub provider with their keys; it is
    called on a worker thread (a keyring may wait for an unlock prompt) and only when the session
    is not open yet; it may raise ConfigError (no key) — the turn then never starts.
    ``open_session(root, sub)`` makes the :class:`Session` on the engine thread. ``added`` are
    document paths new since the last turn, ``documents`` every document loaded now."""

    session_id: int
    question: str
    limits: RunLimits
    providers: Callable[[], tuple[ProviderConfig, ProviderConfig | None]]
    open_session: Callable[[ProviderConfig, ProviderConfig | None], Session]
    trace_path: Path | None = None          # where a new named session's trace will be (for errors)
    added: tuple[str, ...] = ()
    documents: DocumentSet | None = None
    models: tuple[str, str] | None = None   # (root, sub): other models for an open session, from now on


@dataclass
class RunOutcome:
    """How a turn ended, as reported to the GUI (the session recorded it already)."""

    run_id: int
    trace_path: Path
    turn: TurnResult | None = None
    error: str | None = None      # an unexpected failure (the trace says the same)
    not_started: bool = False     # it failed before anything ran (no key): no trace was written
    stopped_by_user: bool = False
    started: float = 0.0
    finished: float = 0.0
    query: str = ""
    session_id: int = 0
    session: str | None = None    # the session's name (None: unnamed)
    turn_number: int = 0

    @property
    def result(self) -> Any | None:
        """The engine's RunResult of the turn (None when it did not run)."""
        return self.turn.run if self.turn is not None else self._result

    _result: Any | None = None    # a RunResult made from the trace when the task was cancelled


class _RunHandle:
    def __init__(self, run_id: int, request: TurnRequest | None, path: Path) -> None:
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


class EngineBridge(QObject):
    """GUI-side face of the engine thread. Create and use it on the GUI thread."""

    events_ready = Signal(int)          # run id: its buffer went from empty to non-empty
    run_finished = Signal(object)       # RunOutcome

    _ids = itertools.count(1)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._engine: EngineThread | None = None
        self._runs: dict[int, _RunHandle] = {}
        self._sessions: dict[int, Session] = {}     # engine thread only
        self._turns: dict[int, asyncio.Task[Any]] = {}   # engine thread only: a session's running turn
        self._closing: set[asyncio.Task[Any]] = set()     # engine thread only: sessions being closed
        preload_engine_modules()

    @property
    def engine(self) -> EngineThread:
        if self._engine is None or not self._engine.alive:
            self._engine = EngineThread()
        return self._engine

    # -- turns -------------------------------------------------------------------------------------
    def start_turn(self, request: TurnRequest) -> int:
        run_id = next(self._ids)
        handle = _RunHandle(run_id, request, request.trace_path or Path("(not written yet)"))
        self._runs[run_id] = handle
        log.info("run %d starting (window session %d)", run_id, request.session_id)
        self.engine.submit(self._run(handle))
        return run_id

    def close_session(self, session_id: int) -> concurrent.futures.Future[Any] | None:
        """Close a window session on the engine loop (its REPL stops, its trace file closes)."""
        if self._engine is None or not self._engine.alive:
            return None
        async def close() -> None:
            task = asyncio.ensure_future(self._close_session(session_id))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
            await task
        return self._engine.submit(close())

    def is_running(self, run_id: int) -> bool:
        h = self._runs.get(run_id)
        return h is not None and not h.done

    def trace_path(self, run_id: int) -> Path | None:
        h = self._runs.get(run_id)
        return h.path if h else None

    def stop(self, run_id: int, reason: str = "stopped by the user") -> None:
        """Cancel the turn: the token kills its sandboxes and halts it; the task is cancelled too
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
            if self._engine.alive:
                try:
                    self._engine.submit(self._close_all()).result(max(0.5, deadline - time.monotonic()))
                except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError, RuntimeError):
                    log.warning("sessions did not close in time; their REPLs are killed")
                    for s in list(self._sessions.values()):
                        s.abandon("the application closed")
            self._engine.shutdown(max(0.5, deadline - time.monotonic()))
            self._engine = None

    def mirror(self, trace: Trace) -> int:
        """Relay the events of ``trace`` (produced on any thread) under a new run id, exactly as a
        turn's events are relayed. For traces produced outside the engine thread (benchmarks,
        tools); such a run is never "running" for :meth:`is_running`."""
        run_id = next(self._ids)
        h = _RunHandle(run_id, None, Path())
        h.done = True
        self._runs[run_id] = h
        self._relay(h, trace)
        return run_id

    def _relay(self, h: _RunHandle, trace: Trace) -> Callable[[], None]:
        def listener(ev: TraceEvent, span: Span) -> None:
            # A copy through JSON: the GUI never shares mutable objects with the engine thread,
            # and it sees exactly what the file holds.
            self._push(h, TraceEvent.from_dict(json.loads(ev.to_json())))

        def on_header(attrs: dict[str, Any]) -> None:
            if not h.done:
                self._push(h, json.loads(json.dumps(attrs, default=str)))

        self._push(h, json.loads(json.dumps(trace.header, default=str)))
        trace.subscribe_header(on_header)
        return trace.subscribe(listener)

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

    async def _close_session(self, session_id: int) -> None:
        task = self._turns.get(session_id)
        if task is not None and not task.done():      # a stopped turn finishes writing first
            await asyncio.wait([task])
        s = self._sessions.pop(session_id, None)
        if s is not None:
            await s.aclose()

    async def _close_all(self) -> None:
        for sid in list(self._sessions):
            await self._close_session(sid)

    async def _session_for(self, h: _RunHandle) -> Session:
        """The window session's Session, opened (keys read off the loop) on its first turn."""
        req = h.request
        assert req is not None
        loop = asyncio.get_running_loop()
        session = self._sessions.get(req.session_id)
        if session is None:
            if self._closing:          # a session closing now releases its lock (Continue reopens it)
                await asyncio.wait(list(self._closing))
            provider, sub_provider = await loop.run_in_executor(None, req.providers)
            session = await loop.run_in_executor(None, req.open_session, provider, sub_provider)
            self._sessions[req.session_id] = session
        elif req.added:
            await loop.run_in_executor(None, lambda: session.add_documents(list(req.added),
                                                                           documents=req.documents))
        return session

    async def _run(self, h: _RunHandle) -> None:
        from rlm_desktop.session.session import SessionError, turns_from_trace
        from rlm_desktop.session.store import SessionBusy

        req = h.request
        assert req is not None
        outcome = RunOutcome(h.run_id, h.path, started=h.started, query=req.question,
                             session_id=req.session_id)
        session: Session | None = None
        try:
            session = await self._session_for(h)
            if h.cancel.cancelled:
                outcome.error, outcome.not_started = "stopped before it started", True
        except ConfigError as exc:          # no key for a provider: said plainly, nothing ran
            outcome.error, outcome.not_started = str(exc), True
        except (SessionBusy, SessionError) as exc:
            outcome.error, outcome.not_started = str(exc), True
        except OSError as exc:
            outcome.error = f"could not open the session: {exc.strerror or exc}"
            outcome.not_started = True
        except Exception as exc:            # a keyring (or loader) that failed in an unexpected way
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            outcome.error, outcome.not_started = f"could not open the session: {detail}", True
        trace: Trace | None = None
        if session is not None and outcome.error is None:
            outcome.session = session.name
            try:
                trace = session.open_trace(req.question)
                h.path = outcome.trace_path = session.trace_path
            except OSError as exc:
                outcome.error = (f"could not write the trace file {session.trace_path}: "
                                 f"{exc.strerror or exc}; check that the data folder is writable")
                outcome.not_started = True
        if session is not None and trace is not None and outcome.error is None:
            unsubscribe = self._relay(h, trace)
            outcome.turn_number = session.turn_count + 1
            model, sub_model = req.models or (None, None)
            h.task = asyncio.ensure_future(session.run_turn(req.question, cancel=h.cancel,
                                                            limits=req.limits, model=model,
                                                            sub_model=sub_model))
            self._turns[req.session_id] = h.task
            try:
                outcome.turn = await h.task
            except asyncio.CancelledError:
                outcome._result = _result_from_trace(trace, outcome.turn_number, h.cancel.reason)
                session.turns = turns_from_trace(trace)[0]     # the cancelled turn counts
            except Exception as exc:   # a bug in the engine: report it, keep the trace consistent
                detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                outcome.error = (f"the turn failed unexpectedly: {detail}. The trace is saved; "
                                 "please report this with the trace file")
                trace.end_open_spans(SpanStatus.ERROR, reason=outcome.error)
            finally:
                unsubscribe()
                self._turns.pop(req.session_id, None)
        outcome.stopped_by_user = h.stopped
        outcome.finished = time.time()
        h.done = True
        self.run_finished.emit(outcome)


def _result_from_trace(trace: Trace, turn: int, reason: str | None) -> Any:
    """A RunResult for a turn whose task was cancelled (run_rlm ended the trace, then re-raised)."""
    from rlm_desktop.engine.run import RunResult

    trace.end_open_spans(SpanStatus.CANCELLED, reason=reason or "cancelled")
    root = next((r for r in reversed(trace.roots) if r.attributes.get(Attr.TURN) == turn),
                trace.roots[-1] if trace.roots else None)
    a = root.attributes if root is not None else {}
    cost = a.get(Attr.COST_USD)
    return RunResult(
        answer=a.get(Attr.ANSWER), status="cancelled", reason=reason or "cancelled",
        stop_reason="cancelled", cost_usd=cost, cost_known=bool(a.get(Attr.COST_KNOWN, cost is not None)),
        input_tokens=int(a.get(Attr.INPUT_TOKENS) or 0), output_tokens=int(a.get(Attr.OUTPUT_TOKENS) or 0),
        cached_tokens=int(a.get(Attr.CACHED_TOKENS) or 0), iterations=int(a.get(Attr.ITERATIONS) or 0),
        sub_calls=int(a.get(Attr.SUB_CALLS) or 0), isolation=trace.header.get("isolation"))
