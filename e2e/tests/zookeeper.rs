//! Tests of the ZooKeeper harness itself, on real ZooKeeper (3.9.5, and 3.8.6 for start-up), with
//! the kazoo judge. Ensembles are started one at a time (2-core machines).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use quorate_testbed::kazoo::Judge;
use quorate_testbed::zookeeper::{self, Ensemble, SubnetLease, ZkVersion};

/// One ensemble at a time in this binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What must be gone after an ensemble is dropped.
struct Footprint {
    pids: Vec<u32>,
    dir: PathBuf,
    subnet: u8,
    ids: Vec<u32>,
}

fn footprint(ensemble: &Ensemble) -> Footprint {
    Footprint {
        pids: ensemble.pids(),
        dir: ensemble.base_dir().to_path_buf(),
        subnet: ensemble.subnet(),
        ids: ensemble.ids(),
    }
}

fn cmdline(pid: &str) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Every process is gone (not even a zombie), no process mentions the directory, the directory is
/// removed, and every address can be bound again.
fn assert_gone(fp: &Footprint) {
    assert!(!fp.pids.is_empty());
    for pid in &fp.pids {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "process {pid} still exists: {}",
            cmdline(&pid.to_string())
        );
    }
    let dir = fp.dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.chars().all(|c| c.is_ascii_digit()) {
            let cmd = cmdline(&name);
            assert!(
                !cmd.contains(&dir),
                "process {name} still runs from {dir}: {cmd}"
            );
        }
    }
    assert!(!fp.dir.exists(), "{dir} was not removed");
    for id in &fp.ids {
        for port in [
            zookeeper::CLIENT_PORT,
            zookeeper::QUORUM_PORT,
            zookeeper::ELECTION_PORT,
            zookeeper::ADMIN_PORT,
        ] {
            let addr = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(127, 0, fp.subnet, *id as u8)),
                port,
            );
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("{addr} is still in use: {e}"));
        }
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match check().await {
            Ok(true) => return,
            Ok(false) => last = "condition false".into(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}: {last}");
}

#[test]
fn digest_matches_zookeeper() {
    // Generated with ZooKeeper's own DigestAuthenticationProvider (see notes/zookeeper-and-stack.md).
    assert_eq!(
        zookeeper::digest("super", "superpw"),
        "super:g9oN2HttPfn8MMWJZ2r45Np/LIA="
    );
}

#[test]
fn subnet_leases_are_exclusive() {
    let a = SubnetLease::acquire().unwrap();
    let b = SubnetLease::acquire().unwrap();
    assert_ne!(a.subnet(), b.subnet());
    assert!(
        SubnetLease::acquire_specific(a.subnet()).is_err(),
        "a leased subnet was handed out twice"
    );
    // Outside the automatic range, so no other test takes it in between.
    let fixed = SubnetLease::acquire_specific(251).unwrap();
    assert!(SubnetLease::acquire_specific(251).is_err());
    drop(fixed);
    let again = SubnetLease::acquire_specific(251).unwrap();
    assert_eq!(again.ip(7), Ipv4Addr::new(127, 0, 251, 7));
}

