//! The `quorate` binary on sample files (unit tier: no cluster, no ZooKeeper).

use std::process::Command;

fn quorate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(args)
        .output()
        .expect("run quorate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `quorate plan` of two files under tests/plan in `format`, at a fixed time.
fn plan_output(desired: &str, observed: &str, format: &str) -> String {
    let d = format!("{}/tests/plan/{desired}", env!("CARGO_MANIFEST_DIR"));
    let o = format!("{}/tests/plan/{observed}", env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = quorate(&[
        "plan",
        "--desired",
        &d,
        "--observed",
        &o,
        "--now",
        "2026-01-01T12:00:00Z",
        "-o",
        format,
    ]);
    assert_eq!(code, 0, "quorate plan -o {format} failed: {err}");
    out
}

fn plan_json(desired: &str, observed: &str) -> serde_json::Value {
    serde_json::from_str(&plan_output(desired, observed, "json")).expect("plan prints JSON")
}

fn step_of(v: &serde_json::Value) -> (String, u64) {
    assert_eq!(v["decision"], "Act", "{v}");
    (
        v["step"]["kind"].as_str().unwrap_or_default().to_string(),
        v["step"]["member"].as_u64().unwrap_or(0),
    )
}

#[test]
fn plan_bootstraps_an_empty_ensemble_with_a_seed() {
    let v = plan_json("ensemble-3.yaml", "observed-empty.yaml");
    assert_eq!(step_of(&v), ("create-member".into(), 1));
    assert_eq!(v["step"]["seed"], true);
    assert_eq!(v["rule"], "bootstrap_starts_one_seed");
}

#[test]
fn plan_scales_up_by_starting_one_joiner() {
    let v = plan_json("ensemble-5.yaml", "observed-3-healthy.yaml");
    assert_eq!(step_of(&v), ("create-member".into(), 4));
    assert_eq!(v["rule"], "scale_up_starts_one_joiner");
}

#[test]
fn plan_scales_down_by_removing_a_follower_from_the_config() {
    let v = plan_json("ensemble-3.yaml", "observed-5-healthy.yaml");
    assert_eq!(
        step_of(&v),
        ("remove-voter".into(), 4),
        "member 5 leads and is kept"
    );
}

#[test]
fn plan_replaces_a_member_down_longer_than_replace_after() {
    let v = plan_json("ensemble-3.yaml", "observed-3-member2-down.yaml");
    assert_eq!(step_of(&v), ("fence-member".into(), 2));
    assert_eq!(v["rule"], "failed_voter_is_replaced");
}

#[test]
fn plan_rolls_a_follower_first_when_the_config_changes() {
    let v = plan_json("ensemble-3-tick3000.yaml", "observed-3-healthy.yaml");
    assert_eq!(
        step_of(&v),
        ("restart-member".into(), 2),
        "member 1 leads and goes last"
    );
    assert_eq!(v["rule"], "rolling_restart_leader_last");
}

#[test]
fn plan_reports_converged_when_nothing_differs() {
    let v = plan_json("ensemble-3.yaml", "observed-3-healthy.yaml");
    assert_eq!(v["decision"], "Converged");
}

#[test]
fn plan_prints_the_decision_and_the_rule_as_text() {
    let d = format!("{}/tests/plan/ensemble-5.yaml", env!("CARGO_MANIFEST_DIR"));
    let o = format!(
        "{}/tests/plan/observed-3-healthy.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, out, _) = quorate(&["plan", "--desired", &d, "--observed", &o]);
    assert_eq!(code, 0);
    assert!(out.contains("act: create-member/4"), "{out}");
    assert!(
        out.contains("rule:      scale_up_starts_one_joiner"),
        "{out}"
    );
}

#[test]
fn a_missing_file_is_a_clear_error_not_a_panic() {
    let (code, _, err) = quorate(&[
        "plan",
        "--desired",
        "/nonexistent/spec.yaml",
        "--observed",
        "/nonexistent/o.yaml",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/spec.yaml"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn an_even_replica_count_is_refused_naming_the_field_and_the_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = dir.path().join("even.yaml");
    std::fs::write(&spec, "replicas: 4\nfailure:\n  replaceAfter: soon\n").expect("write");
    let o = format!(
        "{}/tests/plan/observed-empty.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, _, err) = quorate(&[
        "plan",
        "--desired",
        spec.to_str().unwrap(),
        "--observed",
        &o,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("spec.replicas: must be odd (got 4)"), "{err}");
    assert!(
        err.contains("spec.failure.replaceAfter"),
        "every error is reported at once: {err}"
    );
}

#[test]
fn a_malformed_observed_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("observed.yaml");
    std::fs::write(&bad, "members: [{id: one}]\n").expect("write");
    let d = format!("{}/tests/plan/ensemble-3.yaml", env!("CARGO_MANIFEST_DIR"));
    let (code, _, err) = quorate(&["plan", "--desired", &d, "--observed", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not a valid observed ensemble"), "{err}");
}

#[test]
fn an_unknown_argument_exits_non_zero_with_a_message() {
    let (code, _, err) = quorate(&["plan", "--frobnicate"]);
    assert_ne!(code, 0);
    assert!(err.contains("--frobnicate"), "{err}");
}

#[test]
fn version_prints_the_crate_version() {
    let (code, out, _) = quorate(&["version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("quorate {}", env!("CARGO_PKG_VERSION")));
}

/// `quorate run` with a kubeconfig whose server is never contacted before the options are
/// checked (nothing listens on 127.0.0.1:1).
fn run_with_env(env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\nusers: [{name: u, user: {token: x}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n",
    )
    .expect("kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .arg("run")
        .env("KUBECONFIG", &kubeconfig)
        .envs(env.iter().copied())
        .output()
        .expect("run quorate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_watched_namespace_that_is_no_namespace_name_is_refused_at_start() {
    let (code, err) = run_with_env(&[("WATCH_NAMESPACES", "team-a,Bad_NS")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("WATCH_NAMESPACES (--watch-namespaces): \"Bad_NS\" is not a namespace name"),
        "{err}"
    );
}

#[test]
fn a_lease_grace_as_long_as_the_lease_is_refused_at_start() {
    let (code, err) = run_with_env(&[
        ("QUORATE_LEASE_DURATION_SECONDS", "10"),
        ("QUORATE_LEASE_GRACE_SECONDS", "10"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--lease-grace-seconds (10) must be at least 1 and less than --lease-duration-seconds (10)"),
        "{err}"
    );
}

/// A transaction log as ZooKeeper writes it (`FileTxnLog`): the `ZKLG` header, then per
/// transaction an Adler-32 of its bytes, their length, the bytes (a `TxnHeader` and a small
/// body) and the end-of-record byte `B`; then the preallocated zeros.
fn hand_built_log(zxids: &[i64]) -> Vec<u8> {
    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for &byte in bytes {
            a = (a + u32::from(byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }
    let mut out = b"ZKLG".to_vec();
    out.extend_from_slice(&2i32.to_be_bytes());
    out.extend_from_slice(&0i64.to_be_bytes());
    for &zxid in zxids {
        let mut txn = Vec::new();
        txn.extend_from_slice(&0x0100_0000_0000_0001i64.to_be_bytes()); // clientId
        txn.extend_from_slice(&1i32.to_be_bytes()); // cxid
        txn.extend_from_slice(&zxid.to_be_bytes());
        txn.extend_from_slice(&1_767_225_600_000i64.to_be_bytes()); // time: 2026-01-01
        txn.extend_from_slice(&2i32.to_be_bytes()); // type: delete
        txn.extend_from_slice(&4i32.to_be_bytes());
        txn.extend_from_slice(b"/app");
        out.extend_from_slice(&i64::from(adler32(&txn)).to_be_bytes());
        out.extend_from_slice(&(txn.len() as i32).to_be_bytes());
        out.extend_from_slice(&txn);
        out.push(b'B');
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn volume_zxid_prints_the_last_logged_zxid_of_a_data_dir_as_one_json_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v2 = dir.path().join("version-2");
    std::fs::create_dir(&v2).expect("version-2");
    std::fs::write(
        v2.join("log.300000001"),
        hand_built_log(&[0x3_0000_0001, 0x3_0000_0002, 0x3_0000_0007]),
    )
    .expect("log");
    std::fs::write(v2.join("currentEpoch"), "3").expect("currentEpoch");
    std::fs::write(v2.join("acceptedEpoch"), "3").expect("acceptedEpoch");
    let (code, out, err) = quorate(&["volume", "zxid", dir.path().to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["zxid"], "0x300000007", "{v}");
    assert_eq!(v["dir"], v2.display().to_string());
    assert_eq!(v["log"]["zxid"], "0x300000007");
    assert_eq!(
        v["log"]["file"],
        v2.join("log.300000001").display().to_string()
    );
    assert_eq!(v["log"]["time"], "2026-01-01T00:00:00Z");
    assert_eq!(v["logs"][0]["transactions"], 3);
    assert_eq!(v["logs"][0]["end"]["kind"], "padding");
    assert_eq!(v["snapshot"], serde_json::Value::Null);
    assert_eq!(
        (v["currentEpoch"].as_i64(), v["acceptedEpoch"].as_i64()),
        (Some(3), Some(3))
    );

    // The text form says the same in a few lines.
    let (code, out, _) = quorate(&["volume", "zxid", v2.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.starts_with("zxid:      0x300000007 (epoch 3)"), "{out}");
}

/// The short answer a volume probe Pod leaves as its termination message.
#[test]
fn volume_zxid_writes_a_short_answer_for_a_termination_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v2 = dir.path().join("data").join("version-2");
    std::fs::create_dir_all(&v2).expect("version-2");
    std::fs::write(
        v2.join("log.300000001"),
        hand_built_log(&[0x3_0000_0001, 0x3_0000_0009]),
    )
    .expect("log");
    let message = dir.path().join("message");
    let data = dir.path().join("data");
    let (code, _, err) = quorate(&[
        "volume",
        "zxid",
        data.to_str().unwrap(),
        "-o",
        "json",
        "--termination-log",
        message.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let answer = std::fs::read_to_string(&message).expect("message written");
    assert_eq!(answer, r#"{"zxid":"0x300000009"}"#);

    // An empty volume: no zxid, not an error.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("version-2")).expect("empty version-2");
    let (code, _, err) = quorate(&[
        "volume",
        "zxid",
        empty.to_str().unwrap(),
        "--termination-log",
        message.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(&message).unwrap(),
        r#"{"zxid":null}"#
    );

    // A wiped volume (nothing on it): no data, with --volume-root; without it an error.
    let wiped = tempfile::tempdir().expect("tempdir");
    let wiped_data = wiped.path().join("data");
    let (code, _, err) = quorate(&[
        "volume",
        "zxid",
        wiped_data.to_str().unwrap(),
        "--termination-log",
        message.to_str().unwrap(),
        "--volume-root",
        wiped.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(&message).unwrap(),
        r#"{"zxid":null}"#
    );
    let (code, _, _) = quorate(&["volume", "zxid", wiped_data.to_str().unwrap()]);
    assert_eq!(
        code, 1,
        "without --volume-root a missing dataDir is an error"
    );

    // A volume that cannot be read: the error, and a failing exit.
    let (code, _, _) = quorate(&[
        "volume",
        "zxid",
        "/nonexistent/zk-data",
        "--termination-log",
        message.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&message).unwrap()).expect("JSON");
    assert_eq!(v["error"], "/nonexistent/zk-data: no such directory");
}

#[test]
fn volume_zxid_of_a_missing_directory_fails_naming_the_path() {
    let (code, out, err) = quorate(&["volume", "zxid", "/nonexistent/zk-data", "-o", "json"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "");
    assert_eq!(
        err.trim(),
        "quorate: /nonexistent/zk-data: no such directory"
    );
}

/// `quorate backup ...` with a kubeconfig that points nowhere: anything it prints was decided
/// before contacting a cluster.
fn backup_offline(args: &[&str]) -> (i32, String, String) {
    offline(&[&["backup"][..], args].concat())
}

/// `quorate ...` with a kubeconfig that points nowhere.
fn offline(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(args)
        .env("KUBECONFIG", "/nonexistent/quorate-test-kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run quorate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_restore_asks_for_yes_or_dry_run_before_contacting_a_cluster() {
    let (code, _, err) = backup_offline(&["restore", "nightly-1", "--wait"]);
    assert_ne!(code, 0);
    assert!(err.contains("--yes") && err.contains("--dry-run"), "{err}");
    assert!(!err.contains("cannot reach the cluster"), "{err}");
    // With --yes (or --dry-run, or --verify-only) it goes on, to the missing cluster.
    for ok in [["--yes"], ["--dry-run"], ["--verify-only"]] {
        let (code, _, err) = backup_offline(&[&["restore", "nightly-1"][..], &ok[..]].concat());
        assert_ne!(code, 0);
        assert!(err.contains("cannot reach the cluster"), "{ok:?}: {err}");
    }
    let (code, _, err) = backup_offline(&["restore", "nightly-1", "--yes", "--dry-run"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn a_bucket_is_checked_before_contacting_a_cluster() {
    for (args, says) in [
        (
            vec!["list", "--from", "s3://backups/prod"],
            "needs --endpoint",
        ),
        (
            vec![
                "list",
                "--from",
                "s3://backups",
                "--endpoint",
                "http://127.0.0.1:9",
            ],
            "needs --secret",
        ),
        (
            vec![
                "list",
                "--from",
                "s3://ab",
                "--endpoint",
                "e",
                "--secret",
                "s",
            ],
            "3 to 63 characters",
        ),
        (
            vec!["list", "--from", "file://relative"],
            "must be absolute",
        ),
        (vec!["list", "--from", "gs://backups"], "expected s3://"),
        (vec!["list", "--endpoint", "http://x"], "--from"),
        (
            vec!["restore", "nightly-1", "--yes", "--from", "s3://backups/p"],
            "needs --endpoint",
        ),
    ] {
        let (code, _, err) = backup_offline(&args);
        assert_ne!(code, 0, "{args:?}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("cannot reach the cluster"), "{args:?}: {err}");
    }
    let (code, _, err) = backup_offline(&[
        "list",
        "--from",
        "s3://backups/prod",
        "--endpoint",
        "http://127.0.0.1:9",
        "--secret",
        "s3-keys",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach the cluster"), "{err}");
}

#[test]
fn a_recovery_asks_for_yes_and_a_valid_target_before_contacting_a_cluster() {
    let (code, _, err) = offline(&["ensemble", "recover", "prod/masters", "--wait"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--yes") && err.contains("highest zxid"),
        "{err}"
    );
    assert!(!err.contains("cannot reach the cluster"), "{err}");
    let (code, _, err) = offline(&["ensemble", "recover", "a/b/c", "--yes"]);
    assert_ne!(code, 0);
    assert!(err.contains("is not NAMESPACE/NAME"), "{err}");
    let (code, _, err) = offline(&["ensemble", "recover", "prod/masters", "--yes"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach the cluster"), "{err}");
    let (code, _, err) = offline(&["ensemble", "recover", "masters", "--yes", "--timeout=5m"]);
    assert_ne!(code, 0);
    assert!(err.contains("--wait"), "--timeout needs --wait: {err}");
}

#[test]
fn every_wait_takes_a_timeout_that_is_a_positive_duration() {
    for bad in ["0s", "-5m", "soon", "10"] {
        let arg = format!("--timeout={bad}");
        let (code, _, err) =
            backup_offline(&["restore", "nightly-1", "--verify-only", "--wait", &arg]);
        assert_ne!(code, 0, "{bad}");
        assert!(
            err.contains("--timeout") && err.contains(bad),
            "{bad}: {err}"
        );
    }
    // Without --wait there is nothing to time out.
    let (code, _, err) = backup_offline(&["create", "--label", "nightly", "--timeout", "5m"]);
    assert_ne!(code, 0);
    assert!(err.contains("--wait"), "{err}");
    for good in ["90s", "15m", "1h30m"] {
        assert!(quorate::cli::parse_timeout(good).is_ok(), "{good}");
    }
    assert_eq!(
        quorate::cli::parse_timeout("1h30m"),
        Ok(std::time::Duration::from_secs(5400))
    );
}

#[test]
fn an_unbounded_or_zero_concurrency_is_refused_at_start() {
    let (code, err) = run_with_env(&[("QUORATE_MAX_CONCURRENT_RECONCILES", "0")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--max-concurrent-reconciles"), "{err}");
    assert!(err.contains("1..=1024") || err.contains("1..1025"), "{err}");
}

/// Exit codes tell the failures apart, and arguments are checked before any cluster is
/// contacted: a bad label is 2 even with a kubeconfig that does not exist (which alone is 3).
#[test]
fn exit_codes_tell_bad_arguments_from_an_unreachable_cluster() {
    let missing = "/nonexistent/quorate-test.kubeconfig";
    let (code, _, err) = quorate(&["--kubeconfig", missing, "ensemble", "list"]);
    assert_eq!(code, 3, "an unreadable kubeconfig is 3: {err}");
    assert!(err.contains(missing), "names the kubeconfig: {err}");
    let (code, _, err) = quorate(&["--kubeconfig", missing, "backup", "create", "--label", "ab"]);
    assert_eq!(code, 2, "a bad label is 2, before the cluster: {err}");
    assert!(
        err.contains("--label") && err.contains("between 3 and 25"),
        "names the argument and the rule: {err}"
    );
    let (code, _, err) = quorate(&["ensemble", "recover", "ns/masters", "--kubeconfig", missing]);
    assert_eq!(code, 2, "recover without --yes is 2: {err}");
    let (code, _, err) = quorate(&["ensemble", "list", "-n", "a", "-A"]);
    assert_eq!(code, 2, "clap's own usage errors are 2: {err}");
}

/// Day-2 commands check their target before any cluster is contacted (exit 2, the rule named),
/// and a well-formed one then fails on the missing cluster (exit 3).
#[test]
fn day_two_commands_check_their_target_before_the_cluster() {
    let missing = "/nonexistent/quorate-test.kubeconfig";
    for verb in ["pause", "resume", "restart"] {
        for bad in ["a/b/c", "Masters", "ns/", "-x"] {
            let (code, _, err) = quorate(&["--kubeconfig", missing, "ensemble", verb, "--", bad]);
            assert_eq!(code, 2, "{verb} {bad:?} is a usage error: {err}");
            assert!(
                err.contains(&format!("quorate ensemble {verb}")) && err.contains("NAMESPACE/NAME"),
                "names the command and the rule: {err}"
            );
        }
        let (code, _, err) = quorate(&["--kubeconfig", missing, "ensemble", verb, "ns/masters"]);
        assert_eq!(
            code, 3,
            "{verb} of a good target reaches for the cluster: {err}"
        );
    }
}

/// Every command that acts on one ensemble takes `-n NAMESPACE` for a bare NAME, checked
/// before any cluster is contacted: a bad namespace, or a NAMESPACE/NAME that names another
/// namespace than `-n`, is a usage error (exit 2) naming the rule.
#[test]
fn every_ensemble_command_takes_a_namespace_checked_before_the_cluster() {
    let missing = "/nonexistent/quorate-test.kubeconfig";
    let commands: [&[&str]; 8] = [
        &["status"],
        &["pause"],
        &["resume"],
        &["restart"],
        &["report"],
        &["zkcli", "--print"],
        &["replace-member"],
        &["recover", "--yes"],
    ];
    for command in commands {
        let verb = command[0];
        let run = |target: &[&str]| {
            let mut args = vec!["--kubeconfig", missing, "ensemble"];
            args.extend_from_slice(command);
            args.extend_from_slice(target);
            if verb == "replace-member" {
                args.push("2");
            }
            quorate(&args)
        };
        let (code, _, err) = run(&["-n", "Team_A", "masters"]);
        assert_eq!(code, 2, "{verb}: a bad -n is a usage error: {err}");
        assert!(
            err.contains("-n \"Team_A\" is not a namespace name"),
            "{verb}: {err}"
        );
        let (code, _, err) = run(&["-n", "team-a", "team-b/masters"]);
        assert_eq!(code, 2, "{verb}: two namespaces: {err}");
        assert!(err.contains("give the namespace once"), "{verb}: {err}");
        for good in [
            &["-n", "team-a", "masters"][..],
            &["--namespace", "team-a", "team-a/masters"],
        ] {
            let (code, _, err) = run(good);
            assert_eq!(code, 3, "{verb} {good:?} reaches for the cluster: {err}");
        }
    }
}

/// `replace-member` checks its target and the server id before any cluster is contacted.
#[test]
fn replace_member_checks_its_target_and_id_before_the_cluster() {
    let missing = "/nonexistent/quorate-test.kubeconfig";
    let run = |args: &[&str]| {
        quorate(
            &[
                &["--kubeconfig", missing, "ensemble", "replace-member"][..],
                args,
            ]
            .concat(),
        )
    };
    let (code, _, err) = run(&["--", "a/b/c", "2"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("quorate ensemble replace-member") && err.contains("NAMESPACE/NAME"),
        "{err}"
    );
    for bad in ["0", "-1", "two"] {
        let (code, _, err) = run(&["ns/masters", "--", bad]);
        assert_eq!(code, 2, "server id {bad:?} is a usage error: {err}");
        assert!(err.contains("<ID>"), "names the argument: {err}");
    }
    let (code, _, err) = run(&["ns/masters"]);
    assert_eq!(code, 2, "the id is required: {err}");
    let (code, _, err) = run(&["ns/masters", "2"]);
    assert_eq!(code, 3, "a good request reaches for the cluster: {err}");
}

/// `quorate completion bash|zsh` prints a script that knows the subcommands and their options.
#[test]
fn completion_scripts_know_the_subcommands() {
    for shell in ["bash", "zsh"] {
        let (code, out, err) = quorate(&["completion", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["ensemble", "backup", "restart", "recover", "--kubeconfig"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    let (code, _, err) = quorate(&["completion", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");
}

/// `-o yaml` is the same document as `-o json`, for the commands that need no cluster.
#[test]
fn yaml_output_is_the_json_document() {
    let (d, o) = ("ensemble-3.yaml", "observed-3-member2-down.yaml");
    let json = plan_json(d, o);
    let yaml: serde_json::Value = serde_norway::from_str(&plan_output(d, o, "yaml")).expect("yaml");
    assert_eq!(json, yaml);
    assert!(json.get("specHash").is_some(), "{json}");
}
