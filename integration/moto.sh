#!/usr/bin/env bash
# Starts or stops a moto S3 server on 127.0.0.1 for the tests.
#
#   integration/moto.sh start   # prints the endpoint URL (http://127.0.0.1:PORT)
#   integration/moto.sh stop
#   integration/moto.sh status  # exit 0 and print the endpoint when running
#
# Environment:
#   SUBVAULT_CACHE       where setup.sh put the virtualenv (default /var/cache/subvault)
#   SUBVAULT_MOTO_STATE  state dir holding pid, port and log
#                        (default /var/tmp/subvault-test/moto); give each
#                        concurrent user its own (with-services.sh does)
set -euo pipefail

CACHE=${SUBVAULT_CACHE:-/var/cache/subvault}
VENV=$CACHE/venv
STATE=${SUBVAULT_MOTO_STATE:-/var/tmp/subvault-test/moto}

log() { printf 'moto: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Whether the pid in the state dir is alive and really our moto_server (a
# recycled pid must never be killed).
running_pid() {
  local pid
  [[ -f $STATE/pid ]] || return 1
  pid=$(<"$STATE/pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q moto_server || return 1
  printf '%s\n' "$pid"
}

# A port nobody listens on right now (the kernel picks it).
free_port() {
  "$VENV/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Whether moto answers an S3 request (ListBuckets) on the port.
answers() {
  "$VENV/bin/python" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2).read()
EOF
}

start() {
  if running_pid >/dev/null; then
    printf 'http://127.0.0.1:%s\n' "$(<"$STATE/port")"
    return 0
  fi
  [[ -x $VENV/bin/moto_server ]] || die "$VENV/bin/moto_server missing: run integration/setup.sh"
  mkdir -p "$STATE"
  local attempt port pid i
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    # Another process may grab the port between the check and moto's bind;
    # then moto exits and we try another one.
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" </dev/null >"$STATE/log" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$STATE/pid"
    printf '%s\n' "$port" >"$STATE/port"
    for ((i = 0; i < 300; i++)); do
      if ! kill -0 "$pid" 2>/dev/null; then
        log "moto_server on port $port exited (attempt $attempt): $(tail -n 3 "$STATE/log")"
        break
      fi
      if answers "$port"; then
        log "started pid $pid on 127.0.0.1:$port"
        printf 'http://127.0.0.1:%s\n' "$port"
        return 0
      fi
      sleep 0.1
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -f "$STATE/pid" "$STATE/port"
  die "moto_server did not come up; last log: $(tail -n 20 "$STATE/log" 2>/dev/null)"
}

stop() {
  local pid i
  if pid=$(running_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "pid $pid ignored SIGTERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    # Quiet on success: the test summary should stay the last line of a run.
  fi
  rm -f "$STATE/pid" "$STATE/port"
}

status() {
  if running_pid >/dev/null; then
    printf 'http://127.0.0.1:%s\n' "$(<"$STATE/port")"
  else
    log "not running (state dir $STATE)"
    return 1
  fi
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 start|stop|status" ;;
esac
