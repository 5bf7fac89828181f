"""Benchmark: time to read back a 100,000-span trace file (the GUI must open one in ≤ 2 s overall).

``run(args) -> dict`` generates a realistic trace (iterations, model calls with incremental
messages and streamed responses, code cells with output, batched sub-calls) in a temporary
directory, then reads it several times with :func:`read_trace` and reports the median.
Run alone: ``python -m tests.bench.bench_trace [--spans N] [--repeat K]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter, read_trace

GOAL_S = 2.0


def generate_trace(path: Path, spans: int) -> int:
    """Write a trace of about ``spans`` spans to ``path``; returns the exact span count."""
    trace = Trace()
    writer = TraceWriter(path, {"query": "Which suppliers missed delivery dates in Q3?",
                                "models": {"root": "gpt-4.1", "sub": "gpt-4.1-mini"}}).attach(trace)
    t = 1_700_000_000.0

    def tick() -> float:
        nonlocal t
        t += 0.001
        return t

    try:
        run = trace.start_span(SpanKind.RUN, "run", None, {Attr.QUERY: "Which suppliers…?",
                                                           Attr.DEPTH: 0}, now=tick())
        trace.update_header({"isolation": {"level": "strong"}})
        prev_call: str | None = None
        i = 0
        while spans - 1 - len(trace) >= 3:  # keep one span for the final answer
            i += 1
            it = trace.start_span(SpanKind.ITERATION, f"iteration {i}", run, now=tick())
            msgs = [{"role": "user", "content": f"Output of cell {i - 1}: 12 matches found …"}]
            attrs: dict[str, Any] = {Attr.MODEL: "gpt-4.1", Attr.MESSAGES: msgs,
                                     Attr.MESSAGE_COUNT: 2 * i + 1}
            if prev_call:
                attrs[Attr.HISTORY_FROM] = prev_call
            call = trace.start_span(SpanKind.LLM_CALL, "chat gpt-4.1", it, attrs, now=tick())
            for chunk in ("Let me look ", "at the chunks.\n```repl\n", "res = llm_query_batched(p)\n```"):
                trace.update_span(call, append={Attr.RESPONSE: chunk}, now=tick())
            trace.end_span(call, SpanStatus.OK, {Attr.INPUT_TOKENS: 1200 + i, Attr.OUTPUT_TOKENS: 80,
                                                 Attr.CACHED_TOKENS: 1024, Attr.COST_USD: 0.0031},
                           now=tick())
            prev_call = call
            cell = trace.start_span(SpanKind.CODE_CELL, "cell", it,
                                    {Attr.CODE: "res = llm_query_batched(prompts)\nprint(len(res))"},
                                    now=tick())
            for b in range(min(20, spans - 1 - len(trace))):
                sub = trace.start_span(SpanKind.SUB_CALL, f"llm_query #{b}", cell,
                                       {Attr.MODEL: "gpt-4.1-mini", Attr.BATCH_INDEX: b,
                                        Attr.PROMPT: f"Summarise chunk {b} of document {i}"}, now=tick())
                trace.end_span(sub, SpanStatus.OK, {Attr.RESPONSE: f"Chunk {b}: supplier ACME late 3 days",
                                                    Attr.INPUT_TOKENS: 900, Attr.OUTPUT_TOKENS: 40,
                                                    Attr.COST_USD: 0.0004}, now=tick())
            trace.update_span(cell, append={Attr.STDOUT: "20\n"}, now=tick())
            trace.end_span(cell, SpanStatus.OK, now=tick())
            trace.end_span(it, SpanStatus.OK, now=tick())
        while spans - 1 - len(trace) > 0:  # pad to the exact count with empty iterations
            i += 1
            pad = trace.start_span(SpanKind.ITERATION, f"iteration {i}", run, now=tick())
            trace.end_span(pad, SpanStatus.OK, now=tick())
        fin = trace.start_span(SpanKind.FINAL, "final", run, {Attr.ANSWER: "ACME and Borealis."}, now=tick())
        trace.end_span(fin, SpanStatus.OK, now=tick())
        trace.end_span(run, SpanStatus.OK, now=tick())
    finally:
        writer.close()
    return len(trace)


def run(args: Any = None) -> dict[str, Any]:
    spans = int(getattr(args, "spans", None) or 100_000)
    repeat = int(getattr(args, "repeat", None) or 5)
    with tempfile.TemporaryDirectory(prefix="rlm-bench-trace-") as tmp:
        path = Path(tmp) / "big.rlmtrace.jsonl"
        count = generate_trace(path, spans)
        size = path.stat().st_size
        times: list[float] = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            trace = read_trace(path)
            times.append(time.perf_counter() - t0)
            if len(trace) != count or trace.roots[0].running:
                raise AssertionError(f"read back {len(trace)} spans, expected {count}")
    median = statistics.median(times)
    return {
        "name": "trace_read",
        "spans": count,
        "file_mb": round(size / 1e6, 2),
        "read_s_median": round(median, 3),
        "read_s_min": round(min(times), 3),
        "read_s_max": round(max(times), 3),
        "runs": repeat,
        "goal_s": GOAL_S,
        "ok": median <= GOAL_S,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spans", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    print(run(ap.parse_args()))
