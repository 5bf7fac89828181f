"""Documents: real files in tmp_path — each kind, encodings, binary, links, errors, caps, cancel."""

from __future__ import annotations

import codecs
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from rlm_desktop.core.cancel import CancelToken
from rlm_desktop.core.documents import (
    MAX_TEXT_BYTES,
    DocumentSet,
    LoadCancelled,
    decode_bytes,
    display_name,
    html_to_text,
    load_document,
    load_documents,
    open_document_file,
    scan_paths,
)
from tests.core.pdfs import make_pdf


def write(p: Path, data: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        p.write_text(data, encoding="utf-8")
    else:
        p.write_bytes(data)
    return p


# -- kinds -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "content", "kind"), [
    ("notes.txt", "plain words", "text"),
    ("readme.md", "# Title\n\nbody", "markdown"),
    ("data.csv", "a,b\n1,2\n", "csv"),
    ("data.tsv", "a\tb\n1\t2\n", "tsv"),
    ("obj.json", '{"k": [1, 2]}', "json"),
    ("rows.jsonl", '{"a":1}\n{"a":2}\n', "jsonl"),
    ("server.log", "2024-01-01 INFO start\n", "log"),
    ("feed.xml", "<root><item>x</item></root>", "xml"),
    ("conf.yaml", "key: value\n", "yaml"),
    ("setup.ini", "[s]\nk=v\n", "ini"),
    ("proj.toml", "[tool]\nx = 1\n", "toml"),
    ("guide.rst", "Title\n=====\n", "text"),
    ("main.py", "def f():\n    return 1\n", "code"),
    ("app.ts", "const x: number = 1;\n", "code"),
    ("lib.rs", "fn main() {}\n", "code"),
    ("Makefile", "all:\n\techo hi\n", "code"),
])
def test_text_like_kinds_load_verbatim(tmp_path: Path, name: str, content: str, kind: str) -> None:
    doc = load_document(write(tmp_path / name, content), name)
    assert doc.error is None
    assert doc.kind == kind
    assert doc.text == content
    assert doc.chars == len(content)
    assert doc.encoding == "UTF-8"
    assert doc.size_bytes == len(content.encode())
    assert doc.est_tokens == (len(content) + 3) // 4


def test_html_gives_visible_text_without_script_or_style(tmp_path: Path) -> None:
    html = ("<!doctype html><html><head><title>Quarterly report</title><style>p{color:red}</style>"
            "<script>var secret = 'do not show';</script></head><body><h1>Results</h1>"
            "<p>Revenue &amp; costs &lt;up&gt;</p><div>first<br>second</div>"
            "<table><tr><td>a</td><td>b</td></tr></table><noscript>enable js</noscript></body></html>")
    doc = load_document(write(tmp_path / "r.html", html), "r.html")
    assert doc.kind == "html" and doc.error is None
    text = doc.text or ""
    assert "Quarterly report" in text
    assert "Revenue & costs <up>" in text
    assert "first\nsecond" in text
    assert "do not show" not in text and "color:red" not in text and "enable js" not in text
    assert "<" not in text.replace("<up>", "")
    assert doc.chars == len(text)


def test_html_to_text_collapses_whitespace() -> None:
    assert html_to_text("<p>a   b\n\n c</p><p>d</p>") == "a b c\n\nd"


def test_unknown_extension_sniffed_as_text_or_binary(tmp_path: Path) -> None:
    t = load_document(write(tmp_path / "NOTES", "just text\n"), "NOTES")
    assert t.error is None and t.kind == "text" and t.text == "just text\n"
    b = load_document(write(tmp_path / "blob.bin", bytes(range(256)) * 4), "blob.bin")
    assert b.text is None and b.kind == "binary"
    assert "binary file" in (b.error or "")


def test_known_binary_format_named_in_error(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path / "report.doc", b"\xd0\xcf\x11\xe0rest"), "report.doc")
    assert doc.text is None
    assert "Word document" in (doc.error or "") and "export it" in (doc.error or "")


def test_empty_file_is_a_document_with_a_warning(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path / "empty.txt", b""), "empty.txt")
    assert doc.error is None and doc.text == "" and doc.chars == 0
    assert doc.warning == "empty file"


