//! Record: the status of a MasterEnsemble built from one pass (pure), and its conditions.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::observe::Observation;
use crate::constants::*;
use kube::ResourceExt;

use crate::crd::{
    EnsemblePhase, InFlightStep, MasterEnsemble, MasterEnsembleStatus, MemberRole, MemberState,
    MemberStatus, QuorumStatus, condition,
};
use crate::executor::resources::names::{connection_string, member_pod};
use crate::planner::rules::{healthy_voters, majority, tolerance};
use crate::planner::{Claim, Decision, Plan, Role, ServerId, Step};

/// A claim as stored in status: the step's id names every member (`add-voter/2,3` for the
/// reconfig that grows one voter to three), `member` the first of them.
pub fn in_flight_step(step: &Step, at: Timestamp) -> InFlightStep {
    InFlightStep {
        id: step.id(),
        kind: step.kind().into(),
        member: i64::from(step.member().0),
        started_at: Time(at),
    }
}

/// The claim a status records, read back as [`in_flight_step`] wrote it: from the step id,
/// which names every member; from `kind` and `member` when the id is not one quorate writes.
/// `bootstrap`: no voter is recorded yet, so a create is the seed's.
pub fn claim_of(record: &InFlightStep, bootstrap: bool) -> Option<Claim> {
    let seed = record.kind == "create-member" && bootstrap;
    let step = Step::from_id(&record.id, seed)
        .ok()
        .filter(|s| s.kind() == record.kind && i64::from(s.member().0) == record.member)
        .or_else(|| {
            let member = ServerId(u32::try_from(record.member).ok()?);
            Step::from_kind(&record.kind, member, seed)
        })?;
    Some(Claim {
        step,
        started_at: record.started_at.0,
    })
}

/// The voters a status records, which a pass that cannot read the live configuration (no
/// member serves) reasons about: `voters`, but without the members of a removal claimed in
/// this pass. The removal may commit in ZooKeeper before any pass records it (the operator may
/// stop between the two, and the quorum may be lost meanwhile); a member that may have left
/// the configuration must never be brought back as a voter (I4), so from the claim on it is
/// recorded as one that was a voter. A removal that did not commit shows in the next live
/// configuration, which is recorded again.
fn recorded_voters(voters: &BTreeSet<ServerId>, claimed: Option<&Claim>) -> Vec<i64> {
    let leaving: BTreeSet<ServerId> = match claimed.map(|c| &c.step) {
        Some(Step::RemoveVoter { members }) => members.iter().collect(),
        _ => BTreeSet::new(),
    };
    voters
        .difference(&leaving)
        .map(|v| i64::from(v.0))
        .collect()
}

/// The status that takes back the claim of `step` (written as `claimed`) when the step is a
/// removal that certainly never reached ZooKeeper: it failed before any reconfig request left
/// the operator, and no earlier pass had claimed it (the caller checks both). Its members are
/// recorded as voters again and nothing is in flight. Without this, a quorum lost right after
/// such a claim leaves a voter that never left the configuration recorded as one that may have
/// left, which no pass brings back (I4), although its volume may hold a quorum's data (a
/// fenced member, kept for exactly that).
pub fn withdrawn_removal(
    claimed: &MasterEnsembleStatus,
    step: &Step,
    voters: &BTreeSet<ServerId>,
    why: &str,
) -> Option<MasterEnsembleStatus> {
    let Step::RemoveVoter { .. } = step else {
        return None;
    };
    Some(MasterEnsembleStatus {
        voters: recorded_voters(voters, None),
        in_flight: None,
        message: Some(format!(
            "{step} withdrawn: no reconfig request reached ZooKeeper ({why}); its members are \
             still voters"
        )),
        ..claimed.clone()
    })
}

fn claim_step(c: &Claim) -> InFlightStep {
    in_flight_step(&c.step, c.started_at)
}

