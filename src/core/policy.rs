//! Preservation policies and calendar time spans.
//!
//! A policy such as `1y 3m 30d 24h` keeps, for each timeframe, the first snapshot
//! (and its backup) of the current span and of the N-1 spans before it. Spans are
//! calendar-aligned in the configured IANA time zone; weeks start on Monday.
//!
//! # Daylight saving time
//!
//! - Years, quarters, months, weeks and days start at local midnight. A day is one
//!   calendar day however long it is: a spring-forward day lasts 23 hours, a fall-back
//!   day 25 hours. Where midnight itself does not exist (zones that switch at 00:00),
//!   the span starts at the first instant that does exist that day.
//! - Hours, minutes and seconds are aligned to the local clock but always last one
//!   real hour (minute, second): the fall-back hour that the clock shows twice
//!   (e.g. 01:00-02:00 in New York) is two distinct hourly spans, labelled with their
//!   UTC offsets, and the hour the clock skips in spring does not exist at all. So
//!   `24h` always means the 24 most recent real hours.

use std::fmt;
use std::str::FromStr;

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset,
    TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use serde::Serialize;

/// A kind of time span, longest first (the order of the policy string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Timeframe {
    /// Calendar years.
    Year,
    /// Calendar quarters (Jan, Apr, Jul, Oct).
    Quarter,
    /// Calendar months.
    Month,
    /// Weeks starting on Monday.
    Week,
    /// Calendar days.
    Day,
    /// Clock hours.
    Hour,
    /// Clock minutes.
    Minute,
    /// Clock seconds.
    Second,
}

impl Timeframe {
    /// Every timeframe, longest first.
    pub const ALL: [Timeframe; 8] = [
        Timeframe::Year,
        Timeframe::Quarter,
        Timeframe::Month,
        Timeframe::Week,
        Timeframe::Day,
        Timeframe::Hour,
        Timeframe::Minute,
        Timeframe::Second,
    ];

    /// The letter used in policy strings (`y q m w d h M s`).
    pub fn letter(self) -> char {
        match self {
            Timeframe::Year => 'y',
            Timeframe::Quarter => 'q',
            Timeframe::Month => 'm',
            Timeframe::Week => 'w',
            Timeframe::Day => 'd',
            Timeframe::Hour => 'h',
            Timeframe::Minute => 'M',
            Timeframe::Second => 's',
        }
    }

    /// The timeframe for a policy letter.
    pub fn from_letter(c: char) -> Option<Timeframe> {
        Timeframe::ALL.into_iter().find(|tf| tf.letter() == c)
    }

