//! A streaming reader of ZooKeeper's on-disk snapshot: the bytes of a `snapshot.<zxid>` file in
//! `dataDir/version-2`, which is also exactly what 3.9's AdminServer streams for
//! `GET /commands/snapshot?streaming=true`. The reader hands out one [`Znode`] at a time and keeps
//! only the ACL cache, the current node and the paths of its ancestors in memory, so a backup can
//! check a snapshot of any size while it uploads it ([`SnapshotCheck`] does that from async code).
//!
//! # The format
//!
//! The file is one jute record stream, big-endian: an `int` is 4 bytes, a `long` 8, a string or
//! a byte buffer is an `int` length followed by that many bytes (UTF-8 for strings; length -1
//! means null), a vector is an `int` count followed by its items. The version-2 layout has not
//! changed since ZooKeeper 3.5; later releases only appended sections at the end. In order:
//!
//! | section | layout | what this reader checks |
//! |---|---|---|
//! | header | `"ZKSN"` magic, `int` version (2), `long` dbid (always -1) | all three; gzip and snappy magic give [`Error::Compressed`] |
//! | sessions | `int` count, then per session `long` id and `int` timeout (ms) | counts and lengths; only the count is kept |
//! | ACL cache | `int` count, then per entry a `long` reference and a vector of ACLs (`int` perms, string scheme, string id) | no null list, no reference twice |
//! | znodes | per node: string path, buffer data, `long` ACL reference, then `StatPersisted` (`long` czxid, mzxid, ctime, mtime; `int` version, cversion, aversion; `long` ephemeralOwner, pzxid); the list ends with the path `"/"` | see below |
//! | seal | `long` Adler-32 of every byte before it, then the string `"/"` | the checksum |
//! | digest (3.6+, when `zookeeper.digest.enabled`, the default) | `long` zxid, `int` digest version, `long` digest; then a seal | the seal; the digest is reported and compared with one computed here ([`SnapshotSummary::tree_matches_digest`]) |
//! | last zxid (3.9, `serializeLastProcessedZxid.enabled`, the default) | `long` zxid; then a seal | the seal |
//!
//! Each seal covers everything before it, earlier seals included. The sections after the first
//! seal are recognised by their length (0, 21, 33 or 54 bytes: nothing, last zxid only, digest
//! only, both), because a ZooKeeper that wrote neither simply stops there. Measured
//! (`tests/snapshot_real.rs`): 3.9.5 writes all 54 bytes, in the AdminServer's stream and in the
//! file it leaves in the data dir (the same bytes); 3.8.6 writes the 33 of the digest. On both,
//! the stored digest equals the one computed here when nothing was written during the snapshot.
//! Since the trailer is optional, a stream cut exactly after a seal reads as an older
//! snapshot: [`Options::require_last_zxid`] (for 3.9) or comparing [`SnapshotSummary::bytes`]
//! with the AdminServer's `snapshot_size` header catches that.
//!
//! The znodes: the root comes first, with the empty path (reported here as `/`). ZooKeeper writes
//! the tree depth first and each node before its children (`DataTree.serializeNode`), and its
//! own loader needs every parent before its child. This reader checks the stricter pre-order:
//! each node's parent must be the previous node or one of its ancestors, which needs only the
//! current branch in memory. Every ACL reference must be in the cache, except -1, which is
//! `world:anyone` with all permissions (what the root and `/zookeeper` carry). Paths must be
//! absolute, without empty components or a trailing slash. Sibling order is a hash set's order;
//! duplicate siblings are not detected.
//!
//! A snapshot is *fuzzy*: ZooKeeper copies the nodes one at a time while writes go on, so a
//! snapshot taken under load holds nodes of different moments. The trailer's last zxid is read
//! when serialization ends (the file name's and the AdminServer's `last_zxid` header's when it
//! starts). For a quiescent server every node is of one moment, and then the tree digest
//! computed here equals the one ZooKeeper stored.
//!
//! Limits: any length field above [`Options::max_field`] (16 MiB by default, well above
//! ZooKeeper's 1 MiB `jute.maxbuffer`) is an error before anything is allocated; counts never
//! preallocate. Compressed snapshots (`zookeeper.snapshot.compression.method=gz|snappy`) are
//! detected and refused, not read. Strings that are not UTF-8 are an error.

use std::collections::HashMap;
use std::io::{self, Read};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::znode::{Acl, Stat, Znode, is_system_path, parent_of};

/// The magic at the start of every snapshot.
pub const MAGIC: [u8; 4] = *b"ZKSN";
/// The only snapshot format version ZooKeeper has written since 3.5.
pub const VERSION: i32 = 2;
/// The dbid ZooKeeper always writes.
pub const DBID: i64 = -1;
/// The default limit of one length field (data, path, ACL scheme or id).
pub const DEFAULT_MAX_FIELD: usize = 16 << 20;
/// The ACL reference of `world:anyone` with every permission.
pub const OPEN_ACL_REF: i64 = -1;

const SEAL_LEN: usize = 13;
const DIGEST_LEN: usize = 20;
const LAST_ZXID_LEN: usize = 8;
const TRAILER_MAX: usize = DIGEST_LEN + LAST_ZXID_LEN + 2 * SEAL_LEN;
const BUFFER: usize = 64 << 10;
/// The Java string `"/"` as jute writes it: length 1, then the slash.
const SLASH: [u8; 5] = [0, 0, 0, 1, b'/'];

/// Errors of reading a snapshot. Offsets count bytes from the start of the stream.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying reader failed.
    #[error("reading the snapshot at byte {offset}: {source}")]
    Io {
        /// Bytes read before.
        offset: u64,
        /// What the reader said.
        #[source]
        source: io::Error,
    },
    /// The stream does not start with `ZKSN`.
    #[error("not a ZooKeeper snapshot: it starts with \"{found}\", not the magic \"ZKSN\"")]
    NotASnapshot {
        /// The first bytes, escaped.
        found: String,
    },
    /// A compressed snapshot, which this reader does not decompress.
    #[error(
        "the snapshot is {method}-compressed (zookeeper.snapshot.compression.method); \
         quorate reads only uncompressed snapshots"
    )]
    Compressed {
        /// `gzip` or `snappy`.
        method: &'static str,
    },
    /// A header field other than ZooKeeper writes.
    #[error("unexpected snapshot {what} {found} at byte {offset} (ZooKeeper writes {expected})")]
    Header {
        /// Where the field starts.
        offset: u64,
        /// `version` or `dbid`.
        what: &'static str,
        /// What the file says.
        found: i64,
        /// What ZooKeeper writes.
        expected: i64,
    },
    /// The stream ended inside a record.
    #[error("truncated at byte {offset} while reading {what}")]
    Truncated {
        /// Where the stream ended.
        offset: u64,
        /// What was being read.
        what: String,
    },
    /// A length field above the limit.
    #[error("{what} at byte {offset} claims {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Where the length field starts.
        offset: u64,
        /// What the length is of.
        what: String,
        /// The length the file says.
        len: i64,
        /// [`Options::max_field`].
        max: usize,
    },
    /// A value the format does not allow.
    #[error("corrupt snapshot at byte {offset}: {what}: {problem}")]
    Corrupt {
        /// Where the value starts.
        offset: u64,
        /// What was being read.
        what: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A seal's Adler-32 differs from the bytes before it.
    #[error(
        "checksum mismatch in the {seal} at byte {offset}: the file says {stored:#x}, \
         the bytes before it sum to {computed:#x}"
    )]
    Checksum {
        /// Where the seal starts.
        offset: u64,
        /// Which seal (`seal after the znodes`, `seal after the digest`, ...).
        seal: &'static str,
        /// The value in the file.
        stored: i64,
        /// The Adler-32 of the bytes before the seal.
        computed: u32,
    },
    /// A node refers to an ACL the cache does not hold.
    #[error(
        "znode {path} at byte {offset} refers to ACL {acl}, which is not in the snapshot's ACL cache"
    )]
    UnknownAcl {
        /// Where the ACL reference starts.
        offset: u64,
        /// The node.
        path: String,
        /// The reference.
        acl: i64,
    },
    /// A node whose parent is not the previous node or one of its ancestors.
    #[error(
        "znode {path} at byte {offset} does not follow its parent \
         (ZooKeeper writes every node before its children, depth first)"
    )]
    Orphan {
        /// Where the node's path starts.
        offset: u64,
        /// The node.
        path: String,
    },
    /// [`Options::require_last_zxid`] is set and the stream ends without 3.9's last zxid.
    #[error(
        "the snapshot ends at byte {offset} without the last processed zxid \
         (serializeLastProcessedZxid, ZooKeeper 3.9)"
    )]
    NoLastZxid {
        /// Where the stream ended.
        offset: u64,
    },
    /// Bytes after the last section.
    #[error("more than 54 bytes after the znodes' seal at byte {offset}")]
    Trailing {
        /// Where the trailer starts.
        offset: u64,
    },
    /// The reader was used after it failed.
    #[error("the snapshot reader failed before and cannot go on")]
    Failed,
    /// The parser thread of [`SnapshotCheck`] stopped abnormally.
    #[error("the snapshot parser stopped: {0}")]
    Parser(String),
}

