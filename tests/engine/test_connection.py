"""Fetch models / test connection over real HTTP against the scripted server: 200, 401, 404,
refused, timeout, TLS, Ollama's native list, and no Authorization header for key-less servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from rlm_desktop.core.profiles import ProviderProfile, demo_profile_from, profile_from_preset
from rlm_desktop.engine import connection
from rlm_desktop.engine.demo import DEMO_PROVIDER
from tests.fakeserver import FakeOpenAI, Reply

KEY = "sk-conn-SECRET-4b1d9e"


def _custom(url: str, **kw: object) -> ProviderProfile:
    return profile_from_preset("custom", "gw", base_url=url, root_model="fake-root",
                               sub_model="fake-sub").with_changes(**kw)


def _run(coro: object) -> connection.ConnectionResult:
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.fixture
def keyed() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY, models=["fake-root", "fake-sub", "other"]) as srv:
        yield srv


def test_fetch_models_ok_sends_bearer_key(keyed: FakeOpenAI) -> None:
    res = _run(connection.fetch_models(_custom(keyed.base_url), KEY))
    assert res.ok and res.kind == "ok" and res.models == ("fake-root", "fake-sub", "other")
    assert keyed.requests[-1].authorization == f"Bearer {KEY}"
    assert keyed.requests[-1].path == "/v1/models"
    t = _run(connection.test_connection(_custom(keyed.base_url), KEY))
    assert t.ok and "Connected" in t.message and "3 models" in t.message


def test_wrong_model_name_is_pointed_out(keyed: FakeOpenAI) -> None:
    t = _run(connection.test_connection(_custom(keyed.base_url, root_model="gpt-nope"), KEY))
    assert t.ok and "'gpt-nope' is not among them" in t.message


def test_bad_key_401_is_plain_and_keyless(keyed: FakeOpenAI) -> None:
    wrong = "sk-wrong-KEY-0000000"
    res = _run(connection.test_connection(_custom(keyed.base_url), wrong))
    assert not res.ok and res.kind == "auth" and res.status == 401
    assert "Bad key" in res.message and wrong not in res.message and KEY not in res.message


def test_wrong_url_404(keyed: FakeOpenAI) -> None:
    keyed.models_reply = Reply.error(404, "Not Found")      # what a server says for a wrong path
    res = _run(connection.test_connection(_custom(keyed.base_url), KEY))
    assert not res.ok and res.kind == "not_found" and res.status == 404 and "Wrong URL" in res.message


def test_connection_refused() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    res = _run(connection.test_connection(_custom(f"http://127.0.0.1:{port}/v1"), KEY))
    assert not res.ok and res.kind == "refused" and "nothing is listening" in res.message


def test_timeout_when_the_server_never_answers() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)            # accepts connections in the backlog but never answers
    try:
        port = s.getsockname()[1]
        res = _run(connection.test_connection(_custom(f"http://127.0.0.1:{port}/v1"), KEY, timeout_s=0.5))
    finally:
        s.close()
    assert not res.ok and res.kind == "timeout" and "did not answer within 0.5 s" in res.message


def test_tls_error_when_https_meets_plain_http(keyed: FakeOpenAI) -> None:
    res = _run(connection.test_connection(_custom(keyed.base_url.replace("http://", "https://")), KEY))
    assert not res.ok and res.kind == "tls" and "TLS" in res.message and KEY not in res.message


def test_ollama_sends_no_authorization_and_merges_native_list(fake_openai: FakeOpenAI,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-must-not-be-sent")
    prof = profile_from_preset("ollama", "local", base_url=fake_openai.base_url)
    res = _run(connection.fetch_models(prof, "sk-a-key-that-must-not-be-sent"))
    assert res.ok and set(res.models) == {"fake-root", "fake-sub"}
    paths = [r.path for r in fake_openai.requests]
    assert paths == ["/v1/models", "/api/tags"]
    assert all(r.authorization is None for r in fake_openai.requests)


def test_ollama_native_list_alone_when_v1_models_fails(fake_openai: FakeOpenAI) -> None:
    fake_openai.models_reply = Reply.error(404, "no such route")
    prof = profile_from_preset("ollama", "local", base_url=fake_openai.base_url)
    res = _run(connection.test_connection(prof, None))
    assert res.ok and res.url.endswith("/api/tags") and set(res.models) == {"fake-root", "fake-sub"}


def test_missing_key_and_bad_url_need_no_network() -> None:
    assert _run(connection.test_connection(_custom("http://127.0.0.1:9/v1"), None)).kind == "no_key"
    assert _run(connection.fetch_models(_custom("nonsense"), KEY)).kind == "invalid"
    demo = _run(connection.test_connection(demo_profile_from(DEMO_PROVIDER), None))
    assert demo.ok and "offline demo" in demo.message


# -- the test proves the key (issue 8 item 14) -------------------------------------------------------

@pytest.fixture
def open_list() -> Iterator[FakeOpenAI]:
    """A server that lists its models to anyone but wants the key for completions."""
    with FakeOpenAI(api_key=KEY, models=["fake-root", "fake-sub"]) as srv:
        srv.models_need_key = False
        yield srv


def test_wrong_key_is_rejected_where_the_model_list_needs_no_key(open_list: FakeOpenAI) -> None:
    wrong = "sk-wrong-KEY-1111111"
    res = _run(connection.test_connection(_custom(open_list.base_url), wrong))
    assert not res.ok and res.kind == "auth" and res.status == 401
    assert res.message.startswith("Key rejected (401)") and "fake-root" in res.message
    assert wrong not in res.message and KEY not in res.message
    probe = open_list.chat_requests[-1]
    assert probe.body["model"] == "fake-root" and probe.body["max_tokens"] == 1
    assert probe.authorization == f"Bearer {wrong}"


def test_right_key_is_proven_by_a_one_token_completion(open_list: FakeOpenAI) -> None:
    open_list.script("OK")
    res = _run(connection.test_connection(_custom(open_list.base_url), KEY))
    assert res.ok and "The key works (a 1-token test reply from fake-root)" in res.message
    assert len(open_list.chat_requests) == 1


def test_403_on_the_completion_says_key_rejected(open_list: FakeOpenAI) -> None:
    open_list.script(Reply.error(403, "this key may not use fake-root"))
    res = _run(connection.test_connection(_custom(open_list.base_url), KEY))
    assert not res.ok and res.kind == "auth" and res.message.startswith("Key rejected (403)")
    assert "may not use fake-root" in res.message


def test_no_completion_is_spent_when_the_list_already_proves_the_key(keyed: FakeOpenAI) -> None:
    res = _run(connection.test_connection(_custom(keyed.base_url), KEY))
    assert res.ok and "refuses requests without it" in res.message
    assert keyed.chat_requests == []
    assert [r.authorization for r in keyed.requests] == [f"Bearer {KEY}", None]   # listed with, then without


def test_azure_deployment_url_is_tested_with_api_key_header_and_api_version(fake_openai: FakeOpenAI) -> None:
    fake_openai.api_key = KEY
    url = f"http://127.0.0.1:{fake_openai.port}/openai/deployments/dep-1?api-version=2024-10-21"
    prof = profile_from_preset("azure", "az", base_url=url, root_model="dep-1", sub_model="dep-1")
    fake_openai.script("OK")
    res = _run(connection.test_connection(prof, KEY))
    assert res.ok and "The key works" in res.message, res.message
    (req,) = fake_openai.requests                       # no model list: Azure deployments have none
    assert req.path == "/openai/deployments/dep-1/chat/completions" and req.query == "api-version=2024-10-21"
    assert req.headers.get("api-key") == KEY and req.authorization is None
    wrong = _run(connection.test_connection(prof, "sk-wrong-azure-222"))
    assert not wrong.ok and wrong.message.startswith("Key rejected (401)")
