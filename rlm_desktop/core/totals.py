"""Run totals, computed in one place: tokens (input / cached / output), cost (known, partial or
unknown; measured or estimated), model calls, cells, sub-calls and iterations — for a whole
trace, a session turn, or any subtree — with a breakdown by model and by depth. The status bar,
the CLI, the history and every export read them from here."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rlm_desktop.core.trace import Attr, Span, SpanKind, SpanStatus, Trace


class _CostFacts:
    """What a sum of model calls says about its cost: known, estimated, or unknown (None)."""

    __slots__ = ()
    cost_usd: float
    cost_unknown_calls: int
    estimated_calls: int

    def _model_calls(self) -> int:
        raise NotImplementedError

    @property
    def cost_known(self) -> bool:
        return self.cost_unknown_calls == 0

    @property
    def tokens_estimated(self) -> bool:
        return self.estimated_calls > 0

    @property
    def cost_value(self) -> float | None:
        """The cost, or None when no call's price is known (a partial sum is still a sum)."""
        n = self._model_calls()
        return None if n and self.cost_unknown_calls == n else self.cost_usd


@dataclass(slots=True)
class Usage(_CostFacts):
    """Tokens and cost of some model calls."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown_calls: int = 0
    estimated_calls: int = 0

    def add_call(self, a: dict[str, Any], running: bool) -> None:
        self.calls += 1
        _add_usage(self, a, running)

    def add(self, other: Usage) -> None:
        self.calls += other.calls
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_tokens += other.cached_tokens
        self.cost_usd += other.cost_usd
        self.cost_unknown_calls += other.cost_unknown_calls
        self.estimated_calls += other.estimated_calls

    def _model_calls(self) -> int:
        return self.calls

    def as_dict(self) -> dict[str, Any]:
        cost = self.cost_value
        return {"calls": self.calls, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cached_tokens": self.cached_tokens,
                "cost_usd": None if cost is None else round(cost, 6), "cost_known": self.cost_known,
                "tokens_estimated": self.tokens_estimated}


@dataclass(slots=True)
class Totals(_CostFacts):
    llm_calls: int = 0
    code_cells: int = 0
    sub_calls: int = 0
    iterations: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    cost_unknown_calls: int = 0
    estimated_calls: int = 0      # model calls whose tokens (and so cost) are estimates
    incomplete_spans: int = 0
    errors: int = 0
    cache_hits: int = 0           # memoized sub-calls (answered without a model call)
    by_model: dict[str, Usage] = field(default_factory=dict)
    by_depth: dict[int, Usage] = field(default_factory=dict)

    def _model_calls(self) -> int:
        return self.llm_calls

    def as_dict(self) -> dict[str, Any]:
        return {"llm_calls": self.llm_calls, "code_cells": self.code_cells, "sub_calls": self.sub_calls,
                "iterations": self.iterations, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cached_tokens": self.cached_tokens,
                "cost_usd": round(self.cost_usd, 6) if self.llm_calls > self.cost_unknown_calls else None,
                "cost_known": self.cost_known, "tokens_estimated": self.tokens_estimated,
                "incomplete_spans": self.incomplete_spans,
                "errors": self.errors}

    def breakdown(self) -> dict[str, Any]:
        return {"by_model": {m: u.as_dict() for m, u in sorted(self.by_model.items())},
                "by_depth": {str(d): u.as_dict() for d, u in sorted(self.by_depth.items())}}


def _add_usage(into: Usage | Totals, a: dict[str, Any], running: bool) -> None:
    """Add one model call's tokens and cost (known, unknown or estimated) to ``into``."""
    into.input_tokens += _int(a.get(Attr.INPUT_TOKENS))
    into.output_tokens += _int(a.get(Attr.OUTPUT_TOKENS))
    into.cached_tokens += _int(a.get(Attr.CACHED_TOKENS))
    if a.get(Attr.TOKENS_ESTIMATED):
        into.estimated_calls += 1
    cost = a.get(Attr.COST_USD)
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        into.cost_usd += float(cost)
    elif not running:
        into.cost_unknown_calls += 1


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _spans(source: Trace | Span | Iterable[Span]) -> Iterator[Span]:
    if isinstance(source, Trace):
        yield from source.spans.values()
        return
    roots = [source] if isinstance(source, Span) else list(source)
    stack = list(reversed(roots))
    while stack:                      # iterative: a trace may nest thousands deep
        s = stack.pop()
        yield s
        stack.extend(reversed(s.children))


def totals(source: Trace | Span | Iterable[Span]) -> Totals:
    """Counts, tokens and cost summed over model calls (each call counted once, at any depth) of a
    whole trace, one span's subtree, or several subtrees (e.g. the turns of a session)."""
    t = Totals()
    if isinstance(source, Trace):
        top = list(source.roots)
    elif isinstance(source, Span):
        top = [source]
    else:
        source = top = list(source)
    top_ids = {id(s) for s in top}       # iterations are counted on the top runs only
    for s in _spans(source):
        if s.running:
            t.incomplete_spans += 1
        elif s.status in (SpanStatus.ERROR, SpanStatus.TIMEOUT):
            t.errors += 1
        if s.kind == SpanKind.LLM_CALL:
            t.llm_calls += 1
            a = s.attributes
            _add_usage(t, a, s.running)
            model = str(a.get(Attr.MODEL) or "?")
            t.by_model.setdefault(model, Usage()).add_call(a, s.running)
            t.by_depth.setdefault(_int(a.get(Attr.DEPTH)), Usage()).add_call(a, s.running)
        elif s.kind == SpanKind.CODE_CELL:
            t.code_cells += 1
        elif s.kind == SpanKind.SUB_CALL:
            t.sub_calls += 1
            if s.attributes.get(Attr.CACHE_HIT):
                t.cache_hits += 1
        if s.kind == SpanKind.RUN and id(s) in top_ids:
            t.iterations += sum(1 for c in s.children if c.kind == SpanKind.ITERATION)
    return t


def subtree_usage(trace: Trace) -> dict[str, Usage]:
    """The model-call usage of every span's subtree, for all spans at once in one pass (O(n), where
    calling :func:`totals` per span would be O(n²) on a deep trace). Same sums as ``totals(span)``."""
    usage: dict[str, Usage] = {}
    for s in reversed(list(trace.spans.values())):      # a child always starts after its parent
        u = usage.get(s.id)
        if u is None:
            u = usage[s.id] = Usage()
        if s.kind == SpanKind.LLM_CALL:
            u.add_call(s.attributes, s.running)
        if s.parent is not None:
            pu = usage.get(s.parent.id)
            if pu is None:
                pu = usage[s.parent.id] = Usage()
            pu.add(u)
    return usage
