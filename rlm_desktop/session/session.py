"""A session: documents + a live REPL + an ordered list of turns, each turn a full RLM run.

This is the one place that starts a run, for every front end (the app, the CLI, Python): it
writes the trace header, picks the trace path, attaches the writer, records the history entry and
hands the engine the session's live REPL and its earlier turns. Qt-free.

A session lives on one asyncio event loop (its REPL process is driven from it): call
:meth:`Session.run_turn` always from the same loop. :meth:`Session.ask` and
:meth:`Session.ask_async` are the Python API's conveniences; they run turns on a private loop
thread of the session, so scripts and notebooks (which have their own loop) can use either.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.config import ProviderConfig, RunConfig, RunLimits, SandboxLimits
from rlm_desktop.core.trace import Attr, Span, SpanKind, SpanStatus, Trace, TraceWriter, read_trace
from rlm_desktop.engine import prompts
from rlm_desktop.engine.repl import Repl, new_repl
from rlm_desktop.engine.run import VARIABLES_CELL_NAME, RunResult, TurnContext, parse_show_vars, run_rlm
from rlm_desktop.session.history import ANSWER_PREVIEW_CHARS, HistoryEntry, HistoryStore
from rlm_desktop.session.replay import ReplayReport, rebuild, recorded_cells
from rlm_desktop.session.store import SessionLock, SessionStore, default_trace_path

if TYPE_CHECKING:
    from rlm_desktop.core.documents import DocumentSet
    from rlm_desktop.core.sources import PendingIndex


class SessionError(RuntimeError):
    """A session cannot be opened or continued; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Turn:
    """An earlier turn as the next turn's conversation shows it."""

    number: int
    question: str
    answer: str | None
    status: str
    variables: str
    run_span: str


@dataclass(frozen=True)
class TurnResult:
    """The outcome of one turn (the Python API's ``r``): the run's result plus where it lives."""

    session: str | None
    turn: int
    question: str
    run: RunResult
    trace: Path
    rebuild: ReplayReport | None = None

    # The fields a caller reads most, without going through ``run``.
    @property
    def answer(self) -> str | None:
        return self.run.answer

    @property
    def status(self) -> str:
        return self.run.status

    @property
    def reason(self) -> str | None:
        return self.run.reason

    @property
    def stop_reason(self) -> str | None:
        return self.run.stop_reason

    @property
    def cost_usd(self) -> float | None:
        return self.run.cost_usd

    @property
    def cost_known(self) -> bool:
        return self.run.cost_known

    @property
    def variables(self) -> str | None:
        return self.run.variables

    def to_dict(self) -> dict[str, Any]:
        d = self.run.to_dict()
        d.pop("system_prompt", None)
        d.update({"session": self.session, "turn": self.turn, "question": self.question,
                  "trace": str(self.trace)})
        if self.rebuild is not None:
            d["rebuild"] = {"cells": self.rebuild.cells, "sub_calls": self.rebuild.sub_calls,
                            "problems": [p.text() for p in self.rebuild.problems],
                            "seconds": round(self.rebuild.seconds, 3)}
        return d


def trace_header(question: str, provider: ProviderConfig, root_model: str, sub_model: str,
                 doc_count: int, total_chars: int, *, source: str, **extra: Any) -> dict[str, Any]:
    """The one trace header format (the first line of every trace after format/version), for
    sessions and for every other run the app makes (e.g. ``eval``). Never holds a key or a URL."""
    from rlm_desktop import __version__

    return {"app": "rlm-desktop", "app_version": __version__, "query": question,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "provider": provider.name, "demo": bool(provider.is_demo),
            "models": {"root": root_model, "sub": sub_model},
            "documents": {"count": doc_count, "total_chars": total_chars},
            "source": source, **extra}


