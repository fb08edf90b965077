//! The safety rules, one named function each. The planner's module doc lists them.

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

use super::model::{Desired, Member, Observed, Role, ServerId};
use super::step::{MemberSet, Step};

/// How long a member that was just (re)created counts as starting rather than down.
pub const STARTUP_GRACE: SignedDuration = SignedDuration::from_secs(120);

/// Votes needed for a quorum of `voters`.
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// Voters that may fail without losing the quorum.
pub fn tolerance(voters: usize) -> usize {
    voters.saturating_sub(majority(voters))
}

/// The healthy voters of `voters`.
pub fn healthy_voters(observed: &Observed, voters: &BTreeSet<ServerId>) -> BTreeSet<ServerId> {
    voters
        .iter()
        .copied()
        .filter(|id| observed.healthy(*id))
        .collect()
}

/// A quorum exists: a majority of the voters is serving and synced.
pub fn quorum_is_healthy(observed: &Observed, voters: &BTreeSet<ServerId>) -> bool {
    !voters.is_empty() && healthy_voters(observed, voters).len() >= majority(voters.len())
}

/// The voters of `voters` that serve now, durable or not ([`Member::serves`]).
pub fn serving_voters(observed: &Observed, voters: &BTreeSet<ServerId>) -> BTreeSet<ServerId> {
    voters
        .iter()
        .copied()
        .filter(|id| observed.members.get(id).is_some_and(Member::serves))
        .collect()
}

/// ZooKeeper has a quorum: a majority of the voters serves and is synced, counting voters whose
/// volume is lost but which still serve (they are in the quorum until their Pods go). The
/// quorum is lost, and recovery is the only way on, only when fewer serve.
pub fn quorum_serves(observed: &Observed, voters: &BTreeSet<ServerId>) -> bool {
    !voters.is_empty() && serving_voters(observed, voters).len() >= majority(voters.len())
}

/// Taking `member` out of service now (deleting its Pod) leaves a majority of the current
/// configuration serving, so that the reconfig removing it can still commit.
pub fn others_serve_a_majority(
    observed: &Observed,
    voters: &BTreeSet<ServerId>,
    member: ServerId,
) -> bool {
    let others: BTreeSet<ServerId> = voters.iter().copied().filter(|id| *id != member).collect();
    serving_voters(observed, &others).len() >= majority(voters.len())
}

/// Every voter of the current configuration is serving and synced (I2).
pub fn all_voters_healthy(observed: &Observed, voters: &BTreeSet<ServerId>) -> bool {
    voters.iter().all(|id| observed.healthy(*id))
}

/// Removing `leaving` leaves a configuration whose healthy voters are still a majority of it,
/// and never an empty one (I3, I5).
pub fn quorum_survives_removal(
    observed: &Observed,
    voters: &BTreeSet<ServerId>,
    leaving: ServerId,
) -> bool {
    quorum_survives_removal_of(observed, voters, &MemberSet::one(leaving))
}

/// Removing every voter of `leaving` in one reconfig leaves a configuration whose healthy
/// voters are still a majority of it, and never an empty one (I3, I5).
pub fn quorum_survives_removal_of(
    observed: &Observed,
    voters: &BTreeSet<ServerId>,
    leaving: &MemberSet,
) -> bool {
    let remaining: BTreeSet<ServerId> = voters
        .iter()
        .copied()
        .filter(|id| !leaving.contains(*id))
        .collect();
    !remaining.is_empty() && healthy_voters(observed, &remaining).len() >= majority(remaining.len())
}

/// Adding `joiners` in one reconfig gives a configuration whose healthy members are a majority
/// of it (I3).
pub fn quorum_survives_addition(
    observed: &Observed,
    voters: &BTreeSet<ServerId>,
    joiners: &MemberSet,
) -> bool {
    let mut next = voters.clone();
    next.extend(joiners.iter());
    healthy_voters(observed, &next).len() >= majority(next.len())
}

/// How many voters one reconfig adds or removes on the way from `voters` to `target`: two when
/// one voter grows to three or more, or three voters shrink to one, so that the ensemble never
/// passes through a configuration of two voters (where either one lost stops it, and a
/// replacement needs both); one for every other change (I3), none when there is nothing to do.
pub fn voters_per_change(voters: usize, target: usize) -> usize {
    match (voters, target) {
        (v, t) if v == t => 0,
        (1, t) if t >= 3 => 2,
        (3, 1) => 2,
        _ => 1,
    }
}

/// Taking `member` down for a restart keeps a healthy majority of the other voters; a single
/// voter may restart (the only way to change it), which is an outage by nature.
pub fn quorum_survives_restart(
    observed: &Observed,
    voters: &BTreeSet<ServerId>,
    member: ServerId,
) -> bool {
    if voters.len() == 1 {
        return true;
    }
    let others: BTreeSet<ServerId> = voters.iter().copied().filter(|id| *id != member).collect();
    healthy_voters(observed, &others).len() >= majority(voters.len())
}

