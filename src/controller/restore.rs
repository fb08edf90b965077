//! The reconcile of one ZkRestore: a state machine in `status.phase`, one phase per pass. The
//! phases that touch members ask the pure machine ([`restore_pass::next`]) what to do.
//!
//! ```text
//! Pending -> Verifying (marker, manifest, every byte's SHA-256, counts; the zxid check of I7;
//!            then the ensemble's fence claimed with a compare-and-set)
//!   offline:    Stopping (once the ensemble's controller handed the members over: every member
//!               Pod deleted, volumes kept)
//!               -> Restoring (each member recreated with the restore init container)
//!               -> Starting (all serve, a leader; tree artifacts replayed; counts checked;
//!               the fence lifted) -> Ready
//!   online:     Restoring (once handed over: replayed through the leader, extra znodes
//!               pruned) -> Starting (the fence lifted) -> Ready
//!   verifyOnly: Restoring (a scratch member loads the artifact) -> Starting (counts and zxid
//!               compared, the scratch member deleted) -> Ready
//! any failure -> Failed, with where it stopped and what was left as it was.
//! ```
//!
//! Nothing touches a member before Verifying has passed: a corrupt or incomplete artifact, or
//! one older than the live data without `allowOlder`, fails the restore with every member as it
//! was. When no member serves, the live data's newest zxid comes from the members' volumes
//! (one read-only probe Pod per volume, this restore's own); a volume that cannot be read
//! leaves it unknown, and the restore is refused unless `allowOlder` is set. One restore of an
//! ensemble holds its fence at a time, and none touches a member before the ensemble's
//! controller has said it saw the fence (`status.restore`), so no membership step runs beside
//! a restore.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument, warn};

use super::backup::{record_condition, serving_members, store_for, super_login};
use super::recovery;
use super::{Context, Error, publish_event};
use crate::backup::artifact::{self, Format, parse_zxid, zxid_hex};
use crate::backup::engine::{self, Verified};
use crate::backup::store::Store;
use crate::constants::*;
use crate::crd::{
    Destination, MasterEnsemble, MemberRole, RestoreMemberStatus, RestoreMode, RestorePhase,
    VerifiedArtifact, ZkBackup, ZkRestore, ZkRestoreStatus, condition,
};
use crate::executor::resources::member::{
    EnsembleContext, MemberStart, build_member_pod, build_member_pvc,
};
use crate::executor::resources::names::{member_host, member_pod, server_id_of};
use crate::executor::resources::probe::{
    RESTORE_PROBE_COMPONENT, VolumesZxid, build_restore_probe_pod, volumes_zxid,
};
use crate::executor::resources::restore::{
    RestoreInit, build_scratch_pod, is_restore_pod, scratch_pod, with_restore,
};
use crate::executor::resources::zoo_cfg::initial_dynamic;
pub(super) use crate::planner::restore::restore_in_the_way;
use crate::planner::restore::{
    ArtifactRefusal, Consent, LiveData, judge_artifact, members_to_restore, unrelated_history,
};
use crate::planner::restore_pass::{
    self, ClaimVerdict, FenceHolder, Placed, RestoreKind, RestorePass, RestoreView, may_claim,
};
use crate::planner::{Desired, ServerId};
use crate::zk::{MemberAddr, observe_ensemble};

/// How long members may take to serve after a restore before it is declared failed.
pub const START_TIMEOUT: Duration = Duration::from_secs(600);

/// Replaces a ZkRestore's status after `change` (see [`super::update_status`]).
pub(super) async fn update(
    api: &Api<ZkRestore>,
    name: &str,
    change: impl FnMut(&mut ZkRestoreStatus),
) -> Result<(), Error> {
    super::update_status(api, name, change).await.map(|_| ())
}

/// The restore's view of where its artifact is.
struct Source {
    store: Store,
    /// The bucket and credentials Secret (in the restore's namespace) that hold it.
    destination: Destination,
    /// The namespace and ZkBackup the artifact was taken in (its path in the store).
    namespace: String,
    backup: String,
    id: String,
}

async fn resolve_source(ctx: &Context, zkr: &ZkRestore) -> Result<Source, String> {
    let ns = zkr.namespace().unwrap_or_default();
    let backups: Api<ZkBackup> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(r) = &zkr.spec.source.backup {
        let backup = backups
            .get_opt(&r.name)
            .await
            .map_err(|e| format!("read ZkBackup {ns}/{}: {e}", r.name))?
            .ok_or_else(|| {
                format!(
                    "spec.source.backup: ZkBackup {ns}/{} does not exist",
                    r.name
                )
            })?;
        let store = store_for(&ctx.client, &ns, &backup.spec.destination)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Source {
            store,
            destination: backup.spec.destination,
            namespace: ns,
            backup: r.name.clone(),
            id: r.artifact.clone(),
        });
    }
    let location = zkr.spec.source.location.clone().unwrap_or_default();
    // Bucket-only: the destination given names the bucket and its credentials Secret; no
    // ZkBackup is needed (a new cluster after a disaster).
    if let Some(destination) = &zkr.spec.source.destination {
        let store = store_for(&ctx.client, &ns, destination)
            .await
            .map_err(|e| format!("spec.source.destination: {e}"))?;
        let (namespace, backup, id) = store.artifact_at(&location).ok_or_else(|| {
            format!(
                "spec.source.location {location} is not an artifact of spec.source.destination ({}/<namespace>/<backup>/<id>)",
                store.url()
            )
        })?;
        return Ok(Source {
            store,
            destination: destination.clone(),
            namespace,
            backup,
            id,
        });
    }
    let list = backups
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("list ZkBackups in {ns}: {e}"))?;
    for backup in list.items {
        let Ok(store) = store_for(&ctx.client, &ns, &backup.spec.destination).await else {
            continue;
        };
        if let Some((namespace, b, id)) = store.artifact_at(&location)
            && b == backup.name_any()
        {
            return Ok(Source {
                store,
                destination: backup.spec.destination,
                namespace,
                backup: b,
                id,
            });
        }
    }
    Err(format!(
        "spec.source.location {location}: no ZkBackup in {ns} stores artifacts there (its credentials come from the ZkBackup's destination; set spec.source.destination to restore from a bucket alone)"
    ))
}

fn verified_status(v: &Verified, location: &str) -> VerifiedArtifact {
    let m = &v.manifest;
    VerifiedArtifact {
        id: m.id.clone(),
        namespace: m.namespace.clone(),
        backup: m.backup.clone(),
        format: match m.format {
            Format::Snapshot => "zookeeper-snapshot".into(),
            Format::Tree => "quorate-tree-v1".into(),
        },
        sha256: m.sha256.clone(),
        bytes: m.bytes as i64,
        zxid: zxid_hex(m.zxid),
        data_zxid: zxid_hex(m.data_zxid),
        znodes: m.znodes as i64,
        user_znodes: m.user_znodes as i64,
        location: location.into(),
    }
}

fn format_of(a: &VerifiedArtifact) -> Format {
    if a.format == "quorate-tree-v1" {
        Format::Tree
    } else {
        Format::Snapshot
    }
}

fn hosts_of(members: &[(MemberAddr, Option<MemberRole>)]) -> String {
    members
        .iter()
        .map(|(a, _)| a.client_address())
        .collect::<Vec<_>>()
        .join(",")
}

