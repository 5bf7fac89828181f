"""Benchmark: one scripted 10-iteration run, ours against the official RLM library.

``run(args) -> dict``: the same scripted server (tests/bench/serve.py ``iterations:10``, in a
process of its own, no added latency) answers each root request with a trivial cell and the 10th
with the end of the run. The figure is the gap between consecutive root requests as the server
sees them: the whole iteration (reply handling, parsing, the cell, the trace, the next request).
Beside it, each run's wall and CPU time in the process that drives it (ours: the host, not the
sandbox worker; theirs: the one process, cells included).
Ours runs through the real loop with the sandbox and a trace file; the official library
(alexzhang13/rlm) runs its ``local`` REPL (cells in-process, no isolation) with its OpenAI client.

The official library is not a dependency: install it in a virtualenv of its own, outside this
repository, and point ``RLM_OFFICIAL_PYTHON`` at that interpreter, e.g.::

    python3.11 -m venv /work/rlm-official/.venv
    /work/rlm-official/.venv/bin/pip install --no-deps rlms && \\
        /work/rlm-official/.venv/bin/pip install openai python-dotenv rich requests
    RLM_OFFICIAL_PYTHON=/work/rlm-official/.venv/bin/python rlm-desktop bench official

Without it only our side is measured. Goal: our gap at most half of theirs.

Beside it, our floor: the same scripted run with nothing but what any iteration of ours must do,
providers.chat (the SDK's streamed request and our reading of it) and one cell in a sandbox, the
conversation growing the same way; no loop, no parsing, no trace. Its gap against ours is what
the loop itself costs; against theirs, the best ratio this design can reach on this machine.
Run alone: ``python -m tests.bench.bench_official [--runs N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_desktop.core.config import ProviderConfig, RunConfig, RunLimits, SandboxLimits
from rlm_desktop.core.trace import Trace, TraceWriter
from rlm_desktop.engine import prompts
from rlm_desktop.engine.providers import aclose_clients, chat
from rlm_desktop.engine.repl import new_repl
from rlm_desktop.engine.run import run_rlm
from tests.bench.serve import ScriptedServer

ITERATIONS = 10
GOAL_X = 0.5


def _gaps(times: list[float], runs: int) -> list[float]:
    """ms between consecutive root requests within each run (runs of ITERATIONS requests)."""
    if len(times) != runs * ITERATIONS:
        raise AssertionError(f"expected {runs * ITERATIONS} root requests, the server saw {len(times)}")
    out = []
    for r in range(runs):
        t = times[r * ITERATIONS:(r + 1) * ITERATIONS]
        out.extend((b - a) * 1000 for a, b in zip(t, t[1:], strict=False))
    return out


def _ours(runs: int) -> tuple[list[float], list[float], list[float]]:
    with ScriptedServer(f"iterations:{ITERATIONS}") as srv, \
            tempfile.TemporaryDirectory(prefix="rlm-bench-official-") as tmp:
        provider = ProviderConfig(id="bench", name="bench", base_url=srv.url, api_key="bench-key",
                                  root_model="r", sub_model="s", max_retries=0)
        config = RunConfig(query="benchmark", root_model="r", sub_model="s",
                           limits=RunLimits(max_iterations=ITERATIONS + 2, budget_usd=None),
                           sandbox=SandboxLimits(allow_weak=True))
        walls = []
        cpus = []
        for k in range(runs + 1):                    # the first run warms up (imports, pool)
            trace = Trace({})
            writer = TraceWriter(Path(tmp) / f"run{k}.jsonl", {"bench": "official"}).attach(trace)

            async def go(trace: Trace = trace) -> str:
                try:
                    res = await run_rlm(config, "benchmark context " * 100, provider=provider,
                                        trace=trace)
                finally:
                    await aclose_clients()
                return str(res.answer)

            t0, c0 = time.perf_counter(), time.process_time()
            try:
                answer = asyncio.run(go())
            finally:
                writer.close()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            if answer != str(ITERATIONS - 1):
                raise AssertionError(f"our run answered {answer!r}")
        times = srv.finish()[ITERATIONS:]
    return _gaps(times, runs), walls[1:], cpus[1:]


def _floor(runs: int) -> list[float]:
    """Gaps of the floor run (see the module docstring): per iteration one providers.chat and one
    cell in a sandbox, the messages grown as our loop grows them, nothing else."""
    context = "benchmark context " * 100
    limits = RunLimits()
    system = prompts.system_prompt(
        prompts.describe_context(context), sub_model="s", depth=0, max_depth=limits.max_depth,
        max_iterations=ITERATIONS + 2, max_output_chars=limits.max_output_chars,
        cell_timeout_s=limits.cell_timeout_s, max_sub_calls=limits.max_sub_calls)

    async def one(provider: ProviderConfig) -> None:
        box = new_repl(SandboxLimits(allow_weak=True), context=context, depth=0,
                       rlm_query_enabled=False)
        await box.start()

        async def no_requests(req: Any) -> None:
            raise RuntimeError("the floor run makes no sub-calls")
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": prompts.first_user_message("benchmark")}]
        try:
            for it in range(1, ITERATIONS + 1):
                res = await chat(provider, "r", list(messages), timeout_s=30)
                code = res.text.split("```repl\n", 1)[1].rsplit("```", 1)[0]
                cell = await box.run_cell(code, timeout_s=30, on_request=no_requests)
                messages.append({"role": "assistant", "content": res.text})
                messages.append({"role": "user", "content": prompts.format_cell_output(
                    1, 1, status=cell.status, stdout=cell.stdout, stderr=cell.stderr,
                    error=cell.error, duration_s=cell.duration_s, max_chars=limits.max_output_chars,
                    restarted=cell.restarted, restart_reason=cell.restart_reason)[0]
                    + "\n\n" + prompts.continue_message("benchmark", it, ITERATIONS + 2)})
        finally:
            await box.close()
            await aclose_clients()

    with ScriptedServer(f"iterations:{ITERATIONS}") as srv:
        provider = ProviderConfig(id="floor", name="floor", base_url=srv.url, api_key="bench-key",
                                  root_model="r", sub_model="s", max_retries=0)
        for _ in range(runs + 1):                    # the first run warms up
            asyncio.run(one(provider))
        times = srv.finish()[ITERATIONS:]
    return _gaps(times, runs)


def _official(python: str, runs: int) -> tuple[list[float], list[float], list[float]]:
    driver = Path(__file__).with_name("official_driver.py")
    with ScriptedServer(f"iterations:{ITERATIONS}:official") as srv:
        out = subprocess.run([python, str(driver), srv.url, str(runs + 1), str(ITERATIONS)],
                             capture_output=True, text=True, timeout=600, cwd=tempfile.gettempdir())
        times = srv.finish()
    if out.returncode != 0:
        raise RuntimeError(f"the official library's run failed: {out.stderr.strip()[-800:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return _gaps(times[ITERATIONS:], runs), res["walls"][1:], res["cpus"][1:]


def run(args: Any = None) -> dict[str, Any]:
    runs = int(getattr(args, "runs", None) or 3)
    rounds = int(getattr(args, "rounds", None) or 3)
    python = os.environ.get("RLM_OFFICIAL_PYTHON")
    ours: list[float] = []
    floor: list[float] = []
    our_walls: list[float] = []
    our_cpus: list[float] = []
    theirs: list[float] = []
    their_walls: list[float] = []
    their_cpus: list[float] = []
    # Rounds alternate the two sides, so both see the same load on a shared machine.
    for _ in range(rounds):
        gaps, walls, cpus = _ours(runs)
        ours += gaps
        our_walls += walls
        our_cpus += cpus
        floor += _floor(runs)
        if python:
            gaps, walls, cpus = _official(python, runs)
            theirs += gaps
            their_walls += walls
            their_cpus += cpus
    fig: dict[str, Any] = {
        "iterations": ITERATIONS,
        "runs": runs * rounds,
        "ours_root_gap_ms_median": round(statistics.median(ours), 2),
        "ours_root_gap_ms_p10": round(statistics.quantiles(ours, n=10)[0], 2),
        "ours_root_gap_ms_p90": round(statistics.quantiles(ours, n=10)[-1], 2),
        "ours_run_ms_median": round(statistics.median(our_walls) * 1000, 1),
        "ours_run_cpu_ms_median": round(statistics.median(our_cpus) * 1000, 1),
        "floor_root_gap_ms_median": round(statistics.median(floor), 2),
        "ours_x_floor": round(statistics.median(ours) / statistics.median(floor), 2),
    }
    if not python:
        fig["official"] = "not measured: set RLM_OFFICIAL_PYTHON (see the module's docstring)"
        return fig
    ratio = statistics.median(ours) / statistics.median(theirs)
    fig.update({
        "official_root_gap_ms_median": round(statistics.median(theirs), 2),
        "official_root_gap_ms_p10": round(statistics.quantiles(theirs, n=10)[0], 2),
        "official_root_gap_ms_p90": round(statistics.quantiles(theirs, n=10)[-1], 2),
        "official_run_ms_median": round(statistics.median(their_walls) * 1000, 1),
        "official_run_cpu_ms_median": round(statistics.median(their_cpus) * 1000, 1),
        "gap_ours_x_official": round(ratio, 2),
        "floor_x_official": round(statistics.median(floor) / statistics.median(theirs), 2),
        "goal_x": GOAL_X,
        "ok": ratio <= GOAL_X,
    })
    return fig


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3, help="runs per side per round")
    ap.add_argument("--rounds", type=int, default=3)
    print(run(ap.parse_args()))
