//! Durations written the way people write them: `30s`, `5m`, `1h30m`, `500ms`.
//!
//! Small enough not to warrant a dependency (humantime would also accept months
//! and years, which make no sense for a timeout).

use std::time::Duration;

/// Parse a duration such as `90s`, `5m`, `1h 30m` or `250ms`. A bare integer is
/// rejected so that `timeout: 60` cannot be misread as minutes.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let expected = "write e.g. 30s, 5m or 1h30m (units ms, s, m, h, d)";
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        return Err(format!("empty duration: {expected}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = compact.as_str();
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("bad duration {text:?}: {expected}"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration {text:?}: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit_secs: Option<u64> = match &rest[..unit_len] {
            "ms" => None,
            "s" | "sec" | "secs" => Some(1),
            "m" | "min" | "mins" => Some(60),
            "h" | "hr" | "hrs" => Some(3600),
            "d" => Some(86_400),
            "" => {
                return Err(format!(
                    "bad duration {text:?}: a unit is missing; {expected}"
                ))
            }
            unit => {
                return Err(format!(
                    "bad duration {text:?}: unknown unit {unit:?}; {expected}"
                ))
            }
        };
        let part = match unit_secs {
            Some(mult) => number
                .checked_mul(mult)
                .map(Duration::from_secs)
                .ok_or_else(|| format!("bad duration {text:?}: too large"))?,
            None => Duration::from_millis(number),
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("bad duration {text:?}: too large"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_common_forms() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30m15s"), Ok(Duration::from_secs(5415)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "60",
            "5 minutes",
            "1y",
            "m5",
            "1.5h",
            "-3s",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
