//! What a pass reads without asking the API server, and writes only when it differs.
//!
//! Reflector stores hold the ensembles' Pods, PVCs, Services and PodDisruptionBudgets
//! (label-selected watches, managed fields stripped); the ConfigMap and the credentials Secret
//! are read by name (quorate never lists either kind). A support object is applied only when
//! the object held does not carry the hash of what quorate would write, or when another writer
//! changed it after quorate's last apply (its generation moved, or its resourceVersion for kinds
//! without a generation), so a converged ensemble costs no API write and a hand edit is still
//! reverted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::{Context, Error};
use crate::constants::{FIELD_MANAGER, LABEL_ENSEMBLE};

/// The annotation holding the hash of the rendering quorate last applied.
pub const ANNOTATION_APPLIED_HASH: &str = "quorate.dev/applied-hash";

/// The reflector stores of one controller scope (one namespace, or all of them).
#[derive(Clone)]
pub struct Stores {
    /// Member and volume-probe Pods.
    pub pods: Store<Pod>,
    /// Member volume claims.
    pub pvcs: Store<PersistentVolumeClaim>,
    /// Members and client Services.
    pub services: Store<Service>,
    /// PodDisruptionBudgets.
    pub pdbs: Store<PodDisruptionBudget>,
}

/// A store that has seen its first full list.
fn ready<K: Resource + Clone + 'static>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// What this process last applied, by object: the rendering's hash and the resourceVersion
/// the API server answered.
#[derive(Default)]
pub struct Applied(Mutex<HashMap<ObjectKey, (String, String)>>);

/// An object by kind, namespace and name.
type ObjectKey = (String, String, String);

impl Applied {
    fn get(&self, key: &ObjectKey) -> Option<(String, String)> {
        self.0.lock().ok()?.get(key).cloned()
    }

    fn put(&self, key: ObjectKey, hash: String, version: String) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(key, (hash, version));
        }
    }
}

/// Ensembles whose last pass lost its compare-and-set race: the object the store handed it
/// was older than the API server's (a watch that is still reconnecting, after an API server
/// restart say), so the next pass reads the object itself instead of trusting the store.
#[derive(Default)]
pub struct Stale(Mutex<std::collections::HashSet<(String, String)>>);

impl Stale {
    /// Marks `ns/name` stale.
    pub fn mark(&self, ns: &str, name: &str) {
        if let Ok(mut set) = self.0.lock() {
            set.insert((ns.to_string(), name.to_string()));
        }
    }

    /// Whether `ns/name` was marked, clearing the mark.
    pub fn take(&self, ns: &str, name: &str) -> bool {
        self.0
            .lock()
            .map(|mut set| set.remove(&(ns.to_string(), name.to_string())))
            .unwrap_or(false)
    }
}

/// The held object's applied hash and resourceVersion.
pub struct Held<'a> {
    /// The value of [`ANNOTATION_APPLIED_HASH`].
    pub hash: Option<&'a str>,
    /// Its generation when it has one (a PodDisruptionBudget: its status, which the disruption
    /// controller rewrites whenever a member's readiness changes, moves the resourceVersion but
    /// not the generation), else its resourceVersion.
    pub version: Option<&'a str>,
}

/// What [`Held::version`] holds for `meta`.
fn version_of(meta: &kube::api::ObjectMeta) -> Option<String> {
    meta.generation
        .map(|g| format!("g{g}"))
        .or_else(|| meta.resource_version.clone())
}

/// Whether a support object must be applied: it is absent (or not known yet), it carries the
/// hash of another rendering, or its version ([`Held::version`]) moved since this process
/// applied it (another writer edited it). After a restart, `ours` is empty and the annotation decides.
pub fn needs_apply(desired: &str, held: Option<Held<'_>>, ours: Option<(&str, &str)>) -> bool {
    let Some(held) = held else {
        return true;
    };
    if held.hash != Some(desired) {
        return true;
    }
    match ours {
        Some((hash, version)) => hash != desired || held.version != Some(version),
        None => false,
    }
}

/// The SHA-256 (first 8 bytes, hex) of an object's rendering.
fn rendering_hash(value: &serde_json::Value) -> String {
    hex::encode(&Sha256::digest(value.to_string().as_bytes())[..8])
}

/// Applies `obj` server-side, unless `held` (the object as a store holds it) shows the same
/// rendering and no other writer since this process applied it.
pub async fn apply_if_differs<K>(
    ctx: &Context,
    ns: &str,
    obj: &K,
    held: Option<&K>,
) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(obj)
        .map_err(|e| Error::Inconsistent(format!("render {name}: {e}")))?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    let hash = rendering_hash(&value);
    let key = (K::kind(&()).into_owned(), ns.to_string(), name.clone());
    let ours = ctx.applied.get(&key);
    let held_version = held.and_then(|h| version_of(h.meta()));
    let held = held.map(|h| Held {
        hash: h
            .meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_APPLIED_HASH))
            .map(String::as_str),
        version: held_version.as_deref(),
    });
    if !needs_apply(
        &hash,
        held,
        ours.as_ref().map(|(h, v)| (h.as_str(), v.as_str())),
    ) {
        return Ok(());
    }
    value["metadata"]["annotations"][ANNOTATION_APPLIED_HASH] = hash.clone().into();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await
        .map_err(Error::kube(format!("apply {} {ns}/{name}", K::kind(&()))))?;
    if let Some(version) = version_of(applied.meta()) {
        ctx.applied.put(key, hash, version);
    }
    Ok(())
}

