//! Password lookup in a libpq password file (`PGPASSFILE`, default `~/.pgpass`).
//!
//! tokio-postgres does not read the password file itself, and operators keep the
//! password out of the config file with it, so subvault implements libpq's rules:
//! one `hostname:port:database:username:password` entry per line, `*` matches
//! anything, `\:` and `\\` escape, `#` starts a comment, the first match wins, and
//! the file is ignored when group or others may read it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What a password file entry is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PassKey<'a> {
    /// Host name; `localhost` for a Unix socket (as libpq does).
    pub host: &'a str,
    /// Port as written in the file (decimal).
    pub port: String,
    /// Database name.
    pub database: &'a str,
    /// User name.
    pub user: &'a str,
}

/// The password file libpq would read: `PGPASSFILE`, else `$HOME/.pgpass`.
pub(crate) fn default_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGPASSFILE") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass"))
}

/// Look the password up in `file`. A missing file, or one that group or others
/// may access (libpq refuses those too, so a leaked password is not used silently),
/// gives `None`.
pub(crate) fn lookup(file: &Path, key: &PassKey<'_>) -> Option<String> {
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file {} is readable by group or others; ignoring it (chmod 0600 it)",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    find(&text, key)
}

/// The password of the first entry of `text` that matches `key`.
pub(crate) fn find(text: &str, key: &PassKey<'_>) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim_end_matches('\r');
        if line.starts_with('#') || line.trim().is_empty() {
            return None;
        }
        let fields = split_fields(line)?;
        let wanted = [key.host, key.port.as_str(), key.database, key.user];
        let matches = fields[..4]
            .iter()
            .zip(wanted)
            .all(|(field, want)| field == "*" || field == want);
        matches.then(|| fields[4].clone())
    })
}

/// Split one entry into its five unescaped fields; `None` for a malformed line
/// (fewer than five fields), which libpq skips.
fn split_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::with_capacity(5);
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.push(chars.next().unwrap_or('\\')),
            // The password is the rest of the line, colons included.
            ':' if fields.len() < 4 => fields.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    fields.push(current);
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PassKey<'static> {
        PassKey {
            host: "db.example",
            port: "5432".into(),
            database: "app",
            user: "backup",
        }
    }

    #[test]
    fn first_matching_entry_wins_and_wildcards_match() {
        let text = "# comment\nother:5432:app:backup:no\n*:5432:*:backup:first\n*:*:*:*:second\n";
        assert_eq!(find(text, &key()).as_deref(), Some("first"));
    }

    #[test]
    fn escapes_and_colons_in_password() {
        let text = "db.example:5432:app:backup:pa\\:ss:w\\\\rd\n";
        assert_eq!(find(text, &key()).as_deref(), Some("pa:ss:w\\rd"));
    }

    #[test]
    fn non_matching_port_and_malformed_lines_are_skipped() {
        let text = "db.example:5433:app:backup:wrongport\ngarbage line\n";
        assert_eq!(find(text, &key()), None);
    }

    #[test]
    fn escaped_colon_in_host_field_matches_literally() {
        let k = PassKey {
            host: "fe80::1",
            ..key()
        };
        let text = "fe80\\:\\:1:5432:app:backup:v6\n";
        assert_eq!(find(text, &k).as_deref(), Some("v6"));
    }

    #[test]
    fn world_readable_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&file, &key()), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&file, &key()).as_deref(), Some("secret"));
    }
}
