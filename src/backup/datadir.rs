//! The highest zxid a ZooKeeper data directory durably holds, read from its files alone: no
//! server, no quorum. After a quorum loss a member answers `srvr` with an error, so this is how
//! recovery names the most up-to-date survivor and how an offline restore learns the live data's
//! zxid when no member serves (I7, I10). `quorate volume zxid DIR` runs it in a Pod that mounts a
//! member's volume.
//!
//! # What is read
//!
//! `<dataDir>/version-2` holds `snapshot.<zxid>` files (see [`super::snapshot`]), transaction
//! logs `log.<zxid>` and the epoch files `currentEpoch` and `acceptedEpoch` (one decimal number
//! each, `QuorumPeer.writeLongToFile`). File names carry the zxid in hex (`Long.toHexString`):
//! a snapshot's is the last zxid applied when it started, a log's the first zxid it holds.
//! quorate's members keep the logs beside the snapshots (`dataLogDir` is a key quorate owns and
//! never sets).
//!
//! This reader answers what ZooKeeper itself would load on restart (`FileTxnSnapLog.restore`):
//! the newest snapshot that reads back whole (`FileSnap.deserialize` skips broken ones and takes
//! the next older), whose zxid is the one in its name, then every transaction of the logs from
//! the newest log that starts at or before that zxid on (`FileTxnLog.getLogFiles`). The answer
//! is the highest of the snapshot's zxid and every transaction's zxid; a log's name is never
//! taken as proof that its zxid is on disk.
//!
//! # The transaction log format (`FileTxnLog`)
//!
//! Big-endian, as jute writes it:
//!
//! | part | layout |
//! |---|---|
//! | file header | `"ZKLG"` magic, `int` version (2), `long` dbid |
//! | record | `long` Adler-32 of the transaction bytes, `int` length, the transaction bytes, the end-of-record byte `'B'` (0x42) |
//! | transaction bytes | `TxnHeader` (`long` clientId, `int` cxid, `long` zxid, `long` time, `int` type), the transaction's own record, and since 3.6 a `TxnDigest` |
//! | padding | zeros to the end of the file: ZooKeeper preallocates logs in 64 MiB steps |
//!
//! The records end at a zero length (the padding), or where the file ends. A *torn* last record
//! (the file ends inside it, its end-of-record byte is missing, its checksum does not match, or
//! it is too short for a header) is the end too: a member killed while writing leaves one, and
//! a write is acknowledged only after it is flushed, so nothing acknowledged is lost with it.
//! ZooKeeper's own reader (`FileTxnIterator.next`) stops at the first two of these and refuses
//! to start at a bad checksum; this reader reports every such end in [`LogEnd::Torn`].
//!
//! An end is only an end when nothing but zeros follows it. A bad record, or a zero length,
//! with data after it is [`Error::CorruptLog`]: the transactions behind it are unknown, and I10
//! says a check that needs the zxid refuses when it is unknown.
//!
//! Limits: a length field that was itself corrupted into a plausible size can swallow the
//! records after it, which then read as one torn last record (ZooKeeper's reader has the same
//! blind spot). Compressed snapshots (`snapshot.<zxid>.gz`, `.snappy`) are skipped with a reason,
//! not read. Lengths above [`super::snapshot::DEFAULT_MAX_FIELD`] (16 MiB, far above
//! `jute.maxbuffer`) count as unreadable. Every snapshot considered is read to its end to check
//! its seals, so a large snapshot costs one sequential read.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::artifact::zxid_hex;
use super::snapshot::{self, Adler32, DEFAULT_MAX_FIELD, Source};

/// The directory of the on-disk format that every ZooKeeper since 3.0 writes.
pub const VERSION_DIR: &str = "version-2";
/// The magic at the start of every transaction log.
pub const LOG_MAGIC: [u8; 4] = *b"ZKLG";
/// The only transaction log format version ZooKeeper writes.
pub const LOG_VERSION: i32 = 2;
/// The byte after every record.
pub const END_OF_RECORD: u8 = b'B';
/// `currentEpoch`: the epoch of the last leader this member followed or led.
pub const CURRENT_EPOCH: &str = "currentEpoch";
/// `acceptedEpoch`: the epoch of the last leader proposal this member accepted.
pub const ACCEPTED_EPOCH: &str = "acceptedEpoch";

/// The file header: magic, version, dbid.
const LOG_HEADER_LEN: usize = 16;
/// `TxnHeader`: clientId (8), cxid (4), zxid (8), time (8), type (4).
const TXN_HEADER_LEN: usize = 32;

/// Errors of reading a data directory. Each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path does not exist.
    #[error("{path}: no such directory")]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The path is not a ZooKeeper data directory.
    #[error(
        "{path} is not a ZooKeeper dataDir: it holds no {VERSION_DIR} directory \
         (a member that never started, or the wrong mount path)"
    )]
    NotADataDir {
        /// The path given.
        path: PathBuf,
    },
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file named like a log whose header is not a log's.
    #[error("{path} is not a ZooKeeper transaction log: {problem}")]
    NotALog {
        /// The file.
        path: PathBuf,
        /// What is wrong with the header.
        problem: String,
    },
    /// A log with data after an unreadable record or after the padding began: what it holds
    /// beyond that point, and so the highest zxid, is unknown.
    #[error(
        "transaction log {path} is corrupt at byte {offset} (after {}): {problem}; \
         the transactions after it are unknown",
        last_zxid.map_or_else(|| "no readable transaction".to_string(), |z| format!("zxid {}", zxid_hex(z)))
    )]
    CorruptLog {
        /// The file.
        path: PathBuf,
        /// Where the unreadable record (or the zero length) starts.
        offset: u64,
        /// What is wrong.
        problem: String,
        /// The highest zxid read from this log before it.
        last_zxid: Option<i64>,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a data directory durably holds and where each figure was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataDirZxid {
    /// The `version-2` directory that was read.
    pub dir: PathBuf,
    /// The highest zxid: of the snapshot and of every transaction read. `None` when the
    /// directory holds neither (a member that has not written anything yet).
    #[serde(serialize_with = "ser_zxid_opt")]
    pub zxid: Option<i64>,
    /// The newest snapshot that reads back whole.
    pub snapshot: Option<SnapshotZxid>,
    /// The transaction with the highest zxid, in whichever log holds it.
    pub log: Option<LogTxn>,
    /// Every log read, oldest first.
    pub logs: Vec<LogSummary>,
    /// `currentEpoch`, when the file is there and holds a number.
    pub current_epoch: Option<i64>,
    /// `acceptedEpoch`, when the file is there and holds a number.
    pub accepted_epoch: Option<i64>,
    /// Files that look like ZooKeeper's but were not used, and why.
    pub skipped: Vec<Skipped>,
}

/// The snapshot a restart would load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotZxid {
    /// The file.
    pub file: PathBuf,
    /// The zxid in its name, which ZooKeeper takes as the snapshot's (it replays the logs from
    /// the next one).
    #[serde(serialize_with = "ser_zxid")]
    pub zxid: i64,
    /// 3.9's trailer: the last zxid applied when serialization ended (a snapshot is fuzzy, so
    /// it may be above `zxid`; those transactions are in the logs too).
    #[serde(serialize_with = "ser_zxid_opt")]
    pub last_processed_zxid: Option<i64>,
    /// Znodes in it.
    pub znodes: u64,
    /// Its size.
    pub bytes: u64,
}

