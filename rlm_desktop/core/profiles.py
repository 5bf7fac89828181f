"""Provider profiles (Qt-free): presets for well-known OpenAI-compatible servers, the user's own
prices over the genai-prices catalog, validation with plain messages, and conversion to the
engine's ProviderConfig."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from rlm_desktop.core.config import ConfigError, ModelPrice, ProviderConfig
from rlm_desktop.core.pricing import PriceTable, catalog_label
from rlm_desktop.core.redact import is_secret_param, mask_url

DEMO_ID = "demo"
OPENAI_HOST = "api.openai.com"

# Profile ids are the keyring username and part of an environment variable name, so they are kept
# to characters every keyring backend and shell accepts.
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")

# -- prices ---------------------------------------------------------------------------------------
# List prices come from the genai-prices catalog (core/pricing.py); a profile keeps only the prices
# its user changed. Versions up to 0.1 copied this hand-written table (as known around 2025-08) into
# every new profile: such an unchanged copy is not an override and is dropped when a profile loads.
_PRICES_COPIED_BEFORE: Mapping[str, ModelPrice] = MappingProxyType({
    "gpt-4o": ModelPrice(input=2.50, output=10.00, cached_input=1.25),
    "gpt-4o-mini": ModelPrice(input=0.15, output=0.60, cached_input=0.075),
    "gpt-4.1": ModelPrice(input=2.00, output=8.00, cached_input=0.50),
    "gpt-4.1-mini": ModelPrice(input=0.40, output=1.60, cached_input=0.10),
    "gpt-4.1-nano": ModelPrice(input=0.10, output=0.40, cached_input=0.025),
    "o4-mini": ModelPrice(input=1.10, output=4.40, cached_input=0.275),
    "gpt-5": ModelPrice(input=1.25, output=10.00, cached_input=0.125),
    "gpt-5-mini": ModelPrice(input=0.25, output=2.00, cached_input=0.025),
    "gpt-5-nano": ModelPrice(input=0.05, output=0.40, cached_input=0.005),
    "claude-sonnet-4-20250514": ModelPrice(input=3.00, output=15.00, cached_input=0.30),
    "claude-sonnet-4": ModelPrice(input=3.00, output=15.00, cached_input=0.30),
    "claude-opus-4-1-20250805": ModelPrice(input=15.00, output=75.00, cached_input=1.50),
    "claude-opus-4.1": ModelPrice(input=15.00, output=75.00, cached_input=1.50),
    "claude-3-5-haiku-20241022": ModelPrice(input=0.80, output=4.00, cached_input=0.08),
    "claude-3.5-haiku": ModelPrice(input=0.80, output=4.00, cached_input=0.08),
})


def prices_note() -> str:
    """Where the prices come from and how current they are (for Settings and the CLI)."""
    return (f"Prices in USD per million tokens come from {catalog_label()} (its bundled data; never "
            "updated over the network). Check them on the provider's pricing page before relying on a "
            "budget. A price you change here is kept and wins over the list price.")


# -- presets --------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Preset:
    key: str
    name: str
    base_url: str
    needs_key: bool
    root_model: str = ""
    sub_model: str = ""
    models: tuple[str, ...] = ()
    concurrency: int = 8
    request_timeout_s: float = 120.0
    native_models_path: str | None = None   # a server's own model list besides /models
    hint: str = ""
    local: bool = False                      # runs models on the user's machine: no list prices


PRESETS: Mapping[str, Preset] = MappingProxyType({p.key: p for p in (
    Preset("openai", "OpenAI", "https://api.openai.com/v1", True, "gpt-4.1-mini", "gpt-4.1-nano",
           ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini", "o4-mini", "gpt-5",
            "gpt-5-mini", "gpt-5-nano"),
           hint="Key from platform.openai.com; OPENAI_API_KEY is used for this server too."),
    Preset("openrouter", "OpenRouter", "https://openrouter.ai/api/v1", True, "openai/gpt-4.1-mini",
           "openai/gpt-4.1-nano", ("openai/gpt-4.1-mini", "openai/gpt-4.1-nano", "openai/gpt-4o-mini",
                                   "anthropic/claude-sonnet-4", "anthropic/claude-3.5-haiku"),
           hint="One key for many vendors' models; names are vendor/model."),
    Preset("anthropic", "Anthropic (OpenAI-compatible)", "https://api.anthropic.com/v1", True,
           "claude-sonnet-4-20250514", "claude-3-5-haiku-20241022",
           ("claude-sonnet-4-20250514", "claude-opus-4-1-20250805", "claude-3-5-haiku-20241022"),
           concurrency=4, hint="Anthropic's OpenAI SDK compatibility endpoint."),
    Preset("ollama", "Ollama (local)", "http://localhost:11434/v1", False, concurrency=2,
           request_timeout_s=300.0, native_models_path="/api/tags", local=True,
           hint="No key is needed or sent. Pull a model first (ollama pull NAME), then Fetch models."),
    Preset("vllm", "vLLM server", "http://localhost:8000/v1", False, concurrency=8,
           request_timeout_s=300.0, local=True,
           hint="No key unless the server was started with --api-key (then tick 'needs a key')."),
    Preset("lmstudio", "LM Studio (local)", "http://localhost:1234/v1", False, concurrency=2,
           request_timeout_s=300.0, local=True, hint="Start the local server in LM Studio; no key is needed."),
    Preset("gemini", "Google Gemini (OpenAI-compatible)",
           "https://generativelanguage.googleapis.com/v1beta/openai", True, "gemini-2.5-flash",
           "gemini-2.5-flash-lite", ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"),
           concurrency=4, hint="Key from Google AI Studio; Gemini's OpenAI compatibility endpoint."),
    Preset("mistral", "Mistral", "https://api.mistral.ai/v1", True, "mistral-medium-latest",
           "mistral-small-latest", ("mistral-large-latest", "mistral-medium-latest", "mistral-small-latest"),
           concurrency=4, hint="Key from console.mistral.ai."),
    Preset("groq", "Groq", "https://api.groq.com/openai/v1", True, "llama-3.3-70b-versatile",
           "llama-3.1-8b-instant", ("llama-3.3-70b-versatile", "llama-3.1-8b-instant", "openai/gpt-oss-120b"),
           concurrency=4, hint="Key from console.groq.com; fast, with low rate limits on free keys."),
    Preset("deepseek", "DeepSeek", "https://api.deepseek.com/v1", True, "deepseek-chat", "deepseek-chat",
           ("deepseek-chat", "deepseek-reasoner"), concurrency=4, hint="Key from platform.deepseek.com."),
    Preset("together", "Together AI", "https://api.together.xyz/v1", True,
           "meta-llama/Llama-3.3-70B-Instruct-Turbo", "meta-llama/Llama-3.3-70B-Instruct-Turbo",
           ("meta-llama/Llama-3.3-70B-Instruct-Turbo",), hint="Key from api.together.ai; names are org/model."),
    Preset("azure", "Azure OpenAI", "https://YOUR-RESOURCE.openai.azure.com/openai/v1", True,
           "YOUR-DEPLOYMENT", "YOUR-DEPLOYMENT",
           hint="Replace YOUR-RESOURCE and use your deployment names as models (the v1 API). The older "
                "form also works: https://RESOURCE.openai.azure.com/openai/deployments/DEPLOYMENT"
                "?api-version=2024-10-21. The key is sent as the api-key header."),
    Preset("llamacpp", "llama.cpp server (local)", "http://localhost:8080/v1", False, concurrency=2,
           request_timeout_s=300.0, local=True,
           hint="llama-server's OpenAI-compatible API; no key unless it was started with --api-key."),
    Preset("custom", "Custom OpenAI-compatible server", "", True,
           hint="Any server speaking the OpenAI chat-completions API (gateways, proxies, …)."),
)})


# -- the profile ----------------------------------------------------------------------------------

class ProfileError(ConfigError):
    """A profile value is invalid. ``field`` names the attribute (for inline messages)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ProviderProfile:
    """One configured server. The API key is never part of a profile (it lives in the keyring)."""

    id: str
    name: str
    preset: str = "custom"
    base_url: str = ""
    needs_key: bool = True
    root_model: str = ""
    sub_model: str = ""
    models: tuple[str, ...] = ()
    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    context_windows: Mapping[str, int] = field(default_factory=dict)
    concurrency: int = 8
    request_timeout_s: float = 120.0
    is_demo: bool = False

    def __post_init__(self) -> None:
        # Own prices over the catalog for this server; a copy of a list price is not an override.
        object.__setattr__(self, "prices", PriceTable(self.prices, self.base_url.strip(),
                                                      not self.is_demo and not self.is_local))

    # -- derived ----------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return f"{self.name} [{self.id}]" if self.name and self.name != self.id else self.id

    @property
    def native_models_path(self) -> str | None:
        p = PRESETS.get(self.preset)
        return p.native_models_path if p else None

    @property
    def is_local(self) -> bool:
        """A preset for models run on the user's machine (Ollama, vLLM, LM Studio, llama.cpp)."""
        p = PRESETS.get(self.preset)
        return bool(p and p.local)

    def price_rows(self) -> dict[str, ModelPrice]:
        """Every known price of this profile's models: list prices, then the user's own over them."""
        assert isinstance(self.prices, PriceTable)
        return {**self.prices.list_prices_for(self.all_models()), **self.prices}

    @property
    def is_openai_host(self) -> bool:
        return (urlsplit(self.base_url).hostname or "").lower() == OPENAI_HOST

    def all_models(self) -> list[str]:
        """Known model names: the list, then the defaults and priced models not in it."""
        out = list(self.models)
        for m in (self.root_model, self.sub_model, *self.prices, *self.context_windows):
            if m and m not in out:
                out.append(m)
        return out

    def price_for(self, model: str) -> ModelPrice | None:
        return self.prices.get(model)

    def with_changes(self, **changes: Any) -> ProviderProfile:
        return replace(self, **changes)

    # -- conversion -------------------------------------------------------------------------------
    def to_provider_config(self, api_key: str | None = None) -> ProviderConfig:
        """The engine's view. ``api_key`` is dropped when the profile needs none (never sent)."""
        if self.is_demo:
            return ProviderConfig(
                id=self.id, name=self.name, base_url=self.base_url, api_key=None, needs_key=False,
                root_model=self.root_model, sub_model=self.sub_model, concurrency=self.concurrency,
                request_timeout_s=self.request_timeout_s, max_retries=0, is_demo=True)
        return ProviderConfig(
            id=self.id, name=self.name or self.id, base_url=self.base_url.rstrip("/"),
            api_key=api_key if self.needs_key else None, needs_key=self.needs_key,
            root_model=self.root_model, sub_model=self.sub_model or self.root_model,
            prices=self.prices,
            context_windows=MappingProxyType(dict(self.context_windows)),
            concurrency=self.concurrency, request_timeout_s=self.request_timeout_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (for the settings file). Holds no key."""
        return {
            "id": self.id, "name": self.name, "preset": self.preset, "base_url": self.base_url,
            "needs_key": self.needs_key, "root_model": self.root_model, "sub_model": self.sub_model,
            "models": list(self.models),
            "prices": {m: {"input": p.input, "cached_input": p.cached_input, "output": p.output}
                       for m, p in self.prices.items()},
            "context_windows": dict(self.context_windows),
            "concurrency": self.concurrency, "request_timeout_s": self.request_timeout_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProviderProfile:
        """Inverse of :meth:`to_dict`; raises ProfileError for malformed values."""
        try:
            prices = {str(m): ModelPrice(input=float(p["input"]), output=float(p["output"]),
                                         cached_input=None if p.get("cached_input") is None
                                         else float(p["cached_input"]))
                      for m, p in dict(data.get("prices") or {}).items()}
            prices = {m: p for m, p in prices.items()
                      if p != (_PRICES_COPIED_BEFORE.get(m) or _PRICES_COPIED_BEFORE.get(m.rsplit("/", 1)[-1]))}
            windows = {str(m): int(v) for m, v in dict(data.get("context_windows") or {}).items()}
            return cls(
                id=str(data["id"]), name=str(data.get("name") or data["id"]),
                preset=str(data.get("preset") or "custom"), base_url=str(data.get("base_url") or ""),
                needs_key=bool(data.get("needs_key", True)), root_model=str(data.get("root_model") or ""),
                sub_model=str(data.get("sub_model") or ""),
                models=tuple(str(m) for m in data.get("models") or ()),
                prices=prices, context_windows=windows,
                concurrency=int(data.get("concurrency", 8)),
                request_timeout_s=float(data.get("request_timeout_s", 120.0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProfileError(f"a stored provider profile is malformed ({type(exc).__name__}: {exc})") from None


def demo_profile_from(demo: ProviderConfig) -> ProviderProfile:
    """The offline demo (the engine's ``DEMO_PROVIDER``, passed in so ``core`` stays below
    ``engine``) as a profile: always present, first, never removable."""
    return ProviderProfile(
        id=demo.id, name=demo.name, preset="demo", base_url=demo.base_url, needs_key=False,
        root_model=demo.root_model, sub_model=demo.sub_model, models=(demo.root_model, demo.sub_model),
        concurrency=demo.concurrency, request_timeout_s=demo.request_timeout_s, is_demo=True)


def profile_from_preset(preset: str, profile_id: str, *, name: str | None = None,
                        base_url: str | None = None, root_model: str | None = None,
                        sub_model: str | None = None) -> ProviderProfile:
    """A new profile filled from a preset (its models priced from the catalog, no own prices)."""
    p = PRESETS.get(preset)
    if p is None:
        raise ProfileError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}", "preset")
    root = root_model if root_model is not None else p.root_model
    sub = sub_model if sub_model is not None else (p.sub_model or root)
    models = list(p.models)
    for m in (root, sub):
        if m and m not in models:
            models.append(m)
    return ProviderProfile(
        id=profile_id, name=name or (p.name if preset != "custom" else profile_id), preset=preset,
        base_url=base_url if base_url is not None else p.base_url, needs_key=p.needs_key,
        root_model=root, sub_model=sub, models=tuple(models),
        concurrency=p.concurrency, request_timeout_s=p.request_timeout_s)


# -- validation -----------------------------------------------------------------------------------

def env_var_for(profile_id: str) -> str:
    """The per-profile key variable: RLM_DESKTOP_KEY_<ID> (upper case, '-' → '_')."""
    return "RLM_DESKTOP_KEY_" + profile_id.upper().replace("-", "_")


def check_id(profile_id: str) -> None:
    if not profile_id:
        raise ProfileError("the id is empty: give a short name like 'work-gateway'", "id")
    if not ID_PATTERN.match(profile_id):
        raise ProfileError(
            f"the id {profile_id!r} can only use lower-case letters, digits, '-' and '_' (at most 48, "
            "starting with a letter or digit): it names the key in the keyring", "id")


def check_url(url: str) -> None:
    if not url.strip():
        raise ProfileError("the base URL is empty: give the server's address, e.g. "
                           "http://localhost:8000/v1", "base_url")
    shown = mask_url(url.strip())        # an error message never repeats a credential
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProfileError(f"the base URL {shown!r} is not an http:// or https:// address "
                           "(e.g. https://api.example.com/v1)", "base_url")
    if any(c.isspace() for c in url.strip()):
        raise ProfileError(f"the base URL {shown!r} contains spaces", "base_url")
    if parts.username or parts.password:
        raise ProfileError("the base URL must not contain a user name or password: store the key "
                           "as the provider's API key (Settings, Save key) instead", "base_url")
    secret = [n for n, _, v in (q.partition("=") for q in parts.query.split("&")) if v and is_secret_param(n)]
    if secret:   # a profile's URL is saved in the settings file, where no secret belongs
        raise ProfileError(f"the base URL must not carry a secret in its query ({', '.join(secret)}): "
                           "store the key as the provider's API key instead (parameters such as "
                           "api-version may stay)", "base_url")


def validate_profile(profile: ProviderProfile, existing_ids: Iterable[str] = ()) -> list[ProfileError]:
    """Every problem of ``profile`` (empty list: valid). ``existing_ids``: other profiles' ids."""
    errors: list[ProfileError] = []
    if profile.is_demo:
        return errors

    def check(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except ProfileError as exc:
            errors.append(exc)

    check(check_id, profile.id)
    others = list(existing_ids)
    if profile.id == DEMO_ID:
        errors.append(ProfileError("the id 'demo' is reserved for the offline demo provider", "id"))
    elif profile.id in others:
        errors.append(ProfileError(f"a provider with the id {profile.id!r} already exists: choose "
                                   "another id", "id"))
    elif any(env_var_for(o) == env_var_for(profile.id) for o in others):
        errors.append(ProfileError(f"the id {profile.id!r} differs from another only by '-'/'_': "
                                   "choose a more distinct id", "id"))
    if not profile.name.strip():
        errors.append(ProfileError("the display name is empty", "name"))
    if profile.preset not in PRESETS:
        errors.append(ProfileError(f"unknown preset {profile.preset!r}: choose one of "
                                   f"{', '.join(PRESETS)}", "preset"))
    check(check_url, profile.base_url)
    for fname in ("root_model", "sub_model"):
        v = getattr(profile, fname)
        if v != v.strip() or any(c.isspace() for c in v):
            errors.append(ProfileError(f"the model name {v!r} contains spaces", fname))
    if profile.concurrency < 1 or profile.concurrency > 256:
        errors.append(ProfileError(f"concurrency must be between 1 and 256 (got {profile.concurrency})",
                                   "concurrency"))
    if not profile.request_timeout_s > 0:
        errors.append(ProfileError("the request timeout must be more than 0 seconds (got "
                                   f"{profile.request_timeout_s:g})", "request_timeout_s"))
    for m, p in profile.prices.items():
        for part in ("input", "output", "cached_input"):
            v = getattr(p, part)
            if v is not None and v < 0:
                errors.append(ProfileError(f"the {part.replace('_', ' ')} price of {m!r} is negative",
                                           "prices"))
    for m, w in profile.context_windows.items():
        if w <= 0:
            errors.append(ProfileError(f"the context window of {m!r} must be more than 0 tokens",
                                       "context_windows"))
    return errors


def ensure_valid(profile: ProviderProfile, existing_ids: Iterable[str] = ()) -> None:
    """Raise the first problem of ``profile`` as a ProfileError (all problems joined)."""
    errors = validate_profile(profile, existing_ids)
    if errors:
        exc = ProfileError("; ".join(str(e) for e in errors), errors[0].field)
        raise exc
