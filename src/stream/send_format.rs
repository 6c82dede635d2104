//! An incremental validator for the `btrfs send` stream format.
//!
//! Objects written by btrfs2s3 carry no checksum of their own, but the send stream
//! does: after a 17-byte header (`"btrfs-stream\0"`, u32 LE version) comes a
//! sequence of commands, each with a 10-byte header (u32 LE payload length, u16 LE
//! command, u32 LE CRC-32C) and a payload; the CRC covers header and payload with
//! the CRC field zeroed (Castagnoli polynomial, seed 0, no final inversion, as
//! `crc32c(0, buf, len)` in the kernel's `fs/btrfs/send.c`). The last command is
//! `BTRFS_SEND_C_END` (21). Checking all of that as bytes pass catches truncation and
//! corruption of any object, with or without a subvault trailer, for the cost of a
//! hardware CRC.

use crc_fast::{CrcAlgorithm, Digest};

/// `"btrfs-stream"` plus its terminating NUL.
pub const STREAM_MAGIC: &[u8; 13] = b"btrfs-stream\0";
/// Size of the stream header (magic + u32 version).
pub const STREAM_HEADER_LEN: usize = 17;
/// Size of a command header (len u32, cmd u16, crc u32).
pub const CMD_HEADER_LEN: usize = 10;
/// `BTRFS_SEND_C_END`: the command that closes a complete stream.
pub const CMD_END: u16 = 21;
/// Highest stream version this validator knows the framing of (v1..v3 share it).
pub const MAX_KNOWN_VERSION: u32 = 3;

/// What is wrong with a send stream; offsets are byte positions in the raw stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendStreamError {
    /// The stream does not start with `btrfs-stream\0`.
    #[error("not a btrfs send stream (missing \"btrfs-stream\" magic at the start)")]
    BadMagic,
    /// A header version this validator does not know.
    #[error("btrfs send stream version {0} is not supported (known: 1..={max})", max = MAX_KNOWN_VERSION)]
    UnsupportedVersion(u32),
    /// Command 0 (`BTRFS_SEND_C_UNSPEC`) never appears in a real stream.
    #[error("invalid command 0 at byte {offset}")]
    BadCommand {
        /// Offset of the command header.
        offset: u64,
    },
    /// A command's CRC-32C does not match its bytes.
    #[error("checksum mismatch in command {cmd} at byte {offset} (stored {stored:08x}, computed {computed:08x})")]
    CrcMismatch {
        /// Offset of the command header.
        offset: u64,
        /// The command number.
        cmd: u16,
        /// CRC in the command header.
        stored: u32,
        /// CRC computed over the bytes received.
        computed: u32,
    },
    /// Bytes follow the end command.
    #[error("{extra} unexpected byte(s) after the end command at byte {offset}")]
    TrailingData {
        /// Offset of the first extra byte.
        offset: u64,
        /// How many extra bytes were seen in the chunk that revealed them.
        extra: usize,
    },
    /// The stream stopped before its end command.
    #[error("truncated: the stream ends at byte {offset} {inside} without the end command")]
    Truncated {
        /// Total bytes seen.
        offset: u64,
        /// Where it stopped, in words.
        inside: &'static str,
    },
}

#[derive(Debug)]
enum State {
    /// Collecting the stream header.
    StreamHeader,
    /// Collecting a command header.
    CmdHeader,
    /// Inside a command payload: bytes left.
    Payload(u64),
    /// The end command was seen.
    Ended,
}

/// Counts reported once a stream validated completely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendStreamSummary {
    /// Stream version from the header.
    pub version: u32,
    /// Number of commands, the end command included.
    pub commands: u64,
    /// Total stream length in bytes.
    pub len: u64,
}

/// Consumes a send stream chunk by chunk and fails at the first inconsistency.
/// Memory use is constant (it never buffers payloads).
#[derive(Debug)]
pub struct SendStreamValidator {
    state: State,
    header: [u8; STREAM_HEADER_LEN],
    filled: usize,
    offset: u64,
    cmd_offset: u64,
    cmd: u16,
    stored_crc: u32,
    crc: Digest,
    version: u32,
    commands: u64,
}

impl Default for SendStreamValidator {
    fn default() -> Self {
        Self::new()
    }
}

