//! Steps, decisions and the bounded sets of reasons behind them.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::model::ServerId;

/// The members a step acts on, in id order: one, or two for the reconfig that grows one voter
/// to three or shrinks three to one (see [`rules::voters_per_change`](super::rules::voters_per_change)).
/// Never empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemberSet(BTreeSet<ServerId>);

impl MemberSet {
    /// One member.
    pub fn one(id: ServerId) -> MemberSet {
        MemberSet(BTreeSet::from([id]))
    }

    /// The members of `ids`, or `None` when there are none.
    pub fn new(ids: impl IntoIterator<Item = ServerId>) -> Option<MemberSet> {
        let set: BTreeSet<ServerId> = ids.into_iter().collect();
        (!set.is_empty()).then_some(MemberSet(set))
    }

    /// The lowest id (the only one of a single-member step).
    pub fn first(&self) -> ServerId {
        // Never empty by construction.
        self.0.first().copied().unwrap_or_default()
    }

    /// The ids, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = ServerId> + '_ {
        self.0.iter().copied()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Never true; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `id` is one of them.
    pub fn contains(&self, id: ServerId) -> bool {
        self.0.contains(&id)
    }

    /// The ids as a set.
    pub fn as_set(&self) -> &BTreeSet<ServerId> {
        &self.0
    }
}

impl fmt::Display for MemberSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", ids.join(","))
    }
}

impl FromStr for MemberSet {
    type Err = String;

    fn from_str(text: &str) -> Result<MemberSet, String> {
        let ids = text
            .split(',')
            .map(|part| part.trim().parse::<u32>().map(ServerId))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format!("{text:?} is not a list of server ids such as 4 or 2,3"))?;
        MemberSet::new(ids).ok_or_else(|| format!("{text:?} names no server id"))
    }
}

/// One change to the ensemble. Each is carried out by one idempotent `ensure_*` function.
///
/// Serialized as `{kind, member}` (plus `seed` for a create); a reconfig of two members also
/// lists them all in `members` (`member` is then the lowest of them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "StepRecord", try_from = "StepRecord")]
pub enum Step {
    /// Create a member's volume and Pod. A seed starts with a configuration of itself only
    /// (bootstrap); any other member starts with the current configuration plus itself and joins
    /// as a non-voting follower.
    CreateMember {
        /// New server id (never used before).
        member: ServerId,
        /// Bootstrap: the configuration is this member alone.
        seed: bool,
    },
    /// Add synced joiners as voters in one incremental reconfig: one joiner, or both joiners
    /// when one voter grows to three (never a configuration of two voters).
    AddVoter {
        /// The joiners.
        members: MemberSet,
    },
    /// Remove voters from the configuration in one incremental reconfig: one voter, or the two
    /// followers when three voters shrink to one (the leader stays). Their Pods stay until the
    /// configuration without them is committed.
    RemoveVoter {
        /// The leaving voters.
        members: MemberSet,
    },
    /// Delete a member that is not a voter: its Pod and its volume. Its id is retired.
    DeleteMember {
        /// The member.
        member: ServerId,
    },
    /// Delete the Pod and the volume of a failed voter so that it can never come back, before
    /// it is removed from the configuration and replaced by a member with a fresh id (I4).
    FenceMember {
        /// The failed voter.
        member: ServerId,
    },
    /// Recreate a member's Pod from the current spec, keeping its volume and id.
    RestartMember {
        /// The member.
        member: ServerId,
    },
}

/// The wire form of a [`Step`] (status, `quorate plan`): the kind, the (first) member, every
/// member of a reconfig of more than one, and whether a create is a bootstrap.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StepRecord {
    kind: String,
    member: ServerId,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    members: Vec<ServerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<bool>,
}

impl From<Step> for StepRecord {
    fn from(step: Step) -> StepRecord {
        let members = step.members();
        StepRecord {
            kind: step.kind().into(),
            member: members.first(),
            members: if members.len() > 1 {
                members.iter().collect()
            } else {
                Vec::new()
            },
            seed: match step {
                Step::CreateMember { seed, .. } => Some(seed),
                _ => None,
            },
        }
    }
}

impl TryFrom<StepRecord> for Step {
    type Error = String;

    fn try_from(r: StepRecord) -> Result<Step, String> {
        let members = MemberSet::new(r.members.iter().copied().chain([r.member]))
            .ok_or_else(|| "a step names no member".to_string())?;
        Step::from_parts(&r.kind, members, r.seed.unwrap_or(false))
    }
}

impl Step {
    /// Adds one synced joiner as a voter.
    pub fn add_voter(member: ServerId) -> Step {
        Step::AddVoter {
            members: MemberSet::one(member),
        }
    }

