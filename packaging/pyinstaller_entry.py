"""Entry point of the PyInstaller bundle: the ``rlm-desktop`` command, plus a ``python -c`` shim.

The sandbox host starts its worker as ``sys.executable -I -S -B -c CODE ARGS…``. In a bundle
``sys.executable`` is this program, so those arguments are recognised here and the code runs as
Python would run it (the worker modules are inside the bundle).
"""

from __future__ import annotations

import sys

_PY_FLAGS = {"-I", "-S", "-B", "-E", "-s", "-u"}


def _run_as_python_c(args: list[str]) -> bool:
    i = 0
    while i < len(args) and args[i] in _PY_FLAGS:
        i += 1
    if i + 1 < len(args) and args[i] == "-c" and i > 0:
        code = args[i + 1]
        sys.argv = ["-c", *args[i + 2:]]
        exec(compile(code, "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102 - our own worker boot
        return True
    return False


if __name__ == "__main__":
    if getattr(sys, "frozen", False) and _run_as_python_c(sys.argv[1:]):
        sys.exit(0)
    from rlm_desktop.cli import main

    sys.exit(main())
