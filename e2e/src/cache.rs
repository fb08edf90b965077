//! The cache of built or fetched parts, and progress lines for long work.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::process::Child;

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

/// Whether `path` is an executable file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The last `lines` lines of a log file (or why it could not be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Waits for a `go install -v` whose output goes to `log`, printing progress for `part` every
/// 20 s: the packages compiled so far (`-v` names each; `go: ` lines are downloads).
pub fn wait_for_go_install(
    child: &mut Child,
    log: &Path,
    part: &str,
    start: Instant,
) -> std::io::Result<ExitStatus> {
    let mut last_report = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(200));
        if last_report.elapsed() >= Duration::from_secs(20) {
            last_report = Instant::now();
            let compiled = std::fs::read_to_string(log)
                .map(|t| t.lines().filter(|l| !l.starts_with("go: ")).count())
                .unwrap_or(0);
            let message = if compiled == 0 {
                "  downloading modules".to_string()
            } else {
                format!("  {compiled} packages compiled")
            };
            progress(part, start, &message);
        }
    }
}

/// The Go toolchain: `$GO`, `go` on PATH, or /usr/local/go/bin/go, with its version; at least
/// Go 1.`min_minor` (what the module being built says in its go.mod). The error says why not.
pub fn find_go(min_minor: u32) -> Result<(std::path::PathBuf, String), String> {
    use std::path::PathBuf;
    use std::process::Command;
    let candidates: Vec<PathBuf> = match std::env::var_os("GO").filter(|g| !g.is_empty()) {
        Some(go) => vec![PathBuf::from(go)],
        None => vec![PathBuf::from("go"), PathBuf::from("/usr/local/go/bin/go")],
    };
    for go in candidates {
        let Ok(out) = Command::new(&go).args(["env", "GOVERSION"]).output() else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let minor = version
            .strip_prefix("go1.")
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|m| m.parse::<u32>().ok());
        return match minor {
            Some(m) if m >= min_minor => Ok((go, version)),
            _ => Err(format!("{} is {version}", go.display())),
        };
    }
    Err("no `go` on PATH nor /usr/local/go/bin/go".into())
}

/// Opens (creating it if needed) and exclusively locks `path`, blocking until the lock is free;
/// released when the file is closed (also when the process dies). Builds into the cache take it,
/// so that two processes never build one part at once.
pub fn lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    file.lock()?;
    Ok(file)
}
