//! Numbers and times as people read them: byte counts in binary units, plurals,
//! and timestamps in the configured zone; and the sizes people write on the
//! command line. A leaf module, shared by every command's output, its flags and
//! by log lines.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// Bytes in binary units, e.g. `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// [`human_bytes`] with a sign, for differences (`-1.5 MiB`).
pub fn human_signed(b: i64) -> String {
    if b < 0 {
        format!("-{}", human_bytes(b.unsigned_abs()))
    } else {
        human_bytes(b as u64)
    }
}

/// The plural ending for `n` things: `""` for one, `"s"` otherwise.
pub fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A time in the configured zone, for people (`2026-11-27 13:00:00 CET`).
pub fn show_time(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// `3d 4h`, `26h`, `5m`, `42s`: the largest two units.
pub fn short_duration(secs: i64) -> String {
    let neg = secs < 0;
    let mut s = secs.unsigned_abs();
    let mut parts = Vec::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len && parts.len() < 2 {
            parts.push(format!("{}{unit}", s / len));
            s %= len;
        }
    }
    if parts.is_empty() {
        parts.push("0s".into());
    }
    format!("{}{}", if neg { "-" } else { "" }, parts.join(" "))
}

/// Parses a size as command-line flags take it: `131072`, `128K`, `512M`,
/// `64G`, `1T` (powers of 1024, either case).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (examples: 131072, 128K, 64G, 1T)"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn flag_sizes_parse() {
        assert_eq!(parse_size("64G"), Ok(64 << 30));
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("lots").is_err());
    }

    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_signed(-1536), "-1.5 KiB");
    }

    #[test]
    fn times_show_in_the_configured_zone() {
        let t = "2026-01-15T12:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            show_time(t, chrono_tz::Europe::Berlin),
            "2026-01-15 13:00:00 CET"
        );
        assert_eq!(plural(1), "");
        assert_eq!(plural(2), "s");
    }
}
