"""`rlm-desktop export TRACE [--format json|markdown|html|otlp] [-o FILE]`: a trace file as a report.

Without ``-o`` the export goes to stdout; with it, the format may come from the file name. A file
that is not a readable trace is a usage error (exit 2) with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rlm_desktop.cli import EXIT_OK, EXIT_USAGE
from rlm_desktop.core.textsafe import for_terminal, is_terminal, json_for_terminal

FORMAT_CHOICES = ("json", "markdown", "md", "html", "otlp")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export", help="export a saved trace as JSON, Markdown, HTML or OTLP JSON",
        description="Export a saved run trace (.jsonl) as one JSON document, a Markdown report, a "
                    "self-contained HTML report, or OpenTelemetry OTLP JSON (GenAI conventions).")
    p.add_argument("trace", metavar="TRACE", help="a trace file written by a run (JSON Lines)")
    p.add_argument("--format", "-f", choices=FORMAT_CHOICES, metavar="FORMAT",
                   help="json, markdown, html or otlp (default: from -o's name, else json)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(handler=handle)


def _fail(msg: str) -> int:
    _note(msg)
    return EXIT_USAGE


def _note(msg: str) -> None:
    print(f"rlm-desktop export: {for_terminal(msg)}", file=sys.stderr, flush=True)


def handle(args: argparse.Namespace) -> int:
    from rlm_desktop.core.exporters import ExportError, export_trace, format_for_path, write_export
    from rlm_desktop.core.trace import TraceFormatError, read_trace

    src = Path(args.trace)
    if not src.exists():
        return _fail(f"{src}: no such file; give the path of a trace (.jsonl) saved by a run")
    if src.is_dir():
        return _fail(f"{src} is a folder; give the path of a trace file (.jsonl)")
    try:
        trace = read_trace(src)
    except TraceFormatError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"cannot read {src}: {exc.strerror or exc}")
    fmt = args.format
    if fmt == "md":
        fmt = "markdown"
    if trace.truncated or trace.skipped_lines or any(s.running for s in trace.spans.values()):
        _note(f"note: {src.name} was cut short (a crash or a kill?); steps that never ended are "
              "marked incomplete")
    if args.output:
        out = Path(args.output)
        try:
            fmt = fmt or format_for_path(out)
        except ExportError:
            fmt = "json"
            _note(f"note: '{out.name}' does not name a format; writing JSON (use --format to choose)")
        try:
            write_export(trace, out, fmt)
        except OSError as exc:
            return _fail(f"cannot write {out}: {exc.strerror or exc}")
        return EXIT_OK
    fmt = fmt or "json"
    text = export_trace(trace, fmt)
    if fmt in ("json", "otlp"):
        text = json_for_terminal(text)         # the same JSON, safe on a terminal
    elif is_terminal(sys.stdout):
        text = for_terminal(text)              # a report shown on a terminal: controls made visible
    sys.stdout.write(text)
    sys.stdout.flush()
    return EXIT_OK
