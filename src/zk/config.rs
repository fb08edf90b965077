//! The dynamic configuration of an ensemble, as `getConfig` returns it (the data of
//! `/zookeeper/config`), parsed into typed members. Pure: no I/O.
//!
//! ```text
//! server.1=10.0.0.1:2888:3888:participant;10.0.0.1:2181
//! server.4=zk-4.zk:2888:3888:observer;2181
//! version=100000009
//! ```
//!
//! A server line is `server.<id>=<quorum>[|<quorum>...][:<role>][;[<clientHost>:]<clientPort>]`,
//! where each `<quorum>` is `host:quorumPort:electionPort` (IPv6 hosts in brackets) and the role
//! is `participant` (the default) or `observer`. ZooKeeper writes the client host `0.0.0.0` when
//! only a port was given; [`ServerEntry`] does the same, so a line compares equal to what
//! ZooKeeper stores for it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use crate::planner::{Membership, ServerId};

/// A line of `/zookeeper/config` that cannot be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A `server.N=...` line is malformed.
    #[error("bad server line {line:?}: {reason}")]
    ServerLine {
        /// The line as read.
        line: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `version=` line is not hexadecimal.
    #[error("bad version line {line:?}: expected version=<hex>")]
    Version {
        /// The line as read.
        line: String,
    },
    /// Two lines for the same server id.
    #[error("server.{id} appears twice")]
    DuplicateId {
        /// The repeated id.
        id: ServerId,
    },
    /// No `server.N=` line at all.
    #[error("the configuration lists no server: {text:?}")]
    NoServers {
        /// The whole text (shortened).
        text: String,
    },
    /// No `version=` line and no other source of the version.
    #[error("the configuration has no version= line")]
    NoVersion,
}

/// Whether a server votes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LearnerType {
    /// A voting member.
    #[default]
    Participant,
    /// A non-voting observer.
    Observer,
}

impl LearnerType {
    /// `participant` or `observer`, as in a server line.
    pub fn as_str(self) -> &'static str {
        match self {
            LearnerType::Participant => "participant",
            LearnerType::Observer => "observer",
        }
    }
}

/// One quorum address of a server: `host:quorumPort:electionPort`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddress {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Port followers use to talk to the leader (2888).
    pub quorum_port: u16,
    /// Leader-election port (3888).
    pub election_port: u16,
}

/// Where a server serves clients: `host:port` (host `0.0.0.0` when the line gave only a port).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientAddress {
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Client port (2181).
    pub port: u16,
}

/// One `server.N=` line, typed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerEntry {
    /// The server id (`myid`).
    pub id: ServerId,
    /// Quorum addresses (more than one with ZooKeeper's multi-address feature).
    pub addresses: Vec<PeerAddress>,
    /// Participant (voter) or observer.
    pub role: LearnerType,
    /// The client address, when the line has one.
    pub client: Option<ClientAddress>,
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Splits `host:rest` where host may be `[v6]`; returns (host without brackets, rest parts).
fn split_host(text: &str) -> Result<(String, Vec<&str>), String> {
    if let Some(after) = text.strip_prefix('[') {
        let end = after
            .find(']')
            .ok_or_else(|| format!("unclosed '[' in {text:?}"))?;
        let host = &after[..end];
        let rest = &after[end + 1..];
        let rest = rest
            .strip_prefix(':')
            .ok_or_else(|| format!("no port after {host:?}"))?;
        Ok((host.to_string(), rest.split(':').collect()))
    } else {
        let mut parts = text.split(':');
        let host = parts.next().unwrap_or_default();
        Ok((host.to_string(), parts.collect()))
    }
}

fn port(text: &str, what: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{what} {text:?} is not a port"))
}

impl ServerEntry {
    /// The value after `server.N=`, in ZooKeeper's canonical form.
    pub fn spec(&self) -> String {
        let addresses: Vec<String> = self
            .addresses
            .iter()
            .map(|a| format!("{}:{}:{}", bracket(&a.host), a.quorum_port, a.election_port))
            .collect();
        let mut out = format!("{}:{}", addresses.join("|"), self.role.as_str());
        if let Some(c) = &self.client {
            out.push_str(&format!(";{}:{}", bracket(&c.host), c.port));
        }
        out
    }

    /// The whole line, `server.N=...`, as given to an incremental reconfig.
    pub fn line(&self) -> String {
        format!("server.{}={}", self.id, self.spec())
    }

    /// Whether the server votes.
    pub fn is_voter(&self) -> bool {
        self.role == LearnerType::Participant
    }

    /// The host other processes reach the server at: the client host unless it is a wildcard,
    /// else the first quorum host.
    pub fn host(&self) -> Option<&str> {
        let client = self
            .client
            .as_ref()
            .map(|c| c.host.as_str())
            .filter(|h| !matches!(*h, "0.0.0.0" | "::" | "0:0:0:0:0:0:0:0"));
        client.or_else(|| self.addresses.first().map(|a| a.host.as_str()))
    }

