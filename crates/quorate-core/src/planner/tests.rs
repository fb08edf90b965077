//! Unit tests of the planner's decisions (pure tier).

use jiff::SignedDuration;

use super::fixtures::{ObservedEnsemble, desired, t0};
use super::model::{Claim, Observed, ReadyBackup, ServerId};
use super::rules::{
    backup_is_fresh, is_fenced, majority, stale_fence_marks, step_is_done, tolerance,
    unhealthy_since,
};
use super::step::{BlockReason, Decision, MemberSet, Step, WaitReason};
use super::{Rule, plan};

fn act(step: Step) -> Decision {
    Decision::Act { step }
}

fn id(n: u32) -> ServerId {
    ServerId(n)
}

#[test]
fn quorum_table_matches_the_mesos_table() {
    for (n, q, t) in [(1, 1, 0), (3, 2, 1), (5, 3, 2), (7, 4, 3), (9, 5, 4)] {
        assert_eq!((majority(n), tolerance(n)), (q, t), "{n} masters");
    }
}

#[test]
fn bootstraps_an_empty_ensemble_with_one_seed() {
    let p = plan(&desired(3), &Observed::default(), t0());
    assert_eq!(
        p.decision,
        act(Step::CreateMember {
            member: id(1),
            seed: true
        })
    );
    assert_eq!(p.rule, Rule::BootstrapStartsOneSeed);
}

#[test]
fn waits_for_the_seed_to_serve_before_growing() {
    let mut o = ObservedEnsemble::healthy(1).without_live_config().build();
    o.recorded_voters.clear();
    o.members.get_mut(&id(1)).unwrap().zk = Default::default();
    let p = plan(&desired(3), &o, t0());
    assert!(
        matches!(
            p.decision,
            Decision::Wait {
                reason: WaitReason::MemberStarting { .. }
            }
        ),
        "{p:?}"
    );
}

#[test]
fn scale_up_starts_one_joiner_with_a_fresh_id() {
    let o = ObservedEnsemble::healthy(3).build();
    let p = plan(&desired(5), &o, t0());
    assert_eq!(
        p.decision,
        act(Step::CreateMember {
            member: id(4),
            seed: false
        })
    );
}

#[test]
fn never_reuses_a_server_id() {
    let mut o = ObservedEnsemble::healthy(3).build();
    o.next_server_id = id(9); // ids 4..8 were used by members since removed
    let p = plan(&desired(5), &o, t0());
    assert_eq!(
        p.decision,
        act(Step::CreateMember {
            member: id(9),
            seed: false
        })
    );
}

#[test]
fn waits_while_the_joiner_is_catching_up() {
    let o = ObservedEnsemble::healthy(3)
        .with_joiner(4, false, SignedDuration::from_secs(30))
        .build();
    let p = plan(&desired(5), &o, t0());
    assert_eq!(
        p.decision,
        Decision::Wait {
            reason: WaitReason::JoinerCatchingUp { member: id(4) }
        }
    );
}

#[test]
fn adds_the_joiner_as_a_voter_once_synced() {
    let o = ObservedEnsemble::healthy(3)
        .with_joiner(4, true, SignedDuration::from_secs(30))
        .build();
    let p = plan(&desired(5), &o, t0());
    assert_eq!(p.decision, act(Step::add_voter(id(4))));
    assert_eq!(p.rule, Rule::JoinerIsAddedOnceSynced);
}

#[test]
fn a_joiner_that_never_syncs_with_an_unproven_spec_blocks() {
    let mut d = desired(5);
    d.spec_hash = "h2".into();
    let o = ObservedEnsemble::healthy(3)
        .with_joiner(4, false, SignedDuration::from_mins(10))
        .with_hash(4, "h2")
        .build();
    let p = plan(&d, &o, t0());
    assert_eq!(
        p.decision,
        Decision::Blocked {
            reason: BlockReason::JoinerNeverSynced { member: id(4) }
        }
    );
}

#[test]
fn a_joiner_that_never_syncs_with_a_proven_spec_is_retired_and_replaced() {
    let o = ObservedEnsemble::healthy(3)
        .with_joiner(4, false, SignedDuration::from_mins(10))
        .build();
    let p = plan(&desired(5), &o, t0());
    assert_eq!(p.decision, act(Step::DeleteMember { member: id(4) }));
}

#[test]
fn scale_down_removes_the_newest_follower_from_the_config_first() {
    let o = ObservedEnsemble::healthy(5).with_leader(5).build();
    let p = plan(&desired(3), &o, t0());
    assert_eq!(
        p.decision,
        act(Step::remove_voter(id(4))),
        "the leader (5) is kept"
    );
}

#[test]
fn a_removed_voter_is_deleted_only_after_it_left_the_config() {
    let mut o = ObservedEnsemble::healthy(5).build();
    o.config.as_mut().unwrap().voters.remove(&id(5));
    let p = plan(&desired(3), &o, t0());
    assert_eq!(p.decision, act(Step::DeleteMember { member: id(5) }));
    // Without a live configuration nothing is deleted.
    let p = plan(
        &desired(3),
        &ObservedEnsemble(o).without_live_config().build(),
        t0(),
    );
    assert!(
        !matches!(
            p.decision,
            Decision::Act {
                step: Step::DeleteMember { .. }
            }
        ),
        "{p:?}"
    );
}

#[test]
fn a_removed_voter_never_becomes_a_joiner_again() {
    let mut o = ObservedEnsemble::healthy(5).build();
    o.config.as_mut().unwrap().voters.remove(&id(5));
    // The user scales back up before member 5 is deleted: 5 still must go.
    let p = plan(&desired(5), &o, t0());
    assert_eq!(p.decision, act(Step::DeleteMember { member: id(5) }));
}

#[test]
fn grows_from_one_to_three_without_a_wipe() {
    let o = ObservedEnsemble::healthy(1).build();
    let p = plan(&desired(3), &o, t0());
    assert_eq!(
        p.decision,
        act(Step::CreateMember {
            member: id(2),
            seed: false
        })
    );
}

