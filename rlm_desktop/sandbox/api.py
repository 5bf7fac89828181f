"""What the host side of the sandbox offers the engine: the types that cross that boundary.

The engine talks only to :class:`rlm_desktop.sandbox.host.Sandbox` through these types, so the
isolation layers inside the worker can change without touching the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class IsolationLevel(StrEnum):
    STRONG = "strong"   # namespaces + Landlock + seccomp (+ limits)
    GOOD = "good"       # Landlock + seccomp (+ limits)
    WEAK = "weak"       # seccomp only (+ limits)
    NONE = "none"       # resource limits only

    @property
    def rank(self) -> int:
        return {"none": 0, "weak": 1, "good": 2, "strong": 3}[self.value]


@dataclass(frozen=True, slots=True)
class IsolationReport:
    """The isolation actually in force, as measured from the host (``/proc/<pid>/status`` etc.)."""

    level: IsolationLevel
    layers: dict[str, Any] = field(default_factory=dict)   # e.g. {"seccomp": 2, "landlock_abi": 7}
    platform: str = ""
    summary: str = ""          # one plain sentence for tooltips and the CLI

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level.value, "layers": dict(self.layers),
                "platform": self.platform, "summary": self.summary}


class SandboxRefused(RuntimeError):
    """Isolation is below what the settings allow; the message explains the risk and the opt-in."""


class SandboxError(RuntimeError):
    """The sandbox could not be started or talked to (the message says why and what to do)."""


@dataclass(frozen=True, slots=True)
class SubRequest:
    """A request from model code in the worker to the host.

    kind: "llm_query" (payload: prompt, model) | "llm_query_batched" (prompts, model)
          | "rlm_query" (prompt, context)
    """

    kind: str
    payload: dict[str, Any]


# The engine answers a SubRequest: str for llm_query / rlm_query, list[str] for batched.
# Raising an exception sends its message back as an error string / an exception in the cell.
RequestHandler = Callable[[SubRequest], Awaitable[Any]]
# Live output while a cell runs: (stream name "stdout" | "stderr", text chunk).
OutputHandler = Callable[[str, str], None]


@dataclass(frozen=True, slots=True)
class FinalValue:
    """FINAL(value) / FINAL_VAR(name) called as a function inside a cell."""

    value: str
    via: str                   # "FINAL" | "FINAL_VAR"
    var_name: str | None = None


@dataclass(frozen=True, slots=True)
class CellResult:
    ok: bool                              # the cell ran to the end without an exception
    stdout: str
    stderr: str
    error: str | None = None              # traceback / reason text when not ok
    final: FinalValue | None = None
    status: str = "ok"                    # "ok" | "error" | "timeout" | "crashed" | "cancelled"
    restarted: bool = False               # the worker was killed and restarted: variables lost
    restart_reason: str | None = None     # e.g. "timeout after 10 s"
    duration_s: float = 0.0
    output_truncated: bool = False        # stdout/stderr hit the output cap
