//! The client port: four-letter words, and sessions speaking jute (connect handshake, ping,
//! `auth` digest, reads and writes on the tree, `sync`, `reconfig`, `closeSession`). One tokio
//! task per connection. A member without a quorum closes a connect request at once, as a
//! ZooKeeper server that is not running does; when the leader changes or the quorum is lost,
//! every connection is closed, and the clients reconnect with their session.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Member;
use super::ensemble::{State, now_ms};
use super::jute::{Malformed, Reader, Writer, err, op, perm};
use super::tree::{Identities, allowed, valid_path};

/// The largest request accepted (ZooKeeper's `jute.maxbuffer`, 1 MiB, plus headers).
const MAX_FRAME: usize = 1024 * 1024 + 1024;
/// How long a new connection may take to send its first bytes.
const FIRST_BYTES: Duration = Duration::from_secs(10);
/// What a member without a quorum answers to most four-letter words.
pub const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests";

/// Connection tokens: which connection holds a session.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// Accepts connections until the task is aborted.
pub(super) async fn serve(listener: TcpListener, member: Arc<Member>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Out of file descriptors and the like: try again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, peer.ip().to_string(), member.clone()));
    }
}

struct Conn {
    token: u64,
    session: Option<i64>,
    /// The connection's identities: `ip` always, then `digest` (and `super`) from `auth`.
    ids: Vec<(String, String)>,
}

async fn connection(mut stream: TcpStream, peer: String, member: Arc<Member>) {
    let mut stop = member.stop.clone();
    let mut generation = member.ensemble.subscribe();
    let mut conn = Conn {
        token: NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed),
        session: None,
        ids: vec![("ip".to_string(), peer)],
    };
    member.stats.connections.fetch_add(1, Ordering::Relaxed);
    tokio::select! {
        _ = stop.changed() => {}
        _ = generation.changed() => {}
        _ = talk(&mut stream, &member, &mut conn) => {}
    }
    member.stats.connections.fetch_sub(1, Ordering::Relaxed);
    if let Some(session) = conn.session {
        member.ensemble.with(|st| st.detach(session, conn.token));
    }
    let _ = stream.shutdown().await;
}

/// The four-letter words ZooKeeper knows (`FourLetterCommands`).
const FOUR_LETTER_WORDS: [&[u8; 4]; 18] = [
    b"conf", b"cons", b"crst", b"dirs", b"dump", b"envi", b"gtmk", b"ruok", b"stmk", b"srst",
    b"srvr", b"stat", b"wchc", b"wchp", b"wchs", b"mntr", b"isro", b"hash",
];

