//! `MasterEnsemble`: how many ZooKeeper members an ensemble should have and how they run.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, PodSecurityContext, ResourceRequirements, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired state of a ZooKeeper ensemble. quorate moves the real members toward it one safe
/// step at a time through ZooKeeper's dynamic reconfiguration.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "quorate.dev",
    version = "v1alpha1",
    kind = "MasterEnsemble",
    namespaced,
    status = "MasterEnsembleStatus",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.readyMembers"
    ),
    shortname = "mens",
    category = "quorate",
    doc = "A ZooKeeper ensemble that quorate keeps quorate: members are added, removed, replaced and restarted one safe step at a time.",
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".spec.replicas","description":"Desired number of voting members"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyMembers","description":"Members serving and synced"}"#,
    printcolumn = r#"{"name":"Quorum","type":"integer","jsonPath":".status.quorum.majority","description":"Votes needed for a quorum"}"#,
    printcolumn = r#"{"name":"Tolerance","type":"integer","jsonPath":".status.quorum.tolerance","description":"Voters that may fail without losing the quorum"}"#,
    printcolumn = r#"{"name":"Leader","type":"integer","jsonPath":".status.leader","description":"Server id of the leader"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = crate::versions::admission_rule(0))]
#[x_kube(validation = crate::versions::admission_rule(1))]
#[x_kube(validation = crate::versions::admission_rule(2))]
#[x_kube(validation = crate::versions::admission_rule(3))]
#[x_kube(validation = Rule::new("has(self.clientAuthentication) == has(oldSelf.clientAuthentication) && (!has(self.clientAuthentication) || self.clientAuthentication == oldSelf.clientAuthentication)").message("spec.clientAuthentication is set only at creation: turning client authentication on or off under running clients would lock them out or open the ensemble"))]
pub struct MasterEnsembleSpec {
    /// Number of voting members: odd, from 1 to 9. Even sizes are refused because they add no
    /// fault tolerance (4 voters tolerate one failure, like 3).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 9").message("spec.replicas must be between 1 and 9"))]
    #[x_kube(validation = Rule::new("self % 2 == 1").message("spec.replicas must be odd (1, 3, 5, 7 or 9): an even number of voters adds no fault tolerance"))]
    pub replicas: i32,

    /// Container image of the ZooKeeper server. Defaults to the image for `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// ZooKeeper version the image runs (for example `3.9.5`). It selects features such as the
    /// AdminServer snapshot command used for online backups.
    #[serde(default = "default_version")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^3\\\\.[0-9]+\\\\.[0-9]+$')").message("spec.version must look like 3.X.Y"))]
    pub version: String,

    /// Known vulnerabilities (CVE ids) of `version` whose risk is accepted. quorate refuses a
    /// version with a known vulnerability (for example CVE-2023-44981, fixed in 3.7.2, 3.8.3 and
    /// 3.9.1, or CVE-2026-24281, fixed in 3.8.6 and 3.9.5) unless each one is listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub accept_vulnerabilities: Vec<String>,

    /// Server settings written to zoo.cfg.
    #[serde(default)]
    pub config: ZkServerConfig,

    /// CPU and memory for each member's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The persistent volume of each member (its dataDir).
    #[serde(default)]
    pub storage: StorageSpec,

    /// Scheduling overrides for member Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,

    /// How failed members are handled.
    #[serde(default)]
    pub failure: FailurePolicy,

    /// A ZkBackup that must hold a Ready backup taken after a change was requested before any
    /// membership change or rolling restart starts. Replacing a failed member does not wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_before_change: Option<BackupBeforeChange>,

    /// When true, quorate takes no step at all: no member is created, removed, replaced or
    /// restarted. Status is still observed and reported.
    #[serde(default)]
    pub paused: bool,

    /// Server ids of members to replace while they are healthy (a host to retire, a disk to
    /// move): for each, one at a time, a fresh member (a new id) joins, syncs and becomes a
    /// voter first, then the listed member leaves the configuration and its Pod and volume are
    /// deleted, so the ensemble never has fewer healthy voters than `replicas`. Ids that are no
    /// longer voters are ignored (ids are never reused), so the list may keep them.
    /// `quorate ensemble replace-member NS/NAME ID` adds one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(id, id >= 1)").message("spec.replaceMembers must hold server ids, each at least 1"))]
    pub replace_members: Vec<i64>,

