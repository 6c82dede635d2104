#!/usr/bin/env bash
# The demo of the main job, on a throwaway loop-device btrfs with a local
# directory as the object store:
#
#   sudo demo/demo.sh
#
# It builds subvault, makes a 1 GiB btrfs image, and simulates 40 days of a
# source that changes daily (plus a busy day with hourly runs) with
# `subvault run --now ...` under the policy `1y 3m 30d 24h`. Then it prints the
# backup tree (`subvault plan --dry-run`) and the objects in the store. Everything
# it made is removed on exit, also when it fails. DEMO_KEEP=1 keeps the files
# (and leaves the filesystem mounted) for a look around.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../integration/loopfs.sh
source "$REPO/integration/loopfs.sh"

if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: run as root (it mounts a loop-device btrfs): sudo $0" >&2
  exit 1
fi
if ! command -v cargo >/dev/null && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
  PATH=$PATH:${HOME:-/root}/.cargo/bin
fi
if ! command -v mkfs.btrfs >/dev/null; then
  echo "demo.sh: installing btrfs-progs and zstd"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq btrfs-progs zstd >/dev/null
fi

echo "== building subvault"
(cd "$REPO" && cargo build --quiet)
BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/subvault

WORK=$(mktemp -d /var/tmp/subvault-demo.XXXXXX)
MNT=$WORK/mnt
cleanup() {
  if [[ ${DEMO_KEEP:-} == 1 ]]; then
    echo "demo.sh: kept $WORK (umount $MNT && rm -rf $WORK when done)"
    return
  fi
  loopfs_teardown "$WORK/fs.img"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

loopfs_make "$WORK/fs.img" 1G
mkdir -p "$WORK/store"
loopfs_mount "$WORK/fs.img" "$MNT"
btrfs -q subvolume create "$MNT/data"
mkdir "$MNT/snapshots"

cat >"$WORK/config.yaml" <<EOF
timezone: Europe/Berlin
sources:
  - path: $MNT/data
    snapshots: $MNT/snapshots
    upload_to_remotes:
      - id: disk
        preserve: 1y 3m 30d 24h
remotes:
  - id: disk
    local:
      path: $WORK/store
EOF
export SUBVAULT_LOCK_DIR=$WORK/locks

echo "== config"
"$BIN" -c "$WORK/config.yaml" config check

echo "== 40 simulated days, one run a day at 09:00 (and hourly runs on 2026-11-20)"
head -c 20M /dev/urandom >"$MNT/data/photos.bin"
for day in $(seq 0 39); do
  date=$(date -u -d "2026-10-19 + $day days" +%F)
  echo "entry for $date" >>"$MNT/data/journal.txt"
  head -c 256K /dev/urandom >"$MNT/data/upload-$((day % 5)).bin"
  hours=(09)
  [[ $date == 2026-11-20 ]] && hours=(09 10 11 12)
  for h in "${hours[@]}"; do
    echo "$date $h:00 edit" >>"$MNT/data/notes.txt"
    "$BIN" -c "$WORK/config.yaml" run --now "${date}T$h:00:00"
  done
done

echo
echo "== the backup tree now (subvault plan --dry-run)"
"$BIN" -c "$WORK/config.yaml" plan --dry-run --now "2026-11-27T09:30:00"
echo
echo "== objects in the store ($(find "$WORK/store" -type f | wc -l) files, $(du -sh "$WORK/store" | cut -f1))"
find "$WORK/store" -type f -printf '%f\n' | sort | head -n 3 | sed 's/^/  /'
echo "  ..."
