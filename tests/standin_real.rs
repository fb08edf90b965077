//! Tier: real ZooKeeper against the stand-in. The testbed's stand-in members
//! (`quorate_testbed::standin`) are to replace most of the ZooKeeper JVMs of the
//! thousand-ensemble benchmark, so what quorate sees of a stand-in ensemble must be what it
//! sees of a real one. The same sequence of quorate's own ZooKeeper calls (`AdminProbe`,
//! `observe_ensemble`, `ZkMembership`: read_config, may_reconfigure, grant_reconfigure,
//! lock_root, check_joiner, add_voter, remove_voter) and of raw client requests runs once
//! against a real ZooKeeper 3.9.5 ensemble of three growing to five and back, then losing its
//! quorum, and once against stand-ins; the observations (roles, leader, synced members, learner
//! counts, configurations, version ordering, ACLs, errors) must be equal, and the AdminServer's
//! JSON of the stand-ins must use only keys (and JSON types) the real servers use, including
//! every key quorate reads.
//!
//! The other test runs 1,000 stand-in ensembles of three in this process and checks that every
//! member answers `ruok` and `srvr`, and what their memory costs.

#[path = "zk_common/mod.rs"]
mod zk_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zk_common::{eventually, summary};

use futures::StreamExt as _;
use quorate::planner::ServerId;
use quorate::zk::{
    AdminProbe, ConfReply, Credentials, EnsembleObservation, MemberAddr, MembershipControl,
    ReconfigOutcome, ServerEntry, Timeouts, ZkMembership, membership, observe_ensemble,
};
use quorate_testbed::standin::{StandInMember, StandIns};
use quorate_testbed::zookeeper::{Ensemble, ZkVersion};
use serde_json::Value;
use zookeeper_client as zkc;

/// One test at a time in this binary: the memory measurement must see only its own members.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Stand-ins of the comparison live on `127.2.250.0/24` (the node agent uses 127.0.0.0/16,
/// real ensembles `127.0.S.0/24`, the scale test `127.1.0.0/16`).
const COMPARISON_SUBNET: u8 = 250;

/// A stand-in ensemble shaped like the testbed's real [`Ensemble`]: member `i` on
/// `127.2.S.i`, standard ports, a super user and an operator user.
struct StandInEnsemble {
    standins: Arc<StandIns>,
    key: String,
    subnet: u8,
    super_password: String,
    operator_password: String,
    members: Mutex<BTreeMap<u32, StandInMember>>,
    known: Mutex<BTreeSet<u32>>,
}

