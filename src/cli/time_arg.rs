//! Parsing `--now` and `--at` times.
//!
//! Accepted: RFC 3339 with an offset (`2026-11-27T13:00:00+01:00`, `...Z`), or a
//! local date-time / date without offset (`2026-11-27T13:00`, `2026-11-27 13:00:05`,
//! `2026-11-27`), read in the configured time zone.

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::errors::UsageError;

/// Parses a time given on the command line.
pub fn parse_time(s: &str, tz: Tz, flag: &str) -> Result<DateTime<Utc>, UsageError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    // RFC 3339 without seconds (`2026-11-27T13:00Z`, `...T13:00+01:00`).
    if s.len() > 16 && s.is_char_boundary(16) && s.as_bytes().get(13) == Some(&b':') {
        let (head, zone) = s.split_at(16);
        if let Ok(t) = DateTime::parse_from_rfc3339(&format!("{head}:00{zone}")) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    // Fractions of a second matter to --pitr (a row committed 100 ms apart).
    let naive = ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })
        .ok_or_else(|| {
            UsageError(format!(
                "{flag} {s:?}: not a time (use e.g. 2026-11-27T13:00:00Z, 2026-11-27T13:00 in the configured zone, or 2026-11-27)"
            ))
        })?;
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t.with_timezone(&Utc)),
        LocalResult::None => Err(UsageError(format!(
            "{flag} {s:?}: this local time does not exist in {} (daylight saving gap); give an offset",
            tz.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_of_a_second_are_kept() {
        let want: DateTime<Utc> = "2026-11-27T12:00:00.250Z".parse().unwrap();
        assert_eq!(
            parse_time("2026-11-27T12:00:00.250Z", Tz::UTC, "--pitr").unwrap(),
            want
        );
        assert_eq!(
            parse_time("2026-11-27 12:00:00.25", Tz::UTC, "--pitr").unwrap(),
            want
        );
        assert_eq!(
            parse_time("2026-11-27T12:00:00.250", Tz::UTC, "--pitr").unwrap(),
            want
        );
    }

    #[test]
    fn parses_offsets_and_local_times() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let want = DateTime::parse_from_rfc3339("2026-11-27T12:00:00Z").unwrap();
        assert_eq!(
            parse_time("2026-11-27T12:00:00Z", berlin, "--now").unwrap(),
            want
        );
        assert_eq!(
            parse_time("2026-11-27T13:00", berlin, "--now").unwrap(),
            want
        );
        assert_eq!(
            parse_time("2026-11-27 13:00:00", berlin, "--now").unwrap(),
            want
        );
        assert_eq!(
            parse_time("2026-11-27", berlin, "--now").unwrap(),
            DateTime::parse_from_rfc3339("2026-11-26T23:00:00Z").unwrap()
        );
        let err = parse_time("2026-03-29T02:30", berlin, "--now").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let err = parse_time("yesterday", berlin, "--at").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("--at \"yesterday\": not a time"),
            "{err}"
        );
    }
}
