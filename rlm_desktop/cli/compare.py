"""`rlm-desktop compare A B [--json]`: two runs side by side — cost, tokens, time, iterations,
sub-calls, models and limits with deltas, and the answers with their differences marked.

A and B are trace files, or ``trace.jsonl#N`` for turn N of a session trace. An unreadable trace or
a turn it does not have is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

from rlm_desktop.cli.exit_codes import EXIT_OK, EXIT_USAGE


def add_parser(subparsers: Any) -> None:
    from rlm_desktop.cli.show import add_color_argument

    p = subparsers.add_parser(
        "compare", help="compare two runs (answers, cost, tokens, time, models, limits)",
        description="Compare two runs: a table of cost, tokens, time, iterations, sub-calls, models "
                    "and limits with deltas (B − A), then the answers side by side with their "
                    "differences marked word by word.")
    p.add_argument("a", metavar="A", help="a trace file (.jsonl), or FILE#N for turn N of a session")
    p.add_argument("b", metavar="B", help="the run to compare with A (same forms)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object with a, b, delta and answer_diff instead of the table")
    add_color_argument(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from rlm_desktop.core.compare import CompareError, compare, load_run
    from rlm_desktop.core.render_text import render_comparison, use_color

    try:
        a = load_run(args.a)
        b = load_run(args.b)
    except CompareError as exc:
        print(f"rlm-desktop compare: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    cmp = compare(a, b)
    if args.json:
        print(json.dumps(cmp.as_dict(), ensure_ascii=False, default=str))
        return EXIT_OK
    tty = sys.stdout.isatty()
    width = shutil.get_terminal_size((100, 24)).columns if tty else 100
    sys.stdout.write(render_comparison(cmp, color=use_color(args.color, sys.stdout), width=width))
    sys.stdout.flush()
    return EXIT_OK
