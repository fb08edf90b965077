//! Images: `zookeeper:<version>` (any registry prefix, tags like `3.9.5`, `3.9` or `3.9.5-jre-17`)
//! is the testbed's ZooKeeper distribution of that version, laid out like the official image:
//! the jars in `/apache-zookeeper-<version>-bin/lib`, a logback configuration in `/conf`
//! (`ZOO_CONF_DIR`), working directory `/apache-zookeeper-<version>-bin`. `java` is the host's.
//! Every other image cannot run here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::zookeeper::{self, ZkVersion};

use super::container::Mount;

/// The waiting reason of a container whose image the agent cannot run.
pub const REASON_IMAGE_NOT_RUNNABLE: &str = "ImageNotRunnable";

/// How long a failed distribution resolution is remembered before it is tried again.
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// The ZooKeeper version an image stands for, or why it cannot run here.
pub(super) fn parse(image: &str) -> Result<ZkVersion, String> {
    let not_runnable = |why: &str| {
        format!(
            "image {image:?} cannot run on the quorate node agent: {why}; it runs \
             zookeeper:<version> images (any registry prefix) for versions {}",
            ZkVersion::ALL
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let without_digest = image.split('@').next().unwrap_or(image);
    let last_slash = without_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match without_digest[last_slash..].rfind(':') {
        Some(i) => (
            &without_digest[..last_slash + i],
            &without_digest[last_slash + i + 1..],
        ),
        None => (without_digest, ""),
    };
    let name = repo.rsplit('/').next().unwrap_or(repo);
    if name != "zookeeper" {
        return Err(not_runnable("it is not a zookeeper image"));
    }
    if tag.is_empty() || tag == "latest" {
        return Err(not_runnable("it names no version tag"));
    }
    let version = tag.split('-').next().unwrap_or(tag);
    ZkVersion::from_str(version).map_err(|e| not_runnable(&e))
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

/// Prepared images by ZooKeeper version.
pub(super) struct Images {
    dir: PathBuf,
    slots: Arc<Mutex<HashMap<ZkVersion, Slot>>>,
}

impl Images {
    pub(super) fn new(dir: PathBuf) -> Images {
        Images {
            dir,
            slots: Arc::default(),
        }
    }

    /// The image's state; starts resolving its distribution on first use.
    pub(super) fn get(&self, image: &str) -> Pull {
        let version = match parse(image) {
            Ok(v) => v,
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
        assert_eq!(parse("zookeeper:3.9.5"), Ok(ZkVersion::V3_9_5));
        assert_eq!(
            parse("docker.io/library/zookeeper:3.9.5"),
            Ok(ZkVersion::V3_9_5)
        );
        assert_eq!(
            parse("registry.local:5000/mirror/zookeeper:3.8.6-jre-17"),
            Ok(ZkVersion::V3_8_6)
        );
        assert_eq!(
            parse("zookeeper:3.9@sha256:0123456789abcdef"),
            Ok(ZkVersion::V3_9_5)
        );
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
        ] {
            let message = parse(image).unwrap_err();
            assert!(message.contains(image), "{message}");
        }
    }
}