    /// Credentials. When absent, quorate generates a Secret with a super-user and an operator
    /// digest user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// How clients must authenticate to the members. `SASL`: every client session logs in with
    /// SASL DIGEST-MD5 before anything else (ZooKeeper's `enforce.auth.schemes=sasl`); quorate
    /// generates the password of the user `client` into `<name>-credentials` (key
    /// `clientPassword`) unless `spec.auth`'s Secret gives one. `None`: any client may open a
    /// session (znode ACLs still apply). When absent: `SASL` for an ensemble created by this
    /// version of quorate, and `None` for one created before (its clients never logged in, and
    /// turning it on under them would lock them out). Set only at creation: turning client
    /// authentication on or off under running clients is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_authentication: Option<ClientAuthentication>,
}

/// How clients authenticate to an ensemble's members.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ClientAuthentication {
    /// SASL DIGEST-MD5, enforced for every session.
    #[serde(rename = "SASL")]
    Sasl,
    /// No client authentication.
    None,
}

fn default_version() -> String {
    "3.9.5".to_string()
}

/// Settings written to each member's zoo.cfg. Membership lines are never set here: quorate
/// manages them through dynamic reconfiguration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZkServerConfig {
    /// Length of a ZooKeeper tick in milliseconds.
    #[serde(default = "default_tick_time")]
    #[x_kube(validation = Rule::new("self >= 100 && self <= 60000").message("spec.config.tickTime must be between 100 and 60000 milliseconds"))]
    pub tick_time: i32,
    /// Ticks a follower may take to connect and sync to the leader.
    #[serde(default = "default_init_limit")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.config.initLimit must be at least 1"))]
    pub init_limit: i32,
    /// Ticks a follower may lag behind the leader.
    #[serde(default = "default_sync_limit")]
    #[x_kube(validation = Rule::new("self >= 1").message("spec.config.syncLimit must be at least 1"))]
    pub sync_limit: i32,
    /// Maximum Java heap of each member in MiB. Size it to 3 to 4 times the data size: a member
    /// whose heap is too small cannot replay its log on restart.
    #[serde(default = "default_heap")]
    #[x_kube(validation = Rule::new("self >= 64").message("spec.config.heapMiB must be at least 64"))]
    #[serde(rename = "heapMiB")]
    pub heap_mib: i32,
    /// Further zoo.cfg keys. Keys that quorate owns (server.N, dynamicConfigFile, dataDir,
    /// reconfigEnabled, standaloneEnabled, clientPort, skipACL) are refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new("self.all(k, !(k.startsWith('server.') || k in ['dynamicConfigFile', 'dataDir', 'dataLogDir', 'reconfigEnabled', 'standaloneEnabled', 'clientPort', 'skipACL']))").message("spec.config.extra must not set keys that quorate owns (server.N, dynamicConfigFile, dataDir, dataLogDir, reconfigEnabled, standaloneEnabled, clientPort, skipACL)"))]
    pub extra: BTreeMap<String, String>,
    /// ZooKeeper's own Prometheus metrics (its `PrometheusMetricsProvider`) on port 7000 of each
    /// member, path `/metrics` (the container port is named `metrics`). On by default; the
    /// image must carry the provider's jars, as the official image does. Turning it off or on
    /// rolls the members; an ensemble created before this setting existed gets it as its
    /// members restart, without a roll of its own.
    #[serde(
        default = "default_prometheus_metrics",
        skip_serializing_if = "is_default_prometheus_metrics"
    )]
    pub prometheus_metrics: bool,
}

fn default_prometheus_metrics() -> bool {
    true
}
// Left out of the serialized spec when on, so that the members' spec hash of an ensemble
// created before the setting existed does not change (no roll on an operator upgrade).
fn is_default_prometheus_metrics(on: &bool) -> bool {
    *on
}

fn default_tick_time() -> i32 {
    2000
}
fn default_init_limit() -> i32 {
    10
}
fn default_sync_limit() -> i32 {
    5
}
fn default_heap() -> i32 {
    256
}

impl Default for ZkServerConfig {
    fn default() -> Self {
        ZkServerConfig {
            tick_time: default_tick_time(),
            init_limit: default_init_limit(),
            sync_limit: default_sync_limit(),
            heap_mib: default_heap(),
            extra: BTreeMap::new(),
            prometheus_metrics: default_prometheus_metrics(),
        }
    }
}

