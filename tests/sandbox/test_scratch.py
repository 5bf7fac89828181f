"""Scratch folders of several app processes: ownership is a lock only a live process can hold.

Each sandbox's ``rlm-sandbox-*`` folder carries a lock file that its app holds ``flock``ed for the
sandbox's whole life; the clean-up sweep removes only folders whose lock it can take. Checked with
real processes: a second app holding a lock, an app in its own PID namespace whose worker restarts
while sweeps run outside, and twenty CLI runs at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.core.config import SandboxLimits
from rlm_desktop.sandbox.api import SubRequest
from rlm_desktop.sandbox.host import LOCK_FILE, Sandbox, create_locked_scratch, sweep_stale_scratch

ROOT = Path(__file__).resolve().parents[2]
LIMITS = SandboxLimits(allow_weak=True)


async def _no_calls(req: SubRequest) -> Any:
    raise AssertionError(f"unexpected sub-call {req}")


def _lock_is_held(root: str) -> bool:
    """Whether someone holds the folder's lock (tried from a fresh open: flock locks of separate
    opens conflict even within one process)."""
    fd = os.open(os.path.join(root, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _fds_of(pid: int) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return out


def test_only_folders_whose_lock_nobody_holds_are_swept(tmp_path: Path) -> None:
    def folder(name: str, *, lock: bool = False, age_s: float = 0) -> Path:
        d = tmp_path / name
        (d / "scratch").mkdir(parents=True)
        if lock:
            (d / LOCK_FILE).write_text("")
        if age_s:
            t = time.time() - age_s
            os.utime(d, (t, t))
        return d

    dead = folder("rlm-sandbox-dead", lock=True)                    # its owner died: lock free
    creating = folder("rlm-sandbox-creating")                       # lock file not there yet
    (creating / (LOCK_FILE + ".new")).write_text("")
    old_unlocked = folder("rlm-sandbox-old", age_s=3 * 24 * 3600)   # left mid-creation long ago
    other = folder("not-ours", lock=True)
    target = folder("elsewhere", lock=True)
    (tmp_path / "rlm-sandbox-link").symlink_to(target)
    mine, mine_fd = create_locked_scratch(str(tmp_path))
    # Another app process holds a folder: alive it keeps it, killed (by us, who started it) it loses it.
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            from rlm_desktop.sandbox.host import create_locked_scratch
            root, fd = create_locked_scratch({str(tmp_path)!r})
            print(root, flush=True)
            sys.stdin.readline()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        theirs = holder.stdout.readline().strip()
        assert theirs.startswith(str(tmp_path / "rlm-sandbox-")), theirs
        removed = sweep_stale_scratch(str(tmp_path))
        assert sorted(removed) == sorted(str(p) for p in (dead, old_unlocked))
        assert not dead.exists() and not old_unlocked.exists()
        assert creating.exists() and other.exists() and target.exists() and (target / LOCK_FILE).exists()
        assert (tmp_path / "rlm-sandbox-link").is_symlink()
        assert os.path.isdir(mine) and os.path.isdir(theirs)
        assert _lock_is_held(mine) and _lock_is_held(theirs)
    finally:
        holder.kill()
        holder.wait()
    assert sweep_stale_scratch(str(tmp_path)) == [theirs]
    assert os.path.isdir(mine)
    os.close(mine_fd)
    assert sweep_stale_scratch(str(tmp_path)) == [mine]


def test_a_sandbox_holds_its_folder_across_restarts_and_no_worker_holds_the_lock() -> None:
    async def main() -> None:
        sb = Sandbox(LIMITS, context="c")
        await sb.start()
        try:
            root = sb._scratch_root
            assert root is not None and _lock_is_held(root)
            for round_ in range(2):
                worker = sb._worker
                assert worker is not None and worker.proc is not None
                for pid in {worker.proc.pid, sb.pid}:
                    assert os.path.join(root, LOCK_FILE) not in _fds_of(pid), \
                        f"worker process {pid} holds the scratch lock (round {round_})"
                assert root not in sweep_stale_scratch() and os.path.isdir(root)
                if round_ == 0:
                    r = await asyncio.wait_for(sb.run_cell("while True: pass", timeout_s=0.5,
                                                           on_request=_no_calls), 30)
                    assert r.status == "timeout" and r.restarted
            assert _lock_is_held(root)
            r = await sb.run_cell("print('after restart')", timeout_s=20, on_request=_no_calls)
            assert r.ok and r.stdout == "after restart\n", r.error
        finally:
            await sb.close()
        assert not os.path.exists(root)
    asyncio.run(asyncio.wait_for(main(), 120))


def _confine(cmd: list[str]) -> list[str]:
    base = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    if os.geteuid() != 0:
        base[1:1] = ["--user", "--map-root-user"]
    return base + cmd


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PID namespaces are Linux-only")
def test_an_app_in_another_pid_namespace_keeps_its_folder_while_sweeps_run_outside(tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, json, os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from rlm_desktop.core.config import SandboxLimits
        from rlm_desktop.sandbox.host import Sandbox

        async def no_calls(req):
            raise RuntimeError("no sub-calls here")

        async def main():
            sb = Sandbox(SandboxLimits(allow_weak=True), context="the context")
            await sb.start()
            try:
                first = await sb.run_cell("keep = 1", timeout_s=30, on_request=no_calls)
                print(json.dumps({{"root": sb._scratch_root, "pid_here": os.getpid(), "ok": first.ok}}),
                      flush=True)
                await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
                spun = await asyncio.wait_for(sb.run_cell("while True: pass", timeout_s=0.5,
                                                          on_request=no_calls), 30)
                after = await sb.run_cell("print(context)", timeout_s=30, on_request=no_calls)
                print(json.dumps({{"spun": spun.status, "restarted": spun.restarted,
                                   "after_ok": after.ok, "after": after.stdout, "error": after.error}}),
                      flush=True)
            finally:
                await sb.close()

        asyncio.run(main())
    """))
    app = subprocess.Popen(_confine([sys.executable, str(script)]), stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stop = threading.Event()
    sweeps: list[list[str]] = []

    def sweeper() -> None:
        while not stop.is_set():
            sweeps.append(sweep_stale_scratch())
            stop.wait(0.005)
    try:
        line = app.stdout.readline()
        assert line, f"the confined app did not start: {app.stderr.read() if app.poll() is not None else ''}"
        first = json.loads(line)
        root = first["root"]
        assert first["ok"] and first["pid_here"] < 10       # it really numbers its own processes
        assert os.path.dirname(root) == tempfile.gettempdir()
        for _ in range(20):
            assert root not in sweep_stale_scratch(), "a sweep outside removed a live app's folder"
        assert os.path.isdir(root)
        t = threading.Thread(target=sweeper)
        t.start()
        try:
            app.stdin.write("go\n")
            app.stdin.flush()
            second = json.loads(app.stdout.readline() or "null")
        finally:
            stop.set()
            t.join()
        out, err = app.communicate(timeout=60)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert second is not None, err
    assert (second["spun"], second["restarted"]) == ("timeout", True)
    assert second["after_ok"] and second["after"] == "the context\n", second["error"]
    assert len(sweeps) > 0 and not any(root in s for s in sweeps)
    assert app.returncode == 0, err
    assert not os.path.exists(root)                        # the app removed it itself on close


def test_twenty_cli_runs_at_once_all_succeed(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "report.txt").write_text("Quarterly report. The launch date is March 3. Revenue grew.\n")
    env = dict(os.environ)
    env.pop("OPENAI_API_KEY", None)
    env["PYTHONPATH"] = str(ROOT)
    procs = [subprocess.Popen([sys.executable, "-m", "rlm_desktop", "run", "--docs", str(docs),
                               "--query", "When is the launch date?", "--provider", "demo", "--json",
                               "--quiet", "--allow-weak-sandbox", "--trace", str(tmp_path / f"t{i}.jsonl")],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(20)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failed = [(code, err.strip()[-300:]) for code, _out, err in results if code != 0]
    assert failed == [], f"{len(failed)} of 20 concurrent runs failed: {failed[:3]}"
    assert all(json.loads(out)["status"] == "ok" for _code, out, _err in results)
