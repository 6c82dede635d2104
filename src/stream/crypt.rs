//! age encryption and decryption as pipeline stages, each on its own thread so
//! that encrypting overlaps compressing (and decrypting overlaps decompressing).
//!
//! The object of an encrypted remote is `age(compressed stream + keyed
//! trailer)`: the standard age format (x25519 recipients, 64 KiB
//! ChaCha20-Poly1305 chunks), so `age -d -i KEYFILE OBJECT | zstd -d` reads
//! it. age authenticates the ciphertext under a file key, but anyone holding
//! the recipient can make a valid age file: what authenticates an object as
//! ours is the body MAC in its keyed trailer ([`Seal`], [`Unseal`],
//! `core::auth`).

use std::io::{self, BufRead, Read, Write};
use std::sync::Arc;

use age::x25519::{Identity, Recipient};
use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::core::auth::AuthKey;

use super::channel::Msg;
use super::codec::CHUNK;
use super::error::StreamError;

/// How an encode encrypts and authenticates its object.
#[derive(Clone)]
pub struct Seal {
    /// Who the object is encrypted to.
    pub recipients: Vec<Recipient>,
    /// The remote's authentication key (the body MAC in the trailer).
    pub auth: Arc<AuthKey>,
    /// The object's name as the body MAC covers it: the key after the prefix,
    /// without its `.auth` suffix (`core::auth::mac_name`).
    pub name: String,
}

/// How a decode decrypts and authenticates an object.
#[derive(Clone)]
pub struct Unseal {
    /// What may decrypt it; `None` when the object reaches the decoder
    /// already decrypted by [`decrypt`] (so that commands such as
    /// `restore_pipe_through` can run between decryption and decoding): the
    /// keyed trailer and its body MAC are then still required and checked.
    pub identities: Option<Arc<Vec<Identity>>>,
    /// The remote's authentication key (checks the body MAC).
    pub auth: Arc<AuthKey>,
    /// The object's name as the body MAC covers it (see [`Seal::name`]).
    pub name: String,
    /// The key file the identities come from (named in errors).
    pub key_file: String,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("recipients", &self.recipients)
            .field("name", &self.name)
            .finish()
    }
}

impl std::fmt::Debug for Unseal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unseal")
            .field("identities", &self.identities.as_ref().map(|i| i.len()))
            .field("name", &self.name)
            .finish()
    }
}

/// A `Write` that hands what it is given to a channel in [`CHUNK`]-sized pieces.
struct ChannelWriter<S> {
    out: mpsc::Sender<Msg<S>>,
    buf: BytesMut,
}

impl<S> ChannelWriter<S> {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, BytesMut::with_capacity(CHUNK)).freeze();
        self.out
            .blocking_send(Msg::Data(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader stopped"))
    }
}

impl<S> Write for ChannelWriter<S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encrypts everything that comes down `rx` to `recipients` and passes the
/// ciphertext on, then the `End` it got. Errors go to the returned result; a
/// channel closed without `End` (an earlier stage failed) ends it quietly.
pub(super) fn encrypt_stage<S>(
    mut rx: mpsc::Receiver<Msg<S>>,
    recipients: &[Recipient],
    out: mpsc::Sender<Msg<S>>,
) -> Result<(), StreamError> {
    let fail = |e: String| StreamError::Encrypt(e);
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| fail(e.to_string()))?;
    let sink = ChannelWriter {
        out: out.clone(),
        buf: BytesMut::with_capacity(CHUNK),
    };
    let mut w = match encryptor.wrap_output(sink) {
        Ok(w) => w,
        Err(_) => return Ok(()), // the reader is gone
    };
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Data(b) => {
                if w.write_all(&b).is_err() {
                    return Ok(());
                }
            }
            Msg::End(summary) => {
                let mut sink = match w.finish() {
                    Ok(s) => s,
                    Err(_) => return Ok(()),
                };
                if sink.send_buf().is_err() {
                    return Ok(());
                }
                let _ = out.blocking_send(Msg::End(summary));
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A `BufRead` over a channel of chunks: EOF at `End`; a channel closed
/// without `End` is an error (the stage before recorded why).
struct ChannelBufReader {
    rx: mpsc::Receiver<Msg<()>>,
    cur: Bytes,
    ended: bool,
    /// Bytes handed out, for error messages.
    pos: u64,
}

impl Read for ChannelBufReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ChannelBufReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.cur.is_empty() && !self.ended {
            match self.rx.blocking_recv() {
                Some(Msg::Data(b)) => self.cur = b,
                Some(Msg::End(())) => self.ended = true,
                None => return Err(io::Error::other(UpstreamFailed)),
            }
        }
        Ok(&self.cur)
    }

    fn consume(&mut self, amt: usize) {
        self.cur.advance(amt);
        self.pos += amt as u64;
    }
}

