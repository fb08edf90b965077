//! Network faults: cutting a Pod off the network and making quorum links lossy.
//!
//! Every Pod shares the host's network namespace, and on loopback a member's *outgoing*
//! connections leave from `127.0.0.1`, not from its Pod IP, so rules on addresses alone cannot
//! cut what a Pod sends. The agent therefore puts every container process into a net_cls cgroup
//! of its Pod (`<net_cls>/quorate-<node>-s<S>/<pod ip>`, joined by the container's shell before
//! it `exec`s the command; see `container.rs` for why not earlier), whose class id is derived
//! from the Pod IP, so it is the same for every container of the Pod and across restarts. One nftables table per agent (`inet quorate_<node>_s<S>`, an `output`
//! hook: every loopback packet passes it once) holds the rules:
//!
//! - incoming cut: `ip daddr <pod ip> ip saddr != <node ip> drop`;
//! - outgoing cut: `meta cgroup <class id> ip daddr != <node ip> drop` (and all its IPv6);
//! - both ways, also: `ip daddr <local> tcp dport <port> ip saddr <remote> tcp sport <port>
//!   drop` for each TCP connection the Pod's processes held when it was cut whose local address
//!   is not the Pod IP. Those are the connections it opened (on loopback from `127.0.0.1`): what
//!   their peers send is addressed to `127.0.0.1` and sent by the peer's process, so neither rule
//!   above stops it, and a follower cut from its leader would go on receiving (and logging) every
//!   proposal the leader sends before it notices the follower's silence. Connections opened after
//!   the cut never get going (their SYN is an outgoing packet).
//! - lossy quorum links: packets to or from ports 2888 and 3888 of this agent's `/24`, dropped at
//!   random with the given probability.
//!
//! Traffic between a Pod and its node's address (`127.0.S.1`) is never cut, as a NetworkPolicy
//! never blocks the kubelet: the agent's probes come from there, and a test can look at a cut
//! member by binding its client to [`super::NodeAgent::node_ip`]. Every rule names this agent's
//! Pod addresses, class ids or `/24`, so no other traffic on the machine is touched.
//!
//! The whole table is rendered from the wanted state and replaced in one `nft -f` transaction on
//! every change; it is deleted when nothing is wanted, when the agent stops and on drop.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::hosts::PodKey;
use super::nftables::{self, Nftables};
use super::pod::lock;

/// The quorum and election ports that [`super::NodeAgent::lossy_quorum_links`] affects.
pub const QUORUM_PORTS: [u16; 2] = [2888, 3888];

/// The upper 16 bits of every class id the agents give (`0x5a4b` = "ZK"); the lower 16 bits are
/// the last two octets of the Pod IP, unique among running agents since subnets are leased.
const CLASSID_MAJOR: u32 = 0x5a4b;

/// Which way to cut a Pod off the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Nothing reaches the Pod's IP, and nothing its processes send leaves them: peers and
    /// clients alike, established connections included.
    Both,
    /// Nothing addressed to the Pod's IP gets there (from anyone but the node): no one can
    /// connect to its ports, and connections to them go dead. What its processes send still
    /// leaves, and connections they open keep working: on loopback they leave from 127.0.0.1,
    /// so the answers are not addressed to the Pod's IP.
    Incoming,
    /// Nothing its processes send leaves them (to anyone but the node): no connection they open
    /// gets anywhere, and their listening sockets answer nothing.
    Outgoing,
}

impl Cut {
    fn incoming(self) -> bool {
        matches!(self, Cut::Both | Cut::Incoming)
    }

    fn outgoing(self) -> bool {
        matches!(self, Cut::Both | Cut::Outgoing)
    }
}

/// The class id of the Pod at `ip`.
pub(super) fn classid(ip: Ipv4Addr) -> u32 {
    let [_, _, s, n] = ip.octets();
    (CLASSID_MAJOR << 16) | (u32::from(s) << 8) | u32::from(n)
}