impl SendStreamValidator {
    /// A validator expecting the start of a stream.
    pub fn new() -> Self {
        SendStreamValidator {
            state: State::StreamHeader,
            header: [0; STREAM_HEADER_LEN],
            filled: 0,
            offset: 0,
            cmd_offset: 0,
            cmd: 0,
            stored_crc: 0,
            crc: raw_crc32c(),
            version: 0,
            commands: 0,
        }
    }

    /// True once the end command has been seen.
    pub fn ended(&self) -> bool {
        matches!(self.state, State::Ended)
    }

    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), SendStreamError> {
        while !data.is_empty() {
            match self.state {
                State::StreamHeader => {
                    let n = self.fill(&mut data, STREAM_HEADER_LEN);
                    // Reject garbage as soon as the magic disagrees.
                    let seen = self.filled.min(STREAM_MAGIC.len());
                    if self.header[..seen] != STREAM_MAGIC[..seen] {
                        return Err(SendStreamError::BadMagic);
                    }
                    self.offset += n as u64;
                    if self.filled == STREAM_HEADER_LEN {
                        let v = u32::from_le_bytes(self.header[13..17].try_into().expect("4"));
                        if v == 0 || v > MAX_KNOWN_VERSION {
                            return Err(SendStreamError::UnsupportedVersion(v));
                        }
                        self.version = v;
                        self.filled = 0;
                        self.state = State::CmdHeader;
                    }
                }
                State::CmdHeader => {
                    if self.filled == 0 {
                        self.cmd_offset = self.offset;
                    }
                    let n = self.fill(&mut data, CMD_HEADER_LEN);
                    self.offset += n as u64;
                    if self.filled == CMD_HEADER_LEN {
                        self.start_command()?;
                    }
                }
                State::Payload(left) => {
                    let n = (left.min(data.len() as u64)) as usize;
                    self.crc.update(&data[..n]);
                    data = &data[n..];
                    self.offset += n as u64;
                    if left == n as u64 {
                        self.end_command()?;
                    } else {
                        self.state = State::Payload(left - n as u64);
                    }
                }
                State::Ended => {
                    return Err(SendStreamError::TrailingData {
                        offset: self.offset,
                        extra: data.len(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Declares the end of input: succeeds only for a complete stream.
    pub fn finish(&self) -> Result<SendStreamSummary, SendStreamError> {
        let inside = match self.state {
            State::Ended => {
                return Ok(SendStreamSummary {
                    version: self.version,
                    commands: self.commands,
                    len: self.offset,
                })
            }
            State::StreamHeader if self.offset == 0 => "(empty)",
            State::StreamHeader => "inside the stream header",
            State::CmdHeader if self.filled == 0 => "after a command",
            State::CmdHeader => "inside a command header",
            State::Payload(_) => "inside a command",
        };
        Err(SendStreamError::Truncated {
            offset: self.offset,
            inside,
        })
    }

    fn fill(&mut self, data: &mut &[u8], want: usize) -> usize {
        let n = (want - self.filled).min(data.len());
        self.header[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        *data = &data[n..];
        n
    }

    fn start_command(&mut self) -> Result<(), SendStreamError> {
        let h = &self.header;
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4"));
        self.cmd = u16::from_le_bytes(h[4..6].try_into().expect("2"));
        self.stored_crc = u32::from_le_bytes(h[6..10].try_into().expect("4"));
        if self.cmd == 0 {
            return Err(SendStreamError::BadCommand {
                offset: self.cmd_offset,
            });
        }
        let mut zeroed = [0u8; CMD_HEADER_LEN];
        zeroed[..6].copy_from_slice(&h[..6]);
        self.crc = raw_crc32c();
        self.crc.update(&zeroed);
        self.filled = 0;
        if len == 0 {
            self.end_command()
        } else {
            self.state = State::Payload(u64::from(len));
            Ok(())
        }
    }

    fn end_command(&mut self) -> Result<(), SendStreamError> {
        // The digest applies the standard final inversion; btrfs uses none.
        let computed = (self.crc.finalize() as u32) ^ 0xffff_ffff;
        if computed != self.stored_crc {
            return Err(SendStreamError::CrcMismatch {
                offset: self.cmd_offset,
                cmd: self.cmd,
                stored: self.stored_crc,
                computed,
            });
        }
        self.commands += 1;
        self.state = if self.cmd == CMD_END {
            State::Ended
        } else {
            State::CmdHeader
        };
        Ok(())
    }
}

/// CRC-32C with seed 0 (btrfs's `crc32c(0, ...)`); see [`SendStreamValidator`].
fn raw_crc32c() -> Digest {
    Digest::new_with_init_state(CrcAlgorithm::Crc32Iscsi, 0)
}

/// The btrfs send CRC of `bytes` (seed 0, no final inversion).
pub fn send_crc32c(bytes: &[u8]) -> u32 {
    let mut d = raw_crc32c();
    d.update(bytes);
    (d.finalize() as u32) ^ 0xffff_ffff
}

/// Builds send streams for tests: a valid header, commands with correct checksums,
/// and the end command. Used by this crate's tests and by `tests/`.
pub mod synthetic {
    use super::*;

    /// One encoded command with a correct CRC.
    pub fn command(cmd: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(CMD_HEADER_LEN + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&cmd.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(payload);
        let crc = send_crc32c(&out);
        out[6..10].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// The 17-byte stream header for `version`.
    pub fn header(version: u32) -> Vec<u8> {
        let mut out = STREAM_MAGIC.to_vec();
        out.extend_from_slice(&version.to_le_bytes());
        out
    }

    /// A complete v1 stream: header, one WRITE-like command (15) per payload, END.
    pub fn stream(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = header(1);
        for p in payloads {
            out.extend(command(15, p));
        }
        out.extend(command(CMD_END, &[]));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::*;
    use super::*;
    use proptest::prelude::*;

    fn validate_in_chunks(data: &[u8], chunk: usize) -> Result<SendStreamSummary, SendStreamError> {
        let mut v = SendStreamValidator::new();
        for c in data.chunks(chunk.max(1)) {
            v.update(c)?;
        }
        v.finish()
    }

    #[test]
    fn the_kernel_end_command_checksum_is_reproduced() {
        // The END command as the kernel emitted it in a real `btrfs send` stream on
        // this project's test machine: len 0, cmd 21, crc 0x9dc96c50.
        let real_end = [0, 0, 0, 0, 0x15, 0, 0x50, 0x6c, 0xc9, 0x9d];
        assert_eq!(command(CMD_END, &[]), real_end);
    }

    #[test]
    fn a_valid_stream_passes_in_any_chunking() {
        let s = stream(&[b"hello", &[7u8; 70_000], b""]);
        for chunk in [1, 3, 10, 17, 4096, s.len()] {
            let sum = validate_in_chunks(&s, chunk).unwrap();
            assert_eq!(sum.commands, 4);
            assert_eq!(sum.len, s.len() as u64);
            assert_eq!(sum.version, 1);
        }
    }

    #[test]
    fn garbage_is_rejected_at_once() {
        let mut v = SendStreamValidator::new();
        assert_eq!(
            v.update(b"\x28\xb5\x2f\xfd"),
            Err(SendStreamError::BadMagic)
        );
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let s = stream(&[b"abc"]);
        // Missing END.
        let cut = &s[..s.len() - CMD_HEADER_LEN];
        assert_eq!(
            validate_in_chunks(cut, 5),
            Err(SendStreamError::Truncated {
                offset: cut.len() as u64,
                inside: "after a command"
            })
        );
        // Trailing data.
        let mut long = s.clone();
        long.push(0);
        assert!(matches!(
            validate_in_chunks(&long, 7),
            Err(SendStreamError::TrailingData { .. })
        ));
        // Unknown version.
        let mut v9 = header(9);
        v9.extend(command(CMD_END, &[]));
        assert_eq!(
            validate_in_chunks(&v9, 100),
            Err(SendStreamError::UnsupportedVersion(9))
        );
        // Empty.
        assert!(validate_in_chunks(&[], 1)
            .unwrap_err()
            .to_string()
            .contains("(empty)"));
    }

    proptest! {
        #[test]
        fn any_flipped_bit_or_truncation_fails(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6),
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
            chunk in 1usize..64,
        ) {
            let refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
            let s = stream(&refs);
            prop_assert!(validate_in_chunks(&s, chunk).is_ok());
            let i = pos.index(s.len());
            // The header's version field has no checksum (1 -> 3 is another valid
            // version); the trailer's SHA-256 covers it in real objects.
            if !(13..17).contains(&i) {
                let mut bad = s.clone();
                bad[i] ^= 1 << bit;
                prop_assert!(validate_in_chunks(&bad, chunk).is_err(), "flip at {}", i);
            }
            prop_assert!(validate_in_chunks(&s[..i], chunk).is_err(), "cut at {}", i);
        }
    }
}
