"""Two runs side by side: their facts (cost, tokens, time, iterations, sub-calls, models, limits) with
deltas, and their answers diffed word by word. Qt-free: the CLI's ``compare`` prints it, the app's
compare window will show it.

A run is a whole trace file, or one turn of a session trace (``trace.jsonl#N``); a session trace
named without ``#N`` stands for its last turn.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlm_desktop.core.status import stop_reason_text
from rlm_desktop.core.totals import totals
from rlm_desktop.core.trace import Attr, Span, SpanKind, Trace, read_trace


class CompareError(ValueError):
    """A run to compare cannot be read or picked; the message says what to give instead."""


@dataclass(slots=True)
class RunFacts:
    """What a comparison shows of one run."""

    label: str
    query: str
    answer: str | None
    status: str
    stop_reason: str | None
    turn: int | None
    cost_usd: float | None
    cost_known: bool
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    tokens_estimated: bool
    duration_s: float | None
    iterations: int
    llm_calls: int
    sub_calls: int
    code_cells: int
    errors: int
    root_model: str | None
    sub_model: str | None
    models: list[str] = field(default_factory=list)          # every model called, by name
    limits: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# The numeric facts, in table order: (field, row label).
NUMERIC = (("cost_usd", "cost (USD)"), ("input_tokens", "input tokens"), ("cached_tokens", "cached tokens"),
           ("output_tokens", "output tokens"), ("duration_s", "time (s)"), ("iterations", "iterations"),
           ("llm_calls", "model calls"), ("sub_calls", "sub-calls"), ("code_cells", "code cells"),
           ("errors", "errors"))


def _runs(trace: Trace) -> list[Span]:
    return [r for r in trace.roots if r.kind == SpanKind.RUN and not r.attributes.get(Attr.REPLAY)]


def split_spec(spec: str) -> tuple[Path, int | None]:
    """``"trace.jsonl#3"`` → (path, 3); a plain path → (path, None). A ``#`` that is part of an
    existing file's name stays in the name."""
    m = re.fullmatch(r"(.+)#(\d+)", spec)
    if m and not os.path.exists(spec):
        return Path(m.group(1)), int(m.group(2))
    return Path(spec), None


def load_run(spec: str) -> RunFacts:
    """The facts of the run ``spec`` names (see the module docstring). Raises CompareError."""
    path, turn = split_spec(spec)
    if not path.exists():
        raise CompareError(f"{path}: no such file; give a trace (.jsonl) saved by a run, or FILE#N "
                           "for turn N of a session trace")
    if path.is_dir():
        raise CompareError(f"{path} is a folder; give a trace file (.jsonl)")
    try:
        trace = read_trace(path)
    except ValueError as exc:            # TraceFormatError
        raise CompareError(str(exc)) from None
    except OSError as exc:
        raise CompareError(f"cannot read {path}: {exc.strerror or exc}") from None
    return run_facts(trace, turn, label=spec)


