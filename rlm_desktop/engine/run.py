"""The RLM loop: root model and REPL iterations, sub-calls, nested runs, limits, cancel, trace."""

# run_rlm drives one run to its end and always leaves the trace consistent: every span it opened
# is ended (interrupted spans with the status of what stopped the run). All state lives on the event
# loop that awaits run_rlm; the cancel token may be triggered from any thread.

from __future__ import annotations

import asyncio
import dataclasses
import keyword
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.config import ProviderConfig, RunConfig, RunLimits
from rlm_desktop.core.pricing import unpriced_models
from rlm_desktop.core.trace import Attr, SpanKind, SpanStatus, Trace
from rlm_desktop.engine import prompts
from rlm_desktop.engine.parsing import TextualFinal, needs_answer_dict, parse_reply, uses_answer_dict
from rlm_desktop.engine.providers import ChatResult, ProviderError, chat, estimate_prompt_tokens, price_cost
from rlm_desktop.engine.repl import Repl, new_repl
from rlm_desktop.sandbox.api import (
    CellResult,
    FinalValue,
    SandboxError,
    SandboxRefused,
    SubRequest,
)

if TYPE_CHECKING:
    from rlm_desktop.core.sheets import Workbooks
    from rlm_desktop.core.sources import IndexSource

log = logging.getLogger(__name__)

# Span updates for streamed text are coalesced to at most this many per second per span.
UPDATES_PER_SECOND = 4
# Share of a model's context window the root conversation may fill (chars ≈ tokens × 4).
HISTORY_WINDOW_SHARE = 0.6
# What an old cell output is shortened to when the history policy kicks in.
SHRUNK_HEAD = 400
SHRUNK_TAIL = 200
# What the REPL itself defines: FINAL(<one of these>) as text is never read as a variable.
_REPL_NAMES = frozenset({"context", "llm_query", "llm_query_batched", "rlm_query", "llm_query_async",
                         "llm_query_batched_async", "rlm_query_async", "FINAL", "FINAL_VAR",
                         "SHOW_VARS"})
# Texts longer than this are mapped to their sources on a worker thread (numpy releases the GIL).
LOCATE_INLINE_CHARS = 64_000
# A sub_call span shows this much of its prompt; the full prompt is recorded once, in its llm_call.
PROMPT_PREVIEW_CHARS = 2000
# A reply streams into its llm_call span live up to this many characters per attempt; the rest of
# a longer reply is recorded once it has arrived whole. A failed attempt keeps only its first
# FAILED_REPLY_KEEP_CHARS in the trace. (A runaway stream once wrote a 906 MB trace in 40 s.)
LIVE_RESPONSE_CHARS = 50_000
FAILED_REPLY_KEEP_CHARS = 10_000


@dataclass
class RunResult:
    answer: str | None
    status: str                    # "ok" | "limit" | "cancelled" | "error"
    reason: str | None
    stop_reason: str | None        # "final", "max_iterations", "budget_usd", "max_tokens", ...
    cost_usd: float | None
    cost_known: bool
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    iterations: int
    sub_calls: int
    isolation: dict[str, Any] | None
    tokens_estimated: bool = False
    # Sessions: the variables the REPL held after the turn ("x: int, rows: list"), when read, and
    # the system prompt the root model was given (a follow-up turn reuses it byte for byte).
    variables: str | None = None
    system_prompt: str | None = None
    # Sources (with a SourceIndex): the answer's citations, checked; per document the line ranges
    # the run's models saw; for an answer without citations, what its sub-calls saw.
    citations: list[dict[str, Any]] | None = None
    sources: list[dict[str, Any]] | None = None
    material_read: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class TurnContext:
    """What a session hands a run: its live REPL (kept after the run) and the earlier turns.

    ``earlier`` holds ``(question, answer or None, status word, variables left)`` per earlier turn;
    ``system_prompt`` is the first turn's, reused byte for byte so provider prefix caches hit;
    ``notes`` are sentences for the model about what changed since the last turn (documents
    added, REPL rebuilt with gaps)."""

    repl: Repl
    turn: int = 1
    earlier: tuple[tuple[str, str | None, str, str], ...] = ()
    system_prompt: str | None = None
    notes: tuple[str, ...] = ()
    # Called once the REPL has started, before the first model call (a session rebuilds a new
    # REPL's state here, under the turn's run span); returns more notes for the model.
    prepare: Callable[[Repl, str], Awaitable[tuple[str, ...]]] | None = None
    # The kind the loader detected per document (name → "docx", "csv", "log" …): the system prompt
    # describes the documents by kind, also for a single document (whose context has no name).
    kinds: Mapping[str, str] | None = None
    # Ask the REPL which variables it holds once the turn is answered (for the next turn's block);
    # off for a run that can have no next turn (a one-off CLI run).
    read_variables: bool = True
    # The user's note about the documents (engine/prompts.note_paragraph) and a custom system prompt
    # that replaces the default (engine/prompts.custom_system_prompt): the root run's first system
    # prompt only; nested runs keep the default.
    note: str | None = None
    custom_prompt: str | None = None


# The internal cell a session runs after each turn to learn which variables the REPL holds.
VARIABLES_CELL = "SHOW_VARS()"
VARIABLES_CELL_NAME = "variables after the turn"


def parse_show_vars(stdout: str) -> str:
    """``SHOW_VARS()`` prints ``name: type, name: type``; keep it as one tidy line (without context)."""
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    items = [p.strip() for p in line.split(", ") if ": " in p]
    return ", ".join(i for i in items if not i.startswith("context:"))


@dataclass(frozen=True, slots=True)
class _Stop:
    status: str          # "limit" | "cancelled" | "error"
    stop_reason: str
    reason: str

    @property
    def span_status(self) -> SpanStatus:
        if self.status == "cancelled":
            return SpanStatus.CANCELLED
        if self.stop_reason in ("run_timeout", "call_timeout"):
            return SpanStatus.TIMEOUT
        if self.status == "limit":
            return SpanStatus.BUDGET
        return SpanStatus.ERROR


class _Halted(Exception):
    """Raised where the run notices it must stop; the reason is in the shared state."""


