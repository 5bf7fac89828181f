"""`rlm-desktop run --session` across two processes: the second rebuilds the REPL from the trace
(the server sees no request while it does), and `rlm-desktop sessions` lists, shows and removes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_desktop.core.trace import Attr, read_trace
from rlm_desktop.session.history import HistoryStore
from tests.engine.conftest import TEST_KEY, is_root, route
from tests.fakeserver import FakeOpenAI

ROOT = Path(__file__).resolve().parents[2]


def _rlm(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["OPENAI_API_KEY"] = TEST_KEY
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "rlm_desktop", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "contracts"
    d.mkdir()
    (d / "acme.md").write_text("ACME renews in 2027. Price clause: yes.\n", encoding="utf-8")
    (d / "bolt.md").write_text("BOLT renews in 2026. Price clause: no.\n", encoding="utf-8")
    return d


def test_a_second_process_continues_the_session_with_the_first_ones_variables(
        fake_openai: FakeOpenAI, docs: Path) -> None:
    base = ["--base-url", fake_openai.base_url, "--model", "fake-root", "--allow-weak-sandbox"]
    fake_openai.handler = route([
        "```repl\nrenew = [k for k, v in context.items() if '2027' in v]\nprint(renew)\n```",
        "FINAL(ACME renews in 2027)",
    ], sub=lambda r: "unused")
    r1 = _rlm("run", "--session", "contracts", "--docs", str(docs), "--query",
              "Which contracts renew in 2027?", "--json", *base)
    assert r1.returncode == 0, r1.stderr
    out1 = json.loads(r1.stdout)
    assert out1["session"] == "contracts" and out1["turn"] == 1
    assert "renew: list" in out1["variables"]

    before = len(fake_openai.chat_requests)
    fake_openai.handler = route([
        # `renew` exists only if the REPL was rebuilt from turn 1's recorded cells.
        "```repl\nwith_price = [k for k in renew if 'Price clause: yes' in context[k]]\nprint(with_price)\n```",
        "```repl\nFINAL(str(with_price))\n```",
    ])
    r2 = _rlm("run", "--session", "contracts", "--query", "Of those, which have a price clause?",
              "--json", *base)
    assert r2.returncode == 0, r2.stderr
    out2 = json.loads(r2.stdout)
    assert out2["turn"] == 2 and out2["answer"] == "['acme.md']", out2
    assert out2["trace"] == out1["trace"]
    # Turn 2 made exactly its own two root requests; the rebuild made none.
    new = fake_openai.chat_requests[before:]
    assert len(new) == 2 and all(is_root(q) for q in new)
    # Its conversation began with turn 1 in compact form, after the same system prompt.
    first1 = [q for q in fake_openai.chat_requests[:before] if is_root(q)][0].messages
    first2 = new[0].messages
    assert first2[0] == first1[0]
    assert first2[1]["content"] == "[earlier turn 1] Question: Which contracts renew in 2027?"
    assert "rebuilt from the recorded cells" in first2[-1]["content"]
    trace = read_trace(out2["trace"])
    replays = [s for s in trace.spans.values() if s.attributes.get(Attr.REPLAY)]
    assert len(replays) == 1 and replays[0].attributes.get(Attr.COST_USD) == 0.0

    # The history has both turns, marked as CLI runs of this session.
    rows = [e for e in HistoryStore().entries() if e.session == "contracts"]
    assert sorted((e.turn, e.source, e.status) for e in rows) == [(1, "cli", "ok"), (2, "cli", "ok")]
    # Each turn's answer is kept with it, for History's search (issue 11).
    assert {e.turn: e.answer_preview for e in rows}[2] == "['acme.md']"

    shown = _rlm("sessions", "show", "contracts", "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert [t["turn"] for t in info["turns"]] == [1, 2]
    assert info["turns"][1]["answer"] == "['acme.md']"
    listed = json.loads(_rlm("sessions", "list", "--json").stdout)
    assert [s["name"] for s in listed] == ["contracts"] and listed[0]["turns"] == 2
    removed = _rlm("sessions", "remove", "contracts")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(_rlm("sessions", "list", "--json").stdout) == []


def test_continuing_a_session_that_does_not_exist_without_docs_says_how(fake_openai: FakeOpenAI) -> None:
    r = _rlm("run", "--session", "nope", "--query", "x", "--provider", "demo")
    assert r.returncode == 2
    assert "does not exist yet" in r.stderr and "--docs" in r.stderr


def test_bad_session_name_is_a_usage_error(docs: Path) -> None:
    r = _rlm("run", "--session", "../etc", "--docs", str(docs), "--query", "x", "--provider", "demo")
    assert r.returncode == 2 and "letters, digits" in r.stderr