def test_crlf_normalised(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path / "w.txt", b"a\r\nb\rc\n"), "w.txt")
    assert doc.text == "a\nb\nc\n"


# -- encodings ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("bom", "codec", "label"), [
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"),
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"),
])
def test_bom_decides_encoding(tmp_path: Path, bom: bytes, codec: str, label: str) -> None:
    text = "Zürich — 東京 ✓"
    doc = load_document(write(tmp_path / "b.txt", bom + text.encode(codec)), "b.txt")
    assert doc.error is None and doc.warning is None
    assert doc.text == text and doc.encoding == label


def test_utf16_without_bom_detected_with_warning(tmp_path: Path) -> None:
    text = "Meeting notes: budget approved, next review in March.\n"
    doc = load_document(write(tmp_path / "u.txt", text.encode("utf-16-le")), "u.txt")
    assert doc.text == text and doc.encoding == "UTF-16 LE"
    assert "no byte-order mark" in (doc.warning or "")
    doc = load_document(write(tmp_path / "ube.txt", text.encode("utf-16-be")), "ube.txt")
    assert doc.text == text and doc.encoding == "UTF-16 BE"


def test_cp1252_fallback_is_warned_and_named(tmp_path: Path) -> None:
    raw = "Café “quoted” – 10 €".encode("cp1252")
    doc = load_document(write(tmp_path / "w.txt", raw), "w.txt")
    assert doc.text == "Café “quoted” – 10 €"
    assert doc.encoding == "cp1252"
    assert "not valid UTF-8" in (doc.warning or "") and "Windows-1252" in (doc.warning or "")


def test_latin1_last_resort_is_warned(tmp_path: Path) -> None:
    raw = b"abc \x81\x8d\xe9"  # 0x81 / 0x8d are undefined in cp1252
    doc = load_document(write(tmp_path / "l.txt", raw), "l.txt")
    assert doc.encoding == "latin-1" and doc.text == raw.decode("latin-1")
    assert "Latin-1" in (doc.warning or "")


def test_bad_bytes_after_bom_is_an_error() -> None:
    dec = decode_bytes(codecs.BOM_UTF8 + b"ok \xff\xfe broken")
    assert dec.text is None and "not valid UTF-8" in (dec.error or "")


def test_utf8_is_not_warned() -> None:
    dec = decode_bytes("naïve façade".encode())
    assert dec.text == "naïve façade" and dec.warning is None and dec.encoding == "UTF-8"


# -- PDF ---------------------------------------------------------------------------------------

def test_pdf_text_per_page(tmp_path: Path) -> None:
    p = make_pdf(tmp_path / "memo.pdf", ["Budget memo (draft)\nTotal: 4,200 EUR", "Page two text"])
    doc = load_document(p, "memo.pdf")
    assert doc.error is None and doc.kind == "pdf" and doc.pages == 2
    assert "--- page 1 ---" in (doc.text or "") and "--- page 2 ---" in (doc.text or "")
    assert "Budget memo (draft)" in (doc.text or "") and "Page two text" in (doc.text or "")
    assert doc.chars == len(doc.text or "")


def test_single_page_pdf_has_no_page_marker(tmp_path: Path) -> None:
    doc = load_document(make_pdf(tmp_path / "one.pdf", ["Only page"]), "one.pdf")
    assert doc.text == "Only page"


def test_encrypted_pdf_reported(tmp_path: Path) -> None:
    doc = load_document(make_pdf(tmp_path / "locked.pdf", ["secret"], password="pw"), "locked.pdf")
    assert doc.text is None
    assert "encrypted PDF" in (doc.error or "") and "password" in (doc.error or "")


def test_image_only_pdf_reported(tmp_path: Path) -> None:
    doc = load_document(make_pdf(tmp_path / "scan.pdf", [None, None]), "scan.pdf")
    assert doc.text is None and doc.pages == 2
    assert "no extractable text" in (doc.error or "") and "OCR" in (doc.error or "")


