//! Recovery after a quorum loss (`spec.source.survivors`, I7): a ZkRestore that rebuilds an
//! ensemble whose majority has lost its data for good from the surviving member with the
//! highest zxid. The decisions are pure ([`crate::planner::recovery::decide_recovery`]); this
//! module observes, acts one phase per pass and records.
//!
//! - Verifying: one recovery or restore of an ensemble at a time; no member may serve; every
//!   member's volume is read by a probe Pod (`quorate volume zxid`, read-only, no quorum
//!   needed) while the members still run. Without a quorum nothing commits, and fewer than a
//!   majority of voters hold data (or recovery is refused), so no quorum can form again: the
//!   zxids read here stay true until the members are stopped. Each survivor's zxid and what
//!   becomes of its volume is recorded in `status.members` before anything is touched.
//! - Stopping: the ensemble is fenced (annotation `quorate.dev/restoring`, its controller takes
//!   no step) and every member Pod is deleted; volumes stay.
//! - Restoring: every other survivor's PVC is set aside (it loses the ensemble's label and owner,
//!   gains `quorate.dev/set-aside-by`: kept, never deleted, never used), and the chosen
//!   survivor starts alone: its prepare step, once per recovery, makes its configuration itself
//!   alone, so it elects itself on its own data in a new epoch.
//! - Starting: once it leads, the fence is lifted and the ensemble's controller grows it back to
//!   `spec.replicas` with fresh ids, one step at a time, as any scale-up (empty volumes of lost
//!   members are deleted as strays; their ids are never used again, I4).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use tracing::info;

use super::restore::{
    START_TIMEOUT, claim_fence, delete_volume_probes, init_failure, lift_fence, member_objects,
    probe_volumes, restore_in_the_way, update,
};
use super::{Context, Error, publish_event};
use crate::constants::*;
use crate::crd::{
    MasterEnsemble, RestoreMemberStatus, RestorePhase, SurvivorRole, ZkRestore, ZkRestoreStatus,
};
use crate::executor::resources::member::{EnsembleContext, build_recovery_pod};
use crate::executor::resources::names::{member_host, member_pod, member_pvc};
use crate::executor::resources::probe::{ProbeAnswer, probe_answer};
use crate::executor::resources::zoo_cfg::initial_dynamic;
use crate::planner::recovery::{RecoveryDecision, VolumeAnswer, decide_recovery};
use crate::planner::{Desired, ServerId};
use crate::zk::{MemberAddr, observe_ensemble};

/// The label a set-aside survivor's PVC carries: the recovery that set it aside.
pub const LABEL_SET_ASIDE_BY: &str = "quorate.dev/set-aside-by";
/// The component label of a set-aside PVC (no longer `member`).
pub const SET_ASIDE_COMPONENT: &str = "set-aside";

const UNTOUCHED: &str = "; no member was touched";

async fn ensemble(ctx: &Context, ns: &str, name: &str) -> Result<Option<MasterEnsemble>, Error> {
    Api::<MasterEnsemble>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(Error::kube(format!("read MasterEnsemble {ns}/{name}")))
}

/// The survivor recovery rebuilds from, as recorded in Verifying.
pub(super) fn chosen(status: &ZkRestoreStatus) -> Option<ServerId> {
    status
        .members
        .iter()
        .find(|m| m.survivor == Some(SurvivorRole::RebuildFrom))
        .and_then(|m| u32::try_from(m.server_id).ok())
        .map(ServerId)
}

fn set_aside(status: &ZkRestoreStatus) -> BTreeSet<ServerId> {
    status
        .members
        .iter()
        .filter(|m| m.survivor == Some(SurvivorRole::SetAside))
        .filter_map(|m| u32::try_from(m.server_id).ok())
        .map(ServerId)
        .collect()
}

fn answer_of(pod: Option<&Pod>) -> VolumeAnswer {
    match pod.map(probe_answer) {
        None | Some(ProbeAnswer::Pending) => VolumeAnswer::Pending,
        Some(ProbeAnswer::Zxid(Some(z))) => VolumeAnswer::Data(z),
        Some(ProbeAnswer::Zxid(None)) => VolumeAnswer::Empty,
        Some(ProbeAnswer::Failed(why)) => VolumeAnswer::Unreadable(why),
    }
}

/// What the recovery records per member volume before it touches anything.
fn survivors_status(
    volumes: &BTreeMap<ServerId, VolumeAnswer>,
    member: ServerId,
) -> Vec<RestoreMemberStatus> {
    volumes
        .iter()
        .map(|(id, a)| {
            let (zxid, role) = match a {
                VolumeAnswer::Data(z) if *id == member => (Some(*z), SurvivorRole::RebuildFrom),
                VolumeAnswer::Data(z) => (Some(*z), SurvivorRole::SetAside),
                _ => (None, SurvivorRole::NoData),
            };
            RestoreMemberStatus {
                server_id: i64::from(id.0),
                state: "Running".into(),
                zxid: zxid.map(|z| format!("0x{z:x}")),
                survivor: Some(role),
            }
        })
        .collect()
}

