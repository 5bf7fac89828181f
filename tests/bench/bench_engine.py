"""Benchmark: the engine's own cost per root iteration, against a zero-latency scripted server."""

# run(args) -> dict runs one RLM of N iterations (each reply a trivial cell, the last a FINAL)
# through the real loop, real HTTP (tests/fakeserver.py, no injected latency), a real REPL process
# and a trace written to a temporary JSONL file. Per iteration, the overhead is the iteration span's
# duration minus its model call's duration (the model's latency, here the local HTTP round trip):
# parsing, the cell round trip to the REPL process, the trace and the loop itself. Beside it, the
# floor (see _floor): the run's root requests replayed with the plain AsyncOpenAI client (streamed,
# same server, same reply), with providers.chat alone, and folded into two messages of the same
# size; and the gap between consecutive root requests as the server sees them (the whole
# iteration, the figure compared with other RLM implementations).
# Run alone: python -m tests.bench.bench_engine [--iterations N] [--repeat K].

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from rlm_desktop.core.config import ProviderConfig, RunConfig, RunLimits, SandboxLimits
from rlm_desktop.core.trace import SpanKind, Trace, TraceWriter
from rlm_desktop.engine.providers import aclose_clients, chat
from rlm_desktop.engine.run import run_rlm
from tests.fakeserver import FakeOpenAI, Request

GOAL_MS = 50.0    # per-iteration engine overhead we aim to stay under (excluding the model)


def _one_run(srv: FakeOpenAI, iterations: int, trace_path: Path) -> tuple[Trace, float, str]:
    step = {"n": 0}

    def handler(req: Request) -> str:
        if not req.system:
            return "sub"
        step["n"] += 1
        if step["n"] >= iterations:
            return "```repl\nFINAL(str(x))\n```"
        return f"```repl\nx = {step['n']}\nprint(x)\n```"

    srv.handler = handler
    provider = ProviderConfig(id="bench", name="bench", base_url=srv.base_url, api_key="bench-key",
                              root_model="r", sub_model="s", max_retries=0)
    config = RunConfig(query="benchmark", root_model="r", sub_model="s",
                       limits=RunLimits(max_iterations=iterations + 1, budget_usd=None),
                       sandbox=SandboxLimits(allow_weak=True))
    trace = Trace({})
    writer = TraceWriter(trace_path, {"bench": "engine"}).attach(trace)

    async def go() -> tuple[float, str]:
        t0 = time.perf_counter()
        try:
            res = await run_rlm(config, "benchmark context " * 100, provider=provider, trace=trace)
        finally:
            await aclose_clients()
        return time.perf_counter() - t0, str((res.isolation or {}).get("level"))

    try:
        total, level = asyncio.run(go())
    finally:
        writer.close()
    return trace, total, level


def _floor(srv: FakeOpenAI, payloads: list[list[dict[str, Any]]], reply: str,
           passes: int) -> dict[str, float]:
    """The same root requests as a run made (``payloads``, replayed in order ``passes`` times) and
    the same reply, on the same server, without the engine: by the plain SDK (AsyncOpenAI,
    streamed), by providers.chat alone, and by the plain SDK with each payload folded into two
    messages of the same size (the transport floor: the SDK's per-message work is left out).
    Median wall ms and CPU ms (this process) per request. Each kind runs in a block of its own:
    alternating two connections makes every request several ms slower here (each connection idle
    half the time), which the engine, with one pooled connection, never does."""
    srv.handler = lambda req: reply
    provider = ProviderConfig(id="floor", name="floor", base_url=srv.base_url, api_key="bench-key",
                              root_model="r", sub_model="s", max_retries=0)
    folded = [[{"role": "system", "content": str(p[0].get("content"))},
               {"role": "user", "content": "\n".join(str(m.get("content")) for m in p[1:])}]
              for p in payloads]

    async def plain_block(client: AsyncOpenAI, msgs: list[list[dict[str, Any]]]) -> list[float]:
        out = []
        for messages in msgs * passes:
            t0 = time.perf_counter()
            s = await client.chat.completions.create(
                model="r", messages=messages, stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True})
            text = "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
            out.append((time.perf_counter() - t0) * 1000)
            if text != reply:
                raise AssertionError(f"floor call answered {text!r}")
        return out

    async def chat_block() -> list[float]:
        out = []
        for messages in payloads * passes:
            t0 = time.perf_counter()
            text = (await chat(provider, "r", messages, timeout_s=30, on_delta=lambda d: None)).text
            out.append((time.perf_counter() - t0) * 1000)
            if text != reply:
                raise AssertionError(f"floor call answered {text!r}")
        return out

    async def go() -> dict[str, float]:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="bench-key", max_retries=0)
        figures: dict[str, float] = {}
        try:
            await plain_block(client, folded[:5])       # warm-up: connection, imports
            await chat_block()
            for name, block in (("plain", lambda: plain_block(client, payloads)),
                                ("folded", lambda: plain_block(client, folded)), ("chat", chat_block)):
                c0 = time.process_time()
                times = await block()
                figures[name] = statistics.median(times)
                figures[name + "_cpu"] = (time.process_time() - c0) * 1000 / len(times)
        finally:
            await client.close()
            await aclose_clients()
        return figures

    return asyncio.run(go())


