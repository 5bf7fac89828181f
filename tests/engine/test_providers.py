"""Provider calls over real HTTP: streaming usage and cost, retries, errors, no-key servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rlm_desktop.core.config import ModelPrice
from rlm_desktop.engine.providers import ProviderError, aclose_clients, chat, client_for
from tests.engine.conftest import TEST_KEY, make_provider
from tests.fakeserver import FakeOpenAI, Reply

MSGS = [{"role": "user", "content": "hello"}]


def _call(provider: Any, **kw: Any) -> Any:
    async def go() -> Any:
        try:
            return await chat(provider, "fake-sub", MSGS, timeout_s=kw.pop("timeout_s", 10), **kw)
        finally:
            await aclose_clients()
    return asyncio.run(go())


def test_stream_usage_cached_tokens_and_cost(srv: FakeOpenAI) -> None:
    srv.script(Reply(text="streamed answer", chunk_size=3,
                     usage={"prompt_tokens": 1000, "completion_tokens": 100, "cached_tokens": 400}))
    prov = make_provider(srv, prices={"fake-sub": ModelPrice(input=1.0, output=2.0, cached_input=0.5)})
    deltas: list[str] = []
    res = _call(prov, on_delta=deltas.append)
    assert res.text == "streamed answer" and "".join(deltas) == "streamed answer" and len(deltas) > 3
    assert (res.input_tokens, res.output_tokens, res.cached_tokens) == (1000, 100, 400)
    assert res.cost_usd == pytest.approx((600 * 1.0 + 400 * 0.5 + 100 * 2.0) / 1e6)
    assert res.cost_known and not res.tokens_estimated
    req = srv.chat_requests[0]
    assert req.stream and req.body["stream_options"] == {"include_usage": True}
    assert req.authorization == f"Bearer {TEST_KEY}"


def test_unknown_price_is_unknown_not_zero(srv: FakeOpenAI) -> None:
    srv.script("x")
    res = _call(make_provider(srv))
    assert res.cost_usd is None and res.cost_known is False


def test_no_key_provider_sends_no_authorization_even_with_env_key(
        srv: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-must-not-be-sent")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-private")
    srv.script("local model answer")
    res = _call(make_provider(srv, key=None))
    assert res.text == "local model answer"
    headers = srv.chat_requests[0].headers
    assert "authorization" not in headers and "openai-organization" not in headers


def test_429_retry_after_honoured_then_success(srv: FakeOpenAI) -> None:
    srv.script(Reply.error(429, "slow down", retry_after=1), "after the wait")
    retries: list[tuple[int, str, float]] = []
    res = _call(make_provider(srv), on_retry=lambda a, e, w: retries.append((a, e, w)))
    assert res.text == "after the wait" and res.attempts == 2
    assert len(retries) == 1 and retries[0][0] == 1 and retries[0][2] == pytest.approx(1.0)
    assert "429" in retries[0][1]
    assert len(srv.chat_requests) == 2


def test_server_error_retried_auth_error_not_and_key_never_in_message(srv: FakeOpenAI) -> None:
    srv.script(Reply.error(503, "overloaded", retry_after=0), Reply.error(503, "overloaded", retry_after=0),
               Reply.error(503, "still overloaded", retry_after=0))
    with pytest.raises(ProviderError) as ei:
        _call(make_provider(srv, max_retries=2))
    assert ei.value.kind == "server" and ei.value.attempts == 3 and "gave up after 3" in str(ei.value)
    assert str(ei.value).endswith("try again later, or pick another model or provider.")
    srv.script(Reply.error(401, f"Incorrect API key provided: {TEST_KEY}"))
    with pytest.raises(ProviderError) as ei:
        _call(make_provider(srv, max_retries=3))
    assert ei.value.kind == "auth" and ei.value.attempts == 1
    assert TEST_KEY not in str(ei.value) and "rejected the API key" in str(ei.value)
    assert len(srv.chat_requests) == 4


def test_per_call_timeout_closes_the_request(srv: FakeOpenAI) -> None:
    srv.script(Reply.hanging())
    with pytest.raises(ProviderError) as ei:
        _call(make_provider(srv, max_retries=0), timeout_s=0.3)
    assert ei.value.kind == "timeout" and "0.3 s" in str(ei.value)
    assert srv.wait_until(lambda s: s.open_now == 0, timeout=5)


def test_one_pooled_client_per_provider_per_loop(srv: FakeOpenAI) -> None:
    prov = make_provider(srv)

    async def go() -> tuple[bool, bool]:
        a, b = client_for(prov), client_for(prov)
        other = client_for(make_provider(srv, key="another-key"))
        await aclose_clients()
        return a is b, a is other
    same, shared_with_other_key = asyncio.run(go())
    assert same and not shared_with_other_key


def test_server_without_stream_options_gets_estimated_usage(srv: FakeOpenAI) -> None:
    def handler(req: Any) -> Reply | str:
        if "stream_options" in req.body:
            return Reply.error(400, "Unrecognized request argument supplied: stream_options")
        return "answer without usage"
    srv.handler = handler
    res = _call(make_provider(srv))
    assert res.text == "answer without usage" and res.tokens_estimated
    assert res.output_tokens == len("answer without usage") // 4
    assert [("stream_options" in r.body) for r in srv.chat_requests] == [True, False]


def test_connection_cut_mid_stream_is_retried(srv: FakeOpenAI) -> None:
    srv.script(Reply(text="a long answer that will be cut", chunk_size=4, drop_after=2),
               Reply.error(500, "x", retry_after=0), "complete answer")
    retries: list[tuple[int, str, float]] = []
    res = _call(make_provider(srv, max_retries=3), on_retry=lambda a, e, w: retries.append((a, e, w)))
    assert res.text == "complete answer" and res.attempts == 3
    assert "broke during the answer" in retries[0][1] or "cannot reach" in retries[0][1]


def test_a_refused_connection_says_what_to_check_once_retries_are_spent(srv: FakeOpenAI) -> None:
    provider = make_provider(srv, max_retries=1)
    srv.stop()                                   # nothing listens on that port any more
    retries: list[str] = []
    with pytest.raises(ProviderError) as ei:
        _call(provider, on_retry=lambda a, e, w: retries.append(e))
    msg = str(ei.value)
    assert ei.value.kind == "connection" and ei.value.attempts == 2
    assert msg.startswith("cannot reach ") and "(gave up after 2 attempts)" in msg
    assert msg.endswith("Check that the server is running and reachable, and that the base URL is right.")
    assert retries and "Check that" not in retries[0]      # advice once, when giving up


def test_a_long_conversation_reaches_the_server_exactly_as_given(srv: FakeOpenAI) -> None:
    """The messages go out as they are (not through the SDK's per-message transform, which cost
    ~0.15 ms of CPU each): a 61-message conversation with any text arrives unchanged, in a body
    with the same fields as before, streamed or not."""
    msgs = [{"role": "system", "content": "sys ✓ \u2028 \"quoted\" \\ back"}]
    for i in range(30):
        msgs.append({"role": "assistant", "content": f"```repl\nx = {i}\nprint('é' * {i})\n```"})
        msgs.append({"role": "user", "content": f"REPL output:\n{'é' * i}\n\x00 odd"})
    srv.handler = lambda req: "fine"
    prov = make_provider(srv)

    async def go() -> list[str]:
        try:
            return [(await chat(prov, "fake-root", msgs, timeout_s=10, stream=stream)).text
                    for stream in (True, False)]
        finally:
            await aclose_clients()

    assert asyncio.run(go()) == ["fine", "fine"]
    streamed, plain = srv.chat_requests
    for req in (streamed, plain):
        assert req.messages == msgs and req.model == "fake-root"
    assert set(streamed.body) == {"model", "messages", "stream", "stream_options"}
    assert set(plain.body) == {"model", "messages"}
