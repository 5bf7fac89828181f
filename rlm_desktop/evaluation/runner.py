"""Runs an evaluation: every item of every task × size as an RLM and as one direct call (where it
fits the model's context window), each with its own trace, under one budget, stoppable at any time."""

# The RLM method is run_rlm itself (the engine path `rlm-desktop run` takes); the direct method is
# one chat() call with the whole context, traced as a run span holding one llm_call span, so cost
# and tokens of both come from the same totals() the rest of the app reads. Before each run the
# runner estimates what it will cost and stops scheduling when spent + in flight + that estimate
# would pass the budget; each RLM run also gets what is left of the budget as its own USD limit.

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.pricing import cost_usd, lookup
from rlm_desktop.core.totals import totals
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace, TraceWriter
from rlm_desktop.engine.prompts import describe_context
from rlm_desktop.engine.providers import ProviderError, chat, estimate_tokens
from rlm_desktop.engine.run import run_rlm
from rlm_desktop.evaluation.scorers import score
from rlm_desktop.evaluation.tasks import Item, Question, docs_items, format_size, generate

if TYPE_CHECKING:
    from rlm_desktop.core.config import ProviderConfig, RunConfig

log = logging.getLogger(__name__)

METHODS = ("rlm", "direct")
# Tokens kept free for the direct call's answer when deciding whether the context fits.
DIRECT_OUTPUT_RESERVE = 1_024
# This many runs failing in a row (provider or sandbox errors) stop the evaluation: a wrong key,
# model name or base URL would otherwise fail every remaining item, one retry cycle at a time.
MAX_ERRORS_IN_ROW = 3
# The offline demo has no context window; a dry run pretends a common one so both methods show.
DEMO_CONTEXT_WINDOW = 128_000

# (config, provider, document count, total characters) -> the trace header. The CLI passes the
# one `rlm-desktop run` writes; the app's Evaluate window uses default_header.
HeaderFactory = Callable[["RunConfig", "ProviderConfig", int, int], dict[str, Any]]


def default_header(config: RunConfig, provider: ProviderConfig, doc_count: int,
                   total_chars: int) -> dict[str, Any]:
    """A trace header with the facts `rlm-desktop run` records, for callers without the CLI."""
    from datetime import UTC, datetime

    from rlm_desktop import __version__

    return {"app": "rlm-desktop", "app_version": __version__, "query": config.query,
            "created": datetime.now(UTC).isoformat(timespec="seconds"), "provider": provider.name,
            "demo": bool(provider.is_demo), "models": {"root": config.root_model, "sub": config.sub_model},
            "documents": {"count": doc_count, "total_chars": total_chars}, "source": "eval"}


@dataclass(frozen=True)
class EvalPlan:
    """What to run. ``sizes`` in characters; for the docs task the folder's size is used."""

    tasks: tuple[str, ...]
    sizes: tuple[int, ...]
    items: int
    methods: tuple[str, ...] = METHODS
    seed: int = 0
    docs_context: str | dict[str, str] | None = None
    docs_questions: tuple[Question, ...] = ()

    def jobs(self) -> list[tuple[str, int, int]]:
        """(task, size, index), small sizes first so a stopped evaluation has every task at them."""
        out: list[tuple[str, int, int]] = []
        for size in sorted(set(self.sizes)):
            for task in self.tasks:
                if task == "docs":
                    continue
                out += [(task, size, i) for i in range(self.items)]
        if "docs" in self.tasks and self.docs_context is not None:     # every question given
            out += [("docs", _chars(self.docs_context), i) for i in range(len(self.docs_questions))]
        return out


def new_out_dir() -> Path:
    """A fresh folder for one evaluation's traces and report under the data folder's ``evals/``."""
    from datetime import UTC, datetime

    from rlm_desktop.core.paths import data_dir

    base = data_dir() / "evals" / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path, n = base, 2
    while path.exists():
        path = Path(f"{base}-{n}")
        n += 1
    return path


def _chars(context: str | dict[str, str]) -> int:
    return len(context) if isinstance(context, str) else sum(len(v) for v in context.values())