/// The status after a pass that decided `plan`. `claimed` is the step claimed in this pass.
pub fn build_status(
    ens: &MasterEnsemble,
    previous: &MasterEnsembleStatus,
    obs: &Observation,
    plan: &Plan,
    claimed: Option<&Claim>,
    now: Timestamp,
) -> MasterEnsembleStatus {
    let name = &ens.name_any();
    let namespace = &ens.namespace().unwrap_or_default();
    let generation = ens.metadata.generation;
    let voters = obs.observed.voters();
    let leader = obs.zk.leader;
    let mut members = Vec::new();
    let mut ready = 0;
    for m in obs.observed.members.values() {
        let healthy = m.is_healthy();
        ready += i32::from(healthy);
        let state = if healthy {
            MemberState::Serving
        } else if !voters.contains(&m.id) && m.was_voter {
            MemberState::Removed
        } else if m.pod.is_none() {
            MemberState::Down
        } else if m.zk.serving {
            MemberState::Syncing
        } else if m.pod.as_ref().is_some_and(|p| p.running) {
            MemberState::Starting
        } else {
            MemberState::Down
        };
        let before = previous
            .members
            .iter()
            .find(|p| p.server_id == i64::from(m.id.0));
        let since = match before {
            Some(b) if b.state == Some(state) => b.since.clone(),
            _ => Some(Time(now)),
        };
        let role = match (m.zk.role, voters.contains(&m.id)) {
            (Role::Leader, _) => MemberRole::Leader,
            (_, false) if m.pod.is_some() => MemberRole::Joiner,
            (Role::Follower, _) => MemberRole::Follower,
            (Role::Observer, _) => MemberRole::Observer,
            _ => MemberRole::Unknown,
        };
        members.push(MemberStatus {
            server_id: i64::from(m.id.0),
            pod: member_pod(name, m.id),
            address: obs.addresses.get(&m.id).cloned(),
            client_port: Some(CLIENT_PORT.into()),
            admin_port: Some(ADMIN_PORT.into()),
            role: Some(role),
            state: Some(state),
            zxid: m.zk.zxid.map(|z| format!("0x{z:x}")),
            volume_zxid: m.volume_zxid.map(|z| format!("0x{z:x}")),
            synced: m.zk.synced,
            voter: voters.contains(&m.id),
            was_voter: m.was_voter,
            since,
            unhealthy_since: m.down_since.map(Time),
            healthy_spec_hash: m.healthy_spec_hash.clone(),
        });
    }
    let in_flight = claimed.map(claim_step);
    let last_step = match (&obs.observed.in_flight, claimed) {
        (Some(old), Some(new)) if old.step != new.step => Some(claim_step(old)),
        (Some(old), None) => Some(claim_step(old)),
        _ => previous.last_step.clone(),
    };
    let next_server_id = claimed
        .and_then(|c| match c.step {
            Step::CreateMember { member, .. } => Some(i64::from(member.0) + 1),
            _ => None,
        })
        .or(previous.next_server_id)
        .max(Some(i64::from(obs.observed.fresh_id().0)));
    let healthy_voters = healthy_voters(&obs.observed, &voters).len();
    let quorum = (!voters.is_empty()).then(|| QuorumStatus {
        voters: voters.len() as i32,
        majority: majority(voters.len()) as i32,
        tolerance: tolerance(voters.len()) as i32,
    });
    let (phase, message) = phase_of(plan, claimed);
    let available = !voters.is_empty() && healthy_voters >= majority(voters.len());
    let at_risk = available && healthy_voters <= majority(voters.len());
    let degraded = matches!(plan.decision, Decision::Blocked { .. })
        || voters.iter().any(|v| !obs.observed.healthy(*v));
    let reason = reason_of(plan);
    let conds = vec![
        cond(
            previous,
            condition::AVAILABLE,
            available,
            if available {
                "QuorumHealthy"
            } else {
                "NoQuorum"
            },
            &format!(
                "{healthy_voters} of {} voters serving and synced",
                voters.len()
            ),
            generation,
            now,
        ),
        cond(
            previous,
            condition::PROGRESSING,
            !matches!(plan.decision, Decision::Converged),
            &reason,
            &message,
            generation,
            now,
        ),
        cond(
            previous,
            condition::DEGRADED,
            degraded,
            if degraded { &reason } else { "AllHealthy" },
            &message,
            generation,
            now,
        ),
        cond(
            previous,
            condition::QUORUM_AT_RISK,
            at_risk,
            if at_risk { "NoTolerance" } else { "Tolerant" },
            &format!(
                "{} more failures tolerated",
                healthy_voters.saturating_sub(majority(voters.len().max(1)))
            ),
            generation,
            now,
        ),
    ];
    MasterEnsembleStatus {
        observed_generation: generation,
        phase: Some(phase),
        ready_members: ready,
        connection_string: Some(connection_string(name, namespace, CLUSTER_DOMAIN)),
        members,
        quorum,
        leader: leader.map(|l| i64::from(l.0)),
        config_version: obs.config.as_ref().map(|c| format!("0x{:x}", c.version)),
        voters: recorded_voters(&voters, claimed),
        in_flight,
        last_step,
        next_server_id,
        change_requested_at: previous.change_requested_at.clone(),
        // Unfenced: no restore holds the members.
        restore: None,
        root_locked: previous.root_locked,
        message: Some(message),
        conditions: conds,
    }
}

