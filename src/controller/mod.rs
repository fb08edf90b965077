//! Wiring: one reconcile per MasterEnsemble, on kube-runtime's Controller.
//!
//! ```text
//! observe (Pods, PVCs, ZooKeeper, status) -> plan (pure) -> claim (status CAS)
//!   -> execute ONE step (idempotent ensure_*) -> record (status, Event) -> requeue
//! ```

pub mod backup;
pub mod ensemble;
pub mod execute;
pub mod failpoints;
pub mod leader;
pub mod observe;
pub mod recovery;
pub mod restore;
pub mod status;
pub mod support;
pub mod survivor;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::Predicate;
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::crd::{MasterEnsemble, ZkBackup, ZkRestore};
use crate::metrics::{Exists, Metrics};
use crate::serve::Health;
use crate::zk::AdminProbe;

/// Errors of a reconcile, each with its context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// Another writer changed the ensemble between the read and the claim.
    #[error("claiming {step} lost a compare-and-set race; retrying")]
    Conflict {
        /// The step.
        step: String,
    },
    /// A ZooKeeper membership change failed.
    #[error("{step} on {ensemble}: {source}")]
    Membership {
        /// The step.
        step: String,
        /// The ensemble.
        ensemble: String,
        /// ZooKeeper's answer.
        source: crate::zk::membership::Error,
    },
    /// A membership change found no serving member to send its reconfig to.
    #[error("{step}: no member serves, the configuration cannot change")]
    NoServingMember {
        /// The step.
        step: String,
    },
    /// The AdminServer probe could not be built.
    #[error("AdminServer probe: {0}")]
    Probe(#[from] crate::zk::admin::Error),
    /// Something about the ensemble's objects is not as quorate left it.
    #[error("{0}")]
    Inconsistent(String),
    /// A backup store or artifact could not be used.
    #[error("{0}")]
    Backup(String),
    /// Leader election failed; the process stops.
    #[error("{0}")]
    Lease(String),
    /// The endpoints could not be served; the process stops.
    #[error("{0}")]
    Serve(#[from] crate::serve::Error),
    /// The failpoints to arm (a `failpoints` build) name one that does not exist; the process
    /// stops.
    #[error("{0}")]
    Failpoints(#[from] failpoints::UnknownFailpoints),
}

impl Error {
    /// A bounded category for metrics, Event reasons and the error policy.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 409 => "conflict",
            // A namespace being deleted refuses new objects with 403 too; that is no RBAC gap.
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 403 && !s.message.contains("because it is being terminated") => {
                "forbidden"
            }
            Error::Kube { .. } => "kube",
            Error::Conflict { .. } => "conflict",
            Error::Membership { .. } | Error::NoServingMember { .. } => "zookeeper",
            Error::Probe(_) => "probe",
            Error::Inconsistent(_) => "inconsistent",
            Error::Backup(_) => "backup",
            Error::Lease(_) => "lease",
            Error::Serve(_) => "serve",
            Error::Failpoints(_) => "failpoints",
        }
    }

    /// Whether a membership step failed before any reconfig request left this process, so that
    /// ZooKeeper certainly did not apply it.
    pub fn reconfig_not_sent(&self) -> bool {
        match self {
            Error::Membership { source, .. } => source.before_any_request(),
            Error::NoServingMember { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Kube { what, source }
    }
}

/// Replaces an object's status after `change`, re-reading and retrying on a compare-and-set
/// conflict (the write is conditioned on the resourceVersion just read).
pub async fn update_status<K>(
    api: &Api<K>,
    name: &str,
    mut change: impl FnMut(&mut K::Status),
) -> Result<K, Error>
where
    K: kube::Resource<DynamicType = ()>
        + kube::core::object::HasStatus
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::Status: Default,
{
    let kind = K::kind(&()).to_string();
    for _ in 0..10 {
        let mut obj = api
            .get(name)
            .await
            .map_err(Error::kube(format!("read {kind} {name}")))?;
        change(obj.status_mut().get_or_insert_with(Default::default));
        let params = kube::api::PostParams {
            field_manager: Some(crate::constants::FIELD_MANAGER.into()),
            ..Default::default()
        };
        match api.replace_status(name, &params, &obj).await {
            Ok(o) => return Ok(o),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(Error::kube(format!("write status of {kind} {name}"))(e)),
        }
    }
    Err(Error::Conflict {
        step: format!("status of {kind} {name}"),
    })
}

/// Publishes an Event on `obj`. `action` is `Reason/detail` (such as `Started/add-voter/4`):
/// the reason is its first part, so Events of different steps are never folded into one series.
pub async fn publish_event<K: kube::Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: kube::runtime::events::EventType,
    action: &str,
    note: &str,
) {
    let event = kube::runtime::events::Event {
        type_,
        reason: action.split('/').next().unwrap_or(action).to_string(),
        note: Some(note.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        warn!(error = %e, "cannot publish Event");
    }
}

/// Shared state of every reconcile.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Probes members over their AdminServer.
    pub probe: AdminProbe,
    /// Publishes Events.
    pub recorder: Recorder,
    /// How long a pass waits before it looks again while a step settles.
    pub settle: Duration,
    /// Backups running in this process.
    pub backups: Arc<backup::Running>,
    /// The Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The reflector stores of the controllers' scope; `None` outside `quorate run` (a pass
    /// then lists and applies as it goes).
    pub stores: Option<support::Stores>,
    /// What this process last applied of each support object.
    pub applied: Arc<support::Applied>,
    /// Ensembles to read from the API server rather than the store on their next pass.
    pub stale: Arc<support::Stale>,
    /// The leader Lease, read before each effect on members; `None` without leader election.
    pub lease: Option<leader::LeaseFence>,
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client) -> Result<Context, Error> {
        Context::with_metrics(client, Arc::default())
    }

    /// A context for `client` that records into `metrics`.
    pub fn with_metrics(client: Client, metrics: Arc<Metrics>) -> Result<Context, Error> {
        let reporter = Reporter {
            controller: "quorate".into(),
            instance: std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .ok(),
        };
        Ok(Context {
            recorder: Recorder::new(client.clone(), reporter),
            probe: AdminProbe::new(Duration::from_secs(2))?,
            client,
            settle: Duration::from_secs(1),
            backups: Arc::default(),
            metrics,
            stores: None,
            applied: Arc::default(),
            stale: Arc::default(),
            lease: None,
        })
    }

    /// `Ok` when this process may act on members now: it runs without leader election, or it
    /// still holds the leader Lease (see [`leader::LeaseFence`]). Asked right before each effect.
    pub async fn may_act(&self) -> Result<(), Error> {
        match &self.lease {
            Some(fence) => fence.check().await,
            None => Ok(()),
        }
    }
}