@dataclass
class ItemResult:
    task: str
    size: int
    index: int
    method: str
    status: str                    # ok | limit | error | cancelled | skipped
    score: float = 0.0
    answer: str | None = None
    expected: Any = None
    scorer: str = ""
    reason: str | None = None
    cost_usd: float | None = 0.0
    cost_known: bool = True
    tokens_estimated: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    trace: str | None = None
    question: str = ""

    @property
    def counted(self) -> bool:
        """Ran to an outcome that is scored (a skipped or cancelled item is not)."""
        return self.status not in ("skipped", "cancelled")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Row:
    """One task × size × method: the fields of the `--json` contract plus cost/skip details."""

    task: str
    size: int
    method: str
    items: int = 0
    accuracy: float | None = None
    cost_usd: float | None = 0.0
    cost_known: bool = True
    tokens_estimated: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    failures: int = 0
    skipped: int = 0
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["accuracy"] is not None:
            d["accuracy"] = round(d["accuracy"], 4)
        if d["cost_usd"] is not None:
            d["cost_usd"] = round(d["cost_usd"], 6)
        d["seconds"] = round(d["seconds"], 3)
        return d


def summarise(results: list[ItemResult], plan: EvalPlan) -> list[Row]:
    """One row per task × size × method that has results, in plan order."""
    rows: dict[tuple[str, int, str], Row] = {}
    for r in results:
        row = rows.setdefault((r.task, r.size, r.method), Row(r.task, r.size, r.method))
        if r.status == "skipped":
            row.skipped += 1
            row.note = r.reason
            continue
        if r.status == "cancelled":
            continue
        row.items += 1
        row.accuracy = (row.accuracy or 0.0) + r.score
        if r.cost_usd is not None:
            row.cost_usd = (row.cost_usd or 0.0) + r.cost_usd
        row.cost_known = row.cost_known and r.cost_known
        row.tokens_estimated = row.tokens_estimated or r.tokens_estimated
        row.input_tokens += r.input_tokens
        row.output_tokens += r.output_tokens
        row.seconds += r.seconds
        row.failures += r.status != "ok"
    for row in rows.values():
        if row.items:
            row.accuracy = (row.accuracy or 0.0) / row.items
            row.note = row.note if row.skipped else None
        else:
            row.accuracy = None
            row.cost_usd = None
        if not row.cost_known and row.cost_usd == 0.0:
            row.cost_usd = None
    order = {t: i for i, t in enumerate(plan.tasks)}
    morder = {m: i for i, m in enumerate(plan.methods)}
    return sorted(rows.values(), key=lambda r: (order.get(r.task, 99), r.size, morder.get(r.method, 9)))


def direct_prompt(item: Item) -> str:
    """The direct method's one user message: the question, the whole context, the question again."""
    if isinstance(item.context, str):
        body = item.context
    else:
        body = "\n\n".join(f"=== {path} ===\n{text}" for path, text in item.context.items())
    return (f"Question: {item.question}\n\nDocuments:\n\n{body}\n\n"
            f"Answer the question above from the documents. {item.question}")


@dataclass
class EvalOutcome:
    results: list[ItemResult]
    rows: list[Row]
    stopped: str | None                 # why the evaluation ended early (budget, cancel), or None
    planned_items: int
    notes: list[str] = field(default_factory=list)


# started (job, method) / finished (ItemResult): for progress displays.
ProgressHandler = Callable[[str, Any], None]