    /// `yearly`, `quarterly`, ... as used in reasons and config keys.
    pub fn adjective(self) -> &'static str {
        match self {
            Timeframe::Year => "yearly",
            Timeframe::Quarter => "quarterly",
            Timeframe::Month => "monthly",
            Timeframe::Week => "weekly",
            Timeframe::Day => "daily",
            Timeframe::Hour => "hourly",
            Timeframe::Minute => "minutely",
            Timeframe::Second => "secondly",
        }
    }

    /// Length of a clock-aligned span; `None` for calendar timeframes.
    fn fixed_length(self) -> Option<Duration> {
        match self {
            Timeframe::Hour => Some(Duration::hours(1)),
            Timeframe::Minute => Some(Duration::minutes(1)),
            Timeframe::Second => Some(Duration::seconds(1)),
            _ => None,
        }
    }

    /// The span of this timeframe that contains `t`.
    pub fn span_containing(self, t: DateTime<Utc>, tz: Tz) -> Span {
        let local = t.with_timezone(&tz);
        if let Some(len) = self.fixed_length() {
            // Truncate on the local clock but keep the offset in force at `t`, so the
            // repeated fall-back hour yields two different spans (see module docs).
            let offset: FixedOffset = local.offset().fix();
            let naive = local.naive_local();
            let truncated = match self {
                Timeframe::Hour => naive.date().and_hms_opt(naive.hour(), 0, 0),
                Timeframe::Minute => naive.date().and_hms_opt(naive.hour(), naive.minute(), 0),
                _ => naive
                    .date()
                    .and_hms_opt(naive.hour(), naive.minute(), naive.second()),
            }
            .expect("truncating a valid time stays valid");
            let start = (truncated - offset).and_utc();
            return Span {
                timeframe: self,
                start,
                end: start + len,
            };
        }
        let first_day = self.first_day(local.date_naive());
        let next_first_day = self.next_first_day(first_day);
        Span {
            timeframe: self,
            start: local_midnight(tz, first_day),
            end: local_midnight(tz, next_first_day),
        }
    }

    /// First calendar day of the span containing `d` (calendar timeframes only).
    fn first_day(self, d: NaiveDate) -> NaiveDate {
        match self {
            Timeframe::Year => NaiveDate::from_ymd_opt(d.year(), 1, 1),
            Timeframe::Quarter => NaiveDate::from_ymd_opt(d.year(), (d.month0() / 3) * 3 + 1, 1),
            Timeframe::Month => NaiveDate::from_ymd_opt(d.year(), d.month(), 1),
            Timeframe::Week => Some(d - Duration::days(d.weekday().num_days_from_monday() as i64)),
            _ => Some(d),
        }
        .expect("first day of a span is a valid date")
    }

    /// First calendar day of the span after the one starting on `first`.
    fn next_first_day(self, first: NaiveDate) -> NaiveDate {
        let add_months = |n: u32| {
            let m0 = first.month0() + n;
            NaiveDate::from_ymd_opt(first.year() + (m0 / 12) as i32, m0 % 12 + 1, 1)
                .expect("valid month start")
        };
        match self {
            Timeframe::Year => NaiveDate::from_ymd_opt(first.year() + 1, 1, 1).expect("valid year"),
            Timeframe::Quarter => add_months(3),
            Timeframe::Month => add_months(1),
            Timeframe::Week => first + Duration::days(7),
            _ => first + Duration::days(1),
        }
    }

    /// How many spans of this timeframe lie between `earlier` and `later`
    /// (0 when they are the same span; negative when `earlier` is after `later`).
    fn spans_between(self, earlier: &Span, later: &Span, tz: Tz) -> i64 {
        if let Some(len) = self.fixed_length() {
            return (later.start - earlier.start).num_seconds() / len.num_seconds();
        }
        let a = earlier.start.with_timezone(&tz).date_naive();
        let b = later.start.with_timezone(&tz).date_naive();
        let months = |d: NaiveDate| d.year() as i64 * 12 + d.month0() as i64;
        match self {
            Timeframe::Year => (b.year() - a.year()) as i64,
            Timeframe::Quarter => months(b).div_euclid(3) - months(a).div_euclid(3),
            Timeframe::Month => months(b) - months(a),
            Timeframe::Week => (b - a).num_days().div_euclid(7),
            _ => (b - a).num_days(),
        }
    }
}

impl fmt::Display for Timeframe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.adjective())
    }
}

/// Error for an unknown timeframe name.
#[derive(Debug, thiserror::Error)]
#[error("unknown timeframe {0:?} (expected yearly, quarterly, monthly, weekly, daily, hourly, minutely or secondly)")]
pub struct UnknownTimeframe(pub String);

impl FromStr for Timeframe {
    type Err = UnknownTimeframe;
    /// Parses the adjective form (`yearly`, `monthly`, ...), as used in config maps.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Timeframe::ALL
            .into_iter()
            .find(|tf| tf.adjective() == s)
            .ok_or_else(|| UnknownTimeframe(s.to_string()))
    }
}

