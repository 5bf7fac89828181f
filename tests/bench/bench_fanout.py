"""Benchmark: sub-call fan-out — 256 ``llm_query_batched`` prompts at concurrency 32, 200 ms each.

``run(args) -> dict`` runs a real RLM (real loop, real REPL process, real HTTP) whose first cell
sends 256 prompts through ``llm_query_batched`` to a scripted server (tests/fakeserver.py, run in a
process of its own by tests/bench/serve.py, as a real provider is) that answers every chat request
after 200 ms. With ``batch_concurrency`` 32 (and the provider's own
concurrency at 32 too), the ideal is 256 / 32 = 8 rounds × 0.2 s = 1.6 s; the figure is the cell's
duration from the trace (the root model's own calls are not in it), with the trace written to a
file as the app and the CLI do. Goal: ≤ 1.15× the ideal.
Run alone: ``python -m tests.bench.bench_fanout [--prompts N] [--concurrency K] [--latency S]``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_desktop.core.config import ProviderConfig, RunConfig, RunLimits, SandboxLimits
from rlm_desktop.core.trace import SpanKind, Trace, TraceWriter
from rlm_desktop.engine.providers import aclose_clients
from rlm_desktop.engine.run import run_rlm
from tests.bench.serve import ScriptedServer

GOAL_X = 1.15


def _one(base_url: str, prompts: int, concurrency: int) -> tuple[float, float, int]:
    """(cell seconds, whole run seconds, good answers the cell counted)."""
    provider = ProviderConfig(id="bench", name="bench", base_url=base_url, api_key="bench-key",
                              root_model="r", sub_model="s", max_retries=0, concurrency=concurrency)
    config = RunConfig(query="fan out", root_model="r", sub_model="s",
                       limits=RunLimits(max_iterations=4, budget_usd=None, batch_concurrency=concurrency,
                                        max_sub_calls=prompts + 10),
                       sandbox=SandboxLimits(allow_weak=True))
    trace = Trace({})
    tmp = tempfile.TemporaryDirectory(prefix="rlm-bench-fanout-")
    writer = TraceWriter(Path(tmp.name) / "run.jsonl", {"bench": "fanout"}).attach(trace)

    async def go() -> tuple[float, str]:
        t0 = time.perf_counter()
        try:
            res = await run_rlm(config, "fan-out context", provider=provider, trace=trace)
        finally:
            await aclose_clients()
        return time.perf_counter() - t0, str(res.answer)

    try:
        total, answer = asyncio.run(go())
    finally:
        writer.close()
        tmp.cleanup()
    cells = [s for s in trace.spans.values() if s.kind == SpanKind.CODE_CELL]
    first = min(cells, key=lambda s: s.start)
    return (first.duration or 0.0), total, int(answer) if answer.isdigit() else -1


def run(args: Any = None) -> dict[str, Any]:
    prompts = int(getattr(args, "prompts", None) or 256)
    concurrency = int(getattr(args, "concurrency", None) or 32)
    latency = float(getattr(args, "latency", None) or 0.2)
    repeat = int(getattr(args, "repeat", None) or 3)
    ideal = math.ceil(prompts / concurrency) * latency
    cell_s: list[float] = []
    with ScriptedServer(f"fanout:{prompts}", latency) as srv:
        for _ in range(repeat):
            cell, _total, answers = _one(srv.url, prompts, concurrency)
            if answers != prompts:
                raise AssertionError(f"the cell got {answers} good answers of {prompts}")
            cell_s.append(cell)
    median = statistics.median(cell_s)
    return {
        "prompts": prompts,
        "concurrency": concurrency,
        "latency_s": latency,
        "ideal_s": round(ideal, 3),
        "cell_s_median": round(median, 3),
        "cell_s_min": round(min(cell_s), 3),
        "cell_s_max": round(max(cell_s), 3),
        "ratio_to_ideal_median": round(median / ideal, 3),
        "goal_ratio": GOAL_X,
        "runs": repeat,
        "ok": median <= GOAL_X * ideal,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=3)
    print(run(ap.parse_args()))
