"""The REPL worker: a child process that hardens itself, then runs model-written cells.

Started by :mod:`rlm_desktop.sandbox.host` as ``python -I -S -B -c BOOT FD N RFD WFD HOST_PID``:
the boot code reads this package's worker modules as marshalled code from the host (no source
compile, no import from disk), then :func:`main` reads the init frame, applies the isolation layers
(:mod:`rlm_desktop.sandbox.harden`) *before* any untrusted code exists in the process, and serves
``run`` frames. It imports only builtin/C modules before it is ready (fast cold start).
"""

from __future__ import annotations

import _thread
import builtins
import os
import sys
import time
from _queue import SimpleQueue

from rlm_desktop.sandbox.wire import MAX_WORKER_FRAME, MarshalReader, encode_json_frame

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# ast.PyCF_ALLOW_TOP_LEVEL_AWAIT and inspect.CO_COROUTINE (stable since 3.8; a test checks them),
# spelled out so the worker does not import ast/inspect before it is ready.
PYCF_ALLOW_TOP_LEVEL_AWAIT = 0x2000
CO_COROUTINE = 0x0080
FINAL_CAP = 3_000_000          # characters of a FINAL value sent back (≤ 12 MB: fits a frame)
ERROR_CAP = 64_000             # characters of a traceback sent back
FLUSH_BYTES = 16_384           # send buffered output once this much is pending …
FLUSH_DELAY_S = 0.03           # … or this long after the first pending write


class SubCallError(RuntimeError):
    """A sub-call (llm_query / rlm_query) failed on the host side; the message says why."""


def _rlm_query_unavailable(prompt: str = "", context: Any = None) -> str:
    """Stands in for rlm_query where nesting is not allowed, so the model gets a reason, not a NameError."""
    raise SubCallError("rlm_query is not available here: this run is already at its maximum nesting "
                       "depth (or nesting is off). Use llm_query / llm_query_batched on smaller "
                       "pieces instead.")


