//! The jute encoding of ZooKeeper's client protocol: big-endian integers, `ustring` and `buffer`
//! as a 4-byte length (-1 for null) then the bytes, vectors as a 4-byte count then the items,
//! and the records the stand-in reads and writes (`Stat`, `ACL`, request and reply headers).
//! Layouts follow ZooKeeper's `zookeeper.jute`.

/// Operation codes (`ZooDefs.OpCode`).
pub mod op {
    pub const CREATE: i32 = 1;
    pub const DELETE: i32 = 2;
    pub const EXISTS: i32 = 3;
    pub const GET_DATA: i32 = 4;
    pub const SET_DATA: i32 = 5;
    pub const GET_ACL: i32 = 6;
    pub const SET_ACL: i32 = 7;
    pub const GET_CHILDREN: i32 = 8;
    pub const SYNC: i32 = 9;
    pub const PING: i32 = 11;
    pub const GET_CHILDREN2: i32 = 12;
    pub const CHECK: i32 = 13;
    pub const MULTI: i32 = 14;
    pub const CREATE2: i32 = 15;
    pub const RECONFIG: i32 = 16;
    pub const CHECK_WATCHES: i32 = 17;
    pub const REMOVE_WATCHES: i32 = 18;
    pub const CREATE_CONTAINER: i32 = 19;
    pub const CREATE_TTL: i32 = 21;
    pub const MULTI_READ: i32 = 22;
    pub const AUTH: i32 = 100;
    pub const SET_WATCHES: i32 = 101;
    pub const SASL: i32 = 102;
    pub const GET_EPHEMERALS: i32 = 103;
    pub const GET_ALL_CHILDREN_NUMBER: i32 = 104;
    pub const SET_WATCHES2: i32 = 105;
    pub const ADD_WATCH: i32 = 106;
    pub const WHO_AM_I: i32 = 107;
    pub const CLOSE_SESSION: i32 = -11;
    pub const ERROR: i32 = -1;
}

/// Error codes (`KeeperException.Code`) the stand-in answers.
pub mod err {
    pub const OK: i32 = 0;
    pub const RUNTIME_INCONSISTENCY: i32 = -2;
    pub const MARSHALLING_ERROR: i32 = -5;
    pub const UNIMPLEMENTED: i32 = -6;
    pub const BAD_ARGUMENTS: i32 = -8;
    pub const NEW_CONFIG_NO_QUORUM: i32 = -13;
    pub const RECONFIG_IN_PROGRESS: i32 = -14;
    pub const NO_NODE: i32 = -101;
    pub const NO_AUTH: i32 = -102;
    pub const BAD_VERSION: i32 = -103;
    pub const NO_CHILDREN_FOR_EPHEMERALS: i32 = -108;
    pub const NODE_EXISTS: i32 = -110;
    pub const NOT_EMPTY: i32 = -111;
    pub const INVALID_ACL: i32 = -114;
    pub const AUTH_FAILED: i32 = -115;
    pub const RECONFIG_DISABLED: i32 = -123;
}

/// Predefined xids.
pub mod xid {
    pub const NOTIFICATION: i32 = -1;
    pub const PING: i32 = -2;
}

/// A request body that ended early or held a bad length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Reads jute values from a request body.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn int(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn long(&mut self) -> Result<i64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    pub fn boolean(&mut self) -> Result<bool, Malformed> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A `buffer`; `None` for length -1.
    pub fn buffer(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        let len = self.int()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }

    /// A `ustring`; `None` for length -1.
    pub fn ustring(&mut self) -> Result<Option<&'a str>, Malformed> {
        match self.buffer()? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b).map(Some).map_err(|_| Malformed),
        }
    }

    /// A `ustring` that must be present.
    pub fn string(&mut self) -> Result<&'a str, Malformed> {
        self.ustring()?.ok_or(Malformed)
    }

    /// A `vector<ACL>`; `None` for a null vector.
    pub fn acls(&mut self) -> Result<Option<Vec<Acl>>, Malformed> {
        let n = self.int()?;
        if n < 0 {
            return Ok(None);
        }
        if n as usize > self.buf.len() / 12 {
            return Err(Malformed);
        }
        let mut out = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let perms = self.int()?;
            let scheme = self.string()?.to_string();
            let id = self.string()?.to_string();
            out.push(Acl { perms, scheme, id });
        }
        Ok(Some(out))
    }
}

