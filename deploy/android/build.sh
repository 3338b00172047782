#!/usr/bin/env bash
# Stage the app and build the APK with buildozer. Needs the Android SDK and NDK (buildozer fetches
# them on first use, several GB, which this project's build machine cannot download).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
rm -rf "$here/app" && mkdir -p "$here/app"
for package in relay crypto ng112 analytics_edge mobile; do
  cp -r "$root/$package" "$here/app/"
done
cp "$here/main.py" "$here/app/main.py"
cd "$here" && buildozer android debug