impl Error {
    /// Adds the node's path to the description of what was being read.
    fn in_znode(self, path: &str) -> Error {
        let add = |what: String| format!("{what} of znode {path}");
        match self {
            Error::Truncated { offset, what } => Error::Truncated {
                offset,
                what: add(what),
            },
            Error::TooLong {
                offset,
                what,
                len,
                max,
            } => Error::TooLong {
                offset,
                what: add(what),
                len,
                max,
            },
            Error::Corrupt {
                offset,
                what,
                problem,
            } => Error::Corrupt {
                offset,
                what: add(what),
                problem,
            },
            other => other,
        }
    }
}

/// How strictly to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// The longest data, path, ACL scheme or ACL id accepted (default [`DEFAULT_MAX_FIELD`]).
    pub max_field: usize,
    /// Whether a snapshot without 3.9's last-zxid trailer is an error (default false). A 3.9
    /// AdminServer snapshot always has one, so a stream that ends before it was cut short.
    pub require_last_zxid: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_field: DEFAULT_MAX_FIELD,
            require_last_zxid: false,
        }
    }
}

/// The digest ZooKeeper stored after the znodes (`DataTree.ZxidDigest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotDigest {
    /// The zxid the digest belongs to; 0 when ZooKeeper had none yet (an empty digest).
    pub zxid: i64,
    /// The digest algorithm's version (2 since 3.6).
    pub version: i32,
    /// The tree digest at `zxid`.
    pub digest: i64,
}

/// What a whole snapshot holds, once it has been read and checked to the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Every node in the file, `/` and the `/zookeeper` subtree included. The AdminServer's
    /// `monitor` `znode_count` of the same tree is one more: ZooKeeper's node map holds the root
    /// under both `""` and `"/"` (measured on 3.8.6 and 3.9.5).
    pub znodes: u64,
    /// Nodes other than `/` and the `/zookeeper` subtree (ephemeral ones included).
    pub user_znodes: u64,
    /// The newest change to user data: the highest czxid, mzxid or pzxid of the user nodes and
    /// of the root (whose pzxid moves when a top-level node is created or deleted, and whose
    /// mzxid when its data is set); 0 when there is none.
    pub data_zxid: i64,
    /// The last processed zxid of 3.9's trailer, read when serialization ended.
    pub last_zxid: Option<i64>,
    /// Sessions in the session list.
    pub sessions: u64,
    /// The digest section, when present.
    pub digest: Option<SnapshotDigest>,
    /// ZooKeeper's tree digest (version 2) computed over the nodes read: the wrapping sum of
    /// each node's CRC-32 over its path, data and stat, the `/zookeeper/` subtree left out.
    pub tree_digest: i64,
    /// Entries in the ACL cache.
    pub acls: u64,
    /// Bytes in the stream.
    pub bytes: u64,
}

impl SnapshotSummary {
    /// Whether the stored digest matches the nodes: `None` without a digest or with an empty
    /// one. A mismatch is expected from a snapshot taken while writes went on (see the module
    /// doc); from a quiescent server it means the file does not hold what ZooKeeper had.
    pub fn tree_matches_digest(&self) -> Option<bool> {
        let digest = self.digest?;
        if digest.zxid == 0 {
            return None;
        }
        Some(digest.digest == self.tree_digest)
    }
}

/// Reads a snapshot and returns its summary, checking everything to the end.
pub fn summarize<R: Read>(reader: R) -> Result<SnapshotSummary, Error> {
    summarize_with(reader, Options::default())
}

/// [`summarize`] with other [`Options`].
pub fn summarize_with<R: Read>(reader: R, options: Options) -> Result<SnapshotSummary, Error> {
    SnapshotReader::with_options(reader, options)?.finish()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Nodes,
    Sealing,
    Failed,
}

/// Reads a snapshot one znode at a time; see the module doc for what it checks.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use quorate::backup::snapshot::SnapshotReader;
/// let file = std::fs::File::open("version-2/snapshot.100000000")?;
/// let mut reader = SnapshotReader::new(file)?;
/// while let Some(node) = reader.next_node()? {
///     println!("{} {:?}", node.path, node.data.as_ref().map(Vec::len));
/// }
/// let summary = reader.finish()?;
/// println!("{} znodes up to zxid {:#x}", summary.znodes, summary.data_zxid);
/// # Ok(()) }
/// ```
pub struct SnapshotReader<R> {
    src: Source<R>,
    options: Options,
    acls: HashMap<i64, Vec<Acl>>,
    sessions: u64,
    state: State,
    /// The previous node and its ancestors, root first.
    branch: Vec<String>,
    znodes: u64,
    user_znodes: u64,
    data_zxid: i64,
    tree_digest: i64,
}

impl<R> std::fmt::Debug for SnapshotReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotReader")
            .field("offset", &self.src.offset)
            .field("state", &self.state)
            .field("sessions", &self.sessions)
            .field("acls", &self.acls.len())
            .field("znodes", &self.znodes)
            .finish_non_exhaustive()
    }
}

impl<R: Read> SnapshotReader<R> {
    /// Reads and checks the header, the session list and the ACL cache.
    pub fn new(reader: R) -> Result<Self, Error> {
        Self::with_options(reader, Options::default())
    }

