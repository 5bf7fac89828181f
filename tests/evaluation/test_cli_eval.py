"""`rlm-desktop eval` as a user runs it: a real process, real HTTP to a scripted server (the openai
SDK unpatched), real sandboxes for the RLM runs, real signals."""

from __future__ import annotations

import html
import inspect
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.core.trace import SpanStatus, read_trace
from rlm_desktop.engine.demo import DEMO_LABEL
from tests.evaluation import solvers
from tests.fakeserver import FakeOpenAI, Reply, Request

ROOT = Path(__file__).resolve().parents[2]
SOLVER_SRC = inspect.getsource(solvers.solve)


def _env() -> dict[str, str]:
    env = dict(os.environ)          # carries the temporary XDG / RLM_DESKTOP_HOME of the test
    env.pop("OPENAI_API_KEY", None)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlm_desktop", "eval", *args]


def _cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(*args), cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _question(req: Request) -> str:
    for m in req.messages:
        text = str(m.get("content") or "")
        if m.get("role") == "user" and text.startswith("Question: "):
            return text[len("Question: "):].split("\n", 1)[0].strip()
    raise AssertionError("no question in the request")


def _is_root(req: Request) -> bool:
    return bool(req.system)


def correct(req: Request) -> Any:
    """Root model: REPL code that computes the answer from `context`; direct call: the answer
    computed from the prompt's text."""
    q = _question(req)
    if _is_root(req):
        return f"```repl\n{SOLVER_SRC}\nFINAL(solve({q!r}, context))\n```"
    return solvers.solve(q, req.last_user)


def wrong(req: Request) -> Any:
    if _is_root(req):
        return "```repl\nprint(len(context))\nFINAL('I could not find it')\n```"
    return "I could not find it"


BASE = ("--task", "needle,aggregate", "--sizes", "8k,12k", "--items", "3", "--model", "fake-root",
        "--allow-weak-sandbox", "--json", "--quiet")


def test_scripted_model_that_answers_right_scores_1_and_wrong_scores_0(fake_openai: FakeOpenAI,
                                                                       tmp_path: Path) -> None:
    fake_openai.handler = correct
    out = tmp_path / "right"
    # A 3,600-token window: the 8k-character items fit a direct call (~2,100 tokens + 1,024 for the
    # answer), the 12k ones (~3,100 + 1,024) do not.
    r = _cli(*BASE, "--base-url", fake_openai.base_url, "--context-window", "3600", "--concurrency", "2",
             "--out", str(out))
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    rows = {(x["task"], x["size"], x["method"]): x for x in obj["results"]}
    assert set(rows) == {(t, s, m) for t in ("needle", "aggregate") for s in (8000, 12000)
                         for m in ("rlm", "direct")}
    for key, row in rows.items():
        for k in ("task", "size", "method", "items", "accuracy", "cost_usd", "input_tokens",
                  "output_tokens", "seconds", "failures"):
            assert k in row
        if key[1] == 12000 and key[2] == "direct":
            assert row["items"] == 0 and row["accuracy"] is None and row["skipped"] == 3
            assert "skipped: does not fit" in row["note"] and "estimated" in row["note"]
            assert row["cost_usd"] is None
        else:
            assert row["items"] == 3 and row["accuracy"] == 1.0 and row["failures"] == 0, row
            assert row["input_tokens"] > 0 and row["output_tokens"] > 0
            assert row["cost_usd"] is None            # fake-root has no price: unknown, never 0
    assert {i["scorer"] for i in obj["items"]} == {"exact", "numeric", "label"}
    # every run kept its trace, and the direct runs went out as one call holding the whole context
    traces = sorted((out / "traces").glob("*.jsonl"))
    assert len(traces) == 4 * 3 + 2 * 3
    direct = [q for q in fake_openai.chat_requests if not _is_root(q)]
    assert len(direct) == 6 and all(len(q.last_user) > 7_000 for q in direct)
    t = read_trace(out / "traces" / "needle-8k-001-direct.jsonl")
    assert t.roots[0].status == SpanStatus.OK and t.header["eval"]["method"] == "direct"
    assert json.loads((out / "results.json").read_text())["results"] == obj["results"]
    page = (out / "report.html").read_text()
    assert "<svg" in page and "cost unknown: no price for the model" in page

    fake_openai.handler = wrong
    r = _cli(*BASE, "--base-url", fake_openai.base_url, "--context-window", "100000",
             "--out", str(tmp_path / "wrong"))
    assert r.returncode == 0, r.stderr
    rows2 = json.loads(r.stdout)["results"]
    assert len(rows2) == 8 and all(x["items"] == 3 and x["accuracy"] == 0.0 for x in rows2)


