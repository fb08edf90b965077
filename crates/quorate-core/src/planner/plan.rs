//! The planner: `(desired, observed, now) -> Plan`.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde::Serialize;

use super::model::{Desired, Member, Observed, ServerId};
use super::rules::*;
use super::step::{BlockReason, Decision, MemberSet, Step, WaitReason};

/// The rule that produced a decision (bounded; printed by `quorate plan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `spec.paused` stops every step.
    PausedStopsEveryStep,
    /// A claimed step that has begun but not finished, and is still safe, is carried on.
    ClaimedStepIsResumed,
    /// An empty ensemble starts with one seed member whose configuration is itself.
    BootstrapStartsOneSeed,
    /// While no quorum is healthy, nothing changes; recovery starts from the most up-to-date survivor.
    QuorumMustBeHealthy,
    /// Every voter in the configuration needs a member quorate owns.
    VotersNeedMembers,
    /// A member that is not a voter and not a needed joiner is deleted (removed servers keep serving).
    StrayMembersAreDeleted,
    /// When scaling down, an unhealthy voter is removed first.
    ScaleDownRemovesUnhealthyFirst,
    /// A voter whose Pod is stale or missing is restarted while the others keep a quorum.
    UnhealthyStaleMemberIsRestarted,
    /// A rollout stops at the first member that does not become healthy with the new spec.
    RolloutStopsAtFirstFailure,
    /// A voter down for `replaceAfter` is fenced, removed and replaced by a fresh id.
    FailedVoterIsReplaced,
    /// A voter that still serves but whose volume is gone or being deleted is replaced while
    /// it serves: a synced joiner of a scale-up is added first, then the voter is removed by a
    /// reconfig it still takes part in (never fenced first, which could leave the current
    /// configuration without a quorum to commit its removal).
    VolumeLostVoterIsReplacedWhileServing,
    /// A down voter is waited for until it is due for replacement.
    DownVoterIsWaitedFor,
    /// No step is taken while any voter is unhealthy.
    AllVotersMustBeHealthy,
    /// A joiner becomes a voter only once it is serving and synced.
    JoinerIsAddedOnceSynced,
    /// Scale up starts one joiner with the current configuration plus itself.
    ScaleUpStartsOneJoiner,
    /// Growing one voter to three starts a second joiner once the first is synced, then adds
    /// both in one reconfig: no configuration of two voters, where either one lost stops it.
    OneToThreeAddsBothJoinersAtOnce,
    /// Scale down removes one voter at a time from the configuration.
    ScaleDownRemovesOneVoter,
    /// Shrinking three voters to one removes both followers in one reconfig (the leader stays):
    /// no configuration of two voters.
    ThreeToOneRemovesBothFollowersAtOnce,
    /// Rolling restarts go one member at a time, followers first, the leader last.
    RollingRestartLeaderLast,
    /// A member listed in `spec.replaceMembers` is replaced while healthy: a fresh member joins,
    /// syncs and votes first (one voter more than `replicas` for a while), then the listed one
    /// is removed and deleted; one listed member at a time.
    ListedMemberLeavesOnceItsSuccessorVotes,
    /// backupBeforeChange holds every requested change until a fresh backup exists.
    BackupBeforeChange,
    /// Nothing differs from the spec.
    NothingToDo,
}

impl Rule {
    /// The rule's name in snake_case.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A decision and the rule behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// What to do.
    #[serde(flatten)]
    pub decision: Decision,
    /// Why.
    pub rule: Rule,
}

