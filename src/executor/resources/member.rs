//! Pure builders of the objects that make up an ensemble: each member's Pod and PVC, the
//! headless and client Services, the ConfigMap, the PodDisruptionBudget.
//!
//! The member Pod runs ZooKeeper from the image's own distribution
//! (`/apache-zookeeper-<version>-bin`, as in the official image). An init container copies the
//! static configuration from the ConfigMap onto the member's volume (ZooKeeper rewrites it on
//! every reconfig, so it cannot stay a read-only mount), writes `myid`, writes the member's
//! initial dynamic configuration on its first start only, and binds the AdminServer to the Pod's
//! IP. Membership is never decided there: the initial dynamic configuration comes from the
//! operator (the committed voters plus the member itself) and every later change is a reconfig.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, Probe, SeccompProfile,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::*;
use super::zoo_cfg::{SASL_CFG_KEY, SASL_SETTINGS, render_static};
use crate::constants::*;
use crate::crd::{AntiAffinity, MasterEnsembleSpec, PodTemplateOverrides};
use crate::planner::ServerId;

/// What every builder needs to know about the ensemble.
#[derive(Clone, Debug)]
pub struct EnsembleContext<'a> {
    /// The ensemble's name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its spec.
    pub spec: &'a MasterEnsembleSpec,
    /// The owner reference that ties every object to the MasterEnsemble.
    pub owner: OwnerReference,
}

/// The image a member runs: `spec.image`, or the official image of `spec.version`.
pub fn member_image(spec: &MasterEnsembleSpec) -> String {
    spec.image
        .clone()
        .unwrap_or_else(|| format!("docker.io/library/zookeeper:{}", spec.version))
}

/// Where the image keeps ZooKeeper's jars.
pub fn install_dir(version: &str) -> String {
    format!("/apache-zookeeper-{version}-bin")
}

/// The init container's script: configuration files only, no membership decisions. A former
/// voter whose volume holds no data refuses to start, and says so in its termination message
/// (starting with [`DATA_LOST_MARKER`]).
pub const PREPARE_SCRIPT: &str = r#"set -eu
D=/var/lib/zookeeper
M=/var/run/quorate/prepare.message
rm -f "$M"
mkdir -p "$D/data" "$D/conf"
if [ "${ZK_EXPECT_DATA:-false}" = true ] && [ -z "$(ls -A "$D/data/version-2" 2>/dev/null)" ]; then
  msg="quorate: data lost: member $ZK_SERVER_ID was a voter but its volume holds no data (lost or wiped)."
  echo "$msg" >&2
  echo "$msg" > "$M" 2>/dev/null || true
  echo "quorate: it must not rejoin under the same id; the operator replaces it with a fresh id." >&2
  exit 1
fi
echo "$ZK_SERVER_ID" > "$D/data/myid"
if [ ! -f "$D/conf/zoo.cfg" ]; then
  printf '%s\n' "$ZK_INITIAL_DYNAMIC" > "$D/conf/zoo.cfg.dynamic"
  cp /etc/quorate/config/zoo.cfg "$D/conf/zoo.cfg"
fi
# A recovery from the survivors (once per recovery, marked on the volume): this member's
# configuration becomes itself alone, so that it elects itself with its data; the ensemble then
# grows back by reconfig. A restarted Pod never does it twice.
if [ -n "${ZK_RECOVER_ALONE:-}" ] && [ ! -f "$D/conf/recovered-$ZK_RECOVER_ALONE" ]; then
  printf '%s\n' "$ZK_INITIAL_DYNAMIC" > "$D/conf/zoo.cfg.dynamic.recovery-$ZK_RECOVER_ALONE"
  rm -f "$D/conf/zoo.cfg.dynamic.next"
  grep -v '^dynamicConfigFile=' "$D/conf/zoo.cfg" > "$D/conf/zoo.cfg.recovery" || true
  echo "dynamicConfigFile=$D/conf/zoo.cfg.dynamic.recovery-$ZK_RECOVER_ALONE" >> "$D/conf/zoo.cfg.recovery"
  mv "$D/conf/zoo.cfg.recovery" "$D/conf/zoo.cfg"
  touch "$D/conf/recovered-$ZK_RECOVER_ALONE"
  echo "quorate: member $ZK_SERVER_ID restarts alone, recovering the ensemble from its data ($ZK_RECOVER_ALONE)" >&2
