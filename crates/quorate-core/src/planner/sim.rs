//! An in-memory ensemble that behaves like ZooKeeper under quorate (simulation tier).
//!
//! Members start, sync, lag, pause, crash, flap, come back and lose their Pods or their volumes;
//! reconfig refuses what ZooKeeper refuses and accepts what ZooKeeper accepts (including a dead
//! joiner, which only the planner's rules prevent). The operator can crash after claiming a step
//! or half-way through carrying it out. [`Sim::pass`] runs one controller pass and checks the
//! invariants against the simulated truth, not against the planner's view of it.
//!
//! Data is modelled by zxid, per member, as ZooKeeper's atomic broadcast keeps it:
//! - a leader is elected by a quorum of the configuration's up voters: the one with the highest
//!   zxid (then the highest id); it stays leader while it is up, a voter, and has a quorum;
//! - each tick the leader proposes one write; it is committed (acknowledged to the client,
//!   [`Sim::acked`]) only when a quorum of the voters has it (logged it); the members that took
//!   it move to its zxid, the others keep theirs;
//! - a follower may lag: a slow one stays synced in ZooKeeper's view but takes no proposal, a
//!   paused one (SIGSTOP) takes nothing and answers nothing, a crashed one is down;
//! - a reconfig is a proposal too: it needs a quorum of the old and of the new configuration,
//!   and the members that take it learn the new configuration;
//! - a member that restarts keeps its zxid and configuration; a member whose volume is lost has
//!   zxid 0 and no configuration, and comes back only if something recreates its volume.
//!
//! Each member's own idea of the configuration ([`SimMember::known_config`]) is kept, so a test
//! can judge whether two configurations could each form a quorum.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::model::{
    Claim, Desired, Member, Membership, Observed, PodInfo, Role, ServerId, ZkState,
};
use super::plan::{Plan, matches_spec, plan};
use super::rules::{majority, unhealthy_since};
use super::step::{Decision, Step};

/// How a member's process is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Process {
    /// Not running (crashed, or no Pod).
    Down,
    /// Starting; up at the given time unless its spec is bad.
    Starting(Timestamp),
    /// Running.
    Up,
}

/// One simulated member.
#[derive(Clone, Debug)]
pub struct SimMember {
    /// Server id.
    pub id: ServerId,
    /// Spec hash and creation time of its Pod, when it has one.
    pub pod: Option<(String, Timestamp)>,
    /// Its volume exists.
    pub volume: bool,
    /// Its volume is marked fenced (its Pod deleted for a replacement).
    pub fenced: bool,
    /// A fenced voter restarted to bring a lost quorum back (only the quorum-lost path restarts
    /// a fenced member). If its removal, claimed before the loss, commits once the quorum is
    /// back, it runs outside the configuration until it is deleted: that is ZooKeeper finishing
    /// a change, not a transition the planner started, so it is not counted against I1.
    pub revived: bool,
    /// Its volume was wiped under its PVC: the process refuses to start again (its Pod reports
    /// the data as lost).
    pub wiped: bool,
    /// The process.
    pub process: Process,
    /// Synced with the current leader, in ZooKeeper's view (a slow follower stays synced).
    pub synced: bool,
    /// The zxid of the last transaction on its volume.
    pub zxid: u64,
    /// The configuration on its volume (its dynamic file, or the last one it learned).
    pub known_config: Option<BTreeSet<ServerId>>,
    /// Has been a voter.
    pub was_voter: bool,
    /// Crashed by a fault until this time (`None`: not crashed; far future: for good).
    pub crashed_until: Option<Timestamp>,
    /// Paused (SIGSTOP) until this time: answers nothing, takes no proposal.
    pub paused_until: Option<Timestamp>,
    /// Slow until this time: synced in ZooKeeper's view, but takes no proposal.
    pub slow_until: Option<Timestamp>,
    /// Crash-looping until this time: each time it is up for a tick, it crashes again.
    pub flapping_until: Option<Timestamp>,
    /// Recorded by the controller: unhealthy since (as `rules::unhealthy_since` keeps it).
    pub down_since: Option<Timestamp>,
    /// Recorded by the controller: serving and synced since.
    pub healthy_since: Option<Timestamp>,
    /// Recorded by the controller: hash last healthy with.
    pub healthy_spec_hash: Option<String>,
}