/// Writes jute values into a reply body.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    /// A writer with room reserved for the frame length, filled in by [`Writer::frame`].
    pub fn framed() -> Writer {
        Writer {
            buf: vec![0, 0, 0, 0],
        }
    }

    /// Fills in the frame length and returns the bytes.
    pub fn frame(mut self) -> Vec<u8> {
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }

    pub fn int(&mut self, v: i32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn long(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn boolean(&mut self, v: bool) -> &mut Self {
        self.buf.push(u8::from(v));
        self
    }

    pub fn buffer(&mut self, v: &[u8]) -> &mut Self {
        self.int(v.len() as i32);
        self.buf.extend_from_slice(v);
        self
    }

    pub fn string(&mut self, v: &str) -> &mut Self {
        self.buffer(v.as_bytes())
    }

    pub fn strings<'s>(&mut self, v: impl ExactSizeIterator<Item = &'s str>) -> &mut Self {
        self.int(v.len() as i32);
        for s in v {
            self.string(s);
        }
        self
    }

    pub fn acls(&mut self, acls: &[Acl]) -> &mut Self {
        self.int(acls.len() as i32);
        for a in acls {
            self.int(a.perms).string(&a.scheme).string(&a.id);
        }
        self
    }

    pub fn stat(&mut self, s: &Stat) -> &mut Self {
        self.long(s.czxid)
            .long(s.mzxid)
            .long(s.ctime)
            .long(s.mtime)
            .int(s.version)
            .int(s.cversion)
            .int(s.aversion)
            .long(s.ephemeral_owner)
            .int(s.data_length)
            .int(s.num_children)
            .long(s.pzxid)
    }

    /// A reply header: `xid`, `zxid`, `err`.
    pub fn reply_header(&mut self, xid: i32, zxid: i64, err: i32) -> &mut Self {
        self.int(xid).long(zxid).int(err)
    }

    /// A multi header: `type`, `done`, `err`.
    pub fn multi_header(&mut self, op: i32, done: bool, err: i32) -> &mut Self {
        self.int(op).boolean(done).int(err)
    }
}

/// Permission bits (`ZooDefs.Perms`).
pub mod perm {
    pub const READ: i32 = 1;
    pub const WRITE: i32 = 2;
    pub const CREATE: i32 = 4;
    pub const DELETE: i32 = 8;
    pub const ADMIN: i32 = 16;
    pub const ALL: i32 = 31;
}

/// One ACL entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Acl {
    /// Permission bits.
    pub perms: i32,
    /// `world`, `digest`, `ip`, `auth`, `super`...
    pub scheme: String,
    /// The id within the scheme (`anyone`, `user:base64(sha1)`...).
    pub id: String,
}

impl Acl {
    /// `world:anyone` with `perms`.
    pub fn world(perms: i32) -> Acl {
        Acl {
            perms,
            scheme: "world".into(),
            id: "anyone".into(),
        }
    }
}

/// A znode's `Stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stat {
    pub czxid: i64,
    pub mzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub data_length: i32,
    pub num_children: i32,
    pub pzxid: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut w = Writer::default();
        w.int(-7)
            .long(1 << 40)
            .boolean(true)
            .string("/a")
            .buffer(b"");
        w.acls(&[Acl::world(perm::ALL)]);
        w.int(-1);
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.int(), Ok(-7));
        assert_eq!(r.long(), Ok(1 << 40));
        assert_eq!(r.boolean(), Ok(true));
        assert_eq!(r.string(), Ok("/a"));
        assert_eq!(r.buffer(), Ok(Some(&b""[..])));
        assert_eq!(r.acls(), Ok(Some(vec![Acl::world(31)])));
        assert_eq!(r.ustring(), Ok(None));
        assert_eq!(r.int(), Err(Malformed));
    }

    #[test]
    fn a_frame_carries_its_length() {
        let mut w = Writer::framed();
        w.reply_header(1, 2, 0);
        let bytes = w.frame();
        assert_eq!(&bytes[..4], &16u32.to_be_bytes());
        assert_eq!(bytes.len(), 20);
    }
}
