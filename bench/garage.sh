#!/usr/bin/env bash
# A single-node garage S3 server on 127.0.0.1 for the benchmarks (moto is too
# slow to measure an uploader with).
#
#   bench/garage.sh install              cargo install garage (~13 min, once)
#   bench/garage.sh start DIR            start it with its data under DIR; prints
#                                        export lines for the endpoint, keys, bucket
#   bench/garage.sh stop DIR             stop it and wait until it is gone (idempotent)
#
# The binary lives in ${SUBVAULT_CACHE:-/var/cache/subvault}/garage/bin.
# Data compression is off (compression_level = "none") so the server does not
# compete with the client for CPU on a small machine.
set -euo pipefail

CACHE=${SUBVAULT_CACHE:-/var/cache/subvault}
GARAGE=$CACHE/garage/bin/garage
PORT=${GARAGE_PORT:-3900}
RPC_PORT=${GARAGE_RPC_PORT:-3901}
ACCESS_KEY=GK0123456789abcdef01234567
SECRET_KEY=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
BUCKET=bench

install() {
  if [[ -x $GARAGE ]]; then
    return
  fi
  echo "garage.sh: installing garage with cargo (about 13 minutes on 2 cores)" >&2
  cargo install --locked garage --root "$CACHE/garage" >&2
}

start() {
  local dir=$1
  install
  mkdir -p "$dir/meta" "$dir/data"
  cat >"$dir/garage.toml" <<EOF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
compression_level = "none"
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$PORT"
root_domain = ".s3.garage.localhost"
EOF
  GARAGE_DEFAULT_ACCESS_KEY=$ACCESS_KEY GARAGE_DEFAULT_SECRET_KEY=$SECRET_KEY \
    GARAGE_DEFAULT_BUCKET=$BUCKET RUST_LOG=warn \
    "$GARAGE" -c "$dir/garage.toml" server --single-node --default-bucket \
    >"$dir/garage.log" 2>&1 &
  echo $! >"$dir/garage.pid"
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$PORT/"; then
      # The default bucket and key appear just after the listener.
      sleep 1
      echo "export AWS_ACCESS_KEY_ID=$ACCESS_KEY AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=garage"
      echo "export GARAGE_ENDPOINT=http://127.0.0.1:$PORT GARAGE_BUCKET=$BUCKET"
      return
    fi
    sleep 0.2
  done
  echo "garage.sh: garage did not start; its log:" >&2
  cat "$dir/garage.log" >&2
  stop "$dir"
  exit 1
}

# Stops the server and waits until it is gone (SIGKILL after 10 s), so that
# callers can remove DIR right after. A pid that is no longer garage's (the
# server died and the pid was reused) is left alone.
stop() {
  local dir=$1 pid i
  [[ -f $dir/garage.pid ]] || return 0
  pid=$(<"$dir/garage.pid")
  if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q garage; then
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/garage.pid"
}

case ${1:-} in
  install) install ;;
  start) start "${2:?usage: garage.sh start DIR}" ;;
  stop) stop "${2:?usage: garage.sh stop DIR}" ;;
  *)
    echo "usage: garage.sh install|start DIR|stop DIR" >&2
    exit 2
    ;;
esac