impl SimMember {
    fn new(id: ServerId) -> SimMember {
        SimMember {
            id,
            pod: None,
            volume: true,
            fenced: false,
            revived: false,
            wiped: false,
            process: Process::Down,
            synced: false,
            zxid: 0,
            known_config: None,
            was_voter: false,
            crashed_until: None,
            paused_until: None,
            slow_until: None,
            flapping_until: None,
            down_since: None,
            healthy_since: None,
            healthy_spec_hash: None,
        }
    }

    fn paused(&self, now: Timestamp) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }

    fn slow(&self, now: Timestamp) -> bool {
        self.slow_until.is_some_and(|t| t > now)
    }
}

/// A fault the simulation can inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The member's process crashes and comes back after this many seconds (`None`: never).
    Crash(ServerId, Option<i64>),
    /// Someone deletes the member's Pod.
    DeletePod(ServerId),
    /// The member's process is paused (SIGSTOP) for this many seconds.
    Pause(ServerId, i64),
    /// The member stays synced in ZooKeeper's view but takes no proposal for this many seconds.
    Slow(ServerId, i64),
    /// The member crash-loops for this many seconds: up for a moment, then down again.
    Flap(ServerId, i64),
    /// The member's volume is lost: its data is gone and its process crashes for good.
    LoseVolume(ServerId),
    /// The member's disk is wiped under its PVC (which stays): its data is gone, its process
    /// crashes, and every start finds no data and refuses to serve.
    WipeDisk(ServerId),
    /// The operator crashes right after its next claim, before carrying the step out.
    OperatorCrashAfterClaim,
    /// The operator crashes half-way through its next step.
    OperatorCrashMidStep,
}

/// A violated invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invariant {invariant} violated at {at} by {what}: {detail}")]
pub struct Violation {
    /// I1..I7 or a named property.
    pub invariant: &'static str,
    /// Simulated time.
    pub at: Timestamp,
    /// The decision that broke it.
    pub what: String,
    /// Details.
    pub detail: String,
}

/// The planner the simulation runs: [`plan`], or a variant a test wants to judge.
pub type Planner = fn(&Desired, &Observed, Timestamp) -> Plan;

/// The simulated ensemble and the operator's status record.
#[derive(Clone, Debug)]
pub struct Sim {
    /// Simulated time.
    pub now: Timestamp,
    /// Members by id.
    pub members: BTreeMap<ServerId, SimMember>,
    /// The committed configuration.
    pub config: BTreeSet<ServerId>,
    /// Its version (the zxid that committed it).
    pub config_version: u64,
    /// The leader, when a quorum has elected one.
    pub leader: Option<ServerId>,
    /// The current epoch (one more at each election).
    pub epoch: u64,
    /// The zxid of the newest committed (acknowledged) transaction; every acknowledged write
    /// has a zxid at most this.
    pub acked: u64,
    /// Status: next server id.
    pub next_server_id: ServerId,
    /// Status: the claimed step.
    pub in_flight: Option<Claim>,
    /// Status: voters last seen.
    pub recorded_voters: BTreeSet<ServerId>,
    /// Spec hashes whose Pods never become healthy.
    pub bad_hashes: BTreeSet<String>,
    /// Every id ever created.
    pub created: Vec<ServerId>,
    /// Seconds a process takes to start.
    pub start_secs: i64,
    /// Pending operator crash.
    pub operator_fault: Option<Fault>,
    /// Steps carried out, in order.
    pub log: Vec<Step>,
    /// Time between passes.
    pub tick: SignedDuration,
    /// `replaceAfter`, for the controller's unhealthy clock.
    pub replace_after: SignedDuration,
}

