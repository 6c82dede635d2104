//! Make a restored PostgreSQL data directory ready to start, as PostgreSQL's
//! backup documentation describes for a base backup.
//!
//! A received subvolume is read-only (and must stay so: it may be the parent of
//! the next incremental receive), so this works on a writable snapshot of it:
//! `btrfs subvolume snapshot RESTORED RESTORED-rw`.
//!
//! The copy comes from the bucket, so its content is not trusted: nothing
//! here follows a symlink the copy holds. The files and directories it
//! removes or rewrites (`postmaster.pid`, `pg_replslot`, `pg_tblspc`,
//! `tablespace_map`, ...) are checked with `symlink_metadata` and a symlink
//! where PostgreSQL never makes one is refused ([`PgError::SymlinkInCopy`]);
//! `tablespace_map` is read with `O_NOFOLLOW` and replaced by a rename; a
//! re-pointed link only ever points at a directory reached without symlinks.

use std::fs::Metadata;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::error::PgError;

/// What `path` is, without following a symlink at it: `None` when it does not
/// exist; a symlink is refused.
fn no_symlink(path: &Path) -> Result<Option<Metadata>, PgError> {
    match path.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => Err(PgError::SymlinkInCopy {
            path: path.to_path_buf(),
            target: std::fs::read_link(path).unwrap_or_default(),
        }),
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PgError::io("inspect", path)(e)),
    }
}

