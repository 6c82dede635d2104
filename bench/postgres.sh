#!/usr/bin/env bash
# Benchmark: subvault's PostgreSQL backups next to what an operator would do instead.
#
#   sudo bench/postgres.sh            (scale 110: a ~1.6 GB pgbench database)
#
# One PostgreSQL 15 cluster in a subvolume of a loop-mounted btrfs, filled with
# `pgbench -i -s $SCALE`. Measured, each as wall time and bytes stored:
#   1. full:        `subvault run` (checkpoint mode, zstd-3, a local-directory remote),
#                   `pg_basebackup -Ft -X fetch -D - | zstd -3 -T0`,
#                   pgBackRest full backup (local posix repository, compress-type=zst)
#   2. `pgbench -c 4 -t 2500` (10,000 transactions)
#   3. incremental: `subvault run` (a btrfs send relative to the first snapshot),
#                   pg_basebackup again (it has no incrementals before PostgreSQL 17),
#                   pgBackRest incremental backup
# pgBackRest's WAL archive (archive-push) is not counted; neither tool needs it
# here for the comparison of backup sizes.
#
# Before each backup: CHECKPOINT and sync, so every tool starts with nothing
# dirty to write back (SETTLE=0: without).
#
# Environment: SCALE (default 110), SUBVAULT (binary to use instead of building the
# release one), BENCH_DIR (default /var/tmp/subvault-bench), SETTLE (default 1),
# PHASES (a file for subvault's -vv log of the full backup, whose timestamps
# show where its time goes). Everything else is removed on exit.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
SCALE=${SCALE:-110}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
BENCH_DIR=${BENCH_DIR:-/var/tmp/subvault-bench}
PORT=${PORT:-54329}

bench_require_root
bench_apt pgbackrest zstd btrfs-progs
bench_build_release >&2
SUBVAULT=$SUBVAULT_BIN

img=$BENCH_DIR/fs.img
mnt=$BENCH_DIR/mnt
sub=$mnt/pg
data=$sub/data
remote=$BENCH_DIR/remote
pgbr=$BENCH_DIR/pgbackrest
sock=$BENCH_DIR/sock

cleanup() {
    set +e
    "$REPO/integration/pg.sh" stop "$data" 2>/dev/null
    loopfs_teardown "$img"
    rm -rf "$BENCH_DIR"
}
bench_cleanup_now_and_on_exit cleanup
mkdir -p "$BENCH_DIR" "$mnt" "$remote" "$pgbr/repo" "$pgbr/log" "$pgbr/lock" "$sock"
chmod 755 "$BENCH_DIR"
loopfs_make "$img" 16G
loopfs_mount "$img" "$mnt"
btrfs subvolume create "$sub" >/dev/null
mkdir -p "$mnt/snapshots"
chown -R postgres:postgres "$pgbr" "$sock"

cat >"$pgbr/pgbackrest.conf" <<EOF
[global]
repo1-path=$pgbr/repo
compress-type=zst
compress-level=3
start-fast=y
lock-path=$pgbr/lock
log-path=$pgbr/log
log-level-console=warn
process-max=2
repo1-retention-full=9

[bench]
pg1-path=$data
pg1-port=$PORT
pg1-socket-path=$sock
EOF
chown postgres:postgres "$pgbr/pgbackrest.conf"
pgbr() { runuser -u postgres -- pgbackrest --config="$pgbr/pgbackrest.conf" --stanza=bench "$@"; }

PG_SOCKET_DIR=$sock PG_LOG=$BENCH_DIR/pg.log \
    PG_ARCHIVE_COMMAND="pgbackrest --config=$pgbr/pgbackrest.conf --stanza=bench archive-push %p" \
    "$REPO/integration/pg.sh" start "$data" "$PORT"
psql() { "$PG_BIN/psql" -XAt -h 127.0.0.1 -p "$PORT" -U postgres -d postgres "$@"; }

echo "initialising pgbench scale $SCALE ..." >&2
"$PG_BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PORT" -U postgres postgres 2>/dev/null
db_bytes=$(psql -c "SELECT pg_database_size('postgres')")
pgbr stanza-create

