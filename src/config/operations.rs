//! The settings for running unattended (issue 19): how many sources run at
//! once, the Prometheus textfile, the hooks, a source's `max_age` and a
//! remote's `rate_limit`. Read here, apart from the backup settings in
//! `schema`, so the two grow without stepping on each other.

use std::path::PathBuf;
use std::time::Duration;

use serde_yaml_ng::Value;

use super::duration::parse_duration;
use super::node::{Fault, MapNode, Node};

/// Top-level keys this module reads.
pub(crate) const TOP_KEYS: &[&str] = &["max_parallel_sources", "metrics_file", "hooks"];
/// Source keys this module reads.
pub(crate) const SOURCE_KEYS: &[&str] = &["max_age"];
/// Remote keys this module reads.
pub(crate) const REMOTE_KEYS: &[&str] = &["rate_limit", "single_put_max"];

/// Default number of sources a run works on at once.
pub const DEFAULT_MAX_PARALLEL_SOURCES: usize = 2;
/// The most sources a run works on at once: each one holds its own upload
/// buffers (see docs/design.md, Uploads), so the memory bound grows with it.
pub const MAX_PARALLEL_SOURCES: usize = 16;
/// Default time a hook may take before it is killed.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What runs after each `subvault run` (`hooks:` in the file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Run when every source succeeded (argv, no shell).
    pub on_success: Option<Vec<String>>,
    /// Run when a source failed, or the run was stopped by a signal.
    pub on_failure: Option<Vec<String>>,
    /// How long a hook may run before it is killed.
    pub timeout: Duration,
}

/// The top-level operational settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopLevel {
    pub max_parallel_sources: usize,
    pub metrics_file: Option<PathBuf>,
    pub hooks: Hooks,
}

/// Reads `max_parallel_sources`, `metrics_file` and `hooks` from the top map.
pub(crate) fn top_level(top: &MapNode) -> Result<TopLevel, Fault> {
    let max_parallel_sources = match top.get("max_parallel_sources") {
        None => DEFAULT_MAX_PARALLEL_SOURCES,
        Some(n) => {
            let v = n.int()?;
            match usize::try_from(v) {
                Ok(v) if (1..=MAX_PARALLEL_SOURCES).contains(&v) => v,
                _ => {
                    return Err(n.fault(format!(
                        "{v} is out of range (1..={MAX_PARALLEL_SOURCES}); each source in \
                         flight holds its own upload buffers"
                    )))
                }
            }
        }
    };
    let metrics_file = match top.get("metrics_file") {
        None => None,
        Some(n) => {
            let text = n.non_empty_str()?;
            let path = PathBuf::from(text);
            if !path.is_absolute() {
                return Err(n.fault(format!(
                    "{text:?} is a relative path; write it absolute (starting with /)"
                )));
            }
            if path.extension().and_then(|e| e.to_str()) != Some("prom") {
                return Err(n.fault(
                    "node_exporter's textfile collector reads only files ending in .prom; \
                     name it e.g. /var/lib/node_exporter/textfile_collector/subvault.prom",
                ));
            }
            Some(path)
        }
    };
    let hooks = match top.get("hooks") {
        None => Hooks {
            timeout: DEFAULT_HOOK_TIMEOUT,
            ..Default::default()
        },
        Some(n) => hooks(&n)?,
    };
    Ok(TopLevel {
        max_parallel_sources,
        metrics_file,
        hooks,
    })
}

fn hooks(node: &Node) -> Result<Hooks, Fault> {
    let map = node.map(&["on_success", "on_failure", "timeout"])?;
    let command = |key: &str| -> Result<Option<Vec<String>>, Fault> {
        let Some(n) = map.get(key) else {
            return Ok(None);
        };
        let argv: Vec<String> = n
            .seq()
            .map_err(|_| {
                n.expected(
                    "a command as a list of arguments (no shell), e.g. \
                     [curl, -fsS, -m, '10', 'https://hc-ping.com/UUID']",
                )
            })?
            .iter()
            .map(|arg| match arg.value() {
                Value::Number(num) => Ok(num.to_string()),
                _ => arg.str().map(str::to_string),
            })
            .collect::<Result<_, _>>()?;
        if argv.is_empty() || argv[0].is_empty() {
            return Err(n.fault("empty command; give at least the program name"));
        }
        Ok(Some(argv))
    };
    let timeout = match map.get("timeout") {
        None => DEFAULT_HOOK_TIMEOUT,
        Some(n) => {
            let d = duration(&n)?;
            if d.is_zero() {
                return Err(n.fault("timeout must be longer than zero"));
            }
            d
        }
    };
    Ok(Hooks {
        on_success: command("on_success")?,
        on_failure: command("on_failure")?,
        timeout,
    })
}

