//! `ls`: the entries of a received backup, read with `lstat` (symlinks are
//! listed, never followed), in path order.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::core::browse::Entry;

/// The entry `rel` (relative to `root`) and, for a directory, everything
/// under it, depth first with names in byte order. An empty `rel` lists the
/// root's contents without the root itself.
pub fn list(root: &Path, rel: &Path) -> std::io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    if rel.as_os_str().is_empty() {
        children(root, Path::new(""), &mut out)?;
    } else {
        visit(root, rel, &mut out)?;
    }
    Ok(out)
}

fn visit(root: &Path, rel: &Path, out: &mut Vec<Entry>) -> std::io::Result<()> {
    let abs = root.join(rel);
    let md = std::fs::symlink_metadata(&abs)?;
    let target = if md.file_type().is_symlink() {
        Some(std::fs::read_link(&abs)?)
    } else {
        None
    };
    out.push(Entry {
        path: rel.to_path_buf(),
        mode: md.mode(),
        uid: md.uid(),
        gid: md.gid(),
        size: md.size(),
        mtime: md.mtime(),
        target,
    });
    if md.is_dir() {
        children(root, rel, out)?;
    }
    Ok(())
}

fn children(root: &Path, rel: &Path, out: &mut Vec<Entry>) -> std::io::Result<()> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| PathBuf::from(e.file_name())))
        .collect::<Result<_, _>>()?;
    names.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    for n in names {
        visit(root, &rel.join(n), out)?;
    }
    Ok(())
}
