"""The app (QSettings) and the CLI/Python (Qt-free store) share one preferences file: what one
writes the other reads, field for field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rlm_desktop.core.config import RunLimits
from rlm_desktop.core.profiles import profile_from_preset
from rlm_desktop.session.prefs import Preferences


def test_the_cli_reads_what_the_app_wrote_and_the_other_way(tmp_path: Path) -> None:
    path = tmp_path / "preferences.ini"
    # The app writes (QSettings) in another process, as the desktop app would.
    code = f"""
from rlm_desktop.core.config import RunLimits
from rlm_desktop.core.profiles import profile_from_preset
from rlm_desktop.ui.settings import Settings
s = Settings({str(path)!r})
s.add_profile(profile_from_preset("ollama", "local-1", name='My "local", server; x=1'))
s.set_default_limits(RunLimits(max_iterations=7, budget_usd=1.25, max_tokens=None))
s.set_last_root_choice("local-1", "llama3.1:8b")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    p = Preferences(path)
    assert p.notices == []
    prof = p.profile("local-1")
    assert prof.name == 'My "local", server; x=1'
    assert p.default_limits() == RunLimits(max_iterations=7, budget_usd=1.25, max_tokens=None)
    assert p.last_root_choice() == ("local-1", "llama3.1:8b")
    # The CLI writes (Qt-free); the app reads it in a fresh process.
    p.add_profile(profile_from_preset("ollama", "local-2", name="Second"))
    p.set_memo_cache(False)
    code = f"""
from rlm_desktop.ui.settings import Settings
s = Settings({str(path)!r})
print(s.provider_ids(), s.memo_cache(), s.default_limits().max_iterations, s.notices)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['demo', 'local-1', 'local-2'] False 7 []"
    assert path.stat().st_mode & 0o777 == 0o600