@pytest.mark.parametrize("mangle", ["truncate", "garbage"])
def test_malformed_pdf_reported(tmp_path: Path, mangle: str) -> None:
    good = make_pdf(tmp_path / "good.pdf", ["content"]).read_bytes()
    data = good[: len(good) // 3] if mangle == "truncate" else b"%PDF-1.7\n" + os.urandom(500)
    doc = load_document(write(tmp_path / "bad.pdf", data), "bad.pdf")
    assert doc.text is None
    assert (doc.error or "").startswith("malformed PDF")


def test_pdf_without_extension_sniffed(tmp_path: Path) -> None:
    data = make_pdf(tmp_path / "x.pdf", ["sniffed"]).read_bytes()
    doc = load_document(write(tmp_path / "download", data), "download")
    assert doc.kind == "pdf" and doc.text == "sniffed"


# -- folders, links, errors ----------------------------------------------------------------------

def test_folder_recursive_ordered_with_totals(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    write(root / "b.txt", "bbb")
    write(root / "a" / "z.md", "zz")
    write(root / "a" / "y.csv", "y,1\n")
    write(root / "c.pdf", make_pdf(tmp_path / "tmp.pdf", ["pdf text"]).read_bytes())
    write(root / "bin.dat", b"\x00\x01\x02\x03")
    ds = load_documents([root])
    assert [d.rel_path for d in ds.documents] == ["a/y.csv", "a/z.md", "b.txt", "c.pdf"]
    assert ds.total_files == 4
    assert ds.total_chars == 3 + 2 + 4 + len("pdf text")
    assert ds.total_bytes == sum(d.size_bytes for d in ds.documents)
    assert [d.rel_path for d in ds.errors] == ["bin.dat"]
    value = ds.context_value()
    assert isinstance(value, dict) and list(value) == ["a/y.csv", "a/z.md", "b.txt", "c.pdf"]
    assert value["b.txt"] == "bbb"
    desc = ds.describe()
    assert desc["type"] == "dict[str, str]" and desc["count"] == 4
    assert desc["total_chars"] == ds.total_chars
    assert desc["documents"][0] == {"path": "a/y.csv", "kind": "csv", "chars": 4}
    assert desc["unreadable"][0]["path"] == "bin.dat"
    json.dumps(desc)  # goes into a prompt: must be plain data
    assert "4 documents" in ds.summary() and "1 not loaded" in ds.summary()


def test_single_document_context_is_a_string(tmp_path: Path) -> None:
    ds = load_documents([write(tmp_path / "only.txt", "the text")])
    assert ds.context_value() == "the text"
    assert ds.describe()["type"] == "str"
    assert load_documents([]).context_value() == {}


def test_several_inputs_are_prefixed_and_deduplicated(tmp_path: Path) -> None:
    write(tmp_path / "one" / "notes.txt", "1")
    write(tmp_path / "two" / "notes.txt", "2")
    write(tmp_path / "x" / "notes.txt", "3")
    ds = load_documents([tmp_path / "one", tmp_path / "two", tmp_path / "x" / "notes.txt"])
    assert ds.context_value() == {"notes.txt": "3", "one/notes.txt": "1", "two/notes.txt": "2"}
    ds2 = load_documents([tmp_path / "one" / "notes.txt", tmp_path / "two" / "notes.txt"])
    assert sorted(ds2.context_value().values()) == ["1", "2"]  # type: ignore[union-attr]
    assert [d.rel_path for d in ds2.documents] == ["notes (2).txt", "notes.txt"]


def test_hidden_and_vcs_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    write(root / "keep.txt", "k")
    write(root / ".env", "API_KEY=nope")
    write(root / ".git" / "config", "[core]")
    write(root / "node_modules" / "pkg" / "index.js", "x")
    write(root / "src" / "__pycache__" / "m.cpython-311.pyc", b"\x00")
    write(root / ".venv" / "bin" / "python", "#!")
    ds = load_documents([root])
    assert [d.rel_path for d in ds.documents] == ["keep.txt"]
    assert ds.errors == []
    assert ds.skipped == [".env", ".git/", ".venv/", "node_modules/", "src/__pycache__/"]
    assert "5 hidden or tooling entries skipped" in ds.summary()
    everything = load_documents([root], include_hidden=True)
    assert ".env" in [d.rel_path for d in everything.documents]


def test_hidden_file_named_explicitly_is_loaded(tmp_path: Path) -> None:
    ds = load_documents([write(tmp_path / ".notes", "mine")])
    assert ds.context_value() == "mine"


def test_symlink_loop_dangling_and_self_link_reported(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "sub" / "doc.txt", "inside")
    (root / "sub" / "back").symlink_to(root, target_is_directory=True)
    (root / "dangling.txt").symlink_to(tmp_path / "missing.txt")
    (root / "selfloop").symlink_to(root / "selfloop")
    (root / "alias").symlink_to(root / "sub", target_is_directory=True)
    ds = load_documents([root])
    assert [d.rel_path for d in ds.documents] == ["sub/doc.txt"]
    errs = {d.rel_path: d.error or "" for d in ds.errors}
    assert errs["sub/back"].startswith("symlink loop")
    assert errs["dangling.txt"].startswith("broken symlink") and "missing.txt" in errs["dangling.txt"]
    assert errs["selfloop"].startswith("symlink loop")
    assert "loaded once" in errs["alias"]


SECRET = "-----BEGIN OPENSSH PRIVATE KEY----- not for the provider"
SECRET_TOO = "a private note in a folder out of reach"


def _hostile_folder(tmp_path: Path) -> Path:
    """A chosen folder whose links lead out of it (to a key, a folder, /etc), and links that stay in."""
    secret = write(tmp_path / "secret" / "id_rsa", SECRET)
    write(tmp_path / "secret" / "more.txt", SECRET_TOO)
    write(tmp_path / "elsewhere" / "shared.txt", "hard-linked text")
    root = tmp_path / "docs"
    write(root / "real" / "a.txt", "inside a")
    write(root / "b.md", "inside b")
    (root / "notes.md").symlink_to(secret)                                   # absolute, out
    (root / "real" / "rel.txt").symlink_to(Path("..", "..", "secret", "id_rsa"))  # relative `..`
    (root / "outdir").symlink_to(tmp_path / "secret", target_is_directory=True)
    (root / "etc").symlink_to("/etc", target_is_directory=True)
    (tmp_path / "hop").symlink_to(secret)
    (root / "real" / "deep").mkdir()
    (root / "real" / "deep" / "chain.txt").symlink_to(tmp_path / "hop")      # a chain, deep
    (root / "inside.txt").symlink_to(root / "real" / "a.txt")               # absolute, in
    (root / "rel_inside.md").symlink_to(Path("real", "a.txt"))              # relative, in
    (tmp_path / "bounce").symlink_to(root / "b.md")
    (root / "bounce.txt").symlink_to(tmp_path / "bounce")                   # out and back in
    (root / "self").symlink_to(root, target_is_directory=True)              # the folder itself
    os.link(tmp_path / "elsewhere" / "shared.txt", root / "hard.txt")     # a hard link: a file here
    return root


OUTSIDE_FILE = "link to a file outside the folder — not loaded"
OUTSIDE_FOLDER = "link to a folder outside the folder — not loaded"


def test_links_out_of_the_chosen_folder_are_reported_and_not_loaded(tmp_path: Path) -> None:
    root = _hostile_folder(tmp_path)
    ds = load_documents([root])
    value = ds.context_value()
    assert isinstance(value, dict)
    assert value == {"b.md": "inside b", "bounce.txt": "inside b", "hard.txt": "hard-linked text",
                     "inside.txt": "inside a", "real/a.txt": "inside a", "rel_inside.md": "inside a"}
    errs = {d.rel_path: d.error or "" for d in ds.errors}
    for rel in ("notes.md", "real/rel.txt", "real/deep/chain.txt"):
        assert errs.pop(rel).startswith(OUTSIDE_FILE), rel
    for rel in ("outdir", "etc"):
        assert errs.pop(rel).startswith(OUTSIDE_FOLDER), rel
    assert errs.pop("self").startswith("symlink loop")
    assert errs == {}
    assert "--follow-outside-links" in ds.errors[0].error  # says how to allow it
    # Nothing of the outside target reached what a model sees (context and its description).
    seen = json.dumps([value, ds.describe()])
    assert SECRET not in seen and SECRET_TOO not in seen and "secret" not in seen


def test_outside_links_are_followed_when_allowed(tmp_path: Path) -> None:
    root = _hostile_folder(tmp_path)
    (root / "etc").unlink()   # followed, it would read all of /etc
    scan = scan_paths([root], follow_outside_links=True)
    assert scan.confine == {}
    ds = load_documents([root], follow_outside_links=True)
    value = ds.context_value()
    assert isinstance(value, dict)
    assert value["notes.md"] == SECRET and value["real/rel.txt"] == SECRET
    assert value["real/deep/chain.txt"] == SECRET and value["outdir/more.txt"] == SECRET_TOO
    assert value["inside.txt"] == "inside a"


def test_a_link_picked_directly_is_read(tmp_path: Path) -> None:
    root = _hostile_folder(tmp_path)
    assert load_documents([root / "notes.md"]).context_value() == SECRET   # the user chose it
    # A chosen folder that is itself a link: its own links are judged against where it really is.
    (tmp_path / "docs-link").symlink_to(root, target_is_directory=True)
    ds = load_documents([tmp_path / "docs-link"])
    assert ds.context_value()["inside.txt"] == "inside a"  # type: ignore[index]
    assert {d.rel_path for d in ds.errors} >= {"notes.md", "outdir", "etc"}


def test_a_file_swapped_for_an_outside_link_after_the_scan_is_not_read(tmp_path: Path) -> None:
    root = _hostile_folder(tmp_path)
    scan = scan_paths([root])
    assert scan.confine["real/a.txt"] == os.path.realpath(root)
    # Between the scan and the load (the app may ask "load 3,000 files?" meanwhile) a file and a
    # folder on the way to another are replaced by links out of the folder.
    (root / "b.md").unlink()
    (root / "b.md").symlink_to(tmp_path / "secret" / "id_rsa")
    (root / "real").rename(tmp_path / "real-moved")
    shutil.copytree(tmp_path / "secret", tmp_path / "fake-real")
    (tmp_path / "fake-real" / "a.txt").write_text(SECRET)
    (root / "real").symlink_to(tmp_path / "fake-real", target_is_directory=True)
    ds = load_documents(scan)
    errs = {d.rel_path: d.error or "" for d in ds.errors}
    assert errs["b.md"].startswith(OUTSIDE_FILE) and errs["real/a.txt"].startswith(OUTSIDE_FILE)
    assert SECRET not in json.dumps(ds.context_value())


def test_the_opened_file_itself_is_checked(tmp_path: Path) -> None:
    root = _hostile_folder(tmp_path)
    inside = os.path.realpath(root)
    with open_document_file(root / "inside.txt", inside) as fh:
        assert fh.read() == b"inside a"
    with pytest.raises(OSError, match="outside the folder"):
        open_document_file(root / "notes.md", inside)
    with open_document_file(root / "notes.md") as fh:   # not confined: a direct pick
        assert fh.read().decode() == SECRET
    os.mkfifo(root / "pipe")
    with pytest.raises(OSError, match="not a regular file"):   # and it does not block on a FIFO
        open_document_file(root / "pipe", inside)


def test_a_pdf_behind_an_outside_link_is_not_read(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "private.pdf", ["pdf secret"])
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "report.pdf").symlink_to(pdf)
    write(tmp_path / "docs" / "ok.txt", "ok")
    ds = load_documents([tmp_path / "docs"])
    assert ds.context_value() == "ok"
    doc = load_document(tmp_path / "docs" / "report.pdf", "report.pdf", inside=str(tmp_path / "docs"))
    assert doc.text is None and (doc.error or "").startswith(OUTSIDE_FILE)
    assert load_documents([tmp_path / "docs"], follow_outside_links=True).context_value() == {
        "ok.txt": "ok", "report.pdf": "pdf secret"}


# -- file names --------------------------------------------------------------------------------

def test_a_file_name_that_is_not_utf8_loads_under_a_readable_name(tmp_path: Path) -> None:
    folder = os.fsencode(tmp_path / "docs")
    os.makedirs(os.path.join(folder, b"sub-\xfe"))
    for name, text in ((b"report-\xff.txt", "bad byte"), (b"sub-\xfe/x\xe9.md", "latin-1 name"),
                       (b"fine.txt", "fine")):
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(text.encode())
    ds = load_documents([tmp_path / "docs"])
    assert ds.errors == []
    value = ds.context_value()
    assert value == {"fine.txt": "fine", "report-\\xff.txt": "bad byte", "sub-\\xfe/x\\xe9.md": "latin-1 name"}
    for key in value:   # valid strings: UTF-8 encodes them, so the sandbox wire and the trace carry them
        key.encode("utf-8")
    json.dumps(ds.describe(), ensure_ascii=False).encode("utf-8")
    # The real file is kept: its path reads back to the same bytes.
    by_name = {d.rel_path: d for d in ds.documents}
    assert os.fsencode(by_name["report-\\xff.txt"].path).endswith(b"report-\xff.txt")
    # Picked directly, and as one of several folders (its name then prefixes the keys).
    direct = load_documents([os.fsdecode(os.path.join(folder, b"report-\xff.txt"))])
    assert [d.rel_path for d in direct.documents] == ["report-\\xff.txt"]
    several = load_documents([os.fsdecode(os.path.join(folder, b"sub-\xfe")), tmp_path / "docs" / "fine.txt"])
    assert sorted(several.context_value()) == ["fine.txt", "sub-\\xfe/x\\xe9.md"]  # type: ignore[arg-type]


def test_display_name_escapes_only_what_is_not_text() -> None:
    assert display_name("plain é ü 😀.txt") == "plain é ü 😀.txt"
    assert display_name("report-\udcff.txt") == "report-\\xff.txt"
    assert display_name("win-\ud800.txt") == "win-\\ud800.txt"
    assert os.fsencode("report-\udcff.txt") == b"report-\xff.txt"   # what the escape stands for


def test_fifo_is_reported_not_opened(tmp_path: Path) -> None:
    # Opening a FIFO for reading would block forever: it must be recognised from its mode.
    write(tmp_path / "d" / "ok.txt", "fine")
    os.mkfifo(tmp_path / "d" / "pipe")
    ds = load_documents([tmp_path / "d"])
    assert ds.context_value() == "fine"
    assert [(d.rel_path, d.error) for d in ds.errors] == [
        ("pipe", "not a regular file (a named pipe (FIFO)); skipped")]
    direct = load_document(tmp_path / "d" / "pipe", "pipe")
    assert "named pipe" in (direct.error or "")


def test_missing_input_reported(tmp_path: Path) -> None:
    ds = load_documents([tmp_path / "nope.txt", write(tmp_path / "yes.txt", "y")])
    assert ds.context_value() == "y"
    assert ds.errors[0].rel_path == "nope.txt" and "not found" in (ds.errors[0].error or "")


def _load_as(uid: int | None, root: Path) -> dict:
    """Load ``root`` in-process, or (as root) in a forked child that first drops to ``uid``."""
    def result() -> dict:
        ds = load_documents([root])
        return {"docs": [d.rel_path for d in ds.documents],
                "errors": {d.rel_path: d.error for d in ds.errors}}

    if uid is None:
        return result()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, load, report, exit without running pytest's teardown
        code = 1
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with os.fdopen(wfd, "w") as fh:
                json.dump(result(), fh)
            code = 0
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd) as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged loader child failed"
    return json.loads(data)


