"""`rlm-desktop [PATH…]`: start the desktop app (qasync event loop), with files, folders or a trace."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QObject, Qt, QTimer, Signal
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


class _ErrorRelay(QObject):
    """Carries an error summary from any thread to the GUI thread (queued signal)."""

    error = Signal(str)


def install_error_hooks(report: Callable[[str], None]) -> Callable[[], None]:
    """Log every exception nothing else caught (a Qt slot, a thread) and tell the user through
    ``report`` on the GUI thread. Returns a function that puts the previous hooks back."""
    log = logging.getLogger("rlm_desktop.ui")
    old_hook, old_thread_hook = sys.excepthook, threading.excepthook
    relay = _ErrorRelay()
    relay.error.connect(report, Qt.ConnectionType.QueuedConnection)

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            old_hook(exc_type, exc, tb)
            return
        log.critical("unhandled exception", exc_info=(exc_type, exc, tb))
        relay.error.emit(f"{exc_type.__name__}: {exc}")

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        hook(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback)

    sys.excepthook = hook
    threading.excepthook = thread_hook

    def restore() -> None:
        sys.excepthook, threading.excepthook = old_hook, old_thread_hook
        relay.error.disconnect()
        relay.deleteLater()
    return restore


def run_app(argv: list[str]) -> int:
    """Open the main window with ``argv`` paths loaded (a trace file opens that trace)."""
    from rlm_desktop.core.logs import setup_logging, shutdown_logging
    from rlm_desktop.engine.repl import harden_host_process
    from rlm_desktop.ui.aio import close_gui_loop, gui_loop
    from rlm_desktop.ui.main_window import MainWindow
    from rlm_desktop.ui.settings import Settings

    problem = display_problem()
    if problem:
        print(f"rlm-desktop: {problem}", file=sys.stderr)
        return 2
    # Before any key is read from the keyring: no other process of this user may read our memory.
    harden_host_process()
    log_path = setup_logging(console=True)
    logging.getLogger("rlm_desktop.ui").info("app started; log %s", log_path)
    app = make_app()
    window = MainWindow(Settings())
    restore_hooks = install_error_hooks(window.report_internal_error)
    window.show()
    if argv:
        window.open_paths([Path(p) for p in argv])
    # Ctrl+C / SIGTERM close the window like the user would: a running run is stopped and its
    # trace saved first. (Python runs the handler at the next Python callback, e.g. a timer.)
    previous = {sig: signal.signal(sig, lambda _s, _f: QTimer.singleShot(0, window.close))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    gui_loop()                      # qasync: asyncio tasks of the UI turn with Qt's event loop
    try:
        app.exec()                  # returns when the application quits (last window closed)
    finally:
        close_gui_loop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        restore_hooks()
        shutdown_logging()
    return 0
