//! The state one stand-in ensemble shares between its members: the committed configuration, who
//! runs, who leads, the zxid, the znode tree and the sessions. Every operation runs under one
//! lock and never awaits; the members' listeners ask this state what to answer.
//!
//! The model: a leader exists while a majority of the committed configuration's voters runs;
//! it is the highest voter running when the election ends (as ZooKeeper's fast leader
//! election picks among servers with the same zxid), kept until it stops or leaves the
//! configuration. Each new
//! leader starts a new epoch (zxid `epoch << 32`), and an initial configuration without a
//! version takes the first leader's zxid as its version, as ZooKeeper does. A running member
//! that is not in the configuration (a joiner, or a removed member) follows the leader without
//! a vote. A member is synced (`following - broadcast`) `sync_delay` after it started or the
//! leader took over, whichever is later; until then it does not serve. An election takes
//! `election` (200 ms) once a quorum runs without a leader, during which nobody serves.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use super::config::Config;
use super::jute::{Stat, err, perm};
use super::tree::{CONFIG_NODE, Identities, Tree, allowed};

/// The ZooKeeper version the stand-in claims, with `-standin` so that a reader can tell.
pub const VERSION: &str = "3.9.5-standin, built on 2026-01-01 00:00 UTC";
/// `tickTime` the stand-in pretends to run with (ZooKeeper's default, and the testbed's).
pub const TICK_MS: i32 = 2000;

/// How a member takes part, at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No leader: the member runs but does not serve (ZooKeeper's `LOOKING`).
    Looking,
    /// Connected to the leader, still synchronising: does not serve yet.
    Syncing {
        observer: bool,
    },
    Leader,
    /// A follower, voting or not.
    Follower,
    Observer,
}

impl Role {
    pub fn serving(self) -> bool {
        matches!(self, Role::Leader | Role::Follower | Role::Observer)
    }

    /// `server_state` as ZooKeeper names it.
    pub fn state_name(self) -> &'static str {
        match self {
            Role::Looking => "looking",
            Role::Syncing { observer: false } | Role::Follower => "follower",
            Role::Syncing { observer: true } | Role::Observer => "observer",
            Role::Leader => "leader",
        }
    }

    /// `peer_state` of `monitor`.
    pub fn peer_state(self) -> &'static str {
        match self {
            Role::Looking => "looking - election",
            Role::Syncing { observer: false } => "following - synchronization",
            Role::Syncing { observer: true } => "observing - synchronization",
            Role::Leader => "leading - broadcast",
            Role::Follower => "following - broadcast",
            Role::Observer => "observing - broadcast",
        }
    }
}

/// A running member.
#[derive(Clone, Debug)]
pub struct Running {
    pub started: Instant,
    /// Its own starting configuration makes it an observer (when it is not in the committed one).
    pub observer: bool,
}

/// A session, shared by the whole ensemble as ZooKeeper's global sessions are.
#[derive(Clone, Debug)]
pub struct Session {
    pub timeout_ms: i32,
    pub password: [u8; 16],
    /// The connection that holds it now.
    pub owner: u64,
    pub connected: bool,
    pub last_seen: Instant,
}

/// The learner counts a leader's `monitor` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Learners {
    pub learners: u64,
    pub synced_followers: u64,
    pub synced_non_voting_followers: u64,
    pub synced_observers: u64,
    pub quorum_size: u64,
}

/// What one member reports about itself.
#[derive(Clone, Debug)]
pub struct View {
    pub role: Role,
    /// `last_processed_zxid`.
    pub zxid: u64,
    pub leader: Option<u64>,
    /// Only on the leader.
    pub learners: Option<Learners>,
    /// Znodes as ZooKeeper counts them (the root twice, as `""` and `/`).
    pub znodes: usize,
    pub data_size: usize,
    pub ephemerals: usize,
    pub sessions: usize,
    pub epoch: u64,
    /// Voters in the committed configuration.
    pub voters: u64,
    /// Since the leader took over.
    pub leading_for: Duration,
    /// Whether it votes in the committed configuration.
    pub voting: bool,
}

