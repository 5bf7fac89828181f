"""Typed preferences (schema version + upgrade), kept in their own file apart from window state:
provider profiles, default run limits, sandbox limits, memo cache, last model choices. Qt-free.

The file is ``<config>/rlm-desktop/preferences.ini`` (``$XDG_CONFIG_HOME`` on Linux, or
``$RLM_DESKTOP_HOME/config`` when that is set), in QSettings' INI format: the desktop app keeps it
through ``QSettings`` (:class:`rlm_desktop.ui.settings.Settings`), the CLI and Python through the
Qt-free :class:`rlm_desktop.session.ini.IniStore`, both behind the small :class:`PrefStore`
protocol. API keys are never written here: see :mod:`rlm_desktop.session.secrets`.
"""

from __future__ import annotations

import json
import os
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Protocol

from rlm_desktop.core.config import ConfigError, ProviderConfig, RunLimits, SandboxLimits
from rlm_desktop.core.profiles import (
    DEMO_ID,
    ProfileError,
    ProviderProfile,
    demo_profile_from,
    ensure_valid,
    env_var_for,
    profile_from_preset,
)
from rlm_desktop.core.redact import is_secret_param, mask_url
from rlm_desktop.engine.demo import DEMO_PROVIDER
from rlm_desktop.session import secrets
from rlm_desktop.session.ini import IniStore

SCHEMA_VERSION = 1
FILE_NAME = "preferences.ini"
LEGACY_PROFILE_ID = "legacy"

# v0 ("flat") layout, as written before profiles existed: single provider and limits at top level.
LEGACY_KEYS = ("base_url", "model", "sub_model", "api_key", "max_iterations", "max_depth",
               "max_sub_calls", "budget_usd", "cell_timeout", "run_timeout", "memory_mb",
               "allow_weak_sandbox", "memo_cache")


class SettingsError(ConfigError):
    """A preference cannot be used; the message says which and what to do."""


class UnknownProfileError(SettingsError):
    """No provider profile with that id."""


class MissingKeyError(SettingsError):
    """A profile needs a key and none was found anywhere in the resolution order."""


def provider_config_for(prof: ProviderProfile) -> ProviderConfig:
    """The engine's ProviderConfig for a profile with its key resolved (environment variable, then
    keyring, then session key). Raises MissingKeyError. It may wait on the keyring (a locked
    collection shows an unlock prompt), so the window calls it off the GUI thread; it touches no
    QSettings, so any thread may."""
    if prof.is_demo:
        return DEMO_PROVIDER
    resolved = secrets.resolve_key(prof)
    if prof.needs_key and not resolved.found:
        extra = f" ({resolved.note})" if resolved.note else ""
        envs = " or ".join(secrets.env_vars_for(prof))
        raise MissingKeyError(
            f"no key for provider {prof.id!r}: set one in Settings → Providers, with `rlm-desktop "
            f"provider set-key {prof.id}`, or in the environment variable {envs}{extra}")
    return prof.to_provider_config(resolved.key)


def demo_profile() -> ProviderProfile:
    """The offline demo provider as a profile."""
    return demo_profile_from(DEMO_PROVIDER)


def preferences_path() -> Path:
    """Where the preferences file lives (see the module docstring)."""
    home = os.environ.get("RLM_DESKTOP_HOME")
    if home:
        base = Path(home) / "config"
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".config"
    return base / "rlm-desktop" / FILE_NAME


class PrefStore(Protocol):
    """Where preferences are kept: keys like ``group/key``, values as stored (strings from a file)."""

    def value(self, key: str, default: Any = None) -> Any: ...
    def contains(self, key: str) -> bool: ...
    def set_value(self, key: str, value: Any) -> None: ...
    def remove(self, key: str) -> None: ...
    def child_keys(self, group: str) -> list[str]: ...
    def sync(self) -> None: ...