/// One pass over one ZkRestore.
#[instrument(skip_all, fields(namespace = %zkr.namespace().unwrap_or_default(), ensemble = %zkr.spec.ensemble_ref.name, restore = %zkr.name_any()))]
pub async fn reconcile(zkr: Arc<ZkRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let now = Timestamp::now();
    let ns = zkr.namespace().unwrap_or_default();
    let name = zkr.name_any();
    let api: Api<ZkRestore> = Api::namespaced(ctx.client.clone(), &ns);
    // A pass acts on the stored phase, never on a watch cache that has not yet seen this
    // controller's last status write: acting on that would repeat a phase already left (a
    // refused restore's pass that starts its volume probes again, say).
    let Some(zkr) = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("read ZkRestore {ns}/{name}")))?
    else {
        return Ok(Action::await_change());
    };
    let zkr = &zkr;
    let status = zkr.status.clone().unwrap_or_default();
    // An online restore's members never stopped: a failure lifts its fence (the data is as
    // the message says). An offline one keeps it for a person to decide.
    let lift_on_failure = RestoreKind::of(&zkr.spec) == RestoreKind::Online;
    let fail = |phase_was: &str, message: String, reason: &'static str| {
        let api = api.clone();
        let name = name.clone();
        let phase_was = phase_was.to_string();
        let ctx = ctx.clone();
        let (ns, ens_name) = (ns.clone(), zkr.spec.ensemble_ref.name.clone());
        async move {
            warn!(%message, "restore failed");
            if lift_on_failure {
                lift_fence(&ctx, &ns, &ens_name, &name).await?;
            }
            update(&api, &name, |s| {
                s.phase = Some(RestorePhase::Failed);
                s.finished_at = Some(Time(Timestamp::now()));
                s.message = Some(format!("failed while {phase_was}: {message}"));
                record_condition(
                    &mut s.conditions,
                    condition::READY,
                    false,
                    reason,
                    &message,
                    Timestamp::now(),
                );
            })
            .await
        }
    };
    match status.phase {
        None => {
            update(&api, &name, |s| {
                s.phase = Some(RestorePhase::Pending);
                s.started_at = Some(Time(now));
                s.message = Some("accepted".into());
            })
            .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Some(RestorePhase::Pending) => {
            update(&api, &name, |s| {
                s.phase = Some(RestorePhase::Verifying);
                s.message = Some(
                    if zkr.spec.source.survivors.is_some() {
                        "reading the survivors' volumes before touching any member"
                    } else {
                        "verifying the artifact before touching any member"
                    }
                    .into(),
                );
            })
            .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Some(RestorePhase::Verifying) if zkr.spec.source.survivors.is_some() => {
            recovery::verify(&ctx, zkr, &api, fail).await
        }
        Some(RestorePhase::Verifying) => verify(&ctx, zkr, &api, fail).await,
        Some(RestorePhase::Ready) | Some(RestorePhase::Failed) => Ok(Action::await_change()),
        Some(phase) => touch(&ctx, zkr, &api, phase, fail).await,
    }
}

/// Who holds the fence of `ens`, as restore `me` sees it.
async fn fence_holder(
    ctx: &Context,
    ns: &str,
    ens: &MasterEnsemble,
    me: &str,
) -> Result<FenceHolder, Error> {
    Ok(match ens.annotations().get(ANNOTATION_RESTORING) {
        None => FenceHolder::Nobody,
        Some(h) if h == me => FenceHolder::Me,
        Some(h) => FenceHolder::Other {
            name: h.clone(),
            phase: Api::<ZkRestore>::namespaced(ctx.client.clone(), ns)
                .get_opt(h)
                .await
                .map_err(Error::kube(format!("read ZkRestore {ns}/{h}")))?
                .map(|r| r.status.and_then(|s| s.phase)),
        },
    })
}

/// Sets the fence annotation of `ens` to `value` (`None` lifts it), conditioned on the
/// resourceVersion `ens` was read at: losing the race is [`Error::Conflict`].
async fn patch_fence(
    api: &Api<MasterEnsemble>,
    ens: &MasterEnsemble,
    value: Option<&str>,
) -> Result<(), Error> {
    let ns = ens.namespace().unwrap_or_default();
    let name = ens.name_any();
    let what = if value.is_some() { "claim" } else { "lift" };
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": ens.resource_version(),
        "annotations": {ANNOTATION_RESTORING: value},
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Err(Error::Conflict {
            step: format!("{what} the fence of {ns}/{name}"),
        }),
        Err(e) => Err(Error::kube(format!("{what} the fence of {ns}/{name}"))(e)),
    }
}

/// How often a claim reads the ensemble again after losing its compare-and-set to another
/// writer (the ensemble's own status writes move its resourceVersion too), before the pass
/// ends with a conflict; a verification that ends so is repeated whole.
const CLAIM_ATTEMPTS: usize = 3;

/// Claims the fence of `zkr`'s ensemble ([`may_claim`]) with a compare-and-set on the
/// ensemble's resourceVersion, so that of two restores that verified at once only one holds
/// it; each attempt reads the ensemble and judges its holder afresh. `Ok(Some(holder))` when a
/// running restore holds it.
pub(super) async fn claim_fence(ctx: &Context, zkr: &ZkRestore) -> Result<Option<String>, Error> {
    let ns = zkr.namespace().unwrap_or_default();
    let me = zkr.name_any();
    let ens_name = &zkr.spec.ensemble_ref.name;
    let api: Api<MasterEnsemble> = Api::namespaced(ctx.client.clone(), &ns);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let ens = api
            .get(ens_name)
            .await
            .map_err(Error::kube(format!("read MasterEnsemble {ns}/{ens_name}")))?;
        match may_claim(&fence_holder(ctx, &ns, &ens, &me).await?) {
            ClaimVerdict::Held => return Ok(None),
            ClaimVerdict::Refuse { holder } => return Ok(Some(holder)),
            ClaimVerdict::Take => match patch_fence(&api, &ens, Some(&me)).await {
                Ok(()) => {
                    info!(ensemble = %ens_name, "fence claimed");
                    return Ok(None);
                }
                Err(Error::Conflict { .. }) if attempt < CLAIM_ATTEMPTS => continue,
                Err(e) => return Err(e),
            },
        }
    }
}

/// Lifts the fence of `ensemble` if restore `me` holds it (a compare-and-set, so a fence
/// another restore took meanwhile stays).
pub(super) async fn lift_fence(
    ctx: &Context,
    ns: &str,
    ensemble: &str,
    me: &str,
) -> Result<(), Error> {
    let api: Api<MasterEnsemble> = Api::namespaced(ctx.client.clone(), ns);
    let Some(ens) = api
        .get_opt(ensemble)
        .await
        .map_err(Error::kube(format!("read MasterEnsemble {ns}/{ensemble}")))?
    else {
        return Ok(());
    };
    if ens
        .annotations()
        .get(ANNOTATION_RESTORING)
        .map(String::as_str)
        != Some(me)
    {
        return Ok(());
    }
    patch_fence(&api, &ens, None).await
}