fi
# Static settings come from the current spec; the dynamic file ZooKeeper last wrote is kept.
dyn=$(grep '^dynamicConfigFile=' "$D/conf/zoo.cfg" || true)
grep -v -e '^dynamicConfigFile=' -e '^admin.serverAddress=' -e '^metricsProvider.httpHost=' /etc/quorate/config/zoo.cfg > "$D/conf/zoo.cfg.next"
echo "${dyn:-dynamicConfigFile=$D/conf/zoo.cfg.dynamic}" >> "$D/conf/zoo.cfg.next"
echo "admin.serverAddress=$POD_IP" >> "$D/conf/zoo.cfg.next"
echo "metricsProvider.httpHost=$POD_IP" >> "$D/conf/zoo.cfg.next"
# Client authentication: enforced exactly when the credentials Secret holds the JAAS file.
if [ -f /etc/quorate/jaas/jaas.conf ]; then
  cat /etc/quorate/config/zoo.cfg.sasl >> "$D/conf/zoo.cfg.next"
fi
mv "$D/conf/zoo.cfg.next" "$D/conf/zoo.cfg"
"#;

/// What the server container runs before ZooKeeper, every time it starts (the Pod's init
/// container runs once per Pod, the server again after each crash): a volume wiped under a
/// running Pod has lost `myid` and the configuration the init container laid out, and the
/// member refuses to serve without its data, saying so in its termination message (starting
/// with [`DATA_LOST_MARKER`]).
pub const SERVE_CHECK: &str = r#"D=/var/lib/zookeeper
M=/var/run/quorate/zookeeper.message
if [ ! -s "$D/data/myid" ] || [ ! -f "$D/conf/zoo.cfg" ]; then
  msg="quorate: data lost: member $ZK_SERVER_ID's volume no longer holds its data (lost or wiped)."
  echo "$msg" >&2
  echo "$msg" > "$M" 2>/dev/null || true
  exit 1
fi
rm -f "$M"
"#;

/// What the server container runs before ZooKeeper to find its JAAS file: `$JAAS` is the flag
/// that hands it to the JVM when the credentials Secret holds one (client authentication on).
pub const JAAS_CHECK: &str = r#"JAAS=
if [ -f /etc/quorate/jaas/jaas.conf ]; then
  JAAS=-Djava.security.auth.login.config=/etc/quorate/jaas/jaas.conf
fi
"#;

/// The official image's `zookeeper` user and group.
pub const ZOOKEEPER_UID: i64 = 1000;

/// The Pod security context of every Pod quorate runs on a member's volume (members, volume
/// probes, restores): `spec.podTemplate.securityContext`, or the official image's `zookeeper`
/// user (uid and gid 1000, non-root), which also owns the volumes (`fsGroup`, changed only when
/// the volume's root differs), with seccomp `RuntimeDefault`. With [`restricted_container`] the
/// Pod Security `restricted` profile admits the Pods.
pub fn pod_security(spec: &MasterEnsembleSpec) -> PodSecurityContext {
    if let Some(given) = spec
        .pod_template
        .as_ref()
        .and_then(|t| t.security_context.clone())
    {
        return given;
    }
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(ZOOKEEPER_UID),
        run_as_group: Some(ZOOKEEPER_UID),
        fs_group: Some(ZOOKEEPER_UID),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container's security context under the Pod Security `restricted` profile: no privilege
/// escalation, no capabilities.
pub fn restricted_container() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The member Pods' affinity: `spec.podTemplate.affinity` when given, else anti-affinity
/// between the ensemble's members per node as `antiAffinity` asks.
fn member_affinity(ctx: &EnsembleContext<'_>, template: &PodTemplateOverrides) -> Option<Affinity> {
    if template.affinity.is_some() {
        return template.affinity.clone();
    }
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(member_selector(ctx)),
            ..Default::default()
        }),
        topology_key: "kubernetes.io/hostname".into(),
        ..Default::default()
    };
    let anti = match template.anti_affinity {
        AntiAffinity::None => return None,
        AntiAffinity::Preferred => PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: term,
                },
            ]),
            ..Default::default()
        },
        AntiAffinity::Required => PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![term]),
            ..Default::default()
        },
    };
    Some(Affinity {
        pod_anti_affinity: Some(anti),
        ..Default::default()
    })
}