def run(args: Any = None) -> dict[str, Any]:
    iterations = int(getattr(args, "iterations", None) or 30)
    repeat = int(getattr(args, "repeat", None) or 3)
    overhead_ms: list[float] = []
    model_ms: list[float] = []
    iteration_ms: list[float] = []
    cell_ms: list[float] = []
    startup_ms: list[float] = []
    totals: list[float] = []
    gaps_ms: list[float] = []
    level = "?"
    with tempfile.TemporaryDirectory(prefix="rlm-bench-engine-") as tmp, FakeOpenAI() as srv:
        for k in range(repeat):
            trace, total, level = _one_run(srv, iterations, Path(tmp) / f"run{k}.jsonl")
            totals.append(total)
            run_span = trace.roots[0]
            its = [s for s in run_span.children if s.kind == SpanKind.ITERATION]
            if len(its) != iterations:
                raise AssertionError(f"expected {iterations} iterations, the run made {len(its)}")
            startup_ms.append((its[0].start - run_span.start) * 1000)
            roots = [r.time for r in srv.chat_requests[-iterations:]]
            gaps_ms.extend((b - a) * 1000 for a, b in zip(roots[1:], roots[2:], strict=False))
            for it in its[1:]:      # the first iteration includes warm-up (connection, imports)
                call = next(c for c in it.children if c.kind == SpanKind.LLM_CALL)
                cells = [c for c in it.children if c.kind == SpanKind.CODE_CELL]
                overhead_ms.append(((it.duration or 0) - (call.duration or 0)) * 1000)
                model_ms.append((call.duration or 0) * 1000)
                iteration_ms.append((it.duration or 0) * 1000)
                cell_ms.extend((c.duration or 0) * 1000 for c in cells)
        payloads = [r.messages for r in srv.chat_requests[-iterations:]]   # the last run's roots
        floor = _floor(srv, payloads, "```repl\nx = 5\nprint(x)\n```", 3)
    median = statistics.median(overhead_ms)
    call = statistics.median(model_ms)
    return {
        "name": "engine_iteration_overhead",
        "iterations_per_run": iterations,
        "runs": repeat,
        "overhead_ms_median": round(median, 2),
        "overhead_ms_p90": round(statistics.quantiles(overhead_ms, n=10)[-1], 2),
        "iteration_ms_median": round(statistics.median(iteration_ms), 2),
        "cell_roundtrip_ms_median": round(statistics.median(cell_ms), 2),
        "local_model_call_ms_median": round(call, 2),
        "plain_asyncopenai_round_trip_ms_median": round(floor["plain"], 2),
        "plain_asyncopenai_cpu_ms": round(floor["plain_cpu"], 2),
        "plain_asyncopenai_2_messages_round_trip_ms_median": round(floor["folded"], 2),
        "plain_asyncopenai_2_messages_cpu_ms": round(floor["folded_cpu"], 2),
        "providers_chat_round_trip_ms_median": round(floor["chat"], 2),
        "providers_chat_cpu_ms": round(floor["chat_cpu"], 2),
        "model_call_x_plain_2_messages": round(call / floor["folded"], 2),
        "iteration_x_plain_2_messages": round(statistics.median(iteration_ms) / floor["folded"], 2),
        "root_request_gap_ms_median": round(statistics.median(gaps_ms), 2),
        "root_request_gap_ms_p90": round(statistics.quantiles(gaps_ms, n=10)[-1], 2),
        "run_startup_ms_median": round(statistics.median(startup_ms), 1),
        "run_total_s_median": round(statistics.median(totals), 3),
        "sandbox_isolation": level,
        "goal_ms": GOAL_MS,
        "ok": median <= GOAL_MS,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    print(run(ap.parse_args()))
