"""The attack suite, judged by host-side evidence. The attacks themselves run confined.

A session fixture runs tests/sandbox/attack_runner.py as PID 1 of its own PID + mount namespace
(``unshare --pid --fork --mount-proc``), once as the current user (root in CI) and once as an
unprivileged user (uid 65534 via ``setpriv``, when we are root). Each attack is then one test here
that asserts the evidence the runner gathered outside the sandbox: canary absent from every output
(trace, what the model was sent, the answer), listeners silent, marker absent, victim file and
worker code unchanged, bystander process alive and untraced, no process left behind, limits and
namespaces still in force in the live worker, the run finished and the next cell worked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.attack_cases import ATTACKS, Attack
from tests.sandbox.expected import ENV_VAR, expected_layers, expected_level

ROOT = Path(__file__).resolve().parents[2]
RUNNER_TIMEOUT_S = 240
NOBODY = 65534

pytestmark = pytest.mark.attack


def _site_packages() -> list[str]:
    return [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and os.path.isdir(p)]


def _confine(cmd: list[str]) -> list[str]:
    base = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if os.geteuid() != 0:
        base[1:1] = ["--user", "--map-root-user"]
    return base + cmd


def _as_nobody(cmd: list[str], home: str, pythonpath: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
            "env", "-i", "PATH=/usr/bin:/bin", f"HOME={home}", f"TMPDIR={home}",
            f"PYTHONPATH={os.pathsep.join(pythonpath)}", *cmd]


def _python_for_nobody(home: str, check: str, pythonpath: list[str]) -> str | None:
    """An interpreter uid 65534 can run ``check`` with (the venv's may live under /root)."""
    for cand in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(cand):
            continue
        r = subprocess.run(_as_nobody([cand, "-c", check], home, pythonpath), capture_output=True,
                           text=True, timeout=60, cwd="/")
        if r.returncode == 0:
            return cand
    return None


def _copy_for_nobody(work: str) -> str:
    """The stdlib-only part of the project (core, sandbox, the attack files) in a world-readable
    directory, for the --direct run when the checkout or venv is not readable by uid 65534."""
    dest = os.path.join(work, "src")
    for rel in ("rlm_desktop/__init__.py", "tests/__init__.py", "tests/sandbox/__init__.py",
                "tests/sandbox/attack_cases.py", "tests/sandbox/attack_runner.py"):
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy(ROOT / rel, os.path.join(dest, rel))
    for pkg in ("rlm_desktop/core", "rlm_desktop/sandbox"):
        shutil.copytree(ROOT / pkg, os.path.join(dest, pkg), ignore=shutil.ignore_patterns("__pycache__"))
    for dirpath, dirnames, filenames in os.walk(work):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)
    os.chmod(work, 0o777)
    return dest


def _run_suite(label: str) -> dict[str, Any]:
    if shutil.which("unshare") is None:
        pytest.skip("util-linux `unshare` is missing: the attack suite only runs confined")
    work = tempfile.mkdtemp(prefix=f"rlm-attack-{label}-")
    try:
        os.chmod(work, 0o777)
        out = os.path.join(work, "results.json")
        runner = ["-m", "tests.sandbox.attack_runner", "--out", out]
        if label == "root":
            cmd = _confine([sys.executable, *runner])
        else:
            if os.geteuid() != 0 or shutil.which("setpriv") is None:
                pytest.skip("the unprivileged-user run needs root (to switch to uid 65534) and setpriv")
            path = [str(ROOT), *_site_packages()]
            py = _python_for_nobody(work, "import openai, rlm_desktop.engine.run", path)
            if py is None:
                # The checkout or its venv is not readable by uid 65534: run the same attacks
                # through Sandbox.run_cell from a world-readable copy of the stdlib-only code.
                path = [_copy_for_nobody(work)]
                py = _python_for_nobody(work, "import sys; assert sys.version_info >= (3, 11)", path)
                runner.append("--direct")
            if py is None:
                pytest.skip("no Python >= 3.11 interpreter is readable by uid 65534")
            cmd = _confine(_as_nobody([py, *runner], work, path))
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=RUNNER_TIMEOUT_S,
                           cwd=ROOT if label == "root" else work)
        if r.returncode != 0 or not os.path.exists(out):
            if "unshare failed" in r.stderr or "Operation not permitted" in r.stderr[:500]:
                pytest.skip(f"cannot create the confining PID namespace here: {r.stderr.strip()[:300]}")
            pytest.fail(f"attack runner ({label}) failed with {r.returncode}:\n{r.stdout[-3000:]}\n"
                        f"{r.stderr[-3000:]}")
        with open(out, encoding="utf-8") as f:
            return json.load(f)
    finally:
        shutil.rmtree(work, ignore_errors=True)