    /// [`SnapshotReader::new`] with other [`Options`].
    pub fn with_options(reader: R, options: Options) -> Result<Self, Error> {
        let mut src = Source::new(reader);
        let mut magic = [0u8; 4];
        src.fill(&mut magic, "the magic")
            .map_err(|e| match (e, magic_of(&magic)) {
                // Too short for the magic, but what there is says compressed.
                (Error::Truncated { .. }, Some(method)) => Error::Compressed { method },
                (e, _) => e,
            })?;
        if magic != MAGIC {
            return Err(match magic_of(&magic) {
                Some(method) => Error::Compressed { method },
                None => Error::NotASnapshot {
                    found: magic.escape_ascii().to_string(),
                },
            });
        }
        let offset = src.offset;
        let version = src.i32("the snapshot version")?;
        if version != VERSION {
            return Err(Error::Header {
                offset,
                what: "version",
                found: version.into(),
                expected: VERSION.into(),
            });
        }
        let offset = src.offset;
        let dbid = src.i64("the dbid")?;
        if dbid != DBID {
            return Err(Error::Header {
                offset,
                what: "dbid",
                found: dbid,
                expected: DBID,
            });
        }

        let sessions = src.count("the session count")?;
        for _ in 0..sessions {
            src.i64("a session id")?;
            src.i32("a session timeout")?;
        }

        let entries = src.count("the ACL cache size")?;
        let mut acls = HashMap::new();
        for _ in 0..entries {
            let offset = src.offset;
            let reference = src.i64("an ACL cache reference")?;
            let list_offset = src.offset;
            let len = src.i32("an ACL list length")?;
            if len < 0 {
                return Err(Error::Corrupt {
                    offset: list_offset,
                    what: format!("the ACL list of reference {reference}"),
                    problem: format!("length {len}; ZooKeeper never writes a null ACL list"),
                });
            }
            let mut list = Vec::new();
            for _ in 0..len {
                let perms = src.i32("ACL permissions")?;
                let scheme = src.string("an ACL scheme", options.max_field)?;
                let id = src.string("an ACL id", options.max_field)?;
                match (scheme, id) {
                    (Some(scheme), Some(id)) => list.push(Acl { perms, scheme, id }),
                    _ => {
                        return Err(Error::Corrupt {
                            offset,
                            what: format!("the ACL list of reference {reference}"),
                            problem: "a null scheme or id".into(),
                        });
                    }
                }
            }
            if acls.insert(reference, list).is_some() {
                return Err(Error::Corrupt {
                    offset,
                    what: "the ACL cache".into(),
                    problem: format!("reference {reference} appears twice"),
                });
            }
        }

        Ok(SnapshotReader {
            src,
            options,
            acls,
            sessions,
            state: State::Nodes,
            branch: Vec::new(),
            znodes: 0,
            user_znodes: 0,
            data_zxid: 0,
            tree_digest: 0,
        })
    }

    /// Sessions in the session list.
    pub fn sessions(&self) -> u64 {
        self.sessions
    }

    /// Entries in the ACL cache.
    pub fn acl_cache_len(&self) -> usize {
        self.acls.len()
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.src.offset
    }

    /// The next znode in file order (parents before children), or `None` after the last one.
    pub fn next_node(&mut self) -> Result<Option<Znode>, Error> {
        match self.state {
            State::Nodes => {}
            State::Sealing => return Ok(None),
            State::Failed => return Err(Error::Failed),
        }
        match self.read_node() {
            Ok(node) => Ok(node),
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    fn read_node(&mut self) -> Result<Option<Znode>, Error> {
        let max = self.options.max_field;
        let offset = self.src.offset;
        let Some(raw) = self.src.string("a znode path", max)? else {
            return Err(Error::Corrupt {
                offset,
                what: "a znode path".into(),
                problem: "null".into(),
            });
        };
        if raw == "/" {
            if self.znodes == 0 {
                return Err(Error::Corrupt {
                    offset,
                    what: "the znodes".into(),
                    problem: "the list ends before the root".into(),
                });
            }
            self.state = State::Sealing;
            return Ok(None);
        }
        let path = if raw.is_empty() {
            if self.znodes != 0 {
                return Err(Error::Corrupt {
                    offset,
                    what: "a znode path".into(),
                    problem: "a second root".into(),
                });
            }
            "/".to_string()
        } else {
            if self.znodes == 0 {
                return Err(Error::Corrupt {
                    offset,
                    what: "the first znode".into(),
                    problem: format!("{raw:?} instead of the root (\"\")"),
                });
            }
            if !raw.starts_with('/') || raw.ends_with('/') || raw.contains("//") {
                return Err(Error::Corrupt {
                    offset,
                    what: "a znode path".into(),
                    problem: format!("{raw:?} is not an absolute path"),
                });
            }
            raw
        };
        if let Some(parent) = parent_of(&path) {
            while self.branch.last().is_some_and(|last| last != parent) {
                self.branch.pop();
            }
            if self.branch.is_empty() {
                return Err(Error::Orphan { offset, path });
            }
        }

        let mut node = Znode {
            path,
            data: None,
            acl: Vec::new(),
            stat: Stat::default(),
        };
        if let Err(e) = self.read_body(&mut node) {
            return Err(e.in_znode(&node.path));
        }
        self.branch.push(node.path.clone());
        self.tally(&node);
        Ok(Some(node))
    }

    /// Reads the data, ACL and stat of `node`, whose path was read.
    fn read_body(&mut self, node: &mut Znode) -> Result<(), Error> {
        node.data = self.src.buffer("the data", self.options.max_field)?;
        let offset = self.src.offset;
        let reference = self.src.i64("the ACL reference")?;
        node.acl = if reference == OPEN_ACL_REF {
            vec![Acl::open()]
        } else if let Some(list) = self.acls.get(&reference) {
            list.clone()
        } else {
            return Err(Error::UnknownAcl {
                offset,
                path: node.path.clone(),
                acl: reference,
            });
        };
        node.stat = self.src.stat()?;
        Ok(())
    }

    fn tally(&mut self, node: &Znode) {
        self.znodes += 1;
        if node.path == "/" {
            self.data_zxid = self.data_zxid.max(node.stat.newest_zxid());
        } else if !is_system_path(&node.path) {
            self.user_znodes += 1;
            self.data_zxid = self.data_zxid.max(node.stat.newest_zxid());
        }
        self.tree_digest = self.tree_digest.wrapping_add(node_digest(node));
    }

    /// Reads the nodes not read yet, the seals, the digest and the last zxid, checks them, and
    /// checks that nothing follows.
    pub fn finish(mut self) -> Result<SnapshotSummary, Error> {
        while self.next_node()?.is_some() {}
        self.src.seal("seal after the znodes")?;

        let start = self.src.offset;
        let rest = self.src.rest(TRAILER_MAX)?;
        let (has_digest, has_zxid) = match rest.len() {
            0 => (false, false),
            n if n == LAST_ZXID_LEN + SEAL_LEN => (false, true),
            n if n == DIGEST_LEN + SEAL_LEN => (true, false),
            TRAILER_MAX => (true, true),
            n => {
                return Err(Error::Truncated {
                    offset: start + n as u64,
                    what: "the digest and last zxid after the znodes' seal".into(),
                });
            }
        };
        let mut trailer = Trailer {
            bytes: &rest,
            pos: 0,
            start,
            adler: self.src.adler,
        };
        let digest = if has_digest {
            let section = trailer.take(DIGEST_LEN);
            let digest = SnapshotDigest {
                zxid: be_i64(&section[0..8]),
                version: i32::from_be_bytes(section[8..12].try_into().expect("4 bytes")),
                digest: be_i64(&section[12..20]),
            };
            trailer.seal("seal after the digest")?;
            Some(digest)
        } else {
            None
        };
        let last_zxid = if has_zxid {
            let zxid = be_i64(trailer.take(LAST_ZXID_LEN));
            trailer.seal("seal after the last zxid")?;
            Some(zxid)
        } else {
            None
        };
        if last_zxid.is_none() && self.options.require_last_zxid {
            return Err(Error::NoLastZxid {
                offset: self.src.offset,
            });
        }
        Ok(SnapshotSummary {
            znodes: self.znodes,
            user_znodes: self.user_znodes,
            data_zxid: self.data_zxid,
            last_zxid,
            sessions: self.sessions,
            digest,
            tree_digest: self.tree_digest,
            acls: self.acls.len() as u64,
            bytes: self.src.offset,
        })
    }
}

impl<R: Read> Iterator for SnapshotReader<R> {
    type Item = Result<Znode, Error>;

    /// [`SnapshotReader::next_node`]; after an error it ends.
    fn next(&mut self) -> Option<Self::Item> {
        if self.state == State::Failed {
            return None;
        }
        self.next_node().transpose()
    }
}

fn magic_of(start: &[u8]) -> Option<&'static str> {
    // gzip: 1f 8b; snappy-java's stream header: 0x82 "SNAPPY" 0.
    if start.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if start.starts_with(&[0x82, b'S', b'N', b'A']) {
        Some("snappy")
    } else {
        None
    }
}

fn be_i64(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().expect("8 bytes"))
}

