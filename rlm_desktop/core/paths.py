"""Per-user locations (traces, history, cache). XDG on Linux; ``RLM_DESKTOP_HOME`` overrides all."""

from __future__ import annotations

import os
import sys
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
