#!/usr/bin/env bash
# One entry point for a fresh machine: installs what RLM Desktop needs, then starts the app or
# runs the tests.   bash packaging/dev.sh start [PATH...]   |   bash packaging/dev.sh test [PYTEST ARGS...]
#
# Two environments, so that running the tests never changes the files of an app that is open:
#   .venv       the app: a regular install of this checkout (what `start` runs)
#   .venv-test  the tests: an editable install with the test extras (what `test` runs)
# Each is installed only when what it depends on changed (packaging/install_state.py keeps a
# fingerprint in the environment), so both commands work offline once installed.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-start}"; shift || true
case "$mode" in
  start|test) ;;
  *)
    echo "usage: bash packaging/dev.sh start [PATH...] | test [PYTEST ARGS...]" >&2
    exit 2
    ;;
esac

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

# install VENV MODE PIP-ARGS...: create VENV if needed; run pip only when the install is not current.
install() {
  local venv="$1" imode="$2"; shift 2
  local fresh=0
  if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
    fresh=1
  fi
  if "$venv/bin/python" packaging/install_state.py check "$venv" "$imode"; then
    return 0
  fi
  echo "Installing RLM Desktop into $venv ($imode)…" >&2
  if [ "$fresh" -eq 1 ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" || return 1
  "$venv/bin/python" packaging/install_state.py record "$venv" "$imode"
}

case "$mode" in
  start)
    if ! install .venv app .; then
      if [ -x .venv/bin/rlm-desktop ]; then
        echo "Could not update the installed app (is the package index reachable?); starting the" \
             "version installed before." >&2
      else
        echo "Could not install RLM Desktop: see pip's message above (the first install needs the" \
             "package index)." >&2
        exit 1
      fi
    fi
    exec .venv/bin/rlm-desktop "$@"
    ;;
  test)
    install .venv-test test -e '.[test]'
    export QT_QPA_PLATFORM=offscreen
    # A private session bus, so the keyring tests reach a real gnome-keyring Secret Service.
    if command -v dbus-run-session >/dev/null 2>&1; then
      exec dbus-run-session -- .venv-test/bin/python -m pytest "$@"
    fi
    exec .venv-test/bin/python -m pytest "$@"
    ;;
esac
