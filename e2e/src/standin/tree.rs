//! A small znode tree with ACLs and stats, enough for quorate and a simple client: ZooKeeper's
//! own nodes (`/`, `/zookeeper`, `/zookeeper/config`, `/zookeeper/quota`) with their default
//! ACLs, and generic create, delete, setData and setACL with ZooKeeper's checks in its order.

use std::collections::{BTreeMap, BTreeSet};

use super::jute::{Acl, Stat, err, perm};

/// The configuration node.
pub const CONFIG_NODE: &str = "/zookeeper/config";

/// One znode.
#[derive(Clone, Debug)]
pub struct Node {
    pub data: Vec<u8>,
    pub acl: Vec<Acl>,
    pub stat: Stat,
    pub children: BTreeSet<String>,
}

/// Who is asking: the identities of the connection (`(scheme, id)`, `super` first when present).
pub type Identities = [(String, String)];

/// Whether `ids` may do `perms` (any of the bits) on a node with `acl`: ZooKeeper's
/// `checkACL` (the super identity may do anything; an empty ACL allows everything).
pub fn allowed(acl: &[Acl], ids: &Identities, perms: i32) -> bool {
    if acl.is_empty() || ids.iter().any(|(s, _)| s == "super") {
        return true;
    }
    acl.iter().any(|a| {
        a.perms & perms != 0
            && match a.scheme.as_str() {
                "world" => a.id == "anyone",
                scheme => ids.iter().any(|(s, id)| s == scheme && *id == a.id),
            }
    })
}

/// The tree.
#[derive(Clone, Debug)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

fn node(data: Vec<u8>, acl: Vec<Acl>) -> Node {
    Node {
        stat: Stat {
            data_length: data.len() as i32,
            ..Stat::default()
        },
        data,
        acl,
        children: BTreeSet::new(),
    }
}

/// The parent of a valid path other than `/`, and the last component.
pub fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// ZooKeeper's `PathUtils.validatePath`, simplified: absolute, no empty, `.` or `..`
/// component, no trailing slash (except `/`).
pub fn valid_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    path.starts_with('/')
        && !path.ends_with('/')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

impl Tree {
    /// ZooKeeper's initial tree; `/zookeeper/config` holds `config` (committed at `version`).
    pub fn new(config: &str, version: u64) -> Tree {
        let mut t = Tree {
            nodes: BTreeMap::new(),
        };
        t.nodes
            .insert("/".into(), node(Vec::new(), vec![Acl::world(perm::ALL)]));
        for (path, acl) in [
            ("/zookeeper", Acl::world(perm::ALL)),
            ("/zookeeper/quota", Acl::world(perm::ALL)),
            (CONFIG_NODE, Acl::world(perm::READ)),
        ] {
            let (parent, name) = split_path(path);
            t.nodes.insert(path.into(), node(Vec::new(), vec![acl]));
            if let Some(p) = t.nodes.get_mut(parent) {
                p.children.insert(name.into());
                p.stat.num_children = p.children.len() as i32;
            }
        }
        // ZooKeeper sets the config node's ACL with version -1 (`addConfigNode`): its ACL
        // version starts at -1, and the first setACL makes it 0.
        if let Some(n) = t.nodes.get_mut(CONFIG_NODE) {
            n.stat.aversion = -1;
        }
        t.set_config(config, version, 0);
        t
    }