/// Keeps `[A-Za-z0-9_]`, replaces the rest with `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The net_cls hierarchy's mount point: an existing one, else `/sys/fs/cgroup/net_cls` mounted.
fn net_cls_mount() -> Result<PathBuf, String> {
    let find = || -> Option<PathBuf> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        text.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut r = right.split_whitespace();
            let fstype = r.next()?;
            let _source = r.next();
            let options = r.next().unwrap_or_default();
            let mount_point = left.split_whitespace().nth(4)?;
            (fstype == "cgroup" && options.split(',').any(|o| o == "net_cls"))
                .then(|| PathBuf::from(mount_point))
        })
    };
    if let Some(found) = find() {
        return Ok(found);
    }
    let target = PathBuf::from("/sys/fs/cgroup/net_cls");
    std::fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    let out = std::process::Command::new("mount")
        .args(["-t", "cgroup", "-o", "net_cls", "none"])
        .arg(&target)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running mount: {e}"))?;
    // Another agent may have mounted it meanwhile.
    find().ok_or_else(|| {
        format!(
            "mounting net_cls at {}: {}: {}",
            target.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Removes an empty cgroup directory, retrying while its last processes exit (up to `wait`).
fn remove_cgroup(dir: &Path, wait: Duration) -> std::io::Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A TCP connection seen from one end: local address and port, remote address and port.
type Connection = ((Ipv4Addr, u16), (Ipv4Addr, u16));

/// A cut Pod: its address when cut, how, and the connections it had opened by then (see the
/// module's documentation; empty unless cut both ways).
#[derive(Debug, Clone, PartialEq)]
struct CutPod {
    ip: Ipv4Addr,
    how: Cut,
    opened: Vec<Connection>,
}

#[derive(Debug, Default)]
struct Wanted {
    /// Cut Pods, by namespace/name.
    cuts: BTreeMap<PodKey, CutPod>,
    /// Percentage of quorum-link packets dropped.
    loss: u8,
    /// The table is in the kernel.
    installed: bool,
    /// nftables, once looked up.
    nft: Option<Nftables>,
}

/// The agent's network faults: its cgroups and its nftables table.
#[derive(Debug)]
pub(super) struct NetFaults {
    table: String,
    node_ip: Ipv4Addr,
    subnet: u8,
    /// `<net_cls>/quorate-<node>-s<S>`, or why there is none.
    cgroups: Result<PathBuf, String>,
    wanted: Mutex<Wanted>,
}

impl NetFaults {
    /// Sets up the agent's cgroup directory (mounting net_cls if needed) and removes what a
    /// crashed agent of the same name and subnet left (it cannot be running: the subnet is
    /// leased). Without net_cls (not root, no cgroup v1), Pods run without cgroups and only
    /// incoming cuts work.
    pub(super) fn new(node_name: &str, subnet: u8, node_ip: Ipv4Addr) -> NetFaults {
        let name = format!("quorate_{}_s{subnet}", sanitize(node_name));
        let cgroups = net_cls_mount().and_then(|mount| {
            let dir = mount.join(format!("quorate-{}-s{subnet}", sanitize(node_name)));
            if dir.is_dir() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if entry.path().is_dir() {
                        let _ = remove_cgroup(&entry.path(), Duration::from_millis(200));
                    }
                }
            }
            std::fs::create_dir_all(&dir)
                .map(|()| dir.clone())
                .map_err(|e| format!("creating the cgroup {}: {e}", dir.display()))
        });
        if let Err(e) = &cgroups {
            tracing::warn!(error = %e, "no net_cls cgroups: outgoing cuts will not work");
        }
        let faults = NetFaults {
            table: name,
            node_ip,
            subnet,
            cgroups,
            wanted: Mutex::default(),
        };
        if let Some(nft) = nftables::cached_nftables() {
            let mut wanted = lock(&faults.wanted);
            wanted.nft = Some(nft);
            // A table left by a crashed agent of this name and subnet.
            wanted.installed = true;
            if let Err(e) = faults.apply(&mut wanted) {
                tracing::warn!(error = %e, "removing a stale nftables table");
            }
        }
        faults
    }

    /// The nftables table's name (family `inet`).
    pub(super) fn table(&self) -> &str {
        &self.table
    }

    /// Creates the Pod's cgroup (class id from its address) and returns its `cgroup.procs`, for
    /// the container to join before `exec`; `None` without net_cls.
    pub(super) fn pod_cgroup(&self, ip: Ipv4Addr) -> Result<Option<PathBuf>, String> {
        let Ok(root) = &self.cgroups else {
            return Ok(None);
        };
        let dir = root.join(ip.to_string());
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("creating the cgroup {}: {e}", dir.display()))?;
        let classid = dir.join("net_cls.classid");
        std::fs::write(&classid, classid_text(ip))
            .map_err(|e| format!("writing {}: {e}", classid.display()))?;
        Ok(Some(dir.join("cgroup.procs")))
    }

    /// Removes the Pod's cgroup when its processes are gone (best effort).
    pub(super) fn remove_pod_cgroup(&self, ip: Ipv4Addr) {
        if let Ok(root) = &self.cgroups
            && let Err(e) = remove_cgroup(&root.join(ip.to_string()), Duration::from_millis(500))
        {
            tracing::debug!(error = %e, %ip, "removing a pod's cgroup (retried when the agent stops)");
        }
    }

    /// Cuts the Pod at `ip` (kept by namespace/name until healed).
    pub(super) fn cut(&self, key: PodKey, ip: Ipv4Addr, how: Cut) -> Result<(), String> {
        if how.outgoing()
            && let Err(e) = &self.cgroups
        {
            return Err(format!(
                "an outgoing cut needs the Pods' net_cls cgroups, which this agent has none of: {e}"
            ));
        }
        let opened = match (how, &self.cgroups) {
            (Cut::Both, Ok(root)) => opened_connections(&root.join(ip.to_string()), ip)?,
            _ => Vec::new(),
        };
        let mut wanted = lock(&self.wanted);
        let before = wanted.cuts.insert(key.clone(), CutPod { ip, how, opened });
        self.apply(&mut wanted).inspect_err(|_| {
            match before {
                Some(b) => wanted.cuts.insert(key, b),
                None => wanted.cuts.remove(&key),
            };
        })
    }

    /// Heals the Pod's cut; false if it was not cut.
    pub(super) fn heal(&self, key: &PodKey) -> Result<bool, String> {
        let mut wanted = lock(&self.wanted);
        let Some(before) = wanted.cuts.remove(key) else {
            return Ok(false);
        };
        self.apply(&mut wanted)
            .inspect_err(|_| {
                wanted.cuts.insert(key.clone(), before);
            })
            .map(|()| true)
    }

    /// Sets the loss percentage of quorum links (0 heals them).
    pub(super) fn set_loss(&self, percent: u8) -> Result<(), String> {
        let mut wanted = lock(&self.wanted);
        let before = std::mem::replace(&mut wanted.loss, percent);
        self.apply(&mut wanted)
            .inspect_err(|_| wanted.loss = before)
    }

    /// Packets the rules have dropped since they last changed.
    pub(super) fn dropped(&self) -> Result<u64, String> {
        let mut wanted = lock(&self.wanted);
        if !wanted.installed {
            return Ok(0);
        }
        let nft = self.nft(&mut wanted)?;
        let out = nft
            .command()
            .args(["list", "table", "inet", &self.table])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running nft list: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nft list table inet {}: {}",
                self.table,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(counted_packets(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Deletes the table and removes the cgroups (their processes must be gone).
    pub(super) fn clear(&self) {
        {
            let mut wanted = lock(&self.wanted);
            wanted.cuts.clear();
            wanted.loss = 0;
            if let Err(e) = self.apply(&mut wanted) {
                tracing::warn!(error = %e, table = %self.table, "deleting the nftables table");
            }
        }
        if let Ok(root) = &self.cgroups {
            for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
                if entry.path().is_dir()
                    && let Err(e) = remove_cgroup(&entry.path(), Duration::from_secs(2))
                {
                    tracing::warn!(error = %e, dir = %entry.path().display(), "removing a cgroup");
                }
            }
            if let Err(e) = remove_cgroup(root, Duration::from_millis(200)) {
                tracing::warn!(error = %e, dir = %root.display(), "removing the agent's cgroup");
            }
        }
    }

    fn nft<'a>(&self, wanted: &'a mut Wanted) -> Result<&'a Nftables, String> {
        if wanted.nft.is_none() {
            wanted.nft = Some(nftables::ensure_nftables()?);
        }
        Ok(wanted.nft.as_ref().expect("set above"))
    }

    /// Replaces the table with what `wanted` says, in one transaction.
    fn apply(&self, wanted: &mut Wanted) -> Result<(), String> {
        let rules = self.rules(wanted);
        if rules.is_empty() && !wanted.installed {
            return Ok(());
        }
        let script = render(&self.table, &rules);
        let nft = self.nft(wanted)?;
        let mut child = nft
            .command()
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running {}: {e}", nft.nft.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| format!("writing to nft: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for nft: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nft -f failed with {}: {}\nscript:\n{script}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        wanted.installed = !rules.is_empty();
        Ok(())
    }

    /// The rules of the output chain.
    fn rules(&self, wanted: &Wanted) -> Vec<String> {
        let node = self.node_ip;
        let mut rules = Vec::new();
        for CutPod { ip, how, opened } in wanted.cuts.values() {
            let (ip, how) = (*ip, *how);
            if how.incoming() {
                rules.push(format!("ip daddr {ip} ip saddr != {node} counter drop"));
            }
            if how.outgoing() {
                let class = classid_text(ip);
                rules.push(format!(
                    "meta cgroup {class} meta nfproto ipv4 ip daddr != {node} counter drop"
                ));
                rules.push(format!(
                    "meta cgroup {class} meta nfproto ipv6 counter drop"
                ));
            }
            for ((local, lport), (remote, rport)) in opened {
                if *remote != node {
                    rules.push(format!(
                        "ip daddr {local} tcp dport {lport} ip saddr {remote} tcp sport {rport} counter drop"
                    ));
                }
            }
        }
        if wanted.loss > 0 {
            let net = format!("127.0.{}.0/24", self.subnet);
            let ports = QUORUM_PORTS.map(|p| p.to_string()).join(", ");
            let chance = if wanted.loss >= 100 {
                String::new()
            } else {
                format!("numgen random mod 100 < {} ", wanted.loss)
            };
            rules.push(format!(
                "ip daddr {net} tcp dport {{ {ports} }} {chance}counter drop"
            ));
            rules.push(format!(
                "ip saddr {net} tcp sport {{ {ports} }} {chance}counter drop"
            ));
        }
        rules
    }
}