/// The marker error of a [`ChannelBufReader`] whose upstream failed.
#[derive(Debug)]
struct UpstreamFailed;

impl std::fmt::Display for UpstreamFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream stage failed")
    }
}

impl std::error::Error for UpstreamFailed {}

fn upstream_failed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<UpstreamFailed>())
}

/// Decrypts the age object coming down `rx` with `identities` and passes the
/// plaintext on in [`CHUNK`]-sized pieces, then `End`. Every 64 KiB chunk is
/// authenticated (by age's file key) before it is passed on, and a truncated
/// file fails at its end.
pub(super) fn decrypt_stage(
    rx: mpsc::Receiver<Msg<()>>,
    identities: &[Identity],
    key_file: &str,
    out: &mpsc::Sender<Msg<()>>,
) -> Result<(), StreamError> {
    let mut input = ChannelBufReader {
        rx,
        cur: Bytes::new(),
        ended: false,
        pos: 0,
    };
    // An empty object is not an age file; say so plainly.
    match input.fill_buf() {
        Ok([]) => return Err(StreamError::EmptyObject),
        Ok(_) => {}
        Err(e) if upstream_failed(&e) => return Ok(()),
        Err(e) => return Err(StreamError::Decrypt(e.to_string())),
    }
    let decryptor = match age::Decryptor::new_buffered(&mut input) {
        Ok(d) => d,
        Err(age::DecryptError::Io(e)) if upstream_failed(&e) => return Ok(()),
        Err(e) => return Err(header_error(e)),
    };
    let mut reader = match decryptor.decrypt(identities.iter().map(|i| i as &dyn age::Identity)) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => {
            return Err(StreamError::NotOurRecipient {
                key_file: key_file.to_string(),
            })
        }
        Err(age::DecryptError::Io(e)) if upstream_failed(&e) => return Ok(()),
        Err(e) => return Err(header_error(e)),
    };
    let mut plain = 0u64;
    loop {
        let mut buf = BytesMut::zeroed(CHUNK);
        let mut filled = 0;
        while filled < CHUNK {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if upstream_failed(&e) => return Ok(()),
                Err(e) => {
                    return Err(StreamError::Decrypt(format!(
                        "the encrypted data does not verify after {} plaintext bytes ({e}): the object is corrupt, truncated or was altered",
                        plain + filled as u64
                    )))
                }
            }
        }
        if filled > 0 {
            buf.truncate(filled);
            plain += filled as u64;
            if out.blocking_send(Msg::Data(buf.freeze())).is_err() {
                return Ok(());
            }
        }
        if filled < CHUNK {
            let _ = out.blocking_send(Msg::End(()));
            return Ok(());
        }
    }
}

/// The plaintext of an age-encrypted object, as an `AsyncRead` that fails its
/// final read (instead of returning EOF) when the object does not decrypt to
/// its end. Decrypting on a thread of its own, like [`decode_with`]'s stage.
/// Only for readers that must transform the plaintext before decoding it;
/// decode it with an [`Unseal`] whose `identities` is `None`, so the body MAC
/// is still checked.
///
/// [`decode_with`]: super::decode_with
pub fn decrypt(
    obj: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    identities: Arc<Vec<Identity>>,
    key_file: String,
) -> Decrypted {
    let slot = Arc::new(super::error::ErrorSlot::default());
    let (to_dec, dec_rx) = mpsc::channel(super::channel::QUEUE);
    let (out_tx, out_rx) = mpsc::channel(super::channel::QUEUE);
    let s = slot.clone();
    tokio::spawn(async move {
        let outs = [to_dec];
        if super::channel::pump(obj, &outs, &s, |e| StreamError::ObjectRead(Arc::new(e))).await {
            super::channel::send_end(&outs).await;
        }
    });
    let s = slot.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = decrypt_stage(dec_rx, &identities, &key_file, &out_tx) {
            s.set(e);
        }
    });
    Decrypted {
        reader: super::channel::ChannelReader::new(out_rx, slot, "the decryptor"),
    }
}

