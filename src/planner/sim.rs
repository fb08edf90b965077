//! An in-memory ensemble that behaves like ZooKeeper under quorate (simulation tier).
//!
//! Members start, sync slowly, crash, come back and lose their Pods; reconfig refuses what
//! ZooKeeper refuses and accepts what ZooKeeper accepts (including a dead joiner, which only
//! the planner's rules prevent). The operator can crash after claiming a step or half-way
//! through carrying it out. [`Sim::pass`] runs one controller pass and checks the invariants
//! against the simulated truth, not against the planner's view of it.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::model::{
    Claim, Desired, Member, Membership, Observed, PodInfo, Role, ServerId, ZkState,
};
use super::plan::{Plan, matches_spec, plan};
use super::rules::majority;
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
    /// The process.
    pub process: Process,
    /// Synced with the leader.
    pub synced: bool,
    /// Last zxid it has.
    pub zxid: u64,
    /// Has been a voter.
    pub was_voter: bool,
    /// Crashed by a fault until this time (`None`: not crashed; far future: for good).
    pub crashed_until: Option<Timestamp>,
    /// Recorded by the controller: down since.
    pub down_since: Option<Timestamp>,
    /// Recorded by the controller: hash last healthy with.
    pub healthy_spec_hash: Option<String>,
}

/// A fault the simulation can inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The member's process crashes and comes back after this many seconds (`None`: never).
    Crash(ServerId, Option<i64>),
    /// Someone deletes the member's Pod.
    DeletePod(ServerId),
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

/// The simulated ensemble and the operator's status record.
#[derive(Clone, Debug)]
pub struct Sim {
    /// Simulated time.
    pub now: Timestamp,
    /// Members by id.
    pub members: BTreeMap<ServerId, SimMember>,
    /// The committed configuration.
    pub config: BTreeSet<ServerId>,
    /// Its version.
    pub config_version: u64,
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
    /// Committed zxid.
    pub zxid: u64,
    /// Seconds a process takes to start.
    pub start_secs: i64,
    /// Pending operator crash.
    pub operator_fault: Option<Fault>,
    /// Steps carried out, in order.
    pub log: Vec<Step>,
    /// Time between passes.
    pub tick: SignedDuration,
}

impl Sim {
    /// An empty namespace: no member yet.
    pub fn new(start: Timestamp) -> Sim {
        Sim {
            now: start,
            members: BTreeMap::new(),
            config: BTreeSet::new(),
            config_version: 0,
            next_server_id: ServerId(1),
            in_flight: None,
            recorded_voters: BTreeSet::new(),
            bad_hashes: BTreeSet::new(),
            created: Vec::new(),
            zxid: 0,
            start_secs: 20,
            operator_fault: None,
            log: Vec::new(),
            tick: SignedDuration::from_secs(10),
        }
    }

