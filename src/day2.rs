//! Commands that change a live ensemble through its spec, as a person would with `kubectl
//! patch`, and nothing else: `quorate ensemble pause`, `resume`, `restart` and
//! `replace-member`. The operator takes the steps; these commands only say what it will do.

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::cli::Output;
use crate::constants::{ANNOTATION_RESTARTED_AT, FIELD_MANAGER};
use crate::crd::MasterEnsemble;
use crate::inspect::get;

/// What a day-2 command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `spec.paused: true`.
    Pause,
    /// `spec.paused: false`.
    Resume,
    /// A roll: `spec.podTemplate.annotations["quorate.dev/restartedAt"]` set to now.
    Restart,
}

impl Change {
    /// The merge patch of the spec that asks for it.
    pub fn patch(self, now: Timestamp) -> serde_json::Value {
        match self {
            Change::Pause => serde_json::json!({"spec": {"paused": true}}),
            Change::Resume => serde_json::json!({"spec": {"paused": false}}),
            Change::Restart => serde_json::json!({"spec": {"podTemplate": {
                "annotations": {ANNOTATION_RESTARTED_AT: now.to_string()}
            }}}),
        }
    }

    /// What the operator does next, for a person.
    fn said(self, target: &str, ens: &MasterEnsemble) -> String {
        let paused = ens.spec.paused;
        match self {
            Change::Pause => format!(
                "{target} paused: the operator observes and reports it but takes no step until `quorate ensemble resume {target}` (a step in flight is taken up again after resume)\n"
            ),
            Change::Resume => format!("{target} resumed: the operator acts on its spec again\n"),
            Change::Restart if paused => format!(
                "{target} will restart every member one at a time once resumed (it is paused)\n"
            ),
            Change::Restart => format!(
                "{target} restarts every member one at a time, followers first and the leader last, each after the one before serves again; follow it with `quorate ensemble status {target}`\n"
            ),
        }
    }
}

/// Applies `change` to the ensemble `target` (NAMESPACE/NAME or NAME) and says what follows.
pub async fn change(
    client: &Client,
    target: &str,
    change: Change,
    output: Output,
) -> Result<String, String> {
    let (ns, name, _) = get(client, target).await?;
    let patched = patch_spec(client, &ns, &name, &change.patch(Timestamp::now()))
        .await
        .map_err(|e| format!("patch MasterEnsemble {ns}/{name}: {e}"))?;
    if output.is_structured() {
        return output.encode(&serde_json::json!({
            "namespace": ns,
            "name": name,
            "generation": patched.metadata.generation,
            "paused": patched.spec.paused,
            "restartedAt": patched
                .spec
                .pod_template
                .as_ref()
                .and_then(|t| t.annotations.get(ANNOTATION_RESTARTED_AT)),
        }));
    }
    Ok(change.said(&format!("{ns}/{name}"), &patched))
}

/// A merge patch of the ensemble `ns/name` under quorate's field manager.
async fn patch_spec(
    client: &Client,
    ns: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<MasterEnsemble, kube::Error> {
    Api::<MasterEnsemble>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(patch),
        )
        .await
}

/// Asks for member `id` of `target` to be replaced while healthy: adds it to
/// `spec.replaceMembers` (a merge patch conditioned on the resourceVersion read, so a
/// concurrent edit of the list is not lost). Refused, with nothing changed, unless `id` is a
/// voter in the recorded status.
pub async fn replace_member(
    client: &Client,
    target: &str,
    id: u32,
    output: Output,
) -> Result<String, String> {
    let (ns, name, ens) = get(client, target).await?;
    let voters = ens
        .status
        .as_ref()
        .map(|s| s.voters.clone())
        .unwrap_or_default();
    let wanted = i64::from(id);
    if !voters.contains(&wanted) {
        return Err(format!(
            "member {id} is not a voter of {ns}/{name} (voters: {}); only a voter is replaced",
            voters
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut listed = ens.spec.replace_members.clone();
    if !listed.contains(&wanted) {
        listed.push(wanted);
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": ens.metadata.resource_version},
        "spec": {"replaceMembers": listed},
    });
    let patched = patch_spec(client, &ns, &name, &patch)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => format!(
                "MasterEnsemble {ns}/{name} changed while replace-member read it; run it again"
            ),
            e => format!("patch MasterEnsemble {ns}/{name}: {e}"),
        })?;
    if output.is_structured() {
        return output.encode(&serde_json::json!({
            "namespace": ns,
            "name": name,
            "generation": patched.metadata.generation,
            "replaceMembers": patched.spec.replace_members,
        }));
    }
    let target = format!("{ns}/{name}");
    let when = if patched.spec.paused {
        " once resumed (it is paused)"
    } else {
        ""
    };
    Ok(format!(
        "{target}: member {id} will be replaced{when}: a fresh member joins, syncs and votes first, then member {id} leaves the configuration and its Pod and volume are deleted; follow it with `quorate ensemble status {target}`\n"
    ))
}

