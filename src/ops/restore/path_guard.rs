//! Every path a send stream names must stay inside the subvolume it creates.
//!
//! `btrfs receive` joins each path of the stream to the subvolume's path and
//! calls `creat`, `rename`, `link`, `truncate`, ... on the result. The kernel
//! only ever sends paths made of directory entry names, which are never `..`,
//! never start with `/` and never hold a NUL; a crafted stream can contain
//! any of them, and `../../etc/x` written by a root process lands outside DIR.
//! [`PathGuard`] reads the stream's framing as it passes (command headers and
//! the path attributes; file data is skipped, not copied) and fails at the
//! first path that could leave the subvolume, and at a second subvolume or
//! snapshot command (one object is one subvolume), before `btrfs receive`
//! gets the command's last byte. Symlinks inside the subvolume are the other
//! way out (`l -> /etc`, then `l/x`); `btrfs receive --chroot` closes that one
//! (see `sys::btrfs::receive`).

/// Stream header: magic (13 bytes) and version (u32).
const STREAM_HEADER_LEN: usize = 17;
/// Command header: payload length (u32), command (u16), CRC (u32).
const CMD_HEADER_LEN: usize = 10;

const CMD_SUBVOL: u16 = 1;
const CMD_SNAPSHOT: u16 = 2;
const CMD_SYMLINK: u16 = 8;
const CMD_END: u16 = 21;

const ATTR_PATH: u16 = 15;
const ATTR_PATH_TO: u16 = 16;
const ATTR_PATH_LINK: u16 = 17;
/// File data: from stream version 2 on, its header is the type only and the
/// data runs to the end of the command.
const ATTR_DATA: u16 = 19;
const ATTR_CLONE_PATH: u16 = 22;