fn meta(ctx: &EnsembleContext<'_>, name: String, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(ctx.namespace.to_string()),
        labels: Some(labels),
        owner_references: Some(vec![ctx.owner.clone()]),
        ..Default::default()
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number.into(),
        ..Default::default()
    }
}

/// What a member's volume must hold when its Pod starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStart {
    /// A member that has never been a voter (or one a restore rebuilds): an empty volume is
    /// expected, and it syncs from the leader.
    Fresh,
    /// A member that has been a voter: its volume must still hold its data. An empty volume
    /// (a lost or wiped disk) makes the Pod fail to start instead of rejoining under the same id
    /// with nothing, which could let a quorum form without acknowledged writes; the member then
    /// counts as down and is replaced with a fresh id (I4).
    HasData,
}

/// The Pod of member `id`. `initial_dynamic` is its first dynamic configuration (the committed
/// voters plus itself; itself alone for a seed); `spec_hash` is recorded in an annotation.
pub fn build_member_pod(
    ctx: &EnsembleContext<'_>,
    id: ServerId,
    initial_dynamic: &str,
    spec_hash: &str,
    start: MemberStart,
) -> Pod {
    let spec = ctx.spec;
    let image = member_image(spec);
    let mut labels = member_labels(ctx.name, id);
    let mut annotations =
        BTreeMap::from([(ANNOTATION_SPEC_HASH.to_string(), spec_hash.to_string())]);
    if let Some(t) = &spec.pod_template {
        for (k, v) in &t.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        annotations.extend(t.annotations.clone());
    }
    let mut metadata = meta(ctx, member_pod(ctx.name, id), labels);
    metadata.annotations = Some(annotations);
    let envs = vec![
        env("ZK_SERVER_ID", id.to_string()),
        EnvVar {
            name: "POD_IP".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "status.podIP".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        env("ZK_INITIAL_DYNAMIC", initial_dynamic.trim_end()),
        env(
            "ZK_EXPECT_DATA",
            if start == MemberStart::HasData {
                "true"
            } else {
                "false"
            },
        ),
        EnvVar {
            name: "ZK_SUPER_DIGEST".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: credentials_secret(ctx.name),
                    key: SECRET_SUPER_DIGEST.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        },
        env(
            "JVM_OPTS",
            format!(
                "-Xmx{}m -Xms{}m",
                spec.config.heap_mib,
                spec.config.heap_mib.min(64)
            ),
        ),
    ];
    let mounts = vec![
        VolumeMount {
            name: "data".into(),
            mount_path: DATA_MOUNT.into(),
            ..Default::default()
        },
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "status".into(),
            mount_path: STATUS_MOUNT.into(),
            ..Default::default()
        },
        VolumeMount {
            name: "jaas".into(),
            mount_path: JAAS_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    // The logging configuration is given explicitly: with `-cp lib/*` alone the image's own
    // conf directory is not on the class path, and logback without a configuration logs
    // everything at DEBUG (hundreds of MB a minute from the AdminServer's Jetty, slow enough
    // that a joiner's snapshot sync times out).
    let run = format!(
        "{SERVE_CHECK}{JAAS_CHECK}exec java $JVM_OPTS $JAAS \"-Dzookeeper.DigestAuthenticationProvider.superDigest=$ZK_SUPER_DIGEST\" -Dlogback.configurationFile={CONFIG_MOUNT}/{LOGBACK_KEY} -cp '{}/lib/*' org.apache.zookeeper.server.quorum.QuorumPeerMain {DATA_MOUNT}/conf/zoo.cfg",
        install_dir(&spec.version)
    );
    let prepare = Container {
        name: "prepare".into(),
        image: Some(image.clone()),
        command: Some(vec!["/bin/sh".into(), "-c".into(), PREPARE_SCRIPT.into()]),
        termination_message_path: Some(format!("{STATUS_MOUNT}/prepare.message")),
        security_context: Some(restricted_container()),
        env: Some(envs.clone()),
        volume_mounts: Some(mounts.clone()),
        ..Default::default()
    };
    let zookeeper = Container {
        name: "zookeeper".into(),
        image: Some(image),
        command: Some(vec!["/bin/sh".into(), "-c".into(), run]),
        env: Some(envs),
        ports: Some(
            [
                port("client", CLIENT_PORT),
                port("quorum", QUORUM_PORT),
                port("election", ELECTION_PORT),
                port("admin", ADMIN_PORT),
            ]
            .into_iter()
            .chain(
                ctx.spec
                    .config
                    .prometheus_metrics
                    .then(|| port("metrics", METRICS_PORT)),
            )
            .collect(),
        ),
        // The AdminServer's `monitor` answers 200 only while the member serves (has a quorum).
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/commands/monitor".into()),
                port: IntOrString::Int(ADMIN_PORT.into()),
                ..Default::default()
            }),
            period_seconds: Some(2),
            timeout_seconds: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        // The AdminServer starts once the database is loaded (a large one takes minutes): until
        // then only the startup probe runs, for up to 30 minutes.
        startup_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(ADMIN_PORT.into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(360),
            ..Default::default()
        }),
        // `ruok` answers whenever the server runs, with or without a quorum, leading, following
        // or syncing: only a server whose AdminServer stops answering for a minute (hung) is
        // restarted, never one that is merely catching up.
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/commands/ruok".into()),
                port: IntOrString::Int(ADMIN_PORT.into()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        security_context: Some(restricted_container()),
        resources: spec.resources.clone(),
        termination_message_path: Some(format!("{STATUS_MOUNT}/zookeeper.message")),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    let template = spec.pod_template.clone().unwrap_or_default();
    Pod {
        metadata,
        spec: Some(PodSpec {
            hostname: Some(member_pod(ctx.name, id)),
            subdomain: Some(members_service(ctx.name)),
            init_containers: Some(vec![prepare]),
            containers: vec![zookeeper],
            restart_policy: Some("Always".into()),
            termination_grace_period_seconds: Some(30),
            volumes: Some(vec![
                Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: member_pvc(ctx.name, id),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "config".into(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: config_map(ctx.name),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Volume {
                    name: "status".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                },
                // The JAAS file, present only when the members enforce client authentication.
                Volume {
                    name: "jaas".into(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(credentials_secret(ctx.name)),
                        items: Some(vec![KeyToPath {
                            key: SECRET_JAAS.into(),
                            path: SECRET_JAAS.into(),
                            ..Default::default()
                        }]),
                        default_mode: Some(0o440),
                        optional: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            affinity: member_affinity(ctx, &template),
            security_context: Some(pod_security(spec)),
            image_pull_secrets: (!template.image_pull_secrets.is_empty())
                .then(|| template.image_pull_secrets.clone()),
            topology_spread_constraints: (!template.topology_spread_constraints.is_empty())
                .then(|| template.topology_spread_constraints.clone()),
            tolerations: (!template.tolerations.is_empty()).then_some(template.tolerations),
            node_selector: (!template.node_selector.is_empty()).then_some(template.node_selector),
            priority_class_name: template.priority_class_name,
            ..Default::default()
        }),
        status: None,
    }
}

/// The Pod of the survivor a recovery after a quorum loss rebuilds the ensemble from: the
/// member's own Pod (it must find its data, [`MemberStart::HasData`]) whose prepare step makes
/// its configuration itself alone, once per recovery (`recovery` is the ZkRestore's uid, marked
/// on the volume, so a restart after the ensemble has grown again never undoes the growth).
pub fn build_recovery_pod(
    ctx: &EnsembleContext<'_>,
    id: ServerId,
    alone: &str,
    spec_hash: &str,
    recovery: &str,
) -> Pod {
    let mut pod = build_member_pod(ctx, id, alone, spec_hash, MemberStart::HasData);
    if let Some(init) = pod
        .spec
        .as_mut()
        .and_then(|s| s.init_containers.as_mut())
        .and_then(|c| c.first_mut())
    {
        init.env
            .get_or_insert_default()
            .push(env("ZK_RECOVER_ALONE", recovery));
    }
    pod
}

/// The PVC of member `id`.
pub fn build_member_pvc(ctx: &EnsembleContext<'_>, id: ServerId) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(ctx, member_pvc(ctx.name, id), member_labels(ctx.name, id)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: ctx.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(ctx.spec.storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The key of the members' logging configuration in the ensemble's ConfigMap.
const LOGBACK_KEY: &str = "logback.xml";

/// The members' logging (logback, ZooKeeper 3.8 and later): INFO and above to the console, the
/// Pod's log, as the official image does; Jetty, chatty at INFO, at WARN.
const LOGBACK_XML: &str = r#"<configuration>
  <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
    <encoder>
      <pattern>%d{ISO8601} [myid:%X{myid}] - %-5p [%t:%C{1}@%L] - %m%n</pattern>
    </encoder>
  </appender>
  <logger name="org.eclipse.jetty" level="WARN"/>
  <root level="INFO">
    <appender-ref ref="CONSOLE"/>
  </root>
</configuration>
"#;

/// The ConfigMap with the static zoo.cfg and the members' logging configuration.
pub fn build_config_map(ctx: &EnsembleContext<'_>) -> ConfigMap {
    ConfigMap {
        metadata: meta(
            ctx,
            config_map(ctx.name),
            ensemble_labels(ctx.name, "config"),
        ),
        data: Some(BTreeMap::from([
            ("zoo.cfg".to_string(), render_static(&ctx.spec.config)),
            (SASL_CFG_KEY.to_string(), SASL_SETTINGS.to_string()),
            (LOGBACK_KEY.to_string(), LOGBACK_XML.to_string()),
        ])),
        ..Default::default()
    }
}

/// The connection ConfigMap a client's Pod can take its connection string from
/// (`configMapKeyRef`, or `envFrom`): `ZOOKEEPER` (`host:port`, the client Service),
/// `ZOOKEEPER_HOSTS` (the same, without a chroot) and `ZOOKEEPER_CLIENT_PORT`.
pub fn build_connection_config_map(ctx: &EnsembleContext<'_>) -> ConfigMap {
    let connect = connection_string(ctx.name, ctx.namespace, CLUSTER_DOMAIN);
    ConfigMap {
        metadata: meta(
            ctx,
            connection_config_map(ctx.name),
            ensemble_labels(ctx.name, "connection"),
        ),
        data: Some(BTreeMap::from([
            ("ZOOKEEPER".to_string(), connect.clone()),
            ("ZOOKEEPER_HOSTS".to_string(), connect),
            ("ZOOKEEPER_CLIENT_PORT".to_string(), CLIENT_PORT.to_string()),
        ])),
        ..Default::default()
    }
}

fn member_selector(ctx: &EnsembleContext<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_ENSEMBLE.to_string(), ctx.name.to_string()),
        (LABEL_COMPONENT.to_string(), "member".to_string()),
    ])
}

/// The headless Service that gives each member its DNS name. Not-ready members are published
/// too: a joiner must be reachable before it serves.
pub fn build_members_service(ctx: &EnsembleContext<'_>) -> Service {
    Service {
        metadata: meta(
            ctx,
            members_service(ctx.name),
            ensemble_labels(ctx.name, "members"),
        ),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(member_selector(ctx)),
            ports: Some(
                [
                    ("client", CLIENT_PORT),
                    ("quorum", QUORUM_PORT),
                    ("election", ELECTION_PORT),
                    ("admin", ADMIN_PORT),
                ]
                .into_iter()
                .map(|(name, p)| ServicePort {
                    name: Some(name.into()),
                    port: p.into(),
                    ..Default::default()
                })
                .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

/// The client Service (ready members only).
pub fn build_client_service(ctx: &EnsembleContext<'_>) -> Service {
    Service {
        metadata: meta(
            ctx,
            client_service(ctx.name),
            ensemble_labels(ctx.name, "client"),
        ),
        spec: Some(ServiceSpec {
            selector: Some(member_selector(ctx)),
            ports: Some(vec![ServicePort {
                name: Some("client".into()),
                port: CLIENT_PORT.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

/// The PodDisruptionBudget: at most one member down by voluntary disruption.
pub fn build_pdb(ctx: &EnsembleContext<'_>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(ctx, ctx.name.to_string(), ensemble_labels(ctx.name, "pdb")),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(member_selector(ctx)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::resources::zoo_cfg::{ids_in_dynamic, initial_dynamic};

    fn spec() -> MasterEnsembleSpec {
        serde_json::from_value(serde_json::json!({"replicas": 3})).expect("spec")
    }

    fn ctx(spec: &MasterEnsembleSpec) -> EnsembleContext<'_> {
        EnsembleContext {
            name: "masters",
            namespace: "prod",
            spec,
            owner: OwnerReference {
                api_version: "quorate.dev/v1alpha1".into(),
                kind: "MasterEnsemble".into(),
                name: "masters".into(),
                uid: "u-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        }
    }

    #[test]
    fn client_authentication_is_on_exactly_when_the_credentials_secret_holds_the_jaas_file() {
        let s = spec();
        let pod = build_member_pod(&ctx(&s), ServerId(1), "", "abc", MemberStart::Fresh);
        let spec = pod.spec.unwrap();
        let jaas = spec
            .volumes
            .iter()
            .flatten()
            .find_map(|v| v.secret.as_ref().filter(|_| v.name == "jaas"))
            .expect("a jaas volume");
        assert_eq!(jaas.secret_name.as_deref(), Some("masters-credentials"));
        assert_eq!(
            jaas.optional,
            Some(true),
            "ensembles without it still start"
        );
        assert_eq!(jaas.items.as_ref().unwrap()[0].key, SECRET_JAAS);
        let file = format!("{JAAS_MOUNT}/{SECRET_JAAS}");
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            assert!(
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == "jaas" && m.mount_path == JAAS_MOUNT),
                "{} mounts the JAAS file",
                c.name
            );
        }
        // The prepare step appends the settings when the file is there; the server hands the
        // file to the JVM then.
        assert!(PREPARE_SCRIPT.contains(&format!(
            "if [ -f {file} ]; then\n  cat {CONFIG_MOUNT}/{SASL_CFG_KEY} >>"
        )));
        assert!(JAAS_CHECK.contains(&format!(
            "if [ -f {file} ]; then\n  JAAS=-Djava.security.auth.login.config={file}\n"
        )));
        let run = &spec.containers[0].command.as_ref().unwrap()[2];
        assert!(
            run.contains(JAAS_CHECK) && run.contains("exec java $JVM_OPTS $JAAS "),
            "{run}"
        );
        let cm = build_config_map(&ctx(&s)).data.unwrap();
        for line in ["enforce.auth.enabled=true", "enforce.auth.schemes=sasl"] {
            assert!(cm[SASL_CFG_KEY].lines().any(|l| l == line), "{line}");
            assert!(
                !cm["zoo.cfg"].contains(line),
                "only through the Secret: {line}"
            );
        }
    }

    #[test]
    fn a_member_pod_carries_its_id_hash_owner_and_initial_configuration() {
        let s = spec();
        let dynamic = initial_dynamic(
            &BTreeMap::from([(ServerId(1), "m-1".into())]),
            ServerId(4),
            "m-4",
        );
        let pod = build_member_pod(&ctx(&s), ServerId(4), &dynamic, "abc", MemberStart::Fresh);
        assert_eq!(pod.metadata.name.as_deref(), Some("masters-4"));
        assert_eq!(
            pod.metadata.labels.as_ref().and_then(server_id_of),
            Some(ServerId(4))
        );
        assert_eq!(
            pod.metadata.annotations.as_ref().unwrap()[ANNOTATION_SPEC_HASH],
            "abc"
        );
        assert_eq!(
            pod.metadata.owner_references.as_ref().unwrap()[0].kind,
            "MasterEnsemble"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.subdomain.as_deref(), Some("masters-members"));
        let main = &spec.containers[0];
        assert_eq!(
            main.image.as_deref(),
            Some("docker.io/library/zookeeper:3.9.5")
        );
        assert!(main.command.as_ref().unwrap()[2].contains("/apache-zookeeper-3.9.5-bin/lib/*"));
        let envs = main.env.as_ref().unwrap();
        let initial = envs
            .iter()
            .find(|e| e.name == "ZK_INITIAL_DYNAMIC")
            .and_then(|e| e.value.clone())
            .unwrap();
        assert_eq!(
            ids_in_dynamic(&initial).len(),
            2,
            "the committed voter plus itself"
        );
        assert!(
            envs.iter()
                .any(|e| e.name == "POD_IP" && e.value_from.is_some())
        );
        let probe = main
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/commands/monitor"));
        let claim = spec.volumes.unwrap()[0]
            .persistent_volume_claim
            .clone()
            .unwrap()
            .claim_name;
        assert_eq!(claim, "data-masters-4");
    }

    #[test]
    fn the_prepare_script_never_decides_membership() {
        assert!(
            !PREPARE_SCRIPT.contains("server."),
            "no server.N lines are derived in the Pod"
        );
        assert!(
            PREPARE_SCRIPT.contains("if [ ! -f \"$D/conf/zoo.cfg\" ]"),
            "the initial dynamic file is written once"
        );
    }

    #[test]
    fn a_former_voter_with_an_empty_volume_does_not_start_under_its_old_id() {
        let s = spec();
        let c = ctx(&s);
        let envs = |start| {
            let pod = build_member_pod(&c, ServerId(4), "server.4=h", "abc", start);
            pod.spec.unwrap().init_containers.unwrap()[0]
                .env
                .clone()
                .unwrap()
                .into_iter()
                .find(|e| e.name == "ZK_EXPECT_DATA")
                .and_then(|e| e.value)
        };
        assert_eq!(envs(MemberStart::HasData).as_deref(), Some("true"));
        assert_eq!(envs(MemberStart::Fresh).as_deref(), Some("false"));
        // The script itself is run by tests/member_pod.rs (this module does no I/O).
    }

    #[test]
    fn a_spec_image_overrides_the_default() {
        let mut s = spec();
        s.image = Some("registry.example/zk:3.9.5-custom".into());
        assert_eq!(member_image(&s), "registry.example/zk:3.9.5-custom");
    }

    #[test]
    fn members_log_at_info_through_the_logging_configuration_in_their_config_map() {
        let s = spec();
        let c = ctx(&s);
        let data = build_config_map(&c).data.unwrap();
        let logback = &data[LOGBACK_KEY];
        assert!(logback.contains(r#"<root level="INFO">"#), "{logback}");
        let pod = build_member_pod(&c, ServerId(1), "server.1=h", "h", MemberStart::HasData);
        let server = &pod.spec.unwrap().containers[0];
        let command = server.command.as_ref().unwrap().join(" ");
        assert!(
            command.contains(&format!(
                "-Dlogback.configurationFile={CONFIG_MOUNT}/{LOGBACK_KEY}"
            )),
            "{command}"
        );
        assert!(
            server
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.mount_path == CONFIG_MOUNT),
            "the ConfigMap is mounted where the command reads it"
        );
    }

    #[test]
    fn the_services_and_budget_select_only_this_ensembles_members() {
        let s = spec();
        let c = ctx(&s);
        let headless = build_members_service(&c).spec.unwrap();
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        assert_eq!(
            headless.selector.as_ref().unwrap()[LABEL_ENSEMBLE],
            "masters"
        );
        let pdb = build_pdb(&c).spec.unwrap();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        let pvc = build_member_pvc(&c, ServerId(2)).spec.unwrap();
        assert_eq!(pvc.resources.unwrap().requests.unwrap()["storage"].0, "1Gi");
        assert!(build_config_map(&c).data.unwrap()["zoo.cfg"].contains("reconfigEnabled=true"));
    }
}
