#!/usr/bin/env bash
# Benchmark: subvault's WAL archive and PITR restore next to pgBackRest's, to
# the same S3 store.
#
#   sudo bench/pg-pitr.sh [archive] [restore] [backlog]
#                                  (default: archive and restore)
#
# The store: the S3 server of the other benchmarks (bench_s3_start: garage on
# 127.0.0.1, or moto) behind a TLS terminator (stunnel, with a throwaway CA),
# because pgBackRest 2.45 speaks S3 over HTTPS only. Both tools talk to the
# same https://localhost endpoint (127.0.0.1) and check its certificate against that CA
# (subvault `verify: CA`, pgBackRest repo1-storage-ca-file); both compress
# with zstd level 3.
#
# archive: a PostgreSQL 15 cluster (pgbench scale $SCALE, on a loop btrfs)
#   archives into a plain directory under `pgbench -c 4` until it has $N real
#   WAL segments; they are then pushed one process per segment, as
#   PostgreSQL's archive_command runs them (as the postgres user), by
#     subvault wal-push, pgbackrest archive-push, and pgbackrest archive-push
#     with archive-async=y (its async process pushes ahead from
#     archive_status/*.ready, process-max=2; each call returns when its
#     segment is in the store),
#   $ROUNDS rounds, the archive emptied before each. Printed: segments per
#   second, the median and 90th percentile latency of one call, bytes stored.
#
# restore: a second cluster archives through both tools
#   (archive_command = 'subvault wal-push %p && pgbackrest archive-push %p'),
#   gets one full backup from each (subvault run, checkpoint mode;
#   pgbackrest --type=full backup), then pgbench writes $WAL_MIB MiB of WAL;
#   the target time T lies between two rows of a marker table, a few seconds
#   of pgbench before the end of the archive. Timed, $ROUNDS rounds each,
#   until the copy is promoted and accepts connections:
#     subvault restore --pitr T --start (wal-fetch with its default prefetch),
#     pgbackrest restore --type=time --target=T --target-action=promote, then
#       pg_ctl start and polling until pg_is_in_recovery() is false,
#     the same with archive-async=y (archive-get prefetches into a spool).
#   Every copy must hold exactly the first marker row and the same number of
#   pgbench_history rows, or the script fails.
#
# backlog: does wal-push keep up as PostgreSQL's archive_command? A third
#   cluster archives with archive_command = 'subvault wal-push %p' (to the
#   same TLS store), pgbench scale $SCALE; then, $ROUNDS rounds, each of
#   `pgbench -c 8 -j 2 -T $DURATION`, a heavier `pgbench -c 16 -j 2
#   -M prepared -T $DURATION`, and (unless BULK=0) a WAL-heavy one: one
#   client, each transaction TRUNCATE and INSERT of 50,000 rows (about
#   5 MiB of WAL), for $DURATION s: as much WAL as the VM writes.
#   Sampled every second while pgbench runs: the archive backlog (the
#   pg_wal/archive_status/*.ready files; the segment being pushed still
#   counts as 1) and pg_stat_archiver's archived_count and failed_count.
#   Afterwards: how long until no .ready file is left (the drain). Printed:
#   tps, WAL written (from pg_current_wal_lsn), segments written and
#   archived per second, the backlog's max, mean, value at the end of
#   pgbench and trend (least-squares slope, segments per minute), the drain
#   time and the failures; the samples go to stderr every 10 s.
#
# Environment: SCALE (default 20), N (segments, default 32), WAL_MIB (default
# 512), ROUNDS (default 3), DURATION (seconds per load in backlog, default
# 120), BULK (0: no WAL-heavy load in backlog), SUBVAULT (a binary instead of
# building the release one; bench_build_release honours CARGO_TARGET_DIR),
# BENCH_DIR (default /var/tmp/subvault-bench-pitr), BENCH_S3 (garage or
# moto), GARAGE_PORT (default 3940; RPC and TLS ports follow it). Everything
# is removed on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
SCALE=${SCALE:-20}
N=${N:-32}
WAL_MIB=${WAL_MIB:-512}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-120}
BULK=${BULK:-1}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
BENCH_DIR=${BENCH_DIR:-/var/tmp/subvault-bench-pitr}
S3_PORT=${GARAGE_PORT:-3940}
TLS_PORT=$((S3_PORT + 2))
PART_ARCHIVE=0 PART_RESTORE=0 PART_BACKLOG=0
(($#)) || set -- archive restore
for part in "$@"; do
  case $part in
    archive) PART_ARCHIVE=1 ;;
    restore) PART_RESTORE=1 ;;
    backlog) PART_BACKLOG=1 ;;
    *) echo "$BENCH_NAME: unknown part $part (archive, restore, backlog)" >&2; exit 2 ;;
  esac
