//! quorate's tree dump (`quorate-tree-v1`): the data tree read through the client protocol, for
//! servers without the AdminServer `snapshot` command (3.8) or when `method: tree` is asked for,
//! and the replay of a tree (from either format) into a live ensemble.
//!
//! Format, all integers big-endian:
//!
//! ```text
//! "QTREE1\n"                                   magic
//! repeated: u8 1, node                         one record per znode, parents before children
//!   node = str path, i32 data length (-1: null) + bytes, u32 acl count,
//!          acl* = (i32 perms, str scheme, str id),
//!          stat = i64 czxid, i64 mzxid, i64 ctime, i64 mtime, i32 version, i32 cversion,
//!                 i32 aversion, i64 ephemeralOwner, i64 pzxid
//!   str  = u32 length + UTF-8 bytes
//! u8 0, u64 record count                        end (a dump without it is truncated)
//! ```
//!
//! The walk is not a point-in-time snapshot: each znode is read at a different zxid (the
//! manifest says so). It skips `/zookeeper` and ephemeral nodes, keeps data and ACLs exactly, and
//! records the stat as read; a replay cannot restore stat (zxids, versions, times), so it raises
//! each parent's child counter above its highest sequential child instead.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{StreamExt, stream};
use zookeeper_client as zkc;

use super::znode::{Acl, NodeKind, Stat, Znode, is_restorable, is_system_path, parent_of};
use crate::zk::Login;

/// The dump's magic bytes.
pub const MAGIC: &[u8; 7] = b"QTREE1\n";
/// Longest path, data or identity accepted when reading (jute.maxbuffer-sized).
pub const MAX_FIELD: u32 = 16 * 1024 * 1024;
/// How many requests a walk or replay keeps in flight on its session.
pub const IN_FLIGHT: usize = 64;
/// Name of the scratch child a replay creates and deletes to raise a parent's counter.
const SEQUENCE_BUMP: &str = ".quorate-sequence-";

/// Errors of reading a dump, walking a tree or replaying one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not a tree dump.
    #[error("not a quorate tree dump (bad magic)")]
    Magic,
    /// The dump ends early.
    #[error("tree dump truncated after {records} records ({context})")]
    Truncated {
        /// Records read.
        records: u64,
        /// What was being read.
        context: &'static str,
    },
    /// A field is out of range.
    #[error("tree dump corrupt at record {record}: {message}")]
    Corrupt {
        /// Record number.
        record: u64,
        /// What is wrong.
        message: String,
    },
    /// Reading the underlying stream failed.
    #[error("reading the tree dump: {0}")]
    Io(#[source] std::io::Error),
    /// A ZooKeeper request failed.
    #[error("{op} {path}: {source}")]
    Zk {
        /// The request.
        op: &'static str,
        /// Its path.
        path: String,
        /// ZooKeeper's answer.
        source: zkc::Error,
    },
    /// Connecting failed.
    #[error("connect to {hosts}: {message}")]
    Connect {
        /// The connect string.
        hosts: String,
        /// Why.
        message: String,
    },
    /// The receiver of the dump went away.
    #[error("the backup stream was closed")]
    Closed,
}