fn act(step: Step, rule: Rule) -> Plan {
    Plan {
        decision: Decision::Act { step },
        rule,
    }
}
fn wait(reason: WaitReason, rule: Rule) -> Plan {
    Plan {
        decision: Decision::Wait { reason },
        rule,
    }
}
/// A step the user asked for (scaling, rolling): `backupBeforeChange` holds it until a fresh
/// Ready backup exists.
fn requested(desired: &Desired, observed: &Observed, step: Step, rule: Rule) -> Plan {
    if backup_is_fresh(desired, observed) {
        act(step, rule)
    } else {
        wait(WaitReason::AwaitingBackup, Rule::BackupBeforeChange)
    }
}
fn blocked(reason: BlockReason, rule: Rule) -> Plan {
    Plan {
        decision: Decision::Blocked { reason },
        rule,
    }
}

/// Decides the one next step for an ensemble. Pure: no I/O and no clock.
pub fn plan(desired: &Desired, observed: &Observed, now: Timestamp) -> Plan {
    if desired.paused {
        return wait(WaitReason::Paused, Rule::PausedStopsEveryStep);
    }
    let desired = &with_replacements(desired, observed);
    if let Some(claim) = &observed.in_flight
        && !step_is_done(&claim.step, observed, desired)
        && claimed_step_must_continue(&claim.step, desired, observed)
    {
        return act(claim.step.clone(), Rule::ClaimedStepIsResumed);
    }
    plan_fresh(desired, observed, now)
}

/// Whether a claimed step has begun but not finished, and may be carried on as it is. A step
/// that has not begun is not resumed blindly: the fresh plan decides again (and proposes the
/// same step when it is still the right one). Reconfigs are atomic in ZooKeeper, so they are
/// never half-done.
fn claimed_step_must_continue(step: &Step, desired: &Desired, observed: &Observed) -> bool {
    let voters = observed.voters();
    let live = observed.config.is_some();
    let member = observed.members.get(&step.member());
    match step {
        Step::CreateMember { member: id, seed } => {
            // The claim advanced nextServerId past this id, nothing newer exists, and the
            // half-done create left only the volume.
            let half_done = observed.fresh_id() == ServerId(id.0 + 1)
                && member.is_some_and(|m| m.pod.is_none() && !m.was_voter)
                && !voters.contains(id);
            // Nothing else is in transition: every other member is a voter, or, while one voter
            // grows to three, the first joiner, synced.
            let pair = voters_per_change(voters.len(), desired.replicas) == 2;
            let others_settled = observed.members.values().all(|m| {
                m.id == *id
                    || voters.contains(&m.id)
                    || (pair && !m.was_voter && joiner_is_synced(m))
            });
            half_done
                && others_settled
                && if *seed {
                    voters.is_empty()
                } else {
                    live && all_voters_healthy(observed, &voters) && voters.len() < desired.replicas
                }
        }
        Step::AddVoter { .. } | Step::RemoveVoter { .. } => false,
        Step::DeleteMember { member: id } => live && !voters.contains(id),
        Step::FenceMember { member: id } => {
            !observed.healthy(*id)
                && quorum_survives_removal(observed, &voters, *id)
                && others_serve_a_majority(observed, &voters, *id)
        }
        Step::RestartMember { member: id } => {
            live && !observed.healthy(*id)
                && member.is_some_and(|m| m.volume)
                && quorum_survives_restart(observed, &voters, *id)
        }
    }
}

/// The spec as the planner pursues it while members listed in `spec.replaceMembers` still
/// vote: one voter more than `replicas` until a fresh member votes in place of the first listed
/// one, then `replicas` again, and the listed voter is the one removed
/// ([`Rule::ListedMemberLeavesOnceItsSuccessorVotes`]). One listed member at a time, so the
/// ensemble never has fewer voters than `replicas` and never more than one extra.
pub fn with_replacements(desired: &Desired, observed: &Observed) -> Desired {
    let voters = observed.voters();
    let mut effective = desired.clone();
    if observed.config.is_some()
        && voters.len() <= desired.replicas
        && desired.replace.iter().any(|id| voters.contains(id))
    {
        effective.replicas = desired.replicas + 1;
    }
    effective
}