/// Options of an ensemble.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub reconfig_enabled: bool,
    pub sync_delay: Duration,
    /// How long an election takes once a quorum of voters runs without a leader; the leader
    /// is the highest voter running when it ends. ZooKeeper waits at least `finalizeWait`
    /// (200 ms) for more votes, so that members started together elect the highest of them.
    pub election: Duration,
}

/// ZooKeeper's `finalizeWait`.
pub const ELECTION: Duration = Duration::from_millis(200);

/// The state behind the lock.
pub struct State {
    pub config: Config,
    pub super_digest: Option<String>,
    pub options: Options,
    epoch: u64,
    counter: u64,
    last_txn: u64,
    leader: Option<u64>,
    elected_at: Instant,
    /// When the election under way began (a quorum runs, no leader yet).
    election_since: Option<Instant>,
    pub running: BTreeMap<u64, Running>,
    pub tree: Tree,
    pub sessions: HashMap<i64, Session>,
    next_session: u64,
}

/// One ensemble: its state, and a generation counter that moves whenever the leader changes or
/// the quorum is lost (every client connection is then dropped, as ZooKeeper's servers do).
pub struct Shared {
    state: Mutex<State>,
    generation: watch::Sender<u64>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Shared {
    pub fn new(config: Config, super_digest: Option<String>, options: Options) -> Shared {
        let tree = Tree::new(&config.to_text(), config.version);
        let next_session = (now_ms() as u64 & 0xFF_FFFF_FFFF) << 16;
        Shared {
            state: Mutex::new(State {
                config,
                super_digest,
                options,
                epoch: 0,
                counter: 0,
                last_txn: 0,
                leader: None,
                elected_at: Instant::now(),
                election_since: None,
                running: BTreeMap::new(),
                tree,
                sessions: HashMap::new(),
                next_session,
            }),
            generation: watch::channel(0).0,
        }
    }

    /// Runs `f` on the state; when it changed the leader, every connection is told.
    pub fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = (state.leader, state.epoch);
        let out = f(&mut state);
        if state.reelect() || (state.leader, state.epoch) != before {
            self.generation.send_modify(|g| *g += 1);
        }
        out
    }

    /// A receiver that changes when the leader changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

impl State {
    /// Elects a leader when there is none and a quorum has run for the election's length,
    /// drops it when the quorum is gone or it stopped or left. Returns whether the leader
    /// changed. Called on every access: the state moves on when someone looks.
    fn reelect(&mut self) -> bool {
        let running_voters: Vec<u64> = self
            .config
            .voters()
            .filter(|id| self.running.contains_key(id))
            .collect();
        let quorum = self.config.is_quorum(running_voters.iter().copied());
        let keep = self
            .leader
            .is_some_and(|l| quorum && running_voters.contains(&l));
        if keep {
            return false;
        }
        let had = self.leader.take().is_some();
        if !quorum {
            self.election_since = None;
            return had;
        }
        let now = Instant::now();
        let since = *self.election_since.get_or_insert(now);
        if now < since + self.options.election {
            return had;
        }
        self.election_since = None;
        // ZooKeeper's fast leader election prefers the highest zxid, then the highest id;
        // every stand-in member has the same zxid.
        if let Some(highest) = running_voters.last() {
            self.epoch += 1;
            self.counter = 0;
            self.leader = Some(*highest);
            self.elected_at = Instant::now();
            if self.config.version == 0 {
                // ZOOKEEPER-1783: an initial configuration takes the zxid of NEWLEADER.
                self.config.version = self.epoch << 32;
                let text = self.config.to_text();
                self.tree.set_config(&text, self.config.version, now_ms());
            }
            return true;
        }
        had
    }

    /// A new transaction's zxid.
    pub fn txn(&mut self) -> i64 {
        self.counter += 1;
        self.last_txn = (self.epoch << 32) | self.counter;
        self.last_txn as i64
    }

    pub fn leader(&self) -> Option<u64> {
        self.leader
    }

    /// The zxid member `id` reports: the leader its epoch start at least, the others the last
    /// transaction they applied.
    pub fn zxid_of(&self, id: u64) -> u64 {
        if self.leader == Some(id) {
            self.last_txn.max(self.epoch << 32)
        } else {
            self.last_txn
        }
    }

