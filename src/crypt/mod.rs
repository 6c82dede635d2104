//! Key files of encrypted remotes: make one, read one (refusing one that group
//! or others can read), and make the write-only copy a backup-only host holds.
//!
//! A key file is an age identity file, so the `age` CLI decrypts an object with
//! it (`age -d -i KEYFILE OBJECT`); what only subvault needs sits on `#`
//! comment lines, which age ignores:
//!
//! ```text
//! # subvault key file, made 2026-12-03T10:00:00Z. Keep it secret (mode 0600) and keep a copy offline.
//! # public key: age1...                      the recipient objects are encrypted to (one or more lines)
//! # subvault-auth-key: <64 hex digits>        authenticates keys and bodies (HMAC-SHA256)
//! AGE-SECRET-KEY-1...                         the identity: decrypts (absent in a write-only copy)
//! ```
//!
//! Every line is one of these, a comment or empty; anything else is an error
//! naming the line. The format is documented in docs/design.md, "Encryption
//! and authentication".

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::secrecy::ExposeSecret;
use age::x25519::{Identity, Recipient};

use crate::core::auth::{AuthKey, AUTH_KEY_LEN};

/// The comment field naming a recipient (the one `age-keygen` writes too).
pub const PUBLIC_KEY_FIELD: &str = "public key:";
/// The comment field holding the authentication key.
pub const AUTH_KEY_FIELD: &str = "subvault-auth-key:";
/// How an age x25519 identity line starts.
const IDENTITY_PREFIX: &str = "AGE-SECRET-KEY-1";

/// A remote's keys, as read from its key file.
#[derive(Clone)]
pub struct KeyFile {
    /// Where they were read from (for messages).
    pub path: PathBuf,
    /// Who new objects are encrypted to (at least one).
    pub recipients: Vec<Recipient>,
    /// What decrypts objects; empty in a write-only copy.
    pub identities: Vec<Identity>,
    /// Authenticates keys and bodies.
    pub auth: AuthKey,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("path", &self.path)
            .field("recipients", &self.recipients)
            .field("identities", &self.identities.len())
            .field("auth", &self.auth)
            .finish()
    }
}

/// Why a key file cannot be used. One line, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// It cannot be read.
    #[error("key file {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read or change it.
    #[error("key file {} can be read or changed by group or others (mode {mode:04o}): run `chmod 600 {}`", .path.display(), .path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A line is not what a key file holds.
    #[error("key file {}:{line}: {message}", .path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file as a whole lacks something.
    #[error("key file {}: {message}", .path.display())]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Writing a new key file failed.
    #[error("key file {}: {message}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl KeyFile {
    /// Reads the key file at `path`, refusing it when group or others can
    /// read or change it.
    pub fn load(path: &Path) -> Result<KeyFile, KeyFileError> {
        let read = |source| KeyFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(read)?;
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = fs::read_to_string(path).map_err(read)?;
        KeyFile::parse(&text, path)
    }

    /// Parses key file `text` as read from `path` (see the module docs).
    pub fn parse(text: &str, path: &Path) -> Result<KeyFile, KeyFileError> {
        let line_err = |line: usize, message: String| KeyFileError::Line {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut recipients: Vec<Recipient> = Vec::new();
        let mut identities: Vec<Identity> = Vec::new();
        let mut auth: Option<AuthKey> = None;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let comment = comment.trim_start();
                if let Some(value) = comment.strip_prefix(PUBLIC_KEY_FIELD) {
                    let r = Recipient::from_str(value.trim()).map_err(|e| {
                        line_err(n, format!("`# {PUBLIC_KEY_FIELD}` is not an age x25519 recipient (age1...): {e}"))
                    })?;
                    if !recipients.contains(&r) {
                        recipients.push(r);
                    }
                } else if let Some(value) = comment.strip_prefix(AUTH_KEY_FIELD) {
                    if auth.is_some() {
                        return Err(line_err(
                            n,
                            format!("a second `# {AUTH_KEY_FIELD}` line; a key file has one"),
                        ));
                    }
                    auth = Some(AuthKey::from_hex(value.trim()).ok_or_else(|| {
                        line_err(
                            n,
                            format!("`# {AUTH_KEY_FIELD}` needs {} hex digits", 2 * AUTH_KEY_LEN),
                        )
                    })?);
                }
                continue;
            }
            if line.starts_with(IDENTITY_PREFIX) {
                let id = Identity::from_str(line)
                    .map_err(|e| line_err(n, format!("not a valid age identity ({e})")))?;
                identities.push(id);
                continue;
            }
            let what = if line.starts_with("AGE-PLUGIN-") {
                "age plugin identities are not supported; use an x25519 identity (AGE-SECRET-KEY-1...)"
            } else {
                "expected a `#` comment, an AGE-SECRET-KEY-1... identity or an empty line"
            };
            return Err(line_err(n, what.to_string()));
        }
        let content = |message: String| KeyFileError::Content {
            path: path.to_path_buf(),
            message,
        };
        let auth = auth.ok_or_else(|| {
            content(format!(
                "no `# {AUTH_KEY_FIELD}` line (not a subvault key file? make one with `subvault key generate`)"
            ))
        })?;
        for id in &identities {
            let public = id.to_public();
            if recipients.is_empty() {
                continue;
            }
            if !recipients.contains(&public) {
                return Err(content(format!(
                    "its identity's public key {public} is not on a `# {PUBLIC_KEY_FIELD}` line, so the backups written with this file could not be read with it; add that line"
                )));
            }
        }
        if recipients.is_empty() {
            recipients = identities.iter().map(Identity::to_public).collect();
        }
        if recipients.is_empty() {
            return Err(content(format!(
                "neither an identity (AGE-SECRET-KEY-1...) nor a `# {PUBLIC_KEY_FIELD}` line: nothing to encrypt to"
            )));
        }
        Ok(KeyFile {
            path: path.to_path_buf(),
            recipients,
            identities,
            auth,
        })
    }

    /// True when it can decrypt (it holds an identity).
    pub fn can_decrypt(&self) -> bool {
        !self.identities.is_empty()
    }

    /// The text of this key file without its identities: what a host that
    /// only writes backups holds.
    pub fn write_only_text(&self) -> String {
        let mut out = format!(
            "# subvault key file, write-only copy of {} (no identity: it encrypts and\n\
             # authenticates backups but cannot decrypt them). Keep it secret (mode 0600):\n\
             # its auth key lets anyone who can write the bucket make objects this remote accepts.\n",
            self.path.display()
        );
        self.push_fields(&mut out);
        out
    }

    fn push_fields(&self, out: &mut String) {
        for r in &self.recipients {
            out.push_str(&format!("# {PUBLIC_KEY_FIELD} {r}\n"));
        }
        out.push_str(&format!("# {AUTH_KEY_FIELD} {}\n", self.auth.to_hex()));
    }
}