/// The sections after the first seal, already in memory (at most [`TRAILER_MAX`] bytes).
struct Trailer<'a> {
    bytes: &'a [u8],
    pos: usize,
    start: u64,
    adler: Adler32,
}

impl<'a> Trailer<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let bytes: &'a [u8] = self.bytes;
        let section = &bytes[self.pos..self.pos + n];
        self.adler.update(section);
        self.pos += n;
        section
    }

    fn seal(&mut self, seal: &'static str) -> Result<(), Error> {
        let offset = self.start + self.pos as u64;
        let computed = self.adler.value();
        let stored = be_i64(self.take(8));
        let slash = self.take(SLASH.len());
        check_seal(offset, seal, stored, computed, slash == SLASH)
    }
}

fn check_seal(
    offset: u64,
    seal: &'static str,
    stored: i64,
    computed: u32,
    slash: bool,
) -> Result<(), Error> {
    if stored != i64::from(computed) {
        return Err(Error::Checksum {
            offset,
            seal,
            stored,
            computed,
        });
    }
    if !slash {
        return Err(Error::Corrupt {
            offset: offset + 8,
            what: seal.to_string(),
            problem: "the checksum is not followed by the string \"/\"".into(),
        });
    }
    Ok(())
}

/// The reader with its own buffer, so that it knows the offset of every byte and sums exactly
/// the bytes it consumed.
pub(crate) struct Source<R> {
    inner: R,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
    pub(crate) offset: u64,
    adler: Adler32,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R) -> Self {
        Source {
            inner,
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            end: 0,
            offset: 0,
            adler: Adler32::new(),
        }
    }

    /// Refills the empty buffer; false at the end of the stream.
    fn refill(&mut self) -> Result<bool, Error> {
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.pos = 0;
                    self.end = n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        offset: self.offset,
                        source,
                    });
                }
            }
        }
    }

    /// Consumes up to `max` (at least one) bytes, summing them.
    pub(crate) fn take(&mut self, max: usize, what: &str) -> Result<&[u8], Error> {
        if self.pos == self.end && !self.refill()? {
            return Err(Error::Truncated {
                offset: self.offset,
                what: what.to_string(),
            });
        }
        let start = self.pos;
        let n = max.min(self.end - start);
        self.pos += n;
        self.offset += n as u64;
        let bytes = &self.buf[start..start + n];
        self.adler.update(bytes);
        Ok(bytes)
    }

    pub(crate) fn fill(&mut self, out: &mut [u8], what: &str) -> Result<(), Error> {
        let mut done = 0;
        while done < out.len() {
            let bytes = self.take(out.len() - done, what)?;
            out[done..done + bytes.len()].copy_from_slice(bytes);
            done += bytes.len();
        }
        Ok(())
    }

    fn i32(&mut self, what: &str) -> Result<i32, Error> {
        let mut b = [0u8; 4];
        self.fill(&mut b, what)?;
        Ok(i32::from_be_bytes(b))
    }

    pub(crate) fn i64(&mut self, what: &str) -> Result<i64, Error> {
        let mut b = [0u8; 8];
        self.fill(&mut b, what)?;
        Ok(i64::from_be_bytes(b))
    }

    /// A non-negative `int` count.
    fn count(&mut self, what: &str) -> Result<u64, Error> {
        let offset = self.offset;
        let n = self.i32(what)?;
        u64::try_from(n).map_err(|_| Error::Corrupt {
            offset,
            what: what.to_string(),
            problem: format!("negative ({n})"),
        })
    }

    /// A jute buffer: `None` for length -1. Grows the vector as bytes arrive, so a length that
    /// the stream does not back allocates no more than what was read.
    pub(crate) fn buffer(&mut self, what: &str, max: usize) -> Result<Option<Vec<u8>>, Error> {
        let offset = self.offset;
        let len = self.i32(what)?;
        if len == -1 {
            return Ok(None);
        }
        let Ok(len) = usize::try_from(len) else {
            return Err(Error::Corrupt {
                offset,
                what: what.to_string(),
                problem: format!("negative length {len}"),
            });
        };
        if len > max {
            return Err(Error::TooLong {
                offset,
                what: what.to_string(),
                len: len as i64,
                max,
            });
        }
        let mut out = Vec::with_capacity(len.min(BUFFER));
        while out.len() < len {
            let bytes = self.take(len - out.len(), what)?;
            out.extend_from_slice(bytes);
        }
        Ok(Some(out))
    }

    fn string(&mut self, what: &str, max: usize) -> Result<Option<String>, Error> {
        let offset = self.offset;
        match self.buffer(what, max)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    offset,
                    what: what.to_string(),
                    problem: format!("not UTF-8 ({e})"),
                }),
        }
    }

    fn stat(&mut self) -> Result<Stat, Error> {
        let mut b = [0u8; 60];
        self.fill(&mut b, "the stat")?;
        let l = |at: usize| be_i64(&b[at..at + 8]);
        let i = |at: usize| i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        Ok(Stat {
            czxid: l(0),
            mzxid: l(8),
            ctime: l(16),
            mtime: l(24),
            version: i(32),
            cversion: i(36),
            aversion: i(40),
            ephemeral_owner: l(44),
            pzxid: l(52),
        })
    }

    /// Reads a seal and checks it against the bytes before it.
    fn seal(&mut self, seal: &'static str) -> Result<(), Error> {
        let offset = self.offset;
        let computed = self.adler.value();
        let stored = self.i64(seal)?;
        let mut slash = [0u8; SLASH.len()];
        self.fill(&mut slash, seal)?;
        check_seal(offset, seal, stored, computed, slash == SLASH)
    }

    /// Everything up to the end of the stream, unsummed; [`Error::Trailing`] past `limit` bytes.
    fn rest(&mut self, limit: usize) -> Result<Vec<u8>, Error> {
        let start = self.offset;
        let mut out = Vec::new();
        loop {
            if self.pos == self.end && !self.refill()? {
                return Ok(out);
            }
            let n = self.end - self.pos;
            if out.len() + n > limit {
                return Err(Error::Trailing { offset: start });
            }
            out.extend_from_slice(&self.buf[self.pos..self.end]);
            self.pos = self.end;
            self.offset += n as u64;
        }
    }
}

/// Adler-32 (RFC 1950), what ZooKeeper's seals hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Adler32 {
    a: u32,
    b: u32,
}

impl Adler32 {
    const MOD: u32 = 65521;
    /// The most bytes that can be summed before `b` could overflow 32 bits.
    const NMAX: usize = 5552;

    pub(crate) fn new() -> Self {
        Adler32 { a: 1, b: 0 }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(Self::NMAX) {
            for &byte in chunk {
                self.a += u32::from(byte);
                self.b += self.a;
            }
            self.a %= Self::MOD;
            self.b %= Self::MOD;
        }
    }

