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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A small "backup": a/b/file, a/link -> /etc, top.
    fn backup() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("a/b")).unwrap();
        fs::write(root.path().join("a/b/file"), "data").unwrap();
        fs::write(root.path().join("top"), "top").unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("a/link")).unwrap();
        root
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn paths_must_exist_and_not_pass_through_a_symlink() {
        let root = backup();
        let ok = [PathBuf::from("a/b/file"), PathBuf::from("a/link")];
        check_paths(root.path(), &ok, "snap").unwrap();
        let err = check_paths(root.path(), &[PathBuf::from("a/b/nope")], "snap").unwrap_err();
        assert!(
            matches!(err, BrowseError::Missing { ref path, .. } if path == Path::new("a/b/nope"))
        );
        assert!(err.to_string().contains("snap"));
        let err = check_paths(root.path(), &[PathBuf::from("a/link/passwd")], "snap").unwrap_err();
        assert!(
            matches!(err, BrowseError::ThroughSymlink { ref link, .. } if link == Path::new("a/link"))
        );
        // A file in the middle of a path is a missing path, not a crash.
        assert!(check_paths(root.path(), &[PathBuf::from("top/x")], "snap").is_err());
    }

    #[test]
    fn a_copy_lands_whole_or_not_at_all() {
        let root = backup();
        let out = tempfile::tempdir().unwrap();
        let dir = out.path().join("new");
        let placed = copy_out(root.path(), &[PathBuf::from("a/b/file")], &dir).unwrap();
        assert_eq!(placed, vec![dir.join("a")]);
        assert_eq!(fs::read_to_string(dir.join("a/b/file")).unwrap(), "data");
        assert_eq!(names(&dir), vec!["a"]);

        // An entry already in DIR: refused before anything is copied.
        let err = copy_out(
            root.path(),
            &[PathBuf::from("top"), PathBuf::from("a")],
            &dir,
        )
        .unwrap_err();
        assert!(err.to_string().contains("exists already"), "{err}");
        assert_eq!(names(&dir), vec!["a"]);

        // cp fails (a path gone meanwhile): nothing of it stays, no staging.
        let err = copy_out(
            root.path(),
            &[PathBuf::from("top"), PathBuf::from("gone")],
            &out.path().join("other"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("nothing was restored"), "{err}");
        assert_eq!(names(&out.path().join("other")), Vec::<String>::new());
    }
}
