//! quorate's snapshot reader (`backup::snapshot`) against snapshots written by real ZooKeeper
//! 3.9.5 (the AdminServer's streamed `snapshot` command, and the file it leaves in the data dir)
//! and 3.8.6 (which has no snapshot command: the `snapshot.*` file a new leader writes), from
//! ensembles the testbed starts on loopback. The kazoo judge (an independent Python client)
//! dumps the same tree with data and ACLs, ZooKeeper itself reports every node's stat and the
//! AdminServer's `monitor` its znode count, so the reader is not judged by quorate alone.
//!
//! The data directory reader (`backup::datadir`) is judged the same way: after members are
//! killed with SIGKILL, the zxid it reads from each volume must be the one ZooKeeper last
//! reported (`srvr`) and the last acknowledged write's, also after a quorum loss, when the
//! surviving member no longer answers `srvr` at all.
//!
//! Tier: real ZooKeeper 3.9.5 and 3.8.6 from the testbed's cache, kazoo from its venv. At most
//! one ensemble runs at a time in this binary (2-core machines), whatever `--test-threads` says.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use quorate::backup::datadir::{DataDirZxid, LogEnd, highest_zxid};
use quorate::backup::snapshot::{Error, Options, SnapshotCheck, SnapshotReader, SnapshotSummary};
use quorate::backup::znode::{Acl, Znode, is_system_path, parent_of};
use quorate_testbed::kazoo::{self, Judge};
use quorate_testbed::zookeeper::{Ensemble, ZkVersion, digest};
use zookeeper_client as zkc;

/// One ensemble at a time in this binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bulk znodes the kazoo judge writes under `/bulk`, besides the hand-made tree under `/snap`.
const BULK: usize = 1000;
/// The app user of the restrictive ACLs.
const APP_USER: (&str, &str) = ("app", "app-secret");

async fn start(version: ZkVersion) -> Ensemble {
    start_with(Ensemble::builder().version(version).members(3)).await
}

async fn start_with(builder: quorate_testbed::zookeeper::EnsembleBuilder) -> Ensemble {
    let t = Instant::now();
    let ensemble = builder.start().await.expect("ensemble starts");
    eprintln!(
        "{} members of {} serving: {:?}",
        ensemble.ids().len(),
        ensemble.version(),
        t.elapsed()
    );
    ensemble
}

/// A session authenticated as the ensemble's super user, to `hosts`.
async fn super_client_to(ensemble: &Ensemble, hosts: &str) -> zkc::Client {
    let (user, password) = ensemble.super_auth();
    zkc::Client::connector()
        .with_session_timeout(Duration::from_secs(30))
        .with_auth("digest", format!("{user}:{password}").as_bytes())
        .connect(hosts)
        .await
        .expect("connect as super")
}

/// A session authenticated as the ensemble's super user, to any member.
async fn super_client(ensemble: &Ensemble) -> zkc::Client {
    super_client_to(ensemble, &ensemble.connect_string()).await
}

/// What [`populate`] wrote that the checks need.
struct Written {
    /// The mzxid of the last write (a set_data on `/snap`): the newest change to user data.
    last_mzxid: i64,
    /// The session that owns `/snap/live`; dropping it would delete the ephemeral node.
    _owner: zkc::Client,
}

/// A pseudo-random byte pattern (every byte value appears in longer ones).
fn pattern(seed: usize, len: usize) -> Vec<u8> {
    let mut x = (seed as u32).wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as u8) ^ (i as u8)
        })
        .collect()
}

