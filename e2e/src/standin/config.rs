//! Dynamic configurations as ZooKeeper writes them: `server.N=<spec>` lines and `version=<hex>`,
//! parsed and printed the way `QuorumMaj.toString()` does (lines by id, `version=` last, no
//! trailing newline; a client part of only a port becomes `0.0.0.0:<port>`).

use std::collections::BTreeMap;

/// One server line, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// Quorum addresses as `host:quorumPort:electionPort`, joined by `|`.
    pub quorum: String,
    /// Votes (`participant`) or not (`observer`).
    pub voter: bool,
    /// `host:port` of the client port.
    pub client: String,
}

impl Server {
    /// The text after `server.N=`.
    pub fn spec(&self) -> String {
        format!(
            "{}:{};{}",
            self.quorum,
            if self.voter {
                "participant"
            } else {
                "observer"
            },
            self.client
        )
    }

    /// The `host:quorumPort` pairs, to find duplicates.
    fn quorum_addresses(&self) -> impl Iterator<Item = String> + '_ {
        self.quorum.split('|').filter_map(|a| {
            let (host_port, _) = a.rsplit_once(':')?;
            Some(host_port.to_string())
        })
    }

    /// Parses the text after `server.N=` (`BadArguments` in ZooKeeper when it fails).
    pub fn parse(spec: &str) -> Result<Server, String> {
        let (server_part, client_part) = match spec.split_once(';') {
            Some((s, c)) => (s.trim(), Some(c.trim())),
            None => (spec.trim(), None),
        };
        let pieces: Vec<&str> = server_part.split('|').map(str::trim).collect();
        let mut voter = true;
        let mut quorum = Vec::new();
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let (host, rest) = split_host(piece)?;
            let (q, e, role) = match rest.as_slice() {
                [q, e] => (*q, *e, None),
                [q, e, r] if i == last => (*q, *e, Some(*r)),
                _ => return Err(format!("{piece:?} is not host:quorumPort:electionPort")),
            };
            port(q)?;
            port(e)?;
            match role {
                None | Some("participant") => {}
                Some("observer") => voter = false,
                Some(other) => return Err(format!("unknown role {other:?}")),
            }
            quorum.push(format!("{host}:{q}:{e}"));
        }
        let client = match client_part {
            None => return Err("no client port".into()),
            Some(c) => match c.rsplit_once(':') {
                Some((host, p)) => {
                    port(p)?;
                    format!("{host}:{p}")
                }
                None => {
                    port(c)?;
                    format!("0.0.0.0:{c}")
                }
            },
        };
        Ok(Server {
            quorum: quorum.join("|"),
            voter,
            client,
        })
    }
}

fn split_host(text: &str) -> Result<(&str, Vec<&str>), String> {
    if text.starts_with('[') {
        let end = text
            .find(']')
            .ok_or_else(|| format!("unclosed '[' in {text:?}"))?;
        let rest = text[end + 1..]
            .strip_prefix(':')
            .ok_or_else(|| format!("no port in {text:?}"))?;
        Ok((&text[..=end], rest.split(':').collect()))
    } else {
        let mut parts = text.split(':');
        let host = parts.next().unwrap_or_default();
        if host.is_empty() {
            return Err(format!("no host in {text:?}"));
        }
        Ok((host, parts.collect()))
    }
}

fn port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{text:?} is not a port"))
}

/// A configuration: servers by id and the version (the zxid that committed it; 0 when a file
/// has no `version=` line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub servers: BTreeMap<u64, Server>,
    pub version: u64,
}

