//! Observe (read-only I/O): the ensemble's Pods and PVCs, ZooKeeper through the zk module, and
//! what status recorded, turned into the planner's [`Observed`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{Api, ResourceExt};

use super::support::Objects;
use super::{Context, Error};
use crate::constants::*;
use crate::crd::{ArtifactPhase, MasterEnsemble, MemberState, MemberStatus, ZkBackup};
use crate::executor::resources::names::server_id_of;
use crate::executor::resources::probe::PROBE_COMPONENT;
use crate::planner::rules::unhealthy_since;
use crate::planner::{
    Desired, Member, Membership, Observed, PodInfo, ReadyBackup, ServerId, ZkState,
};
use crate::zk::{
    EnsembleConfig, EnsembleObservation, Login, MemberAddr, ZkMembership, observe_ensemble,
};

/// Everything one pass saw.
pub struct Observation {
    /// The planner's view.
    pub observed: Observed,
    /// Member Pods by server id.
    pub pods: BTreeMap<ServerId, Pod>,
    /// Member PVCs by server id.
    pub pvcs: BTreeMap<ServerId, PersistentVolumeClaim>,
    /// Volume probe Pods (after a quorum loss) by the server id whose volume they read.
    pub probes: BTreeMap<ServerId, Pod>,
    /// ZooKeeper's answers.
    pub zk: EnsembleObservation,
    /// The committed configuration, when a serving member answered.
    pub config: Option<EnsembleConfig>,
    /// Pod IPs by server id.
    pub addresses: BTreeMap<ServerId, String>,
}

impl Observation {
    /// A membership client for the serving members, probing members at their Pod IPs.
    pub fn membership(&self, login: Login) -> Option<ZkMembership> {
        let serving = self.zk.serving();
        let connect: Vec<String> = serving
            .iter()
            .filter_map(|id| self.addresses.get(id))
            .map(|ip| format!("{ip}:{CLIENT_PORT}"))
            .collect();
        if connect.is_empty() {
            return None;
        }
        ZkMembership::new(connect.join(","), login.digest)
            .ok()
            .map(|m| {
                m.with_sasl(login.sasl)
                    .with_member_hosts(self.addresses.clone())
            })
    }
}

/// Reads the ensemble's state from its Pods and PVCs (`objects`), ZooKeeper and the status.
/// `login` authenticates the config read.
pub async fn observe(
    ctx: &Context,
    ens: &MasterEnsemble,
    desired: &Desired,
    login: &Login,
    now: Timestamp,
    objects: Objects,
) -> Result<Observation, Error> {
    let name = ens.name_any();
    let (pods, pvcs, probes) = by_member(objects);

    let addresses: BTreeMap<ServerId, String> = pods
        .iter()
        .filter_map(|(id, p)| Some((*id, p.status.as_ref()?.pod_ip.clone()?)))
        .collect();
    let addrs: Vec<MemberAddr> = addresses
        .iter()
        .map(|(id, ip)| MemberAddr::new(*id, ip.clone()))
        .collect();
    let zk = observe_ensemble(&ctx.probe, &addrs, Duration::from_secs(3)).await;

    let mut obs = Observation {
        observed: Observed::default(),
        pods,
        pvcs,
        probes,
        zk,
        config: None,
        addresses,
    };
    // The committed configuration: the leader's own (its `conf` reply), which needs no
    // ZooKeeper session (each session's open and close are transactions); without it, read
    // through a session from a serving member.
    obs.config = obs
        .zk
        .leader
        .and_then(|l| obs.zk.members.get(&l))
        .filter(|m| m.serving)
        .and_then(|m| m.config.clone());
    if obs.config.is_none()
        && let Some(membership) = obs.membership(login.clone())
    {
        match membership.read_config().await {
            Ok(config) => obs.config = Some(config),
            Err(e) => tracing::info!(ensemble = %name, error = %e, "configuration not readable"),
        }
    }

    let config = obs.config.as_ref().map(Membership::from);
    let backups = ready_backups(ctx, ens).await?;
    let zk = &obs.zk;
    obs.observed = assemble(
        ens,
        desired,
        &obs.pods,
        &obs.pvcs,
        |id| zk.zk_state(id).unwrap_or_default(),
        config,
        backups,
        now,
    );
    Ok(obs)
}