/// A new key file: a fresh x25519 identity and a random authentication key.
pub struct Generated {
    /// The key file's text.
    pub text: String,
    /// Its recipient (public key).
    pub recipient: Recipient,
}

/// Makes a new key file's text; `made` is the time written into its header.
pub fn generate(made: &str) -> Result<Generated, KeyFileError> {
    let identity = Identity::generate();
    let mut auth = [0u8; AUTH_KEY_LEN];
    getrandom(&mut auth).map_err(|e| KeyFileError::Write {
        path: PathBuf::from("(new)"),
        message: format!("no random bytes from the kernel: {e}"),
    })?;
    let key = KeyFile {
        path: PathBuf::new(),
        recipients: vec![identity.to_public()],
        identities: vec![identity.clone()],
        auth: AuthKey::from_bytes(auth),
    };
    let mut text = format!(
        "# subvault key file, made {made}. Keep it secret (mode 0600) and keep a copy offline:\n\
         # without it the backups encrypted with it can be neither read nor authenticated.\n\
         # It is an age identity file too: age -d -i THIS_FILE OBJECT | zstd -d | btrfs receive DIR\n"
    );
    key.push_fields(&mut text);
    text.push_str(identity.to_string().expose_secret());
    text.push('\n');
    Ok(Generated {
        text,
        recipient: identity.to_public(),
    })
}

/// Fills `buf` from the kernel's random source (what age uses too).
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut f = fs::File::open("/dev/urandom")?;
    std::io::Read::read_exact(&mut f, buf)
}

