"""The CLI's exit codes (the headless contract of DESIGN.md), and the one mapping from a run's
outcome to its code. Qt-free and import-light: every subcommand uses it."""

from __future__ import annotations

from rlm_desktop.core.status import RunStatus, StopReason, is_provider_failure

EXIT_OK = 0          # answered
EXIT_FAILURE = 1     # an internal error (a bug: the message and the log say what)
EXIT_USAGE = 2       # usage error or bad input (the message says what to change)
EXIT_LIMIT = 3       # a limit or budget stopped the run (a partial answer may be printed)
EXIT_CANCELLED = 4   # cancelled (SIGINT/SIGTERM); the trace was closed first
EXIT_PROVIDER = 5    # the provider failed after retries (the message names it and says what to do)


def exit_code_for(status: str, stop_reason: str | None) -> int:
    """The exit code of a run that ended with ``status`` / ``stop_reason``."""
    if status == RunStatus.OK:
        return EXIT_OK
    if status == RunStatus.LIMIT:
        return EXIT_LIMIT
    if status == RunStatus.CANCELLED:
        return EXIT_CANCELLED
    if is_provider_failure(stop_reason):
        return EXIT_PROVIDER
    if stop_reason == StopReason.SANDBOX_REFUSED:
        return EXIT_USAGE
    return EXIT_FAILURE
