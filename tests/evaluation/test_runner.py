"""The runner in-process (the CLI tests cover it end to end): an item that cannot be built or run
is recorded as that item's failure, and the rest of the evaluation goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rlm_desktop.core.config import RunConfig
from rlm_desktop.engine.demo import DEMO_PROVIDER
from rlm_desktop.engine.providers import aclose_clients
from rlm_desktop.evaluation.runner import EvalPlan, Evaluation


def _run(ev: Evaluation):  # noqa: ANN202
    async def go():  # noqa: ANN202
        try:
            return await ev.run()
        finally:
            await aclose_clients()
    return asyncio.run(go())


def test_an_item_that_cannot_be_built_fails_alone(tmp_path: Path) -> None:
    plan = EvalPlan(tasks=("no-such-task", "needle"), sizes=(8_000,), items=1, methods=("direct",))
    config = RunConfig(query="x", root_model=DEMO_PROVIDER.root_model, sub_model=DEMO_PROVIDER.sub_model)
    out = _run(Evaluation(plan, provider=DEMO_PROVIDER, config=config, out_dir=tmp_path))
    assert out.stopped is None
    bad, good = out.results
    assert bad.status == "error" and "could not build the item" in bad.reason and "choose from" in bad.reason
    assert good.task == "needle" and good.status == "ok" and Path(good.trace).exists()
    assert [(r.task, r.items, r.failures) for r in out.rows] == [("no-such-task", 1, 1), ("needle", 1, 0)]


def test_a_run_whose_trace_cannot_be_written_fails_alone(tmp_path: Path) -> None:
    plan = EvalPlan(tasks=("needle",), sizes=(8_000,), items=2, methods=("direct",))
    config = RunConfig(query="x", root_model=DEMO_PROVIDER.root_model, sub_model=DEMO_PROVIDER.sub_model)
    ev = Evaluation(plan, provider=DEMO_PROVIDER, config=config, out_dir=tmp_path)
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "needle-8k-001-direct.jsonl").mkdir()     # a folder where the file goes
    out = _run(ev)
    assert [r.status for r in out.results] == ["error", "ok"]
    assert "IsADirectoryError" in out.results[0].reason
