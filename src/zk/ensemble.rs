//! Observing a whole ensemble at once, and judging from the members' answers who leads and who is
//! synced (the definition is in the module doc of [`crate::zk`]). [`judge_ensemble`] is pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::admin::{MemberObservation, Mode};
use super::{MemberAddr, MemberProbe};
use crate::planner::{ServerId, ZkState};

/// One observation of every member, with the judgement of leader and synced members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnsembleObservation {
    /// What each member said.
    pub members: BTreeMap<ServerId, MemberObservation>,
    /// The leader, when exactly one is recognised.
    pub leader: Option<ServerId>,
    /// The members judged synced (the leader included).
    pub synced: BTreeSet<ServerId>,
    /// Why members that serve were not judged synced, when that came from the ensemble as a whole
    /// (no leader, the leader's counts disagree, ...).
    pub notes: Vec<String>,
}

impl EnsembleObservation {
    /// Judges a set of member observations.
    pub fn from_members(
        members: impl IntoIterator<Item = MemberObservation>,
    ) -> EnsembleObservation {
        let members: BTreeMap<ServerId, MemberObservation> =
            members.into_iter().map(|m| (m.id, m)).collect();
        let (leader, synced, notes) = judge_ensemble(&members);
        EnsembleObservation {
            members,
            leader,
            synced,
            notes,
        }
    }

    /// Whether member `id` is judged synced.
    pub fn is_synced(&self, id: ServerId) -> bool {
        self.synced.contains(&id)
    }

    /// The planner's view of member `id`, if it was observed.
    pub fn zk_state(&self, id: ServerId) -> Option<ZkState> {
        self.members
            .get(&id)
            .map(|m| m.zk_state(self.is_synced(id)))
    }

    /// The planner's view of every observed member.
    pub fn zk_states(&self) -> BTreeMap<ServerId, ZkState> {
        self.members
            .iter()
            .map(|(id, m)| (*id, m.zk_state(self.is_synced(*id))))
            .collect()
    }

    /// The members that serve.
    pub fn serving(&self) -> BTreeSet<ServerId> {
        self.members
            .values()
            .filter(|m| m.serving)
            .map(|m| m.id)
            .collect()
    }

    /// A one-line summary per member, for logs and error messages.
    pub fn describe(&self, id: ServerId) -> String {
        let Some(m) = self.members.get(&id) else {
            return format!("server.{id} was not observed");
        };
        let mut parts = vec![if m.serving {
            "serving".to_string()
        } else {
            "not serving".to_string()
        }];
        if let Some(mode) = m.mode {
            parts.push(format!("mode {mode:?}"));
        }
        if let Some(p) = &m.peer_state {
            parts.push(format!("peer_state {p:?}"));
        }
        if let Some(l) = m.leader_id {
            parts.push(format!("names leader {l}"));
        }
        parts.push(if self.is_synced(id) {
            "synced".into()
        } else {
            "not synced".into()
        });
        let mut text = format!("server.{id}: {}", parts.join(", "));
        match m.problems.as_slice() {
            [] => {}
            [one] => text.push_str(&format!(" ({one})")),
            [first, rest @ ..] => text.push_str(&format!(" ({first}; and {} more)", rest.len())),
        }
        text
    }
}

