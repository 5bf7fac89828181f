"""Where sessions and traces live on disk: one private folder per named session
(``<data>/sessions/NAME/`` with ``session.json`` and ``trace.jsonl``), and the default trace path
of a one-turn run. A session in use is locked (``flock``) so two processes never write one trace.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rlm_desktop.core.paths import data_dir, traces_dir, write_text_atomic

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
META_FILE = "session.json"
TRACE_FILE = "trace.jsonl"
LOCK_FILE = "lock"


class SessionNameError(ValueError):
    """A session name that cannot be a folder name; the message says what is allowed."""


class SessionBusy(RuntimeError):
    """Another process (or another Session object) has the session open."""


class SessionNotFound(KeyError):
    """No saved session of that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "no such session"


def sessions_dir() -> Path:
    return data_dir() / "sessions"


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def default_trace_path(query: str) -> Path:
    """A new trace file in the traces folder, named by time and the question."""
    slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-")[:40] or "run"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    base = _private_dir(traces_dir()) / f"{stamp}-{slug}"
    path = base.with_suffix(".jsonl")
    n = 2
    while path.exists():
        path = Path(f"{base}-{n}.jsonl")
        n += 1
    return path


class SessionLock:
    """An exclusive ``flock`` on a session's lock file, held while a Session object has it open.
    The kernel drops it when the process dies, so a crash never leaves a session locked."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise SessionBusy(f"session {path.parent.name!r} is open in another process (or another "
                              "Session object); close it there first") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)      # closing the descriptor releases the lock
            self._fd = None


@dataclass(frozen=True)
class SessionInfo:
    name: str
    created: float
    turns: int
    last_question: str
    source: str
    docs: list[str]
    models: str
    cost_usd: float | None
    cost_known: bool
    trace: Path
    in_use: bool


class SessionStore:
    """The saved sessions of this user."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else sessions_dir()

    @staticmethod
    def validate_name(name: str) -> str:
        if not NAME_RE.match(name or ""):
            raise SessionNameError(
                f"bad session name {name!r}: use 1–64 letters, digits, '.', '_' or '-', starting with "
                "a letter or digit (e.g. contracts-2027)")
        return name

    def folder(self, name: str) -> Path:
        return self.root / self.validate_name(name)

    def trace_path(self, name: str) -> Path:
        return self.folder(name) / TRACE_FILE

    def exists(self, name: str) -> bool:
        return (self.folder(name) / META_FILE).is_file()

    def lock(self, name: str) -> SessionLock:
        folder = _private_dir(self.folder(name))
        _private_dir(self.root)
        return SessionLock(folder / LOCK_FILE)

    def load_meta(self, name: str) -> dict[str, Any]:
        path = self.folder(name) / META_FILE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SessionNotFound(f"no session named {name!r} (see `rlm-desktop sessions list`)") from None
        except (OSError, ValueError) as exc:
            raise SessionNotFound(f"session {name!r} cannot be read ({exc}); its trace is "
                                  f"{self.trace_path(name)}") from None
        return meta if isinstance(meta, dict) else {}

    def save_meta(self, name: str, meta: dict[str, Any]) -> None:
        _private_dir(self.folder(name))
        write_text_atomic(self.folder(name) / META_FILE, json.dumps(meta, ensure_ascii=False, indent=1))

    def names(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir()
                          if NAME_RE.match(p.name) and (p / META_FILE).is_file())
        except FileNotFoundError:
            return []

    def _in_use(self, name: str) -> bool:
        try:
            lock = SessionLock(self.folder(name) / LOCK_FILE)
        except SessionBusy:
            return True
        except OSError:
            return False
        lock.release()
        return False

    def info(self, name: str) -> SessionInfo:
        from rlm_desktop.core.totals import totals
        from rlm_desktop.core.trace import TraceFormatError, read_trace
        from rlm_desktop.session.session import turns_from_trace

        meta = self.load_meta(name)
        trace_file = self.trace_path(name)
        turns: list[Any] = []
        cost: float | None = None
        known = True
        try:
            trace = read_trace(trace_file)
            turns, _ = turns_from_trace(trace)
            t = totals(trace)
            cost, known = t.cost_usd, t.cost_unknown_calls == 0
        except (OSError, TraceFormatError):
            pass
        models = f"{meta.get('provider_name') or meta.get('provider') or '?'}: {meta.get('root_model') or '?'}"
        if meta.get("sub_model") and meta.get("sub_model") != meta.get("root_model"):
            models += f" / {meta['sub_model']}"
        return SessionInfo(name=name, created=float(meta.get("created") or 0), turns=len(turns),
                           last_question=turns[-1].question if turns else "",
                           source=str(meta.get("source") or "?"), docs=list(meta.get("docs") or []),
                           models=models, cost_usd=cost, cost_known=known, trace=trace_file,
                           in_use=self._in_use(name))

    def remove(self, name: str) -> Path:
        """Delete a saved session (its folder, trace included). Refused while it is in use."""
        folder = self.folder(name)
        if not (folder / META_FILE).is_file():
            raise SessionNotFound(f"no session named {name!r} (see `rlm-desktop sessions list`)")
        lock = self.lock(name)       # raises SessionBusy when open elsewhere
        try:
            shutil.rmtree(folder)
        finally:
            lock.release()
        return folder
