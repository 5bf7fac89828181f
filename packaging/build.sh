#!/usr/bin/env bash
# Build RLM Desktop for distribution.
#   bash packaging/build.sh                 wheel + sdist in dist/ (checked: resources inside), and
#                                           the PyInstaller bundle dist/rlm-desktop/ if PyInstaller
#                                           is installed (pip install pyinstaller), then its smoke
#                                           test (packaging/smoke_bundle.py)
#   bash packaging/build.sh install-desktop [PREFIX]
#                                           install the .desktop entry, AppStream metainfo and icon
#                                           under PREFIX/share (default: ~/.local)
set -euo pipefail
cd "$(dirname "$0")/.."

APP_ID="io.github.rlm_desktop.RLMDesktop"
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py="$(command -v python3)"

install_desktop() {
  local prefix="${1:-$HOME/.local}"
  install -Dm644 "packaging/$APP_ID.desktop" "$prefix/share/applications/$APP_ID.desktop"
  install -Dm644 "packaging/$APP_ID.metainfo.xml" "$prefix/share/metainfo/$APP_ID.metainfo.xml"
  install -Dm644 resources/icons/app.svg "$prefix/share/icons/hicolor/scalable/apps/$APP_ID.svg"
  echo "Installed the desktop entry, metainfo and icon under $prefix/share"
  if command -v update-desktop-database >/dev/null 2>&1; then
    update-desktop-database -q "$prefix/share/applications" || true
  fi
}

if [ "${1:-}" = "install-desktop" ]; then
  install_desktop "${2:-}"
  exit 0
fi
if [ $# -gt 0 ]; then
  echo "usage: bash packaging/build.sh [install-desktop [PREFIX]]" >&2
  exit 2
fi

# Stale build/lib files would end up in the wheel: start clean.
rm -rf build/lib build/bdist.*
mkdir -p dist
"$py" -m pip wheel --no-deps --disable-pip-version-check -q -w dist .
wheel="$(ls -t dist/rlm_desktop-*.whl | head -n1)"
echo "Built $wheel"

# The wheel must carry the resources the app loads at run time.
"$py" - "$wheel" <<'PY'
import sys, zipfile
from pathlib import Path
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
src = [p for p in Path("resources").rglob("*") if p.is_file()]
need = [f"rlm_desktop/resources/{p.relative_to('resources').as_posix()}" for p in src]
missing = [n for n in need if n not in names]
if missing or not need:
    sys.exit(f"wheel is missing resources: {missing or 'all of resources/'}")
icons = sum(1 for n in need if "/icons/" in n)
print(f"  resources inside: all {len(need)} files of resources/ ({icons} icons, "
      f"{len(need) - icons} sample documents)")
PY

if "$py" -m build --version >/dev/null 2>&1; then
  "$py" -m build --sdist --outdir dist . >/dev/null
  echo "Built $(ls -t dist/rlm_desktop-*.tar.gz | head -n1)"
fi

if "$py" -m PyInstaller --version >/dev/null 2>&1; then
  "$py" -m PyInstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller \
    packaging/rlm-desktop.spec
  echo "Built the bundle: dist/rlm-desktop/rlm-desktop"
  if [ -f tests/fakeserver.py ]; then
    "$py" packaging/smoke_bundle.py dist/rlm-desktop/rlm-desktop
  fi
else
  echo "PyInstaller is not installed: bundle skipped (pip install pyinstaller, then run this again)"
fi
