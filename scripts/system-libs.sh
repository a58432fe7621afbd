#!/usr/bin/env bash
# Installs, where missing, the Debian/Ubuntu libraries Qt needs.
#   scripts/system-libs.sh offscreen   # enough for tests (QT_QPA_PLATFORM=offscreen)
#   scripts/system-libs.sh window      # also what a real X11 window (xcb) needs
#   scripts/system-libs.sh bench       # Kannel, which `make bench` measures the lab against
set -euo pipefail
mode=${1:-offscreen}
libs=(libgl1 libegl1 libx11-6 libdbus-1-3 libfontconfig1 libfreetype6 libglib2.0-0 libxkbcommon0 fonts-dejavu-core)
if [ "$mode" = window ]; then
  libs+=(libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-render-util0 libxcb-render0
         libxcb-shape0 libxcb-util1 libxcb-xkb1 libxkbcommon-x11-0
         fonts-noto-color-emoji)   # people type emoji into the phones
fi
[ "$mode" = bench ] && libs=(kannel)
command -v dpkg-query >/dev/null || { echo "system-libs: not a Debian/Ubuntu system; install Qt's runtime libraries yourself" >&2; exit 0; }
missing=()
for lib in "${libs[@]}"; do
  dpkg-query -W -f='${Status}' "$lib" 2>/dev/null | grep -q "install ok installed" || missing+=("$lib")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "system-libs: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null; then sudo=(sudo); else
  echo "system-libs: need root to install: apt-get install ${missing[*]}" >&2; exit 1; fi
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
