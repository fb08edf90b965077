//! Validated domain types: what the planner reasons about.
//!
//! The CRD wire types are converted into [`Desired`] by a pure `TryFrom` that gathers every spec
//! error at once; the observer builds [`Observed`] from Pods, PVCs, ZooKeeper and status.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::crd::MasterEnsembleSpec;

use super::step::Step;

/// A ZooKeeper server id (`myid`). Ids only grow and are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerId(pub u32);

impl Default for ServerId {
    fn default() -> Self {
        ServerId(1)
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What the user asked for, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Desired {
    /// Number of voters: odd, 1 to 9.
    pub replicas: usize,
    /// Hash of everything in a member's Pod that needs a restart to change.
    pub spec_hash: String,
    /// How long a voter must be down before it is replaced.
    #[serde(with = "duration_text")]
    pub replace_after: SignedDuration,
    /// No step at all while true.
    #[serde(default)]
    pub paused: bool,
    /// A fresh Ready backup is needed before any change the user requests.
    #[serde(default)]
    pub backup_before_change: bool,
    /// Members to replace while healthy (`spec.replaceMembers`): a fresh member votes before a
    /// listed one leaves.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub replace: BTreeSet<ServerId>,
}

/// One invalid field of a spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct SpecError {
    /// The field's path, such as `spec.replicas`.
    pub field: &'static str,
    /// The rule it breaks.
    pub rule: String,
}

/// Every invalid field of a spec, gathered at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid spec: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct SpecErrors(pub Vec<SpecError>);

/// Parses a duration written as in the CRD (`90s`, `5m`, `1h30m`, `250ms`).
pub fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let mut total = SignedDuration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err("must not be empty".into());
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!("{text:?} is not a duration such as 90s, 5m or 1h"));
        }
        let number: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is too large"))?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (SignedDuration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (SignedDuration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (SignedDuration::from_mins(1), 1)
        } else if rest.starts_with('h') {
            (SignedDuration::from_hours(1), 1)
        } else {
            return Err(format!("{text:?} has no unit (ms, s, m or h)"));
        };
        rest = &rest[len..];
        let part = unit
            .checked_mul(number as i32)
            .filter(|_| number <= i32::MAX as i64);
        total = part
            .and_then(|p| total.checked_add(p))
            .ok_or_else(|| format!("{text:?} is too large"))?;
    }
    Ok(total)
}