done

bench_require_root
bench_apt pgbackrest zstd btrfs-progs stunnel4 openssl curl time
S3=${BENCH_S3:-}
if [[ -z $S3 ]]; then
  if [[ -x $CACHE/garage/bin/garage ]]; then S3=garage; else S3=moto; fi
fi
bench_build_release >&2
SV=$SUBVAULT_BIN

mnt=$BENCH_DIR/mnt
img=$BENCH_DIR/fs.img
sock=$BENCH_DIR/sock
tls=$BENCH_DIR/tls
pgbr_dir=$BENCH_DIR/pgbackrest
PY=$CACHE/venv/bin/python
[[ -x $PY ]] || PY=$CACHE/bench-venv/bin/python

cleanup() {
  set +e
  local d
  for d in "$mnt"/pga/data "$mnt"/pgr/data "$mnt"/pgb/data "$mnt"/rs-*/*.pgdata/data "$mnt"/rb-*; do
    [[ -f $d/postmaster.pid ]] && "$REPO/integration/pg.sh" stop "$d" 2>/dev/null
  done
  [[ -f $tls/stunnel.pid ]] && kill "$(cat "$tls/stunnel.pid")" 2>/dev/null
  bench_s3_stop "$BENCH_DIR"
  loopfs_teardown "$img"
  rm -rf "$BENCH_DIR"
}
bench_cleanup_now_and_on_exit cleanup
mkdir -p "$BENCH_DIR" "$mnt" "$sock" "$tls" "$pgbr_dir"/{log,lock,spool}
chmod 755 "$BENCH_DIR"
loopfs_make "$img" 16G
loopfs_mount "$img" "$mnt"
mkdir -p "$mnt/snapshots"
btrfs subvolume create "$mnt/pga" >/dev/null
btrfs subvolume create "$mnt/pgr" >/dev/null
btrfs subvolume create "$mnt/pgb" >/dev/null
chown -R postgres:postgres "$sock" "$pgbr_dir"

# The store, and TLS in front of it.
bench_s3_start "$BENCH_DIR" "$S3_PORT" $((S3_PORT + 1))
export AWS_EC2_METADATA_DISABLED=true
bench_tls_ca "$tls"
chmod 644 "$tls/ca.pem"
s3_hostport=${ENDPOINT#http://}
s3_hostport=${s3_hostport%/}
cat >"$tls/stunnel.conf" <<EOF
pid = $tls/stunnel.pid
foreground = no
output = $tls/stunnel.log
[s3]
accept = 127.0.0.1:$TLS_PORT
connect = $s3_hostport
cert = $tls/server.pem
key = $tls/server.key
EOF
stunnel "$tls/stunnel.conf"
for _ in $(seq 1 50); do [[ -s $tls/stunnel.pid ]] && break; sleep 0.1; done

# The two tools' configurations. Sources `pga` (archive part), `pgr`
# (restore part) and `pgb` (backlog part, subvault only) are subvolumes;
# pgBackRest has one stanza for each of the first two.
cat >"$BENCH_DIR/subvault.yaml" <<EOF
timezone: UTC
sources:
EOF
declare -A pg_port=([pga]=54341 [pgr]=54342 [pgb]=54343)
for s in pga pgr pgb; do
  cat >>"$BENCH_DIR/subvault.yaml" <<EOF
  - path: $mnt/$s
    snapshots: $mnt/snapshots
    name: $s
    postgres:
      connection: "host=127.0.0.1 port=${pg_port[$s]} user=postgres dbname=postgres"
      mode: checkpoint
    upload_to_remotes:
      - id: s3
        preserve: 1y 12m 30d 24h
        compression: {codec: zstd, level: 3}
EOF
done
cat >>"$BENCH_DIR/subvault.yaml" <<EOF
remotes:
  - id: s3
    s3:
      bucket: $BUCKET
      endpoint:
        endpoint_url: https://localhost:$TLS_PORT
        region_name: $REGION
        aws_access_key_id: $AWS_ACCESS_KEY_ID
        aws_secret_access_key: $AWS_SECRET_ACCESS_KEY
        verify: $tls/ca.pem
EOF
# wal-push and wal-fetch run as postgres, like the server does.
chown postgres:postgres "$BENCH_DIR/subvault.yaml"
chmod 600 "$BENCH_DIR/subvault.yaml"
svc() { "$SV" -q -c "$BENCH_DIR/subvault.yaml" "$@"; }

pgbr_conf() { # FILE ASYNC(y|n)
  cat >"$1" <<EOF
[global]
repo1-type=s3
repo1-path=/pgbackrest
repo1-s3-bucket=$BUCKET
repo1-s3-endpoint=localhost
repo1-storage-port=$TLS_PORT
repo1-s3-region=$REGION
repo1-s3-key=$AWS_ACCESS_KEY_ID
repo1-s3-key-secret=$AWS_SECRET_ACCESS_KEY
repo1-s3-uri-style=path
repo1-storage-ca-file=$tls/ca.pem
repo1-retention-full=9
compress-type=zst
compress-level=3
start-fast=y
lock-path=$pgbr_dir/lock
log-path=$pgbr_dir/log
log-level-console=warn
log-level-file=off
process-max=2
archive-async=$2
spool-path=$pgbr_dir/spool

[a]
pg1-path=$mnt/pga/data
pg1-port=54341
pg1-socket-path=$sock

[r]
pg1-path=$mnt/pgr/data
pg1-port=54342
pg1-socket-path=$sock
EOF
  chown postgres:postgres "$1"
  chmod 600 "$1"
}
pgbr_conf "$pgbr_dir/sync.conf" n
pgbr_conf "$pgbr_dir/async.conf" y
pgbr() { # CONF STANZA ARGS...
  local conf=$1 stanza=$2
  shift 2
  runuser -u postgres -- pgbackrest --config="$pgbr_dir/$conf.conf" --stanza="$stanza" "$@"
}

# The store's objects, through the plain endpoint (not timed).
s3() { # ls|rm REGEX: total bytes of, or delete, the keys matching REGEX
  "$PY" - "$ENDPOINT" "$REGION" "$BUCKET" "$@" <<'PY'
import re, sys, boto3
endpoint, region, bucket, op, rx = sys.argv[1:6]
c = boto3.client("s3", endpoint_url=endpoint, region_name=region)
keys, total = [], 0
for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for o in page.get("Contents", []):
        if re.search(rx, o["Key"]):
            keys.append(o["Key"])
            total += o["Size"]
if op == "rm":
    for i in range(0, len(keys), 1000):
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
print(total)
PY
}
SV_WAL='^pg[ar]\.wal/'                     # subvault: <source>.wal/<sysid>/<tli>/<file>
BR_WAL='^pgbackrest/archive/.*/[0-9A-F]{24}' # pgBackRest: archive/<stanza>/<id>/<dir>/<file>

psql_on() { local port=$1; shift; "$PG_BIN/psql" -XAt -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"; }
pgbench_on() { local port=$1; shift; "$PG_BIN/pgbench" -h 127.0.0.1 -p "$port" -U postgres "$@" postgres >/dev/null 2>&1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
# Count, seconds per segment (median, p90) of the latencies in FILE (one per line).
lat_stats() {
  sort -g "$1" | awk '{ v[NR] = $1; s += $1 }
    END { p = int(NR * 0.9 + 0.999); if (p > NR) p = NR
          printf "%d %.4f %.4f %.4f\n", NR, s, (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[p] }'
}

echo "== $(uptime)"

if ((PART_ARCHIVE)); then
  echo "== archive: a cluster writes $N real WAL segments under pgbench" >&2
  aside=$BENCH_DIR/aside
  PG_SOCKET_DIR=$sock PG_LOG=$BENCH_DIR/pga.log PG_ARCHIVE_DIR=$aside \
    "$REPO/integration/pg.sh" start "$mnt/pga/data" 54341
  pgbench_on 54341 -i -q -s "$SCALE"
  pgbr sync a stanza-create
  # The segments written by pgbench transactions (not the initial load's COPY).
  first=$(psql_on 54341 -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
  for ((i = 0; $(find "$aside" -name '0*' | sed 's,.*/,,' | awk -v f="$first" '$0 > f' | wc -l) < N; i++)); do
    ((i < 100)) || { echo "$BENCH_NAME: no $N segments after 100 pgbench runs" >&2; exit 1; }
    pgbench_on 54341 -n -c 4 -j 2 -t 2000
    psql_on 54341 -c "SELECT pg_switch_wal()" >/dev/null
    sleep 1
  done
  # pgBackRest takes WAL paths inside pg1-path only: stage them there, with
  # the archive_status/*.ready files its async mode looks for.
  "$REPO/integration/pg.sh" stop "$mnt/pga/data"
  stage=$mnt/pga/data/bench_wal
  mkdir -p "$stage/archive_status"
  find "$aside" -name '0*' | sed 's,.*/,,' | sort | awk -v f="$first" '$0 > f' | head -n "$N" |
    while read -r f; do cp "$aside/$f" "$stage/$f"; touch "$stage/archive_status/$f.ready"; done
  chown -R postgres:postgres "$stage"
  mapfile -t segs < <(find "$stage" -maxdepth 1 -name '0*' | sed 's,.*/,,' | sort)
  ((${#segs[@]} == N)) || { echo "$BENCH_DIR: only ${#segs[@]} segments staged" >&2; exit 1; }
  raw_zst=$(cat "${segs[@]/#/$stage/}" | zstd -3 -T1 -q | wc -c)
  echo "   ${segs[0]} .. ${segs[-1]}: $(mib $((N * 16 << 20))) of WAL, $(mib "$raw_zst") with zstd -3" >&2

  # push TOOL: one process per segment, each call's latency into a file.
  push_all() { # TOOL LATENCIES
    local tool=$1 out=$2 f t0 t1
    : >"$out"
    for f in "${segs[@]}"; do
      t0=$(bench_now)
      case $tool in
        subvault) (cd "$mnt/pga/data" && runuser -u postgres -- "$SV" -q -c "$BENCH_DIR/subvault.yaml" wal-push "$stage/$f") ;;
        pgbackrest) pgbr sync a archive-push "$stage/$f" ;;
        pgbackrest-async) pgbr async a archive-push "$stage/$f" ;;
      esac
      t1=$(bench_now)
      bench_secs "$t0" "$t1" 4 >>"$out"
    done
  }
  wait_async_gone() { # the async pusher exits once nothing is ready
    local i
    for ((i = 0; i < 300; i++)); do
      pgrep -u postgres -f 'archive-push:async' >/dev/null || return 0
      sleep 0.1
    done
    echo "$BENCH_NAME: pgBackRest's async archive-push is still running" >&2
    exit 1
  }
  declare -A a_rate a_p50 a_p90 a_bytes
  for r in $(seq 1 "$ROUNDS"); do
    for tool in subvault pgbackrest pgbackrest-async; do
      s3 rm "$SV_WAL" >/dev/null
      s3 rm "$BR_WAL" >/dev/null
      rm -rf "${pgbr_dir:?}/spool/archive"
      wait_async_gone
      sync
      push_all "$tool" "$BENCH_DIR/lat-$tool-$r"
      wait_async_gone
      read -r n total p50 p90 < <(lat_stats "$BENCH_DIR/lat-$tool-$r")
      rx=$SV_WAL
      [[ $tool == subvault ]] || rx=$BR_WAL
      bytes=$(s3 ls "$rx")
      a_rate[$tool]+="$(awk -v n="$n" -v t="$total" 'BEGIN { printf "%.1f", n / t }') "
      a_p50[$tool]+="$(awk -v s="$p50" 'BEGIN { printf "%.0f", s * 1000 }') "
      a_p90[$tool]+="$(awk -v s="$p90" 'BEGIN { printf "%.0f", s * 1000 }') "
      a_bytes[$tool]=$bytes
      echo "   round $r $tool: $n segments in $total s, median $p50 s, p90 $p90 s, stored $(mib "$bytes")" >&2
    done
  done
  # shellcheck disable=SC2086 # the per-round values are space-separated words
  {
    echo
    echo "Archive: $N real 16 MiB WAL segments from pgbench (scale $SCALE), one process per segment as archive_command runs them; S3 ($S3) behind TLS on 127.0.0.1; median of $ROUNDS rounds (all rounds in brackets)"
    echo
    echo "| tool | segments/s | ms per segment (median) | ms per segment (p90) | stored |"
    echo "|------|-----------:|------------------------:|---------------------:|-------:|"
    for tool in subvault pgbackrest pgbackrest-async; do
      case $tool in
        subvault) label="subvault wal-push (zstd-3)" ;;
        pgbackrest) label="pgbackrest archive-push (zst-3)" ;;
        pgbackrest-async) label="pgbackrest archive-push, archive-async=y, process-max=2" ;;
      esac
      echo "| $label | $(median ${a_rate[$tool]}) (${a_rate[$tool]% }) | $(median ${a_p50[$tool]}) (${a_p50[$tool]% }) | $(median ${a_p90[$tool]}) (${a_p90[$tool]% }) | $(mib "${a_bytes[$tool]}") |"
    done
  }
fi

if ((PART_RESTORE)); then
  echo "== restore: a cluster archiving through both tools, a full backup each, $WAL_MIB MiB of WAL" >&2
  PG_SOCKET_DIR=$sock PG_LOG=$BENCH_DIR/pgr.log \
    PG_ARCHIVE_COMMAND="$SV -q -c $BENCH_DIR/subvault.yaml wal-push %p && pgbackrest --config=$pgbr_dir/sync.conf --stanza=r archive-push %p" \
    "$REPO/integration/pg.sh" start "$mnt/pgr/data" 54342
  pgbench_on 54342 -i -q -s "$SCALE"
  psql_on 54342 -c "CREATE TABLE marks (id int, at timestamptz DEFAULT clock_timestamp())" >/dev/null
  pgbr sync r stanza-create
  t0=$(bench_now); svc run --source pgr >/dev/null; t1=$(bench_now)
  echo "   subvault run: $(bench_secs "$t0" "$t1") s" >&2
  t0=$(bench_now); pgbr sync r --type=full backup; t1=$(bench_now)
  echo "   pgbackrest full backup: $(bench_secs "$t0" "$t1") s" >&2
  start_lsn=$(psql_on 54342 -c "SELECT pg_current_wal_lsn()")
  wal_since() { psql_on 54342 -c "SELECT (pg_current_wal_lsn() - '$start_lsn'::pg_lsn)::bigint / 1048576"; }
  for ((i = 0; $(wal_since) < WAL_MIB; i++)); do
    ((i < 200)) || { echo "$BENCH_NAME: no $WAL_MIB MiB of WAL after 200 pgbench runs" >&2; exit 1; }
    pgbench_on 54342 -n -c 4 -j 2 -t 2000
  done
  psql_on 54342 -c "INSERT INTO marks VALUES (1)" >/dev/null
  sleep 0.5
  target=$(psql_on 54342 -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
  sleep 0.5
  psql_on 54342 -c "INSERT INTO marks VALUES (2)" >/dev/null
  pgbench_on 54342 -n -c 4 -j 2 -t 500
  wal_total=$(wal_since)
  last=$(psql_on 54342 -c "SELECT pg_walfile_name(pg_current_wal_lsn())")
  psql_on 54342 -c "SELECT pg_switch_wal()" >/dev/null
  for _ in $(seq 1 600); do
    done_wal=$(psql_on 54342 -c "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
    [[ $done_wal > $last || $done_wal == "$last" ]] && break
    sleep 0.5
  done
  [[ $done_wal > $last || $done_wal == "$last" ]] || { echo "$BENCH_NAME: WAL up to $last not archived" >&2; exit 1; }
  history_rows=$(psql_on 54342 -c "SELECT count(*) FROM pgbench_history h, marks m WHERE m.id = 1 AND h.mtime <= m.at")
  "$REPO/integration/pg.sh" stop "$mnt/pgr/data"
  sv_stored=$(s3 ls '^pgr\.ctim'); sv_wal=$(s3 ls '^pgr\.wal/')
  br_stored=$(s3 ls '^pgbackrest/backup/r/'); br_wal=$(s3 ls '^pgbackrest/archive/r/')
  echo "   target $target UTC, after $wal_total MiB of WAL since the backups" >&2

  check_copy() { # PORT TOOL: the copy holds marker 1 only, and pgbench_history as far as it
    local marks rows
    marks=$(psql_on "$1" -c "SELECT string_agg(id::text, ',') FROM marks")
    rows=$(psql_on "$1" -c "SELECT count(*) FROM pgbench_history h WHERE h.mtime <= (SELECT at FROM marks WHERE id = 1)")
    if [[ $marks != 1 || $rows != "$history_rows" ]]; then
      echo "$BENCH_NAME: $2's copy has markers '$marks' (want 1) and $rows history rows before it (want $history_rows)" >&2
      exit 1
    fi
  }
  wait_promoted() { # PORT LOG
    local i
    for ((i = 0; i < 36000; i++)); do
      [[ $(psql_on "$1" -c "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]] && return 0
      if grep -q "FATAL\|PANIC" "$2" 2>/dev/null; then tail -n 20 "$2" >&2; exit 1; fi
      sleep 0.1
    done
    echo "$BENCH_NAME: the copy on port $1 did not finish recovery" >&2
    exit 1
  }
  declare -A r_secs
  for r in $(seq 1 "$ROUNDS"); do
    for tool in subvault pgbackrest pgbackrest-async; do
      sync; echo 3 >/proc/sys/vm/drop_caches
      rm -rf "${pgbr_dir:?}/spool/archive"
      case $tool in
        subvault)
          t0=$(bench_now)
          mkdir -p "$mnt/rs-$r"
          svc restore --to "$mnt/rs-$r" --source pgr --pitr "$target" --start --port 54350 \
            --pg-setting "unix_socket_directories=$sock" >"$BENCH_DIR/rs-$r.out" 2>&1 ||
            { cat "$BENCH_DIR/rs-$r.out" >&2; exit 1; }
          t1=$(bench_now)
          check_copy 54350 subvault
          copy=$(echo "$mnt/rs-$r"/*.pgdata/data)
          "$REPO/integration/pg.sh" stop "$copy"
          for v in "$mnt/rs-$r"/*; do btrfs subvolume delete "$v" >/dev/null; done
          rm -rf "$mnt/rs-$r"
          ;;
        pgbackrest*)
          conf=sync
          [[ $tool == pgbackrest-async ]] && conf=async
          copy=$mnt/rb-$r-$conf
          log=$BENCH_DIR/rb-$r-$conf.log
          mkdir -p "$copy" && chown postgres:postgres "$copy" && chmod 700 "$copy"
          touch "$log" && chown postgres "$log"
          t0=$(bench_now)
          pgbr "$conf" r restore --pg1-path="$copy" --type=time --target="$target+00" --target-action=promote
          runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$copy" -l "$log" -o "-c port=54351 -c listen_addresses=127.0.0.1 -c unix_socket_directories=$sock -c archive_mode=off -c logging_collector=off" start >/dev/null
          wait_promoted 54351 "$log"
          t1=$(bench_now)
          check_copy 54351 "$tool"
          "$REPO/integration/pg.sh" stop "$copy"
          rm -rf "$copy"
          ;;
      esac
      secs=$(bench_secs "$t0" "$t1" 1)
      r_secs[$tool]+="$secs "
      echo "   round $r $tool: $secs s" >&2
    done
  done
  # shellcheck disable=SC2086 # the per-round values are space-separated words
  {
    echo
    echo "PITR restore: pgbench scale $SCALE, one full backup, then $wal_total MiB of WAL; target $target UTC, $(mib "$(( (sv_wal + br_wal) / 2 ))")-ish archived; page cache dropped before each; median of $ROUNDS rounds (all rounds in brackets)"
    echo
    echo "| tool | restore + replay + promote | base backup stored | WAL archive stored |"
    echo "|------|---------------------------:|-------------------:|-------------------:|"
    echo "| subvault restore --pitr --start (wal-fetch, prefetch 8) | $(median ${r_secs[subvault]}) s (${r_secs[subvault]% }) | $(mib "$sv_stored") | $(mib "$sv_wal") |"
    echo "| pgbackrest restore --type=time, pg_ctl start | $(median ${r_secs[pgbackrest]}) s (${r_secs[pgbackrest]% }) | $(mib "$br_stored") | $(mib "$br_wal") |"
    echo "| the same, archive-async=y (archive-get prefetch) | $(median ${r_secs[pgbackrest-async]}) s (${r_secs[pgbackrest-async]% }) | | |"
  }
fi
if ((PART_BACKLOG)); then
  echo "== backlog: archive_command = subvault wal-push under pgbench, $ROUNDS rounds of $DURATION s per load" >&2
  bdata=$mnt/pgb/data
  PG_SOCKET_DIR=$sock PG_LOG=$BENCH_DIR/pgb.log \
    PG_ARCHIVE_COMMAND="$SV -q -c $BENCH_DIR/subvault.yaml wal-push %p" \
    "$REPO/integration/pg.sh" start "$bdata" 54343
  pgbench_on 54343 -i -q -s "$SCALE"
  ready_count() { find "$bdata/pg_wal/archive_status" -name '*.ready' | wc -l; }
  # archived_count failed_count
  archiver() { psql_on 54343 -F ' ' -c "SELECT archived_count, failed_count FROM pg_stat_archiver"; }
  lsn_bytes() { psql_on 54343 -c "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"; }
  # Until no segment waits: seconds, or fail after 900 s.
  drain() {
    local t0 i
    t0=$(bench_now)
    for ((i = 0; i < 9000; i++)); do
      (($(ready_count) == 0)) && { bench_secs "$t0" "$(bench_now)" 1; return 0; }
      sleep 0.1
    done
    echo "$BENCH_NAME: the archive backlog did not drain in 900 s ($(ready_count) .ready files)" >&2
    exit 1
  }
  psql_on 54343 -c "CREATE TABLE bulk (id int, pad text)" >/dev/null
  echo 'TRUNCATE bulk; INSERT INTO bulk SELECT g, md5(g::text) FROM generate_series(1, 50000) g;' \
    >"$BENCH_DIR/bulk.sql"
  loads=(c8 c16p)
  ((BULK)) && loads+=(bulk)
  echo "   initial load archived after $(drain) s" >&2
  declare -a b_rows
  for r in $(seq 1 "$ROUNDS"); do
    for load in "${loads[@]}"; do
      case $load in
        c8) args=(-c 8 -j 2) label="pgbench -c 8 -j 2" ;;
        c16p) args=(-c 16 -j 2 -M prepared) label="pgbench -c 16 -j 2 -M prepared" ;;
        bulk) args=(-c 1 -f "$BENCH_DIR/bulk.sql") label="WAL-heavy: TRUNCATE + INSERT 50k rows, -c 1" ;;
      esac
      samples=$BENCH_DIR/backlog-$load-$r
      read -r arch0 fail0 < <(archiver)
      lsn0=$(lsn_bytes)
      t0=$(bench_now)
      "$PG_BIN/pgbench" -h 127.0.0.1 -p 54343 -U postgres -n "${args[@]}" -T "$DURATION" postgres \
        >"$samples.pgbench" 2>&1 &
      pgb_pid=$!
      # One sample a second: seconds since start, backlog, archived, failed.
      : >"$samples"
      while kill -0 "$pgb_pid" 2>/dev/null; do
        read -r a f < <(archiver)
        echo "$(bench_secs "$t0" "$(bench_now)" 1) $(ready_count) $((a - arch0)) $((f - fail0))" >>"$samples"
        sleep 1
      done
      wait "$pgb_pid" || { tail -n 5 "$samples.pgbench" >&2; exit 1; }
      t1=$(bench_now)
      lsn1=$(lsn_bytes)
      at_end=$(ready_count)
      read -r arch1 _ < <(archiver)
      drain_s=$(drain)
      read -r arch2 fail2 < <(archiver)
      secs=$(bench_secs "$t0" "$t1" 1)
      tps=$(awk '/^tps/ { printf "%.0f", $3 }' "$samples.pgbench")
      awk '(NR - 1) % 10 == 0 { printf "   %6.1f s: backlog %d, archived %d, failed %d\n", $1, $2, $3, $4 }' "$samples" >&2
      # max, mean, least-squares slope (segments per minute) of the backlog.
      read -r bmax bmean slope < <(awk '{ n++; x += $1; y += $2; xx += $1 * $1; xy += $1 * $2; if ($2 > m) m = $2 }
        END { d = n * xx - x * x; printf "%d %.1f %.2f\n", m, y / n, d ? 60 * (n * xy - x * y) / d : 0 }' "$samples")
      row=$(awk -v b=$((lsn1 - lsn0)) -v s="$secs" -v a=$((arch1 - arch0)) -v tps="$tps" \
        'BEGIN { printf "%.0f | %.0f | %.2f | %.2f", tps, b / 1048576, b / 16777216 / s, a / s }')
      b_rows+=("| $r | $label | $row | $bmax / $bmean / $at_end | $slope | $drain_s s | $((fail2 - fail0)) |")
      echo "   round $r $label: ${secs} s, $tps tps, $(mib $((lsn1 - lsn0))) of WAL, $((arch1 - arch0)) segments archived during pgbench ($((arch2 - arch0)) with the drain), backlog max $bmax mean $bmean at end $at_end slope $slope/min, drained in $drain_s s, $((fail2 - fail0)) failed" >&2
    done
  done
  {
    echo
    echo "Archive backlog: archive_command = subvault wal-push (one process per segment, zstd-3) to S3 ($S3) behind TLS on 127.0.0.1; pgbench scale $SCALE, $DURATION s per run; backlog = pg_wal/archive_status/*.ready sampled every second (the segment being pushed counts)"
    echo
    echo "| round | load | tps | WAL MiB | segments written/s | segments archived/s | backlog max / mean / at end | backlog trend (segments/min) | drain after pgbench | failed |"
    echo "|------:|------|----:|--------:|-------------------:|--------------------:|----------------------------:|-----------------------------:|--------------------:|-------:|"
    printf '%s\n' "${b_rows[@]}"
  }
  "$REPO/integration/pg.sh" stop "$bdata"
fi
echo
echo "== $(uptime)"
