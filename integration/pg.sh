#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL 15 cluster for subvault's tests and benchmarks.
#
#   integration/pg.sh start DATADIR PORT   initdb DATADIR if it has no PG_VERSION, then start
#                                          a server listening on 127.0.0.1:PORT only
#   integration/pg.sh stop DATADIR         stop it (fast); succeeds when nothing runs
#   integration/pg.sh status DATADIR       exit 0 when a server runs on DATADIR
#
# Environment (all optional):
#   PG_BIN          PostgreSQL binaries (default /usr/lib/postgresql/15/bin)
#   PG_ARCHIVE_DIR  archive WAL into this directory (archive_mode=on); unset: archiving off
#   PG_ARCHIVE_COMMAND  archive with this command instead (e.g. pgbackrest archive-push %p)
#   PG_RESTORE_FROM restore WAL from this directory and recover to the end of the backup
#                   (recovery.signal, recovery_target=immediate, then promote)
#   PG_INITDB_OPTS  extra initdb options, e.g. --waldir=DIR (only when DATADIR is initialised)
#   PG_SOCKET_DIR   also listen on a Unix socket there (default: no Unix socket)
#   PG_LOG          server log file (default /tmp/subvault-pg-PORT.log)
#
# The server runs as the `postgres` OS user; every directory above DATADIR must be
# searchable by that user. Settings are passed on the command line, not written into
# the data directory, so a snapshot of DATADIR carries no test-only configuration and a
# server started on a restored copy gets its own port and archive settings.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
die() { echo "pg.sh: $*" >&2; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }

ensure_installed() {
    if [[ ! -x $PG_BIN/postgres ]]; then
        echo "pg.sh: installing postgresql-15 (missing $PG_BIN/postgres)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-15 postgresql-contrib-15 >&2 \
            || die "could not install postgresql-15; install it with apt-get"
    fi
}

cmd=${1:-}
datadir=${2:-}
[[ -n $cmd && -n $datadir ]] || die "usage: pg.sh start DATADIR PORT | stop DATADIR | status DATADIR"

case $cmd in
start)
    port=${3:-}
    [[ $port =~ ^[0-9]+$ ]] || die "start needs a numeric PORT"
    ensure_installed
    if [[ ! -f $datadir/PG_VERSION ]]; then
        mkdir -p "$datadir"
        chown postgres:postgres "$datadir"
        chmod 700 "$datadir"
        as_pg test -w "$datadir" || die "user postgres cannot write $datadir (make its parents searchable)"
        # shellcheck disable=SC2086 # PG_INITDB_OPTS holds several options: split on spaces
        as_pg "$PG_BIN/initdb" -D "$datadir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 --locale=C.UTF-8 ${PG_INITDB_OPTS:-} >/dev/null
        # The superuser connects without a password (also for replication, e.g.
        # pg_basebackup); every other role needs one over TCP,
        # so the tests can provoke an authentication failure with a wrong password.
        {
            echo "local all postgres trust"
            echo "local replication postgres trust"
            echo "host replication postgres 127.0.0.1/32 trust"
            echo "host all postgres 127.0.0.1/32 trust"
            echo "host all all 127.0.0.1/32 scram-sha-256"
        } >"$datadir/pg_hba.conf"
    fi
    opts="-c port=$port -c listen_addresses=127.0.0.1"
    if [[ -n ${PG_SOCKET_DIR:-} ]]; then
        mkdir -p "$PG_SOCKET_DIR" && chown postgres:postgres "$PG_SOCKET_DIR"
        opts+=" -c unix_socket_directories=$PG_SOCKET_DIR"
    else
        opts+=" -c unix_socket_directories="
    fi
    if [[ -n ${PG_ARCHIVE_COMMAND:-} ]]; then
        opts+=" -c archive_mode=on -c \"archive_command=$PG_ARCHIVE_COMMAND\""
    elif [[ -n ${PG_ARCHIVE_DIR:-} ]]; then
        mkdir -p "$PG_ARCHIVE_DIR" && chown postgres:postgres "$PG_ARCHIVE_DIR"
        opts+=" -c archive_mode=on -c \"archive_command=test ! -f $PG_ARCHIVE_DIR/%f && cp %p $PG_ARCHIVE_DIR/%f\""
    else
        opts+=" -c archive_mode=off"
    fi
    if [[ -n ${PG_RESTORE_FROM:-} ]]; then
        as_pg touch "$datadir/recovery.signal"
        opts+=" -c \"restore_command=cp $PG_RESTORE_FROM/%f %p\""
        opts+=" -c recovery_target=immediate -c recovery_target_action=promote"
    fi
    # Small enough for several clusters on a 2-core test VM.
    opts+=" -c shared_buffers=64MB -c max_wal_size=256MB -c max_connections=30"
    log=${PG_LOG:-/tmp/subvault-pg-$port.log}
    touch "$log" && chown postgres "$log"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$datadir" -l "$log" -o "$opts" -w -t 120 start >/dev/null; then
        tail -n 30 "$log" >&2
        die "server on $datadir (port $port) did not start; log: $log"
    fi
    if [[ -n ${PG_RESTORE_FROM:-} ]]; then
        # pg_ctl returns once read-only connections are accepted; wait for the
        # end of recovery (promotion) so callers get a writable server.
        for _ in $(seq 1 240); do
            state=$("$PG_BIN/psql" -XAt -h 127.0.0.1 -p "$port" -U postgres -d postgres \
                -c "SELECT pg_is_in_recovery()" 2>/dev/null || true)
            [[ $state == f ]] && exit 0
            sleep 0.5
        done
        tail -n 30 "$log" >&2
        die "server on $datadir (port $port) did not finish recovery within 120 s; log: $log"
    fi
    ;;
stop)
    [[ -f $datadir/postmaster.pid ]] || exit 0
    if as_pg "$PG_BIN/pg_ctl" -D "$datadir" status >/dev/null 2>&1; then
        as_pg "$PG_BIN/pg_ctl" -D "$datadir" -m fast -w -t 60 stop >/dev/null \
            || as_pg "$PG_BIN/pg_ctl" -D "$datadir" -m immediate -w stop >/dev/null
    fi
    ;;
status)
    as_pg "$PG_BIN/pg_ctl" -D "$datadir" status >/dev/null 2>&1
    ;;
*)
    die "unknown command $cmd (expected start, stop or status)"
    ;;
esac