/// The first existing instant of local day `d` in `tz`.
fn local_midnight(tz: Tz, d: NaiveDate) -> DateTime<Utc> {
    let mut naive: NaiveDateTime = d.and_hms_opt(0, 0, 0).expect("midnight is valid");
    // A DST gap can swallow midnight; walk forward to the first local time that
    // exists. Gaps are at most a few hours and on minute boundaries.
    for _ in 0..(48 * 60) {
        match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(earliest, _) => return earliest.with_timezone(&Utc),
            LocalResult::None => naive += Duration::minutes(1),
        }
    }
    unreachable!("no valid local time within two days of {d} in {tz}")
}

/// One concrete time span, e.g. the month 2026-11 in Europe/Berlin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    /// The kind of span.
    pub timeframe: Timeframe,
    /// First instant of the span (inclusive).
    pub start: DateTime<Utc>,
    /// First instant after the span (exclusive).
    pub end: DateTime<Utc>,
}

impl Span {
    /// Whether `t` falls into this span.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    /// The span just before this one.
    pub fn prev(&self, tz: Tz) -> Span {
        self.timeframe
            .span_containing(self.start - Duration::seconds(1), tz)
    }

    /// The span just after this one.
    pub fn next(&self, tz: Tz) -> Span {
        self.timeframe.span_containing(self.end, tz)
    }

    /// A short human label in local time: `2026`, `2026-Q4`, `2026-11`, `2026-W48`,
    /// `2026-11-27`, `2026-11-27T13`, `2026-11-27T13:05`, `2026-11-27T13:05:09`.
    /// Clock spans inside a repeated (fall-back) hour carry their UTC offset.
    pub fn label(&self, tz: Tz) -> String {
        let local = self.start.with_timezone(&tz);
        let clock = |fmt: &str| {
            let mut s = local.format(fmt).to_string();
            if matches!(
                tz.from_local_datetime(&local.naive_local()),
                LocalResult::Ambiguous(..)
            ) {
                s.push_str(&local.format("%:z").to_string());
            }
            s
        };
        match self.timeframe {
            Timeframe::Year => local.format("%Y").to_string(),
            Timeframe::Quarter => format!("{}-Q{}", local.year(), local.month0() / 3 + 1),
            Timeframe::Month => local.format("%Y-%m").to_string(),
            Timeframe::Week => {
                let w = local.date_naive().iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Timeframe::Day => local.format("%Y-%m-%d").to_string(),
            Timeframe::Hour => clock("%Y-%m-%dT%H"),
            Timeframe::Minute => clock("%Y-%m-%dT%H:%M"),
            Timeframe::Second => clock("%Y-%m-%dT%H:%M:%S"),
        }
    }

    /// The reason string for a snapshot representing this span, e.g. `2026-11 monthly`.
    pub fn reason(&self, tz: Tz) -> String {
        format!("{} {}", self.label(tz), self.timeframe.adjective())
    }
}

/// How many spans of a timeframe to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Count {
    /// Keep every span (`*`).
    All,
    /// Keep the current span and the N-1 before it.
    N(u32),
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Count::All => f.write_str("*"),
            Count::N(n) => write!(f, "{n}"),
        }
    }
}

/// Why a policy string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The string was empty.
    #[error(
        "empty policy (write e.g. \"1y 3m 30d 24h\", or \"0d\" to keep only the newest backup)"
    )]
    Empty,
    /// A token was not a count followed by a timeframe letter.
    #[error("bad term {0:?}: expected a count (a number or *) followed by one of y q m w d h M s")]
    BadTerm(String),
    /// An unknown timeframe letter.
    #[error("unknown timeframe '{0}' (expected y q m w d h M s)")]
    UnknownTimeframe(char),
    /// A count too large to be meaningful.
    #[error("count {0:?} is too large")]
    CountTooLarge(String),
    /// Terms out of order or repeated.
    #[error("'{0}' must come before '{1}': write terms longest timeframe first (y q m w d h M s), each at most once")]
    Order(char, char),
}

/// A preservation policy: a count per timeframe.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    /// Timeframes with a non-zero count, longest first.
    terms: Vec<(Timeframe, Count)>,
}

