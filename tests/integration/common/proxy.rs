//! A loopback HTTP proxy in front of the S3 server, for fault injection: it
//! answers the requests a picker chooses with an error status itself and passes
//! the rest through, so the code under test talks to a real store that fails
//! exactly where a test wants. One request per connection (it asks the server
//! to close), which is all the SDK needs.
//!
//! It runs on its own thread and runtime, so tests that run the `subvault`
//! binary and async tests that call the library use it alike. It counts the
//! request body bytes it passes on ([`FaultProxy::sent`]), so a test can tell
//! how much an upload really sent; a picker that answers status 0 makes it
//! drop the connection without any answer (a link that dies mid-part).

use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Chooses the status to answer a request with, given its head and its
/// sequence number (0 for the first request); `None` passes it through.
pub type Picker = Arc<dyn Fn(&str, u32) -> Option<u16> + Send + Sync>;

/// Chooses a whole HTTP response (status line, headers, body) to answer a
/// request with, given its head and sequence number; `None` passes it through.
pub type Responder = Arc<dyn Fn(&str, u32) -> Option<String> + Send + Sync>;

/// Chooses how long to hold a request before passing it on (a slow link,
/// so a test can stop the process mid-upload); `None` passes it at once.
pub type Slow = Arc<dyn Fn(&str) -> Option<std::time::Duration> + Send + Sync>;

/// Request heads (lowercased) seen by a [`FaultProxy::recording`] proxy.
pub type Heads = Arc<Mutex<Vec<String>>>;

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to use as the endpoint.
    pub url: String,
    failed: Arc<AtomicU32>,
    sent: Arc<AtomicU64>,
    // Read only by benches/resume.rs, which shares this harness.
    #[allow(dead_code)]
    received: Arc<AtomicU64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to the test S3 server that fails the requests `fail` picks.
    pub fn start(fail: Picker) -> FaultProxy {
        FaultProxy::responding(Arc::new(move |head, nth| {
            fail(head, nth).map(error_response)
        }))
    }

    /// A proxy that answers the requests `respond` picks with the response it
    /// gives (a lying listing, a wrong size), passing the rest through.
    pub fn responding(respond: Responder) -> FaultProxy {
        FaultProxy::with(respond, None)
    }

    /// A proxy that fails nothing and holds the requests `slow` picks for
    /// the time it gives before passing them on.
    pub fn slowing(slow: Slow) -> FaultProxy {
        FaultProxy::with(Arc::new(|_, _| None), Some(slow))
    }

    fn with(respond: Responder, slow: Option<Slow>) -> FaultProxy {
        let upstream = super::s3_endpoint()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let failed = Arc::new(AtomicU32::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = oneshot::channel();
        let counter = failed.clone();
        let sent_counter = (sent.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(serve(
                listener,
                upstream,
                respond,
                slow,
                counter,
                sent_counter,
                stopped,
            ));
        });
        FaultProxy {
            url,
            failed,
            sent,
            received,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// A proxy that fails nothing and records the heads of the requests `keep` picks.
    pub fn recording(keep: fn(&str) -> bool) -> (FaultProxy, Heads) {
        let heads = Heads::default();
        let seen = heads.clone();
        let proxy = FaultProxy::start(Arc::new(move |head, _| {
            if keep(head) {
                seen.lock().unwrap().push(head.to_ascii_lowercase());
            }
            None
        }));
        (proxy, heads)
    }

    /// Injected failures so far.
    pub fn injected(&self) -> u32 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Request body bytes passed on to the server so far (failed and dropped
    /// requests not counted).
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Request body bytes the client sent to the proxy so far, whatever
    /// became of them (passed on, failed, dropped or still held): what
    /// crossed the link.
    #[allow(dead_code)] // read by benches/resume.rs
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An S3 error response with `status` (503 is `SlowDown`, others `InternalError`).
fn error_response(status: u16) -> String {
    if status == 0 {
        // No answer at all: the proxy drops the connection.
        return String::new();
    }
    let (reason, code) = if status == 503 {
        ("Service Unavailable", "SlowDown")
    } else {
        ("Internal Server Error", "InternalError")
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{xml}",
        xml.len()
    )
}

async fn serve(
    listener: std::net::TcpListener,
    upstream: String,
    fail: Responder,
    slow: Option<Slow>,
    failed: Arc<AtomicU32>,
    sent: (Arc<AtomicU64>, Arc<AtomicU64>),
    mut stop: oneshot::Receiver<()>,
) {
    let listener = TcpListener::from_std(listener).unwrap();
    let seen = Arc::new(AtomicU32::new(0));
    loop {
        let conn = tokio::select! {
            c = listener.accept() => match c {
                Ok((conn, _)) => conn,
                Err(_) => return,
            },
            _ = &mut stop => return,
        };
        let (upstream, fail, slow, failed, sent, seen) = (
            upstream.clone(),
            fail.clone(),
            slow.clone(),
            failed.clone(),
            sent.clone(),
            seen.clone(),
        );
        tokio::spawn(async move {
            let _ = proxy_one(conn, &upstream, fail, slow, failed, sent, seen).await;
        });
    }
}

async fn proxy_one(
    mut conn: TcpStream,
    upstream: &str,
    fail: Responder,
    slow: Option<Slow>,
    failed: Arc<AtomicU32>,
    (sent, received): (Arc<AtomicU64>, Arc<AtomicU64>),
    seen: Arc<AtomicU32>,
) -> io::Result<()> {
    // Read the request head.
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    received.fetch_add(body.len() as u64, Ordering::SeqCst);
    let nth = seen.fetch_add(1, Ordering::SeqCst);
    if let Some(resp) = fail(&head, nth) {
        failed.fetch_add(1, Ordering::SeqCst);
        if resp.is_empty() {
            // Dropped: no answer (the connection closes when `conn` drops).
            return Ok(());
        }
        conn.write_all(resp.as_bytes()).await?;
        return conn.shutdown().await;
    }
    if let Some(wait) = slow.and_then(|s| s(&head)) {
        tokio::time::sleep(wait).await;
    }
    sent.fetch_add(body.len() as u64, Ordering::SeqCst);
    let mut up = TcpStream::connect(upstream).await?;
    // Forward the raw bytes, with `Connection: close` after the request line.
    let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    up.write_all(&buf[..line_end]).await?;
    up.write_all(b"Connection: close\r\n").await?;
    up.write_all(&buf[line_end..head_end]).await?;
    up.write_all(&body).await?;
    tokio::io::copy(&mut up, &mut conn).await?;
    conn.shutdown().await
}
