//! Read-only commands on live ensembles: `quorate ensemble list`, `quorate ensemble status` and
//! `quorate plan --ensemble`.

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use crate::cli::Output;
use crate::constants::{SECRET_SUPER_PASSWORD, SUPER_USER};
use crate::crd::{MasterEnsemble, MemberRole, MemberState};
use crate::executor::resources::names::credentials_secret;
use crate::planner::{Desired, plan};
use crate::zk::Credentials;

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

/// Observes a live ensemble as the controller does and prints the decision, without acting.
pub async fn plan_live(
    client: &Client,
    target: &str,
    now: Option<Timestamp>,
    output: Output,
) -> Result<String, String> {
    let (ns, name, ens) = get(client, target).await?;
    let desired = Desired::try_from(&ens.spec).map_err(|e| format!("{ns}/{name}: {e}"))?;
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get(&credentials_secret(&name))
        .await
        .map_err(|e| format!("read the credentials of {ns}/{name}: {e}"))?;
    let password = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_SUPER_PASSWORD))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .ok_or_else(|| {
            format!(
                "{} has no {SECRET_SUPER_PASSWORD}",
                credentials_secret(&name)
            )
        })?;
    let ctx = crate::controller::Context::new(client.clone()).map_err(|e| e.to_string())?;
    let now = now.unwrap_or_else(Timestamp::now);
    let objects = crate::controller::support::Objects::list(&ctx, &ns, &name)
        .await
        .map_err(|e| e.to_string())?;
    let obs = crate::controller::observe::observe(
        &ctx,
        &ens,
        &desired,
        &Credentials::digest(SUPER_USER, password),
        now,
        objects,
    )
    .await
    .map_err(|e| e.to_string())?;
    let p = plan(&desired, &obs.observed, now);
    crate::cli::render_plan(&p, &desired, output).map_err(|e| e.to_string())
}