/// The member Pods, the member PVCs, and the volume probe Pods (after a quorum loss, by the
/// server id whose volume each reads), by server id.
#[allow(clippy::type_complexity)]
pub fn by_member(
    objects: Objects,
) -> (
    BTreeMap<ServerId, Pod>,
    BTreeMap<ServerId, PersistentVolumeClaim>,
    BTreeMap<ServerId, Pod>,
) {
    let (probes, pods): (Vec<Pod>, Vec<Pod>) = objects.pods.into_iter().partition(|p| {
        p.labels().get(LABEL_COMPONENT).map(String::as_str) == Some(PROBE_COMPONENT)
    });
    let probes = probes
        .into_iter()
        .filter_map(|p| {
            let id = p.labels().get(LABEL_PROBE_OF)?.parse().ok()?;
            Some((ServerId(id), p))
        })
        .collect();
    let pods = pods
        .into_iter()
        .filter_map(|p| Some((server_id_of(p.labels())?, p)))
        .collect();
    let pvcs = objects
        .pvcs
        .into_iter()
        .filter_map(|p| Some((server_id_of(p.labels())?, p)))
        .collect();
    (pods, pvcs, probes)
}

/// The planner's view (pure): the member Pods and PVCs, what ZooKeeper said of each member
/// (`zk`) and the committed configuration, combined with what status recorded (when each
/// member became unhealthy, whether it was a voter, the claim, the next id).
#[allow(clippy::too_many_arguments)]
pub fn assemble(
    ens: &MasterEnsemble,
    desired: &Desired,
    pods: &BTreeMap<ServerId, Pod>,
    pvcs: &BTreeMap<ServerId, PersistentVolumeClaim>,
    zk: impl Fn(ServerId) -> ZkState,
    config: Option<Membership>,
    ready_backups: Vec<ReadyBackup>,
    now: Timestamp,
) -> Observed {
    let status = ens.status.clone().unwrap_or_default();
    let recorded: BTreeMap<ServerId, &MemberStatus> = status
        .members
        .iter()
        .map(|m| (ServerId(m.server_id as u32), m))
        .collect();
    let voters_now: BTreeSet<ServerId> = config
        .as_ref()
        .map(|c| c.voters.clone())
        .unwrap_or_default();
    let ids: BTreeSet<ServerId> = pods.keys().chain(pvcs.keys()).copied().collect();
    let mut members = BTreeMap::new();
    for id in ids {
        let pod = pods.get(&id).map(|p| pod_info(p, desired));
        let pvc = pvcs.get(&id);
        let volume = pvc.is_some_and(|c| c.metadata.deletion_timestamp.is_none());
        let fenced = volume && pvc.is_some_and(|c| c.annotations().contains_key(ANNOTATION_FENCED));
        let zk = zk(id);
        let before = recorded.get(&id);
        let mut member = Member {
            id,
            pod,
            volume,
            fenced,
            zk,
            down_since: None,
            healthy_spec_hash: before.and_then(|m| m.healthy_spec_hash.clone()),
            was_voter: before.is_some_and(|m| m.was_voter || m.voter) || voters_now.contains(&id),
            volume_zxid: None,
        };
        let healthy = member.is_healthy();
        if healthy {
            member.healthy_spec_hash = member.spec_hash().map(str::to_string);
        }
        // The start of the current healthy spell: the recorded `since` when it was already
        // serving, or now.
        let healthy_since = before
            .filter(|m| m.state == Some(MemberState::Serving))
            .and_then(|m| m.since.as_ref().map(|t| t.0))
            .unwrap_or(now);
        member.down_since = unhealthy_since(
            before.and_then(|m| m.unhealthy_since.as_ref().map(|t| t.0)),
            healthy,
            Some(healthy_since),
            now,
            desired.replace_after,
        );
        members.insert(id, member);
    }
    let in_flight = status
        .in_flight
        .as_ref()
        .and_then(|s| super::status::claim_of(s, status.voters.is_empty()));
    Observed {
        members,
        config,
        recorded_voters: status
            .voters
            .iter()
            .filter_map(|v| u32::try_from(*v).ok())
            .map(ServerId)
            .collect(),
        in_flight,
        next_server_id: ServerId(
            status
                .next_server_id
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
        ),
        change_requested_at: status.change_requested_at.as_ref().map(|t| t.0),
        ready_backups,
    }
}