impl Sim {
    /// An empty namespace: no member yet.
    pub fn new(start: Timestamp) -> Sim {
        Sim {
            now: start,
            members: BTreeMap::new(),
            config: BTreeSet::new(),
            config_version: 0,
            leader: None,
            epoch: 0,
            acked: 0,
            next_server_id: ServerId(1),
            in_flight: None,
            recorded_voters: BTreeSet::new(),
            bad_hashes: BTreeSet::new(),
            created: Vec::new(),
            start_secs: 20,
            operator_fault: None,
            log: Vec::new(),
            tick: SignedDuration::from_secs(10),
            replace_after: SignedDuration::from_secs(60),
        }
    }

    /// The process runs, is not paused, and has its volume.
    fn up(&self, id: ServerId) -> bool {
        self.members.get(&id).is_some_and(|m| {
            m.pod.is_some() && m.process == Process::Up && m.volume && !m.paused(self.now)
        })
    }

    /// Takes proposals from the leader: up, synced and not slow.
    fn takes_proposals(&self, id: ServerId) -> bool {
        self.up(id)
            && self
                .members
                .get(&id)
                .is_some_and(|m| m.synced && !m.slow(self.now))
    }

    /// A quorum has elected a leader.
    pub fn has_quorum(&self) -> bool {
        self.leader.is_some()
    }

    /// The leader.
    pub fn leader(&self) -> Option<ServerId> {
        self.leader
    }

    /// Serving and synced on its own volume, in the simulated truth.
    pub fn healthy(&self, id: ServerId) -> bool {
        self.has_quorum() && self.up(id) && self.members[&id].synced
    }

    /// Keeps or elects a leader: the leader stays while it is up, a voter, and a quorum of the
    /// voters is up; otherwise the up voters elect the one with the highest zxid, if they are a
    /// quorum. Members that lose their leader must sync again.
    fn settle(&mut self) {
        let up_voters: Vec<ServerId> = self
            .config
            .iter()
            .copied()
            .filter(|id| self.up(*id))
            .collect();
        let quorum = !self.config.is_empty() && up_voters.len() >= majority(self.config.len());
        let keeps = self
            .leader
            .is_some_and(|l| quorum && self.config.contains(&l) && self.up(l));
        if keeps {
            return;
        }
        let elected = if quorum {
            up_voters
                .iter()
                .copied()
                .max_by_key(|id| (self.members[id].zxid, *id))
        } else {
            None
        };
        if elected.is_some() {
            self.epoch += 1;
        }
        self.leader = elected;
        for m in self.members.values_mut() {
            m.synced = Some(m.id) == elected;
        }
    }

    /// Members that are up and not synced sync with the leader: they take its zxid (a slow one
    /// syncs in ZooKeeper's view but keeps lagging) and its configuration.
    fn sync_followers(&mut self) {
        let Some(leader) = self.leader else {
            return;
        };
        let zxid = self.members[&leader].zxid;
        let config = self.config.clone();
        let now = self.now;
        let ids: Vec<ServerId> = self.members.keys().copied().collect();
        for id in ids {
            if !self.up(id) {
                continue;
            }
            let m = self.members.get_mut(&id).expect("member exists");
            if !m.synced {
                m.synced = true;
            }
            if !m.slow(now) {
                m.zxid = zxid;
                m.known_config = Some(config.clone());
            }
        }
    }