def _context_digest(context: str | dict[str, str]) -> str:
    h = hashlib.sha256()
    if isinstance(context, str):
        h.update(context.encode("utf-8", "surrogatepass"))
    else:
        for k, v in context.items():
            h.update(k.encode("utf-8", "surrogatepass") + b"\0" + v.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def turns_from_trace(trace: Trace) -> tuple[list[Turn], str | None]:
    """The session's turns (in order) and the first turn's system prompt, read from its trace."""
    turns: list[Turn] = []
    system: str | None = None
    for root in trace.roots:
        n = root.attributes.get(Attr.TURN)
        if root.kind != SpanKind.RUN or not isinstance(n, int) or root.attributes.get(Attr.REPLAY):
            continue
        variables = ""
        for child in root.children:
            if child.kind == SpanKind.CODE_CELL and child.name == VARIABLES_CELL_NAME \
                    and child.status is SpanStatus.OK:
                variables = parse_show_vars(str(child.attributes.get(Attr.STDOUT) or ""))
        status = "incomplete" if root.running else str(root.status or SpanStatus.OK)
        answer = root.attributes.get(Attr.ANSWER)
        turns.append(Turn(n, str(root.attributes.get(Attr.QUERY) or ""),
                          str(answer) if answer is not None and status == "ok" else None,
                          status, variables, root.id))
        if system is None:
            system = _first_system_prompt(root)
    return turns, system


def _first_system_prompt(run: Span) -> str | None:
    stack = list(reversed(run.children))
    while stack:
        node = stack.pop()
        if node.kind == SpanKind.LLM_CALL and node.attributes.get(Attr.DEPTH, 0) == 0:
            for m in node.attributes.get(Attr.MESSAGES) or []:
                if isinstance(m, dict) and m.get("role") == "system":
                    return str(m.get("content") or "")
            return None
        if node.kind in (SpanKind.ITERATION,):
            stack.extend(reversed(node.children))
    return None


class _LoopThread:
    """A private asyncio loop on a daemon thread: the Python API's sync and async calls run there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rlm-session", daemon=True)
        self._thread.start()

    def submit(self, coro: Any) -> concurrent.futures.Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


@dataclass
class _Setup:
    provider: ProviderConfig
    sub_provider: ProviderConfig
    root_model: str
    sub_model: str
    limits: RunLimits
    sandbox: SandboxLimits
    memo_cache: bool


class Session:
    """Documents + a live REPL + turns. See the module docstring; README "Python API" shows use.

    ``docs``: files and folders to load (or give ``context``, a ``str`` or ``dict`` of path → text).
    ``continue_trace``: with ``trace_path`` of an existing unnamed run, continue that trace (its
    turns are the earlier turns; the REPL is rebuilt from it) instead of starting a new file.
    ``provider``: a :class:`ProviderConfig`, ``"demo"`` (offline demo), or None with ``base_url``
    (any OpenAI-compatible server; the key from ``api_key`` or ``OPENAI_API_KEY``) — or None for
    the demo. ``name``: a saved session's name: it is created, or reopened (its REPL rebuilt from
    its trace, without a model request, before the next turn). ``limits`` apply per turn.
    ``note``: a short note about the documents (at most 1,000 characters) that the system prompt
    carries; saved with a named session. It cannot change once the session has a turn (the system
    prompt is reused byte for byte by every turn): start a new session for another note.
    ``custom_prompt``: a system prompt that replaces the default (see
    ``engine.prompts.custom_system_prompt``; ``missing_contract`` says what it lacks).
    """

    def __init__(self, docs: Sequence[str | os.PathLike[str]] | None = None, *,
                 context: str | dict[str, str] | None = None, name: str | None = None,
                 provider: ProviderConfig | str | None = None, model: str | None = None,
                 sub_model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 sub_provider: ProviderConfig | None = None,
                 limits: RunLimits | None = None, sandbox: SandboxLimits | None = None,
                 memo_cache: bool = True, source: str = "python", trace_path: str | os.PathLike[str] | None = None,
                 store: SessionStore | None = None, history: HistoryStore | None = None,
                 follow_outside_links: bool = False, record_history: bool = True,
                 documents: DocumentSet | None = None, follow_ups: bool = True,
                 continue_trace: bool = False, note: str | None = None,
                 custom_prompt: str | None = None) -> None:
        try:
            prompts.clean_note(note)           # a bad note is said before anything is opened
        except prompts.PromptError as exc:
            raise SessionError(str(exc)) from None
        self.store = store or SessionStore()
        self.name = name
        self.source = source
        self.history = history or HistoryStore()
        self.record_history = record_history
        self._lock: SessionLock | None = None
        self._meta: dict[str, Any] = {}
        self._repl: Repl | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: _LoopThread | None = None
        self._writer: TraceWriter | None = None
        self._closed = False
        self._running = False
        self.turns: list[Turn] = []
        self.system_prompt: str | None = None
        self._prompt_sub_model: str | None = None    # the sub-model system_prompt names as default
        self.trace: Trace | None = None
        self.docs: DocumentSet | None = None
        self._context: str | dict[str, str] | None = None
        self._sources: PendingIndex | None = None    # built once per set of documents, in the background
        self._notes: list[str] = []
        self.follow_outside_links = follow_outside_links
        # False for a run that will have no follow-up (a CLI run without --session): the turn does
        # not end by listing the REPL's variables.
        self.follow_ups = follow_ups or name is not None
        reopened = False
        if name is not None:
            self.store.validate_name(name)
            self._lock = self.store.lock(name)        # raises SessionBusy when another process has it
            if self.store.exists(name):
                reopened = True
                self._meta = self.store.load_meta(name)
                self.trace_path = self.store.trace_path(name)
            else:
                self.trace_path = self.store.trace_path(name)
        else:
            self.trace_path = Path(trace_path) if trace_path is not None else None  # type: ignore[assignment]
            # An unnamed run's trace continued (the app's History → Continue): its turns are ours.
            reopened = continue_trace and self.trace_path is not None and self.trace_path.is_file()
        doc_paths = [os.fspath(p) for p in docs] if docs is not None else None
        if reopened and doc_paths is None and context is None:
            doc_paths = list(self._meta.get("docs") or [])
            if not doc_paths and self._meta.get("context_inline"):
                raise SessionError(f"session {name!r} was made from a context given in Python, which "
                                   "is not saved; pass the same context=... again to continue it")
        self._doc_paths: list[str] = []
        if context is not None:
            self._context = context
        elif doc_paths is not None:
            self._doc_paths = [os.path.abspath(p) for p in doc_paths]
            if documents is not None:          # loaded by the caller (it reported bad files itself)
                self.docs = documents
                self._context = documents.context_value()
            else:
                self._load_docs()
        else:
            raise SessionError("give the documents: docs=[paths] or context=text")
        if reopened:
            before = [str(p) for p in self._meta.get("docs") or []]
            added = [p for p in self._doc_paths if p not in before]
            if added and before:
                self._notes.append(_added_note(added, before, self.docs, follow_outside_links))
        self._setup = self._make_setup(provider, model, sub_model, base_url, api_key, sub_provider,
                                       limits, sandbox, memo_cache)
        if reopened:
            self._reopen()
            self._note_model_change()
        saved = self._meta.get("note")
        self.note: str | None = saved if isinstance(saved, str) and saved else None
        self.custom_prompt = custom_prompt if custom_prompt and custom_prompt.strip() else None
        if note is not None:
            try:
                self.set_note(note)
            except SessionError:
                if self._lock is not None:      # not opened after all: another may open it
                    self._lock.release()
                    self._lock = None
                raise
        _ = self.source_index   # start building it now: it is ready by the time a model needs it

    # -- set-up ----------------------------------------------------------------------------------
    def _load_docs(self) -> None:
        from rlm_desktop.core.documents import load_documents

        self.docs = load_documents(self._doc_paths, follow_outside_links=self.follow_outside_links)
        if not self.docs.documents:
            raise SessionError("no readable documents in " + ", ".join(self._doc_paths))
        self._context = self.docs.context_value()
        self._sources = None          # the next turn indexes the new set

    def _make_setup(self, provider: ProviderConfig | str | None, model: str | None, sub_model: str | None,
                    base_url: str | None, api_key: str | None, sub_provider: ProviderConfig | None,
                    limits: RunLimits | None, sandbox: SandboxLimits | None, memo: bool) -> _Setup:
        from rlm_desktop.engine.demo import DEMO_PROVIDER

        meta = self._meta
        if isinstance(provider, ProviderConfig):
            cfg = provider
        elif provider == "demo" or (provider is None and base_url is None and not meta.get("base_url")):
            cfg = DEMO_PROVIDER
        elif provider is None:
            url = base_url or str(meta.get("base_url") or "")
            key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY") or None
            m = model or meta.get("root_model")
            if not m:
                raise SessionError("model=... is required with base_url (the server's model name)")
            cfg = ProviderConfig(id="python", name=url, base_url=url, api_key=key,
                                 needs_key=key is not None, root_model=m, sub_model=sub_model or m)
        else:
            raise SessionError(f"provider {provider!r}: pass a ProviderConfig, 'demo', or base_url=... "
                               "(profile names are resolved by the app and the CLI)")
        if cfg.is_demo:
            root, sub = cfg.root_model, cfg.sub_model
        else:
            root = model or meta.get("root_model") or cfg.root_model
            sub = sub_model or meta.get("sub_model") or cfg.sub_model or root
        if not root:
            raise SessionError(f"no model chosen for {cfg.name}: pass model=...")
        return _Setup(cfg, sub_provider or cfg, root, sub, limits or RunLimits(),
                      sandbox or SandboxLimits(), memo)

    def _reopen(self) -> None:
        assert self.trace_path is not None
        try:
            self.trace = read_trace(self.trace_path)
        except FileNotFoundError:
            self.trace = None
            return
        if self.trace.header.get("context_sha256") not in (None, _context_digest(self._context or "")):
            self._notes.append("Note: the documents changed since the earlier turns; results computed "
                               "from them in the REPL may be out of date.")
        # A process that died mid-turn left spans open: close them so the tree reads right.
        self.trace.end_open_spans(SpanStatus.CANCELLED, reason="the process running this turn ended "
                                                               "before it finished")
        self.turns, self.system_prompt = turns_from_trace(self.trace)
        models = self.trace.header.get("models")
        sub = models.get("sub") if isinstance(models, dict) else None
        self._prompt_sub_model = sub if isinstance(sub, str) else None

    def set_note(self, note: str | None) -> None:
        """Set the note about the documents for the next turn. Refused (SessionError) once the
        session has a turn and the note differs: every turn reuses the first turn's system prompt
        byte for byte (prefix caching; earlier answers were given under it)."""
        try:
            cleaned = prompts.clean_note(note)
        except prompts.PromptError as exc:
            raise SessionError(str(exc)) from None
        if cleaned == self.note:
            return
        if self.turns or self.system_prompt is not None:
            raise SessionError("the note is part of this session's system prompt, which every turn "
                               "reuses unchanged; start a new session to use another note (this one "
                               "keeps " + (f"the note {self.note!r}" if self.note else "no note") + ")")
        self.note = cleaned
        if self.name is not None and self._writer is not None:   # its meta is written: keep it current
            self._save_meta()

    def add_documents(self, paths: Sequence[str | os.PathLike[str]], *,
                      documents: DocumentSet | None = None) -> DocumentSet:
        """Add files or folders for the next turn: ``context`` gains them (the REPL is rebuilt
        with the new ``context`` from the recording) and the model is told what changed.
        ``documents``: every document of the session, already loaded by the caller (the app's
        documents pane), used as the new ``context`` instead of loading the paths again."""
        if not self._doc_paths:
            raise SessionError("this session's context was given as a value; it has no documents to add to")
        new = [os.path.abspath(os.fspath(p)) for p in paths]
        added = [p for p in new if p not in self._doc_paths]
        if not added:
            assert self.docs is not None
            return self.docs
        before = list(self._doc_paths)
        self._doc_paths += added
        if documents is not None:
            self.docs = documents
            self._context = documents.context_value()
        else:
            self._load_docs()
        self._notes.append(_added_note(added, before, self.docs, self.follow_outside_links))
        if self._repl is not None:
            self._repl.kill()                  # the next turn starts a REPL on the new context
        if self.name and self.trace is not None:
            self._save_meta()
        assert self.docs is not None
        return self.docs

    @property
    def context(self) -> str | dict[str, str]:
        assert self._context is not None
        return self._context

    @property
    def source_index(self) -> PendingIndex:
        """The index mapping text back to the documents (core/sources.py), built on a background
        thread once per set of documents (``.result()`` waits for it)."""
        if self._sources is None:
            from rlm_desktop.core.sources import PendingIndex, SourceIndex

            docs, context = self.docs, self.context
            self._sources = PendingIndex(lambda: SourceIndex.from_documents(docs) if docs is not None
                                         else SourceIndex.from_context(context))
        return self._sources

    @property
    def turn_count(self) -> int:
        return len(self.turns)

    @property
    def provider(self) -> ProviderConfig:
        return self._setup.provider

    @property
    def root_model(self) -> str:
        return self._setup.root_model

    @property
    def sub_model(self) -> str:
        return self._setup.sub_model

    @property
    def limits(self) -> RunLimits:
        return self._setup.limits

    def _note_model_change(self) -> None:
        """A session reopened with other models than its last turn used: the root model is told."""
        if self.trace is None or not self.turns or self._setup.provider.is_demo:
            return
        models = self.trace.header.get("models")
        before = (self._meta.get("root_model"), self._meta.get("sub_model")) if self._meta.get("root_model") \
            else ((models.get("root"), models.get("sub")) if isinstance(models, dict) else (None, None))
        s = self._setup
        if None not in before and before != (s.root_model, s.sub_model):
            self._notes.append(f"Note: from this question on, the root model is {s.root_model} (it was "
                               f"{before[0]}) and llm_query uses {s.sub_model} by default (it was "
                               f"{before[1]}).")

    def set_models(self, model: str | None = None, sub_model: str | None = None) -> None:
        """Use other models of the same provider from the next turn on — a stronger model for a
        hard follow-up. The REPL, the documents, the note and the earlier turns stay; the root model
        is told of the change. The system prompt names the default sub-model, so a new sub-model
        gets a new system prompt (the provider's prefix cache starts over for that turn); a new
        root model alone keeps it byte for byte. The offline demo's models cannot change."""
        s = self._setup
        root = (model or "").strip() or s.root_model
        sub = (sub_model or "").strip() or s.sub_model
        if (root, sub) == (s.root_model, s.sub_model):
            return
        if s.provider.is_demo:
            raise SessionError("the offline demo has fixed models (demo-root / demo-sub)")
        self._notes.append(f"Note: from this question on, the root model is {root} (it was "
                           f"{s.root_model}) and llm_query uses {sub} by default (it was {s.sub_model}).")
        self._setup = replace(s, root_model=root, sub_model=sub)
        if self.name is not None and self._writer is not None:   # its meta is written: keep it current
            self._save_meta()

    def set_limits(self, limits: RunLimits) -> None:
        """Limits for the next turns (budgets are per turn)."""
        self._setup = replace(self._setup, limits=limits)

    # -- trace -----------------------------------------------------------------------------------
    def _header(self, question: str) -> dict[str, Any]:
        s = self._setup
        ctx = self.context
        count, chars = (1, len(ctx)) if isinstance(ctx, str) else (len(ctx), sum(len(v) for v in ctx.values()))
        extra: dict[str, Any] = {"context_sha256": _context_digest(ctx)}
        if self.name:
            extra["session"] = self.name
        return trace_header(question, s.provider, s.root_model, s.sub_model, count, chars,
                            source=self.source, **extra)

    def open_trace(self, question: str) -> Trace:
        """The session's trace, created (file and header) for a first turn asking ``question``.
        Raises OSError when the file cannot be written."""
        self._open_trace(question)
        assert self.trace is not None
        return self.trace

    def _open_trace(self, question: str) -> None:
        if self.trace is not None and self._writer is not None:
            return
        if self.trace is not None:                      # reopened: add to its file
            assert self.trace_path is not None
            self._writer = TraceWriter.append_to(self.trace_path)
            self._writer.attach(self.trace)
            return
        if self.trace_path is None:
            self.trace_path = default_trace_path(question)
        header = self._header(question)
        self._writer = TraceWriter(self.trace_path, header)
        self.trace = Trace(header)
        self._writer.attach(self.trace)
        if self.name:
            self._save_meta()

    def _save_meta(self) -> None:
        s = self._setup
        base_url = None
        if not s.provider.is_demo:
            from urllib.parse import urlsplit  # never the userinfo or query: they may hold secrets

            u = urlsplit(s.provider.base_url)
            base_url = f"{u.scheme}://{u.hostname or ''}{f':{u.port}' if u.port else ''}{u.path}"
        meta = {"name": self.name, "created": self._meta.get("created") or time.time(),
                "docs": self._doc_paths, "context_inline": not self._doc_paths,
                "provider": s.provider.id, "provider_name": s.provider.name,
                "base_url": base_url,
                "root_model": s.root_model, "sub_model": s.sub_model, "source": self.source,
                "note": self.note}
        assert self.name is not None
        self.store.save_meta(self.name, meta)
        self._meta = meta

    # -- turns -----------------------------------------------------------------------------------
    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise SessionError("a session runs its turns on one event loop; this call came from "
                               "another (use ask()/ask_async(), which take care of it)")

    async def run_turn(self, question: str, *, cancel: CancelToken | None = None,
                       limits: RunLimits | None = None, model: str | None = None,
                       sub_model: str | None = None) -> TurnResult:
        """Ask one question: a full RLM run over the session's REPL, recorded as the next turn.
        ``model`` / ``sub_model``: use these from this turn on (see :meth:`set_models`)."""
        if self._closed:
            raise SessionError("this session is closed; open it again to continue")
        if self._running:
            raise SessionError("a turn of this session is already running; wait for it or cancel it")
        self._bind_loop()
        if model or sub_model:
            self.set_models(model, sub_model)
        s = self._setup
        config = RunConfig(query=question, root_model=s.root_model, sub_model=s.sub_model,
                           limits=limits or s.limits, sandbox=s.sandbox, memo_cache=s.memo_cache)
        self._running = True
        try:
            return await self._run_turn(config, cancel or CancelToken())
        finally:
            self._running = False

    async def _run_turn(self, config: RunConfig, cancel: CancelToken) -> TurnResult:
        question = config.query
        self._open_trace(question)
        assert self.trace is not None and self.trace_path is not None
        number = len(self.turns) + 1
        rebuilt: list[ReplayReport] = []
        prepare = None
        if self._repl is None or not self._repl.alive:
            if self._repl is not None:
                await _close_quietly(self._repl)
            self._repl = new_repl(config.sandbox, context=self.context, depth=0,
                                  rlm_query_enabled=config.limits.max_depth > 0, label="session")
            if recorded_cells(self.trace)[0] or recorded_cells(self.trace)[1]:
                prepare = self._rebuilder(config, number, rebuilt)
        if self.system_prompt is not None and self._prompt_sub_model not in (None, config.sub_model):
            self.system_prompt = None           # it names another default sub-model: write it anew
        notes = tuple(self._notes)
        self._notes.clear()
        turn = TurnContext(repl=self._repl, turn=number,
                           earlier=tuple((t.question, t.answer, t.status, t.variables) for t in self.turns),
                           system_prompt=self.system_prompt, notes=notes, prepare=prepare,
                           kinds=self._kinds(), read_variables=self.follow_ups,
                           note=self.note, custom_prompt=self.custom_prompt)
        s = self._setup
        started = time.time()
        models = f"{s.provider.name}: {s.root_model}" + (f" / {s.sub_model}" if s.sub_model != s.root_model else "")
        entry = HistoryEntry(trace=str(self.trace_path), query=question, started=started, finished=0.0,
                             status="running", provider=models, pid=os.getpid(), session=self.name,
                             turn=number if self.name or number > 1 else None, source=self.source)
        self._history(entry)
        try:
            result = await run_rlm(config, self.context, provider=s.provider, sub_provider=s.sub_provider,
                                   trace=self.trace, cancel=cancel, turn=turn, sources=self.source_index)
        except BaseException:
            self._history(replace(entry, finished=time.time(), status="cancelled", stop_reason="cancelled"))
            raise
        self._history(replace(entry, finished=time.time(), status=result.status,
                              stop_reason=result.stop_reason, cost_usd=result.cost_usd,
                              cost_known=result.cost_known, cost_estimated=result.tokens_estimated,
                              answer_preview=(result.answer or "")[:ANSWER_PREVIEW_CHARS]))
        if self.system_prompt is None:
            self.system_prompt = result.system_prompt
            self._prompt_sub_model = config.sub_model
        run_span = next((r.id for r in reversed(self.trace.roots)
                         if r.attributes.get(Attr.TURN) == number), "")
        self.turns.append(Turn(number, question, result.answer if result.status == "ok" else None,
                               result.status, result.variables or "", run_span))
        return TurnResult(self.name, number, question, result, self.trace_path,
                          rebuilt[0] if rebuilt else None)

    def _kinds(self) -> dict[str, str] | None:
        """The loader's kind per document, keyed as ``context`` names them ("context" for one)."""
        if self.docs is None:
            return None
        docs = self.docs.documents
        if isinstance(self.context, str) and len(docs) == 1:
            return {"context": docs[0].kind}
        return {d.rel_path: d.kind for d in docs}

    def _rebuilder(self, config: RunConfig, number: int, out: list[ReplayReport]) -> Any:
        async def prepare(repl: Repl, run_span: str) -> tuple[str, ...]:
            assert self.trace is not None
            report = await rebuild(repl, self.trace, cell_timeout_s=config.limits.cell_timeout_s,
                                   parent=run_span)
            out.append(report)
            if report.complete:
                return ("Note: this REPL was rebuilt from the recorded cells of the earlier turns; "
                        "their variables are back.",)
            return ("Note: this REPL was rebuilt from the recorded cells of the earlier turns, but not "
                    "exactly: " + "; ".join(p.text() for p in report.problems)
                    + ". Recompute what you need from those.",)
        return prepare

    def _history(self, entry: HistoryEntry) -> None:
        if self.record_history:
            try:
                self.history.add(entry)
            except OSError:
                pass   # the history is a convenience; the trace on disk holds the run

    # -- Python API ------------------------------------------------------------------------------
    def _thread(self) -> _LoopThread:
        if self._loop_thread is None:
            self._loop_thread = _LoopThread()
        return self._loop_thread

    def ask(self, question: str, *, limits: RunLimits | None = None, model: str | None = None,
            sub_model: str | None = None) -> TurnResult:
        """Ask a question (blocking). Ctrl+C cancels the turn, waits for it to close, and re-raises.
        ``model`` / ``sub_model``: other models from this turn on (:meth:`set_models`)."""
        cancel = CancelToken()
        fut = self._thread().submit(self.run_turn(question, cancel=cancel, limits=limits, model=model,
                                                  sub_model=sub_model))
        try:
            return fut.result()
        except KeyboardInterrupt:
            cancel.cancel("interrupted (KeyboardInterrupt)")
            try:
                fut.result(timeout=30)
            except Exception:   # noqa: BLE001 - the interrupt is what the caller gets
                pass
            raise

    async def ask_async(self, question: str, *, limits: RunLimits | None = None, model: str | None = None,
                        sub_model: str | None = None) -> TurnResult:
        """Ask a question from any event loop (the turn runs on the session's own loop thread)."""
        cancel = CancelToken()
        fut = self._thread().submit(self.run_turn(question, cancel=cancel, limits=limits, model=model,
                                                  sub_model=sub_model))
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            cancel.cancel("the awaiting task was cancelled")
            raise

    # -- closing ---------------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Stop the REPL and close the trace file (on the session's loop)."""
        if self._closed:
            return
        self._closed = True
        repl, self._repl = self._repl, None
        if repl is not None:
            await _close_quietly(repl)
        if self._loop_thread is not None and asyncio.get_running_loop() is self._loop_thread.loop:
            from rlm_desktop.engine.providers import aclose_clients

            await aclose_clients()      # the pooled HTTP clients of our own loop
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def close(self) -> None:
        """Stop the REPL, close the trace and release the session (safe to call twice)."""
        if self._closed:
            return
        if self._loop_thread is not None:
            self._loop_thread.submit(self.aclose()).result(timeout=30)
            self._loop_thread.stop()
            self._loop_thread = None
        elif self._loop is not None and self._loop.is_running():
            raise SessionError("close a session driven by your own loop with `await session.aclose()`")
        else:
            asyncio.run(self.aclose())

    def abandon(self, reason: str) -> None:
        """Last resort before the process exits at once (a second Ctrl+C): end every open step in
        the trace with ``reason`` and close the file, so what is on disk reads right."""
        if self.trace is not None:
            self.trace.end_open_spans(SpanStatus.CANCELLED, reason=reason)
        if self._writer is not None:
            self._writer.close()
        if self._repl is not None:
            self._repl.kill()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:   # a forgotten session must not leave a REPL process behind
        repl = getattr(self, "_repl", None)
        if repl is not None:
            repl.kill()

    def summary(self) -> dict[str, Any]:
        """The session's totals over every turn (one core function: :func:`rlm_desktop.core.totals.totals`)."""
        from rlm_desktop.core.totals import totals

        t = totals(self.trace) if self.trace is not None else None
        return {"name": self.name, "turns": len(self.turns), "trace": str(self.trace_path or ""),
                "totals": None if t is None else json.loads(json.dumps(t.__dict__, default=str))}


def _added_note(paths: list[str], before: list[str] | None = None, docs: DocumentSet | None = None,
                follow_outside_links: bool = False) -> str:
    """What the model is told when documents were added; with the inputs ``before`` and the new
    ``docs``, also how ``context`` changed shape: one document was a string and is now a key of a
    dict, and a folder's files are named with the folder in front once several inputs are loaded
    (``a.txt`` becomes ``A/a.txt``) — code from earlier turns that used the old form must change."""
    names = ", ".join(os.path.basename(p.rstrip(os.sep)) or p for p in paths[:10])
    more = f" and {len(paths) - 10} more" if len(paths) > 10 else ""
    note = (f"Note: documents were added to `context` since the last turn: {names}{more}. `context` "
            "now holds them too; variables computed from it earlier do not include them.")
    if not before or docs is None or len(docs.documents) < 2:
        return note
    from rlm_desktop.core.documents import scan_paths

    try:
        old = scan_paths(before, follow_outside_links=follow_outside_links).files
    except OSError:
        return note
    new_key = {os.path.abspath(d.path): d.rel_path for d in docs.documents}
    if len(old) == 1:
        now = new_key.get(os.path.abspath(old[0][0]))
        if now is not None:
            note += (f" `context` was one string (the text of {old[0][1]}); it is now a dict of path "
                     f"-> text, and that text is context[{now!r}].")
        return note
    renamed = [(rel, new_key[os.path.abspath(p)]) for p, rel in old
               if os.path.abspath(p) in new_key and new_key[os.path.abspath(p)] != rel]
    if renamed:
        shown = ", ".join(f"{a!r} is now {b!r}" for a, b in renamed[:8])
        more = f" and {len(renamed) - 8} more" if len(renamed) > 8 else ""
        note += (f" The keys of the documents loaded before changed: {shown}{more} (several "
                 "inputs are named with their folder in front).")
    return note


async def _close_quietly(repl: Repl) -> None:
    try:
        await asyncio.shield(repl.close())
    except Exception:   # noqa: BLE001 - a REPL that cannot close cleanly is killed instead
        repl.kill()


def completion(context: str | dict[str, str], query: str, **kwargs: Any) -> TurnResult:
    """One question over a plain ``str`` or ``dict`` context: the one-call form of the API
    (like the paper's ``completion(context, query)``). Keyword arguments as for :class:`Session`."""
    with Session(context=context, **kwargs) as s:
        return s.ask(query)


__all__ = ["Session", "SessionError", "Turn", "TurnResult", "completion", "trace_header", "turns_from_trace"]
