"""The Qt-free layers stay Qt-free, and the code base stays ruff clean."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("layer", ["core", "engine", "sandbox", "evaluation"])
def test_layer_never_imports_qt(layer: str) -> None:
    # A fresh interpreter imports every module of the layer, then checks no Qt module got loaded.
    code = f"""
import importlib, pkgutil, sys
import rlm_desktop.{layer} as pkg
for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):
    importlib.import_module(m.name)
bad = sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'shiboken6', 'qasync'))
print(' '.join(bad))
sys.exit(1 if bad else 0)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, f"rlm_desktop.{layer} pulls in Qt: {r.stdout} {r.stderr}"


def test_static_import_scan_finds_no_qt() -> None:
    offenders = []
    for layer in ("core", "engine", "sandbox", "evaluation"):
        for py in (ROOT / "rlm_desktop" / layer).rglob("*.py"):
            for n, line in enumerate(py.read_text(encoding="utf-8").splitlines(), 1):
                s = line.strip()
                if s.startswith(("import PySide6", "from PySide6", "import qasync", "from qasync")):
                    offenders.append(f"{py.relative_to(ROOT)}:{n}")
    assert offenders == []


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: install the test extras (pip install -e '.[test]')")
    r = subprocess.run([ruff, "check", "--quiet", "rlm_desktop", "tests"], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_package_is_shipped() -> None:
    """pyproject lists packages explicitly (resources/ is mapped in): a new one must be added."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rlm_desktop").rglob("__init__.py")}
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_import_linter_contracts_hold() -> None:
    """The layer rules of pyproject.toml ([tool.importlinter]): cli > ui > session > engine > sandbox
    > core, only the UI imports Qt, headless commands never reach the UI, the UI reaches the sandbox
    only through the engine."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.fail("import-linter is not installed: install the test extras (pip install -e '.[test]')")
    r = subprocess.run([exe, "--no-cache"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_a_headless_run_never_imports_qt(tmp_path: Path) -> None:
    """`rlm-desktop run` end to end (offline demo) in a fresh interpreter: no Qt module is loaded."""
    doc = tmp_path / "a.txt"
    doc.write_text("The magic number is 42.\n", encoding="utf-8")
    code = f"""
import sys
from rlm_desktop.cli import main
rc = main(["run", "--docs", {str(doc)!r}, "--query", "What is the magic number?", "--provider", "demo",
           "--quiet", "--allow-weak-sandbox", "--trace", {str(tmp_path / 't.jsonl')!r}])
bad = sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'shiboken6', 'qasync')
             or n.startswith('rlm_desktop.ui'))
print('LOADED', ' '.join(bad))
sys.exit(rc if not bad else 99)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "LOADED \n" in r.stdout or r.stdout.rstrip().endswith("LOADED")