/// Writes the test tree: kazoo's bulk nodes, then a few hundred nested nodes with binary, empty
/// and null data, restrictive digest ACLs, persistent-sequential children, a container and an
/// ephemeral node; last a set_data on `/snap`.
async fn populate(ensemble: &Ensemble, judge: &Judge) -> Written {
    let t = Instant::now();
    let bulk = judge
        .write(&ensemble.connect_string(), None, "/bulk", BULK)
        .await
        .expect("kazoo write");
    assert_eq!(bulk.written, BULK, "{bulk:?}");

    let client = super_client(ensemble).await;
    let open = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
    client
        .create("/snap", b"the test tree", &open)
        .await
        .unwrap();
    for i in 0..10 {
        let parent = format!("/snap/t{i}");
        client
            .create(&parent, format!("parent {i}").as_bytes(), &open)
            .await
            .unwrap();
        let children: Vec<(String, Vec<u8>)> = (0..10)
            .map(|j| {
                (
                    format!("{parent}/c{j}"),
                    pattern(i * 10 + j, (i * 31 + j * 7) % 300),
                )
            })
            .collect();
        let creates = children
            .iter()
            .map(|(path, data)| client.create(path, data, &open));
        futures::future::try_join_all(creates).await.unwrap();
        let grandchildren: Vec<String> = (0..3)
            .flat_map(|j| {
                let parent = &parent;
                (0..5).map(move |k| format!("{parent}/c{j}/g{k}"))
            })
            .collect();
        let creates = grandchildren
            .iter()
            .map(|path| client.create(path, path.as_bytes(), &open));
        futures::future::try_join_all(creates).await.unwrap();
    }
    let every_byte: Vec<u8> = (0..=255).collect();
    client
        .create("/snap/binary", &every_byte, &open)
        .await
        .unwrap();
    client
        .create("/snap/big", &pattern(7, 100 << 10), &open)
        .await
        .unwrap();
    client.create("/snap/empty", b"", &open).await.unwrap();

    // Only the app user (and super) may touch these.
    let app = digest(APP_USER.0, APP_USER.1);
    let app_only = [zkc::Acl::new(
        zkc::Permission::ALL,
        zkc::AuthId::new("digest", &app),
    )];
    let app_only = zkc::CreateMode::Persistent.with_acls(zkc::Acls::new(&app_only));
    client
        .create("/snap/secret", b"s3cret", &app_only)
        .await
        .unwrap();
    client
        .create("/snap/secret/inner", b"deeper", &app_only)
        .await
        .unwrap();
    let read_only = [
        zkc::Acl::new(zkc::Permission::READ, zkc::AuthId::anyone()),
        zkc::Acl::new(
            zkc::Permission::READ | zkc::Permission::WRITE | zkc::Permission::ADMIN,
            zkc::AuthId::new("digest", &app),
        ),
    ];
    let read_only = zkc::CreateMode::Persistent.with_acls(zkc::Acls::new(&read_only));
    client
        .create("/snap/readonly", b"look, do not touch", &read_only)
        .await
        .unwrap();

    client.create("/snap/queue", b"", &open).await.unwrap();
    let sequential = zkc::CreateMode::PersistentSequential.with_acls(zkc::Acls::anyone_all());
    for n in 0..5 {
        let (_, seq) = client
            .create(
                "/snap/queue/job-",
                format!("job {n}").as_bytes(),
                &sequential,
            )
            .await
            .unwrap();
        assert_eq!(seq.into_i64(), n);
    }
    let container = zkc::CreateMode::Container.with_acls(zkc::Acls::anyone_all());
    client.create("/snap/box", b"", &container).await.unwrap();
    client.create("/snap/box/item", b"x", &open).await.unwrap();
    let ephemeral = zkc::CreateMode::Ephemeral.with_acls(zkc::Acls::anyone_all());
    client
        .create("/snap/live", b"mine", &ephemeral)
        .await
        .unwrap();

    // zkCli's `create` without data sends null data, which no other client here can.
    let (su, sp) = ensemble.super_auth();
    let out = ensemble
        .zkcli(None, Some((su, sp)), "create /snap/null\n")
        .await
        .expect("zkCli create");
    assert!(out.contains("Created /snap/null"), "{out}");

    let stat = client.set_data("/snap", b"done", None).await.unwrap();
    eprintln!(
        "wrote {BULK} bulk and {} hand-made znodes in {:?}; last mzxid {:#x}",
        client.count_descendants_number("/snap").await.unwrap(),
        t.elapsed(),
        stat.mzxid
    );
    Written {
        last_mzxid: stat.mzxid,
        _owner: client,
    }
}

