# shellcheck shell=bash
# The shared library of the benchmarks in bench/. Each one starts with
#
#   HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
#   source "$HERE/lib.sh"
#
# Sourcing it sets REPO (the checkout), CACHE (${SUBVAULT_CACHE:-/var/cache/subvault})
# and BENCH_NAME (bench/NAME.sh, for messages), puts ~/.cargo/bin on PATH when
# cargo is not there yet, sources integration/loopfs.sh (loopfs_make,
# loopfs_mount, loopfs_umount, loopfs_teardown) and defines:
#
#   bench_require_root         exit 1 unless root
#   bench_apt PKG...           apt-get install the Debian packages not installed yet
#   bench_venv DIR SPEC...     a virtualenv in DIR with the pip SPECs, made when
#                              DIR/bin/python is missing
#   bench_build_release        cargo build --release of subvault and set
#                              SUBVAULT_BIN to the binary; when $SUBVAULT names a
#                              binary, that one is used and nothing is built
#   bench_timed [-e ERR] TIMES OUT CMD...
#                              run CMD under GNU time, stdout (and stderr, or
#                              into ERR with -e) into OUT; TIMES gets one line
#                              "SECONDS PEAK_RSS_KIB WALL" (%e %M %E: 12.34
#                              56789 0:12.34). When CMD fails: its command line
#                              and the end of its output on stderr, then exit 1
#   bench_time_field TIMES seconds|rss_kib|wall
#                              one field of such a TIMES file
#   bench_now                  the time now in seconds (date +%s.%N)
#   bench_secs START END [DECIMALS]
#                              END - START, with 2 decimals unless told
#   median VALUE...            the median of any number of values: the middle
#                              one, or the mean of the two middle ones
#                              (printed exactly) for an even count; fails on none
#   bench_s3_start DIR PORT RPC_PORT
#                              start the S3 server $S3 names (garage, via
#                              bench/garage.sh on PORT and RPC_PORT, or moto)
#                              with its state in DIR; sets ENDPOINT, BUCKET and
#                              REGION (moto: test credentials, bucket `bench`)
#   bench_s3_stop DIR          stop the server bench_s3_start started in DIR
#   bench_tls_ca DIR           a throwaway CA (DIR/ca.pem) and a server
#                              certificate it signed for localhost and
#                              127.0.0.1 (DIR/server.pem, DIR/server.key)
#   bench_cleanup_now_and_on_exit FN
#                              run FN on exit, Ctrl-C (exit 130) and SIGTERM
#                              (exit 143), and once now in a subshell (so FN's
#                              `set +e` does not outlive it) to clear what an
#                              interrupted earlier run left behind

BENCH_NAME=bench/$(basename "$0")
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC2034 # for the scripts that source this
CACHE=${SUBVAULT_CACHE:-/var/cache/subvault}
if ! command -v cargo >/dev/null && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
  PATH=$PATH:${HOME:-/root}/.cargo/bin
fi
# shellcheck source-path=SCRIPTDIR source=../integration/loopfs.sh
source "$REPO/integration/loopfs.sh"

bench_require_root() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "$BENCH_NAME: run as root (loop devices, mounts): sudo $0" >&2
    exit 1
  fi
}

bench_apt() { # PKG...
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  echo "$BENCH_NAME: installing ${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

bench_venv() { # DIR SPEC...
  local dir=$1
  shift
  [[ -x $dir/bin/python ]] && return 0
  echo "$BENCH_NAME: making a virtualenv in $dir with $*" >&2
  bench_apt python3-venv
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$@" || {
    rm -rf "$dir"
    return 1
  }
}

bench_build_release() {
  if [[ -n ${SUBVAULT:-} ]]; then
    SUBVAULT_BIN=$SUBVAULT
  else
    echo "== building subvault (release)"
    (cd "$REPO" && cargo build --release --quiet)
    SUBVAULT_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/subvault
  fi
  [[ -x $SUBVAULT_BIN ]] || { echo "$BENCH_NAME: no subvault binary at $SUBVAULT_BIN" >&2; exit 1; }
}

bench_timed() { # [-e ERR] TIMES OUT CMD...
  local err=
  if [[ $1 == -e ]]; then
    err=$2
    shift 2
  fi
  local times=$1 out=$2 status=0
  shift 2
  if [[ -n $err ]]; then
    /usr/bin/time -f '%e %M %E' -o "$times" "$@" >"$out" 2>"$err" || status=$?
  else
    /usr/bin/time -f '%e %M %E' -o "$times" "$@" >"$out" 2>&1 || status=$?
  fi
  if ((status != 0)); then
    echo "$BENCH_NAME: failed (exit status $status): $*" >&2
    tail -n 40 "${err:-$out}" >&2
    exit 1
  fi
}

bench_time_field() { # TIMES seconds|rss_kib|wall
  local seconds rss wall
  # GNU time puts "Command exited with non-zero status N" first on failure.
  read -r seconds rss wall < <(tail -n 1 "$1")
  case $2 in
    seconds) echo "$seconds" ;;
    rss_kib) echo "$rss" ;;
    wall) echo "$wall" ;;
    *) echo "bench_time_field: unknown field $2" >&2; return 2 ;;
  esac
}

bench_now() { date +%s.%N; }

bench_tls_ca() { # DIR
  local dir=$1
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n') \
    -out "$dir/server.pem" 2>/dev/null
}

bench_cleanup_now_and_on_exit() { # FN
  # shellcheck disable=SC2064 # FN is fixed when the trap is set, on purpose
  trap "$1" EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  ("$1")
}

bench_secs() { # START END [DECIMALS]
  awk -v a="$1" -v b="$2" -v d="${3:-2}" 'BEGIN { printf "%.*f\n", d, b - a }'
}

median() { # VALUE...
  (($#)) || { echo "median: no values" >&2; return 1; }
  printf '%s\n' "$@" | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR % 2) { print v[(NR + 1) / 2]; exit }
      a = v[NR / 2]; b = v[NR / 2 + 1]
      # Exactly: one decimal more than the longer of the two, less trailing zeros.
      d = 0
      if (index(a, ".")) d = length(a) - index(a, ".")
      if (index(b, ".") && length(b) - index(b, ".") > d) d = length(b) - index(b, ".")
      m = sprintf("%.*f", d + 1, (a + b) / 2)
      sub(/0+$/, "", m); sub(/\.$/, "", m)
      print m
    }'
}

bench_s3_start() { # DIR PORT RPC_PORT
  if [[ $S3 == garage ]]; then
    eval "$(GARAGE_PORT=$2 GARAGE_RPC_PORT=$3 "$REPO/bench/garage.sh" start "$1/garage")"
    ENDPOINT=$GARAGE_ENDPOINT BUCKET=$GARAGE_BUCKET REGION=garage
  else
    echo "== garage is not installed ($CACHE/garage/bin/garage): using moto"
    ENDPOINT=$(SUBVAULT_MOTO_STATE=$1/moto "$REPO/integration/moto.sh" start)
    export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
    BUCKET=bench REGION=us-east-1
    "$CACHE/venv/bin/python" - "$ENDPOINT" <<'PY'
import sys, boto3
boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1").create_bucket(Bucket="bench")
PY
  fi
}

bench_s3_stop() { # DIR
  if [[ $S3 == garage ]]; then "$REPO/bench/garage.sh" stop "$1/garage"; fi
  if [[ $S3 == moto ]]; then SUBVAULT_MOTO_STATE=$1/moto "$REPO/integration/moto.sh" stop >/dev/null 2>&1; fi
}
