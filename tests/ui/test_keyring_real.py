"""A real Secret Service: gnome-keyring-daemon on the test's private D-Bus session bus (as
`bash packaging/dev.sh test` provides), keys round-tripped through the app's own code and CLI, and
the acceptance run of issue 5: `provider add` → `set-key` from stdin → `run --provider` reaches the
server with the key, which lives in the keyring only and in none of the app's files.

Skipped, with the reason, when there is no session bus or no gnome-keyring-daemon (plain `pytest`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakeserver import FakeOpenAI

pytestmark = pytest.mark.keyring_real

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-realkeyring-SECRET-2f8c41d7e9"
SERVICE_NAME = "org.freedesktop.secrets"


def _bus_owner_pid() -> int | None:
    """PID owning the Secret Service name on the session bus (None: nobody; never activates it)."""
    from jeepney import DBusAddress, new_method_call
    from jeepney.io.blocking import open_dbus_connection

    bus = DBusAddress("/org/freedesktop/DBus", bus_name="org.freedesktop.DBus",
                      interface="org.freedesktop.DBus")
    with open_dbus_connection(bus="SESSION") as conn:
        has = conn.send_and_get_reply(new_method_call(bus, "NameHasOwner", "s", (SERVICE_NAME,)))
        if not has.body[0]:
            return None
        pid = conn.send_and_get_reply(new_method_call(bus, "GetConnectionUnixProcessID", "s",
                                                      (SERVICE_NAME,)))
        return int(pid.body[0])


@pytest.fixture(scope="module")
def private_bus() -> Iterator[str]:
    """A D-Bus session bus of these tests' own (our child, stopped by pid): whatever runs on the
    ambient bus — a desktop's keyring, or one another test's subprocess got D-Bus to activate —
    is never touched and never makes these tests skip."""
    bus_daemon = shutil.which("dbus-daemon")
    if bus_daemon is None:
        pytest.fail("dbus-daemon is not installed (apt-get install dbus; packaging/dev.sh does)")
    proc = subprocess.Popen([bus_daemon, "--session", "--nofork", "--print-address=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    address = proc.stdout.readline().strip()
    if not address:
        proc.kill()
        pytest.fail("dbus-daemon did not print its address")
    old = os.environ.get("DBUS_SESSION_BUS_ADDRESS")
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = address
    try:
        yield address
    finally:
        if old is None:
            os.environ.pop("DBUS_SESSION_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SESSION_BUS_ADDRESS"] = old
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def secret_service(tmp_path_factory: pytest.TempPathFactory, private_bus: str) -> Iterator[subprocess.Popen[bytes]]:
    daemon = shutil.which("gnome-keyring-daemon")
    if daemon is None:
        pytest.fail("gnome-keyring-daemon is not installed (apt-get install gnome-keyring; "
                    "packaging/dev.sh does)")
    assert _bus_owner_pid() is None, "our own bus already has a Secret Service"
    base = tmp_path_factory.mktemp("gnome-keyring")
    env = dict(os.environ)
    for var in ("HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        d = base / var.lower()
        d.mkdir(mode=0o700)
        env[var] = str(d)
    # --unlock reads the login keyring's password on stdin and creates that keyring (the default
    # collection) in the temporary XDG_DATA_HOME; --foreground keeps it our child, stopped by pid.
    proc = subprocess.Popen([daemon, "--foreground", "--unlock", "--components=secrets"],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    assert proc.stdin is not None
    proc.stdin.write(b"test-keyring-password")
    proc.stdin.close()
    deadline = time.monotonic() + 20
    try:
        while _bus_owner_pid() != proc.pid:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                pytest.fail(f"gnome-keyring-daemon exited ({proc.returncode}): {err}")
            if time.monotonic() > deadline:
                pytest.fail("gnome-keyring-daemon did not claim org.freedesktop.secrets within 20 s")
            time.sleep(0.05)
        import secretstorage

        conn = secretstorage.dbus_init()
        coll = secretstorage.get_default_collection(conn)
        assert not coll.is_locked(), "the default collection is locked"
        conn.close()
        assert (base / "xdg_data_home" / "keyrings").is_dir()   # keyrings live in the temp dir
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def real_keyring(secret_service: subprocess.Popen[bytes]) -> Iterator[None]:
    """The app's default backend detection, as a user's process would do it."""
    import keyring.core

    keyring.core.init_backend()
    yield None
    keyring.core.init_backend()


def _env() -> dict[str, str]:
    env = dict(os.environ)            # temp XDG/RLM_DESKTOP_HOME of the test + the session bus
    env.pop("OPENAI_API_KEY", None)
    env.pop("RLM_DESKTOP_KEY_MYGW", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _cli(*args: str, stdin: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlm_desktop", *args], cwd=ROOT, env=_env(), input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def _outside_check() -> str | None:
    """What the keyring holds for rlm-desktop/mygw, read with keyring's own SecretService backend."""
    from keyring.backends import SecretService

    return SecretService.Keyring().get_password("rlm-desktop", "mygw")


