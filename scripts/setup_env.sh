#!/usr/bin/env bash
# Create or reuse the project's virtual environment at .venv/ (idempotent).
# Used by scripts/demo.sh and scripts/test.sh; safe to run on a fresh Debian machine
# with Python 3.11 and access to the Debian and PyPI registries only.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# 1. Debian libraries VTK loads at run time for off-screen rendering (EGL with Mesa's
#    software OpenGL): the report PNGs and plots are rendered through VTK.
DEB_PACKAGES="libegl1 libgl1 libxrender1 libx11-6 libegl-mesa0 libgl1-mesa-dri libgomp1"
# The browser of the review app's tests (Playwright drives this Chromium; it never downloads one).
DEB_PACKAGES="$DEB_PACKAGES chromium"
if command -v dpkg >/dev/null 2>&1; then
  missing=""
  for p in $DEB_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    echo "[setup] installing Debian packages:$missing"
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
  fi
fi

# 2. The virtual environment.
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  if ! "$PYTHON" -m venv .venv; then
    # Debian splits venv/ensurepip into its own package
    rm -rf .venv
    SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
    "$PYTHON" -m venv .venv
  fi
fi

# 3. Packages, pinned by constraints.txt (torch==2.13.0 is the local CPU wheel: a
#    bare 'torch' would pull several GB of CUDA). Re-installed only when the inputs change.
stamp=$(cat constraints.txt pyproject.toml mskquant/requirements.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.mskquant-stamp 2>/dev/null)" != "$stamp" ]; then
  echo "[setup] installing Python packages into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade "pip>=23" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -c constraints.txt "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[headless,test,batch,review]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import torch, slicer, SimpleITK, scipy, numpy, vtk, distributed" \
    || { echo "[setup] the environment is incomplete: see the pip output above" >&2; exit 1; }
  .venv/bin/python -c "import trame_slicer, playwright" \
    || { echo "[setup] the review extra (trame-slicer, Playwright) is missing: see the pip output above" >&2; exit 1; }
  echo "$stamp" > .venv/.mskquant-stamp
fi
