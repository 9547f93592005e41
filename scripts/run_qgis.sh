#!/usr/bin/env bash
# Start the real QGIS desktop with SolarSeg installed into a project-local profile
# (.qgis-profile/profiles/default) and the Haiti scene loaded. Under Xvfb when there is
# no display (then QGIS runs until stopped, like a headless desktop would).
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
SCENE="$REPO/../shared/data/scenes/rgbn_haiti_5m.tif"
ARGS=(--nologo --noversioncheck --profiles-path "$PROFILES")
[ -f "$SCENE" ] && [ $# -eq 0 ] && ARGS+=("$SCENE")
echo "run: QGIS with SolarSeg (profile $PROFILES/profiles/default); Raster > SolarSeg"
if [ -n "${DISPLAY:-}" ]; then
  exec qgis "${ARGS[@]}" "$@"
fi
echo "run: no DISPLAY, starting under Xvfb (stop with Ctrl+C)"
exec xvfb-run -a -s "-screen 0 1280x900x24" qgis "${ARGS[@]}" "$@"
