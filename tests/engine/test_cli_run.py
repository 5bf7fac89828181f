"""`rlm-desktop run` as a user runs it: a real process, real HTTP, real REPL, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, read_trace
from tests.engine.conftest import TEST_KEY, is_root, route
from tests.fakeserver import FakeOpenAI, Reply
from tests.proctree import pidfds, sandbox_processes, still_alive_after

ROOT = Path(__file__).resolve().parents[2]


def _env(key: str | None = None) -> dict[str, str]:
    env = dict(os.environ)          # carries the temporary XDG / RLM_DESKTOP_HOME of the test
    env.pop("OPENAI_API_KEY", None)
    if key is not None:
        env["OPENAI_API_KEY"] = key
    env["PYTHONPATH"] = str(ROOT)
    return env


def _cli(*args: str, key: str | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rlm_desktop", "run", *args], cwd=ROOT, env=_env(key),
                          capture_output=True, text=True, timeout=timeout)


def _popen(*args: str, key: str | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "rlm_desktop", "run", *args], cwd=ROOT, env=_env(key),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir()
    (d / "report.txt").write_text("Quarterly report. The launch date is March 3. Revenue grew.\n")
    (d / "notes.md").write_text("# Notes\nNothing about launches here.\n")
    return d


def test_demo_without_server_or_key_exits_0_and_says_so(docs: Path) -> None:
    r = _cli("--docs", str(docs), "--query", "When is the launch date?")
    assert r.returncode == 0, r.stderr
    assert "The launch date is March 3." in r.stdout
    assert "offline demo provider" in r.stderr
    r2 = _cli("--docs", str(docs), "--query", "When is the launch date?", "--provider", "demo", "--json",
              "--quiet")
    assert r2.returncode == 0, r2.stderr
    out = json.loads(r2.stdout)
    assert out["status"] == "ok" and out["demo"] is True and out["cost_usd"] == 0.0
    trace = read_trace(out["trace"])
    assert Path(out["trace"]).is_relative_to(Path(os.environ["RLM_DESKTOP_HOME"]))
    assert trace.roots[0].status == SpanStatus.OK and trace.header["isolation"]["level"]


def test_scripted_server_multi_iteration_batched_json_and_trace(srv: FakeOpenAI, docs: Path,
                                                               tmp_path: Path) -> None:
    srv.handler = route([
        "```repl\nimport os\nprint(sorted(context))\nprint(sorted(os.environ.items()))\n```",
        "```repl\nparts = llm_query_batched([f'{k}: ' + v for k, v in context.items()])\nprint(parts)\n```",
        "```repl\nanswer = [p for p in parts if 'March' in p][0]\n```\nFINAL_VAR(answer)",
    ], sub=lambda r: Reply(text="March 3" if "March" in r.last_user else "nothing",
                           usage={"prompt_tokens": 50, "completion_tokens": 3, "cached_tokens": 0}))
    trace_file = tmp_path / "run.jsonl"
    r = _cli("--docs", str(docs), "--query", "When is the launch?", "--base-url", srv.base_url,
             "--model", "gpt-4o", "--sub-model", "gpt-4o-mini", "--trace", str(trace_file), "--json",
             "--allow-weak-sandbox", key=TEST_KEY)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["answer"] == "March 3" and out["status"] == "ok" and out["reason"] is None
    for k in ("cost_usd", "input_tokens", "output_tokens", "iterations", "sub_calls", "trace", "isolation"):
        assert k in out
    assert out["iterations"] == 3 and out["sub_calls"] == 2 and out["trace"] == str(trace_file)
    assert all(req.authorization == f"Bearer {TEST_KEY}" for req in srv.chat_requests)
    text = trace_file.read_text()
    assert TEST_KEY not in text
    trace = read_trace(trace_file)
    env_cell = next(s for s in trace if s.kind == SpanKind.CODE_CELL)
    assert "'PATH'" in env_cell.attributes[Attr.STDOUT]           # the REPL's environment was printed
    assert "OPENAI_API_KEY" not in env_cell.attributes[Attr.STDOUT]
    assert {str(s.kind) for s in trace} >= {"run", "iteration", "llm_call", "code_cell", "sub_call", "final"}
    calls = [s for s in trace if s.kind == SpanKind.LLM_CALL]
    assert len(calls) == 5 and all(s.attributes[Attr.INPUT_TOKENS] > 0 and s.attributes[Attr.COST_USD] > 0
                                   for s in calls)        # built-in list prices of known models
    assert out["cost_known"] and out["cost_usd"] == pytest.approx(
        sum(s.attributes[Attr.COST_USD] for s in calls))
    assert [r.model for r in srv.chat_requests if not is_root(r)] == ["gpt-4o-mini"] * 2


def test_budget_hit_exits_3_naming_the_limit(srv: FakeOpenAI, docs: Path) -> None:
    srv.handler = route(["```repl\nfor i in range(20):\n    llm_query(f'q{i}')\n```"])
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", srv.base_url, "--model", "fake-root",
             "--max-sub-calls", "2", "--json", "--allow-weak-sandbox")
    assert r.returncode == 3, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "limit" and out["stop_reason"] == "max_sub_calls"
    assert "max sub-calls" in r.stderr and "stopped by a limit" in r.stderr
    srv.handler = route(["```repl\nprint(1)\n```"] * 3)
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", srv.base_url, "--model", "gpt-4o",
             "--budget-usd", "0.0001", "--allow-weak-sandbox")
    assert r.returncode == 3 and "USD budget reached" in r.stderr
    srv.handler = route(["```repl\nprint(1)\n```"] * 3)
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", srv.base_url, "--model", "fake-root",
             "--max-iterations", "2", "--allow-weak-sandbox")
    assert r.returncode == 3 and "max iterations reached (2)" in r.stderr


def test_usage_and_provider_errors_exit_codes(srv: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    r = _cli("--docs", str(tmp_path / "missing"), "--query", "q")
    assert r.returncode == 2 and "no such file or folder" in r.stderr
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", srv.base_url)
    assert r.returncode == 2 and "--model is required" in r.stderr
    r = _cli("--docs", str(docs), "--query", "q", "--max-iterations", "0", "--provider", "demo")
    assert r.returncode == 2 and "--max-iterations must be greater than 0" in r.stderr
    r = _cli("--docs", str(docs), "--query", "q", "--provider", "no-such-profile")
    assert r.returncode == 2 and "no-such-profile" in r.stderr
    srv.script(Reply.error(401, "bad key"))
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", srv.base_url, "--model", "m",
             "--allow-weak-sandbox", key="sk-wrong-key-123456")
    assert r.returncode == 5 and "rejected the API key" in r.stderr and "sk-wrong-key-123456" not in r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_cancels_and_closes_the_trace(srv: FakeOpenAI, docs: Path, tmp_path: Path,
                                            sig: signal.Signals) -> None:
    srv.handler = route(["```repl\nllm_query_batched(['a', 'b'])\n```"], sub=lambda r: Reply.hanging())
    trace_file = tmp_path / "int.jsonl"
    p = _popen("--docs", str(docs), "--query", "q", "--base-url", srv.base_url, "--model", "fake-root",
               "--trace", str(trace_file), "--json", "--allow-weak-sandbox")
    try:
        assert srv.wait_until(lambda s: s.open_now >= 2, timeout=30), "sub-calls never started"
        boxes = pidfds(sandbox_processes(p.pid))
        assert boxes, "no sandbox process was found while the cell ran"
        p.send_signal(sig)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 4, err
    assert still_alive_after(boxes, 10) == set(), "sandbox processes outlived the interrupted CLI"
    assert json.loads(out)["status"] == "cancelled" and sig.name in err
    assert srv.wait_until(lambda s: s.open_now == 0, timeout=5)
    trace = read_trace(trace_file)
    assert not [s for s in trace if s.running]
    assert trace.roots[0].status == SpanStatus.CANCELLED


def test_interrupting_a_spinning_cell_kills_its_sandbox(srv: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    srv.handler = route(["```repl\nprint('spinning', flush=True)\nwhile True: pass\n```"])
    trace_file = tmp_path / "spin.jsonl"
    p = _popen("--docs", str(docs), "--query", "q", "--base-url", srv.base_url, "--model", "fake-root",
               "--trace", str(trace_file), "--json", "--allow-weak-sandbox", "--cell-timeout", "300")
    try:
        assert srv.wait_until(lambda s: trace_file.exists() and "spinning" in trace_file.read_text(),
                              timeout=30), "the spinning cell never started"
        boxes = pidfds(sandbox_processes(p.pid))
        assert boxes, "no sandbox process was found while the cell ran"
        p.send_signal(signal.SIGINT)
        left = still_alive_after(boxes, 10)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert left == set(), f"sandbox processes {sorted(left)} outlived the interrupt"
    assert p.returncode == 4, err
    assert json.loads(out)["status"] == "cancelled"
    assert not [s for s in read_trace(trace_file) if s.running]


def test_sigkill_mid_run_leaves_a_readable_trace(srv: FakeOpenAI, docs: Path, tmp_path: Path) -> None:
    srv.handler = route(["```repl\nprint('working')\nllm_query('slow one')\n```"],
                        sub=lambda r: Reply.hanging())
    trace_file = tmp_path / "killed.jsonl"
    p = _popen("--docs", str(docs), "--query", "q", "--base-url", srv.base_url, "--model", "fake-root",
               "--trace", str(trace_file), "--allow-weak-sandbox")
    try:
        assert srv.wait_until(lambda s: len([r for r in s.chat_requests if not is_root(r)]) >= 1, timeout=30)
        p.kill()
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    trace = read_trace(trace_file)
    kinds = {str(s.kind) for s in trace}
    assert {"run", "iteration", "llm_call", "code_cell", "sub_call"} <= kinds
    assert trace.roots[0].running                      # never ended: shown as incomplete
    assert srv.wait_until(lambda s: s.open_now == 0, timeout=10)


def test_progress_line_on_a_terminal_and_quiet_silences_it(docs: Path) -> None:
    import pty

    def stderr_via_tty(*extra: str) -> tuple[int, str]:
        master, slave = pty.openpty()
        p = subprocess.Popen([sys.executable, "-m", "rlm_desktop", "run", "--docs", str(docs), "--query",
                              "When is the launch date?", "--provider", "demo", *extra],
                             cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        chunks: list[bytes] = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:        # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        os.close(master)
        p.communicate(timeout=60)
        return p.returncode, b"".join(chunks).decode(errors="replace")

    code, err = stderr_via_tty()
    assert code == 0 and "\riteration" in err.replace("\x1b[2K", "") and "sub-calls" in err
    code, err = stderr_via_tty("--quiet")
    assert code == 0 and "iteration" not in err


def test_app_settings_provide_the_provider_and_default_limits(srv: FakeOpenAI, docs: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from rlm_desktop.core.config import RunLimits
    from rlm_desktop.core.profiles import profile_from_preset
    from rlm_desktop.ui.settings import Settings

    settings = Settings()
    settings.add_profile(profile_from_preset("custom", "gw", base_url=srv.base_url, root_model="fake-root",
                                             sub_model="fake-sub"))
    settings.set_last_root_choice("gw", "fake-root")
    settings.set_default_limits(RunLimits(max_iterations=2))
    settings.sync()
    monkeypatch.setenv("RLM_DESKTOP_KEY_GW", "sk-gw-from-env-123")
    srv.handler = route(["```repl\nprint(1)\n```"] * 3)
    r = _cli("--docs", str(docs), "--query", "q", "--allow-weak-sandbox")
    assert r.returncode == 3, r.stderr
    assert "Using the app's provider" in r.stderr and "max iterations reached (2)" in r.stderr
    assert {q.authorization for q in srv.chat_requests} == {"Bearer sk-gw-from-env-123"}
    srv.handler = route(["FINAL(via flag)"])
    r = _cli("--docs", str(docs), "--query", "q", "--provider", "gw", "--max-iterations", "5",
             "--allow-weak-sandbox")
    assert r.returncode == 0 and r.stdout.strip() == "via flag"


def test_the_log_records_the_run_and_its_retry_but_never_the_key(srv: FakeOpenAI, docs: Path,
                                                                 tmp_path: Path) -> None:
    key = "gwkey-PLAIN-9c1e44d0"          # not key-shaped: only the registration can hide it
    srv.handler = route([
        Reply.error(429, "slow down " + key, retry_after=0.05),   # a server that echoes the key back
        "```repl\nprint(len(context))\n```",
        "FINAL(done)",
    ])
    trace_file = tmp_path / "retried.jsonl"
    r = _cli("--docs", str(docs), "--query", "Anything?", "--base-url", srv.base_url, "--model", "m",
             "--allow-weak-sandbox", "--trace", str(trace_file), key=key)
    assert r.returncode == 0, r.stderr
    assert "attempt 1 failed" in r.stderr and key not in r.stderr      # the console warning
    # Each layer on its own: the provider layer replaced the echoed key ("***") before any log
    # handler or the trace saw it; the log's own redaction ("[redacted]") is tested on its own in
    # tests/core/test_logs.py.
    assert "slow down ***" in r.stderr and key not in trace_file.read_text(encoding="utf-8")
    srv.handler = route([Reply.error(429, "slow down", retry_after=0.05), "FINAL(done)"])
    quiet = _cli("--docs", str(docs), "--query", "Anything?", "--base-url", srv.base_url, "--model", "m",
                 "--allow-weak-sandbox", "--quiet", key=key)
    assert quiet.returncode == 0 and quiet.stderr == ""                 # --quiet: only the log file
    log_path = Path(os.environ["RLM_DESKTOP_HOME"]) / "state" / "rlm-desktop" / "logs" / "rlm-desktop.log"
    text = log_path.read_text(encoding="utf-8")
    assert key not in text
    recs = [json.loads(line) for line in text.splitlines()]
    msgs = [r["msg"] for r in recs]
    assert any(m.startswith("trace ") for m in msgs)
    assert any(m.startswith("run started: ") and "root m" in m for m in msgs)
    retry = next(r for r in recs if "attempt 1 failed" in r["msg"])
    assert retry["level"] == "warning" and "slow down ***" in retry["msg"]
    done = next(r for r in recs if r["msg"].startswith("run finished: ok (final)"))
    assert "2 iterations" in done["msg"]


def test_a_bad_limit_flag_is_named_before_any_document_is_read(docs: Path) -> None:
    r = _cli("--docs", str(docs), "--query", "q", "--budget-usd", "-1")
    assert r.returncode == 2
    assert "--budget-usd must be greater than 0 (got -1.0)" in r.stderr
    assert "loaded" not in r.stderr and "budget_usd" not in r.stderr
    r2 = _cli("--docs", str(docs), "--query", "q", "--max-iterations", "0")
    assert r2.returncode == 2 and "--max-iterations must be greater than 0" in r2.stderr


def test_batch_concurrency_flag_bounds_the_sub_calls_in_flight(srv: FakeOpenAI, docs: Path) -> None:
    """--batch-concurrency sets RunLimits.batch_concurrency: six slow sub-calls of one batch reach
    the server two at a time (the default, 8, would let all six in at once)."""
    srv.handler = route([
        "```repl\nparts = llm_query_batched([f'part {i}' for i in range(6)])\nprint(len(parts))\n```",
        "```repl\nFINAL(str(len(parts)))\n```",
    ], sub=lambda r: Reply(text="ok", delay=0.3))
    r = _cli("--docs", str(docs), "--query", "q", "--base-url", srv.base_url, "--model", "m",
             "--batch-concurrency", "2", "--json", "--quiet", "--allow-weak-sandbox", key=TEST_KEY)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["answer"] == "6" and out["sub_calls"] == 6
    assert srv.max_open == 2
    bad = _cli("--docs", str(docs), "--query", "q", "--batch-concurrency", "0")
    assert bad.returncode == 2 and "--batch-concurrency must be greater than 0" in bad.stderr
