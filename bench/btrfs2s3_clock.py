"""Runs btrfs2s3's own CLI at a simulated time (bench/requests.sh).

    BTRFS2S3_NOW=2025-06-01T04:00:00Z BTRFS2S3_CTIMES=ctimes.json \\
        VENV/bin/python bench/btrfs2s3_clock.py update --force CONFIG

Why this exists: bench/requests.sh compares the S3 requests of a year of
daily backups (400 simulated days). subvault takes the time as `run --now`;
btrfs2s3 has no such option. It plans by "now" (preservation.Policy calls
`arrow.get(tzinfo=...)` with no time) and by each snapshot's kernel ctime
(`SubvolInfo.ctime` from BTRFS_IOC_GET_SUBVOL_INFO, which names its
snapshots and backups and places them in the policy's time spans). Running
it for real would need the system clock moved a day per run, which is not
acceptable on a shared machine. So this wrapper runs btrfs2s3's entry point
(btrfs2s3._internal.main.main) in-process with two things changed:

- "now": `arrow.get()` / `arrow.utcnow()` / `arrow.now()` called without a
  time give BTRFS2S3_NOW (an RFC 3339 time) instead of the clock. btrfs2s3
  does not call time.time() or datetime.now() itself, so those are left
  alone (the S3 client signs its requests with the real time, as it should).
- snapshot ctimes: `subvol_info()` as btrfs2s3's planner calls it returns a
  snapshot's (a subvolume with a parent) info with `ctime` replaced by the
  simulated time at which the snapshot was first seen, kept across runs in
  the JSON map BTRFS2S3_CTIMES (snapshot uuid hex -> Unix time). A snapshot
  btrfs2s3 creates in this run is first seen right after it creates it, so
  its ctime is this run's "now".

Everything else (listing, planning, uploads, deletes, snapshot renames) is
btrfs2s3's own code, unchanged.
"""

from __future__ import annotations

import json
import os
import sys

import arrow

from btrfs2s3._internal import main as b2s3_main
from btrfs2s3._internal import planner


def _simulated_now() -> arrow.Arrow:
    try:
        return arrow.get(os.environ["BTRFS2S3_NOW"])
    except KeyError:
        sys.exit("btrfs2s3_clock.py: set BTRFS2S3_NOW to the simulated time (RFC 3339)")


NOW = _simulated_now()
CTIMES_PATH = os.environ.get("BTRFS2S3_CTIMES") or sys.exit(
    "btrfs2s3_clock.py: set BTRFS2S3_CTIMES to the snapshot ctime map (JSON file)"
)
try:
    with open(CTIMES_PATH) as f:
        CTIMES: dict[str, float] = json.load(f)
except FileNotFoundError:
    CTIMES = {}

_real_get = arrow.get


def _get(*args: object, **kwargs: object) -> arrow.Arrow:
    if args:
        return _real_get(*args, **kwargs)
    tzinfo = kwargs.pop("tzinfo", None)
    if kwargs:
        return _real_get(**kwargs)
    return NOW.to(tzinfo) if tzinfo is not None else NOW


def _utcnow() -> arrow.Arrow:
    return NOW.to("UTC")


def _now(tz: object = None) -> arrow.Arrow:
    return NOW.to(tz) if tz is not None else NOW.to("local")


arrow.get = _get  # type: ignore[assignment]
arrow.utcnow = _utcnow  # type: ignore[assignment]
arrow.now = _now  # type: ignore[assignment]

_real_subvol_info = planner.subvol_info


def _subvol_info(*args: object, **kwargs: object) -> planner.SubvolInfo:
    info = _real_subvol_info(*args, **kwargs)
    if info.parent_uuid is None:  # a source or the snapshot dir's subvolume
        return info
    key = info.uuid.hex()
    if key not in CTIMES:
        CTIMES[key] = NOW.timestamp()
        tmp = CTIMES_PATH + ".tmp"
        with open(tmp, "w") as f:
            json.dump(CTIMES, f, indent=1, sort_keys=True)
        os.replace(tmp, CTIMES_PATH)
    return info._replace(ctime=CTIMES[key])


planner.subvol_info = _subvol_info  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(b2s3_main.main(argv=sys.argv[1:]))