#[tokio::test]
async fn three_members_elect_one_leader_and_serve_kazoo_through_every_member() {
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let t0 = Instant::now();
    let ensemble = Ensemble::builder()
        .members(3)
        .start()
        .await
        .expect("ensemble starts");
    eprintln!(
        "3 members of {} serving, leader elected, operator granted: {:?}",
        ensemble.version(),
        t0.elapsed()
    );

    // Exactly one leader, and every member agrees on it.
    let leader = ensemble.leader_id().await.unwrap();
    let mut leaders = 0;
    for id in ensemble.ids() {
        let state = ensemble.server_state(id).await.unwrap();
        let view = ensemble.admin(id, "leader").await.unwrap();
        assert_eq!(
            view["leader_id"].as_u64(),
            Some(leader as u64),
            "member {id}: {view}"
        );
        leaders += usize::from(state == "leader");
        assert!(
            state == "leader" || state == "follower",
            "member {id} is {state}"
        );
        let srvr = ensemble.admin(id, "srvr").await.unwrap();
        assert!(
            srvr["version"].as_str().unwrap().starts_with("3.9.5"),
            "{srvr}"
        );
    }
    assert_eq!(leaders, 1);
    assert_eq!(
        ensemble.current_config().await.unwrap().ids(),
        vec![1, 2, 3]
    );
    let ruok = ensemble.four_letter(1, "ruok").await.unwrap();
    assert_eq!(ruok, "imok");

    // Write through member 1, read back through each member alone.
    let op = Some(ensemble.operator_auth());
    let first = ensemble.member_address(1).to_string();
    let t = Instant::now();
    let written = judge.write(&first, op, "/judge", 200).await.unwrap();
    assert_eq!(written.written, 200, "{written:?}");
    eprintln!(
        "kazoo wrote 200 znodes in {:?} ({} s inside)",
        t.elapsed(),
        written.seconds
    );
    for id in ensemble.ids() {
        let host = ensemble.member_address(id).to_string();
        let report = judge.verify(&host, None, "/judge", 200).await.unwrap();
        assert!(
            report.ok && report.children == 200,
            "through member {id}: {report:?}"
        );
    }
    // A wrong count is reported, not hidden.
    let short = judge.verify(&first, None, "/judge", 201).await.unwrap();
    assert!(!short.ok && short.missing_count == 1, "{short:?}");

    // Dump: data, ACLs; /zookeeper/config carries the operator's grant.
    let tree = judge
        .dump(
            &ensemble.connect_string(),
            Some(ensemble.super_auth()),
            "/",
            &[],
        )
        .await
        .unwrap();
    let judged = tree.find("/judge").expect("/judge in dump");
    assert_eq!(judged.children.len(), 200);
    assert_eq!(judged.children[0].data_bytes().len(), 64);
    assert!(!judged.children[0].ephemeral);
    let config = tree
        .find("/zookeeper/config")
        .expect("/zookeeper/config in dump");
    let (user, password) = ensemble.operator_auth();
    let grant = zookeeper::digest(user, password);
    assert!(
        config
            .acl
            .iter()
            .any(|a| a.scheme == "digest" && a.id == grant && a.perms == 1 | 2 | 16),
        "{:?}",
        config.acl
    );
    assert!(
        config
            .acl
            .iter()
            .any(|a| a.scheme == "world" && a.id == "anyone" && a.perms == 1),
        "{:?}",
        config.acl
    );
    assert!(String::from_utf8_lossy(&config.data_bytes()).contains("server.1="));

    // Creator-only ACLs: readable by the writer, refused to anonymous clients, kept in a dump.
    let hosts = ensemble.connect_string();
    let w = judge
        .write_with(&hosts, op, "/secret", 10, 100, "creator")
        .await
        .unwrap();
    assert_eq!(w.written, 10, "{w:?}");
    let ok = judge
        .verify_with(&hosts, op, "/secret", 10, 100)
        .await
        .unwrap();
    assert!(ok.ok, "{ok:?}");
    let refused = judge.verify_with(&hosts, None, "/secret", 10, 100).await;
    assert!(
        refused.is_err(),
        "anonymous read of a creator-only znode: {refused:?}"
    );
    let tree = judge
        .dump(
            &hosts,
            Some(ensemble.super_auth()),
            "/",
            &["/zookeeper", "/judge"],
        )
        .await
        .unwrap();
    assert!(tree.find("/zookeeper").is_none() && tree.find("/judge").is_none());
    let secret = tree
        .find("/secret/n00000003")
        .expect("/secret/n00000003 in dump");
    assert_eq!(secret.data_bytes().len(), 100);
    assert_eq!(
        secret.acl,
        vec![quorate_testbed::kazoo::AclEntry {
            perms: 31,
            scheme: "digest".into(),
            id: grant.clone()
        }]
    );

    let fp = footprint(&ensemble);
    drop(ensemble);
    assert_gone(&fp);
}