fn pod_info(pod: &Pod, desired: &Desired) -> PodInfo {
    let status = pod.status.clone().unwrap_or_default();
    let running = status.phase.as_deref() == Some("Running");
    PodInfo {
        spec_hash: pod
            .annotations()
            .get(ANNOTATION_SPEC_HASH)
            .cloned()
            .unwrap_or_else(|| format!("unknown-not-{}", desired.spec_hash)),
        running,
        created_at: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        data_lost: reports_data_lost(pod),
    }
}

/// A container of the Pod (the init container or the server) last ended refusing to start
/// because the member's volume no longer holds its data: its latest termination message starts
/// with [`DATA_LOST_MARKER`]. A server that runs again, or an init container that succeeded
/// since, reports nothing.
pub(crate) fn reports_data_lost(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten()
        .any(|c| {
            let state = c.state.clone().unwrap_or_default();
            let last = state.terminated.or_else(|| {
                state
                    .running
                    .is_none()
                    .then(|| c.last_state.as_ref().and_then(|s| s.terminated.clone()))
                    .flatten()
            });
            last.is_some_and(|t| {
                t.exit_code != 0
                    && t.message
                        .as_deref()
                        .is_some_and(|m| m.trim_start().starts_with(DATA_LOST_MARKER))
            })
        })
}

/// The Ready backups of the `backupBeforeChange` ZkBackup.
pub(crate) async fn ready_backups(
    ctx: &Context,
    ens: &MasterEnsemble,
) -> Result<Vec<ReadyBackup>, Error> {
    let Some(gate) = &ens.spec.backup_before_change else {
        return Ok(Vec::new());
    };
    let ns = ens.namespace().unwrap_or_default();
    let api: Api<ZkBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(backup) = api
        .get_opt(&gate.backup_name)
        .await
        .map_err(Error::kube(format!(
            "read ZkBackup {ns}/{}",
            gate.backup_name
        )))?
    else {
        return Ok(Vec::new());
    };
    Ok(backup
        .status
        .map(|s| s.artifacts)
        .unwrap_or_default()
        .iter()
        .filter(|a| a.phase == ArtifactPhase::Ready)
        .filter_map(|a| {
            Some(ReadyBackup {
                started_at: a.started_at.as_ref()?.0,
                requested_at: a.requested_at.as_ref().map(|t| t.0),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    //! Unit tier (pure): reading a Pod's status.

    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "masters-2"},
            "status": status,
        }))
        .unwrap()
    }

    fn terminated(message: &str) -> serde_json::Value {
        serde_json::json!({"terminated": {"exitCode": 1, "message": message}})
    }

    #[test]
    fn a_container_that_refused_to_start_without_its_data_reports_it() {
        let lost = format!("{DATA_LOST_MARKER} member 2 was a voter but its volume holds no data");
        // The init container failed and waits to run again.
        let init = pod(serde_json::json!({"initContainerStatuses": [{
            "name": "prepare", "image": "zk", "imageID": "", "ready": false, "restartCount": 3,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": terminated(&lost),
        }]}));
        assert!(reports_data_lost(&init));
        // The server crash-loops on a volume wiped under it.
        let server = |state: serde_json::Value| {
            pod(serde_json::json!({"containerStatuses": [{
                "name": "zookeeper", "image": "zk", "imageID": "", "ready": false,
                "restartCount": 1, "state": state, "lastState": terminated(&lost),
            }]}))
        };
        assert!(reports_data_lost(&server(terminated(&lost))));
        assert!(reports_data_lost(&server(
            serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}})
        )));
        // Running again: its data is there after all.
        assert!(!reports_data_lost(&server(
            serde_json::json!({"running": {}})
        )));
        // Any other failure says nothing about the data (a bad image, a bad setting).
        let other = pod(serde_json::json!({"containerStatuses": [{
            "name": "zookeeper", "image": "zk", "imageID": "", "ready": false,
            "restartCount": 1, "state": terminated("Error: could not find main class"),
        }]}));
        assert!(!reports_data_lost(&other));
        assert!(!reports_data_lost(&pod(serde_json::json!({}))));
    }
}
