//! A znode as backups carry it: path, data, ACL and the persisted stat. Both artifact formats
//! (ZooKeeper's own snapshot file and quorate's tree dump) read into these types, so restores,
//! verification and the zxid comparison of I7 work the same way on either.

use serde::{Deserialize, Serialize};

/// ZooKeeper's permission bits.
pub mod perms {
    /// Read data and list children.
    pub const READ: i32 = 1;
    /// Set data.
    pub const WRITE: i32 = 2;
    /// Create children.
    pub const CREATE: i32 = 4;
    /// Delete children.
    pub const DELETE: i32 = 8;
    /// Set the ACL.
    pub const ADMIN: i32 = 16;
    /// All of them.
    pub const ALL: i32 = 31;
}

/// One ACL entry: permission bits for an identity (`scheme:id`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Acl {
    /// Bits of [`perms`].
    pub perms: i32,
    /// `world`, `digest`, `ip`, `auth`, `x509`, `sasl`, ...
    pub scheme: String,
    /// `anyone`, `user:base64digest`, an address, ...
    pub id: String,
}

impl Acl {
    /// `world:anyone` with every permission (ZooKeeper's OPEN_ACL_UNSAFE).
    pub fn open() -> Acl {
        Acl {
            perms: perms::ALL,
            scheme: "world".into(),
            id: "anyone".into(),
        }
    }
}

/// The stat fields ZooKeeper persists for a znode (`StatPersisted`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    /// zxid of the create.
    pub czxid: i64,
    /// zxid of the last data change.
    pub mzxid: i64,
    /// Creation time (ms since the epoch).
    pub ctime: i64,
    /// Last modification time (ms since the epoch).
    pub mtime: i64,
    /// Data version.
    pub version: i32,
    /// Children version; the next sequential child's number comes from it.
    pub cversion: i32,
    /// ACL version.
    pub aversion: i32,
    /// Session of an ephemeral node; special values mark container and TTL nodes.
    pub ephemeral_owner: i64,
    /// zxid of the last change to the children.
    pub pzxid: i64,
}

/// What kind of node `ephemeral_owner` says a znode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// An ordinary persistent node.
    Persistent,
    /// An ephemeral node owned by a session.
    Ephemeral,
    /// A container node (deleted by the server once its last child goes).
    Container,
    /// A persistent node with a time to live.
    Ttl,
}

/// `ephemeral_owner` of container nodes (`EphemeralType.CONTAINER_EPHEMERAL_OWNER`).
pub const CONTAINER_OWNER: i64 = i64::MIN;
/// The high byte that marks TTL nodes in `ephemeral_owner` (`EphemeralType.TTL`).
const TTL_MASK: u64 = 0xFF00_0000_0000_0000;

impl Stat {
    /// The node's kind, from `ephemeral_owner`.
    pub fn kind(&self) -> NodeKind {
        let owner = self.ephemeral_owner;
        if owner == 0 {
            NodeKind::Persistent
        } else if owner == CONTAINER_OWNER {
            NodeKind::Container
        } else if (owner as u64) & TTL_MASK == TTL_MASK {
            NodeKind::Ttl
        } else {
            NodeKind::Ephemeral
        }
    }

    /// `ephemeral_owner` as clients see it in a `Stat`: the session of an ephemeral node, 0 for
    /// every other kind (ZooKeeper hides the container and TTL markers from clients).
    pub fn client_ephemeral_owner(&self) -> i64 {
        match self.kind() {
            NodeKind::Ephemeral => self.ephemeral_owner,
            _ => 0,
        }
    }

    /// `cversion` as clients see it in a `Stat`, for a node with `children` children: ZooKeeper
    /// persists a count of child creations and reports `2 * cversion - children` (each child
    /// gone was one create and one delete).
    pub fn client_cversion(&self, children: usize) -> i32 {
        self.cversion
            .wrapping_mul(2)
            .wrapping_sub(i32::try_from(children).unwrap_or(i32::MAX))
    }

    /// The newest zxid this node's own state records (create, data change, children change).
    pub fn newest_zxid(&self) -> i64 {
        self.czxid.max(self.mzxid).max(self.pzxid)
    }
}

/// One znode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Znode {
    /// Absolute path (`/` for the root).
    pub path: String,
    /// Data; `None` is ZooKeeper's null (distinct from empty).
    pub data: Option<Vec<u8>>,
    /// The node's ACL.
    pub acl: Vec<Acl>,
    /// The persisted stat.
    pub stat: Stat,
}

/// Whether `path` is ZooKeeper's own subtree (`/zookeeper`, its quota and config nodes), which
/// belongs to the server, never to a backup's data.
pub fn is_system_path(path: &str) -> bool {
    path == "/zookeeper" || path.starts_with("/zookeeper/")
}

/// The parent of an absolute path (`None` for `/`).
pub fn parent_of(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// Whether a znode is user data that a restore brings back: not the server's own subtree, not
/// the root, not an ephemeral node of a session that will not exist after the restore.
pub fn is_restorable(node: &Znode) -> bool {
    node.path != "/" && !is_system_path(&node.path) && node.stat.kind() != NodeKind::Ephemeral
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_node_kinds_from_the_ephemeral_owner() {
        let stat = |owner| Stat {
            ephemeral_owner: owner,
            ..Stat::default()
        };
        assert_eq!(stat(0).kind(), NodeKind::Persistent);
        assert_eq!(stat(0x1000_0000_0000_0042).kind(), NodeKind::Ephemeral);
        assert_eq!(stat(i64::MIN).kind(), NodeKind::Container);
        assert_eq!(stat(0xFF00_0000_0000_1000_u64 as i64).kind(), NodeKind::Ttl);
        assert_eq!(stat(i64::MIN).client_ephemeral_owner(), 0);
        assert_eq!(stat(0x42).client_ephemeral_owner(), 0x42);
        let parent = Stat {
            cversion: 2,
            ..Stat::default()
        };
        assert_eq!(parent.client_cversion(3), 1);
        assert_eq!(parent.client_cversion(0), 4);
    }

    #[test]
    fn the_zookeeper_subtree_and_the_root_are_never_restored() {
        let node = |path: &str, owner| Znode {
            path: path.into(),
            data: None,
            acl: vec![Acl::open()],
            stat: Stat {
                ephemeral_owner: owner,
                ..Stat::default()
            },
        };
        assert!(!is_restorable(&node("/", 0)));
        assert!(!is_restorable(&node("/zookeeper", 0)));
        assert!(!is_restorable(&node("/zookeeper/config", 0)));
        assert!(!is_restorable(&node("/app/lock", 0x42)));
        assert!(is_restorable(&node("/zookeeperish", 0)));
        assert!(is_restorable(&node("/app", i64::MIN)));
    }

    #[test]
    fn parents_of_paths() {
        assert_eq!(parent_of("/"), None);
        assert_eq!(parent_of("/a"), Some("/"));
        assert_eq!(parent_of("/a/b/c"), Some("/a/b"));
    }
}
