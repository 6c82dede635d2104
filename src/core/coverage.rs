//! The retention rule, stated from a policy's spans alone.
//!
//! The planner decides what to keep from the snapshots and backups it is
//! given, with ancestors, heal and most-recent rules mixed in. This module
//! says what a history *must* look like under a policy, without any of that:
//! for every timeframe, every preserved span that holds an item keeps its
//! first item. Tests check the planner against it (a planner that loses a
//! monthly passes every structural invariant, and a comparison of the bucket
//! with `plan --dry-run`, but not this), so it walks spans with `prev` from
//! the current one instead of sharing the planner's span arithmetic.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::policy::{Count, Policy};

/// The indices into `history` (every item ever taken, sorted by time, no
/// duplicates) that `policy` requires to be kept at `now`: for each of its
/// timeframes, the first item of each preserved span that holds one. Items
/// after `now` are ignored.
pub fn required_items(
    policy: &Policy,
    tz: Tz,
    now: DateTime<Utc>,
    history: &[DateTime<Utc>],
) -> BTreeSet<usize> {
    debug_assert!(history.windows(2).all(|w| w[0] < w[1]), "history unsorted");
    let past: Vec<DateTime<Utc>> = history.iter().copied().filter(|t| *t <= now).collect();
    let mut required = BTreeSet::new();
    let Some(&oldest) = past.first() else {
        return required;
    };
    for tf in policy.timeframes() {
        let spans = match policy.count(tf) {
            None | Some(Count::N(0)) => Vec::new(),
            // Every span that holds an item: found from the items, as walking
            // back hour by hour over years would be slow.
            Some(Count::All) => past.iter().map(|t| tf.span_containing(*t, tz)).collect(),
            Some(Count::N(n)) => {
                let mut spans = Vec::new();
                let mut span = tf.span_containing(now, tz);
                while spans.len() < n as usize && span.end > oldest {
                    spans.push(span);
                    span = span.prev(tz);
                }
                spans
            }
        };
        for span in spans {
            let first = past.partition_point(|t| *t < span.start);
            if past.get(first).is_some_and(|t| span.contains(*t)) {
                required.insert(first);
            }
        }
    }
    required
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        format!("{s}Z").parse().unwrap()
    }

    #[test]
    fn the_first_item_of_each_preserved_span_is_required() {
        let history: Vec<DateTime<Utc>> = [
            "2025-01-01T00:00:00",
            "2025-01-01T06:00:00",
            "2025-01-02T00:00:00",
            "2025-01-02T05:00:00",
            "2025-02-01T00:00:00",
            "2025-02-03T00:00:00",
        ]
        .iter()
        .map(|s| utc(s))
        .collect();
        let policy: Policy = "1y 2m 2d".parse().unwrap();
        let got = required_items(&policy, Tz::UTC, utc("2025-02-03T01:00:00"), &history);
        // 2025 and 2025-01 -> item 0; 2025-02 -> item 4; days 02-03 -> 5, 02-02 none.
        assert_eq!(got, BTreeSet::from([0, 4, 5]));
    }

    #[test]
    fn all_keeps_every_span_and_zero_keeps_none() {
        let history: Vec<DateTime<Utc>> = ["2020-03-01T00:00:00", "2022-03-01T00:00:00"]
            .iter()
            .map(|s| utc(s))
            .collect();
        let now = utc("2026-01-01T00:00:00");
        let all: Policy = "*y".parse().unwrap();
        assert_eq!(
            required_items(&all, Tz::UTC, now, &history),
            BTreeSet::from([0, 1])
        );
        let none: Policy = "0y 0m".parse().unwrap();
        assert!(required_items(&none, Tz::UTC, now, &history).is_empty());
        let one: Policy = "5y".parse().unwrap();
        // 2026..2022: the 2020 item is outside the five preserved years.
        assert_eq!(
            required_items(&one, Tz::UTC, now, &history),
            BTreeSet::from([1])
        );
    }

    #[test]
    fn months_are_local_in_the_configured_zone() {
        // 2025-03-31T23:30 UTC is already April in Berlin.
        let history = vec![utc("2025-03-31T23:30:00"), utc("2025-04-02T00:00:00")];
        let policy: Policy = "1m".parse().unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let now = utc("2025-04-03T00:00:00");
        assert_eq!(
            required_items(&policy, berlin, now, &history),
            BTreeSet::from([0])
        );
        assert_eq!(
            required_items(&policy, Tz::UTC, now, &history),
            BTreeSet::from([1])
        );
    }
}
