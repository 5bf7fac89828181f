"""One word per state, and one mapping from each word to what a person reads.

Run status (how a run or turn ended), stop reason (why), span status (each step) and cell status
(how a code cell ended). The status bar, the history, the tree, the CLI and the exports all read
their words from here.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    OK = "ok"                    # the model gave its final answer
    LIMIT = "limit"              # a limit or budget stopped it (a partial answer may exist)
    CANCELLED = "cancelled"      # the user (or a signal) stopped it
    ERROR = "error"              # a provider, sandbox or internal error ended it
    RUNNING = "running"          # still going (history rows of a live run)
    INTERRUPTED = "interrupted"  # its process ended before it did (killed, crashed)


class StopReason(StrEnum):
    FINAL = "final"
    MAX_ITERATIONS = "max_iterations"
    BUDGET_USD = "budget_usd"
    MAX_TOKENS = "max_tokens"
    MAX_SUB_CALLS = "max_sub_calls"
    RUN_TIMEOUT = "run_timeout"
    CALL_TIMEOUT = "call_timeout"
    CANCELLED = "cancelled"
    PROVIDER_ERROR = "provider_error"
    SANDBOX_REFUSED = "sandbox_refused"
    SANDBOX_ERROR = "sandbox_error"
    INTERNAL_ERROR = "internal_error"
    INTERRUPTED = "interrupted"
    INCOMPLETE = "incomplete"
    RUNNING = "running"


class CellStatus(StrEnum):
    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    CRASHED = "crashed"
    CANCELLED = "cancelled"


_RUN_WORDS = {
    RunStatus.OK: "answered",
    RunStatus.LIMIT: "stopped by a limit",
    RunStatus.CANCELLED: "cancelled",
    RunStatus.ERROR: "failed",
    RunStatus.RUNNING: "running",
    RunStatus.INTERRUPTED: "interrupted",
}

_STOP_WORDS = {
    StopReason.FINAL: "the model gave its final answer",
    StopReason.MAX_ITERATIONS: "the maximum number of iterations was reached",
    StopReason.BUDGET_USD: "the USD budget was reached",
    StopReason.MAX_TOKENS: "the token budget was reached",
    StopReason.MAX_SUB_CALLS: "the maximum number of sub-calls was reached",
    StopReason.RUN_TIMEOUT: "the run time limit was reached",
    StopReason.CALL_TIMEOUT: "a model call timed out",
    StopReason.CANCELLED: "you stopped the run",
    StopReason.PROVIDER_ERROR: "the provider returned an error",
    StopReason.SANDBOX_REFUSED: "the sandbox refused to start",
    StopReason.SANDBOX_ERROR: "the sandbox failed",
    StopReason.INTERNAL_ERROR: "an internal error ended the run",
    StopReason.INTERRUPTED: "the app ended during the run (killed or crashed); the trace holds what was done",
    StopReason.INCOMPLETE: "the trace ends before the run did",
    StopReason.RUNNING: "still running",
}

# Span statuses as the tree shows them (short enough for the Status column) and explains them.
SPAN_STATUS_WORDS = {
    "running": "running", "ok": "ok", "error": "error", "timeout": "timeout",
    "cancelled": "cancelled", "budget": "limit", "incomplete": "incomplete",
}
SPAN_STATUS_EXPLANATIONS = {
    "running": "Still running.",
    "ok": "Finished normally.",
    "error": "Failed; the detail pane shows the error.",
    "timeout": "Stopped by a time limit.",
    "cancelled": "Stopped by the user (or because its run stopped).",
    "budget": "Stopped by a limit or budget (USD, tokens, sub-calls, iterations).",
    "incomplete": "Never finished: the trace file ends before this step ended (the app or the "
                  "run was interrupted).",
}

_CELL_WORDS = {CellStatus.OK: "ok", CellStatus.ERROR: "error", CellStatus.TIMEOUT: "timed out",
               CellStatus.CRASHED: "crashed", CellStatus.CANCELLED: "cancelled"}


def run_status_text(status: str) -> str:
    """``"limit"`` → ``"stopped by a limit"``; unknown words are shown as they are."""
    try:
        return _RUN_WORDS[RunStatus(status)]
    except ValueError:
        return status


def stop_reason_text(reason: str | None) -> str:
    if not reason:
        return ""
    try:
        return _STOP_WORDS[StopReason(reason)]
    except ValueError:
        return reason.replace("_", " ")


def span_status_text(status: str) -> str:
    """A span status word short enough for a table column (the trace pane sizes its Status column
    to the longest of these)."""
    return SPAN_STATUS_WORDS.get(status, status)


def span_status_explanation(status: str) -> str:
    return SPAN_STATUS_EXPLANATIONS.get(status, "")


def cell_status_text(status: str) -> str:
    try:
        return _CELL_WORDS[CellStatus(status)]
    except ValueError:
        return status


# The CLI's exit code for each way a run ends (see rlm_desktop.cli.exit_codes for the numbers).
def is_provider_failure(stop_reason: str | None) -> bool:
    return stop_reason in (StopReason.PROVIDER_ERROR, StopReason.CALL_TIMEOUT)
