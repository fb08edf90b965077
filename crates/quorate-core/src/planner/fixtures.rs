//! Builders of observed ensembles for tests (unit tier, pure).

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};

use super::model::{Desired, Member, Membership, Observed, PodInfo, Role, ServerId, ZkState};

/// The fixed time tests plan at.
pub fn t0() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().expect("valid timestamp")
}

/// A desired state with `replicas` voters and spec hash `h1`.
pub fn desired(replicas: usize) -> Desired {
    Desired {
        replicas,
        spec_hash: "h1".into(),
        replace_after: SignedDuration::from_mins(5),
        paused: false,
        backup_before_change: false,
        replace: Default::default(),
    }
}

/// A healthy member with spec hash `h1`, created an hour before [`t0`].
pub fn healthy_member(id: u32) -> Member {
    Member {
        id: ServerId(id),
        pod: Some(PodInfo {
            spec_hash: "h1".into(),
            running: true,
            created_at: t0() - SignedDuration::from_hours(1),
            terminating: false,
            data_lost: false,
        }),
        volume: true,
        fenced: false,
        zk: ZkState {
            serving: true,
            role: Role::Follower,
            zxid: Some(0x1_0000_0010),
            synced: true,
        },
        down_since: None,
        healthy_spec_hash: Some("h1".into()),
        was_voter: true,
        volume_zxid: None,
    }
}

/// Fluent builder of [`Observed`].
#[derive(Clone, Debug)]
pub struct ObservedEnsemble(pub Observed);

impl ObservedEnsemble {
    /// `n` healthy voters 1..=n, member 1 leading.
    pub fn healthy(n: u32) -> Self {
        let mut o = Observed {
            next_server_id: ServerId(n + 1),
            ..Default::default()
        };
        for id in 1..=n {
            o.members.insert(ServerId(id), healthy_member(id));
        }
        let voters: BTreeSet<ServerId> = (1..=n).map(ServerId).collect();
        o.config = Some(Membership {
            version: 0x1_0000_0000,
            voters: voters.clone(),
        });
        o.recorded_voters = voters;
        ObservedEnsemble(o).with_leader(1)
    }

    /// Makes `id` the leader.
    pub fn with_leader(mut self, id: u32) -> Self {
        for m in self.0.members.values_mut() {
            if m.zk.serving {
                m.zk.role = if m.id == ServerId(id) {
                    Role::Leader
                } else {
                    Role::Follower
                };
            }
        }
        self
    }

    /// Member `id` is down (process not serving) since `since`.
    pub fn down(mut self, id: u32, since: Timestamp) -> Self {
        if let Some(m) = self.0.members.get_mut(&ServerId(id)) {
            m.zk = ZkState::default();
            if let Some(p) = m.pod.as_mut() {
                p.running = false;
            }
            m.down_since = Some(since);
        }
        self
    }

    /// Member `id`'s Pod reports that its volume lost its data (it refuses to start).
    pub fn data_lost(mut self, id: u32) -> Self {
        if let Some(p) = self
            .0
            .members
            .get_mut(&ServerId(id))
            .and_then(|m| m.pod.as_mut())
        {
            p.data_lost = true;
        }
        self
    }

    /// Member `id`'s Pod was created at `at`.
    pub fn created(mut self, id: u32, at: Timestamp) -> Self {
        if let Some(p) = self
            .0
            .members
            .get_mut(&ServerId(id))
            .and_then(|m| m.pod.as_mut())
        {
            p.created_at = at;
        }
        self
    }

    /// Member `id` serves but is not synced.
    pub fn lagging(mut self, id: u32) -> Self {
        if let Some(m) = self.0.members.get_mut(&ServerId(id)) {
            m.zk.synced = false;
        }
        self
    }

    /// Adds a joiner `id` (not a voter), synced or not, created `age` ago.
    pub fn with_joiner(mut self, id: u32, synced: bool, age: SignedDuration) -> Self {
        let mut m = healthy_member(id);
        m.was_voter = false;
        m.zk.synced = synced;
        m.healthy_spec_hash = None;
        if let Some(p) = m.pod.as_mut() {
            p.created_at = t0() - age;
        }
        self.0.members.insert(ServerId(id), m);
        self.0.next_server_id = ServerId(self.0.next_server_id.0.max(id + 1));
        self
    }

    /// Member `id` runs a Pod with spec hash `hash`.
    pub fn with_hash(mut self, id: u32, hash: &str) -> Self {
        if let Some(p) = self
            .0
            .members
            .get_mut(&ServerId(id))
            .and_then(|m| m.pod.as_mut())
        {
            p.spec_hash = hash.into();
        }
        self
    }

    /// Every member runs spec hash `hash` (and was healthy with it).
    pub fn all_with_hash(mut self, hash: &str) -> Self {
        for m in self.0.members.values_mut() {
            if let Some(p) = m.pod.as_mut() {
                p.spec_hash = hash.into();
            }
            m.healthy_spec_hash = Some(hash.into());
        }
        self
    }

    /// No serving member answered: the live config is unknown.
    pub fn without_live_config(mut self) -> Self {
        self.0.config = None;
        self
    }

    /// The observation.
    pub fn build(self) -> Observed {
        self.0
    }
}
