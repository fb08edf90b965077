//! Steps, decisions and the bounded sets of reasons behind them.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::model::ServerId;

/// One change to the ensemble. Each is carried out by one idempotent `ensure_*` function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    /// Create a member's volume and Pod. A seed starts with a configuration of itself only
    /// (bootstrap); any other member starts with the current configuration plus itself and joins
    /// as a non-voting follower.
    CreateMember {
        /// New server id (never used before).
        member: ServerId,
        /// Bootstrap: the configuration is this member alone.
        #[serde(default)]
        seed: bool,
    },
    /// Add a synced joiner as a voter (incremental reconfig).
    AddVoter {
        /// The joiner.
        member: ServerId,
    },
    /// Remove a voter from the configuration (incremental reconfig). Its Pod stays until the
    /// configuration without it is committed.
    RemoveVoter {
        /// The leaving voter.
        member: ServerId,
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

impl Step {
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

    /// The member the step acts on.
    pub fn member(&self) -> ServerId {
        match self {
            Step::CreateMember { member, .. }
            | Step::AddVoter { member }
            | Step::RemoveVoter { member }
            | Step::DeleteMember { member }
            | Step::FenceMember { member }
            | Step::RestartMember { member } => *member,
        }
    }

    /// The stable id, such as `add-voter/4`.
    pub fn id(&self) -> String {
        self.to_string()
    }

    /// Parses a step from its kind and member (as stored in status). Seeds are not told apart
    /// here: the caller knows from the voters whether a create was a bootstrap.
    pub fn from_kind(kind: &str, member: ServerId, seed: bool) -> Option<Step> {
        Some(match kind {
            "create-member" => Step::CreateMember { member, seed },
            "add-voter" => Step::AddVoter { member },
            "remove-voter" => Step::RemoveVoter { member },
            "delete-member" => Step::DeleteMember { member },
            "fence-member" => Step::FenceMember { member },
            "restart-member" => Step::RestartMember { member },
            _ => return None,
        })
    }

    /// Whether the step changes the voting configuration.
    pub fn changes_membership(&self) -> bool {
        matches!(self, Step::AddVoter { .. } | Step::RemoveVoter { .. })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind(), self.member())
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
                    _ => write!(f, "; no survivor reports a zxid"),
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
