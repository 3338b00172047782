#!/bin/sh
# Copies the console's browser libraries from web/node_modules (installed by `npm ci` from the pinned
# package-lock.json) into relay/api/static/vendor, with their licence notices. Run by `make assets`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../relay/api/static/vendor"
mods="$here/node_modules"
rm -rf "$out"
mkdir -p "$out/leaflet/images" "$out/uplot"
cp "$mods/leaflet/dist/leaflet.js" "$mods/leaflet/dist/leaflet.css" "$mods/leaflet/LICENSE" "$out/leaflet/"
cp "$mods/leaflet/dist/images/"*.png "$out/leaflet/images/"
cp "$mods/uplot/dist/uPlot.iife.min.js" "$mods/uplot/dist/uPlot.min.css" "$mods/uplot/LICENSE" "$out/uplot/"
echo "vendored leaflet $(node -p "require('$mods/leaflet/package.json').version") and uplot $(node -p "require('$mods/uplot/package.json').version") into $out"
