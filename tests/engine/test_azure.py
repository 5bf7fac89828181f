"""Azure OpenAI through the engine (issue 8 item 20): the openai SDK is configured from the profile's
base URL (deployment path, ``api-version`` query, ``api-key`` header) and a run goes over real HTTP
to the scripted server."""

from __future__ import annotations

from rlm_desktop.core.endpoints import endpoint_for, is_azure
from rlm_desktop.core.profiles import profile_from_preset
from tests.engine.conftest import make_config, run
from tests.fakeserver import FakeOpenAI

KEY = "sk-azure-SECRET-5e5e5e"


def test_deployment_url_sends_path_api_version_and_api_key(fake_openai: FakeOpenAI) -> None:
    fake_openai.api_key = KEY
    url = f"http://127.0.0.1:{fake_openai.port}/openai/deployments/my-gpt/?api-version=2024-10-21"
    prof = profile_from_preset("azure", "az", base_url=url, root_model="my-gpt", sub_model="my-gpt")
    fake_openai.script("FINAL(from Azure)")
    res, _ = run(make_config(), "ctx", prof.to_provider_config(KEY))
    assert res.status == "ok" and res.answer == "from Azure"
    (req,) = fake_openai.chat_requests
    assert req.path == "/openai/deployments/my-gpt/chat/completions"
    assert req.query == "api-version=2024-10-21"
    assert req.headers.get("api-key") == KEY and req.authorization is None


def test_azure_is_recognised_by_host_path_or_api_version() -> None:
    assert is_azure("https://res.openai.azure.com/openai/v1")
    assert is_azure("https://res.cognitiveservices.azure.com/openai/deployments/d?api-version=2024-10-21")
    assert is_azure("http://127.0.0.1:9/openai/deployments/d")
    assert not is_azure("https://api.openai.com/v1") and not is_azure("http://localhost:8080/v1")
    ep = endpoint_for("https://res.openai.azure.com/openai/deployments/d/?api-version=2024-10-21")
    assert ep.base_url == "https://res.openai.azure.com/openai/deployments/d"
    assert dict(ep.query) == {"api-version": "2024-10-21"}
    assert ep.key_headers("k") == {"api-key": "k"}
    assert endpoint_for("https://api.openai.com/v1/").key_headers("k") == {"Authorization": "Bearer k"}
