//! Carrying out one step. Each `ensure_*` is safe to run again after a crash at any `.await`:
//! "already created", "already a voter", "already removed" and "already gone" count as done.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::ensemble::EnsembleCredentials;
use super::observe::Observation;
use super::{Context, Error, failpoints};
use crate::constants::*;
use crate::crd::MasterEnsemble;
use crate::executor::resources::member::{
    EnsembleContext, MemberStart, build_member_pod, build_member_pvc,
};
use crate::executor::resources::names::{member_host, member_pod, member_pvc};
use crate::executor::resources::zoo_cfg::{initial_dynamic, server_line};
use crate::planner::{Desired, ServerId, Step};
use crate::zk::{Credentials, MembershipControl, ServerEntry};

/// Runs `step` once: each effect only while this process may act ([`Context::may_act`]).
pub async fn execute(
    ctx: &Context,
    ens: &MasterEnsemble,
    ectx: &EnsembleContext<'_>,
    desired: &Desired,
    step: &Step,
    obs: &Observation,
    credentials: &EnsembleCredentials,
) -> Result<(), Error> {
    ctx.may_act().await?;
    match step {
        Step::CreateMember { member, seed } => {
            ensure_member_created(ctx, ectx, desired, *member, *seed, obs).await?;
            failpoints::reached(failpoints::CREATE_MEMBER_AFTER_EFFECT).await;
        }
        Step::AddVoter { members } => {
            let entries = members
                .iter()
                .map(|id| joiner_entry(ectx, id, step))
                .collect::<Result<Vec<_>, _>>()?;
            ensure_reconfig(ens, &entries, &[], obs, credentials, step).await?;
            failpoints::reached(failpoints::ADD_VOTER_AFTER_EFFECT).await;
        }
        Step::RemoveVoter { members } => {
            let leaving: Vec<ServerId> = members.iter().collect();
            ensure_reconfig(ens, &[], &leaving, obs, credentials, step).await?;
            failpoints::reached(failpoints::REMOVE_VOTER_AFTER_EFFECT).await;
        }
        Step::DeleteMember { member } => {
            ensure_member_deleted(
                ctx,
                ectx,
                *member,
                true,
                failpoints::DELETE_MEMBER_AFTER_POD,
            )
            .await?;
            failpoints::reached(failpoints::DELETE_MEMBER_AFTER_EFFECT).await;
        }
        Step::FenceMember { member } => {
            // The volume is kept, marked: its data is deleted only once the configuration no
            // longer lists the member (a stray member's deletion), so a quorum lost before the
            // removal commits can still count on it.
            mark_fenced(ctx, ectx, *member, true).await?;
            failpoints::reached(failpoints::FENCE_MEMBER_AFTER_MARK).await;
            ctx.may_act().await?;
            ensure_member_deleted(
                ctx,
                ectx,
                *member,
                false,
                failpoints::FENCE_MEMBER_AFTER_EFFECT,
            )
            .await?;
        }
        Step::RestartMember { member } => {
            ensure_member_restarted(ctx, ectx, desired, *member, obs).await?;
        }
    }
    Ok(())
}

fn host(ectx: &EnsembleContext<'_>, id: ServerId) -> String {
    member_host(ectx.name, ectx.namespace, id, CLUSTER_DOMAIN)
}

/// The first dynamic configuration of member `id`: the committed voters plus itself (a seed:
/// itself alone).
fn first_config(ectx: &EnsembleContext<'_>, id: ServerId, seed: bool, obs: &Observation) -> String {
    let voters: BTreeMap<ServerId, String> = if seed {
        BTreeMap::new()
    } else {
        obs.observed
            .voters()
            .into_iter()
            .filter(|v| *v != id)
            .map(|v| (v, host(ectx, v)))
            .collect()
    };
    initial_dynamic(&voters, id, &host(ectx, id))
}

async fn create_if_missing<K>(api: &Api<K>, obj: &K, what: String) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api
        .create(
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            obj,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(what)(e)),
    }
}

/// Creates the member's volume, then its Pod.
async fn ensure_member_created(
    ctx: &Context,
    ectx: &EnsembleContext<'_>,
    desired: &Desired,
    id: ServerId,
    seed: bool,
    obs: &Observation,
) -> Result<(), Error> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ectx.namespace);
    create_if_missing(
        &pvcs,
        &build_member_pvc(ectx, id),
        format!("create PVC {}", member_pvc(ectx.name, id)),
    )
    .await?;
    failpoints::reached(failpoints::CREATE_MEMBER_AFTER_VOLUME).await;
    ensure_pod(ctx, ectx, desired, id, seed, obs).await
}

/// Creates member `id`'s Pod from the current spec unless it exists.
async fn ensure_pod(
    ctx: &Context,
    ectx: &EnsembleContext<'_>,
    desired: &Desired,
    id: ServerId,
    seed: bool,
    obs: &Observation,
) -> Result<(), Error> {
    ctx.may_act().await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ectx.namespace);
    let pod = build_member_pod(
        ectx,
        id,
        &first_config(ectx, id, seed, obs),
        &desired.spec_hash,
        // A former voter must come back with its data, never empty under the same id.
        if obs.observed.members.get(&id).is_some_and(|m| m.was_voter) {
            MemberStart::HasData
        } else {
            MemberStart::Fresh
        },
    );
    create_if_missing(
        &pods,
        &pod,
        format!("create Pod {}", member_pod(ectx.name, id)),
    )
    .await
}

