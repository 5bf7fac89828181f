"""Per-user locations (traces, history, cache, log) from ``platformdirs``, and private files in them.

Linux follows the XDG variables (``XDG_DATA_HOME`` …), macOS uses ``~/Library/Application Support``,
``~/Library/Caches`` and ``~/Library/Logs``, Windows ``%LOCALAPPDATA%``. ``RLM_DESKTOP_HOME``
overrides all (``$RLM_DESKTOP_HOME/data|cache|state``). What the app writes there holds document
text and prompts, so its folders are made 0700 and its files 0600 (:func:`private_dir`,
:func:`open_private`).
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import platformdirs
from platformdirs.api import PlatformDirsABC

APP_ID = "rlm-desktop"


@dataclass(frozen=True, slots=True)
class AppDirs:
    """The app's own folders (each already ends in ``rlm-desktop``)."""

    data: Path
    cache: Path
    state: Path
    log: Path


def app_dirs(platform: PlatformDirsABC | None = None) -> AppDirs:
    """The app's folders for this user, read afresh (environment changes are seen at once).

    ``platform``: a platformdirs object for another OS (``platformdirs.macos.MacOS(...)``) — for tests;
    ``RLM_DESKTOP_HOME`` still wins over it.
    """
    override = os.environ.get("RLM_DESKTOP_HOME")
    if override:
        home = Path(override)
        return AppDirs(data=home / "data" / APP_ID, cache=home / "cache" / APP_ID,
                       state=home / "state" / APP_ID, log=home / "state" / APP_ID / "logs")
    pd = platform if platform is not None else platformdirs.PlatformDirs(APP_ID, appauthor=False)
    state = Path(pd.user_state_dir)
    # On Linux the log stays where it always was (…/state/rlm-desktop/logs, as the README says);
    # elsewhere the platform's log folder (~/Library/Logs/rlm-desktop, …\rlm-desktop\Logs).
    log = state / "logs" if type(pd).__module__.endswith(".unix") else Path(pd.user_log_dir)
    return AppDirs(data=Path(pd.user_data_dir), cache=Path(pd.user_cache_dir), state=state, log=log)


def data_dir() -> Path:
    """Where traces and the run history live."""
    return app_dirs().data


def cache_dir() -> Path:
    """Where cached data lives."""
    return app_dirs().cache


def log_dir() -> Path:
    """Where the app's own log (JSON Lines, rotated) lives."""
    return app_dirs().log


def traces_dir() -> Path:
    return data_dir() / "traces"


# -- private files ---------------------------------------------------------------------------------

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def _app_roots() -> tuple[Path, ...]:
    d = app_dirs()
    return (d.data, d.cache, d.state, d.log)


def _tighten(path: Path, private_mode: int) -> None:
    """Take group/other permissions off a file or folder of ours (a no-op where they are off)."""
    try:
        st = os.stat(path)
    except OSError:
        return
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 and hasattr(os, "getuid") and st.st_uid == os.getuid():
        os.chmod(path, mode & private_mode)


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and its missing parents as 0700 folders; return it.

    Folders that already exist are left alone, except the app's own (inside the data, cache, state or
    log folder, which an older version made 0755): those lose their group/other permissions.
    """
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            pass  # made by another process meanwhile
    for root in _app_roots():
        if path == root or path.is_relative_to(root):
            for d in (path, *path.parents):
                _tighten(d, PRIVATE_DIR_MODE)
                if d == root:
                    break
    return path


def open_private(path: str | os.PathLike[str], mode: str = "w") -> IO[Any]:
    """Open a file for writing that only its owner can read (0600), its folder made by
    :func:`private_dir`.

    ``mode``: ``"w"`` (truncate) or ``"a"`` (append) for UTF-8 text, ``"wb"`` / ``"ab"`` for bytes.
    An existing file of ours keeps its content in append mode and loses its group/other permissions
    either way.
    """
    if mode not in ("w", "a", "wb", "ab"):
        raise ValueError(f"open_private mode must be 'w', 'a', 'wb' or 'ab', not {mode!r}")
    path = Path(path)
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode.startswith("a") else os.O_TRUNC)
    flags |= getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & 0o077 and hasattr(os, "fchmod") and st.st_uid == os.getuid():
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & PRIVATE_FILE_MODE)
        if mode.endswith("b"):
            return os.fdopen(fd, mode)
        return os.fdopen(fd, mode, encoding="utf-8", newline="\n")
    except BaseException:
        os.close(fd)
        raise


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` next to ``path``, fsync it, then move it into place: readers see the old
    file or the new one, never a half-written one. The file is 0600 (``mkstemp`` makes it so).

    A lone surrogate (which UTF-8 cannot encode: a trace may hold one, from a file name's
    undecodable byte or a model's broken escape) is written as its ``\\uXXXX`` escape — inside a
    JSON string that is the same character, elsewhere it is readable text — instead of failing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
