//! Errors of the stream pipelines, and the slot that carries the first one across
//! their threads.

use std::io;
use std::sync::{Arc, Mutex};

use crate::core::model::Codec;

use super::send_format::SendStreamError;
use super::trailer::TrailerError;

/// Everything that can go wrong while encoding or decoding an object. Messages say
/// what is wrong; the caller adds the object key or the source path.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StreamError {
    /// Reading the raw `btrfs send` stream failed.
    #[error("reading the btrfs send stream failed: {0}")]
    Source(Arc<io::Error>),
    /// The process producing the send stream reported a failure (see
    /// `EncodeOptions::source_check`).
    #[error("the btrfs send stream is incomplete: {0}")]
    SourceFailed(String),
    /// The stream given to `encode` is not a complete, intact send stream.
    #[error("the stream to upload is not a valid btrfs send stream: {0}")]
    SourceInvalid(SendStreamError),
    /// The compressor failed (should not happen with valid settings).
    #[error("{codec} compression failed: {source}")]
    Compress {
        /// Codec in use.
        codec: Codec,
        /// The codec's error.
        source: Arc<io::Error>,
    },
    /// Reading the object failed (download error).
    #[error("reading the object failed: {0}")]
    ObjectRead(Arc<io::Error>),
    /// The object is empty.
    #[error("the object is empty")]
    EmptyObject,
    /// The decompressor rejected the data.
    #[error("{codec} decompression failed: {source} (the object is corrupt)")]
    Decompress {
        /// Codec in use.
        codec: Codec,
        /// The codec's error.
        source: Arc<io::Error>,
    },
    /// The compressed data stops inside a frame or member.
    #[error("the {codec} data ends in the middle of a frame: the object is truncated")]
    TruncatedCompressed {
        /// Codec in use.
        codec: Codec,
    },
    /// The object's magic bytes disagree with the codec its key names.
    #[error("the object holds {found} data but its key says .cmpr{expected}: the key's codec suffix is wrong or the object was replaced")]
    WrongCodec {
        /// Codec named by the key.
        expected: Codec,
        /// What the magic bytes say.
        found: &'static str,
    },
    /// No codec given and the magic bytes match none we know.
    #[error("the object is neither zstd, gzip nor a btrfs send stream (it starts with {head}); if it was written through pipe_through (e.g. gpg), set restore_pipe_through to the command that reverses it")]
    UnknownFormat {
        /// The first bytes, in hex.
        head: String,
    },
    /// The key says subvault wrote the object but the trailer is absent.
    #[error("the object has no subvault checksum trailer although its key says .cmpr{codec}: it is truncated or was not written by subvault")]
    MissingTrailer {
        /// Codec named by the key.
        codec: Codec,
    },
    /// The trailer is present but unusable.
    #[error("{0}")]
    Trailer(TrailerError),
    /// The object bytes before the trailer disagree with it.
    #[error("the object's data does not match its trailer (length {actual_len}, trailer says {expected_len}; CRC-32C {actual_crc:08x}, trailer says {expected_crc:08x}): the object is corrupt")]
    DataMismatch {
        /// Length in the trailer.
        expected_len: u64,
        /// Length read.
        actual_len: u64,
        /// CRC in the trailer.
        expected_crc: u32,
        /// CRC computed.
        actual_crc: u32,
    },
    /// The raw stream's length disagrees with the trailer.
    #[error("the raw stream is {actual} bytes but the object's trailer records {expected}: the object is corrupt or truncated")]
    LengthMismatch {
        /// Length in the trailer.
        expected: u64,
        /// Length decoded.
        actual: u64,
    },
    /// The raw stream's SHA-256 disagrees with the trailer.
    #[error("the SHA-256 of the raw stream is {actual} but the object's trailer records {expected}: the object is corrupt")]
    ChecksumMismatch {
        /// Hex digest in the trailer.
        expected: String,
        /// Hex digest computed.
        actual: String,
    },
    /// The decoded data is not an intact send stream.
    #[error("the object's btrfs send stream is damaged: {0}")]
    SendStream(SendStreamError),
    /// age encryption failed (should not happen with a valid key file).
    #[error("age encryption failed: {0}")]
    Encrypt(String),
    /// The object of an encrypted remote could not be decrypted.
    #[error("{0}")]
    Decrypt(String),
    /// The object is encrypted, but not to the key file's identity.
    #[error("the object is not encrypted to the identity in {key_file} (a different key file, or someone else wrote it)")]
    NotOurRecipient {
        /// The key file, for the message.
        key_file: String,
    },
    /// An encrypted remote's object lacks the keyed trailer.
    #[error("the object has no keyed trailer, so nothing authenticates it: it was not written with this remote's auth key (refused)")]
    MissingKeyedTrailer,
    /// The keyed trailer's MAC does not match the object's key and content.
    #[error("the object's body MAC does not match its key and content: it was not written with this remote's auth key, or its body was altered or swapped with another object's (refused)")]
    BodyMacMismatch,
    /// A `pipe_through` command has no program name.
    #[error(
        "a pipe_through command is empty; write each command as a list such as [\"gzip\", \"-1\"]"
    )]
    EmptyCommand,
    /// A `pipe_through` (or `restore_pipe_through`) command could not be started.
    #[error(
        "could not start {setting} command `{command}`: {source} (is it installed and on PATH?)"
    )]
    PipeSpawn {
        /// The config field the command comes from.
        setting: &'static str,
        /// The command line.
        command: String,
        /// The spawn error.
        source: Arc<io::Error>,
    },
    /// A `pipe_through` (or `restore_pipe_through`) command exited unsuccessfully.
    #[error("{setting} command `{command}` failed ({status}); stderr: {stderr}")]
    PipeFailed {
        /// The config field the command comes from.
        setting: &'static str,
        /// The command line.
        command: String,
        /// Exit status in words.
        status: String,
        /// The end of its stderr (empty when it wrote none).
        stderr: String,
    },
    /// Talking to a `pipe_through` (or `restore_pipe_through`) command failed.
    #[error("i/o with {setting} command `{command}` failed: {source}")]
    PipeIo {
        /// The config field the command comes from.
        setting: &'static str,
        /// The command line.
        command: String,
        /// The error.
        source: Arc<io::Error>,
    },
    /// A compression level outside the codec's range.
    #[error("compression level {level} is out of range for {codec} (allowed: {allowed})")]
    InvalidLevel {
        /// The codec.
        codec: Codec,
        /// The level given.
        level: i32,
        /// The allowed range in words.
        allowed: String,
    },
    /// `finish` was called before the stream was read to its end.
    #[error("finish() called before the stream was read to its end")]
    NotFinished,
    /// A pipeline stage stopped without saying why (a bug).
    #[error("internal error in the stream pipeline: {0}")]
    Internal(String),
}

impl StreamError {
    /// The [`StreamError`] inside an `io::Error` returned by an encoded or decoded
    /// reader, if it carries one (so callers of `tokio::io::copy` get the cause back).
    pub fn from_io(err: &io::Error) -> Option<&StreamError> {
        err.get_ref()?.downcast_ref::<StreamError>()
    }
}

impl From<StreamError> for io::Error {
    fn from(e: StreamError) -> io::Error {
        io::Error::other(e)
    }
}

/// Holds the first error any stage of a pipeline hit. A stage stores its error
/// here before it drops its channels, so whoever sees a channel close early finds
/// the cause in the slot.
#[derive(Debug, Default)]
pub(crate) struct ErrorSlot(Mutex<Option<StreamError>>);

impl ErrorSlot {
    /// Records `err` unless an earlier error is already recorded.
    pub(crate) fn set(&self, err: StreamError) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(err);
        }
    }

    /// The recorded error, or an internal error naming the stage that stopped.
    pub(crate) fn get_or(&self, what: &str) -> StreamError {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.clone()
            .unwrap_or_else(|| StreamError::Internal(format!("{what} stopped unexpectedly")))
    }
}
