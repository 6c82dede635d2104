//! The restore side: object bytes -> decompression -> trailer check -> the raw
//! `btrfs send` stream, verified as it passes.
//!
//! ```text
//! object ──(tokio task)──> [decrypt thread] ──> decompress thread ──> verify thread ──> Decoded
//!                          age, 64 KiB          sniff codec,          SHA-256, length,
//!                          chunks verified      strip trailer         send-stream CRCs,
//!                                                                     body MAC
//! ```
//!
//! An encrypted remote's object ([`Unseal`]) is decrypted on a thread of its
//! own, must carry the keyed trailer, and its body MAC must match its key and
//! the raw stream actually decoded before the held-back end is released.
//!
//! The verify stage holds back the last 86 bytes of the decompressed stream (a
//! possible trailer and the end command before it) until every check passed: a consumer such as `btrfs receive`
//! never sees the end of a corrupt stream, and the final read returns an error
//! instead of EOF. Memory is bounded like the encoder's (3 channels of at most 4 x
//! 1 MiB, plus the zstd window of at most 8 MiB for levels up to 19).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

use crate::core::model::Codec;

use super::channel::{pump, send_end, ChannelReader, Msg, TailHold, QUEUE};
use super::codec::{sniff, Decompressor, Flow, GZIP_MAGIC, ZSTD_MAGIC};
use super::crypt::{decrypt_stage, Unseal};
use super::error::{ErrorSlot, StreamError};
use super::send_format::{SendStreamSummary, SendStreamValidator, CMD_HEADER_LEN, STREAM_MAGIC};
use super::trailer::{data_digest, parse_trailer_for, trailer_len_for, Record, TrailerError};

/// How to decode an object.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// The codec named by the key (`.cmpr...`): the object must be in it and must
    /// carry a trailer. `None` when the key says nothing (btrfs2s3 objects): the
    /// codec is sniffed from the magic bytes and the trailer is optional.
    pub codec: Option<Codec>,
    /// Validate the raw output as a btrfs send stream (on in [`decode`]).
    pub check_send_stream: bool,
    /// Decrypt and authenticate (an encrypted remote's object): the keyed
    /// trailer is then required, whatever the codec.
    pub unseal: Option<Unseal>,
}

impl DecodeOptions {
    /// Options for an object whose key names `codec`, send-stream check on,
    /// not encrypted.
    pub fn new(codec: Option<Codec>) -> Self {
        DecodeOptions {
            codec,
            check_send_stream: true,
            unseal: None,
        }
    }
}

/// What a decode found, available from [`Decoded::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeSummary {
    /// The codec the object was decoded with.
    pub codec: Codec,
    /// Size of the object read.
    pub object_len: u64,
    /// Length of the raw stream delivered.
    pub raw_len: u64,
    /// SHA-256 of the raw stream delivered.
    pub raw_sha256: [u8; 32],
    /// The trailer, when the object has one.
    pub trailer: Option<Record>,
    /// True when a trailer was present and length and SHA-256 matched it.
    pub verified: bool,
    /// True when the object was decrypted and its body MAC matched (an
    /// encrypted remote's object).
    pub authenticated: bool,
    /// The send stream's shape, when it was checked (every command's CRC-32C
    /// matched and the stream ended with its end command).
    pub send_stream: Option<SendStreamSummary>,
}

/// The end of the decompress stage, handed to the verify stage.
struct Decompressed {
    codec: Codec,
    object_len: u64,
    record: Option<Record>,
}

/// The raw send stream, as an `AsyncRead` that fails its final read (instead of
/// returning EOF) when the object does not verify.
pub struct Decoded {
    reader: ChannelReader<DecodeSummary>,
}

/// Decodes an object, checking the send stream; see [`DecodeOptions`] for `codec`.
/// Must be called inside a tokio runtime.
pub fn decode(obj: impl AsyncRead + Unpin + Send + 'static, codec: Option<Codec>) -> Decoded {
    decode_with(obj, DecodeOptions::new(codec))
}