    pub(crate) fn value(&self) -> u32 {
        (self.b << 16) | self.a
    }
}

/// CRC-32 (IEEE 802.3, reflected), what ZooKeeper's per-node digest uses.
struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Crc32 {
    fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }

    fn update(&mut self, bytes: &[u8]) {
        let mut c = self.0;
        for &byte in bytes {
            c = CRC_TABLE[((c ^ u32::from(byte)) & 0xFF) as usize] ^ (c >> 8);
        }
        self.0 = c;
    }

    fn value(&self) -> u32 {
        !self.0
    }
}

/// One node's share of ZooKeeper's tree digest (digest version 2): CRC-32 over the path (the
/// root's is empty), the data, then czxid, mzxid, pzxid, ctime, mtime, version, cversion,
/// aversion and ephemeralOwner big-endian. Nodes under `/zookeeper/` count 0.
fn node_digest(node: &Znode) -> i64 {
    if node.path.starts_with("/zookeeper/") {
        return 0;
    }
    let path = if node.path == "/" { "" } else { &node.path };
    let s = &node.stat;
    let mut fields = [0u8; 60];
    let longs = [s.czxid, s.mzxid, s.pzxid, s.ctime, s.mtime];
    for (i, v) in longs.iter().enumerate() {
        fields[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
    }
    for (i, v) in [s.version, s.cversion, s.aversion].iter().enumerate() {
        fields[40 + i * 4..44 + i * 4].copy_from_slice(&v.to_be_bytes());
    }
    fields[52..60].copy_from_slice(&s.ephemeral_owner.to_be_bytes());
    let mut crc = Crc32::new();
    crc.update(path.as_bytes());
    if let Some(data) = &node.data {
        crc.update(data);
    }
    crc.update(&fields);
    i64::from(crc.value())
}

// ---------------------------------------------------------------------------------------------
// Async: feeding chunks
// ---------------------------------------------------------------------------------------------

/// A blocking [`Read`] over chunks that arrive through a Tokio channel; the end of the stream is
/// the channel's close, an `Err` chunk is a read error. Use it on a blocking thread
/// (`spawn_blocking`), never on an async worker: it blocks on the channel.
#[derive(Debug)]
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    chunk: Bytes,
}

impl ChannelReader {
    /// A reader of what `rx` delivers.
    pub fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            chunk: Bytes::new(),
        }
    }
}

/// A channel of `capacity` chunks and the reader of its other end.
pub fn channel(capacity: usize) -> (mpsc::Sender<io::Result<Bytes>>, ChannelReader) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChannelReader::new(rx))
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// Checks a snapshot while it streams past: feed it the chunks as they arrive (an HTTP body on
/// its way to the object store), then [`SnapshotCheck::finish`] gives the summary. The parser
/// runs on a blocking thread behind a channel of a few chunks, so a slow parser slows the feed
/// rather than buffering; at most the channel's chunks and the reader's 64 KiB are held.
#[derive(Debug)]
pub struct SnapshotCheck {
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    task: Option<tokio::task::JoinHandle<Result<SnapshotSummary, Error>>>,
}

/// Chunks in flight between [`SnapshotCheck::feed`] and the parser.
const CHECK_CHANNEL: usize = 16;

impl SnapshotCheck {
    /// Starts the parser on Tokio's blocking pool (call it inside a runtime).
    pub fn spawn(options: Options) -> SnapshotCheck {
        let (tx, reader) = channel(CHECK_CHANNEL);
        let task = tokio::task::spawn_blocking(move || summarize_with(reader, options));
        SnapshotCheck {
            tx: Some(tx),
            task: Some(task),
        }
    }

    /// Hands the parser the next chunk, waiting while it is behind. When the parser has already
    /// failed, returns its error (and every later call [`Error::Failed`]).
    pub async fn feed(&mut self, chunk: Bytes) -> Result<(), Error> {
        if chunk.is_empty() {
            return Ok(());
        }
        let Some(tx) = &self.tx else {
            return Err(Error::Failed);
        };
        if tx.send(Ok(chunk)).await.is_ok() {
            return Ok(());
        }
        // The parser dropped its end: it stopped before the end of the stream.
        self.tx = None;
        match self.join().await {
            Err(e) => Err(e),
            Ok(_) => Err(Error::Parser(
                "the parser finished before the end of the stream".into(),
            )),
        }
    }

    /// Ends the stream and waits for the parser's verdict on the whole snapshot.
    pub async fn finish(mut self) -> Result<SnapshotSummary, Error> {
        self.tx = None;
        self.join().await
    }

