"""Provider profiles: presets, validation messages, storage form and the engine's ProviderConfig."""

from __future__ import annotations

import pytest

from rlm_desktop.core.config import ModelPrice
from rlm_desktop.core.pricing import cost_usd, lookup
from rlm_desktop.core.profiles import (
    PRESETS,
    ProfileError,
    ProviderProfile,
    demo_profile_from,
    ensure_valid,
    env_var_for,
    prices_note,
    profile_from_preset,
    validate_profile,
)
from rlm_desktop.engine.demo import DEMO_PROVIDER


def test_every_preset_makes_a_valid_profile() -> None:
    assert set(PRESETS) == {"openai", "openrouter", "anthropic", "gemini", "mistral", "groq", "deepseek",
                            "together", "azure", "ollama", "vllm", "lmstudio", "llamacpp", "custom"}
    for key, preset in PRESETS.items():
        if key != "custom":     # every preset's own URL is valid as it stands
            assert validate_profile(profile_from_preset(key, f"p-{key}")) == [], key
        url = None if preset.base_url else "http://127.0.0.1:9/v1"
        prof = profile_from_preset(key, f"p-{key}", base_url=url)
        assert validate_profile(prof) == [], key
        assert prof.needs_key == preset.needs_key
        assert preset.local == (not preset.needs_key), key   # the local servers are the key-less ones
    assert not PRESETS["ollama"].needs_key and PRESETS["ollama"].native_models_path == "/api/tags"
    assert PRESETS["anthropic"].base_url.startswith("https://api.anthropic.com")
    assert PRESETS["gemini"].base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert PRESETS["llamacpp"].base_url == "http://localhost:8080/v1"
    assert PRESETS["azure"].base_url.endswith(".openai.azure.com/openai/v1")


def test_prices_come_from_genai_prices_and_are_labelled() -> None:
    from genai_prices import calc_price
    from genai_prices.types import Usage

    prof = profile_from_preset("openai", "oa")
    assert dict(prof.prices) == {}                       # no copies: nothing the user changed
    price = prof.prices["gpt-4.1-mini"]
    expect = calc_price(Usage(input_tokens=1_000_000, output_tokens=1_000_000), "gpt-4.1-mini",
                        provider_id="openai")
    assert price.input == float(expect.input_price) and price.output == float(expect.output_price)
    assert price.cached_input is not None and price.cached_input < price.input
    note = prices_note()
    assert "genai-prices 0." in note and "price changes up to 20" in note and "never updated" in note
    # the server decides the provider: OpenRouter's vendor/model names are priced as OpenRouter lists them
    orr = profile_from_preset("openrouter", "or")
    assert orr.prices.get("openai/gpt-4o-mini") is not None
    # each new preset's default models are priced
    for key in ("gemini", "mistral", "groq", "deepseek", "together"):
        p = profile_from_preset(key, f"p-{key}")
        assert p.prices.get(p.root_model) is not None, key
    # an unknown model stays unknown: cost None, never 0; a local server's models get no list price
    assert cost_usd(lookup(prof.prices, "my-local-model"), 1000, 10) is None
    local = profile_from_preset("ollama", "ol", root_model="gpt-4o-mini")
    assert local.prices.get("gpt-4o-mini") is None and "gpt-4o-mini" not in local.price_rows()


def test_own_prices_win_and_only_they_are_stored() -> None:
    own = ModelPrice(input=9.0, output=99.0)
    prof = profile_from_preset("openai", "oa").with_changes(prices={"gpt-4.1-mini": own})
    assert prof.prices["gpt-4.1-mini"] == own and prof.to_provider_config("k").prices["gpt-4.1-mini"] == own
    assert lookup(prof.to_provider_config("k").prices, "gpt-4.1-nano") is not None   # the rest: the list
    assert prof.price_rows()["gpt-4.1-mini"] == own and "gpt-4.1-nano" in prof.price_rows()
    stored = prof.to_dict()["prices"]
    assert stored == {"gpt-4.1-mini": {"input": 9.0, "cached_input": None, "output": 99.0}}
    assert ProviderProfile.from_dict(prof.to_dict()) == prof
    # a copy of a list price (what Settings shows in its table) is not an override
    listed = prof.prices["gpt-4.1-nano"]
    same = prof.with_changes(prices={"gpt-4.1-mini": own, "gpt-4.1-nano": listed})
    assert dict(same.prices) == {"gpt-4.1-mini": own}
    # profiles saved by earlier versions held a copy of the 2025-08 table: not an override either
    # (shown on a local server, where no list price would hide the copy)
    local = profile_from_preset("vllm", "vl", root_model="gpt-4o").to_dict()
    old = {**local, "prices": {"gpt-4o": {"input": 2.5, "cached_input": 1.25, "output": 10.0},
                               "gpt-4.1-mini": {"input": 9.0, "output": 99.0}}}
    assert dict(ProviderProfile.from_dict(old).prices) == {"gpt-4.1-mini": own}


