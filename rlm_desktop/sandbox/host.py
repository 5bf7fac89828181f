"""Host side of the REPL sandbox: spawn the worker, talk to it over pipes, watch it, restart it.

The engine uses only :class:`Sandbox`. Everything that crosses from the worker is untrusted:
frames are size-capped and validated, requests are matched by id, output is capped, and any
violation kills the worker's whole process group and starts a fresh one.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import itertools
import logging
import marshal
import os
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_desktop.core.config import SandboxLimits
from rlm_desktop.sandbox.api import (
    CellResult,
    FinalValue,
    IsolationLevel,
    IsolationReport,
    OutputHandler,
    RequestHandler,
    SandboxError,
    SandboxRefused,
    SubRequest,
)
from rlm_desktop.sandbox.measure import measure_isolation, refusal_message
from rlm_desktop.sandbox.protocol import (
    MAX_FRAME_FROM_WORKER,
    WORKER_TYPES,
    FrameDecoder,
    ProtocolError,
    clean_text,
    encode_host_frame,
)

log = logging.getLogger(__name__)

_PKG_ROOT = str(Path(__file__).resolve().parents[2])      # the directory that holds rlm_desktop/
# The worker's first act: read its own modules as marshalled code from the pipe (compiled once by
# the host; nothing imported from disk, no bytecode cache to poison), then run worker.main.
_BOOT = """import sys,os,marshal
f=int(sys.argv[1]);n=int(sys.argv[2]);b=bytearray()
while len(b)<n:
 c=os.read(f,n-len(b))
 if not c:os._exit(0)
 b+=c
M=type(sys)
for name,path,code in marshal.loads(b):
 m=M(name);m.__file__=path;sys.modules[name]=m
 p,_,s=name.rpartition('.')
 if p:setattr(sys.modules[p],s,m)
 if code is None:m.__path__=[]
 else:exec(code,m.__dict__)
del b,M,m,p,s,f,n,name,path,code
sys.modules['rlm_desktop.sandbox.worker'].main(sys.argv[3:])
"""
_WORKER_MODULES = ("wire", "seccomp", "harden", "worker")
START_TIMEOUT_S = 30.0
MAX_REQUESTS_IN_FLIGHT = 256
MAX_BATCH = 10_000
STDERR_TAIL = 4096
EOF_GRACE_S = 0.5
_ids = itertools.count(1)

PR_SET_DUMPABLE = 4


@functools.lru_cache(maxsize=1)
def _worker_code() -> bytes:
    """The worker's modules, compiled once per app process and marshalled for the boot code."""
    here = Path(__file__).resolve().parent
    mods: list[tuple[str, str, Any]] = [("rlm_desktop", "", None), ("rlm_desktop.sandbox", "", None)]
    for short in _WORKER_MODULES:
        path = here / f"{short}.py"
        code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        mods.append((f"rlm_desktop.sandbox.{short}", str(path), code))
    return marshal.dumps(mods)


# The context crosses to the worker in frames of about this many characters of text (a document
# bigger than that goes alone in its frame): the worker holds at most one frame besides the text.
CONTEXT_FRAME_CHARS = 1 << 20
PIPE_SIZE = 1 << 20        # host → worker pipe buffer asked for (Linux; 64 KiB otherwise)


def context_frames(context: str | dict[str, str]) -> Iterator[bytes]:
    """The frames that carry ``context`` after the init frame, made one at a time: ``ctx`` frames
    with a piece of text (``text``) or a batch of ``[name, text]`` pairs (``items``), then
    ``ctx_end``."""
    if isinstance(context, str):
        for i in range(0, len(context), CONTEXT_FRAME_CHARS):
            yield encode_host_frame({"t": "ctx", "text": context[i:i + CONTEXT_FRAME_CHARS]})
    else:
        batch: list[tuple[str, str]] = []
        chars = 0
        for name, text in context.items():
            if batch and chars + len(text) > CONTEXT_FRAME_CHARS:
                yield encode_host_frame({"t": "ctx", "items": batch})
                batch, chars = [], 0
            batch.append((name, text))
            chars += len(text)
        if batch:
            yield encode_host_frame({"t": "ctx", "items": batch})
    yield encode_host_frame({"t": "ctx_end"})


def _widen_pipe(fd: int) -> None:
    """Ask for a bigger pipe buffer (fewer wake-ups while the context crosses); best effort."""
    import fcntl

    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_SIZE)


SCRATCH_PREFIX = "rlm-sandbox-"
LOCK_FILE = "lock"
# A folder without a lock file is either being created (the lock file appears, already locked, a
# moment after the folder) or was left by an app that died in that moment or by an older version
# of the app. Only the age of such a folder can tell: it is removed after a day.
UNLOCKED_STALE_AFTER_S = 24 * 3600


def _try_lock(fd: int) -> bool:
    """Take the exclusive advisory lock on ``fd`` without waiting; False when another holds it."""
    import fcntl  # POSIX only; the sandbox refuses Windows anyway

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def create_locked_scratch(tmpdir: str | None = None) -> tuple[str, int]:
    """Create a ``rlm-sandbox-*`` folder owned by this process: returns (path, lock fd).

    Ownership is an advisory lock (``flock``) on the folder's lock file, held through the returned
    fd for as long as the folder is used: the kernel drops it when the process dies, however it
    dies, and a live process keeps it whatever PID namespace it is seen from. The lock file is
    locked under a temporary name and then renamed into place, so no one ever sees a lock file
    that is not locked yet. The fd is close-on-exec: no worker inherits (or can release) it."""
    root = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=tmpdir)
    try:
        pending = os.path.join(root, LOCK_FILE + ".new")
        fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        if not _try_lock(fd):                  # nobody else can know this file yet
            raise OSError(f"could not lock {pending}")
        os.rename(pending, os.path.join(root, LOCK_FILE))
    except OSError:
        os.close(fd)
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root, fd


