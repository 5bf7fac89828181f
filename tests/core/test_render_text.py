"""The terminal renderer: notebook-like iterations, sub-call one-liners, cut output, depth and error
filters, session turns, deep traces without recursion, and nothing from outside driving the terminal."""

from __future__ import annotations

import io
import re
import sys
from typing import Any

import pytest

from rlm_desktop.core.render_text import TextRenderer, _safe, render_trace, use_color
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace
from tests.core.test_otlp_genai import session_trace

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\r\x9b31m\x00"
SGR = re.compile(r"\x1b\[[0-9;]*m")


def hostile_trace(*, lines: int = 3, trace: Trace | None = None) -> Trace:
    tr = trace if trace is not None else Trace({})
    t = 1_700_000_000.0
    run = tr.start_span(SpanKind.RUN, "turn 1", None, {Attr.QUERY: "q" + HOSTILE, Attr.TURN: 1,
                                                       Attr.MODELS: {"root": "m" + HOSTILE, "sub": "s"}}, now=t)
    it = tr.start_span(SpanKind.ITERATION, "iteration 1", run, now=t + 0.1)
    call = tr.start_span(SpanKind.LLM_CALL, "chat m", it, {Attr.MODEL: "m" + HOSTILE}, now=t + 0.2)
    tr.end_span(call, SpanStatus.OK, {
        Attr.RESPONSE: "I will look" + HOSTILE + "\n```repl\nprint('x')\n```\nthen answer.",
        Attr.INPUT_TOKENS: 1200, Attr.OUTPUT_TOKENS: 30, Attr.COST_USD: 0.0042}, now=t + 0.3)
    cell = tr.start_span(SpanKind.CODE_CELL, "cell" + HOSTILE, it, {Attr.CODE: "print('" + HOSTILE + "')"},
                         now=t + 0.4)
    sub = tr.start_span(SpanKind.SUB_CALL, "llm_query_batched[0]", cell,
                        {Attr.PROMPT: "summarise" + HOSTILE, Attr.MODEL: "mini"}, now=t + 0.5)
    c2 = tr.start_span(SpanKind.LLM_CALL, "chat mini", sub, {Attr.MODEL: "mini"}, now=t + 0.5)
    tr.end_span(c2, SpanStatus.OK, {Attr.RESPONSE: "ACME" + HOSTILE, Attr.INPUT_TOKENS: 50,
                                    Attr.OUTPUT_TOKENS: 5, Attr.COST_USD: 0.0001}, now=t + 0.6)
    tr.end_span(sub, SpanStatus.OK, now=t + 0.6)
    memo = tr.start_span(SpanKind.SUB_CALL, "llm_query_batched[1]", cell,
                         {Attr.PROMPT: "again", Attr.MODEL: "mini", Attr.CACHE_HIT: True,
                          Attr.RESPONSE: "ACME"}, now=t + 0.6)
    tr.end_span(memo, SpanStatus.OK, now=t + 0.6)
    tr.update_span(cell, append={Attr.STDOUT: "".join(f"line {i}{HOSTILE}\n" for i in range(lines))})
    tr.end_span(cell, SpanStatus.OK, now=t + 0.7)
    fin = tr.start_span(SpanKind.FINAL, "final", it, {Attr.ANSWER: "ACME" + HOSTILE}, now=t + 0.8)
    tr.end_span(fin, SpanStatus.OK, now=t + 0.8)
    tr.end_span(it, SpanStatus.OK, now=t + 0.9)
    tr.end_span(run, SpanStatus.OK, {Attr.STOP_REASON: "final"}, now=t + 1.0)
    return tr


def render(tr: Trace, **kw: Any) -> str:
    out = io.StringIO()
    render_trace(tr, out.write, **kw)
    return out.getvalue()


def test_control_characters_from_outside_never_reach_the_terminal() -> None:
    assert _safe("a\x1b[2Jb\tc\nd\r\n\x9b\x7f") == "a\\x1b[2Jb\tc\nd\n\\x9b\\x7f"
    tr = hostile_trace()
    plain = render(tr)
    for ch in ("\x1b", "\x07", "\r", "\x9b", "\x00"):
        assert ch not in plain
    assert "\\x1b]0;pwned\\x07" in plain                  # shown, as visible text
    colored = render(tr, color=True)
    assert "\x1b[" in colored                             # our colours are there …
    assert "\x1b" not in SGR.sub("", colored)             # … and nothing but colours
    assert "\x9b" not in colored and "\x07" not in colored


def test_iteration_as_a_cell_with_sub_call_one_liners() -> None:
    text = render(hostile_trace())
    assert "══ turn 1: q" in text and "── iteration 1 " in text
    assert "I will look" in text and "then answer." in text and "```" not in text  # code shown as the cell
    code_at = text.index("│ print(")
    first_sub = text.index("↳ llm_query_batched[0] · mini · 50 in / 5 out tokens · $0.0001")
    assert code_at < first_sub < text.index("line 0")      # code, sub-calls, then the output
    assert "↳ llm_query_batched[1] · mini · cached (memo: no model call)" in text
    assert "1,200 in / 30 out tokens · $0.0042" in text
    assert "✔ final answer:" in text
    assert re.search(r"══ ok · 1 iterations · 2 sub-calls · 1,250 in / 35 out tokens · \$0\.0043", text)


