"""Benchmark: sub-call fan-out — 256 ``llm_query_batched`` prompts at concurrency 32, 200 ms each.

``run(args) -> dict`` runs a real RLM (real loop, real REPL process, real HTTP) whose first cell
sends 256 prompts through ``llm_query_batched`` to a scripted server (tests/fakeserver.py, run in a
process of its own by tests/bench/serve.py, as a real provider is) that answers every chat request
after 200 ms. With ``batch_concurrency`` 32 (and the provider's own
concurrency at 32 too), the ideal is 256 / 32 = 8 rounds × 0.2 s = 1.6 s; the figure is the cell's
duration from the trace (the root model's own calls are not in it), with the trace written to a
file as the app and the CLI do. Beside it, the floor: the same 256 prompts sent straight through
the plain AsyncOpenAI client, 32 at a time, from the benchmark's process. Goal: ≤ 1.15× the ideal.
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

from openai import AsyncOpenAI

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


def _plain(base_url: str, prompts: int, concurrency: int) -> float:
    """The floor: the same prompts straight through the plain AsyncOpenAI client (streamed), 32 at
    a time, from this process (no loop, no REPL, no trace). Wall seconds."""
    async def go() -> float:
        client = AsyncOpenAI(base_url=base_url, api_key="bench-key", max_retries=0)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> str:
            async with sem:
                s = await client.chat.completions.create(
                    model="s", messages=[{"role": "user", "content": f"item {i}"}], stream=True,
                    stream_options={"include_usage": True})
                return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

        t0 = time.perf_counter()
        try:
            answers = await asyncio.gather(*(one(i) for i in range(prompts)))
        finally:
            await client.close()
        if sum(1 for a in answers if a.startswith("ok item")) != prompts:
            raise AssertionError("the plain fan-out got wrong answers")
        return time.perf_counter() - t0

    return asyncio.run(go())


def run(args: Any = None) -> dict[str, Any]:
    prompts = int(getattr(args, "prompts", None) or 256)
    concurrency = int(getattr(args, "concurrency", None) or 32)
    latency = float(getattr(args, "latency", None) or 0.2)
    repeat = int(getattr(args, "repeat", None) or 3)
    ideal = math.ceil(prompts / concurrency) * latency
    cell_s: list[float] = []
    plain_s: list[float] = []
    with ScriptedServer(f"fanout:{prompts}", latency) as srv:
        for _ in range(repeat):         # alternate, so both see the same load
            cell, _total, answers = _one(srv.url, prompts, concurrency)
            if answers != prompts:
                raise AssertionError(f"the cell got {answers} good answers of {prompts}")
            cell_s.append(cell)
            plain_s.append(_plain(srv.url, prompts, concurrency))
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
        "plain_asyncopenai_s_median": round(statistics.median(plain_s), 3),
        "plain_ratio_to_ideal_median": round(statistics.median(plain_s) / ideal, 3),
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
