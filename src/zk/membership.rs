//! Reading and changing the membership: `getConfig` and incremental `reconfig` through
//! `zookeeper-client`, authenticated as a digest user (the operator user with `rwa` on
//! `/zookeeper/config`, or super).
//!
//! Every change is idempotent and decided from the committed configuration, never from the
//! reply alone:
//!
//! 1. connect (bounded), `sync`, read `/zookeeper/config`;
//! 2. if the change is already in place (every joiner is a voter with the same line; no leaving
//!    server is in the configuration), succeed without a reconfig;
//! 3. before an add, observe the ensemble and refuse a joiner that is not a serving, synced
//!    follower (ZooKeeper itself commits a dead joiner when the old voters form a quorum);
//! 4. send the reconfig, conditioned on the version read in 1, for the part not yet in place:
//!    one reconfig for all of it (growing one voter to three adds both joiners at once, and
//!    shrinking three to one removes both followers at once, so that no configuration of two
//!    voters is ever committed);
//! 5. on `BadVersion` go back to 1; on a connection loss, a timeout or an expired session, drop
//!    the session, reconnect, and go back to 1, which decides whether the change committed. (A
//!    leader that removes itself drops every connection once the change commits; measured on
//!    3.9.5, the reply usually arrives first, but not always.)
//!
//! Every request has its own timeout, and the whole operation a deadline.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use tracing::{debug, info, warn};
use zookeeper_client as zkc;

use super::admin::{AdminProbe, Mode};
use super::config::{EnsembleConfig, ParseError, ServerEntry};
use super::ensemble::{EnsembleObservation, observe_ensemble};
use super::{DEFAULT_ADMIN_PORT, MemberAddr, MemberProbe, MembershipControl};
use crate::planner::ServerId;

/// ZooKeeper's `NewConfigNoQuorum` (not mapped by `zookeeper-client`).
const NEW_CONFIG_NO_QUORUM: i32 = -13;
/// ZooKeeper's `ReconfigInProgress` (not mapped by `zookeeper-client`).
const RECONFIG_IN_PROGRESS: i32 = -14;

/// Errors of reading or changing the membership. `op` is the operation, such as
/// `add server.4` or `remove server.2`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No session could be established.
    #[error("connecting to ZooKeeper at {connect}: {source}")]
    Connect {
        /// The connect string.
        connect: String,
        /// What the client said.
        #[source]
        source: zkc::Error,
    },
    /// Reading `/zookeeper/config` failed for a reason other than the connection.
    #[error("reading /zookeeper/config through {connect}: {source}")]
    ReadConfig {
        /// The connect string.
        connect: String,
        /// What the client said.
        #[source]
        source: zkc::Error,
    },
    /// `/zookeeper/config` (or a reconfig reply) could not be parsed.
    #[error("the configuration ZooKeeper returned is not understood: {source}")]
    BadConfig {
        /// The parse error, naming the line.
        #[source]
        source: ParseError,
    },
    /// The session's user may not reconfigure.
    #[error(
        "reconfig needs the operator credentials: {op} was refused (NoAuth) for {who}; the user needs \
         rwa on /zookeeper/config (or to be the super user)"
    )]
    NoAuth {
        /// The operation.
        op: String,
        /// The digest user, or "an unauthenticated session".
        who: String,
    },
    /// The joiner is not a serving, synced follower, so it must not become a voter.
    #[error("refusing to add server.{id} as a voter: {reason}")]
    JoinerNotReady {
        /// The joiner.
        id: ServerId,
        /// Why, with what was observed.
        reason: String,
    },
    /// The id is in the configuration with another line.
    #[error(
        "cannot add server.{id}: the configuration has {existing:?}, not {wanted:?}; remove it first"
    )]
    ConflictingEntry {
        /// The server id.
        id: ServerId,
        /// The line in the configuration.
        existing: String,
        /// The line asked for.
        wanted: String,
    },
    /// Removing the only voter (or every voter) is impossible (ZooKeeper answers BadArguments).
    #[error("refusing to remove server.{id}: no voter would be left")]
    LastVoter {
        /// The server id.
        id: ServerId,
    },
    /// The new configuration would have no quorum of connected, synced members.
    #[error(
        "{op}: no quorum of the new configuration is connected and synced with the leader \
         (NewConfigNoQuorum); start and sync the new members first"
    )]
    NewConfigNoQuorum {
        /// The operation.
        op: String,
    },
    /// Reading or changing the ACL of `/zookeeper/config` failed.
    #[error("{op} of /zookeeper/config as {who}: {source}")]
    Acl {
        /// `getACL` or `setACL`.
        op: AclOp,
        /// The digest user, or "an unauthenticated session".
        who: String,
        /// What the client said.
        #[source]
        source: zkc::Error,
    },
    /// The servers run with `reconfigEnabled=false`.
    #[error("{op}: dynamic reconfiguration is disabled on the servers (set reconfigEnabled=true)")]
    ReconfigDisabled {
        /// The operation.
        op: String,
    },
    /// The server does not implement reconfig: it runs standalone.
    #[error(
        "{op}: the server does not implement reconfig (Unimplemented); it runs standalone (set standaloneEnabled=false)"
    )]
    Standalone {
        /// The operation.
        op: String,
    },
    /// ZooKeeper rejected the reconfig for another reason.
    #[error("{op}: ZooKeeper rejected the reconfig: {source}")]
    Rejected {
        /// The operation.
        op: String,
        /// What the client said.
        #[source]
        source: zkc::Error,
    },
    /// The operation did not finish before its deadline (connection losses, conflicts, an
    /// election that takes long, ...).
    #[error(
        "{op} did not finish within {deadline:?} ({attempts} attempts{}); last problem: {last}",
        if *sent { "" } else { ", no reconfig request sent" }
    )]
    GaveUp {
        /// The operation.
        op: String,
        /// The deadline.
        deadline: Duration,
        /// How many rounds were tried.
        attempts: u32,
        /// The last problem seen.
        last: String,
        /// Whether a reconfig request went out at all. When none did, ZooKeeper certainly did
        /// not apply the change (no session, or none connected, in time).
        sent: bool,
    },
}

