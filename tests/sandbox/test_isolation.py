"""Isolation layers: measured from outside, rated honestly, refused below 'good', and real code works."""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.core.config import SandboxLimits
from rlm_desktop.sandbox import host as host_mod
from rlm_desktop.sandbox import seccomp, wire
from rlm_desktop.sandbox.api import IsolationLevel, SandboxError, SandboxRefused, SubRequest
from rlm_desktop.sandbox.harden import landlock_abi
from rlm_desktop.sandbox.host import Sandbox
from rlm_desktop.sandbox.measure import measure_isolation, refusal_message
from tests.proctree import descendants
from tests.sandbox.expected import ENV_VAR, expected_at_least, expected_layers, expected_level

ROOT = Path(__file__).resolve().parents[2]
LINUX = sys.platform.startswith("linux")


async def echo(req: SubRequest) -> Any:
    if req.kind == "llm_query_batched":
        return [f"A({p})" for p in req.payload["prompts"]]
    return f"A({req.payload['prompt']})"


def run(coro_fn, *, limits: SandboxLimits | None = None, context: Any = "ctx") -> Any:
    async def main() -> Any:
        sb = Sandbox(limits or SandboxLimits(), context=context)
        await sb.start()
        try:
            return await coro_fn(sb)
        finally:
            await sb.close()
    return asyncio.run(main())


# What this machine must give, known without the code under test (see tests/sandbox/expected.py):
# a test needing a layer the machine supports fails, never skips, when that layer is missing.
EXPECTED = expected_level()
needs_strong = pytest.mark.skipif(EXPECTED != "strong", reason=f"this machine is expected to give "
                                  f"{EXPECTED!r} ({ENV_VAR} or the kernel probe), not 'strong'")


def _status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status read here, not through the sandbox's own helper."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in f)}


