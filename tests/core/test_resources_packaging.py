"""Resources (icons, samples, resource_path in source / installed / bundled layouts) and packaging files."""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import rlm_desktop
from rlm_desktop.core import resources
from rlm_desktop.core.documents import load_documents
from rlm_desktop.core.resources import (
    APP_ICON,
    STATUS_ICONS,
    icon_path,
    resource_path,
    resource_roots,
    resources_root,
    samples_dir,
)

ROOT = Path(__file__).resolve().parents[2]
APP_ID = "io.github.rlm_desktop.RLMDesktop"
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("name", [APP_ICON.removesuffix(".svg"), *STATUS_ICONS.values()])
def test_icons_are_clean_self_contained_svg(name: str) -> None:
    path = icon_path(name)
    text = path.read_text(encoding="utf-8")
    root = ET.fromstring(text)
    assert root.tag == f"{SVG_NS}svg"
    assert root.get("viewBox") in ("0 0 16 16", "0 0 128 128")
    assert root.find(f"{SVG_NS}title") is not None  # an accessible name
    assert len(list(root.iter())) > 2  # actually draws something
    # Nothing external: no images, no links, no scripts, no URLs but the namespace.
    assert not any(el.tag in (f"{SVG_NS}image", f"{SVG_NS}script", f"{SVG_NS}a") for el in root.iter())
    assert text.count("http") == 1 and "xlink" not in text


# The names the desktop app asks for (rlm_desktop/ui/icons.py); each has a Qt fallback, but the
# shipped set keeps one look.
ACTION_ICONS = ("run", "stop", "add-files", "add-folder", "open-trace", "export", "settings", "copy",
                "clear", "remove", "expand", "collapse", "follow", "shield")


@pytest.mark.parametrize("name", ACTION_ICONS)
def test_action_icons_are_valid_svg(name: str) -> None:
    root = ET.fromstring(icon_path(name).read_text(encoding="utf-8"))
    assert root.tag == f"{SVG_NS}svg" and root.get("viewBox") == "0 0 16 16"
    assert root.find(f"{SVG_NS}title") is not None


def test_samples_are_small_readable_documents() -> None:
    ds = load_documents([samples_dir()])
    assert ds.errors == [] and ds.warnings == [] and ds.skipped == []
    kinds = {d.kind for d in ds.documents}
    assert {"csv", "markdown", "log", "text"} <= kinds
    assert 2_000 < ds.total_chars < 50_000
    value = ds.context_value()
    assert isinstance(value, dict) and "Borealis Metals" in value["meeting-notes-2024-03-12.md"]


def test_resource_path_in_the_source_tree() -> None:
    assert resources_root() == ROOT / "resources"
    assert resource_path("icons", "status-ok.svg") == ROOT / "resources" / "icons" / "status-ok.svg"
    assert icon_path("app") == ROOT / "resources" / "icons" / "app.svg"
    with pytest.raises(FileNotFoundError, match=r"resource icons/nope.svg is missing .* reinstall"):
        resource_path("icons", "nope.svg")


def _fake_resources(base: Path) -> Path:
    (base / "icons").mkdir(parents=True)
    (base / "icons" / "ok.svg").write_text("<svg/>")
    return base


def test_resource_path_in_an_installed_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "site-packages" / "rlm_desktop"
    _fake_resources(pkg / "resources")
    monkeypatch.setattr(resources, "_PACKAGE_DIR", pkg)
    assert resource_path("icons", "ok.svg") == pkg / "resources" / "icons" / "ok.svg"


def test_resource_path_in_a_pyinstaller_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "_MEI1234"
    _fake_resources(bundle / "rlm_desktop" / "resources")
    monkeypatch.setattr(sys, "_MEIPASS", str(bundle), raising=False)
    assert resource_roots()[0] == bundle / "rlm_desktop" / "resources"
    assert icon_path("ok") == bundle / "rlm_desktop" / "resources" / "icons" / "ok.svg"


def test_missing_resource_folder_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resources, "_PACKAGE_DIR", tmp_path / "nowhere" / "rlm_desktop")
    with pytest.raises(FileNotFoundError, match="resource folder is missing .* reinstall the app"):
        resources_root()


# -- packaging -------------------------------------------------------------------------------------

def test_desktop_entry() -> None:
    path = ROOT / "packaging" / f"{APP_ID}.desktop"
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read(path, encoding="utf-8")
    e = cp["Desktop Entry"]
    assert e["Type"] == "Application" and e["Name"] == "RLM Desktop"
    assert e["Exec"] == "rlm-desktop %F"  # launchers pass the chosen files and folders
    assert e["Icon"] == APP_ID and e["Terminal"] == "false"
    assert "application/pdf" in e["MimeType"].split(";")
    assert e["Categories"].endswith(";")
    tool = shutil.which("desktop-file-validate")
    if tool:
        r = subprocess.run([tool, str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_appstream_metainfo() -> None:
    path = ROOT / "packaging" / f"{APP_ID}.metainfo.xml"
    root = ET.parse(path).getroot()
    assert root.tag == "component" and root.get("type") == "desktop-application"
    assert root.findtext("id") == APP_ID
    assert root.find("launchable").text == f"{APP_ID}.desktop"  # type: ignore[union-attr]
    assert root.findtext("name") == "RLM Desktop"
    assert root.findtext("metadata_license") == "CC0-1.0"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert root.findtext("project_license") == project["license"]
    assert root.find("description/p") is not None and len(root.findall("description/ul/li")) >= 3
    assert root.find("releases/release").get("version") == rlm_desktop.__version__  # type: ignore[union-attr]
    assert root.findtext("provides/binary") == "rlm-desktop"
    assert root.find("content_rating") is not None
    tool = shutil.which("appstreamcli")
    if tool:
        r = subprocess.run([tool, "validate", "--no-net", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_pyinstaller_spec_and_build_script_are_well_formed() -> None:
    spec = (ROOT / "packaging" / "rlm-desktop.spec").read_text(encoding="utf-8")
    compile(spec, "rlm-desktop.spec", "exec")
    # The spec puts resources where resource_roots() looks inside a bundle.
    assert '"rlm_desktop/resources"' in spec and "pyinstaller_entry.py" in spec
    r = subprocess.run(["bash", "-n", str(ROOT / "packaging" / "build.sh")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"]["rlm-desktop"] == "rlm_desktop.cli:main"


def _entry_module():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("pyinstaller_entry", ROOT / "packaging" / "pyinstaller_entry.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bundle_entry_runs_the_sandbox_worker_command_line(tmp_path: Path) -> None:
    # The sandbox host starts `sys.executable -I -S -B -c CODE ARGS`; in a bundle that is this entry.
    entry = _entry_module()
    saved = list(sys.argv)
    out = tmp_path / "ran.txt"
    try:
        code = "import sys; open(sys.argv[1], 'w').write(' '.join(sys.argv))"
        assert entry._run_as_python_c(["-I", "-S", "-B", "-c", code, str(out), "7", "8"]) is True
        assert out.read_text() == f"-c {out} 7 8"
    finally:
        sys.argv = saved
    assert entry._run_as_python_c(["run", "--docs", "x"]) is False
    assert entry._run_as_python_c(["export", "-c"]) is False
    assert entry._run_as_python_c([]) is False
