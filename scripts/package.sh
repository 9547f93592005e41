#!/usr/bin/env bash
# Build dist/solar_seg_plugin-<version>.zip for QGIS's "Install from ZIP": one top folder
# solar_seg_plugin/ with the engine (core/), resources/ and metadata.txt copied in as real
# files (the symlinks of the source tree are followed), without tests or caches.
#   scripts/package.sh [DIST_DIR]
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DIST="${1:-$REPO/dist}"
VERSION="$(sed -n 's/^version=//p' "$REPO/metadata.txt")"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$DIST"
cp -rL "$REPO/solar_seg_plugin" "$STAGE/solar_seg_plugin"
find "$STAGE" \( -name __pycache__ -o -name '*.pyc' -o -name '.pytest_cache' \) -prune -exec rm -rf {} +
rm -f "$STAGE/solar_seg_plugin/resources/make_styles.py"
ZIP="$DIST/solar_seg_plugin-$VERSION.zip"
rm -f "$ZIP"
(cd "$STAGE" && zip -qr -X "$ZIP" solar_seg_plugin)
echo "package: $ZIP ($(unzip -l "$ZIP" | tail -n1 | awk '{print $2}') files)"