/// Reads every node of a snapshot, timing it, and checks the summary of the same bytes.
fn read_nodes(bytes: &[u8], options: Options) -> (Vec<Znode>, SnapshotSummary) {
    let t = Instant::now();
    let mut reader = SnapshotReader::with_options(bytes, options).expect("snapshot header");
    let mut nodes = Vec::new();
    while let Some(node) = reader.next_node().expect("a znode") {
        nodes.push(node);
    }
    let summary = reader.finish().expect("the snapshot's end");
    let took = t.elapsed();
    eprintln!(
        "parsed {} znodes, {} bytes in {took:?} ({:.0} znodes/s, {:.1} MB/s): {summary:?}",
        summary.znodes,
        bytes.len(),
        summary.znodes as f64 / took.as_secs_f64(),
        bytes.len() as f64 / took.as_secs_f64() / 1e6,
    );
    (nodes, summary)
}

fn sorted_acl(acl: &[Acl]) -> Vec<(i32, String, String)> {
    let mut out: Vec<_> = acl
        .iter()
        .map(|a| (a.perms, a.scheme.clone(), a.id.clone()))
        .collect();
    out.sort();
    out
}

/// Compares the snapshot's nodes with kazoo's dump of the whole tree: the same paths, and for
/// each the same data, ACL, version and ephemeral owner.
fn compare_with_dump(nodes: &[Znode], dump: &kazoo::Znode) {
    let ours: BTreeMap<&str, &Znode> = nodes.iter().map(|n| (n.path.as_str(), n)).collect();
    assert_eq!(ours.len(), nodes.len(), "a path twice in the snapshot");
    let theirs: BTreeMap<&str, &kazoo::Znode> = dump
        .iter()
        .into_iter()
        .map(|n| (n.path.as_str(), n))
        .collect();
    let our_paths: BTreeSet<&str> = ours.keys().copied().collect();
    let their_paths: BTreeSet<&str> = theirs.keys().copied().collect();
    assert_eq!(
        our_paths
            .symmetric_difference(&their_paths)
            .collect::<Vec<_>>(),
        Vec::<&&str>::new(),
        "paths only in one of snapshot and dump"
    );
    for (path, node) in &ours {
        let judged = theirs[path];
        // kazoo gives null data as empty.
        assert_eq!(
            node.data.clone().unwrap_or_default(),
            judged.data_bytes(),
            "data of {path}"
        );
        let judged_acl: Vec<(i32, String, String)> = {
            let mut acl: Vec<_> = judged
                .acl
                .iter()
                .map(|a| (a.perms as i32, a.scheme.clone(), a.id.clone()))
                .collect();
            acl.sort();
            acl
        };
        assert_eq!(sorted_acl(&node.acl), judged_acl, "ACL of {path}");
        assert_eq!(
            i64::from(node.stat.version),
            judged.version,
            "version of {path}"
        );
        // Clients see 0 for container (and TTL) nodes, whose marker the snapshot keeps.
        assert_eq!(
            node.stat.client_ephemeral_owner(),
            judged.ephemeral_owner,
            "ephemeral owner of {path}"
        );
    }
}

/// Checks every node's stat against what `member` answers for it now (through that member:
/// each server sets `/zookeeper/config`'s mtime itself).
async fn compare_stats(ensemble: &Ensemble, member: u32, nodes: &[Znode]) {
    let host = ensemble.member_address(member).to_string();
    let client = super_client_to(ensemble, &host).await;
    client.sync("/").await.unwrap();
    let reads = nodes.iter().map(|n| client.get_data(&n.path));
    let answers = futures::future::try_join_all(reads).await.unwrap();
    let mut children: BTreeMap<&str, usize> = BTreeMap::new();
    for node in nodes {
        if let Some(parent) = parent_of(&node.path) {
            *children.entry(parent).or_default() += 1;
        }
    }
    for (node, (data, stat)) in nodes.iter().zip(answers) {
        let s = &node.stat;
        let path = &node.path;
        let kids = children.get(path.as_str()).copied().unwrap_or(0);
        assert_eq!(kids as i32, stat.num_children, "children of {path}");
        assert_eq!(
            node.data.clone().unwrap_or_default(),
            data,
            "data of {path}"
        );
        // A server rewrites its own /zookeeper/config with a new mtime when it takes the lead
        // (measured on 3.8.6 after the snapshot of the new leader was written).
        let mtime = |m: i64| if path == "/zookeeper/config" { 0 } else { m };
        assert_eq!(
            (s.czxid, s.mzxid, s.pzxid, s.ctime, mtime(s.mtime)),
            (
                stat.czxid,
                stat.mzxid,
                stat.pzxid,
                stat.ctime,
                mtime(stat.mtime)
            ),
            "zxids and times of {path}"
        );
        assert_eq!(
            (
                s.version,
                s.client_cversion(kids),
                s.aversion,
                s.client_ephemeral_owner()
            ),
            (
                stat.version,
                stat.cversion,
                stat.aversion,
                stat.ephemeral_owner
            ),
            "versions and owner of {path}"
        );
    }
}