fn pair(a: u32, b: u32) -> MemberSet {
    MemberSet::new([id(a), id(b)]).unwrap()
}

#[test]
fn grows_one_to_three_by_starting_the_second_joiner_once_the_first_is_synced() {
    // The first joiner is catching up: nothing else starts.
    let o = ObservedEnsemble::healthy(1)
        .with_joiner(2, false, SignedDuration::from_secs(30))
        .build();
    assert_eq!(
        plan(&desired(3), &o, t0()).decision,
        Decision::Wait {
            reason: WaitReason::JoinerCatchingUp { member: id(2) }
        }
    );
    // Synced: it is not added alone (that would make two voters); the second joiner starts.
    let o = ObservedEnsemble::healthy(1)
        .with_joiner(2, true, SignedDuration::from_secs(30))
        .build();
    let p = plan(&desired(3), &o, t0());
    assert_eq!(
        p.decision,
        act(Step::CreateMember {
            member: id(3),
            seed: false
        })
    );
    assert_eq!(p.rule, Rule::OneToThreeAddsBothJoinersAtOnce);
    // The second is catching up: wait for it.
    let o = ObservedEnsemble(o)
        .with_joiner(3, false, SignedDuration::from_secs(30))
        .build();
    assert_eq!(
        plan(&desired(3), &o, t0()).decision,
        Decision::Wait {
            reason: WaitReason::JoinerCatchingUp { member: id(3) }
        }
    );
}

#[test]
fn grows_one_to_three_by_adding_both_synced_joiners_in_one_reconfig() {
    let o = ObservedEnsemble::healthy(1)
        .with_joiner(2, true, SignedDuration::from_secs(60))
        .with_joiner(3, true, SignedDuration::from_secs(30))
        .build();
    let p = plan(&desired(3), &o, t0());
    assert_eq!(
        p.decision,
        act(Step::AddVoter {
            members: pair(2, 3)
        })
    );
    assert_eq!(p.rule, Rule::OneToThreeAddsBothJoinersAtOnce);
    // Growing one to five goes through three the same way, then one voter at a time.
    assert_eq!(
        plan(&desired(5), &o, t0()).decision,
        act(Step::AddVoter {
            members: pair(2, 3)
        })
    );
    let o = ObservedEnsemble::healthy(3)
        .with_joiner(4, true, SignedDuration::from_secs(30))
        .build();
    assert_eq!(
        plan(&desired(5), &o, t0()).decision,
        act(Step::add_voter(id(4)))
    );
}

#[test]
fn a_claimed_add_of_two_voters_is_confirmed_once_both_are_voters() {
    let mut o = ObservedEnsemble::healthy(3).build();
    o.in_flight = Some(Claim {
        step: Step::AddVoter {
            members: pair(2, 3),
        },
        started_at: t0(),
    });
    assert!(step_is_done(
        &o.in_flight.clone().unwrap().step,
        &o,
        &desired(3)
    ));
    assert_eq!(plan(&desired(3), &o, t0()).decision, Decision::Converged);
}

#[test]
fn shrinks_three_to_one_by_removing_both_followers_in_one_reconfig() {
    let o = ObservedEnsemble::healthy(3).with_leader(2).build();
    let p = plan(&desired(1), &o, t0());
    assert_eq!(
        p.decision,
        act(Step::RemoveVoter {
            members: pair(1, 3)
        }),
        "the leader (2) stays"
    );
    assert_eq!(p.rule, Rule::ThreeToOneRemovesBothFollowersAtOnce);
    // Removed: their Pods and volumes are deleted one at a time.
    let mut o = o;
    o.config.as_mut().unwrap().voters = [id(2)].into();
    assert_eq!(
        plan(&desired(1), &o, t0()).decision,
        act(Step::DeleteMember { member: id(1) })
    );
    o.members.remove(&id(1));
    assert_eq!(
        plan(&desired(1), &o, t0()).decision,
        act(Step::DeleteMember { member: id(3) })
    );
}

#[test]
fn shrinks_three_to_one_with_an_unhealthy_follower_in_the_same_reconfig() {
    let o = ObservedEnsemble::healthy(3)
        .down(2, t0() - SignedDuration::from_secs(30))
        .build();
    let p = plan(&desired(1), &o, t0());
    assert_eq!(
        p.decision,
        act(Step::RemoveVoter {
            members: pair(2, 3)
        })
    );
}

#[test]
fn shrinks_five_to_one_one_voter_at_a_time_down_to_three() {
    let o = ObservedEnsemble::healthy(5).build();
    assert_eq!(
        plan(&desired(1), &o, t0()).decision,
        act(Step::remove_voter(id(5)))
    );
}

#[test]
fn a_step_id_names_every_member_and_reads_back() {
    let add = Step::AddVoter {
        members: pair(3, 2),
    };
    assert_eq!(add.id(), "add-voter/2,3");
    assert_eq!(add.member(), id(2));
    assert_eq!(Step::from_id("add-voter/2,3", false), Ok(add.clone()));
    assert_eq!(Step::add_voter(id(4)).id(), "add-voter/4");
    assert!(Step::from_id("delete-member/2,3", false).is_err());
    assert!(Step::from_id("add-voter/", false).is_err());
    // The wire form keeps `member` for every step and lists `members` only for a pair.
    let json = serde_json::to_value(&add).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"kind": "add-voter", "member": 2, "members": [2, 3]})
    );
    assert_eq!(serde_json::from_value::<Step>(json).unwrap(), add);
    let one = serde_json::to_value(Step::remove_voter(id(4))).unwrap();
    assert_eq!(
        one,
        serde_json::json!({"kind": "remove-voter", "member": 4})
    );
    let create: Step = serde_json::from_value(
        serde_json::json!({"kind": "create-member", "member": 1, "seed": true}),
    )
    .unwrap();
    assert_eq!(
        create,
        Step::CreateMember {
            member: id(1),
            seed: true
        }
    );
}

#[test]
fn waits_for_a_down_voter_until_replace_after() {
    let o = ObservedEnsemble::healthy(3)
        .down(2, t0() - SignedDuration::from_mins(1))
        .build();
    let p = plan(&desired(3), &o, t0());
    assert_eq!(
        p.decision,
        Decision::Wait {
            reason: WaitReason::MemberDown {
                member: id(2),
                replace_at: t0() + SignedDuration::from_mins(4)
            }
        }
    );
}

