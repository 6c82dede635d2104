//! Resuming an interrupted multipart upload: which open upload to continue,
//! and which of its stored parts may be kept. Pure: the S3 store asks the
//! questions, this module answers them, so every rule is unit-tested.
//!
//! The trust model: a stored part is kept only when it is provably the part
//! the regenerated stream would send now, byte for byte: same part number,
//! same size, and an ETag that is the MD5 of exactly these bytes (S3, moto,
//! garage and MinIO give a plain part's ETag as its MD5 unless SSE-KMS or
//! SSE-C is on; any other ETag shape is not trusted and the part is sent
//! again). Once one part differs the stream is not what was stored (a
//! different send, other compression settings, an encrypted stream with a
//! fresh file key), so every later part is sent again too: the object is then
//! the verified prefix plus freshly sent parts, i.e. exactly what a fresh
//! upload of the regenerated stream would store.

use std::collections::BTreeMap;

use super::MultipartUpload;

/// A part the store already holds for an open upload (from ListParts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// Its size in bytes.
    pub size: u64,
    /// Its ETag as the store gives it (usually quoted hex MD5).
    pub etag: String,
    /// Its CRC-32 checksum (base64), when the upload was created with one.
    pub checksum_crc32: Option<String>,
}

/// The MD5 an ETag states, when it is a plain part's ETag (32 hex digits,
/// optionally quoted). A multipart-style ETag (`...-N`) or an SSE ETag of
/// another shape states no MD5.
pub fn etag_md5(etag: &str) -> Option<[u8; 16]> {
    let hex_part = etag.trim().trim_matches('"');
    if hex_part.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    hex::decode_to_slice(hex_part, &mut out).ok()?;
    Some(out)
}

/// The open uploads of one key, each with the parts it holds.
pub type Candidate = (MultipartUpload, BTreeMap<u32, StoredPart>);

/// Which of the open uploads of one key to continue, and which to abort:
/// the one holding the most bytes (ties: the newest; uploads without a time
/// count as oldest) is continued, every other one is aborted, since only one
/// can ever be completed and each bills its parts. Uploads of other keys are
/// never candidates (another snapshot, or the same snapshot with another
/// parent: state never carries over to a different key).
pub fn choose(mut candidates: Vec<Candidate>) -> (Option<Candidate>, Vec<Candidate>) {
    let stored = |c: &Candidate| c.1.values().map(|p| p.size).sum::<u64>();
    candidates.sort_by_key(|c| std::cmp::Reverse((stored(c), c.0.initiated)));
    let mut it = candidates.into_iter();
    let keep = it.next();
    (keep, it.collect())
}

/// The stored parts of the upload being resumed, checked one by one against
/// the regenerated stream's parts, in order.
#[derive(Debug, Clone, Default)]
pub struct Resume {
    stored: BTreeMap<u32, StoredPart>,
    diverged: bool,
    /// Bytes kept without being sent again.
    pub kept_bytes: u64,
    /// Parts kept.
    pub kept_parts: u32,
    /// The first part that did not match, if one did not.
    pub first_mismatch: Option<u32>,
}

/// What to do with one part of the regenerated stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartAction {
    /// The store holds exactly these bytes: keep its part (ETag and checksum
    /// for the completion) and do not send it.
    Keep(StoredPart),
    /// Send the part (again).
    Send,
}

impl Resume {
    /// Starts from the parts the store listed for the upload.
    pub fn new(stored: BTreeMap<u32, StoredPart>) -> Resume {
        Resume {
            stored,
            ..Default::default()
        }
    }

    /// How many parts the store holds.
    pub fn stored_parts(&self) -> usize {
        self.stored.len()
    }

    /// Whether part `number` (of `len` bytes) is worth hashing: the store
    /// holds a part of that number and size, with an MD5 ETag, and no earlier
    /// part differed.
    pub fn candidate(&self, number: u32, len: u64) -> bool {
        !self.diverged
            && self
                .stored
                .get(&number)
                .is_some_and(|p| p.size == len && etag_md5(&p.etag).is_some())
    }