    /// What member `id` is now (`None` when it does not run).
    pub fn role(&self, id: u64, now: Instant) -> Option<Role> {
        let running = self.running.get(&id)?;
        let Some(leader) = self.leader else {
            return Some(Role::Looking);
        };
        if leader == id {
            return Some(Role::Leader);
        }
        let observer = match self.config.servers.get(&id) {
            Some(s) => !s.voter,
            None => running.observer,
        };
        let since = running.started.max(self.elected_at);
        if now < since + self.options.sync_delay {
            return Some(Role::Syncing { observer });
        }
        Some(if observer {
            Role::Observer
        } else {
            Role::Follower
        })
    }

    /// Whether member `id` serves clients now.
    pub fn serves(&self, id: u64) -> bool {
        self.role(id, Instant::now()).is_some_and(Role::serving)
    }

    /// What member `id` reports.
    pub fn view(&self, id: u64) -> Option<View> {
        let now = Instant::now();
        let role = self.role(id, now)?;
        let learners = (role == Role::Leader).then(|| {
            let mut l = Learners {
                quorum_size: self.config.voters().count() as u64,
                ..Learners::default()
            };
            for other in self.running.keys().filter(|o| **o != id) {
                let Some(r) = self.role(*other, now) else {
                    continue;
                };
                l.learners += 1;
                match r {
                    Role::Follower => {
                        l.synced_followers += 1;
                        if !self.config.servers.get(other).is_some_and(|s| s.voter) {
                            l.synced_non_voting_followers += 1;
                        }
                    }
                    Role::Observer => l.synced_observers += 1,
                    _ => {}
                }
            }
            l
        });
        Some(View {
            role,
            zxid: self.zxid_of(id),
            leader: self.leader,
            learners,
            znodes: self.tree.count() + 1,
            data_size: self.tree.approximate_size(),
            ephemerals: self
                .sessions
                .keys()
                .map(|s| self.tree.ephemerals(*s).len())
                .sum(),
            sessions: self.sessions.len(),
            epoch: self.epoch,
            voters: self.config.voters().count() as u64,
            leading_for: now.duration_since(self.elected_at),
            voting: self.config.servers.get(&id).is_some_and(|s| s.voter),
        })
    }

    /// Opens a session through member `id` (a transaction). `timeout_ms` is negotiated into
    /// ZooKeeper's default bounds (2 and 20 ticks).
    pub fn create_session(&mut self, id: u64, timeout_ms: i32, owner: u64) -> (i64, i32, [u8; 16]) {
        self.expire_sessions();
        self.next_session += 1;
        let session = ((id << 56) | (self.next_session & 0x00FF_FFFF_FFFF_FFFF)) as i64;
        let timeout_ms = timeout_ms.clamp(2 * TICK_MS, 20 * TICK_MS);
        let password = password_for(session, self.next_session);
        self.txn();
        self.sessions.insert(
            session,
            Session {
                timeout_ms,
                password,
                owner,
                connected: true,
                last_seen: Instant::now(),
            },
        );
        (session, timeout_ms, password)
    }

    /// Re-attaches a session to a new connection; `None` when it expired or the password is
    /// wrong.
    pub fn reattach(&mut self, session: i64, password: &[u8], owner: u64) -> Option<i32> {
        self.expire_sessions();
        let s = self.sessions.get_mut(&session)?;
        if s.password[..] != *password {
            return None;
        }
        s.owner = owner;
        s.connected = true;
        s.last_seen = Instant::now();
        Some(s.timeout_ms)
    }

    /// Whether connection `owner` still holds `session`.
    pub fn owns(&self, session: i64, owner: u64) -> bool {
        self.sessions
            .get(&session)
            .is_some_and(|s| s.owner == owner)
    }

    /// The connection `owner` of `session` went away.
    pub fn detach(&mut self, session: i64, owner: u64) {
        if let Some(s) = self.sessions.get_mut(&session)
            && s.owner == owner
        {
            s.connected = false;
            s.last_seen = Instant::now();
        }
    }

    /// Closes a session (a transaction), deleting its ephemeral nodes.
    pub fn close_session(&mut self, session: i64) -> i64 {
        let zxid = self.txn();
        self.sessions.remove(&session);
        for path in self.tree.ephemerals(session) {
            self.tree.remove_unchecked(&path, zxid);
        }
        zxid
    }