/// The ensemble an object belongs to: every log line and Event about it names the ensemble.
pub trait OfEnsemble: kube::Resource<DynamicType = ()> {
    /// The MasterEnsemble's name.
    fn ensemble(&self) -> String;
}

impl OfEnsemble for MasterEnsemble {
    fn ensemble(&self) -> String {
        self.name_any()
    }
}

impl OfEnsemble for ZkBackup {
    fn ensemble(&self) -> String {
        self.spec.ensemble_ref.name.clone()
    }
}

impl OfEnsemble for ZkRestore {
    fn ensemble(&self) -> String {
        self.spec.ensemble_ref.name.clone()
    }
}

/// What an operator without a permission it needs is told to do.
const FORBIDDEN_HINT: &str = "quorate's ServiceAccount lacks a permission it needs; grant the rules of charts/quorate/templates/rbac.yaml (or deploy/operator-rbac.yaml)";

/// One reconcile pass of `kind`, timed and counted; a refused permission is reported on the
/// object (a Warning Event, and the ensemble's status message) rather than only retried.
async fn pass<K, Fut>(
    kind: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: impl FnOnce(Arc<K>, Arc<Context>) -> Fut,
) -> Result<Action, Error>
where
    K: OfEnsemble,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    let started = std::time::Instant::now();
    let result = reconcile(obj.clone(), ctx.clone()).await;
    let category = result.as_ref().err().map(Error::category);
    ctx.metrics.reconciled(kind, started.elapsed(), category);
    if let Err(e) = &result
        && e.category() == "forbidden"
    {
        let note = format!("{e}. {FORBIDDEN_HINT}");
        publish_event(
            &ctx,
            obj.as_ref(),
            kube::runtime::events::EventType::Warning,
            &format!("Forbidden/{kind}"),
            &note,
        )
        .await;
        if kind == MasterEnsemble::kind(&()) {
            let api: Api<MasterEnsemble> =
                Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap_or_default());
            let patch = serde_json::json!({"status": {"message": note}});
            if let Err(e) = api
                .patch_status(
                    &obj.name_any(),
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
            {
                warn!(ensemble = %obj.ensemble(), error = %e, "cannot record the refused permission in status");
            }
        }
    }
    result
}

