//! Observing one member over its AdminServer (`/commands/srvr`, `leader`, `monitor`) and the `conf`
//! four-letter word on its client port. Every request has a timeout; the four run concurrently.
//!
//! JSON keys used (3.8 and 3.9): `srvr` → `server_stats.server_state`,
//! `server_stats.last_processed_zxid`, `version`; `leader` → `is_leader`, `leader_id`;
//! `monitor` → `peer_state`, and on the leader `learners`, `synced_followers`,
//! `synced_non_voting_followers`, `synced_observers`, `quorum_size`. Every reply carries `error`,
//! non-null when the member does not serve; `monitor` answers HTTP 500 then.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{MemberAddr, MemberProbe};
use crate::planner::{Role, ServerId, ZkState};

/// Errors of the AdminServer probe.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP client could not be built.
    #[error("building the AdminServer HTTP client: {source}")]
    HttpClient {
        /// What reqwest said.
        #[source]
        source: reqwest::Error,
    },
}

/// What a member says it is (`srvr` `server_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Leads the ensemble.
    Leader,
    /// Follows a leader (a voter, or a non-voting joiner or removed member).
    Follower,
    /// An observer.
    Observer,
    /// A single server without quorum protocol (`standaloneEnabled=true`; cannot reconfig).
    Standalone,
    /// Read-only mode: it lost its quorum and serves stale reads.
    ReadOnly,
}

impl Mode {
    /// Parses a `server_state`.
    pub fn parse(state: &str) -> Option<Mode> {
        match state {
            "leader" => Some(Mode::Leader),
            "follower" => Some(Mode::Follower),
            "observer" => Some(Mode::Observer),
            "standalone" => Some(Mode::Standalone),
            "read-only" | "read_only" | "readonly" => Some(Mode::ReadOnly),
            _ => None,
        }
    }

    /// Whether a member in this mode serves with a quorum.
    pub fn is_serving(self) -> bool {
        !matches!(self, Mode::ReadOnly)
    }

    /// The planner's role (a standalone server is its own leader).
    pub fn role(self) -> Role {
        match self {
            Mode::Leader | Mode::Standalone => Role::Leader,
            Mode::Follower => Role::Follower,
            Mode::Observer => Role::Observer,
            Mode::ReadOnly => Role::Unknown,
        }
    }
}

/// The leader's counts of its learners (`monitor` on the leader only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LearnerCounts {
    /// Connected learners (followers and observers), synced or not.
    pub learners: u64,
    /// Followers the leader forwards proposals to: synced, **voting or not**.
    pub synced_followers: u64,
    /// Of those, the ones not in the voting configuration (joiners, removed members).
    pub synced_non_voting_followers: u64,
    /// Synced observers.
    pub synced_observers: u64,
    /// Voters in the leader's configuration.
    pub quorum_size: Option<u64>,
}

impl LearnerCounts {
    /// Every learner the leader counts as synced.
    pub fn synced_learners(&self) -> u64 {
        self.synced_followers + self.synced_observers
    }
}

/// What one member says about itself, at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberObservation {
    /// The member.
    pub id: ServerId,
    /// It serves requests with a quorum (see the module doc of [`crate::zk`]).
    pub serving: bool,
    /// Its `server_state`, when it answered.
    pub mode: Option<Mode>,
    /// Its `monitor` `peer_state`, such as `following - broadcast`.
    pub peer_state: Option<String>,
    /// Last processed zxid (`srvr`).
    pub zxid: Option<u64>,
    /// The leader it names (`leader` command; itself when it leads).
    pub leader_id: Option<ServerId>,
    /// The version of the configuration it knows (`conf` four-letter word).
    pub config_version: Option<u64>,
    /// The configuration it has committed (the `membership:` section of `conf`).
    pub config: Option<super::EnsembleConfig>,
    /// The leader's counts of synced learners (only when it leads).
    pub learner_counts: Option<LearnerCounts>,
    /// The ZooKeeper version it runs, such as `3.9.5`.
    pub zookeeper_version: Option<String>,
    /// Every request that failed, with why.
    pub problems: Vec<String>,
}

