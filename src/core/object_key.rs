//! Object key naming: the public, stable key format (docs/design.md, "Object format").
//!
//! A backup's metadata lives entirely in its key, so one listing rebuilds the
//! state. The scheme is btrfs2s3's: `<prefix><basename>` followed by dot-suffixes,
//! each a four-letter code and a value:
//!
//! ```text
//! home.ctim2024-06-01T00:00:00+02:00.ctid1234.uuid<uuid>.sndp<uuid|nil>.prnt<uuid>.mdvn1.seqn0.cmprzstd
//! ```
//!
//! Reading follows btrfs2s3's rules so that buckets written by either tool are
//! readable by the other: the suffixes are the `.`-separated parts of the last
//! path component after the first one; unknown codes (`.gz`, `.cmpr` for
//! btrfs2s3) are ignored; a known code whose value does not parse is ignored too
//! (the last valid one wins); `mdvn` must be 1, `seqn` must be 0, and `ctim`,
//! `ctid`, `uuid`, `sndp` and `prnt` must all be present. `.cmpr<codec>` is
//! subvault's addition and only written when subvault compressed the stream.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, NaiveDateTime};
use uuid::Uuid;

use crate::core::model::{Backup, Codec};

const CTIM: &str = "ctim";
const CTID: &str = "ctid";
const UUID: &str = "uuid";
const SNDP: &str = "sndp";
const PRNT: &str = "prnt";
const MDVN: &str = "mdvn";
const SEQN: &str = "seqn";
const CMPR: &str = "cmpr";

/// Everything a backup key says about its object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Free-form name before the suffixes (usually the source's base name). Must
    /// not contain `/`; dots are allowed as long as no dot-separated part of it
    /// looks like a valid suffix (e.g. `db.ctid5`).
    pub basename: String,
    /// The snapshot's time, with the offset it is written in (`.ctim`).
    pub time: DateTime<FixedOffset>,
    /// ctransid of the snapshot (`.ctid`).
    pub ctransid: u64,
    /// The snapshot's uuid (`.uuid`).
    pub uuid: Uuid,
    /// The uuid the stream was sent relative to (`.sndp`); `None` for a full
    /// backup, written as the nil uuid.
    pub send_parent_uuid: Option<Uuid>,
    /// The source subvolume's uuid (`.prnt`).
    pub source_uuid: Uuid,
    /// The codec subvault compressed the stream with (`.cmpr`); `None` when the
    /// key does not say (btrfs2s3 objects).
    pub codec: Option<Codec>,
}

/// Why a key is not a backup key. Such keys are ignored, never touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    /// The key is outside the remote's prefix.
    #[error("key {key:?} does not start with the remote's prefix {prefix:?}")]
    OutsidePrefix {
        /// The key.
        key: String,
        /// The expected prefix.
        prefix: String,
    },
    /// The part after the prefix contains a `/` (an object in a "subdirectory").
    #[error("key {0:?} has a '/' after the prefix; backup keys are flat under the prefix")]
    Nested(String),
    /// No basename before the suffixes.
    #[error("key {0:?} has no base name before its suffixes")]
    NoBasename(String),
    /// `.mdvn` is missing.
    #[error("key {0:?} has no .mdvn suffix (not a backup key?)")]
    NoVersion(String),
    /// `.mdvn` is not 1.
    #[error("key {key:?} has metadata version {version}, only 1 is supported")]
    UnsupportedVersion {
        /// The key.
        key: String,
        /// The version found.
        version: u64,
    },
    /// `.seqn` is missing or not 0 (multi-object backups are not supported).
    #[error("key {0:?} has a missing or non-zero .seqn (multi-object backups are not supported)")]
    UnsupportedSequence(String),
    /// One of the required suffixes is missing or has no valid value.
    #[error("key {key:?} lacks a valid .{code} suffix")]
    Missing {
        /// The key.
        key: String,
        /// The four-letter code that is missing.
        code: &'static str,
    },
    /// `.cmpr` names a codec subvault does not know, so the object could not be
    /// read back correctly.
    #[error("key {key:?} has an unknown compression .cmpr{value}")]
    UnknownCodec {
        /// The key.
        key: String,
        /// The value after `cmpr`.
        value: String,
    },
}