    async fn join(&mut self) -> Result<SnapshotSummary, Error> {
        match self.task.take() {
            None => Err(Error::Failed),
            Some(task) => task.await.map_err(|e| Error::Parser(e.to_string()))?,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::znode::perms;
    use std::time::Instant;

    /// Writes snapshots the way ZooKeeper lays them out (see the module doc); test only.
    #[derive(Default)]
    struct Writer {
        out: Vec<u8>,
    }

    impl Writer {
        fn int(&mut self, v: i32) {
            self.out.extend_from_slice(&v.to_be_bytes());
        }
        fn long(&mut self, v: i64) {
            self.out.extend_from_slice(&v.to_be_bytes());
        }
        fn buffer(&mut self, v: Option<&[u8]>) {
            match v {
                None => self.int(-1),
                Some(b) => {
                    self.int(b.len() as i32);
                    self.out.extend_from_slice(b);
                }
            }
        }
        fn string(&mut self, s: &str) {
            self.buffer(Some(s.as_bytes()));
        }
        fn seal(&mut self) {
            let mut adler = Adler32::new();
            adler.update(&self.out);
            self.long(i64::from(adler.value()));
            self.string("/");
        }
    }

    /// What a test snapshot holds; nodes carry their path as written (the root's is "").
    #[derive(Clone)]
    struct Spec {
        sessions: Vec<(i64, i32)>,
        acls: Vec<(i64, Vec<Acl>)>,
        nodes: Vec<(String, Option<Vec<u8>>, i64, Stat)>,
        digest: Option<SnapshotDigest>,
        last_zxid: Option<i64>,
    }

    impl Spec {
        fn bytes(&self) -> Vec<u8> {
            let mut w = Writer::default();
            w.out.extend_from_slice(&MAGIC);
            w.int(VERSION);
            w.long(DBID);
            w.int(self.sessions.len() as i32);
            for (id, timeout) in &self.sessions {
                w.long(*id);
                w.int(*timeout);
            }
            w.int(self.acls.len() as i32);
            for (reference, list) in &self.acls {
                w.long(*reference);
                w.int(list.len() as i32);
                for acl in list {
                    w.int(acl.perms);
                    w.string(&acl.scheme);
                    w.string(&acl.id);
                }
            }
            for (path, data, acl, s) in &self.nodes {
                w.string(path);
                w.buffer(data.as_deref());
                w.long(*acl);
                for v in [s.czxid, s.mzxid, s.ctime, s.mtime] {
                    w.long(v);
                }
                for v in [s.version, s.cversion, s.aversion] {
                    w.int(v);
                }
                w.long(s.ephemeral_owner);
                w.long(s.pzxid);
            }
            w.string("/");
            w.seal();
            if let Some(d) = self.digest {
                w.long(d.zxid);
                w.int(d.version);
                w.long(d.digest);
                w.seal();
            }
            if let Some(zxid) = self.last_zxid {
                w.long(zxid);
                w.seal();
            }
            w.out
        }

        /// The nodes as the reader should return them.
        fn expected(&self) -> Vec<Znode> {
            let by_ref: HashMap<i64, Vec<Acl>> = self.acls.iter().cloned().collect();
            self.nodes
                .iter()
                .map(|(path, data, acl, stat)| Znode {
                    path: if path.is_empty() {
                        "/".into()
                    } else {
                        path.clone()
                    },
                    data: data.clone(),
                    acl: if *acl == -1 {
                        vec![Acl::open()]
                    } else {
                        by_ref[acl].clone()
                    },
                    stat: *stat,
                })
                .collect()
        }
    }

    fn stat(czxid: i64, mzxid: i64, pzxid: i64) -> Stat {
        Stat {
            czxid,
            mzxid,
            ctime: 1_700_000_000_000 + czxid,
            mtime: 1_700_000_000_000 + mzxid,
            version: (mzxid - czxid) as i32,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            pzxid,
        }
    }

    fn acl(perms: i32, scheme: &str, id: &str) -> Acl {
        Acl {
            perms,
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    /// A small tree like a 3.9 server's: the system nodes, nested user nodes, binary, empty
    /// and null data, a digest-only ACL, sequential children and an ephemeral node.
    fn sample() -> Spec {
        let node = |path: &str, data: Option<&[u8]>, acl: i64, stat: Stat| {
            (path.to_string(), data.map(<[u8]>::to_vec), acl, stat)
        };
        let binary: Vec<u8> = (0..=255u8).collect();
        let mut seq_parent = stat(0x10, 0x10, 0x14);
        seq_parent.cversion = 3;
        let mut ephemeral = stat(0x15, 0x15, 0x15);
        ephemeral.ephemeral_owner = 0x0100_0000_0000_0001;
        let mut config = stat(0, 0, 0);
        config.aversion = 1;
        Spec {
            sessions: vec![
                (0x0100_0000_0000_0001, 30_000),
                (0x0200_0000_0000_0007, 4_000),
            ],
            acls: vec![
                (1, vec![acl(perms::READ, "world", "anyone")]),
                (
                    2,
                    vec![acl(
                        perms::ALL,
                        "digest",
                        "app:Ds1q2ZtVv0CyBtzxkcQ2pxdvYUc=",
                    )],
                ),
                (3, vec![Acl::open()]),
            ],
            nodes: vec![
                node("", Some(b""), -1, stat(0, 0, 0x16)),
                node("/zookeeper", Some(b""), -1, stat(0, 0, 0)),
                node("/zookeeper/config", Some(b"server.1=x"), 1, config),
                node("/zookeeper/quota", Some(b""), -1, stat(0, 0, 0)),
                node("/app", Some(b"top"), 3, stat(2, 9, 0x11)),
                node("/app/a", Some(b""), 3, stat(3, 3, 4)),
                node("/app/a/b", Some(&binary), 3, stat(4, 4, 4)),
                node("/app/null", None, 3, stat(0x11, 0x11, 0x11)),
                node("/app/secret", Some(b"s3cret"), 2, stat(5, 6, 5)),
                node("/seq", None, 3, seq_parent),
                node("/seq/job-0000000000", Some(b"0"), 3, stat(0x12, 0x12, 0x12)),
                node("/seq/job-0000000001", Some(b"1"), 3, stat(0x13, 0x13, 0x13)),
                node("/seq/job-0000000002", Some(b"2"), 3, stat(0x14, 0x14, 0x14)),
                node("/live", Some(b"me"), -1, ephemeral),
            ],
            digest: Some(SnapshotDigest {
                zxid: 0x16,
                version: 2,
                digest: 0x1234_5678,
            }),
            last_zxid: Some(0x17),
        }
    }

    fn read_all(bytes: &[u8], options: Options) -> Result<(Vec<Znode>, SnapshotSummary), Error> {
        let mut reader = SnapshotReader::with_options(bytes, options)?;
        let mut nodes = Vec::new();
        while let Some(node) = reader.next_node()? {
            nodes.push(node);
        }
        Ok((nodes, reader.finish()?))
    }

    #[test]
    fn checksums_match_known_values() {
        let mut adler = Adler32::new();
        adler.update(b"Wikipedia");
        assert_eq!(adler.value(), 0x11E6_0398);
        let mut crc = Crc32::new();
        crc.update(b"123456789");
        assert_eq!(crc.value(), 0xCBF4_3926);
        // Long input: the modulo is applied often enough not to overflow.
        let mut adler = Adler32::new();
        adler.update(&vec![0xFF; 1 << 20]);
        let (mut a, mut b) = (1u64, 0u64);
        for _ in 0..(1 << 20) {
            a = (a + 0xFF) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!(u64::from(adler.value()), (b << 16) | a);
    }

    #[test]
    fn a_written_snapshot_round_trips() {
        let spec = sample();
        let bytes = spec.bytes();
        let (nodes, summary) = read_all(&bytes, Options::default()).unwrap();
        assert_eq!(nodes, spec.expected());
        assert_eq!(nodes[0].path, "/");
        assert_eq!(nodes[7].data, None, "null data stays null");
        assert_eq!(nodes[5].data, Some(Vec::new()), "empty data stays empty");
        assert_eq!(
            summary,
            SnapshotSummary {
                znodes: 14,
                user_znodes: 10,
                // The newest user node is /live (0x15); the root's pzxid is newer.
                data_zxid: 0x16,
                last_zxid: Some(0x17),
                sessions: 2,
                digest: spec.digest,
                tree_digest: summary.tree_digest,
                acls: 3,
                bytes: bytes.len() as u64,
            }
        );
        assert_eq!(summary.tree_matches_digest(), Some(false));
        assert_eq!(summarize(bytes.as_slice()).unwrap(), summary);
        // The iterator sees the same nodes.
        let reader = SnapshotReader::new(bytes.as_slice()).unwrap();
        let iterated: Vec<Znode> = reader.map(Result::unwrap).collect();
        assert_eq!(iterated, nodes);
    }

    #[test]
    fn finish_reads_the_nodes_not_read_yet() {
        let bytes = sample().bytes();
        let mut reader = SnapshotReader::new(bytes.as_slice()).unwrap();
        assert_eq!(reader.sessions(), 2);
        assert_eq!(reader.acl_cache_len(), 3);
        reader.next_node().unwrap().unwrap();
        reader.next_node().unwrap().unwrap();
        let summary = reader.finish().unwrap();
        assert_eq!(summary.znodes, 14);
        assert_eq!(summary.bytes, bytes.len() as u64);
    }

    #[test]
    fn data_zxid_comes_from_user_nodes_and_the_root_only() {
        let mut spec = sample();
        // A reconfig moves /zookeeper/config far ahead: not user data.
        spec.nodes[2].3.mzxid = 0x1000;
        spec.nodes[4].3.mzxid = 0x20;
        let summary = summarize(spec.bytes().as_slice()).unwrap();
        assert_eq!(summary.data_zxid, 0x20);
    }

    #[test]
    fn the_digest_computed_matches_the_one_stored_when_they_agree() {
        let mut spec = sample();
        let computed = summarize(spec.bytes().as_slice()).unwrap().tree_digest;
        spec.digest = Some(SnapshotDigest {
            zxid: 0x17,
            version: 2,
            digest: computed,
        });
        let summary = summarize(spec.bytes().as_slice()).unwrap();
        assert_eq!(summary.tree_matches_digest(), Some(true));
        // The /zookeeper/ subtree is not part of the digest; everything else is.
        spec.nodes[3].1 = Some(b"changed".to_vec());
        assert_eq!(
            summarize(spec.bytes().as_slice()).unwrap().tree_digest,
            computed
        );
        spec.nodes[1].1 = Some(b"changed".to_vec());
        assert_ne!(
            summarize(spec.bytes().as_slice()).unwrap().tree_digest,
            computed
        );
        // An empty digest (zxid 0) says nothing.
        spec.digest = Some(SnapshotDigest {
            zxid: 0,
            version: 2,
            digest: 0,
        });
        let summary = summarize(spec.bytes().as_slice()).unwrap();
        assert_eq!(summary.tree_matches_digest(), None);
    }

    #[test]
    fn every_trailer_combination_reads() {
        for (digest, last_zxid) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut spec = sample();
            if !digest {
                spec.digest = None;
            }
            if !last_zxid {
                spec.last_zxid = None;
            }
            let summary = summarize(spec.bytes().as_slice()).unwrap();
            assert_eq!(summary.digest, spec.digest);
            assert_eq!(summary.last_zxid, spec.last_zxid);
            let strict = Options {
                require_last_zxid: true,
                ..Options::default()
            };
            let result = summarize_with(spec.bytes().as_slice(), strict);
            assert_eq!(result.is_ok(), last_zxid, "{result:?}");
        }
    }

    #[test]
    fn truncation_at_every_byte_is_an_error() {
        let bytes = sample().bytes();
        let len = bytes.len();
        // Where a ZooKeeper without the later sections would have stopped.
        let complete_without_zxid = len - LAST_ZXID_LEN - SEAL_LEN;
        let complete_without_trailer = complete_without_zxid - DIGEST_LEN - SEAL_LEN;
        let strict = Options {
            require_last_zxid: true,
            ..Options::default()
        };
        for cut in 0..len {
            let short = &bytes[..cut];
            let lenient = read_all(short, Options::default());
            if cut == complete_without_zxid || cut == complete_without_trailer {
                let (_, summary) = lenient.unwrap();
                assert_eq!(summary.last_zxid, None);
                assert_eq!(summary.bytes, cut as u64);
            } else {
                let err = lenient.unwrap_err();
                assert!(
                    matches!(err, Error::Truncated { .. } | Error::Checksum { .. }),
                    "cut at {cut}: {err}"
                );
            }
            let err = read_all(short, strict).unwrap_err();
            if cut < complete_without_trailer {
                assert!(
                    matches!(err, Error::Truncated { .. }),
                    "cut at {cut}: {err}"
                );
            }
        }
    }

    #[test]
    fn truncation_messages_say_where_and_what() {
        let bytes = sample().bytes();
        // Inside /app/a/b's data.
        let at = bytes.windows(8).position(|w| w == b"/app/a/b").unwrap() + 8 + 4 + 100;
        let err = summarize(&bytes[..at]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("truncated at byte {at} while reading the data of znode /app/a/b")
        );
        let err = summarize(&bytes[..10]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated at byte 10 while reading the dbid"
        );
    }

    #[test]
    fn a_flipped_byte_anywhere_is_detected() {
        let bytes = sample().bytes();
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let result = read_all(&bad, Options::default());
                assert!(result.is_err(), "flip {flip:#x} at {at} went unnoticed");
            }
        }
        // A flipped data byte is the checksum's to find.
        let at = bytes.windows(6).position(|w| w == b"s3cret").unwrap();
        let mut bad = bytes.clone();
        bad[at] = b'S';
        let err = summarize(bad.as_slice()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Checksum {
                    seal: "seal after the znodes",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().starts_with("checksum mismatch"), "{err}");
        // So is one in the last zxid.
        let mut bad = bytes.clone();
        let at = bytes.len() - SEAL_LEN - 1;
        bad[at] ^= 1;
        let err = summarize(bad.as_slice()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Checksum {
                    seal: "seal after the last zxid",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_huge_length_is_an_error_without_allocating() {
        // A node whose data length says 2 GiB, and nothing behind it.
        let mut w = Writer::default();
        w.out.extend_from_slice(&MAGIC);
        w.int(VERSION);
        w.long(DBID);
        w.int(0);
        w.int(0);
        w.string("");
        w.int(i32::MAX);
        let err = summarize(w.out.as_slice()).unwrap_err();
        assert!(
            matches!(&err, Error::TooLong { len, max, .. } if *len == i64::from(i32::MAX) && *max == DEFAULT_MAX_FIELD),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the data of znode / at byte 28 claims 2147483647 bytes, more than the limit of {DEFAULT_MAX_FIELD}"
            )
        );
        // Within the limit but not backed by the stream: truncated, after reading what is there.
        let mut w2 = Writer { out: w.out.clone() };
        w2.out.truncate(w2.out.len() - 4);
        w2.int(10 << 20);
        w2.out.extend_from_slice(&[7; 100]);
        let err = summarize(w2.out.as_slice()).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        // The limit is an option, and applies to every length field.
        let limit = |max_field| Options {
            max_field,
            ..Options::default()
        };
        let bytes = sample().bytes();
        let err = summarize_with(bytes.as_slice(), limit(40)).unwrap_err();
        assert!(
            matches!(&err, Error::TooLong { what, len: 256, max: 40, .. } if what == "the data of znode /app/a/b"),
            "{err}"
        );
        let err = summarize_with(bytes.as_slice(), limit(4)).unwrap_err();
        assert!(
            matches!(&err, Error::TooLong { what, len: 5, max: 4, .. } if what == "an ACL scheme"),
            "{err}"
        );
        // Huge counts only loop until the stream ends (or what follows makes no sense).
        for counts in [[i32::MAX, 0], [0, i32::MAX]] {
            let mut w = Writer::default();
            w.out.extend_from_slice(&MAGIC);
            w.int(VERSION);
            w.long(DBID);
            w.int(counts[0]);
            w.int(counts[1]);
            for reference in 0..5 {
                w.long(reference);
                w.int(0);
            }
            let err = summarize(w.out.as_slice()).unwrap_err();
            assert!(matches!(err, Error::Truncated { .. }), "{err}");
        }
        // An ACL list of 2^31 - 1 entries: the same.
        let mut w = Writer::default();
        w.out.extend_from_slice(&MAGIC);
        w.int(VERSION);
        w.long(DBID);
        w.int(0);
        w.int(1);
        w.long(1);
        w.int(i32::MAX);
        let err = summarize(w.out.as_slice()).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
    }

    #[test]
    fn other_files_are_refused_with_a_reason() {
        let cases: [(&[u8], &str); 5] = [
            (
                b"{\"command\":\"snapshot\"}",
                "not a ZooKeeper snapshot: it starts with \"{\\\"co\"",
            ),
            (&[0x1f, 0x8b, 8, 0, 0, 0], "gzip-compressed"),
            (&[0x1f, 0x8b], "gzip-compressed"),
            (b"\x82SNAPPY\x00\x00\x00\x00\x01", "snappy-compressed"),
            (b"ZK", "truncated at byte 2 while reading the magic"),
        ];
        for (bytes, says) in cases {
            let err = summarize(bytes).unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
        let mut bytes = sample().bytes();
        bytes[7] = 3;
        let err = summarize(bytes.as_slice()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Header {
                    what: "version",
                    found: 3,
                    ..
                }
            ),
            "{err}"
        );
        let mut bytes = sample().bytes();
        bytes[15] = 0;
        let err = summarize(bytes.as_slice()).unwrap_err();
        assert!(matches!(err, Error::Header { what: "dbid", .. }), "{err}");
    }

    #[test]
    fn structural_errors_name_the_node() {
        // A child before its parent.
        let mut spec = sample();
        spec.nodes.swap(5, 6);
        let err = summarize(spec.bytes().as_slice()).unwrap_err();
        assert!(
            matches!(&err, Error::Orphan { path, .. } if path == "/app/a/b"),
            "{err}"
        );
        // A node after a sibling's subtree that is not its parent's.
        let mut spec = sample();
        spec.nodes
            .push(("/app/late".into(), None, -1, stat(0x18, 0x18, 0x18)));
        let err = summarize(spec.bytes().as_slice()).unwrap_err();
        assert!(
            matches!(&err, Error::Orphan { path, .. } if path == "/app/late"),
            "{err}"
        );
        // An ACL reference the cache does not hold.
        let mut spec = sample();
        spec.nodes[6].2 = 42;
        let err = summarize(spec.bytes().as_slice()).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownAcl { path, acl: 42, .. } if path == "/app/a/b"),
            "{err}"
        );
        // The root first, once.
        let mut spec = sample();
        spec.nodes.remove(0);
        let err = summarize(spec.bytes().as_slice()).unwrap_err();
        assert!(err.to_string().contains("instead of the root"), "{err}");
        let mut spec = sample();
        spec.nodes.push((String::new(), None, -1, Stat::default()));
        let err = summarize(spec.bytes().as_slice()).unwrap_err();
        assert!(err.to_string().contains("a second root"), "{err}");
        let mut spec = sample();
        spec.nodes.clear();
        let err = summarize(spec.bytes().as_slice()).unwrap_err();
        assert!(err.to_string().contains("ends before the root"), "{err}");
        // Paths are absolute and clean.
        for bad in ["app", "/app/", "/app//x"] {
            let mut spec = sample();
            spec.nodes.push((bad.into(), None, -1, Stat::default()));
            let err = summarize(spec.bytes().as_slice()).unwrap_err();
            assert!(err.to_string().contains("not an absolute path"), "{err}");
        }
        // A reference twice in the ACL cache.
        let mut spec = sample();
        spec.acls.push((1, vec![]));
        let err = summarize(spec.bytes().as_slice()).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        // Bytes after the last seal.
        let mut bytes = sample().bytes();
        bytes.push(0);
        let err = summarize(bytes.as_slice()).unwrap_err();
        assert!(matches!(err, Error::Trailing { .. }), "{err}");
    }

    #[test]
    fn after_an_error_the_reader_stays_failed() {
        let bytes = sample().bytes();
        let mut reader = SnapshotReader::new(&bytes[..200]).unwrap();
        let err = loop {
            match reader.next_node() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("a cut file ended cleanly"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        assert!(matches!(reader.next_node(), Err(Error::Failed)));
        assert!(matches!(reader.finish(), Err(Error::Failed)));
    }

    /// A reader that hands out at most `step` bytes per call and sometimes is interrupted.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
        calls: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "again"));
            }
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_and_interruptions_change_nothing() {
        let bytes = sample().bytes();
        let whole = summarize(bytes.as_slice()).unwrap();
        for step in [1, 2, 3, 7, 13, 64] {
            let trickle = Trickle {
                bytes: &bytes,
                step,
                calls: 0,
            };
            assert_eq!(summarize(trickle).unwrap(), whole, "step {step}");
        }
    }

    #[test]
    fn io_errors_carry_the_offset() {
        let bytes = sample().bytes();
        let failing = bytes[..100].chain(FailingRead);
        let err = summarize(failing).unwrap_err();
        assert!(matches!(&err, Error::Io { offset: 100, .. }), "{err}");
    }

    struct FailingRead;

    impl Read for FailingRead {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone"))
        }
    }

    fn chunks(bytes: &[u8], seed: u64) -> Vec<Bytes> {
        // A small deterministic generator, sizes 1..=97.
        let mut x = seed | 1;
        let mut out = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (1 + (x % 97) as usize).min(rest.len());
            out.push(Bytes::copy_from_slice(&rest[..n]));
            rest = &rest[n..];
        }
        out
    }