impl Error {
    /// Whether this error proves that ZooKeeper did not apply the change: it came before any
    /// reconfig request was sent. Only a removal that certainly did not happen may be taken
    /// back in the records (see the ensemble controller); anything else may have committed.
    pub fn before_any_request(&self) -> bool {
        match self {
            Error::GaveUp { sent, .. } => !sent,
            // Raised only outside the reconfig loop: the session or the ACL check before it.
            Error::Connect { .. } | Error::Acl { .. } => true,
            _ => false,
        }
    }

    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::GaveUp { .. }
                | Error::NewConfigNoQuorum { .. }
                | Error::JoinerNotReady { .. }
        ) || matches!(self, Error::ReadConfig { source, .. } if is_connection_problem(source))
    }
}

/// A request on an ACL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclOp {
    /// `getACL`.
    Get,
    /// `setACL`.
    Set,
}

impl fmt::Display for AclOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AclOp::Get => "getACL",
            AclOp::Set => "setACL",
        })
    }
}

/// The node whose write permission allows a reconfig.
const CONFIG_NODE: &str = "/zookeeper/config";

/// The ACL `/zookeeper/config` needs so that `user` may reconfigure (read, write and admin on
/// the node for its digest: write for the reconfig, admin because ZooKeeper shows the digests
/// of an ACL only to a user with admin on the node, so that the user can tell it was granted),
/// or `None` when `acl` already allows it. Other entries are kept; an
/// entry of the same user name with another digest (an older password) is dropped.
pub fn reconfig_grant(acl: &[zkc::Acl], user: &Credentials) -> Option<Vec<zkc::Acl>> {
    let id = user.acl_id();
    let needed = zkc::Permission::READ | zkc::Permission::WRITE | zkc::Permission::ADMIN;
    if acl
        .iter()
        .any(|a| a.scheme() == "digest" && a.id() == id && a.permission().has(needed))
    {
        return None;
    }
    let prefix = format!("{}:", user.user());
    let mut wanted: Vec<zkc::Acl> = acl
        .iter()
        .filter(|a| !(a.scheme() == "digest" && a.id().starts_with(&prefix)))
        .cloned()
        .collect();
    wanted.push(zkc::Acl::new(needed, zkc::AuthId::new("digest", &id)));
    Some(wanted)
}

/// The ACL of `/` with the admin permission taken from `world:anyone`, or `None` when no
/// `world:anyone` entry holds it. ZooKeeper's AdminServer lets anyone who sends any digest
/// header run `snapshot` (the whole database) and `restore` (replace it) while `world:anyone`
/// has every permission on `/`, ZooKeeper's default; without admin there, only an identity
/// with every permission on `/` (the super user) may. Clients keep create, read, write and
/// delete on `/`; only changing the root's own ACL needs the super user now. An entry left
/// with no permission at all is dropped, unless it is the only one (an ACL may not be empty).
pub fn root_locked(acl: &[zkc::Acl]) -> Option<Vec<zkc::Acl>> {
    let open = |a: &zkc::Acl| a.scheme() == "world" && a.id() == "anyone";
    if !acl
        .iter()
        .any(|a| open(a) && a.permission().has(zkc::Permission::ADMIN))
    {
        return None;
    }
    let kept = zkc::Permission::READ
        | zkc::Permission::WRITE
        | zkc::Permission::CREATE
        | zkc::Permission::DELETE;
    let wanted: Vec<zkc::Acl> = acl
        .iter()
        .map(|a| match open(a) {
            true => zkc::Acl::new(a.permission() & kept, a.auth_id().clone()),
            false => a.clone(),
        })
        .filter(|a| a.permission() != zkc::Permission::NONE)
        .collect();
    (!wanted.is_empty()).then_some(wanted)
}

/// The failures after which the session is dropped and the configuration read again.
fn is_connection_problem(e: &zkc::Error) -> bool {
    matches!(
        e,
        zkc::Error::ConnectionLoss
            | zkc::Error::SessionExpired
            | zkc::Error::ClientClosed
            | zkc::Error::Timeout
            | zkc::Error::NoHosts
            | zkc::Error::SessionMoved
    )
}

/// A digest user (`user:password`). The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    user: String,
    password: String,
}

impl Credentials {
    /// Digest credentials.
    pub fn digest(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The id of this user in a `digest` ACL entry: `user:base64(sha1(user:password))`.
    pub fn acl_id(&self) -> String {
        super::digest(&self.user, &self.password)
    }

    fn auth_bytes(&self) -> Vec<u8> {
        format!("{}:{}", self.user, self.password).into_bytes()
    }

    /// The same user and password as a SASL DIGEST-MD5 login.
    fn sasl_options(&self) -> zkc::SaslOptions {
        zkc::SaslOptions::digest_md5(self.user.clone(), self.password.clone()).into()
    }
}

/// Who a session is: a SASL login first (servers that enforce client authentication refuse
/// every request of a session without it), then a digest identity for ACLs.
#[derive(Clone, Debug, Default)]
pub struct Login {
    /// The SASL DIGEST-MD5 login, for servers with client authentication on.
    pub sasl: Option<Credentials>,
    /// The digest identity added after it (`addauth digest user:password`).
    pub digest: Option<Credentials>,
}

impl Login {
    /// A digest identity without a SASL login.
    pub fn digest(digest: Credentials) -> Login {
        Login {
            sasl: None,
            digest: Some(digest),
        }
    }