async fn read_frame(stream: &mut TcpStream, len: [u8; 4]) -> Option<Vec<u8>> {
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return None;
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn talk(stream: &mut TcpStream, member: &Member, conn: &mut Conn) -> Option<()> {
    let mut first = [0u8; 4];
    tokio::time::timeout(FIRST_BYTES, stream.read_exact(&mut first))
        .await
        .ok()?
        .ok()?;
    if FOUR_LETTER_WORDS.contains(&&first) {
        let reply = four_letter(member, &first);
        stream.write_all(reply.as_bytes()).await.ok()?;
        return None;
    }
    let body = read_frame(stream, first).await?;
    member.stats.received.fetch_add(1, Ordering::Relaxed);
    let timeout_ms = handshake(stream, member, conn, &body).await?;
    // ZooKeeper closes a connection that is silent for the session timeout.
    let idle = Duration::from_millis(timeout_ms as u64);
    loop {
        let mut len = [0u8; 4];
        tokio::time::timeout(idle, stream.read_exact(&mut len))
            .await
            .ok()?
            .ok()?;
        let body = read_frame(stream, len).await?;
        member.stats.received.fetch_add(1, Ordering::Relaxed);
        let (reply, close) = request(member, conn, &body)?;
        stream.write_all(&reply).await.ok()?;
        member.stats.sent.fetch_add(1, Ordering::Relaxed);
        if close {
            return None;
        }
    }
}

/// The connect request: a new session, or an existing one re-attached. Returns the session
/// timeout; `None` closes the connection.
async fn handshake(
    stream: &mut TcpStream,
    member: &Member,
    conn: &mut Conn,
    body: &[u8],
) -> Option<i32> {
    let mut r = Reader::new(body);
    let _protocol = r.int().ok()?;
    let last_zxid_seen = r.long().ok()?;
    let timeout = r.int().ok()?;
    let session = r.long().ok()?;
    let password = r.buffer().ok()?.unwrap_or_default().to_vec();
    let answer = member.ensemble.with(|st| {
        let newest = st.leader().map_or(0, |l| st.zxid_of(l));
        if !st.serves(member.id) || last_zxid_seen > newest as i64 {
            // Not running, or the client has seen a newer zxid: ZooKeeper drops the connection.
            return None;
        }
        if session == 0 {
            let (id, timeout, password) = st.create_session(member.id, timeout, conn.token);
            Some(Some((id, timeout, password)))
        } else {
            match st.reattach(session, &password, conn.token) {
                Some(timeout) => {
                    let mut pw = [0u8; 16];
                    let n = password.len().min(16);
                    pw[..n].copy_from_slice(&password[..n]);
                    Some(Some((session, timeout, pw)))
                }
                None => Some(None),
            }
        }
    })?;
    let mut w = Writer::framed();
    let established = match answer {
        Some((id, timeout, password)) => {
            conn.session = Some(id);
            w.int(0)
                .int(timeout)
                .long(id)
                .buffer(&password)
                .boolean(false);
            Some(timeout)
        }
        // An expired session: timeout 0, session 0, then ZooKeeper closes the connection.
        None => {
            w.int(0).int(0).long(0).buffer(&[0u8; 16]).boolean(false);
            None
        }
    };
    stream.write_all(&w.frame()).await.ok()?;
    member.stats.sent.fetch_add(1, Ordering::Relaxed);
    established
}

/// One request: the reply frame and whether to close after it; `None` closes at once (a
/// malformed request, a member that stopped serving, a session taken over by another
/// connection).
fn request(member: &Member, conn: &mut Conn, body: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut r = Reader::new(body);
    let xid = r.int().ok()?;
    let code = r.int().ok()?;
    let session = conn.session?;
    member.ensemble.with(|st| {
        if !st.serves(member.id) || !st.owns(session, conn.token) {
            return None;
        }
        let mut w = Writer::framed();
        let close = match dispatch(st, member, conn, session, xid, code, &mut r) {
            Ok(Answer::Body(bytes)) => {
                w.reply_header(xid, st.zxid_of(member.id) as i64, err::OK);
                w.buf.extend_from_slice(&bytes);
                false
            }
            Ok(Answer::Close(zxid)) => {
                w.reply_header(xid, zxid, err::OK);
                true
            }
            Err(Failure::Code(code)) => {
                w.reply_header(xid, st.zxid_of(member.id) as i64, code);
                code == err::AUTH_FAILED
            }
            Err(Failure::Malformed) => return None,
        };
        Some((w.frame(), close))
    })
}

enum Answer {
    /// The reply body after an OK header.
    Body(Vec<u8>),
    /// Reply OK with this zxid, then close (closeSession).
    Close(i64),
}

enum Failure {
    Code(i32),
    Malformed,
}

impl From<Malformed> for Failure {
    fn from(_: Malformed) -> Failure {
        Failure::Malformed
    }
}

impl From<i32> for Failure {
    fn from(code: i32) -> Failure {
        Failure::Code(code)
    }
}

fn body(f: impl FnOnce(&mut Writer)) -> Result<Answer, Failure> {
    let mut w = Writer::default();
    f(&mut w);
    Ok(Answer::Body(w.buf))
}

fn path<'a>(r: &mut Reader<'a>) -> Result<&'a str, Failure> {
    let p = r.string()?;
    if valid_path(p) {
        Ok(p)
    } else {
        Err(Failure::Code(err::BAD_ARGUMENTS))
    }
}