    fn up(&self, id: ServerId) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| m.pod.is_some() && m.process == Process::Up)
    }

    /// A quorum of the configuration is up.
    pub fn has_quorum(&self) -> bool {
        !self.config.is_empty()
            && self.config.iter().filter(|id| self.up(**id)).count() >= majority(self.config.len())
    }

    /// The leader: the up voter with the highest zxid, then the highest id.
    pub fn leader(&self) -> Option<ServerId> {
        if !self.has_quorum() {
            return None;
        }
        self.config
            .iter()
            .copied()
            .filter(|id| self.up(*id))
            .max_by_key(|id| (self.members[id].zxid, *id))
    }

    /// Serving and synced on its own volume, in the simulated truth.
    pub fn healthy(&self, id: ServerId) -> bool {
        self.has_quorum() && self.up(id) && self.members[&id].synced && self.members[&id].volume
    }

    /// Injects a fault.
    pub fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Crash(id, secs) => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.process = Process::Down;
                    m.synced = false;
                    m.crashed_until = Some(match secs {
                        Some(s) => self.now + SignedDuration::from_secs(s),
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
            f => self.operator_fault = Some(f),
        }
    }

    /// Ends every transient fault now (permanent crashes stay).
    pub fn heal(&mut self) {
        let now = self.now;
        for m in self.members.values_mut() {
            if m.crashed_until.is_some_and(|t| t != Timestamp::MAX) {
                m.crashed_until = Some(now);
            }
        }
        self.operator_fault = None;
    }

    /// Advances time by one tick: processes start, crashed ones come back, joiners sync, the
    /// leader commits a write.
    pub fn advance(&mut self) {
        self.now += self.tick;
        let now = self.now;
        let bad = self.bad_hashes.clone();
        for m in self.members.values_mut() {
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
                .find(|m| m.pod.is_some() && m.process == Process::Up)
            {
                self.config = BTreeSet::from([seed.id]);
                self.config_version += 1;
            }
        }
        if self.has_quorum() {
            self.zxid += 1;
            let zxid = self.zxid;
            let ids: Vec<ServerId> = self.members.keys().copied().collect();
            for id in ids {
                let up = self.up(id);
                let m = self.members.get_mut(&id).expect("member exists");
                if up {
                    m.synced = true;
                    m.zxid = zxid;
                }
            }
        } else {
            for m in self.members.values_mut() {
                m.synced = false;
            }
        }
    }

    /// What the observer would see, and the controller's status bookkeeping.
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
        let mut members = BTreeMap::new();
        for m in self.members.values_mut() {
            let is_healthy = healthy.contains(&m.id);
            if is_healthy {
                m.down_since = None;
                m.healthy_spec_hash = m.pod.as_ref().map(|p| p.0.clone());
            } else if m.down_since.is_none() {
                m.down_since = Some(now);
            }
            let serving = live && m.pod.is_some() && m.process == Process::Up;
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
                    }),
                    volume: m.volume,
                    zk: ZkState {
                        serving,
                        role: if !serving {
                            Role::Unknown
                        } else if Some(m.id) == leader {
                            Role::Leader
                        } else {
                            Role::Follower
                        },
                        zxid: if m.process == Process::Up {
                            Some(m.zxid)
                        } else {
                            None
                        },
                        synced: serving && m.synced,
                    },
                    down_since: m.down_since,
                    healthy_spec_hash: m.healthy_spec_hash.clone(),
                    was_voter: m.was_voter,
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
        let observed = self.observe();
        let p = plan(desired, &observed, self.now);
        match &p.decision {
            Decision::Act { step } => {
                self.check_step(desired, step)?;
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
            }
            Decision::Converged => {
                self.in_flight = None;
                if !matches_spec(desired, &observed) || !self.truth_matches(desired) {
                    return Err(self.violation(
                        "Converged",
                        &p,
                        "the planner said converged but the ensemble differs from the spec",
                    ));
                }
            }
            _ => self.in_flight = None,
        }
        self.check_state()?;
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
        let others_in_transition = self.non_voter_pods().into_iter().any(|n| n != id);
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
                if !seed && (!all_healthy || others_in_transition) {
                    return Err(self.violation("I1/I2", &p, "a member was created while another was in transition or a voter was unhealthy"));
                }
            }
            Step::AddVoter { .. } => {
                if !self.healthy(id) {
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
                if self.members.get(&id).is_some_and(|m| m.was_voter) && !voters.contains(&id) {
                    return Err(self.violation("I4", &p, "a removed voter was added again"));
                }
            }
            Step::RemoveVoter { .. } => {
                let mut next = voters.clone();
                next.remove(&id);
                if voters.contains(&id)
                    && (next.is_empty() || self.healthy_in(&next) < majority(next.len()))
                {
                    return Err(self.violation(
                        "I5",
                        &p,
                        "the next configuration would have no healthy majority",
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

    /// Checks the state after a pass.
    fn check_state(&self) -> Result<(), Violation> {
        let strays = self.non_voter_pods();
        if strays.len() > 1 {
            return Err(Violation {
                invariant: "I1/I5",
                at: self.now,
                what: "state".into(),
                detail: format!("more than one member outside the configuration runs: {strays:?}"),
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
            Step::CreateMember { .. } => {
                if !self.created.contains(&id) {
                    self.created.push(id);
                }
                let m = self.members.entry(id).or_insert_with(|| SimMember {
                    id,
                    pod: None,
                    volume: true,
                    process: Process::Down,
                    synced: false,
                    zxid: 0,
                    was_voter: false,
                    crashed_until: None,
                    down_since: None,
                    healthy_spec_hash: None,
                });
                if !half && m.pod.is_none() {
                    m.pod = Some((desired.spec_hash.clone(), now));
                    m.process = Process::Starting(start_at);
                }
            }
            Step::AddVoter { .. } => {
                let mut next = self.config.clone();
                next.insert(id);
                // ZooKeeper: a quorum of the new configuration must be synced with the leader.
                let synced = next.iter().filter(|v| self.healthy(**v)).count();
                if !self.config.contains(&id) && self.has_quorum() && synced >= majority(next.len())
                {
                    self.config = next;
                    self.config_version += 1;
                    if let Some(m) = self.members.get_mut(&id) {
                        m.was_voter = true;
                    }
                }
            }
            Step::RemoveVoter { .. } => {
                let mut next = self.config.clone();
                next.remove(&id);
                let synced = next.iter().filter(|v| self.healthy(**v)).count();
                if self.config.contains(&id)
                    && !next.is_empty()
                    && self.has_quorum()
                    && synced >= majority(next.len())
                {
                    self.config = next;
                    self.config_version += 1;
                }
            }
            Step::DeleteMember { .. } => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.pod = None;
                    m.process = Process::Down;
                    if !half {
                        self.members.remove(&id);
                    }
                }
            }
            Step::FenceMember { .. } => {
                if let Some(m) = self.members.get_mut(&id) {
                    m.pod = None;
                    m.process = Process::Down;
                    m.synced = false;
                    if !half {
                        m.volume = false;
                    }
                }
            }
            Step::RestartMember { .. } => {
                if let Some(m) = self.members.get_mut(&id) {
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