/// [`decode`] with every option.
pub fn decode_with(obj: impl AsyncRead + Unpin + Send + 'static, opts: DecodeOptions) -> Decoded {
    let slot = Arc::new(ErrorSlot::default());
    let (to_first, first_rx) = mpsc::channel(QUEUE);
    let (to_ver, ver_rx) = mpsc::channel(QUEUE);
    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    let s = slot.clone();
    tokio::spawn(async move {
        let outs = [to_first];
        if pump(obj, &outs, &s, |e| StreamError::ObjectRead(Arc::new(e))).await {
            send_end(&outs).await;
        }
    });
    let decrypt = opts
        .unseal
        .as_ref()
        .and_then(|u| u.identities.clone().map(|ids| (ids, u.key_file.clone())));
    let dec_rx = match decrypt {
        None => first_rx,
        Some((identities, key_file)) => {
            let (to_dec, dec_rx) = mpsc::channel(QUEUE);
            let s = slot.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = decrypt_stage(first_rx, &identities, &key_file, &to_dec) {
                    s.set(e);
                }
            });
            dec_rx
        }
    };
    let s = slot.clone();
    let (codec, keyed) = (opts.codec, opts.unseal.is_some());
    tokio::task::spawn_blocking(move || {
        if let Err(e) = decompress_stage(dec_rx, codec, keyed, &to_ver) {
            s.set(e);
        }
    });
    let s = slot.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = verify_stage(ver_rx, opts, &out_tx) {
            s.set(e);
        }
    });
    Decoded {
        reader: ChannelReader::new(out_rx, slot, "the decoder"),
    }
}

/// Decodes `obj` to nowhere and returns what it found: the check `subvault verify`
/// runs, without btrfs.
pub async fn verify_object(
    obj: impl AsyncRead + Unpin + Send + 'static,
    codec: Option<Codec>,
) -> Result<DecodeSummary, StreamError> {
    verify_object_with(obj, DecodeOptions::new(codec)).await
}

/// [`verify_object`] with every option (an encrypted remote's object).
pub async fn verify_object_with(
    obj: impl AsyncRead + Unpin + Send + 'static,
    opts: DecodeOptions,
) -> Result<DecodeSummary, StreamError> {
    let mut d = decode_with(obj, opts);
    if let Err(e) = tokio::io::copy(&mut d, &mut tokio::io::sink()).await {
        return Err(StreamError::from_io(&e)
            .cloned()
            .unwrap_or_else(|| StreamError::Internal(e.to_string())));
    }
    d.finish().await
}

impl AsyncRead for Decoded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.get_mut().reader.poll_read(cx, buf)
    }
}

impl Decoded {
    /// The summary once the reader returned EOF (everything verified); the error
    /// when a read failed; [`StreamError::NotFinished`] before the end.
    pub async fn finish(self) -> Result<DecodeSummary, StreamError> {
        self.reader.outcome()
    }

    /// The next piece of the raw stream without copying it (what a reader would
    /// get, chunk by chunk); `None` after the verified end.
    pub async fn next_chunk(&mut self) -> io::Result<Option<Bytes>> {
        self.reader.next_chunk().await
    }

    /// True once the reader returned EOF or an error.
    pub fn ended(&self) -> bool {
        self.reader.ended()
    }
}

/// Names the format the first bytes show, for [`StreamError::WrongCodec`].
fn describe(head: &[u8]) -> &'static str {
    match sniff(head) {
        Some(Codec::Zstd) => "zstd",
        Some(Codec::Gzip) => "gzip",
        Some(Codec::None) => "uncompressed btrfs send stream",
        None => "unrecognized",
    }
}

/// Picks the codec from the key's and the magic bytes' word.
fn resolve_codec(given: Option<Codec>, head: &[u8]) -> Result<Codec, StreamError> {
    match given {
        Some(expected) => {
            let ok = match expected {
                Codec::Zstd => head.starts_with(&ZSTD_MAGIC),
                Codec::Gzip => head.starts_with(&GZIP_MAGIC),
                Codec::None => !head.starts_with(&ZSTD_MAGIC) && !head.starts_with(&GZIP_MAGIC),
            };
            if ok {
                Ok(expected)
            } else {
                Err(StreamError::WrongCodec {
                    expected,
                    found: describe(head),
                })
            }
        }
        None => sniff(head).ok_or_else(|| StreamError::UnknownFormat {
            head: hex::encode(&head[..head.len().min(8)]),
        }),
    }
}

