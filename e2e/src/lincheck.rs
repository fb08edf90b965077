//! The linearizability judge: a Go program on porcupine (`github.com/anishathalye/porcupine`, as
//! etcd's robustness tests use it) that checks a history recorded by the kazoo judge's `history`
//! subcommand ([`crate::kazoo::Judge::history`]).
//!
//! The program's sources (`e2e/go/lincheck/`: go.mod, go.sum, main.go) are embedded in this
//! crate. [`ensure_checker`] writes them into a temporary directory under
//! [`crate::cache::cache_dir`]`/lincheck/` and runs `go build` there, once; the binary and its
//! `.complete` stamp are renamed into `lincheck/porcupine-<version>-<sources digest>/`
//! together, so an interrupted build is redone, a complete one is reused, and a change of the
//! sources builds anew. One build at a time: within the process by a mutex, across processes by
//! a lock file.
//!
//! [`check`] runs the checker on a history file and parses its verdict. The model is a register
//! per key with ZooKeeper's versions (`set` bumps the version by one, a versioned `set` succeeds
//! only at the expected version, `get` returns data and version); an operation whose outcome is
//! unknown (connection loss, a timeout) may or may not have taken effect, so it returns at the
//! end of the history with no output, as etcd treats them. Nothing here shares code with the
//! operator.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::cache::{cache_dir, is_executable, log_tail, progress, wait_for_go_install};
use crate::process::Child;
use crate::zookeeper::sha1_hex;

const GO_MOD: &str = include_str!("../go/lincheck/go.mod");
const GO_SUM: &str = include_str!("../go/lincheck/go.sum");
const MAIN_GO: &str = include_str!("../go/lincheck/main.go");

/// The porcupine release the checker is built with (pinned in `e2e/go/lincheck/go.mod`).
pub const PORCUPINE_VERSION: &str = "v1.3.1";

/// The oldest Go that builds the checker (its go.mod says `go 1.22`).
const MIN_GO_MINOR: u32 = 22;

/// How long the checker may spend on one key unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors of building or running the checker. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable Go toolchain.
    #[error(
        "building the linearizability checker needs Go 1.{MIN_GO_MINOR} or newer and the Go \
         module proxy: {0}. Install Go (https://go.dev/doc/install) or set GO=/path/to/go"
    )]
    Go(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// `go build` failed; `log_tail` holds the end of its output.
    #[error("go build of the linearizability checker failed ({status}) after {secs} s\n--- last lines of {} ---\n{log_tail}", log.display())]
    Build {
        status: String,
        secs: u64,
        log: PathBuf,
        log_tail: String,
    },
    /// The checker could not judge the history (bad input, a timeout, output that is not a
    /// verdict): exit status 2 or unparsable output.
    #[error("lincheck {history}: {message}; stderr:\n{stderr}", history = history.display())]
    Check {
        history: PathBuf,
        message: String,
        stderr: String,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// The checker's result for one key.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct KeyVerdict {
    /// Operations checked on the key (reads with an unknown outcome are dropped).
    pub operations: usize,
    /// porcupine's result: `Ok`, `Illegal` or `Unknown` (timed out).
    pub result: String,
    /// Recorded operations on the key by outcome.
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
}

/// Which key is not linearizable, and why.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Failure {
    pub key: String,
    /// The longest linearizable prefix found, the state after it and the operation that cannot
    /// follow.
    pub description: String,
}

/// The checker's verdict on a history.
#[derive(Clone, Debug, Deserialize)]
pub struct Verdict {
    pub linearizable: bool,
    /// Operations recorded (the keys' init lines not counted).
    pub operations: usize,
    /// Operations given to porcupine: all but the reads with an unknown outcome.
    pub checked: usize,
    /// Reads with an unknown outcome (they observed nothing).
    pub dropped_reads: usize,
    /// Writes with an unknown outcome, which return at the end of the history.
    pub unknown_writes: usize,
    pub per_key: BTreeMap<String, KeyVerdict>,
    /// The first key found not linearizable.
    pub failure: Option<Failure>,
    /// porcupine's HTML visualization, when asked for.
    pub visualization: Option<PathBuf>,
    pub seconds: f64,
}

/// How to run the checker; [`Options::default`] is what [`check`] uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Write porcupine's HTML visualization of the history here.
    pub visualize: Option<PathBuf>,
    /// Give up on a key after this long (an error, not a verdict).
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            visualize: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The digest of the embedded sources, so that a change of them builds a new binary.
fn sources_digest() -> String {
    let mut all = String::new();
    for (name, text) in [("go.mod", GO_MOD), ("go.sum", GO_SUM), ("main.go", MAIN_GO)] {
        all.push_str(&format!("{name} {}\n{text}", text.len()));
    }
    sha1_hex(all.as_bytes())[..12].to_string()
}

/// Where the built checker lives: `$QUORATE_CACHE/lincheck/porcupine-<version>-<digest>/`.
pub fn checker_dir() -> PathBuf {
    cache_dir().join("lincheck").join(format!(
        "porcupine-{PORCUPINE_VERSION}-{}",
        sources_digest()
    ))
}

/// The cached checker, if the cache holds a complete build (stamp renamed in with it).
fn cached_checker() -> Option<PathBuf> {
    let dir = checker_dir();
    let binary = dir.join("lincheck");
    (dir.join(".complete").is_file() && is_executable(&binary)).then_some(binary)
}

fn lock(path: &Path) -> Result<File, Error> {
    crate::cache::lock_file(path).map_err(io_err(format!("locking {}", path.display())))
}

