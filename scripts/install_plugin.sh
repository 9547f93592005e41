#!/usr/bin/env bash
# Link the plugin folder into a QGIS profile and enable it.
#   scripts/install_plugin.sh [PROFILE_DIR]
# PROFILE_DIR is a QGIS profile folder (the one holding QGIS/QGIS3.ini), by default
# ~/.local/share/QGIS/QGIS3/profiles/default. The link points at this checkout, so edits
# show up after "Reload plugin"; the engine comes along through the plugin's own
# core -> ../core link, and no bare top-level "core" lands on QGIS's sys.path.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PROFILE="${1:-$HOME/.local/share/QGIS/QGIS3/profiles/default}"
PLUGINS="$PROFILE/python/plugins"
mkdir -p "$PLUGINS" "$PROFILE/QGIS"
if [ -e "$PLUGINS/solar_seg_plugin" ] && [ ! -L "$PLUGINS/solar_seg_plugin" ]; then
  echo "install: $PLUGINS/solar_seg_plugin exists and is not a link; remove it first" >&2
  exit 1
fi
ln -sfn "$REPO/solar_seg_plugin" "$PLUGINS/solar_seg_plugin"
# Enable it (QSettings keeps QGIS3.ini's own format intact).
/usr/bin/python3 - "$PROFILE/QGIS/QGIS3.ini" <<'PY'
import sys
from qgis.PyQt.QtCore import QSettings
s = QSettings(sys.argv[1], QSettings.IniFormat)
s.setValue("PythonPlugins/solar_seg_plugin", True)
s.setValue("qgis/showTips322", False)
s.sync()
PY
echo "install: solar_seg_plugin -> $PLUGINS (enabled in $PROFILE/QGIS/QGIS3.ini)"