fn error_policy<K: OfEnsemble>(obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    let object = obj.name_any();
    let namespace = obj.namespace().unwrap_or_default();
    let ensemble = obj.ensemble();
    let category = error.category();
    match category {
        "forbidden" => {
            tracing::error!(%namespace, %ensemble, %object, category, %error, hint = FORBIDDEN_HINT, "reconcile refused by RBAC");
            Action::requeue(Duration::from_secs(30))
        }
        "conflict" => {
            warn!(%namespace, %ensemble, %object, category, %error, "reconcile failed");
            Action::requeue(Duration::from_secs(1))
        }
        _ => {
            warn!(%namespace, %ensemble, %object, category, %error, "reconcile failed");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// How `quorate run` runs.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The namespaces to manage; empty means every namespace.
    pub namespaces: Vec<String>,
    /// Leader election; `None` runs the controllers at once (a single replica).
    pub lease: Option<leader::LeaseOptions>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub serve: Vec<std::net::SocketAddr>,
    /// Passes of each controller run at once, per scope (0: no bound).
    pub concurrency: u16,
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The three controllers over one namespace (or all of them), until SIGTERM or SIGINT.
async fn controllers(ctx: Arc<Context>, namespace: Option<String>, concurrency: u16) {
    let client = ctx.client.clone();
    let config = || kube::runtime::controller::Config::default().concurrency(concurrency);
    let ns = namespace.as_deref();
    let members = watcher::Config::default().labels(crate::constants::LABEL_ENSEMBLE);
    info!(namespace = ns.unwrap_or("*"), "controllers starting");
    // An ensemble's pass is triggered by its spec (generation), labels and annotations (the
    // restore fence), by its member Pods and PVCs, and by its requeue: not by the operator's own
    // status writes, which would each wake one more pass that changes nothing.
    let (reader, writer) = kube::runtime::reflector::store();
    let ensembles_listed = Listed::new(reader.clone());
    let trigger = watcher::watcher(
        scoped::<MasterEnsemble>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .inspect(ensembles_listed.observe())
    .applied_objects()
    .predicate_filter(
        predicates::generation
            .combine(predicates::annotations)
            .combine(predicates::labels),
        Default::default(),
    );
    // Pods, PVCs, Services and PDBs come from reflector stores: a converged pass lists
    // nothing and applies nothing (support.rs); a change to any of them wakes its ensemble.
    let (pods, pod_events) = reflected(scoped::<Pod>(&client, ns), members.clone(), trim_pod);
    let (pvcs, pvc_events) = reflected(
        scoped::<PersistentVolumeClaim>(&client, ns),
        members.clone(),
        |_| {},
    );
    let (services, service_events) =
        reflected(scoped::<Service>(&client, ns), members.clone(), |_| {});
    let (pdbs, pdb_events) = reflected(scoped::<PodDisruptionBudget>(&client, ns), members, |_| {});
    let ctx = Arc::new(Context {
        stores: Some(support::Stores {
            pods,
            pvcs,
            services,
            pdbs,
        }),
        ..(*ctx).clone()
    });
    let ensembles = Controller::for_stream(trigger, reader)
        .owns_stream(pod_events)
        .owns_stream(pvc_events)
        .owns_stream(service_events)
        .owns_stream(pdb_events)
        .with_config(config())
        .shutdown_on_signal()
        .run(
            |o, c| pass("MasterEnsemble", o, c, ensemble::reconcile),
            error_policy,
            ctx.clone(),
        );
    // As Controller::new builds it, with the store's first list observed for the metrics.
    let (backup_store, writer) = kube::runtime::reflector::store();
    let backups_listed = Listed::new(backup_store.clone());
    let backup_trigger =
        watcher::watcher(scoped::<ZkBackup>(&client, ns), watcher::Config::default())
            .reflect(writer)
            .inspect(backups_listed.observe())
            .applied_objects();
    // While these controllers run, a scrape forgets the series of the ensembles and ZkBackups
    // of this scope that their stores no longer hold (deleted).
    let _watched = ctx.metrics.watch(
        namespace.clone(),
        ensembles_listed.exists(),
        backups_listed.exists(),
    );
    let backups = Controller::for_stream(backup_trigger, backup_store)
        .with_config(config())
        .shutdown_on_signal()
        .run(
            |o, c| pass("ZkBackup", o, c, backup::reconcile),
            error_policy,
            ctx.clone(),
        );
    let restores = Controller::new(scoped::<ZkRestore>(&client, ns), watcher::Config::default())
        .owns(
            scoped::<Pod>(&client, ns),
            watcher::Config::default().labels(crate::constants::LABEL_RESTORE),
        )
        .with_config(config())
        .shutdown_on_signal()
        .run(
            |o, c| pass("ZkRestore", o, c, restore::reconcile),
            error_policy,
            ctx,
        );
    futures::join!(
        drain(ensembles, "MasterEnsemble"),
        drain(backups, "ZkBackup"),
        drain(restores, "ZkRestore")
    );
}

/// One controller's store of a watched scope, for the metrics: whether an object exists, once
/// the store holds its first complete list. The list is seen complete on the watch's
/// `InitDone`, after the reflector applied it; `Store::wait_until_ready` is not polled: the
/// controller waits on that same store, and a second waiter would take its wake-up.
#[derive(Clone)]
struct Listed<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    done: Arc<AtomicBool>,
}

impl<K> Listed<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    fn new(store: Store<K>) -> Self {
        Listed {
            store,
            done: Arc::default(),
        }
    }

    /// Watches the reflected stream (after `reflect`) for the end of the first list.
    fn observe(&self) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
        let done = self.done.clone();
        move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                done.store(true, Ordering::Release);
            }
        }
    }

    /// Whether the store holds an object; `None` before its first complete list.
    fn exists(&self) -> Exists {
        let listed = self.clone();
        Box::new(move |key| {
            listed.done.load(Ordering::Acquire).then(|| {
                let at = ObjectRef::<K>::new(&key.name).within(&key.namespace);
                listed.store.get(&at).is_some()
            })
        })
    }
}

