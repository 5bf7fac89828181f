"""Isolation layers the worker applies to itself before any untrusted code exists in it.

Runs inside the worker (stdlib + ctypes only). ``apply`` returns what it put in force; the host
cross-checks that from outside before it trusts the report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


class HardeningError(RuntimeError):
    """A layer that the host asked for could not be put in force."""


_libc: Any = None


def libc() -> Any:
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


PR_SET_PDEATHSIG = 1


def die_with_parent(host_pid: int) -> None:
    """Get SIGKILL when the parent dies (Linux), and bail out if it is already gone."""
    if sys.platform.startswith("linux"):
        import signal

        libc().prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != host_pid:
        os._exit(0)


def apply_rlimits(limits: dict[str, Any]) -> dict[str, Any]:
    """Set soft = hard = the configured value (never raising an existing hard limit)."""
    import resource

    mb = 1024 * 1024
    wanted = {
        "RLIMIT_AS": int(limits["memory_mb"]) * mb,
        "RLIMIT_CPU": int(limits["cpu_s"]),
        "RLIMIT_FSIZE": int(limits["max_file_mb"]) * mb,
        "RLIMIT_NOFILE": int(limits["max_open_files"]),
        "RLIMIT_CORE": 0,
    }
    if limits.get("nproc"):
        wanted["RLIMIT_NPROC"] = int(limits["max_processes"])
    applied: dict[str, Any] = {}
    for name, value in wanted.items():
        res = getattr(resource, name, None)
        if res is None:
            continue
        _soft, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY and hard < value:
            value = hard
        resource.setrlimit(res, (value, value))
        applied[name] = value
    return applied


def apply(init: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply every layer the host asked for; return what is in force (``report`` of the ready frame)."""
    report: dict[str, Any] = {"platform": sys.platform}
    try:
        report["rlimits"] = apply_rlimits(init["limits"])
    except (OSError, ValueError, KeyError) as exc:
        raise HardeningError(f"resource limits could not be set: {exc}") from None
    os.chdir(init["scratch"])
    return report
