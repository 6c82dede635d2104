#!/usr/bin/env bash
# Requests a year of backups costs (issue 21): subvault and btrfs2s3, both
# counted on the wire by a proxy in front of the S3 server.
#
#   sudo bench/requests.sh [DAYS] [FULL_MIB]     (default: 400 50)
#
# A source of FULL_MIB random bytes gets ~256 KiB more every day; once a day
# for DAYS simulated days (policy 1y 3m 30d 24h, UTC) three backups of it go
# to one moto S3 server through bench/s3_count_proxy.py, which counts every
# request per S3 operation and per bucket/prefix:
#
#   subvault   `subvault run --now` to remote `new` (prefix new/ of bucket
#              bench), default single_put_max (64 MiB)
#   8MiB-PUT   the same run's remote `old` (prefix old/), single_put_max: 8MiB
#              (how subvault uploaded before issue 21)
#   btrfs2s3   btrfs2s3 2.1.0 `update --force`, pipe_through zstd -3, its own
#              snapshots dir, into its own bucket bench-b2s3 (it has no
#              prefix setting and takes every key of its bucket for its own)
#
# btrfs2s3 has no --now: bench/btrfs2s3_clock.py runs its CLI with "now" and
# its snapshots' ctimes set to the simulated day (see that file for why and
# what exactly it changes). The buckets are made directly on moto, so the
# counts are only the backups' requests. subvault's own per-kind counts
# (`run --json`'s `requests`) are kept as a cross-check against the proxy's.
# Prints the totals per request kind.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
DAYS=${1:-400} FULL=${2:-50}
[[ $DAYS =~ ^[1-9][0-9]*$ && $FULL =~ ^[1-9][0-9]*$ ]] || {
  echo "$BENCH_NAME: DAYS and FULL_MIB are whole numbers" >&2
  exit 2
}

bench_require_root
bench_apt btrfs-progs python3 zstd
bench_build_release
"$REPO/integration/setup.sh" >/dev/null
VENV=$CACHE/bench-venv
bench_venv "$VENV" btrfs2s3==2.1.0