/// Who leads and who is synced, from one set of answers (see the module doc of [`crate::zk`]).
/// Returns the leader, the synced members (the leader included) and notes on why serving
/// members were not judged synced as a group.
pub fn judge_ensemble(
    members: &BTreeMap<ServerId, MemberObservation>,
) -> (Option<ServerId>, BTreeSet<ServerId>, Vec<String>) {
    let mut notes = Vec::new();
    let mut synced = BTreeSet::new();
    let claimants: Vec<&MemberObservation> = members
        .values()
        .filter(|m| m.serving && matches!(m.mode, Some(Mode::Leader | Mode::Standalone)))
        .collect();
    let leader = match claimants.as_slice() {
        [] => {
            notes.push("no serving member leads".to_string());
            return (None, synced, notes);
        }
        [one] => one,
        many => {
            // Pick the one most serving members name; a tie means there is no clear leader.
            let mut votes: Vec<(usize, &MemberObservation)> = many
                .iter()
                .map(|c| {
                    (
                        members
                            .values()
                            .filter(|m| m.serving && m.leader_id == Some(c.id))
                            .count(),
                        *c,
                    )
                })
                .collect();
            votes.sort_by_key(|v| std::cmp::Reverse(v.0));
            if votes.len() > 1 && votes[0].0 == votes[1].0 {
                let ids: Vec<String> = many.iter().map(|c| c.id.to_string()).collect();
                notes.push(format!("members {} all claim to lead", ids.join(", ")));
                return (None, synced, notes);
            }
            votes[0].1
        }
    };
    synced.insert(leader.id);
    let followers: BTreeSet<ServerId> = members
        .values()
        .filter(|m| {
            m.id != leader.id
                && m.serving
                && matches!(m.mode, Some(Mode::Follower | Mode::Observer))
                && m.leader_id == Some(leader.id)
                && m.is_broadcasting_learner()
        })
        .map(|m| m.id)
        .collect();
    if leader.mode == Some(Mode::Standalone) {
        if !followers.is_empty() {
            notes.push(format!(
                "server.{} runs standalone and has no learners",
                leader.id
            ));
        }
        return (Some(leader.id), synced, notes);
    }
    match leader.learner_counts {
        None => {
            if !followers.is_empty() {
                notes.push(format!(
                    "the leader server.{} did not report its synced learners ({}); no follower is judged synced",
                    leader.id,
                    leader.problems.join("; ")
                ));
            }
        }
        Some(counts) if (followers.len() as u64) > counts.synced_learners() => {
            notes.push(format!(
                "{} members follow server.{} in broadcast but it counts only {} synced learners; no follower is judged synced",
                followers.len(),
                leader.id,
                counts.synced_learners()
            ));
        }
        Some(_) => synced.extend(followers),
    }
    (Some(leader.id), synced, notes)
}

/// Observes every member concurrently, each within `budget` (a member that takes longer is
/// "not serving"), and judges leader and synced members.
pub async fn observe_ensemble<P: MemberProbe>(
    probe: &P,
    members: &[MemberAddr],
    budget: Duration,
) -> EnsembleObservation {
    let observations = futures::future::join_all(members.iter().map(|m| async move {
        match tokio::time::timeout(budget, probe.observe(m)).await {
            Ok(obs) => obs,
            Err(_) => {
                MemberObservation::unreachable(m.id, format!("no observation within {budget:?}"))
            }
        }
    }))
    .await;
    EnsembleObservation::from_members(observations)
}