    /// Writes the committed configuration into `/zookeeper/config` the way a reconfig does
    /// (data version -1, `mzxid` the config version).
    pub fn set_config(&mut self, text: &str, zxid: u64, now_ms: i64) {
        if let Some(n) = self.nodes.get_mut(CONFIG_NODE) {
            n.data = text.as_bytes().to_vec();
            n.stat.data_length = n.data.len() as i32;
            n.stat.mzxid = zxid as i64;
            n.stat.mtime = now_ms;
            n.stat.version = -1;
        }
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Every path.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// How many nodes (never zero: `/` is always there).
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    /// The total size of the data and paths, for `approximate_data_size`.
    pub fn approximate_size(&self) -> usize {
        self.nodes.iter().map(|(p, n)| p.len() + n.data.len()).sum()
    }

    /// The nodes owned by `session`.
    pub fn ephemerals(&self, session: i64) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.stat.ephemeral_owner == session)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Creates `path`. `flags`: 1 ephemeral, 2 sequential. Returns the path created.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &mut self,
        path: &str,
        data: &[u8],
        acl: Vec<Acl>,
        flags: i32,
        owner: i64,
        ids: &Identities,
        zxid: i64,
        now_ms: i64,
    ) -> Result<(String, Stat), i32> {
        if path == "/" || !valid_path(path) {
            return Err(err::BAD_ARGUMENTS);
        }
        let (parent_path, _) = split_path(path);
        let parent = self.nodes.get(parent_path).ok_or(err::NO_NODE)?;
        if !allowed(&parent.acl, ids, perm::CREATE) {
            return Err(err::NO_AUTH);
        }
        let acl = fixup_acl(acl, ids)?;
        let path = if flags & 2 != 0 {
            format!("{path}{:010}", parent.stat.cversion)
        } else {
            path.to_string()
        };
        if parent.stat.ephemeral_owner != 0 {
            return Err(err::NO_CHILDREN_FOR_EPHEMERALS);
        }
        if self.nodes.contains_key(&path) {
            return Err(err::NODE_EXISTS);
        }
        let (_, name) = split_path(&path);
        let name = name.to_string();
        let mut n = node(data.to_vec(), acl);
        n.stat.czxid = zxid;
        n.stat.mzxid = zxid;
        n.stat.pzxid = zxid;
        n.stat.ctime = now_ms;
        n.stat.mtime = now_ms;
        if flags & 1 != 0 {
            n.stat.ephemeral_owner = owner;
        }
        let stat = n.stat;
        self.nodes.insert(path.clone(), n);
        if let Some(p) = self.nodes.get_mut(parent_path) {
            p.children.insert(name);
            p.stat.num_children = p.children.len() as i32;
            p.stat.cversion += 1;
            p.stat.pzxid = zxid;
        }
        Ok((path, stat))
    }

    /// Deletes `path` if `version` is -1 or its data version.
    pub fn delete(
        &mut self,
        path: &str,
        version: i32,
        ids: &Identities,
        zxid: i64,
    ) -> Result<(), i32> {
        if path == "/" || !valid_path(path) {
            return Err(err::BAD_ARGUMENTS);
        }
        let (parent_path, name) = split_path(path);
        let parent = self.nodes.get(parent_path).ok_or(err::NO_NODE)?;
        if !allowed(&parent.acl, ids, perm::DELETE) {
            return Err(err::NO_AUTH);
        }
        let n = self.nodes.get(path).ok_or(err::NO_NODE)?;
        if version != -1 && version != n.stat.version {
            return Err(err::BAD_VERSION);
        }
        if !n.children.is_empty() {
            return Err(err::NOT_EMPTY);
        }
        let name = name.to_string();
        self.remove(path, &name, parent_path, zxid);
        Ok(())
    }

    /// Removes a node without checks (session close).
    pub fn remove_unchecked(&mut self, path: &str, zxid: i64) {
        let (parent_path, name) = split_path(path);
        let name = name.to_string();
        self.remove(path, &name, parent_path, zxid);
    }

    fn remove(&mut self, path: &str, name: &str, parent_path: &str, zxid: i64) {
        self.nodes.remove(path);
        if let Some(p) = self.nodes.get_mut(parent_path) {
            p.children.remove(name);
            p.stat.num_children = p.children.len() as i32;
            p.stat.cversion += 1;
            p.stat.pzxid = zxid;
        }
    }

    /// Sets the data of `path` if `version` is -1 or its data version.
    pub fn set_data(
        &mut self,
        path: &str,
        data: &[u8],
        version: i32,
        ids: &Identities,
        zxid: i64,
        now_ms: i64,
    ) -> Result<Stat, i32> {
        if !valid_path(path) {
            return Err(err::BAD_ARGUMENTS);
        }
        let n = self.nodes.get_mut(path).ok_or(err::NO_NODE)?;
        if !allowed(&n.acl, ids, perm::WRITE) {
            return Err(err::NO_AUTH);
        }
        if version != -1 && version != n.stat.version {
            return Err(err::BAD_VERSION);
        }
        n.data = data.to_vec();
        n.stat.version += 1;
        n.stat.mzxid = zxid;
        n.stat.mtime = now_ms;
        n.stat.data_length = n.data.len() as i32;
        Ok(n.stat)
    }

    /// Sets the ACL of `path` if `version` is -1 or its ACL version (ZooKeeper's order:
    /// the ACL's validity, the node, admin permission, the version).
    pub fn set_acl(
        &mut self,
        path: &str,
        acl: Vec<Acl>,
        version: i32,
        ids: &Identities,
    ) -> Result<Stat, i32> {
        if !valid_path(path) {
            return Err(err::BAD_ARGUMENTS);
        }
        let acl = fixup_acl(acl, ids)?;
        let n = self.nodes.get_mut(path).ok_or(err::NO_NODE)?;
        if !allowed(&n.acl, ids, perm::ADMIN) {
            return Err(err::NO_AUTH);
        }
        if version != -1 && version != n.stat.aversion {
            return Err(err::BAD_VERSION);
        }
        n.acl = acl;
        n.stat.aversion += 1;
        Ok(n.stat)
    }

    /// Checks the data version of `path` (inside a multi).
    pub fn check(&self, path: &str, version: i32, ids: &Identities) -> Result<(), i32> {
        let n = self.nodes.get(path).ok_or(err::NO_NODE)?;
        if !allowed(&n.acl, ids, perm::READ) {
            return Err(err::NO_AUTH);
        }
        if version != -1 && version != n.stat.version {
            return Err(err::BAD_VERSION);
        }
        Ok(())
    }
}

