"""Run the attack suite confined, through the real path (engine → REPL process), gathering evidence.

Started by tests/sandbox/test_attacks.py as PID 1 of its own PID + mount namespace
(``unshare --pid --fork --mount-proc python -m tests.sandbox.attack_runner --out FILE``) so that an
attack that escaped (``kill(-1)``, a fork bomb) could only hit this namespace. It refuses to run
as anything but PID 1. For each attack a scripted model (tests/fakeserver.py) answers the first
root call with the attack in a ```repl block, the second with a harmless cell, the third with a
final answer; the runner collects host-side evidence and writes JSON for the test to judge.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rlm_desktop.core.config import SandboxLimits  # noqa: E402
from tests.proctree import proc_status  # noqa: E402
from tests.sandbox.attack_cases import ATTACKS, Attack  # noqa: E402

# The engine path needs the openai SDK; --direct (used where only a bare interpreter is readable,
# e.g. for the unprivileged-user run on a machine whose venv lives under /root) drives
# Sandbox.run_cell itself and needs nothing but the standard library.

MEMORY_MB = 1024
OUTPUT_CAP = 200_000
WORKER_PY = ROOT / "rlm_desktop" / "sandbox" / "worker.py"


class Listeners:
    """TCP, UDP, Unix-path and abstract-socket listeners on this machine that must hear nothing."""

    def __init__(self, base: Path) -> None:
        self.hits: list[str] = []
        self._lock = threading.Lock()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix_path = str(base / "listener.sock")
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.unix_path)
        self.unix.listen(16)
        self.abstract_name = "rlm-attack-" + secrets.token_hex(6)
        self.abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract.bind("\0" + self.abstract_name)
        self.abstract.listen(16)
        self._stop = False
        threading.Thread(target=self._loop, daemon=True).start()

    @property
    def tcp_port(self) -> int:
        return self.tcp.getsockname()[1]

    @property
    def udp_port(self) -> int:
        return self.udp.getsockname()[1]

    def _loop(self) -> None:
        socks = [self.tcp, self.udp, self.unix, self.abstract]
        while not self._stop:
            ready, _, _ = select.select(socks, [], [], 0.2)
            for s in ready:
                with self._lock:
                    if s is self.udp:
                        data, _ = s.recvfrom(65536)
                        self.hits.append(f"udp:{data[:40]!r}")
                    else:
                        conn, _ = s.accept()
                        conn.settimeout(0.5)
                        try:
                            data = conn.recv(100)
                        except OSError:
                            data = b""
                        conn.close()
                        self.hits.append(f"{'tcp' if s is self.tcp else 'unix'}:{data[:40]!r}")

    def take(self) -> list[str]:
        with self._lock:
            hits, self.hits = self.hits, []
        return hits


def live_pids(exclude: set[int]) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in exclude:
            continue
        st = proc_status(pid)
        if st and not st.get("State", "").startswith(("Z", "X")):
            out.append(pid)
    return out


def workers_now(exclude: set[int]) -> list[dict[str, Any]]:
    """Evidence from the REPL processes alive right now (inner workers: parent is a launcher)."""
    found = []
    for pid in live_pids(exclude):
        st = proc_status(pid)
        ppid = int(st.get("PPid", "0") or 0)
        if ppid in exclude or ppid == 0:
            continue
        info: dict[str, Any] = {"pid": pid, "seccomp": st.get("Seccomp"),
                                "no_new_privs": st.get("NoNewPrivs")}
        try:
            with open(f"/proc/{pid}/limits") as f:
                for line in f:
                    if line.startswith("Max address space"):
                        info["as_limit"] = line.split()[3:5]
            for ns in ("user", "mnt"):
                info[f"same_{ns}_ns_as_launcher"] = (os.stat(f"/proc/{pid}/ns/{ns}").st_ino
                                                     == os.stat(f"/proc/{ppid}/ns/{ns}").st_ino)
            # The worker's scratch path, looked at in *our* mount namespace: with namespaces its
            # files live on the worker's private tmpfs, so the host's directory must stay empty.
            cwd = os.readlink(f"/proc/{pid}/cwd")
            info["host_scratch_entries"] = len(os.listdir(cwd)) if os.path.isdir(cwd) else -1
        except OSError as exc:
            info["error"] = str(exc)
        found.append(info)
    return found


def wait_gone(exclude: set[int], timeout: float = 8.0) -> list[int]:
    """Wait (through pidfds, not sleeps) until no process but ours is left; return leftovers."""
    deadline = time.monotonic() + timeout
    while True:
        left = live_pids(exclude)
        if not left or time.monotonic() >= deadline:
            return left
        fds = []
        for pid in left:
            with contextlib.suppress(OSError):
                fds.append(os.pidfd_open(pid))
        try:
            if fds:
                select.select(fds, [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        finally:
            for fd in fds:
                os.close(fd)


def fill(code: str, env: dict[str, str]) -> str:
    for k, v in env.items():
        code = code.replace(f"@{k}@", v)
    return code


def fence(code: str) -> str:
    return "```repl\n" + code.strip("\n") + "\n```"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--direct", action="store_true", help="drive Sandbox.run_cell, not the engine")
    args = ap.parse_args()
    if os.getpid() != 1:
        print("attack_runner: refusing to run outside its own PID namespace "
              "(run it via `unshare --pid --fork --mount-proc`)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="rlm-attacks-"))
    try:
        return asyncio.run(_run_all(base, args))
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _run_all(base: Path, args: argparse.Namespace) -> int:
    canary = "CANARY-" + secrets.token_hex(8)
    key = f"sk-{canary}-key"
    os.chmod(base, 0o755)
    home = base / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".config" / "rlm-desktop").mkdir(parents=True)
    (home / ".local" / "share" / "keyrings").mkdir(parents=True)
    ssh_key = home / ".ssh" / "id_rsa"
    ssh_key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{canary}-ssh\n")
    app_config = home / ".config" / "rlm-desktop" / "settings.conf"
    app_config.write_text(f"[providers]\nkey={canary}-config\n")
    keyring = home / ".local" / "share" / "keyrings" / "login.keyring"
    keyring.write_text(f"{canary}-keyring")
    victim = base / "victim.txt"
    victim.write_text("victim-original\n")
    victim.chmod(0o644)
    marker = base / "MARKER"
    os.environ["OPENAI_API_KEY"] = f"sk-{canary}-env"
    os.environ["HOME"] = str(home)
    shadow_line = ""
    with contextlib.suppress(OSError):
        shadow_line = Path("/etc/shadow").read_text().splitlines()[0]
    listeners = Listeners(base)
    bystander = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(1000)"])
    worker_bytes = WORKER_PY.read_bytes()
    nonce = secrets.token_hex(6)
    env = {"MARKER": str(marker), "VICTIM": str(victim), "SSH_KEY": str(ssh_key),
           "APP_CONFIG": str(app_config), "KEYRING": str(keyring), "HOST_PID": str(os.getpid()),
           "VICTIM_PID": str(bystander.pid), "TCP_PORT": str(listeners.tcp_port),
           "UDP_PORT": str(listeners.udp_port), "UNIX_PATH": listeners.unix_path,
           "ABSTRACT": listeners.abstract_name, "WORKER_PY": str(WORKER_PY), "HOME": str(home),
           "NONCE": nonce}
    ours = {os.getpid(), bystander.pid}
    results: dict[str, Any] = {}
    isolation: dict[str, Any] | None = None
    srv: Any = None
    provider: Any = None
    if not args.direct:
        from rlm_desktop.core.config import ProviderConfig
        from tests.fakeserver import FakeOpenAI

        srv = FakeOpenAI()
        srv.__enter__()
        provider = ProviderConfig(id="fake", name="Fake server", base_url=srv.base_url, api_key=key,
                                  root_model="fake-root", sub_model="fake-sub", max_retries=0)
    try:
        for attack in ATTACKS:
            if args.only and attack.name not in args.only:
                continue
            if args.direct:
                res = await _run_one_direct(attack, env, ours)
            else:
                res = await _run_one(attack, srv, provider, base, env, ours, listeners)
            isolation = isolation or res.pop("isolation", None)
            res.pop("isolation", None)
            _collect_evidence(res, attack, base, canary, victim, marker, worker_bytes, bystander,
                              shadow_line, listeners, ours, nonce)
            results[attack.name] = res
    finally:
        if srv is not None:
            from rlm_desktop.engine.providers import aclose_clients

            await aclose_clients()
            srv.__exit__(None, None, None)
        if bystander.poll() is None:
            bystander.kill()
        bystander.wait()
    out = {"uid": os.getuid(), "python": sys.executable, "isolation": isolation, "results": results,
           "path": "Sandbox.run_cell (direct)" if args.direct else "engine run_rlm → REPL process"}
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


async def _run_one_direct(attack: Attack, env: dict[str, str], ours: set[int]) -> dict[str, Any]:
    from rlm_desktop.sandbox.api import SubRequest
    from rlm_desktop.sandbox.host import Sandbox

    async def handler(req: SubRequest) -> Any:
        return ["sub-answer"] * len(req.payload["prompts"]) if req.kind == "llm_query_batched" \
            else "sub-answer"

    seen: list[str] = []
    t0 = time.monotonic()
    sb = Sandbox(SandboxLimits(allow_weak=True, memory_mb=MEMORY_MB, output_cap_bytes=OUTPUT_CAP),
                 context={"report.txt": "Quarterly numbers are up."})
    report = await sb.start()
    try:
        r = await sb.run_cell(fill(attack.code, env), timeout_s=attack.cell_timeout_s, on_request=handler,
                              on_output=lambda stream, text: seen.append(text))
        live = workers_now(ours)
        r2 = await sb.run_cell("print('NEXT-CELL-' + str(6 * 7))", timeout_s=10, on_request=handler)
    finally:
        await sb.close()
    scan = "\n".join([*seen, r.stdout, r.stderr, r.error or "", str(r.final), r2.stdout, r2.stderr,
                      r2.error or ""])
    return {
        "seconds": round(time.monotonic() - t0, 3),
        "status": "ok" if r2.ok else "error", "answer": "attack-done" if r2.ok else None,
        "reason": r.restart_reason or r.status, "isolation": report.to_dict(),
        "next_cell_ok": r2.ok and r2.stdout == "NEXT-CELL-42\n", "live": live,
        "restarted": r.restarted, "trace_bytes": len(scan.encode()), "_scan": scan,
    }


async def _run_one(attack: Attack, srv: Any, provider: Any, base: Path,
                   env: dict[str, str], ours: set[int], listeners: Listeners) -> dict[str, Any]:
    from rlm_desktop.core.config import RunConfig, RunLimits
    from rlm_desktop.core.trace import Trace, TraceWriter
    from rlm_desktop.engine.run import run_rlm
    from tests.fakeserver import Request

    code = fill(attack.code, env)
    state: dict[str, Any] = {"roots": 0, "live": [], "next_cell_ok": False}

    def handler(req: Request) -> str:
        if not req.system:
            return "sub-answer"
        state["roots"] += 1
        n = state["roots"]
        if n == 1:
            return fence(code)
        if n == 2:
            state["live"] = workers_now(ours)
            state["procs"] = [(pid, proc_status(pid).get("PPid"), proc_status(pid).get("State"), proc_status(pid).get("Threads"))
                              for pid in live_pids(set())]
            return fence("print('NEXT-CELL-' + str(6 * 7))")
        state["next_cell_ok"] = "NEXT-CELL-42" in req.last_user
        return "FINAL(attack-done)"

    srv.handler = handler
    first_request = len(srv.requests)
    trace_path = base / f"trace-{attack.name}.jsonl"
    trace = Trace({})
    writer = TraceWriter(trace_path, {"attack": attack.name}).attach(trace)
    config = RunConfig(query="Summarise the document.", root_model="fake-root", sub_model="fake-sub",
                       limits=RunLimits(max_iterations=5, cell_timeout_s=attack.cell_timeout_s,
                                        budget_usd=None, call_timeout_s=30, run_timeout_s=120),
                       sandbox=SandboxLimits(allow_weak=True, memory_mb=MEMORY_MB,
                                             output_cap_bytes=OUTPUT_CAP),
                       memo_cache=False)
    t0 = time.monotonic()
    error = None
    try:
        result = await run_rlm(config, {"report.txt": "Quarterly numbers are up."}, provider=provider,
                               trace=trace)
    except Exception as exc:   # the runner records it; the test fails on it
        result = None
        error = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(Exception):
        writer.close()
    trace_text = trace_path.read_text(encoding="utf-8", errors="replace") if trace_path.exists() else ""
    bodies = "\n".join(json.dumps(r.body) for r in srv.requests[first_request:])
    return {
        "seconds": round(time.monotonic() - t0, 3),
        "status": result.status if result else "exception",
        "answer": result.answer if result else None,
        "reason": (result.reason if result else error),
        "isolation": result.isolation if result else None,
        "next_cell_ok": state["next_cell_ok"],
        "live": state["live"],
        "procs": state.get("procs"),
        "restarted": "sandbox restarted" in trace_text,
        "trace_bytes": len(trace_text.encode()),
        "_scan": trace_text + "\n" + bodies + "\n" + json.dumps(
            [result.answer, result.reason] if result else [error]),
    }


def _collect_evidence(res: dict[str, Any], attack: Attack, base: Path, canary: str, victim: Path,
                      marker: Path, worker_bytes: bytes, bystander: subprocess.Popen[bytes],
                      shadow_line: str, listeners: Listeners, ours: set[int], nonce: str) -> None:
    scan = res.pop("_scan")
    res["canary_leaked"] = canary in scan
    res["shadow_leaked"] = bool(shadow_line) and shadow_line in scan
    res["shadow_checked"] = bool(shadow_line)
    res["listener_hits"] = listeners.take()
    res["marker_exists"] = marker.exists()
    fill_file = Path(f"/tmp/rlm-attack-fill-{nonce}")
    res["tmp_fill_exists"] = fill_file.exists()
    for p in (marker, fill_file):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    try:
        st = victim.stat()
        res["victim_ok"] = (victim.read_text() == "victim-original\n" and (st.st_mode & 0o7777) == 0o644
                            and st.st_uid == os.getuid() and not Path(str(victim) + ".moved").exists())
    except OSError:
        res["victim_ok"] = False
    if not res["victim_ok"]:          # put it back so the next attack starts clean
        with contextlib.suppress(OSError):
            Path(str(victim) + ".moved").unlink()
        with contextlib.suppress(OSError):
            victim.unlink()
        victim.write_text("victim-original\n")
        victim.chmod(0o644)
    res["worker_code_ok"] = WORKER_PY.read_bytes() == worker_bytes
    if not res["worker_code_ok"]:
        WORKER_PY.write_bytes(worker_bytes)
    st = proc_status(bystander.pid)
    res["bystander_ok"] = bystander.poll() is None and st.get("TracerPid") == "0"
    left = wait_gone(ours)
    res["processes_left"] = left
    for pid in left:                  # descendants of ours in our own PID namespace
        with contextlib.suppress(OSError):
            fd = os.pidfd_open(pid)
            try:
                import signal
                signal.pidfd_send_signal(fd, signal.SIGKILL)
            finally:
                os.close(fd)
    try:
        du = sum(f.stat().st_size for f in base.rglob("*") if f.is_file())
    except OSError:
        du = -1
    res["base_dir_bytes"] = du


if __name__ == "__main__":
    sys.exit(main())
