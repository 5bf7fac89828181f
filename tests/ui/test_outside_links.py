"""The window over a folder with links out of it: reported rows, nothing of the target loaded, and the
Settings checkbox that allows following them (persisted, applied to the next folder added)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PySide6.QtCore import Qt

from rlm_desktop.ui.documents_pane import COL_NAME, COL_STATUS, DocumentsPane
from rlm_desktop.ui.settings import Settings

SECRET = "-----BEGIN OPENSSH PRIVATE KEY----- for nobody"


def _folder(tmp_path: Path) -> Path:
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "id_rsa").write_text(SECRET)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "report.txt").write_text("The launch is on March 3.")
    (docs / "notes.md").symlink_to(tmp_path / "secret" / "id_rsa")
    (docs / "keys").symlink_to(tmp_path / "secret", target_is_directory=True)
    return docs


def _load(qtbot, pane: DocumentsPane, folder: Path) -> dict[str, str]:  # noqa: ANN001
    pane.clear()
    pane.add_paths([folder])
    qtbot.waitUntil(lambda: not pane.loading, timeout=10_000)
    m = pane.model
    # Keyed by the relative path (the Name column shows the file's own name, the Folder column the rest).
    return {pane.model.docs[r].rel_path: m.data(m.index(r, COL_STATUS)) for r in range(m.rowCount())}


def test_links_out_are_rows_not_documents_until_the_setting_allows_them(qtbot, window, tmp_path: Path) -> None:  # noqa: ANN001
    docs = _folder(tmp_path)
    rows = _load(qtbot, window.documents, docs)
    assert rows["report.txt"] == "loaded"
    assert rows["notes.md"].startswith("error: link to a file outside the folder — not loaded")
    assert rows["keys"].startswith("error: link to a folder outside the folder — not loaded")
    assert SECRET not in json.dumps(window.documents.document_set().context_value())

    window.act_settings.trigger()
    dlg = window.settings_dialog
    qtbot.waitUntil(dlg.isVisible, timeout=3000)
    assert not dlg.follow_links_check.isChecked()          # off by default
    dlg.follow_links_check.setChecked(True)
    dlg.accept()
    qtbot.waitUntil(lambda: not dlg.isVisible(), timeout=3000)
    assert Settings().follow_outside_links()                # persisted in the preferences file

    rows = _load(qtbot, window.documents, docs)
    assert rows == {"keys/id_rsa": "loaded", "notes.md": "loaded", "report.txt": "loaded"}


def test_a_name_that_is_not_utf8_is_shown_escaped(qtbot, tmp_path: Path) -> None:  # noqa: ANN001
    pane = DocumentsPane()
    qtbot.addWidget(pane)
    folder = tmp_path / "docs"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"report-\xff.txt"), "wb") as fh:
        fh.write(b"text")
    rows = _load(qtbot, pane, folder)
    assert rows == {"report-\\xff.txt": "loaded"}
    tip = pane.model.data(pane.model.index(0, COL_NAME), Qt.ItemDataRole.ToolTipRole)
    assert isinstance(tip, str) and tip.endswith("report-\\xff.txt")
