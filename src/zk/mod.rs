//! ZooKeeper ports (traits) and the real clients behind them.
//!
//! - [`MemberProbe`] observes one member; [`AdminProbe`] does it over the AdminServer (HTTP JSON)
//!   and the `conf` four-letter word. [`observe_ensemble`] probes every member at once and
//!   judges who leads and who is synced ([`EnsembleObservation`], convertible into the planner's
//!   [`ZkState`](crate::planner::ZkState) per member).
//! - [`MembershipControl`] reads and changes the membership; [`ZkMembership`] does it with
//!   `getConfig` and incremental `reconfig` through `zookeeper-client`, authenticated as a digest
//!   user, idempotently, and refusing joiners that are not synced.
//! - [`config`] parses `/zookeeper/config` into typed [`ServerEntry`] lines and a version,
//!   convertible into the planner's [`Membership`](crate::planner::Membership).
//!
//! # Serving
//!
//! A member *serves* when its AdminServer answers `srvr` (HTTP 200, JSON `error` null) with a
//! `server_state` of `leader`, `follower`, `observer` or `standalone`. Everything else is not
//! serving: no answer within the request timeout (a dead or SIGSTOPped process), an answer whose
//! `error` is set ("This ZooKeeper instance is not currently serving requests": the member has
//! no quorum), an HTTP error, or `read-only`. `ruok` is never used: it says `imok` without quorum.
//!
//! # Synced
//!
//! ZooKeeper has no command that lists the leader's synced learners by id: the leader's
//! `monitor` only counts them (`synced_followers`, which on 3.8 and 3.9 counts every forwarding
//! follower, voting or not; `synced_observers`; `learners`), and the learners' zxids are no
//! guide either (measured on 3.9.5: with no writes, two synced followers report zxid `0x0` while
//! the leader reports `0x100000000`). So quorate judges a member *synced* in one observation of
//! the whole ensemble when:
//!
//! 1. there is a leader `L`: a serving member whose `server_state` is `leader` (or `standalone`).
//!    When several claim it, the one most serving members name (their `leader` command) wins; a
//!    tie means no leader. Measured on 3.9.5: a leader that has just removed itself still answers
//!    `leader` / `leading - broadcast` for a moment while the others already follow the new one;
//!    it then follows the new leader as a non-voting member and keeps serving clients;
//! 2. the member is `L` itself (a serving leader has a quorum), **or**
//!    - it serves as a `follower` or `observer`, and
//!    - its own `leader` command names `L` (it follows *this* leader, not a stale one), and
//!    - its `monitor` `peer_state` is `following - broadcast` (or `observing - broadcast`): it
//!      finished the DIFF/SNAP/TRUNC synchronisation with `L` and applies its broadcast;
//! 3. and the leader's own count agrees: when more members pass 2 than `L` counts as synced
//!    learners (`synced_followers + synced_observers`), or `L`'s `monitor` did not answer, no
//!    member other than `L` is called synced in that observation.
//!
//! Rule 3 keeps the leader's view authoritative: a member can only be called synced when the
//! leader counts at least as many synced learners. Every failure makes the answer "not synced",
//! never "synced": the planner then waits, it does not act on a guess.
//!
//! A *joiner* (a running member that is not yet in the configuration) is synced by the same
//! rule; it is then a synced non-voting follower, and [`ZkMembership::add_voter`] accepts it.

pub mod admin;
pub mod config;
pub mod ensemble;
pub mod membership;

use std::fmt;
use std::future::Future;

use crate::planner::ServerId;

pub use admin::{AdminProbe, ConfReply, LearnerCounts, MemberObservation, Mode};
pub use config::{ClientAddress, EnsembleConfig, LearnerType, PeerAddress, ServerEntry};
pub use ensemble::{EnsembleObservation, judge_ensemble, observe_ensemble};
pub use membership::{Credentials, Login, ReconfigOutcome, Timeouts, ZkMembership};

/// The client port ZooKeeper members listen on by default.
pub const DEFAULT_CLIENT_PORT: u16 = 2181;
/// The AdminServer port by default.
pub const DEFAULT_ADMIN_PORT: u16 = 8080;

