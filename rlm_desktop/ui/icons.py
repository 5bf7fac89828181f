"""Icons: the SVGs shipped under resources/icons, with QStyle standard icons as a fallback."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QStyle

SP = QStyle.StandardPixmap

# Icon name (file stem under resources/icons) -> the standard icon used when the SVG is missing.
_FALLBACKS: dict[str, QStyle.StandardPixmap] = {
    "status-running": SP.SP_BrowserReload,
    "status-ok": SP.SP_DialogApplyButton,
    "status-error": SP.SP_MessageBoxCritical,
    "status-timeout": SP.SP_MediaPause,
    "status-cancelled": SP.SP_BrowserStop,
    "status-budget": SP.SP_MessageBoxWarning,
    "status-incomplete": SP.SP_MessageBoxQuestion,
    "run": SP.SP_MediaPlay,
    "stop": SP.SP_MediaStop,
    "add-files": SP.SP_FileIcon,
    "add-folder": SP.SP_DirIcon,
    "open-trace": SP.SP_DialogOpenButton,
    "export": SP.SP_DialogSaveButton,
    "settings": SP.SP_FileDialogDetailedView,
    "copy": SP.SP_FileDialogContentsView,
    "clear": SP.SP_DialogResetButton,
    "remove": SP.SP_TrashIcon,
    "expand": SP.SP_ArrowDown,
    "collapse": SP.SP_ArrowRight,
    "follow": SP.SP_ArrowDown,
    "app": SP.SP_ComputerIcon,
    "shield": SP.SP_VistaShield,
}


def icons_dir() -> Path | None:
    """The folder of the shipped SVG icons, or None when the resources are not installed."""
    try:
        from rlm_desktop.core.resources import resource_path
    except ImportError:
        return None
    try:
        folder = Path(resource_path("icons"))
    except (FileNotFoundError, ValueError, OSError):
        return None
    return folder if folder.is_dir() else None


@cache
def icon(name: str) -> QIcon:
    """The icon ``name`` (resources/icons/<name>.svg), or its standard fallback."""
    folder = icons_dir()
    if folder is not None:
        svg = folder / f"{name}.svg"
        if svg.is_file():
            ic = QIcon(str(svg))
            if not ic.isNull():
                return ic
    app = QApplication.instance()
    fallback = _FALLBACKS.get(name)
    if app is None or fallback is None:
        return QIcon()
    return app.style().standardIcon(fallback)  # type: ignore[union-attr]


def status_icon(status: str) -> QIcon:
    """Icon for a span status: running, ok, error, timeout, cancelled, budget, incomplete."""
    return icon(f"status-{status}")
