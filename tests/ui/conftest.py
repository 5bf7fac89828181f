"""UI test helpers: a main window on isolated settings, a provider profile for the scripted server,
and simulated drops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication, QWidget

from rlm_desktop.core.profiles import ProviderProfile
from rlm_desktop.ui.aio import close_gui_loop
from rlm_desktop.ui.main_window import MainWindow
from rlm_desktop.ui.settings import Settings
from tests.fakeserver import FakeOpenAI


def fake_profile(srv: FakeOpenAI) -> ProviderProfile:
    return ProviderProfile(id="fake", name="Scripted server", preset="custom", base_url=srv.base_url,
                           needs_key=False, root_model="fake-root", sub_model="fake-sub",
                           models=("fake-root", "fake-sub"), concurrency=8, request_timeout_s=30.0)


def drop_paths(target: QWidget, paths: list[Path]) -> QDropEvent:
    """Simulate a drag-enter then a drop of file URLs on ``target`` (delivered as Qt would)."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPoint(target.width() // 2, target.height() // 2)
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted(), "the window refused the drag"
    drop = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, drop)
    return drop


def answer_next_question(window: MainWindow, button: str, tries: int = 500) -> list[str]:
    """Click ``button`` (its text without '&') on the next question the window asks (its modal
    ``question_box``), as a user would. Returns a list that receives the question's text."""
    asked: list[str] = []

    def drive(left: int) -> None:
        box = window.question_box
        if box is None or not box.isVisible():
            if left > 0:
                QTimer.singleShot(20, lambda: drive(left - 1))
            return
        asked.append(box.text())
        names = [b.text().replace("&", "") for b in box.buttons()]
        asked.extend(names)
        for b in box.buttons():
            if b.text().replace("&", "") == button:
                b.click()
                return
        box.reject()     # no such button: end the question (the test's assertions then fail)

    QTimer.singleShot(0, lambda: drive(tries))
    return asked


@pytest.fixture(autouse=True)
def _gui_loop_closed_after_each_test() -> Iterator[None]:
    """A test that started UI async jobs leaves no qasync loop behind: the next test (GUI or not)
    may use plain asyncio.run in this thread."""
    yield
    close_gui_loop()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def window(qtbot, settings: Settings) -> Iterator[MainWindow]:  # noqa: ANN001
    w = MainWindow(settings)
    qtbot.addWidget(w)
    w.show()
    yield w
    w.bridge.shutdown()


@pytest.fixture
def docs_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "suppliers.txt").write_text("Acme missed the delivery date on 3 March.\nBeta was on time.\n")
    (folder / "notes.md").write_text("# Notes\nAcme promised a refund for the late delivery.\n")
    (folder / "ledger.csv").write_text("supplier,amount\nAcme,1200\nBeta,800\n")
    (folder / "image.bin").write_bytes(bytes(range(256)) * 8)
    return folder