/// Prepare the data directory in `copy` (a writable snapshot of a restored
/// subvolume; the data directory is `copy` itself or up to 3 levels below it) to
/// start. Returns one line per thing done, for the user:
/// - removes `postmaster.pid` and `postmaster.opts` (they describe the server
///   that ran on the original, and a stale pid file can block the start);
/// - empties `pg_replslot` (slots of the original would hold WAL forever);
/// - re-points `pg_wal` and `pg_tblspc/*` symlinks, and `tablespace_map` entries,
///   that lead outside the copy (absolute paths of the original subvolume) to the
///   matching directory inside it, so the restored server never writes into the
///   original cluster's files;
/// - keeps `backup_label`: with it the server replays from the backup's
///   checkpoint and needs the WAL archive (`restore_command` and `recovery.signal`)
///   to reach the end of the backup.
///
/// A symlink at `postmaster.pid`, `postmaster.opts`, `pg_replslot` or in it,
/// `pg_tblspc` or `tablespace_map` is refused before anything is changed there
/// ([`PgError::SymlinkInCopy`]): following it would remove or rewrite files
/// outside the copy.
pub fn prepare_restored_datadir(copy: &Path) -> Result<Vec<String>, PgError> {
    let copy = copy
        .canonicalize()
        .map_err(PgError::io("resolve the restored copy", copy))?;
    let datadir = find_datadir(&copy)?;
    let mut done = Vec::new();

    // Every path this function changes, checked before the first change.
    let slots = datadir.join("pg_replslot");
    let tblspc = datadir.join("pg_tblspc");
    let map = datadir.join("tablespace_map");
    for path in [&tblspc, &map] {
        no_symlink(path)?;
    }
    let mut slot_entries = Vec::new();
    if no_symlink(&slots)?.is_some_and(|m| m.is_dir()) {
        for entry in std::fs::read_dir(&slots).map_err(PgError::io("list", &slots))? {
            let path = entry.map_err(PgError::io("list", &slots))?.path();
            if let Some(m) = no_symlink(&path)? {
                slot_entries.push((path, m.is_dir()));
            }
        }
    }

    for name in ["postmaster.pid", "postmaster.opts"] {
        let path = datadir.join(name);
        if no_symlink(&path)?.is_some() {
            std::fs::remove_file(&path).map_err(PgError::io("remove", &path))?;
            done.push(format!("removed {}", path.display()));
        }
    }

    for (path, is_dir) in slot_entries {
        // A slot is a directory; remove_dir_all removes the symlinks in it
        // without following them.
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(PgError::io("remove the replication slot", &path))?;
        done.push(format!(
            "removed replication slot {}",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
    }

    let mut links = vec![datadir.join("pg_wal")];
    if no_symlink(&tblspc)?.is_some_and(|m| m.is_dir()) {
        for entry in std::fs::read_dir(&tblspc).map_err(PgError::io("list", &tblspc))? {
            links.push(entry.map_err(PgError::io("list", &tblspc))?.path());
        }
    }
    for link in links {
        if let Some(line) = repoint_link(&copy, &link)? {
            done.push(line);
        }
    }
    if no_symlink(&map)?.is_some_and(|m| m.is_file()) {
        done.extend(repoint_tablespace_map(&copy, &map)?);
    }

    if no_symlink(&datadir.join("backup_label"))?.is_some_and(|m| m.is_file()) {
        done.push(format!(
            "kept {}: the server replays WAL from the backup's start and needs the WAL \
             archive (restore_command, recovery.signal) to reach the end of the backup",
            datadir.join("backup_label").display()
        ));
    }
    Ok(done)
}

/// What a point-in-time recovery of a restored copy is told
/// (`postgresql.auto.conf`, read after `postgresql.conf`, so these win).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverySettings {
    /// `restore_command`, e.g. `subvault -c CONFIG wal-fetch --source db %f %p`.
    pub restore_command: String,
    /// `recovery_target_time`, in a form PostgreSQL parses
    /// (`2026-12-03 13:20:18.5+00`).
    pub target_time: String,
    /// `recovery_target_action`: `promote`, `pause` or `shutdown`.
    pub target_action: String,
    /// `recovery_target_timeline`: `latest`, `current` or a timeline id.
    pub target_timeline: String,
}

/// `s` as a PostgreSQL configuration string literal.
pub fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// The lines appended to `postgresql.auto.conf`.
pub fn recovery_conf(s: &RecoverySettings) -> String {
    format!(
        "\n# Added by subvault restore --pitr: recover to the target, then {action}.\n\
         restore_command = {cmd}\n\
         recovery_target_time = {time}\n\
         recovery_target_inclusive = on\n\
         recovery_target_timeline = {timeline}\n\
         recovery_target_action = {action_q}\n\
         # wal-fetch's prefetch spool is of no use once recovery ends.\n\
         recovery_end_command = 'rm -rf pg_wal/{spool}'\n",
        action = s.target_action,
        cmd = conf_quote(&s.restore_command),
        time = conf_quote(&s.target_time),
        action_q = conf_quote(&s.target_action),
        spool = crate::core::wal_spool::SPOOL_DIR,
        timeline = conf_quote(&s.target_timeline),
    )
}

/// Prepares the data directory in `copy` (already through
/// [`prepare_restored_datadir`]) for a point-in-time recovery: appends
/// [`recovery_conf`] to `postgresql.auto.conf` and creates `recovery.signal`,
/// both owned like the data directory and never through a symlink the copy
/// holds. Returns the data directory and one line per thing done.
pub fn write_recovery(
    copy: &Path,
    settings: &RecoverySettings,
) -> Result<(PathBuf, Vec<String>), PgError> {
    use std::os::unix::fs::MetadataExt;
    let copy = copy
        .canonicalize()
        .map_err(PgError::io("resolve the restored copy", copy))?;
    let datadir = find_datadir(&copy)?;
    let owner = datadir
        .symlink_metadata()
        .map_err(PgError::io("inspect", &datadir))?;
    let create = |path: &Path, content: &[u8]| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path)?;
        std::os::unix::fs::fchown(&f, Some(owner.uid()), Some(owner.gid()))?;
        f.write_all(content)?;
        f.sync_all()
    };
    let mut done = Vec::new();
    let auto = datadir.join("postgresql.auto.conf");
    let signal = datadir.join("recovery.signal");
    let auto_meta = no_symlink(&auto)?;
    let signal_meta = no_symlink(&signal)?;
    let added = recovery_conf(settings);
    match auto_meta {
        Some(_) => {
            let mut text = String::new();
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&auto)
                .and_then(|mut f| f.read_to_string(&mut text))
                .map_err(PgError::io("read", &auto))?;
            text.push_str(&added);
            replace_file(&auto, text.as_bytes()).map_err(PgError::io("rewrite", &auto))?;
        }
        None => create(&auto, added.as_bytes()).map_err(PgError::io("create", &auto))?,
    }
    done.push(format!(
        "set restore_command, recovery_target_time = {}, recovery_target_action = {} in {}",
        settings.target_time,
        settings.target_action,
        auto.display()
    ));
    if signal_meta.is_none() {
        create(&signal, b"").map_err(PgError::io("create", &signal))?;
    }
    done.push(format!("created {}", signal.display()));
    Ok((datadir, done))
}

