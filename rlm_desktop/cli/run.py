"""`rlm-desktop run`: one RLM run from the command line (the headless contract of DESIGN.md)."""

# Prints the answer (or one JSON object with --json). Exit codes: 0 ok, 2 usage / bad input,
# 3 a limit or budget stopped the run, 4 cancelled (SIGINT/SIGTERM; the trace is closed first),
# 5 provider error after retries. The trace always goes to a file (--trace or the data folder).

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from rlm_desktop.cli.exit_codes import (
    EXIT_CANCELLED,
    EXIT_LIMIT,
    EXIT_OK,
    EXIT_PROVIDER,
    EXIT_USAGE,
    exit_code_for,
)
from rlm_desktop.core.textsafe import for_stream, for_terminal, json_for_terminal

log = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


def add_parser(subparsers: Any) -> None:
    from rlm_desktop.core.config import RunLimits

    d = RunLimits()
    p = subparsers.add_parser(
        "run", help="run an RLM over documents without the GUI",
        description="Run a Recursive Language Model over documents and print the answer. Without "
                    "--provider or --base-url, OPENAI_API_KEY selects OpenAI, else the provider last "
                    "chosen in the desktop app; with none of these the offline demo provider runs "
                    "(it says so on stderr). Limits default to the app's settings, then the flags.",
        epilog="exit codes: 0 answered; 2 usage or bad input; 3 a limit or budget stopped the run "
               "(a partial answer may be printed); 4 cancelled (SIGINT/SIGTERM, the trace is "
               "closed first); 5 provider error after retries.")
    p.add_argument("--docs", nargs="+", metavar="PATH",
                   help="files and/or folders (read recursively) to load as `context` (a continued "
                        "--session keeps its documents; paths given are added to them)")
    p.add_argument("--query", required=True, help="the question to answer")
    p.add_argument("--session", metavar="NAME",
                   help="start the named session, or ask a follow-up in it: the REPL keeps the "
                        "variables of earlier turns (rebuilt from the session's trace, without a model "
                        "request, in a new process). See `rlm-desktop sessions list`.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--provider", metavar="ID",
                     help="a provider profile (see `rlm-desktop provider list`), or 'demo'")
    src.add_argument("--base-url", metavar="URL",
                     help="any OpenAI-compatible server, e.g. http://localhost:11434/v1 "
                          "(key from OPENAI_API_KEY when set)")
    p.add_argument("--model", metavar="M", help="root model")
    p.add_argument("--sub-model", metavar="M", help="model for llm_query sub-calls (default: --model)")
    p.add_argument("--max-iterations", type=int, metavar="N",
                   help=f"root model replies at most (default {d.max_iterations})")
    p.add_argument("--max-depth", type=int, metavar="N",
                   help=f"rlm_query nesting allowed, 0 = none (default {d.max_depth})")
    p.add_argument("--max-sub-calls", type=int, metavar="N",
                   help=f"sub-calls at all depths together (default {d.max_sub_calls})")
    p.add_argument("--batch-concurrency", type=int, metavar="N",
                   help=f"sub-calls of one llm_query_batched in flight at once (default "
                        f"{d.batch_concurrency}; the provider's own concurrency caps it too)")
    p.add_argument("--budget-usd", type=float, metavar="X",
                   help=f"stop once this much has been spent (default {d.budget_usd:g})")
    p.add_argument("--max-tokens", type=int, metavar="N",
                   help="stop after this many tokens in total (default: no token limit)")
    p.add_argument("--cell-timeout", type=float, metavar="S",
                   help=f"wall-clock seconds per code cell (default {d.cell_timeout_s:g})")
    p.add_argument("--call-timeout", type=float, metavar="S",
                   help=f"seconds per model request attempt (default {d.call_timeout_s:g})")
    p.add_argument("--run-timeout", type=float, metavar="S",
                   help=f"wall-clock seconds for the whole run (default {d.run_timeout_s:g})")
    p.add_argument("--max-response-chars", type=int, metavar="N",
                   help=f"longest model reply in characters; a longer one is stopped as a runaway "
                        f"(default {d.max_response_chars:,})")
    p.add_argument("--trace", metavar="FILE", help="trace file (JSON Lines); default: the data folder")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the answer")
    p.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    p.add_argument("--allow-weak-sandbox", action="store_true",
                   help="run even when the sandbox isolation is below 'good' (less protection)")
    p.add_argument("--no-memo", action="store_true", help="do not reuse identical sub-call answers")
    p.add_argument("--follow-outside-links", action="store_true",
                   help="follow links in the --docs folders whose targets lie outside them (by "
                        "default such links are reported and skipped; the app's setting of the same "
                        "name also turns this on)")
    p.add_argument("--note", metavar="TEXT",
                   help="a short note about the documents for the model (at most 1,000 characters), "
                        "e.g. \"incident tickets from 2025; severity is in column 1\"; it goes into "
                        "the system prompt and is saved with a --session (which keeps it)")
    p.add_argument("--system-prompt-file", metavar="FILE",
                   help="a UTF-8 file whose text replaces the default system prompt (default: the "
                        "app's Settings, else the built-in prompt); {context_description} and {note} "
                        "in it are filled in, else appended. A prompt that does not mention context, "
                        "llm_query, ```repl fences and FINAL gets a warning on stderr")
    p.add_argument("--show", action="store_true",
                   help="stream each iteration as it happens: the model's text, the code, its output, "
                        "sub-calls (on stdout; on stderr with --json); no progress line")
    from rlm_desktop.cli.show import add_color_argument

    add_color_argument(p)
    p.set_defaults(handler=handle)


