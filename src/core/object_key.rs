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

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::Arc;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDateTime, Timelike};
use uuid::Uuid;

use crate::core::model::{Backup, Codec, Interner, KeyForm};

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
    let mut key = format!("{prefix}{}", info.basename);
    write_suffixes(&mut key, &Suffixes::of_info(info));
    key
}

/// The fields the suffixes after a key's base name are written from.
struct Suffixes {
    time: DateTime<FixedOffset>,
    ctransid: u64,
    uuid: Uuid,
    send_parent_uuid: Option<Uuid>,
    source_uuid: Uuid,
    codec: Option<Codec>,
}

impl Suffixes {
    fn of_info(info: &KeyInfo) -> Self {
        Suffixes {
            time: info.time,
            ctransid: info.ctransid,
            uuid: info.uuid,
            send_parent_uuid: info.send_parent_uuid,
            source_uuid: info.source_uuid,
            codec: info.codec,
        }
    }

    fn of(b: &Backup, offset: FixedOffset) -> Self {
        Suffixes {
            time: b.time.with_timezone(&offset),
            ctransid: b.ctransid,
            uuid: b.uuid,
            send_parent_uuid: b.send_parent_uuid,
            source_uuid: b.source_uuid,
            codec: b.codec,
        }
    }
}

/// Appends `.ctim….ctid….uuid….sndp….prnt….mdvn1.seqn0[.cmpr…]` to `out`.
fn write_suffixes(out: &mut String, s: &Suffixes) {
    use std::fmt::Write;
    let sndp = s.send_parent_uuid.unwrap_or(Uuid::nil());
    out.push('.');
    out.push_str(CTIM);
    write_time(out, &s.time);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        ".{CTID}{ctid}.{UUID}{uuid}.{SNDP}{sndp}.{PRNT}{prnt}.{MDVN}1.{SEQN}0",
        ctid = s.ctransid,
        uuid = s.uuid.hyphenated(),
        sndp = sndp.hyphenated(),
        prnt = s.source_uuid.hyphenated(),
    );
    if let Some(codec) = s.codec {
        out.push('.');
        out.push_str(CMPR);
        out.push_str(codec.as_str());
    }
}

/// Appends `t` as `%Y-%m-%dT%H:%M:%S%:z` writes it. By hand for the times
/// keys hold (four-digit years, whole-minute offsets, no leap second):
/// chrono reads its format string again for every time, a tenth of a
/// listing's CPU at 100k backups (issue 21).
fn write_time(out: &mut String, t: &DateTime<FixedOffset>) {
    use std::fmt::Write;
    let offset = t.offset().local_minus_utc();
    if !(0..=9999).contains(&t.year()) || offset % 60 != 0 || t.nanosecond() >= 1_000_000_000 {
        let _ = write!(out, "{}", t.format("%Y-%m-%dT%H:%M:%S%:z"));
        return;
    }
    let (sign, offset) = if offset < 0 {
        ('-', -offset)
    } else {
        ('+', offset)
    };
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        offset / 3600,
        offset / 60 % 60,
    );
}

/// The text of a backup's key (see [`KeyForm`]).
pub fn key_text(b: &Backup) -> Cow<'_, str> {
    match &b.key_form {
        KeyForm::Verbatim(key) => Cow::Borrowed(key),
        KeyForm::Derived { stem, offset, tail } => {
            let mut key = String::with_capacity(stem.len() + 160);
            key.push_str(stem);
            write_suffixes(&mut key, &Suffixes::of(b, *offset));
            if let Some(tail) = tail {
                key.push_str(tail);
            }
            Cow::Owned(key)
        }
    }
}

/// Orders backups as their keys' text sorts (bytewise: the order S3 lists
/// keys in) without writing the keys out when both are derived from one
/// stem in one offset, as nearly all are: a sort that wrote out two keys per
/// comparison took over a second at 100k backups (issue 21).
pub fn key_order(a: &Backup, b: &Backup) -> Ordering {
    derived_order(a, b).unwrap_or_else(|| a.key().cmp(&b.key()))
}