def test_permission_denied_reported_per_path(tmp_path: Path) -> None:
    # Root ignores file modes, so as root the loader runs in a forked child that drops to
    # "nobody" (uid 65534) over a world-readable temporary tree; otherwise it runs in-process.
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="rlm-perm-")) if as_root else tmp_path
    root = base / "tree"
    try:
        os.chmod(base, 0o755)
        write(root / "open.txt", "readable")
        write(root / "locked.txt", "secret")
        write(root / "closed" / "inner.txt", "hidden by mode")
        os.chmod(root, 0o755)
        os.chmod(root / "open.txt", 0o644)
        os.chmod(root / "locked.txt", 0o000)
        os.chmod(root / "closed", 0o000)
        result = _load_as(65534 if as_root else None, root)
        assert result["docs"] == ["open.txt"]
        assert result["errors"]["locked.txt"].startswith("permission denied")
        assert result["errors"]["closed"].startswith("folder permission denied")
    finally:
        if (root / "closed").exists():
            os.chmod(root / "closed", 0o755)
        if as_root:
            shutil.rmtree(base, ignore_errors=True)


# -- caps, progress, cancel --------------------------------------------------------------------

def test_size_cap_per_file(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path / "big.txt", "x" * 2000), "big.txt", max_bytes=1000)
    assert doc.text is None and doc.size_bytes == 2000
    assert "too large" in (doc.error or "") and "limit per file" in (doc.error or "")
    # The default cap, on a sparse file (no disk used) just over it.
    huge = tmp_path / "huge.log"
    with open(huge, "wb") as fh:
        fh.truncate(MAX_TEXT_BYTES + 1)
    doc = load_document(huge, "huge.log")
    assert doc.text is None and "50.0 MB limit" in (doc.error or "")
    ds = load_documents([tmp_path])
    assert "huge.log" in [d.rel_path for d in ds.errors]


