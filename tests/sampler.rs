//! Unit tier: the end-to-end membership sampler's checks (tests/common/sampler.rs) on
//! hand-built samples, so that each check is shown to catch what it claims to.

#[allow(dead_code)]
#[path = "common/sampler.rs"]
mod sampler;

use std::collections::{BTreeMap, BTreeSet};

use sampler::{
    MemberView, Sampler, disjoint_quorums_possible, reconfig_chain_violations, reconfigs_in_dump,
};

fn set(ids: &[u32]) -> BTreeSet<u32> {
    ids.iter().copied().collect()
}

/// A member serving with configuration `config` (leader when `leader`).
fn serving(uid: &str, config: &[u32], leader: bool) -> MemberView {
    MemberView {
        uid: uid.into(),
        serving: true,
        leader,
        config: Some(set(config)),
        spec_hash: Some("a".into()),
        ..Default::default()
    }
}

fn running(uid: &str) -> MemberView {
    MemberView {
        uid: uid.into(),
        spec_hash: Some("a".into()),
        ..Default::default()
    }
}

fn sample(members: Vec<(u32, MemberView)>) -> BTreeMap<u32, MemberView> {
    members.into_iter().collect()
}

fn three(config: &[u32]) -> Vec<(u32, MemberView)> {
    vec![
        (1, serving("u1", config, true)),
        (2, serving("u2", config, false)),
        (3, serving("u3", config, false)),
    ]
}

/// [`three`] with configuration `config`, and member 4 as `four`.
fn three_and_four(config: &[u32], four: MemberView) -> BTreeMap<u32, MemberView> {
    let mut members = three(config);
    members.push((4, four));
    sample(members)
}

#[test]
fn split_brain_is_two_configurations_with_disjoint_quorums() {
    assert!(!disjoint_quorums_possible(
        &set(&[1, 2, 3]),
        &set(&[1, 2, 3, 4])
    ));
    assert!(!disjoint_quorums_possible(&set(&[1, 2, 3]), &set(&[1, 2])));
    assert!(disjoint_quorums_possible(
        &set(&[1, 2, 3]),
        &set(&[3, 4, 5])
    ));
    assert!(disjoint_quorums_possible(&set(&[1]), &set(&[2, 3, 4])));
    // ZooKeeper's reconfig protocol, not overlap, keeps the single 1 <-> 3 step safe.
    assert!(disjoint_quorums_possible(&set(&[1]), &set(&[1, 2, 3])));
    assert!(disjoint_quorums_possible(
        &set(&[1, 2, 3, 4, 5]),
        &set(&[1, 2, 6, 7, 8])
    ));
}

#[test]
fn a_scale_up_done_right_passes() {
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    s.observe(three_and_four(&[1, 2, 3], running("u4")));
    s.observe(three_and_four(&[1, 2, 3], serving("u4", &[1, 2, 3], false)));
    s.observe(three_and_four(
        &[1, 2, 3, 4],
        serving("u4", &[1, 2, 3, 4], false),
    ));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.added, set(&[4]));
    assert_eq!(s.max_voters, 4);
}

#[test]
fn a_voter_added_before_it_was_seen_synced_is_a_violation() {
    let mut s = Sampler::default();
    s.observe(three_and_four(&[1, 2, 3], running("u4")));
    s.observe(three_and_four(
        &[1, 2, 3, 4],
        serving("u4", &[1, 2, 3, 4], false),
    ));
    assert!(
        s.violations.iter().any(|v| v.contains("without serving")),
        "{:?}",
        s.violations
    );
}

/// Whether a joiner is judged added without being synced: the sample before the add saw Pod
/// `before_uid` starting; between the samples the watcher saw Pod "u4" as `watched` (serving,
/// leader epoch) in order; the sample after sees member 4 a voter, as `after`.
fn added_unsynced(before_uid: &str, watched: &[(bool, u32)], after: MemberView) -> bool {
    let mut s = Sampler::default();
    s.observe(three_and_four(&[1, 2, 3], running(before_uid)));
    for (serving, epoch) in watched {
        s.joiner_seen(4, "u4", *serving, Some(*epoch));
    }
    s.observe(three_and_four(&[1, 2, 3, 4], after));
    s.violations.iter().any(|v| v.contains("without serving"))
}