/// The TCP connections (not listening sockets) held by the processes of the cgroup `dir` whose
/// local address is not `pod_ip`: the ones they opened. Read from `/proc` (the sockets each
/// process has open, matched by inode against the connection table of its network namespace).
/// A missing cgroup (no process started yet) holds none.
fn opened_connections(dir: &Path, pod_ip: Ipv4Addr) -> Result<Vec<Connection>, String> {
    let procs = match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}/cgroup.procs: {e}", dir.display())),
    };
    let mut found = Vec::new();
    for pid in procs.split_whitespace() {
        // A process that exits meanwhile has no sockets left to cut.
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let inodes: std::collections::BTreeSet<u64> = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter_map(|link| {
                let link = link.to_string_lossy().into_owned();
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .parse()
                    .ok()
            })
            .collect();
        if inodes.is_empty() {
            continue;
        }
        // A JVM's sockets are IPv6 ones, its IPv4 connections v4-mapped (`tcp6`).
        let table = ["tcp", "tcp6"]
            .map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).unwrap_or_default())
            .join("\n");
        for (conn, inode) in tcp_connections(&table) {
            if inodes.contains(&inode) && conn.0.0 != pod_ip && !found.contains(&conn) {
                found.push(conn);
            }
        }
    }
    Ok(found)
}

