#!/usr/bin/env bash
# What one short-lived subvault process pays for TLS: `wal-push` and
# `wal-fetch` are one process per WAL segment, so a per-process cost counts.
#
#   bench/tls-startup.sh [RUNS]     (default: 20)
#
# Starts two tiny S3 stand-ins on 127.0.0.1 that answer every request with an
# empty ListObjectsV2 page, one over HTTPS (a throwaway CA and a leaf
# certificate for 127.0.0.1) and one over plain HTTP, then runs `subvault list`
# against each RUNS times (one ListObjectsV2 each) and prints the mean CPU
# milliseconds (user + system, of the process) and the median wall
# milliseconds, and the same for `curl` over HTTPS. The servers are Python:
# their own share of the wall time is the same for every client, so read the
# CPU column, and the HTTPS-HTTP difference. SUBVAULT=/path/to/subvault
# measures another binary.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
RUNS=${1:-20}
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || {
  echo "$BENCH_NAME: RUNS is a whole number, not '$RUNS'" >&2
  exit 2
}

bench_apt openssl python3 curl
bench_build_release

WORK=$(mktemp -d /var/tmp/subvault-tls.XXXXXX)
SERVERS=()
cleanup() {
  for pid in "${SERVERS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf -- "$WORK"
}
trap cleanup EXIT

cd "$WORK"
bench_tls_ca "$WORK"

# MODE (tls|plain) PORTFILE: serves until killed, writes its port to PORTFILE.
cat >server.py <<'PY'
import http.server, ssl, sys
mode, portfile = sys.argv[1], sys.argv[2]
BODY = (b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name>'
        b'<Prefix></Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys>'
        b'<IsTruncated>false</IsTruncated></ListBucketResult>')
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if mode == "tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain("server.pem", "server.key")
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
open(portfile, "w").write(str(server.server_address[1]))
server.serve_forever()
PY
for mode in tls plain; do
  python3 server.py "$mode" "$mode.port" &
  SERVERS+=($!)
done
for mode in tls plain; do
  for _ in $(seq 50); do [[ -s $mode.port ]] && break; sleep 0.1; done
  [[ -s $mode.port ]] || { echo "$BENCH_NAME: the $mode server did not start" >&2; exit 1; }
done

config() { # URL EXTRA
  cat <<EOF
timezone: UTC
sources:
  - path: $WORK/no-source
    snapshots: $WORK/no-snapshots
    upload_to_remotes: [{id: s3, preserve: 1d}]
remotes:
  - id: s3
    s3:
      bucket: b
      prefix: ""
      endpoint:
        endpoint_url: $1
        region_name: us-east-1
        aws_access_key_id: AKIDBENCH
        aws_secret_access_key: bench-secret
        force_path_style: true
        $2
EOF
}
(umask 077 && config "https://127.0.0.1:$(cat tls.port)" "verify: $WORK/ca.pem" >tls.yaml)
(umask 077 && config "http://127.0.0.1:$(cat plain.port)" "" >plain.yaml)
export SUBVAULT_STATE_DIR=$WORK/state SUBVAULT_LOCK_DIR=$WORK/locks

python3 - "$RUNS" "$SUBVAULT_BIN" "$WORK" "$(cat tls.port)" <<'PY'
import os, resource, statistics, subprocess, sys, time
runs, binary, work, tls_port = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def measure(cmd):
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.mean(cpus) * 1000, statistics.median(walls) * 1000
rows = [
    ("subvault list, HTTPS", [binary, "-q", "-c", f"{work}/tls.yaml", "list"]),
    ("subvault list, HTTP", [binary, "-q", "-c", f"{work}/plain.yaml", "list"]),
    ("curl, HTTPS", ["curl", "-sf", "-o", "/dev/null", "--cacert", f"{work}/ca.pem",
                     f"https://127.0.0.1:{tls_port}/b?list-type=2"]),
]
print(f"{'client':24} {'cpu_ms':>8} {'wall_ms':>8}   ({runs} runs each)")
for name, cmd in rows:
    cpu, wall = measure(cmd)
    print(f"{name:24} {cpu:8.1f} {wall:8.1f}")
PY
