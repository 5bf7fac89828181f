"""Comparing two runs: facts and deltas from the one totals function, answers diffed word by word,
session turns picked with FILE#N; and `rlm-desktop compare` as a real process (table and --json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_desktop.core.compare import CompareError, answer_diff, compare, load_run, run_facts, split_spec
from rlm_desktop.core.totals import totals
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter

ROOT = Path(__file__).resolve().parents[2]


def write_run(path: Path, *, model: str, answer: str | None, cost: float | None, calls: int,
              max_iterations: int = 20, turns: int = 1, status: SpanStatus = SpanStatus.OK) -> Path:
    tr = Trace()
    w = TraceWriter(path, {"query": "When is the launch?"}).attach(tr)
    t = 1_700_000_000.0
    for turn in range(1, turns + 1):
        run = tr.start_span(SpanKind.RUN, f"turn {turn}", None, {
            Attr.QUERY: "When is the launch?", Attr.TURN: turn,
            Attr.MODELS: {"root": model, "sub": "mini"},
            Attr.LIMITS: {"max_iterations": max_iterations, "budget_usd": 2.0}}, now=t)
        for i in range(calls):
            it = tr.start_span(SpanKind.ITERATION, f"iteration {i + 1}", run, now=t + i)
            c = tr.start_span(SpanKind.LLM_CALL, f"chat {model}", it, {Attr.MODEL: model}, now=t + i)
            tr.end_span(c, SpanStatus.OK, {Attr.INPUT_TOKENS: 1000, Attr.OUTPUT_TOKENS: 50,
                                           Attr.COST_USD: cost}, now=t + i + 0.5)
            tr.end_span(it, SpanStatus.OK, now=t + i + 0.9)
        end = {Attr.ANSWER: f"{answer} (turn {turn})" if turns > 1 and answer else answer,
               Attr.STOP_REASON: "final" if status is SpanStatus.OK else "max_iterations"}
        tr.end_span(run, status, end, now=t + calls)
        t += 100
    w.close()
    return path


def test_facts_deltas_and_word_diff(tmp_path: Path) -> None:
    a = load_run(str(write_run(tmp_path / "a.jsonl", model="gpt-4o", cost=0.01, calls=3,
                               answer="The launch date is March 3 in Berlin.")))
    b = load_run(str(write_run(tmp_path / "b.jsonl", model="gpt-4o-mini", cost=0.001, calls=2,
                               max_iterations=10, answer="The launch date is March 4 in Berlin.")))
    assert (a.iterations, a.llm_calls, a.input_tokens, a.output_tokens) == (3, 3, 3000, 150)
    assert a.cost_usd == pytest.approx(0.03) and a.duration_s == 3.0 and a.models == ["gpt-4o"]
    c = compare(a, b)
    d = c.delta
    assert d["cost_usd"] == pytest.approx(-0.028) and d["input_tokens"] == -1000 and d["iterations"] == -1
    assert d["duration_s"] == -1.0 and d["errors"] == 0
    assert d["changed"]["root_model"] == ["gpt-4o", "gpt-4o-mini"] and "status" not in d["changed"]
    assert d["limits_changed"] == {"max_iterations": [20, 10]}
    assert d["answers_equal"] is False
    assert [op for op in c.answer_diff if op["op"] != "equal"] == [{"op": "replace", "a": "3", "b": "4"}]
    assert 0.8 < c.similarity < 1
    doc = json.loads(json.dumps(c.as_dict()))
    assert set(doc) >= {"a", "b", "delta", "answer_diff"} and doc["a"]["root_model"] == "gpt-4o"


def test_facts_come_from_the_one_totals_function(tmp_path: Path) -> None:
    from rlm_desktop.core.trace import read_trace

    tr = read_trace(write_run(tmp_path / "a.jsonl", model="m", cost=None, calls=2, answer="x"))
    f = run_facts(tr)
    t = totals(tr.roots[0])
    assert (f.cost_usd, f.cost_known, f.input_tokens, f.iterations) == (None, False, t.input_tokens, t.iterations)


def test_answer_diff_edges() -> None:
    assert answer_diff(None, "new words") == [{"op": "insert", "a": "", "b": "new words"}]
    assert answer_diff("same  text\nhere", "same text here") == [{"op": "equal", "a": "same text here",
                                                                  "b": "same text here"}]


def test_session_turns_and_bad_input(tmp_path: Path) -> None:
    s = write_run(tmp_path / "s.jsonl", model="m", cost=0.01, calls=1, answer="answer", turns=3)
    assert split_spec(f"{s}#2") == (s, 2)
    two = load_run(f"{s}#2")
    assert two.turn == 2 and two.answer == "answer (turn 2)" and two.iterations == 1
    last = load_run(str(s))
    assert last.turn == 3 and any("3 turns: comparing the last" in n for n in last.notes)
    with pytest.raises(CompareError, match="has no turn 9 \\(its turns: 1, 2, 3\\)"):
        load_run(f"{s}#9")
    with pytest.raises(CompareError, match="no such file"):
        load_run(str(tmp_path / "missing.jsonl"))
    (tmp_path / "x.jsonl").write_text("not a trace\n")
    with pytest.raises(CompareError, match="not an RLM Desktop trace"):
        load_run(str(tmp_path / "x.jsonl"))
    odd = tmp_path / "odd#2.jsonl"                 # a '#' that belongs to an existing file's name
    write_run(odd, model="m", cost=0.0, calls=1, answer="a")
    assert split_spec(str(odd)) == (odd, None)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("NO_COLOR", None)
    return subprocess.run([sys.executable, "-m", "rlm_desktop", "compare", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_compare_cli_table_and_json(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a.jsonl", model="gpt-4o", cost=0.01, calls=3,
                  answer="The launch date is March 3 in Berlin.")
    b = write_run(tmp_path / "b.jsonl", model="gpt-4o-mini", cost=0.001, calls=2, max_iterations=10,
                  answer="The launch date is March 4 in Berlin \x1b[2J.", status=SpanStatus.BUDGET)
    r = _cli(str(a), str(b))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "\x1b" not in out and "\\x1b[2J" in out                 # piped: plain, nothing raw
    assert "cost (USD)" in out and "$0.0300" in out and "-0.0280 (-93%)" in out
    assert "iterations" in out and "-1 (-33%)" in out
    assert "limit max_iterations  20" in out and "-10 (-50%)" in out
    assert "budget (the maximum number of iterations was reached)" in out
    assert "[-3-]" in out and "{+4+}" in out                        # the differing words, marked
    r = _cli(str(a), str(b), "--json")
    doc = json.loads(r.stdout)
    assert doc["delta"]["iterations"] == -1 and doc["b"]["status"] == "budget"
    assert {"op": "replace", "a": "3", "b": "4"} in doc["answer_diff"]
    r = _cli(str(a), str(tmp_path / "none.jsonl"))
    assert r.returncode == 2 and "no such file" in r.stderr
