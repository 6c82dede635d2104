//! Snapshot names: `<source name>.<UTC time>` written by subvault, and reading
//! the time back from those and from btrfs2s3's names. Pure functions.

use chrono::{DateTime, NaiveDateTime, Utc};

/// The time format in subvault's snapshot names: fixed width, UTC, so a plain
/// directory listing sorts snapshots by time.
const NAME_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%SZ";

/// The name subvault gives a snapshot of `source_name` taken by a run at
/// `time`: `"<source_name>.<YYYY-MM-DDTHH:MM:SSZ>"` (UTC, whole seconds).
///
/// The time is the run's time (`--now` when given), not the source's last
/// modification, so the planner's notion of "when" matches the user's clock.
pub fn snapshot_name(source_name: &str, time: DateTime<Utc>) -> String {
    format!("{source_name}.{}", time.format(NAME_TIME_FORMAT))
}

/// The time recorded in a snapshot's file name, if the name is one of ours
/// (`<source>.<YYYY-MM-DDTHH:MM:SSZ>`) or btrfs2s3's
/// (`<source>.<ISO-8601 with offset, seconds>.<ctransid>`, e.g.
/// `data.2024-05-01T12:00:00-07:00.1234`). Anything else, including names of
/// other sources, gives `None` (the caller then uses the btrfs creation time).
pub fn parse_snapshot_time(source_name: &str, file_name: &str) -> Option<DateTime<Utc>> {
    let rest = file_name.strip_prefix(source_name)?.strip_prefix('.')?;
    if rest.len() == 20 && rest.ends_with('Z') {
        if let Ok(t) = NaiveDateTime::parse_from_str(rest, NAME_TIME_FORMAT) {
            return Some(t.and_utc());
        }
    }
    let (time, ctransid) = rest.rsplit_once('.')?;
    if ctransid.is_empty() || !ctransid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn our_names_are_utc_and_round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 4, 5, 6).unwrap();
        let name = snapshot_name("data", t);
        assert_eq!(name, "data.2026-11-27T04:05:06Z");
        assert_eq!(parse_snapshot_time("data", &name), Some(t));
    }

    #[test]
    fn btrfs2s3_names_with_offsets_are_read() {
        let t = parse_snapshot_time("data", "data.2024-05-01T12:00:00-07:00.1234");
        assert_eq!(t, Some(Utc.with_ymd_and_hms(2024, 5, 1, 19, 0, 0).unwrap()));
        let t = parse_snapshot_time("my.src", "my.src.2024-05-01T12:00:00+00:00.7");
        assert_eq!(t, Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()));
    }

    #[test]
    fn foreign_names_are_not_read() {
        for name in [
            "data",
            "data.",
            "other.2026-11-27T04:05:06Z",
            "database.2026-11-27T04:05:06Z",
            "data.NEW.1234",
            "data.2026-11-27T04:05:06Z.bak",
            "data.2024-05-01T12:00:00-07:00",
            "data.2024-05-01T12:00:00-07:00.12a",
            "data.2026-13-27T04:05:06Z",
            "data.yesterday",
        ] {
            assert_eq!(parse_snapshot_time("data", name), None, "{name}");
        }
    }

    proptest! {
        #[test]
        fn names_round_trip_and_sort_by_time(a in 0i64..253_402_300_799, b in 0i64..253_402_300_799) {
            let ta = DateTime::from_timestamp(a, 0).unwrap();
            let tb = DateTime::from_timestamp(b, 0).unwrap();
            let (na, nb) = (snapshot_name("src", ta), snapshot_name("src", tb));
            prop_assert_eq!(parse_snapshot_time("src", &na), Some(ta));
            prop_assert_eq!(na.cmp(&nb), ta.cmp(&tb));
        }
    }
}
