"""Run configuration: limits, sandbox limits, provider settings. Frozen, validated at the edge."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

from rlm_desktop.core.logs import register_secret, register_url
from rlm_desktop.core.redact import mask_url


class ConfigError(ValueError):
    """A configuration value is invalid; the message says which and what is allowed."""


def _positive(name: str, value: float | int | None, *, allow_none: bool = False) -> None:
    if value is None:
        if allow_none:
            return
        raise ConfigError(f"{name} must be set")
    if value <= 0:
        raise ConfigError(f"{name} must be greater than 0 (got {value})")


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Every limit a run enforces. ``None`` means "no limit" where allowed."""

    max_iterations: int = 20          # root iterations (model call + its cells)
    max_depth: int = 1                # rlm_query allowed while depth < max_depth (root is depth 0)
    max_sub_calls: int = 500          # llm_query + batched items + rlm_query, all depths together
    budget_usd: float | None = 2.0    # total spend; runs with unknown prices stop on tokens instead
    max_tokens: int | None = None     # input + output tokens, all calls together
    cell_timeout_s: float = 60.0      # wall clock per code cell; the sandbox is killed after it
    call_timeout_s: float = 120.0     # one model request (per attempt)
    run_timeout_s: float = 1800.0     # wall clock for the whole run
    max_output_chars: int = 20_000    # cell output fed back to the root model (truncation stated)
    batch_concurrency: int = 8        # concurrent sub-calls of llm_query_batched
    max_history_chars: int = 240_000  # root conversation size at which old cell outputs are shortened
    max_response_chars: int = 1_000_000  # one model reply; a longer one is stopped (runaway stream)

    def __post_init__(self) -> None:
        _positive("max_iterations", self.max_iterations)
        if self.max_depth < 0:
            raise ConfigError(f"max_depth must be 0 or more (got {self.max_depth})")
        if self.max_sub_calls < 0:
            raise ConfigError(f"max_sub_calls must be 0 or more (got {self.max_sub_calls})")
        _positive("budget_usd", self.budget_usd, allow_none=True)
        _positive("max_tokens", self.max_tokens, allow_none=True)
        _positive("cell_timeout_s", self.cell_timeout_s)
        _positive("call_timeout_s", self.call_timeout_s)
        _positive("run_timeout_s", self.run_timeout_s)
        _positive("max_output_chars", self.max_output_chars)
        _positive("batch_concurrency", self.batch_concurrency)
        _positive("max_history_chars", self.max_history_chars)
        _positive("max_response_chars", self.max_response_chars)


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Resource limits of the REPL process (enforced inside the worker and by the host)."""

    memory_mb: int = 2048             # address space of the worker
    cpu_s: int = 600                  # CPU seconds over the worker's life
    scratch_mb: int = 256             # private writable scratch (tmpfs where namespaces allow)
    max_file_mb: int = 64             # largest single file the worker may write
    max_open_files: int = 256
    max_processes: int = 64           # threads count here too (inside the sandbox's user ns)
    output_cap_bytes: int = 1_000_000  # stdout+stderr kept per cell
    allow_weak: bool = False          # run even when isolation is below "good"

    def __post_init__(self) -> None:
        for name in ("memory_mb", "cpu_s", "scratch_mb", "max_file_mb", "max_open_files",
                     "max_processes", "output_cap_bytes"):
            _positive(name, getattr(self, name))


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None   # None: cached input billed as input


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """Everything the engine needs to talk to one OpenAI-compatible server.

    The API key is held here only in memory and is excluded from ``repr`` so it cannot leak
    through logs or exception messages.
    """

    id: str
    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    needs_key: bool = True
    root_model: str = ""
    sub_model: str = ""
    prices: Mapping[str, ModelPrice] = field(default_factory=lambda: MappingProxyType({}))
    context_windows: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    concurrency: int = 8
    request_timeout_s: float = 120.0
    max_retries: int = 4
    is_demo: bool = False

    def __post_init__(self) -> None:
        # Whatever path a key took to get here, it can never be written to the log; nor can the
        # credentials inside the base URL (user info, ?api_key=…).
        register_secret(self.api_key)
        register_url(self.base_url)

    def price_for(self, model: str) -> ModelPrice | None:
        return self.prices.get(model)

    @property
    def shown_url(self) -> str:
        """The base URL as people may see it: credentials inside it masked."""
        return mask_url(self.base_url)

    def __repr__(self) -> str:   # the generated one would show the URL's credentials
        parts = [f"{f.name}={(self.shown_url if f.name == 'base_url' else getattr(self, f.name))!r}"
                 for f in fields(self) if f.repr]
        return f"ProviderConfig({', '.join(parts)})"


@dataclass(frozen=True, slots=True)
class RunConfig:
    query: str
    root_model: str
    sub_model: str
    limits: RunLimits = field(default_factory=RunLimits)
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)
    memo_cache: bool = True

    def __post_init__(self) -> None:
        if not self.query.strip():
            raise ConfigError("the query is empty: type a question about the documents")