#[tokio::test]
async fn joiner_is_a_synced_non_voting_follower_until_the_operator_adds_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let ensemble = Ensemble::start(3).await.expect("ensemble starts");
    let leader = ensemble.leader_id().await.unwrap();

    let t = Instant::now();
    ensemble.start_joiner(4).await.expect("joiner starts");
    eprintln!("joiner 4 serving after {:?}", t.elapsed());
    assert_eq!(ensemble.server_state(4).await.unwrap(), "follower");
    // It is not in the config the others vote with.
    assert_eq!(
        ensemble.member_config(leader).await.unwrap().ids(),
        vec![1, 2, 3]
    );
    wait_for(
        "the leader to see 1 synced non-voting follower",
        Duration::from_secs(20),
        || async {
            let m = ensemble.monitor(leader).await.map_err(|e| e.to_string())?;
            let keys = [
                "synced_non_voting_followers",
                "synced_followers",
                "learners",
                "quorum_size",
            ];
            let seen: Vec<String> = keys.iter().map(|k| format!("{k}={}", m[k])).collect();
            // synced_followers counts every synced learner, voting or not (3 here).
            if m["synced_non_voting_followers"].as_u64() == Some(1)
                && m["quorum_size"].as_u64() == Some(3)
            {
                Ok(true)
            } else {
                Err(seen.join(" "))
            }
        },
    )
    .await;

    // Without auth, reconfig is refused; the operator user may reconfig (rwa on /zookeeper/config).
    let add = format!("reconfig -add {}", ensemble.server_line(4));
    let refused = ensemble.zkcli(None, None, &add).await;
    assert!(
        refused.is_err(),
        "reconfig without auth succeeded: {refused:?}"
    );
    let out = ensemble
        .zkcli(None, Some(ensemble.operator_auth()), &add)
        .await
        .expect("operator reconfig");
    assert!(out.contains("server.4="), "{out}");
    wait_for(
        "the leader to see 3 synced voting followers",
        Duration::from_secs(20),
        || async {
            let m = ensemble.monitor(leader).await.map_err(|e| e.to_string())?;
            let keys = [
                "synced_non_voting_followers",
                "synced_followers",
                "learners",
                "quorum_size",
            ];
            let seen: Vec<String> = keys.iter().map(|k| format!("{k}={}", m[k])).collect();
            if m["synced_non_voting_followers"].as_u64() == Some(0)
                && m["synced_followers"].as_u64() == Some(3)
                && m["quorum_size"].as_u64() == Some(4)
            {
                Ok(true)
            } else {
                Err(seen.join(" "))
            }
        },
    )
    .await;
    assert_eq!(
        ensemble.current_config().await.unwrap().ids(),
        vec![1, 2, 3, 4]
    );
    assert!(
        ensemble
            .connect_string()
            .contains(&ensemble.member_address(4).to_string())
    );

    let fp = footprint(&ensemble);
    assert_eq!(fp.pids.len(), 4);
    drop(ensemble);
    assert_gone(&fp);
}

