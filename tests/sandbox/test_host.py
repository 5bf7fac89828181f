"""The REPL process boundary and protocol, with real worker processes (no mocks)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import re
import select
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.core.config import SandboxLimits
from rlm_desktop.sandbox import worker as worker_mod
from rlm_desktop.sandbox.api import SandboxError, SubRequest
from rlm_desktop.sandbox.host import Sandbox, minimal_environment
from tests.proctree import descendants, proc_status
from tests.sandbox.expected import expected_at_least

ROOT = Path(__file__).resolve().parents[2]
# The default policy (refuse below "good") wherever the machine is expected to reach it.
LIMITS = SandboxLimits(allow_weak=not expected_at_least("good"))


async def echo(req: SubRequest) -> Any:
    if req.kind == "llm_query_batched":
        return [f"A({p})" for p in req.payload["prompts"]]
    return f"A({req.payload['prompt']})"


def run(coro_fn, *, context: Any = "the context", limits: SandboxLimits = LIMITS, **kw: Any) -> Any:
    async def main() -> Any:
        sb = Sandbox(limits, context=context, **kw)
        await sb.start()
        try:
            return await coro_fn(sb)
        finally:
            await sb.close()
    return asyncio.run(main())


# How long past its own timeout a cell may take before the test fails (with a message saying so)
# instead of hanging until pytest-timeout: a cell timeout that never fires must fail here.
CELL_GRACE_S = 30


async def cell(sb: Sandbox, code: str, *, timeout: float = 20, handler=echo, on_output=None):
    bound = timeout + CELL_GRACE_S
    try:
        return await asyncio.wait_for(sb.run_cell(textwrap.dedent(code), timeout_s=timeout, on_request=handler,
                                                  on_output=on_output), bound)
    except TimeoutError:
        raise AssertionError(f"the cell was still running {bound:g} s after it started although its "
                             f"timeout is {timeout:g} s: the cell timeout did not end it") from None


def test_constants_match_the_stdlib() -> None:
    assert worker_mod.PYCF_ALLOW_TOP_LEVEL_AWAIT == ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    assert worker_mod.CO_COROUTINE == inspect.CO_COROUTINE


def test_namespace_persists_and_context_is_loaded() -> None:
    async def go(sb: Sandbox):
        r1 = await cell(sb, "x = 41\nprint(type(context).__name__, sorted(context))")
        r2 = await cell(sb, "x += 1\nprint(x, context['b.md'])")
        return r1, r2
    r1, r2 = run(go, context={"a.txt": "alpha", "b.md": "beta"})
    assert r1.ok and r1.status == "ok" and r1.stdout == "dict ['a.txt', 'b.md']\n"
    assert r2.ok and r2.stdout == "42 beta\n"


def test_runs_in_a_separate_process_with_own_session_and_minimal_env(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-ENV-0123456789")
    monkeypatch.setenv("SOME_USER_VAR", "user-value")

    async def go(sb: Sandbox):
        r = await cell(sb, "import os, json\nprint(json.dumps(dict(os.environ)))")
        # Judged from the host, in the host's PID namespace: inside the sandbox's own PID
        # namespace getsid() reports 0 for a leader outside it, and so does the test runner's
        # own getsid() when CI runs it in a container -- neither says anything.
        assert sb.pid is not None
        leader = os.getsid(sb.pid)
        procs = [leader, *descendants(leader)]
        sessions = {p: (os.getsid(p), os.getpgid(p)) for p in procs}
        ppid = int(proc_status(leader)["PPid"])
        return sb.pid, leader, ppid, r, sessions
    pid, leader, leader_parent, r, sessions = run(go)
    import json
    env = json.loads(r.stdout)
    assert pid != os.getpid()
    # The process the app started leads a new session and process group, the code runs in it,
    # and everything the worker started stays in it (so the watchdog's killpg reaches all of it
    # and nothing of the app's).
    assert leader_parent == os.getpid() and leader not in (os.getsid(0), os.getpgid(0))
    assert pid in sessions
    assert all(sp == (leader, leader) for sp in sessions.values()), sessions
    assert "OPENAI_API_KEY" not in env and "SOME_USER_VAR" not in env
    assert "sk-canary" not in r.stdout
    assert set(env) <= set(minimal_environment("/x")) | {"LC_CTYPE"}


def test_stdout_and_stderr_are_captured_and_forwarded_live() -> None:
    seen: list[tuple[str, str]] = []
    got_first = asyncio.Event()

    def on_output(stream: str, text: str) -> None:
        seen.append((stream, text))
        if "first" in text:
            got_first.set()

    async def handler(req: SubRequest) -> str:
        # The cell is blocked in llm_query right now: its earlier print must already be here.
        await asyncio.wait_for(got_first.wait(), 10)
        return "released"

    async def go(sb: Sandbox):
        return await cell(sb, """
            import sys
            print("first")
            print("oops", file=sys.stderr)
            print(llm_query("wait"))
        """, handler=handler, on_output=on_output)
    r = run(go)
    assert r.ok, r.error
    assert r.stdout == "first\nreleased\n" and r.stderr == "oops\n"
    assert ("stdout", "first\n") in seen or any("first" in t for s, t in seen if s == "stdout")


def test_fd_level_output_is_captured_too() -> None:
    async def go(sb: Sandbox):
        return await cell(sb, "import os\nos.write(1, b'raw-out\\n')\nos.write(2, b'raw-err\\n')")
    r = run(go)
    assert r.ok and "raw-out" in r.stdout and "raw-err" in r.stderr


def test_output_is_capped() -> None:
    limits = SandboxLimits(allow_weak=True, output_cap_bytes=10_000)

    async def go(sb: Sandbox):
        r = await cell(sb, "for i in range(2000): print('x' * 100)")
        r2 = await cell(sb, "print('small')")
        return r, r2
    r, r2 = run(go, limits=limits)
    assert r.ok and r.output_truncated
    assert len(r.stdout.encode()) <= 10_000
    assert r2.stdout == "small\n" and not r2.output_truncated


def test_timeout_kills_restarts_and_loses_variables() -> None:
    async def go(sb: Sandbox):
        await cell(sb, "keep = 1")
        old = sb.pid
        r = await cell(sb, "print('started')\nwhile True: pass", timeout=0.5)
        r2 = await cell(sb, "print(context)\nprint(keep)")
        return old, r, r2, sb.pid
    old, r, r2, new = run(go)
    assert r.status == "timeout" and r.restarted and not r.ok
    assert r.restart_reason == "timeout after 0.5 s"
    assert "variables were lost" in r.error
    assert new != old
    assert not _alive(old)
    assert r2.stdout == "the context\n" and "NameError" in r2.error


def test_cell_timeout_does_not_count_time_waiting_for_sub_calls() -> None:
    """A slow provider must not get a cell (and the answers already paid for) killed; the cell's
    own time still counts, before and after its sub-calls."""
    async def slow(req: SubRequest) -> Any:
        await asyncio.sleep(0.6)
        return await echo(req)

    async def go(sb: Sandbox):
        waited = await cell(sb, "a = [llm_query(str(i)) for i in range(3)]\nprint(a)",
                            timeout=0.5, handler=slow)          # 1.8 s of waiting, ~0 s of its own
        spun = await cell(sb, "llm_query('x')\nwhile True: pass", timeout=0.5, handler=slow)
        return waited, spun
    waited, spun = run(go)
    assert waited.ok and waited.stdout == "['A(0)', 'A(1)', 'A(2)']\n", waited.error
    assert waited.duration_s >= 1.8
    assert spun.status == "timeout" and spun.restart_reason == "timeout after 0.5 s"
    assert spun.duration_s >= 1.1                       # 0.6 s waiting + 0.5 s of its own


@pytest.mark.parametrize("code,needle", [
    ("import os\nos._exit(7)", "status 7"),
    ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
    ("import os\nfor fd in range(3, 64):\n    try: os.close(fd)\n    except OSError: pass\nimport time\ntime.sleep(30)",
     "pipe|exited"),    # the host sees the pipe close, or the worker's reader notices first and exits
])
def test_crashes_are_detected_and_the_worker_restarted(code: str, needle: str) -> None:
    async def go(sb: Sandbox):
        r = await cell(sb, code)
        r2 = await cell(sb, "print('alive', len(context))")
        return r, r2
    r, r2 = run(go)
    assert r.status == "crashed" and r.restarted and not r.ok
    assert re.search(needle, r.restart_reason), r.restart_reason
    assert r2.ok and r2.stdout == "alive 11\n"


@pytest.mark.parametrize("junk", [
    "b'\\xff\\xff\\xff\\xff' + b'x' * 64",                       # oversized length prefix
    "b'\\x00\\x00\\x00\\x05' + b'nope!'",                        # not JSON
    "b'\\x00\\x00\\x00\\x0b' + b'{\"t\":\"zzz\"}'",              # unknown frame type
    "(lambda b: len(b).to_bytes(4, 'big') + b)(b'{\"t\":\"done\",\"cell\":999,\"ok\":true}')",  # wrong cell
    "(lambda b: len(b).to_bytes(4, 'big') + b)(b'{\"t\":\"req\",\"cell\":1,\"id\":1,\"kind\":\"shell\",\"payload\":{}}')",
])
def test_forged_or_garbled_frames_are_rejected(junk: str) -> None:
    async def go(sb: Sandbox):
        code = (f"import os\ndata = {junk}\n"
                "for fd in range(3, 32):\n"
                "    try: os.write(fd, data)\n"
                "    except OSError: pass\n"
                "import time\ntime.sleep(30)")
        r = await cell(sb, code)
        r2 = await cell(sb, "print('next')")
        return r, r2
    r, r2 = run(go)
    assert r.status == "crashed" and "protocol violation" in r.restart_reason
    assert r2.ok and r2.stdout == "next\n"


def test_repl_functions_and_final() -> None:
    async def go(sb: Sandbox):
        a = await cell(sb, """
            print(llm_query("one"))
            print(llm_query_batched(["p1", "p2", "p3"]))
            SHOW_VARS()
            FINAL("the answer")
        """)
        b = await cell(sb, "result = {'k': 3}\nFINAL_VAR('result')")
        c = await cell(sb, "FINAL_VAR('missing')")
        d = await cell(sb, "rlm_query('x')")
        return a, b, c, d
    a, b, c, d = run(go)
    assert a.ok, a.error
    assert a.stdout.splitlines()[:2] == ["A(one)", "['A(p1)', 'A(p2)', 'A(p3)']"]
    assert a.final is not None and a.final.value == "the answer" and a.final.via == "FINAL"
    assert b.final is not None and b.final.value == "{'k': 3}" and b.final.via == "FINAL_VAR"
    assert b.final.var_name == "result"
    assert not c.ok and "missing" in c.error and c.final is None
    assert not d.ok and "maximum nesting depth" in d.error   # rlm_query only when enabled: a reason, not a NameError


def test_rlm_query_when_enabled_and_async_variants() -> None:
    seen: list[SubRequest] = []

    async def handler(req: SubRequest) -> Any:
        seen.append(req)
        return await echo(req)

    async def go(sb: Sandbox):
        return await cell(sb, """
            import asyncio
            a = await llm_query_async("x")
            b = await llm_query_batched_async(["y", "z"])
            c = rlm_query("deep", {"d.txt": "doc"})
            d = await rlm_query_async("deeper")
            e = await asyncio.gather(*(llm_query_async(f"g{i}") for i in range(5)))
            print(a, b, c, d, e)
        """, handler=handler)
    r = run(go, rlm_query_enabled=True)
    assert r.ok, r.error
    assert r.stdout == "A(x) ['A(y)', 'A(z)'] A(deep) A(deeper) ['A(g0)', 'A(g1)', 'A(g2)', 'A(g3)', 'A(g4)']\n"
    rq = [s for s in seen if s.kind == "rlm_query"]
    assert rq[0].payload == {"prompt": "deep", "context": {"d.txt": "doc"}}
    assert rq[1].payload == {"prompt": "deeper", "context": None}


def test_requests_from_threads_are_served_concurrently() -> None:
    n = 6
    in_flight = 0
    peak = 0
    all_there = asyncio.Event()

    async def handler(req: SubRequest) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == n:
            all_there.set()
        await asyncio.wait_for(all_there.wait(), 10)   # only returns once all n are open at once
        in_flight -= 1
        return req.payload["prompt"].upper()

    async def go(sb: Sandbox):
        return await cell(sb, f"""
            from concurrent.futures import ThreadPoolExecutor
            with ThreadPoolExecutor({n}) as ex:
                print(list(ex.map(llm_query, [f"q{{i}}" for i in range({n})])))
        """, handler=handler)
    r = run(go)
    assert r.ok, r.error
    assert peak == n
    assert r.stdout == str([f"Q{i}" for i in range(n)]) + "\n"


def test_handler_errors_reach_the_cell_as_exceptions() -> None:
    async def handler(req: SubRequest) -> str:
        raise RuntimeError("budget exhausted: stop calling")

    async def go(sb: Sandbox):
        return await cell(sb, """
            try:
                llm_query("x")
            except RuntimeError as e:
                print("caught:", e)
        """, handler=handler)
    r = run(go)
    assert r.ok and "caught: llm_query failed: budget exhausted: stop calling" in r.stdout


def test_errors_syntax_and_systemexit_keep_the_worker() -> None:
    async def go(sb: Sandbox):
        a = await cell(sb, "v = 5\n1/0")
        b = await cell(sb, "def (:")
        c = await cell(sb, "import sys\nsys.exit(3)")
        d = await cell(sb, "print(v, '\\ud800')")
        return a, b, c, d
    a, b, c, d = run(go)
    assert a.status == "error" and "ZeroDivisionError" in a.error and "<cell" in a.error
    assert "worker.py" not in a.error
    assert b.status == "error" and "SyntaxError" in b.error
    assert c.status == "error" and "SystemExit" in c.error
    assert d.ok and d.stdout.startswith("5 ") and not d.restarted


def test_cancellation_kills_the_worker_and_the_next_cell_restarts_it() -> None:
    async def go(sb: Sandbox):
        started = asyncio.Event()

        def on_output(s: str, t: str) -> None:
            started.set()
        task = asyncio.ensure_future(cell(sb, "print('go')\nimport time\nwhile True: time.sleep(0.01)",
                                          on_output=on_output))
        await asyncio.wait_for(started.wait(), 10)
        pid = sb.pid
        pidfd = os.pidfd_open(pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gone = select.select([pidfd], [], [], 10)[0]
        os.close(pidfd)
        r = await cell(sb, "print('fresh')")
        return gone, r
    gone, r = run(go)
    assert gone, "the worker outlived the cancellation"
    assert r.ok and r.stdout == "fresh\n"
    assert r.restarted and "between cells" in r.restart_reason     # the model learns vars are gone


def test_a_worker_dying_between_cells_is_reported_with_the_next_cell() -> None:
    async def go(sb: Sandbox):
        a = await cell(sb, """
            import os, threading, time
            keep = 1
            threading.Thread(target=lambda: (time.sleep(0.2), os._exit(9))).start()
        """)
        await asyncio.wait_for(asyncio.shield(sb._worker.exited), 10)
        b = await cell(sb, "print('keep' in globals())")
        c = await cell(sb, "print('again')")
        return a, b, c
    a, b, c = run(go)
    assert a.ok and not a.restarted
    assert b.ok and b.stdout == "False\n" and b.restarted and "status 9" in b.restart_reason
    assert c.ok and not c.restarted


def test_kill_from_another_thread_reports_a_crash() -> None:
    async def go(sb: Sandbox):
        started = asyncio.Event()
        t = asyncio.ensure_future(cell(sb, "print('go')\nimport time\ntime.sleep(60)",
                                       on_output=lambda s, x: started.set()))
        await asyncio.wait_for(started.wait(), 10)
        threading.Thread(target=sb.kill).start()
        r = await t
        r2 = await cell(sb, "print(1)")
        return r, r2
    r, r2 = run(go)
    assert r.status == "crashed" and r.restarted and "SIGKILL" in r.restart_reason
    assert r2.ok


def test_one_cell_at_a_time_and_closed_sandbox_errors() -> None:
    async def go(sb: Sandbox):
        first = asyncio.ensure_future(cell(sb, "import time\ntime.sleep(0.3)"))
        await asyncio.sleep(0)
        with pytest.raises(SandboxError, match="already running"):
            await cell(sb, "pass")
        await first
        scratch = sb._scratch_root
        pid = sb.pid
        await sb.close()
        with pytest.raises(SandboxError, match="closed"):
            await cell(sb, "pass")
        return scratch, pid
    scratch, pid = run(go)
    assert scratch and not os.path.exists(scratch)
    assert not _alive(pid)


def test_context_type_is_checked() -> None:
    with pytest.raises(TypeError):
        Sandbox(LIMITS, context=b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Sandbox(LIMITS, context={"a": 1})  # type: ignore[dict-item]


def test_worker_dies_with_its_parent(tmp_path: Path) -> None:
    # A separate app process starts a sandbox and reports the worker's pid; we SIGKILL that app
    # process (we started it) and watch the worker vanish through a pidfd (we only observe it).
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from rlm_desktop.core.config import SandboxLimits
        from rlm_desktop.sandbox.host import Sandbox
        async def main():
            sb = Sandbox(SandboxLimits(allow_weak=True), context="c")
            await sb.start()
            print(sb.pid, flush=True)
            await asyncio.sleep(120)
        asyncio.run(main())
    """))
    app = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        line = app.stdout.readline()
        worker_pid = int(line)
        pidfd = os.pidfd_open(worker_pid)
    finally:
        app.kill()
        app.wait()
    try:
        assert select.select([pidfd], [], [], 10)[0], "the worker survived its parent"
    finally:
        os.close(pidfd)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def test_close_during_a_cell_ends_it_and_starts_nothing_new() -> None:
    async def main():
        sb = Sandbox(LIMITS, context="c")
        await sb.start()
        started = asyncio.Event()
        task = asyncio.ensure_future(cell(sb, "print('go')\nimport time\ntime.sleep(60)",
                                          on_output=lambda s, t: started.set()))
        await asyncio.wait_for(started.wait(), 10)
        pid = sb.pid
        await sb.close()
        r = await asyncio.wait_for(task, 10)
        return r, pid, sb._worker
    r, pid, worker_after = asyncio.run(main())
    assert r.status == "cancelled" and not r.ok and "closed" in r.error and r.stdout == "go\n"
    assert worker_after is None and not _alive(pid)


