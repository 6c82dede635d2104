#!/usr/bin/env bash
# Benchmark of a remote's `rate_limit`: is the measured upload rate within 5%
# of the limit when several uploads share it?
#
#   sudo bench/rate_limit.sh [RATE_MIB_S...]      (default: 10 20)
#
# For each rate: two sources of SIZE MiB of random bytes each (compression
# none, so the stored object is as big as the stream; default 8 seconds' worth
# of the limit per source), on a loop-device btrfs, uploaded in parallel
# (max_parallel_sources: 2) to ONE remote with `rate_limit: RATE MiB/s`, so the
# limit must hold for every part in flight of both uploads together. The S3
# server is a local garage (bench/garage.sh), or moto when garage is not
# installed. The rate is the bytes stored by both uploads over the wall time
# from the first upload's start to the last one's end (from `run --json`:
# each source's `started`/`finished`, which also hold its snapshot and its
# remote's listing, so the figure errs low, never high); then the same run
# without a limit shows what the machine does unthrottled.
# Prints: limit, measured MiB/s, measured/limit, within 5%?
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
RATES=("$@")
((${#RATES[@]})) || RATES=(10 20)
SECONDS_PER_SOURCE=${SECONDS_PER_SOURCE:-8}

bench_require_root
bench_apt curl bc
GARAGE=$CACHE/garage/bin/garage
S3=moto
[[ -x $GARAGE ]] && S3=garage

bench_build_release
BIN=$SUBVAULT_BIN

WORK=$(mktemp -d /var/tmp/subvault-bench-rate.XXXXXX)
SRC=$WORK/src
cleanup() {
  set +e
  bench_s3_stop "$WORK"
  loopfs_teardown "$WORK/src.img"
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bench_s3_start "$WORK" "${GARAGE_PORT:-3920}" "${GARAGE_RPC_PORT:-3921}"
export AWS_EC2_METADATA_DISABLED=true SUBVAULT_LOCK_DIR=$WORK/locks SUBVAULT_STATE_DIR=$WORK/state

max_rate=0
for r in "${RATES[@]}"; do ((r > max_rate)) && max_rate=$r; done
MIB=$((max_rate * SECONDS_PER_SOURCE))
loopfs_make "$WORK/src.img" $((MIB * 2 * 3 / 1024 + 2))G
loopfs_mount "$WORK/src.img" "$SRC"

# One round: fresh subvolumes a and b with MIB MiB of random bytes each, a
# prefix of its own, `rate_limit` LIMIT (or none); prints "MIB_S SECONDS BYTES".
round() {
  local name=$1 limit=$2 mib=$3 s
  for s in a b; do
    btrfs subvolume create "$SRC/$name-$s" >/dev/null
    mkdir -p "$SRC/$name-$s-snaps"
    head -c "${mib}M" /dev/urandom >"$SRC/$name-$s/random"
  done
  sync
  {
    echo "timezone: UTC"
    echo "max_parallel_sources: 2"
    echo "sources:"
    for s in a b; do
      echo "  - path: $SRC/$name-$s"
      echo "    snapshots: $SRC/$name-$s-snaps"
      echo "    upload_to_remotes: [{id: s3, preserve: 1d, compression: none}]"
    done
    echo "remotes:"
    echo "  - id: s3"
    [[ $limit == none ]] || echo "    rate_limit: ${limit}MiB/s"
    echo "    s3: {bucket: $BUCKET, prefix: $name/, endpoint: {endpoint_url: '$ENDPOINT', region_name: $REGION}}"
  } >"$WORK/$name.yaml"
  "$BIN" -c "$WORK/$name.yaml" run --json >"$WORK/$name.json" 2>"$WORK/$name.log" ||
    { echo "$BENCH_NAME: the run failed; its log:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
  /usr/bin/python3 - "$WORK/$name.json" <<'PY'
import json, re, sys
from datetime import datetime
def t(s):  # chrono writes nanoseconds; datetime takes microseconds
    s = re.sub(r"(\.\d{6})\d*", r"\1", s).replace("Z", "+00:00")
    return datetime.fromisoformat(s).timestamp()
run = json.load(open(sys.argv[1]))
assert run["outcome"] == "ok", run
secs = max(t(s["finished"]) for s in run["sources"]) - min(t(s["started"]) for s in run["sources"])
b = sum(s["sent_bytes"] for s in run["sources"])
print(b / secs / 1048576, secs, b)
PY
}

echo "== $S3 on 127.0.0.1; two sources of random bytes uploaded in parallel to one remote"
printf '%-12s %10s %10s %12s %8s %s\n' "limit MiB/s" "MiB" "seconds" "measured" "ratio" "within 5%"
for rate in "${RATES[@]}"; do
  mib=$((rate * SECONDS_PER_SOURCE))
  read -r measured secs bytes < <(round "r$rate" "$rate" "$mib")
  ratio=$(echo "$measured / $rate" | bc -l)
  ok=$(echo "$ratio >= 0.95 && $ratio <= 1.05" | bc -l)
  printf '%-12s %10s %10.2f %12.2f %8.3f %s\n' "$rate" "$((bytes / 1048576))" "$secs" "$measured" "$ratio" \
    "$([[ $ok == 1 ]] && echo yes || echo NO)"
done
read -r measured secs bytes < <(round unlimited none "$MIB")
printf '%-12s %10s %10.2f %12.2f %8s %s\n' "none" "$((bytes / 1048576))" "$secs" "$measured" "-" "-"
