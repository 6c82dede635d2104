//! Executing dedupe calls: per-subvolume locking, the FIEMAP "already shared"
//! check, FIDEDUPERANGE, result accounting, and retries of busy subvolumes.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use super::plan::Call;
use super::report::DedupeReport;
use super::FileTable;
use crate::progress::Progress;
use crate::sys::extent::{self, DedupeDest, FILE_DEDUPE_RANGE_DIFFERS, FILE_DEDUPE_RANGE_SAME};
use crate::sys::io_hints;
use crate::sys::lock::{LockError, SubvolLock};

/// Open file descriptors kept at most (closed all at once when exceeded).
const FD_CACHE: usize = 512;

/// What the index needs to learn from the dedupe phase.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (global file, block, new physical address or 0) of every deduped destination block.
    pub moved: Vec<(u32, u32, u64)>,
    /// Files whose dedupe did not complete (busy, differed, failed): still pending.
    pub still_pending: HashSet<u32>,
}

/// First pause between retry rounds; doubled each round up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(500);
/// Longest pause between retry rounds.
const MAX_PAUSE: Duration = Duration::from_secs(10);

/// Retries what a round left busy until nothing is busy or `retry_for` has
/// passed (by `elapsed`), pausing with exponential backoff (`pause` is told
/// how long, and what is still busy). Returns what is still busy and the
/// number of retry rounds run. Kept apart from the ioctls so the rule is
/// tested without a kernel: a send holds a subvolume for as long as its
/// reader takes, and giving up too early or never must both be caught.
fn retry_busy<T>(
    mut busy: Vec<T>,
    retry_for: Duration,
    elapsed: impl Fn() -> Duration,
    mut pause: impl FnMut(Duration, &[T]),
    mut round: impl FnMut(Vec<T>) -> Vec<T>,
) -> (Vec<T>, u32) {
    let mut next = FIRST_PAUSE;
    let mut rounds = 0;
    while !busy.is_empty() && elapsed() < retry_for {
        pause(next.min(retry_for.saturating_sub(elapsed())), &busy);
        next = (next * 2).min(MAX_PAUSE);
        busy = round(busy);
        rounds += 1;
    }
    (busy, rounds)
}

/// Runs calls against the kernel.
pub struct Applier<'a> {
    pub table: &'a FileTable,
    pub block_size: u64,
    pub lock_wait: Duration,
    pub retry_for: Duration,
    pub report: &'a mut DedupeReport,
    pub progress: &'a dyn Progress,
    fds: HashMap<u32, File>,
    outcome: Outcome,
}

fn is_busy(errno: i32) -> bool {
    errno == libc::EAGAIN || errno == libc::ETXTBSY || errno == libc::EBUSY
}

impl<'a> Applier<'a> {
    /// A new applier.
    pub fn new(
        table: &'a FileTable,
        block_size: u64,
        lock_wait: Duration,
        retry_for: Duration,
        report: &'a mut DedupeReport,
        progress: &'a dyn Progress,
    ) -> Self {
        Applier {
            table,
            block_size,
            lock_wait,
            retry_for,
            report,
            progress,
            fds: HashMap::new(),
            outcome: Outcome::default(),
        }
    }

    /// Execute all calls (they come ordered by destination subvolume) and return
    /// what the index must record.
    pub fn run(mut self, calls: Vec<Call>) -> Outcome {
        let total: u64 = calls.iter().map(|c| c.len * c.dests.len() as u64).sum();
        self.progress.phase("deduping", total);
        let started = Instant::now();
        let retry_for = self.retry_for;
        let progress = self.progress;
        let first = self.run_round(calls);
        let (left, rounds) = retry_busy(
            first,
            retry_for,
            || started.elapsed(),
            |pause, busy: &[Call]| {
                let ranges: usize = busy.iter().map(|c| c.dests.len()).sum();
                progress.note(&format!(
                    "{ranges} dedupe ranges busy (a send or another dedupe holds their subvolume); \
                     retrying in {:.1} s",
                    pause.as_secs_f64()
                ));
                std::thread::sleep(pause);
            },
            |calls| self.run_round(calls),
        );
        self.report.retry_rounds = rounds;
        for c in &left {
            for d in &c.dests {
                self.report.deferred_bytes += c.len;
                self.outcome.still_pending.insert(d.0);
            }
        }
        self.outcome
    }