#[test]
fn replaces_a_voter_down_longer_than_replace_after_by_fencing_it_first() {
    let o = ObservedEnsemble::healthy(3)
        .down(2, t0() - SignedDuration::from_mins(6))
        .build();
    let p = plan(&desired(3), &o, t0());
    assert_eq!(p.decision, act(Step::FenceMember { member: id(2) }));
    // Fenced (Pod gone, volume kept and marked): not restarted, removed from the config next.
    let mut o2 = o.clone();
    let m = o2.members.get_mut(&id(2)).unwrap();
    m.pod = None;
    m.fenced = true;
    assert!(step_is_done(
        &Step::FenceMember { member: id(2) },
        &o2,
        &desired(3)
    ));
    assert_eq!(
        plan(&desired(3), &o2, t0()).decision,
        act(Step::remove_voter(id(2)))
    );
    // Removed: only now is its volume deleted (a stray member), and its id retired.
    o2.config.as_mut().unwrap().voters.remove(&id(2));
    assert_eq!(
        plan(&desired(3), &o2, t0()).decision,
        act(Step::DeleteMember { member: id(2) })
    );
    o2.members.get_mut(&id(2)).unwrap().volume = false;
    assert_eq!(
        plan(&desired(3), &o2, t0()).decision,
        act(Step::CreateMember {
            member: id(4),
            seed: false
        })
    );
}

/// Campaign seed 2028 (rerun), round 4: voter 10 of {3, 5, 8, 10} was fenced while it was
/// starting again, then the leader was killed before the reconfig removing 10 committed, and
/// voter 8's volume was lost. When the fence deleted the volume, {3, 5} were two of four for
/// good; the fence keeps the volume, and a quorum lost before the removal commits restarts the
/// fenced voter with its data.
#[test]
fn a_fenced_voter_keeps_its_volume_and_comes_back_when_the_quorum_is_lost_before_its_removal() {
    let mut o = ObservedEnsemble::healthy(4)
        .down(4, t0() - SignedDuration::from_mins(6))
        .build();
    assert_eq!(
        plan(&desired(5), &o, t0()).decision,
        act(Step::FenceMember { member: id(4) })
    );
    let m = o.members.get_mut(&id(4)).unwrap();
    m.pod = None;
    m.fenced = true;
    // While the others keep the quorum, the fenced voter is not restarted: it is removed.
    assert_eq!(
        plan(&desired(5), &o, t0()).decision,
        act(Step::remove_voter(id(4)))
    );
    // The removal did not commit; the leader and another voter go down: 2 of 4 serve.
    let mut lost = ObservedEnsemble::healthy(4)
        .down(1, t0() - SignedDuration::from_mins(1))
        .down(3, t0() - SignedDuration::from_mins(1))
        .without_live_config()
        .build();
    for n in [1, 3] {
        let p = lost.members.get_mut(&id(n)).unwrap().pod.as_mut().unwrap();
        p.running = true;
        p.created_at = t0() - SignedDuration::from_mins(30);
        p.data_lost = n == 3;
    }
    lost.recorded_voters = (1..=4).map(id).collect();
    lost.members.insert(id(4), o.members[&id(4)].clone());
    assert_eq!(
        plan(&desired(5), &lost, t0()).decision,
        act(Step::RestartMember { member: id(4) }),
        "the fenced voter still holds its data and the configuration still counts it"
    );
}

/// An operator stopped between marking a volume fenced and deleting the Pod: the member serves
/// again, so the mark is stale and is lifted; while the Pod is gone the mark is not stale.
#[test]
fn a_fence_mark_on_a_member_that_serves_again_is_stale() {
    let mut o = ObservedEnsemble::healthy(3).build();
    o.members.get_mut(&id(2)).unwrap().fenced = true;
    assert_eq!(stale_fence_marks(&o), vec![id(2)]);
    let m = o.members.get_mut(&id(2)).unwrap();
    m.pod = None;
    m.zk = Default::default();
    assert!(stale_fence_marks(&o).is_empty());
    assert!(is_fenced(&o.members[&id(2)]));
}

#[test]
fn a_fenced_member_whose_pod_stays_terminating_is_removed_and_replaced() {
    let o = ObservedEnsemble::healthy(3)
        .down(2, t0() - SignedDuration::from_mins(6))
        .build();
    assert_eq!(
        plan(&desired(3), &o, t0()).decision,
        act(Step::FenceMember { member: id(2) })
    );
    // The deletes were accepted, but the Pod stays Terminating (a lost node) and its volume's
    // deletion waits for it: the fence is done, the member is removed from the configuration.
    let mut o2 = o.clone();
    let m = o2.members.get_mut(&id(2)).unwrap();
    m.pod.as_mut().unwrap().terminating = true;
    m.volume = false;
    assert!(step_is_done(
        &Step::FenceMember { member: id(2) },
        &o2,
        &desired(3)
    ));
    assert_eq!(
        plan(&desired(3), &o2, t0()).decision,
        act(Step::remove_voter(id(2)))
    );
    // Removed but still Terminating: no endless delete, a fresh id joins.
    o2.config.as_mut().unwrap().voters.remove(&id(2));
    assert!(step_is_done(
        &Step::DeleteMember { member: id(2) },
        &o2,
        &desired(3)
    ));
    assert_eq!(
        plan(&desired(3), &o2, t0()).decision,
        act(Step::CreateMember {
            member: id(4),
            seed: false
        })
    );
}

