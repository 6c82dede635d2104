//! Copying paths out of a received backup onto any filesystem.
//!
//! The copy is GNU `cp -a --parents --sparse=auto --reflink=never`, one
//! invocation for every path: cp already keeps owners, modes, atimes and
//! mtimes (to the nanosecond), xattrs where the target takes them (and stays
//! quiet where it does not), symlinks as links, holes as holes, and hard
//! links between everything one invocation copies. A Rust copier would have
//! to redo all of that for no gain.
//!
//! Nothing half-written: cp writes into a staging directory inside DIR, and
//! only a complete copy is moved (renamed) into place.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

use super::BrowseError;

/// Checks that every path is in the backup at `root` without going through
/// a symlink (the last component may be one: it is copied as a link). A
/// symlink on the way could point anywhere on this host.
pub fn check_paths(root: &Path, paths: &[PathBuf], snapshot: &str) -> Result<(), BrowseError> {
    for path in paths {
        let mut cur = root.to_path_buf();
        let comps: Vec<Component> = path.components().collect();
        for (i, c) in comps.iter().enumerate() {
            cur.push(c);
            let missing = || BrowseError::Missing {
                path: path.clone(),
                snapshot: snapshot.to_string(),
            };
            let md = std::fs::symlink_metadata(&cur).map_err(|_| missing())?;
            if i + 1 < comps.len() {
                if md.file_type().is_symlink() {
                    return Err(BrowseError::ThroughSymlink {
                        path: path.clone(),
                        link: comps[..=i].iter().collect(),
                        snapshot: snapshot.to_string(),
                    });
                }
                if !md.is_dir() {
                    return Err(missing());
                }
            }
        }
    }
    Ok(())
}

/// The entries `paths` put directly into DIR (the root path puts every entry
/// of the backup's root there).
fn top_entries(root: &Path, paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        match p.components().next() {
            Some(c) => out.push(PathBuf::from(c.as_os_str())),
            None => {
                for e in std::fs::read_dir(root)? {
                    out.push(PathBuf::from(e?.file_name()));
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Copies `paths` (checked, relative to `root`) into `dir`, keeping each
/// one's path relative to the root. `dir` is created when missing; an entry
/// the copy would put into `dir` that exists already is refused before
/// anything is copied. Returns the entries moved into `dir`.
pub fn copy_out(root: &Path, paths: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>, BrowseError> {
    let err = |reason: String| BrowseError::Target {
        dir: dir.to_path_buf(),
        reason,
    };
    let tops = top_entries(root, paths).map_err(|e| err(format!("cannot list the backup: {e}")))?;
    for t in &tops {
        if std::fs::symlink_metadata(dir.join(t)).is_ok() {
            return Err(err(format!(
                "{} exists already; restore into an empty directory, or move it away first",
                dir.join(t).display()
            )));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
    let staging = dir.join(format!(".subvault-partial-{}", std::process::id()));
    std::fs::create_dir(&staging)
        .map_err(|e| err(format!("cannot create {}: {e}", staging.display())))?;
    let copied = run_cp(root, paths, &staging).and_then(|()| {
        for t in &tops {
            std::fs::rename(staging.join(t), dir.join(t))
                .map_err(|e| format!("cannot move {} into place: {e}", t.display()))?;
        }
        Ok(())
    });
    // The staging directory itself took the root's attributes when the root
    // was copied; either way it goes now.
    let _ = std::fs::remove_dir_all(&staging);
    copied.map_err(err)?;
    Ok(tops.iter().map(|t| dir.join(t)).collect())
}

fn run_cp(root: &Path, paths: &[PathBuf], staging: &Path) -> Result<(), String> {
    let args: Vec<&Path> = paths
        .iter()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p.as_path()
            }
        })
        .collect();
    let out = Command::new("cp")
        .args(["-a", "--parents", "--sparse=auto", "--reflink=never", "--"])
        .args(&args)
        .arg(staging)
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cp: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        Err(format!(
            "cp failed ({}): {first}; nothing was restored",
            out.status
        ))
    }
}