/// One transaction found in a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogTxn {
    /// The log.
    pub file: PathBuf,
    /// The transaction's zxid.
    #[serde(serialize_with = "ser_zxid")]
    pub zxid: i64,
    /// Where its record starts.
    pub offset: u64,
    /// When the leader created it (`TxnHeader.time`), if it is a valid time.
    pub time: Option<jiff::Timestamp>,
}

/// How one log was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogSummary {
    /// The log.
    pub file: PathBuf,
    /// The zxid in its name (ZooKeeper names a log after its first transaction).
    #[serde(serialize_with = "ser_zxid")]
    pub name_zxid: i64,
    /// Valid transactions in it.
    pub transactions: u64,
    /// Its transaction with the highest zxid.
    pub highest: Option<LogTxn>,
    /// How its records end.
    pub end: LogEnd,
}

/// Where and how a log's records end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum LogEnd {
    /// A zero length: the preallocated padding starts here (the usual end).
    Padding {
        /// Where the zero length's record would start.
        offset: u64,
    },
    /// The file ends right after the last record.
    EndOfFile {
        /// The file's size.
        offset: u64,
    },
    /// An unreadable last record, with nothing but zeros after it.
    Torn {
        /// Where the record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// An empty file: ZooKeeper was stopped between creating the log and writing its header
    /// (its own reader deletes such a file).
    Empty,
}

/// A file that was not used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// The file.
    pub file: PathBuf,
    /// Why.
    pub reason: String,
}

/// Zxids are written in hex, as the resources' status writes them.
fn ser_zxid<S: serde::Serializer>(zxid: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&zxid_hex(*zxid))
}

fn ser_zxid_opt<S: serde::Serializer>(zxid: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match zxid {
        Some(z) => ser_zxid(z, s),
        None => s.serialize_none(),
    }
}

/// What a file name in `version-2` says.
#[derive(Debug, PartialEq, Eq)]
enum Name {
    /// `snapshot.<zxid>`.
    Snapshot(i64),
    /// `log.<zxid>`.
    Log(i64),
    /// Named like a snapshot or log, but not usable; the reason.
    Unusable(String),
    /// Anything else (the epoch files, `updatingEpoch`, temporary files).
    Other,
}

/// Classifies a file name as ZooKeeper's `Util.getZxidFromName` would, but stricter: the zxid
/// must be plain hex that fits a `long` (Java's parser would also take a sign), and a log's name
/// has nothing after it.
fn classify(name: &str) -> Name {
    let (is_snapshot, rest) = if let Some(rest) = name.strip_prefix("snapshot.") {
        (true, rest)
    } else if let Some(rest) = name.strip_prefix("log.") {
        (false, rest)
    } else {
        return Name::Other;
    };
    let (digits, suffix) = match rest.split_once('.') {
        Some((digits, suffix)) => (digits, Some(suffix)),
        None => (rest, None),
    };
    let Some(zxid) = parse_hex(digits) else {
        return Name::Unusable(format!(
            "the zxid in the name ({digits:?}) is not a hexadecimal zxid"
        ));
    };
    match (is_snapshot, suffix) {
        (true, None) => Name::Snapshot(zxid),
        (false, None) => Name::Log(zxid),
        // ZooKeeper names a compressed snapshot after its method; the snapshot reader refuses
        // those (see the snapshot module's limits).
        (true, Some(method @ ("gz" | "snappy"))) => Name::Unusable(format!(
            "a {method}-compressed snapshot, which quorate does not read"
        )),
        (_, Some(suffix)) => {
            Name::Unusable(format!("ends in .{suffix}, which ZooKeeper does not write"))
        }
    }
}

fn parse_hex(digits: &str) -> Option<i64> {
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16)
        .ok()
        .and_then(|z| i64::try_from(z).ok())
}