#[test]
fn the_unhealthy_clock_survives_changes_of_state_and_short_recoveries() {
    let after = SignedDuration::from_mins(5);
    let first = t0() - SignedDuration::from_mins(6);
    // Down, then Starting, then Syncing: still unhealthy since the first failure.
    assert_eq!(
        unhealthy_since(Some(first), false, None, t0(), after),
        Some(first)
    );
    // Serving for one pass (healthy since just now): the clock is kept.
    assert_eq!(
        unhealthy_since(Some(first), true, Some(t0()), t0(), after),
        Some(first)
    );
    // Serving for less than replaceAfter: kept; for replaceAfter: cleared.
    let spell = t0() - SignedDuration::from_mins(4);
    assert_eq!(
        unhealthy_since(Some(first), true, Some(spell), t0(), after),
        Some(first)
    );
    let spell = t0() - SignedDuration::from_mins(5);
    assert_eq!(
        unhealthy_since(Some(first), true, Some(spell), t0(), after),
        None
    );
    // A first failure starts the clock now.
    assert_eq!(unhealthy_since(None, false, None, t0(), after), Some(t0()));
}

#[test]
fn a_member_that_flaps_is_replaced_once_unhealthy_for_replace_after_in_all() {
    // Member 2 first failed 6 minutes ago and has flapped since: its recorded state is only
    // seconds old, but the clock the planner sees is the one kept across the flaps.
    let first = t0() - SignedDuration::from_mins(6);
    let mut o = ObservedEnsemble::healthy(3).down(2, first).build();
    let m = o.members.get_mut(&id(2)).unwrap();
    m.down_since = unhealthy_since(Some(first), false, None, t0(), desired(3).replace_after);
    assert_eq!(
        plan(&desired(3), &o, t0()).decision,
        act(Step::FenceMember { member: id(2) })
    );
}

#[test]
fn does_not_replace_without_a_healthy_majority_of_the_rest() {
    let o = ObservedEnsemble::healthy(5)
        .down(2, t0() - SignedDuration::from_mins(6))
        .down(3, t0() - SignedDuration::from_mins(6))
        .lagging(4)
        .build();
    let p = plan(&desired(5), &o, t0());
    assert!(matches!(p.decision, Decision::Blocked { .. }), "{p:?}");
}

#[test]
fn quorum_lost_names_the_survivor_with_the_highest_zxid() {
    let mut o = ObservedEnsemble::healthy(3)
        .down(1, t0() - SignedDuration::from_mins(10))
        .down(2, t0() - SignedDuration::from_mins(10))
        .without_live_config()
        .build();
    // Member 3 runs but has no quorum: whatever zxid it answers, its volume holds the highest.
    let m3 = o.members.get_mut(&id(3)).unwrap();
    m3.zk.serving = false;
    m3.zk.synced = false;
    m3.zk.zxid = Some(0x2_0000_0007);
    m3.volume_zxid = Some(0x2_0000_0005);
    o.members.get_mut(&id(1)).unwrap().volume_zxid = Some(0x2_0000_0001);
    o.members.get_mut(&id(2)).unwrap().volume_zxid = Some(0x2_0000_0004);
    let p = plan(&desired(3), &o, t0());
    assert_eq!(
        p.decision,
        Decision::Blocked {
            reason: BlockReason::QuorumLost {
                healthy: 0,
                voters: 3,
                survivor: Some(id(3)),
                zxid: Some(0x2_0000_0005)
            }
        }
    );
    assert!(
        p.decision.to_string().contains("member 3"),
        "{}",
        p.decision
    );
}

/// Without a quorum no member answers a zxid: the volumes' are used, and a survivor whose zxid
/// is not known yet keeps every survivor from being named (it may hold the newest write).
#[test]
fn quorum_lost_names_a_survivor_only_when_every_survivors_zxid_is_known() {
    let lost = || {
        ObservedEnsemble::healthy(3)
            .down(1, t0() - SignedDuration::from_mins(10))
            .down(2, t0() - SignedDuration::from_mins(10))
            .down(3, t0() - SignedDuration::from_mins(10))
            .without_live_config()
            .build()
    };
    let survivor = |o: &Observed| match plan(&desired(3), o, t0()).decision {
        Decision::Blocked {
            reason: BlockReason::QuorumLost { survivor, zxid, .. },
        } => (survivor, zxid),
        other => panic!("expected QuorumLost, got {other:?}"),
    };
    // Two volumes read, the third (maybe the newest) not yet: nobody is named.
    let mut o = lost();
    o.members.get_mut(&id(1)).unwrap().volume_zxid = Some(0x2_0000_0009);
    o.members.get_mut(&id(3)).unwrap().volume_zxid = Some(0x2_0000_0003);
    assert_eq!(survivor(&o), (None, None));
    let text = plan(&desired(3), &o, t0()).decision.to_string();
    assert!(
        text.contains("not every survivor's zxid is known"),
        "{text}"
    );
    // All three read: the highest wins, whoever's Pod is up.
    o.members.get_mut(&id(2)).unwrap().volume_zxid = Some(0x2_0000_000a);
    assert_eq!(survivor(&o), (Some(id(2)), Some(0x2_0000_000a)));
    // A voter whose volume is gone holds nothing to recover from: it does not count.
    let mut o = lost();
    o.members.get_mut(&id(1)).unwrap().volume_zxid = Some(0x2_0000_0009);
    o.members.get_mut(&id(3)).unwrap().volume_zxid = Some(0x2_0000_0003);
    o.members.get_mut(&id(2)).unwrap().volume = false;
    assert_eq!(survivor(&o), (Some(id(1)), Some(0x2_0000_0009)));
}

