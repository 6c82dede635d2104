//! The upload side: raw `btrfs send` stream -> compression + trailer -> optional
//! `pipe_through` commands -> the bytes to upload.
//!
//! Stages and threads (so reading, hashing, compressing and uploading overlap):
//!
//! ```text
//! raw ──(tokio task: read 1 MiB chunks)──┬──> hash thread (SHA-256, send-stream check)
//!                                        └──> compress thread ──> [pipe_through] ──> [encrypt thread] ──> Encoded
//! ```
//!
//! With a [`Seal`] (an encrypted remote) the trailer is keyed (it carries the
//! body MAC) and the bytes are age-encrypted on a thread of their own, after
//! compression and `pipe_through`, so encrypting overlaps compressing; it adds
//! one channel of at most [`QUEUE`] chunks.
//!
//! Every link is a bounded channel of at most [`QUEUE`] chunks of 1 MiB, so memory
//! is bounded whatever the stream size: about 2 x 4 MiB of raw chunks (shared by
//! both consumers), 4 MiB of compressed chunks, one chunk being filled per stage,
//! one zstd context per worker (about 2.5 MiB at level 3, about 90 MiB at level
//! 19) with its 4 MiB jobs in flight, and 64 KiB per pipe: about 40 MiB at the
//! default level on two workers (measured: 39 MiB of RSS growth while encoding
//! 256 MiB, the `encoding_memory_is_bounded` test).

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::process::ChildStdout;
use tokio::sync::{mpsc, oneshot};

use crate::core::auth::AuthKey;
use crate::core::model::Codec;

use super::channel::{pump, send_end, ChannelReader, Msg, QUEUE};
use super::codec::{default_threads, validate_level, Compressor, Flow, CHUNK};
use super::crypt::{encrypt_stage, Seal};
use super::error::{ErrorSlot, StreamError};
use super::pipe::{spawn_chain, wait_all};
use super::send_format::{SendStreamSummary, SendStreamValidator};
use super::trailer::{data_digest, encode_trailer, Record};

/// A check run when the raw stream reaches EOF and before the trailer is written,
/// typically "did `btrfs send` exit 0"; an `Err` message fails the encode, so an
/// incomplete stream never becomes an object.
pub type SourceCheck = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// How to encode a stream.
pub struct EncodeOptions {
    /// Compression (the key's `.cmpr` suffix).
    pub codec: Codec,
    /// Compression level; `None` for the codec's default (see [`validate_level`]).
    pub level: Option<i32>,
    /// Compression threads (zstd only); `None` for [`default_threads`].
    ///
    /// [`default_threads`]: super::codec::default_threads
    pub threads: Option<u32>,
    /// Commands the compressed bytes (trailer included) pass through, in order.
    pub pipe_through: Vec<Vec<String>>,
    /// Validate the raw stream as a btrfs send stream (on by default): a truncated
    /// or garbled stream fails the encode instead of being uploaded.
    pub check_send_stream: bool,
    /// Awaited at EOF of the raw stream (see [`SourceCheck`]).
    pub source_check: Option<SourceCheck>,
    /// Encrypt and authenticate the object (an encrypted remote's).
    pub seal: Option<Seal>,
}

impl EncodeOptions {
    /// Options for `codec` at its default level, no pipe, send-stream check on.
    pub fn new(codec: Codec) -> Self {
        EncodeOptions {
            codec,
            level: None,
            threads: None,
            pipe_through: Vec::new(),
            check_send_stream: true,
            source_check: None,
            seal: None,
        }
    }
}

impl fmt::Debug for EncodeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncodeOptions")
            .field("codec", &self.codec)
            .field("level", &self.level)
            .field("threads", &self.threads)
            .field("pipe_through", &self.pipe_through)
            .field("check_send_stream", &self.check_send_stream)
            .field("source_check", &self.source_check.is_some())
            .field("seal", &self.seal)
            .finish()
    }
}

