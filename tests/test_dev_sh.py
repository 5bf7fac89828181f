"""packaging/dev.sh installs only when something changed, and `test` never touches the app's
environment (issue 8 item 12).

dev.sh runs in a copy of the checkout under a temporary folder whose environments hold a stand-in
``bin/python``: it records every ``-m pip`` call instead of reaching a package index, and runs
anything else with this interpreter, so the app's ``--version`` and ``pytest --version`` really run.
``apt-get``/``sudo`` stand-ins fail loudly, so nothing here can reach the network."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))
import install_state  # noqa: E402  (packaging/ is not a package: it is run as a script by dev.sh)


def _stand_in_venv(venv: Path, log: Path) -> None:
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then\n'
        f'  echo "{venv.name} $*" >> "{log}"\n'
        '  exit "${FAKE_PIP_EXIT:-0}"\n'
        "fi\n"
        f'exec "{sys.executable}" "$@"\n')
    app = venv / "bin" / "rlm-desktop"
    app.write_text('#!/bin/sh\nexec "$(dirname "$0")/python" -m rlm_desktop "$@"\n')
    python.chmod(0o755)
    app.chmod(0o755)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for tree in ("rlm_desktop", "resources", "packaging"):
        shutil.copytree(ROOT / tree, repo / tree, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", repo / "pyproject.toml")
    log = tmp_path / "pip-calls.log"
    log.touch()
    _stand_in_venv(repo / ".venv", log)
    _stand_in_venv(repo / ".venv-test", log)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("apt-get", "sudo"):
        (stubs / name).write_text(f"#!/bin/sh\necho 'test: {name} must not run' >&2\nexit 97\n")
        (stubs / name).chmod(0o755)
    return repo


def _dev(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    stubs = repo.parent / "stubs"
    full = {**os.environ, "PIP_NO_INDEX": "1", "PATH": f"{stubs}:{os.environ['PATH']}", **env}
    full.pop("PYTHON", None)
    return subprocess.run(["bash", str(repo / "packaging" / "dev.sh"), *args], cwd=repo, env=full,
                          capture_output=True, text=True, timeout=120)


def _pip_calls(repo: Path) -> list[str]:
    return (repo.parent / "pip-calls.log").read_text().splitlines()


def _tree(venv: Path) -> dict[str, tuple[int, int, bytes]]:
    return {str(p.relative_to(venv)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(venv.rglob("*")) if p.is_file()}


def test_start_installs_once_then_runs_offline_and_reinstalls_after_a_change(checkout: Path) -> None:
    from rlm_desktop import __version__

    first = _dev(checkout, "start", "--version")
    assert first.returncode == 0, first.stderr
    assert __version__ in first.stdout
    assert _pip_calls(checkout) == [".venv -m pip install -q --disable-pip-version-check ."]
    second = _dev(checkout, "start", "--version")
    assert second.returncode == 0, second.stderr
    assert __version__ in second.stdout and "Installing" not in second.stderr
    assert len(_pip_calls(checkout)) == 1                       # no pip at all: works offline
    with (checkout / "rlm_desktop" / "core" / "paths.py").open("a") as f:
        f.write("\n# changed\n")
    assert _dev(checkout, "start", "--version").returncode == 0
    assert len(_pip_calls(checkout)) == 2                       # a changed file: installed again


def test_start_runs_the_installed_version_when_an_update_cannot_be_installed(checkout: Path) -> None:
    assert _dev(checkout, "start", "--version").returncode == 0
    (checkout / "pyproject.toml").write_text((checkout / "pyproject.toml").read_text() + "\n")
    r = _dev(checkout, "start", "--version", FAKE_PIP_EXIT="1")    # pip fails (no index)
    assert r.returncode == 0 and "starting the version installed before" in r.stderr


def test_test_mode_never_touches_the_app_environment(checkout: Path) -> None:
    assert _dev(checkout, "start", "--version").returncode == 0
    app_before = _tree(checkout / ".venv")
    r = _dev(checkout, "test", "--version")
    assert r.returncode == 0, r.stderr
    assert "pytest" in (r.stdout + r.stderr)
    calls = _pip_calls(checkout)
    assert calls[1:] == [".venv-test -m pip install -q --disable-pip-version-check -e .[test]"]
    assert _tree(checkout / ".venv") == app_before
    assert _dev(checkout, "test", "--version").returncode == 0
    assert len(_pip_calls(checkout)) == 2                       # the test install is current too


def test_fingerprint_follows_what_each_install_depends_on(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "rlm_desktop", tmp_path / "rlm_desktop",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "resources").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    app, test = install_state.fingerprint(tmp_path, "app"), install_state.fingerprint(tmp_path, "test")
    assert app != test
    (tmp_path / "rlm_desktop" / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "rlm_desktop" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert install_state.fingerprint(tmp_path, "app") == app     # byte code is not the package
    (tmp_path / "resources" / "new.svg").write_text("<svg/>")
    assert install_state.fingerprint(tmp_path, "app") != app     # the app copies resources
    assert install_state.fingerprint(tmp_path, "test") == test   # an editable install reads them live
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\ndependencies = ['y']\n")
    assert install_state.fingerprint(tmp_path, "test") != test
    venv = tmp_path / "venv"
    venv.mkdir()
    assert not install_state.is_current(venv, tmp_path, "test")
    install_state.record(venv, tmp_path, "test")
    assert install_state.is_current(venv, tmp_path, "test") and not install_state.is_current(venv, tmp_path, "app")
