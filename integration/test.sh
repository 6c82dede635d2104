#!/usr/bin/env bash
# THE test command: every test of the crate, including the ignored ones that
# need root, loop-device btrfs and the S3 server, with those services set up
# and torn down around the run. Run it as root from anywhere:
#
#   sudo integration/test.sh [EXTRA CARGO TEST ARGS...]
#
# Extra arguments go to `cargo test` before `--` (e.g. `--test harness`).
# Environment:
#   CARGO_TARGET_DIR   default /var/cache/subvault/target when CI=true (reused
#                      across CI runs on one machine), cargo's own otherwise
#   RUST_TEST_THREADS  tests in parallel per test binary (default 2 x cores,
#                      capped at 8: most root tests wait on btrfs and S3 I/O,
#                      and each uses its own TestFs and bucket)
#   SUBVAULT_TEST_TIMEOUT  seconds before cargo test is stopped (default 4200
#                      under CI=true, none otherwise)
#   SUBVAULT_SKIP_SETUP=1  skip integration/setup.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

# First pass: wrap ourselves in the services (setup, moto, teardown).
if [[ ${SUBVAULT_TEST_INNER:-} != 1 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "test.sh: run as root (loop devices, mounts, apt): sudo $0" >&2
    exit 1
  fi
  if ! command -v cargo >/dev/null && [[ -x ${HOME:-/root}/.cargo/bin/cargo ]]; then
    PATH=$PATH:${HOME:-/root}/.cargo/bin
  fi
  command -v cargo >/dev/null || {
    echo "test.sh: cargo not on PATH (with sudo: sudo env \"PATH=\$PATH\" $0)" >&2
    exit 1
  }
  export SUBVAULT_TEST_INNER=1
  exec "$HERE/with-services.sh" bash "$HERE/test.sh" "$@"
fi

cd "$REPO"
if [[ ${CI:-} == true && -z ${CARGO_TARGET_DIR:-} ]]; then
  export CARGO_TARGET_DIR=/var/cache/subvault/target
fi
cores=$(nproc 2>/dev/null || echo 2)
threads=$((cores * 2))
((threads <= 8)) || threads=8
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-$threads}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

LOG=$(mktemp /tmp/subvault-test-log.XXXXXX)
DOCLOG=$(mktemp /tmp/subvault-test-doclog.XXXXXX)
trap 'rm -f "$LOG" "$DOCLOG"' EXIT
start=$SECONDS
echo "test.sh: target dir ${CARGO_TARGET_DIR:-$REPO/target}, $RUST_TEST_THREADS test threads"

# Extra arguments select targets instead of --all-targets.
targets=(--all-targets)
(($# == 0)) || targets=("$@")
set +e
# --no-fail-fast: one failing test binary must not hide the others' results.
# Under CI a hung test must not eat CI's whole 90 minutes without a summary.
limit=()
if [[ -n ${SUBVAULT_TEST_TIMEOUT:-} || ${CI:-} == true ]]; then
  limit=(timeout --kill-after=30 "${SUBVAULT_TEST_TIMEOUT:-4200}")
fi
"${limit[@]}" cargo test --no-fail-fast "${targets[@]}" -- --include-ignored 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
if ((status == 124 || status == 137)) && ((${#limit[@]} > 0)); then
  echo "test.sh: cargo test stopped after the time limit of ${limit[2]} s (SUBVAULT_TEST_TIMEOUT)"
fi
doc_status=0
# Doc tests are not part of --all-targets; run them too when there is a library.
if [[ -f src/lib.rs && $# -eq 0 ]]; then
  cargo test --doc 2>&1 | tee "$DOCLOG"
  doc_status=${PIPESTATUS[0]}
fi
set -e

# Sums "N <word>" from libtest's "test result:" lines.
count() {
  awk -v word="$1" '
    /^test result: / {
      for (i = 2; i <= NF; i++) if ($(i) ~ ("^" word ";?$")) n += $(i - 1)
    }
    END { print n + 0 }' "${@:2}"
}
passed=$(count passed "$LOG" "$DOCLOG")
failed=$(count failed "$LOG" "$DOCLOG")
# Doc-test code blocks marked `ignore` are never meant to run; only count the rest.
ignored=$(count ignored "$LOG")

echo
echo "================ subvault test summary ================"
echo "duration: $((SECONDS - start)) s"
if ((failed > 0)); then
  echo "failed tests:"
  cat "$LOG" "$DOCLOG" | grep -E '^test .* \.\.\. FAILED$' | sed 's/^test /  /; s/ \.\.\. FAILED$//' || true
fi
if ((status != 0 && failed == 0)); then
  echo "cargo test exited $status without a failed test: a build error or a crashed test binary (see above)"
fi
if ((ignored > 0)); then
  echo "warning: $ignored tests were ignored although --include-ignored was given"
fi
final=0
((status == 0 && doc_status == 0)) || final=1
if ((passed == 0)); then
  echo "error: no test ran"
  final=1
fi
echo "summary: $passed passed, $failed failed"
exit "$final"