/// The IPv4 connections of `/proc/net/tcp` and `/proc/net/tcp6` tables (IPv4-mapped IPv6 ones
/// as IPv4; listening sockets and headers left out), with their inodes.
fn tcp_connections(table: &str) -> Vec<(Connection, u64)> {
    const LISTEN: &str = "0A";
    let endpoint = |field: &str| -> Option<(Ipv4Addr, u16)> {
        let (addr, port) = field.split_once(':')?;
        // The address is printed as host-order words of its network-order bytes.
        let mut bytes = Vec::with_capacity(16);
        for word in 0..addr.len() / 8 {
            let w = u32::from_str_radix(addr.get(word * 8..word * 8 + 8)?, 16).ok()?;
            bytes.extend_from_slice(&w.to_ne_bytes());
        }
        let ip = match bytes.len() {
            4 => Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]),
            16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_ipv4_mapped()?,
            _ => return None,
        };
        Some((ip, u16::from_str_radix(port, 16).ok()?))
    };
    table
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] == LISTEN || !f[0].ends_with(':') {
                return None;
            }
            Some(((endpoint(f[1])?, endpoint(f[2])?), f[9].parse().ok()?))
        })
        .collect()
}

fn classid_text(ip: Ipv4Addr) -> String {
    format!("{:#010x}", classid(ip))
}

