//! Volumes as host directories.
//!
//! - `persistentVolumeClaim`: `<state>/volumes/<namespace>/<claim>`, created on first use and kept
//!   across Pods until the claim is deleted. The claim's uid is remembered next to it
//!   (`.<claim>.uid`), so a new claim of the same name starts empty, as a newly provisioned
//!   volume would. Removed data is deleted, or kept under `<state>/removed/<namespace>/` when
//!   the agent is asked to ([`Removal`]).
//! - `configMap` and `secret`: files written from the object's data (read-only), refreshed when it
//!   changes, atomically, in the kubelet's layout (`..data` -> a timestamped directory; each entry
//!   a symlink through `..data`).
//! - `emptyDir`: a fresh directory per Pod, removed with the Pod.
//! - `hostPath`: the host's path itself.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolumeClaim, Pod, Secret,
};

use super::container::Mount;

/// Files of a projected volume: relative path -> (contents, mode).
pub(super) type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// Where a claim's data lives.
pub(super) fn claim_dir(state: &Path, namespace: &str, claim: &str) -> PathBuf {
    state.join("volumes").join(namespace).join(claim)
}

fn claim_marker(state: &Path, namespace: &str, claim: &str) -> PathBuf {
    state
        .join("volumes")
        .join(namespace)
        .join(format!(".{claim}.uid"))
}

/// What becomes of a claim's data when it is removed (its claim deleted, a new claim of the same
/// name, a lost disk): deleted, or with `keep` moved to `<state>/removed/<namespace>/<claim>..<stamp>`
/// (a rename: no copy, and a process still writing to its files goes on writing there), so that
/// a test can still read what a volume held after it was gone.
#[derive(Clone, Copy, Debug)]
pub(super) struct Removal<'a> {
    pub state: &'a Path,
    pub keep: bool,
}

impl Removal<'_> {
    /// Where the removed data of `claim` goes, or `None` when it is deleted.
    fn destination(&self, namespace: &str, claim: &str) -> Option<PathBuf> {
        self.keep
            .then(|| removed_root(self.state, namespace).join(format!("{claim}{}", unique_stamp())))
    }

    /// Removes the claim directory `dir` itself.
    fn remove_dir(&self, namespace: &str, claim: &str, dir: &Path) -> io::Result<()> {
        match self.destination(namespace, claim) {
            Some(to) => {
                std::fs::create_dir_all(to.parent().unwrap_or(self.state))?;
                std::fs::rename(dir, to)
            }
            None => std::fs::remove_dir_all(dir),
        }
    }

    /// Removes everything inside the claim directory `dir` (not `dir` itself, which may be
    /// bind-mounted).
    pub(super) fn wipe_contents(&self, namespace: &str, claim: &str, dir: &Path) -> io::Result<()> {
        let to = self.destination(namespace, claim);
        if let Some(to) = &to {
            std::fs::create_dir_all(to)?;
        }
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            if let Some(to) = &to {
                std::fs::rename(&path, to.join(entry.file_name()))?;
            } else if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

/// Where removed claims' data of `namespace` is kept ([`Removal`]).
pub(super) fn removed_root(state: &Path, namespace: &str) -> PathBuf {
    state.join("removed").join(namespace)
}

/// The claim's directory for the claim with `uid`: created if missing, emptied if it belonged to
/// an earlier claim of the same name.
pub(super) fn ensure_claim(
    removal: Removal,
    namespace: &str,
    claim: &str,
    uid: &str,
) -> io::Result<PathBuf> {
    let state = removal.state;
    let dir = claim_dir(state, namespace, claim);
    let marker = claim_marker(state, namespace, claim);
    let owner = std::fs::read_to_string(&marker).ok();
    if dir.is_dir() && owner.as_deref().is_some_and(|o| o != uid) {
        tracing::info!(
            namespace,
            claim,
            "a new claim of the same name: starting empty"
        );
        removal.wipe_contents(namespace, claim, &dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    if owner.as_deref() != Some(uid) {
        std::fs::write(&marker, uid)?;
    }
    Ok(dir)
}

/// Removes every claim directory for which `keep(namespace, claim, uid)` is false; returns the
/// removed `(namespace, claim)` pairs.
pub(super) fn gc_claims(
    removal: Removal,
    keep: impl Fn(&str, &str, Option<&str>) -> bool,
) -> Vec<(String, String)> {
    let state = removal.state;
    let mut removed = Vec::new();
    let Ok(namespaces) = std::fs::read_dir(state.join("volumes")) else {
        return removed;
    };
    for ns_entry in namespaces.flatten() {
        let ns = ns_entry.file_name().to_string_lossy().into_owned();
        let Ok(claims) = std::fs::read_dir(ns_entry.path()) else {
            continue;
        };
        for entry in claims.flatten() {
            let claim = entry.file_name().to_string_lossy().into_owned();
            if claim.starts_with('.') || !entry.path().is_dir() {
                continue;
            }
            let marker = claim_marker(state, &ns, &claim);
            let uid = std::fs::read_to_string(&marker).ok();
            if keep(&ns, &claim, uid.as_deref()) {
                continue;
            }
            let gone = removal.remove_dir(&ns, &claim, &entry.path());
            let _ = std::fs::remove_file(&marker);
            match gone {
                Ok(()) => removed.push((ns.clone(), claim)),
                Err(e) => tracing::warn!(namespace = %ns, claim, error = %e,
                    "removing the volume of a deleted claim failed"),
            }
        }
    }
    removed
}

fn unique_stamp() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("..{nanos}_{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Writes `files` into `dir` atomically, in the kubelet's layout: a new timestamped directory,
/// `..data` switched to it by a rename, and one symlink per top-level entry through `..data`.
pub(super) fn write_atomic(dir: &Path, files: &Files) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = unique_stamp();
    let new = dir.join(&stamp);
    std::fs::create_dir(&new)?;
    for (path, (bytes, mode)) in files {
        let file = new.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, bytes)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))?;
    }
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data)?;
    let wanted: BTreeSet<String> = files
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for top in &wanted {
        let link = dir.join(top);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{top}"), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(&name) {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn is_relative_and_inside(path: &str) -> bool {
    let p = Path::new(path);
    !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// Files from a map of key -> bytes, with `items` selecting and renaming keys.
fn project(
    what: &str,
    all: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Files, String> {
    let default_mode = default_mode.unwrap_or(0o644) as u32 & 0o777;
    let mut files = Files::new();
    match items {
        Some(items) => {
            for item in items {
                let Some(bytes) = all.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(format!(
                        "{what} references non-existent config key: {}",
                        item.key
                    ));
                };
                if !is_relative_and_inside(&item.path) {
                    return Err(format!("{what}: invalid item path {:?}", item.path));
                }
                let mode = item.mode.map(|m| m as u32 & 0o777).unwrap_or(default_mode);
                files.insert(item.path.clone(), (bytes.clone(), mode));
            }
        }
        None => {
            for (k, v) in all {
                files.insert(k, (v, default_mode));
            }
        }
    }
    Ok(files)
}

/// Lookups of the objects a Pod's volumes refer to (in the Pod's namespace).
pub(super) struct Lookups<'a> {
    pub claim: &'a dyn Fn(&str) -> Option<Arc<PersistentVolumeClaim>>,
    pub config_map: &'a dyn Fn(&str) -> Option<Arc<ConfigMap>>,
    pub secret: &'a dyn Fn(&str) -> Option<Arc<Secret>>,
}

