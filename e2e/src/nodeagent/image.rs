//! Images. Two kinds run here; every other image cannot run.
//!
//! - `zookeeper:<version>` (any registry prefix, tags like `3.9.5`, `3.9` or `3.9.5-jre-17`) is
//!   the testbed's ZooKeeper distribution of that version, laid out like the official image: the
//!   jars in `/apache-zookeeper-<version>-bin/lib`, a logback configuration in `/conf`
//!   (`ZOO_CONF_DIR`), working directory `/apache-zookeeper-<version>-bin`. `java` is the host's.
//! - `quorate:<tag>` (any registry prefix, any tag, e.g. `ghcr.io/quorate/quorate:0.1.0`) is the
//!   operator's own image, as its restores run it in member Pods: the agent's quorate binary
//!   directory ([`super::AgentOptions::quorate_bin_dir`]) is bind-mounted read-only at
//!   [`QUORATE_BIN_MOUNT`] (`/opt/quorate/bin`), so the command `/opt/quorate/bin/quorate` runs
//!   the binary found there, whatever the tag says; working directory `/`. An agent without that
//!   directory refuses the image ([`REASON_IMAGE_NOT_RUNNABLE`]); a directory without an
//!   executable `quorate` is a pull failure (`ErrImagePull`), retried until the binary appears.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::zookeeper::{self, ZkVersion};

use super::container::Mount;

/// The waiting reason of a container whose image the agent cannot run.
pub const REASON_IMAGE_NOT_RUNNABLE: &str = "ImageNotRunnable";

/// Where a `quorate:<tag>` container sees the agent's quorate binary directory (read-only).
pub const QUORATE_BIN_MOUNT: &str = "/opt/quorate/bin";

/// How long a failed distribution resolution is remembered before it is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// What an image stands for on the testbed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Kind {
    /// `zookeeper:<version>`: the testbed's ZooKeeper distribution of that version.
    ZooKeeper(ZkVersion),
    /// `quorate:<tag>`: the binary in the agent's quorate binary directory.
    Quorate,
}

/// An image reference's repository (without the registry and path) and tag (empty if none).
fn name_and_tag(image: &str) -> (&str, &str) {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match without_digest[last_slash..].rfind(':') {
        Some(i) => (
            &without_digest[..last_slash + i],
            &without_digest[last_slash + i + 1..],
        ),
        None => (without_digest, ""),
    };
    (repo.rsplit('/').next().unwrap_or(repo), tag)
}