/// Formats a duration the way the CRD writes it.
pub fn format_duration(d: SignedDuration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 && ms != 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 && ms != 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

mod duration_text {
    use jiff::SignedDuration;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &SignedDuration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SignedDuration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// The hash of the parts of a spec that end up in a member's Pod: changing any of them needs a
/// rolling restart. Stable across builds (SHA-256 of canonical JSON).
pub fn member_spec_hash(spec: &MasterEnsembleSpec) -> String {
    let relevant = serde_json::json!({
        "image": spec.image,
        "version": spec.version,
        "config": spec.config,
        "resources": spec.resources,
        "podTemplate": spec.pod_template,
    });
    let digest = Sha256::digest(relevant.to_string().as_bytes());
    hex::encode(&digest[..8])
}

impl TryFrom<&MasterEnsembleSpec> for Desired {
    type Error = SpecErrors;

    fn try_from(spec: &MasterEnsembleSpec) -> Result<Self, SpecErrors> {
        let mut errors = Vec::new();
        if !(1..=9).contains(&spec.replicas) {
            errors.push(SpecError {
                field: "spec.replicas",
                rule: format!("must be between 1 and 9 (got {})", spec.replicas),
            });
        } else if spec.replicas % 2 == 0 {
            errors.push(SpecError {
                field: "spec.replicas",
                rule: format!(
                    "must be odd (got {}): an even number of voters adds no fault tolerance",
                    spec.replicas
                ),
            });
        }
        let replace_after = match parse_duration(&spec.failure.replace_after) {
            Ok(d) if d > SignedDuration::ZERO => d,
            Ok(_) => {
                errors.push(SpecError {
                    field: "spec.failure.replaceAfter",
                    rule: "must be a positive duration".into(),
                });
                SignedDuration::ZERO
            }
            Err(e) => {
                errors.push(SpecError {
                    field: "spec.failure.replaceAfter",
                    rule: e,
                });
                SignedDuration::ZERO
            }
        };
        if !valid_version(&spec.version) {
            errors.push(SpecError {
                field: "spec.version",
                rule: format!("must look like 3.X.Y (got {:?})", spec.version),
            });
        }
        if spec.config.heap_mib < 64 {
            errors.push(SpecError {
                field: "spec.config.heapMiB",
                rule: "must be at least 64".into(),
            });
        }
        if spec.config.tick_time < 100 || spec.config.tick_time > 60_000 {
            errors.push(SpecError {
                field: "spec.config.tickTime",
                rule: "must be between 100 and 60000 milliseconds".into(),
            });
        }
        for key in spec.config.extra.keys() {
            if key.starts_with("server.") || RESERVED_KEYS.contains(&key.as_str()) {
                errors.push(SpecError {
                    field: "spec.config.extra",
                    rule: format!("must not set {key:?}: quorate owns it"),
                });
            }
        }
        let open = crate::versions::unaccepted(&spec.version, &spec.accept_vulnerabilities);
        if !open.is_empty() {
            errors.push(SpecError {
                field: "spec.version",
                rule: crate::versions::refusal(&spec.version, &open),
            });
        }
        if !errors.is_empty() {
            return Err(SpecErrors(errors));
        }
        Ok(Desired {
            replicas: spec.replicas as usize,
            spec_hash: member_spec_hash(spec),
            replace_after,
            paused: spec.paused,
            backup_before_change: spec.backup_before_change.is_some(),
            replace: spec
                .replace_members
                .iter()
                .filter_map(|id| u32::try_from(*id).ok())
                .map(ServerId)
                .collect(),
        })
    }
}

/// zoo.cfg keys that quorate writes itself.
pub const RESERVED_KEYS: &[&str] = &[
    "dynamicConfigFile",
    "dataDir",
    "dataLogDir",
    "reconfigEnabled",
    "standaloneEnabled",
    "clientPort",
    "skipACL",
];

fn valid_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts[0] == "3"
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// The role a member reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Leads the ensemble.
    Leader,
    /// Follows the leader (voter or non-voting joiner).
    Follower,
    /// Observer (never used by quorate, but reported).
    Observer,
    /// Not known (not serving).
    #[default]
    Unknown,
}

/// What ZooKeeper says about one member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZkState {
    /// Answers requests (it has a quorum); an answer without quorum is not serving.
    #[serde(default)]
    pub serving: bool,
    /// Leader, follower, ...
    #[serde(default)]
    pub role: Role,
    /// Last processed zxid, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zxid: Option<u64>,
    /// The leader counts this member as synced (the leader itself is synced).
    #[serde(default)]
    pub synced: bool,
}

/// A member's Pod as observed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    /// Hash of the member spec the Pod was built from.
    pub spec_hash: String,
    /// The Pod's containers are running (phase Running).
    #[serde(default)]
    pub running: bool,
    /// When the Pod was created.
    pub created_at: Timestamp,
    /// The Pod is being deleted.
    #[serde(default)]
    pub terminating: bool,
    /// The member's process refused to start because its volume holds none of its data (a
    /// lost or wiped disk under a PVC that still exists): it can never serve again under its
    /// id (I4), so it is replaced at once, and its failure says nothing about the spec.
    #[serde(default)]
    pub data_lost: bool,
}

/// One member quorate owns (a server id with a Pod and/or a volume).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Server id.
    pub id: ServerId,
    /// The Pod, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodInfo>,
    /// The member's volume (PVC) exists.
    #[serde(default = "yes")]
    pub volume: bool,
    /// The member is fenced for its replacement: its Pod is deleted and not recreated while
    /// the ensemble keeps a quorum, and its volume is kept until the configuration no longer
    /// lists it (only then is it deleted, with the retired id).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
    /// ZooKeeper's view.
    #[serde(default)]
    pub zk: ZkState,
    /// Since when the member has been continuously unhealthy (recorded in status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since: Option<Timestamp>,
    /// The spec hash the member last served with while healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_spec_hash: Option<String>,
    /// The member has been a voter at some time. A removed voter never becomes a voter again.
    #[serde(default)]
    pub was_voter: bool,
    /// The highest zxid the member's volume durably holds, read from its files by a probe Pod
    /// while no member serves (ZooKeeper answers no zxid without a quorum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_zxid: Option<u64>,
}