    /// The same, logged in with SASL as `sasl` first when given.
    pub fn with_sasl(mut self, sasl: Option<Credentials>) -> Login {
        self.sasl = sasl;
        self
    }

    /// A connector that logs every session in as this.
    pub fn connector(&self, session_timeout: Duration) -> zkc::Connector {
        let mut connector = zkc::Client::connector().with_session_timeout(session_timeout);
        if let Some(login) = &self.sasl {
            connector = connector.with_sasl(login.sasl_options());
        }
        if let Some(c) = &self.digest {
            connector = connector.with_auth("digest", &c.auth_bytes());
        }
        connector
    }
}

/// `(user, password)`: a digest identity without a SASL login.
impl From<(&str, &str)> for Login {
    fn from((user, password): (&str, &str)) -> Login {
        Login::digest(Credentials::digest(user, password))
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Timeouts of [`ZkMembership`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a session.
    pub connect: Duration,
    /// The session timeout negotiated with the servers.
    pub session: Duration,
    /// One request (`sync`, `getConfig`, `reconfig`).
    pub request: Duration,
    /// Observing the ensemble before an add (per member, all at once).
    pub probe: Duration,
    /// A whole add or remove, retries included.
    pub operation: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            session: Duration::from_secs(10),
            request: Duration::from_secs(10),
            probe: Duration::from_secs(3),
            operation: Duration::from_secs(60),
        }
    }
}

/// The result of an add or remove that succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconfigOutcome {
    /// The committed configuration afterwards.
    pub config: EnsembleConfig,
    /// This call sent a reconfig before it found the change in place; false when the change was
    /// already in place (a no-op).
    pub changed: bool,
    /// Connection losses (or timeouts) recovered from by reconnecting and re-reading.
    pub connection_losses: u32,
    /// `BadVersion` answers recovered from by re-reading.
    pub version_conflicts: u32,
}

/// Why reading `/zookeeper/config` failed.
enum ReadError {
    Zk(zkc::Error),
    Parse(ParseError),
}

