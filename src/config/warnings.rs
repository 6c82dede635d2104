//! What a config that loads can still get wrong: secrets in a file others may
//! read, and `pipe_through` without the command that undoes it. Warnings, not
//! errors: a run that stops over a file mode would stop the backups it is
//! meant to protect, so the permission warning is repeated on every command
//! instead (see docs/design.md, Safety rules).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use super::{Config, RemoteKind, UploadConfig};

/// Programs whose output `restore` recognises on its own (by magic bytes), so
/// a `pipe_through` of just one of them needs no reverse command.
const SNIFFED: &[&str] = &["gzip", "pigz", "zstd", "pzstd"];

impl Config {
    /// Everything [`Config::secret_exposure`], [`Config::pipe_warnings`] and
    /// [`Config::storage_class_warnings`] say, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self.secret_exposure().into_iter().collect();
        out.extend(self.pipe_warnings());
        out.extend(self.storage_class_warnings());
        out
    }

    /// The fields of this config that hold a secret, named, never shown:
    /// `aws_secret_access_key`, a password in an `endpoint_url`, a password in
    /// a PostgreSQL `connection`.
    pub fn secret_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        for r in &self.remotes {
            let RemoteKind::S3(s3) = &r.kind else {
                continue;
            };
            if s3.endpoint.secret_access_key.is_some() {
                out.push(format!("remote {}: aws_secret_access_key", r.id));
            }
            if s3
                .endpoint
                .endpoint_url
                .as_deref()
                .is_some_and(url_has_password)
            {
                out.push(format!("remote {}: a password in endpoint_url", r.id));
            }
        }
        for s in &self.sources {
            if s.postgres
                .as_ref()
                .is_some_and(|pg| connection_has_password(pg.connection.expose()))
            {
                out.push(format!(
                    "source {}: a password in postgres.connection",
                    s.name
                ));
            }
        }
        out
    }

    /// A warning when the file holds secrets and its group or others may read
    /// it, with the `chmod` that fixes it.
    pub fn secret_exposure(&self) -> Option<String> {
        let fields = self.secret_fields();
        if fields.is_empty() {
            return None;
        }
        let mode = std::fs::metadata(&self.path).ok()?.permissions().mode() & 0o777;
        exposure_warning(&self.path, mode, &fields)
    }

    /// One warning per upload whose `pipe_through` has no
    /// `restore_pipe_through`: `restore` and `verify` could not read what it
    /// writes (unless it is just gzip or zstd, which they recognise).
    pub fn pipe_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.sources {
            for up in &s.upload_to_remotes {
                if needs_reverse(up) {
                    let cmds: Vec<String> = up
                        .pipe_through
                        .iter()
                        .map(|c| crate::stream::show_command(c))
                        .collect();
                    out.push(format!(
                        "source {} -> remote {}: pipe_through `{}` has no restore_pipe_through, \
                         so restore and verify cannot read what it writes; add \
                         `restore_pipe_through:` with the commands that undo it (e.g. \
                         [[gpg, --decrypt]] for gpg --encrypt)",
                        s.name,
                        up.id,
                        cmds.join(" | ")
                    ));
                }
            }
        }
        out
    }
}

/// The warning for a file of `mode` holding `fields`, if group or others may
/// read it.
fn exposure_warning(path: &Path, mode: u32, fields: &[String]) -> Option<String> {
    if mode & 0o044 == 0 {
        return None;
    }
    Some(format!(
        "{} holds secrets ({}) and group or others may read it (mode {mode:04o}): run \
         `chmod 600 {}`, or keep the secrets elsewhere (the AWS credential chain, a pgpass file)",
        path.display(),
        fields.join(", "),
        path.display()
    ))
}

/// Whether `pipe_through` writes something `restore` cannot read without a
/// reverse command.
fn needs_reverse(up: &UploadConfig) -> bool {
    if up.pipe_through.is_empty() || !up.restore_pipe_through.is_empty() {
        return false;
    }
    let [only] = up.pipe_through.as_slice() else {
        return true;
    };
    let program = Path::new(&only[0])
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    let decompresses = only[1..].iter().any(|a| a == "-d" || a == "--decompress");
    !SNIFFED.contains(&program) || decompresses
}

