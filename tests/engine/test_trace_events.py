"""How many trace events a run writes: a quick reply or cell output ends its span in one event.

Every event is JSON-encoded, written and flushed on the engine's thread while the next request
waits (and 256 of them per sub-call kind in a fan-out), so the loop avoids events that carry
nothing the end event could not: a streamed reply or a cell's output that arrived within one
coalescing period travels in its span's end event, not in an append just before it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlm_desktop.core.trace import Attr, EventType, SpanKind, Trace, TraceWriter, read_trace
from tests.engine.conftest import make_config, make_provider, route, run
from tests.fakeserver import FakeOpenAI, Reply

CELL = "```repl\nprint('forty-two')\nx = llm_query('what is six times seven?')\n```"


def test_a_quick_reply_and_cell_output_end_their_spans_in_one_event(fake_openai: FakeOpenAI,
                                                                      tmp_path: Path) -> None:
    fake_openai.handler = route([CELL, "FINAL(42)"], sub=lambda r: Reply(text="42"))
    trace = Trace({})
    events: dict[str, list[Any]] = {}
    trace.subscribe(lambda ev, span: events.setdefault(span.id, []).append(ev))
    path = tmp_path / "t.jsonl"
    writer = TraceWriter(path, {}).attach(trace)
    try:
        res, _ = run(make_config(), "ctx", make_provider(fake_openai), trace=trace)
    finally:
        writer.close()
    assert res.status == "ok" and res.answer == "42"
    calls = [s for s in trace if s.kind == SpanKind.LLM_CALL]
    cells = [s for s in trace if s.kind == SpanKind.CODE_CELL]
    assert len(calls) == 3 and len(cells) == 1
    for span in [*calls, *cells]:
        kinds = [ev.type for ev in events[span.id]]
        assert kinds == [EventType.STARTED, EventType.ENDED], (span.name, kinds)
    # the end event carries the text: the span, live and read back from the file, is complete
    read = {s.id: s for s in read_trace(path)}
    assert [c.attributes[Attr.RESPONSE] for c in calls] == [CELL, "42", "FINAL(42)"]
    assert cells[0].attributes[Attr.STDOUT] == "forty-two\n"
    for span in [*calls, *cells]:
        assert read[span.id].attributes == span.attributes


def test_a_slow_reply_still_streams_live_and_ends_without_repeating_itself(
        fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    text = "x = 1\n" * 40
    fake_openai.handler = route([Reply(text=f"```repl\n{text}```", chunk_size=8, chunk_delay=0.02),
                                 "FINAL(done)"])
    trace = Trace({})
    events: list[Any] = []
    trace.subscribe(lambda ev, span: events.append(ev))
    res, _ = run(make_config(), "ctx", make_provider(fake_openai), trace=trace)
    assert res.answer == "done"
    first = next(s for s in trace if s.kind == SpanKind.LLM_CALL)
    mine = [ev for ev in events if ev.span_id == first.id]
    appended = "".join(ev.append[Attr.RESPONSE] for ev in mine if ev.append)
    assert appended == f"```repl\n{text}```" and len([ev for ev in mine if ev.append]) >= 2
    assert Attr.RESPONSE not in (mine[-1].attributes or {})          # not sent twice
    assert first.attributes[Attr.RESPONSE] == f"```repl\n{text}```"
