//! The online restore's replay (`backup::engine::load_artifact`) against real ZooKeeper: it
//! deletes nothing unless the data it streamed was whole. A tree artifact is taken from a live
//! member into a filesystem store and verified; a byte of its stored data then changes (the
//! parser still reads it, only its SHA-256 tells). The replay must fail and leave every live
//! znode the artifact does not hold in place; with the byte put back, the same replay deletes
//! them, so the check could see a prune.
//!
//! The replay's writes: new znodes are created in multis (one transaction for many znodes),
//! existing ones are overwritten one by one, and a multi that fails because a znode exists or
//! because its parent was in another multi that failed is written again, in order.
//!
//! Tier: real ZooKeeper (3.9.5, and 3.8.6 for the multis) from the testbed's cache (one member
//! on loopback), quorate's filesystem store in a temp directory; the live tree is read with a
//! separate client.

use std::time::Duration;

use quorate::backup::artifact::Format;
use quorate::backup::engine::{self, BackupJob};
use quorate::backup::store::Store;
use quorate::backup::tree;
use quorate::backup::znode::{Acl, Stat, Znode, perms};
use quorate::crd::{Destination, FilesystemDestination};
use quorate::planner::ServerId;
use quorate::zk::MemberAddr;
use quorate_testbed::zookeeper::{Ensemble, ZkVersion};
use zookeeper_client as zkc;

const IN_BACKUP: &[u8] = b"written before the backup";

/// A one-member ensemble of `version` and a client of its own connected to it as the super
/// user (the test's judge: it shares nothing with the replay's session).
async fn one_member(version: ZkVersion) -> (Ensemble, zkc::Client) {
    let ensemble = Ensemble::builder()
        .version(version)
        .members(1)
        .start()
        .await
        .expect("ensemble starts");
    let (user, password) = ensemble.super_auth();
    let client = zkc::Client::connector()
        .with_session_timeout(Duration::from_secs(30))
        .with_auth("digest", format!("{user}:{password}").as_bytes())
        .connect(&ensemble.connect_string())
        .await
        .expect("connect as super");
    (ensemble, client)
}

#[tokio::test]
async fn a_replay_of_data_changed_since_verification_deletes_nothing() {
    let (ensemble, client) = one_member(ZkVersion::V3_9_5).await;
    let (user, password) = ensemble.super_auth();
    let persistent = zkc::CreateMode::Persistent.with_acls(zkc::Acls::anyone_all());
    client
        .create("/kept", IN_BACKUP, &persistent)
        .await
        .expect("create /kept");

    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::from_destination(
        &Destination {
            s3: None,
            filesystem: Some(FilesystemDestination {
                path: dir.path().display().to_string(),
            }),
        },
        None,
    )
    .expect("filesystem store");
    let member = MemberAddr::new(ServerId(1), ensemble.member_ip(1).to_string());
    let job = BackupJob {
        id: "a1".into(),
        namespace: "ns".into(),
        ensemble: "masters".into(),
        ensemble_uid: None,
        ensemble_spec: None,
        backup: "daily".into(),
        member: member.clone(),
        format: Format::Tree,
        user: user.to_string(),
        password: password.to_string(),
        sasl: None,
        zookeeper_version: None,
        zxid_before: None,
        started_at: jiff::Timestamp::now(),
    };
    engine::run_backup(&store, &job, jiff::Timestamp::now, &|_| {})
        .await
        .expect("tree backup");
    let paths = store.artifact("ns", "daily", "a1");
    let verified = engine::verify_artifact(&store, "a1", &paths)
        .await
        .expect("the artifact verifies");

    // Newer than the backup: an online restore with prune deletes it, if the data is whole.
    client
        .create("/newer", b"after the backup", &persistent)
        .await
        .expect("create /newer");

    // One byte of the stored data changes after the verification.
    let data_file = dir.path().join(paths.data.as_ref());
    let original = std::fs::read(&data_file).expect("read the stored data");
    let at = original
        .windows(IN_BACKUP.len())
        .position(|w| w == IN_BACKUP)
        .expect("/kept's data is in the dump");
    let mut changed = original.clone();
    changed[at] ^= 0x20;
    std::fs::write(&data_file, &changed).expect("change a byte");
    let hosts = member.client_address();
    let replay = |prune| {
        engine::load_artifact(
            &store,
            &verified,
            &paths,
            &hosts,
            (user, password),
            prune,
            &|_| {},
        )
    };
    let err = replay(true)
        .await
        .expect_err("a replay of changed data fails");
    assert!(
        err.to_string().contains("sha256") || err.to_string().contains("SHA-256"),
        "the failure names the checksum: {err}"
    );
    assert!(
        client.check_stat("/newer").await.expect("stat").is_some(),
        "a replay of data that no longer matches its checksum deleted a live znode"
    );

    // The same replay of the whole data deletes it: the check above could see a prune.
    std::fs::write(&data_file, &original).expect("restore the byte");
    let report = replay(true).await.expect("a replay of whole data");
    assert_eq!(report.written, 1, "{report:?}");
    assert_eq!(report.deleted, 1, "{report:?}");
    assert!(client.check_stat("/newer").await.expect("stat").is_none());
    let (data, _) = client.get_data("/kept").await.expect("read /kept");
    assert_eq!(data, IN_BACKUP);
}

