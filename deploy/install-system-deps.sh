#!/usr/bin/env bash
# Installs the Debian packages the test suite drives as real peers, when they are missing:
# SIPp and sipsak (SIP clients), Chromium (dashboard and WebRTC), Xvfb (Kivy), xclip (Kivy clipboard),
# strace (the journal test counts its fsyncs), systemd-analyze (checks the shipped unit file),
# gpsd and gpsfake (the app's position from a replayed NMEA log), zbar (libzbar0: the app scans QR codes),
# postgresql (the command post's shared journal; the tests run their own server with initdb),
# npm (builds the console's vendored Leaflet and uPlot; Node.js comes with it).
set -euo pipefail
want=(sip-tester:sipp sipsak:sipsak chromium:chromium xvfb:xvfb-run xclip:xclip iproute2:ip strace:strace systemd:systemd-analyze gpsd:gpsd gpsd-clients:gpsfake zbar-tools:zbarimg postgresql:pg_ctlcluster npm:npm coturn:turnserver)
missing=()
for pair in "${want[@]}"; do
  pkg=${pair%%:*} cmd=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