/// Members' answers for unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::zk::admin::LearnerCounts;

    pub(crate) fn member(id: u32, mode: Mode, leader: u32, peer_state: &str) -> MemberObservation {
        let mut m = MemberObservation::unreachable(ServerId(id), "");
        m.problems.clear();
        m.serving = true;
        m.mode = Some(mode);
        m.leader_id = Some(ServerId(leader));
        m.peer_state = Some(peer_state.to_string());
        m.zxid = Some(0);
        m
    }

    pub(crate) fn leader(id: u32, synced_followers: u64) -> MemberObservation {
        let mut m = member(id, Mode::Leader, id, "leading - broadcast");
        m.learner_counts = Some(LearnerCounts {
            learners: synced_followers,
            synced_followers,
            ..LearnerCounts::default()
        });
        m
    }

    pub(crate) fn follower(id: u32, leader: u32) -> MemberObservation {
        member(id, Mode::Follower, leader, "following - broadcast")
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use crate::planner::Role;

    #[test]
    fn a_healthy_ensemble_has_one_leader_and_synced_followers() {
        let obs = EnsembleObservation::from_members([follower(1, 3), follower(2, 3), leader(3, 2)]);
        assert_eq!(obs.leader, Some(ServerId(3)));
        assert_eq!(obs.synced, [ServerId(1), ServerId(2), ServerId(3)].into());
        let states = obs.zk_states();
        assert_eq!(states[&ServerId(3)].role, Role::Leader);
        assert!(states.values().all(|s| s.serving && s.synced));
        assert!(obs.notes.is_empty());
    }

    #[test]
    fn a_follower_still_synchronising_is_not_synced() {
        let syncing = member(4, Mode::Follower, 3, "following - synchronization");
        let obs = EnsembleObservation::from_members([
            follower(1, 3),
            follower(2, 3),
            leader(3, 3),
            syncing,
        ]);
        assert!(!obs.is_synced(ServerId(4)));
        assert!(obs.is_synced(ServerId(1)));
        assert!(obs.zk_state(ServerId(4)).unwrap().serving);
    }

    #[test]
    fn a_follower_of_another_leader_is_not_synced() {
        let stale = follower(4, 9);
        let obs = EnsembleObservation::from_members([follower(1, 3), leader(3, 2), stale]);
        assert!(!obs.is_synced(ServerId(4)));
    }

    #[test]
    fn followers_are_not_synced_when_the_leader_counts_fewer() {
        let obs = EnsembleObservation::from_members([follower(1, 3), follower(2, 3), leader(3, 1)]);
        assert_eq!(obs.synced, [ServerId(3)].into());
        assert!(obs.notes[0].contains("counts only 1"), "{:?}", obs.notes);
    }

    #[test]
    fn followers_are_not_synced_without_the_leaders_counts() {
        let mut l = leader(3, 2);
        l.learner_counts = None;
        l.problems.push("monitor: no answer".into());
        let obs = EnsembleObservation::from_members([follower(1, 3), follower(2, 3), l]);
        assert_eq!(obs.leader, Some(ServerId(3)));
        assert_eq!(obs.synced, [ServerId(3)].into());
    }

    #[test]
    fn nobody_is_synced_without_a_leader() {
        let mut lost = follower(3, 3);
        lost.serving = false;
        let obs = EnsembleObservation::from_members([follower(1, 3), follower(2, 3), lost]);
        assert_eq!(obs.leader, None);
        assert!(obs.synced.is_empty());
        assert!(obs.zk_states().values().all(|s| !s.synced));
    }

    #[test]
    fn the_claimant_most_members_follow_leads_and_a_tie_leads_nobody() {
        let obs = EnsembleObservation::from_members([
            leader(1, 2),
            follower(2, 3),
            follower(4, 3),
            leader(3, 2),
        ]);
        assert_eq!(obs.leader, Some(ServerId(3)));
        assert!(!obs.is_synced(ServerId(1)));
        let tie = EnsembleObservation::from_members([leader(1, 0), leader(2, 0)]);
        assert_eq!(tie.leader, None);
    }

    #[test]
    fn a_paused_member_is_neither_serving_nor_synced() {
        let paused = MemberObservation::unreachable(ServerId(2), "srvr: no answer within 1s");
        let obs = EnsembleObservation::from_members([follower(1, 3), paused, leader(3, 2)]);
        let state = obs.zk_state(ServerId(2)).unwrap();
        assert!(!state.serving && !state.synced);
        assert!(obs.is_synced(ServerId(1)));
        assert!(obs.describe(ServerId(2)).contains("not serving"));
    }

    struct Scripted(BTreeMap<ServerId, MemberObservation>);

    impl MemberProbe for Scripted {
        async fn observe(&self, member: &MemberAddr) -> MemberObservation {
            if member.id == ServerId(2) {
                // Hangs: the budget must cut it off.
                std::future::pending::<()>().await;
            }
            self.0
                .get(&member.id)
                .cloned()
                .unwrap_or_else(|| MemberObservation::unreachable(member.id, "unknown"))
        }
    }

    #[tokio::test]
    async fn observe_ensemble_bounds_a_member_that_hangs() {
        let probe = Scripted([(ServerId(1), follower(1, 3)), (ServerId(3), leader(3, 2))].into());
        let addrs: Vec<MemberAddr> = (1..=3)
            .map(|i| MemberAddr::new(ServerId(i), format!("h{i}")))
            .collect();
        let started = std::time::Instant::now();
        let obs = observe_ensemble(&probe, &addrs, Duration::from_millis(100)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(obs.leader, Some(ServerId(3)));
        assert!(!obs.zk_state(ServerId(2)).unwrap().serving);
        assert!(obs.members[&ServerId(2)].problems[0].contains("no observation within"));
    }
}
