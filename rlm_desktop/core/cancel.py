"""A cancel token shared by the UI/CLI (which cancel) and the engine (which obeys), thread-safe."""

from __future__ import annotations

import threading
from collections.abc import Callable


class CancelToken:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self._callbacks: list[Callable[[str], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        return self._reason

    def cancel(self, reason: str = "cancelled by the user") -> None:
        """Idempotent. Callbacks run in the caller's thread; they must be thread-safe."""
        with self._lock:
            if self._reason is not None:
                return
            self._reason = reason
            callbacks = list(self._callbacks)
        for cb in callbacks:
            cb(reason)

    def on_cancel(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Register a callback (called at once if already cancelled). Returns an unregister."""
        with self._lock:
            already = self._reason
            if already is None:
                self._callbacks.append(callback)
        if already is not None:
            callback(already)

        def remove() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)
        return remove
