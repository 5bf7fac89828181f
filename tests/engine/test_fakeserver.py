"""The scripted server itself speaks the protocol the real SDK expects (stream, usage, errors, hang)."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai import AsyncOpenAI

from tests.fakeserver import FakeOpenAI, Reply


def _client(srv: FakeOpenAI, key: str = "sk-test") -> AsyncOpenAI:
    return AsyncOpenAI(base_url=srv.base_url, api_key=key, max_retries=0)


def test_plain_stream_usage_and_recording(fake_openai: FakeOpenAI) -> None:
    fake_openai.script("hello", Reply(text="a streamed answer", chunk_size=4,
                                      usage={"prompt_tokens": 50, "completion_tokens": 5,
                                             "cached_tokens": 20}))

    async def go() -> tuple[str, str, object]:
        c = _client(fake_openai)
        r = await c.chat.completions.create(model="m1", messages=[{"role": "user", "content": "q"}])
        parts, usage = [], None
        s = await c.chat.completions.create(model="m2", messages=[{"role": "user", "content": "q2"}],
                                            stream=True, stream_options={"include_usage": True})
        async for ch in s:
            if ch.choices:
                parts.append(ch.choices[0].delta.content or "")
            if ch.usage:
                usage = ch.usage
        await c.close()
        return r.choices[0].message.content or "", "".join(parts), usage

    plain, streamed, usage = asyncio.run(go())
    assert plain == "hello"
    assert streamed == "a streamed answer"
    assert usage.prompt_tokens == 50 and usage.prompt_tokens_details.cached_tokens == 20
    reqs = fake_openai.chat_requests
    assert [r.model for r in reqs] == ["m1", "m2"]
    assert reqs[0].authorization == "Bearer sk-test"
    assert reqs[1].stream and reqs[1].last_user == "q2"


def test_errors_hang_and_open_count(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply.error(429, "slow down", retry_after=2), Reply.hanging())

    async def go() -> str | None:
        c = _client(fake_openai)
        with pytest.raises(openai.RateLimitError) as ei:
            await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        task = asyncio.create_task(
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "y"}]))
        while len(fake_openai.chat_requests) < 2 or fake_openai.open_now == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await c.close()
        return ei.value.response.headers.get("retry-after")

    assert asyncio.run(go()) == "2"
    assert fake_openai.wait_until(lambda s: s.open_now == 0, timeout=5)
    assert fake_openai.max_open == 1 and fake_openai.disconnects == 1


def test_models_auth_and_exhausted_script() -> None:
    with FakeOpenAI(models=["a", "b"], api_key="right") as srv:
        async def go() -> list[str]:
            with pytest.raises(openai.AuthenticationError):
                await _client(srv, "wrong").models.list()
            ok = await _client(srv, "right").models.list()
            with pytest.raises(openai.BadRequestError, match="script exhausted"):
                await _client(srv, "right").chat.completions.create(
                    model="a", messages=[{"role": "user", "content": "x"}])
            return [m.id for m in ok.data]

        assert asyncio.run(go()) == ["a", "b"]
        assert srv.unscripted == 1


def test_ollama_native_model_list(fake_openai: FakeOpenAI) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{fake_openai.port}/api/tags", timeout=5) as r:
        names = [m["name"] for m in json.load(r)["models"]]
    assert names == fake_openai.models and fake_openai.requests[-1].path == "/api/tags"


def test_a_hundred_requests_at_once_are_all_answered(fake_openai: FakeOpenAI) -> None:
    """Fan-out as llm_query_batched does it: many connections opened at the same moment all get
    their answer (a listen backlog of 5 dropped some: ReadError at the client)."""
    fake_openai.handler = lambda req: "ok " + req.last_user
    fake_openai.latency = 0.2
    n = 100

    async def go() -> list[str]:
        c = _client(fake_openai)

        async def one(i: int) -> str:
            s = await c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}],
                                                stream=True)
            return "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])

        try:
            return await asyncio.gather(*(one(i) for i in range(n)))
        finally:
            await c.close()

    assert asyncio.run(go()) == [f"ok q{i}" for i in range(n)]
    assert fake_openai.max_open == n