#[test]
fn a_joiner_the_watcher_saw_synced_between_two_samples_is_no_violation() {
    let voter = |uid: &str| serving(uid, &[1, 2, 3, 4], false);
    // Between the two samples the watcher saw it serve outside the configuration: synced
    // before it voted.
    assert!(!added_unsynced("u4", &[(true, 5)], voter("u4")));
    // What the watcher saw last counts: synced, then not serving again under the same leader.
    assert!(added_unsynced("u4", &[(true, 5), (false, 5)], voter("u4")));
    // Synced, then not serving under a newer leader (an election), then a voter that serves:
    // it re-synced with the new leader faster than the watcher polls, so no violation.
    assert!(!added_unsynced("u4", &[(true, 5), (false, 6)], voter("u4")));
    // The same, but the new voter does not serve: nothing shows it re-synced.
    assert!(added_unsynced(
        "u4",
        &[(true, 5), (false, 6)],
        running("u4")
    ));
    // Never seen synced at all, only not serving under two leaders.
    assert!(added_unsynced("u4", &[(false, 5), (false, 6)], voter("u4")));
    // An earlier Pod of the same id that synced says nothing of the new one.
    assert!(added_unsynced("u4b", &[(true, 5)], voter("u4b")));
}

#[test]
fn two_voters_changed_at_once_is_a_violation_except_one_to_three() {
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    s.observe(sample(vec![(1, serving("u1", &[1], true))]));
    assert!(
        s.violations.is_empty(),
        "3 -> 1 is the documented single reconfig: {:?}",
        s.violations
    );

    let mut s = Sampler::default();
    let mut five = three(&[1, 2, 3, 4, 5]);
    five.push((4, serving("u4", &[1, 2, 3, 4, 5], false)));
    five.push((5, serving("u5", &[1, 2, 3, 4, 5], false)));
    s.observe(sample(five));
    s.observe(sample(three(&[1, 2, 3])));
    // Without transaction logs that show the single steps between, the jump is a violation.
    let verdict = s.judge_jumps(&BTreeMap::new());
    assert!(
        verdict
            .iter()
            .any(|v| v.starts_with("I3: the configuration changed")),
        "{verdict:?}"
    );
    // Logs holding 5 -> 4 -> 3 voters explain it: two reconfigs between two samples.
    let chain = BTreeMap::from([
        (0x100, set(&[1, 2, 3, 4, 5])),
        (0x105, set(&[1, 2, 3, 4])),
        (0x109, set(&[1, 2, 3])),
    ]);
    assert!(s.judge_jumps(&chain).is_empty());
    // Logs that skip the middle step are themselves a violation.
    let skipped = BTreeMap::from([(0x100, set(&[1, 2, 3, 4, 5])), (0x109, set(&[1, 2, 3]))]);
    let verdict = s.judge_jumps(&skipped);
    assert!(
        verdict
            .iter()
            .any(|v| v.contains("reconfig 0x109 changed more than one voter")),
        "{verdict:?}"
    );
    // Logs in the other order do not explain it.
    let backwards = BTreeMap::from([(0x100, set(&[1, 2, 3])), (0x105, set(&[1, 2, 3, 4]))]);
    assert!(!s.judge_jumps(&backwards).is_empty());
    // Logs without the configuration the samples saw last were not read: a violation, not a pass.
    let unread = BTreeMap::from([(0x100, set(&[1, 2, 3, 4, 5])), (0x105, set(&[1, 2, 3, 4]))]);
    let verdict = s.judge_jumps(&unread);
    assert!(
        verdict
            .iter()
            .any(|v| v.contains("hold no reconfig to {1, 2, 3}")),
        "{verdict:?}"
    );
}

/// Two reconfigs as ZooKeeper's `TxnLogToolkit` prints them, around other transactions.
const DUMP: &str = "\
ZooKeeper Transactional Log File with dbid 0 txnlog format version 2
12/5/26, 4:14:24 PM UTC session 0x100033e2a060011 cxid 0x0 zxid 0x100000035 createSession 10000
12/5/26, 4:14:24 PM UTC session 0x100033e2a060011 cxid 0x4 zxid 0x100000036 reconfig /zookeeper/config,server.1=m-1.x:2888:3888:participant;m-1.x:2181
server.2=m-2.x:2888:3888:participant;m-2.x:2181
server.3=m-3.x:2888:3888:participant;m-3.x:2181
version=100000036,-1
12/5/26, 4:14:25 PM UTC session 0x100033e2a060012 cxid 0x2 zxid 0x100000040 create '/w/1,#61,v{s{31,s{'world,'anyone}}},F,1
12/5/26, 4:15:01 PM UTC session 0x100033e2a060013 cxid 0x4 zxid 0x2000000a1 reconfig /zookeeper/config,server.1=m-1.x:2888:3888:participant;m-1.x:2181
server.3=m-3.x:2888:3888:participant;m-3.x:2181
server.4=m-4.x:2888:3888:observer;m-4.x:2181
version=2000000a1,-1
EOF reached after 5 txns.
";