WORK=$(mktemp -d /var/tmp/subvault-requests.XXXXXX)
IMG=$WORK/fs.img MNT=$WORK/mnt MOTO_STATE=$WORK/moto
PROXY_PID=
cleanup() {
  if [[ -n $PROXY_PID ]]; then
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
  fi
  SUBVAULT_MOTO_STATE=$MOTO_STATE "$REPO/integration/moto.sh" stop >/dev/null 2>&1 || true
  loopfs_umount "$MNT" || true
  loopfs_teardown "$IMG" || true
  rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

loopfs_make "$IMG" "$((FULL * 5 + 512))M"
loopfs_mount "$IMG" "$MNT"
btrfs -q subvolume create "$MNT/data"
mkdir "$MNT/snaps" "$MNT/snaps-b2s3"
head -c "$((FULL << 20))" /dev/urandom >"$MNT/data/full"

MOTO=$(SUBVAULT_MOTO_STATE=$MOTO_STATE "$REPO/integration/moto.sh" start)
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
export SUBVAULT_LOCK_DIR=$WORK/locks SUBVAULT_STATE_DIR=$WORK/state
"$CACHE/venv/bin/python" - "$MOTO" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
for bucket in ("bench", "bench-b2s3"):
    s3.create_bucket(Bucket=bucket)
PY

python3 "$HERE/s3_count_proxy.py" "$MOTO" --port-file "$WORK/proxy.port" \
  --counts-file "$WORK/proxy-exit.json" 2>"$WORK/proxy.log" &
PROXY_PID=$!
for ((i = 0; i < 100; i++)); do
  [[ -s $WORK/proxy.port ]] && break
  kill -0 "$PROXY_PID" 2>/dev/null || { cat "$WORK/proxy.log" >&2; exit 1; }
  sleep 0.1
done
[[ -s $WORK/proxy.port ]] || { echo "$BENCH_NAME: the proxy did not start" >&2; exit 1; }
ENDPOINT=http://127.0.0.1:$(<"$WORK/proxy.port")

CONFIG=$WORK/config.yaml
cat >"$CONFIG" <<EOF
timezone: UTC
sources:
  - path: $MNT/data
    snapshots: $MNT/snaps
    upload_to_remotes:
      - id: new
        preserve: 1y 3m 30d 24h
      - id: old
        preserve: 1y 3m 30d 24h
remotes:
  - id: new
    s3: {bucket: bench, prefix: new, endpoint: {endpoint_url: "$ENDPOINT", region_name: us-east-1}}
  - id: old
    single_put_max: 8MiB
    s3: {bucket: bench, prefix: old, endpoint: {endpoint_url: "$ENDPOINT", region_name: us-east-1}}
EOF
B2S3_CONFIG=$WORK/b2s3.yaml
cat >"$B2S3_CONFIG" <<EOF
timezone: UTC
sources:
  - path: $MNT/data
    snapshots: $MNT/snaps-b2s3
    upload_to_remotes:
      - id: moto
        preserve: 1y 3m 30d 24h
        pipe_through: [[zstd, "-3"]]
remotes:
  - id: moto
    s3:
      bucket: bench-b2s3
      endpoint:
        endpoint_url: $ENDPOINT
        region_name: us-east-1
        aws_access_key_id: $AWS_ACCESS_KEY_ID
        aws_secret_access_key: $AWS_SECRET_ACCESS_KEY
EOF

echo "== $DAYS daily runs of a ${FULL} MiB source (+256 KiB a day), subvault then btrfs2s3"
RUNS=$WORK/runs.jsonl B2S3_LOG=$WORK/b2s3.log
for ((day = 0; day < DAYS; day++)); do
  head -c 262144 /dev/urandom >"$MNT/data/day-$((day % 60))"
  now=$(date -u -d "2025-06-01 04:00 UTC + $day days" +%Y-%m-%dT%H:%M:%SZ)
  "$SUBVAULT_BIN" -q -c "$CONFIG" run --json --now "$now" | tr -d '\n' >>"$RUNS"
  echo >>"$RUNS"
  echo "=== day $day ($now)" >>"$B2S3_LOG"
  if ! BTRFS2S3_NOW=$now BTRFS2S3_CTIMES=$WORK/b2s3-ctimes.json COLUMNS=200 \
    "$VENV/bin/python" "$HERE/btrfs2s3_clock.py" update --force "$B2S3_CONFIG" >>"$B2S3_LOG" 2>&1; then
    echo "$BENCH_NAME: btrfs2s3 failed on day $day ($now):" >&2
    tail -n 40 "$B2S3_LOG" >&2
    exit 1
  fi
  if ((day % 50 == 49)); then echo "   day $((day + 1)) of $DAYS done"; fi
done

"$CACHE/venv/bin/python" - "$MOTO" >"$WORK/kept.json" <<'PY'
import json, sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
kept = {}
for bucket in ("bench", "bench-b2s3"):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            first, slash, _ = obj["Key"].partition("/")
            where = f"{bucket}/{first if slash else ''}"
            kept[where] = kept.get(where, 0) + 1
json.dump(kept, sys.stdout)
PY
python3 - "$ENDPOINT/__counts" >"$WORK/proxy.json" <<'PY'
import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=30).read().decode())
PY

python3 - "$RUNS" "$WORK/proxy.json" "$WORK/kept.json" <<'PY'
import collections, json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
proxy = json.load(open(sys.argv[2]))
kept = json.load(open(sys.argv[3]))
by = proxy["by_prefix"]
b2s3 = collections.Counter()
for where, counts in by.items():
    if where.startswith("bench-b2s3/"):
        b2s3.update(counts)
cols = {"subvault": collections.Counter(by.get("bench/new", {})),
        "8MiB-PUT": collections.Counter(by.get("bench/old", {})),
        "btrfs2s3": b2s3}
other = {w: c for w, c in by.items()
         if w not in ("bench/new", "bench/old") and not w.startswith("bench-b2s3/")}
kinds = sorted(set().union(*cols.values()))
print(f"{'kind':26} {'subvault':>9} {'8MiB-PUT':>9} {'btrfs2s3':>9}")
for k in kinds:
    print(f"{k:26}" + "".join(f" {c[k]:9}" for c in cols.values()))
print(f"{'total':26}" + "".join(f" {sum(c.values()):9}" for c in cols.values()))
reported = {r: collections.Counter() for r in ("new", "old")}
for run in runs:
    for remote, counts in run.get("requests", {}).items():
        reported[remote].update(counts)
for remote, col in (("new", "subvault"), ("old", "8MiB-PUT")):
    same = +reported[remote] == +cols[col]
    print(f"{col}: run --json's requests {'equal' if same else 'DIFFER from'} the proxy's"
          + ("" if same else f": run --json {dict(reported[remote])}"))
if other:
    print(f"requests outside the three prefixes: {other}")
print(f"days: {len(runs)}; objects kept at the end: subvault {kept.get('bench/new', 0)}, "
      f"8MiB-PUT {kept.get('bench/old', 0)}, "
      f"btrfs2s3 {sum(n for w, n in kept.items() if w.startswith('bench-b2s3/'))}")
PY