/// The persistent volume claimed for each member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)").message("spec.storage.storageClassName is immutable after creation"))]
pub struct StorageSpec {
    /// Requested size of each member's volume, as a Kubernetes quantity (for example `1Gi`).
    /// It cannot be lowered after creation.
    #[serde(default = "default_storage_size")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("spec.storage.size must be a positive quantity such as 1Gi"))]
    #[x_kube(validation = Rule::new("!isQuantity(oldSelf) || !isQuantity(self) || quantity(self).compareTo(quantity(oldSelf)) >= 0").message("spec.storage.size cannot be lowered after creation"))]
    pub size: String,
    /// StorageClass of the volumes; the cluster default when absent. Immutable after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

fn default_storage_size() -> String {
    "1Gi".to_string()
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

/// Scheduling overrides applied to every member Pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra labels on member Pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on member Pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node selector for member Pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Affinity rules for member Pods. When given, they replace the anti-affinity of
    /// `antiAffinity` entirely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How members are kept off each other's nodes when `affinity` is not given: `Preferred`
    /// (the default: the scheduler spreads them when it can), `Required` (a member that cannot
    /// get a node of its own stays Pending: one lost node never takes two voters) or `None`.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,
    /// Topology spread constraints of member Pods (across zones, say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// Secrets to pull the member image with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// The Pod security context of member Pods, replacing quorate's default: the official
    /// image's `zookeeper` user (uid and gid 1000, also the volumes' group through `fsGroup`),
    /// non-root, seccomp `RuntimeDefault`; with containers that drop every capability and cannot
    /// escalate, the Pod Security `restricted` profile admits them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Tolerations for member Pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// PriorityClass of member Pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// How member Pods avoid sharing a node.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AntiAffinity {
    /// The scheduler spreads members across nodes when it can.
    #[default]
    Preferred,
    /// Every member needs a node of its own.
    Required,
    /// No anti-affinity.
    None,
}

/// How long a member may be down before quorate replaces it with a fresh member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Time a voter must be continuously down before it is replaced by a member with a new
    /// server id, as a duration such as `5m` or `90s`. Replacement needs a healthy majority of
    /// the remaining voters.
    #[serde(default = "default_replace_after")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.matches('^([0-9]+(ms|s|m|h))+$') && duration(self) > duration('0s')").message("spec.failure.replaceAfter must be a positive duration such as 90s, 5m or 1h"))]
    pub replace_after: String,
}

fn default_replace_after() -> String {
    "5m".to_string()
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            replace_after: default_replace_after(),
        }
    }
}

/// Requires a fresh backup before any change that the user requests.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupBeforeChange {
    /// Name of a ZkBackup of this ensemble, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub backup_name: String,
}

/// Where the ZooKeeper credentials come from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// A Secret in the same namespace with key `superPassword` (the ZooKeeper super user's
    /// password) and, optionally, `operatorPassword` (the password of the digest user `quorate`
    /// the operator reconfigures as; generated when missing). Both are copied to
    /// `<name>-credentials`.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// The ensemble's phase: one word for `kubectl get mens`, written by the status writer and read
/// by every reader as this type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum EnsemblePhase {
    /// The first member (the seed) is being created.
    Creating,
    /// Every member serves and the ensemble matches the spec.
    Running,
    /// A member is joining or leaving (a step of a scale up or down).
    Scaling,
    /// A failed member is being fenced, removed and replaced by a fresh id.
    Replacing,
    /// Members are being restarted onto a new spec, followers first and the leader last.
    Rolling,
    /// Waiting for a member to start, sync or recover before the next step.
    Progressing,
    /// `spec.paused`: no step is taken.
    Paused,
    /// No safe step exists; `message` and the Blocked Event say why and what to do.
    Blocked,
    /// The spec is refused (a rule the schema cannot express); `message` names it.
    Invalid,
    /// A ZkRestore owns the members; no step until it is done.
    Restoring,
}

