//! Storage classes that bill longer than the policy keeps an object.
//!
//! S3's infrequent-access and archive classes charge a minimum storage
//! duration: an object deleted earlier is billed as if kept that long. A
//! class per timeframe is meant for backups kept long; put on one that the
//! policy prunes sooner (hourlies in GLACIER), every backup costs the minimum.
//! `config check` warns; nothing is refused (the user may have reasons).

use std::time::Duration;

use super::{Config, RemoteKind};
use crate::core::policy::{Count, Timeframe};

const DAY: u64 = 86_400;

/// The minimum storage duration S3 bills for `class`, when it has one.
pub fn minimum_duration(class: &str) -> Option<Duration> {
    let days = match class {
        "STANDARD_IA" | "ONEZONE_IA" => 30,
        "GLACIER_IR" | "GLACIER" => 90,
        "DEEP_ARCHIVE" => 180,
        _ => return None,
    };
    Some(Duration::from_secs(days * DAY))
}

/// About how long a backup kept for `count` spans of `tf` stays: the count
/// times the span's nominal length (months 30 days, quarters 91, years 365).
fn kept_for(tf: Timeframe, count: u32) -> Duration {
    let span = match tf {
        Timeframe::Year => 365 * DAY,
        Timeframe::Quarter => 91 * DAY,
        Timeframe::Month => 30 * DAY,
        Timeframe::Week => 7 * DAY,
        Timeframe::Day => DAY,
        Timeframe::Hour => 3600,
        Timeframe::Minute => 60,
        Timeframe::Second => 1,
    };
    Duration::from_secs(span * u64::from(count))
}

fn days(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 2 * DAY {
        format!("{} days", secs / DAY)
    } else {
        format!("{} hours", (secs / 3600).max(1))
    }
}

impl Config {
    /// One warning per S3 upload and timeframe whose storage class bills a
    /// minimum duration longer than the policy keeps that timeframe's backups.
    pub fn storage_class_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.sources {
            for up in &s.upload_to_remotes {
                let is_s3 = matches!(
                    self.remote(&up.id).map(|r| &r.kind),
                    Some(RemoteKind::S3(_))
                );
                if !is_s3 {
                    continue;
                }
                for tf in up.preserve.timeframes() {
                    let Some(Count::N(n)) = up.preserve.count(tf) else {
                        continue; // `*` keeps every span: forever
                    };
                    let class = up.storage_class.for_timeframe(Some(tf));
                    let Some(min) = minimum_duration(&class) else {
                        continue;
                    };
                    let kept = kept_for(tf, n);
                    if kept < min {
                        out.push(format!(
                            "source {} -> remote {}: {} backups go to {class}, which bills at \
                             least {} per object, but `{n}{}` keeps them about {}: each costs \
                             the full minimum (give {} a class without a minimum, such as \
                             STANDARD, or keep them longer)",
                            s.name,
                            up.id,
                            tf.adjective(),
                            days(min),
                            tf.letter(),
                            days(kept),
                            tf.adjective()
                        ));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(upload: &str) -> Config {
        let text = format!(
            "timezone: UTC\nsources:\n  - path: /srv/a\n    snapshots: /srv/s\n    \
             upload_to_remotes:\n      - id: r\n{upload}remotes:\n  - id: r\n    s3: {{bucket: b}}\n"
        );
        Config::from_str_at(&text, Path::new("/x/c.yaml")).unwrap()
    }

    #[test]
    fn a_class_billed_longer_than_its_timeframe_keeps_is_named() {
        let c = config(
            "        preserve: 1y 3m 30d 24h\n        storage_class: {yearly: DEEP_ARCHIVE, \
             monthly: GLACIER, default: STANDARD_IA}\n",
        );
        let w = c.storage_class_warnings();
        // yearly 365 d >= 180: fine; monthly 3 x 30 = 90 d >= 90: fine;
        // daily 30 d >= 30: fine; hourly 24 h < 30 d: warned.
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].contains("hourly backups go to STANDARD_IA")
                && w[0].contains("at least 30 days")
                && w[0].contains("`24h` keeps them about 24 hours"),
            "{}",
            w[0]
        );
        let c = config("        preserve: 1y 2m\n        storage_class: {monthly: GLACIER}\n");
        let w = c.storage_class_warnings();
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("monthly backups go to GLACIER"), "{}", w[0]);
    }

    #[test]
    fn keep_all_and_plain_classes_are_never_warned() {
        let c =
            config("        preserve: '*y 24h'\n        storage_class: {yearly: DEEP_ARCHIVE}\n");
        assert!(c.storage_class_warnings().is_empty());
        assert_eq!(minimum_duration("STANDARD"), None);
        assert_eq!(minimum_duration("INTELLIGENT_TIERING"), None);
    }
}
