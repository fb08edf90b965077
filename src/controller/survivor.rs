//! After a quorum loss: learn every survivor's data from its volume, so that status names the
//! member recovery must start from (I7). No member answers a zxid without a quorum (ZooKeeper
//! serves `srvr`, `zabstate` and `last_snapshot` only with one), so the operator starts a probe
//! Pod per voter ([`crate::executor::resources::probe`]) that reads the member's volume
//! read-only and answers through its termination message. The probes are removed as soon as a
//! member serves again, so an answer is never carried from one loss into the next.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::observe::Observation;
use super::{Context, Error};
use crate::constants::operator_image;
use crate::executor::resources::member::EnsembleContext;
use crate::executor::resources::probe::{ProbeAnswer, build_zxid_probe_pod, probe_answer};
use crate::planner::{BlockReason, Decision, Plan};

/// While the plan says the quorum is lost and not every survivor's zxid is known: starts the
/// missing probes and takes the answers of the finished ones into `obs`. Once a member serves:
/// removes the probes. Returns whether `obs` learned something (the plan is then made again).
pub async fn read_volumes(
    ctx: &Context,
    ectx: &EnsembleContext<'_>,
    obs: &mut Observation,
    plan: &Plan,
) -> Result<bool, Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ectx.namespace);
    let lost = matches!(
        &plan.decision,
        Decision::Blocked {
            reason: BlockReason::QuorumLost { survivor: None, .. }
        }
    );
    if !lost {
        if !obs.probes.is_empty() && !obs.zk.serving().is_empty() {
            for pod in obs.probes.values() {
                let name = pod.name_any();
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => info!(probe = %name, "a member serves again: volume probe removed"),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(Error::kube(format!("delete probe Pod {name}"))(e)),
                }
            }
        }
        return Ok(false);
    }
    let image = operator_image();
    let mut learned = false;
    // Every member with a volume (`rules::most_up_to_date_survivor`), not only the recorded
    // voters.
    let ids: Vec<_> = obs.observed.members.keys().copied().collect();
    for id in ids {
        let Some(member) = obs.observed.members.get(&id) else {
            continue;
        };
        // A member that serves answers its zxid; one out of its quorum may answer a zxid that
        // is not its data, so its volume is read (`rules::survivor_zxid`).
        if !member.volume || member.zk.serving {
            continue;
        }
        match obs.probes.get(&id).map(probe_answer) {
            None => {
                let node = obs
                    .pods
                    .get(&id)
                    .and_then(|p| p.spec.as_ref()?.node_name.clone());
                let pod = build_zxid_probe_pod(ectx, id, &image, node);
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => info!(member = %id, "quorum lost: reading the member's volume"),
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        return Err(Error::kube(format!("create the volume probe of {id}"))(e));
                    }
                }
            }
            Some(ProbeAnswer::Pending) => {}
            Some(ProbeAnswer::Zxid(z)) => {
                if let Some(m) = obs.observed.members.get_mut(&id) {
                    // An empty volume holds nothing: the lowest zxid there is.
                    m.volume_zxid = Some(z.unwrap_or(0));
                    learned = true;
                }
            }
            Some(ProbeAnswer::Failed(why)) => {
                // Left unknown: no survivor is named until someone looks (deleting the probe
                // Pod runs it again).
                warn!(member = %id, %why, "the volume probe could not read the member's data");
            }
        }
    }
    Ok(learned)
}
