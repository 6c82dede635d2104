//! Authentication of an encrypted remote's objects: a MAC in each object key and
//! a MAC in each body's trailer, both HMAC-SHA256 under the remote's
//! authentication key (docs/design.md, "Encryption and authentication").
//!
//! - The **key MAC** is the suffix `.auth<32 hex digits>` at the end of the key:
//!   HMAC-SHA256(auth key, [`KEY_DOMAIN`] || name) truncated to 128 bits, where
//!   `name` is the key after the remote's prefix, without the `.auth` suffix.
//!   Every other suffix (times, uuids, ctransid, codec, PostgreSQL record) is
//!   in `name`, so a listing authenticates all the metadata the planner acts on
//!   without a request per object. The prefix is left out so a bucket can be
//!   moved to another prefix or bucket.
//! - The **body MAC** is in the object's trailer (version 2, see
//!   `stream::trailer`): HMAC-SHA256(auth key, [`BODY_DOMAIN`] || u64 LE length
//!   of `name` || name || u64 LE raw stream length || SHA-256 of the raw stream).
//!   It binds the content to its key, so a body cannot be forged, altered or
//!   moved under another key.
//!
//! Pure: no I/O. The key itself is read from the key file by `crypt`.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::core::model::Backup;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of an authentication key.
pub const AUTH_KEY_LEN: usize = 32;
/// The suffix code of the key MAC (followed by [`KEY_MAC_HEX`] hex digits).
pub const AUTH_SUFFIX: &str = ".auth";
/// Hex digits of the key MAC (128 bits).
pub const KEY_MAC_HEX: usize = 32;
/// Domain separation of the key MAC.
pub const KEY_DOMAIN: &[u8] = b"subvault key name v1\0";
/// Domain separation of the body MAC.
pub const BODY_DOMAIN: &[u8] = b"subvault object body v1\0";
/// Bytes of the body MAC (untruncated HMAC-SHA256).
pub const BODY_MAC_LEN: usize = 32;

/// A remote's authentication key: 32 random bytes. `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey([u8; AUTH_KEY_LEN]);

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(***)")
    }
}

/// Why a key name does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAuthError {
    /// The name has no `.auth<32 hex>` suffix at its end.
    Missing,
    /// It has one, and the MAC does not match.
    Wrong,
}

impl fmt::Display for KeyAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyAuthError::Missing => "no .auth MAC in its key",
            KeyAuthError::Wrong => "its key's .auth MAC does not match this remote's auth key",
        })
    }
}

impl AuthKey {
    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; AUTH_KEY_LEN]) -> AuthKey {
        AuthKey(bytes)
    }

    /// The key from 64 hex digits; `None` when that is not what `text` is.
    pub fn from_hex(text: &str) -> Option<AuthKey> {
        let mut bytes = [0u8; AUTH_KEY_LEN];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(AuthKey(bytes))
    }

    /// The key as 64 lowercase hex digits, for the key file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }

    fn key_mac(&self, name: &str) -> HmacSha256 {
        let mut m = self.mac();
        m.update(KEY_DOMAIN);
        m.update(name.as_bytes());
        m
    }

    /// `name` with its `.auth` suffix appended: what an encrypted remote's
    /// object is stored under (after the prefix).
    pub fn seal_name(&self, name: &str) -> String {
        let tag = self.key_mac(name).finalize().into_bytes();
        format!(
            "{name}{AUTH_SUFFIX}{}",
            hex::encode(&tag[..KEY_MAC_HEX / 2])
        )
    }

    /// Checks the `.auth` suffix at the end of `sealed` (a key after the
    /// prefix); returns the authenticated name without it.
    pub fn open_name<'a>(&self, sealed: &'a str) -> Result<&'a str, KeyAuthError> {
        let cut = sealed
            .len()
            .checked_sub(AUTH_SUFFIX.len() + KEY_MAC_HEX)
            .ok_or(KeyAuthError::Missing)?;
        let (name, suffix) = sealed.split_at_checked(cut).ok_or(KeyAuthError::Missing)?;
        let digits = suffix
            .strip_prefix(AUTH_SUFFIX)
            .ok_or(KeyAuthError::Missing)?;
        let mut tag = [0u8; KEY_MAC_HEX / 2];
        // Only lowercase hex is what we write; anything else cannot match.
        if digits.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(KeyAuthError::Missing);
        }
        hex::decode_to_slice(digits, &mut tag).map_err(|_| KeyAuthError::Missing)?;
        self.key_mac(name)
            .verify_truncated_left(&tag)
            .map_err(|_| KeyAuthError::Wrong)?;
        Ok(name)
    }

    fn body(&self, name: &str, raw_len: u64, raw_sha256: &[u8; 32]) -> HmacSha256 {
        let mut m = self.mac();
        m.update(BODY_DOMAIN);
        m.update(&(name.len() as u64).to_le_bytes());
        m.update(name.as_bytes());
        m.update(&raw_len.to_le_bytes());
        m.update(raw_sha256);
        m
    }

    /// The body MAC of the object stored under `name` (after the prefix,
    /// without the `.auth` suffix) whose raw stream has this length and SHA-256.
    pub fn body_mac(&self, name: &str, raw_len: u64, raw_sha256: &[u8; 32]) -> [u8; BODY_MAC_LEN] {
        self.body(name, raw_len, raw_sha256)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `mac` is the body MAC of that object (compared in constant time).
    pub fn verify_body(
        &self,
        name: &str,
        raw_len: u64,
        raw_sha256: &[u8; 32],
        mac: &[u8; BODY_MAC_LEN],
    ) -> bool {
        self.body(name, raw_len, raw_sha256)
            .verify_slice(mac)
            .is_ok()
    }
}

