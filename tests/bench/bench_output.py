"""Benchmark: a cell printing 1 MB — how long until the output is in the trace and fed back.

``run(args) -> dict`` runs a real RLM (real loop, REPL process, HTTP to tests/fakeserver.py with no
added latency, trace written to a file) whose cells alternate: one prints 1,000,000 bytes (999,999
characters and a newline: exactly the default output cap, so nothing is cut), the next prints one
short line. Per cell: ``cell`` is the code-cell span (from the cell's start until its output is in
the trace), ``fed back`` is from the cell's start until the next root request, carrying the output,
reaches the server. The short cell is the baseline; the difference is what 1 MB costs.
Run alone: ``python -m tests.bench.bench_output [--cells N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_desktop.core.config import ProviderConfig, RunConfig, RunLimits, SandboxLimits
from rlm_desktop.core.trace import Attr, SpanKind, Trace, TraceWriter
from rlm_desktop.engine.providers import aclose_clients
from rlm_desktop.engine.run import run_rlm
from tests.fakeserver import FakeOpenAI, Request

BIG = 1_000_000


def run(args: Any = None) -> dict[str, Any]:
    cells = int(getattr(args, "cells", None) or 10)     # cells of each kind
    root_times: list[float] = []

    def handler(req: Request) -> str:
        if not req.system:
            return "sub"
        root_times.append(time.time())
        n = len(root_times)
        if n > 2 * cells:
            return "```repl\nFINAL('done')\n```"
        if n % 2:
            return f"```repl\nprint('x' * {BIG - 1})\n```"
        return "```repl\nprint('short')\n```"

    with tempfile.TemporaryDirectory(prefix="rlm-bench-output-") as tmp, FakeOpenAI() as srv:
        srv.handler = handler
        provider = ProviderConfig(id="bench", name="bench", base_url=srv.base_url, api_key="bench-key",
                                  root_model="r", sub_model="s", max_retries=0)
        config = RunConfig(query="print a lot", root_model="r", sub_model="s",
                           limits=RunLimits(max_iterations=2 * cells + 2, budget_usd=None),
                           sandbox=SandboxLimits(allow_weak=True))
        trace = Trace({})
        trace_path = Path(tmp) / "run.jsonl"
        writer = TraceWriter(trace_path, {"bench": "output"}).attach(trace)

        async def go() -> None:
            try:
                await run_rlm(config, "output benchmark", provider=provider, trace=trace)
            finally:
                await aclose_clients()

        try:
            asyncio.run(go())
        finally:
            writer.close()
        trace_mb = trace_path.stat().st_size / 1e6
    code_cells = sorted((s for s in trace.spans.values() if s.kind == SpanKind.CODE_CELL),
                        key=lambda s: s.start)
    big_cell: list[float] = []
    big_fed: list[float] = []
    small_cell: list[float] = []
    small_fed: list[float] = []
    for i, c in enumerate(code_cells[:2 * cells]):
        out = str(c.attributes.get(Attr.STDOUT, ""))
        big = i % 2 == 0
        if big and len(out) != BIG:
            raise AssertionError(f"the 1 MB cell's output in the trace has {len(out)} characters")
        fed = root_times[i + 1] - c.start        # the next root request carries this output
        (big_cell if big else small_cell).append((c.duration or 0) * 1000)
        (big_fed if big else small_fed).append(fed * 1000)
    return {
        "output_bytes": BIG,
        "cell_1mb_ms_median": round(statistics.median(big_cell[1:] or big_cell), 2),
        "fed_back_1mb_ms_median": round(statistics.median(big_fed[1:] or big_fed), 2),
        "fed_back_1mb_ms_max": round(max(big_fed), 2),
        "cell_short_ms_median": round(statistics.median(small_cell), 2),
        "fed_back_short_ms_median": round(statistics.median(small_fed), 2),
        "trace_file_mb": round(trace_mb, 1),
        "cells_each": cells,
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cells", type=int, default=10)
    print(run(ap.parse_args()))