def test_app_code_round_trips_a_key_through_the_secret_service(real_keyring: None) -> None:
    from rlm_desktop.session import secrets

    status = secrets.keyring_status()
    assert status.available and "SecretService" in status.backend, status
    secrets.set_key("roundtrip", KEY)
    assert secrets.get_key("roundtrip") == KEY
    from keyring.backends import SecretService

    assert SecretService.Keyring().get_password("rlm-desktop", "roundtrip") == KEY
    assert secrets.delete_key("roundtrip") is True
    assert secrets.get_key("roundtrip") is None


def test_cli_set_key_from_stdin_lands_in_the_secret_service(real_keyring: None) -> None:
    r = _cli("provider", "add", "mygw", "--preset", "custom", "--base-url", "http://127.0.0.1:9/v1",
             "--model", "m")
    assert r.returncode == 0, r.stderr
    r = _cli("provider", "set-key", "mygw", stdin=KEY + "\n")
    assert r.returncode == 0, r.stderr
    assert KEY not in r.stdout + r.stderr and "SecretService" in r.stdout
    assert _outside_check() == KEY
    r = _cli("provider", "list")
    assert "stored in the system keyring" in r.stdout and KEY not in r.stdout
    r = _cli("provider", "remove", "mygw")
    assert r.returncode == 0 and _outside_check() is None


def _files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_acceptance_add_set_key_run_provider(real_keyring: None, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "memo.txt").write_text("The gateway test code is 4711.\n")
    trace = tmp_path / "trace.jsonl"
    with FakeOpenAI(api_key=KEY, models=["fake-root"]) as srv:
        srv.handler = lambda req: "FINAL(4711)"
        r = _cli("provider", "add", "mygw", "--preset", "custom", "--base-url", srv.base_url,
                 "--model", "fake-root")
        assert r.returncode == 0, r.stderr
        r = _cli("provider", "set-key", "mygw", stdin=KEY)
        assert r.returncode == 0, r.stderr
        r = _cli("run", "--provider", "mygw", "--docs", str(docs), "--query", "What is the code?",
                 "--json", "--quiet", "--allow-weak-sandbox", "--trace", str(trace), timeout=120)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["status"] == "ok" and out["answer"] == "4711"
        chats = srv.chat_requests
        assert chats and all(c.authorization == f"Bearer {KEY}" for c in chats)
    assert _outside_check() == KEY
    assert KEY not in r.stdout + r.stderr
    home = Path(os.environ["RLM_DESKTOP_HOME"])
    app_files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "preferences.ini" for p in app_files) and trace.exists()
    for root in (home, tmp_path, *(Path(os.environ[v]) for v in ("XDG_CONFIG_HOME", "XDG_DATA_HOME",
                                                                  "XDG_CACHE_HOME", "XDG_STATE_HOME"))):
        assert _files_containing(root, KEY.encode()) == [], root
    assert KEY[-8:].encode() not in trace.read_bytes()
    r = _cli("provider", "remove", "mygw")
    assert r.returncode == 0 and _outside_check() is None


def _read_until(fd: int, needle: bytes | None, timeout: float) -> bytes:
    """Read a pty until ``needle`` appears (or EOF when None), within ``timeout`` seconds."""
    import select

    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:          # EIO: the child closed the terminal
            return buf
        if not chunk:
            return buf
        buf += chunk
        if needle is not None and needle in buf:
            return buf
    raise AssertionError(f"timed out waiting for {needle!r}; got {buf!r}")


def test_set_key_on_a_terminal_prompts_without_echo(real_keyring: None) -> None:
    import pty

    r = _cli("provider", "add", "mygw", "--preset", "custom", "--base-url", "http://127.0.0.1:9/v1")
    assert r.returncode == 0, r.stderr
    env = _env()
    pid, fd = pty.fork()
    if pid == 0:                 # the child: a real terminal as its controlling tty
        try:
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, "-m", "rlm_desktop", "provider", "set-key", "mygw"],
                      env)
        finally:
            os._exit(127)
    try:
        prompt = _read_until(fd, b"(input hidden): ", 30)
        assert b"API key for mygw" in prompt
        os.write(fd, KEY.encode() + b"\n")
        rest = _read_until(fd, None, 60)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, rest
    assert KEY.encode() not in prompt + rest          # not echoed, not printed
    assert b"stored in the keyring" in rest
    assert _outside_check() == KEY
    assert _cli("provider", "remove", "mygw").returncode == 0 and _outside_check() is None
