//! The online restore's replay (`backup::engine::load_artifact`) against real ZooKeeper: it
//! deletes nothing unless the data it streamed was whole. A tree artifact is taken from a live
//! member into a filesystem store and verified; a byte of its stored data then changes (the
//! parser still reads it, only its SHA-256 tells). The replay must fail and leave every live
//! znode the artifact does not hold in place; with the byte put back, the same replay deletes
//! them, so the check could see a prune.
//!
//! Tier: real ZooKeeper 3.9.5 from the testbed's cache (one member on loopback), quorate's
//! filesystem store in a temp directory; the live tree is read with a separate client.

use std::time::Duration;

use quorate::backup::artifact::Format;
use quorate::backup::engine::{self, BackupJob};
use quorate::backup::store::Store;
use quorate::crd::{Destination, FilesystemDestination};
use quorate::planner::ServerId;
use quorate::zk::MemberAddr;
use quorate_testbed::zookeeper::{Ensemble, ZkVersion};
use zookeeper_client as zkc;

const IN_BACKUP: &[u8] = b"written before the backup";

#[tokio::test]
async fn a_replay_of_data_changed_since_verification_deletes_nothing() {
    let ensemble = Ensemble::builder()
        .version(ZkVersion::V3_9_5)
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