def test_progress_reports_every_file(tmp_path: Path) -> None:
    for i in range(5):
        write(tmp_path / "d" / f"f{i}.txt", str(i))
    seen: list[tuple[int, int, str]] = []
    load_documents([tmp_path / "d"], progress=lambda done, total, rel: seen.append((done, total, rel)))
    assert seen == [(i, 5, f"f{i}.txt") for i in range(5)] + [(5, 5, "")]


def test_cancel_stops_loading(tmp_path: Path) -> None:
    for i in range(20):
        write(tmp_path / "d" / f"f{i:02}.txt", str(i))
    token = CancelToken()
    loaded: list[str] = []

    def progress(done: int, total: int, rel: str) -> None:
        loaded.append(rel)
        if done == 3:
            token.cancel("user closed the dialog")

    with pytest.raises(LoadCancelled, match="user closed the dialog"):
        load_documents([tmp_path / "d"], progress=progress, cancel=token)
    assert len(loaded) == 4
    with pytest.raises(LoadCancelled):
        scan_paths([tmp_path / "d"], cancel=token)


def test_scan_does_not_read(tmp_path: Path) -> None:
    write(tmp_path / "d" / "a.txt", "12345")
    write(tmp_path / "d" / "b" / "c.md", "123")
    scan = scan_paths([tmp_path / "d"])
    assert [rel for _, rel in scan.files] == ["a.txt", "b/c.md"]
    assert scan.total_bytes == 8 and scan.errors == []
    ds = load_documents(scan)
    assert ds.total_chars == 8


