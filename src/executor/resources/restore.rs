//! Pure builders for restores: the init container that places a verified artifact on a stopped
//! member's volume (`quorate restore-member`, from the operator's own image), member Pods that
//! carry it, and the scratch member a `verifyOnly` restore loads the artifact into.

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, Pod, SecretKeySelector, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use std::collections::BTreeMap;

use super::member::restricted_container;
use super::names::ensemble_labels;
use crate::constants::*;
use crate::crd::{Destination, VerifiedArtifact};

/// What the restore init container needs to know.
#[derive(Clone, Debug)]
pub struct RestoreInit<'a> {
    /// The operator's image.
    pub image: &'a str,
    /// Where the artifact is stored.
    pub destination: &'a Destination,
    /// The artifact, as verified.
    pub artifact: &'a VerifiedArtifact,
    /// The restore's id (the ZkRestore's uid).
    pub restore_id: &'a str,
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The init container that runs `quorate restore-member` on the member's volume.
pub fn build_restore_init_container(r: &RestoreInit<'_>) -> Container {
    let a = r.artifact;
    let destination = serde_json::to_string(r.destination).unwrap_or_default();
    let args = vec![
        "restore-member".to_string(),
        "--destination".into(),
        destination,
        "--artifact".into(),
        format!("{}/{}/{}", a.namespace, a.backup, a.id),
        "--format".into(),
        a.format.clone(),
        "--zxid".into(),
        a.zxid.clone(),
        "--bytes".into(),
        a.bytes.to_string(),
        "--sha256".into(),
        a.sha256.clone(),
        "--data-dir".into(),
        format!("{DATA_MOUNT}/data"),
        "--restore-id".into(),
        r.restore_id.into(),
    ];
    let env = r
        .destination
        .s3
        .as_ref()
        .map(|s3| {
            vec![
                secret_env(
                    ENV_S3_ACCESS_KEY_ID,
                    &s3.credentials_secret,
                    SECRET_S3_ACCESS_KEY_ID,
                ),
                secret_env(
                    ENV_S3_SECRET_ACCESS_KEY,
                    &s3.credentials_secret,
                    SECRET_S3_SECRET_ACCESS_KEY,
                ),
            ]
        })
        .unwrap_or_default();
    Container {
        security_context: Some(restricted_container()),
        name: "restore".into(),
        image: Some(r.image.into()),
        command: Some(vec![OPERATOR_BINARY.into()]),
        args: Some(args),
        env: Some(env),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_MOUNT.into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// A member Pod that places the artifact before ZooKeeper starts: the restore runs after the
/// `prepare` init container (which lays out `myid` and the configuration) and before the server.
pub fn with_restore(mut pod: Pod, r: &RestoreInit<'_>) -> Pod {
    if let Some(spec) = pod.spec.as_mut() {
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .push(build_restore_init_container(r));
    }
    pod
}

/// The scratch member of a `verifyOnly` restore: member Pod `member` of the ensemble rebuilt as
/// a lone server on an `emptyDir`, without the ensemble's labels (the ensemble controller never
/// sees it), named `<restore>-scratch`, owned by the restore, with itself as its whole
/// configuration.
pub fn build_scratch_pod(
    member: Pod,
    restore: &str,
    ensemble: &str,
    owner: OwnerReference,
    r: &RestoreInit<'_>,
) -> Pod {
    let mut pod = with_restore(member, r);
    pod.metadata.name = Some(scratch_pod(restore));
    let mut labels: BTreeMap<String, String> = ensemble_labels(ensemble, "scratch");
    labels.remove(LABEL_ENSEMBLE);
    labels.insert(LABEL_RESTORE.into(), restore.into());
    pod.metadata.labels = Some(labels);
    pod.metadata.owner_references = Some(vec![owner]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.hostname = None;
        spec.subdomain = None;
        spec.restart_policy = Some("Never".into());
        for v in spec.volumes.iter_mut().flatten() {
            if v.name == "data" {
                v.persistent_volume_claim = None;
                v.empty_dir = Some(EmptyDirVolumeSource::default());
            }
        }
        let all = spec
            .init_containers
            .iter_mut()
            .flatten()
            .chain(spec.containers.iter_mut());
        for c in all {
            for e in c.env.iter_mut().flatten() {
                if e.name == "ZK_INITIAL_DYNAMIC" {
                    e.value = Some(format!(
                        "server.1=$(POD_IP):{QUORUM_PORT}:{ELECTION_PORT}:participant;$(POD_IP):{CLIENT_PORT}"
                    ));
                }
                if e.name == "ZK_SERVER_ID" {
                    e.value = Some("1".into());
                }
            }
        }
    }
    pod
}

/// Name of a restore's scratch Pod.
pub fn scratch_pod(restore: &str) -> String {
    format!("{restore}-scratch")
}

/// Whether a member Pod was built for this restore (it carries its init container with the id).
pub fn is_restore_pod(pod: &Pod, restore_id: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.name == "restore"
                    && c.args
                        .as_ref()
                        .is_some_and(|a| a.iter().any(|x| x == restore_id))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{FilesystemDestination, S3Destination};

    fn artifact() -> VerifiedArtifact {
        VerifiedArtifact {
            id: "nightly-1".into(),
            namespace: "ns".into(),
            backup: "nightly".into(),
            format: "zookeeper-snapshot".into(),
            sha256: "ab".repeat(32),
            bytes: 42,
            zxid: "0x100000010".into(),
            data_zxid: "0x10000000f".into(),
            znodes: 10,
            user_znodes: 7,
            location: "s3://b/ns/nightly/nightly-1/".into(),
        }
    }

    #[test]
    fn the_init_container_passes_the_verified_checksum_and_keys_only_by_reference() {
        let dest = Destination {
            s3: Some(S3Destination {
                endpoint: "http://127.0.0.1:9000".into(),
                bucket: "backups".into(),
                credentials_secret: "s3-keys".into(),
                ..Default::default()
            }),
            filesystem: None,
        };
        let a = artifact();
        let c = build_restore_init_container(&RestoreInit {
            image: "quorate:test",
            destination: &dest,
            artifact: &a,
            restore_id: "uid-1",
        });
        let args = c.args.unwrap();
        assert!(args.contains(&"ab".repeat(32)));
        assert!(args.contains(&"ns/nightly/nightly-1".to_string()));
        assert_eq!(c.command.unwrap(), vec![OPERATOR_BINARY.to_string()]);
        let env = c.env.unwrap();
        assert_eq!(env.len(), 2);
        assert!(
            env.iter()
                .all(|e| e.value.is_none() && e.value_from.is_some())
        );
    }

    #[test]
    fn the_scratch_member_has_no_ensemble_label_and_no_volume_claim() {
        let dest = Destination {
            s3: None,
            filesystem: Some(FilesystemDestination {
                path: "/backups".into(),
            }),
        };
        let a = artifact();
        let r = RestoreInit {
            image: "quorate:test",
            destination: &dest,
            artifact: &a,
            restore_id: "uid-1",
        };
        let member = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                volumes: Some(vec![k8s_openapi::api::core::v1::Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(Default::default()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = build_scratch_pod(member, "r1", "masters", OwnerReference::default(), &r);
        let labels = pod.metadata.labels.clone().unwrap();
        assert!(!labels.contains_key(LABEL_ENSEMBLE));
        let spec = pod.spec.clone().unwrap();
        let data = &spec.volumes.unwrap()[0];
        assert!(data.persistent_volume_claim.is_none() && data.empty_dir.is_some());
        assert!(is_restore_pod(&pod, "uid-1"));
        assert!(!is_restore_pod(&pod, "uid-2"));
    }
}
