//! `config init`: a commented starter config for one source and one bucket,
//! so a first-time user edits a file that already loads instead of starting
//! from the README.
//!
//! The file is written with `create_new` (an existing config is never
//! overwritten) and mode 0600, since a user may add keys to it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::errors::UsageError;

/// What the starter config is about.
#[derive(Debug, Clone)]
pub struct InitSpec {
    /// The subvolume to back up (absolute).
    pub source: PathBuf,
    /// The bucket.
    pub bucket: String,
    /// An S3-compatible endpoint, when not AWS.
    pub endpoint: Option<String>,
    /// The IANA time zone.
    pub timezone: String,
    /// The key prefix in the bucket (this host's name), ending in `/`.
    pub prefix: String,
}

/// The default policy of a starter config.
pub const STARTER_POLICY: &str = "1y 3m 30d 24h";

impl InitSpec {
    /// A spec for `source` and `bucket` with this host's time zone and name.
    pub fn new(source: &Path, bucket: &str, endpoint: Option<&str>) -> Result<InitSpec> {
        if !source.is_absolute() {
            return Err(UsageError(format!(
                "--source {}: give the subvolume's absolute path",
                source.display()
            ))
            .into());
        }
        if source.parent().is_none() {
            return Err(UsageError("--source /: back up a subvolume, not the root".into()).into());
        }
        if bucket.is_empty() || bucket.contains('/') {
            return Err(UsageError(format!(
                "--bucket {bucket:?}: give the bucket's name only (a prefix is set in the file)"
            ))
            .into());
        }
        // The kernel's hostname, without pulling in nix's hostname feature.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .unwrap_or_else(|| "host".into());
        Ok(InitSpec {
            source: source.to_path_buf(),
            bucket: bucket.to_string(),
            endpoint: endpoint.map(str::to_string),
            timezone: local_timezone(),
            prefix: format!("{host}/"),
        })
    }

    /// The snapshot directory: `snapshots` next to the source.
    pub fn snapshots(&self) -> PathBuf {
        self.source
            .parent()
            .expect("checked in new")
            .join("snapshots")
    }

    /// The commented config text.
    pub fn render(&self) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("a string serializes");
        let endpoint = match &self.endpoint {
            Some(url) => format!(
                "      endpoint:\n        endpoint_url: {}\n        # region_name: us-east-1\n",
                q(url)
            ),
            None => "      # endpoint:\n      #   endpoint_url: https://s3.example.com   # for a \
                     non-AWS store\n      #   region_name: eu-central-1\n"
                .to_string(),
        };
        format!(
            "# subvault config written by `subvault config init`. Check it with\n\
             #   subvault config check\n\
             # then see what a run would do with `subvault plan --dry-run`.\n\
             # Every field: /usr/share/doc/subvault/examples/full.yaml or\n\
             # config-examples/full.yaml in the source.\n\
             \n\
             # IANA time zone in which the policy's days, weeks, months begin.\n\
             timezone: {tz}\n\
             \n\
             sources:\n\
             \x20   # The subvolume to back up.\n\
             \x20 - path: {source}\n\
             \x20   # Its read-only snapshots: same btrfs filesystem, outside the\n\
             \x20   # subvolume (created by the first run).\n\
             \x20   snapshots: {snaps}\n\
             \x20   # `subvault status` calls the source stale when its newest backup is\n\
             \x20   # older than this.\n\
             \x20   max_age: 26h\n\
             \x20   upload_to_remotes:\n\
             \x20       # Keep 1 yearly (full), 3 monthly, 30 daily and 24 hourly backups.\n\
             \x20     - id: s3\n\
             \x20       preserve: {policy}\n\
             \n\
             remotes:\n\
             \x20 - id: s3\n\
             \x20   s3:\n\
             \x20     bucket: {bucket}\n\
             \x20     # A directory of its own per host, so hosts never prune each other.\n\
             \x20     prefix: {prefix}\n\
             {endpoint}\
             \x20     # Credentials: the standard AWS chain (AWS_ACCESS_KEY_ID and\n\
             \x20     # AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role). Keys can also go\n\
             \x20     # under endpoint: as aws_access_key_id / aws_secret_access_key; then\n\
             \x20     # keep this file mode 0600.\n",
            tz = self.timezone,
            source = q(&self.source.to_string_lossy()),
            snaps = q(&self.snapshots().to_string_lossy()),
            policy = STARTER_POLICY,
            bucket = q(&self.bucket),
            prefix = q(&self.prefix),
        )
    }
}

/// This host's time zone (the `/etc/localtime` link), else UTC.
fn local_timezone() -> String {
    let from_link = std::fs::read_link("/etc/localtime")
        .ok()
        .and_then(|target| {
            let text = target.to_string_lossy().into_owned();
            let (_, name) = text.split_once("zoneinfo/")?;
            name.parse::<chrono_tz::Tz>().ok().map(|_| name.to_string())
        });
    from_link.unwrap_or_else(|| "UTC".into())
}

/// Writes `text` to `path`, never over an existing file; creates the parent
/// directory (`/etc/subvault`) if needed.
pub fn write_new(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(UsageError(format!(
                "{} exists; config init never overwrites a config (give another -c FILE)",
                path.display()
            ))
            .into())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, RemoteKind};

    #[test]
    fn the_starter_config_loads_and_says_what_was_asked() {
        let mut spec = InitSpec::new(
            Path::new("/srv/my data"),
            "bkt",
            Some("https://s3.example.com"),
        )
        .unwrap();
        spec.timezone = "Europe/Berlin".into();
        spec.prefix = "web1/".into();
        let text = spec.render();
        let config = Config::from_str_at(&text, Path::new("/etc/subvault/config.yaml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let source = &config.sources[0];
        assert_eq!(source.path, Path::new("/srv/my data"));
        assert_eq!(source.snapshots, Path::new("/srv/snapshots"));
        assert_eq!(
            source.upload_to_remotes[0].preserve.to_string(),
            STARTER_POLICY
        );
        let RemoteKind::S3(s3) = &config.remotes[0].kind else {
            panic!("an s3 remote")
        };
        assert_eq!((s3.bucket.as_str(), s3.prefix.as_str()), ("bkt", "web1/"));
        assert_eq!(
            s3.endpoint.endpoint_url.as_deref(),
            Some("https://s3.example.com")
        );
        assert_eq!(config.timezone.name(), "Europe/Berlin");
    }

    #[test]
    fn relative_sources_and_existing_files_are_refused() {
        assert!(InitSpec::new(Path::new("srv/data"), "b", None).is_err());
        assert!(InitSpec::new(Path::new("/srv/data"), "b/c", None).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/config.yaml");
        write_new(&path, "one").unwrap();
        let again = write_new(&path, "two").unwrap_err();
        assert!(again.downcast_ref::<UsageError>().is_some(), "{again}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one");
    }
}