/// Writes `text` to a new file at `path` with mode 0600 (its directory is
/// made with mode 0700 when missing). Never overwrites: a key file that
/// exists may be the only key to existing backups.
pub fn write_new(path: &Path, text: &str) -> Result<(), KeyFileError> {
    let fail = |message: String| KeyFileError::Write {
        path: path.to_path_buf(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail(format!("cannot make its directory: {e}")))?;
        }
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => fail(
                "exists already; subvault never overwrites a key file (it may be the only key to existing backups): choose another path"
                    .into(),
            ),
            _ => fail(e.to_string()),
        })?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn p() -> PathBuf {
        PathBuf::from("/k/main.key")
    }

    #[test]
    fn a_generated_file_parses_with_identity_recipient_and_auth_key() {
        let g = generate("2026-12-03T10:00:00Z").unwrap();
        let k = KeyFile::parse(&g.text, &p()).unwrap();
        assert_eq!(k.recipients, vec![g.recipient.clone()]);
        assert_eq!(k.identities.len(), 1);
        assert_eq!(k.identities[0].to_public(), g.recipient);
        assert!(k.can_decrypt());
        // Every non-identity line is a comment, so age reads it as an identity file.
        for line in g.text.lines() {
            assert!(
                line.starts_with('#') || line.starts_with(IDENTITY_PREFIX),
                "{line}"
            );
        }
        // Two files never share keys.
        let other = KeyFile::parse(&generate("x").unwrap().text, &p()).unwrap();
        assert_ne!(other.auth, k.auth);
        assert_ne!(other.recipients, k.recipients);
    }

    #[test]
    fn the_write_only_copy_has_no_identity_and_the_same_keys() {
        let g = generate("now").unwrap();
        let k = KeyFile::parse(&g.text, &p()).unwrap();
        let text = k.write_only_text();
        assert!(!text.contains(IDENTITY_PREFIX));
        let w = KeyFile::parse(&text, &p()).unwrap();
        assert!(!w.can_decrypt());
        assert_eq!(w.recipients, k.recipients);
        assert_eq!(w.auth, k.auth);
    }

    #[test]
    fn bad_files_are_refused_naming_the_line() {
        let g = generate("now").unwrap();
        let k = KeyFile::parse(&g.text, &p()).unwrap();
        let auth_line = format!("# {AUTH_KEY_FIELD} {}", k.auth.to_hex());
        let id_line = g.text.lines().last().unwrap().to_string();
        let other = Identity::generate();
        let cases: Vec<(String, &str)> = vec![
            (
                format!("{auth_line}\nhello\n"),
                ":2: expected a `#` comment",
            ),
            (
                format!("{auth_line}\nAGE-PLUGIN-YUBIKEY-1XYZ\n"),
                ":2: age plugin",
            ),
            (
                format!("{auth_line}\nAGE-SECRET-KEY-1NOPE\n"),
                ":2: not a valid age identity",
            ),
            (
                format!("# public key: age1nope\n{auth_line}\n"),
                ":1: `# public key:`",
            ),
            (
                format!("{auth_line}\n{auth_line}\n{id_line}\n"),
                ":2: a second",
            ),
            (
                "# subvault-auth-key: abcd\n".to_string(),
                ":1: `# subvault-auth-key:` needs 64",
            ),
            (format!("{id_line}\n"), "no `# subvault-auth-key:` line"),
            (format!("{auth_line}\n"), "nothing to encrypt to"),
            (
                format!(
                    "# public key: {}\n{auth_line}\n{id_line}\n",
                    other.to_public()
                ),
                "is not on a `# public key:` line",
            ),
        ];
        for (text, want) in cases {
            let e = KeyFile::parse(&text, &p()).unwrap_err().to_string();
            assert!(e.starts_with("key file /k/main.key"), "{e}");
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(!e.contains(&k.auth.to_hex()), "secret in {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn an_identity_without_public_key_lines_encrypts_to_itself_and_more_recipients_are_kept() {
        let id = Identity::generate();
        let extra = Identity::generate().to_public();
        let auth = format!("# {AUTH_KEY_FIELD} {}", "ab".repeat(32));
        let text = format!("{auth}\n{}\n", id.to_string().expose_secret());
        let k = KeyFile::parse(&text, &p()).unwrap();
        assert_eq!(k.recipients, vec![id.to_public()]);
        let text = format!(
            "#public key: {}\n# public key: {extra}\n{auth}\n{}\n",
            id.to_public(),
            id.to_string().expose_secret()
        );
        let k = KeyFile::parse(&text, &p()).unwrap();
        assert_eq!(k.recipients, vec![id.to_public(), extra]);
    }

    #[test]
    fn load_refuses_a_file_group_or_others_can_read_and_write_new_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/main.key");
        let g = generate("now").unwrap();
        write_new(&path, &g.text).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().mode() & 0o777,
            0o700
        );
        assert!(KeyFile::load(&path).unwrap().can_decrypt());
        let e = write_new(&path, "other").unwrap_err().to_string();
        assert!(e.contains("never overwrites"), "{e}");
        assert_eq!(fs::read_to_string(&path).unwrap(), g.text);

        for mode in [0o640, 0o604, 0o620, 0o602, 0o644] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let e = KeyFile::load(&path).unwrap_err().to_string();
            assert_eq!(
                e,
                format!(
                    "key file {p} can be read or changed by group or others (mode {mode:04o}): run `chmod 600 {p}`",
                    p = path.display()
                )
            );
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(KeyFile::load(&path).is_ok());
        let missing = dir.path().join("nope.key");
        let e = KeyFile::load(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("key file {}: ", missing.display())),
            "{e}"
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let g = generate("now").unwrap();
        let k = KeyFile::parse(&g.text, &p()).unwrap();
        let d = format!("{k:?}");
        assert!(!d.contains(&k.auth.to_hex()));
        assert!(!d.contains("AGE-SECRET-KEY"));
    }
}