/// The phases that touch members (Stopping, Restoring, Starting): observes, asks
/// [`restore_pass::next`], and acts on its answer.
async fn touch<F, Fut>(
    ctx: &Context,
    zkr: &ZkRestore,
    api: &Api<ZkRestore>,
    phase: RestorePhase,
    fail: F,
) -> Result<Action, Error>
where
    F: Fn(&str, String, &'static str) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    // Every act of these phases touches members: only while this process may act.
    ctx.may_act().await?;
    let ns = zkr.namespace().unwrap_or_default();
    let name = zkr.name_any();
    let ens_name = &zkr.spec.ensemble_ref.name;
    let kind = RestoreKind::of(&zkr.spec);
    let status = zkr.status.clone().unwrap_or_default();
    let while_ = match phase {
        RestorePhase::Stopping => "stopping",
        RestorePhase::Restoring => "restoring",
        _ => "starting",
    };
    let Some(ens) = Api::<MasterEnsemble>::namespaced(ctx.client.clone(), &ns)
        .get_opt(ens_name)
        .await
        .map_err(Error::kube(format!("read MasterEnsemble {ns}/{ens_name}")))?
    else {
        fail(
            while_,
            format!("MasterEnsemble {ns}/{ens_name} is gone"),
            "EnsembleNotFound",
        )
        .await?;
        return Ok(Action::await_change());
    };
    let fence = fence_holder(ctx, &ns, &ens, &name).await?;
    let uid = zkr.uid().unwrap_or_default();
    let needs_pods = phase == RestorePhase::Stopping
        || (phase == RestorePhase::Starting && kind == RestoreKind::Offline);
    let (pods, volumes) = if needs_pods {
        member_objects(ctx, &ns, ens_name).await?
    } else {
        Default::default()
    };
    let others = || pods.iter().filter(|(_, p)| !is_restore_pod(p, &uid));
    let placed_pods: Vec<(ServerId, Pod)> = match (phase, kind) {
        (RestorePhase::Starting, RestoreKind::Offline) => pods.clone().into_iter().collect(),
        (RestorePhase::Starting, RestoreKind::VerifyOnly) => {
            Api::<Pod>::namespaced(ctx.client.clone(), &ns)
                .get_opt(&scratch_pod(&name))
                .await
                .map_err(Error::kube("read scratch Pod"))?
                .map(|p| vec![(ServerId(1), p)])
                .unwrap_or_default()
        }
        _ => vec![],
    };
    let started = status.started_at.as_ref().map(|t| t.0);
    let view = RestoreView {
        kind,
        phase: Some(phase),
        verified: match kind {
            RestoreKind::Survivors => recovery::chosen(&status).is_some(),
            _ => status.artifact.is_some(),
        },
        fence,
        handed_over: ens.status.as_ref().and_then(|s| s.restore.as_deref()) == Some(&name),
        running: others()
            .filter(|(_, p)| p.metadata.deletion_timestamp.is_none())
            .map(|(id, _)| *id)
            .collect(),
        terminating: others()
            .filter(|(_, p)| p.metadata.deletion_timestamp.is_some())
            .count(),
        placed: placed_pods
            .iter()
            .map(|(id, p)| Placed {
                id: *id,
                failed: init_failure(p),
                ready: pod_ready(p),
            })
            .collect(),
        late: started
            .is_some_and(|t| Timestamp::now().duration_since(t).unsigned_abs() > START_TIMEOUT),
    };
    let fenced_note = if kind.stops_members() && view.fence == FenceHolder::Me {
        format!(
            "; the ensemble stays fenced (annotation {ANNOTATION_RESTORING}) for a person to decide"
        )
    } else {
        String::new()
    };
    match restore_pass::next(&view) {
        RestorePass::Claim => match claim_fence(ctx, zkr).await? {
            None => Ok(Action::requeue(Duration::from_millis(200))),
            Some(holder) => {
                fail(
                    while_,
                    format!("ZkRestore {ns}/{holder} holds the fence of {ns}/{ens_name}; this restore touches no member any more"),
                    "AnotherRestore",
                )
                .await?;
                Ok(Action::await_change())
            }
        },
        RestorePass::AwaitHandOver => {
            let message = format!(
                "waiting for the controller of {ns}/{ens_name} to hand the members over (it takes no step once it has seen the fence)"
            );
            if status.message.as_deref() != Some(&message) {
                update(api, &name, |s| s.message = Some(message.clone())).await?;
            }
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        RestorePass::Fail(f) => {
            if f.reason == "PlacementFailed" && kind == RestoreKind::Offline {
                let kept = format!(
                    "; members whose restore container finished hold the restored data, the others still hold their own data (kept in version-2.before-{uid} on each volume)"
                );
                fail(
                    while_,
                    format!("{}{kept}{fenced_note}", f.message),
                    f.reason,
                )
                .await?;
            } else {
                let message = match f.reason {
                    "StartTimeout" => {
                        format!("members did not serve within {}s", START_TIMEOUT.as_secs())
                    }
                    _ => f.message,
                };
                cleanup_scratch(ctx, zkr).await;
                fail(while_, format!("{message}{fenced_note}"), f.reason).await?;
            }
            Ok(Action::await_change())
        }
        RestorePass::StopMembers(ids) => {
            let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            for id in &ids {
                let Some(pod) = pods.get(id) else { continue };
                info!(member = id.0, "stopping member for the restore");
                match pods_api
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(Error::kube(format!("delete Pod of member {id}"))(e)),
                }
            }
            update(api, &name, |s| {
                s.message = Some(format!(
                    "stopping {} members (their volumes are kept)",
                    ids.len()
                ));
            })
            .await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        RestorePass::AwaitStopped(n) => {
            update(api, &name, |s| {
                s.message = Some(format!(
                    "waiting for {n} member Pods to go away (their volumes are kept)"
                ));
            })
            .await?;
            Ok(Action::requeue(Duration::from_secs(1)))
        }
        RestorePass::Stopped => {
            update(api, &name, |s| {
                s.phase = Some(RestorePhase::Restoring);
                if kind == RestoreKind::Survivors {
                    s.message = Some("every member stopped (volumes kept)".into());
                } else {
                    s.members = progress(&volumes, "Stopped");
                    s.message = Some(format!("{} members stopped", volumes.len()));
                }
            })
            .await?;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        RestorePass::Place if kind == RestoreKind::Survivors => {
            recovery::rebuild(ctx, zkr, api, fail).await
        }
        RestorePass::Place => restore_members(ctx, zkr, api, fail).await,
        RestorePass::AwaitMembers => {
            if kind != RestoreKind::VerifyOnly {
                let states: Vec<RestoreMemberStatus> = view
                    .placed
                    .iter()
                    .map(|p| RestoreMemberStatus {
                        server_id: i64::from(p.id.0),
                        state: if p.ready { "Serving" } else { "Starting" }.into(),
                        ..Default::default()
                    })
                    .collect();
                if status.members != states {
                    update(api, &name, |s| s.members = states.clone()).await?;
                }
            }
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        RestorePass::Judge if kind == RestoreKind::Survivors => {
            recovery::finish(ctx, zkr, api, fail).await
        }
        RestorePass::Judge => finish(ctx, zkr, api, placed_pods, fail).await,
        RestorePass::Accept
        | RestorePass::BeginVerifying
        | RestorePass::Verify
        | RestorePass::Idle => Ok(Action::await_change()),
    }
}

/// Said of every refusal in Verifying: nothing was done to the ensemble.
const UNTOUCHED: &str = "; no member was touched";

/// Verifying, one pass: no other restore of the ensemble in the way, the source and the
/// ensemble exist, the live data's newest zxid read ([`read_live_data`]), the artifact checked
/// byte by byte, then judged against the live data (I7); a refusal fails the restore with every
/// member as it was, and a pass leaves Verifying by claiming the fence ([`leave_verifying`]).
async fn verify<F, Fut>(
    ctx: &Context,
    zkr: &ZkRestore,
    api: &Api<ZkRestore>,
    fail: F,
) -> Result<Action, Error>
where
    F: Fn(&str, String, &'static str) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let ns = zkr.namespace().unwrap_or_default();
    let ens_name = &zkr.spec.ensemble_ref.name;
    let refuse = async |reason: &'static str, message: String| -> Result<Action, Error> {
        publish_event(
            ctx,
            zkr,
            EventType::Warning,
            &format!("Refused/{reason}"),
            &message,
        )
        .await;
        fail("verifying", message, reason).await?;
        Ok(Action::await_change())
    };
    // One restore of an ensemble at a time: the second would take over the fence, and the
    // first to finish would lift it while the other still runs.
    let all = api
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(format!("list ZkRestores in {ns}")))?;
    if let Some(other) = restore_in_the_way(zkr, &all.items) {
        return refuse("AnotherRestore", another_restore(zkr, &other)).await;
    }
    let source = match resolve_source(ctx, zkr).await {
        Ok(s) => s,
        Err(e) => {
            fail("verifying", format!("{e}{UNTOUCHED}"), "SourceNotFound").await?;
            return Ok(Action::await_change());
        }
    };
    let Some(ens) = Api::<MasterEnsemble>::namespaced(ctx.client.clone(), &ns)
        .get_opt(ens_name)
        .await
        .map_err(Error::kube(format!("read MasterEnsemble {ns}/{ens_name}")))?
    else {
        fail(
            "verifying",
            format!("MasterEnsemble {ns}/{ens_name} does not exist{UNTOUCHED}"),
            "EnsembleNotFound",
        )
        .await?;
        return Ok(Action::await_change());
    };
    let live = match read_live_data(ctx, zkr, api, &ens).await? {
        Ok(live) => live,
        Err(wait) => return Ok(wait),
    };
    let paths = source
        .store
        .artifact(&source.namespace, &source.backup, &source.id);
    info!(artifact = %source.id, location = %paths.location, "verifying");
    let verified = match engine::verify_artifact(&source.store, &source.id, &paths).await {
        Ok(v) => v,
        Err(e) => {
            let reason = match &e {
                engine::Error::Invalid(artifact::Invalid::Incomplete { .. }) => {
                    "ArtifactIncomplete"
                }
                engine::Error::Invalid(_) => "ArtifactCorrupt",
                _ => "VerificationFailed",
            };
            return refuse(reason, format!("refused: {e}{UNTOUCHED}")).await;
        }
    };
    if live.from_volumes {
        // Their answer is taken: no later pass reads them.
        delete_volume_probes(ctx, &ns, &zkr.name_any()).await?;
    }
    let from = &verified.manifest;
    let target_uid = ens.uid();
    match judge_artifact(
        &live.data,
        from.data_zxid,
        from.ensemble_uid.as_deref(),
        target_uid.as_deref(),
        zkr.spec.allow_older,
        zkr.spec.verify_only,
    ) {
        Ok(consent) => {
            // Leaving Verifying claims the ensemble's fence: of two restores that verified at
            // once, only one wins the compare-and-set.
            if RestoreKind::of(&zkr.spec).touches_members()
                && let Some(holder) = claim_fence(ctx, zkr).await?
            {
                return refuse("AnotherRestore", another_restore(zkr, &holder)).await;
            }
            let note = consent_note(from.ensemble_uid.as_deref(), target_uid.as_deref(), consent);
            let record = verified_status(&verified, &paths.location);
            leave_verifying(ctx, zkr, api, record, live.zxid(), note).await
        }
        Err(refusal) => {
            if let ArtifactRefusal::OlderThanLive { live_zxid, .. } = refusal {
                update(api, &zkr.name_any(), |s| {
                    s.live_data_zxid = Some(zxid_hex(live_zxid))
                })
                .await?;
            }
            let target = Ensemble {
                namespace: &ns,
                name: ens_name,
                uid: target_uid.as_deref(),
            };
            let source = Ensemble {
                namespace: &from.namespace,
                name: &from.ensemble,
                uid: from.ensemble_uid.as_deref(),
            };
            let message = refusal_message(&refusal, &live, source, target);
            refuse(refusal.reason(), message).await
        }
    }
}

/// Why a restore is refused while another restore of the same ensemble runs.
fn another_restore(zkr: &ZkRestore, other: &str) -> String {
    let ns = zkr.namespace().unwrap_or_default();
    format!(
        "refused: ZkRestore {ns}/{other} restores MasterEnsemble {ns}/{} already; one restore of an ensemble runs at a time (create this one again once {other} is Ready or Failed){UNTOUCHED}",
        zkr.spec.ensemble_ref.name
    )
}

/// What Verifying read of the live data.
struct LiveRead {
    /// As the artifact is judged against it.
    data: LiveData,
    /// Whether it came from the members' volumes (no member served), so their probes are done.
    from_volumes: bool,
    /// Why the members' volumes were read: which members did not serve.
    not_served: String,
}

impl LiveRead {
    /// The newest zxid, when known.
    fn zxid(&self) -> Option<i64> {
        match self.data {
            LiveData::Known { zxid, .. } => Some(zxid),
            _ => None,
        }
    }

    /// Where a known zxid came from, when not from a serving member.
    fn source_note(&self) -> &'static str {
        match (&self.data, self.from_volumes) {
            (LiveData::Known { .. }, true) => " (read from the members' volumes: no member serves)",
            _ => "",
        }
    }
}