/// The object `name` in `ns` as `store` holds it; `None` without stores or before the first list.
pub fn held<K>(store: Option<&Store<K>>, ns: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let store = store?;
    if !ready(store) {
        return None;
    }
    store.get(&ObjectRef::new(name).within(ns))
}

/// An ensemble's Pods (members and volume probes) and PVCs as one pass read them.
#[derive(Clone, Debug)]
pub struct Objects {
    /// Pods labelled with the ensemble.
    pub pods: Vec<Pod>,
    /// PVCs labelled with the ensemble.
    pub pvcs: Vec<PersistentVolumeClaim>,
    /// Read from the reflector stores rather than listed.
    pub from_stores: bool,
}

impl Objects {
    /// Lists them from the API server.
    pub async fn list(ctx: &Context, ns: &str, name: &str) -> Result<Objects, Error> {
        let selector = ListParams::default().labels(&format!("{LABEL_ENSEMBLE}={name}"));
        let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns)
            .list(&selector)
            .await
            .map_err(Error::kube(format!("list Pods of {ns}/{name}")))?;
        let pvcs = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
            .list(&selector)
            .await
            .map_err(Error::kube(format!("list PVCs of {ns}/{name}")))?;
        Ok(Objects {
            pods: pods.items,
            pvcs: pvcs.items,
            from_stores: false,
        })
    }

    /// Reads them from the stores; `None` without stores or before both have listed.
    pub fn from_stores(ctx: &Context, ns: &str, name: &str) -> Option<Objects> {
        let stores = ctx.stores.as_ref()?;
        if !ready(&stores.pods) || !ready(&stores.pvcs) {
            return None;
        }
        fn of<K: Resource<DynamicType = ()> + Clone + 'static>(
            store: &Store<K>,
            ns: &str,
            name: &str,
        ) -> Vec<K> {
            store
                .state_filter(|o| {
                    o.namespace().as_deref() == Some(ns)
                        && o.labels().get(LABEL_ENSEMBLE).map(String::as_str) == Some(name)
                })
                .into_iter()
                .map(|o| (*o).clone())
                .collect()
        }
        Some(Objects {
            pods: of(&stores.pods, ns, name),
            pvcs: of(&stores.pvcs, ns, name),
            from_stores: true,
        })
    }

    /// Each object's uid and resourceVersion: two reads with equal versions saw the same
    /// objects in the same state.
    pub fn versions(&self) -> std::collections::BTreeSet<(String, String)> {
        fn of<K: Resource>(o: &K) -> (String, String) {
            (
                o.meta().uid.clone().unwrap_or_default(),
                o.meta().resource_version.clone().unwrap_or_default(),
            )
        }
        self.pods
            .iter()
            .map(of)
            .chain(self.pvcs.iter().map(of))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    //! Unit tier: the pure decision of whether to apply.
    use super::*;

    fn held<'a>(hash: &'a str, version: &'a str) -> Option<Held<'a>> {
        Some(Held {
            hash: Some(hash),
            version: Some(version),
        })
    }

    #[test]
    fn an_absent_object_is_applied() {
        assert!(needs_apply("h1", None, None));
        assert!(needs_apply("h1", None, Some(("h1", "7"))));
    }

    #[test]
    fn an_object_of_another_rendering_is_applied() {
        assert!(needs_apply("h2", held("h1", "7"), Some(("h1", "7"))));
        assert!(needs_apply("h2", held("h1", "7"), None));
        let unannotated = Some(Held {
            hash: None,
            version: Some("7"),
        });
        assert!(needs_apply("h1", unannotated, None));
    }

    #[test]
    fn an_unchanged_object_is_not_applied_again() {
        assert!(!needs_apply("h1", held("h1", "7"), Some(("h1", "7"))));
        // After a restart the annotation vouches for the rendering.
        assert!(!needs_apply("h1", held("h1", "7"), None));
    }

    #[test]
    fn an_object_another_writer_changed_is_applied_again() {
        assert!(needs_apply("h1", held("h1", "9"), Some(("h1", "7"))));
    }

    #[test]
    fn a_stale_mark_is_taken_once() {
        let stale = Stale::default();
        assert!(!stale.take("ns", "a"));
        stale.mark("ns", "a");
        assert!(!stale.take("ns", "b"));
        assert!(stale.take("ns", "a"));
        assert!(!stale.take("ns", "a"));
    }

    #[test]
    fn the_hash_follows_the_rendering() {
        let a = serde_json::json!({"metadata": {"name": "a"}, "data": {"k": "1"}});
        let b = serde_json::json!({"metadata": {"name": "a"}, "data": {"k": "2"}});
        assert_eq!(rendering_hash(&a), rendering_hash(&a.clone()));
        assert_ne!(rendering_hash(&a), rendering_hash(&b));
    }
}
