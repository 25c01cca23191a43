#!/usr/bin/env bash
# Installs the system packages the test suite talks to: Mosquitto's CLI clients (tests), the
# Mosquitto broker (benchmark reference), socat (serial ptys), redis-server (uplink tests), openssl
# (the TLS tests make their CA and certificates with it), systemd (systemd-analyze verify of the
# unit in the installer test; nothing is started), and for
# scripts/arm64-smoke.sh (run last by `npm test`): debootstrap, qemu-user-static, the aarch64
# cross compiler, the Debian archive keyring, file.
# Debian/Ubuntu/Raspberry Pi OS; needs root (or sudo). Safe to run again.
set -euo pipefail
packages=(mosquitto mosquitto-clients socat redis-server openssl systemd debootstrap qemu-user-static g++-aarch64-linux-gnu debian-archive-keyring file wget)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "test dependencies already installed: ${packages[*]}"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The Debian package starts system-wide services on install; the tests start their own on free
# ports, so stop these (by unit, not by process name) to keep port 1883 and 6379 free.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now mosquitto redis-server 2>/dev/null || true
fi
