//! Property tests of the planner (property tier, pure): random specs, states and fault
//! sequences. Case count: `PROPTEST_CASES` (default 10,000 per property).

use std::collections::{BTreeMap, BTreeSet};

use jiff::SignedDuration;
use proptest::prelude::*;

use super::fixtures::{desired, t0};
use super::model::{
    Claim, Desired, Member, Membership, Observed, PodInfo, Role, ServerId, ZkState,
};
use super::rules::{
    deletion_is_requested, id_is_fresh, majority, quorum_survives_removal, quorum_survives_restart,
};
use super::sim::{Fault, Sim};
use super::step::{BlockReason, Decision, Step};
use super::{matches_spec, plan};

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn odd_replicas() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize), Just(3), Just(5), Just(7), Just(9)]
}

/// What happens between controller passes in a random run.
#[derive(Clone, Debug)]
enum Event {
    SetReplicas(usize),
    ChangeSpec { bad: bool },
    Crash { pick: usize, secs: Option<i64> },
    DeletePod { pick: usize },
    OperatorCrashAfterClaim,
    OperatorCrashMidStep,
    Pause(bool),
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => odd_replicas().prop_map(Event::SetReplicas),
        2 => any::<bool>().prop_map(|b| Event::ChangeSpec { bad: b }),
        3 => (any::<usize>(), prop_oneof![4 => (5i64..400).prop_map(Some), 1 => Just(None)])
            .prop_map(|(pick, secs)| Event::Crash { pick, secs }),
        1 => any::<usize>().prop_map(|pick| Event::DeletePod { pick }),
        1 => Just(Event::OperatorCrashAfterClaim),
        1 => Just(Event::OperatorCrashMidStep),
        1 => any::<bool>().prop_map(Event::Pause),
    ]
}

fn sim_desired(replicas: usize) -> Desired {
    let mut d = desired(replicas);
    d.replace_after = SignedDuration::from_secs(60);
    d
}