/// Verifying: refuses, keeps reading the volumes, or records the survivor to rebuild from.
pub(super) async fn verify<F, Fut>(
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
    let name = zkr.name_any();
    let ens_name = &zkr.spec.ensemble_ref.name;
    let refuse = async |reason: &'static str, message: String| {
        publish_event(
            ctx,
            zkr,
            EventType::Warning,
            &format!("Refused/{reason}"),
            &message,
        )
        .await;
        delete_volume_probes(ctx, &ns, &name).await?;
        fail("verifying", format!("{message}{UNTOUCHED}"), reason).await?;
        Ok(Action::await_change())
    };
    let all = api
        .list(&Default::default())
        .await
        .map_err(Error::kube(format!("list ZkRestores in {ns}")))?;
    if let Some(other) = restore_in_the_way(zkr, &all.items) {
        return refuse(
            "AnotherRestore",
            format!(
                "refused: ZkRestore {ns}/{other} restores MasterEnsemble {ns}/{ens_name} already; one restore of an ensemble runs at a time"
            ),
        )
        .await;
    }
    let Some(ens) = ensemble(ctx, &ns, ens_name).await? else {
        return refuse(
            "EnsembleNotFound",
            format!("MasterEnsemble {ns}/{ens_name} does not exist"),
        )
        .await;
    };
    let voters: BTreeSet<ServerId> = ens
        .status
        .iter()
        .flat_map(|s| s.voters.iter())
        .filter_map(|v| u32::try_from(*v).ok())
        .map(ServerId)
        .collect();
    let (pods, _) = member_objects(ctx, &ns, ens_name).await?;
    let addrs: Vec<MemberAddr> = pods
        .iter()
        .filter_map(|(id, p)| Some(MemberAddr::new(*id, p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    let serving = observe_ensemble(&ctx.probe, &addrs, Duration::from_secs(3))
        .await
        .serving();
    let (volumes, probes) = if serving.is_empty() {
        probe_volumes(ctx, zkr, &ens).await?
    } else {
        Default::default()
    };
    let answers: BTreeMap<ServerId, VolumeAnswer> = volumes
        .iter()
        .map(|id| (*id, answer_of(probes.get(id))))
        .collect();
    let decision = decide_recovery(&voters, &serving, &answers);
    match &decision {
        RecoveryDecision::Reading { .. } => {
            update(api, &name, |s| {
                s.message = Some(format!("quorum lost: {decision}"));
            })
            .await?;
            Ok(Action::requeue(Duration::from_secs(2)))
        }
        RecoveryDecision::Refused(r) => refuse(r.reason(), decision.to_string()).await,
        RecoveryDecision::RebuildFrom { member, .. } => {
            // Leaving Verifying claims the ensemble's fence (one restore at a time).
            if let Some(holder) = claim_fence(ctx, zkr).await? {
                return refuse(
                    "AnotherRestore",
                    format!("refused: ZkRestore {ns}/{holder} holds the fence of MasterEnsemble {ns}/{ens_name}; one restore of an ensemble runs at a time"),
                )
                .await;
            }
            let members = survivors_status(&answers, *member);
            update(api, &name, |s| {
                s.members = members.clone();
                s.live_data_zxid = members
                    .iter()
                    .find(|m| m.survivor == Some(SurvivorRole::RebuildFrom))
                    .and_then(|m| m.zxid.clone());
                s.phase = Some(RestorePhase::Stopping);
                s.message = Some(format!("quorum lost: {decision}"));
            })
            .await?;
            delete_volume_probes(ctx, &ns, &name).await?;
            publish_event(
                ctx,
                zkr,
                EventType::Normal,
                "Recovery/chosen",
                &decision.to_string(),
            )
            .await;
            Ok(Action::requeue(Duration::from_millis(200)))
        }
    }
}

/// Restoring: sets the other survivors' volumes aside and starts the chosen one alone.
pub(super) async fn rebuild<F, Fut>(
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
    let name = zkr.name_any();
    let ens_name = &zkr.spec.ensemble_ref.name;
    let status = zkr.status.clone().unwrap_or_default();
    let (Some(member), Some(ens)) = (chosen(&status), ensemble(ctx, &ns, ens_name).await?) else {
        fail(
            "restoring",
            format!("no survivor recorded, or MasterEnsemble {ns}/{ens_name} is gone; the ensemble stays fenced (annotation {ANNOTATION_RESTORING})"),
            "Inconsistent",
        )
        .await?;
        return Ok(Action::await_change());
    };
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    let aside = set_aside(&status);
    for id in &aside {
        // Never the ensemble's again, never deleted by quorate (nor with the ensemble).
        let patch = serde_json::json!({"metadata": {
            "labels": {LABEL_ENSEMBLE: null, LABEL_COMPONENT: SET_ASIDE_COMPONENT, LABEL_SET_ASIDE_BY: name},
            "ownerReferences": null,
        }});
        let pvc = member_pvc(ens_name, *id);
        match pvcs
            .patch(&pvc, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => info!(member = id.0, %pvc, "survivor's volume set aside"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("set PVC {pvc} aside"))(e)),
        }
    }
    let desired = Desired::try_from(&ens.spec).map_err(|e| Error::Inconsistent(e.to_string()))?;
    let Some(owner) = ens.controller_owner_ref(&()) else {
        return Err(Error::Inconsistent(format!("{ns}/{ens_name} has no uid")));
    };
    let ectx = EnsembleContext {
        name: ens_name,
        namespace: &ns,
        spec: &ens.spec,
        owner,
    };
    let alone = initial_dynamic(
        &BTreeMap::<ServerId, String>::new(),
        member,
        &member_host(ens_name, &ns, member, CLUSTER_DOMAIN),
    );
    let pod = build_recovery_pod(
        &ectx,
        member,
        &alone,
        &desired.spec_hash,
        &zkr.uid().unwrap_or_default(),
    );
    match Api::<Pod>::namespaced(ctx.client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
    {
        Ok(_) => info!(member = member.0, "survivor started alone"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            return Err(Error::kube(format!(
                "create Pod {}",
                member_pod(ens_name, member)
            ))(e));
        }
    }
    update(api, &name, |s| {
        s.phase = Some(RestorePhase::Starting);
        for m in &mut s.members {
            m.state = match m.survivor {
                Some(SurvivorRole::RebuildFrom) => "Starting",
                Some(SurvivorRole::SetAside) => "SetAside",
                _ => "Stopped",
            }
            .into();
        }
        s.message = Some(format!(
            "member {member} starts alone on its own data{}",
            if aside.is_empty() {
                String::new()
            } else {
                format!(
                    "; set aside (kept, labelled {LABEL_SET_ASIDE_BY}={name}): {}",
                    aside
                        .iter()
                        .map(|id| member_pvc(ens_name, *id))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
    })
    .await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Starting: once the chosen survivor leads alone, lifts the fence; the ensemble grows back.
pub(super) async fn finish<F, Fut>(
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
    let name = zkr.name_any();
    let ens_name = &zkr.spec.ensemble_ref.name;
    let status = zkr.status.clone().unwrap_or_default();
    let Some(member) = chosen(&status) else {
        fail("starting", "no survivor recorded".into(), "Inconsistent").await?;
        return Ok(Action::await_change());
    };
    let (pods, _) = member_objects(ctx, &ns, ens_name).await?;
    let pod = pods.get(&member);
    if let Some(why) = pod.and_then(init_failure) {
        fail(
            "starting",
            format!("member {member} could not start on its data ({why}); the ensemble stays fenced (annotation {ANNOTATION_RESTORING}) and every volume is kept"),
            "StartFailed",
        )
        .await?;
        return Ok(Action::await_change());
    }
    let leads = match pod.and_then(|p| p.status.as_ref()?.pod_ip.clone()) {
        Some(ip) => {
            let o = observe_ensemble(
                &ctx.probe,
                &[MemberAddr::new(member, ip)],
                Duration::from_secs(3),
            )
            .await;
            o.leader == Some(member) && o.serving().contains(&member)
        }
        None => false,
    };
    if !leads {
        let started = status.started_at.as_ref().map(|t| t.0).unwrap_or_default();
        if Timestamp::now().duration_since(started).unsigned_abs() > START_TIMEOUT {
            fail(
                "starting",
                format!("member {member} did not lead alone within {}s; the ensemble stays fenced (annotation {ANNOTATION_RESTORING}) and every volume is kept", START_TIMEOUT.as_secs()),
                "StartTimeout",
            )
            .await?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    lift_fence(ctx, &ns, ens_name, &name).await?;
    let replicas = ensemble(ctx, &ns, ens_name)
        .await?
        .map(|e| e.spec.replicas)
        .unwrap_or_default();
    let message = format!(
        "rebuilt from member {member} (zxid {}), which leads alone; MasterEnsemble {ns}/{ens_name} grows back to {replicas} members with fresh ids, one step at a time",
        status.live_data_zxid.as_deref().unwrap_or("unknown")
    );
    update(api, &name, |s| {
        s.phase = Some(RestorePhase::Ready);
        s.finished_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now(),
        ));
        s.message = Some(message.clone());
        for m in &mut s.members {
            if m.survivor == Some(SurvivorRole::RebuildFrom) {
                m.state = "Serving".into();
            }
        }
        super::backup::record_condition(
            &mut s.conditions,
            crate::crd::condition::READY,
            true,
            "Recovered",
            &message,
            Timestamp::now(),
        );
    })
    .await?;
    publish_event(ctx, zkr, EventType::Normal, "Recovered", &message).await;
    Ok(Action::await_change())
}