    /// One round; returns calls (or parts of calls) that hit a busy subvolume.
    fn run_round(&mut self, calls: Vec<Call>) -> Vec<Call> {
        let mut retry = Vec::new();
        let mut i = 0;
        while i < calls.len() {
            let order = calls[i].dst_order;
            let mut j = i;
            while j < calls.len() && calls[j].dst_order == order {
                j += 1;
            }
            let tree = &self.table.trees[order as usize];
            match SubvolLock::exclusive(tree.uuid, Some(self.lock_wait)) {
                Ok(_lock) => {
                    for c in &calls[i..j] {
                        if let Some(r) = self.one_call(c) {
                            retry.push(r);
                        }
                    }
                    // Close descriptors before the lock goes, so a waiting send
                    // does not see our open files.
                    self.fds.clear();
                }
                Err(LockError::SubvolBusy { .. }) => retry.extend(calls[i..j].iter().cloned()),
                Err(e) => {
                    self.error(format!("lock for {}: {e}", tree.root.display()));
                    for c in &calls[i..j] {
                        for d in &c.dests {
                            self.outcome.still_pending.insert(d.0);
                        }
                    }
                }
            }
            i = j;
        }
        self.report.busy_ranges += retry.iter().map(|c| c.dests.len() as u64).sum::<u64>();
        retry
    }

    fn error(&mut self, msg: String) {
        self.report.error_count += 1;
        if self.report.errors.len() < 10 {
            tracing::warn!("{msg}");
            self.report.errors.push(msg);
        }
    }