/// What every real snapshot of the test tree must show.
async fn check_tree(
    ensemble: &Ensemble,
    judge: &Judge,
    member: u32,
    nodes: &[Znode],
    summary: &SnapshotSummary,
    written: &Written,
) {
    // kazoo reads through the same member, after a sync, as super (the ACLs keep others out).
    let (su, sp) = ensemble.super_auth();
    let host = ensemble.member_address(member).to_string();
    let dump = judge
        .dump(&host, Some((su, sp)), "/", &[])
        .await
        .expect("kazoo dump");
    compare_with_dump(nodes, &dump);
    compare_stats(ensemble, member, nodes).await;

    let user = nodes
        .iter()
        .filter(|n| n.path != "/" && !is_system_path(&n.path))
        .count() as u64;
    assert_eq!(summary.znodes, nodes.len() as u64);
    assert_eq!(summary.user_znodes, user);
    // The root, /zookeeper, /zookeeper/quota, /zookeeper/config; /snap has 10 + 100 + 150
    // nested nodes and 16 others, /bulk its own and BULK children.
    assert_eq!(
        summary.znodes,
        4 + 1 + 260 + 16 + 1 + BULK as u64,
        "{summary:?}"
    );
    assert_eq!(nodes[0].path, "/");
    assert_eq!(summary.data_zxid, written.last_mzxid, "{summary:?}");
    assert!(summary.sessions >= 1, "the ephemeral node's session");
    assert_eq!(
        summary.tree_matches_digest(),
        Some(true),
        "a quiescent server's digest: {summary:?}"
    );

    let find = |path: &str| nodes.iter().find(|n| n.path == path).unwrap();
    assert_eq!(find("/snap/null").data, None, "null data");
    assert_eq!(find("/snap/empty").data, Some(Vec::new()), "empty data");
    assert_eq!(
        find("/snap/binary").data,
        Some((0..=255).collect::<Vec<u8>>())
    );
    assert_eq!(find("/snap/big").data, Some(pattern(7, 100 << 10)));
    let app = digest(APP_USER.0, APP_USER.1);
    assert_eq!(
        find("/snap/secret").acl,
        vec![Acl {
            perms: 31,
            scheme: "digest".into(),
            id: app
        }]
    );
    let live = find("/snap/live");
    assert_eq!(
        live.stat.kind(),
        quorate::backup::znode::NodeKind::Ephemeral
    );
    assert_eq!(
        find("/snap/box").stat.kind(),
        quorate::backup::znode::NodeKind::Container
    );
    let jobs: Vec<&str> = nodes
        .iter()
        .filter_map(|n| n.path.strip_prefix("/snap/queue/"))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        jobs,
        (0..5)
            .map(|n| format!("job-{n:010}"))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert_eq!(find("/snap/queue").stat.cversion, 5);

    // The AdminServer's count: every node, with the root counted twice (ZooKeeper's node map
    // holds it under both "" and "/").
    let monitor = ensemble.monitor(member).await.expect("monitor");
    let count = monitor["znode_count"].as_u64().expect("znode_count");
    eprintln!(
        "monitor znode_count {count}, snapshot znodes {}",
        summary.znodes
    );
    assert_eq!(count, summary.znodes + 1);
}