/// What an encode produced, available from [`Encoded::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeSummary {
    /// The trailer written into the object: raw length and SHA-256, data length and
    /// CRC-32C (and the body MAC of a sealed object).
    pub record: Record,
    /// Bytes out of the compressor, trailer included (before `pipe_through` and
    /// encryption).
    pub compressed_len: u64,
    /// Bytes read from [`Encoded`]: the object's size.
    pub encoded_len: u64,
    /// The send stream's shape, when it was checked.
    pub send_stream: Option<SendStreamSummary>,
}

/// Result of the hash stage.
type Hashed = (u64, [u8; 32], Option<SendStreamSummary>);
/// The pipe chain's final check.
type Finishing = Pin<Box<dyn Future<Output = Result<EncodeSummary, StreamError>> + Send>>;

enum Inner {
    Direct(ChannelReader<EncodeSummary>),
    Piped {
        stdout: ChildStdout,
        delivered: u64,
        state: PipeState,
    },
}

/// Progress of a piped encode: reading the chain's output (the final check waits),
/// running the final check after EOF, or done.
enum PipeState {
    Streaming(Finishing),
    Finishing(Finishing),
    Ended(Result<EncodeSummary, StreamError>),
}

/// The bytes to upload, as an `AsyncRead`. EOF is reported only after every stage
/// succeeded (raw stream complete and valid, trailer written, every `pipe_through`
/// command exited 0); otherwise the final read fails, so an uploader that completes
/// on EOF never creates an object from a failed stream.
pub struct Encoded {
    inner: Inner,
}

/// Starts encoding `raw`. Must be called inside a tokio runtime; the work runs on
/// a spawned task and two blocking threads while the caller reads [`Encoded`].
pub fn encode(
    raw: impl AsyncRead + Unpin + Send + 'static,
    opts: EncodeOptions,
) -> Result<Encoded, StreamError> {
    let level = validate_level(opts.codec, opts.level)?;
    let codec = opts.codec;
    let threads = opts.threads.unwrap_or_else(default_threads);
    let slot = Arc::new(ErrorSlot::default());
    let (to_hash, hash_rx) = mpsc::channel(QUEUE);
    let (to_comp, comp_rx) = mpsc::channel(QUEUE);
    let (out_tx, out_rx) = mpsc::channel(QUEUE);
    let (hashed_tx, hashed_rx) = oneshot::channel();

    // Start the commands first: a missing program fails before any work starts.
    let chain = if opts.pipe_through.is_empty() {
        None
    } else {
        Some(spawn_chain(&opts.pipe_through, "pipe_through")?)
    };

    let s = slot.clone();
    let check = opts.source_check;
    tokio::spawn(async move {
        let outs = [to_hash, to_comp];
        if !pump(raw, &outs, &s, |e| StreamError::Source(Arc::new(e))).await {
            return;
        }
        if let Some(check) = check {
            if let Err(msg) = check.await {
                s.set(StreamError::SourceFailed(msg));
                return;
            }
        }
        send_end(&outs).await;
    });
    let s = slot.clone();
    let validate = opts.check_send_stream;
    tokio::task::spawn_blocking(move || hash_stage(hash_rx, validate, hashed_tx, &s));
    let s = slot.clone();
    let seal = opts.seal;
    let mac_key = seal.as_ref().map(|k| (k.auth.clone(), k.name.clone()));
    tokio::task::spawn_blocking(move || {
        compress_stage(
            comp_rx, codec, level, threads, hashed_rx, mac_key, out_tx, &s,
        )
    });

    let inner = match (chain, seal) {
        (None, None) => Inner::Direct(ChannelReader::new(out_rx, slot, "the encoder")),
        (chain, Some(seal)) => {
            let plain = match chain {
                None => out_rx,
                Some(chain) => piped_to_channel(chain, out_rx, &slot),
            };
            let (enc_tx, enc_rx) = mpsc::channel(QUEUE);
            let s = slot.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = encrypt_stage(plain, &seal.recipients, enc_tx) {
                    s.set(e);
                }
            });
            Inner::Direct(ChannelReader::new(enc_rx, slot, "the encoder"))
        }
        (Some(chain), None) => {
            let feeder = spawn_feeder(chain.stdin, chain.first_command, out_rx, &slot);
            let procs = chain.procs;
            let finishing: Finishing = Box::pin(async move {
                let fed = feeder
                    .await
                    .unwrap_or_else(|e| Err(StreamError::Internal(format!("feeder: {e}"))));
                // A command's own failure explains a broken pipe, so report it first.
                wait_all(procs).await?;
                fed
            });
            Inner::Piped {
                stdout: chain.stdout,
                delivered: 0,
                state: PipeState::Streaming(finishing),
            }
        }
    };
    Ok(Encoded { inner })
}

