//! Read-only commands on live ensembles: `quorate ensemble list`, `quorate ensemble status` and
//! `quorate plan --ensemble`.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::{Api, Client};

use crate::cli::Output;
use crate::crd::{MasterEnsemble, MemberRole, MemberState, MemberStatus};
use crate::planner::{Desired, Membership, Role, ServerId, ZkState, plan};

fn split(client: &Client, target: &str) -> (String, String) {
    match target.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (client.default_namespace().to_string(), target.to_string()),
    }
}

pub(crate) async fn get(
    client: &Client,
    target: &str,
) -> Result<(String, String, MasterEnsemble), String> {
    let (ns, name) = split(client, target);
    let ens = Api::<MasterEnsemble>::namespaced(client.clone(), &ns)
        .get(&name)
        .await
        .map_err(|e| format!("MasterEnsemble {ns}/{name}: {e}"))?;
    Ok((ns, name, ens))
}

/// The ensembles of `namespace` (the kubeconfig's when `None`) or of every namespace: a table
/// whose columns fit the longest value, or JSON.
pub async fn ensemble_list(
    client: &Client,
    namespace: Option<&str>,
    all_namespaces: bool,
    output: Output,
) -> Result<String, String> {
    let api: Api<MasterEnsemble> = if all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(
            client.clone(),
            namespace.unwrap_or(client.default_namespace()),
        )
    };
    let mut items = api
        .list(&Default::default())
        .await
        .map_err(|e| format!("list MasterEnsembles: {e}"))?
        .items;
    items.sort_by_key(|e| (e.metadata.namespace.clone(), e.metadata.name.clone()));
    let rows: Vec<serde_json::Value> = items
        .iter()
        .map(|e| {
            let s = e.status.clone().unwrap_or_default();
            serde_json::json!({
                "namespace": e.metadata.namespace, "name": e.metadata.name,
                "replicas": e.spec.replicas, "ready": s.ready_members,
                "leader": s.leader, "phase": s.phase, "version": e.spec.version,
            })
        })
        .collect();
    if output.is_structured() {
        return output.encode(&rows);
    }
    if rows.is_empty() {
        return Ok("no MasterEnsembles\n".into());
    }
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut lines = vec![
        [
            "NAMESPACE",
            "NAME",
            "MEMBERS",
            "READY",
            "LEADER",
            "PHASE",
            "VERSION",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &rows {
        lines.push(
            [
                "namespace",
                "name",
                "replicas",
                "ready",
                "leader",
                "phase",
                "version",
            ]
            .iter()
            .map(|k| text(&r[*k]))
            .collect(),
        );
    }
    Ok(crate::backup_commands::render(&lines))
}

/// Members, roles, quorum, the step in flight and the conditions.
pub async fn ensemble_status(
    client: &Client,
    target: &str,
    output: Output,
) -> Result<String, String> {
    let (ns, name, ens) = get(client, target).await?;
    render_status(&ns, &name, &ens, output)
}

/// [`ensemble_status`] of an ensemble already read.
pub fn render_status(
    ns: &str,
    name: &str,
    ens: &MasterEnsemble,
    output: Output,
) -> Result<String, String> {
    let status = ens.status.clone().unwrap_or_default();
    if output.is_structured() {
        let value = serde_json::json!({
            "namespace": ns, "name": name, "replicas": ens.spec.replicas,
            "generation": ens.metadata.generation, "status": status,
        });
        return output.encode(&value);
    }
    let mut out = format!(
        "{ns}/{name}: {} of {} members ready, phase {}\n",
        status.ready_members,
        ens.spec.replicas,
        status.phase.map_or("-".to_string(), |p| p.to_string())
    );
    if let Some(q) = &status.quorum {
        out += &format!(
            "quorum: {} voters, majority {}, tolerates {}; leader {}; config {}\n",
            q.voters,
            q.majority,
            q.tolerance,
            status.leader.map(|l| l.to_string()).unwrap_or("-".into()),
            status.config_version.as_deref().unwrap_or("-")
        );
    }
    let mut rows = vec![
        ["ID", "POD", "ADDRESS", "ROLE", "STATE", "SYNCED", "ZXID"]
            .map(String::from)
            .to_vec(),
    ];
    for m in &status.members {
        rows.push(vec![
            m.server_id.to_string(),
            m.pod.clone(),
            m.address.clone().unwrap_or("-".into()),
            m.role.map(MemberRole::as_str).unwrap_or("-").into(),
            m.state.map(MemberState::as_str).unwrap_or("-").into(),
            m.synced.to_string(),
            m.zxid.clone().unwrap_or("-".into()),
        ]);
    }
    out += &crate::backup_commands::render(&rows);
    match &status.in_flight {
        Some(s) => out += &format!("in flight: {} since {}\n", s.id, s.started_at.0),
        None => out += "in flight: none\n",
    }
    if let Some(s) = &status.last_step {
        out += &format!("last step: {}\n", s.id);
    }
    if let Some(m) = &status.message {
        out += &format!("message: {m}\n");
    }
    for c in &status.conditions {
        out += &format!(
            "condition {:<13} {:<5} {}: {}\n",
            c.type_, c.status, c.reason, c.message
        );
    }
    Ok(out)
}

/// The decision the controller would take for an ensemble, without acting, from what the
/// operator recorded: the members' states, roles, zxids and the committed configuration as
/// quorate last wrote them into status (it writes them whenever they change), with the Pods,
/// PVCs and backups as the API server has them now. Nothing is read from ZooKeeper: the
/// members' addresses are reachable inside the cluster, not necessarily from here. The time of
/// the operator's last status write goes to stderr.
pub async fn plan_live(
    client: &Client,
    target: &str,
    now: Option<Timestamp>,
    output: Output,
) -> Result<String, String> {
    let (ns, name, ens) = get(client, target).await?;
    let desired = Desired::try_from(&ens.spec).map_err(|e| format!("{ns}/{name}: {e}"))?;
    let ctx = crate::controller::Context::new(client.clone()).map_err(|e| e.to_string())?;
    let now = now.unwrap_or_else(Timestamp::now);
    let objects = crate::controller::support::Objects::list(&ctx, &ns, &name)
        .await
        .map_err(|e| e.to_string())?;
    let backups = crate::controller::observe::ready_backups(&ctx, &ens)
        .await
        .map_err(|e| e.to_string())?;
    let (pods, pvcs, _) = crate::controller::observe::by_member(objects);
    let status = ens.status.clone().unwrap_or_default();
    let recorded: BTreeMap<ServerId, ZkState> = status
        .members
        .iter()
        .filter_map(|m| Some((ServerId(u32::try_from(m.server_id).ok()?), recorded_zk(m))))
        .collect();
    let observed = crate::controller::observe::assemble(
        &ens,
        &desired,
        &pods,
        &pvcs,
        |id| recorded.get(&id).cloned().unwrap_or_default(),
        recorded_config(&status),
        backups,
        now,
    );
    let written = ens
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| f.subresource.as_deref() == Some("status"))
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .max();
    eprintln!(
        "planned from what the operator recorded (status last written {}), with Pods and PVCs as they are now",
        written.map_or("never".to_string(), |t| t.to_string())
    );
    let p = plan(&desired, &observed, now);
    crate::cli::render_plan(&p, &desired, output).map_err(|e| e.to_string())
}