    /// Parses the value after `server.<id>=`.
    pub fn parse_spec(id: ServerId, spec: &str) -> Result<ServerEntry, String> {
        let (server_part, client_part) = match spec.split_once(';') {
            Some((s, c)) => (s.trim(), Some(c.trim())),
            None => (spec.trim(), None),
        };
        if server_part.is_empty() {
            return Err("no quorum address".into());
        }
        let mut addresses = Vec::new();
        let mut role = None;
        let pieces: Vec<&str> = server_part.split('|').collect();
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let (host, rest) = split_host(piece.trim())?;
            if host.is_empty() {
                return Err(format!("empty host in {piece:?}"));
            }
            let (ports, piece_role) = match rest.as_slice() {
                [q, e] => ((q, e), None),
                [q, e, r] if i == last => ((q, e), Some(*r)),
                _ => {
                    return Err(format!(
                        "expected host:quorumPort:electionPort[:role] in {piece:?}"
                    ));
                }
            };
            if let Some(r) = piece_role {
                role = Some(match r.trim() {
                    "participant" => LearnerType::Participant,
                    "observer" => LearnerType::Observer,
                    other => return Err(format!("unknown role {other:?}")),
                });
            }
            addresses.push(PeerAddress {
                host,
                quorum_port: port(ports.0, "quorum port")?,
                election_port: port(ports.1, "election port")?,
            });
        }
        let client = match client_part {
            None | Some("") => None,
            Some(c) => {
                if !c.contains(':') || (c.starts_with('[') && c.ends_with(']')) {
                    Some(ClientAddress {
                        host: "0.0.0.0".into(),
                        port: port(c, "client port")?,
                    })
                } else {
                    let (host, rest) = split_host(c)?;
                    match rest.as_slice() {
                        [p] if !host.is_empty() => Some(ClientAddress {
                            host,
                            port: port(p, "client port")?,
                        }),
                        _ => {
                            return Err(format!(
                                "expected [host:]port for the client address, got {c:?}"
                            ));
                        }
                    }
                }
            }
        };
        Ok(ServerEntry {
            id,
            addresses,
            role: role.unwrap_or_default(),
            client,
        })
    }
}

impl fmt::Display for ServerEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line())
    }
}

impl FromStr for ServerEntry {
    type Err = ParseError;

    /// Parses a whole `server.N=...` line.
    fn from_str(line: &str) -> Result<Self, ParseError> {
        let bad = |reason: String| ParseError::ServerLine {
            line: line.to_string(),
            reason,
        };
        let rest = line
            .trim()
            .strip_prefix("server.")
            .ok_or_else(|| bad("does not start with server.".into()))?;
        let (id, spec) = rest.split_once('=').ok_or_else(|| bad("no '='".into()))?;
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| bad(format!("{id:?} is not a server id")))?;
        if id == 0 {
            return Err(bad("server id 0 is not allowed".into()));
        }
        ServerEntry::parse_spec(ServerId(id), spec).map_err(bad)
    }
}

/// The committed dynamic configuration: every server line and the config version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnsembleConfig {
    /// The config version: the zxid that committed it (`version=` is its hex form).
    pub version: u64,
    /// Every server, by id.
    pub servers: BTreeMap<ServerId, ServerEntry>,
}

impl EnsembleConfig {
    /// Parses the data of `/zookeeper/config`. The `version=` line is required; other keys
    /// (`group.`, `weight.`) are ignored: quorate never writes them.
    pub fn parse(text: &str) -> Result<EnsembleConfig, ParseError> {
        Self::parse_with_fallback(text, None)
    }

    /// Like [`EnsembleConfig::parse`], taking `fallback_version` (the znode's `mzxid`) when the
    /// text has no `version=` line.
    pub fn parse_with_fallback(
        text: &str,
        fallback_version: Option<u64>,
    ) -> Result<EnsembleConfig, ParseError> {
        let mut servers = BTreeMap::new();
        let mut version = None;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line.starts_with("server.") {
                let entry: ServerEntry = line.parse()?;
                let id = entry.id;
                if servers.insert(id, entry).is_some() {
                    return Err(ParseError::DuplicateId { id });
                }
            } else if let Some(hex) = line.strip_prefix("version=") {
                let v =
                    u64::from_str_radix(hex.trim().trim_start_matches("0x"), 16).map_err(|_| {
                        ParseError::Version {
                            line: line.to_string(),
                        }
                    })?;
                version = Some(v);
            }
        }
        if servers.is_empty() {
            return Err(ParseError::NoServers {
                text: text.chars().take(200).collect(),
            });
        }
        let version = version.or(fallback_version).ok_or(ParseError::NoVersion)?;
        Ok(EnsembleConfig { version, servers })
    }

    /// The server `id`, if it is in the configuration.
    pub fn get(&self, id: ServerId) -> Option<&ServerEntry> {
        self.servers.get(&id)
    }

    /// The voting participants.
    pub fn voters(&self) -> BTreeSet<ServerId> {
        self.servers
            .values()
            .filter(|s| s.is_voter())
            .map(|s| s.id)
            .collect()
    }

    /// The observers.
    pub fn observers(&self) -> BTreeSet<ServerId> {
        self.servers
            .values()
            .filter(|s| !s.is_voter())
            .map(|s| s.id)
            .collect()
    }

    /// The configuration as ZooKeeper prints it (server lines by id, then `version=<hex>`).
    pub fn to_text(&self) -> String {
        let mut out: String = self
            .servers
            .values()
            .map(|s| format!("{}\n", s.line()))
            .collect();
        out.push_str(&format!("version={:x}\n", self.version));
        out
    }

    /// The planner's view: version and voters.
    pub fn membership(&self) -> Membership {
        Membership {
            version: self.version,
            voters: self.voters(),
        }
    }
}