impl MemberObservation {
    /// A member that could not be observed at all.
    pub fn unreachable(id: ServerId, problem: impl Into<String>) -> MemberObservation {
        MemberObservation {
            id,
            serving: false,
            mode: None,
            peer_state: None,
            zxid: None,
            leader_id: None,
            config_version: None,
            config: None,
            learner_counts: None,
            zookeeper_version: None,
            problems: vec![problem.into()],
        }
    }

    /// Its `peer_state` says it follows (or observes) in the broadcast phase.
    pub fn is_broadcasting_learner(&self) -> bool {
        self.peer_state.as_deref().is_some_and(|p| {
            p.starts_with("following - broadcast") || p.starts_with("observing - broadcast")
        })
    }

    /// The planner's view of this member, given whether the ensemble judged it synced.
    pub fn zk_state(&self, synced: bool) -> ZkState {
        ZkState {
            serving: self.serving,
            role: if self.serving {
                self.mode.map_or(Role::Unknown, Mode::role)
            } else {
                Role::Unknown
            },
            zxid: self.zxid,
            synced: synced && self.serving,
        }
    }
}

/// Observes members over their AdminServer (HTTP) and the `conf` four-letter word.
#[derive(Clone, Debug)]
pub struct AdminProbe {
    http: reqwest::Client,
    request_timeout: Duration,
    read_config_version: bool,
}

/// How long an idle AdminServer connection is kept: long enough to carry one pass's requests
/// and the next polls of a step in progress (250 ms to a few seconds apart), well under Jetty's
/// idle timeout in ZooKeeper's AdminServer (`zookeeper.admin.idleTimeout`, 30 s by default). A
/// converged ensemble is looked at every 30 s: keeping its connections in between bought nothing
/// and cost memory (an operator of 1,000 ensembles held 5,000 to 8,500 connections at 20 s and
/// no cap per member: 447 MiB against 237 MiB without; `benches/thousand_ensembles.rs`).
const ADMIN_IDLE: Duration = Duration::from_secs(5);

/// The longest four-letter-word reply read (a `conf` reply is about 1 KiB).
const MAX_FOUR_LETTER_REPLY: u64 = 256 * 1024;

impl AdminProbe {
    /// A probe whose every request (HTTP or four-letter word) gives up after `request_timeout`.
    pub fn new(request_timeout: Duration) -> Result<AdminProbe, Error> {
        let http = reqwest::Client::builder()
            // Members are reached directly, never through an HTTP proxy from the environment.
            .no_proxy()
            // One client for the process, its connections kept across a pass and the quick
            // polls of a step. An idle connection is let go before the AdminServer's own idle
            // timeout (30 s) closes it under a request; a member that restarts or moves closes
            // its side, and the pool drops it.
            .pool_idle_timeout(ADMIN_IDLE)
            // A pass asks a member several things at once; one connection per member stays.
            .pool_max_idle_per_host(1)
            .connect_timeout(request_timeout)
            .timeout(request_timeout)
            .build()
            .map_err(|source| Error::HttpClient { source })?;
        Ok(AdminProbe {
            http,
            request_timeout,
            read_config_version: true,
        })
    }

    /// Whether to read the config version with the `conf` four-letter word (default true; it
    /// needs `conf` in `4lw.commands.whitelist`).
    pub fn with_config_version(mut self, read: bool) -> AdminProbe {
        self.read_config_version = read;
        self
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// GET `/commands/<command>`: the JSON, or why there is none (no answer, an HTTP error, not
    /// JSON, or a JSON `error`).
    pub async fn command(&self, member: &MemberAddr, command: &str) -> Result<Value, String> {
        let url = member.admin_url(command);
        let request = async {
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("{command}: {}", chain(&e)))?;
            let status = response.status();
            let body = response
                .text()
                .await
                .map_err(|e| format!("{command}: reading the body: {}", chain(&e)))?;
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.request_timeout, request)
            .await
            .map_err(|_| format!("{command}: no answer within {:?}", self.request_timeout))??;
        if !status.is_success() {
            let snippet: String = body.chars().take(160).collect();
            return Err(format!("{command}: HTTP {status}: {snippet}"));
        }
        let value: Value =
            serde_json::from_str(&body).map_err(|e| format!("{command}: not JSON ({e})"))?;
        match value.get("error") {
            None | Some(Value::Null) => Ok(value),
            Some(Value::String(e)) => Err(format!("{command}: {e}")),
            Some(other) => Err(format!("{command}: {other}")),
        }
    }

