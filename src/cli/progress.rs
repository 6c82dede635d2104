//! The one implementation of [`Progress`]: indicatif bars on a terminal, plain
//! lines otherwise (under systemd the journal gets one line per upload per
//! minute and one per 10% of a phase, not a bar redrawn ten times a second).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::progress::{Progress, ProgressFn};
use crate::units::human_bytes;

/// How often a non-terminal progress line is logged per upload.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Bars when stderr is a terminal, lines otherwise. `label` starts each phase
/// line (`dedupe: hashing /srv/data`).
pub fn for_stderr(label: &'static str) -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(Bars {
            multi: MultiProgress::new(),
            uploads: Mutex::new(Vec::new()),
            phase: Mutex::new(None),
        })
    } else {
        Box::new(Lines {
            label,
            phase: Mutex::new(PhaseLines::default()),
        })
    }
}

struct Bars {
    multi: MultiProgress,
    uploads: Mutex<Vec<(String, ProgressBar)>>,
    phase: Mutex<Option<ProgressBar>>,
}

impl Progress for Bars {
    fn note(&self, line: &str) {
        self.multi.suspend(|| eprintln!("{line}"));
    }

    fn phase(&self, name: &str, total: u64) {
        let mut current = self.phase.lock().expect("progress lock");
        if let Some(old) = current.take() {
            old.finish_and_clear();
        }
        let bar = if total > 0 {
            ProgressBar::new(total)
        } else {
            ProgressBar::new_spinner()
        };
        let bar = self.multi.add(bar);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:40} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        *current = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = self.phase.lock().expect("progress lock").as_ref() {
            bar.inc(bytes);
        }
    }

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
        self.uploads
            .lock()
            .expect("progress lock")
            .push((key.to_string(), bar.clone()));
        Some(Arc::new(move |bytes| bar.set_position(bytes)))
    }

    fn upload_finished(&self, key: &str) {
        let mut uploads = self.uploads.lock().expect("progress lock");
        if let Some(i) = uploads.iter().position(|(k, _)| k == key) {
            let (_, bar) = uploads.remove(i);
            bar.finish_and_clear();
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.phase.lock().expect("progress lock").take() {
            bar.finish_and_clear();
        }
    }
}

/// Where the current phase stands, for one line per 10%.
#[derive(Default)]
struct PhaseLines {
    done: u64,
    total: u64,
    last_percent: u8,
}

struct Lines {
    label: &'static str,
    phase: Mutex<PhaseLines>,
}

impl Progress for Lines {
    fn note(&self, line: &str) {
        eprintln!("{line}");
    }

    fn phase(&self, name: &str, total: u64) {
        *self.phase.lock().expect("progress lock") = PhaseLines {
            total,
            ..Default::default()
        };
        let size = if total > 0 {
            format!(" ({total} bytes)")
        } else {
            String::new()
        };
        eprintln!("{}: {name}{size}", self.label);
    }

    fn advance(&self, bytes: u64) {
        let mut p = self.phase.lock().expect("progress lock");
        p.done += bytes;
        if let Some(pct) = p.done.saturating_mul(100).checked_div(p.total) {
            let pct = pct.min(100) as u8;
            // One line per 10%, so a journal is not flooded.
            if pct / 10 > p.last_percent / 10 {
                p.last_percent = pct;
                eprintln!("{}: {pct}%", self.label);
            }
        }
    }

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
}

/// The part of a key before its first metadata suffix, for compact display.
fn short(key: &str) -> &str {
    key.find(".ctim")
        .map(|i| &key[..(i + 30).min(key.len())])
        .unwrap_or(key)
}