#[test]
fn reconfigs_are_read_from_the_toolkits_dump_with_participants_only() {
    let found = reconfigs_in_dump(DUMP);
    assert_eq!(
        found,
        BTreeMap::from([(0x100000036, set(&[1, 2, 3])), (0x2000000a1, set(&[1, 3])),])
    );
    assert!(reconfig_chain_violations(&found).is_empty());
    assert!(reconfigs_in_dump("EOF reached after 0 txns.\n").is_empty());
}

#[test]
fn a_pod_deleted_while_voting_and_then_removed_is_a_violation() {
    let mut s = Sampler::default();
    let mut five = three(&[1, 2, 3, 4]);
    five.push((4, serving("u4", &[1, 2, 3, 4], false)));
    s.observe(sample(five.clone()));
    // Member 4's Pod is deleted while it is still a serving voter...
    five[3].1.deleting = true;
    s.observe(sample(five));
    // ...and only then removed from the configuration.
    s.observe(sample(three(&[1, 2, 3])));
    assert!(
        s.violations
            .iter()
            .any(|v| v.contains("deleted while it still served")),
        "{:?}",
        s.violations
    );
}

#[test]
fn a_removal_before_the_pod_is_deleted_passes() {
    let mut s = Sampler::default();
    s.observe(three_and_four(
        &[1, 2, 3, 4],
        serving("u4", &[1, 2, 3, 4], false),
    ));
    s.observe(three_and_four(&[1, 2, 3], running("u4")));
    let mut deleting = three(&[1, 2, 3]);
    deleting.push((
        4,
        MemberView {
            deleting: true,
            ..running("u4")
        },
    ));
    s.observe(sample(deleting));
    s.observe(sample(three(&[1, 2, 3])));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.removed, set(&[4]));
}

#[test]
fn a_removed_id_coming_back_is_a_violation() {
    let mut s = Sampler::default();
    s.observe(three_and_four(
        &[1, 2, 3, 4],
        serving("u4", &[1, 2, 3, 4], false),
    ));
    s.observe(sample(three(&[1, 2, 3])));
    s.observe(three_and_four(&[1, 2, 3], running("u4b")));
    assert!(
        s.violations.iter().any(|v| v.starts_with("I4")),
        "{:?}",
        s.violations
    );
}

#[test]
fn restarting_the_leader_while_a_follower_runs_the_old_spec_is_a_violation() {
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    // Leader 1 is restarted first, onto spec "b", while 2 and 3 still run "a".
    let mut next = three(&[1, 2, 3]);
    next[0].1 = MemberView {
        spec_hash: Some("b".into()),
        ..running("u1b")
    };
    s.observe(sample(next));
    assert!(
        s.violations.iter().any(|v| v.starts_with("I6")),
        "{:?}",
        s.violations
    );
    assert_eq!(s.restarts.len(), 1);
    assert!(s.restarts[0].was_leader);
}

#[test]
fn followers_first_and_the_leader_last_passes() {
    let mut s = Sampler::default();
    let spec = |m: MemberView, h: &str| MemberView {
        spec_hash: Some(h.into()),
        ..m
    };
    s.observe(sample(three(&[1, 2, 3])));
    let c = [1, 2, 3];
    s.observe(sample(vec![
        (1, serving("u1", &c, true)),
        (2, spec(running("u2b"), "b")),
        (3, serving("u3", &c, false)),
    ]));
    s.observe(sample(vec![
        (1, serving("u1", &c, true)),
        (2, spec(serving("u2b", &c, false), "b")),
        (3, serving("u3", &c, false)),
    ]));
    s.observe(sample(vec![
        (1, serving("u1", &c, true)),
        (2, spec(serving("u2b", &c, false), "b")),
        (3, spec(running("u3b"), "b")),
    ]));
    s.observe(sample(vec![
        (1, serving("u1", &c, true)),
        (2, spec(serving("u2b", &c, false), "b")),
        (3, spec(serving("u3b", &c, false), "b")),
    ]));
    s.observe(sample(vec![
        (1, spec(running("u1b"), "b")),
        (2, spec(serving("u2b", &c, true), "b")),
        (3, spec(serving("u3b", &c, false), "b")),
    ]));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(
        s.restarts
            .iter()
            .map(|r| (r.id, r.was_leader))
            .collect::<Vec<_>>(),
        vec![(2, false), (3, false), (1, true)]
    );
    assert_eq!(s.max_in_transition, 1);
}

