"""`rlm-desktop export TRACE [--format json|markdown|html|otlp] [-o FILE]`: a trace file as a report.

Without ``-o`` the export goes to stdout; with it, the format may come from the file name. A file
that is not a readable trace is a usage error (exit 2) with a one-line reason on stderr.
``--endpoint URL [--header K=V]…`` sends the trace to an OTLP/HTTP endpoint instead (protobuf);
an endpoint that cannot be reached or refuses the trace exits 5. Header values are never printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rlm_desktop.cli.exit_codes import EXIT_OK, EXIT_PROVIDER, EXIT_USAGE
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
    p.add_argument("--endpoint", metavar="URL",
                   help="send the trace (OTLP protobuf over HTTP) to this endpoint, e.g. "
                        "http://localhost:4318 (an OpenTelemetry Collector or Jaeger; /v1/traces is "
                        "added to a bare server URL), http://localhost:6006/v1/traces (Phoenix)")
    p.add_argument("--header", action="append", default=[], metavar="K=V",
                   help="an HTTP header for --endpoint, repeatable (e.g. 'Authorization=Basic …'); "
                        "values are never printed or logged. OTEL_EXPORTER_OTLP_HEADERS is read too, "
                        "which keeps a credential off the command line")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the endpoint (default 10)")
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
    if args.endpoint or args.header:
        return _send(args, trace)
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


def _send(args: argparse.Namespace, trace: Any) -> int:
    from rlm_desktop.core.otlp_send import SendError, headers_from_env, parse_headers, send_otlp

    try:
        headers = {**headers_from_env(), **parse_headers(args.header)}   # parse first: secrets registered
    except SendError as exc:
        return _fail(str(exc))
    if not args.endpoint:
        return _fail("--header is for sending: give --endpoint URL too")
    if args.format not in (None, "otlp"):
        return _fail(f"--endpoint sends OTLP; drop --format {args.format} (or write a file with -o)")
    if args.output:
        return _fail("--endpoint sends the trace; -o writes a file: use one of them")
    if args.timeout <= 0:
        return _fail("--timeout must be more than 0 seconds")
    try:
        result = send_otlp(trace, args.endpoint, headers, timeout_s=args.timeout)
    except SendError as exc:
        print(f"rlm-desktop export: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE if exc.usage else EXIT_PROVIDER
    note = ""
    if result.rejected_spans:
        note = f"; it rejected {result.rejected_spans}" + (f": {result.message}" if result.message else "")
    print(f"rlm-desktop export: sent {result.spans} spans in {result.requests} request"
          f"{'s' if result.requests != 1 else ''} to {result.endpoint}{note}", file=sys.stderr, flush=True)
    return EXIT_PROVIDER if result.rejected_spans else EXIT_OK
