//! Synchronous compressors and decompressors over async-compression's codec layer,
//! run on the pipelines' dedicated threads; codec sniffing and level validation.
//!
//! Output is produced in chunks of [`CHUNK`] bytes handed to an `emit` callback, so a
//! pipeline never holds more than one partly filled chunk per stage.

use std::io;
use std::ops::RangeInclusive;

use async_compression::codecs::flate::params::FlateEncoderParams;
use async_compression::codecs::{
    Decode, Encode, GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder,
};
use async_compression::core::util::PartialBuffer;
use async_compression::zstd::CParameter;
use async_compression::Level;
use bytes::Bytes;

use crate::core::model::Codec;

use super::error::StreamError;

/// Size of the buffers that move through the pipelines.
pub const CHUNK: usize = 1 << 20;

/// zstd frame magic (`28 B5 2F FD`).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// gzip member magic.
pub const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The levels a codec accepts, `None` for a codec without levels. zstd stops at 19:
/// levels 20-22 need windows of 32-128 MiB, which would break the memory bound.
pub fn level_range(codec: Codec) -> Option<RangeInclusive<i32>> {
    match codec {
        Codec::Zstd => Some(1..=19),
        Codec::Gzip => Some(1..=9),
        Codec::None => None,
    }
}

/// The level used when the config gives none (zstd 3, gzip 6, as their CLIs).
pub fn default_level(codec: Codec) -> Option<i32> {
    match codec {
        Codec::Zstd => Some(3),
        Codec::Gzip => Some(6),
        Codec::None => None,
    }
}

/// Checks a configured level and returns the effective one (the default when `None`).
/// The config module calls this to reject bad values before any upload.
pub fn validate_level(codec: Codec, level: Option<i32>) -> Result<Option<i32>, StreamError> {
    match (level_range(codec), level) {
        (_, None) => Ok(default_level(codec)),
        (Some(range), Some(l)) if range.contains(&l) => Ok(Some(l)),
        (range, Some(l)) => Err(StreamError::InvalidLevel {
            codec,
            level: l,
            allowed: match range {
                Some(r) => format!("{}..={}", r.start(), r.end()),
                None => "no level: remove it for compression none".to_string(),
            },
        }),
    }
}

/// Most compression threads `threads` may ask for: beyond 8 a single stream's
/// send and upload cannot keep more workers busy, and each zstd worker holds its
/// own context (about 2.5 MiB at level 3, about 90 MiB at level 19).
pub const MAX_THREADS: u32 = 8;

/// Input bytes per zstd worker job.
const ZSTD_JOB_SIZE: u32 = 4 << 20;

/// The number of compression threads when the config gives none: the machine's
/// cores, at most 4, so a backup on a big server does not take every core from
/// the database it protects. Only zstd uses more than one.
pub fn default_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .clamp(1, 4)
}

/// What the first bytes of an object say it is.
pub fn sniff(head: &[u8]) -> Option<Codec> {
    if head.starts_with(&ZSTD_MAGIC) {
        Some(Codec::Zstd)
    } else if head.starts_with(&GZIP_MAGIC) {
        Some(Codec::Gzip)
    } else if head.starts_with(super::send_format::STREAM_MAGIC) {
        Some(Codec::None)
    } else {
        None
    }
}

/// A chunk being filled by a codec.
struct OutChunk {
    buf: Vec<u8>,
    pos: usize,
}

impl OutChunk {
    fn new() -> Self {
        OutChunk {
            buf: vec![0; CHUNK],
            pos: 0,
        }
    }

    /// Hands the chunk to `emit` once it is full (or whenever `force` and non-empty).
    fn ship(&mut self, force: bool, emit: &mut dyn FnMut(Bytes) -> bool) -> bool {
        if self.pos == self.buf.len() || (force && self.pos > 0) {
            let mut full = std::mem::replace(&mut self.buf, vec![0; CHUNK]);
            full.truncate(self.pos);
            self.pos = 0;
            return emit(Bytes::from(full));
        }
        true
    }
}

