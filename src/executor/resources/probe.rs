//! Pure builders for the volume probe: after a quorum loss no member answers a zxid (ZooKeeper
//! serves `srvr` only with a quorum), so recovery learns each survivor's data from its volume.
//! A probe Pod per voter mounts the member's PVC read-only and runs `quorate volume zxid` from
//! the operator's own image; the answer comes back as the container's termination message. No
//! I/O here: the controller creates the Pods and reads the answers.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Deserialize;

use super::member::{EnsembleContext, pod_security, restricted_container};
use super::names::{ensemble_labels, member_pvc, restore_probe_pod, zxid_probe_pod};
use crate::constants::*;
use crate::planner::ServerId;

/// The component label of probe Pods. They carry the ensemble's label (its controller watches
/// them) but no server id, so they are never taken for members.
pub const PROBE_COMPONENT: &str = "zxid-probe";
/// Where the probe's answer is written: a file on an `emptyDir`, the container's
/// `terminationMessagePath`.
pub const PROBE_RESULT_DIR: &str = "/quorate-result";
/// The answer's file name in [`PROBE_RESULT_DIR`].
pub const PROBE_RESULT_FILE: &str = "message";

/// The probe Pod of voter `id`. `node` pins it beside the member's Pod (a ReadWriteOnce volume
/// mounts on one node at a time); without it the scheduler places it by the volume.
pub fn build_zxid_probe_pod(
    ctx: &EnsembleContext<'_>,
    id: ServerId,
    image: &str,
    node: Option<String>,
) -> Pod {
    let mut labels: BTreeMap<String, String> = ensemble_labels(ctx.name, PROBE_COMPONENT);
    labels.insert(LABEL_PROBE_OF.into(), id.to_string());
    let message = format!("{PROBE_RESULT_DIR}/{PROBE_RESULT_FILE}");
    let template = ctx.spec.pod_template.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(zxid_probe_pod(ctx.name, id)),
            namespace: Some(ctx.namespace.into()),
            labels: Some(labels),
            owner_references: Some(vec![ctx.owner.clone()]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            node_name: node,
            containers: vec![Container {
                name: "zxid".into(),
                image: Some(image.into()),
                command: Some(vec![OPERATOR_BINARY.into()]),
                args: Some(vec![
                    "volume".into(),
                    "zxid".into(),
                    format!("{DATA_MOUNT}/data"),
                    "-o".into(),
                    "json".into(),
                    "--termination-log".into(),
                    message.clone(),
                    "--volume-root".into(),
                    DATA_MOUNT.into(),
                ]),
                termination_message_path: Some(message),
                security_context: Some(restricted_container()),
                volume_mounts: Some(vec![
                    VolumeMount {
                        name: "data".into(),
                        mount_path: DATA_MOUNT.into(),
                        read_only: Some(true),
                        ..Default::default()
                    },
                    VolumeMount {
                        name: "result".into(),
                        mount_path: PROBE_RESULT_DIR.into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }],
            volumes: Some(vec![
                Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: member_pvc(ctx.name, id),
                        read_only: Some(true),
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "result".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
            ]),
            security_context: Some(pod_security(ctx.spec)),
            image_pull_secrets: (!template.image_pull_secrets.is_empty())
                .then(|| template.image_pull_secrets.clone()),
            tolerations: (!template.tolerations.is_empty()).then_some(template.tolerations),
            priority_class_name: template.priority_class_name,
            ..Default::default()
        }),
        status: None,
    }
}

/// The component label of a restore's volume probes: the ensemble's controller does not take
/// them for its own.
pub const RESTORE_PROBE_COMPONENT: &str = "restore-zxid-probe";

/// The probe of voter `id`'s volume for restore `restore`'s older-data check (I7) while no
/// member serves: the ensemble's probe, named, labelled and owned by the restore, so that its
/// answer is this restore's own (never one left from an earlier quorum loss) and goes with it.
pub fn build_restore_probe_pod(
    ctx: &EnsembleContext<'_>,
    id: ServerId,
    image: &str,
    node: Option<String>,
    restore: &str,
    owner: OwnerReference,
) -> Pod {
    let mut pod = build_zxid_probe_pod(ctx, id, image, node);
    pod.metadata.name = Some(restore_probe_pod(restore, id));
    let labels = pod.metadata.labels.get_or_insert_default();
    labels.insert(LABEL_COMPONENT.into(), RESTORE_PROBE_COMPONENT.into());
    labels.insert(LABEL_RESTORE.into(), restore.into());
    pod.metadata.owner_references = Some(vec![owner]);
    pod
}

/// The live data's newest zxid as the members' volumes tell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumesZxid {
    /// Some probes have not answered yet.
    Reading { answered: usize, of: usize },
    /// Every volume answered: the highest zxid on any of them (0 when none holds data).
    Known(u64),
    /// A volume could not be read, with why: the live data's zxid cannot be known.
    Unknown(String),
}