cat >"$BENCH_DIR/subvault.yaml" <<EOF
timezone: UTC
sources:
  - path: $sub
    snapshots: $mnt/snapshots
    name: pg
    postgres:
      connection: "host=127.0.0.1 port=$PORT user=postgres dbname=postgres"
      mode: checkpoint
    upload_to_remotes:
      - id: disk
        preserve: 1y 12m 30d 24h
remotes:
  - id: disk
    local:
      path: $remote
EOF

bytes_of() { du -sb "$1" | cut -f1; }

# Each tool starts from the same state: no dirty shared buffers and no dirty
# page cache. Without this the first tool after the data load pays for
# writing back what the load left behind (a CHECKPOINT of it, and for
# subvault the btrfs snapshot, which flushes the subvolume's dirty pages
# first), and the ones after it do not.
# SETTLE=0 measures without it (as before 2026-12-03 evening).
settle() { [[ ${SETTLE:-1} == 0 ]] || { psql -c CHECKPOINT >/dev/null; sync; }; }

# Full backups. subvault's log (-vv, with timestamps) shows where its time
# goes; PHASES=FILE keeps a copy.
settle
t0=$(bench_now); "$SUBVAULT" -vv -c "$BENCH_DIR/subvault.yaml" run --now 2026-11-27T10:00:00Z >/dev/null 2>"$BENCH_DIR/full.log"; t1=$(bench_now)
sv_full_t=$(bench_secs "$t0" "$t1" 1); sv_full_b=$(bytes_of "$remote")
[[ -z ${PHASES:-} ]] || { echo "start $t0 end $t1"; cat "$BENCH_DIR/full.log"; } >"$PHASES"
settle
t0=$(bench_now)
bb_full_b=$("$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -Ft -X fetch -D - | zstd -3 -T0 -q | wc -c)
t1=$(bench_now); bb_full_t=$(bench_secs "$t0" "$t1" 1)
settle
t0=$(bench_now); pgbr --type=full backup; t1=$(bench_now)
br_full_t=$(bench_secs "$t0" "$t1" 1); br_full_b=$(bytes_of "$pgbr/repo/backup")

echo "running 10,000 pgbench transactions ..." >&2
"$PG_BIN/pgbench" -c 4 -j 2 -t 2500 -h 127.0.0.1 -p "$PORT" -U postgres postgres >/dev/null 2>&1

# Incrementals.
settle
t0=$(bench_now); "$SUBVAULT" -c "$BENCH_DIR/subvault.yaml" run --now 2026-11-27T11:00:00Z >/dev/null; t1=$(bench_now)
sv_inc_t=$(bench_secs "$t0" "$t1" 1); sv_inc_b=$(( $(bytes_of "$remote") - sv_full_b ))
settle
t0=$(bench_now)
bb_inc_b=$("$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$PORT" -U postgres -Ft -X fetch -D - | zstd -3 -T0 -q | wc -c)
t1=$(bench_now); bb_inc_t=$(bench_secs "$t0" "$t1" 1)
settle
t0=$(bench_now); pgbr --type=incr backup; t1=$(bench_now)
br_inc_t=$(bench_secs "$t0" "$t1" 1); br_inc_b=$(( $(bytes_of "$pgbr/repo/backup") - br_full_b ))

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo
echo "pgbench scale $SCALE, database $(mib "$db_bytes"); incremental after 10,000 transactions"
echo
echo "| tool | full: time | full: stored | incremental: time | incremental: stored |"
echo "|------|-----------:|-------------:|------------------:|--------------------:|"
echo "| subvault run (checkpoint, btrfs send, zstd-3) | ${sv_full_t} s | $(mib "$sv_full_b") | ${sv_inc_t} s | $(mib "$sv_inc_b") |"
echo "| pg_basebackup -Ft \\| zstd -3 | ${bb_full_t} s | $(mib "$bb_full_b") | ${bb_inc_t} s (full again) | $(mib "$bb_inc_b") |"
echo "| pgBackRest 2.x (zst-3, posix repo) | ${br_full_t} s | $(mib "$br_full_b") | ${br_inc_t} s | $(mib "$br_inc_b") |"