fn zk<'a>(op: &'static str, path: &'a str) -> impl FnOnce(zkc::Error) -> Error + 'a {
    move |source| Error::Zk {
        op,
        path: path.into(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u32(s.len() as u32);
    out.put_slice(s.as_bytes());
}

/// Appends one record.
pub fn encode(out: &mut BytesMut, node: &Znode) {
    out.put_u8(1);
    put_str(out, &node.path);
    match &node.data {
        None => out.put_i32(-1),
        Some(d) => {
            out.put_i32(d.len() as i32);
            out.put_slice(d);
        }
    }
    out.put_u32(node.acl.len() as u32);
    for a in &node.acl {
        out.put_i32(a.perms);
        put_str(out, &a.scheme);
        put_str(out, &a.id);
    }
    let s = &node.stat;
    for v in [s.czxid, s.mzxid, s.ctime, s.mtime] {
        out.put_i64(v);
    }
    for v in [s.version, s.cversion, s.aversion] {
        out.put_i32(v);
    }
    out.put_i64(s.ephemeral_owner);
    out.put_i64(s.pzxid);
}

/// The end marker after `records` records.
pub fn encode_end(out: &mut BytesMut, records: u64) {
    out.put_u8(0);
    out.put_u64(records);
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Reads a dump record by record; memory holds one znode.
pub struct TreeReader<R: Read> {
    input: R,
    records: u64,
    ended: bool,
}

impl<R: Read> TreeReader<R> {
    /// Checks the magic.
    pub fn new(mut input: R) -> Result<TreeReader<R>, Error> {
        let mut magic = [0u8; 7];
        read_exact(&mut input, &mut magic, 0, "magic")?;
        if &magic != MAGIC {
            return Err(Error::Magic);
        }
        Ok(TreeReader {
            input,
            records: 0,
            ended: false,
        })
    }

    fn bytes(&mut self, n: usize, context: &'static str) -> Result<Vec<u8>, Error> {
        let mut v = vec![0u8; n];
        read_exact(&mut self.input, &mut v, self.records, context)?;
        Ok(v)
    }

    fn u8(&mut self, c: &'static str) -> Result<u8, Error> {
        Ok(self.bytes(1, c)?[0])
    }
    fn u32(&mut self, c: &'static str) -> Result<u32, Error> {
        let b = self.bytes(4, c)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self, c: &'static str) -> Result<i32, Error> {
        Ok(self.u32(c)? as i32)
    }
    fn i64(&mut self, c: &'static str) -> Result<i64, Error> {
        let b = self.bytes(8, c)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(i64::from_be_bytes(a))
    }
    fn len(&mut self, c: &'static str) -> Result<usize, Error> {
        let n = self.u32(c)?;
        if n > MAX_FIELD {
            return Err(Error::Corrupt {
                record: self.records,
                message: format!("{c} length {n} exceeds {MAX_FIELD}"),
            });
        }
        Ok(n as usize)
    }
    fn string(&mut self, c: &'static str) -> Result<String, Error> {
        let n = self.len(c)?;
        let b = self.bytes(n, c)?;
        String::from_utf8(b).map_err(|_| Error::Corrupt {
            record: self.records,
            message: format!("{c} is not UTF-8"),
        })
    }

    /// The next znode, or `None` at the end marker.
    pub fn next_node(&mut self) -> Result<Option<Znode>, Error> {
        if self.ended {
            return Ok(None);
        }
        match self.u8("record tag")? {
            0 => {
                let count = self.i64("record count")? as u64;
                if count != self.records {
                    return Err(Error::Corrupt {
                        record: self.records,
                        message: format!("end marker says {count} records"),
                    });
                }
                self.ended = true;
                Ok(None)
            }
            1 => {
                let path = self.string("path")?;
                if !path.starts_with('/') {
                    return Err(Error::Corrupt {
                        record: self.records,
                        message: format!("path {path:?} is not absolute"),
                    });
                }
                let dlen = self.i32("data length")?;
                let data = if dlen < 0 {
                    None
                } else if dlen as u32 > MAX_FIELD {
                    return Err(Error::Corrupt {
                        record: self.records,
                        message: format!("data length {dlen} exceeds {MAX_FIELD}"),
                    });
                } else {
                    Some(self.bytes(dlen as usize, "data")?)
                };
                let acls = self.len("acl count")?;
                let mut acl = Vec::with_capacity(acls.min(64));
                for _ in 0..acls {
                    let perms = self.i32("acl perms")?;
                    let scheme = self.string("acl scheme")?;
                    let id = self.string("acl id")?;
                    acl.push(Acl { perms, scheme, id });
                }
                let stat = Stat {
                    czxid: self.i64("stat")?,
                    mzxid: self.i64("stat")?,
                    ctime: self.i64("stat")?,
                    mtime: self.i64("stat")?,
                    version: self.i32("stat")?,
                    cversion: self.i32("stat")?,
                    aversion: self.i32("stat")?,
                    ephemeral_owner: self.i64("stat")?,
                    pzxid: self.i64("stat")?,
                };
                self.records += 1;
                Ok(Some(Znode {
                    path,
                    data,
                    acl,
                    stat,
                }))
            }
            t => Err(Error::Corrupt {
                record: self.records,
                message: format!("unknown record tag {t}"),
            }),
        }
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }
}

fn read_exact<R: Read>(
    input: &mut R,
    buf: &mut [u8],
    records: u64,
    context: &'static str,
) -> Result<(), Error> {
    input.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Truncated { records, context }
        } else {
            Error::Io(e)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// What both formats summarise to

/// Counts and zxids of a tree, from either format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeSummary {
    /// Every record.
    pub znodes: u64,
    /// Records a restore brings back.
    pub user_znodes: u64,
    /// Highest czxid/mzxid/pzxid over user znodes, and the root's pzxid.
    pub data_zxid: i64,
    /// Ephemeral nodes seen (and skipped by restores).
    pub ephemerals: u64,
    /// Container nodes.
    pub containers: u64,
    /// TTL nodes.
    pub ttls: u64,
}

impl TreeSummary {
    /// Counts one znode.
    pub fn add(&mut self, node: &Znode) {
        self.znodes += 1;
        if node.path == "/" {
            self.data_zxid = self.data_zxid.max(node.stat.pzxid);
            return;
        }
        if is_system_path(&node.path) {
            return;
        }
        match node.stat.kind() {
            NodeKind::Ephemeral => self.ephemerals += 1,
            NodeKind::Container => self.containers += 1,
            NodeKind::Ttl => self.ttls += 1,
            NodeKind::Persistent => {}
        }
        if is_restorable(node) {
            self.user_znodes += 1;
        }
        self.data_zxid = self.data_zxid.max(node.stat.newest_zxid());
    }
}

/// A restored tree as it was at the restore's own zxid `at` (the artifact's newest data zxid),
/// told apart from what clients did since. A restored ensemble issues every later zxid in a
/// newer epoch, so a znode with `czxid <= at` came from the artifact; a client's delete since
/// leaves its parent's `pzxid` above `at`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AtRestore {
    /// The restore's zxid.
    pub at: i64,
    /// User znodes created at or before `at`: from the artifact.
    pub restored: u64,
    /// User znodes created after `at`: by clients, since.
    pub created_since: u64,
    /// Znodes (the root included) whose children changed after `at` (a delete, a create).
    pub children_changed: u64,
    /// Highest czxid/mzxid/pzxid over user znodes, and the root's pzxid.
    pub data_zxid: i64,
}

impl AtRestore {
    /// Nothing counted yet, as of `at`.
    pub fn new(at: i64) -> AtRestore {
        AtRestore {
            at,
            ..AtRestore::default()
        }
    }

    /// Counts one live znode.
    pub fn add(&mut self, node: &Znode) {
        if node.path == "/" {
            self.data_zxid = self.data_zxid.max(node.stat.pzxid);
            self.children_changed += u64::from(node.stat.pzxid > self.at);
            return;
        }
        if !is_restorable(node) {
            return;
        }
        self.data_zxid = self.data_zxid.max(node.stat.newest_zxid());
        if node.stat.czxid <= self.at {
            self.restored += 1;
            self.children_changed += u64::from(node.stat.pzxid > self.at);
        } else {
            self.created_since += 1;
        }
    }

    /// Whether the members hold the artifact's `want` user znodes: exactly that many from
    /// before the restore, or fewer where clients have deleted some since (a parent's children
    /// changed). `Ok` carries a note on what clients did since; `Err` says what is wrong.
    pub fn judge(&self, want: u64) -> Result<String, String> {
        let since = if self.created_since > 0 {
            format!("; {} znodes created by clients since", self.created_since)
        } else {
            String::new()
        };
        match self.restored.cmp(&want) {
            std::cmp::Ordering::Equal => Ok(since),
            std::cmp::Ordering::Less if self.children_changed > 0 => Ok(format!(
                "; {} of them deleted by clients since (children of {} znodes changed after the restore){since}",
                want - self.restored,
                self.children_changed
            )),
            std::cmp::Ordering::Less => Err(format!(
                "{} user znodes from the restore where the artifact holds {want}, and no client changed any since",
                self.restored
            )),
            std::cmp::Ordering::Greater => Err(format!(
                "{} user znodes from before the restore where the artifact holds {want}: the members hold data the artifact does not",
                self.restored
            )),
        }
    }
}

/// What a member that loaded a placed snapshot, and that no client uses (a verify-only
/// restore's scratch member), says of itself: its own counters instead of a walk of its tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadedCounts {
    /// Every znode but the root (`getAllChildrenNumber` of `/`).
    pub descendants: u64,
    /// The znodes under `/zookeeper` (`getAllChildrenNumber` of `/zookeeper`).
    pub system_descendants: u64,
    /// Ephemeral znodes (`monitor` `ephemerals_count`): the sessions the snapshot holds keep
    /// theirs until they expire.
    pub ephemerals: u64,
    /// The member's last processed zxid (`srvr`).
    pub last_processed_zxid: i64,
}

impl LoadedCounts {
    /// The user znodes the member holds: not the root, not `/zookeeper` and what lies under it,
    /// not an ephemeral ([`super::znode::is_restorable`]'s rule).
    pub fn user_znodes(&self) -> Option<u64> {
        self.descendants
            .checked_sub(1 + self.system_descendants)?
            .checked_sub(self.ephemerals)
    }

    /// Whether the member loaded the artifact's `want` user znodes, up to its newest data zxid
    /// `want_zxid`: exactly that many (nobody else writes to a scratch member), and a last
    /// processed zxid at least that high (a member that loaded nothing, or older data, has a
    /// lower one). `Ok` carries what was compared.
    pub fn judge(&self, want: u64, want_zxid: i64) -> Result<String, String> {
        let Some(user) = self.user_znodes() else {
            return Err(format!(
                "the member's counts do not add up: {} znodes under the root, {} under /zookeeper, {} ephemeral",
                self.descendants, self.system_descendants, self.ephemerals
            ));
        };
        if self.last_processed_zxid < want_zxid {
            return Err(format!(
                "the member's last processed zxid {} is older than the artifact's newest data {}",
                super::artifact::zxid_hex(self.last_processed_zxid),
                super::artifact::zxid_hex(want_zxid)
            ));
        }
        if user != want {
            return Err(format!(
                "the member holds {user} user znodes where the artifact holds {want}"
            ));
        }
        Ok(format!(
            " (the member's own counts: {} znodes under the root, {} of them ephemeral; last processed zxid {})",
            self.descendants,
            self.ephemerals,
            super::artifact::zxid_hex(self.last_processed_zxid)
        ))
    }
}

/// What a member's AdminServer `srvr` says of its data: every znode it holds (the root and
/// `/zookeeper` included; ZooKeeper's data tree holds the root under two keys, `""` and `/`,
/// and counts it twice: measured on 3.9.5, one more than the znodes of its own snapshot) and
/// its last processed zxid. No session is needed to read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServedCounts {
    /// `node_count`.
    pub node_count: u64,
    /// `server_stats.last_processed_zxid`.
    pub last_processed_zxid: i64,
}

