//! Streams: btrfs send -> compress -> upload, and download -> decompress -> receive.
//!
//! - [`encode()`] turns a raw `btrfs send` stream into the bytes of an object:
//!   compressed (zstd, gzip or none), followed by the [`trailer`] that records the
//!   raw stream's length and SHA-256, optionally piped through external commands.
//! - [`decode()`] turns an object back into the raw stream, verifying the trailer
//!   (when present) and the send stream's own per-command CRCs ([`send_format`]);
//!   [`verify_object`] does the same without a consumer.
//! - For an encrypted remote, [`Seal`] makes the encoder key the trailer (body
//!   MAC) and age-encrypt the object, and [`Unseal`] makes the decoder decrypt
//!   it and refuse it unless the body MAC matches.
//!
//! Both run their CPU work on dedicated threads linked by bounded channels, so
//! reading, compressing, hashing and the caller's I/O overlap and memory stays
//! bounded whatever the stream size.

mod channel;
pub mod codec;
mod crypt;
mod decode;
mod encode;
mod error;
mod pipe;
pub mod send_format;
pub mod trailer;

pub use codec::{default_level, default_threads, level_range, validate_level, MAX_THREADS};
pub use crypt::{decrypt, Decrypted, Seal, Unseal};
pub use decode::{
    decode, decode_with, verify_object, verify_object_with, DecodeOptions, DecodeSummary, Decoded,
};
pub use encode::{encode, EncodeOptions, EncodeSummary, Encoded, SourceCheck};
pub use error::StreamError;
pub use pipe::{is_secret_env, show as show_command, unpipe, Unpiped};
