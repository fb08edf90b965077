//! promtool, Prometheus' rule checker, built from the Go module proxy into the cache as
//! [`crate::gotool`] builds every Go command (`promtool/<version>/promtool`).
//! `QUORATE_PROMTOOL` names an existing promtool binary to use instead.
//!
//! The chart tests run `promtool check rules` on the rendered PrometheusRule and
//! `promtool test rules` on alert tests fed with the series quorate serves.

use std::path::{Path, PathBuf};

pub use crate::gotool::Error;
use crate::gotool::{GoTool, output_of};

/// The Go module version of Prometheus (module versions v0.3XX.Y are releases v3.XX.Y).
pub const PROMETHEUS_MODULE_VERSION: &str = "v0.316.0";
/// The release that module version is, stamped into the binary.
pub const PROMETHEUS_VERSION: &str = "3.16.0";

/// promtool as the testbed builds it.
pub fn tool() -> GoTool {
    GoTool {
        name: "promtool",
        package: "github.com/prometheus/prometheus/cmd/promtool",
        version: PROMETHEUS_MODULE_VERSION,
        min_go_minor: 25,
        ldflags: format!(
            "-s -w -X github.com/prometheus/common/version.Version={PROMETHEUS_VERSION}"
        ),
        env_override: "QUORATE_PROMTOOL",
    }
}

/// The first line of `promtool --version`.
pub fn version_of(promtool: &Path) -> Result<String, Error> {
    let out = output_of(promtool, &["--version"])?;
    Ok(out.lines().next().unwrap_or_default().to_string())
}

/// Returns promtool: `$QUORATE_PROMTOOL` if set, else the cached build, building it first
/// (minutes, once; progress on stderr) when the cache lacks it. Blocking.
pub fn ensure_promtool() -> Result<PathBuf, Error> {
    tool().ensure(|built| {
        let version = version_of(built)?;
        if version.contains(&format!("version {PROMETHEUS_VERSION} ")) {
            Ok(())
        } else {
            Err(Error::Unusable(format!(
                "the built promtool reports {version:?}, not version {PROMETHEUS_VERSION}"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_stamps_the_release_that_the_module_version_is() {
        // Module version v0.3XX.Y is release 3.XX.Y.
        let (minor, patch) = PROMETHEUS_MODULE_VERSION
            .strip_prefix("v0.3")
            .and_then(|rest| rest.split_once('.'))
            .expect("a v0.3XX.Y module version");
        let minor: u32 = minor.parse().expect("minor");
        assert_eq!(PROMETHEUS_VERSION, format!("3.{minor}.{patch}"));
        assert!(
            tool()
                .ldflags
                .contains(&format!("version.Version={PROMETHEUS_VERSION}"))
        );
    }
}