/// Whether every member still holds exactly the placed snapshot it loaded, told by its own
/// counters instead of a walk of its tree: nothing applied since the load, and as many znodes
/// as the snapshot holds (`znodes`, plus the root counted twice). Nothing was applied when the last processed zxid is still
/// in the snapshot's epoch (`snapshot_zxid`) and reaches the artifact's newest data
/// (`data_zxid`), or is exactly the start of a newer epoch (counter 0: the new leader's epoch
/// began and no transaction of a client or a session followed; every later one counts up in
/// it). The member's volume holds the placed snapshot alone, so that is what it loaded. `Err`
/// says why the counters cannot tell (clients may write as soon as a member serves); the
/// restore then walks the tree at the restore's own zxid instead. `Ok` carries what was
/// compared.
pub fn loaded_untouched(
    members: &[ServedCounts],
    snapshot_zxid: i64,
    data_zxid: i64,
    znodes: u64,
) -> Result<String, String> {
    let epoch = |zxid: i64| zxid >> 32;
    if members.is_empty() {
        return Err("no member answered".into());
    }
    for m in members {
        let z = m.last_processed_zxid;
        let epoch_began = epoch(z) > epoch(snapshot_zxid) && z & 0xffff_ffff == 0;
        if epoch(z) != epoch(snapshot_zxid) && !epoch_began {
            return Err(format!(
                "a member's last processed zxid {} is a transaction after the load",
                super::artifact::zxid_hex(z)
            ));
        }
        if !epoch_began && z < data_zxid {
            return Err(format!(
                "a member's last processed zxid {} is older than the artifact's newest data {}",
                super::artifact::zxid_hex(z),
                super::artifact::zxid_hex(data_zxid)
            ));
        }
        if m.node_count != znodes + 1 {
            return Err(format!(
                "a member counts {} znodes where the snapshot holds {znodes} (and ZooKeeper counts the root twice)",
                m.node_count
            ));
        }
    }
    Ok(format!(
        " (every member's own counts: {znodes} znodes, last processed zxid {}, nothing applied since it loaded the snapshot)",
        super::artifact::zxid_hex(members[0].last_processed_zxid)
    ))
}

/// Reads a whole dump, checking its structure, and summarises it.
pub fn summarize<R: Read>(input: R) -> Result<TreeSummary, Error> {
    let mut reader = TreeReader::new(input)?;
    let mut summary = TreeSummary::default();
    while let Some(node) = reader.next_node()? {
        summary.add(&node);
    }
    Ok(summary)
}

// ---------------------------------------------------------------------------------------------
// Conversions to and from the client's types

fn perms_of(p: zkc::Permission) -> i32 {
    [
        (zkc::Permission::READ, 1),
        (zkc::Permission::WRITE, 2),
        (zkc::Permission::CREATE, 4),
        (zkc::Permission::DELETE, 8),
        (zkc::Permission::ADMIN, 16),
    ]
    .iter()
    .filter(|(bit, _)| p.has(*bit))
    .map(|(_, v)| v)
    .sum()
}

fn permission(bits: i32) -> zkc::Permission {
    [
        (zkc::Permission::READ, 1),
        (zkc::Permission::WRITE, 2),
        (zkc::Permission::CREATE, 4),
        (zkc::Permission::DELETE, 8),
        (zkc::Permission::ADMIN, 16),
    ]
    .iter()
    .filter(|(_, v)| bits & v != 0)
    .fold(zkc::Permission::NONE, |acc, (bit, _)| acc | *bit)
}