proptest! {
    #![proptest_config(config())]

    /// Random runs with faults: every invariant holds at every intermediate state, and once the
    /// faults stop the ensemble converges (or is blocked only by a truly lost quorum).
    #[test]
    fn random_runs_keep_every_invariant_and_converge(
        start in prop_oneof![Just(1usize), Just(3), Just(5)],
        events in proptest::collection::vec((event(), 1usize..12), 1..8),
    ) {
        let mut sim = Sim::new(t0());
        let mut want = sim_desired(start);
        let boot = sim.run(&want, 300);
        prop_assert!(boot.is_ok(), "bootstrap: {:?}", boot);
        prop_assert_eq!(boot.unwrap().decision, Decision::Converged, "bootstrap of {} did not converge", start);
        let mut generation = 1;
        for (ev, passes) in events {
            let ids: Vec<ServerId> = sim.members.keys().copied().collect();
            match ev {
                Event::SetReplicas(r) => want.replicas = r,
                Event::ChangeSpec { bad } => {
                    generation += 1;
                    want.spec_hash = format!("h{generation}");
                    if bad {
                        sim.bad_hashes.insert(want.spec_hash.clone());
                    }
                }
                Event::Crash { pick, secs } if !ids.is_empty() => sim.inject(Fault::Crash(ids[pick % ids.len()], secs)),
                Event::DeletePod { pick } if !ids.is_empty() => sim.inject(Fault::DeletePod(ids[pick % ids.len()])),
                Event::OperatorCrashAfterClaim => sim.inject(Fault::OperatorCrashAfterClaim),
                Event::OperatorCrashMidStep => sim.inject(Fault::OperatorCrashMidStep),
                Event::Pause(p) => want.paused = p,
                _ => {}
            }
            for _ in 0..passes {
                sim.advance();
                let r = sim.pass(&want);
                prop_assert!(r.is_ok(), "{}", r.unwrap_err());
            }
        }
        // Faults stop: transient crashes end, a bad spec is reverted to a good one, unpause.
        sim.heal();
        want.paused = false;
        if sim.bad_hashes.contains(&want.spec_hash) {
            generation += 1;
            want.spec_hash = format!("h{generation}");
        }
        let last = sim.run(&want, 600);
        prop_assert!(last.is_ok(), "{}", last.unwrap_err());
        let last = last.unwrap();
        match &last.decision {
            Decision::Converged => {}
            Decision::Blocked { reason: BlockReason::QuorumLost { .. } } => {
                prop_assert!(!sim.has_quorum(), "blocked on a lost quorum while the ensemble has one");
            }
            // The first member rolled into a new spec died for good: quorate cannot tell this
            // from a broken spec, so it stops the roll for a person (after a healthy member
            // has served with the spec, the same failure is replaced instead).
            Decision::Blocked {
                reason: BlockReason::RolloutUnhealthy { member } | BlockReason::JoinerNeverSynced { member },
            } => {
                prop_assert!(
                    sim.members[member].crashed_until == Some(jiff::Timestamp::MAX),
                    "rollout blocked on member {} which is not permanently down", member
                );
            }
            other => prop_assert!(false, "did not converge after faults stopped: {}", other),
        }
    }

    /// Over arbitrary observed states: every state yields a decision, `Converged` exactly when
    /// the ensemble matches the spec, and no step risks the quorum, reuses an id, or starts a
    /// second transition.
    #[test]
    fn every_decision_on_any_state_is_safe(
        replicas in odd_replicas(),
        observed in arbitrary_observed(),
        minutes in 0i64..30,
    ) {
        let want = desired(replicas);
        let now = t0() + SignedDuration::from_mins(minutes);
        let p = plan(&want, &observed, now);
        let voters = observed.voters();
        let healthy = |id: &ServerId| observed.healthy(*id);
        let matches = matches_spec(&want, &observed);
        if p.decision == Decision::Converged {
            prop_assert!(matches, "converged on a state that differs from the spec");
        }
        if matches && observed.in_flight.is_none() {
            prop_assert_eq!(&p.decision, &Decision::Converged, "a matching state must be converged");
        }
        if let Decision::Act { step } = &p.decision {
            let id = step.member();
            // Members in transition: not voters and not already being deleted (a removed
            // member whose Pod is stuck Terminating has its id retired and blocks nothing).
            let strays = observed.members.values().filter(|m| m.pod.is_some() && !voters.contains(&m.id) && m.id != id && !deletion_is_requested(m)).count();
            match step {
                Step::CreateMember { seed, .. } => {
                    let resumed = observed.in_flight.as_ref().is_some_and(|c| c.step == *step)
                        && observed.fresh_id() == ServerId(id.0 + 1)
                        && observed.members.get(&id).is_none_or(|m| m.pod.is_none() && !m.was_voter);
                    prop_assert!(id_is_fresh(&observed, id) || resumed, "id {} reused (fresh is {})", id, observed.fresh_id());
                    if !seed {
                        prop_assert!(voters.iter().all(healthy), "created a member while a voter is unhealthy");
                        prop_assert_eq!(strays, 0, "created a member while another is in transition");
                        prop_assert!(voters.len() < replicas);
                    } else {
                        prop_assert!(voters.is_empty());
                    }
                }
                Step::AddVoter { .. } => {
                    prop_assert!(observed.healthy(id), "added a joiner that is not synced");
                    prop_assert!(voters.iter().all(healthy), "added a voter while a voter is unhealthy");
                    prop_assert!(!observed.members[&id].was_voter, "re-added a removed voter");
                    prop_assert!(voters.len() < replicas);
                }
                Step::RemoveVoter { .. } => {
                    prop_assert!(voters.contains(&id));
                    prop_assert!(quorum_survives_removal(&observed, &voters, id), "removal leaves no healthy majority");
                }
                Step::DeleteMember { .. } => {
                    prop_assert!(observed.config.is_some() && !voters.contains(&id), "deleted a voter");
                }
                Step::FenceMember { .. } => {
                    prop_assert!(!observed.healthy(id), "fenced a healthy member");
                    prop_assert!(quorum_survives_removal(&observed, &voters, id));
                }
                Step::RestartMember { .. } => {
                    prop_assert!(observed.members.get(&id).is_some_and(|m| m.volume), "restarted without data");
                    if observed.healthy(id) {
                        prop_assert!(quorum_survives_restart(&observed, &voters, id), "restart loses the quorum");
                        prop_assert!(voters.iter().all(healthy), "planned restart while a voter is unhealthy");
                        prop_assert_eq!(strays, 0, "planned restart while another member is in transition");
                    }
                }
            }
        }
    }
}

