//! Browsing a backup without a btrfs target (`restore --path`, `ls`, `mount`):
//! the pure rules. Which paths a user may ask for, how a listing looks, which
//! mounts use the browse cache, and what the cache evicts first.
//!
//! The I/O around them (the cache image, receiving into it, copying out) is in
//! `ops::browse`.

use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};

/// A PATH argument that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrowsePathError {
    /// It climbs out of the source's root with `..`.
    #[error("--path {0}: leads out of the source's root (`..`); give a path inside the backup, relative to the source's root")]
    Escapes(String),
    /// It is empty.
    #[error("--path is empty; give a path relative to the source's root (e.g. etc/hosts)")]
    Empty,
}

/// Reads a PATH argument as a path relative to the source's root: a leading
/// `/` is dropped (users paste absolute-looking paths; they mean the source's
/// root, never the host's), `.` and empty components go, and `..` anywhere is
/// refused rather than resolved, so no spelling can leave the backup. An empty
/// result (`/`, `.`) is the root itself.
pub fn normalize(arg: &str) -> Result<PathBuf, BrowsePathError> {
    if arg.is_empty() {
        return Err(BrowsePathError::Empty);
    }
    let mut out = PathBuf::new();
    for c in Path::new(arg).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(BrowsePathError::Escapes(arg.to_string()))
            }
        }
    }
    Ok(out)
}