/// The live data's newest zxid, read through the members the ensemble's status lists as
/// serving, else from the members' volumes (then `Err` with when to look again while their
/// probes answer). A verification never talks to the live ensemble beyond that read: even a
/// read session is a transaction (createSession, closeSession) that moves the live zxid. A
/// verify-only restore reads nothing live.
async fn read_live_data(
    ctx: &Context,
    zkr: &ZkRestore,
    api: &Api<ZkRestore>,
    ens: &MasterEnsemble,
) -> Result<Result<LiveRead, Action>, Error> {
    let ns = zkr.namespace().unwrap_or_default();
    let ens_name = &zkr.spec.ensemble_ref.name;
    let mut not_served = format!("no member of {ns}/{ens_name} serves");
    if zkr.spec.verify_only {
        return Ok(Ok(LiveRead {
            data: LiveData::Unread,
            from_volumes: false,
            not_served,
        }));
    }
    let members = serving_members(ens);
    if !members.is_empty() {
        let login = super_login(&ctx.client, &ns, ens_name).await?;
        match engine::live_data_zxid(&hosts_of(&members), login.clone()).await {
            Ok((zxid, user_znodes)) => {
                return Ok(Ok(LiveRead {
                    data: LiveData::Known {
                        zxid,
                        user_znodes: i64::try_from(user_znodes).unwrap_or(i64::MAX),
                    },
                    from_volumes: false,
                    not_served,
                }));
            }
            // The status may be stale (a paused ensemble, members lost since): read the
            // volumes as if none served.
            Err(e) => {
                not_served = format!(
                    "the members of {ns}/{ens_name} its status lists as serving do not answer ({e})"
                )
            }
        }
    }
    // No member serves (a quorum loss, members paused or down): the live data's newest zxid
    // comes from the members' volumes, read before the artifact (which may be large) is
    // downloaded and checked, and read again by no later pass.
    let data = match volumes_zxid_of(ctx, zkr, ens).await? {
        VolumesZxid::Reading { answered, of } => {
            update(api, &zkr.name_any(), |s| {
                s.message = Some(format!(
                    "{not_served}: reading the live data's newest zxid from the members' volumes ({answered} of {of} answered)"
                ));
            })
            .await?;
            return Ok(Err(Action::requeue(Duration::from_secs(2))));
        }
        // Every transaction counts on a volume (sessions too), so this errs towards "older": a
        // backup is never let past newer data. A volume cannot tell whether user data exists,
        // so it is taken to.
        VolumesZxid::Known(z) => LiveData::Known {
            zxid: i64::try_from(z).unwrap_or(i64::MAX),
            user_znodes: 1,
        },
        VolumesZxid::Unknown(why) => LiveData::Unknown(why),
    };
    Ok(Ok(LiveRead {
        data,
        from_volumes: true,
        not_served,
    }))
}

/// What every member's own counters say of the placed snapshot it loaded, when nothing
/// happened since ([`crate::backup::tree::loaded_untouched`]); `Err` says why they cannot
/// tell (the restored tree must then be walked).
async fn untouched_since_load(
    probe: &crate::zk::AdminProbe,
    addrs: &[MemberAddr],
    artifact: &VerifiedArtifact,
) -> Result<String, String> {
    let counts = engine::served_counts(probe, addrs).await?;
    crate::backup::tree::loaded_untouched(
        &counts,
        parse_zxid(&artifact.zxid).unwrap_or_default(),
        parse_zxid(&artifact.data_zxid).unwrap_or_default(),
        artifact.znodes as u64,
    )
}

