//! The integrity trailer at the end of every object subvault writes.
//!
//! The trailer records the length and SHA-256 of the RAW `btrfs send` stream (and a
//! CRC-32C of the object bytes before it, so even a flip in a compression header
//! that does not change the output is caught), so any reader can verify an object
//! without btrfs by fetching only its last
//! [`trailer_len`] bytes. It is shaped so that the standard tools skip it, which keeps
//! by-hand restores working:
//!
//! - zstd: a skippable frame (magic [`SKIPPABLE_MAGIC`], u32 LE size, payload) after
//!   the data frame; `zstd -d` ignores skippable frames.
//! - gzip: one extra, EMPTY gzip member whose header carries the record in an FEXTRA
//!   subfield `SV`; `gzip -d` decompresses it to nothing.
//! - none: the same bytes as the zstd skippable frame appended after the raw stream;
//!   `btrfs receive -e` stops at the stream's end command and never reads them
//!   (without `-e`, receive reports "unexpected header" after restoring the subvolume).
//!
//! The payload ([`RECORD_LEN`] bytes, all integers little endian):
//! `"SUBVAULT"` (8) | version u8 = 1 | 3 zero bytes | raw length u64 | raw SHA-256 (32)
//! | data length u64 | data CRC-32C u32 | CRC-32 (IEEE, as zlib's `crc32`) of the
//! preceding 64 bytes (u32). "Data" is every object byte before the trailer (the
//! compressed stream; for codec none, the raw stream itself).
//!
//! Objects of an encrypted remote carry a **keyed** record instead (version 2,
//! [`KEYED_RECORD_LEN`] bytes): the same fields, then the body MAC (32 bytes,
//! `core::auth`: HMAC-SHA256 under the remote's auth key over the object's
//! name, raw length and raw SHA-256), then the CRC-32 of the preceding 96
//! bytes. Anyone can recompute a version 1 record; only a holder of the auth
//! key can write a version 2 one. The reader knows from the remote's config
//! which one to expect, so the length of the trailer is known before reading.

use crate::core::model::Codec;

/// Magic bytes that open the record.
pub const RECORD_MAGIC: &[u8; 8] = b"SUBVAULT";
/// The version of the unkeyed record.
pub const RECORD_VERSION: u8 = 1;
/// The version of the keyed record (encrypted remotes).
pub const KEYED_RECORD_VERSION: u8 = 2;
/// Size of the unkeyed record payload in bytes.
pub const RECORD_LEN: usize = 68;
/// Size of the keyed record payload in bytes.
pub const KEYED_RECORD_LEN: usize = 100;
/// The zstd skippable-frame magic number used for the trailer (one of the sixteen
/// values 0x184D2A50..=0x184D2A5F that zstd reserves for skippable frames).
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// gzip FEXTRA subfield id of the record (`SI1`, `SI2`).
pub const GZIP_SUBFIELD_ID: [u8; 2] = *b"SV";

/// Fixed gzip member header up to the extra field: magic, CM=deflate, FLG=FEXTRA,
/// MTIME=0, XFL=0, OS=255 (unknown).
const GZIP_HEAD: [u8; 10] = [0x1f, 0x8b, 0x08, 0x04, 0, 0, 0, 0, 0, 0xff];
/// An empty deflate stream (one final fixed-Huffman block holding only end-of-block),
/// then CRC32 = 0 and ISIZE = 0 of the empty content.
const GZIP_TAIL: [u8; 10] = [0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];

/// Size of the record payload: keyed (version 2) or not (version 1).
pub fn record_len(keyed: bool) -> usize {
    if keyed {
        KEYED_RECORD_LEN
    } else {
        RECORD_LEN
    }
}

/// What the trailer says about the raw `btrfs send` stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Length of the raw send stream in bytes.
    pub raw_len: u64,
    /// SHA-256 of the raw send stream.
    pub raw_sha256: [u8; 32],
    /// Number of object bytes before the trailer.
    pub data_len: u64,
    /// CRC-32C (Castagnoli, standard init and final xor) of those bytes.
    pub data_crc32c: u32,
    /// The body MAC of a keyed (version 2) record; `None` for version 1.
    pub mac: Option<[u8; 32]>,
}

