#!/usr/bin/env bash
# wal-push latency: N synthetic 16 MiB WAL segments (valid long page headers, WAL-like
# compressibility), one wal-push process each, as archive_command runs them.
#
#   bench/wal-push.sh BIN [N] [local|BUCKET]   (BUCKET: an S3 bucket at $SUBVAULT_TEST_S3_ENDPOINT,
#                                               e.g. under integration/with-services.sh)
set -euo pipefail
BIN=$1; N=${2:-20}; REMOTE=${3:-local}
W=$(mktemp -d /var/tmp/walbench.XXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/pg/data/global" "$W/pg/data/pg_wal" "$W/store"
python3 - "$W" "$N" <<'PY'
import os, struct, sys, random
w, n = sys.argv[1], int(sys.argv[2])
sysid = 7434216734418238512
open(f"{w}/pg/data/global/pg_control", "wb").write(struct.pack("<Q", sysid) + bytes(8184))
seg = 16 << 20
random.seed(1)
# WAL-like content: mostly compressible records with some entropy.
body = bytearray()
while len(body) < seg:
    body += os.urandom(64) + bytes(192)
for i in range(1, n + 1):
    hdr = struct.pack("<HHIQI4xQII", 0xD110, 2, 1, i * seg, 0, sysid, seg, 8192)
    name = f"{1:08X}{0:08X}{i:08X}"
    open(f"{w}/pg/data/pg_wal/{name}", "wb").write(hdr + body[len(hdr):seg])
PY
if [[ $REMOTE == local ]]; then
cat >"$W/config.yaml" <<YAML
timezone: UTC
sources:
  - path: $W/pg
    snapshots: $W/snaps
    postgres: {connection: "host=/tmp"}
    upload_to_remotes: [{id: r, preserve: 1d}]
remotes:
  - id: r
    local: {path: $W/store}
YAML
else
cat >"$W/config.yaml" <<YAML
timezone: UTC
sources:
  - path: $W/pg
    snapshots: $W/snaps
    postgres: {connection: "host=/tmp"}
    upload_to_remotes: [{id: r, preserve: 1d}]
remotes:
  - id: r
    s3: {bucket: $REMOTE, endpoint: {endpoint_url: "$SUBVAULT_TEST_S3_ENDPOINT", region_name: us-east-1, aws_access_key_id: testing, aws_secret_access_key: testing}}
YAML
fi
cd "$W/pg/data"
start=$(date +%s.%N)
for f in pg_wal/*; do "$BIN" -c "$W/config.yaml" wal-push "$f"; done
end=$(date +%s.%N)
python3 -c "import sys; t=$end-$start; n=$N; print(f'{n} segments in {t:.2f} s: {n/t:.1f} segments/s, {1000*t/n:.0f} ms per segment')"
du -sh "$W/store" 2>/dev/null | cut -f1 | sed 's/^/stored: /'
