#!/usr/bin/env bash
# Installs edgeway from this checkout as a systemd service (Raspberry Pi OS, Debian, Ubuntu;
# arm64, armhf, x86-64). Run it again to upgrade: it is idempotent, and it never overwrites
# /etc/edgeway/edgeway.yaml. `install.sh --help` for the options.
#
#   /opt/edgeway                      the compiled application + production dependencies (root-owned)
#   /usr/local/bin/edgeway            wrapper: MALLOC_ARENA_MAX=2 node --max-semi-space-size=2 …/dist/gateway/main.js
#                                     (under systemd through …/libexec/notify-exec.pl, for Type=notify)
#   /etc/edgeway/edgeway.yaml         configuration, from config/edgeway.example.yaml (root:edgeway 0640)
#   /var/lib/edgeway                  state: the SQLite database (edgeway:edgeway 0750)
#   /etc/systemd/system/edgeway.service   scripts/edgeway.service
#
# With --root DIR everything is staged under DIR and nothing on the running system changes: no
# user is created, no package installed, no systemctl called. Those commands are appended to
# DIR/.edgeway-install.log instead (what test/integration/install.test.ts checks).
set -euo pipefail
umask 022

readonly EX_USAGE=64 EX_UNAVAILABLE=69 EX_NOPERM=77
readonly NODE_MIN_MAJOR=20
readonly SERVICE=edgeway
readonly APP_DIR=/opt/edgeway
readonly CONF_DIR=/etc/edgeway
readonly STATE_DIR=/var/lib/edgeway
readonly UNIT_PATH=/etc/systemd/system/edgeway.service
readonly WRAPPER_PATH=/usr/local/bin/edgeway

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly SRC
ROOT=""        # empty: the live system
DIST=""        # a prebuilt tsc outDir (--dist); empty: build the checkout
MODE=install
PURGE=0
ORIG_ARGS=("$@")
TMP_FILES=()
TMP_DIRS=()
trap 'rm -f "${TMP_FILES[@]}"; rm -rf "${TMP_DIRS[@]}"' EXIT

usage() {
  cat <<EOF
Usage: sudo scripts/install.sh [--root DIR] [--dist DIR]
       sudo scripts/install.sh --uninstall [--purge] [--root DIR]

Installs edgeway from this checkout as the systemd service "edgeway": builds it (npm ci + npm run
build, skipped while dist/ is up to date), installs it to /opt/edgeway with production
dependencies only, creates the system user "edgeway" (group dialout, for serial ports), writes
/etc/edgeway/edgeway.yaml from config/edgeway.example.yaml unless it exists, installs
/usr/local/bin/edgeway and the unit, then enables and starts the service. Safe to run again (an
upgrade restarts the service); the configuration is never overwritten.

Options:
  --root DIR     stage everything under DIR instead of /; creates no user, installs no package
                 and calls no systemctl: those commands are recorded in DIR/.edgeway-install.log
  --dist DIR     install this already compiled output (a "tsc --outDir DIR" of this checkout,
                 holding gateway/, adapters/, config/) instead of building the checkout
  --uninstall    stop and disable the service; remove the unit, the wrapper and /opt/edgeway.
                 Keeps /etc/edgeway and /var/lib/edgeway (configuration and data)
  --purge        with --uninstall: also remove /etc/edgeway, /var/lib/edgeway and the user
  -h, --help     show this help

Exit codes: 0 done, 1 failed, 64 bad usage, 69 Node.js missing or too old, 77 not root.
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() {
  local code=$1
  shift
  printf 'install.sh: %s\n' "$*" >&2
  exit "$code"
}
usage_error() {
  printf 'install.sh: %s\n\n' "$1" >&2
  usage >&2
  exit "$EX_USAGE"
}

# Runs a command that changes the live system (users, packages, services). Under --root it is
# only recorded, one shell-quoted line per command, in $ROOT/.edgeway-install.log.
system() {
  if [ -n "$ROOT" ]; then
    local line
    line=$(printf '%q ' "$@")
    printf '%s\n' "${line% }" >>"$ROOT/.edgeway-install.log"
    return 0
  fi
  "$@"
}

# ---------------------------------------------------------------------------------------------
# Node.js

node_help() {
  local arch
  arch=$(uname -m)
  cat >&2 <<EOF
install.sh: edgeway needs Node.js $NODE_MIN_MAJOR or newer, with npm: $1.

Raspberry Pi OS / Debian / Ubuntu, 64-bit (arm64, x86-64) — NodeSource's packages:
    curl -fsSL https://deb.nodesource.com/setup_22.x -o nodesource_setup.sh
    sudo bash nodesource_setup.sh
    sudo apt-get install -y nodejs
or the distribution's own package where it is new enough (Debian 13 "trixie" ships Node.js 20;
Debian 12 / Raspberry Pi OS bookworm and Ubuntu 24.04 ship 18, which is too old):
    sudo apt-get install -y nodejs npm
EOF
  case $arch in
    armv7l | armhf)
      cat >&2 <<EOF