    /// Closes every session whose connection has been gone longer than its timeout. Only while
    /// a leader runs: ZooKeeper expires sessions on the leader.
    fn expire_sessions(&mut self) {
        if self.leader.is_none() {
            return;
        }
        let now = Instant::now();
        let expired: Vec<i64> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.connected
                    && now.duration_since(s.last_seen) > Duration::from_millis(s.timeout_ms as u64)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.close_session(id);
        }
    }

    /// The learners the leader counts as synced followers (for `isQuorumSynced`), and itself.
    fn synced_for_quorum(&self) -> Vec<u64> {
        let now = Instant::now();
        self.running
            .keys()
            .copied()
            .filter(|id| matches!(self.role(*id, now), Some(Role::Leader | Role::Follower)))
            .collect()
    }

    /// ZooKeeper's reconfig (`PrepRequestProcessor`), in its order of checks: disabled,
    /// version, arguments, at least one voter, a synced quorum of the new configuration, then
    /// write permission on `/zookeeper/config`. Returns the new configuration text and the
    /// node's stat.
    /// `zxid` is the request's own (every write request takes one, failed or not).
    pub fn reconfig(
        &mut self,
        zxid: i64,
        ids: &Identities,
        joining: Option<&str>,
        leaving: Option<&str>,
        new_members: Option<&str>,
        cur_config_id: i64,
    ) -> Result<(String, Stat), i32> {
        if !self.options.reconfig_enabled {
            return Err(err::RECONFIG_DISABLED);
        }
        if cur_config_id != -1 && cur_config_id as u64 != self.config.version {
            return Err(err::BAD_VERSION);
        }
        let split = |s: Option<&str>| -> Vec<String> {
            s.map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
        };
        let mut next = match new_members {
            Some(members) => {
                Config::parse(&members.replace(',', "\n")).map_err(|_| err::BAD_ARGUMENTS)?
            }
            None => {
                let joining = split(joining);
                let leaving = split(leaving);
                let j: Vec<&str> = joining.iter().map(String::as_str).collect();
                let l: Vec<&str> = leaving.iter().map(String::as_str).collect();
                self.config
                    .incremental(&j, &l)
                    .map_err(|_| err::BAD_ARGUMENTS)?
            }
        };
        if next.voters().count() < 1 {
            return Err(err::BAD_ARGUMENTS);
        }
        if !next.is_quorum(self.synced_for_quorum()) {
            return Err(err::NEW_CONFIG_NO_QUORUM);
        }
        let acl = &self
            .tree
            .get(CONFIG_NODE)
            .map(|n| n.acl.clone())
            .unwrap_or_default();
        if !allowed(acl, ids, perm::WRITE) {
            return Err(err::NO_AUTH);
        }
        next.version = zxid as u64;
        let text = next.to_text();
        self.config = next;
        self.tree.set_config(&text, zxid as u64, now_ms());
        let stat = self
            .tree
            .get(CONFIG_NODE)
            .map(|n| n.stat)
            .unwrap_or_default();
        Ok((text, stat))
    }
}

