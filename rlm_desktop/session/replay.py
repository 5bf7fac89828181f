"""Rebuild a session's REPL from its trace: re-run the recorded cells in order, answering their
sub-calls from the recorded answers. No model request is ever made, so a rebuild costs nothing.

What the REPL holds after a turn is the effect of every cell that ran to the end since the worker
last (re)started. So the cells replayed are the model's cells (not the app's own, not earlier
rebuilds) at depth 0 that ended ``ok``, after the last restart. A cell that failed, timed out or
was cancelled is not replayed (its partial effects cannot be told apart), and is reported; a cell
whose replayed output differs from the recorded one (it read the clock, random numbers, or a
document that changed) is replayed but reported, since its variables may differ too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlm_desktop.core.trace import Attr, Span, SpanKind, SpanStatus, Trace

if TYPE_CHECKING:
    from rlm_desktop.engine.repl import Repl, SubRequest

# Keep in step with engine.run: a sub_call span records its prompt shortened to this many characters.
from rlm_desktop.engine.run import PROMPT_PREVIEW_CHARS, _preview  # noqa: E402


@dataclass(frozen=True, slots=True)
class ReplayProblem:
    """One recorded cell whose effect on the REPL could not be rebuilt exactly."""

    span_id: str
    turn: int | None
    name: str
    why: str

    def text(self) -> str:
        where = f"turn {self.turn}, " if self.turn else ""
        return f"{where}{self.name}: {self.why}"


@dataclass(slots=True)
class ReplayReport:
    cells: int = 0                     # cells replayed
    sub_calls: int = 0                 # sub-call answers served from the recording
    problems: list[ReplayProblem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        s = (f"REPL rebuilt from the trace: {self.cells} cell{'s' if self.cells != 1 else ''} replayed, "
             f"{self.sub_calls} recorded sub-call answer{'s' if self.sub_calls != 1 else ''} reused, "
             "no model request")
        if self.problems:
            s += (f"; {len(self.problems)} cell{'s' if len(self.problems) != 1 else ''} could not be "
                  "rebuilt exactly: " + "; ".join(p.text() for p in self.problems))
        return s


def _turn_of(span: Span) -> int | None:
    node: Span | None = span
    while node is not None and node.parent is not None:
        node = node.parent
    t = node.attributes.get(Attr.TURN) if node is not None else None
    return t if isinstance(t, int) else None


def _children_in_order(span: Span) -> list[Span]:
    return sorted(span.children, key=lambda c: (c.start, c.index))


def recorded_cells(trace: Trace) -> tuple[list[Span], list[ReplayProblem]]:
    """The cells whose effects the live REPL held at the end of the trace, in the order they ran,
    and the recorded cells that are lost or cannot be rebuilt (with why)."""
    cells: list[Span] = []
    problems: list[ReplayProblem] = []
    for root in trace.roots:
        if root.kind != SpanKind.RUN or root.attributes.get(Attr.REPLAY):
            continue
        for cell in _root_cells(root):
            if cell.attributes.get(Attr.INTERNAL):
                continue
            restarted = bool(cell.attributes.get(Attr.SANDBOX_RESTARTED))
            if restarted:                  # the worker restarted here: what came before is gone
                cells.clear()
                problems.clear()
            if cell.status is SpanStatus.OK and cell.end is not None:
                cells.append(cell)
            elif not restarted:
                why = {SpanStatus.ERROR: "it failed when it ran, so it is not replayed (variables it set "
                                         "before the error are missing)",
                       SpanStatus.TIMEOUT: "it timed out when it ran",
                       SpanStatus.CANCELLED: "it was cancelled when it ran, so it is not replayed"}.get(
                    cell.status, f"it ended {cell.status.value if cell.status else 'without an end'} "
                                  "when it ran, so it is not replayed")
                problems.append(ReplayProblem(cell.id, _turn_of(cell), cell.name, why))
    return cells, problems


def _root_cells(run: Span) -> Iterator[Span]:
    """The depth-0 code cells of a root run (iterations' cells, then the run's own cells), in order."""
    stack = [run]
    out: list[Span] = []
    while stack:
        node = stack.pop()
        for child in node.children:
            if child.kind == SpanKind.CODE_CELL and child.attributes.get(Attr.DEPTH, 0) == 0:
                out.append(child)
            elif child.kind == SpanKind.ITERATION and child.attributes.get(Attr.DEPTH, 0) == 0:
                stack.append(child)
    out.sort(key=lambda c: (c.start, int(c.id[1:]) if c.id[1:].isdigit() else 0))
    return iter(out)


class _Recorded:
    """The recorded sub-calls of one cell, looked up by what the replayed code asks."""

    def __init__(self, cell: Span) -> None:
        self.llm: dict[tuple[str | None, str], list[Span]] = {}
        self.batched: dict[tuple[int, str], list[Span]] = {}
        self.rlm: dict[str, list[Span]] = {}
        for sub in _children_in_order(cell):
            if sub.kind != SpanKind.SUB_CALL:
                continue
            prompt = str(sub.attributes.get(Attr.PROMPT) or "")
            if sub.name == "rlm_query":
                self.rlm.setdefault(prompt, []).append(sub)
            elif sub.attributes.get(Attr.BATCH_INDEX) is not None:
                self.batched.setdefault((int(sub.attributes[Attr.BATCH_INDEX]), prompt), []).append(sub)
            else:
                self.llm.setdefault((None, prompt), []).append(sub)
        self.served = 0

    @staticmethod
    def _answer(sub: Span) -> str:
        """The answer the code got: the sub-call's response, or its model call's; raise its error."""
        if sub.status is not SpanStatus.OK:
            raise RuntimeError(str(sub.attributes.get(Attr.ERROR) or "the sub-call failed"))
        text = sub.attributes.get(Attr.RESPONSE)
        if text is None:
            for child in sub.children:
                if child.kind == SpanKind.LLM_CALL and child.attributes.get(Attr.RESPONSE) is not None:
                    text = child.attributes[Attr.RESPONSE]
        if text is None:
            raise _NotRecorded("its recorded answer is missing from the trace")
        return str(text)

    def _take(self, table: dict[Any, list[Span]], key: Any, what: str) -> Span:
        found = table.get(key)
        if not found:
            raise _NotRecorded(f"the code asked {what} that is not in the recording (the code "
                               "depends on something that changed)")
        self.served += 1
        return found.pop(0)

    async def serve(self, req: SubRequest) -> Any:
        p = req.payload or {}
        if req.kind == "llm_query":
            return self._answer(self._take(self.llm, (None, _preview(str(p.get("prompt", "")))),
                                           "an llm_query"))
        if req.kind == "llm_query_batched":
            answers = []
            for i, prompt in enumerate(str(x) for x in (p.get("prompts") or [])):
                sub = self._take(self.batched, (i, _preview(prompt)), f"batch item {i}")
                try:
                    answers.append(self._answer(sub))
                except _NotRecorded:
                    raise
                except RuntimeError as exc:
                    answers.append(f"Error: {exc}")
            return answers
        if req.kind == "rlm_query":
            return self._answer(self._take(self.rlm, str(p.get("prompt", "")), "an rlm_query"))
        raise RuntimeError(f"unknown request {req.kind!r} from the REPL")


class _NotRecorded(RuntimeError):
    """The replayed code asked for a sub-call the recording does not hold."""


async def rebuild(repl: Repl, trace: Trace, *, cell_timeout_s: float, parent: str | None = None) -> ReplayReport:
    """Replay the trace's cells into ``repl`` (started, fresh); record the rebuild in ``trace`` as a
    ``run`` span marked ``replay`` (no tokens, no cost) under ``parent`` (the turn that needed it).
    Returns what was and was not rebuilt."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    cells, problems = recorded_cells(trace)
    report = ReplayReport(problems=list(problems))
    attrs: dict[str, Any] = {Attr.REPLAY: True, Attr.DEPTH: 0, Attr.QUERY: "rebuild the REPL from the trace",
                             Attr.INPUT_TOKENS: 0, Attr.OUTPUT_TOKENS: 0, Attr.COST_USD: 0.0,
                             Attr.COST_KNOWN: True}
    run_id = trace.start_span(SpanKind.RUN, "rebuild REPL (replay, no model calls)", parent, attrs)
    status = SpanStatus.OK
    try:
        for cell in cells:
            code = str(cell.attributes.get(Attr.CODE) or "")
            sid = trace.start_span(SpanKind.CODE_CELL, f"replay: {cell.name}", run_id,
                                   {Attr.CODE: code, Attr.DEPTH: 0, Attr.REPLAY_OF: cell.id})
            recorded = _Recorded(cell)
            res = await repl.run_cell(code, timeout_s=cell_timeout_s, on_request=recorded.serve)
            report.cells += 1
            report.sub_calls += recorded.served
            end: dict[str, Any] = {Attr.STDOUT: res.stdout, Attr.STDERR: res.stderr}
            why = None
            if not res.ok:
                why = f"replaying it failed: {(res.error or res.status).strip().splitlines()[-1]}"
                end[Attr.ERROR] = res.error or res.status
            elif res.stdout != str(cell.attributes.get(Attr.STDOUT) or ""):
                why = ("its output differs from the recorded one (it may read the clock, random "
                       "numbers or a document that changed), so its variables may differ too")
                end["replay_differs"] = True
            if why:
                report.problems.append(ReplayProblem(cell.id, _turn_of(cell), cell.name, why))
            trace.end_span(sid, SpanStatus.OK if res.ok else SpanStatus.ERROR, end)
            if res.restarted and res.status != "ok":       # the replay itself killed the worker
                break
    except asyncio.CancelledError:
        status = SpanStatus.CANCELLED
        raise
    finally:
        report.seconds = loop.time() - t0
        trace.end_span(run_id, status, {"replayed_cells": report.cells,
                                        "replayed_sub_calls": report.sub_calls,
                                        "problems": [p.text() for p in report.problems],
                                        Attr.ANSWER: report.summary()})
    return report


__all__ = ["PROMPT_PREVIEW_CHARS", "ReplayProblem", "ReplayReport", "rebuild", "recorded_cells"]