/// What a pass reads of a stored member Pod: its metadata, its status and the node it runs on.
/// The rest of the spec (the containers' scripts, environment, probes: most of a Pod's size) is
/// dropped: it is most of what an operator of 1,000 ensembles holds
/// (`benches/thousand_ensembles.rs`). Nothing writes a stored Pod back.
pub(crate) fn trim_pod(pod: &mut Pod) {
    if let Some(spec) = pod.spec.as_mut() {
        *spec = k8s_openapi::api::core::v1::PodSpec {
            node_name: spec.node_name.take(),
            ..Default::default()
        };
    }
}

/// A label-selected watch of `api` reflected into a store (managed fields stripped: a pass
/// never reads them; then `trim`), and the stream of touched objects that triggers their
/// owners' passes.
fn reflected<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
) -> (
    kube::runtime::reflector::Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = kube::runtime::reflector::store();
    let events = watcher::watcher(api, config)
        .default_backoff()
        .modify(move |o: &mut K| {
            o.managed_fields_mut().clear();
            trim(o);
        })
        .reflect(writer)
        .touched_objects();
    (reader, events)
}

/// Runs a controller's stream of results to its end; its errors were handled by the error
/// policy already.
async fn drain<T, E: std::fmt::Display>(
    results: impl futures::Stream<Item = Result<T, E>>,
    kind: &'static str,
) {
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(kind, error = %e, "reconcile error");
            }
        })
        .await
}