    fn open(&mut self, file: u32) -> io::Result<()> {
        if self.fds.contains_key(&file) {
            return Ok(());
        }
        if self.fds.len() >= FD_CACHE {
            self.fds.clear();
        }
        let path = self.table.path(file);
        // Root may dedupe into files opened read-only (CAP_SYS_ADMIN), which is
        // what makes read-only snapshots work; others need write access.
        let root = nix::unistd::geteuid().is_root();
        let f = if root {
            None
        } else {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOATIME)
                .open(&path)
                .ok()
        };
        let f = match f {
            Some(f) => f,
            None => match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME)
                .open(&path)
            {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(&path)?,
                r => r?,
            },
        };
        self.fds.insert(file, f);
        Ok(())
    }

    /// Physical segments of a file range and whether every extent is flagged
    /// shared, or None if any part is not addressable (hole, compressed, inline).
    fn segments(&self, file: u32, off: u64, len: u64) -> Option<Segments> {
        let f = self.fds.get(&file)?;
        let exts = extent::fiemap(f, off, len).ok()?;
        let mut segs: Vec<(u64, u64)> = Vec::new();
        let mut pos = off;
        let mut shared = true;
        for e in exts {
            shared &= e.flags & extent::FIEMAP_EXTENT_SHARED != 0;
            if !e.addressable() || e.logical > pos {
                return None;
            }
            let skip = pos - e.logical;
            if skip >= e.length {
                continue;
            }
            let take = (e.length - skip).min(off + len - pos);
            let p = e.physical + skip;
            match segs.last_mut() {
                Some(last) if last.0 + last.1 == p => last.1 += take,
                _ => segs.push((p, take)),
            }
            pos += take;
            if pos >= off + len {
                break;
            }
        }
        (pos >= off + len).then_some(Segments {
            physical: segs,
            all_shared: shared,
        })
    }

    /// Run one call; returns the part to retry when the kernel said "busy".
    fn one_call(&mut self, c: &Call) -> Option<Call> {
        if !self.open_source(c) {
            return None;
        }
        let src_segs = self.segments(c.src_file, c.src_offset, c.len);
        let dests = self.dests_to_dedupe(c, src_segs.as_ref());
        if dests.is_empty() {
            return None;
        }
        let busy = match self.fideduperange(c, &dests) {
            Err(e) if e.raw_os_error().is_some_and(is_busy) => dests,
            Err(e) => {
                self.error(format!(
                    "FIDEDUPERANGE {} @{} len {}: {e}",
                    self.table.path(c.src_file).display(),
                    c.src_offset,
                    c.len
                ));
                dests.iter().for_each(|d| {
                    self.outcome.still_pending.insert(d.0);
                });
                Vec::new()
            }
            Ok(raw) => self.account_results(c, &dests, &raw, single_start(src_segs.as_ref())),
        };
        (!busy.is_empty()).then(|| Call {
            dests: busy,
            ..c.clone()
        })
    }

    /// Opens the call's source; when that fails every destination stays pending.
    fn open_source(&mut self, c: &Call) -> bool {
        if let Err(e) = self.open(c.src_file) {
            self.error(format!(
                "open {}: {e}",
                self.table.path(c.src_file).display()
            ));
            c.dests.iter().for_each(|d| {
                self.outcome.still_pending.insert(d.0);
            });
            return false;
        }
        true
    }

    /// The call's destinations that could be opened and do not already share the
    /// source's bytes (`src_segs`); those found shared count as done.
    fn dests_to_dedupe(&mut self, c: &Call, src_segs: Option<&Segments>) -> Vec<(u32, u64, u32)> {
        let mut dests = Vec::with_capacity(c.dests.len());
        for d in &c.dests {
            if let Err(e) = self.open(d.0) {
                self.error(format!("open {}: {e}", self.table.path(d.0).display()));
                self.outcome.still_pending.insert(d.0);
                continue;
            }
            // Already shared: the destination's extents are flagged shared and map
            // to the very same physical bytes as the source's.
            let dst = self.segments(d.0, d.1, c.len);
            if let (Some(s), Some(ds)) = (src_segs, &dst) {
                if ds.all_shared && s.physical == ds.physical {
                    self.report.bytes_found_shared_at_dedupe += c.len;
                    self.progress.advance(c.len);
                    continue;
                }
            }
            dests.push(*d);
        }
        dests
    }

    /// One FIDEDUPERANGE from the call's source to `dests` (all open); returns the
    /// kernel's result for each destination.
    fn fideduperange(
        &mut self,
        c: &Call,
        dests: &[(u32, u64, u32)],
    ) -> io::Result<Vec<DedupeDest>> {
        let mut raw: Vec<DedupeDest> = dests
            .iter()
            .map(|d| DedupeDest {
                fd: self.fds[&d.0].as_raw_fd(),
                offset: d.1,
                bytes_deduped: 0,
                status: 0,
            })
            .collect();
        // The kernel compares the ranges page by page with synchronous reads and
        // no readahead of its own; starting large async reads of both first
        // makes the compare run from the page cache (12x faster cold, see
        // io_hints::READAHEAD_STEP).
        io_hints::readahead(&self.fds[&c.src_file], c.src_offset, c.len);
        for d in dests {
            io_hints::readahead(&self.fds[&d.0], d.1, c.len);
        }
        self.report.ioctl_calls += 1;
        let res = extent::fideduperange(&self.fds[&c.src_file], c.src_offset, c.len, &mut raw);
        self.progress.advance(c.len * dests.len() as u64);
        res.map(|()| raw)
    }

    /// Accounts the kernel's result for each destination; returns the busy ones.
    /// `src_phys` is the source's physical address when it is one segment, else 0.
    fn account_results(
        &mut self,
        c: &Call,
        dests: &[(u32, u64, u32)],
        raw: &[DedupeDest],
        src_phys: u64,
    ) -> Vec<(u32, u64, u32)> {
        let mut busy = Vec::new();
        for (d, r) in dests.iter().zip(raw) {
            match r.status {
                FILE_DEDUPE_RANGE_SAME => self.deduped(c, d, r.bytes_deduped, src_phys),
                FILE_DEDUPE_RANGE_DIFFERS => {
                    self.report.differs_ranges += 1;
                    self.report.differs_bytes += c.len;
                    self.outcome.still_pending.insert(d.0);
                }
                s if s < 0 && is_busy(-s) => busy.push(*d),
                s => {
                    self.error(format!(
                        "FIDEDUPERANGE {} @{} -> {} @{} len {}: {}",
                        self.table.path(c.src_file).display(),
                        c.src_offset,
                        self.table.path(d.0).display(),
                        d.1,
                        c.len,
                        io::Error::from_raw_os_error(-s)
                    ));
                    self.outcome.still_pending.insert(d.0);
                }
            }
        }
        busy
    }

    /// A destination that now shares the source's bytes: counts them and records
    /// the new physical address of each of its blocks (0 when unknown); a
    /// partial dedupe leaves the file pending.
    fn deduped(&mut self, c: &Call, d: &(u32, u64, u32), bytes_deduped: u64, src_phys: u64) {
        self.report.bytes_deduped += bytes_deduped;
        let first = (d.1 / self.block_size) as u32;
        for k in 0..d.2 {
            let p = if src_phys != 0 {
                src_phys + k as u64 * self.block_size
            } else {
                0
            };
            self.outcome.moved.push((d.0, first + k, p));
        }
        if bytes_deduped < c.len {
            self.outcome.still_pending.insert(d.0);
        }
    }
}

