#!/usr/bin/env bash
# Requests a year of backups costs (issue 21): subvault measured, btrfs2s3
# computed from what its code does.
#
#   sudo bench/requests.sh [DAYS] [FULL_MIB]     (default: 400 50)
#
# A source of FULL_MIB random bytes gets ~256 KiB more every day; `subvault
# run --now` once a day for DAYS simulated days (policy 1y 3m 30d 24h) backs
# it up to two remotes in one moto bucket: `new` with the default
# single_put_max (64 MiB) and `old` with single_put_max: 8MiB (how subvault
# uploaded before). The requests are what `run --json` reports per remote,
# which the requests integration test checks against what a proxy in front of
# the S3 server sees. btrfs2s3 (its _internal/planner.py and
# stream_uploader.py) makes, per run: one ListObjectsV2 page per 1,000 keys,
# per new backup one PutObject (parts of 5 GiB are spooled to temp files, so
# anything under 5 GiB is one PutObject; above, a multipart upload of 5 GiB
# parts), no read-back, and one DeleteObjects per 1,000 deleted keys; the
# script computes that from the same runs' uploads and deletions. Prints the
# totals per request kind.
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
bench_apt btrfs-progs python3
bench_build_release
"$REPO/integration/setup.sh" >/dev/null

WORK=$(mktemp -d /var/tmp/subvault-requests.XXXXXX)
IMG=$WORK/fs.img MNT=$WORK/mnt MOTO_STATE=$WORK/moto
cleanup() {
  SUBVAULT_MOTO_STATE=$MOTO_STATE "$REPO/integration/moto.sh" stop >/dev/null 2>&1 || true
  loopfs_umount "$MNT" || true
  loopfs_teardown "$IMG" || true
  rm -rf -- "$WORK"
}
trap cleanup EXIT

loopfs_make "$IMG" "$((FULL * 3 + 512))M"
loopfs_mount "$IMG" "$MNT"
btrfs -q subvolume create "$MNT/data"
mkdir "$MNT/snaps"
head -c "$((FULL << 20))" /dev/urandom >"$MNT/data/full"

ENDPOINT=$(SUBVAULT_MOTO_STATE=$MOTO_STATE "$REPO/integration/moto.sh" start)
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true
export SUBVAULT_LOCK_DIR=$WORK/locks SUBVAULT_STATE_DIR=$WORK/state
"$CACHE/venv/bin/python" - "$ENDPOINT" <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").create_bucket(Bucket="bench")
PY

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

echo "== $DAYS daily runs of a ${FULL} MiB source (+256 KiB a day)"
RUNS=$WORK/runs.jsonl
for ((day = 0; day < DAYS; day++)); do
  head -c 262144 /dev/urandom >"$MNT/data/day-$((day % 60))"
  now=$(date -u -d "2025-06-01 04:00 UTC + $day days" +%Y-%m-%dT%H:%M:%SZ)
  "$SUBVAULT_BIN" -q -c "$CONFIG" run --json --now "$now" | tr -d '\n' >>"$RUNS"
  echo >>"$RUNS"
done

python3 - "$RUNS" <<'PY'
import collections, json, math, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
totals = {r: collections.Counter() for r in ("new", "old")}
b2s3 = collections.Counter()
keys = 0  # btrfs2s3 lists the bucket before each run: pages of 1,000 keys
for run in runs:
    for remote, counts in run.get("requests", {}).items():
        totals[remote].update(counts)
    b2s3["ListObjectsV2"] += max(1, math.ceil(keys / 1000))
    for src in run["sources"]:
        for rem in src["remotes"]:
            if rem["remote"] != "new":
                continue
            for up in rem["uploaded"]:
                size = up["bytes"]
                if size < 5 << 30:
                    b2s3["PutObject"] += 1
                else:
                    b2s3["CreateMultipartUpload"] += 1
                    b2s3["UploadPart"] += math.ceil(size / (5 << 30))
                    b2s3["CompleteMultipartUpload"] += 1
            deleted = len(rem["deleted"])
            b2s3["DeleteObjects"] += math.ceil(deleted / 1000)
            keys += len(rem["uploaded"]) - deleted
kinds = sorted(set(totals["new"]) | set(totals["old"]) | set(b2s3))
print(f"{'kind':26} {'subvault':>9} {'8MiB-PUT':>9} {'btrfs2s3':>9}")
for k in kinds:
    print(f"{k:26} {totals['new'][k]:9} {totals['old'][k]:9} {b2s3[k]:9}")
print(f"{'total':26} {sum(totals['new'].values()):9} {sum(totals['old'].values()):9} "
      f"{sum(b2s3.values()):9}")
print(f"runs: {len(runs)}; objects kept at the end: {keys}")
PY