/// Runs the controllers until the process is stopped: serves the endpoints, waits for the
/// leader Lease when `options.lease` is set, then watches every namespace or the listed ones.
pub async fn run(client: Client, options: RunOptions) -> Result<(), Error> {
    failpoints::configure_from_env()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    crate::serve::serve(&options.serve, metrics.clone(), health.clone()).await?;
    let mut ctx = Context::with_metrics(client.clone(), metrics.clone())?;
    ctx.lease = options
        .lease
        .as_ref()
        .map(|l| leader::LeaseFence::new(client.clone(), l));
    let ctx = Arc::new(ctx);
    info!(
        namespaces = %if options.namespaces.is_empty() { "*".to_string() } else { options.namespaces.join(",") },
        "quorate operator starting"
    );
    let work = {
        let health = health.clone();
        let metrics = metrics.clone();
        move || async move {
            health.set_connected(true);
            let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
                vec![None]
            } else {
                options.namespaces.iter().cloned().map(Some).collect()
            };
            let concurrency = options.concurrency;
            futures::future::join_all(
                scopes
                    .into_iter()
                    .map(|ns| controllers(ctx.clone(), ns, concurrency)),
            )
            .await;
            metrics.set_leader(false);
            info!("controllers stopped");
            Ok(())
        }
    };
    match &options.lease {
        Some(lease) => leader::run_as_leader(client, lease, metrics, health, work).await,
        None => {
            metrics.set_leader(true);
            work().await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> Error {
        let status: kube::core::Status =
            serde_json::from_value(serde_json::json!({"code": code, "message": message}))
                .expect("status");
        Error::Kube {
            what: "apply PodDisruptionBudget ns/masters".into(),
            source: kube::Error::Api(Box::new(status)),
        }
    }

    #[test]
    fn metrics_forget_an_object_once_its_store_has_listed_without_it() {
        let (store, mut writer) = kube::runtime::reflector::store::<MasterEnsemble>();
        let (backup_store, _backup_writer) = kube::runtime::reflector::store::<ZkBackup>();
        let listed = Listed::new(store);
        let mut observe = listed.observe();
        let exists = listed.exists();
        let metrics = Arc::new(Metrics::new());
        let _watched = metrics.watch(
            Some("ns".into()),
            listed.exists(),
            Listed::new(backup_store).exists(),
        );
        let ens: MasterEnsemble = serde_json::from_value(serde_json::json!({
            "apiVersion": "quorate.dev/v1alpha1", "kind": "MasterEnsemble",
            "metadata": {"name": "masters", "namespace": "ns"}, "spec": {"replicas": 3}
        }))
        .expect("ensemble");
        let key = crate::metrics::ObjectKey::new("ns", "masters");
        let series = "quorate_ensemble_voters{ensemble_namespace=\"ns\",ensemble=\"masters\"}";
        let mut apply = |event: watcher::Event<MasterEnsemble>| {
            writer.apply_watcher_event(&event);
            observe(&Ok(event));
        };
        let scraped = || {
            metrics
                .encode(jiff::Timestamp::now())
                .expect("encode")
                .contains(series)
        };
        metrics.ensemble(&key, crate::metrics::EnsembleGauges::steady(3));
        apply(watcher::Event::Init);
        apply(watcher::Event::InitApply(ens.clone()));
        assert_eq!(exists(&key), None, "the first list is not complete");
        assert!(scraped());
        apply(watcher::Event::InitDone);
        assert_eq!(exists(&key), Some(true));
        assert!(scraped());
        apply(watcher::Event::Delete(ens.clone()));
        assert_eq!(exists(&key), Some(false));
        assert!(!scraped(), "a deleted ensemble's series stayed");
        // Created again, then deleted while the watch was down: the relist that follows has
        // no Delete event, only a complete list without it.
        apply(watcher::Event::Apply(ens));
        metrics.ensemble(&key, crate::metrics::EnsembleGauges::steady(3));
        apply(watcher::Event::Init);
        assert_eq!(
            exists(&key),
            Some(true),
            "the store holds on during a relist"
        );
        assert!(scraped());
        apply(watcher::Event::InitDone);
        assert_eq!(exists(&key), Some(false));
        assert!(
            !scraped(),
            "an ensemble missing from a relist kept its series"
        );
    }

    #[test]
    fn a_refused_permission_is_its_own_category_but_a_terminating_namespace_is_not() {
        let rbac = api_error(
            403,
            "poddisruptionbudgets.policy \"masters\" is forbidden: User \"system:serviceaccount:quorate-system:quorate\" cannot patch resource \"poddisruptionbudgets\"",
        );
        assert_eq!(rbac.category(), "forbidden");
        let terminating = api_error(
            403,
            "poddisruptionbudgets.policy \"masters\" is forbidden: unable to create new content in namespace e2e-3 because it is being terminated",
        );
        assert_eq!(terminating.category(), "kube");
        assert_eq!(api_error(409, "conflict").category(), "conflict");
        assert_eq!(api_error(500, "etcd").category(), "kube");
    }

    #[test]
    fn a_stored_pod_keeps_its_metadata_status_and_node_and_nothing_else_of_its_spec() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "masters-1", "labels": {"a": "b"}, "annotations": {"c": "d"}},
            "spec": {
                "nodeName": "node-1",
                "initContainers": [{"name": "prepare", "command": ["/bin/sh", "-c", "long script"]}],
                "containers": [{"name": "zookeeper", "image": "zookeeper:3.9.5"}],
            },
            "status": {"phase": "Running", "podIP": "10.1.2.3"},
        }))
        .expect("pod");
        let mut trimmed = pod.clone();
        trim_pod(&mut trimmed);
        assert_eq!(trimmed.metadata, pod.metadata);
        assert_eq!(trimmed.status, pod.status);
        let spec = trimmed.spec.expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert!(spec.containers.is_empty() && spec.init_containers.is_none());
    }
}