/// `GET /commands/snapshot?streaming=true` from `member` as super, after checking that it is
/// refused without credentials; retries while rate-limited.
async fn request_snapshot(ensemble: &Ensemble, member: u32) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = format!("{}/snapshot?streaming=true", ensemble.admin_url(member));
    let (su, sp) = ensemble.super_auth();

    // Without credentials the command is refused before anything is written.
    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);

    let started = Instant::now();
    let response = loop {
        let response = http
            .get(&url)
            .header("Authorization", format!("digest {su}:{sp}"))
            .send()
            .await
            .expect("snapshot request");
        // One snapshot per ~300 ms per server.
        if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS
            && started.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(400)).await;
            continue;
        }
        break response;
    };
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response
}

/// The snapshot from `member`, fed chunk by chunk through a [`SnapshotCheck`] as a backup
/// would; returns the body, the check's summary and the `last_zxid` header.
async fn admin_snapshot(ensemble: &Ensemble, member: u32) -> (Vec<u8>, SnapshotSummary, i64) {
    let started = Instant::now();
    let response = request_snapshot(ensemble, member).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // A 200 can still be the JSON "not serving" reply: the type and last_zxid tell them apart.
    let content_type = header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/octet-stream"),
        "{content_type}"
    );
    let last_zxid = header("last_zxid").expect("last_zxid header");
    let last_zxid = i64::from_str_radix(last_zxid.strip_prefix("0x").unwrap(), 16).unwrap();
    let size: u64 = header("snapshot_size")
        .expect("snapshot_size header")
        .parse()
        .unwrap();

    let options = Options {
        require_last_zxid: true,
        ..Options::default()
    };
    let mut check = SnapshotCheck::spawn(options);
    let mut body = Vec::new();
    let mut chunks = 0;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("snapshot body");
        body.extend_from_slice(&chunk);
        chunks += 1;
        check.feed(chunk).await.expect("the check keeps up");
    }
    let summary = check.finish().await.expect("the streamed snapshot checks");
    eprintln!(
        "streamed snapshot from member {member}: {} bytes in {chunks} chunks, {:?}; last_zxid header {last_zxid:#x}",
        body.len(),
        started.elapsed()
    );
    assert_eq!(body.len() as u64, size, "snapshot_size");
    assert_eq!(summary.bytes, size);
    (body, summary, last_zxid)
}