impl Record {
    /// The SHA-256 as lowercase hex, as shown in messages and listings.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.raw_sha256)
    }

    /// The payload bytes (see the module documentation for the layout):
    /// [`RECORD_LEN`] bytes, or [`KEYED_RECORD_LEN`] with a MAC.
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = record_len(self.mac.is_some());
        let mut out = vec![0u8; len];
        out[..8].copy_from_slice(RECORD_MAGIC);
        out[8] = match self.mac {
            Some(_) => KEYED_RECORD_VERSION,
            None => RECORD_VERSION,
        };
        out[12..20].copy_from_slice(&self.raw_len.to_le_bytes());
        out[20..52].copy_from_slice(&self.raw_sha256);
        out[52..60].copy_from_slice(&self.data_len.to_le_bytes());
        out[60..64].copy_from_slice(&self.data_crc32c.to_le_bytes());
        if let Some(mac) = &self.mac {
            out[64..96].copy_from_slice(mac);
        }
        let crc = crc_fast::crc32_iso_hdlc(&out[..len - 4]);
        out[len - 4..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a payload of either length; `NotFound` when it does not start
    /// with the magic (so the bytes are simply not a trailer), other errors when
    /// it does but is damaged, or its version does not fit its length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Record, TrailerError> {
        let keyed = match bytes.len() {
            RECORD_LEN => false,
            KEYED_RECORD_LEN => true,
            _ => return Err(TrailerError::NotFound),
        };
        if &bytes[..8] != RECORD_MAGIC {
            return Err(TrailerError::NotFound);
        }
        let end = bytes.len() - 4;
        let stored = u32::from_le_bytes(bytes[end..].try_into().expect("4 bytes"));
        if crc_fast::crc32_iso_hdlc(&bytes[..end]) != stored {
            return Err(TrailerError::Corrupt);
        }
        let expected = if keyed {
            KEYED_RECORD_VERSION
        } else {
            RECORD_VERSION
        };
        if bytes[8] != expected {
            return Err(TrailerError::UnsupportedVersion(bytes[8]));
        }
        let raw_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
        let mut raw_sha256 = [0u8; 32];
        raw_sha256.copy_from_slice(&bytes[20..52]);
        Ok(Record {
            raw_len,
            raw_sha256,
            data_len: u64::from_le_bytes(bytes[52..60].try_into().expect("8 bytes")),
            data_crc32c: u32::from_le_bytes(bytes[60..64].try_into().expect("4 bytes")),
            mac: keyed.then(|| bytes[64..96].try_into().expect("32 bytes")),
        })
    }
}

/// A digest for [`Record::data_crc32c`].
pub fn data_digest() -> crc_fast::Digest {
    crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi)
}

/// Why the tail of an object does not yield a [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrailerError {
    /// The bytes are not a subvault trailer at all (e.g. an object written by
    /// btrfs2s3, or one truncated in transfer).
    #[error("no subvault trailer at the end of the object")]
    NotFound,
    /// Fewer bytes than [`trailer_len`] were given.
    #[error("object too short to hold a subvault trailer")]
    TooShort,
    /// The trailer's structure and magic are present but its CRC does not match.
    #[error("the subvault trailer at the end of the object is damaged (CRC mismatch)")]
    Corrupt,
    /// A record version this build does not know; a newer subvault wrote it.
    #[error("subvault trailer version {0} is not supported by this build (upgrade subvault)")]
    UnsupportedVersion(u8),
}

/// Number of bytes the unkeyed trailer occupies at the very end of an object
/// of `codec` (constant per codec, so a reader can fetch exactly this range).
pub fn trailer_len(codec: Codec) -> usize {
    trailer_len_for(codec, false)
}

/// Number of bytes the keyed trailer of an encrypted remote's object occupies
/// at the end of its (decrypted) content.
pub fn keyed_trailer_len(codec: Codec) -> usize {
    trailer_len_for(codec, true)
}

/// [`trailer_len`] or [`keyed_trailer_len`].
pub fn trailer_len_for(codec: Codec, keyed: bool) -> usize {
    let record = record_len(keyed);
    match codec {
        // magic + size + record
        Codec::Zstd | Codec::None => 8 + record,
        // header, XLEN, subfield id + length, record, empty deflate + CRC + ISIZE
        Codec::Gzip => GZIP_HEAD.len() + 2 + 4 + record + GZIP_TAIL.len(),
    }
}

