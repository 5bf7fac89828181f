"""Cost from token usage and a per-model price table. Unknown price → cost unknown (None), never 0."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rlm_desktop.core.config import ModelPrice


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