    /// Sends a four-letter word to the member's client port and returns the reply.
    pub async fn four_letter(&self, member: &MemberAddr, word: &str) -> Result<String, String> {
        let address = member.client_address();
        let talk = async {
            let mut stream = tokio::net::TcpStream::connect(&address).await?;
            stream.write_all(word.as_bytes()).await?;
            let mut out = Vec::new();
            stream
                .take(MAX_FOUR_LETTER_REPLY)
                .read_to_end(&mut out)
                .await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
        };
        tokio::time::timeout(self.request_timeout, talk)
            .await
            .map_err(|_| {
                format!(
                    "{word} on {address}: no answer within {:?}",
                    self.request_timeout
                )
            })?
            .map_err(|e| format!("{word} on {address}: {e}"))
    }

    async fn conf(&self, member: &MemberAddr) -> Result<ConfReply, String> {
        let reply = self.four_letter(member, "conf").await?;
        let conf = ConfReply::parse(&reply);
        if conf.config_version.is_none() {
            let snippet: String = reply.trim().chars().take(160).collect();
            return Err(format!("conf: no membership version in {snippet:?}"));
        }
        Ok(conf)
    }
}

/// An error with its sources (reqwest hides "Connection refused" in them).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What quorate reads from a `conf` four-letter-word reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfReply {
    /// `serverId=`: the id the process answering has.
    pub server_id: Option<ServerId>,
    /// The `version=<hex>` of the `membership:` section.
    pub config_version: Option<u64>,
    /// The `membership:` section: the configuration this server has committed (its server
    /// lines and version), the same text `/zookeeper/config` holds.
    pub membership: Option<super::EnsembleConfig>,
}

impl ConfReply {
    /// Parses a `conf` reply (anything else yields empty fields).
    pub fn parse(reply: &str) -> ConfReply {
        let mut out = ConfReply::default();
        let mut in_membership = false;
        let mut membership = String::new();
        for line in reply.lines().map(str::trim) {
            if line.starts_with("membership:") {
                in_membership = true;
            } else if !in_membership && let Some(id) = line.strip_prefix("serverId=") {
                out.server_id = id.trim().parse().ok().map(ServerId);
            } else if in_membership {
                if let Some(hex) = line.strip_prefix("version=") {
                    out.config_version = u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok();
                }
                membership.push_str(line);
                membership.push('\n');
            }
        }
        out.membership = super::EnsembleConfig::parse(&membership).ok();
        out
    }
}

/// A count in a `monitor` reply. With ZooKeeper's default metrics provider counts are JSON
/// integers; with the Prometheus provider (which quorate turns on) every value is a float
/// (`"synced_followers" : 1.0`): both are read, a fraction or a negative number is not.
pub(crate) fn count(value: &Value, key: &str) -> Option<u64> {
    let v = value.get(key)?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
            .map(|f| f as u64)
    })
}

