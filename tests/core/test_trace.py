"""Trace: the evented tree and its JSONL file — round trip, truncation, SIGKILL, linear growth."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from rlm_desktop.core.trace import (
    FORMAT_VERSION,
    Attr,
    EventType,
    Span,
    SpanKind,
    SpanStatus,
    Trace,
    TraceEvent,
    TraceFormatError,
    TraceWriter,
    iter_trace_lines,
    read_trace,
)

ROOT = Path(__file__).resolve().parents[2]


def build_sample(trace: Trace) -> dict[str, str]:
    """A small run with every span kind, streamed appends and a nested sub-run."""
    t = 1000.0
    ids: dict[str, str] = {}
    ids["run"] = trace.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "q?", Attr.DEPTH: 0}, now=t)
    ids["it"] = trace.start_span(SpanKind.ITERATION, "iteration 1", ids["run"], now=t + 1)
    ids["call"] = trace.start_span(SpanKind.LLM_CALL, "chat m", ids["it"],
                                   {Attr.MODEL: "m", Attr.MESSAGES: [{"role": "user", "content": "hi"}]},
                                   now=t + 2)
    trace.update_span(ids["call"], append={Attr.RESPONSE: "Hel"}, now=t + 3)
    trace.update_span(ids["call"], append={Attr.RESPONSE: "lo"}, now=t + 4)
    trace.end_span(ids["call"], SpanStatus.OK, {Attr.INPUT_TOKENS: 10, Attr.OUTPUT_TOKENS: 2,
                                                Attr.COST_USD: None, Attr.COST_KNOWN: False}, now=t + 5)
    ids["cell"] = trace.start_span(SpanKind.CODE_CELL, "cell", ids["it"], {Attr.CODE: "print('<b>')"},
                                   now=t + 6)
    trace.update_span(ids["cell"], append={Attr.STDOUT: "<b>\n"}, now=t + 7)
    ids["sub"] = trace.start_span(SpanKind.SUB_CALL, "rlm_query", ids["cell"], {Attr.PROMPT: "p"}, now=t + 8)
    ids["nested"] = trace.start_span(SpanKind.RUN, "run", ids["sub"], {Attr.DEPTH: 1}, now=t + 9)
    trace.end_span(ids["nested"], SpanStatus.TIMEOUT, {Attr.ERROR: "cell timed out"}, now=t + 10)
    trace.end_span(ids["sub"], SpanStatus.ERROR, {Attr.ERROR: "boom"}, now=t + 11)
    trace.end_span(ids["cell"], SpanStatus.OK, now=t + 12)
    ids["final"] = trace.start_span(SpanKind.FINAL, "final", ids["it"], {Attr.ANSWER: "42"}, now=t + 13)
    trace.end_span(ids["final"], SpanStatus.OK, now=t + 14)
    trace.end_span(ids["it"], SpanStatus.OK, now=t + 15)
    trace.end_span(ids["run"], SpanStatus.BUDGET, {Attr.STOP_REASON: "budget_usd"}, now=t + 16)
    return ids


def snapshot(trace: Trace) -> list[tuple[Any, ...]]:
    return [(s.id, s.parent_id, str(s.kind), s.name, s.start, s.end, s.status, s.attributes, s.index,
             [c.id for c in s.children]) for s in trace]


def write_sample(path: Path) -> tuple[Trace, dict[str, str]]:
    trace = Trace()
    writer = TraceWriter(path, {"query": "q?", "app": "test"}).attach(trace)
    ids = build_sample(trace)
    trace.update_header({"isolation": {"level": "strong"}})
    writer.close()
    return trace, ids


def test_round_trip_rebuilds_the_same_tree(tmp_path: Path) -> None:
    live, ids = write_sample(tmp_path / "t.jsonl")
    back = read_trace(tmp_path / "t.jsonl")
    assert snapshot(back) == snapshot(live)
    assert back.skipped_lines == 0 and back.truncated is False
    assert back.header["format"] == "rlm-trace" and back.header["version"] == FORMAT_VERSION
    assert back.header["query"] == "q?"
    assert back.get(ids["call"]).attributes[Attr.RESPONSE] == "Hello"  # type: ignore[union-attr]
    assert back.get(ids["call"]).attributes[Attr.COST_USD] is None  # type: ignore[union-attr]
    assert back.get(ids["nested"]).status is SpanStatus.TIMEOUT  # type: ignore[union-attr]
    assert back.get(ids["run"]).status is SpanStatus.BUDGET  # type: ignore[union-attr]
    assert all(isinstance(s.kind, SpanKind) for s in back)
    assert not any(s.running for s in back)
    assert back.get(ids["run"]).duration == 16.0  # type: ignore[union-attr]


def test_reader_fast_path_matches_event_by_event_apply(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_sample(path)
    slow = Trace()
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)[1:]
    for d, _raw in iter_trace_lines(lines):
        assert d is not None
        if d["event"] == "header_updated":
            continue
        slow.apply(TraceEvent.from_dict(d))
    assert snapshot(read_trace(path)) == snapshot(slow)


def test_ids_continue_after_reading(tmp_path: Path) -> None:
    write_sample(tmp_path / "t.jsonl")
    back = read_trace(tmp_path / "t.jsonl")
    new = back.start_span(SpanKind.ITERATION, "more", back.roots[0].id)
    assert new not in {s.id for s in back if s.id != new}
    assert len(back) == 8


def test_header_updated_is_merged(tmp_path: Path) -> None:
    write_sample(tmp_path / "t.jsonl")
    lines = (tmp_path / "t.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[-1]) == {"event": "header_updated", "attrs": {"isolation": {"level": "strong"}}}
    back = read_trace(tmp_path / "t.jsonl")
    assert back.header["isolation"] == {"level": "strong"} and back.header["app"] == "test"


def test_truncated_last_line_leaves_spans_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_sample(path)
    data = path.read_bytes()
    # Cut inside the run's span_ended line (the one before the header update).
    lines = data.split(b"\n")
    run_end = next(i for i, ln in enumerate(lines) if b'"budget"' in ln)
    cut = b"\n".join(lines[:run_end]) + b"\n" + lines[run_end][: len(lines[run_end]) // 2]
    path.write_bytes(cut)
    back = read_trace(path)
    assert back.truncated is True
    assert back.skipped_lines == 0
    run = back.roots[0]
    assert run.running and run.status is None
    assert [s.running for s in back].count(True) == 1
    assert "isolation" not in back.header


def test_complete_last_line_without_newline_is_used(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_sample(path)
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    back = read_trace(path)
    assert back.truncated is True  # the writer always ends a line: something cut it short
    assert back.header["isolation"] == {"level": "strong"}


def test_bad_and_unknown_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    write_sample(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("this is not json\n")
        fh.write('{"event":"span_updated","id":"s999","attrs":{"x":1}}\n')        # unknown span
        fh.write('{"event":"span_linked","id":"s1"}\n')                           # unknown event type
        fh.write('{"event":"span_started","id":"s1","parent":null,"kind":"run","name":"dup","t":1}\n')
        fh.write('{"event":"span_ended","id":"s2","t":5,"status":"exploded"}\n')  # unknown status
        fh.write('[1, 2]\n')
        fh.write('{"event":"span_updated","id":"s1","append":{"answer":5}}\n')   # non-text append
        fh.write('{"event":"span_started","id":"x1","parent":"s1","kind":"retrieval","name":"r",'
                 '"t":1,"attrs":{"future_attr":[1,2]}}\n')
        fh.write('{"a":1},{"b":2}\n')                                             # two values, one line
    back = read_trace(path)
    assert back.skipped_lines == 8
    assert back.truncated is False
    assert back.get("s1").name == "run"  # type: ignore[union-attr]
    future = back.get("x1")
    assert future is not None and future.kind == "retrieval" and future.parent is back.get("s1")
    assert future.attributes == {"future_attr": [1, 2]} and future.running


def test_unknown_kind_survives_a_round_trip(tmp_path: Path) -> None:
    trace = Trace()
    writer = TraceWriter(tmp_path / "k.jsonl", {}).attach(trace)
    root = trace.start_span(SpanKind.RUN, "run")
    trace.apply(TraceEvent(EventType.STARTED, "z9", 1.0, parent_id=root, kind="tool_use",  # type: ignore[arg-type]
                           name="future kind"))
    trace.end_span("z9", SpanStatus.OK)
    writer.close()
    back = read_trace(tmp_path / "k.jsonl")
    span = back.get("z9")
    assert span is not None and span.kind == "tool_use" and span.status is SpanStatus.OK


def test_newer_format_version_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({"format": "rlm-trace", "version": FORMAT_VERSION + 1}) + "\n")
    with pytest.raises(TraceFormatError, match=r"version 2; this app reads up to 1\. Update RLM Desktop"):
        read_trace(path)


@pytest.mark.parametrize("content", ["", "hello\n", '{"format": "other", "version": 1}\n', "[1]\n"])
def test_not_a_trace_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(content)
    with pytest.raises(TraceFormatError, match="not an RLM Desktop trace"):
        read_trace(path)


def test_end_open_spans_deepest_first(tmp_path: Path) -> None:
    trace = Trace()
    order: list[str] = []
    trace.subscribe(lambda ev, span: order.append(span.id) if ev.type is EventType.ENDED else None)
    writer = TraceWriter(tmp_path / "c.jsonl", {}).attach(trace)
    run = trace.start_span(SpanKind.RUN, "run")
    it = trace.start_span(SpanKind.ITERATION, "it", run)
    cell = trace.start_span(SpanKind.CODE_CELL, "cell", it)
    done = trace.start_span(SpanKind.FINAL, "f", it)
    trace.end_span(done, SpanStatus.OK)
    assert trace.end_open_spans(SpanStatus.CANCELLED, reason="stopped by the user") == 3
    assert order == [done, cell, it, run]
    writer.close()
    back = read_trace(tmp_path / "c.jsonl")
    assert [s.status for s in back] == [SpanStatus.CANCELLED] * 3 + [SpanStatus.OK]
    assert back.get(cell).attributes[Attr.ERROR] == "stopped by the user"  # type: ignore[union-attr]


def test_listeners_see_every_event_and_can_unsubscribe() -> None:
    trace = Trace()
    seen: list[tuple[EventType, str]] = []
    unsubscribe = trace.subscribe(lambda ev, span: seen.append((ev.type, span.id)))
    sid = trace.start_span(SpanKind.RUN, "run")
    trace.update_span(sid, {"a": 1})
    trace.update_span(sid)  # nothing to say: no event
    unsubscribe()
    trace.end_span(sid, SpanStatus.OK)
    assert seen == [(EventType.STARTED, sid), (EventType.UPDATED, sid)]
    with pytest.raises(ValueError, match="started twice"):
        trace.apply(TraceEvent(EventType.STARTED, sid, 0.0, kind=SpanKind.RUN, name="again"))
    with pytest.raises(KeyError):
        trace.update_span("nope", {"a": 1})


def test_concurrent_writers_produce_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "mt.jsonl"
    writer = TraceWriter(path, {})
    barrier = threading.Barrier(4)

    def work(n: int) -> None:
        barrier.wait()
        for i in range(300):
            writer(TraceEvent(EventType.STARTED, f"t{n}-{i}", float(i), kind=SpanKind.SUB_CALL,
                              name="x" * 200, attributes={Attr.PROMPT: "é" * 100}))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    back = read_trace(path)
    assert len(back) == 1200 and back.skipped_lines == 0


# -- crash safety --------------------------------------------------------------------------------

_WRITER_CHILD = r"""
import sys
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter
trace = Trace()
TraceWriter(sys.argv[1], {"query": "killed mid-run"}).attach(trace)
run = trace.start_span(SpanKind.RUN, "run")
i = 0
while True:
    i += 1
    it = trace.start_span(SpanKind.ITERATION, f"iteration {i}", run)
    call = trace.start_span(SpanKind.LLM_CALL, "chat m", it, {Attr.MODEL: "m"})
    for _ in range(5):
        trace.update_span(call, append={Attr.RESPONSE: "token " * 20})
    trace.end_span(call, SpanStatus.OK)
    trace.end_span(it, SpanStatus.OK)
    if i == 50:
        print("ready", flush=True)   # 50 iterations ended; the parent kills us while we keep writing
