//! `ZkBackup`: backups of an ensemble, once or on a schedule, into object storage.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::EnsembleRef;

/// Backups of one ensemble. Without `schedule`, one backup is taken now; with it, one per
/// schedule tick. Backups are online: no member is stopped.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "quorate.dev",
    version = "v1alpha1",
    kind = "ZkBackup",
    namespaced,
    status = "ZkBackupStatus",
    shortname = "zkb",
    category = "quorate",
    doc = "Backups of a MasterEnsemble, once or on a cron schedule, with retention, into object storage.",
    printcolumn = r#"{"name":"Ensemble","type":"string","jsonPath":".spec.ensembleRef.name"}"#,
    printcolumn = r#"{"name":"Label","type":"string","jsonPath":".spec.label"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastScheduleTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ZkBackupSpec {
    /// The ensemble to back up. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.ensembleRef is immutable"))]
    pub ensemble_ref: EnsembleRef,

    /// Label of the backups; artifact ids are `<label>-<uuid>`. 3 to 25 characters of
    /// [A-Za-z0-9_.-], not starting with `...`. Immutable.
    #[schemars(length(max = 25))]
    #[x_kube(validation = Rule::new("self.size() >= 3 && self.size() <= 25").message("spec.label must be between 3 and 25 characters long"))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9_.-]+$')").message("spec.label must be composed of the characters [A-Za-z0-9_.-]"))]
    #[x_kube(validation = Rule::new("!self.startsWith('...')").message("spec.label cannot start with ..."))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.label is immutable"))]
    pub label: String,

    /// Cron schedule (five fields, UTC), for example `0 */6 * * *`. Absent: one backup now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 9, max = 128))]
    pub schedule: Option<String>,

    /// When true, no new scheduled backup starts; existing ones are kept.
    #[serde(default)]
    pub suspend: bool,

    /// Which backups to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,

    /// Where backups are stored.
    pub destination: Destination,

    /// How the data is read: `snapshot` (the AdminServer snapshot command, ZooKeeper 3.9.4+),
    /// `tree` (a walk of the data tree through the client protocol), or `auto` (snapshot where
    /// the server supports it, otherwise tree).
    #[serde(default)]
    pub method: BackupMethod,
}

/// Checks a backup label with the rules of `spec.label` (and of the DC/OS backup CLI): every
/// broken rule, in the words the API server uses.
pub fn label_errors(label: &str) -> Vec<&'static str> {
    let mut errors = Vec::new();
    let len = label.chars().count();
    if !(3..=25).contains(&len) {
        errors.push("label must be between 3 and 25 characters long");
    }
    if !label
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        errors.push("label must be composed of the characters [A-Za-z0-9_.-]");
    }
    if label.starts_with("...") {
        errors.push("label cannot start with ...");
    }
    errors
}

/// How a backup reads the data.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BackupMethod {
    /// Snapshot where the server supports it, otherwise a tree walk.
    #[default]
    Auto,
    /// The AdminServer `snapshot` command, streamed.
    Snapshot,
    /// A walk of the data tree through the client protocol.
    Tree,
}

/// Which backups to keep. Older ones are deleted from status and from the store.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep at most this many Ready backups (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.retention.keepLast must be at least 1"))]
    pub keep_last: Option<i32>,
    /// Delete backups older than this duration, such as `168h` (must be positive). The newest
    /// Ready backup is always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$') && duration(self) > duration('0s')").message("spec.retention.maxAge must be a positive duration such as 24h or 90m"))]
    pub max_age: Option<String>,
}

/// Object storage for backups: exactly one of `s3` or `filesystem`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.filesystem)").message("spec.destination must set exactly one of s3 or filesystem"))]
pub struct Destination {
    /// An S3-compatible bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    /// A directory on the operator's filesystem (for development).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<FilesystemDestination>,
}

/// An S3-compatible bucket.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    /// Endpoint URL, for example `https://s3.eu-west-1.amazonaws.com`.
    #[schemars(length(min = 1, max = 2048))]
    pub endpoint: String,
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix inside the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A Secret in the same namespace with keys `accessKeyId` and `secretAccessKey`. The keys
    /// are never logged or written to status.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
}

/// A directory on the operator's filesystem.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilesystemDestination {
    /// Absolute path of the directory.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
}

/// The backups taken and the schedule.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZkBackupStatus {
    /// Every backup still kept, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<BackupArtifact>,
    /// When the last scheduled backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the next scheduled backup starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupArtifact {
    /// `<label>-<uuid>`.
    pub id: String,
    /// BackingUp, Ready or Error.
    pub phase: ArtifactPhase,
    /// When the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the backup finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The change request (`backupBeforeChange`, `quorate backup create`) this backup was
    /// taken for, to the microsecond, when it was taken for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<MicroTime>,
    /// Last zxid contained in the backup (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zxid: Option<String>,
    /// Number of znodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub znodes: Option<i64>,
    /// Size in bytes of the stored data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// SHA-256 of the stored data (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where the data is stored (URL without credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Server id of the member the data was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_member: Option<i64>,
    /// `snapshot` or `tree`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<BackupMethod>,
    /// Why the backup failed, or what it could not preserve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The state of one backup, as in the DC/OS backup CLI.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ArtifactPhase {
    /// Data is being read and stored.
    #[default]
    BackingUp,
    /// Data, manifest and completion marker are stored and the checksum is recorded.
    Ready,
    /// The backup failed; `message` says why.
    Error,
}

#[cfg(test)]
mod tests {
    use super::label_errors;

    #[test]
    fn labels_follow_the_dcos_rules() {
        assert!(label_errors("nightly").is_empty());
        assert!(label_errors("a.b-c_D9").is_empty());
        assert_eq!(label_errors("ab").len(), 1);
        assert_eq!(label_errors(&"x".repeat(26)).len(), 1);
        assert_eq!(label_errors("bad label").len(), 1);
        assert_eq!(label_errors("....x"), vec!["label cannot start with ..."]);
        assert_eq!(label_errors("a$").len(), 2);
    }
}
