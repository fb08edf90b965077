//! Simulation tier: the planner drives an in-memory ensemble through whole procedures, and the
//! simulator checks the invariants at every intermediate state.

use jiff::SignedDuration;

use super::fixtures::{desired, t0};
use super::model::ServerId;
use super::sim::{Fault, Sim};
use super::step::{BlockReason, Decision, Step};

fn converge(sim: &mut Sim, replicas: usize) {
    let mut d = desired(replicas);
    d.replace_after = SignedDuration::from_secs(60);
    let last = sim.run(&d, 500).expect("no invariant is violated");
    assert_eq!(
        last.decision,
        Decision::Converged,
        "{replicas} members did not converge"
    );
    assert_eq!(sim.config.len(), replicas);
}

#[test]
fn scales_one_to_three_to_five_to_three_one_voter_at_a_time() {
    let mut sim = Sim::new(t0());
    for n in [1, 3, 5, 3] {
        let before = sim.log.len();
        let voters_before = sim.config.len();
        converge(&mut sim, n);
        let changes = sim.log[before..]
            .iter()
            .filter(|s| s.changes_membership())
            .count();
        // Bootstrap forms the first configuration from the seed alone, without a reconfig.
        let expected = if voters_before == 0 {
            n - 1
        } else {
            voters_before.abs_diff(n)
        };
        assert_eq!(changes, expected, "one reconfig per voter added or removed");
    }
    // Ids 1..5 were used once each; the leader (5, the highest id here) was kept, followers
    // 4 and 3 were removed, and nothing was created again.
    assert_eq!(
        sim.created.iter().map(|i| i.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(
        sim.config.iter().map(|i| i.0).collect::<Vec<_>>(),
        vec![1, 2, 5]
    );
}

#[test]
fn the_data_of_a_single_member_survives_growth_to_three() {
    let mut sim = Sim::new(t0());
    converge(&mut sim, 1);
    let zxid_before = sim.members[&ServerId(1)].zxid;
    converge(&mut sim, 3);
    assert!(
        sim.members.values().all(|m| m.zxid >= zxid_before),
        "no member was wiped"
    );
    assert!(
        !sim.log
            .iter()
            .any(|s| matches!(s, Step::DeleteMember { member } if *member == ServerId(1)))
    );
}

#[test]
fn replaces_a_permanently_failed_member_with_a_fresh_id() {
    let mut sim = Sim::new(t0());
    converge(&mut sim, 3);
    sim.inject(Fault::Crash(ServerId(2), None));
    converge(&mut sim, 3);
    assert!(
        !sim.config.contains(&ServerId(2)),
        "the failed id left the configuration"
    );
    assert!(
        sim.config.contains(&ServerId(4)),
        "a fresh id took its place"
    );
    let fence = sim.log.iter().position(|s| {
        *s == Step::FenceMember {
            member: ServerId(2),
        }
    });
    let remove = sim.log.iter().position(|s| {
        *s == Step::RemoveVoter {
            member: ServerId(2),
        }
    });
    let create = sim.log.iter().position(|s| {
        *s == Step::CreateMember {
            member: ServerId(4),
            seed: false,
        }
    });
    assert!(
        fence < remove && remove < create,
        "fence, remove, then add: {:?}",
        sim.log
    );
}

#[test]
fn an_operator_crash_after_the_claim_does_not_start_a_second_member() {
    let mut sim = Sim::new(t0());
    converge(&mut sim, 3);
    sim.inject(Fault::OperatorCrashAfterClaim);
    converge(&mut sim, 5);
    // The claimed id 4 was never created; it is retired and 5 and 6 join instead.
    let creates: Vec<_> = sim
        .log
        .iter()
        .filter(|s| matches!(s, Step::CreateMember { .. }))
        .collect();
    assert_eq!(creates.len(), 5, "{creates:?}");
    assert_eq!(sim.config.len(), 5);
}

#[test]
fn an_operator_crash_in_the_middle_of_a_step_is_finished_without_repeating_it() {
    let mut sim = Sim::new(t0());
    converge(&mut sim, 3);
    sim.inject(Fault::OperatorCrashMidStep);
    converge(&mut sim, 5);
    let created: Vec<u32> = sim.created.iter().map(|i| i.0).collect();
    assert_eq!(
        created,
        vec![1, 2, 3, 4, 5],
        "the half-created member 4 was finished, not duplicated"
    );
}

#[test]
fn a_bad_spec_stops_the_roll_after_the_first_member_and_reverting_recovers() {
    let mut sim = Sim::new(t0());
    converge(&mut sim, 3);
    let mut bad = desired(3);
    bad.spec_hash = "bad".into();
    sim.bad_hashes.insert("bad".into());
    let last = sim.run(&bad, 100).expect("no invariant is violated");
    assert!(
        matches!(
            last.decision,
            Decision::Blocked {
                reason: BlockReason::RolloutUnhealthy { .. }
            }
        ),
        "{last:?}"
    );
    let on_bad = sim
        .members
        .values()
        .filter(|m| m.pod.as_ref().is_some_and(|p| p.0 == "bad"))
        .count();
    assert_eq!(on_bad, 1, "only the first member was rolled");
    assert!(sim.has_quorum());
    converge(&mut sim, 3);
}