def _parse(raw: Any, default: Any, type_name: str) -> Any:
    """A stored value (INI gives strings) as the field's type; ValueError when it is not one."""
    optional = "None" in type_name
    if raw is None:
        return default
    if isinstance(raw, str) and raw.strip().lower() in ("", "none", "null") and optional:
        return None
    if type_name.startswith("bool"):
        if isinstance(raw, bool):
            return raw
        s = str(raw).strip().lower()
        if s in ("true", "1", "yes", "on"):
            return True
        if s in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{raw!r} is not true/false")
    if type_name.startswith("int"):
        f = float(raw)
        if f != int(f):
            raise ValueError(f"{raw!r} is not a whole number")
        return int(f)
    if type_name.startswith("float"):
        return float(raw)
    return str(raw)


def _store(value: Any) -> Any:
    return "none" if value is None else value


class Preferences:
    """The app's preferences. Every getter returns a valid value (bad stored values fall back to
    defaults with a notice in :attr:`notices`); every setter validates first.

    ``store``: where they are kept (default: the preferences file through the Qt-free
    :class:`IniStore`; the desktop app passes a QSettings-backed store)."""

    def __init__(self, path: str | Path | None = None, *, store: PrefStore | None = None) -> None:
        self.path = Path(path) if path is not None else preferences_path()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._qs: PrefStore = store if store is not None else IniStore(self.path)
        self.notices: list[str] = []
        error = getattr(self._qs, "error", None)
        if error:
            self.notices.append(f"{error}; defaults are used")
        self._upgrade()

    # -- schema -----------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        try:
            return int(self._qs.value("schema_version", 0))
        except (TypeError, ValueError):
            return 0

    def _upgrade(self) -> None:
        version = self.schema_version if self._qs.contains("schema_version") else None
        if version is None:
            if any(self._qs.contains(k) for k in LEGACY_KEYS):
                self._upgrade_v0_to_v1()
            self._qs.set_value("schema_version", SCHEMA_VERSION)
            self._sync_quietly()
        elif version > SCHEMA_VERSION:
            self.notices.append(f"The preferences file {self.path} was written by a newer version "
                                f"(schema {version}); it is read as far as this version understands "
                                "it and not upgraded.")
        elif version < SCHEMA_VERSION:
            if version == 0:
                self._upgrade_v0_to_v1()
            self._qs.set_value("schema_version", SCHEMA_VERSION)
            self._sync_quietly()

    def _upgrade_v0_to_v1(self) -> None:
        """v0 kept one provider and the limits as flat top-level keys (and sometimes the key!).
        v1 has profiles, grouped limits and never a key: the old key moves to the keyring."""
        qs = self._qs
        old = {k: qs.value(k) for k in LEGACY_KEYS if qs.contains(k)}
        lim_map = {"max_iterations": "max_iterations", "max_depth": "max_depth",
                   "max_sub_calls": "max_sub_calls", "budget_usd": "budget_usd",
                   "cell_timeout": "cell_timeout_s", "run_timeout": "run_timeout_s"}
        for k, new in lim_map.items():
            if k in old:
                qs.set_value(f"limits/{new}", old[k])
        if "memory_mb" in old:
            qs.set_value("sandbox/memory_mb", old["memory_mb"])
        if "allow_weak_sandbox" in old:
            qs.set_value("sandbox/allow_weak", old["allow_weak_sandbox"])
        if "memo_cache" in old:
            qs.set_value("run/memo_cache", old["memo_cache"])
        base_url = str(old.get("base_url") or "").strip()
        if base_url:
            model = str(old.get("model") or "").strip()
            sub = str(old.get("sub_model") or "").strip() or model
            prof = profile_from_preset("custom", LEGACY_PROFILE_ID, name="Provider from older settings",
                                       base_url=base_url, root_model=model, sub_model=sub)
            key = str(old.get("api_key") or "").strip()
            prof = replace(prof, needs_key=bool(key) or prof.is_openai_host)
            try:
                ensure_valid(prof)
                self._write_profile(prof)
                self._write_order([*self._order(), prof.id])
                if prof.root_model:
                    qs.set_value("choices/root_profile", prof.id)
                    qs.set_value("choices/root_model", prof.root_model)
                    qs.set_value("choices/sub_profile", prof.id)
                    qs.set_value("choices/sub_model", prof.sub_model)
            except ProfileError as exc:
                self.notices.append(f"The provider from older settings ({mask_url(base_url)}) was not "
                                    f"kept: {exc}")
            if key:
                try:
                    secrets.set_key(LEGACY_PROFILE_ID, key)
                    self.notices.append("The API key found in the old settings file was moved to the "
                                        f"system keyring (provider {LEGACY_PROFILE_ID!r}) and removed "
                                        "from the file.")
                except secrets.SecretsError as exc:
                    secrets.set_session_key(LEGACY_PROFILE_ID, key)
                    self.notices.append(
                        "The API key found in the old settings file was removed from the file. It "
                        f"could not be stored in a keyring ({exc}), so it is kept for this session "
                        f"only: store it with `rlm-desktop provider set-key {LEGACY_PROFILE_ID}` or "
                        f"set {env_var_for(LEGACY_PROFILE_ID)}.")
        for k in old:
            qs.remove(k)
        qs.set_value("schema_version", 1)
        self._sync_quietly()
        self.notices.append(f"Preferences were upgraded from schema 0 to 1 ({self.path}).")

    def _sync_quietly(self) -> None:
        """Write an upgrade; a read-only file keeps working from memory, said in :attr:`notices`."""
        try:
            self.sync()
        except SettingsError as exc:
            self.notices.append(str(exc))

    def sync(self) -> None:
        try:
            self._qs.sync()
        except OSError as exc:
            raise SettingsError(f"the preferences file {self.path} could not be written "
                                f"({exc.strerror or exc}): check the folder's permissions and free "
                                "space") from None

    # -- providers --------------------------------------------------------------------------------
    def _order(self) -> list[str]:
        raw = self._qs.value("providers/_order")
        if not raw:
            return []
        try:
            ids = json.loads(str(raw))
        except json.JSONDecodeError:
            self.notices.append("The provider list in the preferences file was unreadable; the "
                                "profiles found are shown in file order.")
            ids = [k for k in self._qs.child_keys("providers") if not k.startswith("_")]
        return [str(i) for i in ids if isinstance(i, str)]

    def _write_order(self, ids: list[str]) -> None:
        self._qs.set_value("providers/_order", json.dumps(ids))

    def _write_profile(self, profile: ProviderProfile) -> None:
        self._qs.set_value(f"providers/{profile.id}", json.dumps(profile.to_dict(), sort_keys=True))

    def _read_profile(self, profile_id: str) -> ProviderProfile | None:
        raw = self._qs.value(f"providers/{profile_id}")
        if raw is None:
            return None
        try:
            data = json.loads(str(raw))
            prof = ProviderProfile.from_dict(data)
        except (json.JSONDecodeError, ProfileError) as exc:
            self.notices.append(f"The stored provider {profile_id!r} is unreadable and was skipped "
                                f"({exc}); add it again in Settings.")
            return None
        return prof if prof.id == profile_id else replace(prof, id=profile_id)

    def providers(self) -> list[ProviderProfile]:
        """All profiles, the offline demo first."""
        out = [demo_profile()]
        for pid in self._order():
            if pid == DEMO_ID:
                continue
            prof = self._read_profile(pid)
            if prof is not None:
                out.append(prof)
        return out

    def provider_ids(self) -> list[str]:
        return [p.id for p in self.providers()]

    def has_real_provider(self) -> bool:
        """True when at least one profile besides the offline demo is configured."""
        return len(self.providers()) > 1

    def profile(self, profile_id: str) -> ProviderProfile:
        for p in self.providers():
            if p.id == profile_id:
                return p
        known = ", ".join(self.provider_ids())
        raise UnknownProfileError(f"no provider profile {profile_id!r} (configured: {known}). Add it "
                                  f"with `rlm-desktop provider add {profile_id} --preset …` or in "
                                  "Settings.")

    def save_profile(self, profile: ProviderProfile, *, replace_id: str | None = None) -> None:
        """Add or update ``profile`` (validated). ``replace_id``: the id it had before (renames)."""
        if profile.is_demo or profile.id == DEMO_ID or replace_id == DEMO_ID:
            raise SettingsError("the offline demo provider cannot be changed")
        order = self._order()
        old_id = replace_id if replace_id is not None else profile.id
        others = [i for i in order if i != old_id]
        ensure_valid(profile, others)
        self._write_profile(profile)
        if old_id in order:
            order[order.index(old_id)] = profile.id
        elif profile.id not in order:
            order.append(profile.id)
        if replace_id is not None and replace_id != profile.id:
            self._qs.remove(f"providers/{replace_id}")
            for which in ("root", "sub"):
                if self._qs.value(f"choices/{which}_profile") == replace_id:
                    self._qs.set_value(f"choices/{which}_profile", profile.id)
        self._write_order(order)
        self.sync()

    def add_profile(self, profile: ProviderProfile) -> None:
        """Add a new profile (validated); an existing id is an error, not an update."""
        ensure_valid(profile, [DEMO_ID, *self._order()])
        self.save_profile(profile)

    def remove_profile(self, profile_id: str) -> None:
        """Forget a profile (its keyring key is deleted by the caller, who can report on it)."""
        if profile_id == DEMO_ID:
            raise SettingsError("the offline demo provider cannot be removed")
        order = self._order()
        if profile_id not in order:
            self.profile(profile_id)   # raises UnknownProfileError
        self._qs.remove(f"providers/{profile_id}")
        self._write_order([i for i in order if i != profile_id])
        self.sync()

    def provider_config(self, profile_id: str) -> ProviderConfig:
        """The engine's ProviderConfig for ``profile_id`` with its key resolved (see
        :func:`provider_config_for`). Raises UnknownProfileError or MissingKeyError."""
        return provider_config_for(self.profile(profile_id))

    # -- limits -----------------------------------------------------------------------------------
    def _read_dataclass(self, group: str, cls: type, label: str) -> Any:
        values: dict[str, Any] = {}
        for f in fields(cls):
            key = f"{group}/{f.name}"
            if not self._qs.contains(key):
                continue
            try:
                values[f.name] = _parse(self._qs.value(key), f.default, str(f.type))
            except (TypeError, ValueError) as exc:
                self.notices.append(f"The stored {label} value {f.name} is invalid ({exc}); the "
                                    f"default {f.default!r} is used.")
        try:
            return cls(**values)
        except ConfigError as exc:
            self.notices.append(f"The stored {label} are invalid ({exc}); defaults are used.")
            return cls()

    def _write_dataclass(self, group: str, value: Any) -> None:
        for f in fields(value):
            self._qs.set_value(f"{group}/{f.name}", _store(getattr(value, f.name)))
        self.sync()

    def default_limits(self) -> RunLimits:
        return self._read_dataclass("limits", RunLimits, "run limits")

    def set_default_limits(self, limits: RunLimits) -> None:
        self._write_dataclass("limits", limits)

    def sandbox_limits(self) -> SandboxLimits:
        return self._read_dataclass("sandbox", SandboxLimits, "sandbox limits")

    def set_sandbox_limits(self, limits: SandboxLimits) -> None:
        self._write_dataclass("sandbox", limits)

    def allow_weak_sandbox(self) -> bool:
        """Whether a weak sandbox may run (part of the sandbox limits)."""
        return self.sandbox_limits().allow_weak

    def memo_cache(self) -> bool:
        try:
            return bool(_parse(self._qs.value("run/memo_cache"), True, "bool"))
        except ValueError:
            return True

    def set_memo_cache(self, on: bool) -> None:
        self._qs.set_value("run/memo_cache", bool(on))
        self.sync()

    def follow_outside_links(self) -> bool:
        """Whether links in a chosen folder that lead out of it are followed (default: no, they
        are reported and skipped). The CLI reads it too."""
        try:
            return bool(_parse(self._qs.value("documents/follow_outside_links"), False, "bool"))
        except ValueError:
            self.notices.append("The stored setting documents/follow_outside_links is invalid; links "
                                "out of folders are not followed.")
            return False

    def set_follow_outside_links(self, on: bool) -> None:
        self._qs.set_value("documents/follow_outside_links", bool(on))
        self.sync()

    # -- last choices -----------------------------------------------------------------------------
    def _choice(self, which: str) -> tuple[str, str]:
        pid = str(self._qs.value(f"choices/{which}_profile") or "")
        model = str(self._qs.value(f"choices/{which}_model") or "")
        ids = self.provider_ids()
        if pid not in ids:
            demo = demo_profile()
            return DEMO_ID, demo.root_model if which == "root" else demo.sub_model
        if not model:
            prof = self.profile(pid)
            model = prof.root_model if which == "root" else (prof.sub_model or prof.root_model)
        return pid, model

    def last_root_choice(self) -> tuple[str, str]:
        """(profile id, model) last used as the root model; the demo when none or gone."""
        return self._choice("root")

    def last_sub_choice(self) -> tuple[str, str]:
        return self._choice("sub")

    def set_last_root_choice(self, profile_id: str, model: str) -> None:
        self._qs.set_value("choices/root_profile", profile_id)
        self._qs.set_value("choices/root_model", model)
        self.sync()

    def set_last_sub_choice(self, profile_id: str, model: str) -> None:
        self._qs.set_value("choices/sub_profile", profile_id)
        self._qs.set_value("choices/sub_model", model)
        self.sync()

    # -- the root model's system prompt -------------------------------------------------------------
    def custom_system_prompt(self) -> str:
        """A system prompt that replaces the default ("" for the default). The CLI reads it too;
        ``engine.prompts.missing_contract`` says what of the REPL contract it lacks."""
        value = self._qs.value("prompt/custom_system_prompt")
        return value if isinstance(value, str) else ""

    def set_custom_system_prompt(self, text: str) -> None:
        if text.strip():
            self._qs.set_value("prompt/custom_system_prompt", text)
        else:
            self._qs.remove("prompt/custom_system_prompt")
        self.sync()

    # -- where File ▸ Send trace to… sends (its headers are secrets: see secrets.get_otlp_headers) --
    def otlp_endpoint(self) -> str:
        """The OTLP/HTTP endpoint last remembered ("" for none). Never carries a credential."""
        value = self._qs.value("otlp/endpoint")
        return value if isinstance(value, str) else ""

    def set_otlp_endpoint(self, url: str) -> None:
        """Remember ``url`` ("" forgets it). A URL with a user name, a password or a secret query
        parameter is refused (ConfigError): the preferences file is no place for a credential."""
        url = url.strip()
        if url:
            check_otlp_url(url)
            self._qs.set_value("otlp/endpoint", url)
        else:
            self._qs.remove("otlp/endpoint")
        self.sync()


def check_otlp_url(url: str) -> None:
    """Refuse an endpoint that cannot be kept in the preferences file (see set_otlp_endpoint)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise ConfigError(f"the endpoint {mask_url(url)!r} is not an http:// or https:// URL "
                          "(e.g. http://localhost:4318/v1/traces)")
    if parts.username or parts.password:
        raise ConfigError("the endpoint must not contain a user name or password to be remembered: "
                          "give the credential as a header (e.g. Authorization=Bearer …), which is "
                          "kept in the system keyring")
    secret = [n for n, _, v in (q.partition("=") for q in parts.query.split("&")) if v and is_secret_param(n)]
    if secret:
        raise ConfigError(f"the endpoint must not carry a secret in its query ({', '.join(secret)}) to be "
                          "remembered: give it as a header instead, which is kept in the system keyring")