fn reason_of(plan: &Plan) -> String {
    match &plan.decision {
        Decision::Act { step } => format!("Step{}", camel(step.kind())),
        Decision::Wait { reason } => reason.code().into(),
        Decision::Converged => "Converged".into(),
        Decision::Blocked { reason } => reason.code().into(),
    }
}

fn camel(kind: &str) -> String {
    kind.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn phase_of(plan: &Plan, claimed: Option<&Claim>) -> (EnsemblePhase, String) {
    match (&plan.decision, claimed) {
        (Decision::Act { step }, _) => {
            let phase = match step {
                Step::CreateMember { seed: true, .. } => EnsemblePhase::Creating,
                Step::CreateMember { .. } | Step::AddVoter { .. } => EnsemblePhase::Scaling,
                Step::RemoveVoter { .. } | Step::DeleteMember { .. } => EnsemblePhase::Scaling,
                Step::FenceMember { .. } => EnsemblePhase::Replacing,
                Step::RestartMember { .. } => EnsemblePhase::Rolling,
            };
            (phase, format!("carrying out {step} ({})", plan.rule.name()))
        }
        (Decision::Wait { reason }, _) if reason.code() == "Paused" => {
            (EnsemblePhase::Paused, reason.to_string())
        }
        (Decision::Wait { reason }, _) => (EnsemblePhase::Progressing, reason.to_string()),
        (Decision::Converged, _) => (
            EnsemblePhase::Running,
            "the ensemble matches the spec".into(),
        ),
        (Decision::Blocked { reason }, _) => (EnsemblePhase::Blocked, reason.to_string()),
    }
}

fn cond(
    previous: &MasterEnsembleStatus,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last = previous
        .conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: last,
    }
}

/// The new status says nothing the previous one did not, but for the members' last zxids. Such
/// a status is not written: every write wakes the ensemble's watchers and the operator's next
/// pass, and each pass moves the zxids again (its ZooKeeper session is itself a transaction), so
/// writing them would keep a converged ensemble busy for ever. The zxids shown are those of the
/// last status that changed something else.
pub fn unchanged_but_zxids(previous: &MasterEnsembleStatus, next: &MasterEnsembleStatus) -> bool {
    if next.members.len() != previous.members.len() {
        return false;
    }
    let mut masked = next.clone();
    for (m, before) in masked.members.iter_mut().zip(&previous.members) {
        m.zxid.clone_from(&before.zxid);
    }
    masked == *previous
}

#[cfg(test)]
mod unchanged_tests {
    //! Unit tier: which status changes are written.

    use super::*;
    use quorate_core::crd::MemberStatus;

