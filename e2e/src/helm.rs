//! Helm, built from the Go module proxy into the cache like the control plane.
//!
//! [`ensure_helm`] runs `go install helm.sh/helm/v3/cmd/helm@v3.21.4` with `GOBIN` set to a
//! temporary directory under [`crate::cache::cache_dir`]`/helm/`, moves the binary to
//! `helm/<version>/helm` and writes the `.complete` stamp last, so an interrupted build is
//! redone and a complete one is reused. One build at a time: within the process by a mutex,
//! across processes by a lock file. `QUORATE_HELM` names an existing helm binary to use instead.
//!
//! The build is stamped as upstream's Makefile stamps a release: `helm version` reports
//! [`HELM_VERSION`], and the default capabilities of `helm template` and `helm lint` are
//! Kubernetes 1.36 (the minor of helm's own client-go, v0.36.2). Unstamped, `go install` would
//! report version "v3.21" and render templates for Kubernetes v1.20.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::cache::{cache_dir, is_executable, log_tail, progress, wait_for_go_install};
use crate::process::Child;

/// The module whose `cmd/helm` is installed.
pub const HELM_MODULE: &str = "helm.sh/helm/v3";
/// The helm version the testbed builds.
pub const HELM_VERSION: &str = "v3.21.4";
/// The Kubernetes version (major, minor) stamped as helm's default capabilities: the one its
/// go.mod's k8s.io/client-go v0.36.2 targets, which upstream's Makefile derives the same way.
pub const HELM_KUBE_VERSION: (&str, &str) = ("1", "36");

/// Errors of building or finding helm. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable Go toolchain.
    #[error(
        "building helm {HELM_VERSION} needs Go 1.26 or newer and the Go module proxy: {0}. \
         Install Go (https://go.dev/doc/install) or set GO=/path/to/go; or set QUORATE_HELM to an \
         existing helm binary"
    )]
    Go(String),
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// `go install` failed; `log_tail` holds the end of its output.
    #[error("go install {HELM_MODULE}/cmd/helm@{HELM_VERSION} failed ({status}) after {secs} s\n--- last lines of {} ---\n{log_tail}", log.display())]
    Build {
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

/// Where the built helm lives: `$QUORATE_CACHE/helm/<version>/`.
pub fn helm_dir() -> PathBuf {
    cache_dir().join("helm").join(HELM_VERSION)
}

/// The cached helm, if the cache holds a complete build (stamp written last).
pub fn cached_helm() -> Option<PathBuf> {
    let dir = helm_dir();
    let helm = dir.join("helm");
    (dir.join(".complete").is_file() && is_executable(&helm)).then_some(helm)
}

/// The `-ldflags` of the build: the version and the default Kubernetes capabilities, as
/// upstream's Makefile sets them for a release.
pub fn ldflags() -> String {
    let (major, minor) = HELM_KUBE_VERSION;
    let mut flags = vec![
        "-s".to_string(),
        "-w".to_string(),
        format!("-X {HELM_MODULE}/internal/version.version={HELM_VERSION}"),
        format!("-X {HELM_MODULE}/internal/version.gitTreeState=clean"),
    ];
    for pkg in ["pkg/chartutil", "pkg/lint/rules"] {
        flags.push(format!("-X {HELM_MODULE}/{pkg}.k8sVersionMajor={major}"));
        flags.push(format!("-X {HELM_MODULE}/{pkg}.k8sVersionMinor={minor}"));
    }
    flags.join(" ")
}

fn lock(path: &Path) -> Result<File, Error> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err(format!("opening {}", path.display())))?;
    file.lock()
        .map_err(io_err(format!("locking {}", path.display())))?;
    Ok(file)
}