/// Builds the key for a backup: `<prefix><basename>.ctim….ctid….uuid….sndp….prnt….mdvn1.seqn0[.cmpr…]`.
///
/// The time is written with the offset `info.time` carries (callers convert to
/// the configured time zone first), to the second.
pub fn format_key(prefix: &str, info: &KeyInfo) -> String {
    let sndp = info.send_parent_uuid.unwrap_or(Uuid::nil());
    let mut key = format!(
        "{prefix}{base}.{CTIM}{time}.{CTID}{ctid}.{UUID}{uuid}.{SNDP}{sndp}.{PRNT}{prnt}.{MDVN}1.{SEQN}0",
        base = info.basename,
        time = info.time.format("%Y-%m-%dT%H:%M:%S%:z"),
        ctid = info.ctransid,
        uuid = info.uuid.hyphenated(),
        sndp = sndp.hyphenated(),
        prnt = info.source_uuid.hyphenated(),
    );
    if let Some(codec) = info.codec {
        key.push('.');
        key.push_str(CMPR);
        key.push_str(codec.as_str());
    }
    key
}

/// Parses a key listed under `prefix`. See the module docs for the rules.
pub fn parse_key(prefix: &str, key: &str) -> Result<KeyInfo, KeyParseError> {
    let rest = key
        .strip_prefix(prefix)
        .ok_or_else(|| KeyParseError::OutsidePrefix {
            key: key.to_string(),
            prefix: prefix.to_string(),
        })?;
    if rest.contains('/') {
        return Err(KeyParseError::Nested(key.to_string()));
    }
    // pathlib ignores leading dots when splitting suffixes and yields none for a
    // name ending in '.'; mirror both so we accept exactly what btrfs2s3 does.
    let stripped = rest.trim_start_matches('.');
    let parts: Vec<&str> = if rest.ends_with('.') {
        vec![stripped]
    } else {
        stripped.split('.').collect()
    };

    let mut fields = Fields::default();
    // The basename ends at the first part that is a valid known suffix.
    let mut base_end = parts.len();
    for (i, part) in parts.iter().enumerate().skip(1) {
        if fields.absorb(part) && base_end == parts.len() {
            base_end = i;
        }
    }
    let leading_dots = rest.len() - stripped.len();
    let basename = format!("{}{}", &rest[..leading_dots], parts[..base_end].join("."));
    fields.finish(key, basename)
}

/// The values collected from a key's suffixes (last valid one wins).
#[derive(Default)]
struct Fields {
    time: Option<DateTime<FixedOffset>>,
    ctransid: Option<u64>,
    uuid: Option<Uuid>,
    sndp: Option<Uuid>,
    prnt: Option<Uuid>,
    mdvn: Option<u64>,
    seqn: Option<u64>,
    cmpr: Option<String>,
}

impl Fields {
    /// Records one suffix (without its dot); true if it was a known code with a
    /// valid value.
    fn absorb(&mut self, part: &str) -> bool {
        let Some(code) = part.get(..4) else {
            return false;
        };
        let value = &part[4..];
        match code {
            CTIM => set(&mut self.time, parse_time(value)),
            CTID => set(&mut self.ctransid, parse_int(value)),
            UUID => set(&mut self.uuid, Uuid::parse_str(value).ok()),
            SNDP => set(&mut self.sndp, Uuid::parse_str(value).ok()),
            PRNT => set(&mut self.prnt, Uuid::parse_str(value).ok()),
            MDVN => set(&mut self.mdvn, parse_int(value)),
            SEQN => set(&mut self.seqn, parse_int(value)),
            CMPR if !value.is_empty() => set(&mut self.cmpr, Some(value.to_string())),
            _ => false,
        }
    }

    fn finish(self, key: &str, basename: String) -> Result<KeyInfo, KeyParseError> {
        let k = || key.to_string();
        let missing = |code| KeyParseError::Missing { key: k(), code };
        match self.mdvn {
            None => return Err(KeyParseError::NoVersion(k())),
            Some(1) => {}
            Some(version) => return Err(KeyParseError::UnsupportedVersion { key: k(), version }),
        }
        if self.seqn != Some(0) {
            return Err(KeyParseError::UnsupportedSequence(k()));
        }
        let time = self.time.ok_or_else(|| missing(CTIM))?;
        let ctransid = self.ctransid.ok_or_else(|| missing(CTID))?;
        let uuid = self.uuid.ok_or_else(|| missing(UUID))?;
        let sndp = self.sndp.ok_or_else(|| missing(SNDP))?;
        let source_uuid = self.prnt.ok_or_else(|| missing(PRNT))?;
        let codec = match self.cmpr {
            None => None,
            Some(value) => Some(
                value
                    .parse::<Codec>()
                    .map_err(|_| KeyParseError::UnknownCodec { key: k(), value })?,
            ),
        };
        if basename.is_empty() {
            return Err(KeyParseError::NoBasename(k()));
        }
        Ok(KeyInfo {
            basename,
            time,
            ctransid,
            uuid,
            send_parent_uuid: (!sndp.is_nil()).then_some(sndp),
            source_uuid,
            codec,
        })
    }
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        Some(v) => {
            *slot = Some(v);
            true
        }
        None => false,
    }
}

