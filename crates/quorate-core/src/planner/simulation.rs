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
fn scales_one_to_three_to_five_to_three_to_one_never_through_two_voters() {
    let mut sim = Sim::new(t0());
    for n in [1, 3, 5, 3, 1] {
        let before = sim.log.len();
        let voters_before = sim.config.len();
        converge(&mut sim, n);
        let reconfigs: Vec<&Step> = sim.log[before..]
            .iter()
            .filter(|s| s.changes_membership())
            .collect();
        let changed: usize = reconfigs.iter().map(|s| s.members().len()).sum();
        // Bootstrap forms the first configuration from the seed alone, without a reconfig.
        let expected = if voters_before == 0 {
            n - 1
        } else {
            voters_before.abs_diff(n)
        };
        assert_eq!(changed, expected, "every voter added or removed once");
        // 1 <-> 3 is one reconfig of two voters; every other change one voter per reconfig.
        let per_reconfig = if voters_before.min(n) == 1 && voters_before.max(n) == 3 {
            2
        } else {
            1
        };
        assert!(
            reconfigs.iter().all(|s| s.members().len() == per_reconfig),
            "{voters_before} -> {n}: {reconfigs:?}"
        );
    }
    // Ids 1..5 were used once each; the seed (1) led throughout and was kept.
    assert_eq!(
        sim.created.iter().map(|i| i.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(sim.config.iter().map(|i| i.0).collect::<Vec<_>>(), vec![1]);
}

#[test]
fn losing_a_joiner_after_the_one_to_three_reconfig_stops_nothing() {
    let mut sim = Sim::new(t0());
    converge(&mut sim, 1);
    let mut d = desired(3);
    d.replace_after = SignedDuration::from_secs(60);
    // Run until both joiners are voters, then lose one of them for good.
    for _ in 0..100 {
        if sim.config.len() == 3 {
            break;
        }
        sim.advance();
        sim.pass(&d).expect("no invariant is violated");
    }
    assert_eq!(sim.config.len(), 3);
    let acked = sim.acked;
    sim.inject(Fault::Crash(ServerId(3), None));
    sim.advance();
    assert!(
        sim.has_quorum(),
        "the leader and the other joiner are a quorum"
    );
    assert!(sim.acked > acked, "writes go on");
    converge(&mut sim, 3);
    assert!(
        !sim.config.contains(&ServerId(3)),
        "the lost joiner was replaced"
    );
}

#[test]
fn a_flapping_member_is_replaced_once_unhealthy_for_replace_after_in_all() {
    let mut sim = Sim::new(t0());
    converge(&mut sim, 3);
    let mut d = desired(3);
    d.replace_after = SignedDuration::from_secs(60);
    // Serving long enough that its start-up no longer counts.
    for _ in 0..10 {
        sim.advance();
        sim.pass(&d).expect("no invariant is violated");
    }
    sim.inject(Fault::Flap(ServerId(2), 100_000));
    let flapping_since = sim.now;
    let mut healthy_passes = 0;
    let mut fenced_at = None;
    for _ in 0..60 {
        sim.advance();
        if sim.healthy(ServerId(2)) {
            healthy_passes += 1;
        }
        let p = sim.pass(&d).expect("no invariant is violated");
        if p.decision.to_string() == "act: fence-member/2" {
            fenced_at.get_or_insert(sim.now);
        }
    }
    assert!(healthy_passes > 0, "the member served now and then");
    let fenced_at = fenced_at.expect("the flapping member was fenced");
    assert!(
        fenced_at.duration_since(flapping_since) >= SignedDuration::from_secs(60),
        "fenced only after replaceAfter: {fenced_at}"
    );
    assert_eq!(sim.config.len(), 3);
    assert!(!sim.config.contains(&ServerId(2)), "{:?}", sim.log);
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
    assert!(sim.acked > zxid_before, "writes went on");
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
    let remove = sim
        .log
        .iter()
        .position(|s| *s == Step::remove_voter(ServerId(2)));
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
