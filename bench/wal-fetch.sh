#!/usr/bin/env bash
# wal-fetch as restore_command: N synthetic 16 MiB WAL segments are pushed, then
# fetched one process per segment into pg_wal/RECOVERYXLOG (as PostgreSQL runs
# restore_command), with --prefetch 0 (one GET per call) and --prefetch K.
#
#   bench/wal-fetch.sh BIN [N] [K] [local|BUCKET]   (BUCKET: an S3 bucket at
#                       $SUBVAULT_TEST_S3_ENDPOINT, e.g. under integration/with-services.sh)
set -euo pipefail
BIN=$1; N=${2:-40}; K=${3:-8}; REMOTE=${4:-local}
W=$(mktemp -d /var/tmp/walfetch.XXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/pg/data/global" "$W/pg/data/pg_wal" "$W/store"
python3 - "$W" "$N" <<'PY'
import os, struct, sys
w, n = sys.argv[1], int(sys.argv[2])
sysid = 7434216734418238512
open(f"{w}/pg/data/global/pg_control", "wb").write(struct.pack("<Q", sysid) + bytes(8184))
seg = 16 << 20
body = bytearray()
while len(body) < seg:
    body += os.urandom(64) + bytes(192)
for i in range(1, n + 1):
    hdr = struct.pack("<HHIQI4xQII", 0xD110, 2, 1, i * seg, 0, sysid, seg, 8192)
    open(f"{w}/pg/data/pg_wal/{1:08X}{0:08X}{i:08X}", "wb").write(hdr + body[len(hdr):seg])
PY
if [[ $REMOTE == local ]]; then
  REMOTE_YAML="local: {path: $W/store}"
else
  REMOTE_YAML="s3: {bucket: $REMOTE, endpoint: {endpoint_url: \"$SUBVAULT_TEST_S3_ENDPOINT\", region_name: us-east-1, aws_access_key_id: testing, aws_secret_access_key: testing}}"
fi
cat >"$W/config.yaml" <<YAML
timezone: UTC
sources:
  - path: $W/pg
    snapshots: $W/snaps
    postgres: {connection: "host=/tmp"}
    upload_to_remotes: [{id: r, preserve: 1d}]
remotes:
  - id: r
    $REMOTE_YAML
YAML
cd "$W/pg/data"
for f in pg_wal/0*; do "$BIN" -q -c "$W/config.yaml" wal-push "$f"; done
rm -f pg_wal/0*
for k in 0 "$K"; do
  rm -rf pg_wal/.subvault-prefetch
  start=$(date +%s.%N)
  for i in $(seq 1 "$N"); do
    name=$(printf '%08X%08X%08X' 1 0 "$i")
    "$BIN" -q -c "$W/config.yaml" wal-fetch --prefetch "$k" "$name" pg_wal/RECOVERYXLOG
    rm pg_wal/RECOVERYXLOG
  done
  end=$(date +%s.%N)
  python3 -c "t=$end-$start; n=$N; print(f'--prefetch $k: {n} segments in {t:.2f} s: {n/t:.1f} segments/s, {1000*t/n:.0f} ms per segment')"
done