class UsageError(Exception):
    """Bad input on the command line; the message says what to change."""


def _err(msg: str) -> None:
    # Messages quote servers, models and file names: never let their control characters act.
    print(f"rlm-desktop run: {for_terminal(msg)}", file=sys.stderr, flush=True)


def _app_settings() -> tuple[Any | None, str | None]:
    """The desktop app's Settings (profiles, default limits), or (None, why not)."""
    try:
        from rlm_desktop.session.prefs import Preferences as Settings
    except ImportError as exc:
        return None, f"the app's settings are not available in this installation ({exc})"
    try:
        return Settings(), None
    except Exception as exc:   # an unreadable preferences file must not stop a headless run
        return None, f"the app's settings could not be read ({exc})"


def _resolve_provider(args: argparse.Namespace, settings: Any | None,
                      settings_note: str | None) -> tuple[Any, str | None]:
    """(ProviderConfig, note for stderr or None)."""
    from dataclasses import replace

    from rlm_desktop.core.config import ProviderConfig
    from rlm_desktop.engine.demo import DEMO_LABEL, DEMO_PROVIDER

    key = os.environ.get("OPENAI_API_KEY") or None
    if args.provider == "demo":
        return DEMO_PROVIDER, f"Using the offline demo provider. {DEMO_LABEL}"
    if args.provider:
        if settings is None:
            raise UsageError(f"cannot use provider profile {args.provider!r}: {settings_note}; use "
                             "--base-url URL instead")
        try:
            cfg = settings.provider_config(args.provider)
        except Exception as exc:   # unknown id, unreadable settings, keyring trouble: all usage
            msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
            if args.provider not in msg:
                msg = f"provider {args.provider!r}: {msg or type(exc).__name__}"
            raise UsageError(msg) from None
        return cfg, None
    from rlm_desktop.core.pricing import PriceTable

    windows: dict[str, int] = {}
    if args.base_url:
        from urllib.parse import urlsplit

        from rlm_desktop.core.logs import register_url
        from rlm_desktop.core.redact import mask_url

        register_url(args.base_url)       # its credentials never reach the log, whatever happens
        shown = mask_url(args.base_url)   # …nor stderr, --json, the trace or its exports
        if not re.match(r"^https?://", args.base_url):
            raise UsageError(f"--base-url must start with http:// or https:// (got {shown!r})")
        try:
            parts = urlsplit(args.base_url)
            parts.port                 # noqa: B018 - raises ValueError for a port above 65535
        except ValueError as exc:      # …which would otherwise end the run as an "internal error"
            raise UsageError(f"--base-url {shown!r} is not a valid address ({exc})") from None
        if not parts.hostname:
            raise UsageError(f"--base-url {shown!r} names no host (e.g. http://localhost:8000/v1)")
        if not args.model:
            raise UsageError("--model is required with --base-url (the server's model name)")
        return ProviderConfig(id="cli", name=shown, base_url=args.base_url, api_key=key,
                              needs_key=key is not None, root_model=args.model,
                              sub_model=args.sub_model or args.model, prices=PriceTable({}, args.base_url),
                              context_windows=windows), None
    if key:
        model = args.model or DEFAULT_OPENAI_MODEL
        return ProviderConfig(id="openai", name="OpenAI", base_url=OPENAI_BASE_URL, api_key=key,
                              root_model=model, sub_model=args.sub_model or model,
                              prices=PriceTable({}, OPENAI_BASE_URL)), None
    # Nothing on the command line: the provider chosen last in the desktop app, if any.
    why_demo = "No provider given (--provider, --base-url), no OPENAI_API_KEY"
    if settings is not None:
        try:
            pid, model = settings.last_root_choice()
            sub_pid, sub_model = settings.last_sub_choice()
        except Exception as exc:   # unreadable choice: fall back to the demo, saying why
            pid, model, sub_pid, sub_model = "demo", "", "demo", ""
            why_demo += f" and the app's last choice could not be read ({exc})"
        if pid != "demo":
            try:
                cfg = settings.provider_config(pid)
            except Exception as exc:   # e.g. no key reachable from this shell
                why_demo += f"; the app's provider {pid!r} cannot be used here ({exc})"
            else:
                cfg = replace(cfg, root_model=model or cfg.root_model,
                              sub_model=(sub_model if sub_pid == pid and sub_model else cfg.sub_model))
                return cfg, f"Using the app's provider {cfg.name!r} ({pid}), model {cfg.root_model}."
        else:
            why_demo += " and no provider chosen in the app"
    return DEMO_PROVIDER, f"{why_demo}: using the offline demo provider. {DEMO_LABEL}"