/// The digest id of `user:password` (`user:base64(sha1(user:password))`).
pub fn digest_of(user_password: &str) -> String {
    use base64::Engine as _;
    use sha1::Digest as _;
    let user = user_password.split(':').next().unwrap_or_default();
    let hash = sha1::Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

#[allow(clippy::too_many_arguments)]
fn dispatch(
    st: &mut State,
    member: &Member,
    conn: &mut Conn,
    session: i64,
    xid: i32,
    code: i32,
    r: &mut Reader<'_>,
) -> Result<Answer, Failure> {
    let _ = xid;
    let ids: &Identities = &conn.ids;
    match code {
        op::PING => body(|_| {}),
        op::AUTH => {
            let _kind = r.int()?;
            let scheme = r.string()?;
            let auth = r.buffer()?.unwrap_or_default();
            let text = std::str::from_utf8(auth).map_err(|_| err::AUTH_FAILED)?;
            if scheme != "digest" || !text.contains(':') {
                return Err(Failure::Code(err::AUTH_FAILED));
            }
            let id = digest_of(text);
            if st.super_digest.as_deref() == Some(id.as_str())
                && !conn.ids.iter().any(|(s, _)| s == "super")
            {
                conn.ids.push(("super".into(), String::new()));
            }
            let entry = ("digest".to_string(), id);
            if !conn.ids.contains(&entry) {
                conn.ids.push(entry);
            }
            body(|_| {})
        }
        op::SYNC => {
            let p = path(r)?;
            body(|w| {
                w.string(p);
            })
        }
        op::EXISTS => {
            let p = path(r)?;
            let n = st.tree.get(p).ok_or(err::NO_NODE)?;
            body(|w| {
                w.stat(&n.stat);
            })
        }
        op::GET_DATA => {
            let p = path(r)?;
            let n = st.tree.get(p).ok_or(err::NO_NODE)?;
            if !allowed(&n.acl, ids, perm::READ) {
                return Err(err::NO_AUTH.into());
            }
            body(|w| {
                w.buffer(&n.data).stat(&n.stat);
            })
        }
        op::GET_CHILDREN | op::GET_CHILDREN2 => {
            let p = path(r)?;
            let n = st.tree.get(p).ok_or(err::NO_NODE)?;
            if !allowed(&n.acl, ids, perm::READ) {
                return Err(err::NO_AUTH.into());
            }
            body(|w| {
                w.strings(n.children.iter().map(String::as_str));
                if code == op::GET_CHILDREN2 {
                    w.stat(&n.stat);
                }
            })
        }
        op::GET_ALL_CHILDREN_NUMBER => {
            let p = path(r)?;
            st.tree.get(p).ok_or(err::NO_NODE)?;
            let prefix = if p == "/" {
                "/".to_string()
            } else {
                format!("{p}/")
            };
            let count = st
                .tree
                .paths()
                .filter(|q| q.starts_with(&prefix) && q.len() > prefix.len())
                .count();
            body(|w| {
                w.int(count as i32);
            })
        }
        op::GET_EPHEMERALS => {
            let prefix = r.string()?;
            let mine: Vec<String> = st
                .tree
                .ephemerals(session)
                .into_iter()
                .filter(|p| p.starts_with(prefix))
                .collect();
            body(|w| {
                w.strings(mine.iter().map(String::as_str));
            })
        }
        op::GET_ACL => {
            let p = path(r)?;
            let n = st.tree.get(p).ok_or(err::NO_NODE)?;
            if !allowed(&n.acl, ids, perm::READ | perm::ADMIN) {
                return Err(err::NO_AUTH.into());
            }
            // Without admin, digests are shown as `user:x` (ZooKeeper 3.9).
            let mut acl = n.acl.clone();
            if !allowed(&n.acl, ids, perm::ADMIN) {
                for a in acl.iter_mut().filter(|a| a.scheme == "digest") {
                    let user = a.id.split(':').next().unwrap_or_default();
                    a.id = format!("{user}:x");
                }
            }
            body(|w| {
                w.acls(&acl).stat(&n.stat);
            })
        }
        op::SET_ACL => {
            let p = r.string()?;
            let acl = r.acls()?.unwrap_or_default();
            let version = r.int()?;
            st.txn();
            let stat = st.tree.set_acl(p, acl, version, ids)?;
            body(|w| {
                w.stat(&stat);
            })
        }
        op::CREATE
        | op::CREATE2
        | op::CREATE_CONTAINER
        | op::CREATE_TTL
        | op::DELETE
        | op::SET_DATA => {
            let zxid = st.txn();
            let mut w = Writer::default();
            update(st, session, ids, code, r, zxid, &mut w)?;
            Ok(Answer::Body(w.buf))
        }
        op::MULTI => {
            let zxid = st.txn();
            multi(st, session, ids, r, zxid)
        }
        op::MULTI_READ => multi_read(st, ids, r),
        op::RECONFIG => {
            let joining = r.ustring()?;
            let leaving = r.ustring()?;
            let new_members = r.ustring()?;
            let cur = r.long()?;
            let zxid = st.txn();
            let (text, stat) = st.reconfig(zxid, ids, joining, leaving, new_members, cur)?;
            body(|w| {
                w.buffer(text.as_bytes()).stat(&stat);
            })
        }
        op::SET_WATCHES
        | op::SET_WATCHES2
        | op::ADD_WATCH
        | op::REMOVE_WATCHES
        | op::CHECK_WATCHES => body(|_| {}),
        op::WHO_AM_I => {
            let users: Vec<(String, String)> = conn
                .ids
                .iter()
                .map(|(s, id)| {
                    let user = if s == "digest" {
                        id.split(':').next().unwrap_or_default().to_string()
                    } else {
                        id.clone()
                    };
                    (s.clone(), user)
                })
                .collect();
            body(|w| {
                w.int(users.len() as i32);
                for (s, u) in &users {
                    w.string(s).string(u);
                }
            })
        }
        op::CLOSE_SESSION => Ok(Answer::Close(st.close_session(session))),
        op::SASL => Err(err::UNIMPLEMENTED.into()),
        _ => {
            let _ = member;
            Err(err::UNIMPLEMENTED.into())
        }
    }
}

fn create(
    st: &mut State,
    session: i64,
    ids: &Identities,
    code: i32,
    r: &mut Reader<'_>,
    zxid: i64,
) -> Result<(String, super::jute::Stat), Failure> {
    let p = r.string()?;
    let data = r.buffer()?.unwrap_or_default();
    let acl = r.acls()?.unwrap_or_default();
    let flags = r.int()?;
    if code == op::CREATE_TTL {
        let _ttl = r.long()?;
    }
    // Container and TTL nodes are kept as persistent ones; ephemeral and sequential count.
    let flags = flags & 3;
    Ok(st
        .tree
        .create(p, data, acl, flags, session, ids, zxid, now_ms())?)
}

/// A create, delete or setData at `zxid`, alone or inside a `multi`: its answer into `w`.
fn update(
    st: &mut State,
    session: i64,
    ids: &Identities,
    kind: i32,
    r: &mut Reader<'_>,
    zxid: i64,
    w: &mut Writer,
) -> Result<(), Failure> {
    match kind {
        op::DELETE => {
            let p = r.string()?;
            let version = r.int()?;
            st.tree.delete(p, version, ids, zxid)?;
        }
        op::SET_DATA => {
            let p = r.string()?;
            let data = r.buffer()?.unwrap_or_default();
            let version = r.int()?;
            let stat = st.tree.set_data(p, data, version, ids, zxid, now_ms())?;
            w.stat(&stat);
        }
        _ => {
            let (created, stat) = create(st, session, ids, kind, r, zxid)?;
            w.string(&created);
            if kind != op::CREATE {
                w.stat(&stat);
            }
        }
    }
    Ok(())
}

/// The next operation of a `multi` or `multiRead` (its header: type, done, err), `None` at the
/// end.
fn next_op(r: &mut Reader<'_>) -> Result<Option<i32>, Failure> {
    let kind = r.int()?;
    let done = r.boolean()?;
    let _err = r.int()?;
    Ok((!done).then_some(kind))
}

/// A `multi`: every operation applied to a copy of the tree, kept only when all succeed.
fn multi(
    st: &mut State,
    session: i64,
    ids: &Identities,
    r: &mut Reader<'_>,
    zxid: i64,
) -> Result<Answer, Failure> {
    let saved = st.tree.clone();
    let mut results: Vec<(i32, Vec<u8>)> = Vec::new();
    let mut failed: Option<usize> = None;
    while let Some(kind) = next_op(r)? {
        let mut w = Writer::default();
        let outcome: Result<(), Failure> = match kind {
            op::CREATE
            | op::CREATE2
            | op::CREATE_CONTAINER
            | op::CREATE_TTL
            | op::DELETE
            | op::SET_DATA => update(st, session, ids, kind, r, zxid, &mut w),
            op::CHECK => {
                let p = r.string()?;
                let v = r.int()?;
                st.tree.check(p, v, ids).map_err(Failure::Code)
            }
            _ => return Err(Failure::Malformed),
        };
        match outcome {
            Ok(()) => results.push((kind, w.buf)),
            Err(Failure::Malformed) => return Err(Failure::Malformed),
            Err(Failure::Code(code)) => {
                if failed.is_none() {
                    failed = Some(results.len());
                }
                results.push((op::ERROR, code.to_be_bytes().to_vec()));
            }
        }
    }
    if let Some(at) = failed {
        st.tree = saved;
        let code = i32::from_be_bytes(results[at].1[..4].try_into().unwrap_or([0; 4]));
        return body(|w| {
            for i in 0..results.len() {
                let c = match i.cmp(&at) {
                    std::cmp::Ordering::Less => err::OK,
                    std::cmp::Ordering::Equal => code,
                    std::cmp::Ordering::Greater => err::RUNTIME_INCONSISTENCY,
                };
                w.multi_header(op::ERROR, false, c).int(c);
            }
            w.multi_header(-1, true, -1);
        });
    }
    body(|w| {
        for (kind, bytes) in &results {
            w.multi_header(*kind, false, 0);
            w.buf.extend_from_slice(bytes);
        }
        w.multi_header(-1, true, -1);
    })
}

/// A `multiRead`: getData and getChildren, each answered or failed on its own.
fn multi_read(st: &State, ids: &Identities, r: &mut Reader<'_>) -> Result<Answer, Failure> {
    let mut w = Writer::default();
    while let Some(kind) = next_op(r)? {
        let p = r.string()?;
        let _watch = r.boolean()?;
        let node = st.tree.get(p).ok_or(err::NO_NODE).and_then(|n| {
            if allowed(&n.acl, ids, perm::READ) {
                Ok(n)
            } else {
                Err(err::NO_AUTH)
            }
        });
        match (kind, node) {
            (op::GET_DATA, Ok(n)) => {
                w.multi_header(kind, false, 0).buffer(&n.data).stat(&n.stat);
            }
            (op::GET_CHILDREN, Ok(n)) => {
                w.multi_header(kind, false, 0)
                    .strings(n.children.iter().map(String::as_str));
            }
            (op::GET_DATA | op::GET_CHILDREN, Err(code)) => {
                w.multi_header(op::ERROR, false, code).int(code);
            }
            _ => return Err(Failure::Malformed),
        }
    }
    w.multi_header(-1, true, -1);
    Ok(Answer::Body(w.buf))
}

/// A four-letter word's reply.
fn four_letter(member: &Member, word: &[u8; 4]) -> String {
    if word == b"ruok" {
        return "imok".into();
    }
    member.ensemble.with(|st| {
        let Some(view) = st.view(member.id).filter(|v| v.role.serving()) else {
            return format!("{NOT_SERVING}\n");
        };
        match word {
            b"conf" => super::admin::conf_text(member, st),
            b"srvr" | b"stat" => super::admin::srvr_text(member, &view),
            b"mntr" => super::admin::mntr_text(member, &view),
            b"isro" => "rw".into(),
            _ => String::new(),
        }
    })
}
