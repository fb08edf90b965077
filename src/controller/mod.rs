//! Wiring: one reconcile per MasterEnsemble, on kube-runtime's Controller.
//!
//! ```text
//! observe (Pods, PVCs, ZooKeeper, status) -> plan (pure) -> claim (status CAS)
//!   -> execute ONE step (idempotent ensure_*) -> record (status, Event) -> requeue
//! ```

pub mod backup;
pub mod ensemble;
pub mod execute;
pub mod observe;
pub mod restore;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::crd::{MasterEnsemble, ZkBackup, ZkRestore};
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
    /// The AdminServer probe could not be built.
    #[error("AdminServer probe: {0}")]
    Probe(#[from] crate::zk::admin::Error),
    /// Something about the ensemble's objects is not as quorate left it.
    #[error("{0}")]
    Inconsistent(String),
    /// A backup store or artifact could not be used.
    #[error("{0}")]
    Backup(String),
}

impl Error {
    /// A bounded category for metrics, Event reasons and the error policy.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube {
                source: kube::Error::Api(s),
                ..
            } if s.code == 409 => "conflict",
            Error::Kube { .. } => "kube",
            Error::Conflict { .. } => "conflict",
            Error::Membership { .. } => "zookeeper",
            Error::Probe(_) => "probe",
            Error::Inconsistent(_) => "inconsistent",
            Error::Backup(_) => "backup",
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
}

impl Context {
    /// A context for `client`.
    pub fn new(client: Client) -> Result<Context, Error> {
        let reporter = Reporter {
            controller: "quorate".into(),
            instance: std::env::var("HOSTNAME").ok(),
        };
        Ok(Context {
            recorder: Recorder::new(client.clone(), reporter),
            probe: AdminProbe::new(Duration::from_secs(2))?,
            client,
            settle: Duration::from_secs(2),
            backups: Arc::default(),
        })
    }
}

fn error_policy<K: kube::Resource>(obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    warn!(object = %kube::ResourceExt::name_any(obj.as_ref()), category = error.category(), %error, "reconcile failed");
    match error.category() {
        "conflict" => Action::requeue(Duration::from_secs(1)),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

/// Runs the MasterEnsemble controller until the process is stopped.
pub async fn run(client: Client) -> Result<(), Error> {
    let ctx = Arc::new(Context::new(client.clone())?);
    let ensembles: Api<MasterEnsemble> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let members = watcher::Config::default().labels(crate::constants::LABEL_ENSEMBLE);
    info!("quorate controller starting");
    let ensembles = Controller::new(ensembles, watcher::Config::default())
        .owns(pods, members.clone())
        .owns(pvcs, members)
        .shutdown_on_signal()
        .run(ensemble::reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
        });
    let backups = Controller::new(
        Api::<ZkBackup>::all(client.clone()),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(backup::reconcile, error_policy, ctx.clone())
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "backup reconcile error");
        }
    });
    let restores = Controller::new(
        Api::<ZkRestore>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().labels("quorate.dev/restore"),
    )
    .shutdown_on_signal()
    .run(restore::reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "restore reconcile error");
        }
    });
    futures::join!(ensembles, backups, restores);
    Ok(())
}
