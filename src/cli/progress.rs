//! Progress for uploads: indicatif bars on a terminal, periodic log lines otherwise
//! (under systemd the journal gets one line per upload per minute, not a bar).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::remote::ProgressFn;
use crate::runner::execute::Progress;
use crate::units::human_bytes;

/// How often a non-terminal progress line is logged per upload.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Picks bars or log lines depending on whether stderr is a terminal.
pub fn for_stderr() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(Vec::new()),
        })
    } else {
        Box::new(LogLines)
    }
}

struct Bars {
    multi: MultiProgress,
    bars: Mutex<Vec<(String, ProgressBar)>>,
}

impl Progress for Bars {
    fn upload_started(&self, key: &str, description: &str) -> Option<ProgressFn> {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} {bytes} uploaded ({bytes_per_sec}, {elapsed})",
            )
            .expect("valid template"),
        );
        bar.set_message(format!("{} ({description})", short(key)));
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bars
            .lock()
            .expect("bars")
            .push((key.to_string(), bar.clone()));
        Some(Arc::new(move |bytes| bar.set_position(bytes)))
    }

    fn upload_finished(&self, key: &str) {
        let mut bars = self.bars.lock().expect("bars");
        if let Some(i) = bars.iter().position(|(k, _)| k == key) {
            let (_, bar) = bars.remove(i);
            bar.finish_and_clear();
        }
    }
}

struct LogLines;

impl Progress for LogLines {
    fn upload_started(&self, key: &str, _description: &str) -> Option<ProgressFn> {
        let key = short(key).to_string();
        let started = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        Some(Arc::new(move |bytes| {
            let secs = started.elapsed().as_secs();
            let prev = last.load(Ordering::Relaxed);
            if secs >= prev + LOG_EVERY.as_secs()
                && last
                    .compare_exchange(prev, secs, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                tracing::info!("{key}: {} uploaded after {secs} s", human_bytes(bytes));
            }
        }))
    }

    fn upload_finished(&self, _key: &str) {}
}

/// The part of a key before its first metadata suffix, for compact display.
fn short(key: &str) -> &str {
    key.find(".ctim")
        .map(|i| &key[..(i + 30).min(key.len())])
        .unwrap_or(key)
}
