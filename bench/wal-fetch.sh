#!/usr/bin/env bash
# wal-fetch as restore_command: N synthetic 16 MiB WAL segments are pushed, then
# fetched one process per segment into pg_wal/RECOVERYXLOG (as PostgreSQL runs
# restore_command), with --prefetch 0 (one GET per call) and --prefetch K.
#
#   bench/wal-fetch.sh BIN [N] [K] [local|BUCKET]   (BUCKET: an S3 bucket at
#                       $SUBVAULT_TEST_S3_ENDPOINT, e.g. under integration/with-services.sh)
#
# DELAY_MS=50 (S3 only) puts a proxy in front of the endpoint for the fetches
# that holds every request chunk (a GET is one) that long: a stand-in for the
# round trip to a distant store, which is what prefetch hides (a local moto
# answers in about a millisecond). The pushes go straight to the endpoint.
set -euo pipefail
BIN=$1; N=${2:-40}; K=${3:-8}; REMOTE=${4:-local}; DELAY_MS=${DELAY_MS:-0}
W=$(mktemp -d /var/tmp/walfetch.XXXX)
PROXY=
trap '[[ -n $PROXY ]] && kill "$PROXY"; rm -rf "$W"' EXIT
DIRECT=${SUBVAULT_TEST_S3_ENDPOINT:-}
ENDPOINT=$DIRECT
if [[ $REMOTE != local && $DELAY_MS != 0 ]]; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  HOSTPORT=${DIRECT#http://}; HOSTPORT=${HOSTPORT%/}
  python3 - "$PORT" "${HOSTPORT%:*}" "${HOSTPORT##*:}" "$DELAY_MS" <<'PY' &
import asyncio, sys
lp, uh, up, delay = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) / 1000
async def pipe(r, w, d):
    try:
        while (b := await r.read(65536)):
            if d:
                await asyncio.sleep(d)
            w.write(b)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(cr, cw):
    sr, sw = await asyncio.open_connection(uh, up)
    await asyncio.gather(pipe(cr, sw, delay), pipe(sr, cw, 0))
async def main():
    async with await asyncio.start_server(handle, "127.0.0.1", lp) as s:
        await s.serve_forever()
asyncio.run(main())
PY
  PROXY=$!
  ENDPOINT=http://127.0.0.1:$PORT
  sleep 0.5
fi
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
config() { # FILE ENDPOINT
  local remote="local: {path: $W/store}"
  [[ $REMOTE == local ]] ||
    remote="s3: {bucket: $REMOTE, endpoint: {endpoint_url: \"$2\", region_name: us-east-1, aws_access_key_id: testing, aws_secret_access_key: testing}}"
  (umask 077 && cat >"$1" <<YAML
timezone: UTC
sources:
  - path: $W/pg
    snapshots: $W/snaps
    postgres: {connection: "host=/tmp"}
    upload_to_remotes: [{id: r, preserve: 1d}]
remotes:
  - id: r
    $remote
YAML
  )
}
config "$W/config.yaml" "$DIRECT"
config "$W/fetch.yaml" "$ENDPOINT"
cd "$W/pg/data"
for f in pg_wal/0*; do "$BIN" -q -c "$W/config.yaml" wal-push "$f"; done
rm -f pg_wal/0*
for k in 0 "$K"; do
  rm -rf pg_wal/.subvault-prefetch
  start=$(date +%s.%N)
  for i in $(seq 1 "$N"); do
    name=$(printf '%08X%08X%08X' 1 0 "$i")
    "$BIN" -q -c "$W/fetch.yaml" wal-fetch --prefetch "$k" "$name" pg_wal/RECOVERYXLOG
    rm pg_wal/RECOVERYXLOG
  done
  end=$(date +%s.%N)
  python3 -c "t=$end-$start; n=$N; print(f'delay ${DELAY_MS} ms, --prefetch $k: {n} segments in {t:.2f} s: {n/t:.1f} segments/s, {1000*t/n:.0f} ms per segment')"
done