impl std::fmt::Display for EnsemblePhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What quorate last observed of the ensemble, and the step it is carrying out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MasterEnsembleStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary of what quorate is doing (the conditions carry the detail, e.g. Degraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EnsemblePhase>,
    /// Members that are serving and synced.
    #[serde(default)]
    pub ready_members: i32,
    /// What a client in the cluster connects to (`host:port` of the client Service, which
    /// routes to serving members). The ConfigMap `<name>-connection` holds it as `ZOOKEEPER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<String>,
    /// Every member quorate runs, voters and joiners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Size of the voting configuration and what it tolerates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumStatus>,
    /// Server id of the current leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<i64>,
    /// Version of the committed ZooKeeper configuration (hex, as in /zookeeper/config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// Server ids of the voters in the last configuration quorate read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<i64>,
    /// The one step being carried out, claimed with a compare-and-set before it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlightStep>,
    /// The last step that completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_step: Option<InFlightStep>,
    /// The server id the next new member gets. Ids only grow and are never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_server_id: Option<i64>,
    /// When the change now being carried out was first seen (the spec generation changed), to
    /// the microsecond: `backupBeforeChange` needs a backup newer than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_requested_at: Option<MicroTime>,
    /// The ZkRestore the members are handed over to: quorate's ensemble controller saw its
    /// fence (annotation `quorate.dev/restoring`) and takes no step until it is lifted. A
    /// restore touches no member before this names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    /// Whether quorate has taken the admin permission on `/` from `world:anyone` (once the
    /// ensemble first converged, and again after each restore, which may bring back an open
    /// root): the AdminServer's `snapshot` and `restore` commands, which need every permission
    /// on `/`, then answer only the super user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root_locked: bool,
    /// Why quorate is waiting or blocked, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Standard conditions: Available, Progressing, Degraded, QuorumAtRisk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One member as quorate last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// ZooKeeper server id (myid).
    pub server_id: i64,
    /// Name of the member's Pod.
    pub pod: String,
    /// Pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Client port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_port: Option<i32>,
    /// AdminServer port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_port: Option<i32>,
    /// leader, follower, observer, joiner (not yet a voter) or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<MemberRole>,
    /// Serving, Syncing, Starting, Down, Removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MemberState>,
    /// The highest zxid the member's volume durably holds (hex), read from its snapshots and
    /// transaction logs by a probe Pod while the ensemble has no quorum (no member then
    /// answers a zxid). Recovery must start from the member with the highest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_zxid: Option<String>,
    /// Last processed zxid (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zxid: Option<String>,
    /// Whether the leader counts this member as synced.
    #[serde(default)]
    pub synced: bool,
    /// Whether the member is a voter in the committed configuration.
    #[serde(default)]
    pub voter: bool,
    /// Whether the member has ever been a voter. A removed voter never becomes one again.
    #[serde(default)]
    pub was_voter: bool,
    /// Since when the member is in its current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Since when the member counts as unhealthy for `spec.failure.replaceAfter`: kept through
    /// changes of state and through recoveries shorter than `replaceAfter`, so a member that
    /// flaps is replaced like one that stays down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_since: Option<Time>,
    /// Hash of the Pod spec the member last served with while healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_spec_hash: Option<String>,
}

/// A member's role, as written into status and read back by the backup and restore controllers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Leads the ensemble.
    Leader,
    /// A voter that follows the leader.
    Follower,
    /// A non-voting observer.
    Observer,
    /// Started but not yet a voter.
    Joiner,
    /// Not known (the member does not answer).
    Unknown,
}

impl MemberRole {
    /// The word written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Leader => "leader",
            MemberRole::Follower => "follower",
            MemberRole::Observer => "observer",
            MemberRole::Joiner => "joiner",
            MemberRole::Unknown => "unknown",
        }
    }
}

/// A member's state, as written into status and read back by the next pass.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MemberState {
    /// Serving and synced.
    Serving,
    /// Serving but not yet synced with the leader.
    Syncing,
    /// Its Pod runs, its server does not serve yet.
    Starting,
    /// Neither its Pod nor its server runs.
    Down,
    /// Was a voter and has left the configuration.
    Removed,
}

impl MemberState {
    /// The word written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Serving => "Serving",
            MemberState::Syncing => "Syncing",
            MemberState::Starting => "Starting",
            MemberState::Down => "Down",
            MemberState::Removed => "Removed",
        }
    }
}

/// Size of the voting configuration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuorumStatus {
    /// Voters in the committed configuration.
    pub voters: i32,
    /// Votes needed for a quorum.
    pub majority: i32,
    /// Voters that may fail without losing the quorum.
    pub tolerance: i32,
}

/// A step claimed in status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InFlightStep {
    /// Stable step id such as `add-voter/4` or `remove-voter/2`.
    pub id: String,
    /// The kind of step: create-member, add-voter, remove-voter, delete-member, fence-member,
    /// restart-member.
    pub kind: String,
    /// Server id of the member the step acts on.
    pub member: i64,
    /// When the step was claimed.
    pub started_at: Time,
}

#[cfg(test)]
mod tests {
    //! Unit tier: the status phase is one closed set, in the schema as in the code.

    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_schema_lists_exactly_the_phases_the_status_writer_can_set() {
        let crd = serde_json::to_value(MasterEnsemble::crd()).unwrap();
        let phase = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["phase"];
        let listed: Vec<&str> = phase["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("no enum in {phase}"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(
            listed,
            [
                "Creating",
                "Running",
                "Scaling",
                "Replacing",
                "Rolling",
                "Progressing",
                "Paused",
                "Blocked",
                "Invalid",
                "Restoring"
            ]
        );
        // A reader sees the word the writer wrote.
        let s: MasterEnsembleStatus =
            serde_json::from_value(serde_json::json!({"phase": "Restoring"})).unwrap();
        assert_eq!(s.phase, Some(EnsemblePhase::Restoring));
        assert!(
            serde_json::from_value::<MasterEnsembleStatus>(
                serde_json::json!({"phase": "Degraded"})
            )
            .is_err()
        );
    }
}
