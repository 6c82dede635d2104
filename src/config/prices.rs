//! The `prices:` section: a price table for cost estimates (`core::cost`).
//! Only what the user writes: subvault ships no prices, because they differ
//! per provider, region and year (docs/s3-permissions-and-costs.md has an
//! example to start from).

use serde_yaml_ng::Value;

use super::node::{Fault, Node};
use super::storage_costs::minimum_duration;
use crate::core::cost::{PriceTable, REQUEST_KINDS, STORAGE_CLASSES};

const PRICES_KEYS: &[&str] = &[
    "currency",
    "storage_gb_month",
    "requests_per_1000",
    "min_storage_days",
];

/// Parses `prices:`. Minimum storage durations default to S3's.
pub(crate) fn prices(node: &Node) -> Result<PriceTable, Fault> {
    let map = node.map(PRICES_KEYS)?;
    let mut out = PriceTable {
        currency: match map.get("currency") {
            Some(n) => n.non_empty_str()?.to_string(),
            None => "USD".into(),
        },
        ..Default::default()
    };
    for class in STORAGE_CLASSES {
        if let Some(d) = minimum_duration(class) {
            out.min_storage_days
                .insert(class.to_string(), d.as_secs() as f64 / 86_400.0);
        }
    }
    if let Some(n) = map.get("storage_gb_month") {
        out.storage_gb_month = table(&n, STORAGE_CLASSES)?;
    }
    if let Some(n) = map.get("requests_per_1000") {
        out.requests_per_1000 = table(&n, REQUEST_KINDS)?;
    }
    if let Some(n) = map.get("min_storage_days") {
        out.min_storage_days.extend(table(&n, STORAGE_CLASSES)?);
    }
    Ok(out)
}

/// A mapping of known names to non-negative numbers.
fn table(node: &Node, known: &[&str]) -> Result<std::collections::BTreeMap<String, f64>, Fault> {
    let map = node.map(known)?;
    let mut out = std::collections::BTreeMap::new();
    for name in known {
        let Some(n) = map.get(name) else { continue };
        let v = match n.value() {
            Value::Number(num) => num.as_f64(),
            _ => None,
        };
        match v {
            Some(v) if v.is_finite() && v >= 0.0 => {
                out.insert(name.to_string(), v);
            }
            _ => return Err(n.fault("write a number of zero or more, e.g. 0.023")),
        }
    }
    Ok(out)
}