/// Campaign 2027, round 77: two of three disks lost, and the member with data out of its
/// quorum. A member that does not serve may answer `srvr` with a zxid that is not its data (0);
/// naming the survivor from those answers named an empty volume over the one holding every
/// write. Only the volumes count until a member serves.
#[test]
fn quorum_lost_never_names_a_survivor_from_zxids_that_members_out_of_quorum_answer() {
    let mut o = ObservedEnsemble::healthy(3)
        .down(1, t0() - SignedDuration::from_mins(10))
        .down(2, t0() - SignedDuration::from_mins(10))
        .down(3, t0() - SignedDuration::from_mins(10))
        .without_live_config()
        .build();
    for n in [1, 2, 3] {
        let m = o.members.get_mut(&id(n)).unwrap();
        m.pod.as_mut().unwrap().running = true;
        m.zk.zxid = Some(0);
    }
    let survivor = |o: &Observed| match plan(&desired(3), o, t0()).decision {
        Decision::Blocked {
            reason: BlockReason::QuorumLost { survivor, zxid, .. },
        } => (survivor, zxid),
        other => panic!("expected QuorumLost, got {other:?}"),
    };
    // Every process answers 0 and no volume is read yet: nobody is named.
    assert_eq!(survivor(&o), (None, None));
    // Members 1 and 2 lost their disks (empty volumes read as 0); 3 holds the writes.
    o.members.get_mut(&id(1)).unwrap().volume_zxid = Some(0);
    o.members.get_mut(&id(2)).unwrap().volume_zxid = Some(0);
    assert_eq!(survivor(&o), (None, None));
    o.members.get_mut(&id(3)).unwrap().volume_zxid = Some(0x78_0000_0515);
    assert_eq!(survivor(&o), (Some(id(3)), Some(0x78_0000_0515)));
}

#[test]
fn rolls_followers_first_and_the_leader_last() {
    let mut d = desired(3);
    d.spec_hash = "h2".into();
    let o = ObservedEnsemble::healthy(3).with_leader(1).build();
    assert_eq!(
        plan(&d, &o, t0()).decision,
        act(Step::RestartMember { member: id(2) })
    );
    let o = ObservedEnsemble(o)
        .with_hash(2, "h2")
        .with_hash(3, "h2")
        .build();
    let p = plan(&d, &o, t0());
    assert_eq!(p.decision, act(Step::RestartMember { member: id(1) }));
    assert_eq!(p.rule, Rule::RollingRestartLeaderLast);
}

#[test]
fn waits_for_a_restarted_member_before_the_next() {
    let mut d = desired(3);
    d.spec_hash = "h2".into();
    let o = ObservedEnsemble::healthy(3)
        .with_hash(2, "h2")
        .lagging(2)
        .created(2, t0() - SignedDuration::from_secs(20))
        .build();
    let p = plan(&d, &o, t0());
    assert_eq!(
        p.decision,
        Decision::Wait {
            reason: WaitReason::MemberStarting { member: id(2) }
        }
    );
}

#[test]
fn a_member_that_fails_with_the_new_spec_blocks_the_roll_and_is_not_replaced() {
    let mut d = desired(3);
    d.spec_hash = "bad".into();
    let o = ObservedEnsemble::healthy(3)
        .with_hash(2, "bad")
        .down(2, t0() - SignedDuration::from_mins(30))
        .build();
    let p = plan(&d, &o, t0());
    assert_eq!(
        p.decision,
        Decision::Blocked {
            reason: BlockReason::RolloutUnhealthy { member: id(2) }
        }
    );
    // Reverting the spec restarts the failed member with the old spec.
    let p = plan(&desired(3), &o, t0());
    assert_eq!(p.decision, act(Step::RestartMember { member: id(2) }));
}

/// Found by the fault campaign (seed 2026, 16 faults a round): a member killed mid-roll whose
/// disk was wiped while it was down came back under the new spec and refused to start without
/// its data. That is no evidence against the spec: the member is replaced at once (fenced, then
/// removed), neither waited for as starting nor blamed for the roll, nor restarted again.
#[test]
fn a_member_whose_volume_lost_its_data_is_replaced_not_blamed_for_the_roll() {
    let mut d = desired(3);
    d.spec_hash = "h2".into();
    let since = t0() - SignedDuration::from_secs(10);
    let o = ObservedEnsemble::healthy(3)
        .with_hash(2, "h2")
        .down(2, since)
        .data_lost(2)
        .created(2, since)
        .build();
    let fence = act(Step::FenceMember { member: id(2) });
    assert_eq!(
        plan(&d, &o, t0()).decision,
        fence,
        "within the start-up grace"
    );
    let later = t0() + SignedDuration::from_mins(3);
    assert_eq!(
        plan(&d, &o, later).decision,
        fence,
        "after the start-up grace"
    );
    // The same failure without the report is blamed on the new spec.
    let mut unreported = o.clone();
    unreported
        .members
        .get_mut(&id(2))
        .unwrap()
        .pod
        .as_mut()
        .unwrap()
        .data_lost = false;
    assert_eq!(
        plan(&d, &unreported, later).decision,
        Decision::Blocked {
            reason: BlockReason::RolloutUnhealthy { member: id(2) }
        }
    );
    // Not yet rolled (its Pod has the old spec): replaced, not restarted into the new one.
    let stale = ObservedEnsemble::healthy(3)
        .down(2, since)
        .data_lost(2)
        .build();
    assert_eq!(plan(&d, &stale, t0()).decision, fence);
    // Once fenced (Pod and volume gone), it leaves the configuration.
    let mut fenced = stale.clone();
    let m = fenced.members.get_mut(&id(2)).unwrap();
    m.pod = None;
    m.volume = false;
    assert_eq!(
        plan(&d, &fenced, t0()).decision,
        act(Step::remove_voter(id(2)))
    );
}

/// Found by the fault campaign (seed 2026, round 46 of 500 faults): voter 1 served on after its
/// PVC was deleted, and voter 2's Pod was deleted. The planner looked only at the first
/// unhealthy voter (1), whose replacement needs a healthy majority of the others, and blocked
/// for good; voter 2, which only needs its Pod back, was never restarted.
#[test]
fn a_voter_that_only_lost_its_pod_is_restarted_before_another_is_replaced() {
    let mut o = ObservedEnsemble::healthy(3).with_leader(3).build();
    let one = o.members.get_mut(&id(1)).unwrap();
    one.volume = false;
    one.down_since = Some(t0() - SignedDuration::from_mins(30));
    let two = o.members.get_mut(&id(2)).unwrap();
    two.pod = None;
    two.zk = Default::default();
    two.down_since = Some(t0() - SignedDuration::from_mins(1));
    assert_eq!(
        plan(&desired(3), &o, t0()).decision,
        act(Step::RestartMember { member: id(2) })
    );
    // Once it serves again, the voter without a volume leaves while it still serves.
    let back = o.members.get_mut(&id(2)).unwrap();
    *back = crate::planner::fixtures::healthy_member(2);
    assert_eq!(
        plan(&desired(3), &o, t0()).decision,
        act(Step::remove_voter(id(1)))
    );
}