/// Folds the answers of the probes in `probes` for the volumes of `ids`. A volume without a
/// probe counts as not answered yet.
pub fn volumes_zxid(ids: &BTreeSet<ServerId>, probes: &BTreeMap<ServerId, Pod>) -> VolumesZxid {
    let mut highest = 0;
    let mut answered = 0;
    let mut failed = Vec::new();
    for id in ids {
        match probes.get(id).map(probe_answer) {
            None | Some(ProbeAnswer::Pending) => {}
            Some(ProbeAnswer::Zxid(z)) => {
                answered += 1;
                highest = highest.max(z.unwrap_or(0));
            }
            Some(ProbeAnswer::Failed(why)) => {
                answered += 1;
                failed.push(format!("server {id}: {why}"));
            }
        }
    }
    if answered < ids.len() {
        VolumesZxid::Reading {
            answered,
            of: ids.len(),
        }
    } else if !failed.is_empty() {
        VolumesZxid::Unknown(failed.join("; "))
    } else {
        VolumesZxid::Known(highest)
    }
}

/// What a probe Pod says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// Still running, or not started.
    Pending,
    /// The volume's highest zxid; `None` when it holds no data at all.
    Zxid(Option<u64>),
    /// The probe could not read the volume, with why.
    Failed(String),
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    zxid: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// The answer of a probe Pod, from its phase and its container's termination message (what
/// `quorate volume zxid --termination-log` writes: `{"zxid":"0x..."}` or `{"error":"..."}`).
pub fn probe_answer(pod: &Pod) -> ProbeAnswer {
    let Some(status) = pod.status.as_ref() else {
        return ProbeAnswer::Pending;
    };
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find_map(|c| c.state.as_ref()?.terminated.as_ref());
    let phase = status.phase.as_deref().unwrap_or("Pending");
    if !matches!(phase, "Succeeded" | "Failed") {
        return ProbeAnswer::Pending;
    }
    let Some(t) = terminated else {
        return ProbeAnswer::Failed(format!(
            "the probe Pod is {phase} without a container state"
        ));
    };
    let message = t.message.as_deref().unwrap_or("").trim();
    match serde_json::from_str::<Message>(message) {
        Ok(Message {
            error: Some(error), ..
        }) => ProbeAnswer::Failed(error),
        Ok(Message { zxid: Some(z), .. }) if phase == "Succeeded" => {
            match u64::from_str_radix(z.trim_start_matches("0x"), 16) {
                Ok(z) => ProbeAnswer::Zxid(Some(z)),
                Err(_) => ProbeAnswer::Failed(format!("the probe answered zxid {z:?}")),
            }
        }
        Ok(Message { zxid: None, .. }) if phase == "Succeeded" => ProbeAnswer::Zxid(None),
        _ => ProbeAnswer::Failed(format!(
            "the probe Pod is {phase} (exit code {}) with message {message:?}",
            t.exit_code
        )),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;
    use crate::crd::MasterEnsembleSpec;

    fn spec() -> MasterEnsembleSpec {
        serde_json::from_value(serde_json::json!({"replicas": 3, "version": "3.9.5"}))
            .expect("spec")
    }

    fn finished(phase: &str, exit_code: i32, message: Option<&str>) -> Pod {
        Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "zxid".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code,
                            message: message.map(str::to_string),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_probe_mounts_the_members_volume_read_only_and_answers_through_its_termination_message() {
        let spec = spec();
        let ctx = EnsembleContext {
            name: "masters",
            namespace: "ns",
            spec: &spec,
            owner: OwnerReference::default(),
        };
        let pod = build_zxid_probe_pod(&ctx, ServerId(2), "quorate:1", Some("node-a".into()));
        assert_eq!(pod.metadata.name.as_deref(), Some("masters-zxid-2"));
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[LABEL_ENSEMBLE], "masters");
        assert_eq!(labels[LABEL_COMPONENT], PROBE_COMPONENT);
        assert_eq!(labels[LABEL_PROBE_OF], "2");
        assert!(
            crate::executor::resources::names::server_id_of(&labels).is_none(),
            "a probe is never taken for a member"
        );
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.node_name.as_deref(), Some("node-a"));
        let data = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .and_then(|v| v.persistent_volume_claim.clone())
            .expect("the member's PVC");
        assert_eq!(data.claim_name, "data-masters-2");
        assert_eq!(data.read_only, Some(true));
        let c = &spec.containers[0];
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "data" && m.read_only == Some(true))
        );
        let message = c.termination_message_path.clone().expect("message path");
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "result" && message.starts_with(&m.mount_path)),
            "the message file lies on the result volume"
        );
        let args = c.args.clone().unwrap_or_default();
        assert_eq!(args[..3], ["volume", "zxid", &format!("{DATA_MOUNT}/data")]);
        assert!(
            args.windows(2)
                .any(|w| w[0] == "--termination-log" && w[1] == message)
        );
    }

    #[test]
    fn a_restores_probe_is_its_own_and_never_taken_for_the_ensembles() {
        let spec = spec();
        let ctx = EnsembleContext {
            name: "masters",
            namespace: "ns",
            spec: &spec,
            owner: OwnerReference::default(),
        };
        let owner = OwnerReference {
            kind: "ZkRestore".into(),
            name: "back".into(),
            ..Default::default()
        };
        let pod = build_restore_probe_pod(&ctx, ServerId(3), "quorate:1", None, "back", owner);
        assert_eq!(pod.metadata.name.as_deref(), Some("back-zxid-3-probe"));
        // A restore named like its ensemble: the two probes of one volume keep apart.
        let same =
            build_restore_probe_pod(&ctx, ServerId(3), "q", None, "masters", Default::default());
        assert_ne!(
            same.metadata.name,
            build_zxid_probe_pod(&ctx, ServerId(3), "q", None)
                .metadata
                .name
        );
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[LABEL_COMPONENT], RESTORE_PROBE_COMPONENT);
        assert_ne!(labels[LABEL_COMPONENT], PROBE_COMPONENT);
        assert_eq!(labels[LABEL_RESTORE], "back");
        assert_eq!(labels[LABEL_PROBE_OF], "3");
        let owners = pod.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "ZkRestore");
        let claim = pod.spec.as_ref().and_then(|s| {
            s.volumes
                .iter()
                .flatten()
                .find_map(|v| v.persistent_volume_claim.clone())
        });
        assert_eq!(
            claim.map(|c| (c.claim_name, c.read_only)),
            Some(("data-masters-3".into(), Some(true)))
        );
    }

    #[test]
    fn the_live_zxid_from_volumes_is_known_only_once_every_volume_answered() {
        let ids: BTreeSet<ServerId> = [1, 2, 3].map(ServerId).into();
        let answered = |z: &str| finished("Succeeded", 0, Some(z));
        let mut probes = BTreeMap::new();
        assert_eq!(
            volumes_zxid(&ids, &probes),
            VolumesZxid::Reading { answered: 0, of: 3 }
        );
        probes.insert(ServerId(1), answered(r#"{"zxid":"0x200000005"}"#));
        probes.insert(ServerId(2), finished("Running", 0, None));
        assert_eq!(
            volumes_zxid(&ids, &probes),
            VolumesZxid::Reading { answered: 1, of: 3 }
        );
        probes.insert(ServerId(2), answered(r#"{"zxid":"0x300000001"}"#));
        // An empty volume holds nothing newer.
        probes.insert(ServerId(3), answered(r#"{}"#));
        assert_eq!(volumes_zxid(&ids, &probes), VolumesZxid::Known(0x300000001));
        // One volume that cannot be read makes the whole answer unknown, never a lower one.
        probes.insert(
            ServerId(3),
            finished("Failed", 1, Some(r#"{"error":"no snapshot"}"#)),
        );
        match volumes_zxid(&ids, &probes) {
            VolumesZxid::Unknown(why) => assert!(
                why.contains("server 3") && why.contains("no snapshot"),
                "{why}"
            ),
            other => panic!("expected unknown, got {other:?}"),
        }
        assert_eq!(
            volumes_zxid(&BTreeSet::new(), &probes),
            VolumesZxid::Known(0)
        );
    }

    #[test]
    fn reads_the_answer_of_a_finished_probe_and_nothing_from_a_running_one() {
        assert_eq!(probe_answer(&Pod::default()), ProbeAnswer::Pending);
        assert_eq!(
            probe_answer(&finished("Running", 0, None)),
            ProbeAnswer::Pending
        );
        assert_eq!(
            probe_answer(&finished("Succeeded", 0, Some(r#"{"zxid":"0x300000007"}"#))),
            ProbeAnswer::Zxid(Some(0x3_0000_0007))
        );
        assert_eq!(
            probe_answer(&finished("Succeeded", 0, Some(r#"{"zxid":null}"#))),
            ProbeAnswer::Zxid(None)
        );
        assert_eq!(
            probe_answer(&finished("Failed", 1, Some(r#"{"error":"corrupt log"}"#))),
            ProbeAnswer::Failed("corrupt log".into())
        );
        // A zxid from a failed run, or no message at all, is not an answer.
        assert!(matches!(
            probe_answer(&finished("Failed", 1, Some(r#"{"zxid":"0x5"}"#))),
            ProbeAnswer::Failed(_)
        ));
        assert!(matches!(
            probe_answer(&finished("Succeeded", 0, None)),
            ProbeAnswer::Failed(_)
        ));
    }
}