/// `scheme://user:password@host`: a password in the URL's userinfo (what
/// [`crate::errors::redact_url`] drops, when it holds a `:`).
fn url_has_password(url: &str) -> bool {
    let rest = &url[url.find("://").map_or(0, |s| s + 3)..];
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    rest.rfind('@').is_some_and(|at| rest[..at].contains(':'))
}

/// A password in a libpq connection string or URL (`password=...`,
/// `postgresql://user:password@host`).
fn connection_has_password(connection: &str) -> bool {
    tokio_postgres::Config::from_str(connection.trim())
        .map(|c| c.get_password().is_some())
        // Unparsable: the run will say so; assume the worst for the warning.
        .unwrap_or_else(|_| connection.to_ascii_lowercase().contains("password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_str_at(text, Path::new("/x/c.yaml")).unwrap()
    }

    const WITH_SECRETS: &str = "\
timezone: UTC
sources:
  - path: /srv/pg
    snapshots: /srv/snaps
    postgres: {connection: 'host=/run/postgresql password=pgpass123'}
    upload_to_remotes:
      - {id: aws, preserve: 1d, pipe_through: [[gpg, --encrypt, -r, me@example.com]]}
      - {id: gz, preserve: 1d, pipe_through: [[gzip, '-9']]}
      - id: gpg2
        preserve: 1d
        pipe_through: [[gpg, -c]]
        restore_pipe_through: [[gpg, -d]]
remotes:
  - id: aws
    s3:
      bucket: bkt
      endpoint: {endpoint_url: 'https://u:urlpass@s3.lan', aws_access_key_id: AK, aws_secret_access_key: sk}
  - {id: gz, local: {path: /mnt/a}}
  - {id: gpg2, local: {path: /mnt/b}}
";

    #[test]
    fn secret_fields_are_named_and_their_values_never_shown() {
        let c = config(WITH_SECRETS);
        let fields = c.secret_fields();
        assert_eq!(
            fields,
            vec![
                "remote aws: aws_secret_access_key",
                "remote aws: a password in endpoint_url",
                "source pg: a password in postgres.connection",
            ]
        );
        let w = exposure_warning(&c.path, 0o644, &fields).unwrap();
        assert!(
            w.contains("chmod 600 /x/c.yaml") && w.contains("0644"),
            "{w}"
        );
        for secret in ["pgpass123", "urlpass", "sk)"] {
            assert!(!w.contains(secret), "{w}");
        }
        assert_eq!(exposure_warning(&c.path, 0o600, &fields), None);
        assert!(exposure_warning(&c.path, 0o640, &fields).is_some());
        assert!(exposure_warning(&c.path, 0o604, &fields).is_some());
        assert_eq!(exposure_warning(&c.path, 0o620, &fields), None);
    }

    #[test]
    fn configs_without_secrets_have_none() {
        let c = config(
            "timezone: UTC\nsources:\n  - path: /srv/pg\n    snapshots: /srv/s\n    \
             postgres: {connection: 'host=/run/postgresql user=backup'}\n    \
             upload_to_remotes: [{id: r, preserve: 1d}]\nremotes:\n  - id: r\n    s3:\n      \
             bucket: b\n      endpoint: {endpoint_url: 'https://u@s3.lan'}\n",
        );
        assert_eq!(c.secret_fields(), Vec::<String>::new());
        assert!(connection_has_password("postgresql://u:pw@h/db"));
        assert!(url_has_password("https://u:pa/ss@h"));
        assert!(!url_has_password("https://u@h:9/x"));
        assert!(!connection_has_password("postgresql://u@h/db"));
    }

    #[test]
    fn pipe_through_without_its_reverse_is_named() {
        let w = config(WITH_SECRETS).pipe_warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("source pg -> remote aws")
                && w[0].contains("gpg --encrypt -r me@example.com")
                && w[0].contains("restore_pipe_through"),
            "{w:?}"
        );
    }
}