32-bit ARM (armv7l, this machine): Node.js 22 is the last line with official 32-bit ARM builds;
unpack node-v22.*-linux-armv7l.tar.xz from https://nodejs.org/dist/latest-v22.x/ into /usr/local:
    sudo tar -xJf node-v22.*-linux-armv7l.tar.xz -C /usr/local --strip-components=1
EOF
      ;;
    armv6l)
      cat >&2 <<EOF
armv6l (Raspberry Pi Zero / 1, this machine): there are no official Node.js $NODE_MIN_MAJOR+ builds;
https://unofficial-builds.nodejs.org/ has armv6l tarballs (unpack into /usr/local).
EOF
      ;;
  esac
  printf '%s\n' "Then run this script again." >&2
  exit "$EX_UNAVAILABLE"
}

NODE=""
check_node() {
  NODE=$(command -v node || true)
  [ -n "$NODE" ] || node_help "node was not found in PATH"
  local version major
  version=$("$NODE" -p 'process.versions.node' 2>/dev/null || true)
  major=${version%%.*}
  if ! [[ $major =~ ^[0-9]+$ ]] || [ "$major" -lt "$NODE_MIN_MAJOR" ]; then
    node_help "found Node.js ${version:-(unknown version)} at $NODE"
  fi
  command -v npm >/dev/null || node_help "npm was not found in PATH (Debian/Ubuntu: package npm; NodeSource's nodejs includes it)"
  # The service runs with ProtectHome=yes: a node under /home or /root (nvm, a user-local
  # tarball) is invisible to it.
  case $NODE in
    /home/* | /root/* | /run/user/*)
      local msg="node is at $NODE, which the service cannot see (ProtectHome=yes): install Node.js system-wide (see --help of NodeSource, or /usr/local)"
      if [ -n "$ROOT" ]; then warn "$msg"; else die 1 "$msg"; fi
      ;;
  esac
  say "Node.js $version ($NODE), npm $(npm --version), $(uname -m)"
}

# perl runs scripts/notify-exec.pl, through which the unit's Type=notify start hands the gateway a
# socket to systemd (Node cannot open one). perl-base is Essential on Debian, Ubuntu and Raspberry
# Pi OS, Socket and Fcntl included: there is nothing to install, only a broken system lacks it.
PERL=""
check_perl() {
  # /usr/bin/perl first: a perl under /home (perlbrew) would be invisible to the service.
  PERL=/usr/bin/perl
  [ -x "$PERL" ] || PERL=$(command -v perl || true)
  if [ -z "$PERL" ] || ! "$PERL" -MSocket -MFcntl -e 1 2>/dev/null; then
    die 1 "perl with its Socket and Fcntl modules is needed (Debian package perl-base, part of every Debian and Raspberry Pi OS): the service reports its readiness to systemd through it"
  fi
}

# ---------------------------------------------------------------------------------------------
# Building the checkout, installing dependencies

# Runs a build step in the checkout as the checkout's owner, so `sudo scripts/install.sh` from a
# checkout in a home folder leaves no root-owned node_modules/ or dist/ behind.
as_owner() {
  local owner
  owner=$(stat -c %U "$SRC")
  if [ "$(id -u)" -eq 0 ] && [ "$owner" != root ] && [ "$owner" != UNKNOWN ] && command -v runuser >/dev/null; then
    runuser -u "$owner" -- env "PATH=$PATH" "$@"
  else
    "$@"
  fi
}

direct() { "$@"; }

# `npm ci ARGS` in DIR, run through RUNNER (direct or as_owner), with the fallback for native
# modules: better-sqlite3 downloads a prebuilt binary at install time, or compiles itself with
# node-gyp when none can be had (no build for this Node ABI / architecture, no network). Only
# when that compile fails are build-essential and python3 installed, and npm ci retried once.
npm_ci() {
  local dir=$1 runner=$2
  shift 2
  local log
  log=$(mktemp)
  TMP_FILES+=("$log")
  if (cd "$dir" && "$runner" npm ci --no-audit --no-fund "$@") 2>&1 | tee "$log"; then
    return 0
  fi
  grep -q 'gyp ERR!' "$log" || die 1 "npm ci failed in $dir (output above)"
  say "a native module (better-sqlite3) had to be compiled and could not be: installing build-essential and python3, then trying once more"
  if [ -z "$ROOT" ] && ! command -v apt-get >/dev/null; then
    die 1 "no apt-get here: install a C++ compiler, make and python3, then run this script again"
  fi
  system apt-get update -qq
  system env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends build-essential python3
  (cd "$dir" && "$runner" npm ci --no-audit --no-fund "$@") ||
    die 1 "npm ci failed again in $dir after installing build-essential and python3 (output above)"
}

# dist/ is up to date when the stamp of the last successful build by this script is newer than
# every input of the shipped code. The stamp is taken before the build starts, so a source
# edited during a build makes the next run build again.
build_checkout() {
  local stamp=$SRC/dist/.edgeway-install-build
  local inputs=("$SRC/gateway" "$SRC/adapters" "$SRC/config" "$SRC/package.json" "$SRC/package-lock.json" "$SRC/tsconfig.json")
  if [ -f "$stamp" ] && [ -z "$(find "${inputs[@]}" -newer "$stamp" -print -quit)" ]; then
    say "dist/ is up to date"
    return
  fi
  local started
  started=$(mktemp)
  TMP_FILES+=("$started")
  # node_modules/.package-lock.json is npm's record of what is installed: when the lock file is
  # not newer, `npm ci` would install the same again.
  if [ ! -f "$SRC/node_modules/.package-lock.json" ] || [ "$SRC/package-lock.json" -nt "$SRC/node_modules/.package-lock.json" ]; then
    say "installing the build dependencies in $SRC (npm ci)"
    npm_ci "$SRC" as_owner
  fi
  say "building (npm run build)"
  (cd "$SRC" && as_owner npm run build)
  as_owner touch -r "$started" "$stamp"
}

# ---------------------------------------------------------------------------------------------
# Install

CHANGED=0

install_app() {
  local app=$ROOT$APP_DIR new=$ROOT/opt/.edgeway.new old=$ROOT/opt/.edgeway.old
  # A run interrupted between the two renames below left only the old tree.
  if [ ! -e "$app" ] && [ -d "$old" ]; then mv "$old" "$app"; fi
  rm -rf "$new" "$old"
  TMP_DIRS+=("$new")
  mkdir -p "$new/dist" "$new/config"
  local part
  for part in gateway adapters config; do
    [ -d "$DIST/$part" ] || die 1 "$DIST/$part is missing: not a complete build"
    cp -R "$DIST/$part" "$new/dist/$part"
  done
  # Source maps point at TypeScript sources that are not installed.
  find "$new/dist" -name '*.map' -delete
  cp "$SRC"/config/*.yaml "$new/config/"
  mkdir -p "$new/libexec"
  cp "$SRC/scripts/notify-exec.pl" "$new/libexec/"
  cp "$SRC/package.json" "$SRC/package-lock.json" "$new/"
  chmod -R u=rwX,go=rX "$new"

  # Production dependencies are reinstalled only when the lock file, the Node ABI or the
  # architecture changed (a Node upgrade needs a rebuilt better-sqlite3); otherwise the current
  # ones are hard-linked into the new tree.
  local deps_id
  deps_id="lock=$(sha256sum <"$SRC/package-lock.json" | cut -d' ' -f1) abi=$("$NODE" -p 'process.versions.modules') arch=$("$NODE" -p 'process.arch')"
  if [ -d "$app/node_modules" ] && [ -f "$app/.deps-id" ] && [ "$(cat "$app/.deps-id")" = "$deps_id" ]; then
    if ! cp -al "$app/node_modules" "$new/node_modules" 2>/dev/null; then
      rm -rf "$new/node_modules"
      cp -a "$app/node_modules" "$new/node_modules"
    fi
  else
    say "installing production dependencies into $APP_DIR (npm ci --omit=dev)"
    npm_ci "$new" direct --omit=dev --prefer-offline
    # A compiled better-sqlite3 leaves its objects and static library behind (about 15 MB on
    # the SD card); only build/Release/better_sqlite3.node is loaded.
    local release=$new/node_modules/better-sqlite3/build/Release
    rm -rf "$release/obj" "$release/obj.target" "$release/.deps" "$release/sqlite3.a" "$release/test_extension.node" \
      "$new/node_modules/better-sqlite3/build/deps"
  fi
  printf '%s\n' "$deps_id" >"$new/.deps-id"

  if [ -d "$app" ] && diff -rq -x node_modules "$app" "$new" >/dev/null 2>&1; then
    rm -rf "$new"
    say "$APP_DIR is up to date"
    return
  fi
  if [ -e "$app" ]; then mv "$app" "$old"; fi
  mv "$new" "$app"
  rm -rf "$old"
  CHANGED=1
  say "installed $APP_DIR ($(du -sh "$app" | cut -f1))"
}

ensure_user() {
  local nologin
  nologin=$(command -v nologin || echo /usr/sbin/nologin)
  local useradd=(useradd --system --user-group --groups dialout --home-dir "$STATE_DIR" --no-create-home --shell "$nologin" --comment "edgeway gateway" "$SERVICE")
  if [ -n "$ROOT" ]; then
    system "${useradd[@]}"
    return
  fi
  getent group dialout >/dev/null || groupadd --system dialout
  if ! getent passwd "$SERVICE" >/dev/null; then
    "${useradd[@]}"
    say "created system user $SERVICE (groups: $SERVICE, dialout)"
  elif ! id -nG "$SERVICE" | tr ' ' '\n' | grep -qx dialout; then
    usermod -a -G dialout "$SERVICE"
    say "added user $SERVICE to group dialout"
  fi
}

# Writes $1 with the content of stdin and mode $2 unless it already has exactly that content
# and mode; sets CHANGED when it wrote.
put_file() {
  local dest=$1 mode=$2 tmp
  tmp=$(mktemp "$dest.XXXXXX")
  TMP_FILES+=("$tmp")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  if [ -f "$dest" ] && cmp -s "$tmp" "$dest" && [ "$(stat -c %a "$dest")" = "${mode#0}" ]; then
    rm -f "$tmp"
    return
  fi
  mv -f "$tmp" "$dest"
  CHANGED=1
}

write_config() {
  local dir=$ROOT$CONF_DIR conf=$ROOT$CONF_DIR/edgeway.yaml
  mkdir -p "$dir"
  chmod 0750 "$dir"
  system chgrp "$SERVICE" "$CONF_DIR"
  if [ -e "$conf" ]; then
    say "kept $CONF_DIR/edgeway.yaml (never overwritten; the current example is $APP_DIR/config/edgeway.example.yaml)"
    return
  fi
  local tmp
  tmp=$(mktemp "$conf.XXXXXX")
  TMP_FILES+=("$tmp")
  {
    printf '# %s — written by scripts/install.sh from config/edgeway.example.yaml (storage.path\n' "$CONF_DIR/edgeway.yaml"
    printf '# set to %s/edgeway.db); never overwritten. After editing: sudo systemctl restart %s\n' "$STATE_DIR" "$SERVICE"
    # The database goes to the service's StateDirectory= (writable under ProtectSystem=strict).
    sed '/^storage:/,/^[^ #]/ s#^  path: \./data/edgeway\.db#  path: /var/lib/edgeway/edgeway.db#' "$SRC/config/edgeway.example.yaml"
  } >"$tmp"
  grep -q '^  path: /var/lib/edgeway/edgeway\.db' "$tmp" ||
    die 1 "config/edgeway.example.yaml has no '  path: ./data/edgeway.db' line under 'storage:' to point at $STATE_DIR"
  chmod 0640 "$tmp"
  # -n: a file that appeared meanwhile still wins.
  mv -n "$tmp" "$conf"
  system chgrp "$SERVICE" "$CONF_DIR/edgeway.yaml"
  say "wrote $CONF_DIR/edgeway.yaml (storage.path: $STATE_DIR/edgeway.db)"
}

write_wrapper() {
  mkdir -p "$(dirname "$ROOT$WRAPPER_PATH")"
  put_file "$ROOT$WRAPPER_PATH" 0755 <<EOF
#!/bin/sh
# edgeway — written by scripts/install.sh: runs the gateway installed in $APP_DIR with the Node.js
# the installer checked. --max-semi-space-size=2: a 2 MB young generation instead of V8's up to
# 16 MB per semi-space (gateway/main.ts): a Pi has more CPU to spare than memory.
# EDGEWAY_HOME points at another copy of the application (a tree staged by install.sh --root).
# MALLOC_ARENA_MAX=2: glibc otherwise gives each thread that calls malloc (libuv's pool, V8's
# workers) an arena of its own, ~0.9 MB of idle RSS (scripts/bench/footprint.ts); a value already
# in the environment (a systemd drop-in's Environment=) wins.
export MALLOC_ARENA_MAX="\${MALLOC_ARENA_MAX:-2}"
set -- "$NODE" --max-semi-space-size=2 "\${EDGEWAY_HOME:-$APP_DIR}/dist/gateway/main.js" "\$@"
# Under systemd's Type=notify (NOTIFY_SOCKET set), notify-exec.pl connects a socket to systemd for
# the gateway and exec()s it: the same process, which can then report readiness (edgeway.service).
if [ -n "\${NOTIFY_SOCKET:-}" ]; then
  exec "$PERL" "\${EDGEWAY_HOME:-$APP_DIR}/libexec/notify-exec.pl" "\$@"
fi
exec "\$@"
EOF
}

do_install() {
  check_node
  check_perl
  if [ -n "$DIST" ]; then
    [ -f "$DIST/gateway/main.js" ] || usage_error "--dist $DIST: no gateway/main.js there (expected a tsc --outDir of this checkout)"
    DIST=$(cd "$DIST" && pwd -P)
  else
    build_checkout
    DIST=$SRC/dist
  fi
  install_app
  ensure_user
  write_config
  mkdir -p "$ROOT$STATE_DIR"
  chmod 0750 "$ROOT$STATE_DIR"
  system chown "$SERVICE:$SERVICE" "$STATE_DIR"
  write_wrapper
  mkdir -p "$(dirname "$ROOT$UNIT_PATH")"
  put_file "$ROOT$UNIT_PATH" 0644 <"$SRC/scripts/edgeway.service"

  if [ -z "$ROOT" ] && ! command -v systemctl >/dev/null; then
    warn "no systemctl here: the unit is installed in $UNIT_PATH but not enabled"
    return
  fi
  if [ -z "$ROOT" ] && [ ! -d /run/systemd/system ]; then
    # A chroot or container image: enable for the next boot, nothing to start now.
    systemctl enable "$SERVICE"
    say "systemd is not running here: $SERVICE is enabled and starts at the next boot"
    return
  fi
  system systemctl daemon-reload
  # An upgrade: a running gateway keeps the old code until restarted (no-op when stopped).
  if [ "$CHANGED" -eq 1 ]; then system systemctl try-restart "$SERVICE"; fi
  system systemctl enable --now "$SERVICE"
  if [ -n "$ROOT" ]; then
    say "staged into $ROOT; the system commands it would run are in $ROOT/.edgeway-install.log"
    return
  fi
  cat <<EOF
==> edgeway is installed and running.
    Status:        systemctl status $SERVICE
    Log:           journalctl -u $SERVICE -f
    Configuration: $CONF_DIR/edgeway.yaml (then: sudo systemctl restart $SERVICE)
    Serial ports:  edgeway serial list
EOF
}

# ---------------------------------------------------------------------------------------------
# Uninstall

do_uninstall() {
  if [ -n "$ROOT" ]; then
    system systemctl disable --now "$SERVICE"
  elif [ -e "$UNIT_PATH" ] && command -v systemctl >/dev/null; then
    systemctl disable --now "$SERVICE" 2>/dev/null || systemctl disable "$SERVICE" 2>/dev/null || true
  fi
  rm -f "$ROOT$UNIT_PATH" "$ROOT$WRAPPER_PATH"
  rm -rf "$ROOT$APP_DIR" "$ROOT/opt/.edgeway.new" "$ROOT/opt/.edgeway.old"
  if [ -n "$ROOT" ]; then
    system systemctl daemon-reload
    system systemctl reset-failed "$SERVICE"
  elif [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    # Fails when the unit was never started or is already forgotten: nothing to reset then.
    systemctl reset-failed "$SERVICE" 2>/dev/null || true
  fi
  say "removed the service, $WRAPPER_PATH and $APP_DIR"
  if [ "$PURGE" -eq 0 ]; then
    say "kept $CONF_DIR and $STATE_DIR (configuration and data): --uninstall --purge removes them"
    return
  fi
  rm -rf "$ROOT$CONF_DIR" "$ROOT$STATE_DIR" "$ROOT$UNIT_PATH.d"
  if [ -n "$ROOT" ]; then
    system userdel "$SERVICE"
  elif getent passwd "$SERVICE" >/dev/null; then
    userdel "$SERVICE"
    # userdel removes the user's own group only where USERGROUPS_ENAB is on.
    if getent group "$SERVICE" >/dev/null; then groupdel "$SERVICE"; fi
  fi
  say "purged $CONF_DIR, $STATE_DIR and the user $SERVICE"
}

# ---------------------------------------------------------------------------------------------

while [ $# -gt 0 ]; do
  case $1 in
    --root)
      [ $# -ge 2 ] || usage_error "--root needs a directory"
      ROOT=$2
      shift 2
      ;;
    --root=*) ROOT=${1#--root=}; shift ;;
    --dist)
      [ $# -ge 2 ] || usage_error "--dist needs a directory"
      DIST=$2
      shift 2
      ;;
    --dist=*) DIST=${1#--dist=}; shift ;;
    --uninstall) MODE=uninstall; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown option: $1" ;;
  esac
done
if [ "$PURGE" -eq 1 ] && [ "$MODE" != uninstall ]; then usage_error "--purge only goes with --uninstall"; fi
if [ -n "$DIST" ] && [ "$MODE" = uninstall ]; then usage_error "--dist only goes with an install"; fi
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd -P)
  [ "$ROOT" != / ] || usage_error "--root / is the live system: run without --root"
  if [ "$PURGE" -eq 1 ]; then header="# $MODE --purge"; else header="# $MODE"; fi
  printf '%s\n' "$header" >>"$ROOT/.edgeway-install.log"
elif [ "$(id -u)" -ne 0 ]; then
  die "$EX_NOPERM" "run as root: sudo $0 ${ORIG_ARGS[*]}"
fi

if [ "$MODE" = uninstall ]; then do_uninstall; else do_install; fi