/// The highest zxid that the ZooKeeper data directory `dir` durably holds, from its snapshots
/// and transaction logs (see the module doc). `dir` is the member's `dataDir` (which holds
/// `version-2`) or the `version-2` directory itself.
pub fn highest_zxid(dir: &Path) -> Result<DataDirZxid, Error> {
    let version_dir = version_dir(dir)?;
    let mut snapshots = Vec::new();
    let mut logs = Vec::new();
    let mut skipped = Vec::new();
    let entries = std::fs::read_dir(&version_dir).map_err(io_error(&version_dir))?;
    for entry in entries {
        let entry = entry.map_err(io_error(&version_dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            // ZooKeeper writes only ASCII names; anything else is no file of its.
            continue;
        };
        match classify(name) {
            Name::Snapshot(zxid) => snapshots.push((zxid, path)),
            Name::Log(zxid) => logs.push((zxid, path)),
            Name::Unusable(reason) => skipped.push(Skipped { file: path, reason }),
            Name::Other => {}
        }
    }
    // Newest first for snapshots (the first that reads back wins), oldest first for logs
    // (the order ZooKeeper replays them in).
    snapshots.sort_by(|a, b| b.cmp(a));
    logs.sort();

    let snapshot = newest_valid_snapshot(&snapshots, &mut skipped)?;

    // ZooKeeper replays from the newest log that starts at or before the snapshot's zxid (it
    // may hold the transactions right after it) and every later log; older logs hold only
    // what the snapshot already has. Without a snapshot every log is read.
    let from = match &snapshot {
        Some(s) => logs
            .iter()
            .map(|(zxid, _)| *zxid)
            .filter(|zxid| *zxid <= s.zxid)
            .max()
            .unwrap_or(i64::MIN),
        None => i64::MIN,
    };
    let mut summaries = Vec::new();
    for (name_zxid, path) in logs.into_iter().filter(|(zxid, _)| *zxid >= from) {
        summaries.push(read_log(&path, name_zxid)?);
    }

    let log = summaries
        .iter()
        .filter_map(|s| s.highest.clone())
        .max_by_key(|t| t.zxid);
    let zxid = snapshot
        .as_ref()
        .map(|s| s.zxid)
        .into_iter()
        .chain(log.as_ref().map(|t| t.zxid))
        .max();
    let current_epoch = read_epoch(&version_dir.join(CURRENT_EPOCH), &mut skipped)?;
    let accepted_epoch = read_epoch(&version_dir.join(ACCEPTED_EPOCH), &mut skipped)?;
    skipped.sort_by(|a, b| a.file.cmp(&b.file));
    Ok(DataDirZxid {
        dir: version_dir,
        zxid,
        snapshot,
        log,
        logs: summaries,
        current_epoch,
        accepted_epoch,
        skipped,
    })
}

/// `dir/version-2`, or `dir` itself when it is a `version-2` directory.
/// [`highest_zxid`] of the dataDir `dir` on a member volume mounted at `root`: a volume with
/// nothing at all on it (a lost or wiped disk, or one never started: the member's first start
/// writes its `data` and `conf`) holds no data, so its zxid is `None`. Anything else that is
/// not a data directory stays an error, since "holds nothing" would let older data through.
pub fn volume_zxid(root: &Path, dir: &Path) -> Result<DataDirZxid, Error> {
    match highest_zxid(dir) {
        Err(Error::Missing { .. } | Error::NotADataDir { .. }) if volume_is_empty(root) => {
            Ok(DataDirZxid {
                dir: dir.to_path_buf(),
                zxid: None,
                snapshot: None,
                log: None,
                logs: Vec::new(),
                current_epoch: None,
                accepted_epoch: None,
                skipped: Vec::new(),
            })
        }
        other => other,
    }
}

/// Whether the directory `root` exists and holds nothing (a filesystem's own `lost+found`
/// aside).
fn volume_is_empty(root: &Path) -> bool {
    std::fs::read_dir(root).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .all(|e| e.file_name() == "lost+found")
    })
}

fn version_dir(dir: &Path) -> Result<PathBuf, Error> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Error::NotADataDir {
                path: dir.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::Missing {
                path: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(io_error(dir)(e)),
    }
    let inside = dir.join(VERSION_DIR);
    if inside.is_dir() {
        return Ok(inside);
    }
    // A Pod may mount the member's `version-2` alone; its name says what it is.
    if dir.file_name().is_some_and(|n| n == VERSION_DIR) {
        return Ok(dir.to_path_buf());
    }
    // An empty dataDir could be a member that never started, but just as well the wrong path:
    // answering "holds nothing" would let an older restore through (I10), so it is an error.
    Err(Error::NotADataDir {
        path: dir.to_path_buf(),
    })
}

/// Reads snapshots newest first until one reads back whole; the others tried are skipped with
/// the reader's complaint.
fn newest_valid_snapshot(
    snapshots: &[(i64, PathBuf)],
    skipped: &mut Vec<Skipped>,
) -> Result<Option<SnapshotZxid>, Error> {
    for (zxid, path) in snapshots {
        let file = File::open(path).map_err(io_error(path))?;
        match snapshot::summarize(file) {
            Ok(summary) => {
                return Ok(Some(SnapshotZxid {
                    file: path.clone(),
                    zxid: *zxid,
                    last_processed_zxid: summary.last_zxid,
                    znodes: summary.znodes,
                    bytes: summary.bytes,
                }));
            }
            // A disk that fails to read is not a broken snapshot: what it holds is unknown.
            Err(snapshot::Error::Io { source, .. }) => return Err(io_error(path)(source)),
            // ZooKeeper skips a snapshot that does not read back and loads the next older.
            Err(e) => skipped.push(Skipped {
                file: path.clone(),
                reason: format!("does not read back whole: {e}"),
            }),
        }
    }
    Ok(None)
}

/// Reads an epoch file: `None` when it is absent; a file that holds no number is skipped with
/// a reason (the zxid does not depend on it).
fn read_epoch(path: &Path, skipped: &mut Vec<Skipped>) -> Result<Option<i64>, Error> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            skipped.push(Skipped {
                file: path.to_path_buf(),
                reason: "not text".into(),
            });
            return Ok(None);
        }
        Err(e) => return Err(io_error(path)(e)),
    };
    // ZooKeeper reads the first line as a decimal long.
    let line = text.lines().next().unwrap_or("").trim();
    match line.parse() {
        Ok(epoch) => Ok(Some(epoch)),
        Err(_) => {
            skipped.push(Skipped {
                file: path.to_path_buf(),
                reason: format!("holds {line:?}, not an epoch"),
            });
            Ok(None)
        }
    }
}

/// One step through a log's records.
enum Record {
    /// A valid transaction.
    Txn { zxid: i64, time: i64 },
    /// A zero length after a zero checksum: the padding starts.
    Padding,
    /// The file ends exactly where the record would start.
    EndOfFile,
    /// A record that cannot be read, and why.
    Unreadable(String),
}