def run_facts(trace: Trace, turn: int | None = None, *, label: str = "") -> RunFacts:
    """The facts of one run of ``trace``: turn ``turn``, or the trace's only (or last) turn."""
    runs = _runs(trace)
    notes: list[str] = []
    if not runs:
        raise CompareError(f"{label or 'the trace'} holds no run")
    turns = [r.attributes.get(Attr.TURN) for r in runs]
    if turn is not None:
        picked = [r for r in runs if r.attributes.get(Attr.TURN) == turn]
        if not picked:
            have = ", ".join(str(t) for t in turns if isinstance(t, int)) or "none"
            raise CompareError(f"{label or 'the trace'} has no turn {turn} (its turns: {have})")
        run = picked[-1]
    else:
        run = runs[-1]
        if len(runs) > 1:
            notes.append(f"{len(runs)} turns: comparing the last (turn {turns[-1]}); name one with "
                         f"FILE#N")
    if trace.truncated or trace.skipped_lines or run.running:
        notes.append("the trace was cut short: the run never ended")
    a = run.attributes
    t = totals(run)
    models = a.get(Attr.MODELS) if isinstance(a.get(Attr.MODELS), dict) else {}
    limits = a.get(Attr.LIMITS) if isinstance(a.get(Attr.LIMITS), dict) else {}
    answer = a.get(Attr.ANSWER)
    if answer is None:                   # an older trace: the last final of the top run
        for s in run.walk():
            if s.kind == SpanKind.FINAL and s.attributes.get(Attr.DEPTH, 0) == 0 \
                    and s.attributes.get(Attr.ANSWER) is not None:
                answer = s.attributes[Attr.ANSWER]
    return RunFacts(
        label=label, query=str(a.get(Attr.QUERY) or trace.header.get("query") or ""),
        answer=None if answer is None else str(answer),
        status="incomplete" if run.running else str(run.status),
        stop_reason=a.get(Attr.STOP_REASON), turn=a.get(Attr.TURN) if isinstance(a.get(Attr.TURN), int) else None,
        cost_usd=None if t.cost_value is None else round(t.cost_value, 6), cost_known=t.cost_known,
        input_tokens=t.input_tokens, cached_tokens=t.cached_tokens, output_tokens=t.output_tokens,
        tokens_estimated=t.tokens_estimated,
        duration_s=None if run.duration is None else round(run.duration, 3),
        iterations=t.iterations, llm_calls=t.llm_calls, sub_calls=t.sub_calls, code_cells=t.code_cells,
        errors=t.errors, root_model=models.get("root"), sub_model=models.get("sub"),
        models=sorted(t.by_model), limits=dict(limits), notes=notes)


def answer_diff(a: str | None, b: str | None) -> list[dict[str, str]]:
    """Word-level differences: ``[{"op": "equal"|"replace"|"delete"|"insert", "a": …, "b": …}]``
    (``a`` / ``b`` are the words of each side in that stretch, joined by single spaces)."""
    aw, bw = (a or "").split(), (b or "").split()
    sm = difflib.SequenceMatcher(None, aw, bw, autojunk=False)
    return [{"op": tag, "a": " ".join(aw[i1:i2]), "b": " ".join(bw[j1:j2])}
            for tag, i1, i2, j1, j2 in sm.get_opcodes()]


def _delta(a: Any, b: Any) -> float | int | None:
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, (int, float)) \
            or not isinstance(b, (int, float)):
        return None
    d = b - a
    return round(d, 6) if isinstance(d, float) else d


@dataclass(slots=True)
class Comparison:
    a: RunFacts
    b: RunFacts
    delta: dict[str, Any]
    answer_diff: list[dict[str, str]]
    similarity: float

    def as_dict(self) -> dict[str, Any]:
        """The ``compare --json`` object: ``a``, ``b``, ``delta`` and ``answer_diff``."""
        return {"a": self.a.as_dict(), "b": self.b.as_dict(), "delta": self.delta,
                "answer_diff": self.answer_diff, "answer_similarity": self.similarity}


def compare(a: RunFacts, b: RunFacts) -> Comparison:
    """B against A: numeric deltas (B − A, None where either is unknown), what changed among the
    models, limits and status, and the answers' word diff."""
    delta: dict[str, Any] = {name: _delta(getattr(a, name), getattr(b, name)) for name, _ in NUMERIC}
    changed: dict[str, list[Any]] = {}
    for name in ("status", "stop_reason", "root_model", "sub_model", "query"):
        if getattr(a, name) != getattr(b, name):
            changed[name] = [getattr(a, name), getattr(b, name)]
    if a.models != b.models:
        changed["models"] = [a.models, b.models]
    delta["changed"] = changed
    delta["limits_changed"] = {k: [a.limits.get(k), b.limits.get(k)]
                               for k in sorted(set(a.limits) | set(b.limits))
                               if a.limits.get(k) != b.limits.get(k)}
    diff = answer_diff(a.answer, b.answer)
    sim = difflib.SequenceMatcher(None, (a.answer or "").split(), (b.answer or "").split(),
                                  autojunk=False).ratio()
    delta["answers_equal"] = (a.answer or "") == (b.answer or "")
    return Comparison(a, b, delta, diff, round(sim, 4))


def stop_text(f: RunFacts) -> str:
    """``ok`` or e.g. ``limit (the maximum number of iterations was reached)``."""
    why = stop_reason_text(f.stop_reason) if f.status != "ok" else ""
    return f"{f.status} ({why})" if why else f.status