/// See [`decrypt`].
pub struct Decrypted {
    reader: super::channel::ChannelReader<()>,
}

impl tokio::io::AsyncRead for Decrypted {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        self.get_mut().reader.poll_read(cx, buf)
    }
}

fn header_error(e: age::DecryptError) -> StreamError {
    match e {
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
            StreamError::Decrypt(
                "the object is not an age-encrypted file (its remote is encrypted: was it written without encryption, or by someone else?)"
                    .into(),
            )
        }
        other => StreamError::Decrypt(format!("cannot decrypt the object's header: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Codec;
    use crate::stream::send_format::synthetic;
    use crate::stream::send_format::CMD_HEADER_LEN;
    use crate::stream::trailer::{encode_trailer, Record};
    use crate::stream::{decode_with, encode, DecodeOptions, DecodeSummary, EncodeOptions};
    use sha2::{Digest, Sha256};
    use tokio::io::AsyncReadExt;

    const NAME: &str = "data.ctim2026-12-03T10:00:00+01:00.ctid7.uuid11111111-2222-3333-4444-555555555555.sndp00000000-0000-0000-0000-000000000000.prnt99999999-8888-7777-6666-555555555555.mdvn1.seqn0.cmprzstd";
    const SECRET: &[u8] = b"the plaintext nobody may read";

    struct Keys {
        id: Identity,
        auth: Arc<AuthKey>,
    }

    fn keys() -> Keys {
        Keys {
            id: Identity::generate(),
            auth: Arc::new(AuthKey::from_bytes([5; 32])),
        }
    }

    fn seal(k: &Keys, name: &str) -> Seal {
        Seal {
            recipients: vec![k.id.to_public()],
            auth: k.auth.clone(),
            name: name.into(),
        }
    }

    fn unseal(k: &Keys, name: &str) -> Unseal {
        Unseal {
            identities: Some(Arc::new(vec![k.id.clone()])),
            auth: k.auth.clone(),
            name: name.into(),
            key_file: "/k/main.key".into(),
        }
    }

    /// A send stream of a few MiB: some text holding [`SECRET`], some noise.
    fn raw() -> Vec<u8> {
        let mut text = Vec::new();
        while text.len() < 3 << 20 {
            text.extend_from_slice(SECRET);
            text.extend_from_slice(b" and some words around it\n");
        }
        let noise: Vec<u8> = (0..1_500_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        synthetic::stream(&[&text, &noise, b"tail"])
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    async fn encoded(raw: Vec<u8>, codec: Codec, seal: Option<Seal>, pipe: bool) -> Vec<u8> {
        let mut o = EncodeOptions::new(codec);
        o.seal = seal;
        if pipe {
            o.pipe_through = vec![vec!["cat".to_string()]];
        }
        let mut enc = encode(std::io::Cursor::new(raw), o).unwrap();
        let mut obj = Vec::new();
        enc.read_to_end(&mut obj).await.unwrap();
        let s = enc.finish().await.unwrap();
        assert_eq!(s.encoded_len, obj.len() as u64);
        obj
    }

    /// The bytes delivered, and how it ended.
    async fn decoded(
        obj: Vec<u8>,
        opts: DecodeOptions,
    ) -> (Vec<u8>, Result<DecodeSummary, StreamError>) {
        let mut dec = decode_with(std::io::Cursor::new(obj), opts);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 100_000];
        loop {
            match dec.read(&mut buf).await {
                Ok(0) => return (out, dec.finish().await),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    let e = StreamError::from_io(&e).cloned().unwrap();
                    return (out, Err(e));
                }
            }
        }
    }

    fn opts(codec: Option<Codec>, unseal: Option<Unseal>) -> DecodeOptions {
        let mut o = DecodeOptions::new(codec);
        o.unseal = unseal;
        o
    }

    #[test]
    fn sealed_objects_round_trip_in_every_codec_and_through_pipe_through() {
        let rt = runtime();
        let k = keys();
        let raw = raw();
        for (codec, pipe) in [
            (Codec::Zstd, false),
            (Codec::Gzip, false),
            (Codec::None, false),
            (Codec::Zstd, true),
        ] {
            let obj = rt.block_on(encoded(raw.clone(), codec, Some(seal(&k, NAME)), pipe));
            assert!(obj.starts_with(b"age-encryption.org/v1\n"), "{codec}");
            assert!(
                !obj.windows(SECRET.len()).any(|w| w == SECRET),
                "{codec}: plaintext in the object"
            );
            let (out, end) = rt.block_on(decoded(obj, opts(Some(codec), Some(unseal(&k, NAME)))));
            let s = end.unwrap_or_else(|e| panic!("{codec} pipe {pipe}: {e}"));
            assert!(out == raw, "{codec}");
            assert!(s.authenticated && s.verified, "{codec}");
            assert!(s.trailer.unwrap().mac.is_some());
        }
    }

    /// Decodes `obj` expecting `want`; the end command (the last
    /// CMD_HEADER_LEN bytes of the raw stream) must never have been delivered.
    fn refused(rt: &tokio::runtime::Runtime, obj: Vec<u8>, o: DecodeOptions, want: &str) {
        let raw_len = raw().len();
        let (out, end) = rt.block_on(decoded(obj, o));
        let e = end.expect_err("must be refused").to_string();
        assert!(e.contains(want), "{want:?} not in {e:?}");
        assert!(
            out.len() <= raw_len - CMD_HEADER_LEN,
            "the end was released"
        );
    }

    #[test]
    fn a_body_under_another_name_or_auth_key_is_refused_before_its_end() {
        let rt = runtime();
        let k = keys();
        let obj = rt.block_on(encoded(raw(), Codec::Zstd, Some(seal(&k, NAME)), false));
        // Swapped: the same body read as the object of another key.
        let other_name = NAME.replace("ctid7", "ctid8");
        refused(
            &rt,
            obj.clone(),
            opts(Some(Codec::Zstd), Some(unseal(&k, &other_name))),
            "body MAC does not match",
        );
        // Read with another auth key.
        let mut wrong = unseal(&k, NAME);
        wrong.auth = Arc::new(AuthKey::from_bytes([6; 32]));
        refused(
            &rt,
            obj.clone(),
            opts(Some(Codec::Zstd), Some(wrong)),
            "body MAC does not match",
        );
        // Another identity cannot decrypt at all.
        let mut other = unseal(&k, NAME);
        other.identities = Some(Arc::new(vec![Identity::generate()]));
        refused(
            &rt,
            obj,
            opts(Some(Codec::Zstd), Some(other)),
            "not encrypted to the identity in /k/main.key",
        );
    }

    /// What a bucket writer holding only the recipient can make: any stream,
    /// compressed, with a trailer of its own, encrypted to the recipient.
    fn forged(k: &Keys, raw: &[u8], mac: Option<[u8; 32]>) -> Vec<u8> {
        let mut comp = zstd_compress(raw);
        let record = Record {
            raw_len: raw.len() as u64,
            raw_sha256: Sha256::digest(raw).into(),
            data_len: comp.len() as u64,
            data_crc32c: {
                let mut d = crate::stream::trailer::data_digest();
                d.update(&comp);
                d.finalize() as u32
            },
            mac,
        };
        comp.extend(encode_trailer(Codec::Zstd, &record));
        age::encrypt(&k.id.to_public(), &comp).unwrap()
    }

    /// zstd of `raw` as subvault compresses it, without subvault's trailer.
    fn zstd_compress(raw: &[u8]) -> Vec<u8> {
        let obj = runtime().block_on(encoded(raw.to_vec(), Codec::Zstd, None, false));
        obj[..obj.len() - crate::stream::trailer::trailer_len(Codec::Zstd)].to_vec()
    }

    #[test]
    fn forged_bodies_with_unkeyed_or_wrongly_keyed_trailers_are_refused() {
        let rt = runtime();
        let k = keys();
        let raw = raw();
        let o = || opts(Some(Codec::Zstd), Some(unseal(&k, NAME)));
        // Unkeyed (version 1) trailer, SHA-256 recomputed: nothing authenticates it.
        refused(&rt, forged(&k, &raw, None), o(), "no keyed trailer");
        // Keyed trailer with a MAC under a guessed key.
        let guess = AuthKey::from_bytes([1; 32]).body_mac(
            NAME,
            raw.len() as u64,
            &Sha256::digest(&raw).into(),
        );
        refused(
            &rt,
            forged(&k, &raw, Some(guess)),
            o(),
            "body MAC does not match",
        );
        // The genuine MAC of another content.
        let genuine_other = k.auth.body_mac(NAME, 1, &[0; 32]);
        refused(
            &rt,
            forged(&k, &raw, Some(genuine_other)),
            o(),
            "body MAC does not match",
        );
        // The right MAC is accepted (so the refusals above are about the MAC).
        let right = k
            .auth
            .body_mac(NAME, raw.len() as u64, &Sha256::digest(&raw).into());
        let (out, end) = rt.block_on(decoded(forged(&k, &raw, Some(right)), o()));
        assert!(end.is_ok() && out == raw);
    }

    #[test]
    fn decrypted_first_then_decoded_still_checks_the_body_mac() {
        let rt = runtime();
        let k = keys();
        let raw = raw();
        let obj = rt.block_on(encoded(
            raw.clone(),
            Codec::Zstd,
            Some(seal(&k, NAME)),
            false,
        ));
        let verify_only = |name: &str| {
            let mut u = unseal(&k, name);
            u.identities = None;
            opts(Some(Codec::Zstd), Some(u))
        };
        let plain = |obj: Vec<u8>| {
            rt.block_on(async {
                let mut d = decrypt(
                    std::io::Cursor::new(obj),
                    Arc::new(vec![k.id.clone()]),
                    "/k/main.key".into(),
                );
                let mut out = Vec::new();
                d.read_to_end(&mut out).await.map(|_| out)
            })
        };
        let p = plain(obj.clone()).unwrap();
        assert!(!p.starts_with(b"age-encryption.org/v1"));
        let (out, end) = rt.block_on(decoded(p.clone(), verify_only(NAME)));
        assert!(end.unwrap().authenticated && out == raw);
        // The MAC is still checked: under another name it is refused.
        refused(
            &rt,
            p,
            verify_only(&NAME.replace("ctid7", "ctid8")),
            "body MAC does not match",
        );
        // A forged body with an unkeyed trailer, decrypted first, is refused too.
        let f = plain(forged(&k, &raw, None)).unwrap();
        refused(&rt, f, verify_only(NAME), "no keyed trailer");
        // A truncated ciphertext fails the decryptor's final read.
        let e = plain(obj[..obj.len() - 10].to_vec()).unwrap_err();
        let e = StreamError::from_io(&e).cloned().unwrap().to_string();
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn plain_truncated_and_altered_ciphertexts_are_refused() {
        let rt = runtime();
        let k = keys();
        let o = || opts(Some(Codec::Zstd), Some(unseal(&k, NAME)));
        let plain = rt.block_on(encoded(raw(), Codec::Zstd, None, false));
        refused(&rt, plain, o(), "not an age-encrypted file");
        let obj = rt.block_on(encoded(raw(), Codec::Zstd, Some(seal(&k, NAME)), false));
        refused(&rt, obj[..obj.len() - 20].to_vec(), o(), "does not verify");
        let mut flipped = obj.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        refused(&rt, flipped, o(), "does not verify");
        let (_, end) = rt.block_on(decoded(Vec::new(), o()));
        assert!(matches!(end, Err(StreamError::EmptyObject)));
    }
}
