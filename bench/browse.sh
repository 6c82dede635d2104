#!/usr/bin/env bash
# Benchmark of getting one small file back: `subvault restore --path` on a
# cold and a warm browse cache, against a full `subvault restore`.
#
#   sudo bench/browse.sh [FULL_MIB] [MONTHLY_MIB] [DAILY_MIB] [RUNS]
#                            (default: 900 120 60 3, >= 1 GiB raw in all)
#
# A source subvolume gets FULL_MIB of mixed data (half random bytes, half
# base64 text) and one small file, then MONTHLY_MIB and DAILY_MIB more;
# `subvault run` at three times makes the chain full -> monthly -> daily
# (zstd -3) on a single-node garage on 127.0.0.1 (bench/garage.sh; moto when
# garage is not installed or BENCH_S3=moto). Then, RUNS times each, with the
# median printed:
#   cold   subvault cache clean, then restore --path of the small file (the
#          whole chain is downloaded and received into a new cache image)
#   warm   restore --path of the same file again (the cache has the chain)
#   full   subvault restore --to DIR on btrfs of the same point
# Every run ends with its data on disk (`sync -f`). It also prints the cache
# image's size on disk after a cold run.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
FULL=${1:-900} MONTHLY=${2:-120} DAILY=${3:-60} RUNS=${4:-3}
for n in "$FULL" "$MONTHLY" "$DAILY" "$RUNS"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: arguments are whole numbers, 1 or more, not '$n'" >&2; exit 2; }
done

bench_require_root
bench_apt zstd btrfs-progs curl time

S3=${BENCH_S3:-}
if [[ -z $S3 ]]; then
  if [[ -x $CACHE/garage/bin/garage ]]; then S3=garage; else S3=moto; fi
fi

bench_build_release
BIN=$SUBVAULT_BIN

WORK=$(mktemp -d /var/tmp/subvault-bench-browse.XXXXXX)
SRC=$WORK/src DST=$WORK/dst
export SUBVAULT_BROWSE_CACHE=$WORK/cache SUBVAULT_LOCK_DIR=$WORK/locks
cleanup() {
  set +e
  "$BIN" -c "$WORK/config.yaml" cache clean >/dev/null 2>&1
  bench_s3_stop "$WORK"
  loopfs_teardown "$WORK/src.img" "$WORK/dst.img"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_s3_start "$WORK" "${GARAGE_PORT:-3920}" "${GARAGE_RPC_PORT:-3921}"
export AWS_EC2_METADATA_DISABLED=true

loopfs_make "$WORK/src.img" $(((FULL + MONTHLY + DAILY) * 3 / 1024 + 3))G
loopfs_make "$WORK/dst.img" $(((FULL + MONTHLY + DAILY) * 3 / 1024 + 3))G
loopfs_mount "$WORK/src.img" "$SRC"
loopfs_mount "$WORK/dst.img" "$DST"
btrfs subvolume create "$SRC/data" >/dev/null
mkdir "$SRC/snapshots"

cat >"$WORK/config.yaml" <<EOF
timezone: UTC
sources:
  - path: $SRC/data
    snapshots: $SRC/snapshots
    upload_to_remotes:
      - id: s3
        preserve: 1y 3m 30d
remotes:
  - id: s3
    s3:
      bucket: $BUCKET
      endpoint:
        endpoint_url: $ENDPOINT
        region_name: $REGION
EOF
SV=("$BIN" -c "$WORK/config.yaml")

# MiB of mixed data: half random, half base64 text (compresses about 4:3).
fill() {
  local dir=$1 mib=$2
  mkdir -p "$dir"
  head -c $((mib / 2))M /dev/urandom >"$dir/random"
  (base64 -w 100 /dev/urandom || true) | head -c $((mib - mib / 2))M >"$dir/text"
}

echo "== making the chain: full ${FULL} MiB, monthly +${MONTHLY} MiB, daily +${DAILY} MiB ($S3)"
fill "$SRC/data/full" "$FULL"
mkdir -p "$SRC/data/home/me"
echo "the file we want back" >"$SRC/data/home/me/note.txt"
"${SV[@]}" -q run --now 2026-01-01T10:00:00Z >/dev/null
fill "$SRC/data/monthly" "$MONTHLY"
"${SV[@]}" -q run --now 2026-02-01T10:00:00Z >/dev/null
fill "$SRC/data/daily" "$DAILY"
"${SV[@]}" -q run --now 2026-02-05T10:00:00Z >/dev/null
sync

# Seconds of one command, until its data is on disk.
timed() { # DIR-TO-SYNC CMD...
  local t0 sync_dir=$1
  shift
  t0=$(bench_now)
  bench_timed "$WORK/times" "$WORK/out.log" "$@"
  sync -f "$sync_dir"
  bench_secs "$t0" "$(bench_now)"
}

COLD=() WARM=() FULLS=()
for run in $(seq 1 "$RUNS"); do
  "${SV[@]}" cache clean >/dev/null
  rm -rf "$WORK/out"
  COLD+=("$(timed "$WORK" "${SV[@]}" restore --to "$WORK/out/cold$run" --path home/me/note.txt)")
  cmp -s "$WORK/out/cold$run/home/me/note.txt" "$SRC/data/home/me/note.txt"
  echo "   cold $run: ${COLD[-1]} s; $(tail -n 1 "$WORK/out.log")"
  [[ $run == 1 ]] && echo "   cache image: $(du -h --apparent-size "$WORK/cache/s3.img" | cut -f1) apparent, $(du -h "$WORK/cache/s3.img" | cut -f1) on disk"
  WARM+=("$(timed "$WORK" "${SV[@]}" restore --to "$WORK/out/warm$run" --path home/me/note.txt)")
  echo "   warm $run: ${WARM[-1]} s; $(tail -n 1 "$WORK/out.log")"
  for s in "$DST"/full/*; do [[ -e $s ]] && btrfs -q subvolume delete "$s"; done
  rm -rf "$DST/full" && mkdir "$DST/full" && btrfs -q subvolume sync "$DST"
  FULLS+=("$(timed "$DST" "${SV[@]}" restore --to "$DST/full")")
  echo "   full $run: ${FULLS[-1]} s; $(tail -n 1 "$WORK/out.log")"
done

echo "== one small file from a $((FULL + MONTHLY + DAILY)) MiB chain ($S3, median of $RUNS)"
printf '   %-36s %8s s\n' "restore --path, cold cache" "$(median "${COLD[@]}")"
printf '   %-36s %8s s\n' "restore --path, warm cache" "$(median "${WARM[@]}")"
printf '   %-36s %8s s\n' "full restore (btrfs target)" "$(median "${FULLS[@]}")"