/// The bytes to append after the (compressed) data of an object of `codec`;
/// keyed when the record has a MAC.
pub fn encode_trailer(codec: Codec, record: &Record) -> Vec<u8> {
    let payload = record.to_bytes();
    let keyed = record.mac.is_some();
    let mut out = Vec::with_capacity(trailer_len_for(codec, keyed));
    match codec {
        Codec::Zstd | Codec::None => {
            out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(&payload);
        }
        Codec::Gzip => {
            out.extend_from_slice(&GZIP_HEAD);
            out.extend_from_slice(&((4 + payload.len()) as u16).to_le_bytes());
            out.extend_from_slice(&GZIP_SUBFIELD_ID);
            out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
            out.extend_from_slice(&payload);
            out.extend_from_slice(&GZIP_TAIL);
        }
    }
    debug_assert_eq!(out.len(), trailer_len_for(codec, keyed));
    out
}

/// Parses the unkeyed trailer from the end of `tail`, which may be the whole
/// object or any suffix of it at least [`trailer_len`] bytes long.
pub fn parse_trailer(codec: Codec, tail: &[u8]) -> Result<Record, TrailerError> {
    parse_trailer_for(codec, false, tail)
}

/// [`parse_trailer`] for the keyed (`keyed`) or the unkeyed trailer. A trailer
/// of the other kind is `NotFound`.
pub fn parse_trailer_for(codec: Codec, keyed: bool, tail: &[u8]) -> Result<Record, TrailerError> {
    let len = trailer_len_for(codec, keyed);
    let record = record_len(keyed);
    if tail.len() < len {
        return Err(TrailerError::TooShort);
    }
    let t = &tail[tail.len() - len..];
    match codec {
        Codec::Zstd | Codec::None => {
            if t[..4] != SKIPPABLE_MAGIC.to_le_bytes() || t[4..8] != (record as u32).to_le_bytes() {
                return Err(TrailerError::NotFound);
            }
            Record::from_bytes(&t[8..])
        }
        Codec::Gzip => {
            let (head, rest) = t.split_at(GZIP_HEAD.len());
            let (xlen, rest) = rest.split_at(2);
            let (sub, rest) = rest.split_at(4);
            let (payload, end) = rest.split_at(record);
            let mut sub_expected = [0u8; 4];
            sub_expected[..2].copy_from_slice(&GZIP_SUBFIELD_ID);
            sub_expected[2..].copy_from_slice(&(record as u16).to_le_bytes());
            if head != GZIP_HEAD
                || xlen != ((4 + record) as u16).to_le_bytes()
                || sub != sub_expected
                || end != GZIP_TAIL
            {
                return Err(TrailerError::NotFound);
            }
            Record::from_bytes(payload)
        }
    }
}