fn acl_of(a: &zkc::Acl) -> Acl {
    Acl {
        perms: perms_of(a.permission()),
        scheme: a.scheme().into(),
        id: a.id().into(),
    }
}

fn client_acl(a: &Acl) -> zkc::Acl {
    zkc::Acl::new(permission(a.perms), zkc::AuthId::new(&a.scheme, &a.id))
}

fn stat_of(s: &zkc::Stat) -> Stat {
    Stat {
        czxid: s.czxid,
        mzxid: s.mzxid,
        ctime: s.ctime,
        mtime: s.mtime,
        version: s.version,
        cversion: s.cversion,
        aversion: s.aversion,
        ephemeral_owner: s.ephemeral_owner,
        pzxid: s.pzxid,
    }
}

/// Connects as `login` with a session timeout fit for long walks.
pub async fn connect(hosts: &str, login: &Login) -> Result<zkc::Client, Error> {
    let connector = login.connector(Duration::from_secs(30));
    tokio::time::timeout(Duration::from_secs(15), connector.connect(hosts))
        .await
        .map_err(|_| Error::Connect {
            hosts: hosts.into(),
            message: "timed out".into(),
        })?
        .map_err(|e| Error::Connect {
            hosts: hosts.into(),
            message: e.to_string(),
        })
}

// ---------------------------------------------------------------------------------------------
// The walk

/// What a walk saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkReport {
    /// Counts and zxids of what was written.
    pub summary: TreeSummary,
    /// Nodes that disappeared between listing and reading.
    pub vanished: u64,
    /// Ephemeral nodes skipped.
    pub skipped_ephemerals: u64,
}

/// One node as fetched: the record (unless skipped) and its children.
struct Fetched {
    node: Option<Znode>,
    children: Vec<String>,
    vanished: bool,
}

async fn fetch(client: &zkc::Client, path: String) -> Result<Fetched, Error> {
    let (data, stat) = match client.get_data(&path).await {
        Ok(v) => v,
        Err(zkc::Error::NoNode) => {
            return Ok(Fetched {
                node: None,
                children: vec![],
                vanished: true,
            });
        }
        Err(e) => return Err(zk("get_data", &path)(e)),
    };
    let acl = match client.get_acl(&path).await {
        Ok((acl, _)) => acl.iter().map(acl_of).collect(),
        Err(zkc::Error::NoNode) => {
            return Ok(Fetched {
                node: None,
                children: vec![],
                vanished: true,
            });
        }
        Err(e) => return Err(zk("get_acl", &path)(e)),
    };
    let children = if stat.num_children > 0 {
        match client.list_children(&path).await {
            Ok(mut c) => {
                c.sort();
                c
            }
            Err(zkc::Error::NoNode) => vec![],
            Err(e) => return Err(zk("list_children", &path)(e)),
        }
    } else {
        vec![]
    };
    Ok(Fetched {
        node: Some(Znode {
            path,
            data: Some(data),
            acl,
            stat: stat_of(&stat),
        }),
        children,
        vanished: false,
    })
}

fn child_path(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Walks the tree level by level (parents before children), `IN_FLIGHT` requests at a time,
/// and sends the dump in chunks of about `chunk` bytes to `out`. Skips `/zookeeper` and
/// ephemeral nodes. Memory holds one level's paths and one chunk.
pub async fn walk(
    client: &zkc::Client,
    out: &tokio::sync::mpsc::Sender<Bytes>,
    chunk: usize,
) -> Result<WalkReport, Error> {
    let mut report = WalkReport::default();
    let mut buf = BytesMut::with_capacity(chunk + 4096);
    buf.put_slice(MAGIC);
    let mut level = vec!["/".to_string()];
    while !level.is_empty() {
        let mut next = Vec::new();
        let mut fetched =
            stream::iter(level.into_iter().map(|p| fetch(client, p))).buffered(IN_FLIGHT);
        while let Some(f) = fetched.next().await {
            let f = f?;
            if f.vanished {
                report.vanished += 1;
                continue;
            }
            let Some(node) = f.node else { continue };
            if node.stat.kind() == NodeKind::Ephemeral {
                report.skipped_ephemerals += 1;
                continue;
            }
            for c in &f.children {
                let p = child_path(&node.path, c);
                if !is_system_path(&p) {
                    next.push(p);
                }
            }
            report.summary.add(&node);
            encode(&mut buf, &node);
            if buf.len() >= chunk {
                out.send(buf.split().freeze())
                    .await
                    .map_err(|_| Error::Closed)?;
            }
        }
        level = next;
    }
    encode_end(&mut buf, report.summary.znodes);
    out.send(buf.freeze()).await.map_err(|_| Error::Closed)?;
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// The replay

/// What a replay did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// User znodes of the artifact written (created or updated; the root not counted).
    pub written: u64,
    /// Znodes created.
    pub created: u64,
    /// Existing znodes whose data and ACL were set.
    pub updated: u64,
    /// Live znodes not in the artifact, deleted (online restores).
    pub deleted: u64,
    /// Live ephemeral znodes kept (they belong to sessions that may still be alive), with the
    /// persistent znodes not in the artifact that were kept because one of them is below.
    pub kept_live: u64,
    /// Parents whose child counter was raised above their highest sequential child.
    pub counters_raised: u64,
    /// TTL nodes restored as persistent nodes.
    pub ttl_as_persistent: u64,
}

/// The 10-digit sequence suffix of a sequential node's name.
pub fn sequence_suffix(name: &str) -> Option<i64> {
    if name.len() < 10 {
        return None;
    }
    let tail = &name[name.len() - 10..];
    tail.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| tail.parse().ok())
        .flatten()
}

/// The ACL a replayed znode gets: its own, or open when it had none.
fn replayed_acl(node: &Znode) -> Vec<zkc::Acl> {
    if node.acl.is_empty() {
        vec![client_acl(&Acl::open())]
    } else {
        node.acl.iter().map(client_acl).collect()
    }
}

