"""Whether a virtualenv already holds this checkout's current install, so that packaging/dev.sh runs
pip only when something changed (and so works offline once installed).

    python packaging/install_state.py check  VENV MODE   exit 0: current; exit 1: install needed
    python packaging/install_state.py record VENV MODE   after a successful install

MODE ``app`` is a regular (non-editable) install: a copy of the package, so any change to its files
or to pyproject.toml needs a new install. MODE ``test`` is an editable install with the test extras:
the code is read from the checkout, so only pyproject.toml (dependencies, entry points, package
list) matters. Either way the interpreter's version is part of the fingerprint. Run it with the
venv's own Python (stdlib only)."""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = ".rlm-desktop-install"
MODES = ("app", "test")
# What a regular install copies (pyproject.toml [tool.setuptools]): the package and its resources.
APP_TREES = ("rlm_desktop", "resources")


def _files(root: Path, mode: str) -> list[Path]:
    out = [root / "pyproject.toml"]
    if mode == "app":
        for tree in APP_TREES:
            for dirpath, dirnames, filenames in os.walk(root / tree):
                dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.endswith(".egg-info"))
                out += [Path(dirpath) / f for f in sorted(filenames) if not f.endswith((".pyc", ".pyo"))]
    return out


def fingerprint(root: Path, mode: str) -> str:
    """A hash of what an install of ``root`` in ``mode`` depends on."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    h = hashlib.sha256()
    h.update(f"{mode}\0{platform.python_version()}\0{sys.implementation.name}\0".encode())
    for path in _files(root, mode):
        h.update(path.relative_to(root).as_posix().encode("utf-8", "surrogateescape") + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def is_current(venv: Path, root: Path, mode: str) -> bool:
    try:
        recorded = (venv / STAMP).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return False
    return recorded == fingerprint(root, mode)


def record(venv: Path, root: Path, mode: str) -> None:
    tmp = venv / (STAMP + ".tmp")
    tmp.write_text(fingerprint(root, mode) + "\n", encoding="ascii")
    os.replace(tmp, venv / STAMP)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("check", "record") or argv[2] not in MODES:
        print(__doc__, file=sys.stderr)
        return 2
    action, venv, mode = argv[0], Path(argv[1]), argv[2]
    if action == "check":
        return 0 if is_current(venv, ROOT, mode) else 1
    record(venv, ROOT, mode)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