/// Decompresses, keeping the codec-level trailer (if any; the keyed one when
/// `keyed`) out of the output.
fn decompress_stage(
    mut rx: mpsc::Receiver<Msg<()>>,
    given: Option<Codec>,
    keyed: bool,
    out: &mpsc::Sender<Msg<Decompressed>>,
) -> Result<(), StreamError> {
    let mut head = Vec::new();
    let mut object_len = 0u64;
    let mut state: Option<(Codec, TailHold, Decompressor)> = None;
    let mut emit = |b: Bytes| out.blocking_send(Msg::Data(b)).is_ok();
    // Length and CRC-32C of the bytes before the trailer, checked against it.
    let mut data_len = 0u64;
    let mut crc = data_digest();
    let mut ended = false;
    while let Some(msg) = rx.blocking_recv() {
        let data = match msg {
            Msg::Data(b) => b,
            Msg::End(()) => {
                ended = true;
                Bytes::new()
            }
        };
        object_len += data.len() as u64;
        // Wait for enough bytes to recognise every magic before choosing a codec.
        let data = if state.is_none() {
            head.extend_from_slice(&data);
            if head.len() < STREAM_MAGIC.len() && !ended {
                continue;
            }
            if head.is_empty() {
                return Err(StreamError::EmptyObject);
            }
            let codec = resolve_codec(given, &head)?;
            let hold = match codec {
                Codec::Zstd | Codec::Gzip => trailer_len_for(codec, keyed),
                // The uncompressed trailer is found by the verify stage.
                Codec::None => 0,
            };
            state = Some((codec, TailHold::new(hold), Decompressor::new(codec)));
            Bytes::from(std::mem::take(&mut head))
        } else {
            data
        };
        let (codec, hold, dec) = state.as_mut().expect("codec chosen");
        let fail = |e: io::Error| StreamError::Decompress {
            codec: *codec,
            source: Arc::new(e),
        };
        for piece in hold.push(data) {
            data_len += piece.len() as u64;
            crc.update(&piece);
            if dec.write(piece, &mut emit).map_err(fail)? == Flow::Stopped {
                return Ok(());
            }
        }
        if ended {
            let codec = *codec;
            let tail = hold.take();
            let record = if tail.is_empty() {
                None
            } else {
                match parse_trailer_for(codec, keyed, &tail) {
                    Ok(r) => Some(r),
                    Err(TrailerError::NotFound | TrailerError::TooShort) => {
                        data_len += tail.len() as u64;
                        crc.update(&tail);
                        if dec.write(Bytes::from(tail), &mut emit).map_err(fail)? == Flow::Stopped {
                            return Ok(());
                        }
                        None
                    }
                    Err(e) => return Err(StreamError::Trailer(e)),
                }
            };
            if let Some(r) = &record {
                check_data(r, data_len, crc.finalize() as u32)?;
            }
            match dec.finish(&mut emit) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stopped) => return Ok(()),
                Err(_) => return Err(StreamError::TruncatedCompressed { codec }),
            }
            if record.is_none() && keyed && codec != Codec::None {
                return Err(StreamError::MissingKeyedTrailer);
            }
            if record.is_none() && given.is_some() && codec != Codec::None {
                return Err(StreamError::MissingTrailer { codec });
            }
            let _ = out.blocking_send(Msg::End(Decompressed {
                codec,
                object_len,
                record,
            }));
            return Ok(());
        }
    }
    // The reader stopped without End: it recorded why.
    Ok(())
}

/// Compares the data length and CRC with the trailer's.
fn check_data(r: &Record, actual_len: u64, actual_crc: u32) -> Result<(), StreamError> {
    if r.data_len != actual_len || r.data_crc32c != actual_crc {
        return Err(StreamError::DataMismatch {
            expected_len: r.data_len,
            actual_len,
            expected_crc: r.data_crc32c,
            actual_crc,
        });
    }
    Ok(())
}

/// What the verify stage has seen of the raw stream.
struct Tally {
    sha: Sha256,
    /// Only for objects that may be uncompressed: their trailer's data CRC covers
    /// the raw stream. (Compressed objects' CRC is checked on the compressed bytes.)
    crc: Option<crc_fast::Digest>,
    raw_len: u64,
    validator: Option<SendStreamValidator>,
}