/// The JVM flags with which ZooKeeper's Java client (zkCli.sh's `CLIENT_JVMFLAGS`) logs in with
/// the `Client` section of the JAAS file `jaas`. ZooKeeper 3.9's client runs in FIPS mode by
/// default (`zookeeper.fips-mode`), in which it refuses DIGEST-MD5, the one SASL mechanism the
/// members accept: it then fails with `AuthFailed` ("saslClient failed to initialize"), so the
/// flags turn that mode off (3.8's client ignores the property).
pub fn java_client_login_flags(jaas: &str) -> String {
    format!("-Djava.security.auth.login.config={jaas} -Dzookeeper.fips-mode=false")
}

/// The `kubectl exec` that opens ZooKeeper's own shell (`zkCli.sh`) on member `member` of
/// `target`, or on a serving follower (the leader when none; a member that serves when the
/// status names no role). The shell connects to that member's client port only.
pub async fn zkcli_command(
    client: &Client,
    target: &str,
    member: Option<u32>,
) -> Result<Vec<String>, String> {
    use crate::crd::{MemberRole, MemberState};
    let (ns, name, ens) = get(client, target).await?;
    let status = ens.status.clone().unwrap_or_default();
    let serving = |m: &&crate::crd::MemberStatus| m.state == Some(MemberState::Serving);
    let id = match member {
        Some(id) => i64::from(id),
        None => status
            .members
            .iter()
            .filter(serving)
            .min_by_key(|m| (m.role == Some(MemberRole::Leader), m.server_id))
            .map(|m| m.server_id)
            .ok_or_else(|| {
                format!(
                    "no member of {ns}/{name} serves; name one with --member ID (the members: {})",
                    status
                        .members
                        .iter()
                        .map(|m| format!(
                            "{} {}",
                            m.server_id,
                            m.state.map(MemberState::as_str).unwrap_or("-")
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
    };
    let server = crate::planner::ServerId(
        u32::try_from(id).map_err(|_| format!("--member {id} is not a server id"))?,
    );
    let pod = crate::executor::resources::names::member_pod(&name, server);
    let host = crate::executor::resources::names::member_host(
        &name,
        &ns,
        server,
        crate::constants::CLUSTER_DOMAIN,
    );
    let shell = format!(
        "{}/bin/zkCli.sh",
        crate::executor::resources::member::install_dir(&ens.spec.version)
    );
    // With client authentication on, the shell logs in as the clients' user of the member's
    // JAAS file (its `Client` section); without it the file is absent and nothing is added.
    let jaas = format!(
        "{}/{}",
        crate::constants::JAAS_MOUNT,
        crate::constants::SECRET_JAAS
    );
    let login = format!(
        "if [ -f {jaas} ]; then export CLIENT_JVMFLAGS=\"{}\"; fi; exec \"$0\" \"$@\"",
        java_client_login_flags(&jaas)
    );
    Ok([
        "kubectl",
        "exec",
        "-it",
        "-n",
        &ns,
        &pod,
        "-c",
        "zookeeper",
        "--",
        "/bin/sh",
        "-c",
        &login,
        &shell,
        "-server",
        &format!("{host}:{}", crate::constants::CLIENT_PORT),
    ]
    .map(String::from)
    .to_vec())
}

#[cfg(test)]
mod tests {
    //! Unit tier: the patches, pure.
    use super::*;

    #[test]
    fn a_restart_changes_the_member_spec_hash_and_pause_does_not() {
        let spec: crate::crd::MasterEnsembleSpec =
            serde_json::from_value(serde_json::json!({"replicas": 3, "version": "3.9.5"}))
                .expect("spec");
        let hash = |spec: &crate::crd::MasterEnsembleSpec| {
            crate::planner::Desired::try_from(spec)
                .expect("a valid spec")
                .spec_hash
        };
        let mut restarted = spec.clone();
        restarted
            .pod_template
            .get_or_insert_default()
            .annotations
            .insert(
                ANNOTATION_RESTARTED_AT.into(),
                "2026-12-06T07:00:00Z".into(),
            );
        assert_ne!(hash(&spec), hash(&restarted), "a restart must start a roll");
        let mut paused = spec.clone();
        paused.paused = true;
        assert_eq!(hash(&spec), hash(&paused), "pausing must not roll");
        let patch = Change::Restart.patch("2026-12-06T07:00:00Z".parse().expect("time"));
        assert_eq!(
            patch["spec"]["podTemplate"]["annotations"][ANNOTATION_RESTARTED_AT],
            "2026-12-06T07:00:00Z"
        );
        assert_eq!(
            Change::Pause.patch(Timestamp::UNIX_EPOCH)["spec"]["paused"],
            true
        );
        assert_eq!(
            Change::Resume.patch(Timestamp::UNIX_EPOCH)["spec"]["paused"],
            false
        );
    }
}
