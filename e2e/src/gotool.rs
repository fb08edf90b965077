//! Go commands built from the Go module proxy into the cache: `go install <package>@<version>`
//! with `GOBIN` set to a temporary directory under [`crate::cache::cache_dir`]`/<name>/`, the
//! binary checked, moved to `<name>/<version>/<name>`, and the `.complete` stamp written last,
//! so an interrupted build is redone and a complete one is reused. One build at a time: within
//! the process by a mutex, across processes by a lock file. An environment variable may name an
//! existing binary to use instead.
//!
//! helm ([`crate::helm`]) and promtool ([`crate::promtool`]) are built this way.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::cache::{cache_dir, is_executable, log_tail, progress, wait_for_go_install};
use crate::process::Child;

/// One Go command the testbed builds.
#[derive(Clone, Debug)]
pub struct GoTool {
    /// The binary's name, its cache directory and its progress label (`helm`, `promtool`).
    pub name: &'static str,
    /// The package `go install` builds (`helm.sh/helm/v3/cmd/helm`).
    pub package: &'static str,
    /// The module version (`v3.21.4`).
    pub version: &'static str,
    /// The oldest Go 1.x minor the module's go.mod accepts.
    pub min_go_minor: u32,
    /// `-ldflags` of the build.
    pub ldflags: String,
    /// The environment variable that names an existing binary instead (`QUORATE_HELM`).
    pub env_override: &'static str,
}

/// Errors of building or finding a Go command. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable Go toolchain.
    #[error(
        "building {name} {version} needs Go 1.{min_go_minor} or newer and the Go module proxy: \
         {reason}. Install Go (https://go.dev/doc/install) or set GO=/path/to/go; or set \
         {env_override} to an existing {name} binary"
    )]
    Go {
        name: &'static str,
        version: &'static str,
        min_go_minor: u32,
        env_override: &'static str,
        reason: String,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// `go install` failed; `log_tail` holds the end of its output.
    #[error("go install {target} failed ({status}) after {secs} s\n--- last lines of {} ---\n{log_tail}", log.display())]
    Build {
        target: String,
        status: String,
        secs: u64,
        log: PathBuf,
        log_tail: String,
    },
    /// The binary exists but is not what was asked for.
    #[error("{0}")]
    Unusable(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn lock(path: &Path) -> Result<File, Error> {
    crate::cache::lock_file(path).map_err(io_err(format!("locking {}", path.display())))
}

/// One build at a time in this process, whichever tool.
static BUILD: Mutex<()> = Mutex::new(());

impl GoTool {
    /// `<package>@<version>`.
    pub fn target(&self) -> String {
        format!("{}@{}", self.package, self.version)
    }

    /// Where the built binary lives: `$QUORATE_CACHE/<name>/<version>/`.
    pub fn dir(&self) -> PathBuf {
        cache_dir().join(self.name).join(self.version)
    }

    /// The cached binary, if the cache holds a complete build (stamp written last).
    pub fn cached(&self) -> Option<PathBuf> {
        let dir = self.dir();
        let binary = dir.join(self.name);
        (dir.join(".complete").is_file() && is_executable(&binary)).then_some(binary)
    }

    /// Returns the binary: the one the override variable names if set, else the cached build,
    /// building it first (minutes, once; progress on stderr) when the cache lacks it. `check`
    /// accepts a freshly built binary or says why not (a wrong version stamp). Blocking.
    pub fn ensure(&self, check: impl Fn(&Path) -> Result<(), Error>) -> Result<PathBuf, Error> {
        if let Some(given) = std::env::var_os(self.env_override).filter(|h| !h.is_empty()) {
            let given = PathBuf::from(given);
            return if is_executable(&given) {
                Ok(given)
            } else {
                Err(Error::Unusable(format!(
                    "{}={} is not an executable file; unset it to build {} {}",
                    self.env_override,
                    given.display(),
                    self.name,
                    self.version
                )))
            };
        }
        let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(binary) = self.cached() {
            return Ok(binary);
        }
        let root = cache_dir().join(self.name);
        fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
        let start = Instant::now();
        let _lock = lock(&root.join(".build.lock"))?;
        if let Some(binary) = self.cached() {
            progress(self.name, start, "built by another process");
            return Ok(binary);
        }
        let (go, go_version) =
            crate::cache::find_go(self.min_go_minor).map_err(|reason| Error::Go {
                name: self.name,
                version: self.version,
                min_go_minor: self.min_go_minor,
                env_override: self.env_override,
                reason,
            })?;
        let tmp = root.join(format!(".build-tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(format!("removing {}", tmp.display())))?;
        }
        fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
        let result = self.build_into(&go, &go_version, &tmp, &root, start, &check);
        let _ = fs::remove_dir_all(&tmp);
        result
    }

    fn build_into(
        &self,
        go: &Path,
        go_version: &str,
        tmp: &Path,
        root: &Path,
        start: Instant,
        check: &dyn Fn(&Path) -> Result<(), Error>,
    ) -> Result<PathBuf, Error> {
        let log = root.join("build.log");
        let target = self.target();
        progress(
            self.name,
            start,
            &format!(
                "building {} {} with {go_version}: go install {target} (once; minutes on a cold \
                 machine; log: {})",
                self.name,
                self.version,
                log.display()
            ),
        );
        let out = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("opening {}", log.display())))?;
        let mut cmd = Command::new(go);
        cmd.args([
            "install",
            "-v",
            "-trimpath",
            "-ldflags",
            &self.ldflags,
            &target,
        ])
        .env("GOBIN", tmp)
        // Static, no VCS stamping, the toolchain at hand; outside any workspace.
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOWORK", "off")
        .current_dir(tmp)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
        let mut child = Child::spawn(format!("go-install-{}", self.name), cmd)
            .map_err(io_err(format!("running {}", go.display())))?;
        let status = wait_for_go_install(&mut child, &log, self.name, start)
            .map_err(io_err("waiting for go install"))?;
        if !status.success() {
            return Err(Error::Build {
                target,
                status: status.to_string(),
                secs: start.elapsed().as_secs(),
                log_tail: log_tail(&log, 40),
                log,
            });
        }
        let built = tmp.join(self.name);
        check(&built)?;
        let dir = self.dir();
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
        }
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let binary = dir.join(self.name);
        fs::rename(&built, &binary).map_err(io_err(format!(
            "moving {} to {}",
            self.name,
            binary.display()
        )))?;
        let secs = start.elapsed().as_secs();
        fs::write(
            dir.join(".complete"),
            format!("built {target} with {go_version} in {secs}s\n"),
        )
        .map_err(io_err(format!("writing {}/.complete", dir.display())))?;
        progress(
            self.name,
            start,
            &format!(
                "{} {} built in {secs} s: {}",
                self.name,
                self.version,
                binary.display()
            ),
        );
        Ok(binary)
    }
}

/// Runs `binary ARGS` and returns its trimmed standard output, or why it failed.
pub fn output_of(binary: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new(binary)
        .args(args)
        .output()
        .map_err(io_err(format!(
            "running {} {}",
            binary.display(),
            args.join(" ")
        )))?;
    if !out.status.success() {
        return Err(Error::Unusable(format!(
            "{} {} failed ({}): {}",
            binary.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