/// `helm version --template {{.Version}}` of a binary.
pub fn version_of(helm: &Path) -> Result<String, Error> {
    let out = Command::new(helm)
        .args(["version", "--template", "{{.Version}}"])
        .output()
        .map_err(io_err(format!("running {} version", helm.display())))?;
    if !out.status.success() {
        return Err(Error::Unusable(format!(
            "{} version failed ({}): {}",
            helm.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `helm ARGS --kubeconfig=KUBECONFIG` with its cache, config and data directories under
/// `home`, so that helm writes nothing under `$HOME`.
pub fn command(helm: &Path, args: &[&str], kubeconfig: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(helm);
    cmd.args(args)
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

/// Returns helm: `$QUORATE_HELM` if set, else the cached build, building it first (minutes,
/// once; progress on stderr) when the cache lacks it. Blocking.
pub fn ensure_helm() -> Result<PathBuf, Error> {
    if let Some(helm) = std::env::var_os("QUORATE_HELM").filter(|h| !h.is_empty()) {
        let helm = PathBuf::from(helm);
        return if is_executable(&helm) {
            Ok(helm)
        } else {
            Err(Error::Unusable(format!(
                "QUORATE_HELM={} is not an executable file; unset it to build helm {HELM_VERSION}",
                helm.display()
            )))
        };
    }
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(helm) = cached_helm() {
        return Ok(helm);
    }
    let root = cache_dir().join("helm");
    fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
    let start = Instant::now();
    let _lock = lock(&root.join(".build.lock"))?;
    if let Some(helm) = cached_helm() {
        progress("helm", start, "built by another process");
        return Ok(helm);
    }
    // helm v3.21.4's go.mod says `go 1.26.0`.
    let (go, go_version) = crate::cache::find_go(26).map_err(Error::Go)?;
    let tmp = root.join(format!(".build-tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io_err(format!("removing {}", tmp.display())))?;
    }
    fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
    let result = build_into(&go, &go_version, &tmp, &root, start);
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn build_into(
    go: &Path,
    go_version: &str,
    tmp: &Path,
    root: &Path,
    start: Instant,
) -> Result<PathBuf, Error> {
    let log = root.join("build.log");
    let target = format!("{HELM_MODULE}/cmd/helm@{HELM_VERSION}");
    progress(
        "helm",
        start,
        &format!(
            "building helm {HELM_VERSION} with {go_version}: go install {target} (once; minutes on \
             a cold machine; log: {})",
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
        &ldflags(),
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
    let mut child = Child::spawn("go-install-helm", cmd)
        .map_err(io_err(format!("running {}", go.display())))?;
    let status = wait_for_go_install(&mut child, &log, "helm", start)
        .map_err(io_err("waiting for go install"))?;
    if !status.success() {
        return Err(Error::Build {
            status: status.to_string(),
            secs: start.elapsed().as_secs(),
            log_tail: log_tail(&log, 40),
            log,
        });
    }
    let built = tmp.join("helm");
    let version = version_of(&built)?;
    if version != HELM_VERSION {
        return Err(Error::Unusable(format!(
            "the built helm reports version {version:?}, not {HELM_VERSION}"
        )));
    }
    let dir = helm_dir();
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
    }
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let helm = dir.join("helm");
    fs::rename(&built, &helm).map_err(io_err(format!("moving helm to {}", helm.display())))?;
    let secs = start.elapsed().as_secs();
    fs::write(
        dir.join(".complete"),
        format!("built {HELM_MODULE}/cmd/helm@{HELM_VERSION} with {go_version} in {secs}s\n"),
    )
    .map_err(io_err(format!("writing {}/.complete", dir.display())))?;
    progress(
        "helm",
        start,
        &format!("helm {HELM_VERSION} built in {secs} s: {}", helm.display()),
    );
    Ok(helm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_stamps_the_version_and_the_kubernetes_capabilities() {
        let flags = ldflags();
        assert!(flags.contains("-X helm.sh/helm/v3/internal/version.version=v3.21.4"));
        for pkg in ["pkg/chartutil", "pkg/lint/rules"] {
            assert!(flags.contains(&format!("-X helm.sh/helm/v3/{pkg}.k8sVersionMinor=36")));
            assert!(flags.contains(&format!("-X helm.sh/helm/v3/{pkg}.k8sVersionMajor=1")));
        }
    }

    #[test]
    fn the_cache_holds_helm_under_its_version() {
        assert!(helm_dir().ends_with("helm/v3.21.4"));
    }
}
