//! Unit tier with a shell: the member Pod's prepare script (`PREPARE_SCRIPT`), run by /bin/sh
//! against temporary directories standing in for the volume and the ConfigMap.

use quorate::constants::{DATA_LOST_MARKER, DATA_MOUNT, STATUS_MOUNT};
use quorate::executor::resources::member::{PREPARE_SCRIPT, SERVE_CHECK};

/// Runs the prepare script against `volume`, with `ZK_EXPECT_DATA` as given.
fn run_prepare(volume: &std::path::Path, expect_data: bool) -> std::process::Output {
    run_prepare_with(volume, expect_data, &[])
}

/// [`run_prepare`] with more environment variables.
fn run_prepare_with(
    volume: &std::path::Path,
    expect_data: bool,
    more: &[(&str, &str)],
) -> std::process::Output {
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(conf.path().join("zoo.cfg"), "tickTime=2000\n").unwrap();
    let status = volume.join("status");
    std::fs::create_dir_all(&status).unwrap();
    let script = PREPARE_SCRIPT
        .replace(DATA_MOUNT, volume.to_str().unwrap())
        .replace(STATUS_MOUNT, status.to_str().unwrap())
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
        .envs(more.iter().copied())
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
    let said = std::fs::read_to_string(lost.path().join("status/prepare.message")).unwrap();
    assert!(said.starts_with(DATA_LOST_MARKER), "{said}");
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

/// The file `zoo.cfg` on `volume` names as its dynamic configuration.
fn dynamic_file(volume: &std::path::Path) -> String {
    std::fs::read_to_string(volume.join("conf/zoo.cfg"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("dynamicConfigFile=").map(str::to_string))
        .unwrap()
}

#[test]
fn a_recovery_makes_the_survivor_alone_once_and_never_again_after_it_grew() {
    // A survivor of a five-voter ensemble, with a reconfig that was in flight at the loss.
    let v = tempfile::tempdir().unwrap();
    let conf = v.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(v.path().join("data/version-2")).unwrap();
    std::fs::write(v.path().join("data/version-2/currentEpoch"), "3").unwrap();
    let old = conf.join("zoo.cfg.dynamic.300000002");
    std::fs::write(&old, "server.1=a\nserver.4=h\nserver.5=e\n").unwrap();
    std::fs::write(conf.join("zoo.cfg.dynamic.next"), "server.1=a\n").unwrap();
    std::fs::write(
        conf.join("zoo.cfg"),
        format!("tickTime=2000\ndynamicConfigFile={}\n", old.display()),
    )
    .unwrap();
    let recovery = [("ZK_RECOVER_ALONE", "uid-1")];

    let out = run_prepare_with(v.path(), true, &recovery);
    assert!(out.status.success(), "{out:?}");
    let alone = dynamic_file(v.path());
    assert!(alone.ends_with("zoo.cfg.dynamic.recovery-uid-1"), "{alone}");
    assert_eq!(
        std::fs::read_to_string(&alone).unwrap().trim(),
        "server.4=h:2888:3888:participant;2181",
        "the survivor's configuration is itself alone"
    );
    assert!(
        !conf.join("zoo.cfg.dynamic.next").exists(),
        "a half-done reconfig is dropped"
    );
    assert!(old.exists(), "ZooKeeper's own files are kept");
    assert!(conf.join("recovered-uid-1").exists());

    // ZooKeeper grows the ensemble again and rewrites the pointer; the Pod restarts with the
    // same recovery: the grown configuration stays.
    let grown = conf.join("zoo.cfg.dynamic.400000004");
    std::fs::write(&grown, "server.4=h\nserver.6=f\nserver.7=g\n").unwrap();
    std::fs::write(
        conf.join("zoo.cfg"),
        format!("tickTime=2000\ndynamicConfigFile={}\n", grown.display()),
    )
    .unwrap();
    let out = run_prepare_with(v.path(), true, &recovery);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(dynamic_file(v.path()), grown.display().to_string());
    // Nor does a member Pod without the recovery touch it.
    let out = run_prepare(v.path(), true);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(dynamic_file(v.path()), grown.display().to_string());
}

/// Runs the server container's check ([`SERVE_CHECK`]) against `volume`, leaving its termination
/// message in `status`.
fn run_serve_check(volume: &std::path::Path, status: &std::path::Path) -> std::process::Output {
    let script = SERVE_CHECK
        .replace(DATA_MOUNT, volume.to_str().unwrap())
        .replace(STATUS_MOUNT, status.to_str().unwrap());
    std::process::Command::new("/bin/sh")
        .args(["-c", &format!("{script}echo serving")])
        .env("ZK_SERVER_ID", "4")
        .output()
        .unwrap()
}

#[test]
fn a_member_whose_volume_was_wiped_refuses_to_serve_and_says_why_in_its_termination_message() {
    let status = tempfile::tempdir().unwrap();
    let message = status.path().join("zookeeper.message");
    // Prepared by the init container: the server starts, and leaves no stale message.
    let volume = tempfile::tempdir().unwrap();
    let out = run_prepare_with(volume.path(), false, &[]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&message, "an old message").unwrap();
    let out = run_serve_check(volume.path(), status.path());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "serving\n");
    assert!(!message.exists(), "a stale termination message was kept");
    // The disk is wiped under the Pod: the restarted server refuses, with the marker.
    for entry in std::fs::read_dir(volume.path()).unwrap() {
        std::fs::remove_dir_all(entry.unwrap().path()).unwrap();
    }
    let out = run_serve_check(volume.path(), status.path());
    assert!(!out.status.success(), "served without its data");
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());
    let said = std::fs::read_to_string(&message).unwrap();
    assert!(said.starts_with(DATA_LOST_MARKER), "{said}");
}