/// One `nft -f` script: create-then-delete (so the delete never fails), then the table anew if
/// it has rules.
fn render(table: &str, rules: &[String]) -> String {
    let mut s = format!("table inet {table} {{}}\ndelete table inet {table}\n");
    if !rules.is_empty() {
        let _ = writeln!(s, "table inet {table} {{");
        s.push_str("  chain out {\n    type filter hook output priority 0; policy accept;\n");
        for r in rules {
            let _ = writeln!(s, "    {r}");
        }
        s.push_str("  }\n}\n");
    }
    s
}

/// The sum of `counter packets N` in `nft list` output.
fn counted_packets(listing: &str) -> u64 {
    let words: Vec<&str> = listing.split_whitespace().collect();
    words
        .windows(3)
        .filter(|w| w[0] == "counter" && w[1] == "packets")
        .filter_map(|w| w[2].parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults() -> NetFaults {
        NetFaults {
            table: "quorate_node_1_s42".into(),
            node_ip: Ipv4Addr::new(127, 0, 42, 1),
            subnet: 42,
            cgroups: Ok(PathBuf::from("/nonexistent")),
            wanted: Mutex::default(),
        }
    }

    #[test]
    fn class_ids_follow_the_pod_address() {
        assert_eq!(classid(Ipv4Addr::new(127, 0, 42, 7)), 0x5a4b_2a07);
        assert_eq!(classid_text(Ipv4Addr::new(127, 0, 42, 7)), "0x5a4b2a07");
    }

    #[test]
    fn every_rule_names_the_agents_own_addresses_or_classes() {
        let f = faults();
        let mut w = Wanted::default();
        let ip = Ipv4Addr::new(127, 0, 42, 3);
        w.cuts.insert(
            ("ns".into(), "a".into()),
            CutPod {
                ip,
                how: Cut::Both,
                opened: Vec::new(),
            },
        );
        w.loss = 30;
        let rules = f.rules(&w);
        assert_eq!(rules.len(), 5, "{rules:?}");
        for r in &rules {
            assert!(
                r.contains("127.0.42.3") || r.contains("0x5a4b2a03") || r.contains("127.0.42.0/24"),
                "{r}"
            );
            assert!(r.ends_with("counter drop"), "{r}");
        }
        assert!(rules[0].contains("ip saddr != 127.0.42.1"));
        assert!(rules[3].contains("numgen random mod 100 < 30"));
        let script = render(&f.table, &rules);
        assert!(script.starts_with(
            "table inet quorate_node_1_s42 {}\ndelete table inet quorate_node_1_s42\n"
        ));
        assert!(script.contains("type filter hook output priority 0; policy accept;"));
    }

    #[test]
    fn an_incoming_cut_leaves_the_cgroup_alone_and_nothing_wanted_deletes_the_table() {
        let f = faults();
        let mut w = Wanted::default();
        w.cuts.insert(
            ("ns".into(), "a".into()),
            CutPod {
                ip: Ipv4Addr::new(127, 0, 42, 3),
                how: Cut::Incoming,
                opened: Vec::new(),
            },
        );
        let rules = f.rules(&w);
        assert_eq!(
            rules,
            ["ip daddr 127.0.42.3 ip saddr != 127.0.42.1 counter drop"]
        );
        assert_eq!(
            render("t", &[]),
            "table inet t {}\ndelete table inet t\n",
            "no rules: the table is only deleted"
        );
    }

    #[test]
    fn a_connection_table_yields_its_connections_and_leaves_listeners_out() {
        // `127.0.42.3:2181` listening; `127.0.0.1:40000` -> `127.0.42.5:2888` established.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 032A007F:0885 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0\n   \
            1: 0100007F:9C40 052A007F:0B48 01 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 20 4 30 10 -1\n  \
            sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0000000000000000FFFF0000032A007F:0F30 0000000000000000FFFF00000100007F:8778 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0 20 4 30 10 -1\n   \
            1: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:9C41 01 00000000:00000000 00:00000000 00000000  1000        0 444 1 0 20 4 30 10 -1\n";
        // And a JVM's `127.0.42.3:3888` <- `127.0.0.1:34680` (v4-mapped); `::1` is left out.
        assert_eq!(
            tcp_connections(table),
            [
                (
                    (
                        (Ipv4Addr::new(127, 0, 0, 1), 40000),
                        (Ipv4Addr::new(127, 0, 42, 5), 2888)
                    ),
                    222
                ),
                (
                    (
                        (Ipv4Addr::new(127, 0, 42, 3), 3888),
                        (Ipv4Addr::new(127, 0, 0, 1), 34680)
                    ),
                    333
                )
            ]
        );
    }

    #[test]
    fn a_cut_both_ways_also_drops_what_arrives_on_the_connections_the_pod_opened() {
        let f = faults();
        let mut w = Wanted::default();
        let ip = Ipv4Addr::new(127, 0, 42, 3);
        let leader = (Ipv4Addr::new(127, 0, 42, 5), 2888);
        let node = (Ipv4Addr::new(127, 0, 42, 1), 9000);
        w.cuts.insert(
            ("ns".into(), "a".into()),
            CutPod {
                ip,
                how: Cut::Both,
                opened: vec![
                    ((Ipv4Addr::LOCALHOST, 40000), leader),
                    ((Ipv4Addr::LOCALHOST, 40001), node),
                ],
            },
        );
        let rules = f.rules(&w);
        assert_eq!(
            rules.last().map(String::as_str),
            Some(
                "ip daddr 127.0.0.1 tcp dport 40000 ip saddr 127.0.42.5 tcp sport 2888 counter drop"
            ),
            "{rules:?}"
        );
        assert_eq!(
            rules.len(),
            4,
            "the node's connection is never cut: {rules:?}"
        );
    }

    #[test]
    fn a_cgroup_without_processes_has_no_connections() {
        let dir = std::env::temp_dir().join(format!("quorate-netfault-{}", std::process::id()));
        assert_eq!(
            opened_connections(&dir, Ipv4Addr::new(127, 0, 42, 3)),
            Ok(Vec::new())
        );
    }

    #[test]
    fn counters_are_summed() {
        let listing = "table inet t {\n chain out {\n  ip daddr 127.0.42.3 counter packets 3 \
                       bytes 180 drop\n  meta cgroup 1 counter packets 4 bytes 1 drop\n }\n}\n";
        assert_eq!(counted_packets(listing), 7);
    }
}