/// A joiner may become a voter only when it is running, serving and synced (I3): ZooKeeper
/// itself would accept a joiner that is not even running.
pub fn joiner_is_synced(member: &Member) -> bool {
    member.is_healthy()
}

/// A voter is due for replacement once it has been down for `replaceAfter`; at once when it can
/// never serve again under its id (I4): its Pod reports that its volume lost its data, or its
/// Pod and volume are both gone or going (deleted by hand, or fenced by quorate). Waiting would
/// only keep the ensemble a voter short.
pub fn replace_is_due(desired: &Desired, member: &Member, now: Timestamp) -> bool {
    member.data_lost()
        || deletion_is_requested(member)
        || member
            .down_since
            .is_some_and(|since| since + desired.replace_after <= now)
}

/// Since when a member counts as unhealthy, for `replaceAfter`. The clock keeps running while
/// the member moves between unhealthy states (Down, Starting, Syncing) and through recoveries
/// shorter than `replaceAfter`: it is cleared only once the member has served continuously for
/// `replaceAfter`. So a member that flaps (serving for a pass, then down again) is replaced like
/// one that stays down, instead of restarting its clock on every change of state.
pub fn unhealthy_since(
    previous: Option<Timestamp>,
    healthy: bool,
    healthy_since: Option<Timestamp>,
    now: Timestamp,
    replace_after: SignedDuration,
) -> Option<Timestamp> {
    if !healthy {
        return previous.or(Some(now));
    }
    let stable = healthy_since.is_some_and(|since| since + replace_after <= now);
    previous.filter(|_| !stable)
}

/// A member's Pod was created within the start-up grace period: [`STARTUP_GRACE`], or
/// `replaceAfter` when that is shorter (after it, a member that is still not serving counts as
/// down).
pub fn is_starting(desired: &Desired, member: &Member, now: Timestamp) -> bool {
    let grace = STARTUP_GRACE.min(desired.replace_after);
    member
        .pod
        .as_ref()
        .is_some_and(|pod| pod.created_at + grace > now && !pod.data_lost)
}

/// Some member other than `member` has served healthily with the current spec.
pub fn spec_is_proven(desired: &Desired, observed: &Observed, member: ServerId) -> bool {
    observed.members.values().any(|m| {
        m.id != member && m.healthy_spec_hash.as_deref() == Some(desired.spec_hash.as_str())
    })
}

/// A member went down after a restart into the current spec, without ever being healthy with it,
/// and no other member has been healthy with that spec either: the new spec is presumed at
/// fault, so the member is not replaced (which would only repeat the failure) and the rollout
/// stops (I6). Once another member has served with the spec, a failure is the member's own; so
/// is one whose Pod reports that its volume lost its data (a wiped disk fails any spec).
pub fn rollout_is_at_fault(desired: &Desired, observed: &Observed, member: &Member) -> bool {
    let proven = spec_is_proven(desired, observed, member.id);
    !member.data_lost()
        && member.spec_hash() == Some(desired.spec_hash.as_str())
        && member.healthy_spec_hash.as_deref() != Some(desired.spec_hash.as_str())
        && member.healthy_spec_hash.is_some()
        && !proven
}

/// The backup gate: when `backupBeforeChange` is set, a Ready backup must be newer than the
/// change request: taken for that request (or a later one), or started in a whole second after
/// it. Start times in status are whole seconds, so a backup that started in the same second as
/// the request may predate it and does not count.
pub fn backup_is_fresh(desired: &Desired, observed: &Observed) -> bool {
    if !desired.backup_before_change {
        return true;
    }
    let Some(requested) = observed.change_requested_at else {
        return !observed.ready_backups.is_empty();
    };
    observed
        .ready_backups
        .iter()
        .any(|b| b.requested_at.is_some_and(|r| r >= requested) || b.started_at > requested)
}

/// A member's Pod and volume are gone or being deleted (Terminating). A Pod that stays
/// Terminating (a lost node, a finalizer) cannot be waited out: once its deletion is accepted
/// and its volume is going, its id is retired, so removing it from the configuration and
/// adding a fresh id is safe whether or not its process still runs somewhere.
pub fn deletion_is_requested(member: &Member) -> bool {
    member.pod.as_ref().is_none_or(|p| p.terminating) && !member.volume
}

/// Members whose volume carries a fence mark but that serve again: an operator stopped between
/// marking the volume and deleting the Pod, and the member recovered. The mark is stale and is
/// lifted, or the member would be replaced rather than restarted the next time its Pod goes.
pub fn stale_fence_marks(observed: &Observed) -> Vec<ServerId> {
    observed
        .members
        .values()
        .filter(|m| m.fenced && m.is_healthy())
        .map(|m| m.id)
        .collect()
}

