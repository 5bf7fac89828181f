"""Benchmark: sessions. Rebuilding a reopened session's REPL from a 20-cell trace (no model
request), and how much of each turn's first request is a byte prefix of the next turn's (what a
provider's prefix cache can reuse).

run(args) -> dict: a named session of 4 turns × 5 variable-making cells (+ a FINAL cell each; every other
one an llm_query answered by the scripted server) is asked, closed, reopened in a new Session and
asked again; the rebuild's wall time is the "rebuild" span's duration. Run alone:
python -m tests.bench.bench_session
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rlm_desktop.core.config import ProviderConfig, RunLimits, SandboxLimits
from rlm_desktop.core.trace import Attr, read_trace
from rlm_desktop.session import Session
from rlm_desktop.session.history import HistoryStore
from rlm_desktop.session.store import SessionStore
from tests.fakeserver import FakeOpenAI, Request

TURNS = 4
CELLS_PER_TURN = 5
GOAL_REBUILD_S = 2.0        # a 20-cell session is usable again within this


def _handler() -> Any:
    state = {"turn_cells": 0, "cell": 0}

    def handler(req: Request) -> str:
        if not req.system:
            return f"answer to {req.last_user[:20]}"
        if state["turn_cells"] >= CELLS_PER_TURN:
            state["turn_cells"] = 0
            return f"```repl\nFINAL(str(v{state['cell'] - 1}))\n```"
        n = state["cell"]
        state["cell"] += 1
        state["turn_cells"] += 1
        sub = f"llm_query('part {n} ' + context[:{n + 5}])" if n % 2 == 0 else "len(context)"
        return f"```repl\nv{n} = {sub}\nprint(v{n})\n```"
    return handler


def _prefix_share(a: str, b: str) -> float:
    """The share of ``a`` that is a byte prefix of ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n / len(a) if a else 1.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as srv:
        srv.handler = _handler()
        provider = ProviderConfig(id="bench", name="bench", base_url=srv.base_url, api_key="k",
                                  root_model="r", sub_model="s", max_retries=0)
        kw: dict[str, Any] = dict(context="lorem ipsum " * 500, name="bench", provider=provider,
                                  store=SessionStore(Path(tmp) / "sessions"),
                                  history=HistoryStore(Path(tmp) / "h.jsonl"),
                                  limits=RunLimits(max_iterations=CELLS_PER_TURN + 2, budget_usd=None),
                                  sandbox=SandboxLimits(allow_weak=True))
        with Session(**kw) as s:
            for t in range(TURNS):
                r = s.ask(f"question {t + 1}")
                assert r.status == "ok", r.reason
        firsts = [json.dumps(q.messages) for q in srv.chat_requests if q.system
                  and q.messages[-1]["role"] == "user" and "[cell" not in q.messages[-1]["content"]]
        # Each turn's first request: system + earlier turns + question. What the next turn reuses
        # is everything but its own question (the last message).
        heads = [json.dumps(json.loads(f)[:-1])[:-1] for f in firsts]
        shares = [_prefix_share(heads[i], firsts[i + 1]) for i in range(len(firsts) - 1)]
        before = len(srv.chat_requests)
        with Session(**kw) as s2:
            r = s2.ask("after reopening")
            assert r.status == "ok" and r.rebuild is not None, r.reason
            rebuild_requests = len(srv.chat_requests) - before - (r.run.iterations + r.run.sub_calls)
        trace = read_trace(r.trace)
        span = next(sp for sp in trace.spans.values() if sp.attributes.get(Attr.REPLAY))
        rebuild_s = span.duration or 0.0
        return {
            "cells_replayed": r.rebuild.cells,
            "sub_calls_replayed": r.rebuild.sub_calls,
            "model_requests_during_rebuild": rebuild_requests,
            "rebuild_s": round(rebuild_s, 3),
            "rebuild_ms_per_cell": round(rebuild_s * 1000 / max(1, r.rebuild.cells), 2),
            "prefix_reused_pct_min": round(100 * min(shares), 2) if shares else None,
            "prefix_reused_pct_median": round(100 * statistics.median(shares), 2) if shares else None,
            "ok": rebuild_s <= GOAL_REBUILD_S and rebuild_requests == 0 and bool(shares)
                  and min(shares) == 1.0,
        }


if __name__ == "__main__":
    print(json.dumps(run(argparse.Namespace()), indent=1))