/// Reads the transaction log `path`, whose name says it starts at `name_zxid`, to the end of
/// its records.
pub fn read_log(path: &Path, name_zxid: i64) -> Result<LogSummary, Error> {
    let file = File::open(path).map_err(io_error(path))?;
    let size = file.metadata().map_err(io_error(path))?.len();
    let mut summary = LogSummary {
        file: path.to_path_buf(),
        name_zxid,
        transactions: 0,
        highest: None,
        end: LogEnd::Empty,
    };
    if size == 0 {
        return Ok(summary);
    }
    // The record reader fails only on I/O (every format problem is a `Record`); anything
    // else it might say is still reported against the record where it happened.
    let source_error = |e: snapshot::Error, offset: u64, last: Option<i64>| match e {
        snapshot::Error::Io { source, .. } => io_error(path)(source),
        other => Error::CorruptLog {
            path: path.to_path_buf(),
            offset,
            problem: other.to_string(),
            last_zxid: last,
        },
    };
    let mut src = Source::new(file);
    let mut header = [0u8; LOG_HEADER_LEN];
    src.fill(&mut header, "the file header")
        .map_err(|e| match e {
            snapshot::Error::Truncated { .. } => Error::NotALog {
                path: path.to_path_buf(),
                problem: format!("{size} bytes, shorter than the {LOG_HEADER_LEN}-byte header"),
            },
            other => source_error(other, 0, None),
        })?;
    if header[..4] != LOG_MAGIC {
        return Err(Error::NotALog {
            path: path.to_path_buf(),
            problem: format!(
                "it starts with \"{}\", not the magic \"ZKLG\"",
                header[..4].escape_ascii()
            ),
        });
    }
    let version = i32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if version != LOG_VERSION {
        return Err(Error::NotALog {
            path: path.to_path_buf(),
            problem: format!("format version {version}, not {LOG_VERSION}"),
        });
    }

    loop {
        let start = src.offset;
        let last = summary.highest.as_ref().map(|t| t.zxid);
        let record = next_record(&mut src).map_err(|e| source_error(e, start, last))?;
        let (end, what) = match record {
            Record::Txn { zxid, time } => {
                summary.transactions += 1;
                // ZooKeeper logs an error for a zxid below an earlier one and keeps the higher
                // (`fastForwardFromEdits`): so does this reader.
                if last.is_none_or(|l| zxid > l) {
                    summary.highest = Some(LogTxn {
                        file: path.to_path_buf(),
                        zxid,
                        offset: start,
                        time: jiff::Timestamp::from_millisecond(time).ok(),
                    });
                }
                continue;
            }
            Record::EndOfFile => {
                summary.end = LogEnd::EndOfFile { offset: start };
                return Ok(summary);
            }
            Record::Padding => (LogEnd::Padding { offset: start }, None),
            Record::Unreadable(reason) => (
                LogEnd::Torn {
                    offset: start,
                    reason: reason.clone(),
                },
                Some(reason),
            ),
        };
        // An end is only an end if nothing but zeros follows it.
        if let Some(at) = first_nonzero(&mut src).map_err(|e| source_error(e, start, last))? {
            let problem = match what {
                Some(reason) => format!("{reason}, yet byte {at} after it is not zero"),
                None => format!(
                    "a zero length (where the padding should start), yet byte {at} after it is not zero"
                ),
            };
            return Err(Error::CorruptLog {
                path: path.to_path_buf(),
                offset: start,
                problem,
                last_zxid: last,
            });
        }
        summary.end = end;
        return Ok(summary);
    }
}

/// Reads one record as `FileTxnIterator.next` does; errors are only the reader's I/O errors.
fn next_record<R: Read>(src: &mut Source<R>) -> Result<Record, snapshot::Error> {
    let start = src.offset;
    let crc = match src.i64("a record's checksum") {
        Ok(crc) => crc,
        Err(snapshot::Error::Truncated { offset, .. }) if offset == start => {
            return Ok(Record::EndOfFile);
        }
        Err(snapshot::Error::Truncated { .. }) => {
            return Ok(Record::Unreadable(
                "the file ends inside the checksum".into(),
            ));
        }
        Err(e) => return Err(e),
    };
    let body = match src.buffer("a transaction", DEFAULT_MAX_FIELD) {
        Ok(Some(body)) if body.is_empty() && crc == 0 => return Ok(Record::Padding),
        // A checksum was written but its length was not: the write stopped there.
        Ok(Some(body)) if body.is_empty() => {
            return Ok(Record::Unreadable(format!(
                "a checksum {crc:#x} with a zero length"
            )));
        }
        Ok(Some(body)) => body,
        Ok(None) => return Ok(Record::Unreadable("length -1".into())),
        Err(snapshot::Error::Truncated { .. }) => {
            return Ok(Record::Unreadable("the file ends inside the record".into()));
        }
        Err(snapshot::Error::TooLong { len, max, .. }) => {
            return Ok(Record::Unreadable(format!(
                "length {len}, more than the limit of {max}"
            )));
        }
        Err(snapshot::Error::Corrupt { problem, .. }) => return Ok(Record::Unreadable(problem)),
        Err(e) => return Err(e),
    };
    let mut eor = [0u8];
    match src.fill(&mut eor, "the end-of-record byte") {
        Ok(()) => {}
        Err(snapshot::Error::Truncated { .. }) => {
            return Ok(Record::Unreadable(
                "the file ends before the end-of-record byte".into(),
            ));
        }
        Err(e) => return Err(e),
    }
    // ZooKeeper checks the end-of-record byte before the checksum (`Util.readTxnBytes`).
    if eor[0] != END_OF_RECORD {
        return Ok(Record::Unreadable(format!(
            "end-of-record byte {:#04x}, not 'B'",
            eor[0]
        )));
    }
    let mut adler = Adler32::new();
    adler.update(&body);
    let computed = adler.value();
    if crc != i64::from(computed) {
        return Ok(Record::Unreadable(format!(
            "checksum mismatch: the record says {crc:#x}, its {} bytes sum to {computed:#x}",
            body.len()
        )));
    }
    let long_at = |at: usize| {
        body.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
    };
    match (long_at(12), long_at(20)) {
        (Some(zxid), Some(time)) if body.len() >= TXN_HEADER_LEN => Ok(Record::Txn { zxid, time }),
        _ => Ok(Record::Unreadable(format!(
            "{} bytes, too short for a transaction header ({TXN_HEADER_LEN})",
            body.len()
        ))),
    }
}