/// ZooKeeper's `fixupACL`: not empty; `world` only as `anyone`; `auth` replaced by the
/// connection's authenticated ids (at least one needed); `digest` ids shaped `user:hash`;
/// duplicates dropped.
fn fixup_acl(acl: Vec<Acl>, ids: &Identities) -> Result<Vec<Acl>, i32> {
    if acl.is_empty() {
        return Err(err::INVALID_ACL);
    }
    let mut out: Vec<Acl> = Vec::new();
    for a in acl {
        if a.perms & !perm::ALL != 0 {
            return Err(err::INVALID_ACL);
        }
        match a.scheme.as_str() {
            "world" if a.id == "anyone" => out.push(a),
            "auth" => {
                let mut any = false;
                for (scheme, id) in ids {
                    if scheme == "digest" {
                        any = true;
                        out.push(Acl {
                            perms: a.perms,
                            scheme: scheme.clone(),
                            id: id.clone(),
                        });
                    }
                }
                if !any {
                    return Err(err::INVALID_ACL);
                }
            }
            "digest" if a.id.split(':').count() == 2 => out.push(a),
            "ip" if !a.id.is_empty() => out.push(a),
            _ => return Err(err::INVALID_ACL),
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|a| seen.insert(a.clone()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(s, i)| (s.to_string(), i.to_string()))
            .collect()
    }

    #[test]
    fn the_initial_tree_has_zookeepers_nodes_and_acls() {
        let t = Tree::new(
            "server.1=a:1:2:participant;a:3\nversion=100000000",
            0x1_0000_0000,
        );
        assert_eq!(t.get("/").unwrap().acl, vec![Acl::world(31)]);
        let config = t.get(CONFIG_NODE).unwrap();
        assert_eq!(config.acl, vec![Acl::world(perm::READ)]);
        assert_eq!(config.stat.mzxid, 0x1_0000_0000);
        assert_eq!(config.stat.version, -1);
        assert_eq!(
            t.get("/zookeeper").unwrap().children,
            ["config".to_string(), "quota".to_string()].into()
        );
    }

    #[test]
    fn acl_checks_follow_zookeeper() {
        let mut t = Tree::new("x", 1);
        let anyone = ids(&[("ip", "127.0.0.1")]);
        assert_eq!(
            t.set_data(CONFIG_NODE, b"y", -1, &anyone, 2, 0),
            Err(err::NO_AUTH)
        );
        let su = ids(&[("super", ""), ("digest", "super:x")]);
        let digest = Acl {
            perms: perm::READ | perm::WRITE | perm::ADMIN,
            scheme: "digest".into(),
            id: "op:abc".into(),
        };
        let stat = t
            .set_acl(CONFIG_NODE, vec![digest.clone(), Acl::world(1)], -1, &su)
            .unwrap();
        assert_eq!(stat.aversion, 0, "ZooKeeper starts the config node's at -1");
        assert_eq!(
            t.set_acl(CONFIG_NODE, vec![Acl::world(1)], -2, &su),
            Err(err::BAD_VERSION)
        );
        assert!(allowed(
            &t.get(CONFIG_NODE).unwrap().acl,
            &ids(&[("digest", "op:abc")]),
            perm::WRITE
        ));
        assert_eq!(t.set_acl("/", vec![], -1, &su), Err(err::INVALID_ACL));
        let (path, _) = t
            .create("/a", b"1", vec![Acl::world(31)], 2, 0, &anyone, 3, 0)
            .unwrap();
        assert_eq!(path, "/a0000000000");
        assert_eq!(t.delete("/zookeeper", -1, &anyone, 4), Err(err::NOT_EMPTY));
        assert_eq!(t.delete(&path, 5, &anyone, 4), Err(err::BAD_VERSION));
        assert_eq!(t.delete(&path, -1, &anyone, 4), Ok(()));
    }
}
