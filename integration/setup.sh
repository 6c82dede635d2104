#!/usr/bin/env bash
# Installs everything subvault's tests need on a Debian 12 machine, as root:
# Debian packages (btrfs-progs, zstd, PostgreSQL 15, duperemove, ...) and a
# virtualenv holding the moto S3 server. Idempotent and quick when everything is
# already there: apt is consulted only when a package is missing, pip only when
# the pinned moto is not installed.
#
# Environment:
#   SUBVAULT_CACHE  where the virtualenv lives (default /var/cache/subvault)
set -euo pipefail

CACHE=${SUBVAULT_CACHE:-/var/cache/subvault}
VENV=$CACHE/venv
MOTO_VERSION=5.2.5

# btrfs-progs: mkfs.btrfs, btrfs send/receive; util-linux: mount, losetup,
# findmnt; attr: getfattr for inspecting xattrs by hand; postgresql-15 and
# postgresql-contrib (pgbench, amcheck) for the PostgreSQL tests; duperemove
# for the dedupe benchmark; systemd for `systemd-analyze verify` of the units;
# age for the encryption tests (objects decrypted and forged with the real CLI);
# gnupg for the pipe_through/restore_pipe_through tests (tests/integration/trust.rs);
# python3-prometheus-client parses the metrics file in tests/integration/monitoring.rs.
PACKAGES=(
  btrfs-progs zstd util-linux e2fsprogs attr python3-venv
  postgresql-15 postgresql-contrib duperemove systemd age gnupg python3-prometheus-client
)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (it installs Debian packages and uses loop devices)"

mkdir -p "$CACHE"
# Two concurrent test runs must not run apt or pip at the same time.
exec 9>"$CACHE/setup.lock"
flock 9

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} > 0)); then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Do not let package scripts start services (PostgreSQL's main cluster):
  # tests start their own servers on ports of their choosing.
  added_policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  remove_policy() { if [[ -n $added_policy ]]; then rm -f /usr/sbin/policy-rc.d; fi; }
  trap remove_policy EXIT
  apt-get -o DPkg::Lock::Timeout=600 update -q
  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
  remove_policy
  trap - EXIT
fi

for tool in mkfs.btrfs btrfs zstd losetup findmnt mount umount systemd-analyze duperemove age gpg gpgconf; do
  PATH=$PATH:/usr/sbin:/sbin command -v "$tool" >/dev/null || die "$tool missing after install"
done
[[ -x /usr/lib/postgresql/15/bin/pg_ctl ]] || die "PostgreSQL 15 missing after install"

moto_ok() {
  [[ -x $VENV/bin/moto_server ]] &&
    "$VENV/bin/python" - "$MOTO_VERSION" <<'EOF' 2>/dev/null
import importlib.metadata as md, sys
import flask, flask_cors  # moto_server needs both
sys.exit(0 if md.version("moto") == sys.argv[1] else 1)
EOF
}

if ! moto_ok; then
  log "creating the moto $MOTO_VERSION virtualenv in $VENV"
  python=$(command -v python3 || true)
  [[ -n $python ]] || die "python3 not found"
  rm -rf "$VENV"
  "$python" -m venv "$VENV" || {
    # A Debian python3 without ensurepip needs python3-venv (installed above);
    # fall back to it when the python3 on PATH cannot make a venv.
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
  }
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-input \
    "moto[s3]==$MOTO_VERSION" flask flask-cors
  moto_ok || die "moto $MOTO_VERSION not usable in $VENV after install"
fi
log "ok (moto $MOTO_VERSION in $VENV)"
