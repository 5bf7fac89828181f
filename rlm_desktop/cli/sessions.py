"""`rlm-desktop sessions list|show NAME|remove NAME [--json]`: the saved sessions.

A session is started and continued with `rlm-desktop run --session NAME …` (or in the app, or from
Python); this command lists them, shows one turn by turn, and deletes one (refused while open).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rlm_desktop.cli.exit_codes import EXIT_FAILURE, EXIT_OK, EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sessions", help="list, show or remove saved sessions (see run --session)",
        description="Saved sessions: documents, a REPL rebuilt from the trace on demand, and turns. "
                    "Start or continue one with `rlm-desktop run --session NAME --docs … --query …`.")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    ls = sub.add_parser("list", help="the saved sessions, newest first")
    ls.add_argument("--json", action="store_true", help="one JSON array")
    show = sub.add_parser("show", help="one session: documents, models and every turn")
    show.add_argument("name", metavar="NAME")
    show.add_argument("--json", action="store_true", help="one JSON object")
    rm = sub.add_parser("remove", help="delete a session (its folder and trace)")
    rm.add_argument("name", metavar="NAME")
    p.set_defaults(handler=handle)


def _say(msg: str) -> None:
    from rlm_desktop.core.textsafe import for_terminal

    print(f"rlm-desktop sessions: {for_terminal(msg)}", file=sys.stderr, flush=True)


def _cost(v: float | None, known: bool) -> str:
    if v is None:
        return "unknown"
    return f"${v:.4f}" + ("" if known else " + unknown")


def handle(args: argparse.Namespace) -> int:
    from rlm_desktop.session.store import SessionBusy, SessionNameError, SessionNotFound, SessionStore

    store = SessionStore()
    action = getattr(args, "action", None)
    try:
        if action == "list":
            return _list(store, args.json)
        if action == "show":
            return _show(store, args.name, args.json)
        if action == "remove":
            folder = store.remove(args.name)
            _say(f"removed session {args.name!r} ({folder})")
            return EXIT_OK
    except (SessionNameError, SessionNotFound, SessionBusy) as exc:
        _say(str(exc))
        return EXIT_USAGE
    except OSError as exc:
        _say(f"cannot read or change the sessions folder: {exc}")
        return EXIT_FAILURE
    _say("say what to do: list, show NAME or remove NAME")
    return EXIT_USAGE


def _list(store: Any, as_json: bool) -> int:
    from rlm_desktop.core.textsafe import for_terminal

    infos = sorted((store.info(n) for n in store.names()), key=lambda i: i.created, reverse=True)
    if as_json:
        print(json.dumps([{"name": i.name, "created": i.created, "turns": i.turns, "source": i.source,
                           "last_question": i.last_question, "models": i.models, "cost_usd": i.cost_usd,
                           "cost_known": i.cost_known, "trace": str(i.trace), "in_use": i.in_use,
                           "documents": i.docs} for i in infos], ensure_ascii=False))
        return EXIT_OK
    if not infos:
        print("No saved sessions. Start one with: rlm-desktop run --session NAME --docs PATH --query TEXT")
        return EXIT_OK
    for i in infos:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(i.created)) if i.created else "?"
        busy = " (open now)" if i.in_use else ""
        print(for_terminal(f"{i.name}{busy}  {when}  {i.turns} turn{'s' if i.turns != 1 else ''}  "
                           f"{_cost(i.cost_usd, i.cost_known)}  [{i.source}]  {i.models}"))
        if i.last_question:
            print(for_terminal(f"    last: {i.last_question[:100]}"))
    return EXIT_OK


def _show(store: Any, name: str, as_json: bool) -> int:
    from rlm_desktop.core.textsafe import for_terminal
    from rlm_desktop.core.totals import totals
    from rlm_desktop.core.trace import TraceFormatError, read_trace
    from rlm_desktop.session.session import turns_from_trace

    info = store.info(name)
    turns: list[dict[str, Any]] = []
    try:
        trace = read_trace(info.trace)
    except (OSError, TraceFormatError):
        trace = None
    if trace is not None:
        for t in turns_from_trace(trace)[0]:
            tt = totals(trace.spans[t.run_span])
            turns.append({"turn": t.number, "question": t.question, "status": t.status,
                          "answer": t.answer, "variables": t.variables, "cost_usd": tt.cost_value,
                          "cost_known": tt.cost_known, "input_tokens": tt.input_tokens,
                          "output_tokens": tt.output_tokens, "tokens_estimated": tt.tokens_estimated})
    if as_json:
        print(json.dumps({"name": info.name, "created": info.created, "source": info.source,
                          "models": info.models, "documents": info.docs, "trace": str(info.trace),
                          "in_use": info.in_use, "cost_usd": info.cost_usd, "cost_known": info.cost_known,
                          "turns": turns}, ensure_ascii=False))
        return EXIT_OK
    print(for_terminal(f"session {info.name} [{info.source}]  {info.models}"))
    print(for_terminal(f"documents: {', '.join(info.docs) or '(a context value given in Python)'}"))
    print(for_terminal(f"trace: {info.trace}"))
    print(f"total cost: {_cost(info.cost_usd, info.cost_known)}")
    for t in turns:
        est = " (estimated)" if t["tokens_estimated"] else ""
        print(for_terminal(f"\nturn {t['turn']} [{t['status']}] {_cost(t['cost_usd'], t['cost_known'])}, "
                           f"{t['input_tokens'] + t['output_tokens']:,} tokens{est}"))
        print(for_terminal(f"  Q: {t['question']}"))
        if t["answer"] is not None:
            print(for_terminal("  A: " + t["answer"].replace("\n", "\n     ")))
        if t["variables"]:
            print(for_terminal(f"  variables: {t['variables']}"))
    return EXIT_OK