/// The ensemble under test, real or stand-in.
enum Target {
    Real(Box<Ensemble>),
    StandIn(StandInEnsemble),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Real(_) => "real",
            Target::StandIn(_) => "stand-in",
        }
    }

    fn ip(&self, id: u32) -> Ipv4Addr {
        match self {
            Target::Real(e) => e.member_ip(id),
            Target::StandIn(s) => Ipv4Addr::new(127, 2, s.subnet, id as u8),
        }
    }

    fn server_line(&self, id: u32) -> String {
        let ip = self.ip(id);
        format!("server.{id}={ip}:2888:3888:participant;{ip}:2181")
    }

    fn entry(&self, id: u32) -> ServerEntry {
        self.server_line(id).parse().expect("server line")
    }

    fn addr(&self, id: u32) -> MemberAddr {
        MemberAddr::new(ServerId(id), self.ip(id).to_string())
    }

    fn ids(&self) -> Vec<u32> {
        match self {
            Target::Real(e) => e.ids(),
            Target::StandIn(s) => s.known.lock().unwrap().iter().copied().collect(),
        }
    }

    fn connect_string(&self) -> String {
        self.ids()
            .iter()
            .map(|id| format!("{}:2181", self.ip(*id)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn super_user(&self) -> Credentials {
        match self {
            Target::Real(e) => {
                let (u, p) = e.super_auth();
                Credentials::digest(u, p)
            }
            Target::StandIn(s) => Credentials::digest("super", &s.super_password),
        }
    }

    fn operator(&self) -> Credentials {
        match self {
            Target::Real(e) => {
                let (u, p) = e.operator_auth();
                Credentials::digest(u, p)
            }
            Target::StandIn(s) => Credentials::digest("quorate", &s.operator_password),
        }
    }

    fn membership(&self, who: Option<Credentials>) -> ZkMembership {
        ZkMembership::new(self.connect_string(), who)
            .expect("membership client")
            .with_timeouts(Timeouts {
                probe: PROBE_TIMEOUT,
                connect: Duration::from_secs(5),
                operation: Duration::from_secs(30),
                ..Timeouts::default()
            })
    }

    /// Starts `id` with the committed servers plus itself, as the real harness does.
    async fn start_joiner(&self, id: u32) {
        match self {
            Target::Real(e) => e.start_joiner(id).await.expect("joiner starts"),
            Target::StandIn(s) => {
                let leader = observe(self, &self.ids()).await.leader.expect("a leader");
                let conf = probe()
                    .four_letter(&self.addr(leader.0), "conf")
                    .await
                    .expect("conf");
                let membership = ConfReply::parse(&conf).membership.expect("membership");
                let mut lines: Vec<String> =
                    membership.servers.values().map(ServerEntry::line).collect();
                lines.push(self.server_line(id));
                s.start(id, &lines.join("\n")).await;
            }
        }
    }

    async fn stop(&self, id: u32) {
        match self {
            Target::Real(e) => e.stop(id).await.expect("stop"),
            Target::StandIn(s) => {
                let member = s.members.lock().unwrap().remove(&id);
                if let Some(m) = member {
                    m.stop().await;
                }
            }
        }
    }
}

impl StandInEnsemble {
    async fn start(&self, id: u32, dynamic_config: &str) {
        let super_digest = quorate::zk::digest("super", &self.super_password);
        let member = self
            .standins
            .start(
                &self.key,
                id.into(),
                Ipv4Addr::new(127, 2, self.subnet, id as u8),
                2181,
                8080,
                dynamic_config,
                Some(&super_digest),
            )
            .await
            .expect("stand-in starts");
        self.members.lock().unwrap().insert(id, member);
        self.known.lock().unwrap().insert(id);
    }
}

fn probe() -> AdminProbe {
    AdminProbe::new(PROBE_TIMEOUT).expect("HTTP client")
}

async fn observe(t: &Target, ids: &[u32]) -> EnsembleObservation {
    let addrs: Vec<MemberAddr> = ids.iter().map(|id| t.addr(*id)).collect();
    observe_ensemble(&probe(), &addrs, PROBE_TIMEOUT * 2).await
}

/// Waits until `ids` show one leader and every one of them serving, synced, and answering
/// `conf` (the four requests of one observation are concurrent: one may come from before an
/// election ended, the others from after).
async fn all_synced(t: &Target, ids: &[u32]) -> EnsembleObservation {
    eventually(
        &format!("{}: members {ids:?} serving and synced", t.name()),
        Duration::from_secs(30),
        || async {
            let obs = observe(t, ids).await;
            let settled = ids.iter().all(|id| {
                obs.is_synced(ServerId(*id)) && obs.members[&ServerId(*id)].config_version.is_some()
            });
            if obs.leader.is_some() && settled {
                Ok(obs)
            } else {
                Err(summary(&obs))
            }
        },
    )
    .await
}

/// Roles, serving and synced per member, the leader's counts, and whether every member
/// reports the same configuration version.
fn roles(obs: &EnsembleObservation) -> String {
    let members: Vec<String> = obs
        .members
        .values()
        .map(|m| {
            format!(
                "server.{} {:?} serving={} synced={}",
                m.id,
                m.mode,
                m.serving,
                obs.is_synced(m.id)
            )
        })
        .collect();
    let counts = obs
        .leader
        .and_then(|l| obs.members[&l].learner_counts)
        .map(|c| {
            format!(
                "learners {} synced_followers {} non_voting {} observers {} quorum_size {:?}",
                c.learners,
                c.synced_followers,
                c.synced_non_voting_followers,
                c.synced_observers,
                c.quorum_size
            )
        });
    let versions: BTreeSet<Option<u64>> = obs.members.values().map(|m| m.config_version).collect();
    let zk: BTreeSet<Option<&str>> = obs
        .members
        .values()
        .map(|m| m.zookeeper_version.as_deref())
        .collect();
    format!(
        "{}; leader {:?}; {counts:?}; one config version: {}; versions {zk:?}",
        members.join(", "),
        obs.leader,
        versions.len() == 1
    )
}

fn voters(config: &quorate::zk::EnsembleConfig) -> Vec<u32> {
    config.voters().iter().map(|id| id.0).collect()
}

/// The variant of a membership error (its text names addresses, which differ).
fn kind(e: &membership::Error) -> String {
    match e {
        membership::Error::Acl { op, source, .. } => format!("Acl({op}, {source:?})"),
        other => format!("{other:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

fn outcome(o: &Result<ReconfigOutcome, membership::Error>) -> String {
    match o {
        Ok(o) => format!("changed {} voters {:?}", o.changed, voters(&o.config)),
        Err(e) => kind(e),
    }
}

/// A raw client session, as `who`, on the given members.
async fn raw(t: &Target, who: Option<&Credentials>) -> zkc::Client {
    let mut connector = zkc::Client::connector().with_session_timeout(Duration::from_secs(10));
    if let Some(c) = who {
        connector = connector.with_auth(
            "digest",
            format!("{}:{}", c.user(), c.password()).as_bytes(),
        );
    }
    tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(&t.connect_string()),
    )
    .await
    .expect("connect in time")
    .expect("connect")
}

/// An ACL as `scheme:user:perms` (digest hashes replaced by the user name, or `x` when masked).
fn acl_text(acl: &[zkc::Acl]) -> String {
    let entries: Vec<String> = acl
        .iter()
        .map(|a| {
            let id = match a.scheme() {
                "digest" => {
                    let (user, hash) = a.id().split_once(':').unwrap_or((a.id(), ""));
                    if hash == "x" {
                        format!("{user}:x")
                    } else {
                        user.to_string()
                    }
                }
                _ => a.id().to_string(),
            };
            format!("{}:{id}:{}", a.scheme(), a.permission())
        })
        .collect();
    entries.join(",")
}

/// A raw incremental reconfig.
async fn raw_reconfig(
    client: &zkc::Client,
    joining: &[&str],
    leaving: &[&str],
    version: Option<i64>,
) -> Result<(Vec<u8>, zkc::Stat), zkc::Error> {
    let update = zkc::EnsembleUpdate::Incremental {
        joinings: joining.iter().copied(),
        leavings: leaving.iter().copied(),
    };
    client.update_ensemble(update, version).await
}

fn zk_error<T>(r: &Result<T, zkc::Error>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{e:?}"),
    }
}

/// JSON key paths with their types (`server_stats.last_processed_zxid:number`).
fn shape(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    if let Value::Object(map) = value {
        for (k, v) in map {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            let kind = match v {
                Value::Null => "null",
                Value::Bool(_) => "bool",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            };
            out.insert(format!("{path}:{kind}"));
            // Maps keyed by server id are compared as maps, not by their keys.
            if k != "current_config" {
                shape(v, &path, out);
            }
        }
    }
}

/// What an AdminServer command answers: HTTP status and the shape of its JSON (or `not JSON`).
async fn admin_shape(t: &Target, id: u32, command: &str) -> (u16, BTreeSet<String>, Value) {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(PROBE_TIMEOUT)
        .build()
        .expect("HTTP client");
    let response = http
        .get(t.addr(id).admin_url(command))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {command} on server.{id}: {e}", t.name()));
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    let mut keys = BTreeSet::new();
    let value = match serde_json::from_str::<Value>(&body) {
        Ok(v) => {
            shape(&v, "", &mut keys);
            v
        }
        Err(_) => {
            keys.insert("not JSON".to_string());
            Value::Null
        }
    };
    (status, keys, value)
}

/// The AdminServer commands compared, by the role of the member asked.
const COMMANDS: [&str; 9] = [
    "ruok",
    "srvr",
    "stat",
    "leader",
    "monitor",
    "conf",
    "voting_view",
    "is_read_only",
    "zabstate",
];

/// The keys quorate and the member Pods' probes read.
const READ_BY_QUORATE: [(&str, &str); 11] = [
    ("srvr", "server_stats.server_state:string"),
    ("srvr", "server_stats.last_processed_zxid:number"),
    ("srvr", "version:string"),
    ("srvr", "error:null"),
    ("leader", "is_leader:bool"),
    ("leader", "leader_id:number"),
    ("monitor", "peer_state:string"),
    ("monitor", "version:string"),
    ("monitor@leader", "synced_followers:number"),
    ("monitor@leader", "synced_non_voting_followers:number"),
    ("monitor@leader", "quorum_size:number"),
];

/// Everything one run observed: lines compared between real and stand-in, and the
/// AdminServer shapes by `command@role`.
#[derive(Default)]
struct Observed {
    lines: Vec<String>,
    shapes: BTreeMap<String, (u16, BTreeSet<String>)>,
    conf_keys: BTreeSet<String>,
}

impl Observed {
    fn note(&mut self, t: &Target, line: String) {
        eprintln!("[{}] {line}", t.name());
        self.lines.push(line);
    }
}

/// Asks every command of each member (or of `only`), by its role: `leader`, `follower` (while
/// `state` is `serving`), else `state`. With `STANDIN_DUMP_JSON` set, prints each first answer.
async fn record_shapes(
    t: &Target,
    obs: &EnsembleObservation,
    state: &str,
    only: Option<u32>,
    out: &mut Observed,
) {
    for (id, m) in &obs.members {
        if only.is_some_and(|o| o != id.0) {
            continue;
        }
        let role = match m.mode {
            Some(quorate::zk::Mode::Leader) if m.serving => "leader",
            Some(quorate::zk::Mode::Follower) if m.serving && state == "serving" => "follower",
            _ => state,
        };
        for command in COMMANDS {
            let key = format!("{command}@{role}");
            if out.shapes.contains_key(&key) {
                continue;
            }
            let (status, keys, value) = admin_shape(t, id.0, command).await;
            if std::env::var_os("STANDIN_DUMP_JSON").is_some() {
                eprintln!("[{}] {key} HTTP {status}: {value}", t.name());
            }
            out.shapes.insert(key, (status, keys));
        }
    }
}

/// The sequence both targets go through. `t` starts with members 1, 2 and 3 running and
/// nobody granted anything.
async fn scenario(t: &Target) -> Observed {
    let mut out = Observed::default();
    let started = Instant::now();

    // Three members: one leader, two synced followers, one configuration.
    let obs = all_synced(t, &[1, 2, 3]).await;
    out.note(t, format!("three members: {}", roles(&obs)));
    record_shapes(t, &obs, "serving", None, &mut out).await;
    let leader = obs.leader.expect("a leader");
    let conf = probe()
        .four_letter(&t.addr(leader.0), "conf")
        .await
        .expect("conf");
    out.conf_keys = conf
        .lines()
        .take_while(|l| !l.starts_with("membership:"))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect();

    let operator = t.membership(Some(t.operator()));
    let superuser = t.membership(Some(t.super_user()));
    let config = operator.read_config().await.expect("read_config");
    let lines_match = (1..=3).all(|id| config.get(ServerId(id)) == Some(&t.entry(id)));
    out.note(
        t,
        format!(
            "read_config: voters {:?}, lines as started {lines_match}, version = conf's {}, \
             version is the first epoch's {}",
            voters(&config),
            Some(config.version) == obs.members[&leader].config_version,
            config.version == 1 << 32
        ),
    );
    let mut versions = vec![config.version];

    // ACLs: the operator may not reconfigure, nor grant itself; super grants and locks.
    out.note(
        t,
        format!(
            "operator may_reconfigure before the grant: {:?}",
            operator.may_reconfigure().await.map_err(|e| kind(&e))
        ),
    );
    out.note(
        t,
        format!(
            "operator grants itself: {:?}",
            operator
                .grant_reconfigure(&t.operator())
                .await
                .map_err(|e| kind(&e))
        ),
    );
    for round in ["first", "second"] {
        out.note(
            t,
            format!(
                "super grants the operator ({round}): {:?}; locks the root: {:?}",
                superuser
                    .grant_reconfigure(&t.operator())
                    .await
                    .map_err(|e| kind(&e)),
                superuser.lock_root().await.map_err(|e| kind(&e))
            ),
        );
    }
    out.note(
        t,
        format!(
            "operator may_reconfigure after the grant: {:?}",
            operator.may_reconfigure().await.map_err(|e| kind(&e))
        ),
    );
    let anonymous = raw(t, None).await;
    for path in ["/", "/zookeeper/config", "/zookeeper", "/zookeeper/quota"] {
        let acl = anonymous.get_acl(path).await;
        out.note(
            t,
            format!(
                "anonymous getACL {path}: {}",
                match &acl {
                    Ok((acl, stat)) => format!("{} aversion {}", acl_text(acl), stat.aversion),
                    Err(e) => format!("{e:?}"),
                }
            ),
        );
    }
    let (data, stat) = anonymous.get_config().await.expect("getConfig");
    let text = String::from_utf8_lossy(&data).to_string();
    out.note(
        t,
        format!(
            "anonymous getConfig: {} lines, ends with version=<hex> {}, mzxid = version {}, \
             data version {}",
            text.lines().count(),
            text.ends_with(&format!("version={:x}", config.version)),
            stat.mzxid as u64 == config.version,
            stat.version
        ),
    );
    let children = anonymous.list_children("/zookeeper").await;
    out.note(t, format!("anonymous getChildren /zookeeper: {children:?}"));
    let whoami = raw(t, Some(&t.operator())).await.list_auth_users().await;
    out.note(
        t,
        format!(
            "operator whoAmI schemes: {:?}",
            whoami.map(|users| users
                .iter()
                .map(|u| u.scheme().to_string())
                .collect::<BTreeSet<_>>())
        ),
    );

    // Before the joiner runs: quorate refuses, ZooKeeper refuses in its own ways.
    let joiner4 = t.entry(4);
    out.note(
        t,
        format!(
            "check_joiner server.4 before it runs: {:?}",
            operator
                .check_joiner(&config, &joiner4)
                .await
                .map_err(|e| kind(&e))
        ),
    );
    out.note(
        t,
        format!(
            "add_voter server.4 before it runs: {}",
            outcome(&operator.add_voter(&joiner4).await)
        ),
    );
    let lines: Vec<String> = (4..=7).map(|id| t.server_line(id)).collect();
    let raw_op = raw(t, Some(&t.operator())).await;
    let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let four_unsynced = raw_reconfig(&raw_op, &line_refs, &[], None).await;
    out.note(
        t,
        format!(
            "raw reconfig adding four servers that do not run: {}",
            zk_error(&four_unsynced)
        ),
    );
    let anonymous_add = raw_reconfig(&anonymous, &line_refs[..1], &[], None).await;
    out.note(
        t,
        format!(
            "raw anonymous reconfig adding server.4: {}",
            zk_error(&anonymous_add)
        ),
    );
    let stale = raw_reconfig(
        &raw_op,
        &line_refs[..1],
        &[],
        Some(config.version as i64 - 1),
    )
    .await;
    out.note(
        t,
        format!("raw reconfig on a stale version: {}", zk_error(&stale)),
    );
    let everyone = raw_reconfig(&raw_op, &[], &["1", "2", "3"], None).await;
    out.note(
        t,
        format!("raw reconfig removing every voter: {}", zk_error(&everyone)),
    );
    let bad = raw_reconfig(&raw_op, &["server.4=nonsense"], &[], None).await;
    out.note(
        t,
        format!("raw reconfig with a malformed line: {}", zk_error(&bad)),
    );
    drop((raw_op, anonymous));
    out.note(
        t,
        format!(
            "voters after the refusals: {:?}",
            voters(&operator.read_config().await.expect("read_config"))
        ),
    );

    // Joiners 4 and 5, one at a time: synced before the add, voters after.
    for id in [4u32, 5] {
        t.start_joiner(id).await;
        let everyone: Vec<u32> = (1..=id).collect();
        let obs = all_synced(t, &everyone).await;
        out.note(t, format!("joiner {id} running: {}", roles(&obs)));
        let current = operator.read_config().await.expect("read_config");
        out.note(
            t,
            format!(
                "before the add: voters {:?}; check_joiner {:?}",
                voters(&current),
                operator
                    .check_joiner(&current, &t.entry(id))
                    .await
                    .map_err(|e| kind(&e))
            ),
        );
        let added = operator.add_voter(&t.entry(id)).await;
        out.note(t, format!("add_voter server.{id}: {}", outcome(&added)));
        let again = operator.add_voter(&t.entry(id)).await;
        out.note(
            t,
            format!("add_voter server.{id} again: {}", outcome(&again)),
        );
        versions.push(added.expect("added").config.version);
        let obs = all_synced(t, &everyone).await;
        out.note(t, format!("after the add: {}", roles(&obs)));
    }

    // Removed again, newest first: a removed member follows without a vote until stopped.
    for id in [5u32, 4] {
        let removed = operator.remove_voter(ServerId(id)).await;
        out.note(
            t,
            format!("remove_voter server.{id}: {}", outcome(&removed)),
        );
        let again = operator.remove_voter(ServerId(id)).await;
        out.note(
            t,
            format!("remove_voter server.{id} again: {}", outcome(&again)),
        );
        versions.push(removed.expect("removed").config.version);
        let everyone: Vec<u32> = (1..=id).collect();
        let obs = all_synced(t, &everyone).await;
        out.note(
            t,
            format!("server.{id} removed, still running: {}", roles(&obs)),
        );
        if id == 5 {
            record_shapes(t, &obs, "removed", Some(id), &mut out).await;
        }
        t.stop(id).await;
    }
    let obs = all_synced(t, &[1, 2, 3]).await;
    out.note(t, format!("back to three: {}", roles(&obs)));
    let leader = obs.leader.expect("a leader");
    let leader_zxid = obs.members[&leader].zxid.unwrap_or_default();
    let last = operator.read_config().await.expect("read_config");
    out.note(
        t,
        format!(
            "versions strictly increase over the four reconfigs: {}; the last is read_config's: \
             {}; the leader's zxid is at least it: {}",
            versions.windows(2).all(|w| w[0] < w[1]),
            versions.last() == Some(&last.version),
            leader_zxid >= last.version
        ),
    );
    eprintln!(
        "[{}] versions {:x?}, leader zxid {leader_zxid:x}",
        t.name(),
        versions
    );

    // The quorum is lost: the leader stops serving, sessions are refused.
    let followers: Vec<u32> = [1, 2, 3].into_iter().filter(|id| *id != leader.0).collect();
    for id in &followers {
        t.stop(*id).await;
    }
    let alone = eventually(
        &format!("{}: server.{leader} to stop serving", t.name()),
        Duration::from_secs(30),
        || async {
            let obs = observe(t, &[leader.0]).await;
            if obs.members[&leader].serving {
                Err(summary(&obs))
            } else {
                Ok(obs)
            }
        },
    )
    .await;
    let m = &alone.members[&leader];
    out.note(
        t,
        format!(
            "without a quorum: serving {}, mode {:?}, leader {:?}, problems {:?}",
            m.serving,
            m.mode,
            alone.leader,
            m.problems
                .iter()
                .map(|p| p.split(':').take(2).collect::<Vec<_>>().join(":"))
                .collect::<Vec<_>>()
        ),
    );
    record_shapes(t, &alone, "alone", None, &mut out).await;
    let lonely = ZkMembership::new(format!("{}:2181", t.ip(leader.0)), Some(t.operator()))
        .expect("membership")
        .with_timeouts(Timeouts {
            connect: Duration::from_secs(2),
            ..Timeouts::default()
        });
    out.note(
        t,
        format!(
            "read_config without a quorum: {:?}",
            lonely
                .read_config()
                .await
                .map(|c| voters(&c))
                .map_err(|e| kind(&e))
        ),
    );
    let ruok = probe().four_letter(&t.addr(leader.0), "ruok").await;
    let conf = probe().four_letter(&t.addr(leader.0), "conf").await;
    out.note(
        t,
        format!(
            "four-letter words without a quorum: ruok {ruok:?}, conf {:?}",
            conf.map(|c| c.trim().to_string())
        ),
    );
    eprintln!("[{}] scenario: {:?}", t.name(), started.elapsed());
    out
}

#[tokio::test]
async fn quorate_sees_the_same_of_a_stand_in_ensemble_as_of_a_real_one() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let real = Target::Real(Box::new(
        Ensemble::builder()
            .version(ZkVersion::V3_9_5)
            .members(3)
            .grant_operator(false)
            .start()
            .await
            .expect("real ensemble starts"),
    ));
    eprintln!("real ensemble serving: {:?}", t0.elapsed());
    let real_seen = scenario(&real).await;
    drop(real);

    let standin = StandInEnsemble {
        standins: StandIns::new(),
        key: "default/standin-real".into(),
        subnet: COMPARISON_SUBNET,
        super_password: "super-secret".into(),
        operator_password: "operator-secret".into(),
        members: Mutex::new(BTreeMap::new()),
        known: Mutex::new(BTreeSet::new()),
    };
    let servers: Vec<String> = (1..=3)
        .map(|id| {
            let ip = Ipv4Addr::new(127, 2, COMPARISON_SUBNET, id as u8);
            format!("server.{id}={ip}:2888:3888:participant;{ip}:2181")
        })
        .collect();
    for id in 1..=3 {
        standin.start(id, &servers.join("\n")).await;
    }
    let standin = Target::StandIn(standin);
    let standin_seen = scenario(&standin).await;

    // The observations, line by line.
    let width = real_seen.lines.len().max(standin_seen.lines.len());
    let mut differences = Vec::new();
    for i in 0..width {
        let r = real_seen.lines.get(i).map_or("<none>", String::as_str);
        let s = standin_seen.lines.get(i).map_or("<none>", String::as_str);
        if r != s {
            differences.push(format!("real:     {r}\nstand-in: {s}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} observations differ:\n{}",
        differences.len(),
        differences.join("\n\n")
    );

    // The AdminServer's answers: same HTTP status, the stand-in's keys a subset of the real
    // ones, and every key quorate reads present in both.
    let mut problems = Vec::new();
    for (key, (real_status, real_keys)) in &real_seen.shapes {
        let Some((status, keys)) = standin_seen.shapes.get(key) else {
            problems.push(format!("{key}: not asked of the stand-in"));
            continue;
        };
        if status != real_status {
            problems.push(format!("{key}: HTTP {status}, real {real_status}"));
        }
        let extra: Vec<&String> = keys.difference(real_keys).collect();
        if !extra.is_empty() {
            problems.push(format!(
                "{key}: keys real ZooKeeper does not have: {extra:?}"
            ));
        }
        let missing = real_keys.difference(keys).count();
        if missing > 0 {
            eprintln!(
                "{key}: the stand-in leaves out {missing} of {} keys",
                real_keys.len()
            );
        }
    }
    for (command, needed) in READ_BY_QUORATE {
        for role in ["leader", "follower", "removed"] {
            let key = if command.contains('@') {
                if role != "leader" {
                    continue;
                }
                command.to_string()
            } else {
                format!("{command}@{role}")
            };
            for (who, seen) in [("real", &real_seen), ("stand-in", &standin_seen)] {
                if !seen
                    .shapes
                    .get(&key)
                    .is_some_and(|(_, k)| k.contains(needed))
                {
                    problems.push(format!("{who} {key}: no {needed}"));
                }
            }
        }
    }
    let extra_conf: Vec<&String> = standin_seen
        .conf_keys
        .difference(&real_seen.conf_keys)
        .collect();
    if !extra_conf.is_empty() {
        problems.push(format!(
            "conf: keys real ZooKeeper does not print: {extra_conf:?}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!(
        "{} observations and {} AdminServer answers alike; total {:?}",
        real_seen.lines.len(),
        real_seen.shapes.len(),
        t0.elapsed()
    );
}

/// The process's resident memory, in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The address of member `m` (0, 1, 2) of ensemble `e`: `127.1.x.y`, 254 to a /24.
fn scale_ip(e: usize, m: usize) -> Ipv4Addr {
    let k = e * 3 + m;
    Ipv4Addr::new(127, 1, (k / 254) as u8, (k % 254 + 1) as u8)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stand_in_ensembles_of_three_answer_in_one_process() {
    const ENSEMBLES: usize = 1000;
    let _one = ONE_AT_A_TIME.lock().await;
    let standins = StandIns::new();
    let before = rss_kib();
    let t0 = Instant::now();
    let mut members = Vec::with_capacity(ENSEMBLES * 3);
    for e in 0..ENSEMBLES {
        let config: Vec<String> = (0..3)
            .map(|m| {
                let ip = scale_ip(e, m);
                format!("server.{}={ip}:2888:3888:participant;{ip}:2181", m + 1)
            })
            .collect();
        let config = config.join("\n");
        for m in 0..3 {
            let member = standins
                .start(
                    &format!("bench/zk-{e}"),
                    m as u64 + 1,
                    scale_ip(e, m),
                    2181,
                    8080,
                    &config,
                    None,
                )
                .await
                .unwrap_or_else(|err| panic!("ensemble {e} member {m}: {err}"));
            members.push(member);
        }
    }
    let started = rss_kib();
    eprintln!(
        "{} members started in {:?}; VmRSS {} KiB -> {} KiB",
        members.len(),
        t0.elapsed(),
        before,
        started
    );

    // Every member answers ruok and srvr; each ensemble has exactly one leader.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let t1 = Instant::now();
    let answers: Vec<(usize, String)> = futures::stream::iter(0..ENSEMBLES * 3)
        .map(|k| {
            let http = http.clone();
            async move {
                let ip = scale_ip(k / 3, k % 3);
                let get = |command: &'static str| {
                    let http = http.clone();
                    async move {
                        let response = http
                            .get(format!("http://{ip}:8080/commands/{command}"))
                            .send()
                            .await
                            .unwrap_or_else(|e| panic!("{command} on {ip}: {e}"));
                        assert!(response.status().is_success(), "{command} on {ip}");
                        response
                            .json::<Value>()
                            .await
                            .unwrap_or_else(|e| panic!("{command} on {ip}: {e}"))
                    }
                };
                // Each ensemble elects its leader once asked (an election takes 200 ms);
                // until then its members answer with `error` set.
                let waited = Instant::now();
                let srvr = loop {
                    let ruok = get("ruok").await;
                    let srvr = get("srvr").await;
                    if ruok["error"].is_null() && srvr["error"].is_null() {
                        break srvr;
                    }
                    assert!(
                        waited.elapsed() < Duration::from_secs(30),
                        "{ip} does not serve: {ruok} {srvr}"
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                let state = srvr["server_stats"]["server_state"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                (k / 3, state)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut leaders = vec![0usize; ENSEMBLES];
    for (e, state) in &answers {
        match state.as_str() {
            "leader" => leaders[*e] += 1,
            "follower" => {}
            other => panic!("ensemble {e}: a member is {other:?}"),
        }
    }
    assert!(
        leaders.iter().all(|l| *l == 1),
        "ensembles without exactly one leader"
    );
    let probed = rss_kib();
    let growth = probed.saturating_sub(before);
    eprintln!(
        "{} members answered ruok and srvr in {:?}; VmRSS {probed} KiB, growth {growth} KiB \
         ({:.1} KiB a member)",
        answers.len(),
        t1.elapsed(),
        growth as f64 / answers.len() as f64
    );
    assert!(
        growth < 200 * 1024,
        "3,000 stand-in members grew the process by {growth} KiB"
    );
    let t2 = Instant::now();
    for m in members {
        m.stop().await;
    }
    eprintln!("stopped in {:?}", t2.elapsed());
}