/// The offset of the first byte that is not zero from the reader's position to the end.
fn first_nonzero<R: Read>(src: &mut Source<R>) -> Result<Option<u64>, snapshot::Error> {
    loop {
        let at = src.offset;
        match src.take(usize::MAX, "the padding") {
            Ok(bytes) => {
                if let Some(i) = bytes.iter().position(|b| *b != 0) {
                    return Ok(Some(at + i as u64));
                }
            }
            Err(snapshot::Error::Truncated { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

impl fmt::Display for DataDirZxid {
    /// A few lines for people; `-o json` gives every field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string())
        };
        match self.zxid {
            Some(z) => writeln!(
                f,
                "zxid:      {} (epoch {}) in {}",
                zxid_hex(z),
                z >> 32,
                self.dir.display()
            )?,
            None => writeln!(
                f,
                "zxid:      none (no snapshot, no transaction) in {}",
                self.dir.display()
            )?,
        }
        match &self.snapshot {
            Some(s) => writeln!(f, "snapshot:  {} ({} znodes)", name(&s.file), s.znodes)?,
            None => writeln!(f, "snapshot:  none")?,
        }
        match &self.log {
            Some(t) => writeln!(
                f,
                "last txn:  {} in {} at byte {}{}",
                zxid_hex(t.zxid),
                name(&t.file),
                t.offset,
                t.time.map(|t| format!(", {t}")).unwrap_or_default()
            )?,
            None => writeln!(f, "last txn:  none")?,
        }
        let epoch = |e: Option<i64>| e.map_or_else(|| "absent".to_string(), |e| e.to_string());
        writeln!(
            f,
            "epochs:    current {}, accepted {}",
            epoch(self.current_epoch),
            epoch(self.accepted_epoch)
        )?;
        for log in &self.logs {
            let end = match &log.end {
                LogEnd::Padding { offset } => format!("padding from byte {offset}"),
                LogEnd::EndOfFile { offset } => format!("end of file at byte {offset}"),
                LogEnd::Torn { offset, reason } => {
                    format!("torn record at byte {offset}: {reason}")
                }
                LogEnd::Empty => "empty file".to_string(),
            };
            writeln!(
                f,
                "log:       {}: {} transactions, ends with {end}",
                name(&log.file),
                log.transactions
            )?;
        }
        for s in &self.skipped {
            writeln!(f, "skipped:   {}: {}", name(&s.file), s.reason)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const EPOCH_1: i64 = 1 << 32;

    /// Builds transaction logs the way `FileTxnLog.append` lays them out; test only.
    struct Log {
        out: Vec<u8>,
    }

    impl Log {
        fn new() -> Log {
            let mut out = LOG_MAGIC.to_vec();
            out.extend_from_slice(&LOG_VERSION.to_be_bytes());
            out.extend_from_slice(&0i64.to_be_bytes());
            Log { out }
        }

        /// The bytes of a `setData`-like transaction with a digest: header, a body, digest.
        fn body(zxid: i64) -> Vec<u8> {
            let mut b = Vec::new();
            b.extend_from_slice(&0x0100_0000_0000_0001i64.to_be_bytes()); // clientId
            b.extend_from_slice(&7i32.to_be_bytes()); // cxid
            b.extend_from_slice(&zxid.to_be_bytes());
            b.extend_from_slice(&(1_700_000_000_000 + zxid).to_be_bytes()); // time
            b.extend_from_slice(&5i32.to_be_bytes()); // type: setData
            b.extend_from_slice(&(4i32).to_be_bytes());
            b.extend_from_slice(b"/app");
            b.extend_from_slice(&(3i32).to_be_bytes());
            b.extend_from_slice(b"v\x00!");
            b.extend_from_slice(&2i32.to_be_bytes()); // version
            b.extend_from_slice(&2i32.to_be_bytes()); // digest version
            b.extend_from_slice(&0x1234_5678i64.to_be_bytes()); // digest
            b
        }

        fn record(mut self, body: &[u8], crc: i64, eor: u8) -> Log {
            self.out.extend_from_slice(&crc.to_be_bytes());
            self.out
                .extend_from_slice(&i32::try_from(body.len()).unwrap().to_be_bytes());
            self.out.extend_from_slice(body);
            self.out.push(eor);
            self
        }

        fn txn(self, zxid: i64) -> Log {
            let body = Log::body(zxid);
            let crc = adler(&body);
            self.record(&body, crc, END_OF_RECORD)
        }

        fn txns(self, zxids: impl IntoIterator<Item = i64>) -> Log {
            zxids.into_iter().fold(self, Log::txn)
        }

        /// ZooKeeper's preallocation: zeros to the end.
        fn padded(mut self, zeros: usize) -> Log {
            self.out.resize(self.out.len() + zeros, 0);
            self
        }

        fn bytes(&self) -> Vec<u8> {
            self.out.clone()
        }
    }

    fn adler(bytes: &[u8]) -> i64 {
        let mut a = Adler32::new();
        a.update(bytes);
        i64::from(a.value())
    }

    /// A minimal snapshot that the snapshot reader accepts: the root only, sealed, with 3.9's
    /// last-zxid trailer when `last` is given.
    fn snapshot_bytes(root_mzxid: i64, last: Option<i64>) -> Vec<u8> {
        let mut out = snapshot::MAGIC.to_vec();
        out.extend_from_slice(&snapshot::VERSION.to_be_bytes());
        out.extend_from_slice(&snapshot::DBID.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes()); // sessions
        out.extend_from_slice(&0i32.to_be_bytes()); // ACL cache
        out.extend_from_slice(&0i32.to_be_bytes()); // the root's path ""
        out.extend_from_slice(&(-1i32).to_be_bytes()); // null data
        out.extend_from_slice(&snapshot::OPEN_ACL_REF.to_be_bytes());
        for v in [0, root_mzxid, 0, 0] {
            out.extend_from_slice(&i64::to_be_bytes(v)); // czxid, mzxid, ctime, mtime
        }
        out.extend_from_slice(&[0; 12]); // version, cversion, aversion
        out.extend_from_slice(&[0; 8]); // ephemeralOwner
        out.extend_from_slice(&root_mzxid.to_be_bytes()); // pzxid
        let seal = |out: &mut Vec<u8>| {
            let crc = adler(out);
            out.extend_from_slice(&crc.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 1, b'/']);
        };
        out.extend_from_slice(&[0, 0, 0, 1, b'/']); // the end of the znodes
        seal(&mut out);
        if let Some(last) = last {
            out.extend_from_slice(&last.to_be_bytes());
            seal(&mut out);
        }
        out
    }

    /// A dataDir with an empty `version-2`.
    fn data_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join(VERSION_DIR);
        fs::create_dir(&v2).unwrap();
        (dir, v2)
    }

    fn put(v2: &Path, name: &str, bytes: &[u8]) {
        fs::write(v2.join(name), bytes).unwrap();
    }

    #[test]
    fn an_empty_version_2_holds_no_zxid() {
        let (dir, v2) = data_dir();
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, None);
        assert_eq!(found.dir, v2);
        assert_eq!(found.snapshot, None);
        assert_eq!(found.log, None);
        assert!(found.logs.is_empty() && found.skipped.is_empty());
        assert_eq!((found.current_epoch, found.accepted_epoch), (None, None));
    }

    #[test]
    fn an_empty_volume_holds_nothing_but_a_volume_with_other_files_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        // Wiped: nothing on the volume at all.
        let found = volume_zxid(root.path(), &data).unwrap();
        assert_eq!(found.zxid, None);
        fs::create_dir(root.path().join("lost+found")).unwrap();
        assert_eq!(volume_zxid(root.path(), &data).unwrap().zxid, None);
        // Something is there, but no data directory: not known to be empty.
        fs::create_dir(root.path().join("conf")).unwrap();
        assert!(matches!(
            volume_zxid(root.path(), &data),
            Err(Error::Missing { .. })
        ));
        fs::create_dir(&data).unwrap();
        assert!(matches!(
            volume_zxid(root.path(), &data),
            Err(Error::NotADataDir { .. })
        ));
        // A volume that cannot be found is never "empty".
        assert!(volume_zxid(&root.path().join("nope"), &data).is_err());
    }

    #[test]
    fn a_directory_without_version_2_or_no_directory_at_all_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = highest_zxid(dir.path()).unwrap_err();
        assert!(matches!(err, Error::NotADataDir { .. }), "{err}");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
        let missing = dir.path().join("nope");
        let err = highest_zxid(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: no such directory", missing.display())
        );
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            highest_zxid(&file),
            Err(Error::NotADataDir { .. })
        ));
    }

    #[test]
    fn the_version_2_directory_itself_may_be_given() {
        let (_dir, v2) = data_dir();
        put(
            &v2,
            "log.100000001",
            &Log::new().txns([EPOCH_1 + 1]).bytes(),
        );
        let found = highest_zxid(&v2).unwrap();
        assert_eq!(found.dir, v2);
        assert_eq!(found.zxid, Some(EPOCH_1 + 1));
    }

    #[test]
    fn a_snapshot_alone_gives_the_zxid_in_its_name() {
        let (dir, v2) = data_dir();
        put(
            &v2,
            "snapshot.100000004",
            &snapshot_bytes(EPOCH_1 + 3, Some(EPOCH_1 + 6)),
        );
        put(
            &v2,
            "snapshot.100000002",
            &snapshot_bytes(EPOCH_1 + 2, None),
        );
        put(&v2, CURRENT_EPOCH, b"1");
        put(&v2, ACCEPTED_EPOCH, b"2\n");
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, Some(EPOCH_1 + 4));
        let snap = found.snapshot.unwrap();
        assert_eq!(snap.file, v2.join("snapshot.100000004"));
        assert_eq!(snap.zxid, EPOCH_1 + 4);
        // The fuzzy trailer is reported, not taken: ZooKeeper restarts from the name's zxid.
        assert_eq!(snap.last_processed_zxid, Some(EPOCH_1 + 6));
        assert_eq!(snap.znodes, 1);
        assert_eq!(found.log, None);
        assert_eq!(
            (found.current_epoch, found.accepted_epoch),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn a_broken_newest_snapshot_is_skipped_for_the_next_older_as_zookeeper_does() {
        let (dir, v2) = data_dir();
        let mut broken = snapshot_bytes(EPOCH_1 + 9, None);
        let last = broken.len() - 6;
        broken[last] ^= 0xFF; // inside the seal's checksum
        put(&v2, "snapshot.100000009", &broken);
        put(
            &v2,
            "snapshot.100000005",
            &snapshot_bytes(EPOCH_1 + 5, None),
        );
        put(
            &v2,
            "snapshot.100000007",
            &snapshot_bytes(EPOCH_1 + 7, None)[..40],
        );
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, Some(EPOCH_1 + 5));
        let skipped: Vec<(String, &str)> = found
            .skipped
            .iter()
            .map(|s| {
                (
                    s.file.file_name().unwrap().to_string_lossy().into_owned(),
                    s.reason.as_str(),
                )
            })
            .collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped[0].0 == "snapshot.100000007" && skipped[0].1.contains("truncated"),
            "{skipped:?}"
        );
        assert!(
            skipped[1].0 == "snapshot.100000009" && skipped[1].1.contains("checksum mismatch"),
            "{skipped:?}"
        );
    }

    #[test]
    fn logs_alone_give_their_last_transaction() {
        let (dir, v2) = data_dir();
        put(
            &v2,
            "log.100000001",
            &Log::new()
                .txns((1..=5).map(|i| EPOCH_1 + i))
                .padded(4096)
                .bytes(),
        );
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, Some(EPOCH_1 + 5));
        let log = found.log.unwrap();
        assert_eq!(log.file, v2.join("log.100000001"));
        assert_eq!(log.zxid, EPOCH_1 + 5);
        assert_eq!(
            log.time.unwrap().as_millisecond(),
            1_700_000_000_000 + EPOCH_1 + 5
        );
        let record = 12 + Log::body(0).len() as u64 + 1;
        assert_eq!(log.offset, 16 + 4 * record);
        assert_eq!(found.logs.len(), 1);
        assert_eq!(found.logs[0].transactions, 5);
        assert_eq!(
            found.logs[0].end,
            LogEnd::Padding {
                offset: 16 + 5 * record
            }
        );
    }

    #[test]
    fn a_log_without_padding_ends_at_the_end_of_the_file() {
        let (dir, v2) = data_dir();
        let bytes = Log::new().txns([EPOCH_1 + 1, EPOCH_1 + 2]).bytes();
        put(&v2, "log.100000001", &bytes);
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, Some(EPOCH_1 + 2));
        assert_eq!(
            found.logs[0].end,
            LogEnd::EndOfFile {
                offset: bytes.len() as u64
            }
        );
    }

    #[test]
    fn a_torn_last_record_is_the_end_not_an_error() {
        let full = Log::new().txns((1..=3).map(|i| EPOCH_1 + i));
        let whole = full.bytes().len();
        let torn = full.txn(EPOCH_1 + 4).bytes();
        let record = torn.len() - whole;
        // Cut anywhere inside the fourth record, as a kill between two writes leaves it, with
        // and without the padding behind it.
        for cut in 1..record {
            for padding in [0, 512] {
                let mut bytes = torn[..whole + cut].to_vec();
                bytes.resize(bytes.len() + padding, 0);
                let (dir, v2) = data_dir();
                put(&v2, "log.100000001", &bytes);
                let found = highest_zxid(dir.path())
                    .unwrap_or_else(|e| panic!("cut at {cut}, padding {padding}: {e}"));
                assert_eq!(found.zxid, Some(EPOCH_1 + 3), "cut at {cut}");
                let log = &found.logs[0];
                assert_eq!(log.transactions, 3);
                // Cut inside the checksum with zeros behind: the checksum's first bytes are
                // zero for these small records, which reads as the padding.
                assert!(
                    matches!(&log.end, LogEnd::Torn { offset, .. } | LogEnd::Padding { offset } if *offset == whole as u64),
                    "cut at {cut}, padding {padding}: {:?}",
                    log.end
                );
            }
        }
    }

    #[test]
    fn a_bad_checksum_on_the_last_record_is_a_torn_end() {
        let (dir, v2) = data_dir();
        let good = Log::new().txns([EPOCH_1 + 1, EPOCH_1 + 2]);
        let at = good.bytes().len() as u64;
        let body = Log::body(EPOCH_1 + 3);
        let bytes = good
            .record(&body, adler(&body) ^ 1, END_OF_RECORD)
            .padded(100)
            .bytes();
        put(&v2, "log.100000001", &bytes);
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, Some(EPOCH_1 + 2));
        assert!(
            matches!(&found.logs[0].end, LogEnd::Torn { offset, reason } if *offset == at && reason.starts_with("checksum mismatch")),
            "{:?}",
            found.logs[0].end
        );
    }

    #[test]
    fn a_bad_checksum_before_more_records_is_corruption_naming_the_file_and_offset() {
        let (dir, v2) = data_dir();
        let good = Log::new().txns([EPOCH_1 + 1, EPOCH_1 + 2]);
        let at = good.bytes().len();
        let mut bytes = good.txns([EPOCH_1 + 3, EPOCH_1 + 4]).padded(100).bytes();
        bytes[at + 12 + 14] ^= 0x01; // a byte of the third record's zxid
        put(&v2, "log.100000001", &bytes);
        let err = highest_zxid(dir.path()).unwrap_err();
        match &err {
            Error::CorruptLog {
                path,
                offset,
                problem,
                last_zxid,
            } => {
                assert_eq!(path, &v2.join("log.100000001"));
                assert_eq!(*offset, at as u64);
                assert!(problem.starts_with("checksum mismatch"), "{problem}");
                assert_eq!(*last_zxid, Some(EPOCH_1 + 2));
            }
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(text.contains("log.100000001 is corrupt at byte"), "{text}");
        assert!(text.contains("after zxid 0x100000002"), "{text}");
        assert!(
            text.contains("the transactions after it are unknown"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_end_of_record_byte_before_more_records_is_corruption() {
        let (dir, v2) = data_dir();
        let body = Log::body(EPOCH_1 + 1);
        let bytes = Log::new()
            .record(&body, adler(&body), 0)
            .txn(EPOCH_1 + 2)
            .bytes();
        put(&v2, "log.100000001", &bytes);
        let err = highest_zxid(dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::CorruptLog { offset: 16, last_zxid: None, problem, .. } if problem.contains("end-of-record byte 0x00")),
            "{err}"
        );
    }

    #[test]
    fn data_after_the_padding_starts_is_corruption() {
        // A zeroed length would hide every record after it.
        let (dir, v2) = data_dir();
        let mut bytes = Log::new()
            .txns([EPOCH_1 + 1, EPOCH_1 + 2])
            .padded(64)
            .bytes();
        let n = bytes.len();
        bytes[n - 3] = 7;
        put(&v2, "log.100000001", &bytes);
        let err = highest_zxid(dir.path()).unwrap_err();
        assert!(
            matches!(&err, Error::CorruptLog { problem, .. } if problem.contains(&format!("byte {} after it is not zero", n - 3))),
            "{err}"
        );
    }

    #[test]
    fn several_logs_are_all_read_and_the_newest_name_need_not_hold_the_highest_zxid() {
        let (dir, v2) = data_dir();
        put(
            &v2,
            "log.100000001",
            &Log::new()
                .txns((1..=5).map(|i| EPOCH_1 + i))
                .padded(64)
                .bytes(),
        );
        put(
            &v2,
            "log.100000006",
            &Log::new()
                .txns((6..=9).map(|i| EPOCH_1 + i))
                .padded(64)
                .bytes(),
        );
        // The newest log's only record never made it to disk whole: its name is no proof.
        let torn = Log::new().txn(2 * EPOCH_1 + 1).bytes();
        put(
            &v2,
            "log.200000001",
            &[&torn[..torn.len() - 9], &[0; 64][..]].concat(),
        );
        // A log created but stopped before its header.
        put(&v2, "log.200000002", b"");
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, Some(EPOCH_1 + 9));
        assert_eq!(found.log.as_ref().unwrap().file, v2.join("log.100000006"));
        let ends: Vec<(i64, u64, &LogEnd)> = found
            .logs
            .iter()
            .map(|l| (l.name_zxid, l.transactions, &l.end))
            .collect();
        assert_eq!(ends.len(), 4);
        assert_eq!((ends[0].0, ends[0].1), (EPOCH_1 + 1, 5));
        assert_eq!((ends[1].0, ends[1].1), (EPOCH_1 + 6, 4));
        assert!(
            matches!(ends[2], (z, 0, LogEnd::Torn { offset: 16, .. }) if z == 2 * EPOCH_1 + 1),
            "{ends:?}"
        );
        assert_eq!(ends[3], (2 * EPOCH_1 + 2, 0, &LogEnd::Empty));
    }

    #[test]
    fn logs_older_than_the_snapshot_are_not_read_as_zookeeper_does_not_read_them() {
        let (dir, v2) = data_dir();
        // The oldest log is broken beyond repair, but the snapshot covers it.
        put(&v2, "log.100000001", b"garbage that is no log at all");
        put(
            &v2,
            "log.100000004",
            &Log::new()
                .txns((4..=8).map(|i| EPOCH_1 + i))
                .padded(64)
                .bytes(),
        );
        put(
            &v2,
            "snapshot.100000006",
            &snapshot_bytes(EPOCH_1 + 6, None),
        );
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, Some(EPOCH_1 + 8));
        assert_eq!(found.logs.len(), 1, "{:?}", found.logs);
        assert_eq!(found.logs[0].file, v2.join("log.100000004"));
        assert_eq!(found.snapshot.as_ref().unwrap().zxid, EPOCH_1 + 6);
    }

    #[test]
    fn a_snapshot_newer_than_every_log_gives_its_own_zxid() {
        let (dir, v2) = data_dir();
        put(
            &v2,
            "log.100000001",
            &Log::new()
                .txns((1..=3).map(|i| EPOCH_1 + i))
                .padded(64)
                .bytes(),
        );
        put(
            &v2,
            "snapshot.200000000",
            &snapshot_bytes(EPOCH_1 + 3, None),
        );
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, Some(2 * EPOCH_1));
        assert_eq!(found.log.unwrap().zxid, EPOCH_1 + 3);
    }

    #[test]
    fn names_whose_zxid_is_not_hex_are_skipped_with_a_reason() {
        let (dir, v2) = data_dir();
        put(
            &v2,
            "log.100000001",
            &Log::new().txns([EPOCH_1 + 1]).bytes(),
        );
        for name in [
            "log.xyz",
            "snapshot.",
            "log.-1",
            "snapshot.+5",
            "log.10000000000000000",
            "snapshot.8000000000000000",
        ] {
            put(&v2, name, &Log::new().txns([9 * EPOCH_1]).bytes());
        }
        put(&v2, "snapshot.100000001.gz", b"\x1f\x8b");
        put(&v2, "log.100000002.bak", b"");
        put(&v2, "updatingEpoch", b"3");
        put(&v2, "currentEpoch.tmp", b"4");
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!(found.zxid, Some(EPOCH_1 + 1));
        let reasons: Vec<String> = found
            .skipped
            .iter()
            .map(|s| {
                format!(
                    "{}: {}",
                    s.file.file_name().unwrap().to_string_lossy(),
                    s.reason
                )
            })
            .collect();
        assert_eq!(reasons.len(), 8, "{reasons:#?}");
        assert!(
            reasons.contains(
                &"log.xyz: the zxid in the name (\"xyz\") is not a hexadecimal zxid".to_string()
            ),
            "{reasons:#?}"
        );
        assert!(
            reasons
                .iter()
                .any(|r| r.starts_with("snapshot.8000000000000000: ")),
            "above a long: {reasons:#?}"
        );
        assert!(
            reasons.contains(
                &"snapshot.100000001.gz: a gz-compressed snapshot, which quorate does not read"
                    .to_string()
            ),
            "{reasons:#?}"
        );
        assert!(
            reasons.contains(
                &"log.100000002.bak: ends in .bak, which ZooKeeper does not write".to_string()
            ),
            "{reasons:#?}"
        );
    }

    #[test]
    fn a_file_named_like_a_log_that_is_no_log_is_an_error() {
        let (dir, v2) = data_dir();
        put(
            &v2,
            "log.1",
            b"ZKSN\0\0\0\x02\xff\xff\xff\xff\xff\xff\xff\xff",
        );
        let err = highest_zxid(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not the magic \"ZKLG\""), "{err}");
        put(&v2, "log.1", b"ZKLG\0\0\0\x02");
        let err = highest_zxid(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("8 bytes, shorter than the 16-byte header"),
            "{err}"
        );
        put(&v2, "log.1", &{
            let mut b = Log::new().bytes();
            b[7] = 3;
            b
        });
        let err = highest_zxid(dir.path()).unwrap_err();
        assert!(err.to_string().contains("format version 3, not 2"), "{err}");
    }

    #[test]
    fn an_unreadable_epoch_file_is_skipped_with_a_reason() {
        let (dir, v2) = data_dir();
        put(&v2, CURRENT_EPOCH, b"two");
        put(&v2, ACCEPTED_EPOCH, b" 7 \n");
        let found = highest_zxid(dir.path()).unwrap();
        assert_eq!((found.current_epoch, found.accepted_epoch), (None, Some(7)));
        assert_eq!(found.skipped.len(), 1);
        assert_eq!(found.skipped[0].reason, "holds \"two\", not an epoch");
    }

    #[test]
    fn a_flipped_byte_anywhere_in_a_log_is_never_a_panic_and_never_a_higher_zxid() {
        let bytes = Log::new()
            .txns((1..=3).map(|i| EPOCH_1 + i))
            .padded(32)
            .bytes();
        for at in 0..bytes.len() {
            for flip in [0x01, 0x80, 0xFF] {
                let mut bad = bytes.clone();
                bad[at] ^= flip;
                let (dir, v2) = data_dir();
                put(&v2, "log.100000001", &bad);
                match highest_zxid(dir.path()) {
                    Ok(found) => assert!(
                        found.zxid.is_none_or(|z| z <= EPOCH_1 + 3),
                        "flip {flip:#x} at {at}: {found:?}"
                    ),
                    Err(e) => assert!(
                        matches!(e, Error::CorruptLog { .. } | Error::NotALog { .. }),
                        "flip {flip:#x} at {at}: {e}"
                    ),
                }
            }
        }
    }

    #[test]
    fn the_json_names_zxids_in_hex_as_the_status_does() {
        let (dir, v2) = data_dir();
        put(
            &v2,
            "log.100000001",
            &Log::new()
                .txns([EPOCH_1 + 1, EPOCH_1 + 0x2a])
                .padded(64)
                .bytes(),
        );
        put(&v2, CURRENT_EPOCH, b"1");
        let found = highest_zxid(dir.path()).unwrap();
        let json = serde_json::to_value(&found).unwrap();
        assert_eq!(json["zxid"], "0x10000002a");
        assert_eq!(json["log"]["zxid"], "0x10000002a");
        assert_eq!(json["logs"][0]["nameZxid"], "0x100000001");
        assert_eq!(json["logs"][0]["end"]["kind"], "padding");
        assert_eq!(json["currentEpoch"], 1);
        assert_eq!(json["acceptedEpoch"], serde_json::Value::Null);
        assert_eq!(json["snapshot"], serde_json::Value::Null);
        let text = found.to_string();
        assert!(
            text.starts_with("zxid:      0x10000002a (epoch 1) in "),
            "{text}"
        );
        assert!(
            text.contains("last txn:  0x10000002a in log.100000001 at byte"),
            "{text}"
        );
    }
}
