//! stderr lines with journald priorities.
//!
//! Under systemd with `StandardError=journal`, systemd sets `JOURNAL_STREAM`
//! to the device and inode of the stream (`<dev>:<ino>`). When stderr is that
//! stream, every line we write to it starts with an sd-daemon priority prefix
//! (`<3>` err, `<4>` warning, `<6>` info, `<7>` debug), which journald strips
//! and records as the line's priority, so `journalctl -u subvault -p err`
//! shows exactly the failures. Anywhere else (a terminal, a pipe, cron) lines
//! are written as they are. Log events get the priority of their level; the
//! lines the commands print themselves go through [`error`], [`warning`] and
//! [`info`].

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use tracing_subscriber::fmt::MakeWriter;

/// A syslog priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// `<3>`: something failed.
    Err = 3,
    /// `<4>`: worth a look, nothing failed.
    Warning = 4,
    /// `<6>`: what happened.
    Info = 6,
    /// `<7>`: details.
    Debug = 7,
}

/// Whether stderr is the journal stream `JOURNAL_STREAM` names.
pub fn stderr_is_journal() -> bool {
    static JOURNAL: OnceLock<bool> = OnceLock::new();
    *JOURNAL.get_or_init(|| {
        let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
            return false;
        };
        // Not fstat(2) on the descriptor: stat of the /proc link is the same
        // inode and needs no unsafe.
        let Ok(md) = std::fs::metadata("/proc/self/fd/2") else {
            return false;
        };
        matches_stream(&value.to_string_lossy(), md.dev(), md.ino())
    })
}

/// Whether `JOURNAL_STREAM`'s `<dev>:<ino>` is this device and inode.
fn matches_stream(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// `text` with each line prefixed by `priority` when stderr is the journal.
fn prefixed(priority: Priority, text: &str, journal: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for line in text.lines() {
        if journal {
            out.push_str(&format!("<{}>", priority as u8));
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Writes `text` to stderr at `priority`, one write per call so lines of
/// parallel sources never interleave mid-line.
pub fn line(priority: Priority, text: &str) {
    let out = prefixed(priority, text, stderr_is_journal());
    let _ = std::io::stderr().lock().write_all(out.as_bytes());
}

/// An error line.
pub fn error(text: &str) {
    line(Priority::Err, text);
}

/// A warning line.
pub fn warning(text: &str) {
    line(Priority::Warning, text);
}

/// An informational line.
pub fn info(text: &str) {
    line(Priority::Info, text);
}

/// The log writer: stderr, each event at its level's priority.
#[derive(Debug, Clone, Copy, Default)]
pub struct StderrWriter;

/// One log event, written when dropped (the formatter writes an event in
/// pieces, then drops the writer).
pub struct EventWriter {
    priority: Priority,
    buf: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            line(self.priority, &String::from_utf8_lossy(&self.buf));
        }
    }
}

impl<'a> MakeWriter<'a> for StderrWriter {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            priority: Priority::Info,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> EventWriter {
        let priority = match *meta.level() {
            tracing::Level::ERROR => Priority::Err,
            tracing::Level::WARN => Priority::Warning,
            tracing::Level::INFO => Priority::Info,
            _ => Priority::Debug,
        };
        EventWriter {
            priority,
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_must_be_stderr_itself() {
        assert!(matches_stream("2049:1234", 2049, 1234));
        assert!(!matches_stream("2049:1234", 2049, 1235));
        assert!(!matches_stream("garbage", 2049, 1234));
    }

    #[test]
    fn every_line_gets_the_prefix_in_the_journal_only() {
        assert_eq!(
            prefixed(Priority::Err, "a\nb", true),
            "<3>a\n<3>b\n".to_string()
        );
        assert_eq!(prefixed(Priority::Warning, "a", false), "a\n");
    }
}