class Evaluation:
    """One evaluation. ``await run()``; ``stop(reason)`` from the loop (or via
    ``loop.call_soon_threadsafe``) ends it cleanly, keeping every finished item."""

    def __init__(self, plan: EvalPlan, *, provider: ProviderConfig, config: RunConfig, out_dir: Path,
                 header: HeaderFactory = default_header, context_window: int | None = None,
                 budget_usd: float | None = None, concurrency: int = 1,
                 on_progress: ProgressHandler | None = None) -> None:
        self.plan = plan
        self.provider = provider
        self.config = config
        self.out_dir = Path(out_dir)
        self.header = header
        self.window = context_window or provider.context_windows.get(config.root_model) or (
            DEMO_CONTEXT_WINDOW if provider.is_demo else None)
        self.budget = budget_usd
        self.concurrency = max(1, concurrency)
        self.on_progress = on_progress
        self.results: list[ItemResult] = []
        self.stopped: str | None = None
        self.notes: list[str] = []
        self._cancels: set[CancelToken] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reserved = 0.0
        self._errors_in_row = 0
        self.price = None if provider.is_demo else lookup(provider.prices, config.root_model)
        self.total_runs = len(plan.jobs()) * len(plan.methods)

    # -- control --------------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        """Stop: no new run starts, running ones are cancelled (their traces closed)."""
        if self.stopped is None:
            self.stopped = reason
        for token in list(self._cancels):
            token.cancel(reason)
        for task in list(self._tasks):
            task.cancel()

    @property
    def spent(self) -> float:
        return sum(r.cost_usd or 0.0 for r in self.results)

    # -- budget ---------------------------------------------------------------------------------
    def estimate(self, item: Item, method: str) -> float | None:
        """What one run of ``item`` by ``method`` is expected to cost (USD), None when unknown."""
        if self.provider.is_demo:
            return 0.0
        if method == "rlm":
            seen = [r.cost_usd for r in self.results if r.method == "rlm" and r.task == item.task
                    and r.size == item.size and r.counted and r.cost_usd is not None]
            if seen:
                return sum(seen) / len(seen)
        # No RLM run of this kind yet: assume it costs what reading the whole context once costs
        # (the paper's RLM runs cost about that at the median).
        return cost_usd(self.price, estimate_tokens(direct_prompt(item)), DIRECT_OUTPUT_RESERVE)

    def _admit(self, item: Item, method: str) -> float | None:
        """Reserve the run's estimate, or stop the evaluation when it could pass the budget.
        Returns the reserved amount (None: the evaluation stopped)."""
        if self.stopped is not None:
            return None
        if self.budget is None:
            return 0.0
        est = self.estimate(item, method)
        if est is None:
            return 0.0          # unknown price: the budget cannot be enforced (said at the start)
        committed = self.spent + self._reserved
        if committed + est > self.budget:
            self.stop(f"budget: the next run ({item.task} {format_size(item.size)} {method}, item "
                      f"{item.index + 1}) is estimated at ${est:.4f}; ${self.spent:.4f} spent"
                      + (f" and ${self._reserved:.4f} in flight" if self._reserved else "")
                      + f" of the ${self.budget:g} budget")
            return None
        self._reserved += est
        return est

    # -- running --------------------------------------------------------------------------------
    async def run(self) -> EvalOutcome:
        if self.budget is not None and self.price is None and not self.provider.is_demo:
            self.notes.append(f"the price of {self.config.root_model!r} is unknown, so the "
                              f"${self.budget:g} budget cannot be checked; set prices in the profile")
        if "direct" in self.plan.methods and self.provider.is_demo and self.window == DEMO_CONTEXT_WINDOW:
            self.notes.append(f"the offline demo has no context window: direct runs assume "
                              f"{DEMO_CONTEXT_WINDOW:,} tokens (pass --context-window to change it)")
        if "direct" in self.plan.methods and self.window is None:
            self.notes.append("the model's context window is unknown: direct runs are skipped "
                              "(pass --context-window TOKENS or set it in the provider profile)")
        (self.out_dir / "traces").mkdir(parents=True, exist_ok=True)
        sem = asyncio.Semaphore(self.concurrency)
        workers: list[asyncio.Task[Any]] = []
        for job in self.plan.jobs():
            await sem.acquire()
            if self.stopped is not None:
                sem.release()
                break
            workers.append(asyncio.create_task(self._job(job, sem)))
        if workers:
            await asyncio.gather(*workers, return_exceptions=False)
        return EvalOutcome(self.results, summarise(self.results, self.plan), self.stopped,
                           self.total_runs, list(self.notes))

    def _count_error(self, result: ItemResult) -> None:
        if result.status in ("skipped", "cancelled"):
            return
        self._errors_in_row = self._errors_in_row + 1 if result.status == "error" else 0
        if self._errors_in_row >= MAX_ERRORS_IN_ROW:
            self.stop(f"errors: {self._errors_in_row} runs in a row failed; the last one: "
                      f"{(result.reason or 'no reason given').rstrip('.')}")

    def _item(self, job: tuple[str, int, int]) -> Item:
        task, size, index = job
        if task == "docs":
            assert self.plan.docs_context is not None
            return docs_items(self.plan.docs_context, list(self.plan.docs_questions), None)[index]
        return generate(task, size, index, self.plan.seed)

    async def _job(self, job: tuple[str, int, int], sem: asyncio.Semaphore) -> None:
        task, size, index = job
        try:
            try:
                item: Item | None = await asyncio.to_thread(self._item, job)
            except Exception as exc:   # recorded as this item's failure; the others go on
                log.exception("eval: cannot build %s %s item %d", task, size, index + 1)
                item, why = None, f"could not build the item: {type(exc).__name__}: {exc}"
            for method in self.plan.methods:
                if self.stopped is not None:
                    break
                if item is None:
                    result: ItemResult | None = ItemResult(task, size, index, method, "error", reason=why)
                else:
                    try:
                        result = await self._run_method(item, method)
                    except Exception as exc:   # e.g. the trace file cannot be written: this run failed
                        log.exception("eval: %s %s item %d (%s) failed", task, size, index + 1, method)
                        result = ItemResult(task, size, index, method, "error", expected=item.expected,
                                            scorer=item.scorer, question=item.question,
                                            reason=f"{type(exc).__name__}: {exc}")
                if result is not None:
                    self.results.append(result)
                    if self.on_progress is not None:
                        self.on_progress("finished", result)
                    self._count_error(result)
        finally:
            sem.release()

    async def _run_method(self, item: Item, method: str) -> ItemResult | None:
        base = ItemResult(item.task, item.size, item.index, method, "ok", expected=item.expected,
                          scorer=item.scorer, question=item.question)
        if method == "direct":
            tokens = estimate_tokens(direct_prompt(item)) + DIRECT_OUTPUT_RESERVE
            if self.window is None or tokens > self.window:
                why = ("the context window is unknown" if self.window is None else
                       f"~{tokens:,} tokens, estimated, > the {self.window:,}-token window")
                base.status, base.reason = "skipped", f"skipped: does not fit: {why}"
                return base
        reserved = self._admit(item, method)
        if reserved is None:
            return None
        if self.on_progress is not None:
            self.on_progress("started", (item.task, item.size, item.index, method))
        trace_path = self.out_dir / "traces" / (
            f"{item.task}-{format_size(item.size)}-{item.index + 1:03d}-{method}.jsonl")
        base.trace = str(trace_path)
        t0 = time.monotonic()
        try:
            if method == "rlm":
                await self._rlm(item, base, trace_path, reserved)
            else:
                await self._direct(item, base, trace_path)
        finally:
            self._reserved -= reserved
        base.seconds = time.monotonic() - t0
        if base.status != "cancelled":
            base.score = score(item.scorer, base.answer, item.expected)
        return base

    def _header(self, config: RunConfig, item: Item, method: str) -> dict[str, Any]:
        count = 1 if isinstance(item.context, str) else len(item.context)
        head = self.header(config, self.provider, count, item.chars)
        head["eval"] = {"task": item.task, "size": item.size, "index": item.index, "method": method,
                        "seed": self.plan.seed, "scorer": item.scorer}
        return head

    async def _rlm(self, item: Item, out: ItemResult, trace_path: Path, reserved: float) -> None:
        limits = self.config.limits
        if self.budget is not None and self.price is not None:
            # What is left of the evaluation's budget (this run's own reservation included) is the
            # most this run may spend, whatever the estimate said.
            left = max(self.budget - self.spent - self._reserved + reserved, 1e-6)
            limits = replace(limits, budget_usd=min(limits.budget_usd or left, left))
        config = replace(self.config, query=item.question, limits=limits)
        header = self._header(config, item, "rlm")
        trace = Trace(header)
        writer = TraceWriter(trace_path, header).attach(trace)
        cancel = CancelToken()
        self._cancels.add(cancel)
        if self.stopped is not None:
            cancel.cancel(self.stopped)
        try:
            res = await run_rlm(config, item.context, provider=self.provider, trace=trace, cancel=cancel)
        finally:
            self._cancels.discard(cancel)
            writer.close()
        out.status = res.status if res.status in ("ok", "limit", "cancelled") else "error"
        out.answer, out.reason = res.answer, res.reason
        self._totals(out, trace)

    async def _direct(self, item: Item, out: ItemResult, trace_path: Path) -> None:
        config = replace(self.config, query=item.question)
        header = self._header(config, item, "direct")
        trace = Trace(header)
        writer = TraceWriter(trace_path, header).attach(trace)
        model = config.root_model
        messages = [{"role": "user", "content": direct_prompt(item)}]
        run_sid = trace.start_span(SpanKind.RUN, "direct", None, {
            Attr.QUERY: item.question, Attr.DEPTH: 0, Attr.PROVIDER: self.provider.name,
            Attr.MODELS: {"root": model, "sub": model}, Attr.CONTEXT: describe_context(item.context).to_dict(),
            "method": "direct", **({Attr.DEMO: True} if self.provider.is_demo else {})})
        sid = trace.start_span(SpanKind.LLM_CALL, f"chat {model}", run_sid, {
            Attr.MODEL: model, Attr.PROVIDER: self.provider.name, Attr.DEPTH: 0,
            Attr.MESSAGES: messages, Attr.MESSAGE_COUNT: 1})
        timeout = min(config.limits.call_timeout_s, self.provider.request_timeout_s)
        task = asyncio.ensure_future(chat(self.provider, model, messages, timeout_s=timeout))
        self._tasks.add(task)
        try:
            if self.stopped is not None:
                task.cancel()
            res = await task
        except asyncio.CancelledError:
            out.status, out.reason = "cancelled", self.stopped or "cancelled"
            trace.end_span(sid, SpanStatus.CANCELLED, {Attr.ERROR: "interrupted: " + out.reason})
            trace.end_span(run_sid, SpanStatus.CANCELLED, {Attr.STOP_REASON: "cancelled",
                                                           Attr.ERROR: out.reason})
            if self.stopped is None:      # cancelled from outside, not by stop(): pass it on
                raise
            return
        except ProviderError as exc:
            out.status, out.reason = "error", str(exc)
            status = SpanStatus.TIMEOUT if exc.kind == "timeout" else SpanStatus.ERROR
            trace.end_span(sid, status, {Attr.ERROR: str(exc), Attr.ATTEMPTS: exc.attempts})
            trace.end_span(run_sid, SpanStatus.ERROR, {Attr.STOP_REASON: "provider_error",
                                                       Attr.ERROR: str(exc)})
        else:
            out.answer = res.text
            trace.end_span(sid, SpanStatus.OK, {
                Attr.RESPONSE: res.text, Attr.INPUT_TOKENS: res.input_tokens,
                Attr.OUTPUT_TOKENS: res.output_tokens, Attr.CACHED_TOKENS: res.cached_tokens,
                Attr.COST_USD: res.cost_usd, Attr.COST_KNOWN: res.cost_known,
                Attr.FINISH_REASON: res.finish_reason, Attr.ATTEMPTS: res.attempts,
                Attr.TOKENS_ESTIMATED: res.tokens_estimated})
            trace.end_span(run_sid, SpanStatus.OK, {Attr.ANSWER: res.text, Attr.STOP_REASON: "final"})
        finally:
            self._tasks.discard(task)
            writer.close()
        self._totals(out, trace)

    @staticmethod
    def _totals(out: ItemResult, trace: Trace) -> None:
        t = totals(trace)
        d = t.as_dict()
        out.cost_usd, out.cost_known = d["cost_usd"], t.cost_known
        out.tokens_estimated = t.tokens_estimated
        out.input_tokens, out.output_tokens = t.input_tokens, t.output_tokens