impl FromStr for Policy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(PolicyError::Empty);
        }
        let mut all: Vec<(Timeframe, Count)> = Vec::new();
        for term in s.split_whitespace() {
            let bad = || PolicyError::BadTerm(term.to_string());
            let mut chars = term.chars();
            let letter = chars.next_back().ok_or_else(bad)?;
            let count = chars.as_str();
            let count_ok =
                count == "*" || (!count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()));
            if !count_ok || letter.is_ascii_digit() || letter == '*' {
                return Err(bad());
            }
            let tf = Timeframe::from_letter(letter).ok_or(PolicyError::UnknownTimeframe(letter))?;
            let count = if count == "*" {
                Count::All
            } else {
                Count::N(
                    count
                        .parse()
                        .map_err(|_| PolicyError::CountTooLarge(count.to_string()))?,
                )
            };
            if let Some(&(prev, _)) = all.last() {
                if prev >= tf {
                    return Err(PolicyError::Order(tf.letter(), prev.letter()));
                }
            }
            all.push((tf, count));
        }
        Ok(Policy {
            terms: all.into_iter().filter(|(_, c)| *c != Count::N(0)).collect(),
        })
    }
}

impl fmt::Display for Policy {
    /// The canonical policy string (zero terms dropped); `0d`-style empty policies print as `0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|(tf, c)| format!("{c}{}", tf.letter()))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

impl Policy {
    /// A policy from explicit terms (zero counts are dropped). Terms must be
    /// longest timeframe first; they are sorted to make sure.
    pub fn new(mut terms: Vec<(Timeframe, Count)>) -> Policy {
        terms.retain(|(_, c)| *c != Count::N(0));
        terms.sort_by_key(|(tf, _)| *tf);
        terms.dedup_by_key(|(tf, _)| *tf);
        Policy { terms }
    }

    /// The timeframes in use (non-zero count), longest first.
    pub fn timeframes(&self) -> Vec<Timeframe> {
        self.terms.iter().map(|(tf, _)| *tf).collect()
    }

    /// The count for a timeframe, `None` when it is off.
    pub fn count(&self, tf: Timeframe) -> Option<Count> {
        self.terms.iter().find(|(t, _)| *t == tf).map(|(_, c)| *c)
    }

    /// The policy in words, e.g. `1 yearly (full), 3 monthly, 30 daily, 24 hourly`.
    pub fn describe(&self) -> String {
        if self.terms.is_empty() {
            return "only the most recent (full)".to_string();
        }
        let parts: Vec<String> = self
            .terms
            .iter()
            .enumerate()
            .map(|(i, (tf, c))| {
                let n = match c {
                    Count::All => "every".to_string(),
                    Count::N(n) => n.to_string(),
                };
                let full = if i == 0 { " (full)" } else { "" };
                format!("{n} {}{full}", tf.adjective())
            })
            .collect();
        parts.join(", ")
    }

    /// Whether `span` is one of the spans this policy preserves at time `now`.
    pub fn preserves(&self, span: &Span, now: DateTime<Utc>, tz: Tz) -> bool {
        let Some(count) = self.count(span.timeframe) else {
            return false;
        };
        let current = span.timeframe.span_containing(now, tz);
        let back = span.timeframe.spans_between(span, &current, tz);
        match count {
            Count::All => back >= 0,
            Count::N(n) => back >= 0 && back < n as i64,
        }
    }

    /// The preserved spans of one timeframe at `now`, newest first. For `*` counts
    /// this would be unbounded, so at most `limit` spans are returned.
    pub fn preserved_spans(
        &self,
        tf: Timeframe,
        now: DateTime<Utc>,
        tz: Tz,
        limit: usize,
    ) -> Vec<Span> {
        let n = match self.count(tf) {
            None => 0,
            Some(Count::All) => limit,
            Some(Count::N(n)) => (n as usize).min(limit),
        };
        let mut spans = Vec::with_capacity(n);
        let mut span = tf.span_containing(now, tz);
        for _ in 0..n {
            spans.push(span);
            span = span.prev(tz);
        }
        spans
    }

