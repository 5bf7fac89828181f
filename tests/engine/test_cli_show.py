"""`rlm-desktop show TRACE` and `rlm-desktop run --show` as a user sees them: real processes, a real
pseudo-terminal, a scripted model that tries to send escape sequences to the terminal."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_desktop.core.trace import Trace, TraceWriter
from tests.core.test_otlp_genai import session_trace
from tests.core.test_render_text import hostile_trace
from tests.engine.conftest import TEST_KEY, route
from tests.fakeserver import FakeOpenAI, Reply

ROOT = Path(__file__).resolve().parents[2]
SGR = re.compile(r"\x1b\[[0-9;]*m")
EVIL = "\x1b]0;pwned\x07\x1b[2J\x9b31m"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("OPENAI_API_KEY", "NO_COLOR"):
        env.pop(k, None)
    env["PYTHONPATH"] = str(ROOT)
    env["TERM"] = "xterm-256color"
    env.update(extra)
    return env


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlm_desktop", *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=90)


def _in_pty(*args: str, timeout: float = 90, **env: str) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; (exit code, what the terminal got)."""
    pid, fd = pty.fork()
    if pid == 0:                                  # the child: exec at once
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "rlm_desktop", *args], _env(**env))
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                os.kill(pid, 9)
                raise AssertionError("the command did not finish")
            try:
                data = os.read(fd, 65536)
            except OSError:                       # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")


def _only_colours(text: str) -> None:
    """Every escape sequence in ``text`` is a colour (SGR) code; no raw control byte got through."""
    rest = SGR.sub("", text).replace("\r\n", "\n")
    assert "\x1b" not in rest and "\x07" not in rest and "\x9b" not in rest and "\r" not in rest, \
        repr(rest[:2000])


@pytest.fixture
def hostile_file(tmp_path: Path) -> Path:
    path = tmp_path / "hostile.jsonl"
    tr = Trace()
    writer = TraceWriter(path, {"query": "q"}).attach(tr)
    hostile_trace(trace=tr, lines=60)
    writer.close()
    return path


def test_show_on_a_terminal_is_coloured_and_lets_no_raw_escape_through(hostile_file: Path) -> None:
    rc, out = _in_pty("show", str(hostile_file))
    assert rc == 0, out
    assert SGR.search(out)                                     # a terminal: colours
    _only_colours(out)
    assert "\\x1b]0;pwned\\x07" in out                         # the hostile text, made visible
    assert "── iteration 1" in out and "↳ llm_query_batched[0]" in out
    assert "… 40 more lines" in out                            # 60 lines of output cut to 20
    rc, out = _in_pty("show", str(hostile_file), NO_COLOR="1")
    assert rc == 0 and "\x1b" not in out and "── iteration 1" in out


def test_show_piped_is_plain_text_unless_asked(hostile_file: Path, tmp_path: Path) -> None:
    r = _cli("show", str(hostile_file))
    assert r.returncode == 0 and "\x1b" not in r.stdout and "✔ final answer" in r.stdout
    r = _cli("show", str(hostile_file), "--color", "always", "--output-lines", "3")
    assert r.returncode == 0 and SGR.search(r.stdout) and "… 57 more lines" in r.stdout
    _only_colours(r.stdout)
    session = tmp_path / "session.jsonl"
    tr = Trace()
    w = TraceWriter(session, {"query": "q"}).attach(tr)
    for ev in _events(session_trace()):
        tr.apply(ev)
    w.close()
    r = _cli("show", str(session), "--turn", "2")
    assert r.returncode == 0 and "turn 2: question 2" in r.stdout and "question 1" not in r.stdout
    r = _cli("show", str(session), "--turn", "7")
    assert r.returncode == 2 and "has no turn 7; its turns: 1, 2" in r.stderr
    r = _cli("show", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2 and "no such file" in r.stderr


def _events(tr: Trace) -> list:
    recorded: list = []
    src = Trace()
    src.subscribe(lambda ev, span: recorded.append(ev))
    for s in tr:                                  # session_trace's spans replayed in tree order
        from rlm_desktop.core.trace import EventType, TraceEvent

        src.apply(TraceEvent(EventType.STARTED, s.id, s.start, parent_id=s.parent_id, kind=s.kind,
                             name=s.name, attributes=dict(s.attributes)))
    for s in reversed(list(tr)):
        from rlm_desktop.core.trace import EventType, TraceEvent

        src.apply(TraceEvent(EventType.ENDED, s.id, s.end or s.start, status=s.status))
    return recorded


def _script(srv: FakeOpenAI) -> None:
    srv.handler = route([
        "Let me look" + EVIL + ".\n```repl\nprint(sorted(context))\nprint('" + EVIL.replace("\x1b", "\\x1b")
        + "')\n```",
        "```repl\nparts = llm_query_batched([f'{k}: ' + v for k, v in context.items()])\nprint(parts)\n```",
        "```repl\nanswer = [p for p in parts if 'March' in p][0]\n```\nFINAL_VAR(answer)",
    ], sub=lambda r: Reply(text="March 3" if "March" in r.last_user else "nothing" + EVIL,
                           usage={"prompt_tokens": 50, "completion_tokens": 3, "cached_tokens": 0}))


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "report.txt").write_text("Quarterly report. The launch date is March 3.\n")
    (d / "notes.md").write_text("# Notes\nNothing about launches here.\n")
    return d


