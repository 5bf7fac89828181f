"""RLM Desktop: run Recursive Language Models over large document sets, live and under control.

Python API: ``from rlm_desktop import Session, completion`` (see README "Python API").
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Session", "completion", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import rlm_desktop` stays cheap (the CLI and the sandbox import it for the version).
    if name in ("Session", "completion"):
        from rlm_desktop import session

        return getattr(session, name)
    raise AttributeError(f"module 'rlm_desktop' has no attribute {name!r}")