def test_an_oversized_sub_call_is_refused_in_the_cell_not_by_killing_the_worker() -> None:
    async def go(sb: Sandbox):
        a = await cell(sb, "keep = 7\nllm_query('x' * (17 * 1024 * 1024))")
        b = await cell(sb, "print(keep, llm_query('small'))")
        return a, b
    a, b = run(go)
    assert a.status == "error" and not a.restarted and "too large to send" in a.error
    assert b.ok and b.stdout == "7 A(small)\n"


def test_big_contexts_cross_whole_in_frames() -> None:
    """A context bigger than one frame (a long str, a dict with many and with huge documents, and
    the empty ones) arrives in the worker exactly as given."""
    import hashlib

    big = "".join(f"line {i} é ✓ {'x' * (i % 97)}\n" for i in range(60_000))   # > 1 MiB, not ASCII
    docs = {f"d{i:03d}.txt": f"doc {i} " * (i * 50) for i in range(300)}
    docs["huge.txt"] = big * 3
    docs["empty.txt"] = ""
    code = ("import hashlib\nh = hashlib.sha256()\n"
            "items = sorted(context.items()) if isinstance(context, dict) else [('', context)]\n"
            "for k, v in items:\n    h.update(k.encode()); h.update(b'\\0'); h.update(v.encode())\n"
            "print(type(context).__name__, len(context), h.hexdigest())")

    def expect(ctx: Any) -> str:
        h = hashlib.sha256()
        for k, v in (sorted(ctx.items()) if isinstance(ctx, dict) else [("", ctx)]):
            h.update(k.encode())
            h.update(b"\0")
            h.update(v.encode())
        return f"{type(ctx).__name__} {len(ctx)} {h.hexdigest()}\n"

    for ctx in (big, docs, "", {}):
        r = run(lambda sb: cell(sb, code), context=ctx)
        assert r.ok, r.error
        assert r.stdout == expect(ctx)


@pytest.mark.skipif(not expected_at_least("strong"), reason="no namespace launcher on this machine")
def test_the_namespace_launcher_never_holds_the_context() -> None:
    """Only the worker that runs the code holds the documents: the launcher process (the
    namespace's parent, which stays alive for the worker's life) reads no more than the init
    frame, so its peak memory stays far below a 40 MB context (it held 3 copies before)."""
    from tests.proctree import sandbox_processes

    ctx = {f"f{i}.txt": f"{i:06d} " * 5_000 for i in range(1_200)}     # 42 MB of text
    size = sum(len(v) for v in ctx.values())

    async def go(sb: Sandbox) -> dict[int, int]:
        r = await cell(sb, "print(sum(len(v) for v in context.values()))")
        assert r.ok and r.stdout == f"{size}\n"
        return {p: int(proc_status(p).get("VmHWM", "0 kB").split()[0]) * 1024
                for p in sandbox_processes(os.getpid())}

    seen = run(go, context=ctx)
    assert len(seen) == 2, seen                          # the launcher and the worker
    launcher = min(seen.values())
    assert launcher < size / 4, f"the launcher's peak RSS is {launcher} bytes for {size} of text"
    assert max(seen.values()) >= size                    # the worker holds it, once