/// The member is out of service for its replacement: its Pod is gone (or going) and its volume
/// is marked fenced (or already gone). Its volume, and so its data, stays until the
/// configuration no longer lists it: if the quorum is lost before the removal commits, it can
/// still come back with its data.
pub fn is_fenced(member: &Member) -> bool {
    member.pod.as_ref().is_none_or(|p| p.terminating) && (member.fenced || !member.volume)
}

/// A new member's id must be above every id ever used (I4: ids are never reused).
pub fn id_is_fresh(observed: &Observed, id: ServerId) -> bool {
    id >= observed.fresh_id()
}

/// The voter to remove when scaling down: an unhealthy one first, then the newest follower;
/// the leader only if nothing else is left.
pub fn choose_voter_to_remove(
    observed: &Observed,
    voters: &BTreeSet<ServerId>,
) -> Option<ServerId> {
    let leader = observed.leader();
    voters
        .iter()
        .rev()
        .copied()
        .find(|id| !observed.healthy(*id))
        .or_else(|| voters.iter().rev().copied().find(|id| Some(*id) != leader))
        .or_else(|| voters.iter().next().copied())
}

/// The `count` voters one reconfig removes when scaling down: for one, as
/// [`choose_voter_to_remove`]; for more, followers only (unhealthy ones first, then the newest),
/// never the leader, which stays. `None` when there are not enough followers.
pub fn choose_voters_to_remove(
    observed: &Observed,
    voters: &BTreeSet<ServerId>,
    count: usize,
) -> Option<MemberSet> {
    if count <= 1 {
        return choose_voter_to_remove(observed, voters).map(MemberSet::one);
    }
    let leader = observed.leader();
    let followers = voters
        .iter()
        .rev()
        .copied()
        .filter(|id| Some(*id) != leader);
    let unhealthy = followers.clone().filter(|id| !observed.healthy(*id));
    let healthy = followers.filter(|id| observed.healthy(*id));
    let chosen: Vec<ServerId> = unhealthy.chain(healthy).take(count).collect();
    (chosen.len() == count)
        .then(|| MemberSet::new(chosen))
        .flatten()
}

/// The order of a rolling restart: followers by id, the leader last (I6).
pub fn restart_order(observed: &Observed, stale: &[ServerId]) -> Vec<ServerId> {
    let mut order: Vec<ServerId> = stale.to_vec();
    order.sort_by_key(|id| {
        (
            observed.members.get(id).map(|m| m.zk.role) == Some(Role::Leader),
            *id,
        )
    });
    order
}

/// The survivor with the highest zxid among the voters (I7: recovery starts only from it): the
/// zxid ZooKeeper reports while the member serves, else the one read from the member's volume.
/// A member that does not serve may still answer with a zxid that is not its data (a server
/// out of its quorum reports what its stopped server last held, down to 0), so only its volume
/// counts. Every member with a volume is a candidate, not only the voters recorded: a voter
/// added by a reconfig that committed just before the loss may not be recorded yet, and a
/// member that never voted holds only committed data. `None` unless every candidate has a
/// known zxid: one whose data is not known yet may hold the newest write, so naming another
/// would let older data win.
pub fn most_up_to_date_survivor(observed: &Observed) -> Option<(ServerId, u64)> {
    let survivors: Vec<&Member> = observed.members.values().filter(|m| m.volume).collect();
    let known: Vec<(ServerId, u64)> = survivors
        .iter()
        .filter_map(|m| survivor_zxid(m).map(|z| (m.id, z)))
        .collect();
    if known.len() < survivors.len() {
        return None;
    }
    known
        .into_iter()
        .max_by_key(|(id, z)| (*z, std::cmp::Reverse(*id)))
}

/// What a survivor holds: ZooKeeper's zxid while it serves, else its volume's.
pub fn survivor_zxid(m: &Member) -> Option<u64> {
    if m.zk.serving {
        m.zk.zxid.or(m.volume_zxid)
    } else {
        m.volume_zxid
    }
}

/// Whether a claimed step has taken effect, judged from the observation alone.
pub fn step_is_done(step: &Step, observed: &Observed, desired: &Desired) -> bool {
    let member = observed.members.get(&step.member());
    match step {
        Step::CreateMember { .. } => member.is_some_and(|m| m.pod.is_some()),
        Step::AddVoter { members } => observed
            .config
            .as_ref()
            .is_some_and(|c| members.iter().all(|id| c.voters.contains(&id))),
        Step::RemoveVoter { members } => observed
            .config
            .as_ref()
            .is_some_and(|c| members.iter().all(|id| !c.voters.contains(&id))),
        Step::DeleteMember { .. } => member.is_none_or(deletion_is_requested),
        Step::FenceMember { .. } => member.is_none_or(is_fenced),
        Step::RestartMember { .. } => member.is_some_and(|m| {
            m.pod
                .as_ref()
                .is_some_and(|p| p.spec_hash == desired.spec_hash && !p.terminating)
        }),
    }
}
