"""Benchmark: sandbox cold start and trivial-cell round trip, with every isolation layer on.

``run(args) -> dict``: median time from ``Sandbox.start()`` until the first cell can run
(namespaces, tmpfs scratch, Landlock, seccomp all applied and measured from the host), and the
median round trip of ``run_cell("pass")`` over many calls. Goals: ≤ 25 ms and ≤ 100 µs on a 2-core
machine (a bare ``python -I -S -c pass`` spawn is measured too, for comparison).
Run alone: ``python -m tests.bench.bench_sandbox [--starts N] [--cells N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

from rlm_desktop.core.config import SandboxLimits
from rlm_desktop.sandbox.api import SubRequest
from rlm_desktop.sandbox.host import Sandbox

COLD_START_GOAL_MS = 25.0
ROUND_TRIP_GOAL_US = 100.0


async def _noop(req: SubRequest) -> str:
    return ""


async def _measure(starts: int, cells: int) -> dict[str, Any]:
    limits = SandboxLimits(allow_weak=True)        # measure whatever this machine offers; "level" says it
    start_ms: list[float] = []
    level = "?"
    for _ in range(starts):
        t0 = time.perf_counter()
        sb = Sandbox(limits, context="bench context")
        report = await sb.start()
        start_ms.append((time.perf_counter() - t0) * 1000)
        level = report.level.value
        await sb.close()
    sb = Sandbox(limits, context="bench context")
    await sb.start()
    try:
        for _ in range(200):                       # warm-up
            await sb.run_cell("pass", timeout_s=10, on_request=_noop)
        rt_us: list[float] = []
        for _ in range(cells):
            t0 = time.perf_counter_ns()
            r = await sb.run_cell("pass", timeout_s=10, on_request=_noop)
            rt_us.append((time.perf_counter_ns() - t0) / 1000)
            if not r.ok:
                raise RuntimeError(f"trivial cell failed: {r.error}")
        t0 = time.perf_counter()
        r = await sb.run_cell("x = llm_query('q')", timeout_s=10, on_request=_noop)
        sub_call_us = (time.perf_counter() - t0) * 1e6
    finally:
        await sb.close()
    return {"level": level, "start_ms": start_ms, "rt_us": rt_us, "sub_call_us": sub_call_us}


def _bare_spawn_ms(n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run(args: Any = None) -> dict[str, Any]:
    starts = int(getattr(args, "starts", None) or 40)
    cells = int(getattr(args, "cells", None) or 5000)
    m = asyncio.run(_measure(starts, cells))
    cold = statistics.median(m["start_ms"])
    rt = statistics.median(m["rt_us"])
    return {
        "level": m["level"],
        "cold_start_ms_median": round(cold, 2),
        "cold_start_ms_p90": round(sorted(m["start_ms"])[int(0.9 * (len(m["start_ms"]) - 1))], 2),
        "cold_start_goal_ms": COLD_START_GOAL_MS,
        "round_trip_us_median": round(rt, 1),
        "round_trip_us_p90": round(sorted(m["rt_us"])[int(0.9 * (len(m["rt_us"]) - 1))], 1),
        "round_trip_goal_us": ROUND_TRIP_GOAL_US,
        "llm_query_cell_us": round(m["sub_call_us"], 1),
        "bare_python_spawn_ms_median": round(_bare_spawn_ms(20), 2),
        "starts": starts,
        "cells": cells,
        "ok": cold <= COLD_START_GOAL_MS and rt <= ROUND_TRIP_GOAL_US and m["level"] == "strong",
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--starts", type=int, default=40)
    ap.add_argument("--cells", type=int, default=5000)
    print(run(ap.parse_args()))
