"""Sessions: documents + a live REPL + turns; the one place that starts a run, for every front end.

Qt-free. ``from rlm_desktop import Session`` is the Python API (see README "Python API").
"""

from rlm_desktop.session.session import Session, SessionError, TurnResult, completion

__all__ = ["Session", "SessionError", "TurnResult", "completion"]
