#!/usr/bin/env bash
# Start the real QGIS desktop with SolarSeg installed into a project-local profile
# (.qgis-profile/profiles/default) and a project holding the 25 Austria Sentinel-2 chips
# (a group), the OpenStreetMap plant polygons and the Haiti scene, opened on one chip
# (scripts/make_project.py). Under Xvfb when there is no display (then QGIS runs until
# stopped, like a headless desktop would).
#   scripts/run_qgis.sh [extra qgis arguments...]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PROFILES="${SOLARSEG_PROFILES:-$REPO/.qgis-profile}"
bash "$REPO/scripts/install_plugin.sh" "$PROFILES/profiles/default" >/dev/null
SITE="$(ls -d "$REPO"/.venv/lib/python3*/site-packages | head -n1)"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
# The engine's own Python (training and segmentation run there, in a subprocess).
export SOLARSEG_ENGINE_PYTHON="$REPO/.venv/bin/python"
unset QT_QPA_PLATFORM
DATA="$REPO/../shared/data"
SCENE="$DATA/scenes/rgbn_haiti_5m.tif"
ARGS=(--nologo --noversioncheck --profiles-path "$PROFILES")
if [ $# -eq 0 ]; then
  PROJECT="$PROFILES/solarseg-demo.qgs"
  if [ -d "$DATA/austria-pv" ] && EXTENT="$(QT_QPA_PLATFORM=offscreen "$REPO/.venv/bin/python" \
      "$REPO/scripts/make_project.py" "$PROJECT" "$DATA" 2>/dev/null | tail -n1)"; then
    ARGS+=(--project "$PROJECT")
    [ -n "$EXTENT" ] && ARGS+=(--extent "$EXTENT")
  elif [ -f "$SCENE" ]; then
    ARGS+=("$SCENE")
  fi
fi
echo "run: QGIS with SolarSeg (profile $PROFILES/profiles/default); Raster > SolarSeg"
if [ -n "${DISPLAY:-}" ]; then
  exec qgis "${ARGS[@]}" "$@"
fi
echo "run: no DISPLAY, starting under Xvfb (stop with Ctrl+C)"
exec xvfb-run -a -s "-screen 0 1280x900x24" qgis "${ARGS[@]}" "$@"
