//! What a remote costs a month, from a price table the user gives (`prices:`
//! in the config; docs/s3-permissions-and-costs.md has an example, not the
//! truth: prices differ per provider, region and year). Pure arithmetic:
//! storage per GB-month and class, requests per 1,000 and kind, and the
//! early-deletion charge of an object deleted before its class's minimum
//! storage duration (billed as if kept that long).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::core::planner::{BackupAction, BackupPlan};

/// Bytes in the GB of a GB-month (S3 bills 2^30 bytes).
pub const GB: f64 = (1u64 << 30) as f64;
/// Days in the month of a GB-month, for prorating early deletions.
pub const DAYS_PER_MONTH: f64 = 30.0;

/// The storage classes a price table may name.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "INTELLIGENT_TIERING",
    "STANDARD_IA",
    "ONEZONE_IA",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
    "EXPRESS_ONEZONE",
];

/// The request kinds a price table may name (as `run --json` counts them).
pub const REQUEST_KINDS: &[&str] = &[
    "ListObjectsV2",
    "ListMultipartUploads",
    "ListParts",
    "GetObject",
    "HeadObject",
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "DeleteObjects",
    "DeleteObject",
];

/// Prices of one store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriceTable {
    /// The currency the prices are in, for display (e.g. `USD`).
    pub currency: String,
    /// Price per GB-month, per storage class (`STANDARD`, `DEEP_ARCHIVE`, ...).
    pub storage_gb_month: BTreeMap<String, f64>,
    /// Price per 1,000 requests, per kind (S3 API names: `PutObject`, ...).
    pub requests_per_1000: BTreeMap<String, f64>,
    /// Minimum billed storage duration in days, per class (none: no minimum).
    pub min_storage_days: BTreeMap<String, f64>,
}

/// Storage of one class and its monthly price.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ClassCost {
    /// Bytes stored.
    pub bytes: u64,
    /// Their price per month (0 when the class has no price in the table).
    pub monthly: f64,
}

/// An estimated bill.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostEstimate {
    /// The table's currency.
    pub currency: String,
    /// Per storage class.
    pub by_storage_class: BTreeMap<String, ClassCost>,
    /// Storage per month, all classes.
    pub storage_monthly: f64,
    /// Early-deletion charges of the deletions considered (once, not monthly).
    pub early_deletion: f64,
    /// Requests considered (once).
    pub requests: f64,
    /// Classes or request kinds the table has no price for (counted as 0).
    pub unpriced: Vec<String>,
}

impl CostEstimate {
    /// An empty estimate in `table`'s currency.
    pub fn new(table: &PriceTable) -> CostEstimate {
        CostEstimate {
            currency: table.currency.clone(),
            ..Default::default()
        }
    }

    /// Adds `bytes` stored in `class`.
    pub fn add_storage(&mut self, table: &PriceTable, class: &str, bytes: u64) {
        let price = self.price_of(&table.storage_gb_month, class);
        let c = self.by_storage_class.entry(class.to_string()).or_default();
        c.bytes += bytes;
        let monthly = bytes as f64 / GB * price;
        c.monthly += monthly;
        self.storage_monthly += monthly;
    }

    /// Adds the early-deletion charge of deleting `bytes` of `class` after
    /// `age_days` (nothing when it was kept at least the class's minimum).
    pub fn add_deletion(&mut self, table: &PriceTable, class: &str, bytes: u64, age_days: f64) {
        let Some(min) = table.min_storage_days.get(class) else {
            return;
        };
        let left = (min - age_days.max(0.0)).max(0.0);
        if left > 0.0 {
            let price = self.price_of(&table.storage_gb_month, class);
            self.early_deletion += bytes as f64 / GB * price * left / DAYS_PER_MONTH;
        }
    }

    /// Adds `count` requests of `kind`.
    pub fn add_requests(&mut self, table: &PriceTable, kind: &str, count: u64) {
        let price = self.price_of(&table.requests_per_1000, kind);
        self.requests += count as f64 / 1000.0 * price;
    }

    fn price_of(&mut self, prices: &BTreeMap<String, f64>, what: &str) -> f64 {
        match prices.get(what) {
            Some(p) => *p,
            None => {
                if !self.unpriced.iter().any(|u| u == what) {
                    self.unpriced.push(what.to_string());
                    self.unpriced.sort();
                }
                0.0
            }
        }
    }
}