    /// When `span` stops being preserved by this policy: the start of the span
    /// N steps after it. `None` when it is kept forever (`*`) or not at all.
    pub fn preserved_until(&self, span: &Span, tz: Tz) -> Option<DateTime<Utc>> {
        match self.count(span.timeframe)? {
            Count::All => None,
            Count::N(n) => {
                if let Some(len) = span.timeframe.fixed_length() {
                    return Some(span.start + len * n as i32);
                }
                let mut s = *span;
                for _ in 0..n {
                    s = s.next(tz);
                }
                Some(s.start)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn tz(name: &str) -> Tz {
        name.parse().unwrap()
    }

    #[test]
    fn parses_and_prints_canonical_policies() {
        let p: Policy = "1y 3m 30d 24h".parse().unwrap();
        assert_eq!(p.to_string(), "1y 3m 30d 24h");
        assert_eq!(
            p.timeframes(),
            vec![
                Timeframe::Year,
                Timeframe::Month,
                Timeframe::Day,
                Timeframe::Hour
            ]
        );
        assert_eq!(p.count(Timeframe::Day), Some(Count::N(30)));
        let p: Policy = "*y 12m".parse().unwrap();
        assert_eq!(p.count(Timeframe::Year), Some(Count::All));
        let p: Policy = "2y 0q 4w 0s".parse().unwrap();
        assert_eq!(p.to_string(), "2y 4w");
        let p: Policy = "0y 0d".parse().unwrap();
        assert!(p.timeframes().is_empty());
        let p: Policy = "1M 30s".parse().unwrap();
        assert_eq!(p.timeframes(), vec![Timeframe::Minute, Timeframe::Second]);
    }

    #[test]
    fn rejects_bad_policies() {
        for (bad, why) in [
            ("", PolicyError::Empty),
            ("1x", PolicyError::UnknownTimeframe('x')),
            ("3m 1y", PolicyError::Order('y', 'm')),
            ("1d 1d", PolicyError::Order('d', 'd')),
            ("y", PolicyError::BadTerm("y".into())),
            ("1", PolicyError::BadTerm("1".into())),
            ("1yy", PolicyError::BadTerm("1yy".into())),
            ("**y", PolicyError::BadTerm("**y".into())),
            ("-1d", PolicyError::BadTerm("-1d".into())),
            ("1y3m", PolicyError::BadTerm("1y3m".into())),
        ] {
            assert_eq!(bad.parse::<Policy>().unwrap_err(), why, "policy {bad:?}");
        }
        assert!(matches!(
            "99999999999d".parse::<Policy>(),
            Err(PolicyError::CountTooLarge(_))
        ));
    }

    #[test]
    fn describes_in_words() {
        let p: Policy = "1y 3m 30d 24h".parse().unwrap();
        assert_eq!(
            p.describe(),
            "1 yearly (full), 3 monthly, 30 daily, 24 hourly"
        );
        let p: Policy = "*y 12m".parse().unwrap();
        assert_eq!(p.describe(), "every yearly (full), 12 monthly");
    }

    #[test]
    fn preserved_spans_of_1y_3m_30d_24h() {
        let p: Policy = "1y 3m 30d 24h".parse().unwrap();
        let now = utc("2025-03-10T12:34:56Z");
        let z = Tz::UTC;
        let labels = |tf| {
            p.preserved_spans(tf, now, z, 1000)
                .iter()
                .map(|s| s.label(z))
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(Timeframe::Year), vec!["2025"]);
        assert_eq!(
            labels(Timeframe::Month),
            vec!["2025-03", "2025-02", "2025-01"]
        );
        let days = labels(Timeframe::Day);
        assert_eq!(days.len(), 30);
        assert_eq!(days.first().unwrap(), "2025-03-10");
        assert_eq!(days.last().unwrap(), "2025-02-09");
        let hours = labels(Timeframe::Hour);
        assert_eq!(hours.len(), 24);
        assert_eq!(hours.first().unwrap(), "2025-03-10T12");
        assert_eq!(hours.last().unwrap(), "2025-03-09T13");
        // preserves() agrees with the enumerated spans at their edges.
        let d = |s| Timeframe::Day.span_containing(utc(s), z);
        assert!(p.preserves(&d("2025-02-09T00:00:00Z"), now, z));
        assert!(!p.preserves(&d("2025-02-08T23:59:59Z"), now, z));
        assert!(
            !p.preserves(&d("2025-03-11T00:00:00Z"), now, z),
            "future spans are not preserved"
        );
        assert!(
            !p.preserves(&Timeframe::Week.span_containing(now, z), now, z),
            "weeks are off"
        );
    }

    #[test]
    fn calendar_spans_weeks_start_monday_and_quarters() {
        let z = Tz::UTC;
        let w = Timeframe::Week.span_containing(utc("2025-04-02T10:00:00Z"), z);
        assert_eq!(w.start, utc("2025-03-31T00:00:00Z"));
        assert_eq!(w.end, utc("2025-04-07T00:00:00Z"));
        assert_eq!(w.label(z), "2025-W14");
        let q = Timeframe::Quarter.span_containing(utc("2025-12-31T23:59:59Z"), z);
        assert_eq!(q.start, utc("2025-10-01T00:00:00Z"));
        assert_eq!(q.end, utc("2026-01-01T00:00:00Z"));
        assert_eq!(q.label(z), "2025-Q4");
        assert_eq!(q.prev(z).label(z), "2025-Q3");
        assert_eq!(q.next(z).label(z), "2026-Q1");
        let p: Policy = "2q".parse().unwrap();
        assert!(p.preserves(&q.prev(z), utc("2025-11-01T00:00:00Z"), z));
        assert!(!p.preserves(&q.prev(z).prev(z), utc("2025-11-01T00:00:00Z"), z));
    }

    #[test]
    fn year_starts_at_local_midnight() {
        let la = tz("America/Los_Angeles");
        let y = Timeframe::Year.span_containing(utc("2025-01-01T07:30:00Z"), la);
        assert_eq!(y.label(la), "2024");
        assert_eq!(y.end, utc("2025-01-01T08:00:00Z"));
    }

    /// Spring-forward days last 23 hours and fall-back days 25, in two zones on
    /// each side of the Atlantic; hours stay one real hour long.
    #[test]
    fn dst_days_are_one_day_and_hours_one_hour() {
        for (zone, spring, fall) in [
            (
                "America/New_York",
                "2025-03-09T12:00:00Z",
                "2025-11-02T12:00:00Z",
            ),
            (
                "Europe/Berlin",
                "2025-03-30T12:00:00Z",
                "2025-10-26T12:00:00Z",
            ),
        ] {
            let z = tz(zone);
            let d = Timeframe::Day.span_containing(utc(spring), z);
            assert_eq!(d.end - d.start, Duration::hours(23), "{zone} spring day");
            let d = Timeframe::Day.span_containing(utc(fall), z);
            assert_eq!(d.end - d.start, Duration::hours(25), "{zone} fall day");
            // Walk every hour of both days: contiguous, one hour each, and 23 / 25 of them.
            for (day, expect) in [(utc(spring), 23), (utc(fall), 25)] {
                let d = Timeframe::Day.span_containing(day, z);
                let mut h = Timeframe::Hour.span_containing(d.start, z);
                let mut n = 0;
                let mut labels = std::collections::HashSet::new();
                while h.start < d.end {
                    assert_eq!(h.end - h.start, Duration::hours(1));
                    assert!(
                        labels.insert(h.label(z)),
                        "{zone}: duplicate label {}",
                        h.label(z)
                    );
                    n += 1;
                    let next = h.next(z);
                    assert_eq!(next.start, h.end);
                    assert_eq!(next.prev(z), h);
                    h = next;
                }
                assert_eq!(n, expect, "{zone}: hours in {day}");
            }
        }
    }

    #[test]
    fn fall_back_hour_is_two_spans_with_offsets() {
        let z = tz("America/New_York");
        // 01:30 EDT and 01:30 EST are an hour apart in real time.
        let a = Timeframe::Hour.span_containing(utc("2025-11-02T05:30:00Z"), z);
        let b = Timeframe::Hour.span_containing(utc("2025-11-02T06:30:00Z"), z);
        assert_ne!(a, b);
        assert_eq!(a.label(z), "2025-11-02T01-04:00");
        assert_eq!(b.label(z), "2025-11-02T01-05:00");
        let p: Policy = "2h".parse().unwrap();
        assert!(p.preserves(&a, utc("2025-11-02T06:59:00Z"), z));
        assert!(!p.preserves(&a, utc("2025-11-02T07:00:00Z"), z));
        // Berlin: the repeated hour is 02:00-03:00.
        let z = tz("Europe/Berlin");
        let a = Timeframe::Hour.span_containing(utc("2025-10-26T00:30:00Z"), z);
        let b = Timeframe::Hour.span_containing(utc("2025-10-26T01:30:00Z"), z);
        assert_eq!(a.label(z), "2025-10-26T02+02:00");
        assert_eq!(b.label(z), "2025-10-26T02+01:00");
    }

    #[test]
    fn spring_forward_skips_the_missing_hour() {
        let z = tz("Europe/Berlin");
        let before = Timeframe::Hour.span_containing(utc("2025-03-30T00:59:59Z"), z);
        assert_eq!(before.label(z), "2025-03-30T01");
        assert_eq!(before.next(z).label(z), "2025-03-30T03");
        let z = tz("America/New_York");
        let before = Timeframe::Hour.span_containing(utc("2025-03-09T06:59:59Z"), z);
        assert_eq!(before.label(z), "2025-03-09T01");
        assert_eq!(before.next(z).label(z), "2025-03-09T03");
        // 24h across the gap is still 24 real hours.
        let p: Policy = "24h".parse().unwrap();
        let now = utc("2025-03-09T18:00:00Z");
        let spans = p.preserved_spans(Timeframe::Hour, now, z, 100);
        assert_eq!(spans.last().unwrap().start, now - Duration::hours(23));
    }

    #[test]
    fn midnight_in_a_gap_starts_the_day_at_the_first_valid_instant() {
        // America/Santiago springs forward at 00:00 -> 01:00 (2024-09-08).
        let z = tz("America/Santiago");
        let d = Timeframe::Day.span_containing(utc("2024-09-08T12:00:00Z"), z);
        assert_eq!(
            d.start.with_timezone(&z).format("%H:%M").to_string(),
            "01:00"
        );
        assert_eq!(d.end - d.start, Duration::hours(23));
    }

    #[test]
    fn preserved_until_is_the_end_of_the_last_preserved_span() {
        let z = Tz::UTC;
        let p: Policy = "*y 3m 2h".parse().unwrap();
        let m = Timeframe::Month.span_containing(utc("2025-01-15T00:00:00Z"), z);
        assert_eq!(p.preserved_until(&m, z), Some(utc("2025-04-01T00:00:00Z")));
        let h = Timeframe::Hour.span_containing(utc("2025-01-15T10:20:00Z"), z);
        assert_eq!(p.preserved_until(&h, z), Some(utc("2025-01-15T12:00:00Z")));
        let y = Timeframe::Year.span_containing(utc("2025-01-15T00:00:00Z"), z);
        assert_eq!(p.preserved_until(&y, z), None);
        // consistent with preserves(): preserved just before, not at, that instant
        let until = p.preserved_until(&m, z).unwrap();
        assert!(p.preserves(&m, until - Duration::seconds(1), z));
        assert!(!p.preserves(&m, until, z));
    }
}
