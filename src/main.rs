fn main() {
    keep_freed_buffers();
    std::process::exit(subvault::cli::main());
}

/// The stream pipelines allocate and free a 1 MiB buffer per chunk on several
/// threads. glibc serves such sizes with fresh mmaps or trims them back to the
/// kernel once freed, so every chunk paid for page faults and zeroing of new
/// pages (about 8% of a restore's CPU in `perf`). Keeping freed memory for
/// reuse costs nothing in peak memory: the pipelines bound how many chunks
/// exist at once.
fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}
