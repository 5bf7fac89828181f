"""The isolation level this machine must give, known without asking the code under test.

The sandbox suite must not judge the sandbox by the sandbox's own probes (a layer dropped from the
worker would lower the level those probes report, and the tests would skip). So the expected level
comes from outside: ``RLM_EXPECT_SANDBOX_LEVEL`` (CI sets it: its machine gives "strong"), or else a
kernel probe written here, with its own syscalls and util-linux's ``unshare``, sharing no code with
``rlm_desktop.sandbox``. Tests then *fail* when a layer the machine supports is not in force.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
import sys
import tempfile

ENV_VAR = "RLM_EXPECT_SANDBOX_LEVEL"
LEVELS = ("none", "weak", "good", "strong")
LAYERS_FOR = {"strong": {"namespaces", "landlock", "seccomp"}, "good": {"landlock", "seccomp"},
              "weak": set(), "none": set()}
_LANDLOCK_CREATE_RULESET = 444          # the same number on every architecture
_LANDLOCK_CREATE_RULESET_VERSION = 1


def kernel_landlock_abi() -> int:
    """landlock_create_ruleset(NULL, 0, VERSION): the kernel's Landlock ABI, 0 if none."""
    if not sys.platform.startswith("linux"):
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    v = libc.syscall(ctypes.c_long(_LANDLOCK_CREATE_RULESET), None, ctypes.c_size_t(0),
                     ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    return v if v > 0 else 0


def kernel_has_seccomp_filters() -> bool:
    """A kernel with seccomp filter mode shows ``Seccomp_filters`` in every process's status."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            return any(line.startswith("Seccomp_filters:") for line in f)
    except OSError:
        return False


def kernel_allows_namespaces() -> bool:
    """Can this user make the namespaces the worker uses and mount a tmpfs inside them?"""
    unshare = shutil.which("unshare")
    if unshare is None or not sys.platform.startswith("linux"):
        return False
    with tempfile.TemporaryDirectory() as d:
        try:
            r = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "--net", "--pid", "--ipc",
                                "--uts", "--fork", "mount", "-t", "tmpfs", "-o", "size=1m", "probe", d],
                               capture_output=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return r.returncode == 0


@functools.lru_cache(maxsize=1)
def probed_level() -> str:
    landlock = kernel_landlock_abi() > 0
    seccomp = kernel_has_seccomp_filters()
    if landlock and seccomp:
        return "strong" if kernel_allows_namespaces() else "good"
    return "weak" if landlock or seccomp else "none"


@functools.lru_cache(maxsize=1)
def expected_level() -> str:
    """The level a sandbox here must reach: the environment's word, else the kernel probe."""
    given = os.environ.get(ENV_VAR, "").strip().lower()
    if given:
        if given not in LEVELS:
            raise ValueError(f"{ENV_VAR}={given!r}: expected one of {', '.join(LEVELS)}")
        return given
    return probed_level()


def expected_layers() -> set[str]:
    return set(LAYERS_FOR[expected_level()])


def expected_at_least(level: str) -> bool:
    return LEVELS.index(expected_level()) >= LEVELS.index(level)
