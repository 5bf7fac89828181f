"""The REPL the engine drives: a small protocol, so a session can hand a run a live REPL.

:class:`rlm_desktop.sandbox.host.Sandbox` implements it; the engine never needs more than this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from rlm_desktop.sandbox.api import (  # noqa: F401 - the REPL's types, for layers above the engine
    CellResult,
    IsolationReport,
    OutputHandler,
    RequestHandler,
    SubRequest,
)

if TYPE_CHECKING:
    from rlm_desktop.core.config import SandboxLimits


@runtime_checkable
class Repl(Protocol):
    """A persistent Python REPL holding ``context``; cells run in order, one at a time."""

    isolation: IsolationReport | None

    @property
    def started(self) -> bool: ...

    @property
    def alive(self) -> bool: ...

    async def start(self) -> IsolationReport: ...

    async def run_cell(self, code: str, *, timeout_s: float, on_request: RequestHandler,
                       on_output: OutputHandler | None = None) -> CellResult: ...

    async def close(self) -> None: ...

    def kill(self) -> None: ...


def new_repl(limits: SandboxLimits, *, context: str | dict[str, str], depth: int,
             rlm_query_enabled: bool, label: str = "") -> Repl:
    """A new, not yet started sandboxed REPL (the only place the engine names the concrete class)."""
    from rlm_desktop.sandbox.host import Sandbox

    return Sandbox(limits, context=context, depth=depth, rlm_query_enabled=rlm_query_enabled, label=label)


def harden_host_process() -> bool:
    """Make the app process itself harder to inspect from a sandbox (non-dumpable); see the sandbox.
    Front ends call it at start through the engine (they never reach the sandbox directly)."""
    from rlm_desktop.sandbox.host import harden_host_process as harden

    return harden()