fn snapshot_files(data_dir: &Path) -> Vec<(i64, PathBuf)> {
    let mut files: Vec<(i64, PathBuf)> = std::fs::read_dir(data_dir.join("version-2"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let zxid = i64::from_str_radix(name.strip_prefix("snapshot.")?, 16).ok()?;
                    Some((zxid, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Prints the trailer: the bytes after the znodes' end marker and seal.
fn describe_trailer(bytes: &[u8], summary: &SnapshotSummary) {
    let trailer = match (summary.digest.is_some(), summary.last_zxid.is_some()) {
        (false, false) => 0,
        (false, true) => 21,
        (true, false) => 33,
        (true, true) => 54,
    };
    let tail = &bytes[bytes.len() - trailer - 13..];
    eprintln!(
        "trailer after the znodes' end marker: seal {:02x?}, then {:02x?}; digest {:?}, last zxid {:?}",
        &tail[..13],
        &tail[13..],
        summary.digest,
        summary.last_zxid.map(|z| format!("{z:#x}"))
    );
}

#[tokio::test]
async fn zookeeper_3_9_streams_a_snapshot_that_reads_back_as_the_tree() {
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let ensemble = start(ZkVersion::V3_9_5).await;
    let written = populate(&ensemble, &judge).await;
    let leader = ensemble.leader_id().await.unwrap();
    let member = (1..=3).find(|id| *id != leader).unwrap();
    // The member has applied every acknowledged write once it answers a sync.
    let direct = super_client_to(&ensemble, &ensemble.member_address(member).to_string()).await;
    direct.sync("/").await.unwrap();
    drop(direct);

    let (body, streamed, last_zxid) = admin_snapshot(&ensemble, member).await;
    let (nodes, summary) = read_nodes(
        &body,
        Options {
            require_last_zxid: true,
            ..Options::default()
        },
    );
    assert_eq!(summary, streamed, "the same bytes, streamed or whole");
    describe_trailer(&body, &summary);
    let trailer_zxid = summary.last_zxid.expect("3.9's trailer");
    assert!(
        trailer_zxid >= last_zxid,
        "{trailer_zxid:#x} < {last_zxid:#x}"
    );
    assert!(summary.data_zxid <= last_zxid);
    let digest = summary.digest.expect("3.9 writes a digest");
    assert_eq!(digest.version, 2);
    check_tree(&ensemble, &judge, member, &nodes, &summary, &written).await;

    // The command left the same bytes in the member's data dir, named after the header's zxid.
    let files = snapshot_files(&ensemble.data_dir(member));
    let (zxid, file) = files.last().expect("a snapshot file");
    assert_eq!(*zxid, last_zxid, "{files:?}");
    assert_eq!(std::fs::read(file).unwrap(), body);
}

#[tokio::test]
async fn zookeeper_3_8_snapshot_files_read_back_as_the_tree() {
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let ensemble = start(ZkVersion::V3_8_6).await;
    let written = populate(&ensemble, &judge).await;

    // 3.8 has no snapshot command. A new leader writes a snapshot of everything it has as it
    // takes over, so stop the current one.
    let old = ensemble.leader_id().await.unwrap();
    let before: BTreeMap<u32, Vec<(i64, PathBuf)>> = (1..=3)
        .map(|id| (id, snapshot_files(&ensemble.data_dir(id))))
        .collect();
    ensemble.stop(old).await.unwrap();
    let leader = ensemble
        .wait_leader(Duration::from_secs(60))
        .await
        .expect("a new leader");
    ensemble
        .wait_serving(leader, Duration::from_secs(30))
        .await
        .unwrap();
    let files = snapshot_files(&ensemble.data_dir(leader));
    eprintln!(
        "leader {old} stopped, {leader} leads; snapshots before {before:?}, the new leader's now {files:?}"
    );
    let (zxid, file) = files.last().expect("the new leader's snapshot").clone();
    assert!(
        !before[&leader].iter().any(|(z, _)| *z == zxid),
        "no new snapshot: {files:?}"
    );
    // Written once, in one go, before the leader serves; read it as it is now.
    let bytes = std::fs::read(&file).unwrap();
    let (nodes, summary) = read_nodes(&bytes, Options::default());
    describe_trailer(&bytes, &summary);
    assert_eq!(summary.last_zxid, None, "3.8 writes no last zxid");
    assert_eq!(summary.digest.map(|d| d.version), Some(2));
    assert!(
        summary.data_zxid <= zxid,
        "{:#x} > {zxid:#x}",
        summary.data_zxid
    );
    check_tree(&ensemble, &judge, leader, &nodes, &summary, &written).await;
}

#[tokio::test]
async fn a_compressed_snapshot_is_refused_by_name() {
    let _one = ONE_AT_A_TIME.lock().await;
    // zoo.cfg keys ZooKeeper does not know become `zookeeper.`-prefixed system properties.
    let ensemble = start_with(
        Ensemble::builder()
            .version(ZkVersion::V3_9_5)
            .members(1)
            .grant_operator(false)
            .config("snapshot.compression.method", "gz"),
    )
    .await;
    let response = request_snapshot(&ensemble, 1).await;
    let mut check = SnapshotCheck::spawn(Options::default());
    let mut stream = response.bytes_stream();
    let mut first = Vec::new();
    let mut fed = Ok(());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("snapshot body");
        if first.len() < 4 {
            first.extend_from_slice(&chunk[..chunk.len().min(4)]);
        }
        fed = check.feed(chunk).await;
        if fed.is_err() {
            break;
        }
    }
    let err = match fed {
        Err(e) => e,
        Ok(()) => check.finish().await.unwrap_err(),
    };
    eprintln!("first bytes {:02x?}: {err}", &first[..first.len().min(4)]);
    assert!(matches!(err, Error::Compressed { method: "gzip" }), "{err}");
    let files: Vec<String> = std::fs::read_dir(ensemble.data_dir(1).join("version-2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    eprintln!("data dir: {files:?}");
    assert!(files.iter().any(|f| f.ends_with(".gz")), "{files:?}");
}

/// `srvr`'s last processed zxid of a member; `None` while it does not serve.
async fn served_zxid(ensemble: &Ensemble, id: u32) -> Option<i64> {
    let srvr = ensemble.admin(id, "srvr").await.ok()?;
    srvr.pointer("/server_stats/last_processed_zxid")?.as_i64()
}

/// Waits until every member reports the same last processed zxid in two rounds 300 ms apart
/// (every member has applied, and so logged, everything), and returns it.
async fn settled_zxid(ensemble: &Ensemble) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut previous = None;
    loop {
        let mut zxids = BTreeSet::new();
        for id in ensemble.running_ids() {
            zxids.insert(served_zxid(ensemble, id).await);
        }
        let now = (zxids.len() == 1)
            .then(|| zxids.first().copied().flatten())
            .flatten();
        if let Some(zxid) = now
            && now == previous
        {
            return zxid;
        }
        assert!(Instant::now() < deadline, "members disagree: {zxids:?}");
        previous = now;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// [`highest_zxid`] on a member's data dir, timed and printed.
fn read_volume(ensemble: &Ensemble, id: u32) -> DataDirZxid {
    let t = Instant::now();
    let found = highest_zxid(&ensemble.data_dir(id)).expect("the volume reads");
    let took = t.elapsed();
    let files = std::fs::read_dir(ensemble.data_dir(id).join("version-2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<BTreeSet<_>>();
    eprintln!("member {id}'s volume in {took:?} (files {files:?}):\n{found}");
    found
}

/// Writes `n` znodes and a last set_data through one session, waits until every member has
/// them, kills every member with SIGKILL, and checks that each volume's zxid is what ZooKeeper
/// reported before the kill and the last write's own zxid.
async fn volume_zxid_after_sigkill(version: ZkVersion) {
    let _one = ONE_AT_A_TIME.lock().await;
    // A small snapCount makes ZooKeeper roll its log and snapshot every 50 to 100 transactions,
    // so each volume holds several logs and (fuzzy) snapshots, as a busy member's does.
    let ensemble = start_with(
        Ensemble::builder()
            .version(version)
            .members(3)
            .config("snapCount", "100"),
    )
    .await;
    let client = super_client(&ensemble).await;
    let open = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
    client.create("/vol", b"", &open).await.unwrap();
    const N: usize = 600;
    for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
        let paths: Vec<String> = chunk.iter().map(|i| format!("/vol/n-{i:04}")).collect();
        let creates = paths.iter().map(|p| client.create(p, p.as_bytes(), &open));
        futures::future::try_join_all(creates).await.unwrap();
    }
    let last = client.set_data("/vol", b"done", None).await.unwrap();
    let served = settled_zxid(&ensemble).await;
    eprintln!(
        "{version}: {N} znodes written, last write's mzxid {:#x}, every member serves {served:#x}",
        last.mzxid
    );
    // Nothing but these writes ran: the session's creation came before them.
    assert_eq!(served, last.mzxid);

    for id in ensemble.ids() {
        ensemble.kill(id).unwrap();
    }
    for id in ensemble.ids() {
        let found = read_volume(&ensemble, id);
        assert_eq!(found.zxid, Some(served), "member {id}: {found:?}");
        let log = found.log.as_ref().expect("a transaction log");
        assert_eq!(log.zxid, served, "the last write is in a log");
        assert_eq!(found.current_epoch, Some(served >> 32), "member {id}");
        assert_eq!(found.accepted_epoch, Some(served >> 32), "member {id}");
        let snapshot = found.snapshot.as_ref().expect("a snapshot");
        assert!(snapshot.zxid <= served, "{snapshot:?}");
        assert!(found.skipped.is_empty(), "{:?}", found.skipped);
        // A killed member leaves its preallocated padding behind its last record.
        let newest = found.logs.last().unwrap();
        assert!(
            matches!(newest.end, LogEnd::Padding { .. }),
            "member {id}: {newest:?}"
        );
    }
}

#[tokio::test]
async fn zookeeper_3_9_volumes_hold_the_served_zxid_after_sigkill() {
    volume_zxid_after_sigkill(ZkVersion::V3_9_5).await;
}

#[tokio::test]
async fn zookeeper_3_8_volumes_hold_the_served_zxid_after_sigkill() {
    volume_zxid_after_sigkill(ZkVersion::V3_8_6).await;
}

#[tokio::test]
async fn after_a_quorum_loss_the_volumes_name_the_last_acknowledged_write() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ensemble = start(ZkVersion::V3_9_5).await;
    let leader = ensemble.leader_id().await.unwrap();
    let followers: Vec<u32> = ensemble
        .ids()
        .into_iter()
        .filter(|id| *id != leader)
        .collect();
    let (survivor, lost) = (followers[0], followers[1]);

    // One writer, one write at a time, through the member that will survive: every write it
    // saw acknowledged is on a majority of volumes (I8), and at most one more is in flight.
    let writer = super_client_to(&ensemble, &ensemble.member_address(survivor).to_string()).await;
    let open = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
    writer.create("/loss", b"", &open).await.unwrap();
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<i64>::new()));
    let writing = tokio::spawn({
        let acked = acked.clone();
        async move {
            let open = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
            let mut i = 0u64;
            loop {
                let path = format!("/loss/w-{i:06}");
                let write = writer.create(&path, b"x", &open);
                match tokio::time::timeout(Duration::from_secs(5), write).await {
                    Ok(Ok((stat, _))) => acked.lock().unwrap().push(stat.mzxid),
                    Ok(Err(e)) => return format!("write {i} failed: {e}"),
                    Err(_) => return format!("write {i} timed out after 5 s"),
                }
                i += 1;
            }
        }
    });
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both at once, mid-write.
    ensemble.kill(leader).unwrap();
    ensemble.kill(lost).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(60), writing)
        .await
        .expect("the writer stops")
        .unwrap();
    let acked = acked.lock().unwrap().clone();
    let last_acked = *acked.last().unwrap();
    eprintln!(
        "killed leader {leader} and follower {lost}; {} writes acknowledged, the last {last_acked:#x}; then {ended}",
        acked.len()
    );

    // The survivor runs but serves nothing: its zxid cannot be asked for.
    let deadline = Instant::now() + Duration::from_secs(30);
    let srvr = loop {
        let srvr = ensemble.admin_raw(survivor, "srvr").await.unwrap();
        if !srvr["error"].is_null() || Instant::now() > deadline {
            break srvr;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("the survivor {survivor} answers srvr with {srvr}");
    assert!(!srvr["error"].is_null(), "{srvr}");
    assert_eq!(served_zxid(&ensemble, survivor).await, None);

    // Its volume, read while it runs without quorum, and the two killed members' volumes.
    let volumes: BTreeMap<u32, i64> = ensemble
        .ids()
        .into_iter()
        .map(|id| (id, read_volume(&ensemble, id).zxid.expect("a zxid")))
        .collect();
    let (best, highest) = volumes
        .iter()
        .max_by_key(|(_, zxid)| **zxid)
        .map(|(id, zxid)| (*id, *zxid))
        .unwrap();
    eprintln!(
        "volume zxids {:?}; recovery would start from member {best} at {highest:#x}",
        volumes
            .iter()
            .map(|(id, z)| (*id, format!("{z:#x}")))
            .collect::<BTreeMap<_, _>>()
    );
    // The acknowledged write is on a majority of the volumes, and nothing beyond the one write
    // in flight is anywhere.
    let holding = volumes.values().filter(|z| **z >= last_acked).count();
    assert!(holding >= 2, "{volumes:?} vs {last_acked:#x}");
    assert!(highest <= last_acked + 1, "{volumes:?} vs {last_acked:#x}");
    assert!(volumes.values().all(|z| *z >> 32 == last_acked >> 32));

    // Without a quorum the survivor writes nothing more: killed now, its volume is unchanged.
    ensemble.kill(survivor).unwrap();
    let after = read_volume(&ensemble, survivor);
    assert_eq!(after.zxid, Some(volumes[&survivor]));
}