/// What an image stands for, or why it cannot run here.
pub(super) fn parse(image: &str) -> Result<Kind, String> {
    let not_runnable = |why: &str| {
        format!(
            "image {image:?} cannot run on the quorate node agent: {why}; it runs \
             zookeeper:<version> images (any registry prefix) for versions {}, and quorate:<tag> \
             images when the agent has a quorate binary directory",
            ZkVersion::ALL
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let (name, tag) = name_and_tag(image);
    match name {
        "quorate" => Ok(Kind::Quorate),
        "zookeeper" => {
            if tag.is_empty() || tag == "latest" {
                return Err(not_runnable("it names no version tag"));
            }
            let version = tag.split('-').next().unwrap_or(tag);
            ZkVersion::from_str(version)
                .map(Kind::ZooKeeper)
                .map_err(|e| not_runnable(&e))
        }
        _ => Err(not_runnable(
            "it is neither a zookeeper nor a quorate image",
        )),
    }
}

/// The `imageID` a container status reports for `image`, empty when it cannot run.
pub(super) fn image_id(image: &str) -> String {
    match parse(image) {
        Ok(Kind::ZooKeeper(v)) => format!("quorate-testbed/zookeeper:{v}"),
        Ok(Kind::Quorate) => {
            let (_, tag) = name_and_tag(image);
            format!(
                "quorate-testbed/quorate:{}",
                if tag.is_empty() { "latest" } else { tag }
            )
        }
        Err(_) => String::new(),
    }
}

/// Why a `quorate:<tag>` image cannot run on an agent without a quorate binary directory.
fn no_quorate_bin_dir(image: &str) -> String {
    format!(
        "image {image:?} cannot run on the quorate node agent: the agent has no quorate binary \
         directory (AgentOptions::quorate_bin_dir, default ${}); quorate:<tag> images run the \
         quorate binary from that directory, mounted read-only at {QUORATE_BIN_MOUNT}",
        super::QUORATE_AGENT_BIN_DIR_ENV
    )
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A runnable image: its mounts (in order), environment and working directory.
#[derive(Debug)]
pub(super) struct Prepared {
    pub mounts: Vec<Mount>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
}

/// What a container's image is now.
pub(super) enum Pull {
    Ready(Arc<Prepared>),
    /// The distribution is being resolved (Maven; once per version and machine).
    Pulling,
    /// The image is not runnable (permanent).
    NotRunnable(String),
    /// Resolving the distribution failed (retried after a while).
    Failed(String),
}

enum Slot {
    Pulling,
    Ready(Arc<Prepared>),
    Failed(String, Instant),
}

/// Prepared images: ZooKeeper by version, and quorate's.
pub(super) struct Images {
    dir: PathBuf,
    quorate_bin_dir: Option<PathBuf>,
    slots: Arc<Mutex<HashMap<ZkVersion, Slot>>>,
}

impl Images {
    /// Images prepared under `dir`; `quorate:<tag>` images mount `quorate_bin_dir` (absolute).
    pub(super) fn new(dir: PathBuf, quorate_bin_dir: Option<PathBuf>) -> Images {
        Images {
            dir,
            quorate_bin_dir,
            slots: Arc::default(),
        }
    }

    /// The image's state; starts resolving a ZooKeeper distribution on first use.
    pub(super) fn get(&self, image: &str) -> Pull {
        let version = match parse(image) {
            Ok(Kind::ZooKeeper(v)) => v,
            Ok(Kind::Quorate) => return self.quorate(image),
            Err(message) => return Pull::NotRunnable(message),
        };
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match slots.get(&version) {
            Some(Slot::Ready(p)) => return Pull::Ready(p.clone()),
            Some(Slot::Pulling) => return Pull::Pulling,
            Some(Slot::Failed(message, at)) if at.elapsed() < RETRY_FAILED => {
                return Pull::Failed(message.clone());
            }
            _ => {}
        }
        slots.insert(version, Slot::Pulling);
        let slots_arc = self.slots.clone();
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let slot = match prepare(&dir, version) {
                Ok(p) => Slot::Ready(Arc::new(p)),
                Err(e) => {
                    tracing::warn!(%version, error = %e, "preparing the ZooKeeper image failed");
                    Slot::Failed(e, Instant::now())
                }
            };
            slots_arc
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(version, slot);
        });
        Pull::Pulling
    }

    /// A `quorate:<tag>` image: the binary directory mounted at [`QUORATE_BIN_MOUNT`].
    fn quorate(&self, image: &str) -> Pull {
        let Some(dir) = &self.quorate_bin_dir else {
            return Pull::NotRunnable(no_quorate_bin_dir(image));
        };
        let binary = dir.join("quorate");
        if !is_executable_file(&binary) {
            return Pull::Failed(format!(
                "image {image:?}: the agent's quorate binary directory has no executable {}",
                binary.display()
            ));
        }
        Pull::Ready(Arc::new(Prepared {
            mounts: vec![Mount::new(dir.clone(), QUORATE_BIN_MOUNT.into(), true)],
            env: Vec::new(),
            workdir: "/".into(),
        }))
    }
}

/// Resolves the distribution and lays out `<dir>/zookeeper-<v>/{root,conf}`.
fn prepare(dir: &Path, version: ZkVersion) -> Result<Prepared, String> {
    let dist = zookeeper::ensure_distribution(version).map_err(|e| e.to_string())?;
    let base = dir.join(format!("zookeeper-{version}"));
    let root = base.join("root");
    let conf = base.join("conf");
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    std::fs::create_dir_all(root.join("lib")).map_err(|e| io("creating", &root, e))?;
    std::fs::create_dir_all(&conf).map_err(|e| io("creating", &conf, e))?;
    let logback = conf.join("logback.xml");
    std::fs::copy(dist.logback_config(), &logback).map_err(|e| io("writing", &logback, e))?;
    let home = format!("/apache-zookeeper-{version}-bin");
    Ok(Prepared {
        mounts: vec![
            Mount::new(root, home.clone(), true),
            Mount::new(dist.home().join("lib"), format!("{home}/lib"), true),
            Mount::new(conf, "/conf".into(), true),
        ],
        env: vec![
            ("ZOO_CONF_DIR".into(), "/conf".into()),
            ("ZOOCFGDIR".into(), "/conf".into()),
        ],
        workdir: home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_zookeeper_images_of_supported_versions_from_any_registry() {
        let zk = |v| Ok(Kind::ZooKeeper(v));
        assert_eq!(parse("zookeeper:3.9.5"), zk(ZkVersion::V3_9_5));
        assert_eq!(
            parse("docker.io/library/zookeeper:3.9.5"),
            zk(ZkVersion::V3_9_5)
        );
        assert_eq!(
            parse("registry.local:5000/mirror/zookeeper:3.8.6-jre-17"),
            zk(ZkVersion::V3_8_6)
        );
        assert_eq!(
            parse("zookeeper:3.9@sha256:0123456789abcdef"),
            zk(ZkVersion::V3_9_5)
        );
    }

    #[test]
    fn runs_quorate_images_of_any_tag_from_any_registry() {
        for image in [
            "quorate:test",
            "quorate",
            "quorate:latest",
            "ghcr.io/quorate/quorate:0.1.0",
            "registry.local:5000/mirror/quorate:0.1.0-rc.1",
            "quorate:0.1.0@sha256:0123456789abcdef",
        ] {
            assert_eq!(parse(image), Ok(Kind::Quorate), "{image}");
        }
        assert_eq!(
            image_id("ghcr.io/quorate/quorate:0.1.0"),
            "quorate-testbed/quorate:0.1.0"
        );
        assert_eq!(image_id("quorate"), "quorate-testbed/quorate:latest");
        assert_eq!(image_id("zookeeper:3.9"), "quorate-testbed/zookeeper:3.9.5");
        assert_eq!(image_id("busybox:1.36"), "");
    }

    #[test]
    fn refuses_other_images_and_versions_with_a_message_naming_the_image() {
        for image in [
            "busybox:1.36",
            "zookeeper",
            "zookeeper:latest",
            "zookeeper:3.7.2",
            "registry.local:5000/zookeeper",
            "bitnami/zookeeper-operator:3.9.5",
            "quorate-operator:0.1.0",
            "ghcr.io/quorate/quorate-tools:0.1.0",
            "quorate/zookeeper-exporter:1.0",
        ] {
            let message = parse(image).unwrap_err();
            assert!(message.contains(image), "{message}");
        }
    }

    #[test]
    fn a_quorate_image_needs_the_agents_binary_directory() {
        let state = tempfile::tempdir().unwrap();
        let images = Images::new(state.path().join("images"), None);
        match images.get("ghcr.io/quorate/quorate:0.1.0") {
            Pull::NotRunnable(message) => {
                assert!(
                    message.contains("\"ghcr.io/quorate/quorate:0.1.0\""),
                    "{message}"
                );
                assert!(message.contains("quorate_bin_dir"), "{message}");
                assert!(message.contains("QUORATE_AGENT_BIN_DIR"), "{message}");
            }
            _ => panic!("a quorate image without a binary directory is not runnable"),
        }
    }

    #[test]
    fn a_quorate_image_mounts_the_binary_directory_read_only_once_it_holds_the_binary() {
        use std::os::unix::fs::PermissionsExt;
        let bin = tempfile::tempdir().unwrap();
        let images = Images::new(bin.path().join("images"), Some(bin.path().to_path_buf()));
        match images.get("quorate:test") {
            Pull::Failed(message) => assert!(message.contains("quorate"), "{message}"),
            _ => panic!("a directory without the binary is a pull failure"),
        }
        let binary = bin.path().join("quorate");
        std::fs::write(&binary, "#!/bin/sh\n").unwrap();
        match images.get("quorate:test") {
            Pull::Failed(_) => {}
            _ => panic!("a binary that is not executable is a pull failure"),
        }
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        match images.get("quorate:test") {
            Pull::Ready(prepared) => {
                assert_eq!(
                    prepared.mounts,
                    vec![Mount::new(
                        bin.path().to_path_buf(),
                        "/opt/quorate/bin".into(),
                        true
                    )]
                );
                assert_eq!(prepared.workdir, "/");
            }
            _ => panic!("a quorate image with its binary is ready"),
        }
    }
}
