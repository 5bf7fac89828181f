"""Cost from token usage and a per-model price table. Unknown price → cost unknown (None), never 0.

List prices come from the ``genai-prices`` package (pydantic's maintained price data), read from the
data bundled with the installed version only: its updater (``UpdatePrices``, which downloads newer
data) is never started, so looking up a price never touches the network."""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Iterable, Mapping
from typing import Any

from rlm_desktop.core.config import ModelPrice

CATALOG_PACKAGE = "genai-prices"


def cost_usd(price: ModelPrice | None, input_tokens: int, output_tokens: int,
             cached_tokens: int = 0) -> float | None:
    """USD for one call. ``input_tokens`` includes ``cached_tokens`` (OpenAI's usage convention)."""
    if price is None:
        return None
    cached = max(0, min(cached_tokens, input_tokens))
    uncached = input_tokens - cached
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    return (uncached * price.input + cached * cached_rate + output_tokens * price.output) / 1_000_000


def lookup(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    """Exact match first, then the name without a provider prefix (``openai/gpt-4o`` → ``gpt-4o``)."""
    if model in prices:
        return prices[model]
    short = model.rsplit("/", 1)[-1]
    return prices.get(short)


def unpriced_models(choices: Iterable[tuple[Mapping[str, ModelPrice], str]]) -> list[str]:
    """The models among ``(prices, model)`` choices that have no price: their cost is unknown, so a
    USD budget cannot stop them (sorted, each once)."""
    return sorted({m for prices, m in choices if m and lookup(prices, m) is None})


# -- the maintained catalog (genai-prices) ---------------------------------------------------------

@functools.cache
def _snapshot() -> Any:
    """genai-prices' bundled data (imported on first use: it is 1.6 MB of Python, ~0.3 s)."""
    from genai_prices import data_snapshot

    snap = data_snapshot.get_snapshot()
    if getattr(snap, "from_auto_update", False):   # someone started its updater in this process
        snap = data_snapshot._bundled_snapshot()
    return snap


@functools.cache
def catalog_version() -> str:
    """``genai-prices X.Y.Z``, or a sentence saying it is missing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{CATALOG_PACKAGE} {version(CATALOG_PACKAGE)}"
    except PackageNotFoundError:
        return f"{CATALOG_PACKAGE} (not installed)"


@functools.cache
def catalog_date(today: _dt.date | None = None) -> str:
    """The date of the newest price change in force in the bundled data (ISO), or "" if unknown.

    The package records no build date of its own; its newest dated price change that has taken
    effect is the best honest measure of how current the data is."""
    today = today or _dt.date.today()
    newest: _dt.date | None = None
    try:
        providers = _snapshot().providers
    except ImportError:
        return ""
    for prov in providers:
        for model in prov.models:
            prices = model.prices if isinstance(model.prices, list) else []
            for cond in prices:
                start = getattr(getattr(cond, "constraint", None), "start_date", None)
                if isinstance(start, _dt.date) and start <= today and (newest is None or start > newest):
                    newest = start
    return newest.isoformat() if newest else ""


def catalog_label() -> str:
    """What the prices come from, for people: ``genai-prices 0.2.3, price changes up to 2026-10-14``."""
    date = catalog_date()
    return catalog_version() + (f", price changes up to {date}" if date else "")


def _to_model_price(p: Any) -> ModelPrice | None:
    def num(v: Any) -> float | None:
        if v is None:
            return None
        base = getattr(v, "base", v)   # tiered prices: the base tier
        return float(base)
    inp, out = num(p.input_mtok), num(p.output_mtok)
    if inp is None or out is None:
        return None
    return ModelPrice(input=inp, output=out, cached_input=num(p.cache_read_mtok))


@functools.lru_cache(maxsize=4096)
def catalog_price(model: str, base_url: str = "") -> ModelPrice | None:
    """The list price of ``model`` (USD per million tokens) from the bundled catalog.

    ``base_url`` picks the provider when the catalog knows its API address (OpenRouter's names and
    prices differ from OpenAI's); on any other server the model name alone decides (a gateway
    usually passes the vendor's price on). Whether a server's models are billed at all is the
    caller's question (see :class:`PriceTable`)."""
    if not model:
        return None
    try:
        snap = _snapshot()
    except ImportError:
        return None
    provider = None
    if base_url:
        try:
            provider = snap.find_provider(None, None, base_url)
        except LookupError:
            provider = None
    try:
        if provider is not None:
            found = provider.find_model(model.lower(), all_providers=snap.providers)
        else:
            found = snap.find_provider_model(model, None, None, None)[1]
    except LookupError:
        found = None
    if found is None:
        if provider is None and "/" in model:   # vendor/model on a gateway the catalog does not know
            return catalog_price(model.rsplit("/", 1)[-1], base_url)
        return None
    return _to_model_price(found.get_prices(_dt.datetime.now(tz=_dt.UTC)))


class PriceTable(Mapping[str, ModelPrice]):
    """A provider's prices: its own (the user's, they win), then the catalog for every other model.

    Iterating, ``len`` and equality see the own prices only; looking a model up (``[]``, ``in``,
    ``get``) falls back to the catalog for the provider's base URL. An own price equal to the
    catalog's is not kept as an override, so a profile follows the catalog until the user changes a
    price."""

    __slots__ = ("_own", "base_url", "use_catalog")

    def __init__(self, own: Mapping[str, ModelPrice] | None = None, base_url: str = "",
                 use_catalog: bool = True) -> None:
        """``use_catalog=False``: no list prices (a server running models on the user's machine: a
        local model is not billed like a hosted one of the same name)."""
        items = own._own if isinstance(own, PriceTable) else dict(own or {})
        self.base_url = base_url
        self.use_catalog = use_catalog
        self._own: dict[str, ModelPrice] = {m: p for m, p in items.items() if p != self.list_price(m)}

    def list_price(self, model: str) -> ModelPrice | None:
        """The catalog's price for ``model`` on this server (None where the catalog is not used)."""
        return catalog_price(model, self.base_url) if self.use_catalog else None

    def list_prices_for(self, models: Iterable[str]) -> dict[str, ModelPrice]:
        return {m: p for m in models if (p := self.list_price(m)) is not None}

    def __getitem__(self, model: str) -> ModelPrice:
        p = self._own.get(model)
        if p is None:
            p = self.list_price(model)
        if p is None:
            raise KeyError(model)
        return p

    def __iter__(self) -> Any:
        return iter(self._own)

    def __len__(self) -> int:
        return len(self._own)

    def __repr__(self) -> str:
        return f"PriceTable({self._own!r}, base_url={self.base_url!r}, use_catalog={self.use_catalog})"