    /// The leader proposes a transaction that changes the configuration to `next` (a write when
    /// it is the current one). It commits when a quorum of the current and of the next
    /// configuration takes it; the members that take it have it.
    fn propose(&mut self, next: &BTreeSet<ServerId>) -> bool {
        let Some(leader) = self.leader else {
            return false;
        };
        if !self.takes_proposals(leader) || next.is_empty() {
            return false;
        }
        let takers: BTreeSet<ServerId> = self
            .members
            .keys()
            .copied()
            .filter(|id| self.takes_proposals(*id))
            .collect();
        let enough = |config: &BTreeSet<ServerId>| {
            config.iter().filter(|id| takers.contains(id)).count() >= majority(config.len())
        };
        if !enough(&self.config) || !enough(next) {
            return false;
        }
        let current = self.members[&leader].zxid;
        let zxid = if current >> 32 < self.epoch {
            (self.epoch << 32) | 1
        } else {
            current + 1
        };
        for id in &takers {
            let m = self.members.get_mut(id).expect("member exists");
            m.zxid = zxid;
            m.known_config = Some(next.clone());
        }
        self.acked = zxid;
        if *next != self.config {
            self.config = next.clone();
            self.config_version = zxid;
            for id in next {
                if let Some(m) = self.members.get_mut(id) {
                    m.was_voter = true;
                }
            }
            self.settle();
        }
        true
    }

