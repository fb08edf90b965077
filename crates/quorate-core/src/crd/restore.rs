//! `ZkRestore`: bring an ensemble back from a backup, or only verify a backup.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::EnsembleRef;

/// A restore of one backup into an ensemble. The spec is immutable: a new restore is a new
/// resource.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "quorate.dev",
    version = "v1alpha1",
    kind = "ZkRestore",
    namespaced,
    status = "ZkRestoreStatus",
    shortname = "zkr",
    category = "quorate",
    doc = "A restore of a ZkBackup artifact into a MasterEnsemble, offline or online, or a verification only.",
    printcolumn = r#"{"name":"Ensemble","type":"string","jsonPath":".spec.ensembleRef.name"}"#,
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec of a ZkRestore is immutable: create a new ZkRestore instead"))]
#[x_kube(validation = Rule::new("!has(self.source.survivors) || ((!has(self.mode) || self.mode == 'offline') && (!has(self.verifyOnly) || !self.verifyOnly))").message("spec.source.survivors rebuilds the ensemble offline: spec.mode must be offline and spec.verifyOnly false"))]
pub struct ZkRestoreSpec {
    /// The ensemble to restore into.
    pub ensemble_ref: EnsembleRef,
    /// The backup to restore.
    pub source: RestoreSource,
    /// `offline`: every member is stopped, the same verified snapshot is placed on each, all
    /// are started; clients are cut off until the members serve the restored data. `online`: a
    /// merge into the serving ensemble through the client protocol, not atomic and with
    /// clients not fenced: after the artifact is verified, its znodes are created or
    /// overwritten one by one through the leader, then persistent znodes it does not hold are
    /// deleted (never a live session's ephemerals nor the znodes above them). Clients may see a
    /// mix of old and restored data meanwhile, and their writes may be overwritten or deleted:
    /// stop writers first, or restore offline.
    #[serde(default)]
    pub mode: RestoreMode,
    /// Only verify the artifact: load it into a scratch member, check checksum and counts, and
    /// change nothing else.
    #[serde(default)]
    pub verify_only: bool,
    /// Allow restoring a backup older than the live data (its zxid is lower than the
    /// ensemble's), or one whose age cannot be compared: no member serves and a member's volume
    /// cannot be read, or the artifact was taken from another MasterEnsemble (another uid, so
    /// another history) while this one holds data. Without it such a restore is refused.
    #[serde(default)]
    pub allow_older: bool,
}

/// `offline` or `online`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RestoreMode {
    /// Stop every member, place the same snapshot on each, start them all.
    #[default]
    Offline,
    /// Merge into the serving ensemble through the leader; not atomic, clients not fenced.
    Online,
}

/// What to restore from: exactly one of `backup`, `location` or `survivors`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.backup), has(self.location), has(self.survivors)].filter(x, x).size() == 1").message("spec.source must set exactly one of backup, location or survivors"))]
#[x_kube(validation = Rule::new("!has(self.destination) || has(self.location)").message("spec.source.destination names the bucket that holds spec.source.location: set location too"))]
pub struct RestoreSource {
    /// An artifact of a ZkBackup in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupArtifactRef>,
    /// The URL of an artifact in object storage (`s3://<bucket>/<prefix>/<namespace>/<backup>/<id>`,
    /// as `quorate backup list` prints it). Its credentials come from `destination` when set,
    /// otherwise from the ZkBackup in this namespace whose destination holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub location: Option<String>,
    /// The bucket (and prefix) that holds `location`, with a credentials Secret in this
    /// namespace: restores an artifact with no ZkBackup in this cluster, such as into a new
    /// cluster after a disaster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<crate::crd::Destination>,
    /// Recovery after a quorum loss (`survivors: {}`): when a majority of the voters has lost
    /// its data for good, rebuild the ensemble from the surviving member with the highest zxid
    /// (read from every volume, no quorum needed), set the other survivors' volumes aside
    /// (kept, never deleted), then grow back to `spec.replicas` one step at a time. Refused
    /// while any member serves or a majority of the voters still holds data. Offline only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivors: Option<SurvivorsSource>,
}

/// Recovery from the ensemble's own surviving volumes; no options yet.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SurvivorsSource {}

/// An artifact of a ZkBackup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupArtifactRef {
    /// Name of the ZkBackup.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Artifact id (`<label>-<uuid>`).
    #[schemars(length(min = 4, max = 80))]
    pub artifact: String,
}

/// Progress of a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZkRestoreStatus {
    /// Pending, Verifying, Stopping, Restoring, Starting, Ready or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RestorePhase>,
    /// Progress per member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<RestoreMemberStatus>,
    /// What happened, and on failure where it stopped and what was left as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The artifact as verified before any member was touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<VerifiedArtifact>,
    /// The live data's newest zxid when the restore was checked against it (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_data_zxid: Option<String>,
    /// Standard conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What verification found in the artifact: later phases restore exactly these bytes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifiedArtifact {
    /// Artifact id.
    pub id: String,
    /// Namespace of the ZkBackup that took it (part of its location).
    pub namespace: String,
    /// The ZkBackup that took it.
    pub backup: String,
    /// `zookeeper-snapshot` or `quorate-tree-v1`.
    pub format: String,
    /// SHA-256 of the data (hex).
    pub sha256: String,
    /// Size of the data.
    pub bytes: i64,
    /// The snapshot's zxid (hex).
    pub zxid: String,
    /// The newest change to user data it holds (hex).
    pub data_zxid: String,
    /// Znodes it holds.
    pub znodes: i64,
    /// Znodes a restore brings back.
    pub user_znodes: i64,
    /// Where it is.
    pub location: String,
}

/// Phases of a restore.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RestorePhase {
    /// Accepted, not started.
    Pending,
    /// Checking checksum, manifest and zxid.
    Verifying,
    /// Stopping members.
    Stopping,
    /// Placing or replaying data.
    Restoring,
    /// Starting members and waiting for a leader.
    Starting,
    /// Done.
    Ready,
    /// Stopped with an error; see `message`.
    Failed,
}

/// One member's restore progress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreMemberStatus {
    /// Server id.
    pub server_id: i64,
    /// Stopped, Restored, Started, Serving, Untouched.
    pub state: String,
    /// The newest zxid on the member's volume, read by a recovery from the survivors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zxid: Option<String>,
    /// What a recovery from the survivors does with the member's volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivor: Option<SurvivorRole>,
}

/// What a recovery from the survivors does with one member's volume.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SurvivorRole {
    /// The survivor with the highest zxid: the ensemble is rebuilt from it.
    RebuildFrom,
    /// Another survivor with data: its PVC is set aside (kept, no longer the ensemble's).
    SetAside,
    /// No data on the volume (lost or wiped).
    NoData,
}