    fn status(zxids: &[&str], phase: EnsemblePhase) -> MasterEnsembleStatus {
        MasterEnsembleStatus {
            phase: Some(phase),
            members: zxids
                .iter()
                .enumerate()
                .map(|(i, z)| MemberStatus {
                    server_id: i as i64 + 1,
                    zxid: Some(z.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn only_moved_zxids_are_not_written_anything_else_is() {
        let before = status(&["0x100000005", "0x100000005"], EnsemblePhase::Running);
        let moved = status(&["0x100000009", "0x100000009"], EnsemblePhase::Running);
        assert!(unchanged_but_zxids(&before, &moved));
        assert!(unchanged_but_zxids(&before, &before));
        let phase = status(&["0x100000009", "0x100000009"], EnsemblePhase::Blocked);
        assert!(!unchanged_but_zxids(&before, &phase));
        let fewer = status(&["0x100000009"], EnsemblePhase::Running);
        assert!(!unchanged_but_zxids(&before, &fewer));
        let mut serving = moved.clone();
        serving.members[1].synced = !serving.members[1].synced;
        assert!(!unchanged_but_zxids(&before, &serving));
    }
}

#[cfg(test)]
mod claim_record_tests {
    //! Unit tier: a claim reads back from status as the step that was written.

    use super::*;
    use crate::planner::MemberSet;

    #[test]
    fn a_claim_of_two_voters_reads_back_as_the_same_step() {
        let at = Timestamp::from_second(1_767_268_800).unwrap();
        let pair = MemberSet::new([ServerId(2), ServerId(3)]).unwrap();
        for step in [
            Step::AddVoter {
                members: pair.clone(),
            },
            Step::RemoveVoter { members: pair },
            Step::add_voter(ServerId(4)),
            Step::CreateMember {
                member: ServerId(1),
                seed: true,
            },
            Step::RestartMember {
                member: ServerId(2),
            },
        ] {
            let record = in_flight_step(&step, at);
            let bootstrap = matches!(step, Step::CreateMember { seed: true, .. });
            let back = claim_of(&record, bootstrap).map(|c| c.step);
            assert_eq!(back, Some(step), "{record:?}");
        }
        let record = in_flight_step(&Step::add_voter(ServerId(4)), at);
        assert_eq!(record.id, "add-voter/4");
        assert_eq!(record.member, 4);
        let pair = in_flight_step(
            &Step::AddVoter {
                members: MemberSet::new([ServerId(3), ServerId(2)]).unwrap(),
            },
            at,
        );
        assert_eq!((pair.id.as_str(), pair.member), ("add-voter/2,3", 2));
    }

    #[test]
    fn a_claimed_removal_records_its_members_as_no_longer_voting() {
        let at = Timestamp::from_second(1_767_268_800).unwrap();
        let voters: BTreeSet<ServerId> = [1, 2, 3, 4, 5].map(ServerId).into();
        let claim = |step| Claim {
            step,
            started_at: at,
        };
        let pair = MemberSet::new([ServerId(4), ServerId(5)]).unwrap();
        assert_eq!(
            recorded_voters(&voters, Some(&claim(Step::RemoveVoter { members: pair }))),
            [1, 2, 3]
        );
        assert_eq!(
            recorded_voters(&voters, Some(&claim(Step::remove_voter(ServerId(2))))),
            [1, 3, 4, 5]
        );
        for step in [
            Step::add_voter(ServerId(6)),
            Step::FenceMember {
                member: ServerId(2),
            },
        ] {
            assert_eq!(
                recorded_voters(&voters, Some(&claim(step))),
                [1, 2, 3, 4, 5]
            );
        }
        assert_eq!(recorded_voters(&voters, None), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn only_a_removal_is_withdrawn_and_its_members_are_voters_again() {
        let at = Timestamp::from_second(1_767_268_800).unwrap();
        let voters: BTreeSet<ServerId> = [1, 2, 3].map(ServerId).into();
        let removal = Step::remove_voter(ServerId(1));
        let claimed = MasterEnsembleStatus {
            voters: recorded_voters(
                &voters,
                Some(&Claim {
                    step: removal.clone(),
                    started_at: at,
                }),
            ),
            in_flight: Some(in_flight_step(&removal, at)),
            ..Default::default()
        };
        assert_eq!(claimed.voters, [2, 3]);
        let back = withdrawn_removal(&claimed, &removal, &voters, "no session").unwrap();
        assert_eq!(back.voters, [1, 2, 3]);
        assert_eq!(back.in_flight, None);
        assert!(
            back.message
                .as_deref()
                .is_some_and(|m| m.contains("remove-voter/1 withdrawn") && m.contains("no session")),
            "{:?}",
            back.message
        );
        for step in [
            Step::add_voter(ServerId(4)),
            Step::FenceMember {
                member: ServerId(1),
            },
            Step::RestartMember {
                member: ServerId(1),
            },
        ] {
            assert_eq!(withdrawn_removal(&claimed, &step, &voters, "x"), None);
        }
    }

    #[test]
    fn a_claim_written_by_hand_with_only_kind_and_member_is_read() {
        let record = InFlightStep {
            id: "something else".into(),
            kind: "remove-voter".into(),
            member: 5,
            started_at: Time(Timestamp::UNIX_EPOCH),
        };
        assert_eq!(
            claim_of(&record, false).map(|c| c.step),
            Some(Step::remove_voter(ServerId(5)))
        );
    }
}