#[test]
fn paused_stops_every_step() {
    let mut d = desired(5);
    d.paused = true;
    let p = plan(&d, &ObservedEnsemble::healthy(3).build(), t0());
    assert_eq!(
        p.decision,
        Decision::Wait {
            reason: WaitReason::Paused
        }
    );
}

#[test]
fn backup_before_change_holds_scaling_until_a_fresh_backup() {
    let mut d = desired(5);
    d.backup_before_change = true;
    let mut o = ObservedEnsemble::healthy(3).build();
    o.change_requested_at = Some(t0() - SignedDuration::from_mins(1));
    o.ready_backups = vec![ReadyBackup {
        started_at: t0() - SignedDuration::from_mins(2),
        requested_at: None,
    }];
    assert_eq!(
        plan(&d, &o, t0()).decision,
        Decision::Wait {
            reason: WaitReason::AwaitingBackup
        }
    );
    o.ready_backups.push(ReadyBackup {
        started_at: t0(),
        requested_at: None,
    });
    assert_eq!(
        plan(&d, &o, t0()).decision,
        act(Step::CreateMember {
            member: id(4),
            seed: false
        })
    );
}

#[test]
fn a_backup_started_in_the_same_whole_second_as_the_change_does_not_count_unless_asked_for() {
    let mut d = desired(5);
    d.backup_before_change = true;
    let mut o = ObservedEnsemble::healthy(3).build();
    // The change came at .800 s; a backup that started at .100 s of the same second is
    // recorded in status as the whole second, which is before the change.
    let second = t0();
    let requested = second + SignedDuration::from_millis(800);
    o.change_requested_at = Some(requested);
    o.ready_backups = vec![ReadyBackup {
        started_at: second,
        requested_at: None,
    }];
    assert_eq!(
        plan(&d, &o, requested).decision,
        Decision::Wait {
            reason: WaitReason::AwaitingBackup
        }
    );
    // A backup taken for an older request does not count either.
    o.ready_backups[0].requested_at = Some(requested - SignedDuration::from_millis(1));
    assert!(!backup_is_fresh(&d, &o));
    // The backup taken for this very request counts, even in the same whole second.
    o.ready_backups[0].requested_at = Some(requested);
    assert!(backup_is_fresh(&d, &o));
}

#[test]
fn backup_before_change_does_not_hold_the_replacement_of_a_failed_member() {
    let mut d = desired(3);
    d.backup_before_change = true;
    let o = ObservedEnsemble::healthy(3)
        .down(3, t0() - SignedDuration::from_mins(6))
        .build();
    assert_eq!(
        plan(&d, &o, t0()).decision,
        act(Step::FenceMember { member: id(3) })
    );
}

#[test]
fn a_claimed_step_that_has_not_taken_effect_is_taken_again_when_still_right() {
    let mut o = ObservedEnsemble::healthy(3)
        .with_joiner(4, true, SignedDuration::from_secs(30))
        .build();
    o.in_flight = Some(Claim {
        step: Step::add_voter(id(4)),
        started_at: t0(),
    });
    let p = plan(&desired(5), &o, t0());
    assert_eq!(p.decision, act(Step::add_voter(id(4))));
}

#[test]
fn a_half_done_restart_is_carried_on() {
    let mut d = desired(3);
    d.spec_hash = "h2".into();
    let mut o = ObservedEnsemble::healthy(3).with_leader(1).build();
    // The operator deleted member 2's Pod and crashed before creating the new one.
    let m = o.members.get_mut(&id(2)).unwrap();
    m.pod = None;
    m.zk = Default::default();
    o.in_flight = Some(Claim {
        step: Step::RestartMember { member: id(2) },
        started_at: t0(),
    });
    let p = plan(&d, &o, t0());
    assert_eq!(p.decision, act(Step::RestartMember { member: id(2) }));
    assert_eq!(p.rule, Rule::ClaimedStepIsResumed);
}

#[test]
fn a_claimed_step_that_took_effect_is_confirmed_not_repeated() {
    let mut o = ObservedEnsemble::healthy(4).build();
    o.in_flight = Some(Claim {
        step: Step::add_voter(id(4)),
        started_at: t0(),
    });
    let p = plan(&desired(5), &o, t0());
    assert_eq!(
        p.decision,
        act(Step::CreateMember {
            member: id(5),
            seed: false
        })
    );
}

#[test]
fn a_claimed_add_of_a_joiner_that_died_is_not_resumed() {
    let mut o = ObservedEnsemble::healthy(3)
        .with_joiner(4, false, SignedDuration::from_secs(30))
        .build();
    o.in_flight = Some(Claim {
        step: Step::add_voter(id(4)),
        started_at: t0(),
    });
    let p = plan(&desired(5), &o, t0());
    assert_eq!(
        p.decision,
        Decision::Wait {
            reason: WaitReason::JoinerCatchingUp { member: id(4) }
        }
    );
}

#[test]
fn never_takes_a_step_while_a_voter_is_lagging() {
    let o = ObservedEnsemble::healthy(3).lagging(3).build();
    let p = plan(&desired(5), &o, t0());
    assert!(matches!(p.decision, Decision::Wait { .. }), "{p:?}");
}

#[test]
fn converged_when_the_ensemble_matches() {
    let p = plan(&desired(3), &ObservedEnsemble::healthy(3).build(), t0());
    assert_eq!(p.decision, Decision::Converged);
}

#[test]
fn a_deleted_pod_of_a_voter_is_recreated_with_its_volume() {
    let mut o = ObservedEnsemble::healthy(3).build();
    let m = o.members.get_mut(&id(3)).unwrap();
    m.pod = None;
    m.zk = Default::default();
    m.down_since = Some(t0());
    let p = plan(&desired(3), &o, t0());
    assert_eq!(p.decision, act(Step::RestartMember { member: id(3) }));
}