#[test]
fn two_leaders_each_with_a_quorum_of_its_own_configuration_is_a_violation() {
    let mut s = Sampler::default();
    s.observe(sample(vec![
        (1, serving("u1", &[1, 2, 3], true)),
        (2, serving("u2", &[1, 2, 3], false)),
        (4, serving("u4", &[3, 4, 5], true)),
        (5, serving("u5", &[3, 4, 5], false)),
    ]));
    assert!(
        s.violations.iter().any(|v| v.contains("split brain")),
        "{:?}",
        s.violations
    );
}

#[test]
fn a_follower_that_has_not_applied_a_committed_removal_yet_is_no_split_brain() {
    let mut s = Sampler::default();
    s.observe(sample(vec![
        (1, serving("u1", &[1], true)),
        (2, serving("u2", &[1, 2, 3], false)),
        (3, serving("u3", &[1, 2, 3], false)),
    ]));
    assert!(
        s.violations.iter().all(|v| !v.contains("split brain")),
        "{:?}",
        s.violations
    );
}

#[test]
fn an_election_is_not_a_transition_but_two_members_down_under_a_leader_are() {
    let mut s = Sampler::default();
    // The leader restarts: no member serves until a new one is elected.
    s.observe(sample(vec![
        (1, running("u1b")),
        (2, running("u2")),
        (3, running("u3")),
    ]));
    assert_eq!(s.max_in_transition, 0);
    s.observe(sample(vec![
        (1, running("u1b")),
        (2, serving("u2", &[1, 2, 3], true)),
        (3, running("u3")),
    ]));
    assert_eq!(s.max_in_transition, 2);
}

/// A member whose AdminServer does not answer in time (a busy JVM).
/// Campaign seed 2027, round 27: a leader cut off (or silent, kept at its last known state)
/// still says it leads with the configuration it had, while the new leader has committed a
/// removal. The newer leader (the higher zxid, a newer epoch) holds the configuration: no
/// removed id "comes back".
#[test]
fn a_stale_leader_does_not_bring_back_a_removed_voter() {
    let at = |member: MemberView, zxid: u64| MemberView {
        zxid: Some(zxid),
        ..member
    };
    let mut s = Sampler::default();
    s.observe(sample(vec![
        (1, at(serving("u1", &[1, 2, 3], true), 0x1_0000_0010)),
        (2, at(serving("u2", &[1, 2, 3], false), 0x1_0000_0010)),
        (3, at(serving("u3", &[1, 2, 3], false), 0x1_0000_0010)),
    ]));
    // 1 is cut off and silent; 2 leads a new epoch and removes it.
    s.observe(sample(vec![
        (1, unanswered("u1")),
        (2, at(serving("u2", &[2, 3], true), 0x2_0000_0002)),
        (3, at(serving("u3", &[2, 3], false), 0x2_0000_0002)),
    ]));
    // 1 answers again, still sure it leads {1, 2, 3}.
    s.observe(sample(vec![
        (1, at(serving("u1", &[1, 2, 3], true), 0x1_0000_0010)),
        (2, at(serving("u2", &[2, 3], true), 0x2_0000_0003)),
        (3, at(serving("u3", &[2, 3], false), 0x2_0000_0003)),
    ]));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.configs, vec![set(&[1, 2, 3]), set(&[2, 3])]);
    assert_eq!(s.removed, set(&[1]));
}