impl Tally {
    fn take_in(&mut self, b: &[u8]) -> Result<(), StreamError> {
        self.sha.update(b);
        if let Some(crc) = &mut self.crc {
            crc.update(b);
        }
        self.raw_len += b.len() as u64;
        if let Some(v) = &mut self.validator {
            v.update(b).map_err(StreamError::SendStream)?;
        }
        Ok(())
    }
}

/// Hashes and validates the raw stream, finds an uncompressed-level trailer, and
/// releases the held-back end only when everything matched.
fn verify_stage(
    mut rx: mpsc::Receiver<Msg<Decompressed>>,
    opts: DecodeOptions,
    out: &mpsc::Sender<Msg<DecodeSummary>>,
) -> Result<(), StreamError> {
    // The trailer of an uncompressed object plus the end command before it, so the
    // end command stays held back whether or not a trailer follows it.
    let keyed = opts.unseal.is_some();
    let mut hold = TailHold::new(trailer_len_for(Codec::None, keyed) + CMD_HEADER_LEN);
    let mut tally = Tally {
        sha: Sha256::new(),
        crc: (!matches!(opts.codec, Some(Codec::Zstd | Codec::Gzip))).then(data_digest),
        raw_len: 0,
        validator: opts.check_send_stream.then(SendStreamValidator::new),
    };
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(b) => {
                for piece in hold.push(b) {
                    if piece.is_empty() {
                        continue;
                    }
                    tally.take_in(&piece)?;
                    if out.blocking_send(Msg::Data(piece)).is_err() {
                        return Ok(());
                    }
                }
            }
            Msg::End(d) => {
                let mut tail = hold.take();
                let mut record = d.record;
                let mut raw_level_record = false;
                // Only an uncompressed (or unnamed) object can carry its trailer
                // at the raw level; a compressed one's is in the codec's framing.
                if record.is_none() && tally.crc.is_some() {
                    match parse_trailer_for(Codec::None, keyed, &tail) {
                        Ok(r) => {
                            record = Some(r);
                            raw_level_record = true;
                            tail.truncate(tail.len() - trailer_len_for(Codec::None, keyed));
                        }
                        Err(TrailerError::NotFound | TrailerError::TooShort) => {}
                        Err(e) => return Err(StreamError::Trailer(e)),
                    }
                }
                tally.take_in(&tail)?;
                if record.is_none() && keyed {
                    return Err(StreamError::MissingKeyedTrailer);
                }
                if record.is_none() && opts.codec.is_some() {
                    return Err(StreamError::MissingTrailer { codec: d.codec });
                }
                let Tally {
                    sha,
                    crc,
                    raw_len,
                    validator,
                } = tally;
                // Uncompressed objects: the "data" the trailer covers is the raw stream.
                if let (true, Some(r), Some(crc)) = (raw_level_record, &record, crc) {
                    check_data(r, raw_len, crc.finalize() as u32)?;
                }
                let send_stream = match &validator {
                    Some(v) => Some(v.finish().map_err(StreamError::SendStream)?),
                    None => None,
                };
                let raw_sha256: [u8; 32] = sha.finalize().into();
                if let Some(r) = &record {
                    if r.raw_len != raw_len {
                        return Err(StreamError::LengthMismatch {
                            expected: r.raw_len,
                            actual: raw_len,
                        });
                    }
                    if r.raw_sha256 != raw_sha256 {
                        return Err(StreamError::ChecksumMismatch {
                            expected: r.sha256_hex(),
                            actual: hex::encode(raw_sha256),
                        });
                    }
                }
                // The body MAC, over what was actually decoded: only then is
                // the held-back end released.
                if let Some(u) = &opts.unseal {
                    let authentic = record
                        .as_ref()
                        .and_then(|r| r.mac)
                        .is_some_and(|mac| u.auth.verify_body(&u.name, raw_len, &raw_sha256, &mac));
                    if !authentic {
                        return Err(StreamError::BodyMacMismatch);
                    }
                }
                if !tail.is_empty() && out.blocking_send(Msg::Data(Bytes::from(tail))).is_err() {
                    return Ok(());
                }
                let _ = out.blocking_send(Msg::End(DecodeSummary {
                    codec: d.codec,
                    object_len: d.object_len,
                    raw_len,
                    raw_sha256,
                    verified: record.is_some(),
                    authenticated: keyed,
                    trailer: record,
                    send_stream,
                }));
                return Ok(());
            }
        }
    }
    Ok(())
}
