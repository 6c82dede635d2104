//! The btrfs adapter's error type: every variant says what was being done to
//! which path, and, for system errors, a hint at the usual cause.

use std::io;
use std::path::PathBuf;

/// An operation of the btrfs adapter failed.
#[derive(Debug, thiserror::Error)]
pub enum BtrfsError {
    /// A system call failed, e.g. `cannot snapshot /srv/data into
    /// /srv/snapshots: Operation not permitted (os error 1) (are you root?)`.
    #[error("cannot {action}: {error}{}", hint(action, .error))]
    Os {
        /// What was being done, with the paths involved.
        action: String,
        /// The main path the operation was about.
        path: PathBuf,
        /// The system error.
        error: io::Error,
    },
    /// The path exists but is not the root of a btrfs subvolume.
    #[error("cannot {action}: {} is not a btrfs subvolume", .path.display())]
    NotSubvolume {
        /// What was being done.
        action: String,
        /// The offending path.
        path: PathBuf,
    },
    /// The request itself is wrong (bad name, writable snapshot for send,
    /// unrelated send parent, ...): nothing was changed.
    #[error("cannot {action}: {reason}")]
    Invalid {
        /// What was being done.
        action: String,
        /// The main path involved.
        path: PathBuf,
        /// Why it was refused and what to do instead.
        reason: String,
    },
    /// An external btrfs-progs process failed (exit status and stderr).
    #[error("cannot {action}: {detail}")]
    Process {
        /// What was being done.
        action: String,
        /// The directory or subvolume the process worked on.
        path: PathBuf,
        /// Exit status and the tail of its stderr.
        detail: String,
    },
}

impl BtrfsError {
    /// The main path the failed operation was about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            BtrfsError::Os { path, .. }
            | BtrfsError::NotSubvolume { path, .. }
            | BtrfsError::Invalid { path, .. }
            | BtrfsError::Process { path, .. } => path,
        }
    }

    /// The errno of a failed system call, if that is what failed.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            BtrfsError::Os { error, .. } => error.raw_os_error(),
            _ => None,
        }
    }

    /// Builds [`BtrfsError::Os`], except that ENOTTY/EINVAL (what btrfs ioctls
    /// return on other filesystems and on non-subvolumes) become
    /// [`BtrfsError::NotSubvolume`] when `subvolume_expected` says that is
    /// their meaning for this call.
    pub(crate) fn os(
        action: impl Into<String>,
        path: impl Into<PathBuf>,
        error: io::Error,
        subvolume_expected: bool,
    ) -> Self {
        let (action, path) = (action.into(), path.into());
        match error.raw_os_error() {
            Some(libc::ENOTTY | libc::EINVAL) if subvolume_expected => {
                BtrfsError::NotSubvolume { action, path }
            }
            _ => BtrfsError::Os {
                action,
                path,
                error,
            },
        }
    }
}

/// The usual cause of an errno in btrfs ioctls, as advice to the user.
fn hint(action: &str, error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EPERM) if action.starts_with("delete subvolume") => {
            " (are you root? btrfs also refuses while a send of it runs)"
        }
        Some(libc::EPERM | libc::EACCES) => " (are you root?)",
        Some(libc::EEXIST) => " (the name is already taken)",
        Some(libc::EXDEV) => " (both must be on the same btrfs filesystem)",
        Some(libc::EAGAIN) => {
            " (a dedupe or another send is using this subvolume; retry when it is done)"
        }
        Some(libc::ENOTEMPTY) => " (it contains nested subvolumes; delete those first)",
        Some(libc::EBUSY) => " (it is mounted, the default subvolume, or being sent)",
        Some(libc::EPIPE) => " (the reader stopped before the end of the stream)",
        Some(libc::ENOSPC) => " (the filesystem is full)",
        Some(libc::EROFS) => " (the filesystem is mounted read-only)",
        Some(libc::ENOTTY) => " (not on a btrfs filesystem)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_operation_path_and_hint() {
        let e = BtrfsError::os(
            "snapshot /srv/data into /srv/snapshots",
            "/srv/data",
            io::Error::from_raw_os_error(libc::EPERM),
            false,
        );
        let msg = e.to_string();
        assert!(msg.starts_with("cannot snapshot /srv/data into /srv/snapshots: "));
        assert!(msg.ends_with("(are you root?)"), "{msg}");
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn enotty_means_not_a_subvolume_where_one_is_expected() {
        let e = BtrfsError::os(
            "read subvolume info of /tmp",
            "/tmp",
            io::Error::from_raw_os_error(libc::ENOTTY),
            true,
        );
        assert!(matches!(e, BtrfsError::NotSubvolume { .. }));
        assert_eq!(
            e.to_string(),
            "cannot read subvolume info of /tmp: /tmp is not a btrfs subvolume"
        );
        let e = BtrfsError::os(
            "x",
            "/tmp",
            io::Error::from_raw_os_error(libc::ENOTTY),
            false,
        );
        assert!(matches!(e, BtrfsError::Os { .. }));
    }
}