/// Campaign seed 2030, round 5: a follower cut off (silent, kept at its last known state) last
/// answered before its leader committed the removal of 4; then the leader lost its quorum, and
/// while no member that answered served, the remembered follower was the only one "serving",
/// with the configuration from before the removal. That is no configuration of this sample, so
/// no removed voter "comes back", and no voter is added unseen.
#[test]
fn a_silent_members_remembered_configuration_does_not_bring_back_a_removed_voter() {
    let at = |member: MemberView, zxid: u64| MemberView {
        zxid: Some(zxid),
        ..member
    };
    let looking = |uid: &str| running(uid);
    let mut s = Sampler::default();
    s.observe(sample(vec![
        (1, at(serving("u1", &[1, 3, 4], false), 0xa_0000_0010)),
        (3, at(serving("u3", &[1, 3, 4], true), 0xa_0000_0010)),
    ]));
    // 1 is cut off; 3 commits the removal of 4 (whose Pod is gone).
    s.observe(sample(vec![
        (1, unanswered("u1")),
        (3, at(serving("u3", &[1, 3], true), 0xa_0000_0020)),
    ]));
    // 3 loses its quorum and looks for a leader; 1 is still silent.
    s.observe(sample(vec![(1, unanswered("u1")), (3, looking("u3"))]));
    s.observe(sample(vec![
        (1, at(serving("u1", &[1, 3], false), 0xb_0000_0001)),
        (3, at(serving("u3", &[1, 3], true), 0xb_0000_0001)),
    ]));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.configs, vec![set(&[1, 3, 4]), set(&[1, 3])]);
    assert_eq!(s.removed, set(&[4]));
}

fn unanswered(uid: &str) -> MemberView {
    MemberView {
        unanswered: true,
        ..running(uid)
    }
}

#[test]
fn a_joiner_that_did_not_answer_keeps_its_last_known_state_and_is_no_violation() {
    let mut s = Sampler::default();
    s.observe(three_and_four(&[1, 2, 3], serving("u4", &[1, 2, 3], false)));
    // Busy at the sample just before the reconfig: still the synced joiner last seen.
    s.observe(three_and_four(&[1, 2, 3], unanswered("u4")));
    s.observe(three_and_four(
        &[1, 2, 3, 4],
        serving("u4", &[1, 2, 3, 4], false),
    ));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(s.added, set(&[4]));

    // A joiner never seen synced stays a violation however it answered.
    let mut s = Sampler::default();
    s.observe(three_and_four(&[1, 2, 3], running("u4")));
    s.observe(three_and_four(&[1, 2, 3], unanswered("u4")));
    s.observe(three_and_four(
        &[1, 2, 3, 4],
        serving("u4", &[1, 2, 3, 4], false),
    ));
    assert!(
        s.violations.iter().any(|v| v.contains("without serving")),
        "{:?}",
        s.violations
    );
}

#[test]
fn a_voter_restarted_after_a_sample_it_did_not_answer_is_still_a_restart() {
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    s.observe(sample(vec![
        (1, serving("u1", &[1, 2, 3], true)),
        (2, unanswered("u2")),
        (3, serving("u3", &[1, 2, 3], false)),
    ]));
    s.observe(sample(vec![
        (1, serving("u1", &[1, 2, 3], true)),
        (2, running("u2b")),
        (3, serving("u3", &[1, 2, 3], false)),
    ]));
    assert_eq!(s.restarts.len(), 1, "{:?}", s.restarts);
    assert_eq!(s.restarts[0].id, 2);
    // A new Pod inherits nothing from the old one's last answer.
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    s.observe(sample(vec![
        (1, serving("u1", &[1, 2, 3], true)),
        (2, unanswered("u2b")),
        (3, serving("u3", &[1, 2, 3], false)),
    ]));
    s.observe(sample(vec![
        (1, serving("u1", &[1, 2, 3], true)),
        (2, unanswered("u2b")),
        (3, serving("u3", &[1, 2, 3], false)),
    ]));
    assert_eq!(s.max_in_transition, 1);
}

#[test]
fn a_member_silent_for_longer_than_a_few_samples_counts_as_not_serving() {
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    let silent = || {
        sample(vec![
            (1, serving("u1", &[1, 2, 3], true)),
            (2, unanswered("u2")),
            (3, serving("u3", &[1, 2, 3], false)),
        ])
    };
    for _ in 0..sampler::SILENT_SAMPLES {
        s.observe(silent());
    }
    assert_eq!(s.max_in_transition, 0, "a busy member keeps its state");
    s.observe(silent());
    assert_eq!(s.max_in_transition, 1, "a paused member is down");
}

