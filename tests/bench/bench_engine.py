"""Benchmark: the engine's own cost per root iteration, against a zero-latency scripted server."""

# run(args) -> dict runs one RLM of N iterations (each reply a trivial cell, the last a FINAL)
# through the real loop, real HTTP (tests/fakeserver.py, no injected latency), a real REPL process
# and a trace written to a temporary JSONL file. Per iteration, the overhead is the iteration span's
# duration minus its model call's duration (the model's latency, here the local HTTP round trip):
# parsing, the cell round trip to the REPL process, the trace and the loop itself.
# Run alone: python -m tests.bench.bench_engine [--iterations N] [--repeat K].

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_desktop.core.config import ProviderConfig, RunConfig, RunLimits, SandboxLimits
from rlm_desktop.core.trace import SpanKind, Trace, TraceWriter
from rlm_desktop.engine.providers import aclose_clients
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


def run(args: Any = None) -> dict[str, Any]:
    iterations = int(getattr(args, "iterations", None) or 30)
    repeat = int(getattr(args, "repeat", None) or 3)
    overhead_ms: list[float] = []
    model_ms: list[float] = []
    iteration_ms: list[float] = []
    cell_ms: list[float] = []
    startup_ms: list[float] = []
    totals: list[float] = []
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
            for it in its[1:]:      # the first iteration includes warm-up (connection, imports)
                call = next(c for c in it.children if c.kind == SpanKind.LLM_CALL)
                cells = [c for c in it.children if c.kind == SpanKind.CODE_CELL]
                overhead_ms.append(((it.duration or 0) - (call.duration or 0)) * 1000)
                model_ms.append((call.duration or 0) * 1000)
                iteration_ms.append((it.duration or 0) * 1000)
                cell_ms.extend((c.duration or 0) * 1000 for c in cells)
    median = statistics.median(overhead_ms)
    return {
        "name": "engine_iteration_overhead",
        "iterations_per_run": iterations,
        "runs": repeat,
        "overhead_ms_median": round(median, 2),
        "overhead_ms_p90": round(statistics.quantiles(overhead_ms, n=10)[-1], 2),
        "iteration_ms_median": round(statistics.median(iteration_ms), 2),
        "cell_roundtrip_ms_median": round(statistics.median(cell_ms), 2),
        "local_model_call_ms_median": round(statistics.median(model_ms), 2),
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