/// Why a stream is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A path that leads out of the received subvolume.
    #[error("the stream's {cmd} command at byte {offset} names the path {path:?}, which {why}; refusing to receive it (btrfs send never writes such a path: the object was crafted)")]
    Escapes {
        /// The command's name.
        cmd: &'static str,
        /// Offset of the command in the raw stream.
        offset: u64,
        /// The path, lossily decoded.
        path: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A second subvolume or snapshot command.
    #[error("the stream starts a second subvolume at byte {offset}; one object holds one subvolume: refusing to receive it")]
    SecondSubvolume {
        /// Offset of the command in the raw stream.
        offset: u64,
    },
    /// The framing does not add up (an attribute longer than its command).
    #[error("the stream's command at byte {offset} is malformed ({what})")]
    Malformed {
        /// Offset of the command in the raw stream.
        offset: u64,
        /// What is wrong.
        what: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    StreamHeader,
    CmdHeader,
    AttrType,
    AttrLen { ty: u16 },
    PathValue { len: usize },
    Skip(u64),
    Ended,
}

/// Checks the paths of a raw send stream fed to it chunk by chunk; see the
/// module doc. Memory: one path (at most 64 KiB) at a time.
#[derive(Debug)]
pub struct PathGuard {
    state: State,
    /// Bytes of the header or path being collected.
    buf: Vec<u8>,
    version: u32,
    cmd: u16,
    /// Payload bytes of the current command not yet consumed.
    cmd_left: u64,
    cmd_offset: u64,
    offset: u64,
    commands: u64,
}

impl Default for PathGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl PathGuard {
    /// A guard expecting the start of a stream.
    pub fn new() -> Self {
        PathGuard {
            state: State::StreamHeader,
            buf: Vec::with_capacity(64),
            version: 1,
            cmd: 0,
            cmd_left: 0,
            cmd_offset: 0,
            offset: 0,
            commands: 0,
        }
    }

    /// Checks the next bytes of the stream. After an error the guard stays
    /// failed; after the end command it accepts anything (what follows is the
    /// send-stream validator's business).
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), PathError> {
        while !data.is_empty() {
            match self.state {
                State::Ended => return Ok(()),
                State::StreamHeader => {
                    if self.collect(&mut data, STREAM_HEADER_LEN) {
                        self.version = u32::from_le_bytes(self.buf[13..17].try_into().unwrap());
                        self.buf.clear();
                        self.state = State::CmdHeader;
                    }
                }
                State::CmdHeader => {
                    if self.buf.is_empty() {
                        self.cmd_offset = self.offset;
                    }
                    if self.collect(&mut data, CMD_HEADER_LEN) {
                        self.start_command()?;
                    }
                }
                State::AttrType => {
                    if self.cmd_left < 2 {
                        return Err(self.malformed("an attribute header cut short"));
                    }
                    if self.collect(&mut data, 2) {
                        let ty = u16::from_le_bytes(self.buf[..2].try_into().unwrap());
                        self.buf.clear();
                        self.cmd_left -= 2;
                        self.state = if self.version >= 2 && ty == ATTR_DATA {
                            State::Skip(self.cmd_left)
                        } else {
                            State::AttrLen { ty }
                        };
                        self.after_attr();
                    }
                }
                State::AttrLen { ty } => {
                    if self.cmd_left < 2 {
                        return Err(self.malformed("an attribute header cut short"));
                    }
                    if self.collect(&mut data, 2) {
                        let len = u16::from_le_bytes(self.buf[..2].try_into().unwrap()) as usize;
                        self.buf.clear();
                        self.cmd_left -= 2;
                        if len as u64 > self.cmd_left {
                            return Err(self.malformed("an attribute longer than its command"));
                        }
                        self.state = if is_path(self.cmd, ty) {
                            State::PathValue { len }
                        } else {
                            State::Skip(len as u64)
                        };
                        self.after_attr();
                    }
                }
                State::PathValue { len } => {
                    if self.collect(&mut data, len) {
                        self.check_path()?;
                        self.buf.clear();
                        self.cmd_left -= len as u64;
                        self.state = State::Skip(0);
                        self.after_attr();
                    }
                }
                State::Skip(n) => {
                    let take = n.min(data.len() as u64);
                    data = &data[take as usize..];
                    self.offset += take;
                    self.cmd_left -= take;
                    self.state = State::Skip(n - take);
                    self.after_attr();
                }
            }
        }
        Ok(())
    }

    /// Moves up to `want - buf.len()` bytes from `data` into `buf`; true once
    /// `buf` holds `want` bytes.
    fn collect(&mut self, data: &mut &[u8], want: usize) -> bool {
        let n = (want - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        *data = &data[n..];
        self.offset += n as u64;
        self.buf.len() == want
    }

    fn start_command(&mut self) -> Result<(), PathError> {
        let len = u32::from_le_bytes(self.buf[..4].try_into().unwrap());
        self.cmd = u16::from_le_bytes(self.buf[4..6].try_into().unwrap());
        self.buf.clear();
        if matches!(self.cmd, CMD_SUBVOL | CMD_SNAPSHOT) && self.commands > 0 {
            return Err(PathError::SecondSubvolume {
                offset: self.cmd_offset,
            });
        }
        self.commands += 1;
        self.cmd_left = u64::from(len);
        self.state = if self.cmd == CMD_END {
            State::Ended
        } else {
            State::Skip(0)
        };
        self.after_attr();
        Ok(())
    }

    /// After an attribute (or a command header): the next attribute, or the
    /// next command when this one is consumed.
    fn after_attr(&mut self) {
        if self.state == State::Skip(0) {
            self.state = if self.cmd_left == 0 {
                State::CmdHeader
            } else {
                State::AttrType
            };
        }
    }

    fn check_path(&self) -> Result<(), PathError> {
        let path = &self.buf[..];
        let why = if path.contains(&0) {
            "holds a NUL byte"
        } else if path.starts_with(b"/") {
            "is absolute"
        } else if path.split(|b| *b == b'/').any(|c| c == b"..") {
            "climbs out with `..`"
        } else {
            return Ok(());
        };
        Err(PathError::Escapes {
            cmd: command_name(self.cmd),
            offset: self.cmd_offset,
            path: String::from_utf8_lossy(path).into_owned(),
            why,
        })
    }

    fn malformed(&self, what: &'static str) -> PathError {
        PathError::Malformed {
            offset: self.cmd_offset,
            what,
        }
    }
}

/// Whether attribute `ty` of command `cmd` is a path inside the subvolume. A
/// symlink's `PATH_LINK` is its target, which may be anything (the link is
/// only followed inside the chroot).
fn is_path(cmd: u16, ty: u16) -> bool {
    match ty {
        ATTR_PATH | ATTR_PATH_TO | ATTR_CLONE_PATH => true,
        ATTR_PATH_LINK => cmd != CMD_SYMLINK,
        _ => false,
    }
}

/// The name of a send command, for messages (`btrfs receive --dump`'s words).
fn command_name(cmd: u16) -> &'static str {
    const NAMES: [&str; 27] = [
        "unspec",
        "subvol",
        "snapshot",
        "mkfile",
        "mkdir",
        "mknod",
        "mkfifo",
        "mksock",
        "symlink",
        "rename",
        "link",
        "unlink",
        "rmdir",
        "set_xattr",
        "remove_xattr",
        "write",
        "clone",
        "truncate",
        "chmod",
        "chown",
        "utimes",
        "end",
        "update_extent",
        "fallocate",
        "fileattr",
        "encoded_write",
        "enable_verity",
    ];
    NAMES.get(cmd as usize).copied().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::send_format::synthetic::{command, header};

    fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = ty.to_le_bytes().to_vec();
        v.extend((data.len() as u16).to_le_bytes());
        v.extend(data);
        v
    }

    /// A stream of `version` with the given commands (and an end command).
    fn stream(version: u32, cmds: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut s = header(version);
        for (c, payload) in cmds {
            s.extend(command(*c, payload));
        }
        s.extend(command(CMD_END, &[]));
        s
    }

    fn subvol() -> (u16, Vec<u8>) {
        (
            CMD_SUBVOL,
            [attr(ATTR_PATH, b"snap"), attr(1, &[7; 16])].concat(),
        )
    }

    fn check(s: &[u8], chunk: usize) -> Result<(), PathError> {
        let mut g = PathGuard::new();
        for c in s.chunks(chunk) {
            g.update(c)?;
        }
        Ok(())
    }

    /// A real-looking stream: mkdir, mkfile, a v1 write, a symlink to an
    /// absolute target, a rename, a clone and a chown of the root ("").
    fn good(version: u32) -> Vec<u8> {
        let data = if version >= 2 {
            // v2: the data attribute has no length and runs to the end.
            [ATTR_DATA.to_le_bytes().to_vec(), vec![b'.'; 3000]].concat()
        } else {
            attr(ATTR_DATA, &[b'/'; 3000])
        };
        stream(
            version,
            &[
                subvol(),
                (4, attr(ATTR_PATH, b"dir")),
                (3, attr(ATTR_PATH, b"dir/o257-5-0")),
                (
                    9,
                    [
                        attr(ATTR_PATH, b"dir/o257-5-0"),
                        attr(ATTR_PATH_TO, b"dir/f"),
                    ]
                    .concat(),
                ),
                (
                    15,
                    [
                        attr(ATTR_PATH, b"dir/f"),
                        attr(18, &0u64.to_le_bytes()),
                        data,
                    ]
                    .concat(),
                ),
                (
                    CMD_SYMLINK,
                    [attr(ATTR_PATH, b"l"), attr(ATTR_PATH_LINK, b"/etc/../x")].concat(),
                ),
                (
                    16,
                    [attr(ATTR_PATH, b"dir/g"), attr(ATTR_CLONE_PATH, b"dir/f")].concat(),
                ),
                (
                    19,
                    [attr(ATTR_PATH, b""), attr(6, &0u64.to_le_bytes())].concat(),
                ),
                (
                    10,
                    [attr(ATTR_PATH, b"h"), attr(ATTR_PATH_LINK, b"./dir/f")].concat(),
                ),
            ],
        )
    }

    #[test]
    fn real_looking_streams_pass_in_any_chunking() {
        for version in [1, 2] {
            let s = good(version);
            for chunk in [1, 2, 3, 7, 10, 17, 64, 4096, s.len()] {
                check(&s, chunk).unwrap_or_else(|e| panic!("v{version} chunk {chunk}: {e}"));
            }
        }
    }

    #[test]
    fn paths_that_leave_the_subvolume_are_refused() {
        let cases: Vec<(u16, Vec<u8>, &str)> = vec![
            (3, attr(ATTR_PATH, b"../../pwned"), "`..`"),
            (3, attr(ATTR_PATH, b"a/../../b"), "`..`"),
            (3, attr(ATTR_PATH, b".."), "`..`"),
            (4, attr(ATTR_PATH, b"/etc/cron.d"), "absolute"),
            (3, attr(ATTR_PATH, b"a\0/../x"), "NUL"),
            (
                9,
                [attr(ATTR_PATH, b"f"), attr(ATTR_PATH_TO, b"../f")].concat(),
                "`..`",
            ),
            (
                10,
                [
                    attr(ATTR_PATH, b"h"),
                    attr(ATTR_PATH_LINK, b"../../etc/shadow"),
                ]
                .concat(),
                "`..`",
            ),
            (
                16,
                [
                    attr(ATTR_PATH, b"f"),
                    attr(ATTR_CLONE_PATH, b"../../etc/shadow"),
                ]
                .concat(),
                "`..`",
            ),
            (
                15,
                [attr(ATTR_PATH, b"../w"), attr(ATTR_DATA, b"pwned")].concat(),
                "`..`",
            ),
        ];
        for (cmd, payload, why) in cases {
            let s = stream(1, &[subvol(), (cmd, payload)]);
            for chunk in [1, 5, s.len()] {
                let e = check(&s, chunk).unwrap_err();
                assert!(
                    matches!(&e, PathError::Escapes { why: w, .. } if w.contains(why)),
                    "cmd {cmd} chunk {chunk}: {e}"
                );
                assert!(e.to_string().contains(command_name(cmd)), "{e}");
            }
        }
    }

    #[test]
    fn a_second_subvolume_and_bad_framing_are_refused() {
        let s = stream(1, &[subvol(), (4, attr(ATTR_PATH, b"d")), subvol()]);
        assert!(matches!(
            check(&s, 3),
            Err(PathError::SecondSubvolume { .. })
        ));
        // An attribute that claims more bytes than its command holds.
        let mut bad = attr(ATTR_PATH, b"abc");
        bad[2] = 200;
        let s = stream(1, &[subvol(), (3, bad)]);
        assert!(matches!(check(&s, 4), Err(PathError::Malformed { .. })));
    }

    #[test]
    fn the_guard_checks_a_command_before_its_last_byte_passes() {
        // The caller writes a chunk only after the guard accepted it: the
        // chunk that completes a bad command must fail.
        let s = stream(1, &[subvol(), (3, attr(ATTR_PATH, b"../x"))]);
        let bad_end = s.len() - CMD_HEADER_LEN; // the end command follows
        let mut g = PathGuard::new();
        g.update(&s[..bad_end - 1]).unwrap();
        assert!(g.update(&s[bad_end - 1..bad_end]).is_err());
    }
}
