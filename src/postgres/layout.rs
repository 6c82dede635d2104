//! Check that the whole cluster (data directory, `pg_wal`, every tablespace) lives
//! inside the source subvolume, so one atomic snapshot captures all of it.
//!
//! Paths are resolved on this host with symlinks followed. "Inside" means under
//! the subvolume's path AND on the same subvolume: btrfs gives every subvolume its
//! own device number, and a snapshot does not descend into nested subvolumes or
//! mounts, so a directory under the path but on another device would be missing.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::error::PgError;

/// A tablespace as the server reports it.
#[derive(Debug, Clone)]
pub(crate) struct Tablespace {
    /// Its OID (the name of its symlink in `pg_tblspc`).
    pub oid: String,
    /// Its name.
    pub name: String,
}

/// Where the data directory is, relative to the subvolume root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The data directory relative to the source subvolume (empty when it is the
    /// subvolume itself); the same relative path inside a snapshot.
    pub datadir_in_subvolume: PathBuf,
    /// Where `pg_wal` really is (symlinks followed), relative to the
    /// subvolume: a snapshot's copy of it is at the same relative path.
    pub wal_in_subvolume: PathBuf,
}

/// Verify the layout. `data_directory` is what the server reports.
pub(crate) fn check(
    subvolume: &Path,
    data_directory: &Path,
    tablespaces: &[Tablespace],
) -> Result<Layout, PgError> {
    let root = subvolume
        .canonicalize()
        .map_err(PgError::io("resolve the source path", subvolume))?;
    let root_dev = device(&root)?;
    let datadir = match data_directory.canonicalize() {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(PgError::DataDirNotFound(data_directory.to_path_buf()))
        }
        Err(e) => return Err(PgError::io("resolve the data directory", data_directory)(e)),
    };
    let inside = |what: String, location: &Path| -> Result<(), PgError> {
        let outside = |why| PgError::OutsideSubvolume {
            what: what.clone(),
            location: location.to_path_buf(),
            subvolume: root.clone(),
            why,
        };
        if !location.starts_with(&root) {
            return Err(outside(""));
        }
        if device(location)? != root_dev {
            return Err(outside(" (it is on a nested subvolume or another mount)"));
        }
        Ok(())
    };
    inside("the data directory".into(), &datadir)?;

    // Top-level directories (base, global, pg_xact, pg_wal, ...), symlinks followed:
    // a mount or nested subvolume at any of them would be left out of the snapshot.
    let entries = std::fs::read_dir(&datadir).map_err(PgError::io("list", &datadir))?;
    for entry in entries {
        let entry = entry.map_err(PgError::io("list", &datadir))?;
        let path = entry.path();
        let resolved = match path.canonicalize() {
            Ok(p) => p,
            // A dangling link or a file removed meanwhile (e.g. a temp file).
            Err(_) if entry.file_name() != "pg_wal" => continue,
            Err(e) => return Err(PgError::io("resolve", path)(e)),
        };
        if resolved.is_dir() {
            inside(entry.file_name().to_string_lossy().into_owned(), &resolved)?;
        }
    }

    let tblspc = datadir.join("pg_tblspc");
    for ts in tablespaces {
        let link = tblspc.join(&ts.oid);
        let resolved = link
            .canonicalize()
            .map_err(PgError::io("resolve the tablespace link", &link))?;
        inside(
            format!("tablespace {} (pg_tblspc/{})", ts.name, ts.oid),
            &resolved,
        )?;
    }

    // pg_xlog before PostgreSQL 10.
    let wal_link = ["pg_wal", "pg_xlog"]
        .iter()
        .map(|n| datadir.join(n))
        .find(|p| p.exists())
        .unwrap_or_else(|| datadir.join("pg_wal"));
    let wal = wal_link
        .canonicalize()
        .map_err(PgError::io("resolve", &wal_link))?;
    inside("pg_wal".into(), &wal)?;
    let relative = |p: &Path| {
        p.strip_prefix(&root)
            .expect("checked to be inside")
            .to_path_buf()
    };
    Ok(Layout {
        datadir_in_subvolume: relative(&datadir),
        wal_in_subvolume: relative(&wal),
    })
}

fn device(path: &Path) -> Result<u64, PgError> {
    std::fs::metadata(path)
        .map(|m| m.dev())
        .map_err(PgError::io("stat", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn wal_symlink_outside_is_refused_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("sub");
        let data = sub.join("data");
        std::fs::create_dir_all(data.join("base")).unwrap();
        let elsewhere = tmp.path().join("wal-elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        symlink(&elsewhere, data.join("pg_wal")).unwrap();
        let err = check(&sub, &data, &[]).unwrap_err();
        match &err {
            PgError::OutsideSubvolume { what, location, .. } => {
                assert_eq!(what, "pg_wal");
                assert_eq!(location, &elsewhere.canonicalize().unwrap());
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn everything_inside_gives_the_relative_data_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("sub");
        let data = sub.join("15/main");
        std::fs::create_dir_all(data.join("pg_tblspc")).unwrap();
        std::fs::create_dir_all(sub.join("wal")).unwrap();
        std::fs::create_dir_all(sub.join("ts1")).unwrap();
        symlink(sub.join("wal"), data.join("pg_wal")).unwrap();
        symlink(sub.join("ts1"), data.join("pg_tblspc/16400")).unwrap();
        let ts = [Tablespace {
            oid: "16400".into(),
            name: "ts1".into(),
        }];
        let layout = check(&sub, &data, &ts).unwrap();
        assert_eq!(layout.datadir_in_subvolume, Path::new("15/main"));
        assert_eq!(layout.wal_in_subvolume, Path::new("wal"));
    }

    #[test]
    fn missing_data_directory_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let err = check(tmp.path(), &tmp.path().join("nope"), &[]).unwrap_err();
        assert!(matches!(err, PgError::DataDirNotFound(_)), "{err}");
    }
}