/// The data directory: `copy` or the only directory up to 3 levels below it with
/// `PG_VERSION` and `global/pg_control` (none of them symlinks, and only real
/// directories are searched, so the data directory is inside the copy).
fn find_datadir(copy: &Path) -> Result<PathBuf, PgError> {
    fn is_datadir(p: &Path) -> bool {
        let is = |rel: &str, dir: bool| {
            p.join(rel)
                .symlink_metadata()
                .is_ok_and(|m| if dir { m.is_dir() } else { m.is_file() })
        };
        is("PG_VERSION", false) && is("global", true) && is("global/pg_control", false)
    }
    let mut level = vec![copy.to_path_buf()];
    for _ in 0..=3 {
        let found: Vec<_> = level.iter().filter(|p| is_datadir(p)).cloned().collect();
        match found.len() {
            0 => {}
            1 => return Ok(found.into_iter().next().expect("one")),
            _ => return Err(PgError::NotADataDir(copy.to_path_buf())),
        }
        level = level
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
    }
    Err(PgError::NotADataDir(copy.to_path_buf()))
}

/// If `link` is a symlink whose target is outside `copy`, point it at the matching
/// directory inside `copy`.
fn repoint_link(copy: &Path, link: &Path) -> Result<Option<String>, PgError> {
    let Ok(target) = std::fs::read_link(link) else {
        return Ok(None); // not a symlink (e.g. pg_wal is a plain directory)
    };
    let absolute = link.parent().unwrap_or(copy).join(&target);
    if lexically_inside(copy, &absolute) {
        return Ok(None);
    }
    let Some(inside) = matching_dir_inside(copy, &absolute) else {
        return Err(PgError::LinkOutsideCopy {
            link: link.display().to_string(),
            target,
        });
    };
    std::fs::remove_file(link).map_err(PgError::io("replace the symlink", link))?;
    std::os::unix::fs::symlink(&inside, link).map_err(PgError::io("create the symlink", link))?;
    Ok(Some(format!(
        "re-pointed {} from {} to {}",
        link.display(),
        target.display(),
        inside.display()
    )))
}