/// Builds an observation from the replies of `srvr`, `leader`, `monitor` and `conf`. A `conf`
/// reply from another server id makes the member unreachable: its address is wrong.
pub fn observation_from_replies(
    id: ServerId,
    srvr: Result<Value, String>,
    leader: Result<Value, String>,
    monitor: Result<Value, String>,
    conf: Option<Result<ConfReply, String>>,
) -> MemberObservation {
    let mut obs = MemberObservation::unreachable(id, String::new());
    obs.problems.clear();
    match srvr {
        Ok(v) => {
            let state = v
                .pointer("/server_stats/server_state")
                .and_then(Value::as_str);
            obs.mode = state.and_then(Mode::parse);
            obs.zxid = v
                .pointer("/server_stats/last_processed_zxid")
                .and_then(Value::as_u64);
            obs.zookeeper_version = v
                .get("version")
                .and_then(Value::as_str)
                .map(|s| s.split('-').next().unwrap_or(s).to_string());
            match obs.mode {
                Some(mode) if mode.is_serving() => obs.serving = true,
                _ => obs
                    .problems
                    .push(format!("srvr: server_state {state:?} is not serving")),
            }
        }
        Err(e) => obs.problems.push(e),
    }
    match leader {
        Ok(v) => {
            let is_leader = v.get("is_leader").and_then(Value::as_bool) == Some(true);
            let named = v
                .get("leader_id")
                .and_then(Value::as_u64)
                .and_then(|l| u32::try_from(l).ok());
            obs.leader_id = if is_leader {
                Some(id)
            } else {
                named.filter(|l| *l > 0).map(ServerId)
            };
        }
        Err(e) => obs.problems.push(e),
    }
    match monitor {
        Ok(v) => {
            obs.peer_state = v
                .get("peer_state")
                .and_then(Value::as_str)
                .map(str::to_string);
            if let (Some(synced_followers), Some(learners)) =
                (count(&v, "synced_followers"), count(&v, "learners"))
            {
                obs.learner_counts = Some(LearnerCounts {
                    learners,
                    synced_followers,
                    synced_non_voting_followers: count(&v, "synced_non_voting_followers")
                        .unwrap_or(0),
                    synced_observers: count(&v, "synced_observers").unwrap_or(0),
                    quorum_size: count(&v, "quorum_size"),
                });
            }
        }
        Err(e) => obs.problems.push(e),
    }
    match conf {
        Some(Ok(c)) => {
            obs.config_version = c.config_version;
            obs.config = c.membership;
            if let Some(other) = c.server_id.filter(|other| *other != id) {
                // Another process answers at this address: nothing it says is about `id`.
                let mut wrong = MemberObservation::unreachable(
                    id,
                    format!("conf: the server here is server.{other}"),
                );
                wrong.problems.extend(obs.problems);
                return wrong;
            }
        }
        Some(Err(e)) => obs.problems.push(e),
        None => {}
    }
    obs
}