#[tokio::test]
async fn pause_kill_restart_and_a_continuous_writer_loses_no_acknowledged_write() {
    let _one = ONE_AT_A_TIME.lock().await;
    let judge = Judge::new().await.expect("kazoo venv");
    let ensemble = Ensemble::builder()
        .members(3)
        .tick_time_ms(500)
        .start()
        .await
        .expect("ensemble starts");
    let leader = ensemble.leader_id().await.unwrap();
    let follower = ensemble.ids().into_iter().find(|&id| id != leader).unwrap();

    // Pause: the member answers nothing; the rest still serve.
    ensemble.pause(follower).unwrap();
    assert!(
        !ensemble.is_serving(follower).await,
        "a paused member serves"
    );
    for id in ensemble.ids().into_iter().filter(|&id| id != follower) {
        assert!(ensemble.is_serving(id).await, "member {id} stopped serving");
    }
    ensemble.resume(follower).unwrap();
    ensemble
        .wait_serving(follower, Duration::from_secs(30))
        .await
        .unwrap();

    // A writer runs while a follower restarts and the leader is killed and started again.
    let out = ensemble.base_dir().join("acked.jsonl");
    let hosts = ensemble.connect_string();
    let writer = judge
        .writer(
            &hosts,
            None,
            "/writer",
            Duration::from_secs(12),
            Duration::from_millis(5),
            &out,
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    ensemble.restart(follower).await.unwrap();
    eprintln!("restart of follower {follower}: {:?}", t.elapsed());
    ensemble.kill(leader).unwrap();
    let t = Instant::now();
    let new_leader = ensemble.wait_leader(Duration::from_secs(30)).await.unwrap();
    eprintln!(
        "new leader {new_leader} after killing {leader}: {:?}",
        t.elapsed()
    );
    assert_ne!(new_leader, leader);
    ensemble.start_member(leader).await.unwrap();
    assert_eq!(ensemble.server_state(leader).await.unwrap(), "follower");

    let report = writer.wait().await.unwrap();
    eprintln!("writer: {report:?}");
    assert!(report.acked > 100, "{report:?}");
    assert!(report.seconds < 30.0, "{report:?}");
    let check = judge.check_acked(&hosts, None, &out).await.unwrap();
    assert!(check.ok && check.acked == report.acked, "{check:?}");

    let fp = footprint(&ensemble);
    drop(ensemble);
    assert_gone(&fp);
}

#[tokio::test]
async fn zookeeper_3_8_starts_with_its_admin_server() {
    let _one = ONE_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let ensemble = Ensemble::builder()
        .version(ZkVersion::V3_8_6)
        .members(3)
        .start()
        .await
        .expect("3.8 ensemble starts");
    eprintln!("3 members of 3.8.6 serving: {:?}", t0.elapsed());
    for id in ensemble.ids() {
        let srvr = ensemble.admin(id, "srvr").await.unwrap();
        assert!(
            srvr["version"].as_str().unwrap().starts_with("3.8.6"),
            "{srvr}"
        );
    }
    let leader = ensemble.leader_id().await.unwrap();
    let m = ensemble.monitor(leader).await.unwrap();
    assert_eq!(m["synced_followers"].as_u64(), Some(2), "{m}");
    let fp = footprint(&ensemble);
    drop(ensemble);
    assert_gone(&fp);
}

#[tokio::test]
async fn a_start_timeout_reports_the_log_tail() {
    let _one = ONE_AT_A_TIME.lock().await;
    // A bad config key value makes the server exit at once.
    let err = Ensemble::builder()
        .members(1)
        .config("tickTime", "not-a-number")
        .start_timeout(Duration::from_secs(20))
        .start()
        .await
        .expect_err("a broken config starts");
    let text = err.to_string();
    assert!(
        text.contains("member 1") && text.contains("exited while starting"),
        "{text}"
    );
    assert!(
        text.contains("NumberFormatException") && text.contains("not-a-number"),
        "the log tail is missing: {text}"
    );
}

/// Start-up timings (run by hand: `cargo test -p quorate-testbed --test zookeeper -- --ignored
/// --nocapture timings`).
#[tokio::test]
#[ignore]
async fn timings() {
    let _one = ONE_AT_A_TIME.lock().await;
    for version in ZkVersion::ALL {
        tokio::task::spawn_blocking(move || zookeeper::ensure_distribution(version))
            .await
            .unwrap()
            .unwrap();
        for (label, grant, quick) in [
            ("C1+C2", false, false),
            ("C1 only", false, true),
            ("C1 only, with grant", true, true),
        ] {
            for _ in 0..2 {
                let b = Ensemble::builder()
                    .version(version)
                    .members(3)
                    .grant_operator(grant)
                    .quick_start(quick);
                let t = Instant::now();
                let e = b.start().await.unwrap();
                let started = t.elapsed();
                let leader = e.leader_id().await.unwrap();
                let follower = e.ids().into_iter().find(|&id| id != leader).unwrap();
                let t = Instant::now();
                e.start_joiner(4).await.unwrap();
                let joiner = t.elapsed();
                let t = Instant::now();
                e.restart(follower).await.unwrap();
                let restart = t.elapsed();
                let t = Instant::now();
                drop(e);
                eprintln!(
                    "{version} {label}: 3 members {started:?}, joiner {joiner:?}, restart {restart:?}, drop {:?}",
                    t.elapsed()
                );
            }
        }
    }
}
