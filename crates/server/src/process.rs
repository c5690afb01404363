//! Process-wide settings the daemon (and the benchmarks that mirror it) make at start.

/// Turns transparent huge pages off for this process. The allocator (mimalloc) asks for huge
/// pages on its arenas; the kernel then zeroes 2 MiB at each first touch of fresh or purged
/// memory. Measured on W1's apply stage (100k rows in one commit, in process): 31k rows/s with
/// huge pages, 77k without (glibc's allocator: 51k). Where the call is refused (not Linux, or a
/// sandbox), the process runs as before.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!("transparent huge pages stay on: {error}");
    }
}
