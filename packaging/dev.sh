#!/usr/bin/env bash
# One entry point for a fresh machine: installs what RLM Desktop needs, then starts the app or
# runs the tests.   bash packaging/dev.sh start [PATH...]   |   bash packaging/dev.sh test [PYTEST ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-start}"; shift || true

# System libraries: Qt's xcb/offscreen plugins, a Secret Service for the keyring, Xvfb for
# screenshots, util-linux's unshare for the confined sandbox attack suite.
sys_pkgs=(libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0
          libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 libxcb-randr0
          libxcb-render-util0 libxcb-image0 libxcb-xkb1 fonts-dejavu-core
          dbus dbus-x11 gnome-keyring xvfb xauth util-linux python3-venv)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${sys_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing system packages: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
case "$mode" in
  start)
    .venv/bin/python -m pip install -q --disable-pip-version-check .
    exec .venv/bin/rlm-desktop "$@"
    ;;
  test)
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    export QT_QPA_PLATFORM=offscreen
    # A private session bus, so the keyring tests reach a real gnome-keyring Secret Service.
    if command -v dbus-run-session >/dev/null 2>&1; then
      exec dbus-run-session -- .venv/bin/python -m pytest "$@"
    fi
    exec .venv/bin/python -m pytest "$@"
    ;;
  *)
    echo "usage: bash packaging/dev.sh start [PATH...] | test [PYTEST ARGS...]" >&2
    exit 2
    ;;
esac