/// Outcome of feeding a codec: `Stopped` when `emit` returned false (the consumer
/// is gone, so the stage should quietly end).
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// The downstream stage went away.
    Stopped,
}

impl Flow {
    /// `Continue` when a chunk was handed on, `Stopped` when nobody took it.
    fn of(sent: bool) -> Flow {
        if sent {
            Flow::Continue
        } else {
            Flow::Stopped
        }
    }
}

enum EncoderKind {
    Zstd(Box<ZstdEncoder>),
    Gzip(Box<GzipEncoder>),
    None,
}

/// A streaming compressor.
pub struct Compressor {
    kind: EncoderKind,
    out: OutChunk,
}

impl Compressor {
    /// A compressor for `codec` at `level` (already validated) on `threads`
    /// zstd workers (gzip and none ignore it).
    pub fn new(codec: Codec, level: Option<i32>, threads: u32) -> Self {
        let kind = match codec {
            // The content checksum lets `zstd -d` alone detect corruption in a by-hand
            // restore; it costs an xxhash64 of the data. With workers, zstd cuts
            // the input into jobs compressed in parallel into one ordinary frame,
            // so the output needs nothing special to decompress.
            Codec::Zstd => {
                // Even one thread is a worker: zstd then compresses whole jobs
                // while the caller's thread copies the next input in, as the
                // zstd tool's `-T1` does. Compressing on the caller's thread
                // (0 workers) took 25% longer on the upload benchmark.
                let workers = threads.clamp(1, MAX_THREADS);
                EncoderKind::Zstd(Box::new(ZstdEncoder::new_with_params(
                    level.unwrap_or(3),
                    &[
                        CParameter::checksum_flag(true),
                        CParameter::nb_workers(workers),
                        // zstd's default job (4 windows, 8 MiB at level 3)
                        // buffers about 60 MiB more at two workers for no
                        // measured gain in speed or ratio.
                        CParameter::job_size(ZSTD_JOB_SIZE),
                    ],
                )))
            }
            Codec::Gzip => EncoderKind::Gzip(Box::new(GzipEncoder::new(FlateEncoderParams::from(
                Level::Precise(level.unwrap_or(6)),
            )))),
            Codec::None => EncoderKind::None,
        };
        Compressor {
            kind,
            out: OutChunk::new(),
        }
    }

    /// Compresses `input`, emitting every chunk that fills up.
    pub fn write(&mut self, input: Bytes, emit: &mut dyn FnMut(Bytes) -> bool) -> io::Result<Flow> {
        let mut inbuf = PartialBuffer::new(&input[..]);
        loop {
            let mut out = PartialBuffer::new(&mut self.out.buf[..]);
            out.advance(self.out.pos);
            match &mut self.kind {
                EncoderKind::Zstd(e) => e.encode(&mut inbuf, &mut out)?,
                EncoderKind::Gzip(e) => e.encode(&mut inbuf, &mut out)?,
                // Uncompressed data passes through without a copy.
                EncoderKind::None => return Ok(Flow::of(emit(input.clone()))),
            }
            self.out.pos = out.written_len();
            if !self.out.ship(false, emit) {
                return Ok(Flow::Stopped);
            }
            if inbuf.unwritten().is_empty() {
                return Ok(Flow::Continue);
            }
        }
    }

    /// Ends the compressed stream and emits the last chunk.
    pub fn finish(&mut self, emit: &mut dyn FnMut(Bytes) -> bool) -> io::Result<Flow> {
        loop {
            let mut out = PartialBuffer::new(&mut self.out.buf[..]);
            out.advance(self.out.pos);
            let done = match &mut self.kind {
                EncoderKind::Zstd(e) => e.finish(&mut out)?,
                EncoderKind::Gzip(e) => e.finish(&mut out)?,
                EncoderKind::None => true,
            };
            self.out.pos = out.written_len();
            if !self.out.ship(false, emit) {
                return Ok(Flow::Stopped);
            }
            if done {
                break;
            }
        }
        Ok(Flow::of(self.out.ship(true, emit)))
    }
}