/// An ensemble as a restore's refusals name it: the target, or the artifact's source.
#[derive(Clone, Copy)]
struct Ensemble<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: Option<&'a str>,
}

/// The message of a refusal by [`judge_artifact`]: what was found and how to go ahead anyway.
fn refusal_message(
    refusal: &ArtifactRefusal,
    live: &LiveRead,
    source: Ensemble,
    target: Ensemble,
) -> String {
    let Ensemble {
        namespace: ns,
        name: ens_name,
        uid,
    } = target;
    let again = "Set spec.allowOlder: true in a new ZkRestore to restore it anyway";
    let source_note = live.source_note();
    let not_served = &live.not_served;
    match refusal {
        ArtifactRefusal::LiveDataUnknown { why } => format!(
            "refused: {not_served} and the live data's newest zxid cannot be read from every member's volume ({why}), so the backup cannot be shown not to be older. {again}{UNTOUCHED}"
        ),
        ArtifactRefusal::UnrelatedHistory {
            source_uid,
            user_znodes,
        } => format!(
            "refused: the artifact was taken from MasterEnsemble {}/{} (uid {source_uid}), another history than {ns}/{ens_name}'s (uid {}): their zxids cannot be compared, and {ns}/{ens_name} holds {} that this restore would replace{source_note}. {again}{UNTOUCHED}",
            source.namespace,
            source.name,
            uid.unwrap_or("unknown"),
            if live.from_volumes {
                "data".to_string()
            } else {
                format!("{user_znodes} user znodes")
            },
        ),
        ArtifactRefusal::OlderThanLive {
            backup_zxid,
            live_zxid,
        } => format!(
            "refused: the backup's newest data (zxid {}) is older than the live data of {ns}/{ens_name} (zxid {}{source_note}); restoring it would overwrite newer data. {again}{UNTOUCHED}",
            zxid_hex(*backup_zxid),
            zxid_hex(*live_zxid)
        ),
    }
}

/// What a restore that goes ahead says of its artifact's history and age.
fn consent_note(
    from_uid: Option<&str>,
    target_uid: Option<&str>,
    consent: Consent,
) -> &'static str {
    if unrelated_history(from_uid, target_uid).is_some() {
        " (from another ensemble's history)"
    } else if consent == Consent::OlderData {
        " (older than the live data; allowOlder is set)"
    } else {
        ""
    }
}

/// Leaves Verifying for the kind's next phase (the fence claimed), recording the verified
/// artifact and the live data's zxid.
async fn leave_verifying(
    ctx: &Context,
    zkr: &ZkRestore,
    api: &Api<ZkRestore>,
    record: VerifiedArtifact,
    live_zxid: Option<i64>,
    note: &str,
) -> Result<Action, Error> {
    let next = RestoreKind::of(&zkr.spec).after_verifying();
    update(api, &zkr.name_any(), |s| {
        s.artifact = Some(record.clone());
        s.live_data_zxid = live_zxid.map(zxid_hex);
        s.phase = Some(next);
        s.message = Some(format!(
            "verified {} ({} bytes, sha256 {}, {} znodes){note}",
            record.id, record.bytes, record.sha256, record.znodes
        ));
    })
    .await?;
    publish_event(
        ctx,
        zkr,
        EventType::Normal,
        "Verified/artifact",
        &format!("{} verified", record.id),
    )
    .await;
    Ok(Action::requeue(Duration::from_millis(200)))
}

/// The live data's newest zxid from the volumes of the ensemble's members: starts this
/// restore's probe Pod on each member volume that has none yet and folds their answers.
async fn volumes_zxid_of(
    ctx: &Context,
    zkr: &ZkRestore,
    ens: &MasterEnsemble,
) -> Result<VolumesZxid, Error> {
    let (volumes, probes) = probe_volumes(ctx, zkr, ens).await?;
    Ok(volumes_zxid(&volumes, &probes))
}

/// Starts this restore's probe Pod on each member volume of `ens` that has none yet; returns
/// the member volumes and the probes there are.
pub(super) async fn probe_volumes(
    ctx: &Context,
    zkr: &ZkRestore,
    ens: &MasterEnsemble,
) -> Result<(BTreeSet<ServerId>, BTreeMap<ServerId, Pod>), Error> {
    let ns = ens.namespace().unwrap_or_default();
    let ens_name = ens.name_any();
    let restore = zkr.name_any();
    let (Some(ens_owner), Some(restore_owner)) =
        (ens.controller_owner_ref(&()), zkr.controller_owner_ref(&()))
    else {
        return Err(Error::Inconsistent(format!(
            "{ns}/{restore} has no uid yet"
        )));
    };
    let (pods, volumes) = member_objects(ctx, &ns, &ens_name).await?;
    let probes = volume_probes(ctx, &ns, &restore).await?;
    let ectx = EnsembleContext {
        name: &ens_name,
        namespace: &ns,
        spec: &ens.spec,
        owner: ens_owner,
    };
    let image = operator_image();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for id in volumes.iter().filter(|id| !probes.contains_key(id)) {
        let node = pods
            .get(id)
            .and_then(|p| p.spec.as_ref()?.node_name.clone());
        let pod =
            build_restore_probe_pod(&ectx, *id, &image, node, &restore, restore_owner.clone());
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => info!(member = %id, "no member serves: reading the member's volume"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::kube(format!("create the volume probe of {id}"))(e)),
        }
    }
    Ok((volumes, probes))
}

/// This restore's volume probe Pods, by the server id whose volume each reads.
async fn volume_probes(
    ctx: &Context,
    ns: &str,
    restore: &str,
) -> Result<BTreeMap<ServerId, Pod>, Error> {
    let selector = ListParams::default().labels(&format!(
        "{LABEL_RESTORE}={restore},{LABEL_COMPONENT}={RESTORE_PROBE_COMPONENT}"
    ));
    let list = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&selector)
        .await
        .map_err(Error::kube(format!(
            "list the volume probes of {ns}/{restore}"
        )))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|p| Some((ServerId(p.labels().get(LABEL_PROBE_OF)?.parse().ok()?), p)))
        .collect())
}

/// Deletes this restore's volume probes once their answer is used.
pub(super) async fn delete_volume_probes(
    ctx: &Context,
    ns: &str,
    restore: &str,
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    for (_, pod) in volume_probes(ctx, ns, restore).await? {
        let probe = pod.name_any();
        match api.delete(&probe, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("delete probe Pod {probe}"))(e)),
        }
    }
    Ok(())
}

pub(super) async fn member_objects(
    ctx: &Context,
    ns: &str,
    ensemble: &str,
) -> Result<(BTreeMap<ServerId, Pod>, BTreeSet<ServerId>), Error> {
    let objects = super::support::Objects::list(ctx, ns, ensemble).await?;
    Ok((
        objects
            .pods
            .into_iter()
            .filter_map(|p| Some((server_id_of(p.labels())?, p)))
            .collect(),
        objects
            .pvcs
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .filter_map(|c| server_id_of(c.labels()))
            .collect(),
    ))
}

fn progress(ids: &BTreeSet<ServerId>, state: &str) -> Vec<RestoreMemberStatus> {
    ids.iter()
        .map(|id| RestoreMemberStatus {
            server_id: i64::from(id.0),
            state: state.into(),
            ..Default::default()
        })
        .collect()
}

fn restore_init<'a>(
    destination: &'a Destination,
    artifact: &'a VerifiedArtifact,
    image: &'a str,
    uid: &'a str,
) -> RestoreInit<'a> {
    RestoreInit {
        image,
        destination,
        artifact,
        restore_id: uid,
    }
}

/// What the phases after verification start from: the restore's names, its status and the
/// artifact verification recorded.
struct Phase {
    ns: String,
    name: String,
    ens_name: String,
    status: ZkRestoreStatus,
    artifact: VerifiedArtifact,
}

