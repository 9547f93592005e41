#!/usr/bin/env bash
# Installs what SolarSeg needs on Debian 12: QGIS 3.22 + PyQGIS, GDAL/rasterio, Xvfb,
# and a project venv (.venv) on Debian's own python3. Idempotent: a second run only
# checks and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qgis python3-qgis qgis-providers qgis-plugin-grass- python3-rasterio python3-venv
              python3-yaml xvfb xauth imagemagick)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  [[ "$p" == *- ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q -r requirements.txt
  # triton comes with the CUDA torch build and crashes window-backed QGIS (signal 11
  # in libtriton.so). Nothing in SolarSeg needs it.
  .venv/bin/python -m pip uninstall -q -y triton 2>/dev/null || true
  echo "$want" > "$stamp"
fi
.venv/bin/python - <<'PY'
import importlib.util, sys
import numpy
assert numpy.__version__.split(".")[0] == "1", f"numpy {numpy.__version__} must be < 2"
assert importlib.util.find_spec("triton") is None, "triton must not be installed"
PY
echo "setup: ok"