/// A session password: 16 bytes derived from the session id and a counter (not secret: the
/// stand-in only has to tell a wrong password from the right one).
fn password_for(session: i64, salt: u64) -> [u8; 16] {
    use sha1::Digest as _;
    let hash = sha1::Sha1::digest(format!("{session}:{salt}:{:?}", Instant::now()).as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> State {
        let config = Config::parse(
            "server.1=127.1.0.1:2888:3888:participant;127.1.0.1:2181\n\
             server.2=127.1.0.2:2888:3888:participant;127.1.0.2:2181\n\
             server.3=127.1.0.3:2888:3888:participant;127.1.0.3:2181",
        )
        .unwrap();
        let shared = Shared::new(
            config,
            None,
            Options {
                reconfig_enabled: true,
                sync_delay: Duration::ZERO,
                election: Duration::ZERO,
            },
        );
        shared.state.into_inner().unwrap()
    }

    fn start(s: &mut State, id: u64) {
        s.running.insert(
            id,
            Running {
                started: Instant::now(),
                observer: false,
            },
        );
        s.reelect();
    }

    const SUPER: &[(String, String)] = &[];

    fn su() -> Vec<(String, String)> {
        vec![("super".into(), String::new())]
    }

    #[test]
    fn a_quorum_elects_the_highest_running_voter_and_versions_the_initial_config() {
        let mut s = three();
        start(&mut s, 1);
        assert_eq!(s.leader(), None);
        assert_eq!(s.role(1, Instant::now()), Some(Role::Looking));
        start(&mut s, 2);
        assert_eq!(s.leader(), Some(2));
        assert_eq!(s.config.version, 0x1_0000_0000);
        start(&mut s, 3);
        assert_eq!(s.leader(), Some(2), "a leader is kept while it runs");
        assert_eq!(s.zxid_of(2), 0x1_0000_0000);
        assert_eq!(s.zxid_of(1), 0);
        s.running.remove(&2);
        s.reelect();
        assert_eq!(s.leader(), Some(3));
        assert_eq!(s.zxid_of(3), 0x2_0000_0000);
        s.running.remove(&1);
        s.reelect();
        assert_eq!(s.leader(), None);
    }

    #[test]
    fn reconfig_needs_a_synced_quorum_before_write_permission() {
        let mut s = three();
        for id in 1..=3 {
            start(&mut s, id);
        }
        let four = "server.4=127.1.0.4:2888:3888:participant;127.1.0.4:2181";
        let five_to_seven: Vec<String> = (5..=7)
            .map(|i| format!("server.{i}=127.1.0.{i}:2888:3888:participant;127.1.0.{i}:2181"))
            .collect();
        let many = format!("{four},{}", five_to_seven.join(","));
        assert_eq!(
            s.reconfig(1, SUPER, Some(&many), None, None, -1),
            Err(err::NEW_CONFIG_NO_QUORUM),
            "checked before the ACL"
        );
        assert_eq!(
            s.reconfig(1, SUPER, Some(four), None, None, -1).map(|_| ()),
            Err(err::NO_AUTH)
        );
        assert_eq!(
            s.reconfig(2, &su(), Some(four), None, None, 5).map(|_| ()),
            Err(err::BAD_VERSION)
        );
        assert_eq!(
            s.reconfig(2, &su(), None, Some("1,2,3"), None, -1)
                .map(|_| ()),
            Err(err::BAD_ARGUMENTS)
        );
        let version = s.config.version as i64;
        let zxid = s.txn();
        let (text, stat) = s
            .reconfig(zxid, &su(), Some(four), None, None, version)
            .unwrap();
        assert_eq!(stat.mzxid as u64, s.config.version);
        assert!(
            text.ends_with(&format!("version={:x}", stat.mzxid)),
            "{text}"
        );
        assert_eq!(s.config.voters().collect::<Vec<_>>(), [1, 2, 3, 4]);
    }

    #[test]
    fn a_joiner_follows_without_a_vote_and_the_leader_counts_it() {
        let mut s = three();
        for id in 1..=4 {
            start(&mut s, id);
        }
        assert_eq!(s.role(4, Instant::now()), Some(Role::Follower));
        let l = s.view(2).unwrap().learners.unwrap();
        assert_eq!(
            (
                l.learners,
                l.synced_followers,
                l.synced_non_voting_followers,
                l.quorum_size
            ),
            (3, 3, 1, 3)
        );
        // Removing the leader elects another voter; the old one follows without a vote.
        s.reconfig(2, &su(), None, Some("2"), None, -1).unwrap();
        s.reelect();
        assert_eq!(s.leader(), Some(3));
        assert_eq!(s.role(2, Instant::now()), Some(Role::Follower));
    }

    #[test]
    fn sessions_expire_after_their_timeout_without_a_connection() {
        let mut s = three();
        for id in 1..=3 {
            start(&mut s, id);
        }
        let (id, timeout, password) = s.create_session(1, 100, 7);
        assert_eq!(timeout, 4000, "raised to two ticks");
        assert_eq!(s.reattach(id, &[0; 16], 8), None, "wrong password");
        assert_eq!(s.reattach(id, &password, 8), Some(4000));
        assert!(s.owns(id, 8) && !s.owns(id, 7));
        s.detach(id, 8);
        if let Some(session) = s.sessions.get_mut(&id) {
            session.last_seen -= Duration::from_secs(5);
        }
        assert_eq!(s.reattach(id, &password, 9), None, "expired");
    }
}