fn arbitrary_member(id: u32) -> impl Strategy<Value = Member> {
    (
        prop::option::weighted(
            0.85,
            (
                any::<bool>(),
                any::<bool>(),
                0i64..40,
                prop_oneof![Just("h1"), Just("h0")],
            ),
        ),
        prop::bool::weighted(0.9),
        (
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
            prop::option::of(0u64..100),
        ),
        prop::option::of(0i64..40),
        any::<bool>(),
        prop::bool::weighted(0.7),
    )
        .prop_map(
            move |(pod, volume, (serving, synced, zxid), down, was_voter, healthy_h1)| Member {
                id: ServerId(id),
                pod: pod.map(|(running, terminating, age, hash)| PodInfo {
                    spec_hash: hash.into(),
                    running,
                    created_at: t0() - SignedDuration::from_mins(age),
                    terminating: terminating && age % 7 == 0,
                }),
                volume,
                zk: ZkState {
                    serving,
                    role: Role::Follower,
                    zxid,
                    synced,
                },
                down_since: down.map(|m| t0() - SignedDuration::from_mins(m)),
                healthy_spec_hash: Some(if healthy_h1 { "h1" } else { "h0" }.into()),
                was_voter,
            },
        )
}

fn arbitrary_observed() -> impl Strategy<Value = Observed> {
    (1u32..10)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec(arbitrary_member(0), n as usize),
                proptest::collection::vec(any::<bool>(), n as usize),
                prop::bool::weighted(0.85),
                prop::option::of(0u32..12),
                0u32..4,
                prop::option::weighted(0.2, (0usize..6, 1u32..12)),
            )
        })
        .prop_map(|(members, is_voter, live, leader, gap, claim)| {
            let mut map = BTreeMap::new();
            let mut voters = BTreeSet::new();
            for (i, (mut m, v)) in members.into_iter().zip(is_voter).enumerate() {
                let id = ServerId(i as u32 + 1);
                m.id = id;
                if m.pod.is_none() && !m.volume {
                    continue;
                }
                if v {
                    voters.insert(id);
                    m.was_voter = true;
                }
                if Some(id.0) == leader && m.zk.serving {
                    m.zk.role = Role::Leader;
                }
                map.insert(id, m);
            }
            let quorum = !voters.is_empty()
                && voters
                    .iter()
                    .filter(|id| map.get(*id).is_some_and(Member::is_healthy))
                    .count()
                    >= majority(voters.len());
            let next = ServerId(map.keys().map(|i| i.0).max().unwrap_or(0) + 1 + gap);
            let in_flight = claim.map(|(kind, member)| Claim {
                step: match kind {
                    0 => Step::CreateMember {
                        member: ServerId(member),
                        seed: false,
                    },
                    1 => Step::AddVoter {
                        member: ServerId(member),
                    },
                    2 => Step::RemoveVoter {
                        member: ServerId(member),
                    },
                    3 => Step::DeleteMember {
                        member: ServerId(member),
                    },
                    4 => Step::FenceMember {
                        member: ServerId(member),
                    },
                    _ => Step::RestartMember {
                        member: ServerId(member),
                    },
                },
                started_at: t0(),
            });
            Observed {
                members: map,
                config: (live && quorum).then(|| Membership {
                    version: 7,
                    voters: voters.clone(),
                }),
                recorded_voters: voters,
                in_flight,
                next_server_id: next,
                change_requested_at: None,
                ready_backups: Vec::new(),
            }
        })
}
