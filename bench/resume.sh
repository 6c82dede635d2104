#!/usr/bin/env bash
# Benchmark of resuming an interrupted upload (issue 20).
#
#   sudo bench/resume.sh [MIB]        (default 512)
#
# Streams MIB of incompressible, regenerable bytes into a multipart upload on
# the test S3 server (integration/with-services.sh starts moto) through a
# proxy that holds every part past the middle, stops the upload once the first
# half is stored (the parts in flight are lost, as with a reboot), then runs
# the same upload again through a counting proxy. Prints the bytes sent by
# both runs and the bytes re-sent (both runs together minus the stream): the
# parts that were in flight when it stopped, at most 4 x 8 MiB. Not measured
# yet: a link slowed to a fixed rate (the byte counts do not depend on it),
# and the time to get one small file back (`restore --path` is not built).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$HERE/lib.sh"
MIB=${1:-512}
[[ $MIB =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: size is whole MiB, not '$MIB'" >&2; exit 2; }

cd "$REPO"
SUBVAULT_BENCH_RESUME_MIB=$MIB integration/with-services.sh \
  cargo bench --bench resume 2>&1 | grep -E '^resume of|panicked'