impl Config {
    /// Parses a dynamic configuration file (or `/zookeeper/config`). Other keys are ignored.
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config = Config::default();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("{line:?} is not key=value"));
            };
            if let Some(id) = key.trim().strip_prefix("server.") {
                let id: u64 = id
                    .parse()
                    .map_err(|_| format!("bad server id in {line:?}"))?;
                let server = Server::parse(value).map_err(|e| format!("{line:?}: {e}"))?;
                if config.servers.insert(id, server).is_some() {
                    return Err(format!("server.{id} appears twice"));
                }
            } else if key.trim() == "version" {
                config.version = u64::from_str_radix(value.trim(), 16)
                    .map_err(|_| format!("bad version in {line:?}"))?;
            }
        }
        if config.servers.is_empty() {
            return Err("no server line".into());
        }
        Ok(config)
    }

    /// The voters' ids.
    pub fn voters(&self) -> impl Iterator<Item = u64> + '_ {
        self.servers
            .iter()
            .filter(|(_, s)| s.voter)
            .map(|(id, _)| *id)
    }

    /// Whether `ids` hold a majority of the voters.
    pub fn is_quorum(&self, ids: impl IntoIterator<Item = u64>) -> bool {
        let voters = self.voters().count();
        let present = ids
            .into_iter()
            .filter(|id| self.servers.get(id).is_some_and(|s| s.voter))
            .count();
        voters > 0 && present * 2 > voters
    }

    /// The text of `/zookeeper/config`.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (id, s) in &self.servers {
            out.push_str(&format!("server.{id}={}\n", s.spec()));
        }
        out.push_str(&format!("version={:x}", self.version));
        out
    }

    /// The configuration after an incremental reconfig: `leaving` ids removed, then each
    /// `joining` line (`server.N=spec`, comma-separated in the request) put in place.
    /// `Err` is ZooKeeper's BadArguments.
    pub fn incremental(&self, joining: &[&str], leaving: &[&str]) -> Result<Config, String> {
        let mut next = self.servers.clone();
        for id in leaving {
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| format!("bad leaving server id {id:?}"))?;
            next.remove(&id);
        }
        for joiner in joining {
            let parts: Vec<&str> = joiner.split('=').collect();
            let [key, spec] = parts.as_slice() else {
                return Err("Wrong format of server string".into());
            };
            let id: u64 = key
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .trim()
                .parse()
                .map_err(|_| format!("bad server id in {joiner:?}"))?;
            let server = Server::parse(spec).map_err(|_| "Reconfiguration failed".to_string())?;
            for (other_id, other) in &next {
                if *other_id != id
                    && other
                        .quorum_addresses()
                        .any(|a| server.quorum_addresses().any(|b| a == b))
                {
                    return Err("Reconfiguration failed".into());
                }
            }
            next.insert(id, server);
        }
        Ok(Config {
            servers: next,
            version: self.version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_like_zookeeper() {
        let c = Config::parse(
            "server.2=127.1.0.2:2888:3888;2181\nserver.1=127.1.0.1:2888:3888:participant;127.1.0.1:2181\n",
        )
        .unwrap();
        assert_eq!(c.version, 0);
        assert_eq!(
            c.to_text(),
            "server.1=127.1.0.1:2888:3888:participant;127.1.0.1:2181\n\
             server.2=127.1.0.2:2888:3888:participant;0.0.0.0:2181\nversion=0"
        );
        assert!(Config::parse("version=1").is_err());
        assert!(
            Server::parse("h:1:2:participant").is_err(),
            "no client port"
        );
    }

    #[test]
    fn incremental_changes_add_and_remove() {
        let c = Config::parse("server.1=a:1:2;3\nserver.2=b:1:2;3\nversion=100000000").unwrap();
        let next = c
            .incremental(&["server.3=c:1:2:observer;c:3"], &["2"])
            .unwrap();
        assert_eq!(next.servers.keys().copied().collect::<Vec<_>>(), [1, 3]);
        assert!(!next.servers[&3].voter);
        assert!(
            c.incremental(&["server.3=a:1:5;3"], &[]).is_err(),
            "a:1 is taken"
        );
        assert!(c.incremental(&["server.3"], &[]).is_err());
        assert!(c.is_quorum([1, 2]));
        assert!(!c.is_quorum([1]));
    }
}