/// The [`Phase`] of `zkr`, or `None` (after failing the restore in `phase`) when no verified
/// artifact is recorded.
async fn phase<F, Fut>(zkr: &ZkRestore, phase: &str, fail: &F) -> Result<Option<Phase>, Error>
where
    F: Fn(&str, String, &'static str) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let status = zkr.status.clone().unwrap_or_default();
    let Some(artifact) = status.artifact.clone() else {
        fail(
            phase,
            "no verified artifact recorded".into(),
            "Inconsistent",
        )
        .await?;
        return Ok(None);
    };
    Ok(Some(Phase {
        ns: zkr.namespace().unwrap_or_default(),
        name: zkr.name_any(),
        ens_name: zkr.spec.ensemble_ref.name.clone(),
        status,
        artifact,
    }))
}

async fn restore_members<F, Fut>(
    ctx: &Context,
    zkr: &ZkRestore,
    api: &Api<ZkRestore>,
    fail: F,
) -> Result<Action, Error>
where
    F: Fn(&str, String, &'static str) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let Some(Phase {
        ns,
        name,
        ens_name,
        status: _,
        artifact,
    }) = phase(zkr, "restoring", &fail).await?
    else {
        return Ok(Action::await_change());
    };
    let ens_api: Api<MasterEnsemble> = Api::namespaced(ctx.client.clone(), &ns);
    let ens = ens_api
        .get(&ens_name)
        .await
        .map_err(Error::kube(format!("read MasterEnsemble {ns}/{ens_name}")))?;
    let source = resolve_source(ctx, zkr).await.map_err(Error::Backup)?;
    let uid = zkr.uid().unwrap_or_default();
    let image = operator_image();
    let init = restore_init(&source.destination, &artifact, &image, &uid);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    if zkr.spec.mode == RestoreMode::Online && !zkr.spec.verify_only {
        let members = serving_members(&ens);
        let Some(leader) = members
            .iter()
            .find(|(_, r)| *r == Some(MemberRole::Leader))
            .or(members.first())
        else {
            fail(
                "restoring",
                format!("no member of {ns}/{ens_name} serves; nothing was changed"),
                "NotServing",
            )
            .await?;
            return Ok(Action::await_change());
        };
        let login = super_login(&ctx.client, &ns, &ens_name).await?;
        let paths = source
            .store
            .artifact(&artifact.namespace, &artifact.backup, &artifact.id);
        let verified = match engine::verify_artifact(&source.store, &artifact.id, &paths).await {
            Ok(v) if v.manifest.sha256 == artifact.sha256 => v,
            Ok(_) => {
                fail(
                    "restoring",
                    "the artifact changed since it was verified; nothing was changed".into(),
                    "ArtifactChanged",
                )
                .await?;
                return Ok(Action::await_change());
            }
            Err(e) => {
                fail(
                    "restoring",
                    format!("refused: {e}; nothing was changed"),
                    "ArtifactCorrupt",
                )
                .await?;
                return Ok(Action::await_change());
            }
        };
        info!(leader = %leader.0, "replaying through the leader");
        let report = engine::load_artifact(
            &source.store,
            &verified,
            &paths,
            &leader.0.client_address(),
            login.clone(),
            true,
            &|n| info!(znodes = n, "restore progress"),
        )
        .await;
        match report {
            Ok(r) if r.written != artifact.user_znodes as u64 => {
                fail("restoring", format!("the replay through server.{} wrote {} user znodes where the artifact holds {}; the live data is partly restored", leader.0.id, r.written, artifact.user_znodes), "CountMismatch").await?;
                return Ok(Action::await_change());
            }
            Ok(r) => {
                update(api, &name, |s| {
                    s.phase = Some(RestorePhase::Starting);
                    s.message = Some(format!(
                        "replayed through server.{}: {} created, {} updated, {} deleted, {} kept for live sessions (their ephemerals and the znodes above them), {} sequence counters raised",
                        leader.0.id, r.created, r.updated, r.deleted, r.kept_live, r.counters_raised
                    ));
                })
                .await?;
            }
            Err(e) => {
                fail("restoring", format!("the replay through server.{} stopped: {e}; the live data is partly restored (created and updated znodes stay, nothing was pruned yet)", leader.0.id), "ReplayFailed").await?;
                return Ok(Action::await_change());
            }
        }
        return Ok(Action::requeue(Duration::from_millis(200)));
    }

    let desired = Desired::try_from(&ens.spec).map_err(|e| Error::Inconsistent(e.to_string()))?;
    let Some(owner) = ens.controller_owner_ref(&()) else {
        return Err(Error::Inconsistent(format!("{ns}/{ens_name} has no uid")));
    };
    let ectx = EnsembleContext {
        name: &ens_name,
        namespace: &ns,
        spec: &ens.spec,
        owner,
    };
    let host = |id: ServerId| member_host(&ens_name, &ns, id, CLUSTER_DOMAIN);
    let voters: BTreeMap<ServerId, String> = ens
        .status
        .iter()
        .flat_map(|s| s.voters.iter())
        .filter_map(|v| u32::try_from(*v).ok())
        .map(|v| (ServerId(v), host(ServerId(v))))
        .collect();

    if zkr.spec.verify_only {
        let first = voters.keys().next().copied().unwrap_or(ServerId(1));
        let member = build_member_pod(
            &ectx,
            first,
            &initial_dynamic(&voters, first, &host(first)),
            &desired.spec_hash,
            MemberStart::Fresh,
        );
        let Some(restore_owner) = zkr.controller_owner_ref(&()) else {
            return Err(Error::Inconsistent(format!("{ns}/{name} has no uid")));
        };
        let pod = build_scratch_pod(member, &name, &ens_name, restore_owner, &init);
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(Error::kube(format!(
                    "create scratch Pod {}",
                    scratch_pod(&name)
                ))(e));
            }
        }
        update(api, &name, |s| {
            s.phase = Some(RestorePhase::Starting);
            s.message = Some(format!(
                "loading {} into the scratch member {}",
                artifact.id,
                scratch_pod(&name)
            ));
        })
        .await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let (pods, volumes) = member_objects(ctx, &ns, &ens_name).await?;
    // Every voter gets the same data, also one whose volume is gone (a lost node or disk):
    // a new empty volume for it, so the restored ensemble has its whole configuration and a
    // quorum, not one survivor waiting for voters that never come.
    let (members, lost) = members_to_restore(&volumes, &voters);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for id in &lost {
        match pvcs
            .create(&PostParams::default(), &build_member_pvc(&ectx, *id))
            .await
        {
            Ok(_) => info!(
                member = id.0,
                "a new volume for a voter whose volume was lost"
            ),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(Error::kube(format!("create the volume of member {id}"))(e));
            }
        }
    }
    for id in &members {
        if pods.contains_key(id) {
            continue;
        }
        let pod = with_restore(
            build_member_pod(
                &ectx,
                *id,
                &initial_dynamic(&voters, *id, &host(*id)),
                &desired.spec_hash,
                MemberStart::Fresh,
            ),
            &init,
        );
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(_) => info!(member = id.0, "member recreated with the restore"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(Error::kube(format!(
                    "create Pod {}",
                    member_pod(&ens_name, *id)
                ))(e));
            }
        }
    }
    update(api, &name, |s| {
        s.phase = Some(RestorePhase::Starting);
        s.members = progress(&members, "Restoring");
        s.message = Some(format!(
            "placing {} on {} members{}",
            artifact.id,
            members.len(),
            if lost.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} of them on new volumes: {:?} had lost theirs)",
                    lost.len(),
                    lost.iter().map(|id| id.0).collect::<Vec<_>>()
                )
            }
        ));
    })
    .await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// The exit code and reason of a failed restore init container, if it failed.
