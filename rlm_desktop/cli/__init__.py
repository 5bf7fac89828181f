"""`rlm-desktop` entry point: no subcommand opens the desktop app; subcommands run headless.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``, which registers an
``argparse`` parser whose ``handler(args) -> int`` default does the work. Modules import their
heavy dependencies inside the handler so ``rlm-desktop --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rlm_desktop import __version__

# name -> module; order is the order shown in --help.
SUBCOMMANDS: dict[str, str] = {
    "run": "rlm_desktop.cli.run",
    "provider": "rlm_desktop.cli.provider",
    "export": "rlm_desktop.cli.export",
    "sessions": "rlm_desktop.cli.sessions",
    "bench": "rlm_desktop.cli.bench",
    "eval": "rlm_desktop.cli.eval",
    "show": "rlm_desktop.cli.show",
    "compare": "rlm_desktop.cli.compare",
}

from rlm_desktop.cli.exit_codes import (  # noqa: E402 - re-exported for the subcommands
    EXIT_CANCELLED,
    EXIT_FAILURE,
    EXIT_LIMIT,
    EXIT_OK,
    EXIT_PROVIDER,
    EXIT_USAGE,
)

__all__ = ["EXIT_CANCELLED", "EXIT_FAILURE", "EXIT_LIMIT", "EXIT_OK", "EXIT_PROVIDER", "EXIT_USAGE",
           "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlm-desktop",
        description="Run Recursive Language Models over folders of documents. "
                    "Without a subcommand the desktop app opens (with PATHs loaded, or a trace opened).",
    )
    parser.add_argument("--version", action="version", version=f"rlm-desktop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for modname in SUBCOMMANDS.values():
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0] not in SUBCOMMANDS and not args_list[0].startswith("-")):
        from rlm_desktop.ui.app import run_app

        return run_app(args_list)
    parser = build_parser()
    args = parser.parse_args(args_list)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    from rlm_desktop.core.logs import setup_logging, shutdown_logging

    setup_logging(console=not getattr(args, "quiet", False))   # --quiet: the log file only
    try:
        return int(handler(args))
    except BrokenPipeError:      # `rlm-desktop … | head`: the reader left; no traceback for that
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"rlm-desktop {args.command}: the output was closed before all of it was written",
              file=sys.stderr, flush=True)
        return EXIT_FAILURE
    finally:
        shutdown_logging()
