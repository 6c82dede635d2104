#!/usr/bin/env bash
# Benchmark: `subvault dedupe` against `duperemove -dr --hashfile=...` on the same
# generated btrfs, each on a fresh copy of one filesystem image, same block size.
#
#   sudo bench/dedupe.sh            # builds the release binary first
#
# Dataset (generated once into a loop btrfs image, ~4.5 GiB of data extents,
# ~6 GiB of file data per snapshot view, 2.25 GiB of it duplicate extents):
#   live subvolume `data`:
#     base/      16 files x 128 MiB of random data (2 GiB, unique)
#   snapshot s1
#     vacuum:    8 base files rewritten with `cp --reflink=never` (same bytes,
#                new extents: what VACUUM FULL / CLUSTER / restores do)  +1 GiB dup
#     copies/    4 base files copied without reflink                   +512 MiB dup
#   snapshot s2
#     modified/  2 base files copied, then 1 MiB in the middle of each
#                overwritten in place (duplicates except that 1 MiB)   +256 MiB dup
#     unique/    256 MiB of new random data                            (unique)
#   snapshot s3
#     vacuum:    4 more base files rewritten with cp --reflink=never   +512 MiB dup
#   snapshot s4
# All snapshots are read-only and live in `snaps/`, as subvault keeps them.
#
# Environment: BENCH_DIR (default /var/tmp/subvault-bench-dedupe), BLOCK (default 128K),
# IMG_SIZE (of the dataset image, default 12G),
# SUBVAULT (binary to use instead of building the release one),
# SUBVAULT_ARGS (extra dedupe arguments, default --no-nice so both tools run at
# the same CPU/IO priority), BENCH_IMAGE (reuse this unmounted dataset image
# instead of generating one; BENCH_SAVE_IMAGE=PATH keeps the generated one).
# Tool outputs are kept in $BENCH_DIR/last/.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
BENCH_DIR=${BENCH_DIR:-/var/tmp/subvault-bench-dedupe}
BLOCK=${BLOCK:-128K}
IMG_SIZE=${IMG_SIZE:-12G}

bench_require_root
bench_apt duperemove time btrfs-progs util-linux
mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
MNT=$WORK/mnt
mkdir -p "$MNT"

