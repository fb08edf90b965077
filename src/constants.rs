//! Names that must agree everywhere: the field manager, label keys, annotation keys, ports and
//! the paths inside member containers.

/// The field manager of every server-side apply quorate makes.
pub const FIELD_MANAGER: &str = "quorate";
/// The finalizer on resources whose cleanup quorate orders itself.
pub const FINALIZER: &str = "quorate.dev/cleanup";

/// Label: the ensemble a member belongs to.
pub const LABEL_ENSEMBLE: &str = "quorate.dev/ensemble";
/// Label: a member's ZooKeeper server id.
pub const LABEL_SERVER_ID: &str = "quorate.dev/server-id";
/// Label: the server id whose volume a probe Pod reads (never [`LABEL_SERVER_ID`]: a probe is
/// not a member).
pub const LABEL_PROBE_OF: &str = "quorate.dev/probe-of";
/// Label: the ZkRestore a Pod works for (a scratch member, a volume probe).
pub const LABEL_RESTORE: &str = "quorate.dev/restore";
/// Label: what the object is to quorate (`member`, `config`, `client`, ...).
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Label: managed by quorate.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: the application.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label: the instance (the ensemble's name).
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";

/// Annotation on member Pods: the hash of the member spec they were built from.
pub const ANNOTATION_SPEC_HASH: &str = "quorate.dev/spec-hash";
/// Annotation on a member's PVC: the member is fenced for its replacement (its Pod is deleted
/// and not recreated while the ensemble keeps a quorum; the PVC goes once the configuration no
/// longer lists the member).
pub const ANNOTATION_FENCED: &str = "quorate.dev/fenced";
/// Annotation on member Pods and PVCs: the member has been a voter (it never joins again).
pub const ANNOTATION_WAS_VOTER: &str = "quorate.dev/was-voter";

/// ZooKeeper client port.
pub const CLIENT_PORT: u16 = 2181;
/// Quorum (follower to leader) port.
pub const QUORUM_PORT: u16 = 2888;
/// Leader election port.
pub const ELECTION_PORT: u16 = 3888;
/// AdminServer port.
pub const ADMIN_PORT: u16 = 8080;
/// Port of ZooKeeper's own Prometheus metrics (`/metrics`), when on.
pub const METRICS_PORT: u16 = 7000;

/// Where a member's volume is mounted in its containers (ZooKeeper's dataDir lives below it).
pub const DATA_MOUNT: &str = "/var/lib/zookeeper";
/// Where the ensemble's ConfigMap is mounted (read-only templates).
pub const CONFIG_MOUNT: &str = "/etc/quorate/config";
/// Where a member's containers leave their termination messages (an `emptyDir`).
pub const STATUS_MOUNT: &str = "/var/run/quorate";
/// How a member container's termination message starts when the container refused to start
/// because the member's volume no longer holds its data (a lost or wiped disk): the operator
/// reads it from the Pod's status and replaces the member at once.
pub const DATA_LOST_MARKER: &str = "quorate: data lost:";

/// Key of the super user's password in the ensemble's credentials Secret.
pub const SECRET_SUPER_PASSWORD: &str = "superPassword";
/// Key of the super user's digest (`super:base64(sha1(super:password))`), given to the servers.
pub const SECRET_SUPER_DIGEST: &str = "superDigest";
/// Key of the password of the SASL user [`CLIENT_USER`] in the ensemble's credentials Secret:
/// present exactly when the members enforce SASL client authentication.
pub const SECRET_CLIENT_PASSWORD: &str = "clientPassword";
/// Key of the members' JAAS configuration in the ensemble's credentials Secret (present with
/// [`SECRET_CLIENT_PASSWORD`]): the SASL users the servers accept, and the login of a shell
/// opened on a member.
pub const SECRET_JAAS: &str = "jaas.conf";
/// The SASL user clients log in as.
pub const CLIENT_USER: &str = "client";
/// Where a member's containers find the JAAS configuration (a Secret volume).
pub const JAAS_MOUNT: &str = "/etc/quorate/jaas";
/// The ZooKeeper super user's name.
pub const SUPER_USER: &str = "super";
/// Key of the operator user's password in the ensemble's credentials Secret.
pub const SECRET_OPERATOR_PASSWORD: &str = "operatorPassword";
/// The digest user the operator reconfigures as: it has `rwa` on `/zookeeper/config` only
/// (granted by the super user), not the super user's power over every znode.
pub const OPERATOR_USER: &str = "quorate";
/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Annotation on a MasterEnsemble while a ZkRestore owns its members (value: the ZkRestore's
/// name). The ensemble controller takes no step while it is set.
pub const ANNOTATION_RESTORING: &str = "quorate.dev/restoring";
/// Annotation on a ZkBackup asking for one backup now (value: RFC 3339 time of the request).
/// Set by `backupBeforeChange` and by `quorate backup create` on an existing ZkBackup.
pub const ANNOTATION_BACKUP_REQUESTED: &str = "quorate.dev/backup-requested-at";
/// Annotation on a ZkBackup asking the operator to delete some of its backups, from the store
/// and from status (value: artifact ids, comma-separated). Set by `quorate backup delete`, so
/// the bucket is reached from inside the cluster, never from the laptop; each id leaves the
/// value once its backup is gone. A backup still running, or used by a restore that has not
/// finished, is deleted after it ends.
pub const ANNOTATION_DELETE_BACKUPS: &str = "quorate.dev/delete-backups";
/// Key of the access key id in an S3 credentials Secret.
pub const SECRET_S3_ACCESS_KEY_ID: &str = "accessKeyId";
/// Key of the secret access key in an S3 credentials Secret.
pub const SECRET_S3_SECRET_ACCESS_KEY: &str = "secretAccessKey";
/// Environment variable naming the operator's own image (restores run it in member Pods).
pub const ENV_OPERATOR_IMAGE: &str = "QUORATE_IMAGE";
/// Where the operator's image keeps the binary.
pub const OPERATOR_BINARY: &str = "/opt/quorate/bin/quorate";
/// Environment variables the restore init container reads the S3 keys from.
pub const ENV_S3_ACCESS_KEY_ID: &str = "QUORATE_S3_ACCESS_KEY_ID";
/// See [`ENV_S3_ACCESS_KEY_ID`].
pub const ENV_S3_SECRET_ACCESS_KEY: &str = "QUORATE_S3_SECRET_ACCESS_KEY";

/// The operator's image: `$QUORATE_IMAGE`, or `quorate:<version>`.
pub fn operator_image() -> String {
    std::env::var(ENV_OPERATOR_IMAGE)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("quorate:{}", env!("CARGO_PKG_VERSION")))
}

/// Set by `quorate ensemble restart` on `spec.podTemplate.annotations` (the time, RFC 3339): a
/// changed pod template, so the planner rolls every member, followers first and the leader last.
pub const ANNOTATION_RESTARTED_AT: &str = "quorate.dev/restartedAt";