    #[tokio::test]
    async fn chunks_fed_from_async_code_give_the_same_summary() {
        let bytes = sample().bytes();
        let whole = summarize(bytes.as_slice()).unwrap();
        for seed in 1..5 {
            let mut check = SnapshotCheck::spawn(Options::default());
            check.feed(Bytes::new()).await.unwrap();
            for chunk in chunks(&bytes, seed) {
                check.feed(chunk).await.unwrap();
            }
            assert_eq!(check.finish().await.unwrap(), whole);
        }
    }

    #[tokio::test]
    async fn a_bad_stream_fails_the_feed_or_the_finish() {
        // Bad from the first bytes: a feed fails with the parser's own error.
        let mut check = SnapshotCheck::spawn(Options::default());
        let body = Bytes::from(vec![b'{'; 1 << 20]);
        let mut failed = None;
        for _ in 0..64 {
            if let Err(e) = check.feed(body.clone()).await {
                failed = Some(e);
                break;
            }
        }
        let err = failed.expect("the feed noticed");
        assert!(matches!(err, Error::NotASnapshot { .. }), "{err}");
        assert!(matches!(check.feed(body).await, Err(Error::Failed)));
        assert!(matches!(check.finish().await, Err(Error::Failed)));

        // Cut short: the finish says so.
        let bytes = sample().bytes();
        let mut check = SnapshotCheck::spawn(Options::default());
        check
            .feed(Bytes::copy_from_slice(&bytes[..bytes.len() - 30]))
            .await
            .unwrap();
        let err = check.finish().await.unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");

        // A stream error reaches the reader.
        let (tx, reader) = channel(2);
        tx.send(Ok(Bytes::copy_from_slice(&bytes[..50])))
            .await
            .unwrap();
        tx.send(Err(io::Error::other("upstream broke")))
            .await
            .unwrap();
        let err = tokio::task::spawn_blocking(move || summarize(reader))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Io { offset: 50, source } if source.to_string() == "upstream broke"),
            "{err}"
        );
    }

    /// A generated tree: `parents` top-level nodes with `children` each of `size` bytes.
    fn big(parents: usize, children: usize, size: usize) -> Spec {
        let mut spec = sample();
        spec.nodes.truncate(4);
        let mut zxid = 0x1_0000_0000_i64;
        let data = vec![0x5A; size];
        for p in 0..parents {
            zxid += 1;
            spec.nodes
                .push((format!("/bench-{p}"), None, 3, stat(zxid, zxid, zxid)));
            for c in 0..children {
                zxid += 1;
                spec.nodes.push((
                    format!("/bench-{p}/node-{c:010}"),
                    Some(data.clone()),
                    3,
                    stat(zxid, zxid, zxid),
                ));
            }
        }
        spec.last_zxid = Some(zxid);
        spec
    }

    #[test]
    fn parses_a_hundred_thousand_znodes_quickly() {
        let spec = big(10, 10_000, 100);
        let bytes = spec.bytes();
        let started = Instant::now();
        let summary = summarize(bytes.as_slice()).unwrap();
        let took = started.elapsed();
        eprintln!(
            "parsed {} znodes, {} bytes in {:?}: {:.0} znodes/s, {:.1} MB/s",
            summary.znodes,
            bytes.len(),
            took,
            summary.znodes as f64 / took.as_secs_f64(),
            bytes.len() as f64 / took.as_secs_f64() / 1e6
        );
        assert_eq!(summary.znodes, 4 + 10 + 100_000);
        assert_eq!(summary.user_znodes, 100_010);
        assert_eq!(summary.data_zxid, spec.last_zxid.unwrap());
    }
}