    /// Removes one voter.
    pub fn remove_voter(member: ServerId) -> Step {
        Step::RemoveVoter {
            members: MemberSet::one(member),
        }
    }

    /// The kind as used in step ids, Event reasons and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::CreateMember { .. } => "create-member",
            Step::AddVoter { .. } => "add-voter",
            Step::RemoveVoter { .. } => "remove-voter",
            Step::DeleteMember { .. } => "delete-member",
            Step::FenceMember { .. } => "fence-member",
            Step::RestartMember { .. } => "restart-member",
        }
    }

    /// The member the step acts on; for a reconfig of two members, the lowest id.
    pub fn member(&self) -> ServerId {
        self.members().first()
    }

    /// Every member the step acts on.
    pub fn members(&self) -> MemberSet {
        match self {
            Step::AddVoter { members } | Step::RemoveVoter { members } => members.clone(),
            Step::CreateMember { member, .. }
            | Step::DeleteMember { member }
            | Step::FenceMember { member }
            | Step::RestartMember { member } => MemberSet::one(*member),
        }
    }

    /// The stable id, such as `add-voter/4`, or `add-voter/2,3` for the reconfig that adds two.
    pub fn id(&self) -> String {
        self.to_string()
    }

    /// Parses a step from its kind and member (as stored in status). Seeds are not told apart
    /// here: the caller knows from the voters whether a create was a bootstrap.
    pub fn from_kind(kind: &str, member: ServerId, seed: bool) -> Option<Step> {
        Step::from_parts(kind, MemberSet::one(member), seed).ok()
    }

    /// Parses a step from its stable id (`add-voter/2,3`), the inverse of [`Step::id`]. The id
    /// does not say whether a create is a bootstrap: `seed` does.
    pub fn from_id(id: &str, seed: bool) -> Result<Step, String> {
        let (kind, members) = id
            .split_once('/')
            .ok_or_else(|| format!("{id:?} is not a step id such as add-voter/4"))?;
        Step::from_parts(kind, members.parse()?, seed)
    }

    fn from_parts(kind: &str, members: MemberSet, seed: bool) -> Result<Step, String> {
        let one = || {
            if members.len() == 1 {
                Ok(members.first())
            } else {
                Err(format!("a {kind} step acts on one member, not {members}"))
            }
        };
        Ok(match kind {
            "create-member" => Step::CreateMember {
                member: one()?,
                seed,
            },
            "add-voter" => Step::AddVoter { members },
            "remove-voter" => Step::RemoveVoter { members },
            "delete-member" => Step::DeleteMember { member: one()? },
            "fence-member" => Step::FenceMember { member: one()? },
            "restart-member" => Step::RestartMember { member: one()? },
            _ => return Err(format!("{kind:?} is not a kind of step")),
        })
    }

    /// Whether the step changes the voting configuration.
    pub fn changes_membership(&self) -> bool {
        matches!(self, Step::AddVoter { .. } | Step::RemoveVoter { .. })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind(), self.members())
    }
}

/// Why the planner waits. Bounded: used in conditions, Events and metric labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "PascalCase")]
pub enum WaitReason {
    /// `spec.paused` is true.
    Paused,
    /// A member's Pod or process is starting.
    MemberStarting {
        /// The member.
        member: ServerId,
    },
    /// A joiner is catching up with the leader.
    JoinerCatchingUp {
        /// The joiner.
        member: ServerId,
    },
    /// A voter is not serving and synced; no step is taken until it is.
    VoterUnhealthy {
        /// The voter.
        member: ServerId,
    },
    /// A voter is down and will be replaced if it stays down until `replace_at`.
    MemberDown {
        /// The voter.
        member: ServerId,
        /// When it becomes due for replacement.
        replace_at: Timestamp,
    },
    /// Members are starting and no quorum has formed yet.
    QuorumForming,
    /// `backupBeforeChange` needs a Ready backup newer than the change request.
    AwaitingBackup,
    /// A removed member's deletion was accepted but its Pod is still Terminating.
    MemberTerminating {
        /// The member.
        member: ServerId,
    },
}

impl WaitReason {
    /// A CamelCase word for conditions, Events and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            WaitReason::Paused => "Paused",
            WaitReason::MemberStarting { .. } => "MemberStarting",
            WaitReason::JoinerCatchingUp { .. } => "JoinerCatchingUp",
            WaitReason::VoterUnhealthy { .. } => "VoterUnhealthy",
            WaitReason::MemberDown { .. } => "MemberDown",
            WaitReason::QuorumForming => "QuorumForming",
            WaitReason::AwaitingBackup => "AwaitingBackup",
            WaitReason::MemberTerminating { .. } => "MemberTerminating",
        }
    }
}

