"""Engine test helpers: a provider pointing at the scripted server, and root/sub routing."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.config import ModelPrice, ProviderConfig, RunConfig, RunLimits, SandboxLimits
from rlm_desktop.core.trace import Trace
from rlm_desktop.engine.providers import aclose_clients
from rlm_desktop.engine.run import RunResult, run_rlm
from tests.fakeserver import FakeOpenAI, Reply, Request

TEST_KEY = "sk-test-DO-NOT-LEAK-7f3a9c"


def make_provider(srv: FakeOpenAI, *, key: str | None = TEST_KEY, prices: dict[str, ModelPrice] | None = None,
                  max_retries: int = 2, concurrency: int = 8, **kw: Any) -> ProviderConfig:
    return ProviderConfig(id="fake", name="Fake server", base_url=srv.base_url, api_key=key,
                          needs_key=key is not None, root_model="fake-root", sub_model="fake-sub",
                          prices=prices or {}, max_retries=max_retries, concurrency=concurrency, **kw)


def make_config(query: str = "What is the magic number?", **limits: Any) -> RunConfig:
    memo = limits.pop("memo_cache", True)
    return RunConfig(query=query, root_model="fake-root", sub_model="fake-sub",
                     limits=RunLimits(**limits), sandbox=SandboxLimits(allow_weak=True), memo_cache=memo)


def is_root(req: Request) -> bool:
    return bool(req.system)


def route(root_replies: list[Any], sub: Callable[[Request], Any] | None = None) -> Callable[[Request], Any]:
    """A server handler: root-model requests (with a system prompt) get the queued replies in order,
    sub-calls get ``sub(request)`` (default: echo of the prompt)."""
    roots = deque(root_replies)

    def handler(req: Request) -> Any:
        if is_root(req):
            return roots.popleft() if roots else Reply.error(400, "test script: no root reply left")
        return sub(req) if sub is not None else f"echo:{req.last_user}"
    return handler


def run(config: RunConfig, context: str | dict[str, str], provider: ProviderConfig, *,
        trace: Trace | None = None, cancel: CancelToken | None = None,
        sub_provider: ProviderConfig | None = None) -> tuple[RunResult, Trace]:
    tr = trace if trace is not None else Trace({})

    async def go() -> RunResult:
        try:
            return await run_rlm(config, context, provider=provider, sub_provider=sub_provider,
                                 trace=tr, cancel=cancel)
        finally:
            await aclose_clients()
    return asyncio.run(go()), tr


def assert_all_ended(trace: Trace) -> None:
    open_spans = [f"{s.kind}:{s.name}" for s in trace if s.running]
    assert open_spans == [], f"spans left open: {open_spans}"


@pytest.fixture
def srv(fake_openai: FakeOpenAI) -> FakeOpenAI:
    return fake_openai