@pytest.mark.parametrize(("pid", "fragment"), [
    ("", "empty"), ("My GW", "lower-case"), ("a/b", "lower-case"), ("x" * 49, "at most 48"),
    ("-lead", "starting with"), ("demo", "reserved"),
])
def test_bad_ids_get_plain_messages(pid: str, fragment: str) -> None:
    prof = profile_from_preset("custom", pid, base_url="http://h/v1")
    errors = validate_profile(prof)
    assert errors and any(fragment in str(e) for e in errors), errors
    assert all(e.field == "id" for e in errors if "id" in str(e))


@pytest.mark.parametrize("url", ["", "localhost:8000", "ftp://h/v1", "http:///v1", "http://u:pw@h/v1",
                                 "http://h /v1"])
def test_bad_urls_are_refused(url: str) -> None:
    prof = profile_from_preset("custom", "gw", base_url=url)
    errs = [e for e in validate_profile(prof) if e.field == "base_url"]
    assert errs, url
    if "pw@" in url:
        assert "pw" not in str(errs[0]).replace("password", "")


def test_duplicate_and_near_duplicate_ids() -> None:
    prof = profile_from_preset("custom", "my-gw", base_url="http://h/v1")
    assert "already exists" in str(validate_profile(prof, ["my-gw"])[0])
    near = validate_profile(profile_from_preset("custom", "my_gw", base_url="http://h/v1"), ["my-gw"])
    assert near and "distinct" in str(near[0])
    with pytest.raises(ProfileError) as ei:
        ensure_valid(prof, ["my-gw"])
    assert ei.value.field == "id"


def test_numbers_are_validated() -> None:
    prof = profile_from_preset("custom", "gw", base_url="http://h/v1").with_changes(
        concurrency=0, request_timeout_s=0, prices={"m": ModelPrice(-1, 1)}, context_windows={"m": 0})
    fields = {e.field for e in validate_profile(prof)}
    assert fields == {"concurrency", "request_timeout_s", "prices", "context_windows"}


def test_dict_round_trip_keeps_every_attribute() -> None:
    prof = ProviderProfile(id="gw", name="Gateway", preset="vllm", base_url="http://h:8000/v1",
                           needs_key=True, root_model="big", sub_model="small", models=("big", "small"),
                           prices={"big": ModelPrice(1.5, 6.0, 0.5), "small": ModelPrice(0.1, 0.2)},
                           context_windows={"big": 128000}, concurrency=3, request_timeout_s=42.5)
    assert ProviderProfile.from_dict(prof.to_dict()) == prof
    with pytest.raises(ProfileError, match="malformed"):
        ProviderProfile.from_dict({"name": "no id"})


def test_to_provider_config_and_key_only_when_needed() -> None:
    prof = profile_from_preset("vllm", "local", root_model="llama").with_changes(
        prices={"llama": ModelPrice(0.1, 0.2)}, context_windows={"llama": 8192}, concurrency=5)
    cfg = prof.to_provider_config("sk-should-not-be-used")
    assert cfg.api_key is None and cfg.needs_key is False      # a no-key server never gets one
    assert cfg.root_model == cfg.sub_model == "llama"
    assert cfg.price_for("llama") == ModelPrice(0.1, 0.2) and cfg.context_windows["llama"] == 8192
    assert cfg.concurrency == 5 and cfg.base_url == "http://localhost:8000/v1"
    keyed = profile_from_preset("custom", "gw", base_url="http://h/v1/").to_provider_config("sk-x")
    assert keyed.api_key == "sk-x" and keyed.base_url == "http://h/v1" and "sk-x" not in repr(keyed)


def test_demo_profile_is_the_engine_demo() -> None:
    demo = demo_profile_from(DEMO_PROVIDER)
    assert demo.id == "demo" and demo.is_demo and validate_profile(demo) == []
    assert demo.to_provider_config() == DEMO_PROVIDER


def test_env_var_name() -> None:
    assert env_var_for("my-gw") == "RLM_DESKTOP_KEY_MY_GW"
    assert profile_from_preset("openai", "oa").is_openai_host
    assert not profile_from_preset("openrouter", "or").is_openai_host