"""


def test_sigkilled_writer_leaves_a_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER_CHILD, str(path)], stdout=subprocess.PIPE,
                            text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    back = read_trace(path)
    assert back.header["query"] == "killed mid-run"
    run = back.roots[0]
    assert run.kind is SpanKind.RUN and run.running  # never ended: shown as incomplete
    iterations = run.children
    assert len(iterations) >= 50
    assert all(not it.running for it in iterations[:50])
    assert back.skipped_lines == 0
    # Whatever the kill interrupted stays incomplete, and every ended call has its full response.
    for it in iterations:
        for call in it.children:
            if not call.running:
                assert call.attributes[Attr.RESPONSE] == "token " * 100


# -- linear growth ---------------------------------------------------------------------------------

def _conversation_run(path: Path, iterations: int) -> tuple[Trace, list[str], list[dict[str, str]]]:
    """A root conversation that grows by two messages per iteration, recorded as deltas."""
    trace = Trace()
    writer = TraceWriter(path, {"query": "growth"}).attach(trace)
    run = trace.start_span(SpanKind.RUN, "run")
    history: list[dict[str, str]] = [{"role": "system", "content": "You are an RLM. " * 20}]
    new_since_last = list(history)
    calls: list[str] = []
    for i in range(iterations):
        user = {"role": "user", "content": f"[{i:04}] cell output: " + "lorem ipsum " * 30}
        history.append(user)
        new_since_last.append(user)
        it = trace.start_span(SpanKind.ITERATION, f"iteration {i}", run)
        attrs: dict[str, Any] = {Attr.MODEL: "m", Attr.MESSAGES: new_since_last,
                                 Attr.MESSAGE_COUNT: len(history)}
        if calls:
            attrs[Attr.HISTORY_FROM] = calls[-1]
        call = trace.start_span(SpanKind.LLM_CALL, "chat m", it, attrs)
        reply = f"<{i:04}> ```repl\nprint(context[:100])\n```"
        trace.update_span(call, append={Attr.RESPONSE: reply})
        trace.end_span(call, SpanStatus.OK, {Attr.INPUT_TOKENS: 10 * i, Attr.OUTPUT_TOKENS: 5})
        trace.end_span(it, SpanStatus.OK)
        calls.append(call)
        history.append({"role": "assistant", "content": reply})
        new_since_last = [history[-1]]
    trace.end_span(run, SpanStatus.OK)
    writer.close()
    return trace, calls, history


def test_file_grows_linearly_and_messages_are_not_repeated(tmp_path: Path) -> None:
    small = tmp_path / "n50.jsonl"
    big = tmp_path / "n200.jsonl"
    _conversation_run(small, 50)
    trace, calls, history = _conversation_run(big, 200)
    # Linear: four times the iterations is about four times the bytes (quadratic would be ~16x).
    ratio = big.stat().st_size / small.stat().st_size
    assert 3.5 < ratio < 4.5, ratio
    # Every event is bounded in size, however long the conversation has become.
    text = big.read_text(encoding="utf-8")
    assert max(len(line) for line in text.splitlines()) < 2000
    # Each message appears once in the file.
    for i in (0, 77, 199):
        assert text.count(f"[{i:04}] cell output") == 1
        # A response is stored once as the call's response and once as the next call's new
        # assistant message — never again as history.
        assert text.count(f"<{i:04}> ```repl") == (1 if i == 199 else 2)
    # messages_for rebuilds the full conversation each call sent, live and after reading back.
    back = read_trace(big)
    for t in (trace, back):
        assert t.messages_for(calls[-1]) == history[:-1]
        assert t.messages_for(calls[0]) == history[:2]
        assert len(t.messages_for(calls[99])) == t.get(calls[99]).attributes[Attr.MESSAGE_COUNT]  # type: ignore[union-attr]


def test_messages_for_survives_a_cycle_and_a_missing_link() -> None:
    trace = Trace()
    a = trace.start_span(SpanKind.LLM_CALL, "a", attributes={Attr.MESSAGES: [{"role": "user", "content": "1"}]})
    b = trace.start_span(SpanKind.LLM_CALL, "b", attributes={Attr.MESSAGES: [{"role": "user", "content": "2"}],
                                                            Attr.HISTORY_FROM: a})
    trace.update_span(a, {Attr.HISTORY_FROM: b})  # corrupt: a cycle
    assert [m["content"] for m in trace.messages_for(b)] == ["1", "2"]
    c = trace.start_span(SpanKind.LLM_CALL, "c", attributes={Attr.MESSAGES: [{"role": "user", "content": "3"}],
                                                            Attr.HISTORY_FROM: "gone"})
    assert [m["content"] for m in trace.messages_for(c)] == ["3"]
    assert trace.messages_for("unknown") == []


def test_span_walk_is_depth_first_in_order() -> None:
    trace = Trace()
    ids = build_sample(trace)
    order = [s.id for s in trace]
    assert order == [ids[k] for k in ("run", "it", "call", "cell", "sub", "nested", "final")]
    assert isinstance(trace.get(ids["run"]), Span) and len(trace) == 7


def test_benchmark_generator_and_runner_work_at_small_scale(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tests.bench.bench_trace import generate_trace, run

    for n in (7, 29, 30, 31, 500):
        assert generate_trace(tmp_path / f"g{n}.jsonl", n) == n
        assert len(read_trace(tmp_path / f"g{n}.jsonl")) == n
    result = run(SimpleNamespace(spans=300, repeat=2))
    assert result["spans"] == 300 and result["runs"] == 2 and result["read_s_median"] >= 0


# Every kind of string a trace may be handed: all C0 controls and NUL, DEL and C1 controls, the line
# and paragraph separators, BOM and non-characters, every lone surrogate (a file name's undecodable
# byte, a model's broken escape), astral characters. Lone surrogates are kept apart by "x" so no two
# form a pair (JSON cannot tell a pair from the character it encodes).
ODD = ("".join(map(chr, range(0x00, 0x20))) + "\x7f" + "".join(map(chr, range(0x80, 0xA0)))
       + "\u2028\u2029\ufeff\ufffe\uffff\U0010ffff😀é"
       + "x".join(map(chr, range(0xD800, 0xE000))) + "x")


def test_the_writer_writes_any_string_and_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    trace = Trace({"query": ODD, "documents": {"report-\udcff.txt": ODD}})
    w = TraceWriter(path, trace.header).attach(trace)
    run = trace.start_span(SpanKind.RUN, "run " + ODD, None, {Attr.QUERY: ODD, ODD: [ODD, {ODD: ODD}]})
    call = trace.start_span(SpanKind.LLM_CALL, ODD, run, {Attr.MESSAGES: [{"role": "user", "content": ODD}]})
    trace.update_span(call, append={Attr.RESPONSE: "a\ud83d"})     # a pair cut across two chunks
    trace.update_span(call, append={Attr.RESPONSE: "\ude00b" + ODD})
    trace.update_header({"note": ODD})
    trace.end_span(call, SpanStatus.OK, {Attr.STDOUT: ODD})
    trace.end_span(run, SpanStatus.OK)
    w.close()

    raw = path.read_bytes()
    text = raw.decode("utf-8")     # strict: the file is valid UTF-8
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 8   # header + 7 events
    assert text.splitlines() == lines[:-1]   # no character in it splits a line for other readers
    back = read_trace(path)
    assert back.skipped_lines == 0 and not back.truncated
    assert back.header["query"] == ODD and back.header["note"] == ODD
    assert back.header["documents"] == {"report-\udcff.txt": ODD}
    r = back.spans[run]
    assert r.name == "run " + ODD and r.attributes[Attr.QUERY] == ODD
    assert r.attributes[ODD] == [ODD, {ODD: ODD}]
    c = back.spans[call]
    assert c.name == ODD and c.attributes[Attr.MESSAGES][0]["content"] == ODD
    assert c.attributes[Attr.RESPONSE] == "a\ud83d\ude00b" + ODD
    assert c.attributes[Attr.STDOUT] == ODD and c.status is SpanStatus.OK


def test_plain_text_is_written_as_it_is(tmp_path: Path) -> None:
    # The escapes are for what must be escaped: readable non-ASCII text stays readable in the file.
    path = tmp_path / "plain.jsonl"
    with TraceWriter(path, {"query": "Où est le café ? 😀"}):
        pass
    assert "Où est le café ? 😀" in path.read_text(encoding="utf-8")