/// Two synced joiners waiting together is a violation (I5); two removed members still serving
/// while their Pods terminate are leaving, not joining, and are none.
#[test]
fn two_waiting_joiners_are_a_violation_two_leaving_members_are_not() {
    let five = |config: &[u32]| {
        let mut m = three(config);
        m.push((4, serving("u4", config, false)));
        m.push((5, serving("u5", config, false)));
        sample(m)
    };
    let mut s = Sampler::default();
    s.observe(five(&[1, 2, 3, 4, 5]));
    // 5 removed, then 4, both still serving (their Pods not gone yet).
    s.observe(five(&[1, 2, 3, 4]));
    s.observe(five(&[1, 2, 3]));
    assert!(
        !s.violations.iter().any(|v| v.starts_with("I5")),
        "{:?}",
        s.violations
    );
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    s.observe(five(&[1, 2, 3]));
    assert!(
        s.violations.iter().any(|v| v.starts_with("I5")),
        "{:?}",
        s.violations
    );
}

/// Campaign seed 2028 (rerun), round 4: the operator deleted a fenced voter's volume before the
/// reconfig that removed it committed. A volume may go only once the configuration read after
/// it no longer lists the member; the test's own PVC deletions are excused.
#[test]
fn a_volume_deleted_while_the_configuration_lists_its_member_is_a_violation() {
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    s.observe_volumes(set(&[1, 2, 3]));
    // Member 3 removed first, then its volume deleted: fine.
    s.observe(sample(three(&[1, 2])));
    s.observe_volumes(set(&[1, 2]));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    // Member 2's volume deleted while the configuration still lists it.
    s.observe(sample(three(&[1, 2])));
    s.observe_volumes(set(&[1]));
    assert_eq!(s.violations.len(), 1, "{:?}", s.violations);
    assert!(s.violations[0].contains("member 2"), "{:?}", s.violations);

    // The test deleted it itself.
    let mut s = Sampler::default();
    s.volumes_excused.insert(2);
    s.observe(sample(three(&[1, 2, 3])));
    s.observe_volumes(set(&[1, 2, 3]));
    s.observe(sample(three(&[1, 2, 3])));
    s.observe_volumes(set(&[1, 3]));
    assert!(s.violations.is_empty(), "{:?}", s.violations);

    // No member serves: no configuration to judge by in that sample; the next one that has
    // one still lists member 3, whose volume went meanwhile.
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    s.observe_volumes(set(&[1, 2, 3]));
    s.observe(sample(vec![(1, running("u1")), (2, running("u2"))]));
    s.observe_volumes(set(&[1, 2]));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    s.observe(sample(three(&[1, 2, 3])));
    s.observe_volumes(set(&[1, 2]));
    assert_eq!(s.violations.len(), 1, "{:?}", s.violations);
    assert!(s.violations[0].contains("member 3"), "{:?}", s.violations);
}

/// Campaign seed 2028, round 44: the leader was silent in the sample after a removal and the
/// deletion of the removed member's volume; its remembered configuration still listed the member.
/// The volumes are judged by the configurations members gave in that sample only.
#[test]
fn a_silent_leaders_remembered_configuration_does_not_judge_the_volumes() {
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    s.observe_volumes(set(&[1, 2, 3]));
    // Member 3 removed, then its volume deleted; the leader (1) is silent in the next sample
    // and keeps its last known state, {1, 2, 3}; member 2 answers with {1, 2}.
    let silent = MemberView {
        uid: "u1".into(),
        unanswered: true,
        ..Default::default()
    };
    s.observe(sample(vec![
        (1, silent),
        (2, serving("u2", &[1, 2], false)),
        (3, running("u3")),
    ]));
    s.observe_volumes(set(&[1, 2]));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    // Had member 2 answered with a configuration that still lists 3, it would be one.
    let mut s = Sampler::default();
    s.observe(sample(three(&[1, 2, 3])));
    s.observe_volumes(set(&[1, 2, 3]));
    s.observe(sample(vec![
        (
            1,
            MemberView {
                uid: "u1".into(),
                unanswered: true,
                ..Default::default()
            },
        ),
        (2, serving("u2", &[1, 2, 3], false)),
        (3, running("u3")),
    ]));
    s.observe_volumes(set(&[1, 2]));
    assert_eq!(s.violations.len(), 1, "{:?}", s.violations);
}