    /// Decides part `number` of `len` bytes whose MD5 is `md5` (computed only
    /// for a [`Resume::candidate`]; `None` otherwise).
    pub fn decide(&mut self, number: u32, len: u64, md5: Option<[u8; 16]>) -> PartAction {
        let stored = self.stored.get(&number);
        let matches = !self.diverged
            && stored.is_some_and(|p| p.size == len && md5.is_some() && etag_md5(&p.etag) == md5);
        if matches {
            self.kept_bytes += len;
            self.kept_parts += 1;
            return PartAction::Keep(stored.expect("matched").clone());
        }
        // A part the store does not hold (the upload stopped before it) is
        // no sign of a different stream; a stored part that differs is.
        if stored.is_some() && !self.diverged {
            self.diverged = true;
            self.first_mismatch = Some(number);
        }
        PartAction::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn part(size: u64, etag: &str) -> StoredPart {
        StoredPart {
            size,
            etag: etag.into(),
            checksum_crc32: None,
        }
    }

    const MD5_A: &str = "\"0cc175b9c0f1b6a831c399e269772661\""; // md5("a")
    fn md5_a() -> [u8; 16] {
        etag_md5(MD5_A).unwrap()
    }

    #[test]
    fn etags_state_an_md5_only_in_the_plain_shape() {
        assert_eq!(
            hex::encode(etag_md5(MD5_A).unwrap()),
            "0cc175b9c0f1b6a831c399e269772661"
        );
        assert!(etag_md5("0cc175b9c0f1b6a831c399e269772661").is_some());
        assert!(etag_md5("\"0cc175b9c0f1b6a831c399e269772661-3\"").is_none());
        assert!(etag_md5("\"zz\"").is_none());
        assert!(etag_md5("\"0cc175b9c0f1b6a831c399e26977266z\"").is_none());
    }

    #[test]
    fn the_upload_holding_most_is_continued_the_rest_aborted() {
        let at = |h| Some(Utc.with_ymd_and_hms(2026, 12, 1, h, 0, 0).unwrap());
        let up = |id: &str, initiated, parts: &[u64]| {
            let u = MultipartUpload {
                key: "k".into(),
                upload_id: id.into(),
                initiated,
            };
            let p = parts
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u32 + 1, part(*s, MD5_A)))
                .collect();
            (u, p)
        };
        let ids = |v: &[Candidate]| v.iter().map(|c| c.0.upload_id.clone()).collect::<Vec<_>>();
        // A later killed run that stored less does not win.
        let (keep, abort) = choose(vec![
            up("old-full", at(1), &[8, 8]),
            up("new-empty", at(3), &[]),
            up("undated", None, &[8]),
        ]);
        assert_eq!(keep.unwrap().0.upload_id, "old-full");
        assert_eq!(ids(&abort), ["undated", "new-empty"]);
        // Equal bytes: the newest.
        let (keep, abort) = choose(vec![up("a", at(1), &[8]), up("b", at(2), &[8])]);
        assert_eq!(keep.unwrap().0.upload_id, "b");
        assert_eq!(ids(&abort), ["a"]);
        assert!(choose(vec![]).0.is_none());
    }

    #[test]
    fn matching_parts_are_kept_and_missing_ones_sent() {
        let mut r = Resume::new(BTreeMap::from([(1, part(1, MD5_A)), (2, part(1, MD5_A))]));
        assert_eq!(r.stored_parts(), 2);
        assert!(r.candidate(1, 1));
        assert_eq!(
            r.decide(1, 1, Some(md5_a())),
            PartAction::Keep(part(1, MD5_A))
        );
        assert_eq!(
            r.decide(2, 1, Some(md5_a())),
            PartAction::Keep(part(1, MD5_A))
        );
        assert!(!r.candidate(3, 1));
        assert_eq!(r.decide(3, 1, None), PartAction::Send);
        assert_eq!((r.kept_parts, r.kept_bytes, r.first_mismatch), (2, 2, None));
    }

    #[test]
    fn after_the_first_difference_everything_is_sent_again() {
        let stored = BTreeMap::from([
            (1, part(1, MD5_A)),
            (2, part(1, MD5_A)),
            (3, part(1, MD5_A)),
        ]);
        let mut r = Resume::new(stored);
        assert!(matches!(r.decide(1, 1, Some(md5_a())), PartAction::Keep(_)));
        // Other bytes under part 2.
        assert_eq!(r.decide(2, 1, Some([0; 16])), PartAction::Send);
        // Part 3 would match, but the stream is no longer the stored one.
        assert!(!r.candidate(3, 1));
        assert_eq!(r.decide(3, 1, Some(md5_a())), PartAction::Send);
        assert_eq!((r.kept_parts, r.first_mismatch), (1, Some(2)));
    }

    #[test]
    fn a_size_difference_or_an_etag_without_md5_is_never_trusted() {
        let mut r = Resume::new(BTreeMap::from([(1, part(2, MD5_A))]));
        assert!(!r.candidate(1, 1));
        assert_eq!(r.decide(1, 1, Some(md5_a())), PartAction::Send);
        assert_eq!(r.first_mismatch, Some(1));

        let mut r = Resume::new(BTreeMap::from([(1, part(1, "\"kms-style-etag\""))]));
        assert!(!r.candidate(1, 1));
        assert_eq!(r.decide(1, 1, None), PartAction::Send);
        assert_eq!(r.kept_parts, 0);
    }
}