impl fmt::Display for WaitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitReason::Paused => write!(f, "spec.paused is true: no step is taken"),
            WaitReason::MemberStarting { member } => write!(f, "member {member} is starting"),
            WaitReason::JoinerCatchingUp { member } => {
                write!(
                    f,
                    "member {member} is catching up with the leader before it becomes a voter"
                )
            }
            WaitReason::VoterUnhealthy { member } => {
                write!(
                    f,
                    "voter {member} is not serving and synced; no step is taken until it is"
                )
            }
            WaitReason::MemberDown { member, replace_at } => {
                write!(
                    f,
                    "voter {member} is down; it will be replaced if still down at {replace_at}"
                )
            }
            WaitReason::QuorumForming => {
                write!(f, "members are starting and no quorum has formed yet")
            }
            WaitReason::AwaitingBackup => {
                write!(
                    f,
                    "backupBeforeChange: waiting for a Ready backup newer than the requested change"
                )
            }
            WaitReason::MemberTerminating { member } => write!(
                f,
                "member {member} is removed and its id retired; its Pod is still terminating"
            ),
        }
    }
}

/// Why the planner cannot go on without a person. Bounded like [`WaitReason`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "PascalCase")]
pub enum BlockReason {
    /// Fewer voters are healthy than a majority. Recovery must start from the survivor with
    /// the highest zxid.
    QuorumLost {
        /// Healthy voters.
        healthy: usize,
        /// Voters in the configuration.
        voters: usize,
        /// The member with the highest known zxid, if any zxid is known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        survivor: Option<ServerId>,
        /// Its zxid.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zxid: Option<u64>,
    },
    /// A failed voter is due for replacement, but the remaining voters have no healthy
    /// majority, so removing it is not safe.
    NoHealthyMajorityForReplacement {
        /// The failed voter.
        member: ServerId,
    },
    /// A member restarted with the current spec and did not become healthy: the rollout stops
    /// here. Fix or revert the spec.
    RolloutUnhealthy {
        /// The member.
        member: ServerId,
    },
    /// A joiner started with the current spec never caught up. Fix or revert the spec.
    JoinerNeverSynced {
        /// The joiner.
        member: ServerId,
    },
    /// The configuration names voters quorate has no member for, or is unreadable.
    UnknownVoters {
        /// Voters without a member.
        members: Vec<ServerId>,
    },
}

impl BlockReason {
    /// A CamelCase word for conditions, Events and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            BlockReason::QuorumLost { .. } => "QuorumLost",
            BlockReason::NoHealthyMajorityForReplacement { .. } => {
                "NoHealthyMajorityForReplacement"
            }
            BlockReason::RolloutUnhealthy { .. } => "RolloutUnhealthy",
            BlockReason::JoinerNeverSynced { .. } => "JoinerNeverSynced",
            BlockReason::UnknownVoters { .. } => "UnknownVoters",
        }
    }
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockReason::QuorumLost {
                healthy,
                voters,
                survivor,
                zxid,
            } => {
                write!(f, "quorum lost: {healthy} of {voters} voters healthy")?;
                match (survivor, zxid) {
                    (Some(s), Some(z)) => write!(
                        f,
                        "; recovery must start from member {s}, the survivor with the highest zxid (0x{z:x})"
                    ),
                    _ => write!(
                        f,
                        "; not every survivor's zxid is known yet (read from their volumes while no member serves)"
                    ),
                }
            }
            BlockReason::NoHealthyMajorityForReplacement { member } => write!(
                f,
                "voter {member} is due for replacement but the remaining voters have no healthy majority"
            ),
            BlockReason::RolloutUnhealthy { member } => write!(
                f,
                "member {member} did not become healthy after restarting with the current spec; the rollout stops here until the spec is fixed or reverted"
            ),
            BlockReason::JoinerNeverSynced { member } => write!(
                f,
                "joiner {member} never caught up with the current spec; fix or revert the spec"
            ),
            BlockReason::UnknownVoters { members } => {
                let ids: Vec<String> = members.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "the configuration names voters quorate has no member for: {}",
                    ids.join(", ")
                )
            }
        }
    }
}

/// The planner's answer for one pass.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "PascalCase")]
pub enum Decision {
    /// Carry out this step (claim it first).
    Act {
        /// The step.
        step: Step,
    },
    /// Nothing to do now; look again later.
    Wait {
        /// Why.
        #[serde(flatten)]
        reason: WaitReason,
    },
    /// The ensemble matches the spec.
    Converged,
    /// A person must act.
    Blocked {
        /// Why.
        #[serde(flatten)]
        reason: BlockReason,
    },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decision::Act { step } => write!(f, "act: {step}"),
            Decision::Wait { reason } => write!(f, "wait: {reason}"),
            Decision::Converged => write!(f, "converged"),
            Decision::Blocked { reason } => write!(f, "blocked: {reason}"),
        }
    }
}