cleanup() {
  set +e
  loopfs_teardown "$WORK"/*.img
  mkdir -p "$BENCH_DIR/last"
  cp "$WORK"/*.out "$WORK"/*.err "$WORK"/*.time "$BENCH_DIR/last/" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mount_img() { loopfs_mount "$1" "$MNT" noatime; }
unmount() { btrfs filesystem sync "$MNT" >/dev/null; loopfs_umount "$MNT"; }
data_used() {
  btrfs filesystem sync "$MNT" >/dev/null
  btrfs filesystem df -b "$MNT" | awk -F'used=' '/^Data,/ {print $2}'
}
snap() { btrfs -q subvolume snapshot -r "$MNT/data" "$MNT/snaps/$1"; }
gen() { # gen FILE MIB: random content, one sequential write
  head -c "$(( $2 * 1024 * 1024 ))" /dev/urandom > "$1"
}

if [[ -n ${BENCH_IMAGE:-} ]]; then
  echo "== reusing dataset image $BENCH_IMAGE"
  cp --sparse=always "$BENCH_IMAGE" "$WORK/base.img"
  mount_img "$WORK/base.img"
  USED0=$(data_used)
  unmount
else
echo "== generating dataset in $WORK/base.img"
loopfs_make "$WORK/base.img" "$IMG_SIZE"
mount_img "$WORK/base.img"
btrfs -q subvolume create "$MNT/data"
mkdir -p "$MNT/snaps" "$MNT/data/base" "$MNT/data/copies" "$MNT/data/modified" "$MNT/data/unique"
for i in $(seq -f %02g 1 16); do gen "$MNT/data/base/f$i" 128; done
snap s1
for i in $(seq -f %02g 1 8); do
  cp --reflink=never "$MNT/data/base/f$i" "$MNT/data/base/f$i.tmp"
  mv "$MNT/data/base/f$i.tmp" "$MNT/data/base/f$i"
done
for i in $(seq -f %02g 9 12); do cp --reflink=never "$MNT/data/base/f$i" "$MNT/data/copies/f$i"; done
snap s2
for i in 13 14; do
  cp --reflink=never "$MNT/data/base/f$i" "$MNT/data/modified/f$i"
  head -c $((1024 * 1024)) /dev/urandom | dd of="$MNT/data/modified/f$i" bs=1M seek=64 conv=notrunc status=none
done
gen "$MNT/data/unique/u1" 256
snap s3
for i in $(seq -f %02g 13 16); do
  cp --reflink=never "$MNT/data/base/f$i" "$MNT/data/base/f$i.tmp"
  mv "$MNT/data/base/f$i.tmp" "$MNT/data/base/f$i"
done
snap s4
USED0=$(data_used)
unmount
if [[ -n ${BENCH_SAVE_IMAGE:-} ]]; then cp --sparse=always "$WORK/base.img" "$BENCH_SAVE_IMAGE"; fi
fi
echo "data used: $USED0 bytes"
TREES=("$MNT/data" "$MNT/snaps/s4" "$MNT/snaps/s3" "$MNT/snaps/s2" "$MNT/snaps/s1")
SUBVAULT_ARGS=${SUBVAULT_ARGS:---no-nice}

# run NAME CMD...: fresh image copy, cold cache, timed; prints a table row.
declare -A WALL RSS FREED
measure() {
  local name=$1; shift
  local log=$WORK/$name.time
  sync; echo 3 > /proc/sys/vm/drop_caches
  local before after
  before=$(data_used)
  bench_timed -e "$WORK/$name.err" "$log" "$WORK/$name.out" "$@"
  after=$(data_used)
  WALL[$name]=$(bench_time_field "$log" wall)
  RSS[$name]=$(bench_time_field "$log" rss_kib)
  FREED[$name]=$(( before - after ))
  printf '%-28s wall %-10s peak RSS %8s KiB  freed %6d MiB (%d bytes)\n' \
    "$name" "${WALL[$name]}" "${RSS[$name]}" $(( FREED[$name] / 1048576 )) "${FREED[$name]}"
}

bench_build_release

echo "== duperemove -dr --hashfile (block $BLOCK) on a fresh copy"
cp --sparse=always "$WORK/base.img" "$WORK/dr.img"
mount_img "$WORK/dr.img"
measure duperemove duperemove -dr -b "$BLOCK" --hashfile="$WORK/dr.hash" "${TREES[@]}"
unmount
rm -f "$WORK/dr.img" "$WORK/dr.hash"

echo "== subvault dedupe (block $BLOCK) on a fresh copy"
cp --sparse=always "$WORK/base.img" "$WORK/sv.img"
mount_img "$WORK/sv.img"
# shellcheck disable=SC2086
measure subvault_first "$SUBVAULT_BIN" dedupe --json $SUBVAULT_ARGS --block-size "$BLOCK" --index-dir "$WORK/index" "${TREES[@]}"
# shellcheck disable=SC2086
measure subvault_second "$SUBVAULT_BIN" dedupe --json $SUBVAULT_ARGS --block-size "$BLOCK" --index-dir "$WORK/index" "${TREES[@]}"
python3 - "$WORK/subvault_first.out" <<'EOF' || true
import json, sys
r = json.load(open(sys.argv[1]))
keys = ["bytes_scanned", "bytes_read", "bytes_shared_not_reread", "duplicate_extent_bytes",
        "duplicate_bytes", "bytes_deduped", "space_freed", "metadata_growth", "ioctl_calls",
        "differs_ranges", "records", "partitions", "seconds"]
print("subvault first pass report: " + ", ".join(f"{k}={r[k]}" for k in keys))
EOF
unmount

echo
echo "| tool | wall time | peak RSS | bytes freed |"
echo "|---|---|---|---|"
for n in duperemove subvault_first subvault_second; do
  printf '| %s | %s | %s MiB | %s MiB (%s) |\n' "$n" "${WALL[$n]}" $(( RSS[$n] / 1024 )) $(( FREED[$n] / 1048576 )) "${FREED[$n]}"
done
