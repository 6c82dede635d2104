#!/usr/bin/env bash
# Runs a command with the services subvault's tests need, then tears them down,
# also when the command fails or is interrupted:
#
#   integration/with-services.sh cargo test --test NAME -- --include-ignored
#
# 1. integration/setup.sh (skip with SUBVAULT_SKIP_SETUP=1),
# 2. a moto S3 server on 127.0.0.1, exported as SUBVAULT_TEST_S3_ENDPOINT with
#    AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY=testing, AWS_REGION=us-east-1 and
#    AWS_EC2_METADATA_DISABLED=true. When SUBVAULT_TEST_S3_ENDPOINT is already
#    set, that server (and the AWS_* variables already set) are used instead.
# 3. SUBVAULT_TEST_ROOT, a directory of this run under /var/tmp/subvault-test
#    where tests/common's TestFs puts images and mount points; on exit anything
#    still mounted there is unmounted and its loop devices detached, so a
#    crashed test leaves nothing behind and concurrent runs never touch each
#    other's filesystems.
# The command's exit status is passed through.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=/var/tmp/subvault-test

log() { printf 'with-services: %s\n' "$*" >&2; }

(($# > 0)) || { log "usage: $0 COMMAND [ARG...]"; exit 2; }
[[ $(id -u) -eq 0 ]] || { log "error: run as root (loop devices, mounts, apt)"; exit 1; }

# Unmounts everything under $1/mnt (deepest first, lazily when busy) and
# detaches loop devices whose backing file is under $1/img, then removes $1.
clean_test_root() {
  local root=$1 target dev backing
  [[ -d $root ]] || return 0
  while read -r target; do
    [[ -n $target ]] || continue
    log "unmounting stray $target"
    umount "$target" 2>/dev/null || umount -l "$target" || true
  done < <(findmnt -rn -o TARGET | grep -F "$root/mnt/" | awk '{ print length, $0 }' |
    sort -rn | cut -d' ' -f2-)
  for backing in /sys/block/loop*/loop/backing_file; do
    [[ -r $backing ]] || continue
    if grep -qF "$root/img/" "$backing"; then
      dev=/dev/$(basename "$(dirname "$(dirname "$backing")")")
      log "detaching stray $dev ($(<"$backing"))"
      losetup -d "$dev" || true
    fi
  done
  if findmnt -rn -o TARGET | grep -qF "$root/"; then
    log "warning: mounts remain under $root; leaving it in place"
  else
    rm -rf --one-file-system "$root"
  fi
}

# Runs of this script that died without their trap (SIGKILL) left a run-PID
# dir, perhaps with moto still running; clean those whose process is gone.
for stale in "$BASE"/run-*; do
  [[ -d $stale ]] || continue
  pid=${stale##*/run-}
  if [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then
    log "cleaning up after dead run $pid"
    SUBVAULT_MOTO_STATE=$stale/moto "$HERE/moto.sh" stop || true
    clean_test_root "$stale"
  fi
done

if [[ ${SUBVAULT_SKIP_SETUP:-0} != 1 ]]; then
  "$HERE/setup.sh"
fi

RUN_ROOT=$BASE/run-$$
export SUBVAULT_TEST_ROOT=$RUN_ROOT
export SUBVAULT_MOTO_STATE=$RUN_ROOT/moto
mkdir -p "$RUN_ROOT/img" "$RUN_ROOT/mnt" "$SUBVAULT_MOTO_STATE"
started_moto=

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n $started_moto ]]; then
    "$HERE/moto.sh" stop || true
  fi
  clean_test_root "$RUN_ROOT"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z ${SUBVAULT_TEST_S3_ENDPOINT:-} ]]; then
  started_moto=1
  SUBVAULT_TEST_S3_ENDPOINT=$("$HERE/moto.sh" start)
  export SUBVAULT_TEST_S3_ENDPOINT
  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  export AWS_DEFAULT_REGION=us-east-1
  # moto accepts any credentials; never let the SDK look for real ones.
  unset AWS_SESSION_TOKEN AWS_PROFILE
fi
# No instance-metadata lookups (they time out slowly off EC2).
export AWS_EC2_METADATA_DISABLED=true
# PostgreSQL's server binaries are not on PATH on Debian.
if [[ -d /usr/lib/postgresql/15/bin ]]; then
  export PATH=$PATH:/usr/lib/postgresql/15/bin
fi
export PATH=$PATH:/usr/sbin:/sbin
log "S3 endpoint $SUBVAULT_TEST_S3_ENDPOINT, test root $RUN_ROOT"

set +e
"$@"
status=$?
set -e
exit "$status"
