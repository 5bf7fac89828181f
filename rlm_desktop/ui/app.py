"""`rlm-desktop [PATH…]`: start the desktop app (qasync event loop), with files, folders or a trace."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

APP_ID = "io.github.rlm_desktop.RLMDesktop"


def make_app(argv: list[str] | None = None) -> QApplication:
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        app = QApplication([sys.argv[0] if sys.argv else "rlm-desktop", *(argv or [])])
    app.setApplicationName("RLM Desktop")
    app.setOrganizationName("rlm-desktop")
    app.setDesktopFileName(APP_ID)
    # Fusion follows the system colour scheme (light/dark) on every platform.
    app.setStyle("Fusion")
    return app


def display_problem() -> str | None:
    """Why no window can open here (no display on Linux), or None. Qt's own message only suggests
    reinstalling, which is wrong advice."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return ("no graphical display (neither DISPLAY nor WAYLAND_DISPLAY is set). Start the app from "
            "a desktop session, run it on a virtual display (xvfb-run rlm-desktop), or use the "
            "headless command: rlm-desktop run --docs PATH --query TEXT")


def run_app(argv: list[str]) -> int:
    """Open the main window with ``argv`` paths loaded (a trace file opens that trace)."""
    import qasync

    from rlm_desktop.sandbox.host import harden_host_process
    from rlm_desktop.ui.main_window import MainWindow
    from rlm_desktop.ui.settings import Settings

    problem = display_problem()
    if problem:
        print(f"rlm-desktop: {problem}", file=sys.stderr)
        return 2
    # Before any key is read from the keyring: no other process of this user may read our memory.
    harden_host_process()
    app = make_app()
    window = MainWindow(Settings())
    window.show()
    if argv:
        window.open_paths([Path(p) for p in argv])
    # Ctrl+C / SIGTERM close the window like the user would: a running run is stopped and its
    # trace saved first. (Python runs the handler at the next Python callback, e.g. a timer.)
    previous = {sig: signal.signal(sig, lambda _s, _f: QTimer.singleShot(0, window.close))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    try:
        with loop:
            loop.run_forever()      # returns when the application quits (last window closed)
    finally:
        asyncio.set_event_loop(None)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