/// Writes the compressed stream into the `pipe_through` chain's stdin and
/// closes it at the end; resolves to the stream's summary.
fn spawn_feeder<W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    mut stdin: W,
    first: String,
    mut rx: mpsc::Receiver<Msg<EncodeSummary>>,
    slot: &Arc<ErrorSlot>,
) -> tokio::task::JoinHandle<Result<EncodeSummary, StreamError>> {
    let s = slot.clone();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Data(b) => {
                    if let Err(e) = stdin.write_all(&b).await {
                        return Err(StreamError::PipeIo {
                            setting: "pipe_through",
                            command: first,
                            source: Arc::new(e),
                        });
                    }
                }
                Msg::End(summary) => {
                    // Dropping stdin closes it: the chain sees EOF.
                    drop(stdin);
                    return Ok(summary);
                }
            }
        }
        Err(s.get_or("the encoder"))
    })
}

/// Feeds the compressed stream into the `pipe_through` chain and returns a
/// channel of the chain's output, ending with the summary once every command
/// exited 0 (so an encrypt stage can follow the chain).
fn piped_to_channel(
    chain: super::pipe::Chain,
    from: mpsc::Receiver<Msg<EncodeSummary>>,
    slot: &Arc<ErrorSlot>,
) -> mpsc::Receiver<Msg<EncodeSummary>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let feeder = spawn_feeder(chain.stdin, chain.first_command, from, slot);
    let procs = chain.procs;
    let mut stdout = chain.stdout;
    let s = slot.clone();
    tokio::spawn(async move {
        loop {
            let mut buf = bytes::BytesMut::with_capacity(CHUNK);
            match tokio::io::AsyncReadExt::read_buf(&mut stdout, &mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(Msg::Data(buf.freeze())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    s.set(StreamError::PipeIo {
                        setting: "pipe_through",
                        command: "(reading the last command's output)".into(),
                        source: Arc::new(e),
                    });
                    return;
                }
            }
        }
        let fed = feeder
            .await
            .unwrap_or_else(|e| Err(StreamError::Internal(format!("feeder: {e}"))));
        // A command's own failure explains a broken pipe, so report it first.
        let result = match wait_all(procs).await {
            Ok(()) => fed,
            Err(e) => Err(e),
        };
        match result {
            Ok(summary) => {
                let _ = tx.send(Msg::End(summary)).await;
            }
            Err(e) => s.set(e),
        }
    });
    rx
}

fn hash_stage(
    mut rx: mpsc::Receiver<Msg<()>>,
    validate: bool,
    done: oneshot::Sender<Hashed>,
    slot: &ErrorSlot,
) {
    let mut sha = Sha256::new();
    let mut len = 0u64;
    let mut validator = validate.then(SendStreamValidator::new);
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(b) => {
                sha.update(&b);
                len += b.len() as u64;
                if let Some(v) = &mut validator {
                    if let Err(e) = v.update(&b) {
                        slot.set(StreamError::SourceInvalid(e));
                        return;
                    }
                }
            }
            Msg::End(()) => {
                let shape = match validator.as_ref().map(|v| v.finish()).transpose() {
                    Ok(shape) => shape,
                    Err(e) => {
                        slot.set(StreamError::SourceInvalid(e));
                        return;
                    }
                };
                let _ = done.send((len, sha.finalize().into(), shape));
                return;
            }
        }
    }
}

