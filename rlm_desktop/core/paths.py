"""Per-user locations (traces, history, cache). XDG on Linux; ``RLM_DESKTOP_HOME`` overrides all."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

APP_ID = "rlm-desktop"


def _base(xdg_var: str, fallback: str) -> Path:
    override = os.environ.get("RLM_DESKTOP_HOME")
    if override:
        return Path(override) / xdg_var.removeprefix("XDG_").removesuffix("_HOME").lower()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    value = os.environ.get(xdg_var)
    return Path(value) if value else Path.home() / fallback


def data_dir() -> Path:
    """Where traces and the run history live."""
    return _base("XDG_DATA_HOME", ".local/share") / APP_ID


def cache_dir() -> Path:
    """Where the memo cache lives."""
    return _base("XDG_CACHE_HOME", ".cache") / APP_ID


def log_dir() -> Path:
    """Where the app's own log (JSON Lines, rotated) lives."""
    return _base("XDG_STATE_HOME", ".local/state") / APP_ID / "logs"


def traces_dir() -> Path:
    return data_dir() / "traces"


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` next to ``path``, fsync it, then move it into place: readers see the old
    file or the new one, never a half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