enum DecoderKind {
    Zstd(Box<ZstdDecoder>),
    Gzip(Box<GzipDecoder>),
    None,
}

/// A streaming decompressor that accepts any number of concatenated zstd frames
/// (skippable ones included) or gzip members.
pub struct Decompressor {
    kind: DecoderKind,
    out: OutChunk,
    /// The current frame/member ended; the next input byte starts a new one.
    frame_done: bool,
    /// Any input seen at all.
    started: bool,
}

impl Decompressor {
    /// A decompressor for `codec`.
    pub fn new(codec: Codec) -> Self {
        let kind = match codec {
            Codec::Zstd => DecoderKind::Zstd(Box::default()),
            Codec::Gzip => DecoderKind::Gzip(Box::default()),
            Codec::None => DecoderKind::None,
        };
        Decompressor {
            kind,
            out: OutChunk::new(),
            frame_done: false,
            started: false,
        }
    }

    /// Decompresses `input`, emitting full chunks.
    pub fn write(&mut self, input: Bytes, emit: &mut dyn FnMut(Bytes) -> bool) -> io::Result<Flow> {
        if input.is_empty() {
            return Ok(Flow::Continue);
        }
        self.started = true;
        let mut inbuf = PartialBuffer::new(&input[..]);
        loop {
            if self.frame_done {
                if inbuf.unwritten().is_empty() {
                    return Ok(Flow::Continue);
                }
                match &mut self.kind {
                    DecoderKind::Zstd(d) => d.reinit()?,
                    DecoderKind::Gzip(d) => d.reinit()?,
                    DecoderKind::None => {}
                }
                self.frame_done = false;
            }
            let consumed_before = inbuf.written_len();
            let mut out = PartialBuffer::new(&mut self.out.buf[..]);
            out.advance(self.out.pos);
            let done = match &mut self.kind {
                DecoderKind::Zstd(d) => d.decode(&mut inbuf, &mut out)?,
                DecoderKind::Gzip(d) => d.decode(&mut inbuf, &mut out)?,
                DecoderKind::None => return Ok(Flow::of(emit(input.clone()))),
            };
            let produced = out.written_len() - self.out.pos;
            self.out.pos = out.written_len();
            let was_full = self.out.pos == self.out.buf.len();
            if !self.out.ship(false, emit) {
                return Ok(Flow::Stopped);
            }
            if done {
                self.frame_done = true;
                continue;
            }
            if !was_full {
                // Room to spare: the codec wants more input.
                if inbuf.unwritten().is_empty() {
                    return Ok(Flow::Continue);
                }
                if produced == 0 && inbuf.written_len() == consumed_before {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "decoder made no progress",
                    ));
                }
            }
        }
    }

    /// Declares the end of input: emits the last chunk; false when the data stopped
    /// inside a frame (truncation).
    pub fn finish(&mut self, emit: &mut dyn FnMut(Bytes) -> bool) -> Result<Flow, bool> {
        if !matches!(self.kind, DecoderKind::None) && self.started && !self.frame_done {
            return Err(false);
        }
        Ok(Flow::of(self.out.ship(true, emit)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(codec: Codec, data: &[u8], piece: usize) -> Vec<u8> {
        compress_on(codec, data, piece, 1)
    }

    fn compress_on(codec: Codec, data: &[u8], piece: usize, threads: u32) -> Vec<u8> {
        let mut c = Compressor::new(codec, default_level(codec), threads);
        let mut out = Vec::new();
        let mut emit = |b: Bytes| {
            out.extend_from_slice(&b);
            true
        };
        for p in data.chunks(piece) {
            c.write(Bytes::copy_from_slice(p), &mut emit).unwrap();
        }
        c.finish(&mut emit).unwrap();
        out
    }

    fn decompress(codec: Codec, data: &[u8], piece: usize) -> Result<Vec<u8>, String> {
        let mut d = Decompressor::new(codec);
        let mut out = Vec::new();
        let mut emit = |b: Bytes| {
            out.extend_from_slice(&b);
            true
        };
        for p in data.chunks(piece) {
            d.write(Bytes::copy_from_slice(p), &mut emit)
                .map_err(|e| e.to_string())?;
        }
        d.finish(&mut emit).map_err(|_| "truncated".to_string())?;
        Ok(out)
    }

    #[test]
    fn round_trips_across_chunk_boundaries_and_concatenated_frames() {
        let mut data = Vec::new();
        for i in 0..(3 * CHUNK / 8) {
            data.extend_from_slice(&(i as u64 % 1000).to_le_bytes());
        }
        data.extend((0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        for codec in [Codec::Zstd, Codec::Gzip, Codec::None] {
            for piece in [777, CHUNK + 5] {
                let c = compress(codec, &data, piece);
                assert_eq!(decompress(codec, &c, 1000).unwrap(), data, "{codec}");
                let mut two = c.clone();
                two.extend(compress(codec, b"tail", 10));
                let mut want = data.clone();
                want.extend_from_slice(b"tail");
                assert_eq!(decompress(codec, &two, 4096).unwrap(), want, "{codec}");
            }
        }
    }

    #[test]
    fn several_zstd_threads_write_one_ordinary_frame() {
        // Enough input for several of zstd's jobs (a few MiB each at level 3).
        let data: Vec<u8> = (0..24u32 << 20)
            .map(|i| {
                if (i >> 16) % 3 == 0 {
                    (i.wrapping_mul(2_654_435_761) >> 13) as u8
                } else {
                    (i % 97) as u8
                }
            })
            .collect();
        let c = compress_on(Codec::Zstd, &data, CHUNK, 3);
        assert!(c.len() < data.len() / 2, "compressed to {} bytes", c.len());
        assert_eq!(decompress(Codec::Zstd, &c, 65536).unwrap(), data);
        // The zstd tool reads it too (with its content checksum checked).
        let out = std::process::Command::new("zstd")
            .args(["-d", "-q", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                let mut stdin = child.stdin.take().unwrap();
                let feed = c.clone();
                let t = std::thread::spawn(move || stdin.write_all(&feed));
                let out = child.wait_with_output()?;
                t.join().unwrap()?;
                Ok(out)
            });
        let out = out.expect("the zstd tool (integration/setup.sh installs it)");
        assert!(out.status.success());
        assert!(out.stdout == data, "zstd -d gave other bytes");
    }

    #[test]
    fn truncation_is_reported() {
        for codec in [Codec::Zstd, Codec::Gzip] {
            let c = compress(codec, &[5u8; 100_000], 1000);
            assert!(
                decompress(codec, &c[..c.len() - 3], 100).is_err(),
                "{codec}"
            );
        }
    }

    #[test]
    fn levels_are_validated() {
        assert_eq!(validate_level(Codec::Zstd, None).unwrap(), Some(3));
        assert_eq!(validate_level(Codec::Gzip, Some(9)).unwrap(), Some(9));
        assert!(validate_level(Codec::Zstd, Some(22)).is_err());
        assert!(validate_level(Codec::Gzip, Some(0)).is_err());
        let e = validate_level(Codec::None, Some(1)).unwrap_err();
        assert!(e.to_string().contains("compression none"), "{e}");
    }

    #[test]
    fn sniffing_knows_the_three_formats() {
        assert_eq!(sniff(&compress(Codec::Zstd, b"x", 1)), Some(Codec::Zstd));
        assert_eq!(sniff(&compress(Codec::Gzip, b"x", 1)), Some(Codec::Gzip));
        assert_eq!(sniff(b"btrfs-stream\0\x01\0\0\0"), Some(Codec::None));
        assert_eq!(sniff(b"PK\x03\x04"), None);
    }
}