/// What ZooKeeper said of a member, as status recorded it.
fn recorded_zk(m: &MemberStatus) -> ZkState {
    let serving = matches!(m.state, Some(MemberState::Serving | MemberState::Syncing));
    ZkState {
        serving,
        role: match m.role {
            Some(MemberRole::Leader) => Role::Leader,
            Some(MemberRole::Follower) => Role::Follower,
            Some(MemberRole::Observer) => Role::Observer,
            Some(MemberRole::Joiner) if serving => Role::Follower,
            _ => Role::Unknown,
        },
        zxid: m
            .zxid
            .as_deref()
            .and_then(crate::backup::artifact::parse_zxid)
            .and_then(|z| u64::try_from(z).ok()),
        synced: m.synced,
    }
}

/// The committed configuration as status recorded it.
fn recorded_config(status: &crate::crd::MasterEnsembleStatus) -> Option<Membership> {
    let version = status
        .config_version
        .as_deref()
        .and_then(crate::backup::artifact::parse_zxid)?;
    Some(Membership {
        version: u64::try_from(version).ok()?,
        voters: status
            .voters
            .iter()
            .filter_map(|v| u32::try_from(*v).ok())
            .map(ServerId)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    //! Unit tier (pure): the planner's view from a recorded status.

    use super::*;

    #[test]
    fn the_recorded_status_gives_back_what_zookeeper_said() {
        let status: crate::crd::MasterEnsembleStatus = serde_json::from_value(serde_json::json!({
            "configVersion": "0x100000003",
            "voters": [1, 2, 3],
            "members": [
                {"serverId": 1, "pod": "m-1", "role": "leader", "state": "Serving",
                 "zxid": "0x100000007", "synced": true, "voter": true},
                {"serverId": 2, "pod": "m-2", "role": "follower", "state": "Serving",
                 "zxid": "0x100000007", "synced": true, "voter": true},
                {"serverId": 4, "pod": "m-4", "role": "joiner", "state": "Syncing",
                 "synced": false},
                {"serverId": 3, "pod": "m-3", "role": "unknown", "state": "Down"},
            ],
        }))
        .unwrap();
        let zk: Vec<ZkState> = status.members.iter().map(recorded_zk).collect();
        assert_eq!(
            zk[0],
            ZkState {
                serving: true,
                role: Role::Leader,
                zxid: Some(0x1_0000_0007),
                synced: true
            }
        );
        assert_eq!(zk[1].role, Role::Follower);
        // A joiner that serves follows the leader without a vote, not yet synced.
        assert_eq!(
            (zk[2].serving, zk[2].role, zk[2].synced),
            (true, Role::Follower, false)
        );
        assert_eq!(zk[3], ZkState::default());
        let config = recorded_config(&status).unwrap();
        assert_eq!(config.version, 0x1_0000_0003);
        assert_eq!(config.voters, [1, 2, 3].into_iter().map(ServerId).collect());
        assert!(recorded_config(&Default::default()).is_none());
    }
}