/// Deletes the member's Pod and, with `volume`, its PVC (the id is retired); failpoint
/// `after_pod` lies between the two.
async fn ensure_member_deleted(
    ctx: &Context,
    ectx: &EnsembleContext<'_>,
    id: ServerId,
    volume: bool,
    after_pod: &'static str,
) -> Result<(), Error> {
    fn gone<T>(r: Result<T, kube::Error>, what: String) -> Result<(), Error> {
        match r {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::kube(what)(e)),
        }
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ectx.namespace);
    gone(
        pods.delete(&member_pod(ectx.name, id), &DeleteParams::default())
            .await,
        format!("delete Pod of member {id}"),
    )?;
    failpoints::reached(after_pod).await;
    if volume {
        ctx.may_act().await?;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ectx.namespace);
        gone(
            pvcs.delete(&member_pvc(ectx.name, id), &DeleteParams::default())
                .await,
            format!("delete PVC of member {id}"),
        )?;
    }
    Ok(())
}

/// Marks member `id`'s PVC fenced, or lifts the mark. A PVC that is gone needs neither.
pub(super) async fn mark_fenced(
    ctx: &Context,
    ectx: &EnsembleContext<'_>,
    id: ServerId,
    fenced: bool,
) -> Result<(), Error> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ectx.namespace);
    let value = fenced.then_some("true");
    let patch = serde_json::json!({"metadata": {"annotations": {ANNOTATION_FENCED: value}}});
    match pvcs
        .patch(
            &member_pvc(ectx.name, id),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(format!(
            "{} PVC of member {id}",
            if fenced {
                "fence the"
            } else {
                "lift the fence of the"
            }
        ))(e)),
    }
}

/// Deletes a Pod built from another spec (keeping the volume), and recreates it from the
/// current spec once it is gone.
async fn ensure_member_restarted(
    ctx: &Context,
    ectx: &EnsembleContext<'_>,
    desired: &Desired,
    id: ServerId,
    obs: &Observation,
) -> Result<(), Error> {
    match obs.pods.get(&id) {
        Some(pod) if pod.metadata.deletion_timestamp.is_some() => Ok(()),
        Some(pod)
            if pod.annotations().get(ANNOTATION_SPEC_HASH) != Some(&desired.spec_hash)
                || !obs.zk.is_synced(id) =>
        {
            ensure_member_deleted(ctx, ectx, id, false, failpoints::RESTART_MEMBER_AFTER_POD).await
        }
        Some(_) => Ok(()),
        None => {
            // Restarted while fenced (the quorum was lost before its removal committed): the
            // fence is lifted first, or the next pass would take the Pod away again.
            if obs.observed.members.get(&id).is_some_and(|m| m.fenced) {
                mark_fenced(ctx, ectx, id, false).await?;
            }
            ensure_pod(ctx, ectx, desired, id, false, obs).await?;
            failpoints::reached(failpoints::RESTART_MEMBER_AFTER_EFFECT).await;
            Ok(())
        }
    }
}

/// Adds the `joining` members as voters, or removes the `leaving` ones, in one reconfig through
/// ZooKeeper's own reconfig, which the zk module makes idempotent (members already in place
/// count as done) and refuses for unsynced joiners.
async fn ensure_reconfig(
    ens: &MasterEnsemble,
    joining: &[ServerEntry],
    leaving: &[ServerId],
    obs: &Observation,
    credentials: &EnsembleCredentials,
    step: &Step,
) -> Result<(), Error> {
    let as_user = |who: &Credentials| {
        obs.membership(credentials.login(who))
            .ok_or_else(|| Error::NoServingMember {
                step: step.to_string(),
            })
    };
    let failed = |source| Error::Membership {
        step: step.to_string(),
        ensemble: ens.name_any(),
        source,
    };
    let membership = as_user(&credentials.operator)?;
    // The operator user reconfigures; the super user only grants it that right, the first
    // time (and again after a restore brought back data without the grant).
    if !membership.may_reconfigure().await.map_err(failed)? {
        as_user(&credentials.admin)?
            .grant_reconfigure(&credentials.operator)
            .await
            .map_err(failed)?;
    }
    let outcome = if joining.is_empty() {
        membership.remove_voters(leaving).await
    } else {
        membership.add_voters(joining).await
    };
    outcome.map(|_| ()).map_err(failed)
}

/// The `server.N` line a joiner is added with.
fn joiner_entry(
    ectx: &EnsembleContext<'_>,
    id: ServerId,
    step: &Step,
) -> Result<ServerEntry, Error> {
    server_line(id, &host(ectx, id))
        .parse()
        .map_err(|e| Error::Inconsistent(format!("{step}: bad server line: {e}")))
}