def test_long_output_is_cut_with_a_note() -> None:
    text = render(hostile_trace(lines=100), output_lines=5)
    assert "line 4" in text and "line 5" not in text
    assert "… 95 more lines" in text


def nested_trace(levels: int) -> Trace:
    """A run whose cell calls rlm_query whose run's cell calls rlm_query … ``levels`` deep."""
    tr = Trace({})
    t = 1_700_000_000.0
    parent = None
    spans = []
    for d in range(levels):
        run = tr.start_span(SpanKind.RUN, "run", parent, {Attr.QUERY: f"level {d}", Attr.DEPTH: d}, now=t)
        it = tr.start_span(SpanKind.ITERATION, "iteration 1", run, {Attr.DEPTH: d}, now=t)
        call = tr.start_span(SpanKind.LLM_CALL, "chat m", it, {Attr.MODEL: "m", Attr.DEPTH: d}, now=t)
        tr.end_span(call, SpanStatus.OK, {Attr.RESPONSE: f"thinking at {d}", Attr.INPUT_TOKENS: 10,
                                          Attr.OUTPUT_TOKENS: 1, Attr.COST_USD: 0.001}, now=t)
        cell = tr.start_span(SpanKind.CODE_CELL, "cell", it, {Attr.CODE: "rlm_query('x')", Attr.DEPTH: d},
                             now=t)
        parent = tr.start_span(SpanKind.SUB_CALL, "rlm_query", cell, {Attr.PROMPT: "x", Attr.DEPTH: d + 1},
                               now=t)
        spans += [parent, cell, it, run]
    deepest = tr.get(parent)
    assert deepest is not None
    bad = tr.start_span(SpanKind.RUN, "run", parent, {Attr.QUERY: "bottom", Attr.DEPTH: levels}, now=t)
    tr.end_span(bad, SpanStatus.ERROR, {Attr.ERROR: "the sandbox failed at the bottom"}, now=t + 1)
    for sid in spans:
        tr.end_span(sid, SpanStatus.OK, now=t + 1)
    return tr


def test_depth_and_errors_filters() -> None:
    tr = nested_trace(3)
    full = render(tr)
    assert "▸ nested run (depth 1): level 1" in full and "thinking at 2" in full
    top = render(tr, max_depth=0)
    assert "thinking at 0" in top and "↳ rlm_query" in top
    assert "nested run" not in top and "thinking at 1" not in top
    one = render(tr, max_depth=1)
    assert "thinking at 1" in one and "thinking at 2" not in one
    errors = render(tr, errors_only=True)
    assert "the sandbox failed at the bottom" in errors
    assert "thinking at" not in errors                  # the model calls on the way had no problem
    assert "no errors" in render(hostile_trace(), errors_only=True)


def test_a_deep_trace_renders_without_recursion() -> None:
    levels = sys.getrecursionlimit() + 100
    text = render(nested_trace(levels))
    assert f"level {levels - 1}" in text and "the sandbox failed at the bottom" in text


def test_one_turn_of_a_session() -> None:
    tr = session_trace()
    both = render(tr)
    assert "══ turn 1: question 1" in both and "══ turn 2: question 2" in both
    second = render(tr, turn=2)
    assert "turn 2: question 2" in second and "question 1" not in second
    assert render(tr, turn=5) == ""


def test_live_rendering_follows_the_events() -> None:
    recorded: list[Any] = []
    source = Trace({})
    source.subscribe(lambda ev, span: recorded.append(ev))
    hostile_trace(trace=source)
    out = io.StringIO()
    live = Trace({})
    live.subscribe(TextRenderer(out.write))
    for ev in recorded:                     # the events in the order a run emitted them
        live.apply(ev)
    assert out.getvalue() == render(hostile_trace())


@pytest.mark.parametrize(("mode", "env", "tty", "want"), [
    ("auto", {}, True, True), ("auto", {}, False, False), ("auto", {"NO_COLOR": "1"}, True, False),
    ("auto", {"NO_COLOR": ""}, True, True), ("auto", {"TERM": "dumb"}, True, False),
    ("always", {"NO_COLOR": "1"}, False, True), ("never", {}, True, False)])
def test_colour_only_on_a_terminal_and_never_with_no_color(mode: str, env: dict[str, str], tty: bool,
                                                           want: bool) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    assert use_color(mode, Stream(), env) is want


def test_a_cut_trace_says_unfinished_and_no_model_call_rather_than_zero(tmp_path: Any) -> None:
    from tests.core.test_exporters import make_trace

    text = render(make_trace(tmp_path / "cut.jsonl", cut=True), errors_only=True)
    assert "↳ rlm_query · no model call · 100 ms · error" in text        # not "0 in / 0 out · $0.0000"
    assert "(gpt-x · unfinished: no usage recorded · — · incomplete)" in text
    assert text.rstrip().splitlines()[-1].startswith("══ incomplete · 2 iterations")