/// Member `n` of `o` still serves, but its volume is gone (its PVC deleted, say).
fn volume_lost(o: &mut Observed, n: u32) {
    o.members.get_mut(&id(n)).unwrap().volume = false;
}

/// Two voters left mid-replacement, one of them serving on a deleted volume, and a synced
/// joiner of a scale-up: ZooKeeper has its quorum (both voters serve), so this is no quorum
/// loss. The joiner becomes a voter first; the volume-less voter then leaves by reconfig.
#[test]
fn a_voter_serving_without_its_volume_keeps_the_quorum_and_a_synced_joiner_is_added_first() {
    let mut o = ObservedEnsemble::healthy(2)
        .with_joiner(3, true, SignedDuration::from_mins(1))
        .build();
    volume_lost(&mut o, 1);
    let p = plan(&desired(5), &o, t0());
    assert_eq!(
        p.decision,
        Decision::Act {
            step: Step::AddVoter {
                members: MemberSet::one(id(3))
            }
        },
        "{p:?}"
    );
    assert_eq!(p.rule, Rule::VolumeLostVoterIsReplacedWhileServing);

    // Once the joiner votes, the volume-less voter is removed while it still serves.
    let mut o = ObservedEnsemble::healthy(3).build();
    volume_lost(&mut o, 1);
    let p = plan(&desired(5), &o, t0());
    assert_eq!(
        p.decision,
        Decision::Act {
            step: Step::remove_voter(id(1))
        },
        "{p:?}"
    );
}

/// Without a joiner, a voter serving on a lost volume leaves by reconfig at once (never fenced
/// first), and only while the rest keeps a healthy majority; otherwise the planner waits.
#[test]
fn a_voter_serving_without_its_volume_is_removed_by_reconfig_not_fenced() {
    let mut o = ObservedEnsemble::healthy(3).build();
    volume_lost(&mut o, 2);
    let p = plan(&desired(3), &o, t0());
    assert_eq!(
        p.decision,
        Decision::Act {
            step: Step::remove_voter(id(2))
        },
        "{p:?}"
    );
    // Another voter down as well: removing 2 would leave {1, 3} with one healthy member.
    let mut o = ObservedEnsemble::healthy(3)
        .down(3, t0() - SignedDuration::from_secs(5))
        .build();
    volume_lost(&mut o, 2);
    let p = plan(&desired(3), &o, t0());
    assert!(
        !matches!(p.decision, Decision::Act { .. }),
        "nothing is safe while 3 is down: {p:?}"
    );
    assert!(
        !matches!(
            p.decision,
            Decision::Blocked {
                reason: BlockReason::QuorumLost { .. }
            }
        ),
        "1 and 2 serve: no quorum loss: {p:?}"
    );
}

/// Found by the fault campaign (seed 2026, round 6): a scale-up's joiner was still syncing
/// when a voter's PVC was deleted, and the voter was removed at once, so two members were in
/// transition (the removed voter still serving outside the configuration, and the joiner).
/// The joiner is waited for while it syncs; one that cannot vote first is taken out before the
/// volume-less voter leaves.
#[test]
fn a_voter_serving_without_its_volume_leaves_only_when_no_joiner_is_in_transition() {
    let mut o = ObservedEnsemble::healthy(3)
        .with_joiner(4, false, SignedDuration::from_secs(5))
        .build();
    volume_lost(&mut o, 1);
    let p = plan(&desired(5), &o, t0());
    assert_eq!(
        p.decision,
        Decision::Wait {
            reason: WaitReason::JoinerCatchingUp { member: id(4) }
        },
        "{p:?}"
    );
    // A synced joiner of a 1->3 step waits for its partner, so it cannot vote first: it is
    // taken out, then the voter leaves.
    let mut o = ObservedEnsemble::healthy(1)
        .with_joiner(2, true, SignedDuration::from_mins(1))
        .build();
    volume_lost(&mut o, 1);
    let p = plan(&desired(3), &o, t0());
    assert_ne!(
        p.decision,
        Decision::Act {
            step: Step::remove_voter(id(1))
        },
        "a lone voter is never removed: {p:?}"
    );
    let mut o = ObservedEnsemble::healthy(3)
        .with_joiner(4, true, SignedDuration::from_mins(1))
        .build();
    volume_lost(&mut o, 1);
    let mut d = desired(5);
    d.backup_before_change = true;
    let p = plan(&d, &o, t0());
    assert_eq!(
        p.decision,
        Decision::Act {
            step: Step::DeleteMember { member: id(4) }
        },
        "no fresh backup, so the joiner cannot vote first: {p:?}"
    );
    assert_eq!(p.rule, Rule::VolumeLostVoterIsReplacedWhileServing);
}

/// A fence claimed earlier is not carried on when deleting the member's Pod would leave the
/// current configuration without a serving majority to commit its removal (two voters left).
#[test]
fn a_claimed_fence_is_not_resumed_when_the_rest_could_not_commit_the_removal() {
    let mut o = ObservedEnsemble::healthy(2).build();
    volume_lost(&mut o, 1);
    o.in_flight = Some(Claim {
        step: Step::FenceMember { member: id(1) },
        started_at: t0() - SignedDuration::from_secs(3),
    });
    let p = plan(&desired(3), &o, t0());
    assert_ne!(p.rule, Rule::ClaimedStepIsResumed, "{p:?}");
    assert_eq!(
        p.decision,
        Decision::Act {
            step: Step::remove_voter(id(1))
        },
        "{p:?}"
    );
}

fn replacing(replicas: usize, ids: &[u32]) -> crate::planner::Desired {
    let mut d = desired(replicas);
    d.replace = ids.iter().map(|i| id(*i)).collect();
    d
}