# RunLimits field -> the flag that sets it (so a bad value is reported in the user's terms).
LIMIT_FLAGS = {"max_iterations": "--max-iterations", "max_depth": "--max-depth",
               "max_sub_calls": "--max-sub-calls", "budget_usd": "--budget-usd", "max_tokens": "--max-tokens",
               "cell_timeout_s": "--cell-timeout", "call_timeout_s": "--call-timeout",
               "run_timeout_s": "--run-timeout", "max_response_chars": "--max-response-chars",
               "batch_concurrency": "--batch-concurrency"}


def _limits(args: argparse.Namespace, base: Any) -> Any:
    """``base`` with the limit flags applied; a bad value raises UsageError naming the flag."""
    from dataclasses import replace

    from rlm_desktop.core.config import ConfigError

    changes = {field: getattr(args, flag[2:].replace("-", "_")) for field, flag in LIMIT_FLAGS.items()}
    try:
        return replace(base, **{k: v for k, v in changes.items() if v is not None})
    except ConfigError as exc:
        msg = str(exc)
        for field, flag in LIMIT_FLAGS.items():
            if msg.startswith(field + " ") and changes[field] is not None:
                msg = flag + msg[len(field):]
                break
        raise UsageError(msg) from None


class _Progress:
    """One-line live status on stderr (only when stderr is a terminal)."""

    def __init__(self, budget_usd: float | None, max_iterations: int) -> None:
        self.budget = budget_usd
        self.max_iter = max_iterations
        self.iteration = 0
        self.sub_calls = 0
        self.tokens = 0
        self.cost = 0.0
        self.cost_unknown = False
        self._last = 0.0
        self._shown = False

    def __call__(self, ev: Any, span: Any) -> None:
        from rlm_desktop.core.trace import Attr, EventType, SpanKind

        if ev.type is EventType.STARTED:
            if span.kind == SpanKind.ITERATION and span.attributes.get(Attr.DEPTH) == 0:
                self.iteration += 1
            elif span.kind == SpanKind.SUB_CALL:
                self.sub_calls += 1
        elif ev.type is EventType.ENDED and span.kind == SpanKind.LLM_CALL:
            a = span.attributes
            self.tokens += int(a.get(Attr.INPUT_TOKENS) or 0) + int(a.get(Attr.OUTPUT_TOKENS) or 0)
            c = a.get(Attr.COST_USD)
            if c is None and a.get(Attr.INPUT_TOKENS) is not None:
                self.cost_unknown = True
            elif c is not None:
                self.cost += float(c)
        now = time.monotonic()
        if now - self._last >= 0.2:
            self._last = now
            self.draw()

    def draw(self) -> None:
        spend = f"${self.cost:.4f}" + ("+?" if self.cost_unknown else "")
        if self.budget is not None:
            spend += f" of ${self.budget:g}"
        line = (f"iteration {self.iteration}/{self.max_iter} · sub-calls {self.sub_calls} · "
                f"tokens {self.tokens:,} · {spend}")
        sys.stderr.write("\r\x1b[2K" + line[:200])
        sys.stderr.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def handle(args: argparse.Namespace) -> int:
    from rlm_desktop.engine.repl import harden_host_process

    harden_host_process()
    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, interrupted)   # the run itself installs its own
    try:
        return _handle(args)
    except UsageError as exc:
        _err(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("cancelled before the run started (nothing was sent to a model)")
        return EXIT_CANCELLED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _handle(args: argparse.Namespace) -> int:
    from rlm_desktop.core.config import RunLimits
    from rlm_desktop.core.documents import load_documents

    if not args.query.strip():
        raise UsageError("--query is empty: type a question about the documents")
    _check_text_is_utf8("--query", args.query)
    args.docs = _session_docs(args)
    missing = [p for p in args.docs if not os.path.lexists(p)]
    if missing:
        raise UsageError(f"no such file or folder: {missing[0]}")
    _limits(args, RunLimits())        # a bad flag is said before any document is read
    _check_note(args)
    settings, settings_note = _app_settings()
    provider, note = _resolve_provider(args, settings, settings_note)
    if note and not args.quiet:
        _err(note)
    elif note:
        _err(note.split(".")[0] + ".")   # say it even when quiet: the answers are not a model's
    args.follow_outside_links = _follow_outside_links(args, settings)
    args.custom_prompt = _custom_prompt(args, settings)
    docs = load_documents(args.docs, follow_outside_links=args.follow_outside_links)
    for bad in docs.errors:
        _err(f"skipped {bad.rel_path}: {bad.error}")
    if not args.quiet:
        for doc in docs.warnings:
            _err(f"note: {doc.rel_path}: {doc.warning}")
        if docs.documents:
            _err(f"loaded {docs.summary()}")
    if not docs.documents:
        raise UsageError("no readable documents in " + ", ".join(args.docs) +
                         " (see the messages above); give text, Markdown, PDF, code … files")
    config = build_config(args, settings, provider, args.query, allow_weak=bool(args.allow_weak_sandbox),
                          no_memo=bool(args.no_memo))
    from rlm_desktop.engine.run import price_warning

    warning = price_warning(config, provider)
    if warning and not args.quiet:
        _err(f"warning: {warning}")
    if args.session and args.trace:
        raise UsageError("--trace cannot be used with --session: a session keeps its trace in its "
                         "own folder (see `rlm-desktop sessions show NAME`)")
    trace_path = Path(args.trace) if args.trace else None
    return asyncio.run(_run(args, config, docs, provider, trace_path))


def build_config(args: argparse.Namespace, settings: Any | None, provider: Any, query: str, *,
                 allow_weak: bool, no_memo: bool = False) -> Any:
    """The RunConfig of a headless run (also `eval`): the app's default limits, sandbox limits and
    memo setting when readable, then the limit flags in ``args``, then the models."""
    from dataclasses import replace

    from rlm_desktop.core.config import ConfigError, RunConfig, RunLimits, SandboxLimits

    try:
        base_limits, sandbox, memo = RunLimits(), SandboxLimits(), True
        if settings is not None:     # the app's defaults, then the flags
            try:
                base_limits, sandbox, memo = (settings.default_limits(), settings.sandbox_limits(),
                                              settings.memo_cache())
            except Exception as exc:   # unreadable preferences: built-in defaults, said plainly
                _err(f"note: the app's default limits could not be read ({exc}); built-in defaults apply")
        limits = _limits(args, base_limits)
        sandbox = replace(sandbox, allow_weak=sandbox.allow_weak or allow_weak)
        root_model, sub_model = choose_models(args, provider)
        if not root_model:
            raise UsageError(f"no model chosen for {provider.name}: pass --model")
        return RunConfig(query=query, root_model=root_model, sub_model=sub_model,
                         limits=limits, sandbox=sandbox, memo_cache=memo and not no_memo)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def choose_models(args: argparse.Namespace, provider: Any) -> tuple[str, str]:
    """(root model, sub model) from --model / --sub-model and the provider's defaults (also `eval`)."""
    root_model = provider.root_model if provider.is_demo else (args.model or provider.root_model)
    sub_model = provider.sub_model if provider.is_demo else (
        args.sub_model or (args.model if args.provider is None else None) or provider.sub_model
        or root_model)
    return root_model, sub_model


def _session_docs(args: argparse.Namespace) -> list[str]:
    """The documents of this run: --docs, plus (for a continued --session) the session's own."""
    from rlm_desktop.session.store import SessionNameError, SessionNotFound, SessionStore

    given = list(args.docs or [])
    if not args.session:
        if not given:
            raise UsageError("--docs is required (files or folders to load as `context`)")
        return given
    store = SessionStore()
    try:
        store.validate_name(args.session)
        if not store.exists(args.session):
            if not given:
                raise UsageError(f"session {args.session!r} does not exist yet: give its documents "
                                 "with --docs to start it")
            return given
        meta = store.load_meta(args.session)
    except (SessionNameError, SessionNotFound) as exc:
        raise UsageError(str(exc)) from None
    kept = [str(p) for p in meta.get("docs") or []]
    if not kept and meta.get("context_inline"):
        raise UsageError(f"session {args.session!r} was made in Python from a context value; continue "
                         "it there")
    return kept + [p for p in given if os.path.abspath(p) not in kept]


async def _run(args: argparse.Namespace, config: Any, docs: Any, provider: Any,
               trace_path: Path | None) -> int:
    from rlm_desktop.core.cancel import CancelToken
    from rlm_desktop.engine.providers import aclose_clients
    from rlm_desktop.session import Session, SessionError
    from rlm_desktop.session.store import SessionBusy

    try:
        session = Session(args.docs, documents=docs, name=args.session, provider=provider,
                          model=config.root_model, sub_model=config.sub_model, limits=config.limits,
                          sandbox=config.sandbox, memo_cache=config.memo_cache, source="cli",
                          trace_path=trace_path, follow_outside_links=args.follow_outside_links,
                          follow_ups=bool(args.session), note=args.note,
                          custom_prompt=args.custom_prompt)
    except (SessionBusy, SessionError) as exc:
        raise UsageError(str(exc)) from None
    try:
        trace = session.open_trace(config.query)
    except OSError as exc:
        await session.aclose()
        raise UsageError(f"cannot write the trace file {session.trace_path}: "
                         f"{exc.strerror or exc}") from None
    trace_path = session.trace_path
    log.info("trace %s", trace_path)
    progress = None
    if args.show:                      # the live notebook replaces the progress line
        from rlm_desktop.core.render_text import TextRenderer, use_color

        out = sys.stderr if args.json else sys.stdout
        trace.subscribe(TextRenderer(out.write, color=use_color(args.color, out), flush=out.flush))
    elif not args.quiet and sys.stderr.isatty():
        progress = _Progress(config.limits.budget_usd, config.limits.max_iterations)
        trace.subscribe(progress)
    cancel = CancelToken()
    loop = asyncio.get_running_loop()
    signals_seen: list[int] = []

    def on_signal(signum: int) -> None:
        signals_seen.append(signum)
        if len(signals_seen) == 1:
            cancel.cancel(f"interrupted by {signal.Signals(signum).name}")
        else:   # a second signal: close the trace and leave now
            session.abandon("interrupted twice: stopped at once")
            os._exit(EXIT_CANCELLED)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        turn = await session.run_turn(config.query, cancel=cancel, limits=config.limits)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await session.aclose()
        await aclose_clients()
        if progress is not None:
            progress.clear()
    result = turn.run
    if turn.rebuild is not None and not args.quiet:
        _err(turn.rebuild.summary())
    code = exit_code_for(result.status, result.stop_reason)
    if args.json:
        out = {"answer": result.answer, "status": result.status, "reason": result.reason,
               "stop_reason": result.stop_reason, "cost_usd": result.cost_usd,
               "cost_known": result.cost_known, "input_tokens": result.input_tokens,
               "output_tokens": result.output_tokens, "cached_tokens": result.cached_tokens,
               "tokens_estimated": result.tokens_estimated, "iterations": result.iterations,
               "sub_calls": result.sub_calls, "trace": str(trace_path),
               "isolation": result.isolation, "provider": provider.name,
               "demo": bool(provider.is_demo), "exit_code": code,
               "session": turn.session, "turn": turn.turn, "variables": result.variables}
        out.update(_sources_json(result))
        print(json_for_terminal(json.dumps(out, ensure_ascii=False)))   # exact, and safe to show
    elif result.answer is not None:
        print(for_stream(result.answer, sys.stdout))   # exact into a pipe; shown safely on a terminal
    iso = result.isolation or {}
    if iso and iso.get("level") in ("weak", "none") and not args.quiet:
        _err(f"warning: sandbox isolation is {iso.get('level')}: {iso.get('summary', '')}")
    if code != EXIT_OK:
        label = {EXIT_LIMIT: "stopped by a limit", EXIT_CANCELLED: "cancelled",
                 EXIT_PROVIDER: "provider error"}.get(code, "failed")
        partial = " (the answer printed is partial)" if result.answer and code == EXIT_LIMIT else ""
        hint = (" Pass --allow-weak-sandbox to run with weaker isolation anyway."
                if result.stop_reason == "sandbox_refused" else "")
        _err(f"{label}: {(result.reason or '').rstrip('.')}{partial}.{hint} Trace: {trace_path}")
    elif not args.quiet and not args.json:
        cost = "unknown" if result.cost_usd is None else f"${result.cost_usd:.4f}"
        if result.cost_usd is not None and not result.cost_known:
            cost += " + unknown"
        est = " (estimated)" if result.tokens_estimated else ""
        if est and result.cost_usd:
            cost += " (estimated from estimated tokens)"
        _err(f"done: {result.iterations} iterations, {result.sub_calls} sub-calls, "
             f"{result.input_tokens + result.output_tokens:,} tokens{est}, cost {cost}. "
             f"Trace: {trace_path}")
    return code


def _sources_json(result: Any) -> dict[str, Any]:
    """--json's ``citations`` ({document, start_line, end_line, page, verified, why}, and ``sheet``,
    ``start_row``, ``end_row`` in a spreadsheet), ``sources``
    (per document the merged ranges the run's models saw) and, for an answer that cites nothing,
    ``material_read`` (what its sub-calls saw; not citations)."""
    keys = ("document", "start_line", "end_line", "page", "verified", "why")
    sheet_keys = ("sheet", "start_row", "end_row")       # in a spreadsheet, where known

    def pick(d: dict[str, Any], ks: tuple[str, ...]) -> dict[str, Any]:
        return {k: d.get(k) for k in ks} | {k: d[k] for k in sheet_keys if d.get(k) is not None}
    out: dict[str, Any] = {
        "citations": [pick(c, keys) for c in result.citations or []],
        "sources": [pick(r, keys[:4]) for r in result.sources or []]}
    if result.material_read is not None:
        out["material_read"] = [pick(r, keys[:4]) for r in result.material_read]
    return out


def _check_text_is_utf8(flag: str, text: str) -> None:
    """Text from argv that was not UTF-8 holds its bytes as lone surrogates (PEP 383); no model
    request can carry it, so it is refused here, saying where, rather than failing mid-run."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = os.fsencode(text[exc.start:exc.end]) if 0xDC80 <= ord(text[exc.start]) <= 0xDCFF else b""
        what = f"byte {bad.hex(' ')}" if bad else "a lone surrogate"
        raise UsageError(f"{flag} is not valid UTF-8 text ({what} at character {exc.start + 1}): set "
                         "your terminal to UTF-8 (e.g. LANG=en_US.UTF-8) or retype the text") from None


def _follow_outside_links(args: argparse.Namespace, settings: Any | None) -> bool:
    """--follow-outside-links, else the desktop app's setting (said on stderr when it applies)."""
    if args.follow_outside_links:
        return True
    try:
        on = bool(settings is not None and settings.follow_outside_links())
    except Exception as exc:   # unreadable preferences: the safe default, said plainly
        _err(f"note: the app's link setting could not be read ({exc}); links out of folders are "
             "not followed")
        return False
    if on and not args.quiet:
        _err("note: following links that lead out of the --docs folders (the app's setting)")
    return on


def _cancelled_status() -> Any:
    from rlm_desktop.core.trace import SpanStatus

    return SpanStatus.CANCELLED




def _check_note(args: argparse.Namespace) -> None:
    """--note: UTF-8 and short enough, said before any document is read."""
    from rlm_desktop.engine.prompts import PromptError, clean_note

    if args.note is None:
        return
    _check_text_is_utf8("--note", args.note)
    try:
        clean_note(args.note)
    except PromptError as exc:
        raise UsageError(f"--note: {exc}") from None


def _custom_prompt(args: argparse.Namespace, settings: Any | None) -> str | None:
    """The custom system prompt: --system-prompt-file, else the app's Settings, else None (the
    built-in prompt). One lacking the REPL contract gets a ``warning:`` line naming what is missing
    (even with --quiet: the run may not work); the run goes on."""
    from rlm_desktop.engine.prompts import missing_contract

    where = "the app's Settings"
    if args.system_prompt_file:
        path = Path(args.system_prompt_file)
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"--system-prompt-file {path} is not UTF-8 text (byte {exc.start + 1}); "
                             "save it as UTF-8") from None
        except OSError as exc:
            raise UsageError(f"cannot read --system-prompt-file {path}: {exc.strerror or exc}") from None
        if not text.strip():
            raise UsageError(f"--system-prompt-file {path} is empty; give a prompt, or leave the flag "
                             "out for the built-in one")
    else:
        text = ""
        if settings is not None:
            try:
                text = settings.custom_system_prompt()
            except Exception as exc:   # unreadable preferences: the built-in prompt, said plainly
                _err(f"note: the app's custom system prompt could not be read ({exc}); the built-in "
                     "prompt applies")
        if not text.strip():
            return None
        if not args.quiet:
            _err("note: using the custom system prompt from the app's Settings "
                 "(--system-prompt-file overrides it)")
    missing = missing_contract(text)
    if missing:
        _err(f"warning: the custom system prompt ({where}) does not mention " + ", ".join(missing)
             + "; without them the model may not know how to use the REPL, and the run may end "
               "without an answer. Running anyway.")
    return text