/// The first listed voter (`spec.replaceMembers`), while more voters than `replicas` vote and
/// the next removal takes one voter (three to one removes both followers at once instead).
fn listed_voter_to_remove(desired: &Desired, voters: &BTreeSet<ServerId>) -> Option<ServerId> {
    (voters.len() > desired.replicas && voters_per_change(voters.len(), desired.replicas) == 1)
        .then(|| {
            desired
                .replace
                .iter()
                .copied()
                .find(|id| voters.contains(id))
        })
        .flatten()
}

fn plan_fresh(desired: &Desired, observed: &Observed, now: Timestamp) -> Plan {
    let voters = observed.voters();

    // Bootstrap: nothing exists yet.
    if voters.is_empty() {
        if observed.members.is_empty() {
            return act(
                Step::CreateMember {
                    member: observed.fresh_id(),
                    seed: true,
                },
                Rule::BootstrapStartsOneSeed,
            );
        }
        // A seed exists but has not served yet: wait for it; a seed that never had a
        // configuration recorded and lost its Pod is recreated as the same seed.
        let seed = observed
            .members
            .values()
            .next()
            .map(|m| m.id)
            .unwrap_or(observed.fresh_id());
        let member = &observed.members[&seed];
        if observed.members.len() == 1 && member.pod.is_none() && member.volume {
            return act(
                Step::RestartMember { member: seed },
                Rule::BootstrapStartsOneSeed,
            );
        }
        return wait(
            WaitReason::MemberStarting { member: seed },
            Rule::BootstrapStartsOneSeed,
        );
    }

    // Every voter needs a member that quorate owns.
    let unknown: Vec<ServerId> = voters
        .iter()
        .copied()
        .filter(|id| !observed.members.contains_key(id))
        .collect();
    let healthy = healthy_voters(observed, &voters);

    // Quorum, as ZooKeeper has it: voters whose volume is lost still count while they serve.
    if !quorum_serves(observed, &voters) {
        let starting = voters
            .iter()
            .filter_map(|id| observed.members.get(id))
            .any(|m| is_starting(desired, m, now));
        if starting {
            return wait(WaitReason::QuorumForming, Rule::QuorumMustBeHealthy);
        }
        // A voter whose Pod is gone but whose volume is intact comes back with its data: that
        // is how a quorum lost to deleted Pods recovers, and it never loses a write. Then any
        // other member in that state that never left the configuration: a voter added by a
        // reconfig that committed just before the loss is not recorded yet (and a joiner that
        // comes back only syncs), while a member recorded as a voter that left stays gone (I4).
        if let Some(m) = voters
            .iter()
            .filter_map(|id| observed.members.get(id))
            .chain(
                observed
                    .members
                    .values()
                    .filter(|m| !voters.contains(&m.id) && !m.was_voter),
            )
            .find(|m| m.pod.is_none() && m.volume)
        {
            return act(
                Step::RestartMember { member: m.id },
                Rule::QuorumMustBeHealthy,
            );
        }
        let survivor = most_up_to_date_survivor(observed);
        return blocked(
            BlockReason::QuorumLost {
                healthy: serving_voters(observed, &voters).len(),
                voters: voters.len(),
                survivor: survivor.map(|s| s.0),
                zxid: survivor.map(|s| s.1),
            },
            Rule::QuorumMustBeHealthy,
        );
    }
    if !unknown.is_empty() && observed.config.is_some() {
        // A voter with no member at all (its Pod and volume are gone): remove it like a failed
        // voter, once the rest keeps a healthy majority.
        let id = unknown[0];
        if quorum_survives_removal(observed, &voters, id) {
            return act(Step::remove_voter(id), Rule::VotersNeedMembers);
        }
        return blocked(
            BlockReason::UnknownVoters { members: unknown },
            Rule::VotersNeedMembers,
        );
    }

    // Deletions and removals need the live configuration; without it, wait.
    let Some(_) = &observed.config else {
        return wait(WaitReason::QuorumForming, Rule::QuorumMustBeHealthy);
    };

    // Stray members: not voters, and not the joiners that scaling up needs.
    let joiners = needed_joiners(desired, observed, &voters);
    if let Some(stray) = observed
        .members
        .values()
        .find(|m| !voters.contains(&m.id) && !joiners.contains(&m.id) && !deletion_is_requested(m))
    {
        return act(
            Step::DeleteMember { member: stray.id },
            Rule::StrayMembersAreDeleted,
        );
    }

    // Unhealthy voters.
    let unhealthy: Vec<&Member> = voters
        .iter()
        .filter(|id| !healthy.contains(id))
        .filter_map(|id| observed.members.get(id))
        .collect();
    let per_change = voters_per_change(voters.len(), desired.replicas);
    if voters.len() > desired.replicas && per_change > 1 {
        // Three to one: both followers leave in one reconfig, the unhealthy ones among them
        // first; never one at a time through two voters.
        if !unhealthy.is_empty()
            && let Some(leaving) = choose_voters_to_remove(observed, &voters, per_change)
            && unhealthy.iter().all(|m| leaving.contains(m.id))
            && quorum_survives_removal_of(observed, &voters, &leaving)
        {
            return requested(
                desired,
                observed,
                Step::RemoveVoter { members: leaving },
                Rule::ThreeToOneRemovesBothFollowersAtOnce,
            );
        }
    } else {
        for m in &unhealthy {
            if voters.len() > desired.replicas && quorum_survives_removal(observed, &voters, m.id) {
                return requested(
                    desired,
                    observed,
                    Step::remove_voter(m.id),
                    Rule::ScaleDownRemovesUnhealthyFirst,
                );
            }
        }
    }
    if let Some(m) = unhealthy.iter().find(|m| m.serves_without_volume()) {
        // Its data goes with its Pod. While it serves, a synced joiner of a scale-up becomes a
        // voter first (every other voter healthy), then the member leaves by a reconfig it
        // still takes part in. When neither is safe yet, the rules below wait or block.
        let rule = Rule::VolumeLostVoterIsReplacedWhileServing;
        if unhealthy.len() == 1
            && voters.len() < desired.replicas
            && let Some(adding) = MemberSet::new(
                joiners
                    .iter()
                    .filter_map(|id| observed.members.get(id))
                    .filter(|j| joiner_is_synced(j))
                    .map(|j| j.id),
            )
            && adding.len() >= per_change
            && quorum_survives_addition(observed, &voters, &adding)
            && backup_is_fresh(desired, observed)
        {
            return act(Step::AddVoter { members: adding }, rule);
        }
        // One member in transition at a time (I1): a joiner that cannot vote first is waited
        // for while it syncs, or taken out before the volume-less voter leaves.
        let joining: Vec<&Member> = joiners
            .iter()
            .filter_map(|id| observed.members.get(id))
            .collect();
        if let Some(j) = joining.iter().find(|j| !joiner_is_synced(j))
            && !joiner_is_overdue(desired, j, now)
        {
            return wait(WaitReason::JoinerCatchingUp { member: j.id }, rule);
        }
        if quorum_survives_removal(observed, &voters, m.id) {
            if let Some(j) = joining.first() {
                return act(Step::DeleteMember { member: j.id }, rule);
            }
            return act(Step::remove_voter(m.id), rule);
        }
    }
    // Any unhealthy voter that a restart brings back (its Pod gone or stale, its volume and
    // data intact) is restarted first, whichever it is: with two voters down, the one that
    // only lost its Pod restores the healthy majority that replacing the other one needs.
    // Creating a missing Pod takes nothing down; deleting a stale one needs the others.
    if let Some(m) = unhealthy.iter().find(|m| {
        restartable(desired, m)
            && (m.pod.is_none() || quorum_survives_restart(observed, &voters, m.id))
    }) {
        return act(
            Step::RestartMember { member: m.id },
            Rule::UnhealthyStaleMemberIsRestarted,
        );
    }
    if let Some(m) = unhealthy.first() {
        if !restartable(desired, m) {
            if is_starting(desired, m, now) {
                return wait(
                    WaitReason::MemberStarting { member: m.id },
                    Rule::AllVotersMustBeHealthy,
                );
            }
            if rollout_is_at_fault(desired, observed, m) {
                return blocked(
                    BlockReason::RolloutUnhealthy { member: m.id },
                    Rule::RolloutStopsAtFirstFailure,
                );
            }
        }
        if replace_is_due(desired, m, now) {
            // Fenced first, it is out of service before its removal: the rest of the current
            // configuration must still serve a majority for that reconfig to commit.
            if !quorum_survives_removal(observed, &voters, m.id)
                || (!is_fenced(m) && !others_serve_a_majority(observed, &voters, m.id))
            {
                return blocked(
                    BlockReason::NoHealthyMajorityForReplacement { member: m.id },
                    Rule::FailedVoterIsReplaced,
                );
            }
            if !is_fenced(m) {
                return act(
                    Step::FenceMember { member: m.id },
                    Rule::FailedVoterIsReplaced,
                );
            }
            return act(Step::remove_voter(m.id), Rule::FailedVoterIsReplaced);
        }
        let since = m.down_since.unwrap_or(now);
        return wait(
            WaitReason::MemberDown {
                member: m.id,
                replace_at: since + desired.replace_after,
            },
            Rule::DownVoterIsWaitedFor,
        );
    }

    // From here on every voter is healthy (I2).
    let joiners: Vec<&Member> = joiners
        .iter()
        .filter_map(|id| observed.members.get(id))
        .collect();
    // A joiner that is not synced: wait for it, or retire it when it never catches up. No other
    // member starts meanwhile (I1).
    if let Some(j) = joiners.iter().find(|j| !joiner_is_synced(j)) {
        if joiner_is_overdue(desired, j, now) {
            // A joiner with an old spec, whose spec other members serve with, or whose volume
            // lost its data, is at fault itself: it is deleted (its id retired) and a fresh one
            // is started.
            if j.spec_hash() != Some(desired.spec_hash.as_str())
                || spec_is_proven(desired, observed, j.id)
                || j.data_lost()
            {
                return act(
                    Step::DeleteMember { member: j.id },
                    Rule::StrayMembersAreDeleted,
                );
            }
            return blocked(
                BlockReason::JoinerNeverSynced { member: j.id },
                Rule::JoinerIsAddedOnceSynced,
            );
        }
        return wait(
            WaitReason::JoinerCatchingUp { member: j.id },
            Rule::JoinerIsAddedOnceSynced,
        );
    }
    // Every joiner is synced: add them in one reconfig once there are as many as it adds.
    if voters.len() < desired.replicas {
        if let Some(adding) = MemberSet::new(joiners.iter().map(|j| j.id))
            && adding.len() >= per_change
        {
            if quorum_survives_addition(observed, &voters, &adding) {
                let rule = if adding.len() > 1 {
                    Rule::OneToThreeAddsBothJoinersAtOnce
                } else {
                    Rule::JoinerIsAddedOnceSynced
                };
                return requested(desired, observed, Step::AddVoter { members: adding }, rule);
            }
            return wait(
                WaitReason::JoinerCatchingUp {
                    member: adding.first(),
                },
                Rule::JoinerIsAddedOnceSynced,
            );
        }
        // The first joiner, or (one voter growing to three) the second once the first is synced.
        let rule = if joiners.is_empty() {
            Rule::ScaleUpStartsOneJoiner
        } else {
            Rule::OneToThreeAddsBothJoinersAtOnce
        };
        return requested(
            desired,
            observed,
            Step::CreateMember {
                member: observed.fresh_id(),
                seed: false,
            },
            rule,
        );
    }
    if let Some(listed) = listed_voter_to_remove(desired, &voters)
        && quorum_survives_removal(observed, &voters, listed)
    {
        return requested(
            desired,
            observed,
            Step::remove_voter(listed),
            Rule::ListedMemberLeavesOnceItsSuccessorVotes,
        );
    }
    if voters.len() > desired.replicas
        && let Some(leaving) = choose_voters_to_remove(observed, &voters, per_change)
        && quorum_survives_removal_of(observed, &voters, &leaving)
    {
        let rule = if leaving.len() > 1 {
            Rule::ThreeToOneRemovesBothFollowersAtOnce
        } else {
            Rule::ScaleDownRemovesOneVoter
        };
        return requested(
            desired,
            observed,
            Step::RemoveVoter { members: leaving },
            rule,
        );
    }

    let stale: Vec<ServerId> = voters
        .iter()
        .copied()
        .filter(|id| {
            observed.members.get(id).and_then(Member::spec_hash) != Some(desired.spec_hash.as_str())
        })
        .collect();
    if let Some(first) = restart_order(observed, &stale).first()
        && quorum_survives_restart(observed, &voters, *first)
    {
        return requested(
            desired,
            observed,
            Step::RestartMember { member: *first },
            Rule::RollingRestartLeaderLast,
        );
    }

    // A removed member whose Pod is stuck Terminating blocks no step, but the ensemble does
    // not match the spec until it is gone.
    if let Some(m) = observed
        .members
        .values()
        .find(|m| !voters.contains(&m.id) && deletion_is_requested(m))
    {
        return wait(
            WaitReason::MemberTerminating { member: m.id },
            Rule::StrayMembersAreDeleted,
        );
    }

    Plan {
        decision: Decision::Converged,
        rule: Rule::NothingToDo,
    }
}