def _ns_inode(pid: int | str, name: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{name}").st_ino


@pytest.mark.skipif(not LINUX, reason="the isolation layers are Linux-only")
def test_every_layer_the_machine_supports_is_in_force_seen_from_outside(tmp_path: Path) -> None:
    """Judged by the kernel's view of the live worker, not by the sandbox's report."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not for the sandbox")
    outside.chmod(0o644)
    want = expected_layers()
    limits = SandboxLimits(allow_weak=not expected_at_least("good"))     # the default refuses below good

    async def go(sb: Sandbox):
        assert sb.pid is not None
        status = _status(sb.pid)
        ns = {n: _ns_inode(sb.pid, n) != _ns_inode("self", n) for n in ("net", "user", "pid", "mnt")}
        r = await sb.run_cell(textwrap.dedent(f"""
            try:
                open({str(outside)!r}).read()
                print("read")
            except OSError as e:
                print("errno", e.errno)
        """), timeout_s=20, on_request=echo)
        return sb.isolation, status, ns, r
    rep, status, ns, r = run(go, limits=limits)
    problems = []
    if "seccomp" in want and (status.get("Seccomp") != "2" or status.get("NoNewPrivs") != "1"):
        problems.append(f"seccomp not in force in the worker (Seccomp: {status.get('Seccomp')}, "
                        f"NoNewPrivs: {status.get('NoNewPrivs')})")
    if "namespaces" in want and not all(ns.values()):
        problems.append(f"the worker shares namespaces with the host: {sorted(k for k, v in ns.items() if not v)}")
    if "landlock" in want and r.stdout != f"errno {errno.EACCES}\n":
        problems.append(f"Landlock not in force: reading a file outside the allowed paths gave {r.stdout!r} "
                        f"{r.error or ''}")
    assert not problems, (f"this machine is expected to give {EXPECTED!r} ({ENV_VAR} or the kernel probe): "
                          + "; ".join(problems))
    assert rep.level.rank >= IsolationLevel(EXPECTED).rank, rep.summary


@pytest.mark.skipif(not LINUX, reason="the isolation layers are Linux-only")
def test_the_default_settings_refuse_a_sandbox_below_good_and_leave_nothing(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert SandboxLimits().allow_weak is False
    monkeypatch.setattr(host_mod, "_DISABLED_LAYERS", frozenset({"namespaces", "landlock", "seccomp"}))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = descendants(os.getpid())

    async def start() -> None:
        sb = Sandbox(SandboxLimits(), context="c")
        try:
            await sb.start()
            r = await sb.run_cell("print('ran')", timeout_s=10, on_request=echo)
            raise AssertionError(f"a sandbox rated below 'good' ran code by default: {r}")
        finally:
            await sb.close()
    with pytest.raises(SandboxRefused) as ei:
        asyncio.run(start())
    assert "'none'" in str(ei.value) and "--allow-weak-sandbox" in str(ei.value)
    assert descendants(os.getpid()) <= before, "the refused worker was left running"
    assert [p.name for p in tmp_path.iterdir()] == []           # its scratch folder is gone too


@needs_strong
def test_strong_level_is_measured_from_outside() -> None:
    async def go(sb: Sandbox):
        rep = sb.isolation
        status = Path(f"/proc/{sb.pid}/status").read_text()
        ns = {n: os.stat(f"/proc/{sb.pid}/ns/{n}").st_ino != os.stat(f"/proc/self/ns/{n}").st_ino
              for n in ("user", "net", "pid", "mnt")}
        r = await sb.run_cell("import os\nprint(os.getpid(), os.getcwd())", timeout_s=10, on_request=echo)
        return rep, status, ns, r, sb._scratch
    rep, status, ns, r, scratch = run(go)
    assert rep.level is IsolationLevel.STRONG
    assert re.search(r"^Seccomp:\s+2$", status, re.M) and re.search(r"^NoNewPrivs:\s+1$", status, re.M)
    assert all(ns.values())
    assert rep.layers["landlock"]["abi"] == landlock_abi() >= 1
    assert rep.layers["landlock"]["probe"] == "denied"
    assert rep.layers["namespaces"]["scratch_tmpfs"] is True
    assert rep.layers["capabilities"]["none"] is True
    assert set(rep.layers["rlimits"]) >= {"RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE",
                                          "RLIMIT_CORE", "RLIMIT_NPROC"}
    assert rep.summary.startswith("Strong") and rep.summary.count(". ") == 0
    assert json.loads(json.dumps(rep.to_dict()))["level"] == "strong"
    assert r.stdout == f"1 {scratch}\n"       # PID 1 of its own namespace, in its scratch


@pytest.mark.skipif(not LINUX, reason="the isolation layers are Linux-only")
@pytest.mark.parametrize("disabled,expected", [
    ({"namespaces"}, "good"),
    ({"namespaces", "landlock"}, "weak"),
    ({"namespaces", "seccomp"}, "weak"),
    ({"namespaces", "landlock", "seccomp"}, "none"),
])
def test_missing_layers_lower_the_level_and_below_good_is_refused(monkeypatch, disabled, expected) -> None:
    if EXPECTED != "strong":
        pytest.skip(f"needs a machine where every layer works to switch them off one by one; here: {EXPECTED}")
    monkeypatch.setattr(host_mod, "_DISABLED_LAYERS", frozenset(disabled))

    async def start(limits: SandboxLimits):
        sb = Sandbox(limits, context="c")
        try:
            rep = await sb.start()
            r = await sb.run_cell("print('ran')", timeout_s=10, on_request=echo)
            return rep, r
        finally:
            await sb.close()

    if expected in ("weak", "none"):
        with pytest.raises(SandboxRefused) as ei:
            asyncio.run(start(SandboxLimits()))
        msg = str(ei.value)
        assert f"'{expected}'" in msg and "--allow-weak-sandbox" in msg and "weak sandbox is available" in msg
        for layer in disabled - {"namespaces"}:
            assert layer in msg
    rep, r = asyncio.run(start(SandboxLimits(allow_weak=True)))
    assert rep.level.value == expected
    assert r.ok and r.stdout == "ran\n"
    assert rep.layers["capabilities"]["none"] is True      # even without namespaces (e.g. as root)
    for layer in ("namespaces", "landlock", "seccomp"):
        assert rep.layers[layer]["in_force"] is (layer not in disabled)


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_a_lying_worker_report_is_not_believed() -> None:
    # This test process has no seccomp filter, namespaces or Landlock: a report claiming them all
    # must be rated by what /proc shows, i.e. 'none'.
    claim = {"t": "ready", "report": {
        "rlimits": {"RLIMIT_AS": 1}, "seccomp": {"installed": True, "socket_denied": True},
        "landlock": {"enforced": True, "abi": landlock_abi(), "probe": "denied", "net": True},
        "namespaces": {"user": True, "mnt": True, "net": True, "pid": True}}}
    rep = measure_isolation(os.getpid(), None, claim, scratch="/nonexistent", probe_token="tok")
    assert rep.level is IsolationLevel.WEAK or rep.level is IsolationLevel.NONE
    assert rep.layers["seccomp"]["in_force"] is False
    assert rep.layers["namespaces"]["in_force"] is False
    # A probe token that came back means Landlock did not stop the read.
    claim["report"]["landlock"]["leak"] = "tok"
    rep2 = measure_isolation(os.getpid(), None, claim, scratch="/nonexistent", probe_token="tok")
    assert rep2.layers["landlock"]["in_force"] is False and rep2.level is IsolationLevel.NONE
    assert "--allow-weak-sandbox" in refusal_message(rep2)


@needs_strong
def test_real_model_code_keeps_working() -> None:
    code = textwrap.dedent("""
        import re, json, csv, io, math, statistics, collections, itertools, functools, datetime
        import textwrap, difflib, string, heapq, bisect, random, asyncio
        from concurrent.futures import ThreadPoolExecutor
        out = {}
        out['re'] = re.findall(r'\\d+', 'a1b22c333')
        out['json'] = json.loads(json.dumps({'k': [1, 2]}))
        rows = list(csv.DictReader(io.StringIO('a,b\\n1,2\\n3,4\\n')))
        out['csv'] = sum(int(r['b']) for r in rows)
        out['math'] = math.isqrt(99) + statistics.median([1, 5, 3])
        out['collections'] = collections.Counter('abracadabra').most_common(1)
        out['itertools'] = list(itertools.islice(itertools.count(5), 3))
        out['functools'] = functools.reduce(lambda a, b: a * b, range(1, 6))
        out['datetime'] = datetime.date(2024, 2, 29).isoformat()
        out['textwrap'] = textwrap.wrap('one two three four', 9)
        out['difflib'] = round(difflib.SequenceMatcher(None, 'kitten', 'sitting').ratio(), 3)
        out['string'] = string.ascii_lowercase[:3]
        out['heapq'] = heapq.nsmallest(2, [5, 1, 4])
        out['bisect'] = bisect.bisect([1, 3, 5], 4)
        random.seed(7); out['random'] = random.randint(1, 10**6) > 0
        with ThreadPoolExecutor(8) as ex:
            out['threads'] = list(ex.map(lambda x: x * x, range(20)))[-1]
        async def twice(x):
            await asyncio.sleep(0)
            return 2 * x
        out['await'] = await asyncio.gather(*(twice(i) for i in range(3)))
        out['asyncio_run_in_thread'] = ThreadPoolExecutor(1).submit(asyncio.run, twice(21)).result()
        open('notes.txt', 'w').write('scratch works')
        out['scratch'] = open('notes.txt').read()
        out['subcalls'] = llm_query_batched(['x', 'y'])
        print(json.dumps(out, sort_keys=True))
    """)

    async def go(sb: Sandbox):
        return await sb.run_cell(code, timeout_s=30, on_request=echo)
    r = run(go)
    assert r.ok, r.error
    out = json.loads(r.stdout)
    assert out == {
        "asyncio_run_in_thread": 42, "await": [0, 2, 4], "bisect": 2, "collections": [["a", 5]],
        "csv": 6, "datetime": "2024-02-29", "difflib": 0.615, "functools": 120,
        "heapq": [1, 4], "itertools": [5, 6, 7], "json": {"k": [1, 2]}, "math": 12,
        "random": True, "re": ["1", "22", "333"], "scratch": "scratch works", "string": "abc",
        "subcalls": ["A(x)", "A(y)"], "textwrap": ["one two", "three", "four"], "threads": 361}


@needs_strong
@pytest.mark.parametrize("module,code,expected", [
    ("numpy", "import numpy as np\nprint(int(np.arange(10).sum()), float(np.linalg.norm([3, 4])))", "45 5.0\n"),
    ("pandas", "import pandas as pd, io\ndf = pd.read_csv(io.StringIO('a,b\\n1,2\\n3,4'))\nprint(int(df['b'].sum()))",
     "6\n"),
])
def test_numpy_and_pandas_when_installed(module: str, code: str, expected: str) -> None:
    # find_spec, not importorskip: the package must not be imported into the test process itself.
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed in this environment (the sandbox would import it)")

    async def go(sb: Sandbox):
        return await sb.run_cell(code, timeout_s=60, on_request=echo)
    r = run(go)
    assert r.ok, r.error
    assert r.stdout == expected


@needs_strong
def test_scratch_is_a_private_capped_tmpfs_and_the_host_reads_it_without_following_links(tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    limits = SandboxLimits(scratch_mb=8)

    async def go(sb: Sandbox):
        a = await sb.run_cell(textwrap.dedent(f"""
            import os
            os.makedirs('out', exist_ok=True)
            open('out/result.csv', 'w').write('a,b\\n1,2\\n')
            os.symlink({str(secret)!r}, 'out/link.txt')
            os.mkfifo('out/fifo') if hasattr(os, 'mkfifo') else None
        """), timeout_s=10, on_request=echo)
        b = await sb.run_cell("open('big', 'wb').write(b'x' * (16 * 1024 * 1024))", timeout_s=10,
                              on_request=echo)
        on_disk = os.listdir(sb._scratch)
        data = sb.read_scratch_file("out/result.csv")
        errors = {}
        for bad in ("out/link.txt", "out/fifo", "../landlock-probe", "/etc/passwd", "out/missing"):
            try:
                sb.read_scratch_file(bad)
                errors[bad] = None
            except (OSError, SandboxError) as exc:
                errors[bad] = type(exc).__name__
        return a, b, on_disk, data, errors
    a, b, on_disk, data, errors = run(go, limits=limits)
    assert b.status == "error" and "No space left" in b.error       # the 8 MB tmpfs is full
    assert on_disk == []                                              # the host's directory stays empty
    assert data == b"a,b\n1,2\n"
    assert errors["out/link.txt"] == "OSError"                        # ELOOP: the link is not followed
    assert errors["../landlock-probe"] == "SandboxError" and errors["/etc/passwd"] == "SandboxError"
    assert errors["out/missing"] == "FileNotFoundError"
    assert errors["out/fifo"] is not None           # never read: not created (Landlock) or refused
    assert a.ok or "mkfifo" in (a.error or "")


@needs_strong
def test_threads_are_allowed_up_to_the_process_limit_but_not_processes() -> None:
    async def go(sb: Sandbox):
        return await sb.run_cell(textwrap.dedent("""
            import threading, os, time
            started = []
            def work(): started.append(1); time.sleep(0.2)
            ts = [threading.Thread(target=work) for _ in range(20)]
            for t in ts: t.start()
            for t in ts: t.join()
            print(len(started))
            try:
                os.fork()
            except PermissionError as e:
                print('fork refused')
        """), timeout_s=20, on_request=echo)
    r = run(go)
    assert r.ok, r.error
    assert r.stdout == "20\nfork refused\n"


@pytest.mark.skipif(not LINUX, reason="prctl and /proc are Linux-only")
def test_harden_host_process_makes_the_app_non_dumpable() -> None:
    """Judged by what it is for: another process of the same user, without privileges, can read
    the app's environment (where API keys live) before, and not after."""
    canary = "sk-canary-ENVIRON-5d1c"
    app_code = (f"import ctypes, sys; sys.path.insert(0, {str(ROOT)!r})\n"
                "from rlm_desktop.sandbox.host import harden_host_process\n"
                "libc = ctypes.CDLL(None)\n"
                "print(libc.prctl(3, 0, 0, 0, 0), flush=True)\n"
                "sys.stdin.readline()\n"
                "print(harden_host_process(), libc.prctl(3, 0, 0, 0, 0), flush=True)\n"
                "sys.stdin.readline()\n")
    # App and reader: the same user, every capability dropped (as root, CAP_SYS_PTRACE would read
    # anything, and a reader with fewer capabilities than its target is refused regardless).
    unprivileged = (["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if os.geteuid() == 0 else [])
    app = subprocess.Popen([*unprivileged, sys.executable, "-c", app_code], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env={**os.environ, "RLM_TEST_CANARY": canary})
    reader = (f"try:\n    data = open('/proc/{app.pid}/environ', 'rb').read()\n"
              f"    print('read' if {canary.encode()!r} in data else 'no canary')\n"
              "except PermissionError:\n    print('denied')\n")

    def read_environ() -> str:
        r = subprocess.run([*unprivileged, sys.executable, "-c", reader], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()
    try:
        assert app.stdout.readline().split() == ["1"]         # dumpable to begin with
        before = read_environ()
        app.stdin.write("\n")
        app.stdin.flush()
        hardened = app.stdout.readline().split()
        after = read_environ()
    finally:
        app.kill()
        app.wait()
    assert before == "read", f"the control failed: an unprivileged reader could not read it ({before})"
    assert after == "denied", f"after harden_host_process another process could still read: {after}"
    assert hardened == ["True", "0"]


def test_seccomp_tables_match_the_kernel_headers() -> None:
    headers = {"x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
               "aarch64": Path("/usr/include/asm-generic/unistd.h")}
    checked = 0
    for arch, path in headers.items():
        if not path.exists():
            continue
        known = {m.group(1): int(m.group(2)) for m in
                 re.finditer(r"^#define __NR_(\w+)\s+(\d+)\s*$", path.read_text(), re.M)}
        table = seccomp.ARCHES[arch][1]
        for name, nr in table.items():
            if name in known:
                assert known[name] == nr, f"{arch} {name}: header says {known[name]}, table {nr}"
                checked += 1
            else:
                assert nr >= 424, f"{arch} {name} missing from {path} and not a newer unified number"
    if checked == 0:
        pytest.skip("kernel headers (linux-libc-dev) are not installed: tables not cross-checked")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_seccomp_program_builds_for_each_architecture(arch: str) -> None:
    prog, n = seccomp.build_filter(arch, 1)
    assert len(prog) == 8 * n and 50 < n < 255
    # Every denied call of the architecture is in the program as a JEQ constant.
    consts = {int.from_bytes(prog[i + 4:i + 8], "little") for i in range(0, len(prog), 8)}
    table = seccomp.ARCHES[arch][1]
    for name in seccomp.DENIED:
        if name in table:
            assert table[name] in consts


def test_worker_json_encoder_matches_json() -> None:
    samples = [None, True, False, 0, -7, 2**70, 1.5, float("nan"), "plain", "quote\" back\\ nl\n\t\x00",
               "ünïcødé ☃", "\ud800 lone", [1, "a", [None]], {"k": {"n": [True, 2.0]}}, (1, 2)]
    for s in samples:
        text = wire.dumps(s)
        back = json.loads(text)
        if isinstance(s, float) and s != s:
            assert back is None
        elif isinstance(s, tuple):
            assert back == list(s)
        else:
            assert back == s
    with pytest.raises(TypeError):
        wire.dumps({1: "non-str key"})
    with pytest.raises(TypeError):
        wire.dumps(object())


def test_worker_imports_only_builtin_modules_before_it_is_ready() -> None:
    # The cold-start budget depends on it: json, re, typing, threading, asyncio stay unloaded.
    async def go(sb: Sandbox):
        return await sb.run_cell("import sys\nprint(sorted(sys.modules))", timeout_s=10, on_request=echo)
    r = run(go, limits=SandboxLimits(allow_weak=True))
    loaded = set(eval(r.stdout))
    assert not loaded & {"json", "re", "typing", "threading", "asyncio", "traceback", "linecache"}


@needs_strong
def test_namespaces_failing_part_way_fall_back_to_the_other_layers(monkeypatch) -> None:
    # E.g. an LSM that lets unshare() through but refuses the mount: the worker reports the layer,
    # the host retries without namespaces, rates the result 'good' and says why.
    monkeypatch.setattr(host_mod, "_SIMULATE_FAILURE", "namespaces")
    monkeypatch.setattr(host_mod, "_BROKEN_LAYERS", {})

    async def go(sb: Sandbox):
        return sb.isolation, await sb.run_cell("print('ok')", timeout_s=10, on_request=echo)
    rep, r = run(go)
    assert rep.level is IsolationLevel.GOOD
    assert "simulated failure" in rep.layers["namespaces"]["error"]
    assert rep.layers["landlock"]["in_force"] and rep.layers["seccomp"]["in_force"]
    assert r.ok and r.stdout == "ok\n"