/// One remote's bill after a plan of one source: what the kept backups
/// store per month (uploads not yet made count 0 bytes: their size is not
/// known before the send), and the early-deletion charges of the backups the
/// plan deletes, aged from their snapshot time (an upload made later than its
/// snapshot, as a heal, is younger: the charge is then a lower bound).
pub fn plan_cost<'a>(
    table: &PriceTable,
    backups: impl IntoIterator<Item = &'a BackupPlan>,
    now: DateTime<Utc>,
) -> CostEstimate {
    let mut cost = CostEstimate::new(table);
    for b in backups {
        let class = b.storage_class().unwrap_or("STANDARD");
        let bytes = b.size().unwrap_or(0);
        match b.action {
            BackupAction::Keep | BackupAction::Upload => cost.add_storage(table, class, bytes),
            BackupAction::Delete => {
                let age_days = (now - b.time()).num_seconds() as f64 / 86_400.0;
                cost.add_deletion(table, class, bytes, age_days);
            }
        }
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed table (round numbers, not anyone's prices).
    fn table() -> PriceTable {
        PriceTable {
            currency: "EUR".into(),
            storage_gb_month: [("STANDARD".into(), 0.02), ("DEEP_ARCHIVE".into(), 0.001)].into(),
            requests_per_1000: [("PutObject".into(), 0.005), ("ListObjectsV2".into(), 0.005)]
                .into(),
            min_storage_days: [("DEEP_ARCHIVE".into(), 180.0)].into(),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn storage_is_priced_per_gb_month_and_class() {
        let t = table();
        let mut e = CostEstimate::new(&t);
        e.add_storage(&t, "STANDARD", 50 << 30);
        e.add_storage(&t, "DEEP_ARCHIVE", 1 << 40);
        e.add_storage(&t, "STANDARD", 50 << 30);
        assert!(close(e.by_storage_class["STANDARD"].monthly, 2.0));
        assert_eq!(e.by_storage_class["STANDARD"].bytes, 100 << 30);
        assert!(close(e.by_storage_class["DEEP_ARCHIVE"].monthly, 1.024));
        assert!(close(e.storage_monthly, 3.024));
        assert_eq!(e.currency, "EUR");
        assert!(e.unpriced.is_empty());
    }

    #[test]
    fn an_early_deletion_costs_the_rest_of_the_minimum() {
        let t = table();
        let mut e = CostEstimate::new(&t);
        // 30 GiB of DEEP_ARCHIVE deleted after 60 of its 180 days: 120 days
        // = 4 months of 30 GiB at 0.001 = 0.12.
        e.add_deletion(&t, "DEEP_ARCHIVE", 30 << 30, 60.0);
        assert!(close(e.early_deletion, 0.12), "{}", e.early_deletion);
        // Kept long enough, or a class without a minimum: nothing more.
        e.add_deletion(&t, "DEEP_ARCHIVE", 30 << 30, 200.0);
        e.add_deletion(&t, "STANDARD", 30 << 30, 1.0);
        assert!(close(e.early_deletion, 0.12));
        // A clock that puts the backup in the future counts as age 0.
        let mut f = CostEstimate::new(&t);
        f.add_deletion(&t, "DEEP_ARCHIVE", 30 << 30, -5.0);
        assert!(close(f.early_deletion, 0.18));
    }

    #[test]
    fn a_plan_costs_what_it_keeps_and_what_it_deletes_early() {
        let now: DateTime<Utc> = "2026-12-03T00:00:00Z".parse().unwrap();
        let b = |action, class: &str, gib: u64, days_old: i64| {
            let backup = crate::core::model::Backup {
                key_form: "k".into(),
                uuid: uuid::Uuid::nil(),
                send_parent_uuid: None,
                source_uuid: uuid::Uuid::nil(),
                ctransid: 1,
                time: now - chrono::Duration::days(days_old),
                size: Some(gib << 30),
                storage_class: Some(class.into()),
                codec: None,
            };
            BackupPlan::listed("r".into(), &std::sync::Arc::new(vec![backup]), 0, action)
        };
        let t = table();
        let plan = [
            b(BackupAction::Keep, "STANDARD", 10, 1),
            b(BackupAction::Keep, "DEEP_ARCHIVE", 100, 400),
            // Deleted 30 days early: 150 days left of 180, 5 months.
            b(BackupAction::Delete, "DEEP_ARCHIVE", 30, 30),
            b(BackupAction::Delete, "STANDARD", 50, 2),
        ];
        let c = plan_cost(&t, &plan, now);
        assert!(close(c.storage_monthly, 10.0 * 0.02 + 100.0 * 0.001));
        assert_eq!(c.by_storage_class["DEEP_ARCHIVE"].bytes, 100 << 30);
        assert!(
            close(c.early_deletion, 30.0 * 0.001 * 5.0),
            "{}",
            c.early_deletion
        );
    }

    #[test]
    fn requests_are_priced_per_thousand_and_unknowns_are_named() {
        let t = table();
        let mut e = CostEstimate::new(&t);
        e.add_requests(&t, "PutObject", 2000);
        e.add_requests(&t, "ListObjectsV2", 200);
        e.add_requests(&t, "HeadObject", 5);
        e.add_storage(&t, "GLACIER", 1 << 30);
        assert!(close(e.requests, 0.011), "{}", e.requests);
        assert_eq!(e.unpriced, vec!["GLACIER", "HeadObject"]);
        assert!(close(e.storage_monthly, 0.0));
    }
}
