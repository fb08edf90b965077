//! The cache of built or fetched parts, and progress lines for long work.

use std::path::PathBuf;
use std::time::Instant;

/// The cache directory: `$QUORATE_CACHE`, or `~/.cache/quorate`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("QUORATE_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("quorate")
}

/// Prints a progress line to stderr, prefixed with the part's name and the time since `start`.
pub fn progress(part: &str, start: Instant, message: &str) {
    eprintln!(
        "[testbed {part} {:>6.1}s] {message}",
        start.elapsed().as_secs_f64()
    );
}