/// Drops paths that lie inside another requested path (copying `a` already
/// copies `a/b`), and duplicates; keeps the order of first appearance.
pub fn outermost(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for p in paths {
        let covered = paths.iter().any(|q| q != p && p.starts_with(q));
        if !covered && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// The kind of a listed entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A named pipe.
    Fifo,
    /// A socket.
    Socket,
}

impl Kind {
    /// The kind in `st_mode`'s type bits.
    pub fn from_mode(mode: u32) -> Kind {
        match mode & 0o170000 {
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o020000 => Kind::Char,
            0o060000 => Kind::Block,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            _ => Kind::File,
        }
    }

    fn letter(self) -> char {
        match self {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Char => 'c',
            Kind::Block => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// One entry of a backup's tree, as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the source's root.
    pub path: PathBuf,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner uid (numeric: the backup's owners need not exist on this host).
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// `st_size`.
    pub size: u64,
    /// Modification time, seconds since the epoch (UTC).
    pub mtime: i64,
    /// A symlink's target (not followed).
    pub target: Option<PathBuf>,
}

/// `ls -l`'s mode column: type letter and permissions, with setuid, setgid
/// and sticky bits as `s`/`S`, `s`/`S`, `t`/`T`.
pub fn mode_string(mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(Kind::from_mode(mode).letter());
    let bit = |m: u32, c: char| if mode & m != 0 { c } else { '-' };
    let special =
        |x: u32, special: u32, lower: char, upper: char| match (mode & x != 0, mode & special != 0)
        {
            (true, true) => lower,
            (false, true) => upper,
            (true, false) => 'x',
            (false, false) => '-',
        };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(0o001, 0o1000, 't', 'T'));
    s
}

/// A path as one printable token: control characters and backslashes are
/// written `\xNN`, so a file name holding a newline cannot forge a line.
pub fn escape(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() || c == '\\' {
            for b in c.to_string().bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One `ls` line: `MODE UID:GID SIZE MTIME PATH`, plus ` -> TARGET` for a
/// symlink. MTIME is UTC, RFC 3339 to the second.
pub fn format_line(e: &Entry) -> String {
    let time = chrono::DateTime::from_timestamp(e.mtime, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| e.mtime.to_string());
    let mut line = format!(
        "{} {}:{} {} {} {}",
        mode_string(e.mode),
        e.uid,
        e.gid,
        e.size,
        time,
        escape(&e.path)
    );
    if let Some(t) = &e.target {
        line.push_str(" -> ");
        line.push_str(&escape(t));
    }
    line
}

/// One entry of `ls --json`.
pub fn entry_json(e: &Entry) -> Value {
    json!({
        "path": e.path.to_string_lossy(),
        "type": Kind::from_mode(e.mode).name(),
        "mode": format!("{:04o}", e.mode & 0o7777),
        "uid": e.uid,
        "gid": e.gid,
        "size": e.size,
        "mtime": e.mtime,
        "target": e.target.as_ref().map(|t| t.to_string_lossy()),
    })
}

/// A mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem.
    pub dev: String,
    /// The path inside that filesystem that is mounted (for a bind mount of a
    /// subvolume, `/<subvolume>`).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

/// Parses `/proc/self/mountinfo` (fields 3, 4, 5; octal escapes undone).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ').skip(2);
            let dev = f.next()?.to_string();
            let root = PathBuf::from(unescape_octal(f.next()?));
            let mount_point = PathBuf::from(unescape_octal(f.next()?));
            Some(MountEntry {
                dev,
                root,
                mount_point,
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of the cache's filesystem (`dev`) other than the cache mount
/// itself: the `subvault mount`s in use.
pub fn users_of<'a>(mounts: &'a [MountEntry], dev: &str, cache_mnt: &Path) -> Vec<&'a MountEntry> {
    mounts
        .iter()
        .filter(|m| m.dev == dev && m.mount_point != cache_mnt)
        .collect()
}

/// A received subvolume in the cache, as eviction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// Its name in the cache.
    pub name: String,
    /// When it was received (seconds since the epoch).
    pub received: i64,
    /// Bind-mounted by a `subvault mount` now.
    pub mounted: bool,
    /// A step of the chain being fetched now.
    pub needed: bool,
}

/// What to delete, in order, when a new chain does not fit: subvolumes neither
/// mounted nor part of the chain being fetched, oldest received first. The
/// caller deletes one at a time until the chain fits.
pub fn eviction_order(cached: &[Cached]) -> Vec<String> {
    let mut free: Vec<&Cached> = cached.iter().filter(|c| !c.mounted && !c.needed).collect();
    free.sort_by(|a, b| a.received.cmp(&b.received).then(a.name.cmp(&b.name)));
    free.into_iter().map(|c| c.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_relative_to_the_root_and_cannot_climb_out() {
        assert_eq!(normalize("/etc/hosts").unwrap(), PathBuf::from("etc/hosts"));
        assert_eq!(normalize("./a//b/./c/").unwrap(), PathBuf::from("a/b/c"));
        assert_eq!(normalize("/").unwrap(), PathBuf::new());
        assert_eq!(
            normalize("a/../../etc"),
            Err(BrowsePathError::Escapes("a/../../etc".into()))
        );
        // Even a `..` that would stay inside is refused: no resolving.
        assert!(normalize("a/b/../c").is_err());
        assert!(normalize("..").is_err());
        assert_eq!(normalize(""), Err(BrowsePathError::Empty));
    }

    #[test]
    fn nested_requests_collapse_to_the_outermost() {
        let p = |s: &str| PathBuf::from(s);
        assert_eq!(
            outermost(&[p("a/b"), p("c"), p("a"), p("c"), p("ab")]),
            vec![p("c"), p("a"), p("ab")]
        );
    }

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
        assert_eq!(mode_string(0o040755), "drwxr-xr-x");
        assert_eq!(mode_string(0o104755), "-rwsr-xr-x");
        assert_eq!(mode_string(0o042770), "drwxrws---");
        assert_eq!(mode_string(0o041777), "drwxrwxrwt");
        assert_eq!(mode_string(0o101644), "-rw-r--r-T");
        assert_eq!(mode_string(0o120777), "lrwxrwxrwx");
    }

    #[test]
    fn a_line_names_everything_and_cannot_be_forged() {
        let e = Entry {
            path: PathBuf::from("dir/new\nline"),
            mode: 0o120777,
            uid: 7,
            gid: 8,
            size: 8,
            mtime: 1_767_607_200,
            target: Some(PathBuf::from("../plain")),
        };
        assert_eq!(
            format_line(&e),
            "lrwxrwxrwx 7:8 8 2026-01-05T10:00:00Z dir/new\\x0aline -> ../plain"
        );
        let j = entry_json(&e);
        assert_eq!(j["type"], "symlink");
        assert_eq!(j["mode"], "0777");
        assert_eq!(j["path"], "dir/new\nline");
    }

    #[test]
    fn mountinfo_finds_the_binds_of_the_cache() {
        let text = "\
36 25 0:32 / /run/subvault/browse/main-1 rw,noatime - btrfs /dev/loop3 rw
40 25 0:32 /data.2026-01-05T10:00:00Z /mnt/my\\040view ro - btrfs /dev/loop3 ro
41 25 0:33 / /other rw - btrfs /dev/loop4 rw
";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        let users = users_of(&m, "0:32", Path::new("/run/subvault/browse/main-1"));
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].mount_point, PathBuf::from("/mnt/my view"));
        assert_eq!(users[0].root, PathBuf::from("/data.2026-01-05T10:00:00Z"));
    }

    #[test]
    fn eviction_spares_mounted_and_needed_and_goes_oldest_first() {
        let c = |name: &str, received, mounted, needed| Cached {
            name: name.into(),
            received,
            mounted,
            needed,
        };
        let order = eviction_order(&[
            c("new", 30, false, false),
            c("old", 10, false, false),
            c("mounted", 5, true, false),
            c("chain", 1, false, true),
            c("mid", 20, false, false),
        ]);
        assert_eq!(order, vec!["old", "mid", "new"]);
    }
}