fn parse_int(value: &str) -> Option<u64> {
    // Python's int() accepts a leading '+' and '_' separators; keep to plain
    // digits plus '+', which is all any writer produces.
    value.parse().ok()
}

/// ISO-8601 as btrfs2s3 (arrow) reads it: with an offset (`Z`, `+02:00` or
/// `+0200`), or without one, meaning UTC.
fn parse_time(value: &str) -> Option<DateTime<FixedOffset>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%z") {
        return Some(t);
    }
    NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|t| t.and_utc().fixed_offset())
}

/// Turns a parsed key plus listing facts into the planner's [`Backup`].
pub fn to_backup(
    key: &str,
    info: &KeyInfo,
    size: Option<u64>,
    storage_class: Option<Arc<str>>,
) -> Backup {
    into_backup(key.into(), info, size, storage_class)
}

/// [`to_backup`] for a key the caller owns (a listing's), which the backup
/// takes instead of a copy.
pub fn into_backup(
    key: Arc<str>,
    info: &KeyInfo,
    size: Option<u64>,
    storage_class: Option<Arc<str>>,
) -> Backup {
    Backup {
        key,
        uuid: info.uuid,
        send_parent_uuid: info.send_parent_uuid,
        source_uuid: info.source_uuid,
        ctransid: info.ctransid,
        time: info.time.to_utc(),
        size,
        storage_class,
        codec: info.codec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BTRFS2S3_KEY: &str = "home.ctim2024-06-01T00:00:00+02:00.ctid1234.uuid3fd11d8e-8110-4cd0-b85c-bae3dda86a3d.sndp00000000-0000-0000-0000-000000000000.prnt9d9d3bcb-4b62-46a3-b6e2-678eeb24f54e.mdvn1.seqn0.gz";

    fn u(s: &str) -> Uuid {
        Uuid::parse_str(s).unwrap()
    }

    fn sample() -> KeyInfo {
        KeyInfo {
            basename: "home".into(),
            time: DateTime::parse_from_rfc3339("2026-11-27T05:00:00+01:00").unwrap(),
            ctransid: 77,
            uuid: u("11111111-2222-3333-4444-555555555555"),
            send_parent_uuid: Some(u("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")),
            source_uuid: u("99999999-8888-7777-6666-555555555555"),
            codec: Some(Codec::Zstd),
        }
    }

    #[test]
    fn reads_btrfs2s3_key_with_extra_gz_suffix() {
        let info = parse_key("", BTRFS2S3_KEY).unwrap();
        assert_eq!(info.basename, "home");
        assert_eq!(info.ctransid, 1234);
        assert_eq!(info.uuid, u("3fd11d8e-8110-4cd0-b85c-bae3dda86a3d"));
        assert_eq!(info.send_parent_uuid, None);
        assert_eq!(info.source_uuid, u("9d9d3bcb-4b62-46a3-b6e2-678eeb24f54e"));
        assert_eq!(info.codec, None);
        assert_eq!(
            info.time.to_utc(),
            DateTime::parse_from_rfc3339("2024-05-31T22:00:00Z").unwrap()
        );
        assert_eq!(info.time.offset().local_minus_utc(), 7200);
    }

    #[test]
    fn reads_btrfs2s3_key_under_prefix_with_send_parent() {
        let key = "backups/host1/db.ctim2024-06-02T00:00:00+00:00.ctid1300.uuid3fd11d8e-8110-4cd0-b85c-bae3dda86a3e.sndp3fd11d8e-8110-4cd0-b85c-bae3dda86a3d.prnt9d9d3bcb-4b62-46a3-b6e2-678eeb24f54e.mdvn1.seqn0";
        let info = parse_key("backups/host1/", key).unwrap();
        assert_eq!(info.basename, "db");
        assert_eq!(
            info.send_parent_uuid,
            Some(u("3fd11d8e-8110-4cd0-b85c-bae3dda86a3d"))
        );
        let b = to_backup(key, &info, Some(42), Some("GLACIER".into()));
        assert_eq!(&*b.key, key);
        assert_eq!(b.size, Some(42));
        assert_eq!(b.storage_class.as_deref(), Some("GLACIER"));
        assert_eq!(b.ctransid, 1300);
    }

    #[test]
    fn suffix_order_does_not_matter() {
        let key = "x.seqn0.mdvn1.prnt9d9d3bcb-4b62-46a3-b6e2-678eeb24f54e.sndp00000000-0000-0000-0000-000000000000.uuid3fd11d8e-8110-4cd0-b85c-bae3dda86a3d.ctid5.ctim2024-01-01T00:00:00Z";
        let info = parse_key("", key).unwrap();
        assert_eq!(info.basename, "x");
        assert_eq!(info.ctransid, 5);
    }

    #[test]
    fn ours_round_trip_and_carry_codec() {
        let info = sample();
        let key = format_key("p/", &info);
        assert!(key.starts_with("p/home.ctim2026-11-27T05:00:00+01:00.ctid77."));
        assert!(key.ends_with(".mdvn1.seqn0.cmprzstd"));
        assert_eq!(parse_key("p/", &key).unwrap(), info);
    }

    #[test]
    fn full_backup_writes_nil_send_parent() {
        let mut info = sample();
        info.send_parent_uuid = None;
        info.codec = None;
        let key = format_key("", &info);
        assert!(key.contains(".sndp00000000-0000-0000-0000-000000000000."));
        assert!(!key.contains(".cmpr"));
        assert_eq!(parse_key("", &key).unwrap(), info);
    }

    #[test]
    fn dotted_basename_round_trips() {
        let mut info = sample();
        info.basename = "var.lib.postgresql".into();
        let key = format_key("", &info);
        assert_eq!(parse_key("", &key).unwrap(), info);
    }

    #[test]
    fn our_keys_satisfy_btrfs2s3_rules() {
        // Emulate btrfs2s3's reader on our key: last path component, pathlib
        // suffixes, 4-letter code + value, every required code present exactly
        // as it expects.
        let key = format_key("a/b/", &sample());
        let name = key.rsplit('/').next().unwrap();
        let suffixes: Vec<&str> = name.trim_start_matches('.').split('.').skip(1).collect();
        let get = |code: &str| {
            suffixes
                .iter()
                .rev()
                .find(|s| s.len() >= 4 && &s[..4] == code)
                .map(|s| &s[4..])
        };
        assert_eq!(get("mdvn"), Some("1"));
        assert_eq!(get("seqn"), Some("0"));
        assert_eq!(get("ctid"), Some("77"));
        assert!(DateTime::parse_from_rfc3339(get("ctim").unwrap()).is_ok());
        for code in ["uuid", "sndp", "prnt"] {
            assert!(Uuid::parse_str(get(code).unwrap()).is_ok(), "{code}");
        }
    }

    #[test]
    fn garbage_and_foreign_keys_are_rejected() {
        let ok = format_key("", &sample());
        let cases: Vec<(String, &str)> = vec![
            ("README.md".into(), "no version"),
            ("".into(), "empty"),
            (ok.replace(".mdvn1", ".mdvn2"), "version 2"),
            (ok.replace(".seqn0", ".seqn1"), "seqn 1"),
            (ok.replace(".seqn0", ""), "seqn missing"),
            (ok.replace(".ctid77", ".ctidxyz"), "bad ctid"),
            (ok.replace(".ctim2026-11-27T05:00:00+01:00", ""), "no ctim"),
            (ok.replace(".prnt", ".prnx"), "no prnt"),
            (ok.replace(".cmprzstd", ".cmprlz4"), "unknown codec"),
            (ok.replace("home", ""), "no basename"),
            (format!("sub/{ok}"), "nested"),
        ];
        for (key, why) in cases {
            assert!(parse_key("", &key).is_err(), "{why}: {key}");
        }
        assert!(matches!(
            parse_key("other/", &ok),
            Err(KeyParseError::OutsidePrefix { .. })
        ));
    }

    #[test]
    fn invalid_duplicate_value_is_ignored_like_btrfs2s3() {
        // btrfs2s3 suppresses values that do not parse; a later valid one wins.
        let key = format_key("", &sample()).replace(".ctid77", ".ctidnope.ctid77");
        assert_eq!(parse_key("", &key).unwrap().ctransid, 77);
    }

    #[test]
    fn time_forms_arrow_accepts() {
        for (s, utc) in [
            ("2024-06-01T00:00:00Z", "2024-06-01T00:00:00Z"),
            ("2024-06-01T00:00:00+0200", "2024-05-31T22:00:00Z"),
            ("2024-06-01T00:00:00", "2024-06-01T00:00:00Z"),
        ] {
            assert_eq!(
                parse_time(s).unwrap(),
                DateTime::parse_from_rfc3339(utc).unwrap(),
                "{s}"
            );
        }
        assert!(parse_time("yesterday").is_none());
    }

    fn arb_uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }

    proptest! {
        #[test]
        fn round_trip(
            basename in "[a-z_@-][a-z0-9_@-]{0,12}(\\.[a-z0-9_-]{1,3}){0,2}",
            secs in 0i64..4_000_000_000,
            offset_min in -14i32 * 60..=14 * 60,
            ctransid in any::<u64>(),
            uuid in arb_uuid(),
            sndp in proptest::option::of(arb_uuid()),
            source_uuid in arb_uuid(),
            codec in proptest::option::of(prop_oneof![Just(Codec::Zstd), Just(Codec::Gzip), Just(Codec::None)]),
            prefix in "([a-z0-9]{1,5}/){0,3}",
        ) {
            let offset = FixedOffset::east_opt(offset_min * 60).unwrap();
            let time = DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&offset);
            let info = KeyInfo {
                basename,
                time,
                ctransid,
                uuid,
                send_parent_uuid: sndp.filter(|u| !u.is_nil()),
                source_uuid,
                codec,
            };
            let key = format_key(&prefix, &info);
            prop_assert_eq!(parse_key(&prefix, &key).unwrap(), info);
        }

        /// Keys one edit away from valid ones (a field dropped, doubled, moved,
        /// given a random value, or the key cut short) reach every branch of
        /// the parser, which random text almost never gets past the basename.
        /// The parser never panics, and what it accepts is a fixpoint: the key
        /// it would write for the result parses back to the same thing.
        #[test]
        fn near_valid_keys_parse_consistently_or_fail_cleanly(
            ctransid in any::<u64>(),
            uuid in arb_uuid(),
            sndp in proptest::option::of(arb_uuid()),
            codec in proptest::option::of(prop_oneof![Just(Codec::Zstd), Just(Codec::Gzip), Just(Codec::None)]),
            edits in proptest::collection::vec(
                (0u8..5, any::<prop::sample::Index>(), any::<prop::sample::Index>(), "[a-z0-9:+-]{0,40}"),
                1..4,
            ),
        ) {
            let info = KeyInfo {
                basename: "data".into(),
                time: DateTime::parse_from_rfc3339("2026-03-01T04:05:06+01:00").unwrap(),
                ctransid,
                uuid,
                send_parent_uuid: sndp.filter(|u| !u.is_nil()),
                source_uuid: u("4a5b0000-0000-0000-0000-000000000001"),
                codec,
            };
            let key = format_key("", &info);
            let mut fields: Vec<String> = key.split('.').map(str::to_string).collect();
            for (op, a, b, text) in edits {
                let (i, j) = (a.index(fields.len()), b.index(fields.len()));
                match op {
                    0 if fields.len() > 1 => { fields.remove(i); }
                    1 => { let f = fields[i].clone(); fields.insert(j, f); }
                    2 => fields.swap(i, j),
                    3 => {
                        // Keep the four-letter field name, replace its value.
                        let name: String = fields[i].chars().take(4).collect();
                        fields[i] = format!("{name}{text}");
                    }
                    _ => {
                        let joined = fields.join(".");
                        let cut = b.index(joined.len() + 1);
                        fields = joined.get(..cut).unwrap_or(&joined).split('.').map(str::to_string).collect();
                    }
                }
            }
            let mutated = fields.join(".");
            if let Ok(parsed) = parse_key("", &mutated) {
                let again = format_key("", &parsed);
                prop_assert_eq!(parse_key("", &again).unwrap(), parsed, "{} -> {}", mutated, again);
            }
        }
    }
}