def test_demo_dry_run_completes_and_reports_what_the_demo_scores(tmp_path: Path) -> None:
    r = _cli("--task", "needle,pairs", "--sizes", "8k,16k", "--items", "1", "--provider", "demo",
             "--out", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    assert "offline demo" in r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:5] == ["task", "size", "method", "items", "accuracy"]
    assert len(lines) == 2 + 8
    obj = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert obj["demo"] is True and len(obj["results"]) == 8
    assert all(x["items"] == 1 and 0.0 <= x["accuracy"] <= 1.0 and x["cost_usd"] == 0.0
               for x in obj["results"])
    assert all(Path(i["trace"]).exists() for i in obj["items"])
    # the report says what the demo is in the same words as everywhere else, not a cut-off phrase
    report = (tmp_path / "demo" / "report.html").read_text()
    assert html.escape(DEMO_LABEL) in report


def test_budget_stops_before_a_run_that_could_pass_it(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    # gpt-4o has a built-in price ($2.50 / M input): every call reports 100,000 input tokens = $0.25.
    def priced(req: Request) -> Any:
        r = correct(req)
        return Reply(text=r, usage={"prompt_tokens": 100_000, "completion_tokens": 0})
    fake_openai.handler = priced
    r = _cli("--task", "needle", "--sizes", "8k", "--items", "3", "--model", "gpt-4o",
             "--base-url", fake_openai.base_url, "--budget-usd", "0.6", "--context-window", "100000",
             "--allow-weak-sandbox", "--json", "--quiet", "--out", str(tmp_path / "b"))
    assert r.returncode == 3, r.stderr
    obj = json.loads(r.stdout)
    # item 1: rlm $0.25 + direct $0.25; item 2's RLM run is estimated at $0.25 (the mean so far):
    # $0.75 > $0.60, so it never starts.
    assert obj["stopped"].startswith("budget: the next run (needle 8k rlm, item 2)")
    assert [(i["method"], i["index"]) for i in obj["items"]] == [("rlm", 0), ("direct", 0)]
    assert sum(x["cost_usd"] for x in obj["results"]) == pytest.approx(0.5)
    assert len(fake_openai.chat_requests) == 2
    assert "stopped early: budget" in r.stderr


def test_ctrl_c_stops_cleanly_and_keeps_partial_results(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    served: list[int] = []

    def first_runs_then_hang(req: Request) -> Any:
        served.append(1)
        return correct(req) if len(served) <= 2 else Reply.hanging()
    fake_openai.handler = first_runs_then_hang
    out = tmp_path / "c"
    p = subprocess.Popen(_argv("--task", "needle", "--sizes", "8k", "--items", "3", "--model", "fake-root",
                               "--base-url", fake_openai.base_url, "--context-window", "100000",
                               "--allow-weak-sandbox", "--json", "--quiet", "--out", str(out)),
                         cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert fake_openai.wait_until(lambda s: s.open_now == 1 and len(s.chat_requests) == 3, timeout=60)
        p.send_signal(signal.SIGINT)
        stdout, stderr = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 4, stderr
    obj = json.loads(stdout)
    assert obj["stopped"] == "cancelled by SIGINT"
    assert [(i["method"], i["status"]) for i in obj["items"]] == [("rlm", "ok"), ("direct", "ok"),
                                                                    ("rlm", "cancelled")]
    rows = {x["method"]: x for x in obj["results"]}
    assert rows["rlm"]["items"] == 1 and rows["rlm"]["accuracy"] == 1.0       # the cancelled one not counted
    assert json.loads((out / "results.json").read_text())["stopped"] == "cancelled by SIGINT"
    cancelled = read_trace(out / "traces" / "needle-8k-002-rlm.jsonl")
    assert cancelled.roots[0].status == SpanStatus.CANCELLED
    assert not any(s.running for s in cancelled)
    assert fake_openai.wait_until(lambda s: s.open_now == 0, timeout=10)


def test_usage_errors_say_what_to_do(tmp_path: Path) -> None:
    r = _cli("--task", "haystack", "--provider", "demo")
    assert r.returncode == 2 and "unknown task 'haystack'" in r.stderr
    r = _cli("--task", "needle", "--sizes", "8q", "--provider", "demo")
    assert r.returncode == 2 and "is not a size" in r.stderr
    r = _cli("--task", "docs", "--provider", "demo")
    assert r.returncode == 2 and "--docs DIR and --questions" in r.stderr
    r = _cli("--task", "needle", "--methods", "rlm,magic", "--provider", "demo")
    assert r.returncode == 2 and "--methods" in r.stderr
    r = _cli("--task", "needle", "--items", "0", "--provider", "demo")
    assert r.returncode == 2 and "--items must be greater than 0" in r.stderr


def test_docs_task_runs_the_users_folder_and_questions(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The launch date is March 3.\n")
    (docs / "b.txt").write_text("Nothing here.\n")
    qs = tmp_path / "q.jsonl"
    qs.write_text('{"question": "When is the launch?", "answer": "March 3"}\n'
                  '{"question": "Who signed?", "answer": "Ada", "scorer": "exact"}\n')

    def answer(req: Request) -> Any:
        if _is_root(req):
            return "```repl\nFINAL('It is on March 3.')\n```"
        return "It is on March 3."
    fake_openai.handler = answer
    r = _cli("--task", "docs", "--docs", str(docs), "--questions", str(qs), "--model", "fake-root",
             "--base-url", fake_openai.base_url, "--context-window", "100000", "--allow-weak-sandbox",
             "--json", "--quiet", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert [(x["method"], x["items"], x["accuracy"]) for x in obj["results"]] == [
        ("rlm", 2, 0.5), ("direct", 2, 0.5)]                 # contains: right; exact "Ada": wrong
    assert obj["results"][0]["size"] == len("The launch date is March 3.\nNothing here.\n")


def test_concurrency_runs_k_items_at_once(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    import threading

    both_open = threading.Barrier(2)

    def needs_company(req: Request) -> Any:
        try:            # answers only once two root calls are in flight together
            both_open.wait(timeout=20)
        except threading.BrokenBarrierError:
            return wrong(req)
        return correct(req)
    fake_openai.handler = needs_company
    r = _cli("--task", "needle", "--sizes", "8k", "--items", "2", "--methods", "rlm", "--concurrency", "2",
             "--model", "fake-root", "--base-url", fake_openai.base_url, "--allow-weak-sandbox", "--json",
             "--quiet", "--out", str(tmp_path / "k"))
    assert r.returncode == 0, r.stderr
    assert [(x["items"], x["accuracy"]) for x in json.loads(r.stdout)["results"]] == [(2, 1.0)]


def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    import pty
    import threading

    args = ("--task", "needle", "--sizes", "8k", "--items", "2", "--provider", "demo")
    master, slave = pty.openpty()
    p = subprocess.Popen(_argv(*args, "--out", str(tmp_path / "tty")), cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:          # EIO: the child closed the terminal
                return
            if not data:
                return
            seen.extend(data)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    p.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(master)
    assert p.returncode == 0
    text = seen.decode(errors="replace")
    assert "] 4/4 runs" in text and "[" + "#" * 24 + "]" in text and "needle 8k #2 direct" in text
    plain = _cli(*args, "--out", str(tmp_path / "pipe"))
    assert plain.returncode == 0 and "\x1b[2K" not in plain.stderr and "runs ·" not in plain.stderr


def test_a_failing_provider_stops_after_three_runs_in_a_row(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    fake_openai.handler = lambda req: Reply.error(401, "Incorrect API key provided")
    r = _cli("--task", "needle", "--sizes", "8k", "--items", "5", "--model", "fake-root",
             "--base-url", fake_openai.base_url, "--context-window", "100000", "--allow-weak-sandbox",
             "--json", "--quiet", "--out", str(tmp_path / "e"))
    assert r.returncode == 5, r.stderr
    obj = json.loads(r.stdout)
    assert obj["stopped"].startswith("errors: 3 runs in a row failed") and "(401)" in obj["stopped"]
    assert len(obj["items"]) == 3 and all(i["status"] == "error" for i in obj["items"])
    assert [(x["items"], x["failures"], x["accuracy"]) for x in obj["results"]] == [(2, 2, 0.0), (1, 1, 0.0)]


def test_each_rlm_run_is_held_to_what_is_left_of_the_budget(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    # A root model that never answers, each call $0.25 (gpt-4o list price, 100,000 input tokens).
    fake_openai.handler = lambda req: Reply(text="```repl\nprint(1)\n```",
                                            usage={"prompt_tokens": 100_000, "completion_tokens": 0})
    r = _cli("--task", "needle", "--sizes", "8k", "--items", "2", "--methods", "rlm", "--model", "gpt-4o",
             "--base-url", fake_openai.base_url, "--budget-usd", "0.3", "--max-iterations", "6",
             "--allow-weak-sandbox", "--json", "--quiet", "--out", str(tmp_path / "r"))
    assert r.returncode == 3, r.stderr
    obj = json.loads(r.stdout)
    (item,) = obj["items"]
    # The run's own USD limit was the $0.30 left: it stopped after its second call, not after six.
    assert item["status"] == "limit" and "USD budget reached" in item["reason"]
    assert item["cost_usd"] == pytest.approx(0.5) and len(fake_openai.chat_requests) == 2
    assert obj["stopped"].startswith("budget: the next run (needle 8k rlm, item 2)")
