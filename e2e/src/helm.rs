//! Helm, built from the Go module proxy into the cache like the control plane.
//!
//! [`ensure_helm`] runs `go install helm.sh/helm/v3/cmd/helm@v3.21.4` into the cache as
//! [`crate::gotool`] does for every Go command (`helm/<version>/helm`, reused once complete).
//! `QUORATE_HELM` names an existing helm binary to use instead.
//!
//! The build is stamped as upstream's Makefile stamps a release: `helm version` reports
//! [`HELM_VERSION`], and the default capabilities of `helm template` and `helm lint` are
//! Kubernetes 1.36 (the minor of helm's own client-go, v0.36.2). Unstamped, `go install` would
//! report version "v3.21" and render templates for Kubernetes v1.20.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use crate::gotool::Error;
use crate::gotool::{GoTool, output_of};

/// The module whose `cmd/helm` is installed.
pub const HELM_MODULE: &str = "helm.sh/helm/v3";
/// The helm version the testbed builds.
pub const HELM_VERSION: &str = "v3.21.4";
/// The Kubernetes version (major, minor) stamped as helm's default capabilities: the one its
/// go.mod's k8s.io/client-go v0.36.2 targets, which upstream's Makefile derives the same way.
pub const HELM_KUBE_VERSION: (&str, &str) = ("1", "36");

/// helm as the testbed builds it (v3.21.4's go.mod says `go 1.26.0`).
pub fn tool() -> GoTool {
    GoTool {
        name: "helm",
        package: "helm.sh/helm/v3/cmd/helm",
        version: HELM_VERSION,
        min_go_minor: 26,
        ldflags: ldflags(),
        env_override: "QUORATE_HELM",
    }
}

/// Where the built helm lives: `$QUORATE_CACHE/helm/<version>/`.
pub fn helm_dir() -> PathBuf {
    tool().dir()
}

/// The cached helm, if the cache holds a complete build (stamp written last).
pub fn cached_helm() -> Option<PathBuf> {
    tool().cached()
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

/// `helm version --template {{.Version}}` of a binary.
pub fn version_of(helm: &Path) -> Result<String, Error> {
    output_of(helm, &["version", "--template", "{{.Version}}"])
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
/// once; progress on stderr) when the cache lacks it; a build whose `helm version` is not
/// [`HELM_VERSION`] is refused. Blocking.
pub fn ensure_helm() -> Result<PathBuf, Error> {
    tool().ensure(|built| {
        let version = version_of(built)?;
        if version == HELM_VERSION {
            Ok(())
        } else {
            Err(Error::Unusable(format!(
                "the built helm reports version {version:?}, not {HELM_VERSION}"
            )))
        }
    })
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
