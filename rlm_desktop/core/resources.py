"""Find the app's resource files (icons, sample documents) in a source tree, a wheel or a PyInstaller bundle.

In a checkout they live in the top-level ``resources/`` folder; the wheel build copies that folder
to ``rlm_desktop/resources`` (package-dir mapping in pyproject.toml); the PyInstaller spec puts it at the same place inside
the bundle (``sys._MEIPASS``).
"""

from __future__ import annotations

import sys
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../rlm_desktop

# Span states -> icon file stems (resources/icons/status-<state>.svg); "incomplete" = never ended.
STATUS_ICONS = {state: f"status-{state}" for state in
                ("running", "ok", "error", "timeout", "cancelled", "budget", "incomplete")}
APP_ICON = "app.svg"


def resource_roots() -> list[Path]:
    """Where resources may be, most specific first (bundle, installed package, source tree)."""
    roots: list[Path] = []
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        roots.append(Path(bundle) / "rlm_desktop" / "resources")
    roots.append(_PACKAGE_DIR / "resources")
    roots.append(_PACKAGE_DIR.parent / "resources")
    return roots


def resources_root() -> Path:
    """The first resource folder that exists (raises FileNotFoundError saying where it looked)."""
    for root in resource_roots():
        if (root / "icons").is_dir():
            return root
    looked = ", ".join(str(r) for r in resource_roots())
    raise FileNotFoundError(f"RLM Desktop's resource folder is missing (looked in {looked}); "
                            f"reinstall the app")


def resource_path(*parts: str) -> Path:
    """The path of a resource, e.g. ``resource_path("icons", "status-ok.svg")``; it must exist."""
    root = resources_root()
    path = root.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"resource {'/'.join(parts)} is missing from {root}; reinstall the app")
    return path


def icon_path(name: str) -> Path:
    """An icon by file stem (``"status-ok"``, ``"app"`` …; ``.svg`` optional)."""
    return resource_path("icons", name if name.endswith(".svg") else f"{name}.svg")


def samples_dir() -> Path:
    """The folder of sample documents used by the demo."""
    return resource_path("samples")
