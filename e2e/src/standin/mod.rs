//! Stand-in ZooKeeper members: lightweight servers, many to a process, that speak the part of
//! ZooKeeper's AdminServer (HTTP, `/commands/<name>`) and client protocol (jute over TCP,
//! including the four-letter words) that quorate and its member Pods' probes use, so that a
//! benchmark can run a thousand ensembles on one machine. `tests/standin_real.rs` runs the same
//! sequence of quorate's own ZooKeeper calls against real ZooKeeper 3.9.5 and against stand-ins
//! and compares what quorate sees.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quorate_testbed::standin::Error> {
//! use std::net::Ipv4Addr;
//! use quorate_testbed::standin::StandIns;
//! let standins = StandIns::new();
//! let config = "server.1=127.1.0.1:2888:3888:participant;127.1.0.1:2181\n\
//!               server.2=127.1.0.2:2888:3888:participant;127.1.0.2:2181\n\
//!               server.3=127.1.0.3:2888:3888:participant;127.1.0.3:2181\n";
//! let mut members = Vec::new();
//! for id in 1..=3u8 {
//!     let ip = Ipv4Addr::new(127, 1, 0, id);
//!     members.push(standins.start("ns/zk", id.into(), ip, 2181, 8080, config, None).await?);
//! }
//! // ... quorate's AdminProbe and ZkMembership see an ensemble of three with a leader ...
//! members.pop().expect("three").stop().await; // member 3 stops; 1 and 2 keep a quorum
//! # Ok(()) }
//! ```
//!
//! [`kubelet::StandInNode`] runs them as the Pods of a Node of their own, so that the operator
//! manages them through the API server as it manages real members
//! (`benches/thousand_ensembles.rs`).
//!
//! # What is modelled
//!
//! Per ensemble (any key, one [`StandIns`] per process), shared by its members
//! (see [`ensemble`]): the committed configuration and its version; the leader (the highest
//! voter running when an election of 200 ms ends, as ZooKeeper's election picks among equal
//! zxids, while a majority of the voters runs, kept until it stops or leaves; each leader
//! starts a new epoch); the zxid, advanced by every write request (session create and
//! close, create, delete, setData, setACL, multi, reconfig, failed ones too, as ZooKeeper does);
//! a znode tree with ZooKeeper's own nodes and default ACLs; global sessions with timeouts.
//! A member not in the configuration (a joiner, or a removed member) follows the leader
//! without a vote and counts as a synced non-voting follower. Without a quorum no member serves:
//! the AdminServer answers `error` (and `monitor` HTTP 500), the client port closes connect
//! requests, and every client connection is closed when the leader changes.
//!
//! AdminServer ([`admin`]): `ruok`, `server_stats`/`srvr`, `stats`/`stat`, `leader`/`lead`,
//! `monitor`/`mntr`, `configuration`/`conf`/`config`, `voting_view`, `zabstate`,
//! `is_read_only`/`isro`, `last_snapshot`/`lsnp`, with the JSON keys of ZooKeeper 3.9.5;
//! `snapshot` and `restore` answer 403 (no data to back up). Client port ([`client`]): the
//! four-letter words `ruok`, `conf`, `srvr`, `stat`, `mntr`, `isro`; connect (new and
//! re-attached sessions, expired ones refused), ping, `auth` digest (the super digest adds the
//! `super` identity), `sync`, `exists`, `getData`, `getChildren`/`getChildren2`, `getACL`
//! (digests masked without admin), `setACL`, `create` (all four kinds; sequential and ephemeral
//! honoured), `delete`, `setData`, `multi`, `multiRead`, `reconfig` (incremental and
//! non-incremental, ZooKeeper's checks in its order: ReconfigDisabled, BadVersion,
//! BadArguments, NewConfigNoQuorum, NoAuth), `whoAmI`, `getEphemerals`,
//! `getAllChildrenNumber`, `closeSession`.
//!
//! # What is not
//!
//! Watches (accepted, never fired), SASL, TLS, quotas, TTL and container semantics, read-only
//! mode, observers' own election rules, a reconfig in progress (each commits at once), disk.
//! Every member answers from the ensemble's single state: there is no replication lag, so a
//! synced follower always has the leader's data. The pace of an election or a
//! synchronisation is not modelled beyond [`StandIns::with_sync_delay`].
//!
//! # Cost
//!
//! Each member is two listeners and two accept tasks (a few KiB); each connection one task.

pub mod admin;
pub mod client;
pub mod config;
pub mod ensemble;
pub mod jute;
pub mod kubelet;
pub mod tree;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::config::Config;
use self::ensemble::{ELECTION, Options, Running, Shared};

/// Errors of starting a stand-in member.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The dynamic configuration could not be parsed.
    #[error("the dynamic configuration of {ensemble} server.{id} is not understood: {reason}")]
    BadConfig {
        ensemble: String,
        id: u64,
        reason: String,
    },
    /// Stand-ins listen on loopback only.
    #[error("{ip} is not a loopback address (stand-ins listen on 127.0.0.0/8 only)")]
    NotLoopback { ip: Ipv4Addr },
    /// The member already runs.
    #[error("{ensemble} server.{id} already runs")]
    AlreadyRunning { ensemble: String, id: u64 },
    /// A port could not be bound.
    #[error("binding {addr} for {ensemble} server.{id}: {source}")]
    Bind {
        ensemble: String,
        id: u64,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Counters one member reports.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub connections: AtomicU64,
}