def test_describe_caps_the_listing() -> None:
    from rlm_desktop.core.documents import Document
    docs = [Document(path=Path(f"/x/{i:03}.txt"), rel_path=f"{i:03}.txt", kind="text", text="ab", chars=2)
            for i in range(250)]
    desc = DocumentSet(documents=docs).describe(max_listed=100)
    assert len(desc["documents"]) == 100 and desc["not_listed"] == 150 and desc["count"] == 250


def test_binary_and_utf16_checks_count_bytes_as_the_rule_says() -> None:
    """The byte counts behind "binary (mostly control bytes)" and "UTF-16 without a BOM", made
    with bytes methods for speed, agree with a byte-by-byte count at and around the thresholds."""
    import random

    def controls(sample: bytes) -> int:
        return sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13, 27))

    rng = random.Random(7)
    for n in (20, 100, 4096, 65536, 70000):
        for frac in (0.0, 0.05, 0.099, 0.1, 0.101, 0.2, 0.5):
            data = bytearray(rng.choice(b"abc xyz\t\n\r\x1b") for _ in range(n))
            for i in rng.sample(range(n), int(n * frac)):
                data[i] = rng.choice([1, 2, 7, 8, 11, 14, 31])
            sample = bytes(data[:65536])
            binary = controls(sample) > max(8, len(sample) // 10)
            dec = decode_bytes(bytes(data))
            assert (dec.error is not None) == binary, (n, frac, dec)
    for pattern, want in ((b"a\0", "UTF-16 LE"), (b"\0a", "UTF-16 BE"), (b"ab", "UTF-8")):
        assert decode_bytes(pattern * 3000).encoding == want
