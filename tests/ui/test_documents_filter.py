"""The Add-documents dialog offers every format the loader reads (Office, mail, EPUB, gzip too)."""

from __future__ import annotations

from rlm_desktop.ui.documents_pane import file_dialog_filter


def test_file_dialog_filter_lists_the_new_formats_then_all_files() -> None:
    documents, all_files = file_dialog_filter().split(";;")
    assert all_files == "All files (*)"
    patterns = documents.removeprefix("Documents (").removesuffix(")").split()
    for suffix in ("*.txt", "*.pdf", "*.py", "*.docx", "*.xlsx", "*.pptx", "*.odt", "*.ods", "*.odp",
                   "*.eml", "*.mbox", "*.epub", "*.gz"):
        assert suffix in patterns
    assert "*.doc" not in patterns and "*.zip" not in patterns   # still refused: not offered
