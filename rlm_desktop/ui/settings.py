"""The desktop app's preferences: :class:`rlm_desktop.session.prefs.Preferences` kept through
``QSettings`` (the same INI file the CLI reads through its Qt-free store). Window state lives
apart, in :mod:`rlm_desktop.ui.window_state`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings

from rlm_desktop.session.prefs import (  # noqa: F401 - the names the UI has always imported from here
    FILE_NAME,
    SCHEMA_VERSION,
    MissingKeyError,
    Preferences,
    SettingsError,
    UnknownProfileError,
    demo_profile,
    preferences_path,
    provider_config_for,
)


class QSettingsStore:
    """:class:`rlm_desktop.session.prefs.PrefStore` over ``QSettings`` (IniFormat)."""

    def __init__(self, path: Path) -> None:
        self._qs = QSettings(str(path), QSettings.Format.IniFormat)
        self.path = path

    def value(self, key: str, default: Any = None) -> Any:
        return self._qs.value(key, default)

    def contains(self, key: str) -> bool:
        return self._qs.contains(key)

    def set_value(self, key: str, value: Any) -> None:
        self._qs.setValue(key, value)

    def remove(self, key: str) -> None:
        self._qs.remove(key)

    def child_keys(self, group: str) -> list[str]:
        self._qs.beginGroup(group)
        try:
            return list(self._qs.childKeys())
        finally:
            self._qs.endGroup()

    def sync(self) -> None:
        self._qs.sync()
        if self._qs.status() != QSettings.Status.NoError:
            raise OSError(f"QSettings could not write the file ({self._qs.status().name})")


class Settings(Preferences):
    """The app's preferences, kept through QSettings. Works without a QApplication."""

    def __init__(self, path: str | Path | None = None) -> None:
        p = Path(path) if path is not None else preferences_path()
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        super().__init__(p, store=QSettingsStore(p))