fn yes() -> bool {
    true
}

impl Member {
    /// Serving and synced, in a running Pod, on its own volume. A member whose volume is gone
    /// is not trusted: its data would not survive a restart.
    pub fn is_healthy(&self) -> bool {
        self.volume && self.serves()
    }

    /// Serving and synced in a running Pod, its volume intact or not: it takes part in the
    /// quorum now (ZooKeeper's view), whether or not its data would survive a restart.
    pub fn serves(&self) -> bool {
        self.pod
            .as_ref()
            .is_some_and(|p| p.running && !p.terminating)
            && self.zk.serving
            && self.zk.synced
    }

    /// Serves now, but its volume is gone or being deleted: its data goes with its Pod.
    pub fn serves_without_volume(&self) -> bool {
        self.serves() && !self.volume
    }

    /// Its Pod reports that the volume lost the member's data (see [`PodInfo::data_lost`]).
    pub fn data_lost(&self) -> bool {
        self.pod.as_ref().is_some_and(|p| p.data_lost)
    }

    /// The Pod's spec hash, if there is a Pod.
    pub fn spec_hash(&self) -> Option<&str> {
        self.pod.as_ref().map(|p| p.spec_hash.as_str())
    }
}

/// The committed ZooKeeper configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    /// Config version (the zxid that committed it).
    #[serde(default)]
    pub version: u64,
    /// Voting participants.
    pub voters: BTreeSet<ServerId>,
}

/// A step claimed in status, with its claim time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// The claimed step.
    pub step: Step,
    /// When it was claimed.
    pub started_at: Timestamp,
}

/// Everything the planner knows about the real ensemble.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// Every member quorate owns, by server id.
    #[serde(default, with = "members_as_list")]
    pub members: BTreeMap<ServerId, Member>,
    /// The live committed configuration, when a serving member answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Membership>,
    /// The voters recorded in status, used while no member answers.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub recorded_voters: BTreeSet<ServerId>,
    /// The step claimed in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<Claim>,
    /// The id the next new member gets (from status).
    #[serde(default = "first_id")]
    pub next_server_id: ServerId,
    /// When the change now pending was first seen (microseconds, as status keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_requested_at: Option<Timestamp>,
    /// The Ready backups of the `backupBeforeChange` ZkBackup.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready_backups: Vec<ReadyBackup>,
}

/// `t` to the microsecond, the precision that status keeps for change requests
/// (`MicroTime`), so a time compared before and after a status round trip is the same.
pub fn to_micros(t: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(t.as_microsecond()).unwrap_or(t)
}

/// A Ready backup as the backup gate sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyBackup {
    /// When it started, in the whole seconds that status keeps (so truncated down).
    pub started_at: Timestamp,
    /// The change request it was taken for, when a change asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Timestamp>,
}

fn first_id() -> ServerId {
    ServerId(1)
}

mod members_as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Member, ServerId};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<ServerId, Member>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        m.values().collect::<Vec<_>>().serialize(s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<ServerId, Member>, D::Error> {
        let list = Vec::<Member>::deserialize(d)?;
        let mut map = BTreeMap::new();
        for m in list {
            if map.insert(m.id, m).is_some() {
                return Err(serde::de::Error::custom("two members with the same id"));
            }
        }
        Ok(map)
    }
}

impl Observed {
    /// The voters the planner reasons about: the live configuration, else the recorded one.
    pub fn voters(&self) -> BTreeSet<ServerId> {
        match &self.config {
            Some(c) => c.voters.clone(),
            None => self.recorded_voters.clone(),
        }
    }

    /// The smallest id that no member, voter or earlier claim has used.
    pub fn fresh_id(&self) -> ServerId {
        let mut next = self.next_server_id.0.max(1);
        for id in self
            .members
            .keys()
            .chain(self.voters().iter())
            .chain(self.recorded_voters.iter())
        {
            next = next.max(id.0 + 1);
        }
        ServerId(next)
    }

    /// The member that leads, if any.
    pub fn leader(&self) -> Option<ServerId> {
        self.members
            .values()
            .find(|m| m.zk.role == Role::Leader && m.zk.serving)
            .map(|m| m.id)
    }

    /// Whether member `id` is healthy.
    pub fn healthy(&self, id: ServerId) -> bool {
        self.members.get(&id).is_some_and(Member::is_healthy)
    }
}