/// Rewrite `tablespace_map` lines (`OID PATH`) whose path is outside `copy`:
/// the server recreates `pg_tblspc` links from this file at startup. Read
/// with `O_NOFOLLOW`, replaced by renaming a new file over it.
fn repoint_tablespace_map(copy: &Path, map: &Path) -> Result<Vec<String>, PgError> {
    let mut text = String::new();
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(map)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(PgError::io("read", map))?;
    let mut out = String::with_capacity(text.len());
    let mut done = Vec::new();
    for line in text.lines() {
        let Some((oid, path)) = line.split_once(' ') else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let target = PathBuf::from(path);
        if target.is_absolute() && !lexically_inside(copy, &target) && !path.contains('\\') {
            let inside =
                matching_dir_inside(copy, &target).ok_or_else(|| PgError::LinkOutsideCopy {
                    link: format!("tablespace_map entry {oid}"),
                    target: target.clone(),
                })?;
            done.push(format!(
                "tablespace_map: tablespace {oid} now at {} (was {path})",
                inside.display()
            ));
            out.push_str(&format!("{oid} {}\n", inside.display()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !done.is_empty() {
        replace_file(map, out.as_bytes()).map_err(PgError::io("rewrite", map))?;
    }
    Ok(done)
}

/// Replaces the file at `path` with `content` by writing a new file next to
/// it (created exclusively, never through a symlink) with the old one's owner,
/// group and mode (the server runs as its owner), and renaming it over `path`
/// (a rename replaces the directory entry, whatever it is).
fn replace_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let old = path.symlink_metadata()?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".subvault-tmp");
    let tmp = PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            std::os::unix::fs::fchown(&f, Some(old.uid()), Some(old.gid()))?;
            f.set_permissions(old.permissions())?;
            f.write_all(content)?;
            f.sync_all()
        });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// `path` is under `root` after resolving `.` and `..` lexically (no symlinks
/// followed: the target may not exist on this host at all).
fn lexically_inside(root: &Path, path: &Path) -> bool {
    normalize(path).starts_with(root)
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The original subvolume's path is unknown here, so find the longest trailing
/// part of `target` that exists as a directory inside `copy`: an absolute link
/// `/srv/pg/wal` made in subvolume `/srv/pg` is `wal` in the copy. A candidate
/// reached through a symlink (which could lead anywhere) does not count.
fn matching_dir_inside(copy: &Path, target: &Path) -> Option<PathBuf> {
    let normalized = normalize(target);
    let parts: Vec<_> = normalized
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    (0..parts.len()).find_map(|skip| {
        let candidate = parts[skip..]
            .iter()
            .fold(copy.to_path_buf(), |p, c| p.join(c));
        let real = candidate.canonicalize().ok()?;
        (real == candidate && real.is_dir()).then_some(candidate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fake_datadir(dir: &Path) {
        std::fs::create_dir_all(dir.join("global")).unwrap();
        std::fs::create_dir_all(dir.join("pg_replslot/slot1")).unwrap();
        std::fs::create_dir_all(dir.join("pg_tblspc")).unwrap();
        std::fs::write(dir.join("PG_VERSION"), "15\n").unwrap();
        std::fs::write(dir.join("global/pg_control"), "x").unwrap();
        std::fs::write(dir.join("postmaster.pid"), "123\n").unwrap();
        std::fs::write(dir.join("backup_label"), "LABEL: x\n").unwrap();
    }

    fn settings() -> RecoverySettings {
        RecoverySettings {
            restore_command: "/usr/bin/subvault -c '/etc/sv.yaml' wal-fetch --source db %f %p"
                .into(),
            target_time: "2026-12-03 13:20:18.5+00".into(),
            target_action: "promote".into(),
            target_timeline: "latest".into(),
        }
    }

    #[test]
    fn recovery_settings_are_quoted_for_postgresql() {
        assert_eq!(conf_quote("a'b\\c"), "'a''b\\\\c'");
        let conf = recovery_conf(&settings());
        assert!(conf.contains(
            "restore_command = '/usr/bin/subvault -c ''/etc/sv.yaml'' wal-fetch --source db %f %p'\n"
        ));
        assert!(conf.contains("recovery_target_time = '2026-12-03 13:20:18.5+00'\n"));
        assert!(conf.contains("recovery_target_action = 'promote'\n"));
        assert!(conf.contains("recovery_end_command = 'rm -rf pg_wal/.subvault-prefetch'\n"));
    }

    #[test]
    fn recovery_is_written_into_the_copy_and_never_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("copy");
        let data = copy.join("15/main");
        fake_datadir(&data);
        std::fs::write(data.join("postgresql.auto.conf"), "work_mem = '8MB'\n").unwrap();
        let (dir, done) = write_recovery(&copy, &settings()).unwrap();
        assert_eq!(dir, data.canonicalize().unwrap());
        let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
        assert!(auto.starts_with("work_mem = '8MB'\n"), "{auto}");
        assert!(auto.ends_with(&recovery_conf(&settings())));
        assert_eq!(std::fs::read(data.join("recovery.signal")).unwrap(), b"");
        assert_eq!(done.len(), 2);

        // A copy whose postgresql.auto.conf is a symlink (PostgreSQL never
        // makes one) is refused before anything is written.
        let evil = tmp.path().join("evil");
        let data = evil.join("main");
        fake_datadir(&data);
        let outside = tmp.path().join("outside.conf");
        std::fs::write(&outside, "x\n").unwrap();
        symlink(&outside, data.join("postgresql.auto.conf")).unwrap();
        let e = write_recovery(&evil, &settings()).unwrap_err();
        assert!(matches!(e, PgError::SymlinkInCopy { .. }), "{e}");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "x\n");
        assert!(!data.join("recovery.signal").exists());
        // The same for recovery.signal, and a missing auto.conf is created.
        std::fs::remove_file(data.join("postgresql.auto.conf")).unwrap();
        symlink(&outside, data.join("recovery.signal")).unwrap();
        assert!(write_recovery(&evil, &settings()).is_err());
        assert!(!data.join("postgresql.auto.conf").exists());
        std::fs::remove_file(data.join("recovery.signal")).unwrap();
        write_recovery(&evil, &settings()).unwrap();
        assert!(std::fs::read_to_string(data.join("postgresql.auto.conf"))
            .unwrap()
            .contains("restore_command"));
    }

    #[test]
    fn cleans_the_copy_and_repoints_links_that_leave_it() {
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("copy");
        let data = copy.join("15/main");
        fake_datadir(&data);
        std::fs::create_dir_all(copy.join("wal")).unwrap();
        std::fs::create_dir_all(copy.join("ts/one")).unwrap();
        // Links as the original cluster made them, in subvolume /srv/pgvol.
        symlink("/srv/pgvol/wal", data.join("pg_wal")).unwrap();
        symlink("/srv/pgvol/ts/one", data.join("pg_tblspc/16400")).unwrap();
        std::fs::write(data.join("tablespace_map"), "16400 /srv/pgvol/ts/one\n").unwrap();

        let done = prepare_restored_datadir(&copy).unwrap();
        let copy = copy.canonicalize().unwrap();
        let data = copy.join("15/main");
        assert!(!data.join("postmaster.pid").exists());
        assert!(data.join("backup_label").exists());
        assert_eq!(
            std::fs::read_dir(data.join("pg_replslot")).unwrap().count(),
            0
        );
        assert_eq!(
            std::fs::read_link(data.join("pg_wal")).unwrap(),
            copy.join("wal")
        );
        assert_eq!(
            std::fs::read_link(data.join("pg_tblspc/16400")).unwrap(),
            copy.join("ts/one")
        );
        let map = std::fs::read_to_string(data.join("tablespace_map")).unwrap();
        assert_eq!(map, format!("16400 {}\n", copy.join("ts/one").display()));
        assert!(
            done.iter().any(|l| l.contains("replication slot slot1")),
            "{done:?}"
        );
    }

    #[test]
    fn link_with_no_counterpart_inside_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("copy");
        fake_datadir(&copy);
        symlink("/elsewhere/nothing-like-this", copy.join("pg_wal")).unwrap();
        let err = prepare_restored_datadir(&copy).unwrap_err();
        assert!(matches!(err, PgError::LinkOutsideCopy { .. }), "{err}");
    }

    #[test]
    fn a_directory_without_a_cluster_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let err = prepare_restored_datadir(tmp.path()).unwrap_err();
        assert!(matches!(err, PgError::NotADataDir(_)), "{err}");
    }

    /// A copy with `datadir` at its root and an outside directory holding a
    /// file, a slot-like directory and a symlink, to aim symlinks at.
    fn copy_and_outside() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let copy = tmp.path().join("copy");
        fake_datadir(&copy);
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(outside.join("slotlike")).unwrap();
        std::fs::write(outside.join("file"), "16400 /srv/pgvol/ts/one\n").unwrap();
        symlink("/srv/pgvol/ts/one", outside.join("a-link")).unwrap();
        (tmp, copy, outside)
    }

    fn assert_outside_intact(outside: &Path) {
        assert!(outside.join("slotlike").is_dir());
        assert_eq!(
            std::fs::read_to_string(outside.join("file")).unwrap(),
            "16400 /srv/pgvol/ts/one\n"
        );
        assert_eq!(
            std::fs::read_link(outside.join("a-link")).unwrap(),
            PathBuf::from("/srv/pgvol/ts/one")
        );
    }

    #[test]
    fn symlinks_where_postgres_never_makes_them_are_refused_and_not_followed() {
        type Plant = fn(&Path, &Path);
        let cases: [(&str, Plant); 5] = [
            ("pg_replslot", |copy, out| {
                std::fs::remove_dir_all(copy.join("pg_replslot")).unwrap();
                symlink(out, copy.join("pg_replslot")).unwrap();
            }),
            ("pg_replslot/evil", |copy, out| {
                symlink(out.join("slotlike"), copy.join("pg_replslot/evil")).unwrap();
            }),
            ("tablespace_map", |copy, out| {
                symlink(out.join("file"), copy.join("tablespace_map")).unwrap();
            }),
            ("pg_tblspc", |copy, out| {
                std::fs::remove_dir_all(copy.join("pg_tblspc")).unwrap();
                symlink(out, copy.join("pg_tblspc")).unwrap();
            }),
            ("postmaster.pid", |copy, out| {
                std::fs::remove_file(copy.join("postmaster.pid")).unwrap();
                symlink(out.join("file"), copy.join("postmaster.pid")).unwrap();
            }),
        ];
        for (name, plant) in cases {
            let (_tmp, copy, outside) = copy_and_outside();
            // A target inside the copy exists, so a followed tablespace_map
            // or pg_tblspc link would be rewritten.
            std::fs::create_dir_all(copy.join("ts/one")).unwrap();
            plant(&copy, &outside);
            let err = prepare_restored_datadir(&copy).unwrap_err();
            assert!(
                matches!(&err, PgError::SymlinkInCopy { path, .. } if path.ends_with(name)),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("symlink"), "{err}");
            assert_outside_intact(&outside);
            // Refused before anything changed: the stale pid file is still there.
            if name != "postmaster.pid" {
                assert!(copy.join("postmaster.pid").exists(), "{name}");
            }
        }
    }

    #[test]
    fn links_are_never_repointed_through_a_symlink_in_the_copy() {
        let (_tmp, copy, outside) = copy_and_outside();
        std::fs::create_dir_all(outside.join("wal")).unwrap();
        // `copy/srv` leads outside: `/srv/wal` must not match `copy/srv/wal`.
        symlink(&outside, copy.join("srv")).unwrap();
        symlink("/srv/wal", copy.join("pg_wal")).unwrap();
        let err = prepare_restored_datadir(&copy).unwrap_err();
        assert!(matches!(err, PgError::LinkOutsideCopy { .. }), "{err}");
        assert_outside_intact(&outside);
    }

    #[test]
    fn tablespace_map_is_replaced_not_written_through() {
        let (_tmp, copy, outside) = copy_and_outside();
        std::fs::create_dir_all(copy.join("ts/one")).unwrap();
        std::fs::write(copy.join("tablespace_map"), "16400 /srv/pgvol/ts/one\n").unwrap();
        // A hard link to an outside file would be written through by an
        // in-place write; the rename replaces the entry instead.
        std::fs::remove_file(copy.join("tablespace_map")).unwrap();
        std::fs::hard_link(outside.join("file"), copy.join("tablespace_map")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            copy.join("tablespace_map"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        // Another owner, where the test may chown (as root).
        let owner = std::os::unix::fs::chown(copy.join("tablespace_map"), Some(1234), Some(5678))
            .ok()
            .map(|()| (1234, 5678));
        prepare_restored_datadir(&copy).unwrap();
        let copy = copy.canonicalize().unwrap();
        // The server reads it as the file's owner: owner and mode are kept.
        let meta = std::fs::metadata(copy.join("tablespace_map")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        if let Some((u, g)) = owner {
            use std::os::unix::fs::MetadataExt;
            assert_eq!((meta.uid(), meta.gid()), (u, g));
        }
        assert_eq!(
            std::fs::read_to_string(copy.join("tablespace_map")).unwrap(),
            format!("16400 {}\n", copy.join("ts/one").display())
        );
        assert_outside_intact(&outside);
        assert!(!copy.join("tablespace_map.subvault-tmp").exists());
    }
}