/// What a member's listeners share.
pub(crate) struct Member {
    pub id: u64,
    pub client_port: u16,
    pub started: Instant,
    pub ensemble: Arc<Shared>,
    /// Changes (the sender is dropped) when the member stops: its connections close.
    pub stop: watch::Receiver<()>,
    pub stats: Stats,
}

/// Every stand-in ensemble of the process.
pub struct StandIns {
    ensembles: Mutex<HashMap<String, Arc<Shared>>>,
    options: Options,
}

impl StandIns {
    /// No ensembles yet; reconfig enabled, joiners synced as soon as they start.
    pub fn new() -> Arc<StandIns> {
        Arc::new(StandIns::with_options(Options {
            reconfig_enabled: true,
            sync_delay: Duration::ZERO,
            election: ELECTION,
        }))
    }

    fn with_options(options: Options) -> StandIns {
        StandIns {
            ensembles: Mutex::new(HashMap::new()),
            options,
        }
    }

    /// Like [`StandIns::new`], with members that synchronise for `delay` after they start or
    /// a new leader takes over (`following - synchronization`, not serving) before they serve.
    pub fn with_sync_delay(delay: Duration) -> Arc<StandIns> {
        Arc::new(StandIns::with_options(Options {
            reconfig_enabled: true,
            sync_delay: delay,
            election: ELECTION,
        }))
    }

    /// Like [`StandIns::new`], with `reconfigEnabled=false`: every reconfig is refused.
    pub fn without_reconfig() -> Arc<StandIns> {
        Arc::new(StandIns::with_options(Options {
            reconfig_enabled: false,
            sync_delay: Duration::ZERO,
            election: ELECTION,
        }))
    }

    /// The voters of ensemble `ensemble`'s committed configuration, if it ever ran.
    pub fn voters(&self, ensemble: &str) -> Option<Vec<u64>> {
        let all = self.ensembles.lock().unwrap_or_else(|e| e.into_inner());
        let shared = all.get(ensemble)?.clone();
        drop(all);
        Some(shared.with(|st| st.config.voters().collect()))
    }

    /// Serves member `id` of ensemble `ensemble` on `ip` (client and admin port as given).
    /// `dynamic_config` is the text of its dynamic configuration file (`server.N=` lines and an
    /// optional `version=`); the first member started defines the ensemble's committed
    /// configuration, later ones only say whether they start as observers. `super_digest` is
    /// `super:<base64 sha1>` (the first member's is kept).
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        &self,
        ensemble: &str,
        id: u64,
        ip: Ipv4Addr,
        client_port: u16,
        admin_port: u16,
        dynamic_config: &str,
        super_digest: Option<&str>,
    ) -> Result<StandInMember, Error> {
        if !ip.is_loopback() {
            return Err(Error::NotLoopback { ip });
        }
        let config = Config::parse(dynamic_config).map_err(|reason| Error::BadConfig {
            ensemble: ensemble.to_string(),
            id,
            reason,
        })?;
        let observer = config.servers.get(&id).is_some_and(|s| !s.voter);
        let shared = {
            let mut all = self.ensembles.lock().unwrap_or_else(|e| e.into_inner());
            all.entry(ensemble.to_string())
                .or_insert_with(|| {
                    Arc::new(Shared::new(
                        config,
                        super_digest.map(str::to_string),
                        self.options,
                    ))
                })
                .clone()
        };
        if shared.with(|st| st.running.contains_key(&id)) {
            return Err(Error::AlreadyRunning {
                ensemble: ensemble.to_string(),
                id,
            });
        }
        let bind = |port: u16| {
            let addr = SocketAddr::from((ip, port));
            let listen = || {
                let socket = TcpSocket::new_v4()?;
                socket.set_reuseaddr(true)?;
                socket.bind(addr)?;
                socket.listen(128)
            };
            listen().map_err(|source| Error::Bind {
                ensemble: ensemble.to_string(),
                id,
                addr,
                source,
            })
        };
        let client_listener: TcpListener = bind(client_port)?;
        let admin_listener: TcpListener = bind(admin_port)?;
        let (stop_tx, stop_rx) = watch::channel(());
        let member = Arc::new(Member {
            id,
            client_port,
            started: Instant::now(),
            ensemble: shared.clone(),
            stop: stop_rx,
            stats: Stats::default(),
        });
        shared.with(|st| {
            st.running.insert(
                id,
                Running {
                    started: Instant::now(),
                    observer,
                },
            )
        });
        let client = tokio::spawn(client::serve(client_listener, member.clone()));
        let admin = tokio::spawn(admin::serve(admin_listener, member));
        Ok(StandInMember {
            id,
            ensemble: shared,
            tasks: vec![client, admin],
            stop: Some(stop_tx),
        })
    }
}

/// One running stand-in member. Dropping it (or [`StandInMember::stop`]) stops it: it stops
/// listening, its connections close, and the ensemble re-elects without it.
pub struct StandInMember {
    id: u64,
    ensemble: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    stop: Option<watch::Sender<()>>,
}

impl StandInMember {
    /// The member's server id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the member serves now (it has a leader and is synced), as its readiness.
    pub fn serving(&self) -> bool {
        self.ensemble.with(|st| st.serves(self.id))
    }

    /// Stops the member and waits until its ports are closed (so that it can be started again
    /// at once on the same address).
    pub async fn stop(mut self) {
        self.halt();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }

    fn halt(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if self.stop.take().is_some() {
            self.ensemble.with(|st| st.running.remove(&self.id));
        }
    }
}

impl Drop for StandInMember {
    fn drop(&mut self) {
        self.halt();
    }
}