#[allow(clippy::too_many_arguments)] // one thread's whole context
fn compress_stage(
    mut rx: mpsc::Receiver<Msg<()>>,
    codec: Codec,
    level: Option<i32>,
    threads: u32,
    hashed: oneshot::Receiver<Hashed>,
    mac_key: Option<(Arc<AuthKey>, String)>,
    out: mpsc::Sender<Msg<EncodeSummary>>,
    slot: &ErrorSlot,
) {
    let mut comp = Compressor::new(codec, level, threads);
    let mut compressed_len = 0u64;
    let mut crc = data_digest();
    let fail = |e: io::Error| {
        slot.set(StreamError::Compress {
            codec,
            source: Arc::new(e),
        })
    };
    let mut emit = |b: Bytes| {
        compressed_len += b.len() as u64;
        crc.update(&b);
        out.blocking_send(Msg::Data(b)).is_ok()
    };
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(b) => match comp.write(b, &mut emit) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Stopped) => return,
                Err(e) => return fail(e),
            },
            Msg::End(()) => {
                // The hash stage drops its sender without a result when it failed.
                let Ok((raw_len, raw_sha256, send_stream)) = hashed.blocking_recv() else {
                    return;
                };
                match comp.finish(&mut emit) {
                    Ok(Flow::Continue) => {}
                    Ok(Flow::Stopped) => return,
                    Err(e) => return fail(e),
                }
                let record = Record {
                    raw_len,
                    raw_sha256,
                    data_len: compressed_len,
                    data_crc32c: crc.finalize() as u32,
                    mac: mac_key
                        .as_ref()
                        .map(|(key, name)| key.body_mac(name, raw_len, &raw_sha256)),
                };
                let trailer = encode_trailer(codec, &record);
                let trailer_len = trailer.len() as u64;
                if out.blocking_send(Msg::Data(Bytes::from(trailer))).is_err() {
                    return;
                }
                let summary = EncodeSummary {
                    record,
                    compressed_len: record.data_len + trailer_len,
                    encoded_len: 0,
                    send_stream,
                };
                let _ = out.blocking_send(Msg::End(summary));
                return;
            }
        }
    }
}

impl AsyncRead for Encoded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Direct(r) => r.poll_read(cx, buf),
            Inner::Piped {
                stdout,
                delivered,
                state,
            } => loop {
                match state {
                    PipeState::Ended(Ok(_)) => return Poll::Ready(Ok(())),
                    PipeState::Ended(Err(e)) => return Poll::Ready(Err(e.clone().into())),
                    PipeState::Finishing(f) => {
                        let total = *delivered;
                        let result = ready!(f.as_mut().poll(cx)).map(|mut s| {
                            s.encoded_len = total;
                            s
                        });
                        *state = PipeState::Ended(result);
                    }
                    PipeState::Streaming(_) => {
                        if buf.remaining() == 0 {
                            return Poll::Ready(Ok(()));
                        }
                        let before = buf.filled().len();
                        if let Err(e) = ready!(Pin::new(&mut *stdout).poll_read(cx, buf)) {
                            *state = PipeState::Ended(Err(StreamError::PipeIo {
                                setting: "pipe_through",
                                command: "(reading the last command's output)".into(),
                                source: Arc::new(e),
                            }));
                            continue;
                        }
                        let n = buf.filled().len() - before;
                        if n > 0 {
                            *delivered += n as u64;
                            return Poll::Ready(Ok(()));
                        }
                        // EOF of the chain: held back until every check passed.
                        let placeholder = PipeState::Ended(Err(StreamError::NotFinished));
                        if let PipeState::Streaming(f) = std::mem::replace(state, placeholder) {
                            *state = PipeState::Finishing(f);
                        }
                    }
                }
            },
        }
    }
}

impl Encoded {
    /// The summary, once the reader returned EOF; the pipeline's error when a read
    /// failed; [`StreamError::NotFinished`] before the end.
    pub async fn finish(self) -> Result<EncodeSummary, StreamError> {
        match self.inner {
            Inner::Direct(r) => {
                let delivered = r.delivered();
                r.outcome().map(|mut s| {
                    s.encoded_len = delivered;
                    s
                })
            }
            Inner::Piped {
                state: PipeState::Ended(result),
                ..
            } => result,
            Inner::Piped { .. } => Err(StreamError::NotFinished),
        }
    }
}