/// How a replayed znode is created: TTL nodes become persistent (a replay cannot restore the
/// time their TTL counts from); the flag says so.
fn create_mode(node: &Znode) -> (zkc::CreateMode, bool) {
    match node.stat.kind() {
        NodeKind::Container => (zkc::CreateMode::Container, false),
        NodeKind::Ttl => (zkc::CreateMode::Persistent, true),
        _ => (zkc::CreateMode::Persistent, false),
    }
}

/// What one write of a replay did.
enum Written {
    /// Znodes created, existing znodes updated, TTL nodes made persistent.
    Done {
        created: u64,
        updated: u64,
        ttl: u64,
    },
    /// Nothing was written: a znode existed (`existed`) or a parent did not exist yet (created
    /// by a write still in flight that failed); write these one by one once nothing is in
    /// flight.
    Again { nodes: Vec<Znode>, existed: bool },
}

/// Creates `node`, or sets its data and ACL when it exists. A missing parent is an error on the
/// `last` try and asks for another otherwise.
async fn upsert(client: &zkc::Client, node: Znode, last: bool) -> Result<Written, Error> {
    let acl = replayed_acl(&node);
    let data = node.data.as_deref().unwrap_or(&[]);
    let (mode, ttl) = create_mode(&node);
    let ttl = u64::from(ttl);
    if node.path != "/" {
        let options = mode.with_acls(zkc::Acls::new(&acl));
        match client.create(&node.path, data, &options).await {
            Ok(_) => {
                return Ok(Written::Done {
                    created: 1,
                    updated: 0,
                    ttl,
                });
            }
            Err(zkc::Error::NodeExists) => {}
            Err(zkc::Error::NoNode) if !last => {
                return Ok(Written::Again {
                    nodes: vec![node],
                    existed: false,
                });
            }
            Err(e) => return Err(zk("create", &node.path)(e)),
        }
    }
    client
        .set_data(&node.path, data, None)
        .await
        .map_err(zk("set_data", &node.path))?;
    client
        .set_acl(&node.path, &acl, None)
        .await
        .map_err(zk("set_acl", &node.path))?;
    Ok(Written::Done {
        created: 0,
        updated: 1,
        ttl,
    })
}

/// Creates `nodes` (parents before children) in one multi: one transaction, so one proposal
/// and one log append for all of them. A znode that exists, or a parent that does not yet,
/// fails the whole multi, which then writes nothing and asks for the nodes to be written again
/// one by one.
async fn create_all(client: &zkc::Client, nodes: Vec<Znode>) -> Result<Written, Error> {
    let mut writer = client.new_multi_writer();
    let mut ttl = 0;
    for node in &nodes {
        let acl = replayed_acl(node);
        let (mode, as_persistent) = create_mode(node);
        ttl += u64::from(as_persistent);
        let data = node.data.as_deref().unwrap_or(&[]);
        writer
            .add_create(&node.path, data, &mode.with_acls(zkc::Acls::new(&acl)))
            .map_err(zk("create", &node.path))?;
    }
    match writer.commit().await {
        Ok(_) => Ok(Written::Done {
            created: nodes.len() as u64,
            updated: 0,
            ttl,
        }),
        Err(zkc::MultiWriteError::OperationFailed { source, .. })
            if matches!(source, zkc::Error::NodeExists | zkc::Error::NoNode) =>
        {
            Ok(Written::Again {
                existed: source == zkc::Error::NodeExists,
                nodes,
            })
        }
        Err(e) => Err(zk("multi create", &nodes[0].path)(e.into())),
    }
}

/// Znodes created together in one multi at most.
const MULTI_NODES: usize = 500;
/// Bytes of paths, data and ACLs in one multi at most: well inside ZooKeeper's default request
/// limit (`jute.maxbuffer`, 1 MiB), which the multi's request and its transaction both meet. A
/// znode larger than a quarter of this is written alone, by a plain create.
const MULTI_BYTES: usize = 256 * 1024;
/// Multis in flight at most (their znodes are held in memory until answered).
const MULTIS_IN_FLIGHT: usize = 8;
/// After a multi met a znode that exists (a replay over live data), how many znodes are written
/// one by one (create, else set data and ACL) before multis are tried again.
const ONE_BY_ONE_AFTER_EXISTING: u64 = 4 * MULTI_NODES as u64;

/// A write of a replay in flight: whether it is a multi, and what it did.
type InFlight<'c> = futures::future::BoxFuture<'c, (bool, Result<Written, Error>)>;

/// The writes of a replay, in the order the znodes came: znodes are created in multis while
/// they do not exist, and written one by one (create, or set data and ACL) after a multi found
/// one that does. One session's requests are answered in the order sent, so a znode's parent
/// is always written before it; a write that failed only because an earlier one in flight did
/// is done again, in order, once nothing is in flight.
struct Writes<'c> {
    client: &'c zkc::Client,
    pending: futures::stream::FuturesOrdered<InFlight<'c>>,
    multis: usize,
    batch: Vec<Znode>,
    batch_bytes: usize,
    /// To write again one by one, in order, once nothing else is in flight.
    again: std::collections::VecDeque<Znode>,
    retrying: bool,
    one_by_one: u64,
}

impl<'c> Writes<'c> {
    fn new(client: &'c zkc::Client) -> Self {
        Writes {
            client,
            pending: futures::stream::FuturesOrdered::new(),
            multis: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            again: Default::default(),
            retrying: false,
            one_by_one: 0,
        }
    }

    /// Whether another znode may be taken now.
    fn accepts(&self) -> bool {
        self.again.is_empty() && self.pending.len() < IN_FLIGHT && self.multis < MULTIS_IN_FLIGHT
    }