/// The change asked for: joiners to add, or servers to remove, in one reconfig.
enum Goal<'a> {
    Add(&'a [ServerEntry]),
    Remove(&'a [ServerId]),
}

/// Whether the change is in a configuration.
#[derive(Debug)]
enum Progress {
    Done,
    /// Not yet: the part still to do (joiners not yet voters, servers still in it).
    Pending(Pending),
}

/// The part of a change that is not in place yet.
#[derive(Debug, PartialEq, Eq)]
enum Pending {
    Add(Vec<ServerEntry>),
    Remove(Vec<ServerId>),
}

fn ids_text<I: fmt::Display>(ids: impl IntoIterator<Item = I>) -> String {
    ids.into_iter()
        .map(|id| format!("server.{id}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Goal<'_> {
    fn op(&self) -> String {
        match self {
            Goal::Add(joiners) => format!("add {}", ids_text(joiners.iter().map(|e| e.id))),
            Goal::Remove(ids) => format!("remove {}", ids_text(ids.iter())),
        }
    }

    fn progress(&self, config: &EnsembleConfig) -> Result<Progress, Error> {
        match self {
            Goal::Add(joiners) => {
                let mut missing = Vec::new();
                for joiner in joiners.iter() {
                    match config.get(joiner.id) {
                        Some(existing) if existing == joiner => {}
                        Some(existing) => {
                            return Err(Error::ConflictingEntry {
                                id: joiner.id,
                                existing: existing.line(),
                                wanted: joiner.line(),
                            });
                        }
                        None => missing.push(joiner.clone()),
                    }
                }
                Ok(if missing.is_empty() {
                    Progress::Done
                } else {
                    Progress::Pending(Pending::Add(missing))
                })
            }
            Goal::Remove(ids) => {
                let present: Vec<ServerId> = ids
                    .iter()
                    .copied()
                    .filter(|id| config.get(*id).is_some())
                    .collect();
                if present.is_empty() {
                    return Ok(Progress::Done);
                }
                let voters = config.voters();
                if voters.iter().all(|v| present.contains(v)) {
                    // Removing every voter is impossible (ZooKeeper answers BadArguments).
                    return Err(Error::LastVoter { id: present[0] });
                }
                Ok(Progress::Pending(Pending::Remove(present)))
            }
        }
    }
}

/// Reads and changes the membership of one ensemble through `zookeeper-client`.
pub struct ZkMembership<P = AdminProbe> {
    connect: String,
    credentials: Option<Credentials>,
    /// The SASL (DIGEST-MD5) login each session makes first, where the servers require one.
    sasl: Option<Credentials>,
    /// TLS to every server of the connect string (their secure client ports), trusting these
    /// CA certificates (PEM) and checking each server's name or address against its certificate.
    tls: Option<zkc::TlsOptions>,
    timeouts: Timeouts,
    admin_port: u16,
    /// Where to probe a member instead of the host of its configuration line (the operator
    /// knows each member's Pod IP; the DNS names in the lines may not resolve where it runs).
    hosts: BTreeMap<ServerId, String>,
    probe: P,
    client: tokio::sync::Mutex<Option<zkc::Client>>,
}

impl<P> fmt::Debug for ZkMembership<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkMembership")
            .field("connect", &self.connect)
            .field("credentials", &self.credentials)
            .field("sasl", &self.sasl)
            .field("tls", &self.tls.is_some())
            .field("timeouts", &self.timeouts)
            .field("admin_port", &self.admin_port)
            .finish_non_exhaustive()
    }
}

impl ZkMembership<AdminProbe> {
    /// A client of the ensemble at `connect` (`host:port,host:port,...`), authenticated with
    /// `credentials` (none: reconfig will be refused), probing joiners with an [`AdminProbe`].
    pub fn new(
        connect: impl Into<String>,
        credentials: Option<Credentials>,
    ) -> Result<ZkMembership<AdminProbe>, super::admin::Error> {
        let timeouts = Timeouts::default();
        Ok(ZkMembership {
            connect: connect.into(),
            credentials,
            sasl: None,
            tls: None,
            timeouts,
            admin_port: DEFAULT_ADMIN_PORT,
            hosts: BTreeMap::new(),
            probe: AdminProbe::new(timeouts.probe)?,
            client: tokio::sync::Mutex::new(None),
        })
    }
}

impl<P: MemberProbe> ZkMembership<P> {
    /// Uses `probe` to check joiners.
    pub fn with_probe<Q: MemberProbe>(self, probe: Q) -> ZkMembership<Q> {
        ZkMembership {
            connect: self.connect,
            credentials: self.credentials,
            sasl: self.sasl,
            tls: self.tls,
            timeouts: self.timeouts,
            admin_port: self.admin_port,
            hosts: self.hosts,
            probe,
            client: self.client,
        }
    }

    /// Logs every session in with SASL DIGEST-MD5 as `login` before anything else: the client
    /// authentication of servers that enforce it (`enforce.auth.schemes=sasl`), which refuse
    /// every request of a session without it. The digest credentials are added after it.
    pub fn with_sasl(mut self, login: Option<Credentials>) -> Self {
        self.sasl = login;
        self
    }

    /// Speaks TLS to every server of the connect string (which must name their secure client
    /// ports), trusting the CA certificates in `ca_pem`; a server's certificate must name the
    /// host or address it is reached at.
    pub fn with_tls(mut self, ca_pem: &str) -> Result<Self, Error> {
        let options = zkc::TlsOptions::new()
            .with_pem_ca(ca_pem)
            .map_err(|source| Error::Connect {
                connect: self.connect.clone(),
                source,
            })?;
        self.tls = Some(options);
        Ok(self)
    }

    /// Other timeouts.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// The members' AdminServer port (default 8080), on the host of their configuration line.
    pub fn with_admin_port(mut self, port: u16) -> Self {
        self.admin_port = port;
        self
    }

    /// Probes member `id` at `host` rather than at the host of its configuration line.
    pub fn with_member_hosts(mut self, hosts: BTreeMap<ServerId, String>) -> Self {
        self.hosts = hosts;
        self
    }

    /// The connect string.
    pub fn connect_string(&self) -> &str {
        &self.connect
    }

    /// The members of `config` (and `extra`) as probe addresses.
    pub fn member_addrs<'a>(
        &self,
        config: &'a EnsembleConfig,
        extra: impl IntoIterator<Item = &'a ServerEntry>,
    ) -> Vec<MemberAddr> {
        config
            .servers
            .values()
            .chain(extra)
            .filter_map(|e| {
                let mut addr = MemberAddr::from_entry(e, self.admin_port)?;
                if let Some(host) = self.hosts.get(&e.id) {
                    addr.host = host.clone();
                }
                Some(addr)
            })
            .collect()
    }

    async fn call<T>(
        &self,
        request: impl Future<Output = Result<T, zkc::Error>>,
    ) -> Result<T, zkc::Error> {
        tokio::time::timeout(self.timeouts.request, request)
            .await
            .unwrap_or(Err(zkc::Error::Timeout))
    }

    /// The cached session, or a new one.
    async fn session(&self) -> Result<zkc::Client, Error> {
        let mut cached = self.client.lock().await;
        if let Some(client) = cached.as_ref() {
            return Ok(client.clone());
        }
        let login = Login {
            sasl: self.sasl.clone(),
            digest: self.credentials.clone(),
        };
        let connector = login.connector(self.timeouts.session);
        let connecting = match &self.tls {
            Some(tls) => connector
                .with_tls(tls.clone())
                .secure_connect(&self.connect)
                .boxed(),
            None => connector.connect(&self.connect).boxed(),
        };
        let client = tokio::time::timeout(self.timeouts.connect, connecting)
            .await
            .unwrap_or(Err(zkc::Error::Timeout))
            .map_err(|source| Error::Connect {
                connect: self.connect.clone(),
                source,
            })?;
        debug!(connect = %self.connect, session = ?client.session_id(), "connected");
        *cached = Some(client.clone());
        Ok(client)
    }

    /// Drops the session; the next call connects again.
    async fn forget_session(&self) {
        self.client.lock().await.take();
    }

    async fn read_with(&self, client: &zkc::Client) -> Result<EnsembleConfig, ReadError> {
        // The server this session uses may lag; sync makes it catch up with the leader.
        self.call(client.sync("/")).await.map_err(ReadError::Zk)?;
        let (data, stat) = self
            .call(client.get_config())
            .await
            .map_err(ReadError::Zk)?;
        parse_config(&data, stat.mzxid).map_err(ReadError::Parse)
    }

    fn read_error(&self, e: ReadError) -> Error {
        match e {
            ReadError::Zk(source) => Error::ReadConfig {
                connect: self.connect.clone(),
                source,
            },
            ReadError::Parse(source) => Error::BadConfig { source },
        }
    }

    /// The committed configuration (after a `sync`), reconnecting once after a connection
    /// problem.
    pub async fn read_config(&self) -> Result<EnsembleConfig, Error> {
        let mut last = zkc::Error::ConnectionLoss;
        for _ in 0..2 {
            let client = self.session().await?;
            match self.read_with(&client).await {
                Ok(config) => return Ok(config),
                Err(ReadError::Zk(e)) if is_connection_problem(&e) => {
                    self.forget_session().await;
                    last = e;
                }
                Err(e) => return Err(self.read_error(e)),
            }
        }
        Err(self.read_error(ReadError::Zk(last)))
    }

    fn who(&self) -> String {
        match &self.credentials {
            Some(c) => format!("digest user {:?}", c.user()),
            None => "an unauthenticated session".into(),
        }
    }

    /// The ACL of `path` and its version (after a `sync`), reconnecting once after a
    /// connection problem; any other failure ends it at once.
    async fn acl_of(&self, path: &str) -> Result<(zkc::Client, Vec<zkc::Acl>, i32), Error> {
        let mut last = zkc::Error::ConnectionLoss;
        for _ in 0..2 {
            let client = self.session().await?;
            let read = async {
                self.call(client.sync(path)).await?;
                self.call(client.get_acl(path)).await
            };
            match read.await {
                Ok((acl, stat)) => return Ok((client, acl, stat.aversion)),
                Err(e) if is_connection_problem(&e) => {
                    self.forget_session().await;
                    last = e;
                }
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(Error::Acl {
            op: AclOp::Get,
            who: self.who(),
            source: last,
        })
    }

    /// Whether this client's user may reconfigure: the ACL of `/zookeeper/config` gives its
    /// digest read, write and admin. (Super may always; it is not asked here.)
    pub async fn may_reconfigure(&self) -> Result<bool, Error> {
        let Some(credentials) = &self.credentials else {
            return Ok(false);
        };
        let (_, acl, _) = self.acl_of(CONFIG_NODE).await?;
        Ok(reconfig_grant(&acl, credentials).is_none())
    }

    /// Grants `to` read, write and admin on `/zookeeper/config`, so that it may reconfigure; this
    /// client's user must be allowed to change that ACL (the super user). Entries of other
    /// users are kept; an older entry of `to`'s user name (another password) is replaced. The
    /// change is conditioned on the ACL version read. Returns whether anything changed.
    pub async fn grant_reconfigure(&self, to: &Credentials) -> Result<bool, Error> {
        let changed = self
            .change_acl(CONFIG_NODE, |acl| reconfig_grant(acl, to))
            .await?;
        if changed {
            info!(user = to.user(), "granted rwa on {CONFIG_NODE}");
        }
        Ok(changed)
    }

    /// Takes the admin permission on `/` away from `world:anyone` (see [`root_locked`]), so that
    /// the AdminServer's `snapshot` and `restore` commands, which need every permission on `/`,
    /// answer only the super user. This client's user must be allowed to change that ACL (the
    /// super user). The change is conditioned on the ACL version read. Returns whether
    /// anything changed.
    pub async fn lock_root(&self) -> Result<bool, Error> {
        let changed = self.change_acl("/", root_locked).await?;
        if changed {
            info!("took the admin permission on / from world:anyone");
        }
        Ok(changed)
    }

    /// Sets the ACL of `path` to what `wanted` makes of the current one (`None`: nothing to
    /// change), conditioned on the ACL version read. Returns whether anything changed.
    async fn change_acl(
        &self,
        path: &str,
        wanted: impl FnOnce(&[zkc::Acl]) -> Option<Vec<zkc::Acl>>,
    ) -> Result<bool, Error> {
        let (client, acl, version) = self.acl_of(path).await?;
        let Some(wanted) = wanted(&acl) else {
            return Ok(false);
        };
        self.call(client.set_acl(path, &wanted, Some(version)))
            .await
            .map_err(|source| Error::Acl {
                op: AclOp::Set,
                who: self.who(),
                source,
            })?;
        Ok(true)
    }

    /// Refuses a joiner that is not a serving follower the leader has synced. Every member is
    /// asked first (to find the leader and judge who is synced); the answers are then as old as
    /// the slowest probe, which for a member cut off or paused is the whole probe timeout, so
    /// the joiner and its leader are asked again, alone, and the reconfig goes on that answer,
    /// one round trip old. (The fault campaign saw a joiner judged synced 3 s before its
    /// reconfig drop out of the ensemble in between.)
    pub async fn check_joiner(
        &self,
        config: &EnsembleConfig,
        joiner: &ServerEntry,
    ) -> Result<(), Error> {
        if MemberAddr::from_entry(joiner, self.admin_port).is_none()
            && !self.hosts.contains_key(&joiner.id)
        {
            return Err(Error::JoinerNotReady {
                id: joiner.id,
                reason: format!("its line {:?} names no host to probe", joiner.line()),
            });
        }
        let addrs = self.member_addrs(config, [joiner]);
        let seen = observe_ensemble(&self.probe, &addrs, self.timeouts.probe).await;
        judge_joiner(&seen, joiner.id)?;
        let fresh: Vec<MemberAddr> = addrs
            .into_iter()
            .filter(|a| a.id == joiner.id || Some(a.id) == seen.leader)
            .collect();
        let again = observe_ensemble(&self.probe, &fresh, FRESH_PROBE).await;
        judge_joiner(&again, joiner.id).map_err(|e| match e {
            Error::JoinerNotReady { id, reason } => Error::JoinerNotReady {
                id,
                reason: format!("{reason}, asked again right before the reconfig"),
            },
            e => e,
        })
    }

    async fn reconfigure(&self, goal: Goal<'_>) -> Result<ReconfigOutcome, Error> {
        let op = goal.op();
        let started = Instant::now();
        let deadline = started + self.timeouts.operation;
        let mut outcome = ReconfigOutcome {
            config: EnsembleConfig::default(),
            changed: false,
            connection_losses: 0,
            version_conflicts: 0,
        };
        let mut attempts = 0u32;
        let mut last = String::from("none");
        loop {
            if attempts > 0 {
                let pause = Duration::from_millis(100 * u64::from(attempts.min(10)));
                if Instant::now() + pause >= deadline {
                    return Err(Error::GaveUp {
                        op,
                        deadline: self.timeouts.operation,
                        attempts,
                        last,
                        sent: outcome.changed,
                    });
                }
                tokio::time::sleep(pause).await;
            }
            attempts += 1;
            let client = match self.session().await {
                Ok(c) => c,
                Err(e) => {
                    last = e.to_string();
                    continue;
                }
            };
            let config = match self.read_with(&client).await {
                Ok(c) => c,
                Err(ReadError::Zk(e)) if is_connection_problem(&e) => {
                    last = format!("reading the configuration: {e}");
                    self.forget_session().await;
                    continue;
                }
                Err(e) => return Err(self.read_error(e)),
            };
            let pending = match goal.progress(&config)? {
                Progress::Done => {
                    info!(%op, version = config.version, changed = outcome.changed, "membership change in place");
                    outcome.config = config;
                    return Ok(outcome);
                }
                Progress::Pending(pending) => pending,
            };
            if let Pending::Add(joiners) = &pending {
                for joiner in joiners {
                    self.check_joiner(&config, joiner).await?;
                }
            }
            let (joining, leaving): (Vec<String>, Vec<String>) = match &pending {
                Pending::Add(joiners) => {
                    (joiners.iter().map(ServerEntry::line).collect(), Vec::new())
                }
                Pending::Remove(ids) => (Vec::new(), ids.iter().map(ToString::to_string).collect()),
            };
            // A request made while the session is disconnected waits for the next connection
            // and reaches the leader later (after an election, seconds later), when the joiner
            // judged synced above may have dropped out: send only on a connected session.
            if client.state() != zkc::SessionState::SyncConnected {
                last = format!("the session was {:?} before the reconfig", client.state());
                self.forget_session().await;
                continue;
            }
            let update = zkc::EnsembleUpdate::Incremental {
                joinings: joining.iter().map(String::as_str),
                leavings: leaving.iter().map(String::as_str),
            };
            let expected = i64::try_from(config.version).ok();
            outcome.changed = true;
            info!(%op, version = config.version, "reconfig");
            match self.call(client.update_ensemble(update, expected)).await {
                Ok((data, stat)) => {
                    let new = parse_config(&data, stat.mzxid)
                        .map_err(|source| Error::BadConfig { source })?;
                    if let Progress::Done = goal.progress(&new)? {
                        info!(%op, version = new.version, elapsed = ?started.elapsed(), "reconfig committed");
                        outcome.config = new;
                        return Ok(outcome);
                    }
                    last = format!(
                        "the reconfig reply lacks the change: {}",
                        new.to_text().replace('\n', " ")
                    );
                }
                Err(zkc::Error::BadVersion) => {
                    outcome.version_conflicts += 1;
                    last = format!("version {:x} was stale (BadVersion)", config.version);
                    debug!(%op, "{last}");
                }
                Err(e) if is_connection_problem(&e) => {
                    outcome.connection_losses += 1;
                    last = format!("reconfig: {e}");
                    warn!(%op, error = %e, "lost the connection during reconfig; re-reading the configuration");
                    self.forget_session().await;
                }
                Err(zkc::Error::UnexpectedErrorCode(RECONFIG_IN_PROGRESS)) => {
                    last = "another reconfig is in progress".into();
                }
                Err(zkc::Error::UnexpectedErrorCode(NEW_CONFIG_NO_QUORUM)) => {
                    return Err(Error::NewConfigNoQuorum { op });
                }
                Err(zkc::Error::NoAuth) => {
                    return Err(Error::NoAuth {
                        op,
                        who: self.who(),
                    });
                }
                Err(zkc::Error::ReconfigDisabled) => return Err(Error::ReconfigDisabled { op }),
                Err(zkc::Error::Unimplemented) => return Err(Error::Standalone { op }),
                Err(source) => return Err(Error::Rejected { op, source }),
            }
        }
    }
}

fn parse_config(data: &[u8], mzxid: i64) -> Result<EnsembleConfig, ParseError> {
    let text = String::from_utf8_lossy(data);
    EnsembleConfig::parse_with_fallback(&text, u64::try_from(mzxid).ok())
}

impl<P: MemberProbe> MembershipControl for ZkMembership<P> {
    async fn read_config(&self) -> Result<EnsembleConfig, Error> {
        ZkMembership::read_config(self).await
    }

    async fn add_voters(&self, joiners: &[ServerEntry]) -> Result<ReconfigOutcome, Error> {
        self.reconfigure(Goal::Add(joiners)).await
    }

    async fn remove_voters(&self, ids: &[ServerId]) -> Result<ReconfigOutcome, Error> {
        self.reconfigure(Goal::Remove(ids)).await
    }
}

/// How long the second look at a joiner and its leader may take, right before the reconfig.
const FRESH_PROBE: Duration = Duration::from_secs(1);

/// Whether `seen` shows `id` as a serving follower that its leader has synced.
fn judge_joiner(seen: &EnsembleObservation, id: ServerId) -> Result<(), Error> {
    let not_ready = |reason: String| Error::JoinerNotReady { id, reason };
    let Some(obs) = seen.members.get(&id) else {
        return Err(not_ready("it was not observed".into()));
    };
    let describe = seen.describe(id);
    if !obs.serving {
        return Err(not_ready(format!(
            "it is not running or not serving ({describe})"
        )));
    }
    if obs.mode != Some(Mode::Follower) {
        return Err(not_ready(format!("it is not a follower ({describe})")));
    }
    if !seen.is_synced(id) {
        let leader = match seen.leader {
            Some(l) => format!("leader server.{l}"),
            None => "no leader".into(),
        };
        let notes = if seen.notes.is_empty() {
            String::new()
        } else {
            format!("; {}", seen.notes.join("; "))
        };
        return Err(not_ready(format!(
            "it is not synced with the {leader} ({describe}{notes})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members 1 (the leader), 2 and 3 answer steadily; joiner 4 answers as a synced follower
    /// `synced_answers` times, then as not serving.
    struct JoinerDropsOut {
        synced_answers: usize,
        asked: std::sync::atomic::AtomicUsize,
    }

    impl MemberProbe for JoinerDropsOut {
        async fn observe(&self, member: &MemberAddr) -> crate::zk::MemberObservation {
            use crate::zk::ensemble::fixtures::{follower, leader};
            match member.id.0 {
                1 => leader(1, 3),
                4 => {
                    let n = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut m = follower(4, 1);
                    m.serving = n < self.synced_answers;
                    m
                }
                id => follower(id, 1),
            }
        }
    }

    #[tokio::test]
    async fn a_joiner_that_drops_out_after_the_first_look_is_not_ready() {
        let config = EnsembleConfig::parse(
            "server.1=h1:2888:3888:participant;0.0.0.0:2181\n\
             server.2=h2:2888:3888:participant;0.0.0.0:2181\n\
             server.3=h3:2888:3888:participant;0.0.0.0:2181\n\
             version=100000000",
        )
        .expect("config");
        let joiner: ServerEntry = "server.4=h4:2888:3888:participant;0.0.0.0:2181"
            .parse()
            .expect("joiner");
        let membership = |synced_answers| {
            ZkMembership::new("h1:2181", None)
                .expect("membership")
                .with_probe(JoinerDropsOut {
                    synced_answers,
                    asked: Default::default(),
                })
        };
        // Synced on both looks: ready.
        membership(2)
            .check_joiner(&config, &joiner)
            .await
            .expect("a joiner synced on both looks is ready");
        // Synced on the first look only (the one that waits for every member): not ready.
        let err = membership(1)
            .check_joiner(&config, &joiner)
            .await
            .expect_err("a joiner that dropped out after the first look is not ready");
        assert!(
            matches!(&err, Error::JoinerNotReady { id, reason } if *id == ServerId(4) && reason.contains("asked again")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_removal_that_never_connects_gives_up_before_any_request() {
        // A port on loopback that nothing listens on: every session attempt is refused.
        let unused = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let membership = ZkMembership::new(unused.to_string(), None)
            .expect("membership")
            .with_timeouts(Timeouts {
                connect: Duration::from_millis(200),
                operation: Duration::from_secs(2),
                ..Timeouts::default()
            });
        let err = membership
            .remove_voters(&[ServerId(3)])
            .await
            .expect_err("no server: the removal cannot succeed");
        assert!(matches!(err, Error::GaveUp { sent: false, .. }), "{err:?}");
        assert!(err.before_any_request(), "{err}");
        assert!(
            err.to_string().contains("no reconfig request sent"),
            "{err}"
        );
        // Sent at least once (an answer lost with the connection): it may have committed.
        let sent = Error::GaveUp {
            op: "remove server.3".into(),
            deadline: Duration::from_secs(60),
            attempts: 3,
            last: "reconfig: connection loss".into(),
            sent: true,
        };
        assert!(!sent.before_any_request());
        assert!(!Error::NewConfigNoQuorum { op: "x".into() }.before_any_request());
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials::digest("quorate", "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(c.user(), "quorate");
    }

    #[test]
    fn the_root_lock_takes_only_worlds_admin_permission() {
        use zkc::Permission as P;
        let world = |p| zkc::Acl::new(p, zkc::AuthId::anyone());
        let cdrw = P::CREATE | P::DELETE | P::READ | P::WRITE;
        // ZooKeeper's default root ACL: everyone may do everything, so any digest header runs
        // the AdminServer's snapshot and restore.
        assert_eq!(root_locked(&[world(P::ALL)]), Some(vec![world(cdrw)]));
        // Locked already, or never open: nothing to do.
        assert_eq!(root_locked(&[world(cdrw)]), None);
        let app = zkc::Acl::new(
            P::ALL,
            zkc::AuthId::new("digest", &super::super::digest("app", "x")),
        );
        assert_eq!(root_locked(std::slice::from_ref(&app)), None);
        // Other entries are kept as they are; a world entry with admin alone goes.
        assert_eq!(
            root_locked(&[world(P::ADMIN), app.clone()]),
            Some(vec![app.clone()])
        );
        assert_eq!(
            root_locked(&[app.clone(), world(P::READ | P::ADMIN)]),
            Some(vec![app, world(P::READ)])
        );
        // An ACL may not be empty: a root open for admin alone is left to the user.
        assert_eq!(root_locked(&[world(P::ADMIN)]), None);
    }

    #[test]
    fn the_reconfig_grant_adds_rwa_keeps_others_and_replaces_an_old_password() {
        let op = Credentials::digest("quorate", "new");
        let world = zkc::Acl::new(zkc::Permission::READ, zkc::AuthId::anyone());
        let admin = zkc::Acl::new(
            zkc::Permission::ALL,
            zkc::AuthId::new("digest", &super::super::digest("admin", "x")),
        );
        let old = zkc::Acl::new(
            zkc::Permission::ALL,
            zkc::AuthId::new("digest", &super::super::digest("quorate", "old")),
        );
        let wanted = reconfig_grant(&[world.clone(), admin.clone(), old.clone()], &op)
            .expect("the old password's entry does not grant the new one");
        let rwa = zkc::Permission::READ | zkc::Permission::WRITE | zkc::Permission::ADMIN;
        let granted = zkc::Acl::new(rwa, zkc::AuthId::new("digest", &op.acl_id()));
        assert_eq!(wanted, vec![world.clone(), admin.clone(), granted.clone()]);
        // Once granted (or granted more), nothing to do.
        assert_eq!(reconfig_grant(&wanted, &op), None);
        let all = zkc::Acl::new(
            zkc::Permission::ALL,
            zkc::AuthId::new("digest", &op.acl_id()),
        );
        assert_eq!(reconfig_grant(&[world.clone(), all], &op), None);
        // Read and write without admin are not enough: the user could not see its own entry.
        let rw = zkc::Acl::new(
            zkc::Permission::READ | zkc::Permission::WRITE,
            zkc::AuthId::new("digest", &op.acl_id()),
        );
        assert_eq!(
            reconfig_grant(&[world.clone(), rw], &op),
            Some(vec![world.clone(), granted.clone()])
        );
        // Read alone (ZooKeeper's default for the node) is not enough.
        let read = zkc::Acl::new(
            zkc::Permission::READ,
            zkc::AuthId::new("digest", &op.acl_id()),
        );
        assert_eq!(
            reconfig_grant(&[world.clone(), read], &op),
            Some(vec![world, granted])
        );
    }

    #[test]
    fn an_add_is_done_when_the_same_line_is_there_and_conflicts_with_another() {
        let config = EnsembleConfig::parse(
            "server.1=a:2888:3888:participant;a:2181\nserver.2=b:2888:3888:observer;b:2181\nversion=5",
        )
        .unwrap();
        let same: ServerEntry = "server.1=a:2888:3888;a:2181".parse().unwrap();
        assert!(matches!(
            Goal::Add(std::slice::from_ref(&same)).progress(&config),
            Ok(Progress::Done)
        ));
        let as_voter: ServerEntry = "server.2=b:2888:3888:participant;b:2181".parse().unwrap();
        let err = Goal::Add(std::slice::from_ref(&as_voter))
            .progress(&config)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("server.2=b:2888:3888:observer;b:2181"),
            "{err}"
        );
        let new: ServerEntry = "server.3=c:2888:3888;c:2181".parse().unwrap();
        assert!(matches!(
            Goal::Add(std::slice::from_ref(&new)).progress(&config),
            Ok(Progress::Pending(Pending::Add(ref missing))) if *missing == vec![new.clone()]
        ));
    }

    #[test]
    fn two_joiners_go_in_one_reconfig_and_one_already_a_voter_counts_as_done() {
        let config =
            EnsembleConfig::parse("server.1=a:2888:3888:participant;a:2181\nversion=5").unwrap();
        let two: ServerEntry = "server.2=b:2888:3888;b:2181".parse().unwrap();
        let three: ServerEntry = "server.3=c:2888:3888;c:2181".parse().unwrap();
        let both = [two.clone(), three.clone()];
        assert_eq!(Goal::Add(&both).op(), "add server.2, server.3");
        assert!(matches!(
            Goal::Add(&both).progress(&config),
            Ok(Progress::Pending(Pending::Add(ref missing))) if *missing == both.to_vec()
        ));
        let with_two = EnsembleConfig::parse(
            "server.1=a:2888:3888:participant;a:2181\nserver.2=b:2888:3888:participant;b:2181\nversion=6",
        )
        .unwrap();
        assert!(matches!(
            Goal::Add(&both).progress(&with_two),
            Ok(Progress::Pending(Pending::Add(ref missing))) if *missing == vec![three.clone()]
        ));
        let all = EnsembleConfig::parse(
            "server.1=a:2888:3888:participant;a:2181\nserver.2=b:2888:3888:participant;b:2181\nserver.3=c:2888:3888:participant;c:2181\nversion=7",
        )
        .unwrap();
        assert!(matches!(
            Goal::Add(&both).progress(&all),
            Ok(Progress::Done)
        ));
    }

    #[test]
    fn a_remove_is_done_when_the_server_is_gone_and_refused_for_the_last_voter() {
        let config =
            EnsembleConfig::parse("server.1=a:2888:3888:participant;a:2181\nversion=5").unwrap();
        assert!(matches!(
            Goal::Remove(&[ServerId(7)]).progress(&config),
            Ok(Progress::Done)
        ));
        assert!(matches!(
            Goal::Remove(&[ServerId(1)]).progress(&config),
            Err(Error::LastVoter { id: ServerId(1) })
        ));
    }

    #[test]
    fn two_followers_leave_in_one_reconfig_but_never_every_voter() {
        let config = EnsembleConfig::parse(
            "server.1=a:2888:3888:participant;a:2181\nserver.2=b:2888:3888:participant;b:2181\nserver.3=c:2888:3888:participant;c:2181\nversion=7",
        )
        .unwrap();
        let pair = [ServerId(2), ServerId(3)];
        assert_eq!(Goal::Remove(&pair).op(), "remove server.2, server.3");
        assert!(matches!(
            Goal::Remove(&pair).progress(&config),
            Ok(Progress::Pending(Pending::Remove(ref ids))) if *ids == pair.to_vec()
        ));
        // One of them already left: the reconfig removes the other.
        let without_three = EnsembleConfig::parse(
            "server.1=a:2888:3888:participant;a:2181\nserver.2=b:2888:3888:participant;b:2181\nversion=8",
        )
        .unwrap();
        assert!(matches!(
            Goal::Remove(&pair).progress(&without_three),
            Ok(Progress::Pending(Pending::Remove(ref ids))) if *ids == vec![ServerId(2)]
        ));
        assert!(matches!(
            Goal::Remove(&[ServerId(1), ServerId(2), ServerId(3)]).progress(&config),
            Err(Error::LastVoter { .. })
        ));
    }

    #[test]
    fn the_no_auth_error_says_what_is_needed() {
        let e = Error::NoAuth {
            op: "add server.4".into(),
            who: "an unauthenticated session".into(),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("reconfig needs the operator credentials: add server.4"),
            "{text}"
        );
        assert!(text.contains("/zookeeper/config"));
    }
}