/// The tree the multi tests replay: `/a` with 300 children, `/wide` with 1,200 (so its children
/// span several multis), `/big` with 100 KiB of data (written alone) and 20 children, and
/// `/locked`, readable by anyone and writable by one digest user only. Data says `version`.
fn tree_of(version: &str) -> Vec<Znode> {
    let node = |path: String, data: Vec<u8>, acl: Vec<Acl>| Znode {
        path,
        data: Some(data),
        acl,
        stat: Stat::default(),
    };
    let open = || vec![Acl::open()];
    let text = |path: &str| format!("{version} {path}").into_bytes();
    let mut nodes = vec![node("/".into(), Vec::new(), open())];
    for (dir, children) in [("/a", 300), ("/wide", 1_200)] {
        nodes.push(node(dir.into(), text(dir), open()));
        for i in 0..children {
            let path = format!("{dir}/n{i:04}");
            nodes.push(node(path.clone(), text(&path), open()));
        }
    }
    let mut big = vec![b'x'; 100 * 1024];
    big[..version.len()].copy_from_slice(version.as_bytes());
    nodes.push(node("/big".into(), big, open()));
    for i in 0..20 {
        let path = format!("/big/k{i:02}");
        nodes.push(node(path.clone(), text(&path), open()));
    }
    let locked = vec![
        Acl {
            perms: perms::READ,
            scheme: "world".into(),
            id: "anyone".into(),
        },
        Acl {
            perms: perms::ALL,
            scheme: "digest".into(),
            id: "app:x2tYV6YkMY8HkCdpiFp2JzLzRYs=".into(),
        },
    ];
    nodes.push(node("/locked".into(), text("/locked"), locked));
    nodes
}

async fn replay_tree(hosts: &str, auth: (&str, &str), nodes: Vec<Znode>) -> tree::ReplayReport {
    let client = tree::connect(hosts, &auth.into()).await.expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let feed = async move {
        for n in nodes {
            tx.send(n).await.expect("the replay takes every znode");
        }
    };
    let ((), replayed) = tokio::join!(feed, tree::replay(&client, rx, false, &|_| {}));
    replayed.expect("the replay").0
}

/// Reads every znode of `nodes` back with its own client and checks its data and ACL; returns
/// how many distinct creation zxids they have (one per transaction that created them).
async fn judge_tree(client: &zkc::Client, nodes: &[Znode]) -> usize {
    let mut created = std::collections::HashSet::new();
    for n in nodes.iter().filter(|n| n.path != "/") {
        let (data, stat) = client
            .get_data(&n.path)
            .await
            .unwrap_or_else(|e| panic!("{} was not replayed: {e}", n.path));
        assert!(
            data == n.data.clone().unwrap_or_default(),
            "{}: data differs from the tree's",
            n.path
        );
        let (acl, _) = client.get_acl(&n.path).await.expect("get_acl");
        let acl: Vec<(i32, String, String)> = acl
            .iter()
            .map(|a| {
                (
                    perm_bits(a.permission()),
                    a.scheme().to_string(),
                    a.id().to_string(),
                )
            })
            .collect();
        let expected: Vec<(i32, String, String)> = n
            .acl
            .iter()
            .map(|a| (a.perms, a.scheme.clone(), a.id.clone()))
            .collect();
        assert_eq!(acl, expected, "{}: ACL", n.path);
        created.insert(stat.czxid);
    }
    created.len()
}

fn perm_bits(p: zkc::Permission) -> i32 {
    [
        (zkc::Permission::READ, perms::READ),
        (zkc::Permission::WRITE, perms::WRITE),
        (zkc::Permission::CREATE, perms::CREATE),
        (zkc::Permission::DELETE, perms::DELETE),
        (zkc::Permission::ADMIN, perms::ADMIN),
    ]
    .iter()
    .filter(|(bit, _)| p.has(*bit))
    .map(|(_, value)| value)
    .sum()
}

async fn multis_then_overwrites(version: ZkVersion) {
    let (ensemble, judge) = one_member(version).await;
    let (user, password) = ensemble.super_auth();
    let hosts = ensemble.connect_string();

    // Into an empty ensemble: 1,524 new znodes in multis of at most 500, the big one alone.
    let first = tree_of("v1");
    let written = first.len() as u64 - 1;
    let report = replay_tree(&hosts, (user, password), first.clone()).await;
    // The root is not counted as written, and is always updated (its data and ACL set).
    assert_eq!(
        (report.written, report.created, report.updated),
        (written, written, 1)
    );
    let transactions = judge_tree(&judge, &first).await;
    assert!(
        transactions <= 8,
        "{written} new znodes took {transactions} transactions; in multis of at most 500 they take \
         at most 8 (one per multi and one for /big)"
    );

    // Over live data: /a exists, /wide is gone (its children fall in multis sent behind one
    // that fails on /a, so they fail for want of /wide and are written again after it).
    for i in 0..1_200 {
        judge
            .delete(&format!("/wide/n{i:04}"), None)
            .await
            .expect("delete a /wide child");
    }
    judge.delete("/wide", None).await.expect("delete /wide");
    let second = tree_of("v2");
    let report = replay_tree(&hosts, (user, password), second.clone()).await;
    assert_eq!(report.written, written, "{report:?}");
    assert_eq!(report.created, 1_201, "/wide and its children: {report:?}");
    assert_eq!(
        report.updated,
        written - 1_201 + 1,
        "the rest and the root: {report:?}"
    );
    judge_tree(&judge, &second).await;
}

#[tokio::test]
async fn a_replay_creates_new_znodes_in_multis_and_overwrites_live_ones_on_zookeeper_3_9() {
    multis_then_overwrites(ZkVersion::V3_9_5).await;
}

#[tokio::test]
async fn a_replay_creates_new_znodes_in_multis_and_overwrites_live_ones_on_zookeeper_3_8() {
    multis_then_overwrites(ZkVersion::V3_8_6).await;
}