/// Splits an in-memory object into its data and its trailer: `(data, Some(record))`
/// when the trailer is present and valid, `(whole object, None)` when there is none.
/// A damaged trailer is an error, not "absent".
pub fn split_trailer(codec: Codec, object: &[u8]) -> Result<(&[u8], Option<Record>), TrailerError> {
    match parse_trailer(codec, object) {
        Ok(record) => Ok((&object[..object.len() - trailer_len(codec)], Some(record))),
        Err(TrailerError::NotFound | TrailerError::TooShort) => Ok((object, None)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut raw_sha256 = [0u8; 32];
        for (i, b) in raw_sha256.iter_mut().enumerate() {
            *b = i as u8 * 7 + 1;
        }
        Record {
            raw_len: 0x0102_0304_0506_0708,
            raw_sha256,
            data_len: 99,
            data_crc32c: 0xdead_beef,
            mac: None,
        }
    }

    fn keyed() -> Record {
        let mut mac = [0u8; 32];
        for (i, b) in mac.iter_mut().enumerate() {
            *b = 0xa0 ^ i as u8;
        }
        Record {
            mac: Some(mac),
            ..record()
        }
    }

    const CODECS: [Codec; 3] = [Codec::Zstd, Codec::Gzip, Codec::None];

    #[test]
    fn round_trip_every_codec_from_a_longer_tail() {
        for codec in CODECS {
            let mut obj = b"some compressed data before".to_vec();
            obj.extend(encode_trailer(codec, &record()));
            assert_eq!(parse_trailer(codec, &obj), Ok(record()), "{codec}");
            let (data, rec) = split_trailer(codec, &obj).unwrap();
            assert_eq!(data, b"some compressed data before");
            assert_eq!(rec, Some(record()));
        }
    }

    #[test]
    fn layout_matches_the_documented_bytes() {
        let t = encode_trailer(Codec::Zstd, &record());
        assert_eq!(&t[..4], &[0x5e, 0x2a, 0x4d, 0x18]);
        assert_eq!(&t[4..8], &[68, 0, 0, 0]);
        assert_eq!(&t[8..16], b"SUBVAULT");
        assert_eq!(t[16], 1);
        assert_eq!(&t[20..28], &0x0102_0304_0506_0708u64.to_le_bytes());
        let g = encode_trailer(Codec::Gzip, &record());
        assert_eq!(&g[..4], &[0x1f, 0x8b, 8, 4]);
        assert_eq!(&g[12..14], b"SV");
        assert_eq!(&g[16..24], b"SUBVAULT");
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        for codec in CODECS {
            let good = encode_trailer(codec, &record());
            for i in 0..good.len() {
                let mut bad = good.clone();
                bad[i] ^= 0x10;
                assert!(parse_trailer(codec, &bad).is_err(), "{codec} byte {i}");
            }
        }
    }

    #[test]
    fn damaged_record_is_corrupt_not_absent() {
        let mut t = encode_trailer(Codec::Zstd, &record());
        t[30] ^= 1;
        assert_eq!(parse_trailer(Codec::Zstd, &t), Err(TrailerError::Corrupt));
        assert_eq!(split_trailer(Codec::Zstd, &t), Err(TrailerError::Corrupt));
    }

    #[test]
    fn other_data_is_not_found_and_short_input_is_too_short() {
        assert_eq!(
            parse_trailer(Codec::Gzip, &[0u8; 200]),
            Err(TrailerError::NotFound)
        );
        assert_eq!(
            parse_trailer(Codec::Zstd, &[0u8; 10]),
            Err(TrailerError::TooShort)
        );
        let (data, rec) = split_trailer(Codec::None, b"abc").unwrap();
        assert_eq!((data, rec), (&b"abc"[..], None));
    }

    #[test]
    fn a_newer_version_is_reported() {
        let mut payload = record().to_bytes();
        payload[8] = 3;
        let crc = crc_fast::crc32_iso_hdlc(&payload[..64]);
        payload[64..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Record::from_bytes(&payload),
            Err(TrailerError::UnsupportedVersion(3))
        );
    }

    #[test]
    fn keyed_round_trip_every_codec_and_layout() {
        for codec in CODECS {
            let mut obj = b"data".to_vec();
            let t = encode_trailer(codec, &keyed());
            assert_eq!(t.len(), keyed_trailer_len(codec), "{codec}");
            obj.extend(&t);
            assert_eq!(parse_trailer_for(codec, true, &obj), Ok(keyed()), "{codec}");
            // Each kind is invisible to a reader expecting the other.
            assert_eq!(
                parse_trailer_for(codec, false, &obj),
                Err(TrailerError::NotFound),
                "{codec}"
            );
            let mut plain = vec![0u8; 100];
            plain.extend(encode_trailer(codec, &record()));
            assert_eq!(
                parse_trailer_for(codec, true, &plain),
                Err(TrailerError::NotFound),
                "{codec}"
            );
        }
        let t = encode_trailer(Codec::Zstd, &keyed());
        assert_eq!(t.len(), 108);
        assert_eq!(&t[4..8], &[100, 0, 0, 0]);
        assert_eq!(t[16], 2);
        assert_eq!(&t[8 + 64..8 + 96], &keyed().mac.unwrap());
        assert_eq!(keyed_trailer_len(Codec::Gzip), 126);
    }

    #[test]
    fn every_flipped_byte_of_a_keyed_trailer_is_detected() {
        for codec in CODECS {
            let good = encode_trailer(codec, &keyed());
            for i in 0..good.len() {
                let mut bad = good.clone();
                bad[i] ^= 0x10;
                assert!(
                    parse_trailer_for(codec, true, &bad) != Ok(keyed()),
                    "{codec} byte {i}"
                );
            }
        }
    }

    #[test]
    fn a_version_that_does_not_fit_the_length_is_refused() {
        // A 100-byte record claiming version 1 (or 68 bytes claiming 2).
        let mut p = keyed().to_bytes();
        p[8] = 1;
        let crc = crc_fast::crc32_iso_hdlc(&p[..96]);
        p[96..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Record::from_bytes(&p),
            Err(TrailerError::UnsupportedVersion(1))
        );
        let mut p = record().to_bytes();
        p[8] = 2;
        let crc = crc_fast::crc32_iso_hdlc(&p[..64]);
        p[64..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Record::from_bytes(&p),
            Err(TrailerError::UnsupportedVersion(2))
        );
    }
}
