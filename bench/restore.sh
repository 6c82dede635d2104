#!/usr/bin/env bash
# Benchmark of `subvault restore` against the limit and restic.
#
#   sudo bench/restore.sh [FULL_MIB] [MONTHLY_MIB] [DAILY_MIB]
#                            (default: 900 120 60, >= 1 GiB raw in all)
#
# A source subvolume gets FULL_MIB of mixed data (half random bytes, half
# base64 text), then MONTHLY_MIB and DAILY_MIB more; `subvault run` at three
# times makes the chain full -> monthly -> daily (zstd -3) on two remotes at
# once: a single-node garage on 127.0.0.1 (bench/garage.sh; moto when
# garage is not installed or BENCH_S3=moto) and a local directory, so both hold
# the same objects. Then, each into a fresh directory of a second btrfs:
#   limit     for each object: zstd -d < local file | btrfs receive DIR
#   subvault  subvault restore --remote s3 (download, verify, receive, prefetch)
#   encrypted subvault restore --remote s3enc: the same chain in an encrypted
#             remote of the same store (decrypt, body MAC, then as above)
#   restic    restic (Debian's) restore of a backup of the same source (after
#             the daily) from the same store, then `sync -f`
#   local     subvault restore --remote disk: the same objects from the local
#             remote, files in the page cache like the limit's (what the
#             pipeline does without a store process on the same cores)
#   download  subvault verify --remote s3 --all (download + decode + checks, no
#             receive: shows whether the network side could be the bottleneck)
# and prints seconds, MB/s of raw send stream and the ratio to the limit (the
# median of three alternating runs each, after a warm-up round; every run
# starts with no dirty page cache and ends with its data on disk). The limit
# reads its local files from the page cache.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
FULL=${1:-900} MONTHLY=${2:-120} DAILY=${3:-60}
for mib in "$FULL" "$MONTHLY" "$DAILY"; do
  [[ $mib =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: sizes are whole MiB, 1 or more, not '$mib'" >&2; exit 2; }
done

bench_require_root
bench_apt zstd btrfs-progs curl time restic

S3=${BENCH_S3:-}
if [[ -z $S3 ]]; then
  if [[ -x $CACHE/garage/bin/garage ]]; then S3=garage; else S3=moto; fi
fi

bench_build_release
BIN=$SUBVAULT_BIN

WORK=$(mktemp -d /var/tmp/subvault-bench-restore.XXXXXX)
SRC=$WORK/src DST=$WORK/dst
cleanup() {
  set +e
  bench_s3_stop "$WORK"
  loopfs_teardown "$WORK/src.img" "$WORK/dst.img"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_s3_start "$WORK" "${GARAGE_PORT:-3910}" "${GARAGE_RPC_PORT:-3911}"
export AWS_EC2_METADATA_DISABLED=true SUBVAULT_LOCK_DIR=$WORK/locks

mkdir -p "$WORK/local"
KEY=$WORK/keys/bench.key
"$BIN" key generate --out "$KEY" >/dev/null
loopfs_make "$WORK/src.img" $(((FULL + MONTHLY + DAILY) * 3 / 1024 + 3))G
# Five restores (limit, garage, encrypted, restic, local remote) live side by
# side, plus room for the one being received while a deleted one is still
# being cleaned.
loopfs_make "$WORK/dst.img" $(((FULL + MONTHLY + DAILY) * 12 / 1024 + 4))G
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
      - id: disk
        preserve: 1y 3m 30d
      - id: s3enc
        preserve: 1y 3m 30d
remotes:
  - id: s3
    s3:
      bucket: $BUCKET
      endpoint:
        endpoint_url: $ENDPOINT
        region_name: $REGION
  - id: disk
    local:
      path: $WORK/local
  - id: s3enc
    s3:
      bucket: $BUCKET
      prefix: enc/
      endpoint:
        endpoint_url: $ENDPOINT
        region_name: $REGION
    encryption:
      key_file: $KEY
EOF

# MiB of mixed data: half random, half base64 text (compresses about 4:3).
fill() {
  local dir=$1 mib=$2
  mkdir -p "$dir"
  head -c $((mib / 2))M /dev/urandom >"$dir/random"
  (base64 -w 100 /dev/urandom || true) | head -c $((mib - mib / 2))M >"$dir/text"
}

echo "== making the chain: full ${FULL} MiB, monthly +${MONTHLY} MiB, daily +${DAILY} MiB"
fill "$SRC/data/full" "$FULL"
"$BIN" -c "$WORK/config.yaml" run --now 2026-01-01T10:00:00Z >/dev/null
fill "$SRC/data/monthly" "$MONTHLY"
"$BIN" -c "$WORK/config.yaml" run --now 2026-02-01T10:00:00Z >/dev/null
fill "$SRC/data/daily" "$DAILY"
"$BIN" -c "$WORK/config.yaml" run --now 2026-02-05T10:00:00Z >/dev/null

# Chain order: by the ctim in the key (full, monthly, daily).
mapfile -t FILES < <(find "$WORK/local" -mindepth 1 -maxdepth 1 ! -name '.*' -printf '%f\n' | sort -t. -k2)
((${#FILES[@]} == 3)) || { echo "$BENCH_NAME: expected 3 objects, got ${#FILES[@]}" >&2; exit 1; }
RAW=0
for f in "${FILES[@]}"; do
  n=$(zstd -d -q -c <"$WORK/local/$f" | wc -c)
  RAW=$((RAW + n))
done
OBJ=$(cat "${FILES[@]/#/$WORK/local/}" | wc -c)
echo "   raw send streams: $RAW bytes, objects: $OBJ bytes"

# restic: a backup of the source as it is after the daily (what the chain
# restores), in the same store.
export RESTIC_PASSWORD=bench-password
RESTIC=(restic -q -o s3.region=$REGION -o s3.bucket-lookup=path -r "s3:$ENDPOINT/$BUCKET/restic")
"${RESTIC[@]}" init --repository-version 2 >/dev/null
"${RESTIC[@]}" backup "$SRC/data" >/dev/null
echo "   restic $(restic version | awk '{ print $2 }') repository: $("${RESTIC[@]}" stats --mode raw-data | awk '/Total Size:/ { print $3, $4 }')"


# Each timed run starts with nothing dirty in the page cache (the uploads above
# leave GBs to write back, which would land on whichever run comes first) and
# ends when its data is on disk (`sync -f`; subvault restore also syncs
# itself). Three runs each, alternating; the median counts.
settle() {
  local d
  for d in "$@"; do
    # restic restores plain directories, subvault subvolumes.
    for s in "$d"/*; do
      [[ -e $s ]] || continue
      if [[ $(stat -c %i "$s") == 256 ]]; then btrfs -q subvolume delete "$s"; else rm -rf "$s"; fi
    done
    rm -rf "$d"
  done
  btrfs -q subvolume sync "$DST"
  sync
  # Deleted subvolumes' space is reusable only once the cleaner committed.
  btrfs filesystem sync "$DST"
}
# Restores from REMOTE into a fresh $DST/DIR and prints the seconds until its
# data is on disk; subvault's own per-object receive times, its final sync and
# its last line go to stderr, each marked with LABEL.
subvault_restore() { # REMOTE DIR LABEL
  settle "$DST/$2"
  mkdir "$DST/$2"
  local t0
  t0=$(bench_now)
  bench_timed "$WORK/rss" "$WORK/restore.log" "$BIN" -c "$WORK/config.yaml" restore --remote "$1" --to "$DST/$2"
  sync -f "$DST"
  bench_secs "$t0" "$(bench_now)"
  grep -E '^(received|synced|restored) ' "$WORK/restore.log" | sed "s/^/   $3: /" >&2
  echo "   $3: peak RSS $(($(bench_time_field "$WORK/rss" rss_kib) / 1024)) MB" >&2
}
LIMITS=() SUBVAULTS=() ENCS=() LOCALS=() RESTICS=()
cat "${FILES[@]/#/$WORK/local/}" >/dev/null
# Run 0 warms up and is not counted: right after the setup (GBs uploaded,
# then synced) the first runs of all three were up to 2x slower than later
# ones, the limit included.
for run in 0 1 2 3; do
  echo "== run $run: limit (zstd -d < file | btrfs receive, local files, page cache warm)"
  settle "$DST/limit"
  mkdir "$DST/limit"
  t0=$(bench_now)
  for f in "${FILES[@]}"; do
    zstd -d -q <"$WORK/local/$f" | btrfs receive -e "$DST/limit" 2>/dev/null
  done
  t1=$(bench_now)
  sync -f "$DST"
  # Where the time goes: receiving (into the page cache) vs writing it out.
  echo "   limit: receive $(bench_secs "$t0" "$t1") s, sync $(bench_secs "$t1" "$(bench_now)") s"
  ((run == 0)) || LIMITS+=("$(bench_secs "$t0" "$(bench_now)")")

  echo "== run $run: subvault restore from $S3"
  t=$(subvault_restore s3 subvault "subvault")
  ((run == 0)) || SUBVAULTS+=("$t")

  echo "== run $run: subvault restore from $S3, encrypted remote"
  t=$(subvault_restore s3enc subvault-enc "subvault (encrypted)")
  ((run == 0)) || ENCS+=("$t")

  echo "== run $run: restic restore from $S3"
  settle "$DST/restic"
  t0=$(bench_now)
  bench_timed "$WORK/rss" "$WORK/restic.log" "${RESTIC[@]}" restore latest --target "$DST/restic"
  sync -f "$DST"
  ((run == 0)) || RESTICS+=("$(bench_secs "$t0" "$(bench_now)")")
  echo "   restic: $(bench_secs "$t0" "$(bench_now)") s, peak RSS $(($(bench_time_field "$WORK/rss" rss_kib) / 1024)) MB"

  # The same restore from the local remote (files in the page cache, like the
  # limit's): subvault's own pipeline without a store's CPU on these cores.
  echo "== run $run: subvault restore from the local remote"
  t=$(subvault_restore disk subvault-local "subvault (local)")
  ((run == 0)) || LOCALS+=("$t")
done
echo "   limit runs: ${LIMITS[*]} s; subvault runs: ${SUBVAULTS[*]} s; encrypted: ${ENCS[*]} s; restic: ${RESTICS[*]} s; from the local remote: ${LOCALS[*]} s"
LIMIT=$(median "${LIMITS[@]}")
SUBVAULT=$(median "${SUBVAULTS[@]}")
ENC=$(median "${ENCS[@]}")
RESTIC_T=$(median "${RESTICS[@]}")
LOCAL=$(median "${LOCALS[@]}")

echo "== download + verify only (no receive) from $S3"
sync
t0=$(bench_now)
"$BIN" -c "$WORK/config.yaml" verify --remote s3 --all >"$WORK/verify.log" 2>&1 ||
  { cat "$WORK/verify.log" >&2; exit 1; }
VERIFY=$(bench_secs "$t0" "$(bench_now)")

# Same trees?
for d in "$DST"/limit/*; do
  n=$(basename "$d")
  for other in subvault subvault-enc; do
    if ! diff -r -q "$d" "$DST/$other/$n" >/dev/null; then
      echo "$BENCH_NAME: $n differs between the limit and the $other restore" >&2
      exit 1
    fi
  done
done
last=$(find "$DST/limit" -mindepth 1 -maxdepth 1 | sort | tail -n 1)
if ! diff -r -q "$last" "$DST/restic$SRC/data" >/dev/null; then
  echo "$BENCH_NAME: restic's restore differs from the daily" >&2
  exit 1
fi

mbs() { awk -v b="$RAW" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }
ratio() { awk -v l="$LIMIT" -v s="$1" 'BEGIN { printf "%.2fx", l / s }'; }
echo
echo "restore of full + monthly + daily, $((RAW / 1048576)) MiB raw, $((OBJ / 1048576)) MiB of zstd objects, store: $S3"
echo "| what | seconds | MB/s (raw) | ratio to limit |"
echo "|---|---|---|---|"
echo "| limit: zstd -d < file \\| btrfs receive | $LIMIT | $(mbs "$LIMIT") | 1.00x |"
echo "| subvault restore ($S3) | $SUBVAULT | $(mbs "$SUBVAULT") | $(ratio "$SUBVAULT") |"
echo "| subvault restore ($S3, encrypted remote) | $ENC | $(mbs "$ENC") | $(ratio "$ENC") |"
echo "| restic restore ($S3) + sync | $RESTIC_T | $(mbs "$RESTIC_T") | $(ratio "$RESTIC_T") |"
echo "| subvault restore (local remote, no store process) | $LOCAL | $(mbs "$LOCAL") | $(ratio "$LOCAL") |"
echo "| subvault verify --all ($S3, no receive) | $VERIFY | $(mbs "$VERIFY") | - |"
echo
echo "encrypted/unencrypted restore: $(awk -v p="$SUBVAULT" -v e="$ENC" 'BEGIN { printf "%.2fx", p / e }') (speed); encrypted subvault vs restic: $(awk -v r="$RESTIC_T" -v e="$ENC" 'BEGIN { printf "%.2fx", r / e }') restic's speed"
