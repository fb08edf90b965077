//! Unit tier with a shell: the member Pod's prepare script (`PREPARE_SCRIPT`), run by /bin/sh
//! against temporary directories standing in for the volume and the ConfigMap.

use quorate::constants::DATA_MOUNT;
use quorate::executor::resources::member::PREPARE_SCRIPT;

/// Runs the prepare script against `volume`, with `ZK_EXPECT_DATA` as given.
fn run_prepare(volume: &std::path::Path, expect_data: bool) -> std::process::Output {
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(conf.path().join("zoo.cfg"), "tickTime=2000\n").unwrap();
    let script = PREPARE_SCRIPT
        .replace(DATA_MOUNT, volume.to_str().unwrap())
        .replace("/etc/quorate/config", conf.path().to_str().unwrap());
    std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .env("ZK_SERVER_ID", "4")
        .env(
            "ZK_INITIAL_DYNAMIC",
            "server.4=h:2888:3888:participant;2181",
        )
        .env("POD_IP", "127.0.0.9")
        .env("ZK_EXPECT_DATA", if expect_data { "true" } else { "false" })
        .output()
        .unwrap()
}

#[test]
fn a_former_voter_with_an_empty_volume_refuses_to_start_and_a_fresh_member_starts() {
    // A lost disk: the former voter refuses to start, with the reason.
    let lost = tempfile::tempdir().unwrap();
    let out = run_prepare(lost.path(), true);
    assert!(!out.status.success(), "an empty volume was accepted");
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no data"));
    assert!(!lost.path().join("data/myid").exists());
    // A fresh member starts empty.
    let fresh = tempfile::tempdir().unwrap();
    let out = run_prepare(fresh.path(), false);
    assert!(out.status.success(), "{out:?}");
    assert!(fresh.path().join("conf/zoo.cfg.dynamic").exists());
    // A former voter whose data is there restarts.
    std::fs::create_dir_all(fresh.path().join("data/version-2")).unwrap();
    std::fs::write(fresh.path().join("data/version-2/currentEpoch"), "1").unwrap();
    let out = run_prepare(fresh.path(), true);
    assert!(out.status.success(), "{out:?}");
}