/// An unhealthy voter that a restart can bring back: its Pod is gone or runs an old spec, and
/// its volume is there with its data, not being deleted. A member whose volume lost its data
/// fails with any spec: it is replaced, not restarted.
fn restartable(desired: &Desired, m: &Member) -> bool {
    let stale = m.spec_hash() != Some(desired.spec_hash.as_str());
    (stale || m.pod.is_none())
        && m.volume
        && !m.fenced
        && !m.data_lost()
        && !m.pod.as_ref().is_some_and(|p| p.terminating)
}

/// A joiner whose Pod was created `replaceAfter` ago or more (it had its time to sync), or whose
/// Pod reports that its volume lost its data (it will never sync).
fn joiner_is_overdue(desired: &Desired, joiner: &Member, now: Timestamp) -> bool {
    let created = joiner.pod.as_ref().map(|p| p.created_at).unwrap_or(now);
    joiner.data_lost() || created + desired.replace_after <= now
}

/// The non-voters that scaling up needs, lowest id first: the newest members that run a Pod and
/// have never been a voter, while voters are below the target; as many as the next reconfig
/// adds (two while one voter grows to three, else one). A removed voter is never a joiner (I4).
fn needed_joiners(
    desired: &Desired,
    observed: &Observed,
    voters: &BTreeSet<ServerId>,
) -> BTreeSet<ServerId> {
    if voters.len() >= desired.replicas {
        return BTreeSet::new();
    }
    observed
        .members
        .values()
        .rev()
        .filter(|m| !voters.contains(&m.id) && m.pod.is_some() && !m.was_voter)
        .take(voters_per_change(voters.len(), desired.replicas))
        .map(|m| m.id)
        .collect()
}

/// Whether the ensemble matches the spec exactly (used by tests of `Converged`).
pub fn matches_spec(desired: &Desired, observed: &Observed) -> bool {
    let voters = observed.voters();
    observed.config.is_some()
        && voters.len() == desired.replicas
        && observed.members.len() == voters.len()
        && voters.iter().all(|id| {
            observed.members.get(id).is_some_and(|m| {
                m.is_healthy() && m.spec_hash() == Some(desired.spec_hash.as_str())
            })
        })
}