class _Stream:
    """sys.stdout / sys.stderr inside the worker: text goes to the host in coalesced frames."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, worker: Worker, name: str) -> None:
        self._worker = worker
        self.name = name

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s:
            self._worker.out_write(self.name, s)
        return len(s)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        return None

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def fileno(self) -> int:
        import io

        raise io.UnsupportedOperation("the REPL's output is not a file descriptor")

    @property
    def closed(self) -> bool:
        return False


class Worker:
    def __init__(self, rfd: int, wfd: int, init: dict[str, Any], reader: MarshalReader) -> None:
        self.rfd = rfd
        self.wfd = wfd
        self.reader = reader
        self.init = init
        self.cell: int | None = None
        self.final: dict[str, Any] | None = None
        self._wlock = _thread.allocate_lock()
        self._waiters: dict[int, Any] = {}
        self._wait_lock = _thread.allocate_lock()
        self._next_rid = 0
        self.commands: SimpleQueue[dict[str, Any]] = SimpleQueue()
        # Who reads the host pipe: the main thread while idle (a new cell starts with no thread
        # hop); during a cell that makes sub-calls, a helper thread, which parks again at its end.
        self._state_lock = _thread.allocate_lock()
        self._in_cell = False
        self._helper_active = False
        self._helper_go = _thread.allocate_lock()
        self._helper_go.acquire()
        self._helper_parked = _thread.allocate_lock()
        self._helper_parked.acquire()
        self._wake_r, self._wake_w = os.pipe()
        self._out_lock = _thread.allocate_lock()
        self._wake = _thread.allocate_lock()      # released to wake the flusher
        self._wake.acquire()
        self._wake_signalled = False
        self._pending: list[tuple[str, str]] = []
        self._pending_chars = 0
        self._out_sent = 0
        self._out_cap = int(init.get("output_cap", 1_000_000))
        self._truncated = False
        self._loop: Any = None
        self._sources: dict[str, str] = {}
        self.ns: dict[str, Any] = {}

    # -- sending ---------------------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        data = encode_json_frame(msg)
        if len(data) > MAX_WORKER_FRAME:
            # Only a request can get this big (the rest is capped): refuse it in the cell instead
            # of sending a frame the host would treat as a protocol violation.
            raise ValueError(f"{msg.get('kind', 'message')} too large to send: {len(data):,} bytes "
                             f"(the limit is {MAX_WORKER_FRAME:,}); split it into smaller sub-calls")
        with self._wlock:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self.wfd, view)
                except BlockingIOError:       # model code made the pipe non-blocking: wait
                    _wait_fd(self.wfd, write=True)
                    continue
                except OSError:
                    os._exit(3)       # the host is gone or the pipe was closed by model code
                view = view[n:]

    # -- output ----------------------------------------------------------------------------------
    def out_write(self, stream: str, s: str) -> None:
        with self._out_lock:
            room = self._out_cap - self._out_sent - self._pending_chars
            if room <= 0:
                self._truncated = True
                return
            if len(s) > room:
                s = s[:room]
                self._truncated = True
            self._pending.append((stream, s))
            self._pending_chars += len(s)
            if self._pending_chars >= FLUSH_BYTES:
                self._flush_locked()
            elif not self._wake_signalled:
                self._wake_signalled = True
                self._wake.release()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        cell = self.cell
        groups: list[tuple[str, list[str]]] = []
        for stream, s in self._pending:
            if groups and groups[-1][0] == stream:
                groups[-1][1].append(s)
            else:
                groups.append((stream, [s]))
        self._out_sent += self._pending_chars
        self._pending = []
        self._pending_chars = 0
        for stream, parts in groups:
            self.send({"t": "out", "cell": cell, "s": stream, "d": "".join(parts)})

    def flush_output(self) -> None:
        with self._out_lock:
            self._flush_locked()

    def _flusher(self) -> None:
        while True:
            self._wake.acquire()                 # until some output is pending
            time.sleep(FLUSH_DELAY_S)            # coalesce small writes
            with self._out_lock:
                self._wake_signalled = False
                self._flush_locked()

    # -- host responses --------------------------------------------------------------------------
    def _dispatch(self, msg: dict[str, Any]) -> None:
        """A host frame: responses wake their waiter; anything else is queued for the main loop."""
        if msg.get("t") == "resp":
            with self._wait_lock:
                cb = self._waiters.pop(msg.get("id"), None)
            if cb is not None:
                ok = bool(msg.get("ok"))
                cb(ok, msg.get("value") if ok else msg.get("error"))
        else:
            self.commands.put(msg)

    def _read_or_die(self) -> dict[str, Any]:
        try:
            msg = self.reader.read()
        except (OSError, ValueError, EOFError, TypeError):
            msg = None
        if msg is None:
            os._exit(0)               # the host went away (or the pipe was closed): die with it
        return msg

    def _ensure_reader(self) -> None:
        """Called before a request is sent: during a cell, get the helper thread reading."""
        with self._state_lock:
            if self._in_cell and not self._helper_active:
                self._helper_active = True
                self._helper_go.release()

    def _helper(self) -> None:
        import select

        while True:
            self._helper_go.acquire()
            while True:
                if not self.reader.has_frame():
                    try:
                        ready, _, _ = select.select([self.rfd, self._wake_r], [], [])
                    except (OSError, ValueError):
                        os._exit(3)
                    if self._wake_r in ready:
                        os.read(self._wake_r, 64)
                        break
                self._dispatch(self._read_or_die())
            self._helper_parked.release()

    def _park_helper(self) -> None:
        with self._state_lock:
            self._in_cell = False
            active = self._helper_active
        if active:
            os.write(self._wake_w, b"x")
            self._helper_parked.acquire()
            with self._state_lock:
                self._helper_active = False

    def _send_request(self, rid: int, kind: str, payload: dict[str, Any]) -> None:
        try:
            self.send({"t": "req", "cell": self.cell, "id": rid, "kind": kind, "payload": payload})
        except BaseException:
            with self._wait_lock:
                self._waiters.pop(rid, None)
            raise

    def _register(self, cb: Any) -> int:
        with self._wait_lock:
            self._next_rid += 1
            rid = self._next_rid
            self._waiters[rid] = cb
        return rid

    def request(self, kind: str, payload: dict[str, Any]) -> Any:
        ev = _thread.allocate_lock()
        ev.acquire()
        box: list[tuple[bool, Any]] = []

        def done(ok: bool, value: Any) -> None:
            box.append((ok, value))
            ev.release()

        rid = self._register(done)
        self._ensure_reader()
        self._send_request(rid, kind, payload)
        ev.acquire()
        ok, value = box[0]
        if not ok:
            raise SubCallError(f"{kind} failed: {value}")
        return value

    async def request_async(self, kind: str, payload: dict[str, Any]) -> Any:
        import asyncio

        loop = asyncio.get_running_loop()
        fut = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if fut.done():
                return
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(SubCallError(f"{kind} failed: {value}"))

        def done(ok: bool, value: Any) -> None:
            loop.call_soon_threadsafe(settle, ok, value)

        rid = self._register(done)
        self._ensure_reader()
        self._send_request(rid, kind, payload)
        return await fut

    # -- the REPL namespace ----------------------------------------------------------------------
    def build_namespace(self, context: Any, rlm_query_enabled: bool) -> None:
        w = self

        def _prompt(prompt: Any, what: str = "prompt") -> str:
            if not isinstance(prompt, str):
                raise TypeError(f"{what} must be a str, not {type(prompt).__name__}")
            return prompt

        def _model(model: Any) -> str | None:
            if model is not None and not isinstance(model, str):
                raise TypeError(f"model must be a str or None, not {type(model).__name__}")
            return model

        def _prompts(prompts: Any) -> list[str]:
            if isinstance(prompts, str | bytes) or not hasattr(prompts, "__iter__"):
                raise TypeError("prompts must be a list of str")
            out = list(prompts)
            for i, p in enumerate(out):
                _prompt(p, f"prompts[{i}]")
            return out

        def _context(ctx: Any) -> Any:
            if ctx is None or isinstance(ctx, str):
                return ctx
            if isinstance(ctx, dict) and all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in ctx.items()):
                return dict(ctx)
            raise TypeError("context must be None, a str, or a dict of str to str")

        def llm_query(prompt: str, model: str | None = None) -> str:
            """Ask a sub-model one question; returns its answer."""
            return w.request("llm_query", {"prompt": _prompt(prompt), "model": _model(model)})

        def llm_query_batched(prompts: list[str], model: str | None = None) -> list[str]:
            """Ask several questions concurrently; answers in the same order (errors as text)."""
            return w.request("llm_query_batched", {"prompts": _prompts(prompts), "model": _model(model)})

        async def llm_query_async(prompt: str, model: str | None = None) -> str:
            return await w.request_async("llm_query", {"prompt": _prompt(prompt), "model": _model(model)})

        async def llm_query_batched_async(prompts: list[str], model: str | None = None) -> list[str]:
            return await w.request_async("llm_query_batched",
                                         {"prompts": _prompts(prompts), "model": _model(model)})

        def rlm_query(prompt: str, context: Any = None) -> str:
            """Run a nested RLM on ``context`` (default: a fresh run over this prompt alone)."""
            return w.request("rlm_query", {"prompt": _prompt(prompt), "context": _context(context)})

        async def rlm_query_async(prompt: str, context: Any = None) -> str:
            return await w.request_async("rlm_query", {"prompt": _prompt(prompt),
                                                       "context": _context(context)})

        def FINAL(value: Any) -> None:  # noqa: N802 - the name models are told to use
            """Deliver the final answer."""
            text = value if isinstance(value, str) else str(value)
            if len(text) > FINAL_CAP:
                text = text[:FINAL_CAP] + "\n[final answer truncated]"
            w.final = {"value": text, "via": "FINAL", "var_name": None}

        def FINAL_VAR(name: Any) -> None:  # noqa: N802
            """Deliver the value of the variable called ``name`` as the final answer."""
            if not isinstance(name, str):
                raise TypeError("FINAL_VAR takes the variable's name as a string, e.g. FINAL_VAR('answer')")
            key = name.strip().strip("'\"")
            if key not in w.ns:
                raise NameError(f"FINAL_VAR: there is no variable named {key!r}; assign it first")
            FINAL(w.ns[key])
            assert w.final is not None
            w.final = {**w.final, "via": "FINAL_VAR", "var_name": key}

        def SHOW_VARS() -> dict[str, str]:  # noqa: N802
            """List the variables defined so far (name → type)."""
            hidden = set(reserved) | {"__name__", "__builtins__", "__doc__"}
            found = {k: type(v).__name__ for k, v in w.ns.items()
                     if k not in hidden and not k.startswith("_")}
            found = {"context": type(w.ns.get("context")).__name__, **found}
            print(", ".join(f"{k}: {v}" for k, v in found.items()))
            return found

        reserved: dict[str, Any] = {
            "llm_query": llm_query, "llm_query_batched": llm_query_batched,
            "llm_query_async": llm_query_async, "llm_query_batched_async": llm_query_batched_async,
            "FINAL": FINAL, "FINAL_VAR": FINAL_VAR, "SHOW_VARS": SHOW_VARS,
        }
        if rlm_query_enabled:
            reserved["rlm_query"] = rlm_query
            reserved["rlm_query_async"] = rlm_query_async
        else:
            reserved["rlm_query"] = reserved["rlm_query_async"] = _rlm_query_unavailable
        self.ns.update({"__name__": "__main__", "__builtins__": builtins, "__doc__": None,
                        "context": context, **reserved})

    # -- running cells ---------------------------------------------------------------------------
    def run_cell(self, cid: int, code: str) -> None:
        self.cell = cid
        self.final = None
        with self._out_lock:
            self._out_sent = 0
            self._truncated = False
        ok = True
        error: str | None = None
        filename = f"<cell {cid}>"
        try:
            if not isinstance(code, str):
                raise TypeError("cell code must be text")
            self._sources[filename] = code
            if len(self._sources) > 200:
                self._sources.pop(next(iter(self._sources)))
            co = compile(code, filename, "exec", flags=PYCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
            if co.co_flags & CO_COROUTINE:
                self._event_loop().run_until_complete(eval(co, self.ns))
            else:
                exec(co, self.ns)
        except BaseException as exc:  # noqa: BLE001 - model code may raise anything, SystemExit too
            ok = False
            try:
                error = _format_exception(exc, self._sources)
            except BaseException:  # noqa: BLE001 - e.g. no file descriptors or memory left to format
                error = f"{type(exc).__name__}: {exc}"[:ERROR_CAP]
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException as exc:  # noqa: BLE001 - model code may have replaced the streams
            error = (error or "") + f"\n(flushing output failed: {exc!r})"
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        self.flush_output()
        self.send({"t": "done", "cell": cid, "ok": ok, "error": error[:ERROR_CAP] if error else None,
                   "final": self.final, "trunc": self._truncated})
        self.cell = None

    def _event_loop(self) -> Any:
        import asyncio

        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()
        return self._loop

    def serve(self) -> None:
        from _queue import Empty

        self.stdout = _Stream(self, "stdout")
        self.stderr = _Stream(self, "stderr")
        sys.stdout = self.stdout
        sys.stderr = self.stderr
        _thread.start_new_thread(self._helper, ())
        _thread.start_new_thread(self._flusher, ())
        watchdog = not sys.platform.startswith("linux")   # no PR_SET_PDEATHSIG: read in every cell
        while True:
            try:
                msg = self.commands.get_nowait()
            except Empty:
                msg = self._read_or_die()
            t = msg.get("t")
            if t == "run":
                with self._state_lock:
                    self._in_cell = True
                if watchdog:
                    self._ensure_reader()
                try:
                    self.run_cell(int(msg["id"]), msg.get("code"))
                finally:
                    self._park_helper()
            elif t == "resp":
                self._dispatch(msg)       # answer to a thread that outlived its cell
            elif t == "shutdown":
                self.flush_output()
                os._exit(0)


def _wait_fd(fd: int, *, write: bool) -> None:
    import select

    try:
        select.select([], [fd], []) if write else select.select([fd], [], [])
    except (OSError, ValueError):
        os._exit(3)


def _format_exception(exc: BaseException, sources: dict[str, str]) -> str:
    import linecache
    import traceback

    for name, code in sources.items():
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    tb = exc.__traceback__
    # Drop the worker's own frames: the model only needs its cell's.
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell"):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)).rstrip()


def _read_context(reader: MarshalReader, kind: Any) -> str | dict[str, str]:
    """The ``ctx`` frames that follow the init frame, up to ``ctx_end``: read here, after the
    isolation is in force (so only this process ever holds the documents), one frame at a time."""
    pieces: list[str] = []
    docs: dict[str, str] = {}
    while True:
        msg = reader.read()
        if msg is None:
            os._exit(0)                   # the host went away
        t = msg.get("t")
        if t == "ctx_end":
            break
        if t != "ctx":
            os._exit(5)
        if kind == "str":
            pieces.append(msg["text"])
        else:
            docs.update(msg["items"])
        del msg
    return "".join(pieces) if kind == "str" else docs


def main(argv: list[str]) -> None:
    rfd, wfd, host_pid = int(argv[0]), int(argv[1]), int(argv[2])
    from rlm_desktop.sandbox import harden

    harden.die_with_parent(host_pid)
    import faulthandler

    faulthandler.enable(all_threads=False)   # a crash leaves its reason on fd 2, which the host captures
    reader = MarshalReader(rfd)
    init = reader.read()
    if init is None or init.get("t") != "init":
        os._exit(5)
    worker = Worker(rfd, wfd, init, reader)
    try:
        report = harden.apply(init, worker.send)
    except harden.HardeningError as exc:
        worker.send({"t": "fatal", "error": str(exc), "layer": exc.layer})
        os._exit(6)
    # From here on only the hardened process runs. Make the Python packages importable.
    sys.path[:] = [p for p in init.get("sys_path", []) if isinstance(p, str)]
    sys.argv = [""]
    worker.build_namespace(_read_context(reader, init.get("context_type")), bool(init.get("rlm_query")))
    worker.send({"t": "ready", "pid": os.getpid(), "report": report})
    try:
        worker.serve()
    except BaseException as exc:  # noqa: BLE001 - the worker itself failed: say why on fd 2, then exit
        try:
            import traceback

            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except BaseException:  # noqa: BLE001
            text = repr(exc)
        os.write(2, f"rlm worker internal error: {text}".encode("utf-8", "replace")[-8000:])
        os._exit(70)