    /// Whether nothing is in flight, gathered or waiting to be written again.
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.batch.is_empty() && self.again.is_empty()
    }

    fn push(&mut self, node: Znode) {
        let size = node.path.len()
            + node.data.as_ref().map_or(0, Vec::len)
            + node
                .acl
                .iter()
                .map(|a| a.scheme.len() + a.id.len() + 12)
                .sum::<usize>()
            + 32;
        if node.path == "/" || self.one_by_one > 0 || size > MULTI_BYTES / 4 {
            self.one_by_one = self.one_by_one.saturating_sub(1);
            self.flush();
            let client = self.client;
            self.pending.push_back(Box::pin(async move {
                (false, upsert(client, node, false).await)
            }));
            return;
        }
        if self.batch_bytes + size > MULTI_BYTES {
            self.flush();
        }
        self.batch.push(node);
        self.batch_bytes += size;
        if self.batch.len() >= MULTI_NODES {
            self.flush();
        }
    }

    /// Sends the znodes gathered as one multi.
    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let nodes = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.multis += 1;
        let client = self.client;
        self.pending.push_back(Box::pin(
            async move { (true, create_all(client, nodes).await) },
        ));
    }

    /// Writes the znodes to write again, one by one and in order, from the moment nothing else
    /// is in flight.
    fn refill(&mut self) {
        if self.pending.is_empty() && !self.again.is_empty() {
            self.retrying = true;
        }
        while self.retrying && self.pending.len() < IN_FLIGHT {
            let Some(node) = self.again.pop_front() else {
                self.retrying = false;
                break;
            };
            let client = self.client;
            self.pending.push_back(Box::pin(async move {
                (false, upsert(client, node, true).await)
            }));
        }
    }

    /// Takes the answer of the oldest write in flight.
    async fn next(
        &mut self,
        report: &mut ReplayReport,
        done: &mut u64,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), Error> {
        let Some((multi, r)) = self.pending.next().await else {
            return Ok(());
        };
        self.multis -= usize::from(multi);
        match r? {
            Written::Done {
                created,
                updated,
                ttl,
            } => {
                report.created += created;
                report.updated += updated;
                report.ttl_as_persistent += ttl;
                let before = *done;
                *done += created + updated;
                if *done / 1000 > before / 1000 {
                    progress(*done);
                }
            }
            Written::Again { nodes, existed } => {
                if existed {
                    self.one_by_one = ONE_BY_ONE_AFTER_EXISTING;
                }
                self.again.extend(nodes);
            }
        }
        self.refill();
        Ok(())
    }
}

/// Makes the next sequential child of `parent` get a number above `above`: creates and deletes
/// scratch sequential children until the server hands out `above` or more. (The number comes
/// from the parent's count of creations, which a replay cannot set, and which is not the
/// client-visible `cversion`, which also counts deletions.)
async fn raise_counter(client: &zkc::Client, parent: &str, above: i64) -> Result<bool, Error> {
    let prefix = child_path(parent, SEQUENCE_BUMP);
    let options = zkc::CreateMode::PersistentSequential.with_acls(zkc::Acls::anyone_all());
    let mut raised = false;
    loop {
        let (_, seq) = match client.create(&prefix, &[], &options).await {
            Ok(v) => v,
            Err(zkc::Error::NoNode) => return Ok(raised),
            Err(e) => return Err(zk("create", &prefix)(e)),
        };
        let number = seq.into_i64();
        let made = format!("{prefix}{seq}");
        client
            .delete(&made, None)
            .await
            .map_err(zk("delete", &made))?;
        if number >= above {
            return Ok(raised);
        }
        raised = true;
    }
}