/// Where a file range lies on disk.
struct Segments {
    /// (physical address, length) of each contiguous run, in file order.
    physical: Vec<(u64, u64)>,
    /// Every extent of the range is flagged shared.
    all_shared: bool,
}

/// The physical address of a range that is one contiguous segment, else 0.
fn single_start(segs: Option<&Segments>) -> u64 {
    segs.filter(|s| s.physical.len() == 1)
        .map(|s| s.physical[0].0)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A fake clock the pauses advance, and a round that frees one item per call
    /// once `busy_for` has passed.
    fn simulate(
        items: u32,
        busy_for: Duration,
        retry_for: Duration,
    ) -> (Vec<u32>, u32, Vec<Duration>) {
        let now = Cell::new(Duration::ZERO);
        let mut pauses = Vec::new();
        let (left, rounds) = retry_busy(
            (0..items).collect(),
            retry_for,
            || now.get(),
            |p, busy: &[u32]| {
                assert!(!busy.is_empty(), "a pause with nothing busy");
                pauses.push(p);
                now.set(now.get() + p);
            },
            |mut busy| {
                if now.get() >= busy_for {
                    busy.pop();
                }
                busy
            },
        );
        (left, rounds, pauses)
    }

    #[test]
    fn busy_ranges_are_retried_until_the_holder_lets_go() {
        let (left, rounds, pauses) = simulate(2, Duration::from_secs(3), Duration::from_secs(60));
        assert!(left.is_empty());
        // 0.5 + 1 + 2 = 3.5 s: free one in round 3, the other in round 4.
        assert_eq!(rounds, 4);
        assert_eq!(
            pauses,
            [500, 1000, 2000, 4000].map(Duration::from_millis).to_vec()
        );
    }

    #[test]
    fn retries_stop_at_the_deadline_and_pauses_are_capped() {
        let (left, rounds, pauses) =
            simulate(1, Duration::from_secs(3600), Duration::from_secs(45));
        assert_eq!(left, vec![0], "still busy: deferred to the next pass");
        assert!(pauses.iter().all(|p| *p <= MAX_PAUSE));
        let total: Duration = pauses.iter().sum();
        assert_eq!(
            total,
            Duration::from_secs(45),
            "the last pause ends at the deadline"
        );
        assert_eq!(rounds as usize, pauses.len());
    }

    #[test]
    fn nothing_busy_means_no_retry_round() {
        let (left, rounds, pauses) = simulate(0, Duration::ZERO, Duration::from_secs(60));
        assert!(left.is_empty());
        assert_eq!((rounds, pauses.len()), (0, 0));
        let (_, rounds, _) = simulate(3, Duration::ZERO, Duration::ZERO);
        assert_eq!(rounds, 0, "retry_for 0 never retries");
    }
}