_cache: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def suite_results() -> Any:
    def get(label: str) -> dict[str, Any]:
        if label not in _cache:
            _cache[label] = _run_suite(label)
        return _cache[label]
    return get


def _layers_in_force(isolation: dict[str, Any] | None) -> set[str]:
    layers = (isolation or {}).get("layers", {})
    return {name for name, v in layers.items() if isinstance(v, dict) and v.get("in_force")}


@pytest.mark.parametrize("user", ["root", "nobody"])
def test_level_is_strong(suite_results: Any, user: str) -> None:
    data = suite_results(user)
    iso = data["isolation"] or {}
    if iso.get("level") != "strong":
        if expected_level() == "strong":          # the machine can: a missing layer is a failure
            pytest.fail(f"isolation here is {iso.get('level')!r} (layers in force: "
                        f"{sorted(_layers_in_force(iso))}) but this machine is expected to give 'strong' "
                        f"({ENV_VAR} or the kernel probe)")
        pytest.skip(f"isolation here is {iso.get('level')!r} (layers in force: "
                    f"{sorted(_layers_in_force(iso))}); the acceptance machine must show 'strong'")
    assert data["uid"] == (NOBODY if user == "nobody" else os.getuid())
    assert len(data["results"]) == len(ATTACKS) >= 40


@pytest.mark.parametrize("user", ["root", "nobody"])
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_contained(suite_results: Any, user: str, attack: Attack) -> None:
    data = suite_results(user)
    iso = data["isolation"] or {}
    have = _layers_in_force(iso)
    expected = expected_layers()
    if attack.needs_any and not have.intersection(attack.needs_any):
        if expected.intersection(attack.needs_any):
            pytest.fail(f"needs one of {list(attack.needs_any)}, which this machine supports "
                        f"({ENV_VAR} or the kernel probe: {expected_level()!r}), but only "
                        f"{sorted(have) or 'no layers'} are in force")
        pytest.skip(f"needs one of {list(attack.needs_any)}; isolation here: {iso.get('level')!r} "
                    f"with {sorted(have) or 'no layers'}")
    res = data["results"].get(attack.name)
    assert res is not None, f"the runner produced no result for {attack.name}"
    problems = []
    if res["canary_leaked"]:
        problems.append("the canary secret appeared in the trace, a model request or the answer")
    if res["shadow_leaked"]:
        problems.append("/etc/shadow content appeared in the output")
    if res["listener_hits"]:
        problems.append(f"a listener received traffic: {res['listener_hits']}")
    if res["marker_exists"]:
        problems.append("the marker file outside the sandbox was created")
    if res["tmp_fill_exists"]:
        problems.append("a file was written to the host's /tmp")
    if not res["victim_ok"]:
        problems.append("the victim file was changed, moved, re-owned or re-moded")
    if not res["worker_code_ok"]:
        problems.append("the worker's code was modified")
    if not res["bystander_ok"]:
        problems.append("the bystander process was killed or traced")
    if res["processes_left"]:
        problems.append(f"processes left behind: {res['processes_left']}")
    if not res["next_cell_ok"]:
        problems.append("the next cell did not run (host or sandbox did not recover)")
    if res["status"] != "ok" or res["answer"] != "attack-done":
        problems.append(f"the run did not finish normally: {res['status']} {res['answer']!r} {res['reason']}")
    if attack.expect_restart and not res["restarted"]:
        problems.append("the worker should have been killed and restarted")
    live = res["live"]
    if len(live) != 1:
        problems.append(f"expected exactly one live worker during the next call, saw {live}")
    for w in live:
        if "seccomp" in have | expected and (w.get("seccomp") != "2" or w.get("no_new_privs") != "1"):
            problems.append(f"seccomp/no_new_privs not in force in the live worker: {w}")
        limit = str(1024 * 1024 * 1024)
        if w.get("as_limit") != [limit, limit]:
            problems.append(f"the memory limit changed in the live worker: {w.get('as_limit')}")
        if "namespaces" in have | expected and not (w.get("same_user_ns_as_launcher") and w.get("same_mnt_ns_as_launcher")):
            problems.append(f"the worker entered a new namespace: {w}")
        if "namespaces" in have | expected and w.get("host_scratch_entries") != 0:
            problems.append(f"files reached the host's disk under the scratch path: {w}")
    assert not problems, (f"{attack.name} ({user}): " + "; ".join(problems)
                          + f" [run: {res['status']}, restarted={res['restarted']}, {res['seconds']} s, "
                            f"processes at the check: {res.get('procs')}]")