/// A duration with a unit (`26h`, `90m`).
fn duration(n: &Node) -> Result<Duration, Fault> {
    if let Value::Number(num) = n.value() {
        return Err(n.fault(format!("{num} has no unit; write e.g. {num}h")));
    }
    parse_duration(n.str()?).map_err(|m| n.fault(m))
}

/// A source's `max_age`: `status` calls it stale when its newest restorable
/// backup on a remote is older.
pub(crate) fn max_age(source: &MapNode) -> Result<Option<Duration>, Fault> {
    let Some(n) = source.get("max_age") else {
        return Ok(None);
    };
    let d = duration(&n)?;
    if d.is_zero() {
        return Err(n.fault("max_age must be longer than zero"));
    }
    Ok(Some(d))
}

/// A remote's `rate_limit` in bytes per second.
pub(crate) fn rate_limit(remote: &MapNode) -> Result<Option<u64>, Fault> {
    let Some(n) = remote.get("rate_limit") else {
        return Ok(None);
    };
    let text = match n.value() {
        Value::Number(num) => {
            return Err(n.fault(format!("{num} has no unit; write e.g. {num}MiB/s")))
        }
        _ => n.str()?,
    };
    parse_rate(text).map(Some).map_err(|m| n.fault(m))
}

/// A remote's `single_put_max` in bytes: streams up to it are one PutObject.
pub(crate) fn single_put_max(remote: &MapNode) -> Result<Option<u64>, Fault> {
    let Some(n) = remote.get("single_put_max") else {
        return Ok(None);
    };
    let text = match n.value() {
        Value::Number(num) => {
            return Err(n.fault(format!("{num} has no unit; write e.g. {num}MiB")))
        }
        _ => n.str()?,
    };
    parse_size(text)
        .and_then(|b| match b {
            b if (5 << 20..=1 << 30).contains(&b) => Ok(b),
            _ => Err(format!(
                "bad size {text:?}: between 5MiB (S3's smallest part) and 1GiB (it is held \
                 in memory)"
            )),
        })
        .map(Some)
        .map_err(|m| n.fault(m))
}

/// Parses `64MiB`, `500 KiB`, `1GB` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let expected = "write e.g. 64MiB, 512KiB or 1GiB";
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let (number, unit) = split_amount(&compact);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("bad size {text:?}: {expected}"))?;
    let mult = match unit {
        "" => return Err(format!("bad size {text:?}: a unit is missing; {expected}")),
        other => byte_unit(other)
            .ok_or_else(|| format!("bad size {text:?}: unknown unit {other:?}; {expected}"))?,
    };
    let bytes = number * mult;
    if !bytes.is_finite() || bytes < 0.0 {
        return Err(format!("bad size {text:?}: {expected}"));
    }
    Ok(bytes as u64)
}

/// Splits `1.5MiB` into its number and its unit.
fn split_amount(compact: &str) -> (&str, &str) {
    let split = compact
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(compact.len());
    compact.split_at(split)
}

/// Bytes in one of a byte unit, decimal (`MB`) or binary (`MiB`).
fn byte_unit(unit: &str) -> Option<f64> {
    Some(match unit {
        "B" => 1.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    })
}

/// Parses `20MiB/s`, `500 KiB/s`, `1.5MB/s`, `100Mbit/s` into bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let expected = "write e.g. 20MiB/s, 500KiB/s, 10MB/s or 100Mbit/s";
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(amount) = compact.strip_suffix("/s") else {
        return Err(format!("bad rate {text:?}: {expected}"));
    };
    let (number, unit) = split_amount(amount);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("bad rate {text:?}: {expected}"))?;
    let mult: f64 = match unit {
        "kbit" | "Kbit" => 1e3 / 8.0,
        "Mbit" => 1e6 / 8.0,
        "Gbit" => 1e9 / 8.0,
        "" => return Err(format!("bad rate {text:?}: a unit is missing; {expected}")),
        other => byte_unit(other)
            .ok_or_else(|| format!("bad rate {text:?}: unknown unit {other:?}; {expected}"))?,
    };
    let rate = number * mult;
    // NaN fails `is_finite`, so the comparison below sees only numbers.
    if !rate.is_finite() || rate < 1024.0 {
        return Err(format!(
            "bad rate {text:?}: at least 1KiB/s (a slower upload would never finish)"
        ));
    }
    Ok(rate as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_in_the_units_people_write() {
        assert_eq!(parse_rate("20MiB/s"), Ok(20 << 20));
        assert_eq!(parse_rate("500 KiB/s"), Ok(500 << 10));
        assert_eq!(parse_rate("1.5MB/s"), Ok(1_500_000));
        assert_eq!(parse_rate("100Mbit/s"), Ok(12_500_000));
        assert_eq!(parse_rate("2GiB/s"), Ok(2 << 30));
        for bad in [
            "20MiB",
            "20/s",
            "fast/s",
            "20 furlongs/s",
            "10B/s",
            "0MiB/s",
            "-1MiB/s",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