class _Appender:
    """Coalesces streamed text into a span's attribute: a few appends per second, none lost."""

    def __init__(self, trace: Trace, span_id: str, key: str) -> None:
        self._trace = trace
        self._sid = span_id
        self._key = key
        self._buf: list[str] = []
        self._handle: asyncio.TimerHandle | None = None
        self.total = 0
        self.closed = False
        self.flushed = False       # some text went out live (an append event)

    def add(self, text: str) -> None:
        if not text or self.closed:
            return
        self._buf.append(text)
        self.total += len(text)
        if self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(1 / UPDATES_PER_SECOND, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._buf:
            text = "".join(self._buf)
            self._buf.clear()
            self._trace.update_span(self._sid, append={self._key: text})
            self.flushed = True

    def close(self, into: dict[str, Any] | None = None) -> None:
        """Flush what is left; later text (after the span ended) is ignored. ``into``: the span's
        end attributes. When no text went out live yet (a reply or an output that came within one
        coalescing period, the usual case), the text goes there instead of into an append event
        just before the end: one trace event less, the same span."""
        if into is not None and self._buf and not self.flushed:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            into[self._key] = "".join(self._buf)
            self._buf.clear()
        self.flush()
        self.closed = True


class _ReplyRecorder(_Appender):
    """The streamed reply of an llm_call span, attempt by attempt, bounded in the trace: live text
    up to LIVE_RESPONSE_CHARS per attempt; a failed attempt is summed up by :meth:`attempt_failed`
    (its first FAILED_REPLY_KEEP_CHARS and its length) and the next attempt starts afresh."""

    def __init__(self, trace: Trace, span_id: str) -> None:
        super().__init__(trace, span_id, Attr.RESPONSE)
        self.attempt_chars = 0
        self._head: list[str] = []
        self._head_chars = 0
        self._live_chars = 0

    def add(self, text: str) -> None:
        if not text or self.closed:
            return
        self.attempt_chars += len(text)
        if self._head_chars < FAILED_REPLY_KEEP_CHARS:
            piece = text[:FAILED_REPLY_KEEP_CHARS - self._head_chars]
            self._head.append(piece)
            self._head_chars += len(piece)
        if self._live_chars < LIVE_RESPONSE_CHARS:
            piece = text[:LIVE_RESPONSE_CHARS - self._live_chars]
            self._live_chars += len(piece)
            if self._live_chars >= LIVE_RESPONSE_CHARS:
                piece += (f"\n[… the reply goes on; shown here once it is complete (live view stops "
                          f"at {LIVE_RESPONSE_CHARS:,} characters) …]")
            super().add(piece)

    def attempt_failed(self) -> dict[str, Any]:
        """End the current attempt as failed: its bounded record, and a fresh start for the next."""
        self.flush()
        kept = "".join(self._head)
        if self.attempt_chars > self._head_chars:
            kept += (f"\n[… {self.attempt_chars - self._head_chars:,} more characters of this failed "
                     f"attempt not kept; {self.attempt_chars:,} in all …]")
        record = {"response_chars": self.attempt_chars, "response": kept}
        self.attempt_chars = self._head_chars = self._live_chars = 0
        self._head.clear()
        self.total = 0
        return record


def _usage_attrs(res: ChatResult) -> dict[str, Any]:
    return {Attr.INPUT_TOKENS: res.input_tokens, Attr.OUTPUT_TOKENS: res.output_tokens,
            Attr.CACHED_TOKENS: res.cached_tokens, Attr.COST_USD: res.cost_usd,
            Attr.COST_KNOWN: res.cost_known, Attr.TOKENS_ESTIMATED: res.tokens_estimated}


class _FailedAttempts:
    """What the failed attempts of one model call cost. An attempt that streamed reply text before
    it failed (cut short, too long, a broken connection) was generated — and billed — by the
    provider: its prompt, and the reply as far as it came. The server sent no usage for it, so both
    are estimated (characters ÷ 4) and priced like any estimate. An attempt that failed before any
    reply text (a refused connection, a 429 or 5xx) is not counted."""

    def __init__(self, provider: ProviderConfig, model: str, messages: list[dict[str, Any]]) -> None:
        self.provider, self.model, self.messages = provider, model, messages
        self.input_tokens = self.output_tokens = 0
        self.cost = 0.0
        self.cost_known = True
        self.count = 0

    def add(self, reply_chars: int) -> dict[str, Any]:
        """Count one failed attempt that streamed ``reply_chars``; its estimate for the trace."""
        inp = estimate_prompt_tokens(self.messages)
        out = max(1, reply_chars // 4)
        cost, known = price_cost(self.provider, self.model, inp, out, 0)
        self.input_tokens += inp
        self.output_tokens += out
        self.count += 1
        if cost is None:
            self.cost_known = False
        else:
            self.cost += cost
        return {"input_tokens": inp, "output_tokens": out, "cost_usd": cost, "tokens_estimated": True}

    def result(self) -> ChatResult | None:
        """The failed attempts alone, as one call's usage (None: nothing was billed)."""
        if not self.count:
            return None
        return ChatResult(text="", model=self.model, input_tokens=self.input_tokens,
                          output_tokens=self.output_tokens, cached_tokens=0,
                          cost_usd=self.cost if self.cost_known else None, cost_known=self.cost_known,
                          finish_reason=None, attempts=self.count, tokens_estimated=True)

    def plus(self, res: ChatResult) -> ChatResult:
        """``res`` with the failed attempts' usage added (unchanged when there were none)."""
        if not self.count:
            return res
        known = self.cost_known and res.cost_usd is not None
        return dataclasses.replace(
            res, input_tokens=res.input_tokens + self.input_tokens,
            output_tokens=res.output_tokens + self.output_tokens,
            cost_usd=(res.cost_usd or 0.0) + self.cost if known else None, cost_known=known,
            tokens_estimated=True)


class _Shared:
    """State shared by the root run and every nested run: counters, budget, cancel, spans."""

    def __init__(self, config: RunConfig, provider: ProviderConfig, sub_provider: ProviderConfig,
                 trace: Trace, cancel: CancelToken, sources: IndexSource | None = None) -> None:
        self.config = config
        self.sources = sources
        self.source_tasks: set[asyncio.Future[None]] = set()   # texts mapped once the index is built
        self.limits: RunLimits = config.limits
        self.provider = provider
        self.sub_provider = sub_provider
        self.trace = trace
        self.cancel = cancel
        self.loop = asyncio.get_running_loop()
        self.root_task: asyncio.Task[Any] | None = asyncio.current_task()
        self.stop: _Stop | None = None
        self.self_cancels = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self._sandbox_lock = threading.Lock()
        self.sandboxes: set[Any] = set()
        self.open_spans: dict[str, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.cost_sum = 0.0
        self.cost_unknown = 0
        self.calls = 0
        self.tokens_estimated = False
        self.iterations = 0
        self.sub_calls = 0
        self.memo: dict[tuple[str, str], asyncio.Future[str]] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}
        self.isolation: dict[str, Any] | None = None
        self.best_partial: str | None = None
        self.workbooks: Workbooks | None = None      # sheets and rows of spreadsheet documents

    # -- spans --------------------------------------------------------------------------------
    async def seen(self, text: str) -> dict[str, Any]:
        """``{Attr.SOURCES: [...]}`` for a text a model is given (empty without an index or a match).
        Waits for an index still being built; a long text is mapped off the event loop."""
        if self.sources is None or not text:
            return {}
        try:
            index = await self.sources.ready()
            found = (index.locate(text) if len(text) < LOCATE_INLINE_CHARS
                     else await asyncio.to_thread(index.locate, text))
            books = self.workbooks
            if books is not None:       # spreadsheets: the sheet and rows (a first look reads the sheets)
                found = (books.annotate(found) if books.built(found)
                         else await asyncio.to_thread(books.annotate, found))
        except Exception:   # noqa: BLE001 - the run goes on without sources; logged with its traceback
            log.exception("mapping a text to its sources failed; the run goes on without them")
            self.sources = None
            return {}
        return {Attr.SOURCES: [r.to_dict() for r in found]} if found else {}

    def index_ready(self) -> bool:
        """True when the documents' index is built (or there is none): mapping a text then costs
        milliseconds, so it is done inline; before, it is recorded later (:meth:`record_seen`)."""
        src = self.sources
        if src is None:
            return True
        from rlm_desktop.core.sources import PendingIndex  # loaded already by whoever built src

        return not isinstance(src, PendingIndex) or src.done

    def record_seen(self, sid: str, text: str) -> None:
        """Record on span ``sid`` what of the documents ``text`` shows (``Attr.SOURCES``), without
        making the model wait for an index still being built: the request goes out now and the
        span gets its sources when the index is ready (an update event; :meth:`settle_sources`
        waits for them before the run's citations are checked)."""
        if self.sources is None or not text:
            return

        async def later() -> None:
            attrs = await self.seen(text)
            if attrs and sid in self.trace.spans:
                self.trace.update_span(sid, attrs)

        task = asyncio.ensure_future(later())
        self.source_tasks.add(task)
        task.add_done_callback(self.source_tasks.discard)

    async def settle_sources(self, *, wait: bool) -> None:
        """Before the run's sources and citations are summed up: wait for every text still being
        mapped and for the index (``wait``), or drop them (a cancelled run)."""
        tasks = list(self.source_tasks)
        if not wait:
            for t in tasks:
                t.cancel()
            return
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.sources is not None:
            # a build that failed is reported where the sources are summed up (_sources_attrs)
            await asyncio.gather(self.sources.ready(), return_exceptions=True)

    def start(self, kind: SpanKind, name: str, parent: str | None, attrs: dict[str, Any]) -> str:
        sid = self.trace.start_span(kind, name, parent, attrs)
        depth = self.open_spans.get(parent, -1) + 1 if parent else 0
        self.open_spans[sid] = depth
        return sid

    def end(self, sid: str, status: SpanStatus, attrs: dict[str, Any] | None = None) -> None:
        if self.open_spans.pop(sid, None) is None:
            return
        self.trace.end_span(sid, status, attrs)

    @property
    def interrupted(self) -> SpanStatus:
        return self.stop.span_status if self.stop else SpanStatus.CANCELLED

    # -- stopping -----------------------------------------------------------------------------
    def halt(self, status: str, stop_reason: str, reason: str) -> None:
        """Stop the whole run (first reason wins): cancel every task working for it."""
        if self.stop is None:
            self.stop = _Stop(status, stop_reason, reason)
        current = asyncio.current_task()
        for task in list(self.tasks):
            if task is not current and not task.done():
                task.cancel()
        root = self.root_task
        if root is not None and root is not current and not root.done() and self.self_cancels == 0:
            self.self_cancels += 1
            root.cancel()

    def check_running(self) -> None:
        if self.stop is not None:
            raise _Halted()

    def on_cancel(self, reason: str) -> None:
        """CancelToken callback, from any thread: kill sandboxes now, stop the loop's work."""
        with self._sandbox_lock:
            boxes = list(self.sandboxes)
        for box in boxes:
            box.kill()
        try:
            self.loop.call_soon_threadsafe(self.halt, "cancelled", "cancelled", reason)
        except RuntimeError:
            pass  # the loop has already closed: the run is over

    def add_sandbox(self, box: Any) -> None:
        with self._sandbox_lock:
            self.sandboxes.add(box)

    def remove_sandbox(self, box: Any) -> None:
        with self._sandbox_lock:
            self.sandboxes.discard(box)

    # -- budget -------------------------------------------------------------------------------
    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def check_budget(self) -> None:
        """Before a call: stop if a budget is already used up."""
        self.check_running()
        reason = self._budget_exceeded()
        if reason:
            self.halt("limit", *reason)
            raise _Halted()

    def _budget_exceeded(self) -> tuple[str, str] | None:
        lim = self.limits
        if lim.budget_usd is not None and self.cost_sum >= lim.budget_usd:
            return ("budget_usd", f"USD budget reached: spent ${self.cost_sum:.4f} of "
                                  f"${lim.budget_usd:.4f}")
        if lim.max_tokens is not None and self.total_tokens >= lim.max_tokens:
            return ("max_tokens", f"token budget reached: {self.total_tokens:,} of "
                                  f"{lim.max_tokens:,} tokens used")
        return None

    def account(self, res: ChatResult) -> None:
        """After a call: add its usage; a call that crossed a budget stops the run after it."""
        self.calls += 1
        self.input_tokens += res.input_tokens
        self.output_tokens += res.output_tokens
        self.cached_tokens += res.cached_tokens
        self.tokens_estimated = self.tokens_estimated or res.tokens_estimated
        if res.cost_usd is None:
            self.cost_unknown += 1
        else:
            self.cost_sum += res.cost_usd
        reason = self._budget_exceeded()
        if reason:
            self.halt("limit", *reason)

    def reserve_sub_calls(self, n: int) -> None:
        self.check_running()
        if self.sub_calls + n > self.limits.max_sub_calls:
            what = "this sub-call" if n == 1 else f"this batch of {n}"
            self.halt("limit", "max_sub_calls",
                      f"max sub-calls reached: {self.sub_calls} of {self.limits.max_sub_calls} used, "
                      f"{what} would exceed the limit")
            raise _Halted()
        self.sub_calls += n

    def semaphore(self, provider: ProviderConfig) -> asyncio.Semaphore:
        sem = self._semaphores.get(provider.id)
        if sem is None:
            sem = asyncio.Semaphore(max(1, provider.concurrency))
            self._semaphores[provider.id] = sem
        return sem

    def totals(self) -> dict[str, Any]:
        return {Attr.INPUT_TOKENS: self.input_tokens, Attr.OUTPUT_TOKENS: self.output_tokens,
                Attr.CACHED_TOKENS: self.cached_tokens, Attr.COST_USD: self.cost_value,
                Attr.COST_KNOWN: self.cost_unknown == 0, Attr.ITERATIONS: self.iterations,
                Attr.SUB_CALLS: self.sub_calls, Attr.TOKENS_ESTIMATED: self.tokens_estimated}

    @property
    def cost_value(self) -> float | None:
        if self.cost_unknown and self.calls == self.cost_unknown:
            return None
        return self.cost_sum

    # -- model calls --------------------------------------------------------------------------
    async def call_model(self, provider: ProviderConfig, model: str, messages: list[dict[str, Any]],
                         *, parent: str, depth: int, new_messages: list[dict[str, Any]],
                         history_from: str | None, history_note: str | None = None) -> tuple[ChatResult, str]:
        """One traced, budget-checked model call. Returns (result, llm_call span id)."""
        self.check_budget()
        async with self.semaphore(provider):
            self.check_budget()
            attrs: dict[str, Any] = {Attr.MODEL: model, Attr.PROVIDER: provider.name, Attr.DEPTH: depth,
                                     Attr.MESSAGES: new_messages, Attr.MESSAGE_COUNT: len(messages)}
            if history_from:
                attrs[Attr.HISTORY_FROM] = history_from
            if history_note:
                attrs[Attr.HISTORY_NOTE] = history_note
            if provider.is_demo:
                attrs[Attr.DEMO] = True
            sid = self.start(SpanKind.LLM_CALL, f"chat {model}", parent, attrs)
            response = _ReplyRecorder(self.trace, sid)
            retries: list[dict[str, Any]] = []
            billed = _FailedAttempts(provider, model, messages)

            def on_retry(attempt: int, error: str, wait: float) -> None:
                log.warning("%s: attempt %d failed (%s); retrying in %.1f s", model, attempt, error, wait,
                            extra={"provider": provider.name, "span": sid})
                entry: dict[str, Any] = {"attempt": attempt, "error": error, "wait_s": round(wait, 3)}
                failed = response.attempt_failed()
                if failed["response_chars"]:
                    entry.update(failed)
                    entry.update(billed.add(failed["response_chars"]))
                retries.append(entry)
                # the next attempt streams into an empty response; the failed one is in `retries`
                self.trace.update_span(sid, {Attr.RETRIES: list(retries), Attr.RESPONSE: ""})

            timeout = min(self.limits.call_timeout_s, provider.request_timeout_s)
            try:
                res = await chat(provider, model, messages, timeout_s=timeout,
                                 on_delta=response.add, on_retry=on_retry,
                                 max_response_chars=self.limits.max_response_chars)
            except ProviderError as exc:
                failed = response.attempt_failed()
                response.close()
                log.info("%s: the call failed: %s", model, exc,
                         extra={"provider": provider.name, "span": sid, "kind": exc.kind})
                status = SpanStatus.TIMEOUT if exc.kind == "timeout" else SpanStatus.ERROR
                end_attrs: dict[str, Any] = {Attr.ERROR: str(exc), Attr.ATTEMPTS: exc.attempts}
                if failed["response_chars"]:   # what the failed reply said, bounded
                    end_attrs.update({Attr.RESPONSE: failed["response"],
                                      "response_chars": failed["response_chars"]})
                    billed.add(failed["response_chars"])
                spent = billed.result()
                if spent is not None:          # replies that were streamed are billed, if cut short
                    end_attrs.update(_usage_attrs(spent))
                self.end(sid, status, end_attrs)
                if spent is not None:
                    self.account(spent)
                raise
            except asyncio.CancelledError:
                response.close()
                self.end(sid, self.interrupted, {Attr.ERROR: "interrupted: " + self._why()})
                raise
            res = billed.plus(res)     # failed attempts that streamed a reply were billed too
            end_attrs: dict[str, Any] = {
                **_usage_attrs(res), Attr.FINISH_REASON: res.finish_reason,
                Attr.ATTEMPTS: res.attempts, Attr.RESPONSE_MODEL: res.model}
            response.close(into=end_attrs)
            if retries or response.total != len(res.text):   # a retried or non-streamed answer
                end_attrs[Attr.RESPONSE] = res.text
            self.end(sid, SpanStatus.OK, end_attrs)
        self.account(res)
        return res, sid

    def _why(self) -> str:
        return self.stop.reason if self.stop else "its code cell ended before the answer arrived"


class _History:
    """Keeps the root conversation within a size: system prompt and question always stay; old cell
    outputs are shortened first (oldest first), then the oldest exchanges are dropped. Each change
    is stated in the conversation itself so the model knows.

    Once over the limit it shortens outputs until well below it (``LOW_WATER`` of the limit), not
    just under it, and drops exchanges only if shortening is not enough to get under the limit: the conversation then keeps an unchanged prefix for several iterations, so the provider's
    prompt cache keeps hitting and the trace records the full history only now and then (a
    just-under policy would rewrite an old message, and store every message again, on every turn).
    """

    LOW_WATER = 0.75

    def __init__(self, limit_chars: int, head: int = 2) -> None:
        self.limit = limit_chars
        self.head = head                      # messages that always stay: system, earlier turns, question
        self.output_indexes: list[int] = []   # messages that are cell outputs (shortenable)
        self.dropped_total = 0

    @staticmethod
    def size(messages: list[dict[str, Any]]) -> int:
        return sum(len(str(m.get("content") or "")) for m in messages)

    def enforce(self, messages: list[dict[str, Any]]) -> str | None:
        """Shrink ``messages`` in place when too big. Returns a note of what was done, or None."""
        total = self.size(messages)
        if total <= self.limit:
            return None
        target = int(self.limit * self.LOW_WATER)
        shortened = 0
        for idx in self.output_indexes[:-1]:           # never the newest output
            if total <= target:
                break
            content = str(messages[idx].get("content") or "")
            keep = SHRUNK_HEAD + SHRUNK_TAIL
            if len(content) <= keep + 200:
                continue
            new = (content[:SHRUNK_HEAD] + f"\n[… older output shortened from {len(content):,} to "
                   f"{keep:,} characters to keep the conversation small; recompute it if needed …]\n"
                   + content[-SHRUNK_TAIL:])
            messages[idx] = {**messages[idx], "content": new}
            total -= len(content) - len(new)
            shortened += 1
        dropped = 0
        start = self.head + 2 if self.dropped_total else self.head   # after the question (and a note)
        # Still over the limit once every old output is short: drop the oldest (assistant, user)
        # exchanges, never the newest one (and then down to the low-water mark too).
        while total > (target if dropped else self.limit) and len(messages) - start > 2:
            pair = messages[start:start + 2]
            del messages[start:start + 2]
            total -= self.size(pair)
            dropped += 1
        if dropped:
            self.dropped_total += dropped
            n = self.dropped_total
            note = (f"[{n} earlier exchange{'s' if n != 1 else ''} removed to keep the conversation "
                    "within the model's context; variables in the REPL are unaffected.]")
            if start == self.head + 2:
                messages[self.head + 1] = {"role": "user", "content": note}
            else:
                messages.insert(self.head, {"role": "assistant", "content": "[earlier replies omitted]"})
                messages.insert(self.head + 1, {"role": "user", "content": note})
        self.output_indexes = [i for i in range(self.head, len(messages))
                               if messages[i].get("role") == "user"
                               and str(messages[i].get("content") or "").startswith("[cell")]
        parts = []
        if shortened:
            parts.append(f"{shortened} older cell output{'s' if shortened != 1 else ''} shortened")
        if dropped:
            parts.append(f"{dropped} oldest exchange{'s' if dropped != 1 else ''} removed")
        return ("history over " f"{self.limit:,} characters: " + ", ".join(parts)) if parts else None


def _preview(text: str) -> str:
    if len(text) <= PROMPT_PREVIEW_CHARS:
        return text
    return text[:PROMPT_PREVIEW_CHARS] + f"… [{len(text) - PROMPT_PREVIEW_CHARS:,} more characters]"


def _final_value(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


class _RLM:
    """One (root or nested) RLM: its own sandbox, conversation and iterations."""

    def __init__(self, state: _Shared, *, depth: int, query: str, context: str | dict[str, str],
                 run_span: str, turn: TurnContext | None = None) -> None:
        self.s = state
        self.depth = depth
        self.query = query
        self.context = context
        self.run_span = run_span
        self.turn = turn            # a session's turn (root run only): live REPL, earlier turns
        self.sandbox: Repl | None = None
        self.cell_tasks: set[asyncio.Task[Any]] = set()
        self.it_span: str | None = None
        self.system_prompt: str | None = None
        self.variables: str | None = None
        self.notes: tuple[str, ...] = turn.notes if turn is not None else ()
        self.answer_dict = False   # the ``answer`` dict of the official RLM protocol was created
        self.last_cell_span: str | None = None

    async def run(self) -> tuple[str | None, str, str]:
        """Returns (answer or best partial, stop_reason, reason). Raises _Halted / ProviderError /
        SandboxRefused / SandboxError / CancelledError."""
        s = self.s
        cfg = s.config
        lim = s.limits
        info = prompts.describe_context(self.context, self.turn.kinds if self.turn is not None else None)
        kept = self.turn is not None       # a session's REPL: started once, kept after the run
        if self.turn is not None:
            box = self.turn.repl
        else:
            box = new_repl(cfg.sandbox, context=self.context, depth=self.depth,
                           rlm_query_enabled=self.depth < lim.max_depth, label=f"depth {self.depth}")
        self.sandbox = box
        s.add_sandbox(box)
        try:
            s.check_running()
            report = box.isolation if (kept and box.started and box.isolation) else await box.start()
            iso = report.to_dict()
            s.trace.update_span(self.run_span, {Attr.ISOLATION: iso})
            if self.depth == 0:
                s.isolation = iso
                s.trace.update_header({"isolation": iso})
            if s.cancel.cancelled:
                box.kill()
            s.check_running()
            if self.turn is not None and self.turn.prepare is not None:
                self.notes += await self.turn.prepare(box, self.run_span)
                s.check_running()
            outcome = await self._iterate(info)
            if kept and self.turn is not None and self.turn.read_variables and s.stop is None and box.alive:
                await self._read_variables()
            return outcome
        finally:
            if self.it_span is not None and self.it_span in s.open_spans:   # interrupted mid-iteration
                s.end(self.it_span, s.interrupted, {Attr.ERROR: "interrupted: " + s._why()})
            s.remove_sandbox(box)
            if s.stop is not None:
                box.kill()
            if not kept:
                await _close_quietly(box)

    async def _read_variables(self) -> None:
        """A session's turn ends by asking the REPL which variables it holds (for the next turn)."""
        cell = await self._run_cell(VARIABLES_CELL, self.run_span, 1, 1, name=VARIABLES_CELL_NAME,
                                    internal=True)
        if cell.ok:
            self.variables = parse_show_vars(cell.stdout)

    def _history_limit(self) -> int:
        lim = self.s.limits.max_history_chars
        window = self.s.provider.context_windows.get(self.s.config.root_model)
        if window:
            lim = min(lim, int(window * 4 * HISTORY_WINDOW_SHARE))
        return max(lim, 8_000)

    async def _iterate(self, info: prompts.ContextInfo) -> tuple[str | None, str, str]:
        s = self.s
        cfg = s.config
        lim = s.limits
        turn = self.turn
        if turn is not None and turn.system_prompt:
            system = turn.system_prompt
        elif turn is not None and turn.custom_prompt:
            system = prompts.custom_system_prompt(turn.custom_prompt, info, turn.note)
        else:
            system = prompts.system_prompt(
                info, sub_model=cfg.sub_model, depth=self.depth, max_depth=lim.max_depth,
                max_iterations=lim.max_iterations, max_output_chars=lim.max_output_chars,
                cell_timeout_s=lim.cell_timeout_s, max_sub_calls=lim.max_sub_calls,
                note=turn.note if turn is not None else None)
        self.system_prompt = system
        messages: list[dict[str, Any]] = [{"role": "system", "content": system}]
        if turn is not None and turn.turn > 1:
            messages += prompts.earlier_turn_messages(list(turn.earlier))
            question = prompts.follow_up_user_message(self.query, turn.turn, list(self.notes))
        else:
            question = prompts.first_user_message(self.query)
            if self.notes:
                question += "".join(f"\n{n}" for n in self.notes)
        messages.append({"role": "user", "content": question})
        history = _History(self._history_limit(), head=len(messages))
        sent = 0
        last_call: str | None = None
        best_partial: str | None = None
        for it in range(1, lim.max_iterations + 1):
            s.check_running()
            if self.depth == 0:
                s.iterations = it
                s.trace.update_span(self.run_span, {Attr.ITERATIONS: it})
            it_span = s.start(SpanKind.ITERATION, f"iteration {it}", self.run_span, {Attr.DEPTH: self.depth})
            self.it_span = it_span
            note = history.enforce(messages)
            if note is not None:
                new, hist_from = list(messages), None   # the chain restarts with the shortened list
            else:
                new, hist_from = messages[sent:], last_call
            try:
                res, last_call = await s.call_model(
                    s.provider, cfg.root_model, list(messages), parent=it_span, depth=self.depth,
                    new_messages=new, history_from=hist_from, history_note=note)
            except ProviderError as exc:
                s.end(it_span, SpanStatus.TIMEOUT if exc.kind == "timeout" else SpanStatus.ERROR,
                      {Attr.ERROR: str(exc)})
                raise
            sent = len(messages)   # the next call records the messages from here on (reply included)
            messages.append({"role": "assistant", "content": res.text})
            s.check_running()     # the call may have crossed a budget
            parsed = parse_reply(res.text)
            cut_note = prompts.cut_reply_message(res.finish_reason) if parsed.last_unclosed else None
            if cut_note is not None:
                # The reply hit the output-token limit or the content filter inside a code block:
                # do not run half a cell.
                parsed = dataclasses.replace(parsed, code_blocks=parsed.code_blocks[:-1], last_unclosed=False)
            if not parsed.has_code and cut_note is not None:
                messages.append({"role": "user", "content": cut_note})
                s.end(it_span, SpanStatus.OK)
                continue
            if not parsed.has_code:
                if parsed.final is not None:
                    answer, problem = await self._resolve_final(parsed.final, it_span)
                    if answer is not None:
                        self._final_span(it_span, answer, parsed.final.via)
                        s.end(it_span, SpanStatus.OK)
                        return answer, "final", "final answer"
                    messages.append({"role": "user", "content": prompts.final_rejected_message(problem)})
                else:
                    messages.append({"role": "user", "content": prompts.corrective_message(parsed.unknown_calls)})
                s.end(it_span, SpanStatus.OK)
                continue
            outputs: list[str] = []
            all_ok = True
            blocks = parsed.code_blocks
            for k, code in enumerate(blocks, 1):
                await self._answer_dict_before(code, it_span)
                cell = await self._run_cell(code, it_span, k, len(blocks))
                text, _ = prompts.format_cell_output(
                    k, len(blocks), status=cell.status, stdout=cell.stdout, stderr=cell.stderr,
                    error=cell.error, duration_s=cell.duration_s, max_chars=lim.max_output_chars,
                    restarted=cell.restarted, restart_reason=cell.restart_reason,
                    sandbox_output_truncated=cell.output_truncated)
                outputs.append(text)
                if self.last_cell_span is not None:     # what of the documents the root model sees
                    if s.index_ready():
                        s.trace.update_span(self.last_cell_span, await s.seen(text))
                    else:
                        s.record_seen(self.last_cell_span, text)
                final = cell.final if cell.final is not None else await self._answer_dict_after(cell, code, it_span)
                if final is not None and cell.ok:
                    answer = _final_value(final.value)
                    self._final_span(it_span, answer, final.via)
                    s.end(it_span, SpanStatus.OK)
                    return answer, "final", "final answer"
                if not cell.ok:
                    all_ok = False
                    if k < len(blocks):
                        outputs.append(prompts.cells_skipped_message(len(blocks) - k))
                    break
            if parsed.final is not None:
                if all_ok:
                    answer, problem = await self._resolve_final(parsed.final, it_span)
                    if answer is not None:
                        self._final_span(it_span, answer, parsed.final.via)
                        s.end(it_span, SpanStatus.OK)
                        return answer, "final", "final answer"
                    outputs.append(prompts.final_rejected_message(problem))
                else:
                    if parsed.final.via == "FINAL":
                        best_partial = parsed.final.value
                        if self.depth == 0:
                            s.best_partial = best_partial
                    outputs.append(prompts.final_rejected_message(
                        "the code in the same reply failed, so the answer was written before seeing "
                        "a correct result"))
            if cut_note is not None:
                outputs.append(cut_note)
            outputs.append(prompts.continue_message(self.query, it, lim.max_iterations))
            messages.append({"role": "user", "content": "\n\n".join(outputs)})
            history.output_indexes.append(len(messages) - 1)
            s.end(it_span, SpanStatus.OK)
        return (best_partial, "max_iterations",
                f"max iterations reached ({lim.max_iterations}) without a final answer")

    async def _answer_dict_before(self, code: str, parent: str) -> None:
        """The official RLM library's protocol writes into ``answer[...]``: create the dict first."""
        if needs_answer_dict(code) and not self.answer_dict:
            self.answer_dict = True
            await self._run_cell('if "answer" not in globals():\n    answer = {"content": "", "ready": False}',
                                 parent, 1, 1, name="answer dict")

    async def _answer_dict_after(self, cell: CellResult, code: str, parent: str) -> FinalValue | None:
        """The final answer when a cell set ``answer["ready"] = True`` (the official RLM library's
        protocol), else None."""
        if not cell.ok or not uses_answer_dict(code):
            return None
        probe = await self._run_cell(
            'if isinstance(globals().get("answer"), dict) and globals()["answer"].get("ready"):\n'
            '    FINAL(globals()["answer"].get("content", ""))', parent, 1, 1, name="answer ready?")
        if probe.final is None or not probe.ok:
            return None
        return dataclasses.replace(probe.final, via="answer")

    def _final_span(self, parent: str, answer: str, via: str) -> None:
        sid = self.s.start(SpanKind.FINAL, "final", parent, {Attr.ANSWER: answer, Attr.VIA: via,
                                                            Attr.DEPTH: self.depth})
        self.s.end(sid, SpanStatus.OK)

    async def _resolve_final(self, final: TextualFinal, parent: str) -> tuple[str | None, str]:
        """A textual final's answer, or (None, why not). FINAL_VAR reads the variable in the REPL."""
        if final.via == "FINAL":
            bare = final.value.strip()
            if not bare:
                return None, "FINAL() was empty"
            if (final.raw == final.value and bare.isidentifier() and not keyword.iskeyword(bare)
                    and bare not in _REPL_NAMES):
                # FINAL(answer) written as text usually means the variable `answer` when it exists.
                cell = await self._run_cell(f"if {bare!r} in globals():\n    FINAL_VAR({bare!r})",
                                            parent, 1, 1, name="FINAL (variable?)", internal=True)
                if cell.final is not None and cell.ok:
                    return _final_value(cell.final.value), ""
            return final.value, ""
        cell = await self._run_cell(f"FINAL_VAR({final.value!r})", parent, 1, 1, name="FINAL_VAR",
                                    internal=True)
        if cell.final is not None and cell.ok:
            return _final_value(cell.final.value), ""
        err = (cell.error or cell.stderr or "the variable could not be read").strip().splitlines()
        return None, f"FINAL_VAR({final.value}) failed: {err[-1] if err else 'no value'}"

    async def _run_cell(self, code: str, parent: str, index: int, total: int, *,
                        name: str | None = None, internal: bool = False) -> CellResult:
        s = self.s
        attrs: dict[str, Any] = {Attr.CODE: code, Attr.DEPTH: self.depth}
        if internal:
            attrs[Attr.INTERNAL] = True     # run by the app, not the model: never replayed
        sid = s.start(SpanKind.CODE_CELL, name or (f"cell {index}" if total > 1 else "cell"), parent, attrs)
        self.last_cell_span = sid
        out = _Appender(s.trace, sid, Attr.STDOUT)
        err = _Appender(s.trace, sid, Attr.STDERR)

        def on_output(stream: str, text: str) -> None:
            (err if stream == "stderr" else out).add(text)

        async def on_request(req: SubRequest) -> Any:
            task = asyncio.current_task()
            if task is not None:
                self.cell_tasks.add(task)
                s.tasks.add(task)
            try:
                return await self._handle_request(req, sid)
            finally:
                if task is not None:
                    self.cell_tasks.discard(task)
                    s.tasks.discard(task)

        assert self.sandbox is not None
        try:
            cell = await self.sandbox.run_cell(code, timeout_s=s.limits.cell_timeout_s,
                                               on_request=on_request, on_output=on_output)
        except asyncio.CancelledError:
            out.close()
            err.close()
            self._cancel_cell_tasks()
            s.end(sid, s.interrupted, {Attr.ERROR: "interrupted: " + s._why()})
            raise
        await self._finish_cell_tasks()
        attrs: dict[str, Any] = {}
        out.close(into=attrs)
        err.close(into=attrs)
        if out.total != len(cell.stdout):
            attrs[Attr.STDOUT] = cell.stdout
        if err.total != len(cell.stderr):
            attrs[Attr.STDERR] = cell.stderr
        if cell.error:
            attrs[Attr.ERROR] = cell.error
        if cell.restarted:
            attrs[Attr.SANDBOX_RESTARTED] = (f"sandbox restarted: {cell.restart_reason or cell.status}; "
                                             "variables lost")
            log.warning("sandbox restarted after a cell (%s); the REPL's variables were lost",
                        cell.restart_reason or cell.status, extra={"span": sid})
        if cell.output_truncated:
            attrs["output_truncated"] = True
        status = {"ok": SpanStatus.OK, "timeout": SpanStatus.TIMEOUT,
                  "cancelled": SpanStatus.CANCELLED}.get(cell.status, SpanStatus.ERROR)
        if cell.ok and cell.status != "ok":
            status = SpanStatus.OK
        s.end(sid, status, attrs)
        s.check_running()
        return cell

    def _cancel_cell_tasks(self) -> None:
        for task in list(self.cell_tasks):
            if not task.done():
                task.cancel()

    async def _finish_cell_tasks(self) -> None:
        """Sub-calls still running after their cell ended (timeout, crash): cancel them and let
        them end their spans before the cell's span ends."""
        pending = [t for t in self.cell_tasks if not t.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=5.0)

    # -- requests from model code ---------------------------------------------------------------
    async def _handle_request(self, req: SubRequest, cell_span: str) -> Any:
        s = self.s
        p = req.payload or {}
        try:
            if req.kind == "llm_query":
                s.reserve_sub_calls(1)
                return await self._sub_llm(str(p.get("prompt", "")), p.get("model"), cell_span, None)
            if req.kind == "llm_query_batched":
                prompts_list = [str(x) for x in (p.get("prompts") or [])]
                if not prompts_list:
                    return []
                s.reserve_sub_calls(len(prompts_list))
                return await self._batch(prompts_list, p.get("model"), cell_span)
            if req.kind == "rlm_query":
                return await self._sub_rlm(str(p.get("prompt", "")), p.get("context"), cell_span)
        except _Halted:
            raise RuntimeError(f"the run is stopping: {s._why()}") from None
        raise RuntimeError(f"unknown request {req.kind!r} from the REPL")

    async def _batch(self, prompts_list: list[str], model: Any, cell_span: str) -> list[str]:
        s = self.s
        sem = asyncio.Semaphore(max(1, s.limits.batch_concurrency))

        async def one(i: int, prompt: str) -> str:
            async with sem:
                try:
                    return await self._sub_llm(prompt, model, cell_span, i)
                except _Halted:
                    raise
                except (ProviderError, RuntimeError) as exc:
                    return f"Error: {exc}"

        tasks = [asyncio.ensure_future(one(i, p)) for i, p in enumerate(prompts_list)]
        s.tasks.update(tasks)     # a halt cancels every item still running
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        finally:
            s.tasks.difference_update(tasks)

    async def _sub_llm(self, prompt: str, model: Any, parent: str, batch_index: int | None) -> str:
        s = self.s
        model_name = str(model) if model else (s.config.sub_model or s.sub_provider.sub_model)
        attrs: dict[str, Any] = {Attr.PROMPT: _preview(prompt), Attr.MODEL: model_name,
                                 Attr.DEPTH: self.depth + 1}
        if len(prompt) > PROMPT_PREVIEW_CHARS:
            attrs["prompt_chars"] = len(prompt)   # the whole prompt is in the child llm_call
        if batch_index is not None:
            attrs[Attr.BATCH_INDEX] = batch_index
        ready = s.index_ready()
        if ready:
            attrs.update(await s.seen(prompt))    # what of the documents this sub-call's model sees
        name = "llm_query" if batch_index is None else f"llm_query_batched[{batch_index}]"
        sid = s.start(SpanKind.SUB_CALL, name, parent, attrs)
        if not ready:
            s.record_seen(sid, prompt)            # the same, once the index is built
        key = (model_name, prompt)
        fut: asyncio.Future[str] | None = None
        try:
            if s.config.memo_cache:
                existing = s.memo.get(key)
                if existing is not None:
                    try:
                        text = await asyncio.shield(existing)
                    except (ProviderError, RuntimeError) as exc:   # the first identical call failed
                        s.end(sid, SpanStatus.ERROR, {Attr.CACHE_HIT: True, Attr.ERROR: str(exc)})
                        raise RuntimeError(str(exc)) from None
                    s.end(sid, SpanStatus.OK, {Attr.CACHE_HIT: True, Attr.RESPONSE: text,
                                               Attr.COST_USD: 0.0, Attr.COST_KNOWN: True,
                                               Attr.INPUT_TOKENS: 0, Attr.OUTPUT_TOKENS: 0})
                    return text
                fut = s.loop.create_future()
                s.memo[key] = fut
            msgs = [{"role": "user", "content": prompt}]
            res, _ = await s.call_model(s.sub_provider, model_name, msgs, parent=sid,
                                        depth=self.depth + 1, new_messages=msgs, history_from=None)
            if fut is not None and not fut.done():
                fut.set_result(res.text)
            s.end(sid, SpanStatus.OK, {Attr.CACHE_HIT: False})
            s.check_running()
            return res.text
        except ProviderError as exc:
            self._forget(key, fut, exc)
            s.end(sid, SpanStatus.TIMEOUT if exc.kind == "timeout" else SpanStatus.ERROR,
                  {Attr.ERROR: str(exc)})
            raise RuntimeError(str(exc)) from None
        except _Halted:
            self._forget(key, fut, RuntimeError(s._why()))
            s.end(sid, s.interrupted, {Attr.ERROR: s._why()})
            raise
        except asyncio.CancelledError:
            self._forget(key, fut, RuntimeError("cancelled"))
            s.end(sid, s.interrupted, {Attr.ERROR: "interrupted: " + s._why()})
            raise

    def _forget(self, key: tuple[str, str], fut: asyncio.Future[str] | None, exc: BaseException) -> None:
        if fut is None:
            return
        if self.s.memo.get(key) is fut:
            del self.s.memo[key]
        if not fut.done():
            fut.set_exception(exc)
            fut.exception()   # waiters get it; nobody else needs to retrieve it

    async def _sub_rlm(self, prompt: str, context: Any, parent: str) -> str:
        s = self.s
        lim = s.limits
        child_depth = self.depth + 1
        ready = s.index_ready()
        sid = s.start(SpanKind.SUB_CALL, "rlm_query", parent, {Attr.PROMPT: prompt, Attr.DEPTH: child_depth,
                                                                **(await s.seen(prompt) if ready else {})})
        if not ready:
            s.record_seen(sid, prompt)
        if self.depth >= lim.max_depth:
            msg = (f"rlm_query is not available: the maximum depth ({lim.max_depth}) is reached at "
                   f"depth {self.depth}; use llm_query instead")
            s.end(sid, SpanStatus.ERROR, {Attr.ERROR: msg, Attr.STOP_REASON: "max_depth"})
            raise RuntimeError(msg)
        try:
            s.reserve_sub_calls(1)
        except _Halted:
            s.end(sid, s.interrupted, {Attr.ERROR: s._why()})
            raise
        if context is None:
            ctx: str | dict[str, str] = self.context
        elif isinstance(context, dict):
            ctx = {str(k): v if isinstance(v, str) else str(v) for k, v in context.items()}
        else:
            ctx = context if isinstance(context, str) else str(context)
        info = prompts.describe_context(ctx)
        run_sid = s.start(SpanKind.RUN, f"rlm_query (depth {child_depth})", sid, {
            Attr.QUERY: prompt, Attr.DEPTH: child_depth, Attr.CONTEXT: info.to_dict(),
            Attr.MODELS: {"root": s.config.root_model, "sub": s.config.sub_model}})
        child = _RLM(s, depth=child_depth, query=prompt, context=ctx, run_span=run_sid)
        try:
            answer, stop_reason, reason = await child.run()
        except ProviderError as exc:
            s.end(run_sid, SpanStatus.ERROR, {Attr.ERROR: str(exc), Attr.STOP_REASON: "provider_error"})
            s.end(sid, SpanStatus.ERROR, {Attr.ERROR: str(exc)})
            raise RuntimeError(f"rlm_query failed: {exc}") from None
        except (SandboxRefused, SandboxError) as exc:
            s.end(run_sid, SpanStatus.ERROR, {Attr.ERROR: str(exc), Attr.STOP_REASON: "sandbox_refused"})
            s.end(sid, SpanStatus.ERROR, {Attr.ERROR: str(exc)})
            raise RuntimeError(f"rlm_query could not start its REPL: {exc}") from None
        except (_Halted, asyncio.CancelledError):
            s.end(run_sid, s.interrupted, {Attr.ERROR: s._why()})
            s.end(sid, s.interrupted, {Attr.ERROR: s._why()})
            raise
        if stop_reason == "final" and answer is not None:
            s.end(run_sid, SpanStatus.OK, {Attr.ANSWER: answer, Attr.STOP_REASON: "final"})
            s.end(sid, SpanStatus.OK, {Attr.RESPONSE: answer})
            return answer
        s.end(run_sid, SpanStatus.BUDGET, {Attr.STOP_REASON: stop_reason, Attr.ERROR: reason,
                                           Attr.ANSWER: answer})
        s.end(sid, SpanStatus.ERROR, {Attr.ERROR: reason})
        partial = f" Best partial answer: {answer}" if answer else ""
        raise RuntimeError(f"rlm_query ended without a final answer: {reason}.{partial}")


def _sources_attrs(trace: Trace, run_span: str, answer: str | None, sources: IndexSource,
                   context: str | dict[str, str], workbooks: Workbooks | None = None) -> dict[str, Any]:
    from rlm_desktop.core.citations import run_sources_attrs, sources_for

    if answer is None:        # nothing to check: what the models saw is in the trace already
        return {Attr.SOURCES: [r.to_dict() for r in sources_for(trace, run_span)], Attr.CITATIONS: []}
    try:
        index = sources.result(timeout=120)   # built by now unless the run was very short
    except Exception:   # noqa: BLE001 - a failed build must not lose the run's answer; logged
        log.exception("the source index could not be built; the answer's citations are not checked")
        return {}
    texts = {index.names[0]: context} if isinstance(context, str) and index.names else \
        context if isinstance(context, dict) else None
    try:
        return run_sources_attrs(trace, run_span, answer, index, texts, workbooks)
    except Exception:   # noqa: BLE001 - a bug here must not lose the run's answer; logged
        log.exception("checking the answer's citations failed")
        return {}


async def _close_quietly(box: Any) -> None:
    try:
        await asyncio.shield(box.close())
    except (SandboxError, OSError, ProcessLookupError):
        box.kill()
    except asyncio.CancelledError:
        box.kill()
        raise


def price_warning(config: RunConfig, provider: ProviderConfig,
                  sub_provider: ProviderConfig | None = None) -> str | None:
    """A plain-language warning when the USD budget cannot bound spend (a model's price is unknown)."""
    sub_provider = sub_provider or provider
    if config.limits.budget_usd is None:
        return None
    unknown = unpriced_models((p.prices, m) for p, m in ((provider, config.root_model),
                                                         (sub_provider, config.sub_model))
                              if not p.is_demo)
    if not unknown:
        return None
    names = ", ".join(unknown)
    tail = ("the token budget still applies" if config.limits.max_tokens is not None
            else "set a token budget (max_tokens) to bound spend")
    return (f"no price known for {names}: its cost is unknown, so the USD budget cannot limit it; "
            f"{tail}")


async def run_rlm(config: RunConfig, context: str | dict[str, str], *, provider: ProviderConfig,
                  sub_provider: ProviderConfig | None = None, trace: Trace,
                  cancel: CancelToken | None = None, turn: TurnContext | None = None,
                  sources: IndexSource | None = None) -> RunResult:
    """Run one RLM to its end and return the outcome. See the module docstring.

    With ``turn`` (a session's turn), the root run uses the session's live REPL and leaves it
    running, and a follow-up's conversation starts with the earlier turns in compact form.
    With ``sources`` (the documents' index), every sub-call prompt and every cell output fed back
    is mapped to the document lines it holds (``Attr.SOURCES`` per step), and the run span ends
    with the merged sources and the answer's citations, checked (core/citations.py)."""
    cancel = cancel or CancelToken()
    sub_provider = sub_provider or provider
    state = _Shared(config, provider, sub_provider, trace, cancel, sources)
    if sources is not None:
        from rlm_desktop.core.sheets import Workbooks

        state.workbooks = Workbooks(context)
    lim = config.limits
    info = prompts.describe_context(context, turn.kinds if turn is not None else None)
    run_attrs: dict[str, Any] = {
        Attr.QUERY: config.query, Attr.DEPTH: 0,
        Attr.MODELS: {"root": config.root_model, "sub": config.sub_model},
        Attr.PROVIDER: provider.name,
        Attr.LIMITS: dataclasses.asdict(lim), Attr.CONTEXT: info.to_dict(),
        "memo_cache": config.memo_cache,
    }
    if turn is not None:
        run_attrs[Attr.TURN] = turn.turn
    if sub_provider is not provider:
        run_attrs["sub_provider"] = sub_provider.name
    if provider.is_demo or sub_provider.is_demo:
        run_attrs[Attr.DEMO] = True
    warning = price_warning(config, provider, sub_provider)
    if warning:
        run_attrs[Attr.WARNING] = warning
    run_span = state.start(SpanKind.RUN, "run" if turn is None else f"turn {turn.turn}", None, run_attrs)
    log.info("run started: %s (root %s, sub %s), %d characters of context",
             provider.name, config.root_model, config.sub_model, info.total_chars,
             extra={"limits": dataclasses.asdict(lim), "run_started": trace.header.get("started")})
    unregister = cancel.on_cancel(state.on_cancel)
    timer = state.loop.call_later(lim.run_timeout_s, state.halt, "limit", "run_timeout",
                                  f"run time limit reached ({lim.run_timeout_s:g} s)")
    answer: str | None = None
    external_cancel = False
    root = _RLM(state, depth=0, query=config.query, context=context, run_span=run_span, turn=turn)
    try:
        answer, stop_reason, reason = await root.run()
        if stop_reason != "final":
            state.stop = state.stop or _Stop("limit", stop_reason, reason)
    except _Halted:
        pass
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None:
            for _ in range(state.self_cancels):
                task.uncancel()
            state.self_cancels = 0
            external_cancel = task.cancelling() > 0
        if state.stop is None:
            state.stop = _Stop("cancelled", "cancelled", "the run's task was cancelled")
    except ProviderError as exc:
        state.stop = state.stop or _Stop(
            "error", "call_timeout" if exc.kind == "timeout" else "provider_error", str(exc))
    except SandboxRefused as exc:
        state.stop = state.stop or _Stop("error", "sandbox_refused", str(exc))
    except SandboxError as exc:
        state.stop = state.stop or _Stop("error", "sandbox_error", str(exc))
    except Exception as exc:   # a bug: still end the trace properly and say what happened
        log.exception("run_rlm failed")
        state.stop = state.stop or _Stop("error", "internal_error",
                                         f"internal error: {type(exc).__name__}: {exc}")
    finally:
        timer.cancel()
        unregister()
        with state._sandbox_lock:
            leftovers = list(state.sandboxes)
        for box in leftovers:
            if turn is None or box is not turn.repl or state.stop is not None:
                box.kill()
    if state.self_cancels:   # a halt cancelled us after the work ended: absorb it
        task = asyncio.current_task()
        if task is not None:
            for _ in range(state.self_cancels):
                task.uncancel()
    stop = state.stop
    if stop is None or (stop.stop_reason == "final"):
        status, stop_reason, reason = "ok", "final", None
    else:
        status, stop_reason, reason = stop.status, stop.stop_reason, stop.reason
        if status == "limit" and answer is None:
            answer = state.best_partial
    run_status = SpanStatus.OK if status == "ok" else (stop.span_status if stop else SpanStatus.ERROR)
    await state.settle_sources(wait=not external_cancel and status != "cancelled")
    # Anything still open (interrupted work) ends with the status of what stopped the run.
    inner = dict(state.open_spans)
    inner.pop(run_span, None)
    for sid, _ in sorted(inner.items(), key=lambda kv: -kv[1]):
        state.end(sid, run_status if run_status is not SpanStatus.OK else SpanStatus.CANCELLED,
                  {Attr.ERROR: "interrupted: " + (reason or "the run ended")})
    end_attrs = {**state.totals(), Attr.ANSWER: answer, Attr.STOP_REASON: stop_reason}
    if reason:
        end_attrs[Attr.ERROR] = reason
    if state.sources is not None:
        end_attrs.update(_sources_attrs(trace, run_span, answer, state.sources, context, state.workbooks))
    state.end(run_span, run_status, end_attrs)
    result = RunResult(
        answer=answer, status=status, reason=reason, stop_reason=stop_reason,
        cost_usd=state.cost_value, cost_known=state.cost_unknown == 0,
        input_tokens=state.input_tokens, output_tokens=state.output_tokens,
        cached_tokens=state.cached_tokens, iterations=state.iterations, sub_calls=state.sub_calls,
        isolation=state.isolation, tokens_estimated=state.tokens_estimated,
        variables=root.variables, system_prompt=root.system_prompt,
        citations=end_attrs.get(Attr.CITATIONS), sources=end_attrs.get(Attr.SOURCES),
        material_read=end_attrs.get(Attr.MATERIAL_READ))
    # INFO either way: the caller (CLI, window) reports the outcome to the user itself.
    log.info("run finished: %s (%s)%s; %d iterations, %d sub-calls, %d+%d tokens%s, cost %s",
             status, stop_reason, f": {reason}" if reason else "", result.iterations, result.sub_calls,
             result.input_tokens, result.output_tokens, " (estimated)" if result.tokens_estimated else "",
             "unknown" if not result.cost_known else f"${result.cost_usd or 0:.4f}",
             extra={"run_started": trace.header.get("started"), "status": status,
                    "stop_reason": stop_reason})
    if external_cancel:
        raise asyncio.CancelledError()
    return result