/// [`key_order`] from the fields, `None` when only the text can tell.
fn derived_order(a: &Backup, b: &Backup) -> Option<Ordering> {
    let (
        KeyForm::Derived {
            stem: stem_a,
            offset: off_a,
            tail: tail_a,
        },
        KeyForm::Derived {
            stem: stem_b,
            offset: off_b,
            tail: tail_b,
        },
    ) = (&a.key_form, &b.key_form)
    else {
        return None;
    };
    // Past the shared stem, `.ctim` is fixed-width in one offset (derived
    // keys have four-digit years), so its text sorts as its instant does.
    if stem_a != stem_b || off_a != off_b {
        return None;
    }
    let ord = a
        .time
        .cmp(&b.time)
        // `.ctid` is not fixed-width: compare the digits as text.
        .then_with(|| decimal(a.ctransid, &mut [0; 20]).cmp(decimal(b.ctransid, &mut [0; 20])))
        // Hyphenated lowercase hex sorts as the bytes do.
        .then_with(|| a.uuid.as_bytes().cmp(b.uuid.as_bytes()))
        .then_with(|| {
            let sndp = |x: &Backup| *x.send_parent_uuid.unwrap_or_default().as_bytes();
            sndp(a).cmp(&sndp(b))
        })
        .then_with(|| a.source_uuid.as_bytes().cmp(b.source_uuid.as_bytes()));
    if ord.is_ne() {
        return Some(ord);
    }
    // The same up to `.seqn0`: then the codec and the tail follow.
    match (a.codec, b.codec) {
        (x, y) if x == y => Some(
            tail_a
                .as_deref()
                .unwrap_or("")
                .cmp(tail_b.as_deref().unwrap_or("")),
        ),
        // `.cmpr…` against the end of the key; against a tail only the text tells.
        (None, Some(_)) if tail_a.is_none() => Some(Ordering::Less),
        (Some(_), None) if tail_b.is_none() => Some(Ordering::Greater),
        (Some(x), Some(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

/// The decimal digits of `n`, written into `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Makes the compact [`KeyForm`]s of one listing's keys: shares their stems
/// and reuses one buffer for the check that a key is written back exactly.
#[derive(Debug, Default)]
pub struct KeyForms {
    stems: Interner,
    scratch: String,
}

impl KeyForms {
    /// The form of `key`, which parsed as `info`: derived when the suffixes
    /// written from `info` are exactly the key's (then [`key_text`] gives
    /// `key` back), verbatim otherwise.
    pub fn form(&mut self, key: &str, info: &KeyInfo) -> KeyForm {
        let verbatim = || KeyForm::Verbatim(key.into());
        // Four-digit years only: `key_order` relies on `.ctim` being
        // fixed-width.
        if !(0..=9999).contains(&info.time.year()) {
            return verbatim();
        }
        self.scratch.clear();
        write_suffixes(&mut self.scratch, &Suffixes::of_info(info));
        // The suffixes start at a `.ctim` right after the base name (a
        // search for the whole suffix text cost more than writing it).
        let Some(at) = key.match_indices(".ctim").map(|(at, _)| at).find(|&at| {
            key[..at].ends_with(info.basename.as_str()) && key[at..].starts_with(&self.scratch)
        }) else {
            return verbatim();
        };
        let stem = &key[..at];
        let tail = &key[at + self.scratch.len()..];
        KeyForm::Derived {
            stem: self.stems.intern(stem),
            offset: *info.time.offset(),
            tail: (!tail.is_empty()).then(|| tail.into()),
        }
    }
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
    let form = KeyForms::default().form(key, info);
    into_backup(form, info, size, storage_class)
}

/// [`to_backup`] with the key's form already made (by the listing's
/// [`KeyForms`]).
pub fn into_backup(
    key_form: KeyForm,
    info: &KeyInfo,
    size: Option<u64>,
    storage_class: Option<Arc<str>>,
) -> Backup {
    Backup {
        key_form,
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
        assert_eq!(&*b.key(), key);
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

    #[test]
    fn a_listing_shares_one_stem_and_keeps_unusual_keys_as_they_are() {
        let mut forms = KeyForms::default();
        let a = format_key("p/", &sample());
        let b = format_key(
            "p/",
            &KeyInfo {
                ctransid: 78,
                ..sample()
            },
        );
        let stem = |form: &KeyForm| match form {
            KeyForm::Derived { stem, .. } => stem.clone(),
            other => panic!("not derived: {other:?}"),
        };
        let (fa, fb) = (
            forms.form(&a, &parse_key("p/", &a).unwrap()),
            forms.form(&b, &parse_key("p/", &b).unwrap()),
        );
        assert!(
            Arc::ptr_eq(&stem(&fa), &stem(&fb)),
            "one stem string per listing"
        );
        assert_eq!(&*stem(&fa), "p/home");
        // Written another way than subvault writes it (offset without a
        // colon, a `+` before the ctransid, an uppercase uuid): held as it
        // is, read back as it is.
        for odd in [
            a.replace("+01:00", "+0100"),
            a.replace(".ctid77", ".ctid+77"),
            a.replace("aaaaaaaa-bbbb", "AAAAAAAA-BBBB"),
        ] {
            let info = parse_key("p/", &odd).unwrap();
            let form = forms.form(&odd, &info);
            assert!(matches!(form, KeyForm::Verbatim(_)), "{odd}: {form:?}");
            assert_eq!(into_backup(form, &info, None, None).key(), odd);
        }
    }

    fn arb_uuid() -> impl Strategy<Value = Uuid> {
        any::<u128>().prop_map(Uuid::from_u128)
    }

    fn arb_codec() -> impl Strategy<Value = Option<Codec>> {
        proptest::option::of(prop_oneof![
            Just(Codec::Zstd),
            Just(Codec::Gzip),
            Just(Codec::None)
        ])
    }

    prop_compose! {
        /// Any key's fields, with a base name from the regex `basename`.
        fn arb_info(basename: &'static str)(
            basename in basename,
            secs in 0i64..4_000_000_000,
            offset_min in -14i32 * 60..=14 * 60,
            ctransid in any::<u64>(),
            uuid in arb_uuid(),
            sndp in proptest::option::of(arb_uuid()),
            source_uuid in arb_uuid(),
            codec in arb_codec(),
        ) -> KeyInfo {
            let offset = FixedOffset::east_opt(offset_min * 60).unwrap();
            KeyInfo {
                basename,
                time: DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&offset),
                ctransid,
                uuid,
                send_parent_uuid: sndp.filter(|u| !u.is_nil()),
                source_uuid,
                codec,
            }
        }
    }

    proptest! {
        #[test]
        fn round_trip(
            info in arb_info("[a-z_@-][a-z0-9_@-]{0,12}(\\.[a-z0-9_-]{1,3}){0,2}"),
            prefix in "([a-z0-9]{1,5}/){0,3}",
        ) {
            let key = format_key(&prefix, &info);
            prop_assert_eq!(parse_key(&prefix, &key).unwrap(), info);
        }

        /// A key subvault (or btrfs2s3) writes, with whatever follows the
        /// suffixes (a MAC, a PostgreSQL record, `.gz`), is held derived,
        /// not as text, and written back exactly.
        #[test]
        fn a_written_key_is_held_compactly_and_read_back_exactly(
            info in arb_info("[a-z_@-][a-z0-9_@-]{0,12}"),
            tail in prop_oneof![
                Just(String::new()),
                Just(".gz".to_string()),
                "\\.auth[0-9a-f]{32}",
                "\\.pgvn[0-9]{6}\\.pgtl[0-9]\\.pglsx",
            ],
            prefix in "([a-z0-9]{1,5}/){0,3}",
        ) {
            let key = format!("{}{tail}", format_key(&prefix, &info));
            let parsed = parse_key(&prefix, &key).unwrap();
            let b = to_backup(&key, &parsed, None, None);
            let derived = matches!(b.key_form, KeyForm::Derived { .. });
            prop_assert!(derived, "{:?}", b.key_form);
            prop_assert_eq!(b.key(), key);
        }

        /// Times are written as chrono's `%Y-%m-%dT%H:%M:%S%:z` writes them,
        /// in and outside the range written by hand.
        #[test]
        fn times_are_written_as_chrono_writes_them(
            secs in -70_000_000_000i64..300_000_000_000,
            offset_secs in -86_399i32..86_400,
            whole_minutes in any::<bool>(),
        ) {
            let offset_secs = if whole_minutes { offset_secs / 60 * 60 } else { offset_secs };
            let offset = FixedOffset::east_opt(offset_secs).unwrap();
            let t = DateTime::from_timestamp(secs, 0).unwrap().with_timezone(&offset);
            let mut out = String::new();
            write_time(&mut out, &t);
            prop_assert_eq!(out, t.format("%Y-%m-%dT%H:%M:%S%:z").to_string());
        }

        /// Backups sort as their keys' text does, whichever form they hold
        /// their keys in: few values per field, so ties reach every field.
        #[test]
        fn backups_sort_as_their_keys_text(
            keys in proptest::collection::vec((
                0usize..3,
                prop_oneof![Just(0i64), Just(59), Just(3600), Just(-62_000_000_000), Just(300_000_000_000)],
                prop_oneof![Just(0i32), Just(3600), Just(-1800)],
                prop_oneof![Just(9u64), Just(10), Just(100), Just(1000)],
                0u128..3,
                proptest::option::of(0u128..2),
                arb_codec(),
                prop_oneof![Just(""), Just(".gz"), Just(".auth0f"), Just(".cmprzstd")],
            ), 2..8),
        ) {
            let stems = ["p/home", "p/home2", "p/db"];
            let backups: Vec<Backup> = keys.iter().filter_map(|(stem, secs, off, ctid, id, sndp, codec, tail)| {
                let offset = FixedOffset::east_opt(*off).unwrap();
                let (prefix, basename) = stems[*stem].split_at(2);
                let info = KeyInfo {
                    basename: basename.into(),
                    time: DateTime::from_timestamp(1_700_000_000 + secs, 0)?.with_timezone(&offset),
                    ctransid: *ctid,
                    uuid: Uuid::from_u128(id + 1),
                    send_parent_uuid: sndp.map(|s| Uuid::from_u128(s + 1)),
                    source_uuid: Uuid::from_u128(7),
                    codec: *codec,
                };
                let key = format!("{}{tail}", format_key(prefix, &info));
                let parsed = parse_key(prefix, &key).ok()?;
                Some(to_backup(&key, &parsed, None, None))
            }).collect();
            for a in &backups {
                for b in &backups {
                    prop_assert_eq!(key_order(a, b), a.key().cmp(&b.key()), "{} vs {}", a.key(), b.key());
                }
            }
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
            codec in arb_codec(),
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
                prop_assert_eq!(parse_key("", &again).unwrap(), parsed.clone(), "{} -> {}", mutated, again);
                // Whichever form it is held in, a backup gives its key back.
                let b = to_backup(&mutated, &parsed, None, None);
                prop_assert_eq!(b.key(), mutated);
            }
        }
    }
}