/// A key under an encrypted remote's prefix that looks like a backup but does
/// not authenticate: listed, never planned, kept, restored, verified or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Foreign {
    /// The backup its key describes (unauthenticated: do not act on it).
    pub backup: Backup,
    /// Why it does not authenticate.
    pub why: KeyAuthError,
}

/// A listing of an encrypted remote, split by authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Authenticated {
    /// Backups whose key MAC matched.
    pub backups: Vec<Backup>,
    /// Backup-looking keys whose MAC is missing or wrong.
    pub foreign: Vec<Foreign>,
}

/// Splits the backups listed under `prefix` into those whose key carries a
/// valid MAC under `key` and the foreign rest.
pub fn authenticate(backups: Vec<Backup>, prefix: &str, key: &AuthKey) -> Authenticated {
    let mut out = Authenticated::default();
    for b in backups {
        let opened = {
            let full = b.key();
            key.open_name(full.strip_prefix(prefix).unwrap_or(&full))
                .map(|_| ())
        };
        match opened {
            Ok(_) => out.backups.push(b),
            Err(why) => out.foreign.push(Foreign { backup: b, why }),
        }
    }
    out
}

/// The name a body MAC covers for the object at `key` under `prefix`: the key
/// after the prefix, without its `.auth` suffix.
pub fn mac_name<'a>(prefix: &str, key: &'a str) -> &'a str {
    let name = key.strip_prefix(prefix).unwrap_or(key);
    match name.len().checked_sub(AUTH_SUFFIX.len() + KEY_MAC_HEX) {
        Some(cut) if name.get(cut..).is_some_and(|s| s.starts_with(AUTH_SUFFIX)) => &name[..cut],
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::object_key::{parse_key, to_backup};

    const NAME: &str = "data.ctim2026-12-03T10:00:00+01:00.ctid77.uuid11111111-2222-3333-4444-555555555555.sndp00000000-0000-0000-0000-000000000000.prnt99999999-8888-7777-6666-555555555555.mdvn1.seqn0.cmprzstd";

    fn key() -> AuthKey {
        AuthKey::from_bytes([7; 32])
    }

    fn backup(prefix: &str, name: &str) -> Backup {
        let full = format!("{prefix}{name}");
        let info = parse_key(prefix, &full).unwrap();
        to_backup(&full, &info, Some(1), None)
    }

    #[test]
    fn a_sealed_name_opens_to_itself_and_still_parses_as_a_backup_key() {
        let sealed = key().seal_name(NAME);
        assert!(sealed.starts_with(NAME));
        let suffix = &sealed[NAME.len()..];
        assert_eq!(suffix.len(), AUTH_SUFFIX.len() + KEY_MAC_HEX);
        assert!(suffix.starts_with(".auth"));
        assert_eq!(key().open_name(&sealed), Ok(NAME));
        // btrfs2s3's reader (and ours) ignores the unknown `.auth` code.
        assert_eq!(
            parse_key("", &sealed).unwrap(),
            parse_key("", NAME).unwrap()
        );
    }

    #[test]
    fn the_mac_is_fixed_for_a_given_key_and_name() {
        // A known answer, so the format cannot change by accident.
        let sealed = AuthKey::from_bytes([0; 32]).seal_name("x");
        let mut m = HmacSha256::new_from_slice(&[0; 32]).unwrap();
        m.update(b"subvault key name v1\0x");
        let want = hex::encode(&m.finalize().into_bytes()[..16]);
        assert_eq!(sealed, format!("x.auth{want}"));
    }

    #[test]
    fn any_change_to_the_name_or_the_mac_is_refused() {
        let sealed = key().seal_name(NAME);
        let changes = [
            sealed.replace(".ctid77", ".ctid76"),
            sealed.replace(".uuid1111", ".uuid1112"),
            sealed.replace(".cmprzstd", ".cmprnone"),
            sealed.replacen("data", "dat", 1),
            format!("x{sealed}"),
        ];
        for c in &changes {
            assert_eq!(key().open_name(c), Err(KeyAuthError::Wrong), "{c}");
        }
        // Every hex digit of the MAC counts.
        for i in sealed.len() - KEY_MAC_HEX..sealed.len() {
            let mut b = sealed.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let s = String::from_utf8(b).unwrap();
            assert_eq!(key().open_name(&s), Err(KeyAuthError::Wrong), "digit {i}");
        }
        let other = AuthKey::from_bytes([8; 32]);
        assert_eq!(other.open_name(&sealed), Err(KeyAuthError::Wrong));
    }

    #[test]
    fn names_without_a_well_formed_suffix_are_missing_not_wrong() {
        let sealed = key().seal_name(NAME);
        let cases = [
            NAME.to_string(),
            String::new(),
            "x".to_string(),
            format!("{sealed}.gz"),
            sealed[..sealed.len() - 1].to_string(),
            sealed.to_uppercase(),
            format!("{NAME}.auth{}", "g".repeat(32)),
        ];
        for c in &cases {
            assert_eq!(key().open_name(c), Err(KeyAuthError::Missing), "{c}");
        }
        // Multi-byte characters right where the suffix would start.
        assert_eq!(key().open_name(&"é".repeat(30)), Err(KeyAuthError::Missing));
    }

    #[test]
    fn body_mac_binds_name_length_and_hash() {
        let k = key();
        let sha = [3u8; 32];
        let mac = k.body_mac(NAME, 100, &sha);
        assert!(k.verify_body(NAME, 100, &sha, &mac));
        assert!(!k.verify_body(NAME, 101, &sha, &mac));
        assert!(!k.verify_body(NAME, 100, &[4; 32], &mac));
        assert!(!k.verify_body(&NAME.replace("ctid77", "ctid78"), 100, &sha, &mac));
        assert!(!AuthKey::from_bytes([8; 32]).verify_body(NAME, 100, &sha, &mac));
        let mut bad = mac;
        bad[31] ^= 1;
        assert!(!k.verify_body(NAME, 100, &sha, &bad));
        // The key MAC and the body MAC are separate domains.
        assert_ne!(&mac[..16], &k.key_mac(NAME).finalize().into_bytes()[..16]);
    }

    #[test]
    fn authenticate_splits_a_listing_and_keeps_full_keys() {
        let k = key();
        let good = backup("p/", &k.seal_name(NAME));
        let unsealed = backup("p/", NAME);
        let forged = backup("p/", &AuthKey::from_bytes([9; 32]).seal_name(NAME));
        let a = authenticate(
            vec![good.clone(), unsealed.clone(), forged.clone()],
            "p/",
            &k,
        );
        assert_eq!(a.backups, vec![good.clone()]);
        assert_eq!(
            a.foreign,
            vec![
                Foreign {
                    backup: unsealed,
                    why: KeyAuthError::Missing
                },
                Foreign {
                    backup: forged,
                    why: KeyAuthError::Wrong
                }
            ]
        );
        assert_eq!(mac_name("p/", &good.key()), NAME);
        assert_eq!(mac_name("p/", &format!("p/{NAME}")), NAME);
    }

    #[test]
    fn hex_round_trip_and_debug_hides_the_key() {
        let k = AuthKey::from_bytes([0xab; 32]);
        assert_eq!(AuthKey::from_hex(&k.to_hex()), Some(k.clone()));
        assert_eq!(AuthKey::from_hex("abc"), None);
        assert_eq!(AuthKey::from_hex(&"zz".repeat(32)), None);
        assert!(!format!("{k:?}").contains("ab"));
    }
}