pub(super) fn init_failure(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    let s = statuses.iter().find(|s| s.name == "restore")?;
    let terminated = s
        .state
        .as_ref()
        .and_then(|st| st.terminated.clone())
        .or_else(|| s.last_state.as_ref().and_then(|st| st.terminated.clone()))?;
    (terminated.exit_code != 0).then(|| {
        format!(
            "exit code {}{}",
            terminated.exit_code,
            terminated
                .message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )
    })
}

pub(super) fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Every placed member serves (`targets`: the scratch member, or the ensemble's members; none
/// for an online restore): judges the restored data, lifts the fence, records Ready.
async fn finish<F, Fut>(
    ctx: &Context,
    zkr: &ZkRestore,
    api: &Api<ZkRestore>,
    targets: Vec<(ServerId, Pod)>,
    fail: F,
) -> Result<Action, Error>
where
    F: Fn(&str, String, &'static str) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let Some(Phase {
        ns,
        name,
        ens_name,
        status,
        artifact,
    }) = phase(zkr, "starting", &fail).await?
    else {
        return Ok(Action::await_change());
    };
    let started = status
        .started_at
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let late = Timestamp::now().duration_since(started).unsigned_abs() > START_TIMEOUT;
    // Starting fails: the scratch member (if any) goes, and the restore says why.
    let give_up = async |message: String, reason: &'static str| -> Result<Action, Error> {
        cleanup_scratch(ctx, zkr).await;
        fail("starting", message, reason).await?;
        Ok(Action::await_change())
    };
    let login = super_login(&ctx.client, &ns, &ens_name).await?;
    let format = format_of(&artifact);
    // Everyone serves. Where to talk to.
    let addrs: Vec<MemberAddr> = targets
        .iter()
        .filter_map(|(id, p)| Some(MemberAddr::new(*id, p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    let hosts = if zkr.spec.mode == RestoreMode::Online && !zkr.spec.verify_only {
        let ens = Api::<MasterEnsemble>::namespaced(ctx.client.clone(), &ns)
            .get(&ens_name)
            .await
            .map_err(Error::kube(format!("read MasterEnsemble {ns}/{ens_name}")))?;
        hosts_of(&serving_members(&ens))
    } else {
        let obs = observe_ensemble(&ctx.probe, &addrs, Duration::from_secs(3)).await;
        if obs.leader.is_none() || obs.synced.len() < addrs.len() {
            if late {
                return give_up(
                    "no leader was elected with every member synced".into(),
                    "NoLeader",
                )
                .await;
            }
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        addrs
            .iter()
            .map(MemberAddr::client_address)
            .collect::<Vec<_>>()
            .join(",")
    };
    let source = resolve_source(ctx, zkr).await.map_err(Error::Backup)?;
    let paths = source
        .store
        .artifact(&artifact.namespace, &artifact.backup, &artifact.id);
    super::failpoints::reached(super::failpoints::RESTORE_BEFORE_JUDGEMENT).await;
    let want_user = artifact.user_znodes as u64;
    let want_zxid = parse_zxid(&artifact.data_zxid).unwrap_or_default();
    // The judgement, never against the live tree as it moves (clients may write as soon as a
    // member serves): a replay is judged by what it wrote, a placed snapshot at its own zxid.
    let judged: Result<String, String> = if zkr.spec.mode == RestoreMode::Online
        && !zkr.spec.verify_only
    {
        // Judged by its replay, in Restoring.
        Ok(format!("{want_user} user znodes replayed"))
    } else if format == Format::Tree {
        // Tree artifacts placed nothing on the volumes: replay them now (into empty members).
        let loaded = match engine::verify_artifact(&source.store, &artifact.id, &paths).await {
            Ok(v) => {
                engine::load_artifact(
                    &source.store,
                    &v,
                    &paths,
                    &hosts,
                    login.clone(),
                    true,
                    &|n| info!(znodes = n, "restore progress"),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match loaded {
            Err(e) => {
                return give_up(
                    format!("replaying the tree into the restarted members failed: {e}"),
                    "ReplayFailed",
                )
                .await;
            }
            Ok(r) if r.written == want_user => Ok(format!("{want_user} user znodes replayed")),
            Ok(r) => Err(format!(
                "the replay wrote {} user znodes where the artifact holds {want_user}",
                r.written
            )),
        }
    } else if zkr.spec.verify_only
        && let [scratch] = addrs.as_slice()
    {
        // The scratch member serves no client: its own counters say what it loaded.
        match engine::loaded_counts(&ctx.probe, scratch, login.clone()).await {
            Ok(counts) => counts.judge(want_user, want_zxid).map(|note| {
                format!(
                    "{want_user} user znodes as of zxid {}{note}",
                    artifact.data_zxid
                )
            }),
            Err(e) if late => {
                return give_up(
                    format!("cannot read the scratch member's counts: {e}"),
                    "Unreadable",
                )
                .await;
            }
            Err(_) => return Ok(Action::requeue(Duration::from_secs(2))),
        }
    } else {
        match untouched_since_load(&ctx.probe, &addrs, &artifact).await {
            // Nothing happened since the members loaded the placed snapshot: their own
            // counters say what they hold, no walk needed.
            Ok(note) => Ok(format!(
                "{want_user} user znodes as of zxid {}{note}",
                artifact.data_zxid
            )),
            Err(why) => {
                // A placed snapshot keeps its zxids, and every later zxid is in a newer epoch.
                let at = match engine::restored_data(&hosts, login.clone(), want_zxid).await {
                    Ok(v) => v,
                    Err(e) => {
                        if late {
                            return give_up(
                                format!("cannot read the restored data: {e}"),
                                "Unreadable",
                            )
                            .await;
                        }
                        return Ok(Action::requeue(Duration::from_secs(2)));
                    }
                };
                if at.data_zxid < want_zxid {
                    Err(format!(
                        "newest data zxid {} is older than the artifact's {}",
                        zxid_hex(at.data_zxid),
                        artifact.data_zxid
                    ))
                } else {
                    at.judge(want_user).map(|note| {
                        format!(
                            "{want_user} user znodes as of zxid {}{note}, judged by a walk of the tree ({why})",
                            artifact.data_zxid
                        )
                    })
                }
            }
        }
    };
    cleanup_scratch(ctx, zkr).await;
    let summary = match judged {
        Ok(summary) => summary,
        Err(problem) => {
            fail(
                "starting",
                format!("the restored data does not match the artifact: {problem}"),
                "CountMismatch",
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    if !zkr.spec.verify_only {
        lift_fence(ctx, &ns, &ens_name, &name).await?;
    }
    let ids: BTreeSet<ServerId> = targets.iter().map(|(id, _)| *id).collect();
    let message = if zkr.spec.verify_only {
        format!(
            "verified {}: checksum and manifest match, and a scratch member loaded it: {summary}; nothing else was changed",
            artifact.id
        )
    } else {
        format!(
            "restored {} into {ns}/{ens_name}: {summary}, every member serving with a leader",
            artifact.id
        )
    };
    update(api, &name, |s| {
        s.phase = Some(RestorePhase::Ready);
        s.finished_at = Some(Time(Timestamp::now()));
        if !zkr.spec.verify_only {
            s.members = progress(&ids, "Serving");
        }
        s.message = Some(message.clone());
        record_condition(
            &mut s.conditions,
            condition::READY,
            true,
            if zkr.spec.verify_only {
                "Verified"
            } else {
                "Restored"
            },
            &message,
            Timestamp::now(),
        );
    })
    .await?;
    publish_event(
        ctx,
        zkr,
        EventType::Normal,
        if zkr.spec.verify_only {
            "Completed/verify"
        } else {
            "Completed/restore"
        },
        &message,
    )
    .await;
    Ok(Action::await_change())
}

async fn cleanup_scratch(ctx: &Context, zkr: &ZkRestore) {
    if !zkr.spec.verify_only {
        return;
    }
    let ns = zkr.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if let Err(e) = pods
        .delete(&scratch_pod(&zkr.name_any()), &DeleteParams::default())
        .await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        warn!(error = %e, "cannot delete the scratch member");
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::crd::ZkRestoreSpec;

    fn live(data: LiveData, from_volumes: bool) -> LiveRead {
        LiveRead {
            data,
            from_volumes,
            not_served: "no member of ns/live serves".into(),
        }
    }

    const TARGET: Ensemble = Ensemble {
        namespace: "ns",
        name: "live",
        uid: Some("uid-live"),
    };
    const SOURCE: Ensemble = Ensemble {
        namespace: "old",
        name: "gone",
        uid: Some("uid-gone"),
    };

    #[test]
    fn a_refusal_names_both_zxids_where_the_live_one_came_from_and_how_to_go_ahead() {
        let older = ArtifactRefusal::OlderThanLive {
            backup_zxid: 0x1_0000_0005,
            live_zxid: 0x2_0000_0001,
        };
        let known = LiveData::Known {
            zxid: 0x2_0000_0001,
            user_znodes: 1,
        };
        let served = refusal_message(&older, &live(known.clone(), false), SOURCE, TARGET);
        assert!(served.contains("(zxid 0x100000005)"), "{served}");
        assert!(served.contains("ns/live (zxid 0x200000001)"), "{served}");
        assert!(served.contains("spec.allowOlder: true"), "{served}");
        assert!(served.ends_with("; no member was touched"), "{served}");
        let from_volumes = refusal_message(&older, &live(known, true), SOURCE, TARGET);
        assert!(
            from_volumes
                .contains("(zxid 0x200000001 (read from the members' volumes: no member serves))"),
            "{from_volumes}"
        );
        let unknown = ArtifactRefusal::LiveDataUnknown {
            why: "volume 2 unreadable".into(),
        };
        let m = refusal_message(
            &unknown,
            &live(LiveData::Unknown("x".into()), true),
            SOURCE,
            TARGET,
        );
        assert!(
            m.starts_with("refused: no member of ns/live serves and"),
            "{m}"
        );
        assert!(m.contains("(volume 2 unreadable)"), "{m}");
    }

    #[test]
    fn an_unrelated_history_is_named_with_what_the_target_holds() {
        let refusal = ArtifactRefusal::UnrelatedHistory {
            source_uid: "uid-gone".into(),
            user_znodes: 7,
        };
        let known = LiveData::Known {
            zxid: 9,
            user_znodes: 7,
        };
        let served = refusal_message(&refusal, &live(known.clone(), false), SOURCE, TARGET);
        assert!(
            served.contains("MasterEnsemble old/gone (uid uid-gone), another history than ns/live's (uid uid-live)"),
            "{served}"
        );
        assert!(served.contains("holds 7 user znodes that"), "{served}");
        // A volume cannot count znodes: it says data.
        let read = refusal_message(&refusal, &live(known, true), SOURCE, TARGET);
        assert!(read.contains("holds data that"), "{read}");
    }

    #[test]
    fn a_restore_that_goes_ahead_says_what_consent_it_used() {
        let note = |from, consent| consent_note(from, Some("uid-live"), consent);
        assert_eq!(note(Some("uid-live"), Consent::NotNeeded), "");
        assert_eq!(
            note(Some("uid-live"), Consent::OlderData),
            " (older than the live data; allowOlder is set)"
        );
        assert_eq!(
            note(Some("uid-gone"), Consent::NotNeeded),
            " (from another ensemble's history)"
        );
        // An artifact from before quorate recorded the uid counts as the same history.
        assert_eq!(note(None, Consent::NotNeeded), "");
    }

    fn restore(name: &str, ensemble: &str, at: i64, phase: Option<RestorePhase>) -> ZkRestore {
        let spec: ZkRestoreSpec = serde_json::from_value(serde_json::json!({
            "ensembleRef": {"name": ensemble},
            "source": {"backup": {"name": "daily", "artifact": "a"}},
        }))
        .expect("spec");
        let mut r = ZkRestore::new(name, spec);
        r.metadata.creation_timestamp = Some(Time(Timestamp::from_second(at).expect("timestamp")));
        r.status = Some(ZkRestoreStatus {
            phase,
            ..Default::default()
        });
        r
    }

    #[test]
    fn an_offline_restore_gives_every_voter_a_volume() {
        let ids = |v: &[u32]| v.iter().map(|i| ServerId(*i)).collect::<BTreeSet<_>>();
        let voters: BTreeMap<ServerId, ()> = [1, 2, 3].map(|i| (ServerId(i), ())).into();
        // Two of three volumes lost: all three restored, two on new volumes.
        assert_eq!(
            members_to_restore(&ids(&[2]), &voters),
            (ids(&[1, 2, 3]), ids(&[1, 3]))
        );
        // Every volume there: nothing new.
        assert_eq!(
            members_to_restore(&ids(&[1, 2, 3]), &voters),
            (ids(&[1, 2, 3]), ids(&[]))
        );
        // A joiner's volume (not yet a voter) is restored too; no configuration known: the
        // volumes alone.
        assert_eq!(
            members_to_restore(&ids(&[1, 2, 3, 4]), &voters),
            (ids(&[1, 2, 3, 4]), ids(&[]))
        );
        assert_eq!(
            members_to_restore(&ids(&[1]), &BTreeMap::<ServerId, ()>::new()),
            (ids(&[1]), ids(&[]))
        );
    }

    #[test]
    fn only_an_artifact_of_another_known_ensemble_is_another_history() {
        assert_eq!(unrelated_history(Some("a"), Some("b")), Some("a"));
        assert_eq!(unrelated_history(Some("a"), Some("a")), None);
        // Taken before the uid was recorded: judged by its zxids as before.
        assert_eq!(unrelated_history(None, Some("a")), None);
        assert_eq!(unrelated_history(Some("a"), None), None);
    }

    #[test]
    fn one_restore_of_an_ensemble_at_a_time_the_first_created_goes_first() {
        let a = restore("a", "live", 100, Some(RestorePhase::Verifying));
        let b = restore("b", "live", 101, None);
        let all = vec![a.clone(), b.clone()];
        assert_eq!(restore_in_the_way(&a, &all), None);
        assert_eq!(restore_in_the_way(&b, &all), Some("a".into()));
        // Created in the same second: the name decides, the same way for both.
        let c = restore("c", "live", 100, Some(RestorePhase::Pending));
        let all = vec![a.clone(), c.clone()];
        assert_eq!(restore_in_the_way(&a, &all), None);
        assert_eq!(restore_in_the_way(&c, &all), Some("a".into()));
        // One that has left Verifying holds up even an older one.
        let running = restore("d", "live", 200, Some(RestorePhase::Restoring));
        assert_eq!(
            restore_in_the_way(&a, &[a.clone(), running]),
            Some("d".into())
        );
    }

    #[test]
    fn finished_verify_only_and_other_ensembles_restores_hold_nobody_up() {
        let me = restore("me", "live", 200, Some(RestorePhase::Verifying));
        let done = restore("done", "live", 100, Some(RestorePhase::Ready));
        let failed = restore("failed", "live", 100, Some(RestorePhase::Failed));
        let elsewhere = restore("other", "other", 100, Some(RestorePhase::Restoring));
        let mut verify = restore("verify", "live", 100, Some(RestorePhase::Starting));
        verify.spec.verify_only = true;
        let all = vec![me.clone(), done, failed, elsewhere, verify.clone()];
        assert_eq!(restore_in_the_way(&me, &all), None);
        // A verify-only restore never waits either.
        let running = restore("r", "live", 50, Some(RestorePhase::Restoring));
        assert_eq!(
            restore_in_the_way(&verify, &[verify.clone(), running]),
            None
        );
    }
}