/// Replays znodes from `nodes` (parents before children) into the ensemble behind `client`:
/// creates what is missing, sets data and ACL of what exists, raises sequence counters. With
/// `prune`, the returned set holds every path written, for [`prune`] to delete the rest once
/// the caller knows the data was whole. The root's data and ACL are set; `/zookeeper` and
/// ephemerals are never touched.
pub async fn replay(
    client: &zkc::Client,
    mut nodes: tokio::sync::mpsc::Receiver<Znode>,
    prune: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(ReplayReport, HashSet<String>), Error> {
    let mut report = ReplayReport::default();
    let mut kept: HashSet<String> = HashSet::new();
    let mut highest: BTreeMap<String, i64> = BTreeMap::new();
    let mut writes = Writes::new(client);
    let mut done = 0u64;
    loop {
        let next = if writes.accepts() {
            tokio::select! {
                biased;
                n = nodes.recv() => Some(n),
                r = writes.next(&mut report, &mut done, progress), if !writes.pending.is_empty() => {
                    r?;
                    continue;
                }
            }
        } else {
            None
        };
        match next {
            Some(Some(node)) => {
                if node.path != "/" && !is_restorable(&node) {
                    continue;
                }
                if let Some(parent) = parent_of(&node.path) {
                    let name = &node.path[node.path.rfind('/').map(|i| i + 1).unwrap_or(0)..];
                    if let Some(seq) = sequence_suffix(name) {
                        let e = highest.entry(parent.to_string()).or_insert(seq);
                        *e = (*e).max(seq);
                    }
                }
                if prune {
                    kept.insert(node.path.clone());
                }
                report.written += u64::from(node.path != "/");
                writes.push(node);
            }
            Some(None) => break,
            None => writes.next(&mut report, &mut done, progress).await?,
        }
    }
    writes.flush();
    while !writes.idle() {
        writes.next(&mut report, &mut done, progress).await?;
    }
    for (parent, above) in &highest {
        if raise_counter(client, parent, *above).await? {
            report.counters_raised += 1;
        }
    }
    Ok((report, kept))
}

/// Deletes every live user znode not in `kept` (deepest first) but live sessions' ephemerals
/// and the znodes above them ([`prune_plan`]), and counts both in `report`.
pub async fn prune(
    client: &zkc::Client,
    kept: &HashSet<String>,
    report: &mut ReplayReport,
) -> Result<(), Error> {
    (report.deleted, report.kept_live) = prune_missing(client, kept).await?;
    Ok(())
}

/// Which live znodes a prune deletes: every user znode in `live` (path, ephemeral) whose path
/// is not in `kept`, except ephemerals (they belong to sessions, which may be alive: a lock, a
/// registration) and the persistent znodes above one (deleting those would delete the
/// ephemeral). Deepest first, so children go before parents. The second number counts the
/// znodes spared that way: the ephemerals and the unkept persistent znodes above them.
pub fn prune_plan(live: &[(String, bool)], kept: &HashSet<String>) -> (Vec<String>, u64) {
    let mut above_ephemerals: HashSet<&str> = HashSet::new();
    let mut ephemerals = 0u64;
    for (path, ephemeral) in live {
        if !*ephemeral {
            continue;
        }
        ephemerals += 1;
        let mut p = path.as_str();
        while let Some(parent) = parent_of(p) {
            if !above_ephemerals.insert(parent) {
                break;
            }
            p = parent;
        }
    }
    let mut doomed: Vec<&String> = live
        .iter()
        .filter(|(p, ephemeral)| !*ephemeral && !kept.contains(p) && !is_system_path(p))
        .map(|(p, _)| p)
        .collect();
    let before = doomed.len();
    doomed.retain(|p| !above_ephemerals.contains(p.as_str()));
    let spared = ephemerals + (before - doomed.len()) as u64;
    doomed.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    (doomed.into_iter().cloned().collect(), spared)
}

/// Deletes live user znodes not in `kept` as [`prune_plan`] says (never an ephemeral nor a
/// parent of one), children before parents. A znode that gained a child meanwhile (a client's
/// new ephemeral) is kept. Returns (deleted, kept for live ephemerals).
async fn prune_missing(client: &zkc::Client, kept: &HashSet<String>) -> Result<(u64, u64), Error> {
    let mut live: Vec<(String, bool)> = Vec::new();
    let mut level = vec!["/".to_string()];
    while !level.is_empty() {
        let mut next = Vec::new();
        for parent in level {
            let children = match client.list_children(&parent).await {
                Ok(c) => c,
                Err(zkc::Error::NoNode) => continue,
                Err(e) => return Err(zk("list_children", &parent)(e)),
            };
            for c in children {
                let p = child_path(&parent, &c);
                if is_system_path(&p) {
                    continue;
                }
                let stat = match client.check_stat(&p).await {
                    Ok(Some(stat)) => stat,
                    Ok(None) => continue,
                    Err(e) => return Err(zk("check_stat", &p)(e)),
                };
                let ephemeral = stat.ephemeral_owner != 0;
                live.push((p.clone(), ephemeral));
                if !ephemeral {
                    next.push(p);
                }
            }
        }
        level = next;
    }
    let (doomed, mut spared) = prune_plan(&live, kept);
    let mut deleted = 0;
    for p in &doomed {
        match client.delete(p, None).await {
            Ok(()) => deleted += 1,
            Err(zkc::Error::NoNode) => {}
            Err(zkc::Error::NotEmpty) => spared += 1,
            Err(e) => return Err(zk("delete", p)(e)),
        }
    }
    Ok((deleted, spared))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(path: &str, data: Option<&[u8]>, owner: i64) -> Znode {
        Znode {
            path: path.into(),
            data: data.map(<[u8]>::to_vec),
            acl: vec![
                Acl::open(),
                Acl {
                    perms: 3,
                    scheme: "digest".into(),
                    id: "app:abc=".into(),
                },
            ],
            stat: Stat {
                czxid: 5,
                mzxid: 9,
                pzxid: 7,
                cversion: 4,
                ephemeral_owner: owner,
                ..Stat::default()
            },
        }
    }

    fn dump(nodes: &[Znode]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_slice(MAGIC);
        for n in nodes {
            encode(&mut b, n);
        }
        encode_end(&mut b, nodes.len() as u64);
        b.to_vec()
    }

    #[test]
    fn records_round_trip_with_null_empty_and_binary_data() {
        let nodes = vec![
            node("/", None, 0),
            node("/a", Some(b""), 0),
            node("/a/b", Some(&[0, 255, 1, 2]), 0),
            node("/a/c", None, i64::MIN),
        ];
        let bytes = dump(&nodes);
        let mut r = TreeReader::new(&bytes[..]).unwrap();
        let mut back = vec![];
        while let Some(n) = r.next_node().unwrap() {
            back.push(n);
        }
        assert_eq!(back, nodes);
    }

    #[test]
    fn a_dump_cut_anywhere_is_an_error_never_a_panic() {
        let bytes = dump(&[node("/", None, 0), node("/a", Some(b"xyz"), 0)]);
        for cut in 0..bytes.len() {
            assert!(summarize(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(summarize(&bytes[..]).is_ok());
    }

    #[test]
    fn a_huge_length_is_refused_without_allocating() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(1);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(summarize(&bytes[..]), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn summaries_count_user_nodes_and_the_newest_user_change() {
        let mut root = node("/", None, 0);
        root.stat.pzxid = 11;
        let mut sys = node("/zookeeper", None, 0);
        sys.stat.mzxid = 99;
        let nodes = vec![root, sys, node("/a", Some(b"1"), 0), node("/e", None, 42)];
        let s = summarize(&dump(&nodes)[..]).unwrap();
        assert_eq!(s.znodes, 4);
        assert_eq!(s.user_znodes, 1);
        assert_eq!(s.ephemerals, 1);
        assert_eq!(s.data_zxid, 11, "the root's pzxid, not /zookeeper's mzxid");
    }

    #[test]
    fn a_restored_tree_is_judged_at_the_restores_own_zxid() {
        let at = 0x1_0000_0010;
        let made = |path: &str, czxid: i64, pzxid: i64| {
            let mut n = node(path, Some(b"x"), 0);
            n.stat.czxid = czxid;
            n.stat.mzxid = czxid;
            n.stat.pzxid = pzxid;
            n
        };
        let mut root = node("/", None, 0);
        root.stat.pzxid = 0x1_0000_0003;
        let count = |nodes: &[Znode]| {
            let mut c = AtRestore::new(at);
            for n in nodes {
                c.add(n);
            }
            c
        };
        let restored = vec![
            root.clone(),
            made("/a", 0x1_0000_0002, 0x1_0000_0005),
            made("/a/b", 0x1_0000_0005, 0x1_0000_0005),
            made("/c", 0x1_0000_0003, 0x1_0000_0003),
        ];
        // As restored: exactly the artifact's three.
        let c = count(&restored);
        assert_eq!((c.restored, c.created_since, c.children_changed), (3, 0, 0));
        assert_eq!(c.judge(3), Ok(String::new()));
        // A client wrote a new znode since (a newer epoch): not from the restore, still a match.
        let mut later = restored.clone();
        later[0].stat.pzxid = 0x2_0000_0001;
        later.push(made("/new", 0x2_0000_0001, 0x2_0000_0001));
        let c = count(&later);
        assert_eq!((c.restored, c.created_since), (3, 1));
        assert!(
            c.judge(3)
                .is_ok_and(|n| n.contains("1 znodes created by clients"))
        );
        // A client deleted /a/b since: its parent's children changed, so fewer is explained.
        let mut deleted = restored.clone();
        deleted.remove(2);
        deleted[1].stat.pzxid = 0x2_0000_0002;
        assert!(
            count(&deleted)
                .judge(3)
                .is_ok_and(|n| n.contains("1 of them deleted"))
        );
        // One missing with no change since is a failed restore; one too many is too.
        let mut missing = restored.clone();
        missing.remove(3);
        assert!(count(&missing).judge(3).is_err());
        assert!(count(&restored).judge(2).is_err());
        // Ephemerals and /zookeeper are not user znodes.
        let mut other = restored.clone();
        other.push(node("/a/lock", None, 77));
        other.push(made("/zookeeper/config", 0x1_0000_0001, 0x1_0000_0001));
        assert_eq!(count(&other).restored, 3);
    }

    #[test]
    fn placed_snapshots_are_judged_by_the_members_counters_only_while_nothing_moved() {
        let snapshot = 0x3_0000_0120_i64;
        let data = 0x3_0000_0100_i64;
        let served = |node_count, last_processed_zxid| ServedCounts {
            node_count,
            last_processed_zxid,
        };
        // A snapshot of 1,004 znodes loads as a node count of 1,005 (the root counted twice).
        let loaded = [served(1005, snapshot), served(1005, snapshot)];
        let note = loaded_untouched(&loaded, snapshot, data, 1004).expect("untouched");
        assert!(note.contains("1004 znodes"), "{note}");
        // A transaction after the load (a client's, a session's) is in the new leader's epoch:
        // the counters cannot tell restored data from clients' changes.
        let moved = [served(1005, snapshot), served(1006, 0x4_0000_0001)];
        let why = loaded_untouched(&moved, snapshot, data, 1004).unwrap_err();
        assert!(why.contains("after the load"), "{why}");
        // A new leader's epoch that began with no transaction in it (what a member says right
        // after the election) is nothing applied either.
        let elected = [served(1005, 0x4_0000_0000), served(1005, 0x4_0000_0000)];
        assert!(loaded_untouched(&elected, snapshot, data, 1004).is_ok());
        // Another count, or data older than the artifact's newest, is no pass either.
        assert!(loaded_untouched(&[served(1004, snapshot)], snapshot, data, 1004).is_err());
        assert!(loaded_untouched(&[served(1005, data - 1)], snapshot, data, 1004).is_err());
        assert!(loaded_untouched(&[], snapshot, data, 1004).is_err());
    }

    #[test]
    fn a_scratch_member_is_judged_by_its_own_counts() {
        // 3 user znodes, 2 ephemerals of sessions the snapshot held, /zookeeper with config and
        // quota under it: 1 + 2 + 2 + 3 znodes under the root.
        let loaded = LoadedCounts {
            descendants: 8,
            system_descendants: 2,
            ephemerals: 2,
            last_processed_zxid: 0x1_0000_0010,
        };
        assert_eq!(loaded.user_znodes(), Some(3));
        assert!(
            loaded
                .judge(3, 0x1_0000_000f)
                .is_ok_and(|n| n.contains("8 znodes under the root, 2 of them ephemeral"))
        );
        // One user znode fewer or more than the artifact holds is a failed verification.
        assert!(
            loaded
                .judge(4, 0x1_0000_000f)
                .is_err_and(|e| e.contains("3 user znodes where the artifact holds 4"))
        );
        assert!(loaded.judge(2, 0x1_0000_000f).is_err());
        // A member that did not load the artifact's newest change is not the artifact.
        assert!(
            loaded
                .judge(3, 0x1_0000_0011)
                .is_err_and(|e| e.contains("older than the artifact"))
        );
        // Counts that cannot be right (read across an expiry, say) are an error, not a number.
        let torn = LoadedCounts {
            ephemerals: 9,
            ..loaded
        };
        assert_eq!(torn.user_znodes(), None);
        assert!(torn.judge(0, 0).is_err_and(|e| e.contains("do not add up")));
    }

    #[test]
    fn a_prune_never_deletes_an_ephemeral_nor_a_znode_above_one() {
        let live: Vec<(String, bool)> = [
            ("/kept", false),
            ("/kept/gone", false),
            ("/kept/lock", true),
            ("/old", false),
            ("/old/deep", false),
            ("/old/deep/member", true),
            ("/old/other", false),
            ("/stale", false),
            ("/stale/child", false),
        ]
        .iter()
        .map(|(p, e)| (p.to_string(), *e))
        .collect();
        let kept: HashSet<String> = ["/kept".to_string()].into();
        let (doomed, spared) = prune_plan(&live, &kept);
        assert_eq!(
            doomed,
            ["/kept/gone", "/old/other", "/stale/child", "/stale"]
                .map(String::from)
                .to_vec()
        );
        // Two ephemerals and the two unkept persistent znodes above one (/old, /old/deep).
        assert_eq!(spared, 4);
        // Without ephemerals everything unkept goes, children first.
        let persistent: Vec<(String, bool)> =
            live.iter().map(|(p, _)| (p.clone(), false)).collect();
        let (doomed, spared) = prune_plan(&persistent, &kept);
        assert_eq!(doomed.len(), 8);
        assert_eq!(spared, 0);
        let depth = |p: &String| p.matches('/').count();
        assert!(doomed.windows(2).all(|w| depth(&w[0]) >= depth(&w[1])));
    }

    #[test]
    fn sequence_suffixes_are_ten_digits() {
        assert_eq!(sequence_suffix("lock-0000000042"), Some(42));
        assert_eq!(sequence_suffix("0000000007"), Some(7));
        assert_eq!(sequence_suffix("node-12"), None);
        assert_eq!(sequence_suffix("lock-00000x0042"), None);
    }

    #[test]
    fn permissions_convert_both_ways() {
        for bits in 0..32 {
            assert_eq!(perms_of(permission(bits)), bits);
        }
    }
}
