"""`rlm-desktop show TRACE [--depth N] [--errors] [--turn N]`: a saved trace in the terminal, each
iteration as a notebook-like cell (model text, highlighted code, output, sub-calls as one-liners).

Colours only on a terminal (never with ``NO_COLOR`` set, unless ``--color always``); plain text when
piped. A file that is not a readable trace, or a turn it does not have, is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from rlm_desktop.cli.exit_codes import EXIT_OK, EXIT_USAGE

COLOR_CHOICES = ("auto", "always", "never")


def add_color_argument(p: argparse.ArgumentParser) -> None:
    """``--color auto|always|never`` (shared with ``run --show`` and ``compare``)."""
    p.add_argument("--color", choices=COLOR_CHOICES, default="auto",
                   help="auto (default): colour on a terminal unless NO_COLOR is set; always; never")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "show", help="print a saved trace as the terminal shows a run (--show)",
        description="Print a saved run trace (.jsonl) as a tree of iterations: the model's text, the "
                    "code (highlighted), the cell's output (truncated, with a note) and sub-calls as "
                    "one-liners with tokens and cost.")
    p.add_argument("trace", metavar="TRACE", help="a trace file written by a run (JSON Lines)")
    p.add_argument("--depth", type=int, metavar="N",
                   help="expand nested runs (rlm_query) down to depth N; 0 = the root run only, its "
                        "sub-calls as one-liners (default: all)")
    p.add_argument("--errors", action="store_true",
                   help="only the steps that failed, timed out, hit a limit or never ended (and what "
                        "leads to them)")
    p.add_argument("--turn", type=int, metavar="N", help="only turn N of a session trace")
    p.add_argument("--output-lines", type=int, default=20, metavar="N",
                   help="lines of each output shown before it is cut (default 20)")
    add_color_argument(p)
    p.set_defaults(handler=handle)


def _fail(msg: str) -> int:
    print(f"rlm-desktop show: {msg}", file=sys.stderr, flush=True)
    return EXIT_USAGE


def load_trace_arg(src: Path) -> Any:
    """Read a trace named on the command line; a ``str`` (the reason) when it cannot be read."""
    from rlm_desktop.core.trace import TraceFormatError, read_trace

    if not src.exists():
        return f"{src}: no such file; give the path of a trace (.jsonl) saved by a run"
    if src.is_dir():
        return f"{src} is a folder; give the path of a trace file (.jsonl)"
    try:
        return read_trace(src)
    except TraceFormatError as exc:
        return str(exc)
    except OSError as exc:
        return f"cannot read {src}: {exc.strerror or exc}"


def handle(args: argparse.Namespace) -> int:
    from rlm_desktop.core.render_text import render_trace, use_color
    from rlm_desktop.core.trace import Attr, SpanKind

    if args.depth is not None and args.depth < 0:
        return _fail("--depth must be 0 or more")
    if args.output_lines < 1:
        return _fail("--output-lines must be 1 or more")
    trace = load_trace_arg(Path(args.trace))
    if isinstance(trace, str):
        return _fail(trace)
    if args.turn is not None:
        turns = sorted({r.attributes.get(Attr.TURN) for r in trace.roots if r.kind == SpanKind.RUN
                        and isinstance(r.attributes.get(Attr.TURN), int)
                        and not r.attributes.get(Attr.REPLAY)})
        if args.turn not in turns:
            have = ", ".join(map(str, turns)) if turns else "none (not a session trace)"
            return _fail(f"{Path(args.trace).name} has no turn {args.turn}; its turns: {have}")
    if trace.truncated or trace.skipped_lines:
        print(f"rlm-desktop show: note: {Path(args.trace).name} was cut short (a crash or a kill?); "
              "steps that never ended are marked unfinished", file=sys.stderr, flush=True)
    color = use_color(args.color, sys.stdout)
    try:
        render_trace(trace, sys.stdout.write, color=color, max_depth=args.depth, errors_only=args.errors,
                     turn=args.turn, output_lines=args.output_lines)
        sys.stdout.flush()
    except BrokenPipeError:                 # `rlm-desktop show T | head`: the reader is gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return EXIT_OK