def test_run_show_streams_each_iteration_on_a_terminal(srv: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    _script(srv)
    rc, out = _in_pty("run", "--docs", str(docs), "--query", "When is the launch?", "--base-url",
                      srv.base_url, "--model", "gpt-4o", "--sub-model", "gpt-4o-mini", "--show",
                      "--trace", str(tmp_path / "t.jsonl"), "--allow-weak-sandbox",
                      OPENAI_API_KEY=TEST_KEY)
    assert rc == 0, out
    _only_colours(out)                 # no progress line (it redraws with \r and ESC[2K) and nothing raw
    plain = SGR.sub("", out).replace("\r\n", "\n")
    assert "\\x1b]0;pwned\\x07" in plain and "Let me look" in plain
    for n in (1, 2, 3):
        assert f"── iteration {n} " in plain
    assert plain.index("── iteration 1") < plain.index("│ print(sorted(context))") \
        < plain.index("['notes.md', 'report.txt']") < plain.index("── iteration 2")
    assert re.search(r"↳ llm_query_batched\[\d\] · gpt-4o-mini · 50 in / 3 out tokens · \$0\.0000", plain)
    assert "✔ final answer (FINAL_VAR):" in plain
    assert "\nMarch 3\ndone: 3 iterations" in plain.replace("rlm-desktop run: ", "")   # the answer, then done
    assert "iteration 1/" not in plain                         # the progress line stayed away


def test_run_show_with_json_keeps_stdout_one_object(srv: FakeOpenAI, docs: Path) -> None:
    _script(srv)
    r = _cli("run", "--docs", str(docs), "--query", "When is the launch?", "--base-url", srv.base_url,
             "--model", "gpt-4o", "--show", "--json", "--allow-weak-sandbox", OPENAI_API_KEY=TEST_KEY)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["answer"] == "March 3"
    assert "── iteration 3" in r.stderr and "\x1b" not in r.stderr       # piped: plain, on stderr


def test_run_show_whose_reader_goes_away_still_finishes_the_run(srv: FakeOpenAI, docs: Path,
                                                                 tmp_path: Path) -> None:
    _script(srv)
    trace_file = tmp_path / "t.jsonl"
    read_end, write_end = os.pipe()
    os.close(read_end)                              # `run --show | head -0`: nobody reads
    try:
        r = subprocess.run([sys.executable, "-m", "rlm_desktop", "run", "--docs", str(docs), "--query",
                            "When is the launch?", "--base-url", srv.base_url, "--model", "gpt-4o",
                            "--show", "--trace", str(trace_file), "--allow-weak-sandbox"],
                           cwd=ROOT, env=_env(OPENAI_API_KEY=TEST_KEY), stdout=write_end,
                           stderr=subprocess.PIPE, text=True, timeout=90)
    finally:
        os.close(write_end)
    from rlm_desktop.core.trace import SpanStatus, read_trace

    trace = read_trace(trace_file)
    assert trace.roots[0].status == SpanStatus.OK, r.stderr     # the run went on to its answer
    assert sum(1 for s in trace if str(s.kind) == "iteration") == 3
    assert len(srv.chat_requests) == 5
    assert "Traceback" not in r.stderr and "the output was closed" in r.stderr