def sweep_stale_scratch(tmpdir: str | None = None) -> list[str]:
    """Remove scratch folders whose owner is gone (killed, crashed, power loss).

    Only folders named ``rlm-sandbox-*``, really folders (not links), owned by this user, are
    considered. One whose lock file's lock can be taken has no living owner: it is removed while
    the lock is held, so no one else removes or reuses it meanwhile. One without a lock file is
    being created (or was left mid-creation, or by an older version): removed only after a day.
    Returns what was removed."""
    base = tmpdir or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(base) if n.startswith(SCRATCH_PREFIX)]
    except OSError:
        return removed
    uid = os.getuid()
    for name in names:
        path = os.path.join(base, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            continue
        lock_path = os.path.join(path, LOCK_FILE)
        try:
            fd = os.open(lock_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            if time.time() - st.st_mtime > UNLOCKED_STALE_AFTER_S:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
            continue
        except OSError:
            continue
        try:
            if not _try_lock(fd):
                continue                        # its owner lives
            # Still this folder's lock file (not one that was removed and replaced meanwhile)?
            try:
                now = os.lstat(lock_path)
            except OSError:
                continue
            held = os.fstat(fd)
            if (now.st_ino, now.st_dev) != (held.st_ino, held.st_dev):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        except OSError:
            continue
        finally:
            os.close(fd)                        # after the removal: the lock covered it
    return removed


def harden_host_process() -> bool:
    """Mark the app process non-dumpable (Linux): other processes of the same user can then not
    read its memory or ``/proc/<pid>/environ`` (where API keys live). Safe to call repeatedly;
    returns True when in force. Call it at app/CLI start-up; :meth:`Sandbox.start` calls it too."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return False
    return libc.prctl(3, 0, 0, 0, 0) == 0          # PR_GET_DUMPABLE


def minimal_environment(scratch: str) -> dict[str, str]:
    """The worker's whole environment: nothing of the user's (no API keys, no tokens; HOME and
    TMPDIR point at the scratch directory)."""
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": scratch,
        "TMPDIR": scratch,
        "TZ": "UTC",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        # glibc gives every thread its own 64 MB malloc arena; under the address-space limit a
        # few dozen threads would exhaust it without using the memory. Two arenas are plenty.
        "MALLOC_ARENA_MAX": "2",
    }


def _python_paths() -> list[str]:
    """Import path for model code: the interpreter's stdlib and installed packages only (never the
    app's source checkout, the CWD or arbitrary PYTHONPATH entries, which Landlock would expose)."""
    prefixes = {os.path.realpath(p) + os.sep for p in
                (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    out = []
    for p in sys.path:
        if not p or not os.path.isabs(p) or not os.path.exists(p):
            continue
        real = os.path.realpath(p)
        # A source checkout is skipped; in a PyInstaller bundle that folder holds the stdlib too.
        if (real == os.path.realpath(_PKG_ROOT) and not getattr(sys, "frozen", False)
                and not real.endswith(("site-packages", "dist-packages"))):
            continue
        if real.endswith(("site-packages", "dist-packages")) or any(
                (real + os.sep).startswith(pre) for pre in prefixes):
            out.append(p)
    return out


@functools.lru_cache(maxsize=4)
def _read_paths_for(_key: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(_compute_read_paths())


def _read_paths() -> list[str]:
    return list(_read_paths_for(tuple(sys.path)))


def _compute_read_paths() -> list[str]:
    """What the worker may read (Landlock): the Python installation, packages, the worker's own
    code, system libraries. Not the user's home, not /etc (except the loader cache), not /proc."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *_python_paths(),
             os.path.dirname(os.path.realpath(__file__)), "/usr", "/etc/ld.so.cache",
             "/sys/devices/system/cpu"]
    if getattr(sys, "frozen", False):
        # PyInstaller keeps the bundled modules inside the executable itself.
        paths.append(os.path.realpath(sys.executable))
    seen: dict[str, None] = {}
    for p in paths:
        if os.path.exists(p):
            seen.setdefault(os.path.realpath(p), None)
    return list(seen)


DEV_PATHS = ["/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"]
# Layers a test can switch off (module attribute, not an environment variable: nothing outside
# the process can weaken the sandbox).
_DISABLED_LAYERS: frozenset[str] = frozenset()
_SIMULATE_FAILURE: str | None = None       # tests: make the worker fail a layer after unshare
# Layers that failed part-way on this machine (e.g. unshare allowed but mounting refused by an
# LSM): later sandboxes of this process skip them instead of failing again. Name → reason.
_BROKEN_LAYERS: dict[str, str] = {}


class _LayerFailed(SandboxError):
    def __init__(self, message: str, layer: str, detail: str) -> None:
        super().__init__(message)
        self.layer = layer
        self.detail = detail


def _exit_reason(returncode: int | None) -> str:
    if returncode is None:
        return "the worker stopped responding"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"the worker was killed by signal {name}"
    if 128 < returncode <= 128 + 64:       # the namespace launcher mirrors its child's signal
        try:
            return f"the worker was killed by signal {signal.Signals(returncode - 128).name}"
        except ValueError:
            pass
    return f"the worker exited with status {returncode}"


@dataclass
class _Cell:
    id: int
    on_request: RequestHandler
    on_output: OutputHandler | None
    cap: int
    done: asyncio.Future[tuple[str, Any]]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    nbytes: int = 0
    truncated: bool = False
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    in_flight: set[int] = field(default_factory=set)
    # The per-cell timeout counts the cell's own wall time: time during which at least one
    # sub-call is being served by the host (a slow model, a long batch) does not count, so a cell
    # is never killed, and its paid answers lost, for waiting on the provider. Sub-calls have
    # their own limits (call timeout, run timeout, budgets).
    started: float = 0.0
    waited: float = 0.0
    waiting_since: float | None = None
    timer: asyncio.TimerHandle | None = None

    def request_started(self, rid: int) -> None:
        if not self.in_flight:
            self.waiting_since = time.monotonic()
        self.in_flight.add(rid)

    def request_ended(self, rid: int) -> None:
        if rid not in self.in_flight:
            return
        self.in_flight.discard(rid)
        if not self.in_flight and self.waiting_since is not None:
            self.waited += time.monotonic() - self.waiting_since
            self.waiting_since = None

    def own_time(self, now: float) -> float:
        """Wall time since the cell started, less the time spent waiting for sub-calls."""
        waiting = self.waited + (now - self.waiting_since if self.waiting_since is not None else 0.0)
        return now - self.started - waiting

    def add_output(self, stream: str, text: str) -> None:
        if not text:
            return
        size = len(text.encode("utf-8", "replace"))
        room = self.cap - self.nbytes
        if room <= 0:
            self.truncated = True
            return
        if size > room:
            text = text.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
            size = room
            self.truncated = True
        self.nbytes += size
        (self.stdout if stream == "stdout" else self.stderr).append(text)
        if self.on_output is not None:
            try:
                self.on_output(stream, text)
            except Exception:
                log.exception("the on_output callback raised; output is still recorded")


class _Worker:
    """One worker process (or namespace launcher + worker) and its pipes."""

    def __init__(self, sandbox: Sandbox, loop: asyncio.AbstractEventLoop) -> None:
        self.sb = sandbox
        self.loop = loop
        self.proc: subprocess.Popen[bytes] | None = None
        self.inner_pid: int | None = None
        self.ready: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.exited: asyncio.Future[int] = loop.create_future()
        self.spawned: asyncio.Future[int] = loop.create_future()   # the namespace launcher's child
        self.dead_reason: str | None = None
        self.decoder = FrameDecoder(MAX_FRAME_FROM_WORKER, WORKER_TYPES)
        self._wbuf = bytearray()
        self._later: Iterator[bytes] | None = None     # frames still to make and send (context)
        self._fds: dict[str, int] = {}
        self._pidfd: int | None = None
        self.inner_pidfd: int | None = None
        self._poller: Any = None
        self._lock = threading.Lock()         # guards signalling against reaping
        self._reaped = False
        self.killed = False
        self._dec_out = codecs.getincrementaldecoder("utf-8")("replace")
        self._dec_err = codecs.getincrementaldecoder("utf-8")("replace")
        self.stderr_tail = ""

    # -- life cycle ------------------------------------------------------------------------------
    def spawn(self, init: dict[str, Any], later: Iterator[bytes] | None = None) -> None:
        """Start the process; write its code, the ``init`` frame, then the frames of ``later``
        (made one at a time as the pipe drains, so a big ``context`` is never all encoded at once)."""
        h2w_r, h2w_w = os.pipe()
        _widen_pipe(h2w_w)
        w2h_r, w2h_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        child_ends = (h2w_r, w2h_w, out_w, err_w)
        try:
            code = _worker_code()
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", "-c", _BOOT, str(h2w_r), str(len(code)),
                 str(h2w_r), str(w2h_w), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=out_w, stderr=err_w,
                pass_fds=(h2w_r, w2h_w), close_fds=True, start_new_session=True,
                env=minimal_environment(self.sb._scratch), cwd=self.sb._scratch,
            )
        except OSError as exc:
            for fd in (h2w_w, w2h_r, out_r, err_r):
                os.close(fd)
            raise SandboxError(f"could not start the sandbox worker ({sys.executable}): {exc}. "
                               "Check that this Python installation is intact.") from None
        finally:
            for fd in child_ends:
                os.close(fd)
        self._fds = {"h2w": h2w_w, "w2h": w2h_r, "out": out_r, "err": err_r}
        for fd in self._fds.values():
            os.set_blocking(fd, False)
        self.loop.add_reader(w2h_r, self._on_frames_readable)
        self.loop.add_reader(out_r, self._on_raw_readable, "stdout")
        self.loop.add_reader(err_r, self._on_raw_readable, "stderr")
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(self.proc.pid)
                self.loop.add_reader(self._pidfd, self._on_pidfd)
            except OSError:
                self._pidfd = None
        if self._pidfd is None:
            threading.Thread(target=self._wait_thread, daemon=True, name="rlm-sandbox-wait").start()
        self._wbuf += code
        self._wbuf += encode_host_frame(init)
        self._later = later
        self.loop.add_writer(h2w_w, self._on_writable)
        self._on_writable()

    def _wait_thread(self) -> None:
        """Where pidfds are missing (macOS): wait for the exit *without reaping* (WNOWAIT), so the
        pid stays ours until _on_exit reaps it under the lock that kill() takes."""
        assert self.proc is not None
        while True:
            try:
                os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                break
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._on_exit)

    def _on_pidfd(self) -> None:
        self.loop.remove_reader(self._pidfd)
        self._on_exit()

    def _on_exit(self) -> None:
        assert self.proc is not None
        with self._lock:
            rc = self.proc.wait()
            self._reaped = True
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        self._drain_raw()
        self._die(_exit_reason(rc))
        if not self.exited.done():
            self.exited.set_result(rc)

    def _eof_timeout(self) -> None:
        if self.dead_reason is None:
            self._drain_raw()
            self._die("the worker closed its message pipe")
            self.kill()

    def kill(self) -> None:
        """SIGKILL the worker's whole process group; safe from any thread, never hits a stranger:
        the group id is the worker's pid, which cannot be reused before we reap it."""
        with self._lock:
            self.killed = True
            if self.inner_pidfd is not None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self.inner_pidfd, signal.SIGKILL)
            if self.proc is None or self._reaped:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)

    async def stop(self) -> int | None:
        """Kill and wait for the exit; close every pipe."""
        self.kill()
        if self.proc is not None and not self.exited.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), 10)
        fd = self.inner_pidfd
        if fd is not None:                 # the process that ran model code is gone too
            gone = self.loop.create_future()
            self.loop.add_reader(fd, lambda: gone.done() or gone.set_result(None))
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(gone, 10)
            finally:
                self.loop.remove_reader(fd)
        self._close_fds()
        return self.proc.returncode if self.proc else None

    def _close_fds(self) -> None:
        with self._lock:
            fd, self.inner_pidfd = self.inner_pidfd, None
        if fd is not None:
            os.close(fd)
        for name, fd in list(self._fds.items()):
            if name != "h2w":
                self.loop.remove_reader(fd)
            else:
                self.loop.remove_writer(fd)
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()

    def _die(self, reason: str) -> None:
        if self.dead_reason is None:
            self.dead_reason = reason
        for fut in (self.ready, self.spawned):
            if not fut.done():
                fut.set_exception(SandboxError(self._startup_failure(self.dead_reason)))
                fut.exception()       # mark retrieved: nobody may be waiting for this one
        self.sb._worker_died(self, self.dead_reason)

    def _startup_failure(self, reason: str) -> str:
        tail = self.stderr_tail.strip()
        return (f"the sandbox worker failed to start: {reason}"
                + (f"; its last output was: {tail[-800:]}" if tail else "")
                + ". Check the Python installation; if it persists, report it with this message.")

    def violation(self, what: str) -> None:
        log.warning("sandbox %s: protocol violation: %s", self.sb.label, what)
        self._die(f"protocol violation ({what})")
        self.kill()

    # -- sending ---------------------------------------------------------------------------------
    def send(self, msg: dict[str, Any]) -> None:
        fd = self._fds.get("h2w")
        if fd is None or self.dead_reason is not None:
            return
        data = encode_host_frame(msg)
        if self._later is not None:              # behind the context frames still to be sent
            self._later = itertools.chain(self._later, (data,))
            return
        if self._wbuf:
            self._wbuf += data
            return
        try:
            n = os.write(fd, data)
        except BlockingIOError:
            n = 0
        except OSError:
            self._die("the worker closed its input pipe")
            self.kill()
            return
        if n < len(data):
            self._wbuf += data[n:]
            self.loop.add_writer(fd, self._on_writable)

    def _on_writable(self) -> None:
        fd = self._fds.get("h2w")
        if fd is None:
            return
        while True:
            if not self._wbuf and self._later is not None:
                nxt = next(self._later, None)
                if nxt is None:
                    self._later = None
                else:
                    self._wbuf += nxt
            if not self._wbuf:
                self.loop.remove_writer(fd)
                return
            try:
                n = os.write(fd, self._wbuf)
            except BlockingIOError:
                return
            except OSError:
                self.loop.remove_writer(fd)
                self._wbuf.clear()
                self._later = None
                self._die("the worker closed its input pipe")
                self.kill()
                return
            del self._wbuf[:n]
            if self._wbuf:
                return                             # the pipe is full: wait until it drains

    # -- receiving -------------------------------------------------------------------------------
    def _on_frames_readable(self) -> None:
        fd = self._fds.get("w2h")
        if fd is None:
            return
        try:
            data = os.read(fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # Usually the worker is exiting (crash, os._exit): give it a moment so the reason can
            # come from its exit status; a worker that merely closed the pipe is killed.
            self.loop.remove_reader(fd)
            if self.dead_reason is None:
                self.loop.call_later(EOF_GRACE_S, self._eof_timeout)
            return
        try:
            frames = self.decoder.feed(data)
        except ProtocolError as exc:
            self.loop.remove_reader(fd)
            self.violation(str(exc))
            return
        for msg in frames:
            if self.dead_reason is not None:
                return
            try:
                self.sb._on_frame(self, msg)
            except ProtocolError as exc:
                self.violation(str(exc))
                return

    def _on_raw_readable(self, stream: str) -> None:
        fd = self._fds.get("out" if stream == "stdout" else "err")
        if fd is None:
            return
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(fd)
            return
        self._raw(stream, data)

    def _raw(self, stream: str, data: bytes) -> None:
        dec = self._dec_out if stream == "stdout" else self._dec_err
        text = dec.decode(data)
        if stream == "stderr":
            self.stderr_tail = (self.stderr_tail + text)[-STDERR_TAIL:]
        self.sb._raw_output(self, stream, text)

    def _drain_raw(self) -> None:
        """Read what the worker wrote to fd 1/2 before its last frame (already in the pipe).
        One poll() finds out whether there is anything (the common case: nothing)."""
        fds = {fd: (stream, name) for stream, name in (("stdout", "out"), ("stderr", "err"))
               if (fd := self._fds.get(name)) is not None}
        if not fds:
            return
        if self._poller is None:
            self._poller = select.poll()
            for fd in fds:
                self._poller.register(fd, select.POLLIN)
        try:
            ready = [fd for fd, _ev in self._poller.poll(0) if fd in fds]
        except OSError:
            ready = list(fds)
        for fd in ready:
            stream, _name = fds[fd]
            for _ in range(64):
                try:
                    data = os.read(fd, 1 << 16)
                except (BlockingIOError, OSError):
                    break
                if not data:
                    break
                self._raw(stream, data)


class Sandbox:
    """A REPL process for one (sub-)run. See the module docstring and rlm_desktop.sandbox.api."""

    def __init__(self, limits: SandboxLimits, *, context: str | dict[str, str], depth: int = 0,
                 rlm_query_enabled: bool = False, label: str = "") -> None:
        if isinstance(context, dict):
            bad = [k for k, v in context.items() if not isinstance(k, str) or not isinstance(v, str)]
            if bad:
                raise TypeError(f"context must map str to str; bad entry {bad[0]!r}")
        elif not isinstance(context, str):
            raise TypeError(f"context must be a str or a dict of str to str, not {type(context).__name__}")
        self.limits = limits
        self.context = context
        self.depth = depth
        self.rlm_query_enabled = rlm_query_enabled
        self.label = label or f"sandbox-{next(_ids)}"
        self.isolation: IsolationReport | None = None
        self.pid: int | None = None
        self._worker: _Worker | None = None
        self._cell: _Cell | None = None
        self._cell_ids = itertools.count(1)
        self._scratch_root: str | None = None
        self._scratch_lock: int | None = None     # flock'ed fd: this process owns the scratch folder
        self._scratch = ""
        self._probe = ""
        self._probe_token = ""
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- public API ------------------------------------------------------------------------------
    async def start(self) -> IsolationReport:
        if self._closed:
            raise SandboxError("this sandbox was closed; create a new one")
        if self._worker is not None:
            raise SandboxError("this sandbox is already started")
        if sys.platform == "win32":
            raise SandboxError("the REPL sandbox needs Linux or macOS; Windows is not supported yet")
        harden_host_process()
        self._loop = asyncio.get_running_loop()
        sweep_stale_scratch()
        try:
            # Held until close(), across worker restarts: while this process lives no other app
            # removes the folder; once it dies, the next app's sweep does.
            self._scratch_root, self._scratch_lock = create_locked_scratch()
        except OSError as exc:
            raise SandboxError(f"could not create the sandbox's scratch folder in "
                               f"{tempfile.gettempdir()}: {exc}. Check that this folder is writable "
                               "and not full (or point TMPDIR elsewhere).") from None
        try:
            self._scratch = os.path.join(self._scratch_root, "scratch")
            os.mkdir(self._scratch, 0o700)
            # A file no Landlock rule covers: the worker must fail to read it (checked in _measure).
            self._probe_token = secrets.token_hex(16)
            self._probe = os.path.join(self._scratch_root, "landlock-probe")
            with open(self._probe, "w", encoding="utf-8") as f:
                f.write(self._probe_token)
            report = await self._spawn()
        except BaseException:
            self._remove_scratch()
            raise
        return report

    async def run_cell(self, code: str, *, timeout_s: float, on_request: RequestHandler,
                       on_output: OutputHandler | None = None) -> CellResult:
        if self._closed:
            raise SandboxError("this sandbox was closed; create a new one")
        if self._loop is None:
            raise SandboxError("start() the sandbox before running cells")
        if self._cell is not None:
            raise SandboxError("a cell is already running in this sandbox; await it first")
        if not isinstance(code, str):
            raise TypeError("code must be a str")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be greater than 0 (got {timeout_s})")
        earlier_loss: str | None = None
        old = self._worker
        if old is None or old.dead_reason is not None or old.killed:
            # The worker died between cells (a stray thread crashed it, a cancelled cell killed
            # it): start a fresh one, and tell the model its variables are gone.
            earlier_loss = (f"the worker stopped between cells ({old.dead_reason or 'killed'})"
                            if old is not None else "the worker was not running")
            await self._restart()
        worker = self._worker
        assert worker is not None
        loop = self._loop
        cell = _Cell(id=next(self._cell_ids), on_request=on_request, on_output=on_output,
                     cap=self.limits.output_cap_bytes, done=loop.create_future())
        self._cell = cell
        t0 = cell.started = time.monotonic()
        cell.timer = loop.call_later(timeout_s, self._on_timeout, cell, timeout_s)
        worker.send({"t": "run", "id": cell.id, "code": code})
        try:
            kind, detail = await cell.done
        except asyncio.CancelledError:
            cell.timer.cancel()
            self._end_cell(cell)
            self.kill()
            raise
        cell.timer.cancel()
        duration = time.monotonic() - t0
        if kind == "done":
            worker._drain_raw()
            self._end_cell(cell)
            final = detail.get("final")
            return CellResult(
                ok=detail["ok"], stdout="".join(cell.stdout), stderr="".join(cell.stderr),
                error=detail["error"], final=final, status="ok" if detail["ok"] else "error",
                duration_s=duration, output_truncated=cell.truncated or detail["trunc"],
                restarted=earlier_loss is not None, restart_reason=earlier_loss)
        if kind == "closed":
            self._end_cell(cell)
            return CellResult(ok=False, stdout="".join(cell.stdout), stderr="".join(cell.stderr),
                              error="the sandbox was closed while this cell ran", status="cancelled",
                              duration_s=duration, output_truncated=cell.truncated)
        # Timeout or crash: kill the group, start a fresh worker, tell the model what was lost.
        if kind == "timeout":
            reason = f"timeout after {detail:g} s"
            status = "timeout"
        else:
            reason = f"crashed: {detail}"
            status = "crashed"
        await worker.stop()
        worker._drain_raw()
        self._end_cell(cell)
        stdout, stderr = "".join(cell.stdout), "".join(cell.stderr)
        if self._closed:                  # closed meanwhile: nothing to restart
            return CellResult(ok=False, stdout=stdout, stderr=stderr, status=status,
                              error=f"the sandbox stopped ({reason}) and was closed", restarted=False,
                              restart_reason=reason, duration_s=duration, output_truncated=cell.truncated)
        await self._restart()
        error = (f"The sandbox was restarted ({reason}); all variables were lost. "
                 "`context` and the REPL functions are available again.")
        return CellResult(ok=False, stdout=stdout, stderr=stderr, error=error, status=status,
                          restarted=True, restart_reason=reason, duration_s=duration,
                          output_truncated=cell.truncated)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        worker, self._worker = self._worker, None
        cell = self._cell
        if cell is not None and not cell.done.done():
            cell.done.set_result(("closed", None))      # the awaiting run_cell returns at once
        if worker is not None:
            if cell is None and worker.dead_reason is None and worker.proc is not None:
                worker.send({"t": "shutdown"})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(worker.exited), 1.0)
            await worker.stop()
        self._remove_scratch()

    def kill(self) -> None:
        worker = self._worker
        if worker is not None:
            worker.kill()

    @property
    def started(self) -> bool:
        """start() was called and succeeded (the sandbox may have died since: see :attr:`alive`)."""
        return self._loop is not None and self.isolation is not None

    @property
    def alive(self) -> bool:
        """A worker is running and holds the REPL's state (not killed, not dead, not closed)."""
        worker = self._worker
        return (not self._closed and worker is not None and worker.dead_reason is None
                and not worker.killed)

    def read_scratch_file(self, rel_path: str, max_bytes: int = 10_000_000) -> bytes:
        """Read a regular file that model code left in its scratch directory.

        Every path component is opened with ``O_NOFOLLOW`` relative to the one before, so a symlink
        planted by the sandbox (to ``~/.ssh/id_rsa``, say) is refused, never followed; FIFOs and
        devices are refused too. With namespaces the scratch is a private tmpfs, reached through
        ``/proc/<pid>/root`` while the worker runs. Raises ``SandboxError`` (bad path, not running)
        or ``OSError`` (missing file, symlink: ELOOP, not a regular file, larger than max_bytes)."""
        parts = rel_path.replace("\\", "/").split("/")
        if not rel_path or rel_path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise SandboxError(f"not a plain relative path inside the scratch directory: {rel_path!r}")
        if not self._scratch:
            raise SandboxError("the sandbox has no scratch directory (not started or closed)")
        via_proc = bool(self.isolation and self.isolation.layers.get("namespaces", {}).get("in_force"))
        if via_proc:
            if self.pid is None or self._worker is None or self._worker.dead_reason is not None:
                raise SandboxError("the sandbox is not running: its private scratch is gone")
            base, walk = f"/proc/{self.pid}/root", self._scratch.strip("/").split("/")
        else:
            base, walk = self._scratch, []
        nofollow = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for comp in walk + parts[:-1]:
                nfd = os.open(comp, nofollow | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nfd
            ffd = os.open(parts[-1], nofollow | os.O_NONBLOCK, dir_fd=fd)
        finally:
            os.close(fd)
        try:
            st = os.fstat(ffd)
            import stat as _stat

            if not _stat.S_ISREG(st.st_mode):
                raise OSError(f"not a regular file: {rel_path}")
            if st.st_size > max_bytes:
                raise OSError(f"{rel_path} is {st.st_size} bytes, more than the {max_bytes} allowed")
            chunks, total = [], 0
            while total <= max_bytes:
                chunk = os.read(ffd, min(1 << 20, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            if total > max_bytes:
                raise OSError(f"{rel_path} grew past the {max_bytes} bytes allowed")
            return b"".join(chunks)
        finally:
            os.close(ffd)

    # -- internals -------------------------------------------------------------------------------
    def _init_frame(self) -> dict[str, Any]:
        lim = self.limits
        return {
            "t": "init",
            # The context follows in frames of its own (context_frames), read by the worker only
            # once its isolation is in force: the namespace launcher never holds a copy of it.
            "context_type": "str" if isinstance(self.context, str) else "dict",
            "depth": self.depth,
            "rlm_query": self.rlm_query_enabled,
            "output_cap": lim.output_cap_bytes,
            "scratch": self._scratch,
            "sys_path": _python_paths(),
            "read_paths": _read_paths(),
            "dev_paths": DEV_PATHS,
            "probe": self._probe,
            "layers": {name: sys.platform.startswith("linux") and name not in _DISABLED_LAYERS
                       and name not in _BROKEN_LAYERS for name in ("namespaces", "landlock", "seccomp")},
            "simulate_failure": _SIMULATE_FAILURE,
            "limits": {"memory_mb": lim.memory_mb, "cpu_s": lim.cpu_s, "scratch_mb": lim.scratch_mb,
                       "max_file_mb": lim.max_file_mb, "max_open_files": lim.max_open_files,
                       "max_processes": lim.max_processes, "nproc": False},
        }

    async def _spawn(self) -> IsolationReport:
        try:
            return await self._spawn_once()
        except _LayerFailed as exc:
            if exc.layer != "namespaces" or "namespaces" in _BROKEN_LAYERS:
                raise
            # Namespaces half-worked (e.g. an LSM allows unshare but not mount): fall back to the
            # other layers; the report says why namespaces are missing and rates the level honestly.
            log.warning("sandbox %s: namespaces unusable here (%s); continuing without them",
                        self.label, exc.detail)
            _BROKEN_LAYERS["namespaces"] = exc.detail
            return await self._spawn_once()

    async def _spawn_once(self) -> IsolationReport:
        assert self._loop is not None
        if not os.path.isdir(self._scratch):
            raise SandboxError(f"the sandbox's scratch folder {self._scratch} was removed from outside "
                               "the app while the sandbox was in use; start the run again.")
        worker = _Worker(self, self._loop)
        self._worker = worker
        worker.spawn(self._init_frame(), context_frames(self.context))
        try:
            ready = await asyncio.wait_for(asyncio.shield(worker.ready), START_TIMEOUT_S)
            rep = ready.get("report")
            ns = rep.get("namespaces") if isinstance(rep, dict) else None
            if isinstance(ns, dict) and ns.get("pid"):
                # The launcher's frame (child pid) and the child's ready frame may come in any order.
                await asyncio.wait_for(asyncio.shield(worker.spawned), START_TIMEOUT_S)
        except TimeoutError:
            await worker.stop()
            raise SandboxError(f"the sandbox worker did not become ready within {START_TIMEOUT_S:g} s; "
                               "the machine may be overloaded. Try again.") from None
        except BaseException:
            await worker.stop()
            raise
        self.pid = worker.inner_pid or (worker.proc.pid if worker.proc else None)
        try:
            report = self._measure(worker, ready)
        except SandboxRefused:
            await worker.stop()
            self._worker = None
            raise
        self.isolation = report
        return report

    async def _restart(self) -> None:
        if self._closed:
            raise SandboxError("this sandbox was closed; create a new one")
        old = self._worker
        if old is not None:
            await old.stop()
        self._worker = None
        await self._spawn()

    def _measure(self, worker: _Worker, ready: dict[str, Any]) -> IsolationReport:
        launcher = worker.proc.pid if worker.proc else None
        report = measure_isolation(launcher, worker.inner_pid, ready, scratch=self._scratch,
                                   probe_token=self._probe_token)
        for layer, why in _BROKEN_LAYERS.items():
            entry = report.layers.get(layer)
            if isinstance(entry, dict) and not entry.get("in_force"):
                entry["error"] = f"failed part-way earlier in this process: {why}"
        if report.level.rank < IsolationLevel.GOOD.rank and not self.limits.allow_weak:
            raise SandboxRefused(refusal_message(report))
        return report

    def _on_timeout(self, cell: _Cell, timeout_s: float) -> None:
        if cell.done.done():
            return
        remaining = timeout_s - cell.own_time(time.monotonic())
        if remaining > 0.001 and self._loop is not None:
            # Part of the time went to waiting for sub-calls: the cell still has time of its own.
            cell.timer = self._loop.call_later(remaining, self._on_timeout, cell, timeout_s)
            return
        cell.done.set_result(("timeout", timeout_s))
        self.kill()

    def _end_cell(self, cell: _Cell) -> None:
        if self._cell is cell:
            self._cell = None
        for task in cell.tasks:
            task.cancel()

    def _worker_died(self, worker: _Worker, reason: str) -> None:
        cell = self._cell
        if worker is self._worker and cell is not None and not cell.done.done():
            cell.done.set_result(("crashed", reason))

    def _raw_output(self, worker: _Worker, stream: str, text: str) -> None:
        cell = self._cell
        if cell is not None and worker is self._worker:
            cell.add_output(stream, text)

    def _on_frame(self, worker: _Worker, msg: dict[str, Any]) -> None:
        t = msg["t"]
        if worker is not self._worker:
            return
        cell = self._cell
        if t == "out":
            stream = msg.get("s")
            if stream not in ("stdout", "stderr"):
                raise ProtocolError("output frame for an unknown stream")
            text = clean_text(msg.get("d"))
            if cell is not None and msg.get("cell") == cell.id:
                cell.add_output(stream, text)
            return
        if t == "req":
            self._on_request(worker, cell, msg)
            return
        if t == "done":
            if cell is None or msg.get("cell") != cell.id or cell.done.done():
                raise ProtocolError("completion for a cell that is not running")
            cell.done.set_result(("done", self._parse_done(msg)))
            return
        if t == "spawned":
            pid = msg.get("pid")
            if worker.spawned.done() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
                raise ProtocolError("unexpected launcher frame")
            worker.inner_pid = pid
            if hasattr(os, "pidfd_open"):
                # A handle on exactly that process: kill() can signal it even if it left the group,
                # and stop() can wait until it is gone — with no risk of hitting a reused pid.
                with contextlib.suppress(OSError):
                    worker.inner_pidfd = os.pidfd_open(pid)
            worker.spawned.set_result(pid)
            return
        if t == "ready":
            if worker.ready.done():
                raise ProtocolError("a second ready frame")
            worker.ready.set_result(msg)
            return
        if t == "fatal":
            if worker.ready.done():
                raise ProtocolError("unexpected fatal frame")
            err = clean_text(msg.get("error", ""), 2000)
            layer = msg.get("layer")
            worker.ready.set_exception(_LayerFailed(
                f"the sandbox could not put its isolation in force: {err}",
                layer if isinstance(layer, str) else "", err))
            return
        raise ProtocolError(f"unexpected frame {t!r}")

    @staticmethod
    def _parse_done(msg: dict[str, Any]) -> dict[str, Any]:
        ok = msg.get("ok")
        if not isinstance(ok, bool):
            raise ProtocolError("completion without a valid ok flag")
        error = msg.get("error")
        error = None if error is None else clean_text(error, 64_000)
        if not ok and error is None:
            error = "the cell failed"
        final = None
        f = msg.get("final")
        if f is not None:
            if not isinstance(f, dict) or f.get("via") not in ("FINAL", "FINAL_VAR"):
                raise ProtocolError("malformed final value")
            var = f.get("var_name")
            final = FinalValue(value=clean_text(f.get("value")), via=f["via"],
                               var_name=None if var is None else clean_text(var, 200))
        return {"ok": ok, "error": error, "final": final, "trunc": bool(msg.get("trunc"))}

    def _on_request(self, worker: _Worker, cell: _Cell | None, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            raise ProtocolError("request without an integer id")
        kind = msg.get("kind")
        payload = msg.get("payload")
        if not isinstance(payload, dict):
            raise ProtocolError("request without a payload object")
        req = self._validate_request(kind, payload)
        if cell is None or msg.get("cell") != cell.id:
            worker.send({"t": "resp", "id": rid, "ok": False,
                         "error": "no cell is running: sub-calls only work while their cell runs"})
            return
        if rid in cell.in_flight:
            raise ProtocolError(f"duplicate request id {rid}")
        if len(cell.in_flight) >= MAX_REQUESTS_IN_FLIGHT:
            worker.send({"t": "resp", "id": rid, "ok": False,
                         "error": f"too many sub-calls in flight (limit {MAX_REQUESTS_IN_FLIGHT}); "
                                  "wait for some to finish or use llm_query_batched"})
            return
        cell.request_started(rid)
        task = asyncio.ensure_future(self._serve(worker, cell, rid, req))
        cell.tasks.add(task)
        task.add_done_callback(cell.tasks.discard)

    def _validate_request(self, kind: Any, p: dict[str, Any]) -> SubRequest:
        def opt_str(v: Any, what: str) -> str | None:
            if v is None:
                return None
            return clean_text(v, 1000) if isinstance(v, str) else _bad(what)

        def _bad(what: str) -> Any:
            raise ProtocolError(f"bad {what} in a {kind} request")

        if kind == "llm_query":
            prompt = p.get("prompt")
            if not isinstance(prompt, str):
                _bad("prompt")
            return SubRequest(kind, {"prompt": clean_text(prompt), "model": opt_str(p.get("model"), "model")})
        if kind == "llm_query_batched":
            prompts = p.get("prompts")
            if not isinstance(prompts, list) or len(prompts) > MAX_BATCH \
                    or not all(isinstance(x, str) for x in prompts):
                _bad("prompts")
            return SubRequest(kind, {"prompts": [clean_text(x) for x in prompts],
                                     "model": opt_str(p.get("model"), "model")})
        if kind == "rlm_query" and self.rlm_query_enabled:
            prompt = p.get("prompt")
            ctx = p.get("context")
            if not isinstance(prompt, str):
                _bad("prompt")
            if isinstance(ctx, dict):
                if not all(isinstance(k, str) and isinstance(v, str) for k, v in ctx.items()):
                    _bad("context")
                ctx = {clean_text(k): clean_text(v) for k, v in ctx.items()}
            elif ctx is not None and not isinstance(ctx, str):
                _bad("context")
            elif isinstance(ctx, str):
                ctx = clean_text(ctx)
            return SubRequest(kind, {"prompt": clean_text(prompt), "context": ctx})
        raise ProtocolError(f"unknown request kind {str(kind)[:40]!r}")

    async def _serve(self, worker: _Worker, cell: _Cell, rid: int, req: SubRequest) -> None:
        try:
            value = await cell.on_request(req)
            if req.kind == "llm_query_batched":
                if not isinstance(value, list) or len(value) != len(req.payload["prompts"]):
                    raise SandboxError("the batched sub-call handler returned the wrong number of answers")
                value = [v if isinstance(v, str) else str(v) for v in value]
            elif not isinstance(value, str):
                value = "" if value is None else str(value)
            reply: dict[str, Any] = {"t": "resp", "id": rid, "ok": True, "value": value}
        except asyncio.CancelledError:
            reply = {"t": "resp", "id": rid, "ok": False,
                     "error": "cancelled: the cell that made this request has ended"}
            cell.request_ended(rid)
            worker.send(reply)
            raise
        except Exception as exc:
            reply = {"t": "resp", "id": rid, "ok": False,
                     "error": str(exc) or exc.__class__.__name__}
        cell.request_ended(rid)
        worker.send(reply)

    def _remove_scratch(self) -> None:
        root, self._scratch_root = self._scratch_root, None
        lock, self._scratch_lock = self._scratch_lock, None
        if root:
            # rmtree uses fd-based, symlink-safe traversal: links the sandbox left are removed,
            # never followed.
            shutil.rmtree(root, ignore_errors=True)
        if lock is not None:
            os.close(lock)               # only now: the lock keeps sweeps away until it is gone

    def __repr__(self) -> str:
        level = self.isolation.level.value if self.isolation else "not started"
        return f"<Sandbox {self.label} pid={self.pid} isolation={level}>"