impl MemberProbe for AdminProbe {
    async fn observe(&self, member: &MemberAddr) -> MemberObservation {
        let conf = async {
            if self.read_config_version {
                Some(self.conf(member).await)
            } else {
                None
            }
        };
        let (srvr, leader, monitor, conf) = tokio::join!(
            self.command(member, "srvr"),
            self.command(member, "leader"),
            self.command(member, "monitor"),
            conf,
        );
        observation_from_replies(member.id, srvr, leader, monitor, conf)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn srvr(state: &str, zxid: u64) -> Result<Value, String> {
        Ok(
            json!({"version": "3.9.5-293c895a, built on 2026-02-11", "server_stats": {"server_state": state, "last_processed_zxid": zxid}, "error": null}),
        )
    }

    #[test]
    fn a_follower_in_broadcast_is_serving_and_names_its_leader() {
        let obs = observation_from_replies(
            ServerId(1),
            srvr("follower", 0x1_0000_0002),
            Ok(json!({"is_leader": false, "leader_id": 3, "error": null})),
            Ok(json!({"server_state": "follower", "peer_state": "following - broadcast"})),
            Some(Ok(ConfReply {
                server_id: Some(ServerId(1)),
                config_version: Some(0x1_0000_0000),
                membership: None,
            })),
        );
        assert!(obs.serving, "{obs:?}");
        assert_eq!(obs.mode, Some(Mode::Follower));
        assert_eq!(obs.zxid, Some(0x1_0000_0002));
        assert_eq!(obs.leader_id, Some(ServerId(3)));
        assert_eq!(obs.config_version, Some(0x1_0000_0000));
        assert_eq!(obs.zookeeper_version.as_deref(), Some("3.9.5"));
        assert!(obs.is_broadcasting_learner());
        assert!(obs.learner_counts.is_none());
        assert!(obs.problems.is_empty(), "{obs:?}");
    }

    #[test]
    fn a_member_without_quorum_is_not_serving_whatever_ruok_would_say() {
        let not_serving =
            "srvr: This ZooKeeper instance is not currently serving requests".to_string();
        let obs = observation_from_replies(
            ServerId(2),
            Err(not_serving.clone()),
            Err("leader: This ZooKeeper instance is not currently serving requests".into()),
            Err("monitor: HTTP 500 Internal Server Error: <html>".into()),
            Some(Err("conf: no membership version".into())),
        );
        assert!(!obs.serving);
        assert_eq!(obs.mode, None);
        assert_eq!(obs.problems.len(), 4);
        assert_eq!(obs.problems[0], not_serving);
        assert!(
            !obs.zk_state(true).synced,
            "a member that does not serve is never synced"
        );
        assert_eq!(obs.zk_state(true).role, Role::Unknown);
    }

    #[test]
    fn read_only_is_not_serving() {
        let obs = observation_from_replies(
            ServerId(2),
            srvr("read-only", 5),
            Err("x".into()),
            Err("y".into()),
            None,
        );
        assert!(!obs.serving);
        assert_eq!(obs.mode, Some(Mode::ReadOnly));
    }

    #[test]
    fn learner_counts_are_read_as_the_prometheus_provider_gives_them_too() {
        // Measured on 3.9.5 with metricsProvider.className=...PrometheusMetricsProvider.
        let obs = observation_from_replies(
            ServerId(1),
            srvr("leader", 7),
            Ok(json!({"is_leader": true, "leader_id": 1, "error": null})),
            Ok(
                json!({"peer_state": "leading - broadcast", "learners": 1.0, "synced_followers": 1.0,
                      "synced_non_voting_followers": 1.0, "synced_observers": 0.0, "quorum_size": 1.0}),
            ),
            None,
        );
        assert_eq!(
            obs.learner_counts,
            Some(LearnerCounts {
                learners: 1,
                synced_followers: 1,
                synced_non_voting_followers: 1,
                synced_observers: 0,
                quorum_size: Some(1)
            })
        );
        let odd = json!({"a": 1.5, "b": -1.0, "c": "1"});
        assert_eq!(
            [count(&odd, "a"), count(&odd, "b"), count(&odd, "c")],
            [None, None, None]
        );
    }

    #[test]
    fn the_leader_reports_its_learner_counts() {
        let obs = observation_from_replies(
            ServerId(3),
            srvr("leader", 7),
            Ok(json!({"is_leader": true, "leader_id": 3, "error": null})),
            Ok(
                json!({"peer_state": "leading - broadcast", "learners": 3, "synced_followers": 3,
                      "synced_non_voting_followers": 1, "synced_observers": 0, "quorum_size": 3}),
            ),
            None,
        );
        assert_eq!(obs.leader_id, Some(ServerId(3)));
        assert_eq!(
            obs.learner_counts,
            Some(LearnerCounts {
                learners: 3,
                synced_followers: 3,
                synced_non_voting_followers: 1,
                synced_observers: 0,
                quorum_size: Some(3)
            })
        );
        assert_eq!(
            obs.zk_state(true),
            ZkState {
                serving: true,
                role: Role::Leader,
                zxid: Some(7),
                synced: true
            }
        );
    }

    #[test]
    fn reads_the_server_id_and_membership_from_conf() {
        let reply = "clientPort=2181\nserverId=1\nmembership: \nserver.1=a:2888:3888:participant;a:2181\nserver.4=d:2888:3888:participant;d:2181\nversion=100000009\n";
        let conf = ConfReply::parse(reply);
        assert_eq!(conf.server_id, Some(ServerId(1)));
        assert_eq!(conf.config_version, Some(0x1_0000_0009));
        let membership = conf.membership.expect("the membership section");
        assert_eq!(membership.version, 0x1_0000_0009);
        assert_eq!(
            membership.membership().voters,
            [ServerId(1), ServerId(4)].into()
        );
        assert_eq!(
            ConfReply::parse("This ZooKeeper instance is not currently serving requests"),
            ConfReply::default()
        );
        assert_eq!(
            ConfReply::parse("version=5\n").config_version,
            None,
            "only the membership section counts"
        );
    }

    #[test]
    fn another_server_at_the_address_makes_the_member_unreachable() {
        let obs = observation_from_replies(
            ServerId(4),
            srvr("follower", 1),
            Ok(json!({"is_leader": false, "leader_id": 3, "error": null})),
            Ok(json!({"peer_state": "following - broadcast"})),
            Some(Ok(ConfReply {
                server_id: Some(ServerId(2)),
                config_version: Some(1),
                membership: None,
            })),
        );
        assert!(!obs.serving);
        assert_eq!(obs.leader_id, None);
        assert!(obs.problems[0].contains("server.2"), "{obs:?}");
    }
}
