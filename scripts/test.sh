#!/usr/bin/env bash
# Install everything the test suite needs and run the whole suite headless (Xvfb).
#
#   bash scripts/test.sh [pytest arguments]
#   SLIDESEG_TEST_TORCH=1 bash scripts/test.sh    # also test TorchScript models (installs torch)
#
# System libraries for Qt under Xvfb are installed with apt-get when run as root;
# otherwise the script says which ones to install and stops. Python packages go into
# ./.venv (created with $PYTHON, default python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then PYTHON=$candidate; break; fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "test.sh: no Python found; install Python 3.11 (or set PYTHON=/path/to/python)" >&2
  exit 1
fi

SYSTEM_PACKAGES="xvfb xauth libgl1 libegl1 libglib2.0-0 libfontconfig1 libdbus-1-3 \
libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0 \
libxcb-shape0 libxcb-cursor0"
LDCONFIG=$(command -v ldconfig || echo /sbin/ldconfig)
missing=()
command -v Xvfb >/dev/null 2>&1 || missing+=(Xvfb)
for lib in libGL.so.1 libEGL.so.1 libglib-2.0.so.0 libfontconfig.so.1 libdbus-1.so.3 \
           libxkbcommon-x11.so.0 libxcb-icccm.so.4 libxcb-image.so.0 libxcb-keysyms.so.1 \
           libxcb-render-util.so.0 libxcb-shape.so.0 libxcb-cursor.so.0; do
  "$LDCONFIG" -p 2>/dev/null | grep -q "$lib" || missing+=("$lib")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing system libraries for headless Qt: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      $SYSTEM_PACKAGES >/dev/null
  else
    echo "test.sh: missing system libraries for headless Qt: ${missing[*]}" >&2
    echo "Install them (as root), then run this script again:" >&2
    echo "  sudo apt-get install -y --no-install-recommends $SYSTEM_PACKAGES" >&2
    exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[testing]"
# TorchScript models are tested when torch is installed; it is large, so only on request
# (SLIDESEG_TEST_TORCH=1 installs torch==${SLIDESEG_TORCH_VERSION:-2.13.0}, CPU build where
# pip finds one). Without it those tests are skipped.
if [ "${SLIDESEG_TEST_TORCH:-0}" = "1" ]; then
  .venv/bin/python -m pip install --quiet "torch==${SLIDESEG_TORCH_VERSION:-2.13.0}"
fi
exec .venv/bin/python -m pytest "$@"