impl From<&EnsembleConfig> for Membership {
    fn from(config: &EnsembleConfig) -> Membership {
        config.membership()
    }
}

impl From<EnsembleConfig> for Membership {
    fn from(config: EnsembleConfig) -> Membership {
        config.membership()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_zookeeper_returns_for_get_config() {
        let text = "server.1=127.0.240.1:2888:3888:participant;127.0.240.1:2181\n\
                    server.2=127.0.240.2:2888:3888:participant;127.0.240.2:2181\n\
                    server.3=127.0.240.3:2888:3888:observer;0.0.0.0:2181\n\
                    version=100000009";
        let config = EnsembleConfig::parse(text).unwrap();
        assert_eq!(config.version, 0x1_0000_0009);
        assert_eq!(config.voters(), [ServerId(1), ServerId(2)].into());
        assert_eq!(config.observers(), [ServerId(3)].into());
        let one = config.get(ServerId(1)).unwrap();
        assert_eq!(
            one.addresses,
            vec![PeerAddress {
                host: "127.0.240.1".into(),
                quorum_port: 2888,
                election_port: 3888
            }]
        );
        assert_eq!(
            one.client,
            Some(ClientAddress {
                host: "127.0.240.1".into(),
                port: 2181
            })
        );
        assert_eq!(one.host(), Some("127.0.240.1"));
        assert_eq!(config.get(ServerId(3)).unwrap().host(), Some("127.0.240.3"));
        assert_eq!(config.to_text(), format!("{text}\n"));
        let m: Membership = (&config).into();
        assert_eq!(
            m,
            Membership {
                version: 0x1_0000_0009,
                voters: [ServerId(1), ServerId(2)].into()
            }
        );
    }

    #[test]
    fn a_line_without_role_or_client_host_equals_what_zookeeper_stores() {
        let given: ServerEntry = "server.4=zk-4.zk:2888:3888;2181".parse().unwrap();
        let stored: ServerEntry = "server.4=zk-4.zk:2888:3888:participant;0.0.0.0:2181"
            .parse()
            .unwrap();
        assert_eq!(given, stored);
        assert_eq!(
            given.line(),
            "server.4=zk-4.zk:2888:3888:participant;0.0.0.0:2181"
        );
        assert_eq!(given.host(), Some("zk-4.zk"));
        let bare: ServerEntry = "server.5=h:1:2".parse().unwrap();
        assert_eq!(bare.client, None);
        assert!(bare.is_voter());
    }

    #[test]
    fn parses_ipv6_and_multiple_addresses() {
        let e: ServerEntry = "server.7=[::1]:2888:3888|10.0.0.7:2889:3889:observer;[::1]:2181"
            .parse()
            .unwrap();
        assert_eq!(e.addresses.len(), 2);
        assert_eq!(e.addresses[0].host, "::1");
        assert_eq!(e.addresses[1].quorum_port, 2889);
        assert_eq!(e.role, LearnerType::Observer);
        assert_eq!(
            e.client,
            Some(ClientAddress {
                host: "::1".into(),
                port: 2181
            })
        );
        assert_eq!(
            e.line(),
            "server.7=[::1]:2888:3888|10.0.0.7:2889:3889:observer;[::1]:2181"
        );
        let round: ServerEntry = e.line().parse().unwrap();
        assert_eq!(round, e);
    }

    #[test]
    fn rejects_malformed_lines_with_the_line_in_the_error() {
        for bad in [
            "server.x=h:1:2",
            "server.0=h:1:2",
            "server.1=h:1",
            "server.1=h:1:2:voter",
            "server.1=h:99999:2",
            "server.1=h:1:2;h:",
            "server.1=",
            "srv.1=h:1:2",
        ] {
            let err = bad.parse::<ServerEntry>().unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
        assert!(matches!(
            EnsembleConfig::parse("server.1=h:1:2\nserver.1=h:1:2\nversion=1"),
            Err(ParseError::DuplicateId { id: ServerId(1) })
        ));
        assert!(matches!(
            EnsembleConfig::parse("version=1"),
            Err(ParseError::NoServers { .. })
        ));
        assert!(matches!(
            EnsembleConfig::parse("server.1=h:1:2\nversion=xyz"),
            Err(ParseError::Version { .. })
        ));
        assert_eq!(
            EnsembleConfig::parse("server.1=h:1:2"),
            Err(ParseError::NoVersion)
        );
        let fallback = EnsembleConfig::parse_with_fallback("server.1=h:1:2", Some(7)).unwrap();
        assert_eq!(fallback.version, 7);
    }
}
