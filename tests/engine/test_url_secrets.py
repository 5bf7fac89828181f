"""Credentials inside a base URL are secrets (issue 8 item 9): a CLI run against a URL with a user
password and ``?api_key=`` works, and neither secret reaches stderr, ``--json``, the trace, an
export, the history or the log — on success and when the provider fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_desktop.core.exporters import FORMATS
from rlm_desktop.core.trace import Attr, SpanKind, read_trace
from tests.engine.test_cli_run import ROOT, _cli, _env
from tests.fakeserver import FakeOpenAI, Reply

PASSWORD = "sekret-pw-71"
QUERY_KEY = "sekret-qk-93"
SECRETS = (PASSWORD, QUERY_KEY)


def _secret_url(srv: FakeOpenAI) -> str:
    return (srv.base_url.replace("http://", f"http://u:{PASSWORD}@")
            + f"?api_key={QUERY_KEY}&api-version=2024-06-01")


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def _files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _export_all(trace_file: Path, out_dir: Path) -> list[Path]:
    outs = []
    for fmt in FORMATS:
        out = out_dir / f"export-{fmt}.out"
        r = subprocess.run([sys.executable, "-m", "rlm_desktop", "export", str(trace_file), "--format",
                            fmt, "-o", str(out)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert not _leaks(r.stderr)
        outs.append(out)
    return outs


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "report.txt").write_text("The launch date is March 3.\n")
    return d


def test_a_run_against_a_url_with_credentials_works_and_never_shows_them(
        fake_openai: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    srv = fake_openai
    srv.script("```repl\nx = llm_query('date?')\nprint(x)\n```", "March 3", "FINAL(March 3)")
    trace_file = tmp_path / "run.jsonl"
    r = _cli("--docs", str(docs), "--query", "When is the launch?", "--base-url", _secret_url(srv),
             "--model", "fake-root", "--trace", str(trace_file), "--json", "--allow-weak-sandbox")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["answer"] == "March 3"
    # the server got the parameters as a query (not inside the path) and the user info as Basic auth
    chat = srv.chat_requests
    assert chat and all(q.path == "/v1/chat/completions" for q in chat)
    assert all(f"api_key={QUERY_KEY}" in q.query and "api-version=2024-06-01" in q.query for q in chat)
    assert all((q.authorization or "").startswith("Basic ") for q in chat)
    # shown masked: the user and the harmless parameter stay readable
    assert out["provider"].startswith("http://u:***@127.0.0.1:")
    assert out["provider"].endswith("/v1?api_key=***&api-version=2024-06-01")
    assert not _leaks(r.stdout) and not _leaks(r.stderr)
    trace = read_trace(trace_file)
    assert trace.header["provider"] == out["provider"]
    assert {s.attributes.get(Attr.PROVIDER) for s in trace if s.kind == SpanKind.LLM_CALL} == {out["provider"]}
    for f in [trace_file, *_export_all(trace_file, tmp_path)]:
        assert not _leaks(f.read_text(encoding="utf-8")), f
    home = Path(os.environ["RLM_DESKTOP_HOME"])
    written = _files_under(home)
    assert any(p.name.endswith(".log") for p in written)     # the log exists and was checked
    for f in written:
        assert not _leaks(f.read_text(encoding="utf-8", errors="replace")), f


def test_a_failing_provider_with_credentials_in_its_url_never_shows_them(
        fake_openai: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    srv = fake_openai
    echo = (f"upstream refused POST http://u:{PASSWORD}@gateway/v1/chat/completions?api_key={QUERY_KEY} "
            f"(key {QUERY_KEY}, password {PASSWORD})")
    srv.script(Reply.error(500, echo, retry_after=0), Reply.error(500, echo, retry_after=0), Reply.hanging())
    trace_file = tmp_path / "fail.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "rlm_desktop", "run", "--docs", str(docs), "--query", "q",
                          "--base-url", _secret_url(srv), "--model", "fake-root", "--trace",
                          str(trace_file), "--json", "--allow-weak-sandbox"],
                         cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert srv.wait_until(lambda s: len(s.chat_requests) >= 3, timeout=60)
        srv.stop()                                  # the server goes down mid-request, then stays down
        stdout, stderr = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 5, stderr
    out = json.loads(stdout)
    assert out["status"] == "error" and "cannot reach" in out["reason"]
    assert "http://u:***@127.0.0.1:" in out["reason"]
    assert not _leaks(stdout) and not _leaks(stderr)
    assert "provider error" in stderr
    trace = read_trace(trace_file)
    call = next(s for s in trace if s.kind == SpanKind.LLM_CALL)
    retries = call.attributes.get(Attr.RETRIES) or []
    assert any("server error (500)" in r["error"] for r in retries)     # the echo was recorded…
    assert not _leaks(trace_file.read_text(encoding="utf-8"))           # …scrubbed
    for f in _export_all(trace_file, tmp_path):
        assert not _leaks(f.read_text(encoding="utf-8")), f
    for f in _files_under(Path(os.environ["RLM_DESKTOP_HOME"])):
        assert not _leaks(f.read_text(encoding="utf-8", errors="replace")), f


def test_a_bad_base_url_error_does_not_repeat_its_credentials(docs: Path) -> None:
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", f"ftp://u:{PASSWORD}@h/v1?token={QUERY_KEY}",
             "--model", "m")
    assert r.returncode == 2 and "must start with http://" in r.stderr
    assert "ftp://u:***@h/v1?token=***" in r.stderr
    assert not _leaks(r.stderr + r.stdout)


def test_an_impossible_port_is_a_usage_error_not_an_internal_error(docs: Path) -> None:
    r = _cli("--docs", str(docs), "--query", "q", "--base-url",
             f"http://u:{PASSWORD}@127.0.0.1:99999/v1?api_key={QUERY_KEY}", "--model", "m")
    assert r.returncode == 2, r.stderr
    assert "is not a valid address" in r.stderr and "http://u:***@127.0.0.1:99999/v1?api_key=***" in r.stderr
    assert not _leaks(r.stderr + r.stdout)
