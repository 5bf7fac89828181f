"""Control characters from outside never reach a terminal raw (issue 8 item 10): the CLI runs under
a real pseudo-terminal against a scripted server whose answers, errors and model names carry escape
sequences, over files named with them; nothing the terminal would act on comes out raw."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlm_desktop.core.textsafe import for_stream, for_terminal, json_for_terminal
from tests.engine.test_cli_run import ROOT, _env
from tests.fakeserver import FakeOpenAI, Reply

# What a hostile server, model or file name may carry: a window retitle (OSC … BEL), a screen
# clear (CSI), a one-character C1 CSI, a bidi override.
EVIL = "\x1b]0;pwned\x07 \x1b[2J \x9b31m \u202e"
RAW_MARKERS = [b"\x07", "\x9b".encode(), "\u202e".encode()]
# The CLI's own sequences: its progress line and the console log erase the line first.
OWN = [b"\x1b[2K", b"\x1b[K"]
ANSWER_CODE = ("```repl\nanswer = 'A\\x1b]0;pwned\\x07B\\x1b[2JC\\x9bD\\u202eE\\nline2\\tTab'\n```\n"
               "FINAL_VAR(answer)")
ANSWER = "A\x1b]0;pwned\x07B\x1b[2JC\x9bD\u202eE\nline2\tTab"


def _raw_controls(out: bytes) -> list[bytes]:
    for own in OWN:
        out = out.replace(own, b"")
    return [m for m in [b"\x1b", *RAW_MARKERS] if m in out]


def _run_in_pty(args: list[str], *, timeout: float = 90) -> tuple[int, bytes]:
    """Run ``rlm-desktop ARGS`` with stdout and stderr on a new pseudo-terminal; all it printed."""
    master, slave = os.openpty()
    p = subprocess.Popen([sys.executable, "-m", "rlm_desktop", *args], cwd=ROOT, env=_env(),
                         stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:          # EIO: the child closed its side of the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
        rc = p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)
    return rc, b"".join(chunks)


@pytest.fixture
def evil_docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / f"report{EVIL}.txt").write_text("The launch date is March 3.\n")
    (d / f"empty{EVIL}.txt").write_text("")                        # noted on stderr by name
    (d / f"broken{EVIL}.pdf").write_bytes(b"not a pdf at all")       # skipped on stderr by name
    return d


def test_functions() -> None:
    assert for_terminal(EVIL + "\r\nok\tx\n") == "\\x1b]0;pwned\\x07 \\x1b[2J \\x9b31m \\u202e\nok\tx\n"
    assert for_terminal("a\rb\x00\x7f\udcff") == "a\\x0db\\x00\\x7f\\udcff"
    text = json.dumps({"a": ANSWER}, ensure_ascii=False)
    safe = json_for_terminal(text)
    assert json.loads(safe) == {"a": ANSWER} and not any(c in safe for c in "\x1b\x07\x9b\u202e")
    with open(os.devnull, "w") as fh:                                  # not a terminal: exact
        assert for_stream(ANSWER, fh) == ANSWER


def test_answer_errors_and_file_names_reach_a_terminal_neutralised(fake_openai: FakeOpenAI,
                                                                  evil_docs: Path) -> None:
    fake_openai.script(ANSWER_CODE)
    rc, out = _run_in_pty(["run", "--docs", str(evil_docs), "--query", "When?", "--base-url",
                           fake_openai.base_url, "--model", "fake-root", "--allow-weak-sandbox"])
    assert rc == 0, out
    assert _raw_controls(out) == [], out
    text = out.decode("utf-8").replace("\r\n", "\n")
    assert "A\\x1b]0;pwned\\x07B\\x1b[2JC\\x9bD\\u202eE\nline2\tTab" in text      # newline and tab kept
    assert "skipped broken\\x1b]0;pwned\\x07 \\x1b[2J \\x9b31m \\u202e.pdf" in text
    assert "empty\\x1b]0;pwned\\x07" in text


def test_json_on_a_terminal_is_exact_and_safe(fake_openai: FakeOpenAI, evil_docs: Path) -> None:
    fake_openai.script(ANSWER_CODE)
    rc, out = _run_in_pty(["run", "--docs", str(evil_docs), "--query", "When?", "--base-url",
                           fake_openai.base_url, "--model", "fake-root", "--allow-weak-sandbox",
                           "--json", "--quiet"])
    assert rc == 0, out
    assert _raw_controls(out) == [], out
    line = next(ln for ln in out.decode("utf-8").splitlines() if ln.startswith("{"))
    assert json.loads(line)["answer"] == ANSWER


def test_a_server_error_and_retry_warnings_reach_a_terminal_neutralised(fake_openai: FakeOpenAI,
                                                                       evil_docs: Path) -> None:
    fake_openai.script(Reply.error(500, f"overloaded {EVIL}", retry_after=0),
                       Reply.error(400, f"bad request {EVIL}"))
    rc, out = _run_in_pty(["run", "--docs", str(evil_docs), "--query", "When?", "--base-url",
                           fake_openai.base_url, "--model", "fake-root", "--allow-weak-sandbox"])
    assert rc == 5, out
    assert _raw_controls(out) == [], out
    text = out.decode("utf-8")
    assert "warning: fake-root: attempt 1 failed" in text and "overloaded \\x1b]0;pwned\\x07" in text
    assert "provider error:" in text and "bad request \\x1b]0;pwned\\x07" in text


def test_provider_commands_show_server_model_names_neutralised(evil_docs: Path) -> None:
    with FakeOpenAI(models=["good-model", f"evil{EVIL}-model"]) as srv:
        rc, out = _run_in_pty(["provider", "add", "evil", "--preset", "custom", "--base-url", srv.base_url,
                               "--no-key", "--name", f"Evil{EVIL}"])
        assert rc == 0, out
        rc, out2 = _run_in_pty(["provider", "models", "evil"])
        assert rc == 0, out2
        rc, out3 = _run_in_pty(["provider", "list"])
        assert rc == 0, out3
    for o in (out, out2, out3):
        assert _raw_controls(o) == [], o
    assert b"evil\\x1b]0;pwned\\x07" in out2 and b"good-model" in out2
    assert b"Evil\\x1b]0;pwned\\x07" in out3


def test_piped_answer_stays_exact_while_stderr_is_neutralised(fake_openai: FakeOpenAI, evil_docs: Path) -> None:
    fake_openai.script(ANSWER_CODE)
    r = subprocess.run([sys.executable, "-m", "rlm_desktop", "run", "--docs", str(evil_docs), "--query",
                        "When?", "--base-url", fake_openai.base_url, "--model", "fake-root",
                        "--allow-weak-sandbox"], cwd=ROOT, env=_env(), capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode("utf-8") == ANSWER + "\n"           # a script gets the answer's bytes
    assert _raw_controls(r.stderr) == [], r.stderr
    assert b"skipped broken\\x1b]0;pwned\\x07" in r.stderr


def test_export_to_a_terminal_is_neutralised(fake_openai: FakeOpenAI, evil_docs: Path, tmp_path: Path) -> None:
    fake_openai.script(ANSWER_CODE)
    trace = tmp_path / "t.jsonl"
    r = subprocess.run([sys.executable, "-m", "rlm_desktop", "run", "--docs", str(evil_docs), "--query",
                        "When?", "--base-url", fake_openai.base_url, "--model", "fake-root", "--trace",
                        str(trace), "--allow-weak-sandbox", "--quiet"], cwd=ROOT, env=_env(),
                       capture_output=True, timeout=90)
    assert r.returncode == 0, r.stderr
    for fmt in ("markdown", "json", "otlp", "html"):
        rc, out = _run_in_pty(["export", str(trace), "--format", fmt])
        assert rc == 0, out
        assert _raw_controls(out) == [], (fmt, out[:2000])
    piped = subprocess.run([sys.executable, "-m", "rlm_desktop", "export", str(trace), "--format", "json"],
                           cwd=ROOT, env=_env(), capture_output=True, timeout=60)
    assert json.loads(piped.stdout)["answer"] == ANSWER