/// Returns the checker from the cache, building it first when the cache lacks it (about half a
/// minute on a cold machine, once; progress on stderr). Blocking.
pub fn ensure_checker() -> Result<PathBuf, Error> {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(binary) = cached_checker() {
        return Ok(binary);
    }
    let root = cache_dir().join("lincheck");
    fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
    let start = Instant::now();
    let _lock = lock(&root.join(".build.lock"))?;
    if let Some(binary) = cached_checker() {
        progress("lincheck", start, "built by another process");
        return Ok(binary);
    }
    // Holding the lock, no build runs: temporary directories left are from interrupted ones.
    for entry in fs::read_dir(&root).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".build-tmp-")
        {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    let (go, go_version) = crate::cache::find_go(MIN_GO_MINOR).map_err(Error::Go)?;
    let tmp = root.join(format!(".build-tmp-{}", std::process::id()));
    fs::create_dir_all(tmp.join("src")).map_err(io_err(format!("creating {}", tmp.display())))?;
    let result = build_into(&go, &go_version, &tmp, &root, start);
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

fn build_into(
    go: &Path,
    go_version: &str,
    tmp: &Path,
    root: &Path,
    start: Instant,
) -> Result<PathBuf, Error> {
    let src = tmp.join("src");
    for (name, text) in [("go.mod", GO_MOD), ("go.sum", GO_SUM), ("main.go", MAIN_GO)] {
        fs::write(src.join(name), text)
            .map_err(io_err(format!("writing {}/{name}", src.display())))?;
    }
    let log = root.join("build.log");
    progress(
        "lincheck",
        start,
        &format!(
            "building the linearizability checker (porcupine {PORCUPINE_VERSION}) with \
             {go_version}: go build (once; log: {})",
            log.display()
        ),
    );
    let out = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(io_err(format!("opening {}", log.display())))?;
    let built = tmp.join("lincheck");
    let mut cmd = Command::new(go);
    cmd.args(["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o"])
        .arg(&built)
        .arg(".")
        // Static, no VCS stamping, the toolchain at hand, exactly the pinned go.sum; outside any
        // workspace.
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-buildvcs=false -mod=readonly")
        .env("GOWORK", "off")
        .current_dir(&src)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = Child::spawn("go-build-lincheck", cmd)
        .map_err(io_err(format!("running {}", go.display())))?;
    let status = wait_for_go_install(&mut child, &log, "lincheck", start)
        .map_err(io_err("waiting for go build"))?;
    if !status.success() || !is_executable(&built) {
        return Err(Error::Build {
            status: status.to_string(),
            secs: start.elapsed().as_secs(),
            log_tail: log_tail(&log, 40),
            log,
        });
    }
    fs::remove_dir_all(&src).map_err(io_err(format!("removing {}", src.display())))?;
    let secs = start.elapsed().as_secs();
    fs::write(
        tmp.join(".complete"),
        format!(
            "built lincheck (porcupine {PORCUPINE_VERSION}, sources {}) with {go_version} in {secs}s\n",
            sources_digest()
        ),
    )
    .map_err(io_err(format!("writing {}/.complete", tmp.display())))?;
    let dir = checker_dir();
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
    }
    fs::rename(tmp, &dir).map_err(io_err(format!(
        "moving {} to {}",
        tmp.display(),
        dir.display()
    )))?;
    let binary = dir.join("lincheck");
    progress(
        "lincheck",
        start,
        &format!(
            "linearizability checker built in {secs} s: {}",
            binary.display()
        ),
    );
    Ok(binary)
}

/// Checks a history file (as `zkjudge.py history` writes it) for linearizability, building the
/// checker first if needed. Blocking.
pub fn check(history: &Path) -> Result<Verdict, Error> {
    check_with(history, &Options::default())
}

/// [`check`] with options: porcupine's HTML visualization, the time limit per key.
pub fn check_with(history: &Path, options: &Options) -> Result<Verdict, Error> {
    let checker = ensure_checker()?;
    let mut cmd = Command::new(&checker);
    cmd.arg(format!("-timeout={}ms", options.timeout.as_millis()));
    if let Some(html) = &options.visualize {
        cmd.arg("-visualize").arg(html);
    }
    let out = cmd
        .arg(history)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {}", checker.display())))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let check_err = |message: String| Error::Check {
        history: history.to_path_buf(),
        message,
        stderr: stderr.clone(),
    };
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| check_err(format!("{} and no JSON on stdout: {stdout:?}", out.status)))?;
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| check_err(format!("bad JSON ({e}): {line}")))?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        return Err(check_err(format!("{}: {error}", out.status)));
    }
    let verdict: Verdict = serde_json::from_value(value)
        .map_err(|e| check_err(format!("unexpected JSON ({e}): {line}")))?;
    match (out.status.code(), verdict.linearizable) {
        (Some(0), true) | (Some(1), false) => Ok(verdict),
        _ => Err(check_err(format!(
            "{} does not match the verdict: {line}",
            out.status
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_module_pins_the_porcupine_release_the_cache_is_named_after() {
        assert!(GO_MOD.contains(&format!(
            "github.com/anishathalye/porcupine {PORCUPINE_VERSION}"
        )));
        assert!(GO_SUM.contains(&format!(
            "github.com/anishathalye/porcupine {PORCUPINE_VERSION} h1:"
        )));
        let dir = checker_dir();
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.starts_with("porcupine-v1.3.1-"), "{name}");
    }
}
