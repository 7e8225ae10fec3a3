#!/usr/bin/env sh
# Create .venv and install learncredits with its dev tools into it.
# Debian ships the venv module separately (python3-venv); as root we install it when missing.
set -eu
PYTHON="${PYTHON:-python3}"
VENV="${1:-.venv}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "learncredits needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
  exit 1
fi
if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
  rm -rf "$VENV"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "python venv module missing: installing Debian's python3-venv"
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    "$PYTHON" -m venv "$VENV"
  else
    echo "python's venv module is missing: install it (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[dev]'
touch "$VENV/.installed"