#[derive(Debug)]
enum Kind {
    Dir,
    ConfigMap {
        name: String,
        items: Option<Vec<KeyToPath>>,
        mode: Option<i32>,
        optional: bool,
    },
    Secret {
        name: String,
        items: Option<Vec<KeyToPath>>,
        mode: Option<i32>,
        optional: bool,
    },
}

#[derive(Debug)]
struct Volume {
    dir: PathBuf,
    kind: Kind,
    read_only: bool,
    written: Option<Files>,
}

/// A Pod's volumes, set up.
#[derive(Debug, Default)]
pub(super) struct PodVolumes {
    volumes: BTreeMap<String, Volume>,
}

/// The claims a Pod uses.
pub(super) fn claims_of(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

impl PodVolumes {
    /// Sets up every volume of the Pod (directories under `pod_dir` for per-Pod volumes), or
    /// says why not (a `FailedMount` message).
    pub(super) fn setup(
        pod: &Pod,
        removal: Removal,
        pod_dir: &Path,
        lookups: &Lookups,
    ) -> Result<PodVolumes, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut volumes = BTreeMap::new();
        for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let own_dir = pod_dir.join("volumes").join(&v.name);
            let io = |e: io::Error| format!("volume {:?}: {e}", v.name);
            let volume = if let Some(c) = &v.persistent_volume_claim {
                let claim = (lookups.claim)(&c.claim_name)
                    .ok_or_else(|| format!("persistentvolumeclaim {:?} not found", c.claim_name))?;
                if claim.metadata.deletion_timestamp.is_some() {
                    return Err(format!(
                        "persistentvolumeclaim {:?} is being deleted",
                        c.claim_name
                    ));
                }
                let uid = claim.metadata.uid.as_deref().unwrap_or_default();
                let dir = ensure_claim(removal, ns, &c.claim_name, uid).map_err(io)?;
                Volume {
                    dir,
                    kind: Kind::Dir,
                    read_only: c.read_only == Some(true),
                    written: None,
                }
            } else if v.empty_dir.is_some() {
                std::fs::create_dir_all(&own_dir).map_err(io)?;
                Volume {
                    dir: own_dir,
                    kind: Kind::Dir,
                    read_only: false,
                    written: None,
                }
            } else if let Some(h) = &v.host_path {
                let dir = PathBuf::from(&h.path);
                if matches!(h.type_.as_deref(), Some("DirectoryOrCreate")) {
                    std::fs::create_dir_all(&dir).map_err(io)?;
                } else if !dir.exists() {
                    return Err(format!("hostPath {:?} does not exist", h.path));
                }
                Volume {
                    dir,
                    kind: Kind::Dir,
                    read_only: false,
                    written: None,
                }
            } else if let Some(c) = &v.config_map {
                Volume {
                    dir: own_dir,
                    kind: Kind::ConfigMap {
                        name: c.name.clone(),
                        items: c.items.clone(),
                        mode: c.default_mode,
                        optional: c.optional == Some(true),
                    },
                    read_only: true,
                    written: None,
                }
            } else if let Some(s) = &v.secret {
                Volume {
                    dir: own_dir,
                    kind: Kind::Secret {
                        name: s.secret_name.clone().unwrap_or_default(),
                        items: s.items.clone(),
                        mode: s.default_mode,
                        optional: s.optional == Some(true),
                    },
                    read_only: true,
                    written: None,
                }
            } else {
                return Err(format!(
                    "volume {:?}: unsupported volume type (the node agent supports \
                     persistentVolumeClaim, configMap, secret, emptyDir and hostPath)",
                    v.name
                ));
            };
            volumes.insert(v.name.clone(), volume);
        }
        let mut pv = PodVolumes { volumes };
        pv.refresh(lookups, true)?;
        Ok(pv)
    }

    /// Rewrites ConfigMap and Secret volumes whose data changed. With `first`, a missing object
    /// is an error; later, the last written files stay (as the kubelet keeps them).
    pub(super) fn refresh(&mut self, lookups: &Lookups, first: bool) -> Result<(), String> {
        for (vol_name, v) in &mut self.volumes {
            let files = match &v.kind {
                Kind::Dir => continue,
                Kind::ConfigMap {
                    name,
                    items,
                    mode,
                    optional,
                } => match (lookups.config_map)(name) {
                    Some(cm) => {
                        let mut all: BTreeMap<String, Vec<u8>> = cm
                            .data
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                            .collect();
                        for (k, b) in cm.binary_data.iter().flatten() {
                            all.insert(k.clone(), b.0.clone());
                        }
                        project(
                            &format!("configmap {name:?}"),
                            all,
                            items.as_ref(),
                            *mode,
                            *optional,
                        )?
                    }
                    None if *optional => Files::new(),
                    None if first => return Err(format!("configmap {name:?} not found")),
                    None => continue,
                },
                Kind::Secret {
                    name,
                    items,
                    mode,
                    optional,
                } => match (lookups.secret)(name) {
                    Some(s) => {
                        let all = s
                            .data
                            .iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.0.clone()))
                            .collect();
                        project(
                            &format!("secret {name:?}"),
                            all,
                            items.as_ref(),
                            *mode,
                            *optional,
                        )?
                    }
                    None if *optional => Files::new(),
                    None if first => return Err(format!("secret {name:?} not found")),
                    None => continue,
                },
            };
            if v.written.as_ref() != Some(&files) {
                write_atomic(&v.dir, &files).map_err(|e| format!("volume {vol_name:?}: {e}"))?;
                v.written = Some(files);
            }
        }
        Ok(())
    }

    /// The container's volume mounts, shallowest mount path first.
    pub(super) fn mounts(&self, container: &Container) -> Result<Vec<Mount>, String> {
        let mut mounts = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let v = self
                .volumes
                .get(&vm.name)
                .ok_or_else(|| format!("volumeMount {:?}: no volume of that name", vm.name))?;
            let mut source = v.dir.clone();
            if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                if !is_relative_and_inside(sub) {
                    return Err(format!(
                        "volumeMount {:?}: invalid subPath {sub:?}",
                        vm.name
                    ));
                }
                source = source.join(sub);
                if matches!(v.kind, Kind::Dir) && !source.exists() {
                    std::fs::create_dir_all(&source)
                        .map_err(|e| format!("volumeMount {:?}: {e}", vm.name))?;
                }
            }
            mounts.push(Mount::new(
                source,
                vm.mount_path.clone(),
                v.read_only || vm.read_only == Some(true),
            ));
        }
        mounts.sort_by_key(|m| Path::new(&m.target).components().count());
        Ok(mounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(pairs: &[(&str, &str)]) -> Files {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 0o644)))
            .collect()
    }

    #[test]
    fn rewrites_projected_files_atomically_and_drops_removed_keys() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("vol");
        write_atomic(&d, &files(&[("zoo.cfg", "a=1\n"), ("sub/x", "x")])).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("zoo.cfg")).unwrap(), "a=1\n");
        assert_eq!(std::fs::read_to_string(d.join("sub/x")).unwrap(), "x");
        write_atomic(&d, &files(&[("zoo.cfg", "a=2\n")])).unwrap();
        assert_eq!(std::fs::read_to_string(d.join("zoo.cfg")).unwrap(), "a=2\n");
        assert!(!d.join("sub").exists());
        let entries: Vec<String> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(entries.len(), 3, "{entries:?}");
    }

    fn deleting(state: &Path) -> Removal<'_> {
        Removal { state, keep: false }
    }

    #[test]
    fn a_new_claim_of_the_same_name_starts_empty_and_deleted_claims_are_removed() {
        let state = tempfile::tempdir().unwrap();
        let removal = deleting(state.path());
        let dir = ensure_claim(removal, "ns", "data", "uid-1").unwrap();
        std::fs::write(dir.join("f"), "1").unwrap();
        let dir = ensure_claim(removal, "ns", "data", "uid-1").unwrap();
        assert!(dir.join("f").exists());
        let dir = ensure_claim(removal, "ns", "data", "uid-2").unwrap();
        assert!(!dir.join("f").exists());
        assert!(gc_claims(removal, |_, _, uid| uid == Some("uid-2")).is_empty());
        assert_eq!(
            gc_claims(removal, |_, _, _| false),
            vec![("ns".to_string(), "data".to_string())]
        );
        assert!(!dir.exists());
        assert!(!state.path().join("removed").exists());
    }

    /// Every removed generation of a claim's data, read back from `removed/<ns>/`.
    fn kept(state: &Path) -> BTreeSet<String> {
        std::fs::read_dir(removed_root(state, "ns"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                assert!(e.file_name().to_string_lossy().starts_with("data.."));
                std::fs::read_to_string(e.path().join("sub").join("f")).unwrap()
            })
            .collect()
    }

    #[test]
    fn removed_data_is_kept_aside_when_asked() {
        let state = tempfile::tempdir().unwrap();
        let removal = Removal {
            state: state.path(),
            keep: true,
        };
        let write = |dir: &Path, what: &str| {
            std::fs::create_dir_all(dir.join("sub")).unwrap();
            std::fs::write(dir.join("sub").join("f"), what).unwrap();
        };
        let dir = ensure_claim(removal, "ns", "data", "uid-1").unwrap();
        write(&dir, "first claim");
        let dir = ensure_claim(removal, "ns", "data", "uid-2").unwrap();
        assert!(
            std::fs::read_dir(&dir).unwrap().next().is_none(),
            "starts empty"
        );
        write(&dir, "lost disk");
        removal.wipe_contents("ns", "data", &dir).unwrap();
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "wiped");
        write(&dir, "deleted claim");
        assert_eq!(gc_claims(removal, |_, _, _| false).len(), 1);
        assert!(!dir.exists());
        assert_eq!(
            kept(state.path()),
            ["first claim", "lost disk", "deleted claim"]
                .map(String::from)
                .into()
        );
    }

    #[test]
    fn a_termination_path_resolves_through_the_containers_volume_mounts_and_subpaths() {
        use super::super::container::host_path;
        let state = tempfile::tempdir().unwrap();
        let pod_dir = state.path().join("pods").join("uid");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "volumes": [{"name": "shared", "emptyDir": {}}, {"name": "result", "emptyDir": {}}],
                "containers": [{
                    "name": "main",
                    "volumeMounts": [
                        {"name": "shared", "mountPath": "/data"},
                        {"name": "shared", "mountPath": "/out", "subPath": "init/out"},
                        {"name": "result", "mountPath": "/data/result"},
                    ],
                }],
            },
        }))
        .unwrap();
        let lookups = Lookups {
            claim: &|_| None,
            config_map: &|_| None,
            secret: &|_| None,
        };
        let volumes = PodVolumes::setup(&pod, deleting(state.path()), &pod_dir, &lookups).unwrap();
        let mounts = volumes.mounts(&pod.spec.unwrap().containers[0]).unwrap();
        let shared = pod_dir.join("volumes").join("shared");
        let result = pod_dir.join("volumes").join("result");
        assert_eq!(
            host_path("/out/message", &mounts),
            Some(shared.join("init/out/message"))
        );
        assert!(shared.join("init/out").is_dir(), "the subPath exists");
        assert_eq!(
            host_path("/data/message", &mounts),
            Some(shared.join("message"))
        );
        assert_eq!(
            host_path("/data/result/message", &mounts),
            Some(result.join("message"))
        );
        assert_eq!(host_path("/data/result", &mounts), Some(result));
        assert_eq!(host_path("/dev/termination-log", &mounts), None);
    }
}
