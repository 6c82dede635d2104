#!/usr/bin/env bash
# How `plan`, `list`, `status` and `run` scale with the number of backups
# (issue 21).
#
#   sudo bench/scale.sh [CASE...]     (default: 1000 10000 100000 1000000 100000x10)
#
# A CASE is COUNT, or COUNTxHOSTS. For each, a local remote holds COUNT
# backups of one source, one per hour going back COUNT hours, chained as the
# policy `*y *m *d *h` chains them (yearly fulls; monthlies on their yearly,
# dailies on their monthly, hourlies on their daily). With xHOSTS the remote
# is one host's directory in a fleet: HOSTS-1 sibling directories next to it
# hold COUNT keys each (hard links), so the bucket holds COUNT*HOSTS keys of
# which this host's are 1/HOSTS. A local remote only ever reads its own
# directory; an S3 remote sends its prefix in ListObjectsV2
# (src/remote/s3/listing.rs), so other hosts' keys are never fetched either.
# The objects are empty files: these commands read the listing (the keys),
# never the bodies, so the sizes do not matter. The source is a real
# subvolume on a loop btrfs with one local snapshot, newer than the backups.
# Each command runs under GNU time; the table gives wall and CPU seconds
# (user + system) and the peak RSS. `run` comes last: it plans as `plan`
# does, then uploads the newest snapshot (a few KiB, a full: none of the
# backups' snapshots is on disk to send from) and prunes nothing (the policy
# keeps every hour). Uses the release build (bench_build_release;
# SUBVAULT=/path/to/subvault to measure another binary).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
COUNTS=("$@")
((${#COUNTS[@]})) || COUNTS=(1000 10000 100000 1000000 100000x10)
for c in "${COUNTS[@]}"; do
  [[ $c =~ ^[1-9][0-9]*(x[1-9][0-9]*)?$ ]] || {
    echo "$BENCH_NAME: a case is COUNT or COUNTxHOSTS (whole numbers), not '$c'" >&2
    exit 2
  }
done

bench_require_root
bench_apt btrfs-progs time python3
bench_build_release

WORK=$(mktemp -d /var/tmp/subvault-scale.XXXXXX)
IMG=$WORK/fs.img MNT=$WORK/mnt
cleanup() {
  loopfs_umount "$MNT" || true
  loopfs_teardown "$IMG" || true
  rm -rf -- "$WORK"
}
trap cleanup EXIT

loopfs_make "$IMG" 256M
loopfs_mount "$IMG" "$MNT"
btrfs -q subvolume create "$MNT/data"
mkdir "$MNT/snaps"
echo hello >"$MNT/data/file"
# One local snapshot newer than every backup, as on the host that made them
# (backups newer than a host's newest snapshot are another machine's).
btrfs -q subvolume snapshot -r "$MNT/data" "$MNT/snaps/data.$(date -u +%Y-%m-%dT%H:%M:%SZ)"
SOURCE_UUID=$(btrfs subvolume show "$MNT/data" | awk '$1 == "UUID:" {print $2}')

# COUNT empty backup objects under DIR, keyed as subvault names them, and
# HOSTS-1 sibling directories of DIR with the same keys (hard links).
make_remote() { # DIR COUNT HOSTS
  python3 - "$1" "$2" "$3" "$SOURCE_UUID" <<'PY'
import datetime as dt, os, sys, uuid
root, count, hosts, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(root, exist_ok=True)
keys = []
end = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
first = {}  # (year,), (year, month), (year, month, day) -> uuid of its first backup
nil = uuid.UUID(int=0)
for i in range(count):
    t = end - dt.timedelta(hours=count - i)
    u = uuid.UUID(int=i + 1)
    y, m, d = (t.year,), (t.year, t.month), (t.year, t.month, t.day)
    if y not in first:
        parent = nil
    elif m not in first:
        parent = first[y]
    elif d not in first:
        parent = first[m]
    else:
        parent = first[d]
    for span in (y, m, d):
        first.setdefault(span, u)
    key = (f"data.ctim{t.strftime('%Y-%m-%dT%H:%M:%S+00:00')}.ctid{i + 1}.uuid{u}"
           f".sndp{parent}.prnt{source}.mdvn1.seqn0.cmprzstd")
    open(os.path.join(root, key), "wb").close()
    keys.append(key)
for h in range(1, hosts):
    sibling = os.path.join(os.path.dirname(root), f"host-{h:02}")
    os.makedirs(sibling)
    for key in keys:
        os.link(os.path.join(root, key), os.path.join(sibling, key))
PY
}

printf '%-10s %-9s %-22s %8s %8s %9s\n' backups keys command wall_s cpu_s rss_mib
for c in "${COUNTS[@]}"; do
  n=${c%%x*} hosts=1
  [[ $c == *x* ]] && hosts=${c#*x}
  REMOTE=$WORK/remote-$c/host-00
  make_remote "$REMOTE" "$n" "$hosts"
  CONFIG=$WORK/config-$c.yaml
  cat >"$CONFIG" <<EOF
timezone: UTC
sources:
  - path: $MNT/data
    snapshots: $MNT/snaps
    upload_to_remotes:
      - id: disk
        preserve: "*y *m *d *h"
remotes:
  - id: disk
    local:
      path: $REMOTE
EOF
  for cmd in "plan --dry-run" "plan --dry-run --json" "list" "list --json" "status" "status --json" "run"; do
    times=$WORK/times
    # status exits 1 when a backup is older than a max age; none is set, so 0.
    # shellcheck disable=SC2086 # the command's words
    /usr/bin/time -f '%e %U %S %M' -o "$times" \
      env SUBVAULT_STATE_DIR="$WORK/state" SUBVAULT_LOCK_DIR="$WORK/locks" \
      "$SUBVAULT_BIN" -q -c "$CONFIG" $cmd >"$WORK/out" 2>"$WORK/err" || {
      echo "$BENCH_NAME: failed: subvault $cmd" >&2
      tail -n 20 "$WORK/err" >&2
      exit 1
    }
    read -r wall user sys rss <"$times"
    printf '%-10s %-9s %-22s %8s %8.2f %9.1f\n' "$n" "$((n * hosts))" "$cmd" "$wall" \
      "$(echo "$user + $sys" | bc -l)" "$(echo "$rss / 1024" | bc -l)"
  done
  rm -rf -- "$WORK/remote-$c"
done