    /// Injects a fault.
    pub fn inject(&mut self, fault: Fault) {
        let now = self.now;
        let secs = |s: i64| now + SignedDuration::from_secs(s);
        match fault {
            Fault::Crash(id, secs_down) => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.process = Process::Down;
                    m.synced = false;
                    m.crashed_until = Some(match secs_down {
                        Some(s) => secs(s),
                        None => Timestamp::MAX,
                    });
                }
            }
            Fault::DeletePod(id) => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.pod = None;
                    m.process = Process::Down;
                    m.synced = false;
                }
            }
            Fault::Pause(id, s) => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.paused_until = Some(secs(s));
                    m.synced = false;
                }
            }
            Fault::Slow(id, s) => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.slow_until = Some(secs(s));
                }
            }
            Fault::Flap(id, s) => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.flapping_until = Some(secs(s));
                }
            }
            Fault::LoseVolume(id) | Fault::WipeDisk(id) => {
                if let Some(m) = self.members.get_mut(&id) {
                    // The PVC goes with a lost volume; a wiped disk keeps it.
                    if matches!(fault, Fault::LoseVolume(_)) {
                        m.volume = false;
                    } else {
                        m.wiped = true;
                    }
                    m.zxid = 0;
                    m.known_config = None;
                    m.process = Process::Down;
                    m.synced = false;
                    m.crashed_until = Some(Timestamp::MAX);
                }
            }
            f => self.operator_fault = Some(f),
        }
        self.settle();
    }

    /// Ends every transient fault now (permanent crashes and lost volumes stay).
    pub fn heal(&mut self) {
        let now = self.now;
        for m in self.members.values_mut() {
            if m.crashed_until.is_some_and(|t| t != Timestamp::MAX) {
                m.crashed_until = Some(now);
            }
            for until in [
                &mut m.paused_until,
                &mut m.slow_until,
                &mut m.flapping_until,
            ] {
                if until.is_some_and(|t| t > now) {
                    *until = Some(now);
                }
            }
        }
        self.operator_fault = None;
    }

    /// Advances time by one tick: processes start, crash (when flapping), come back and resume,
    /// a leader is kept or elected, followers sync, and the leader proposes a write.
    pub fn advance(&mut self) {
        self.now += self.tick;
        let now = self.now;
        let start_at = now + SignedDuration::from_secs(self.start_secs);
        let bad = self.bad_hashes.clone();
        for m in self.members.values_mut() {
            if m.flapping_until.is_some_and(|t| t > now) && m.process == Process::Up {
                m.process = Process::Starting(start_at);
                m.synced = false;
            }
            if m.paused_until.is_some_and(|t| t <= now) {
                // Resumed: it must sync again.
                m.paused_until = None;
                m.synced = false;
            }
            if let Some(until) = m.crashed_until {
                if until <= now {
                    m.crashed_until = None;
                    if m.pod.is_some() {
                        m.process = Process::Starting(now);
                    }
                } else {
                    continue;
                }
            }
            if let (Process::Starting(at), Some((hash, _))) = (&m.process, &m.pod)
                && *at <= now
                && !bad.contains(hash)
            {
                m.process = Process::Up;
            }
        }
        if self.config.is_empty() {
            // A seed forms its own configuration once it is up.
            if let Some(seed) = self
                .members
                .values()
                .find(|m| m.pod.is_some() && m.process == Process::Up && m.volume)
                .map(|m| m.id)
            {
                self.config = BTreeSet::from([seed]);
                self.config_version = 1;
                if let Some(m) = self.members.get_mut(&seed) {
                    m.known_config = Some(self.config.clone());
                    m.was_voter = true;
                }
            }
        }
        self.settle();
        self.sync_followers();
        let config = self.config.clone();
        self.propose(&config);
    }

    /// What the observer would see, and the controller's status bookkeeping (the unhealthy
    /// clock as the controller keeps it, through flaps).
    pub fn observe(&mut self) -> Observed {
        let live = self.has_quorum();
        let leader = self.leader();
        let healthy: BTreeSet<ServerId> = self
            .members
            .keys()
            .copied()
            .filter(|id| self.healthy(*id))
            .collect();
        let now = self.now;
        let paused: BTreeSet<ServerId> = self
            .members
            .values()
            .filter(|m| m.paused(now))
            .map(|m| m.id)
            .collect();
        let replace_after = self.replace_after;
        let mut members = BTreeMap::new();
        for m in self.members.values_mut() {
            let is_healthy = healthy.contains(&m.id);
            if is_healthy {
                m.healthy_since.get_or_insert(now);
                m.healthy_spec_hash = m.pod.as_ref().map(|p| p.0.clone());
            } else {
                m.healthy_since = None;
            }
            m.down_since = unhealthy_since(
                m.down_since,
                is_healthy,
                m.healthy_since,
                now,
                replace_after,
            );
            let answers = m.pod.is_some() && m.process == Process::Up && !paused.contains(&m.id);
            let serving = live && answers && m.volume;
            if m.pod.is_none() && !m.volume {
                // Neither a Pod nor a volume: the observer sees no member at all.
                continue;
            }
            members.insert(
                m.id,
                Member {
                    id: m.id,
                    pod: m.pod.as_ref().map(|(hash, created)| PodInfo {
                        spec_hash: hash.clone(),
                        running: m.process != Process::Down,
                        created_at: *created,
                        terminating: false,
                        data_lost: m.wiped,
                    }),
                    volume: m.volume,
                    fenced: m.fenced,
                    zk: ZkState {
                        serving,
                        role: if !serving {
                            Role::Unknown
                        } else if Some(m.id) == leader {
                            Role::Leader
                        } else {
                            Role::Follower
                        },
                        // ZooKeeper answers its zxid while it serves; a running member out
                        // of its quorum may answer one that is not its data (at worst 0).
                        zxid: if serving {
                            Some(m.zxid)
                        } else if m.process != Process::Down {
                            Some(0)
                        } else {
                            None
                        },
                        synced: serving && m.synced,
                    },
                    down_since: m.down_since,
                    healthy_spec_hash: m.healthy_spec_hash.clone(),
                    was_voter: m.was_voter,
                    // Without a quorum the operator reads each volume's zxid (a probe Pod).
                    volume_zxid: (!live && m.volume).then_some(m.zxid),
                },
            );
        }
        if live {
            self.recorded_voters = self.config.clone();
        }
        Observed {
            members,
            config: live.then(|| Membership {
                version: self.config_version,
                voters: self.config.clone(),
            }),
            recorded_voters: self.recorded_voters.clone(),
            in_flight: self.in_flight.clone(),
            next_server_id: self.next_server_id,
            change_requested_at: None,
            ready_backups: Vec::new(),
        }
    }

    /// One controller pass: observe, plan, check invariants, claim, carry out. Returns the plan.
    pub fn pass(&mut self, desired: &Desired) -> Result<Plan, Violation> {
        self.pass_with(desired, plan, true)
    }

    /// One controller pass with `planner`; with `check`, the invariants are checked against the
    /// simulated truth before each step and after the pass (a test of an independent judge
    /// turns them off to see what the judge alone finds).
    pub fn pass_with(
        &mut self,
        desired: &Desired,
        planner: Planner,
        check: bool,
    ) -> Result<Plan, Violation> {
        self.replace_after = desired.replace_after;
        let observed = self.observe();
        let p = planner(desired, &observed, self.now);
        match &p.decision {
            Decision::Act { step } => {
                if check {
                    self.check_step(desired, step)?;
                }
                if let Step::CreateMember { member, .. } = step {
                    self.next_server_id = ServerId(self.next_server_id.0.max(member.0 + 1));
                }
                self.in_flight = Some(Claim {
                    step: step.clone(),
                    started_at: self.now,
                });
                match self.operator_fault.take() {
                    Some(Fault::OperatorCrashAfterClaim) => {}
                    Some(Fault::OperatorCrashMidStep) => self.execute(desired, step, true),
                    other => {
                        self.operator_fault = other;
                        self.execute(desired, step, false);
                    }
                }
                self.settle();
            }
            Decision::Converged => {
                self.in_flight = None;
                if check && (!matches_spec(desired, &observed) || !self.truth_matches(desired)) {
                    return Err(self.violation(
                        "Converged",
                        &p,
                        "the planner said converged but the ensemble differs from the spec",
                    ));
                }
            }
            _ => self.in_flight = None,
        }
        if check {
            self.check_state()?;
        }
        Ok(p)
    }

    fn truth_matches(&self, desired: &Desired) -> bool {
        self.config.len() == desired.replicas
            && self.config.len() % 2 == 1
            && self
                .members
                .values()
                .filter(|m| m.pod.is_some() || m.volume)
                .count()
                == self.config.len()
            && self.config.iter().all(|id| {
                self.healthy(*id)
                    && self.members[id]
                        .pod
                        .as_ref()
                        .is_some_and(|p| p.0 == desired.spec_hash)
            })
    }

    fn violation(&self, invariant: &'static str, p: &Plan, detail: &str) -> Violation {
        Violation {
            invariant,
            at: self.now,
            what: p.decision.to_string(),
            detail: detail.to_string(),
        }
    }

    fn healthy_in(&self, set: &BTreeSet<ServerId>) -> usize {
        set.iter().filter(|id| self.healthy(**id)).count()
    }

    fn non_voter_pods(&self) -> Vec<ServerId> {
        self.members
            .values()
            .filter(|m| m.pod.is_some() && !self.config.contains(&m.id))
            .map(|m| m.id)
            .collect()
    }

    /// Checks a step against the simulated truth before it runs.
    fn check_step(&self, desired: &Desired, step: &Step) -> Result<(), Violation> {
        let p = Plan {
            decision: Decision::Act { step: step.clone() },
            rule: super::plan::Rule::NothingToDo,
        };
        let id = step.member();
        let voters = self.config.clone();
        let all_healthy = voters.iter().all(|v| self.healthy(*v));
        let others: Vec<ServerId> = self
            .non_voter_pods()
            .into_iter()
            .filter(|n| *n != id)
            .collect();
        let others_in_transition = !others.is_empty();
        match step {
            Step::CreateMember { seed, .. } => {
                let resumed = self.in_flight.as_ref().is_some_and(|c| c.step == *step);
                if self
                    .created
                    .iter()
                    .any(|c| *c > id || (*c == id && !resumed))
                {
                    return Err(self.violation(
                        "I4",
                        &p,
                        "a server id was reused or went backwards",
                    ));
                }
                // The one exception to a single joiner: one voter growing to three starts a
                // second joiner once the first is synced.
                let second_joiner = voters.len() == 1
                    && desired.replicas >= 3
                    && others.len() == 1
                    && self.healthy(others[0])
                    && !self.members[&others[0]].was_voter;
                if !seed && (!all_healthy || (others_in_transition && !second_joiner)) {
                    return Err(self.violation("I1/I2", &p, "a member was created while another was in transition or a voter was unhealthy"));
                }
            }
            Step::AddVoter { members } => {
                if members.iter().any(|j| !self.healthy(j)) {
                    return Err(self.violation(
                        "I3",
                        &p,
                        "a joiner that is not serving and synced was added",
                    ));
                }
                if !all_healthy {
                    return Err(self.violation(
                        "I2",
                        &p,
                        "a voter was added while a voter was unhealthy",
                    ));
                }
                if members.iter().any(|j| {
                    self.members.get(&j).is_some_and(|m| m.was_voter) && !voters.contains(&j)
                }) {
                    return Err(self.violation("I4", &p, "a removed voter was added again"));
                }
                if members.len() > 1 && !(voters.len() == 1 && members.len() == 2) {
                    return Err(self.violation(
                        "I3",
                        &p,
                        "more than one voter added at once other than growing one to three",
                    ));
                }
            }
            Step::RemoveVoter { members } => {
                let mut next = voters.clone();
                for leaving in members.iter() {
                    next.remove(&leaving);
                }
                if members.iter().any(|m| voters.contains(&m))
                    && (next.is_empty() || self.healthy_in(&next) < majority(next.len()))
                {
                    return Err(self.violation(
                        "I5",
                        &p,
                        "the next configuration would have no healthy majority",
                    ));
                }
                if members.len() > 1
                    && (!(voters.len() == 3 && next.len() == 1)
                        || self.leader.is_some_and(|l| members.contains(l)))
                {
                    return Err(self.violation(
                        "I3",
                        &p,
                        "more than one voter removed at once other than the two followers of three shrinking to one",
                    ));
                }
            }
            Step::DeleteMember { .. } => {
                if voters.contains(&id) {
                    return Err(self.violation(
                        "I3",
                        &p,
                        "a voter's Pod and volume were deleted before it left the configuration",
                    ));
                }
            }
            Step::FenceMember { .. } => {
                if self.healthy(id) {
                    return Err(self.violation("I2", &p, "a healthy member was fenced"));
                }
                let mut next = voters.clone();
                next.remove(&id);
                if self.healthy_in(&next) < majority(next.len().max(1)) {
                    return Err(self.violation(
                        "I2",
                        &p,
                        "a member was fenced without a healthy majority of the rest",
                    ));
                }
            }
            Step::RestartMember { .. } => {
                let m = &self.members[&id];
                if !m.volume {
                    return Err(self.violation(
                        "I4",
                        &p,
                        "a member was restarted without its data",
                    ));
                }
                let mut others = voters.clone();
                others.remove(&id);
                let planned = self.healthy(id);
                if voters.len() > 1
                    && self.has_quorum()
                    && self.healthy_in(&others) < majority(voters.len())
                {
                    return Err(self.violation("I6", &p, "a restart would lose the quorum"));
                }
                if planned {
                    if !all_healthy || others_in_transition {
                        return Err(self.violation(
                            "I1/I6",
                            &p,
                            "a planned restart while another member was in transition",
                        ));
                    }
                    let leader_first = self.leader() == Some(id)
                        && others.iter().any(|o| {
                            self.members[o]
                                .pod
                                .as_ref()
                                .is_some_and(|p| p.0 != desired.spec_hash)
                        });
                    if leader_first {
                        return Err(self.violation(
                            "I6",
                            &p,
                            "the leader was restarted before a stale follower",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the state after a pass: at most one member outside the configuration runs, except
    /// around a single voter (the two joiners of a growth to three, or the two members a shrink
    /// from three removed, deleted one at a time).
    fn check_state(&self) -> Result<(), Violation> {
        let strays: Vec<ServerId> = self
            .non_voter_pods()
            .into_iter()
            .filter(|id| !self.members[id].revived)
            .collect();
        let allowed = if self.config.len() == 1 { 2 } else { 1 };
        if strays.len() > allowed {
            return Err(Violation {
                invariant: "I1/I5",
                at: self.now,
                what: "state".into(),
                detail: format!("too many members outside the configuration run: {strays:?}"),
            });
        }
        Ok(())
    }

    /// Carries out a step like the real executor (idempotent), optionally only half of it.
    fn execute(&mut self, desired: &Desired, step: &Step, half: bool) {
        self.log.push(step.clone());
        let now = self.now;
        let start_at = now + SignedDuration::from_secs(self.start_secs);
        let id = step.member();
        match step {
            Step::CreateMember { seed, .. } => {
                if !self.created.contains(&id) {
                    self.created.push(id);
                }
                let first_config = if *seed {
                    BTreeSet::from([id])
                } else {
                    let mut c = self.config.clone();
                    c.insert(id);
                    c
                };
                let m = self.members.entry(id).or_insert_with(|| SimMember::new(id));
                if !m.volume {
                    // Creating a member creates its volume when it is missing: empty.
                    m.volume = true;
                    m.zxid = 0;
                    m.known_config = None;
                }
                if !half && m.pod.is_none() {
                    m.pod = Some((desired.spec_hash.clone(), now));
                    m.process = Process::Starting(start_at);
                    m.crashed_until = None;
                    if m.known_config.is_none() {
                        m.known_config = Some(first_config);
                    }
                }
            }
            Step::AddVoter { members } => {
                let mut next = self.config.clone();
                next.extend(members.iter());
                if next != self.config {
                    self.propose(&next);
                }
            }
            Step::RemoveVoter { members } => {
                let mut next = self.config.clone();
                for leaving in members.iter() {
                    next.remove(&leaving);
                }
                if next != self.config {
                    self.propose(&next);
                }
            }
            Step::DeleteMember { .. } => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.pod = None;
                    m.process = Process::Down;
                    m.synced = false;
                    if !half {
                        self.members.remove(&id);
                    }
                }
            }
            Step::FenceMember { .. } => {
                // The volume is marked first, then the Pod is deleted; the data stays.
                if let Some(m) = self.members.get_mut(&id) {
                    m.fenced = true;
                    m.revived = false;
                    if !half {
                        m.pod = None;
                        m.process = Process::Down;
                        m.synced = false;
                    }
                }
            }
            Step::RestartMember { .. } => {
                if let Some(m) = self.members.get_mut(&id) {
                    // A restart lifts a fence (only the quorum-lost path restarts a fenced
                    // voter).
                    m.revived |= m.fenced;
                    m.fenced = false;
                    m.pod = None;
                    m.process = Process::Down;
                    m.synced = false;
                    if !half && m.crashed_until.is_none_or(|t| t <= now) {
                        m.crashed_until = None;
                        m.pod = Some((desired.spec_hash.clone(), now));
                        m.process = Process::Starting(start_at);
                    } else if !half {
                        m.pod = Some((desired.spec_hash.clone(), now));
                    }
                }
            }
        }
    }

    /// Runs passes (advancing time after each) until the planner says Converged, or `max`
    /// passes; returns the last plan.
    pub fn run(&mut self, desired: &Desired, max: usize) -> Result<Plan, Violation> {
        let mut last = self.pass(desired)?;
        for _ in 0..max {
            if last.decision == Decision::Converged {
                return Ok(last);
            }
            self.advance();
            last = self.pass(desired)?;
        }
        Ok(last)
    }
}