/// `spec.replaceMembers`: a healthy member is replaced by a fresh one that votes before the
/// listed one leaves (three voters, four for a while, three again); never fewer than three.
#[test]
fn a_listed_member_is_replaced_by_a_fresh_voter_added_before_it_leaves() {
    let d = replacing(3, &[2]);
    let o = ObservedEnsemble::healthy(3).build();
    let p = plan(&d, &o, t0());
    assert_eq!(
        p.decision,
        act(Step::CreateMember {
            member: id(4),
            seed: false
        })
    );
    let o = ObservedEnsemble::healthy(3)
        .with_joiner(4, false, SignedDuration::from_secs(30))
        .build();
    assert!(
        matches!(
            plan(&d, &o, t0()).decision,
            Decision::Wait {
                reason: WaitReason::JoinerCatchingUp { .. }
            }
        ),
        "the joiner syncs first"
    );
    let o = ObservedEnsemble::healthy(3)
        .with_joiner(4, true, SignedDuration::from_secs(30))
        .build();
    assert_eq!(plan(&d, &o, t0()).decision, act(Step::add_voter(id(4))));
    // Four voters: the listed one leaves, not the newest follower a scale-down would pick.
    let o = ObservedEnsemble::healthy(4).build();
    let p = plan(&d, &o, t0());
    assert_eq!(p.decision, act(Step::remove_voter(id(2))));
    assert_eq!(p.rule, Rule::ListedMemberLeavesOnceItsSuccessorVotes);
    // Removed from the configuration: its Pod and volume go, and the ensemble has converged.
    let mut o = o;
    o.config.as_mut().unwrap().voters.remove(&id(2));
    o.members.get_mut(&id(2)).unwrap().was_voter = true;
    assert_eq!(
        plan(&d, &o, t0()).decision,
        act(Step::DeleteMember { member: id(2) })
    );
    o.members.remove(&id(2));
    assert_eq!(plan(&d, &o, t0()).decision, Decision::Converged);
}

/// Two listed members are replaced one after the other (never five voters), and ids that are
/// no longer members are ignored, so the list may keep them.
#[test]
fn listed_members_are_replaced_one_at_a_time_and_gone_ids_are_ignored() {
    let d = replacing(3, &[1, 2, 17]);
    // Member 4 already replaced member 1's vote: the listed 1 leaves before a second joins.
    let o = ObservedEnsemble::healthy(4).build();
    assert_eq!(plan(&d, &o, t0()).decision, act(Step::remove_voter(id(1))));
    let mut o = ObservedEnsemble::healthy(4).build();
    o.members.remove(&id(1));
    o.config.as_mut().unwrap().voters.remove(&id(1));
    o.recorded_voters.remove(&id(1));
    o.next_server_id = id(5);
    assert_eq!(
        plan(&d, &o, t0()).decision,
        act(Step::CreateMember {
            member: id(5),
            seed: false
        })
    );
    // Only ids that are not voters listed: nothing to do.
    let o = ObservedEnsemble::healthy(3).build();
    assert_eq!(
        plan(&replacing(3, &[7, 17]), &o, t0()).decision,
        Decision::Converged
    );
    // While a voter is down, the failure rules come first: no fresh member is started.
    let o = ObservedEnsemble::healthy(3)
        .down(3, t0() - SignedDuration::from_secs(10))
        .build();
    assert!(
        !matches!(
            plan(&replacing(3, &[2]), &o, t0()).decision,
            Decision::Act {
                step: Step::CreateMember { .. }
            }
        ),
        "{:?}",
        plan(&replacing(3, &[2]), &o, t0())
    );
}

/// A reconfig that committed just before the loss is not recorded yet: the member it added
/// holds the newest writes and is a candidate like any member with a volume (found by the
/// property tests: one voter growing to two, then the old voter's disk wiped).
#[test]
fn quorum_lost_considers_members_the_recorded_voters_do_not_list_yet() {
    let mut o = ObservedEnsemble::healthy(1)
        .with_joiner(2, true, SignedDuration::from_secs(30))
        .down(1, t0() - SignedDuration::from_mins(10))
        .without_live_config()
        .build();
    o.recorded_voters = [id(1)].into();
    let m2 = o.members.get_mut(&id(2)).unwrap();
    m2.zk.serving = false;
    m2.zk.synced = false;
    o.members.get_mut(&id(1)).unwrap().volume_zxid = Some(0);
    assert!(
        matches!(
            plan(&desired(1), &o, t0()).decision,
            Decision::Blocked {
                reason: BlockReason::QuorumLost { survivor: None, .. }
            }
        ),
        "member 2's volume is not read yet"
    );
    o.members.get_mut(&id(2)).unwrap().volume_zxid = Some(0x1_0000_0003);
    assert_eq!(
        plan(&desired(1), &o, t0()).decision,
        Decision::Blocked {
            reason: BlockReason::QuorumLost {
                healthy: 0,
                voters: 1,
                survivor: Some(id(2)),
                zxid: Some(0x1_0000_0003)
            }
        }
    );
}

/// Campaign seed 2028, round 25: a voter added by a reconfig that committed just before the
/// quorum was lost is not in the recorded voters yet; its Pod was deleted. It comes back like a
/// recorded voter would (its volume holds its data), so the two others can form a quorum with
/// it; a member recorded as a voter that left never does (I4).
#[test]
fn quorum_lost_restarts_a_voter_not_recorded_yet_whose_pod_is_gone() {
    let mut o = ObservedEnsemble::healthy(3)
        .down(1, t0() - SignedDuration::from_mins(1))
        .down(2, t0() - SignedDuration::from_mins(1))
        .without_live_config()
        .build();
    for n in [1, 2] {
        let m = o.members.get_mut(&id(n)).unwrap();
        m.pod.as_mut().unwrap().running = true;
        m.pod.as_mut().unwrap().created_at = t0() - SignedDuration::from_mins(30);
    }
    o.recorded_voters = [id(1), id(2)].into();
    let m3 = o.members.get_mut(&id(3)).unwrap();
    m3.pod = None;
    m3.was_voter = false;
    m3.zk = Default::default();
    assert_eq!(
        plan(&desired(3), &o, t0()).decision,
        act(Step::RestartMember { member: id(3) })
    );
    // Recorded as a voter that left: it stays gone.
    o.members.get_mut(&id(3)).unwrap().was_voter = true;
    assert!(
        !matches!(
            plan(&desired(3), &o, t0()).decision,
            Decision::Act {
                step: Step::RestartMember { .. }
            }
        ),
        "{:?}",
        plan(&desired(3), &o, t0())
    );
}