/// Where to reach one member: its client port (four-letter words, sessions) and its AdminServer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberAddr {
    /// The member's server id.
    pub id: ServerId,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// Client port.
    pub client_port: u16,
    /// AdminServer port.
    pub admin_port: u16,
}

impl MemberAddr {
    /// A member on `host` with the default ports (2181, 8080).
    pub fn new(id: ServerId, host: impl Into<String>) -> MemberAddr {
        MemberAddr {
            id,
            host: host.into(),
            client_port: DEFAULT_CLIENT_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
        }
    }

    /// The member a configuration line describes, with its AdminServer on `admin_port` of the same
    /// host; `None` when the line names no usable host.
    pub fn from_entry(entry: &ServerEntry, admin_port: u16) -> Option<MemberAddr> {
        let host = entry.host()?.to_string();
        let client_port = entry
            .client
            .as_ref()
            .map_or(DEFAULT_CLIENT_PORT, |c| c.port);
        Some(MemberAddr {
            id: entry.id,
            host,
            client_port,
            admin_port,
        })
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `host:clientPort`.
    pub fn client_address(&self) -> String {
        format!("{}:{}", self.host_for_url(), self.client_port)
    }

    /// `http://host:adminPort/commands/<command>`.
    pub fn admin_url(&self, command: &str) -> String {
        format!(
            "http://{}:{}/commands/{command}",
            self.host_for_url(),
            self.admin_port
        )
    }
}

impl fmt::Display for MemberAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server.{} ({})", self.id, self.client_address())
    }
}

/// Observes one member. Never fails: whatever goes wrong makes the member "not serving" and is
/// recorded in [`MemberObservation::problems`].
pub trait MemberProbe: Sync {
    /// What the member says about itself, within the probe's own timeouts.
    fn observe(&self, member: &MemberAddr) -> impl Future<Output = MemberObservation> + Send;
}

/// Reads and changes the ensemble's membership, one voter at a time.
pub trait MembershipControl: Sync {
    /// The committed configuration (after a `sync`, so it is not stale).
    fn read_config(&self)
    -> impl Future<Output = Result<EnsembleConfig, membership::Error>> + Send;

    /// Makes every joiner a voter in one reconfig (growing one voter to three adds two at once).
    /// Joiners already voters with the same line count as done, and success comes without a
    /// reconfig when all are; refused when a joiner to add is not a serving, synced follower.
    fn add_voters(
        &self,
        joiners: &[ServerEntry],
    ) -> impl Future<Output = Result<ReconfigOutcome, membership::Error>> + Send;

    /// Removes the servers `ids` from the configuration in one reconfig (shrinking three voters
    /// to one removes two at once). Servers not in it count as done, and success comes without
    /// a reconfig when none is; refused when no voter would be left.
    fn remove_voters(
        &self,
        ids: &[ServerId],
    ) -> impl Future<Output = Result<ReconfigOutcome, membership::Error>> + Send;

    /// Makes `joiner` a voter. Success without a reconfig when it already is one with the same
    /// line; refused when the joiner is not a serving, synced follower.
    fn add_voter(
        &self,
        joiner: &ServerEntry,
    ) -> impl Future<Output = Result<ReconfigOutcome, membership::Error>> + Send {
        self.add_voters(std::slice::from_ref(joiner))
    }

    /// Removes server `id` from the configuration. Success without a reconfig when it is not in it.
    fn remove_voter(
        &self,
        id: ServerId,
    ) -> impl Future<Output = Result<ReconfigOutcome, membership::Error>> + Send {
        async move { self.remove_voters(&[id]).await }
    }
}

/// ZooKeeper's digest of a user and password: `user:base64(sha1("user:password"))`, as the
/// servers' `superDigest` and digest ACLs expect it.
pub fn digest(user: &str, password: &str) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let hash = sha1::Sha1::digest(format!("{user}:{password}").as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

#[cfg(test)]
mod digest_tests {
    #[test]
    fn digest_matches_zookeepers_own_generator() {
        // From `DigestAuthenticationProvider super:superpw` (notes/zookeeper-and-stack.md).
        assert_eq!(
            super::digest("super", "superpw"),
            "super:g9oN2HttPfn8MMWJZ2r45Np/LIA="
        );
    }
}
