//! The linearizability judge: porcupine's checker on hand-written histories (it accepts a
//! linearizable one and rejects the classic violations, so it can fail), then on histories the
//! kazoo recorder takes from a real 3-member ZooKeeper 3.9.5 ensemble on loopback, quiet and
//! with a follower killed (SIGKILL) and started again mid-run. Ensembles are started one at a
//! time (2-core machines).

use std::path::Path;
use std::time::{Duration, Instant};

use quorate_testbed::kazoo::{HistoryReport, HistorySpec, Judge};
use quorate_testbed::lincheck::{self, Options, Verdict};
use quorate_testbed::zookeeper::{Ensemble, ZkVersion};
use serde_json::{Value, json};

/// One ensemble at a time in this binary.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const KEY: &str = "/h/k0";

/// The init line of [`KEY`]: `"init"` at version 0, returned at time 1.
fn init() -> Value {
    json!({"client": -1, "op": "init", "key": KEY, "input": {},
           "output": {"value": "init", "version": 0}, "call": 0, "return": 1, "outcome": "ok"})
}

fn get(client: i64, call: i64, ret: i64, value: &str, version: i64) -> Value {
    json!({"client": client, "op": "get", "key": KEY, "input": {"read": "sync"},
           "output": {"value": value, "version": version},
           "call": call, "return": ret, "outcome": "ok"})
}

fn set(client: i64, call: i64, ret: i64, value: &str, version: i64) -> Value {
    json!({"client": client, "op": "set", "key": KEY, "input": {"value": value},
           "output": {"version": version}, "call": call, "return": ret, "outcome": "ok"})
}

fn set_unknown(client: i64, call: i64, ret: i64, value: &str) -> Value {
    json!({"client": client, "op": "set", "key": KEY, "input": {"value": value},
           "output": {"error": "ConnectionLoss"}, "call": call, "return": ret,
           "outcome": "unknown"})
}

fn cas(client: i64, call: i64, ret: i64, value: &str, expected: i64, version: i64) -> Value {
    json!({"client": client, "op": "cas", "key": KEY,
           "input": {"value": value, "version": expected},
           "output": {"version": version}, "call": call, "return": ret, "outcome": "ok"})
}

fn cas_refused(client: i64, call: i64, ret: i64, value: &str, expected: i64) -> Value {
    json!({"client": client, "op": "cas", "key": KEY,
           "input": {"value": value, "version": expected},
           "output": {"error": "BadVersionError"}, "call": call, "return": ret,
           "outcome": "failed"})
}

/// Writes `ops` as a history file in `dir` and checks it.
fn check_ops(dir: &Path, name: &str, ops: &[Value]) -> Verdict {
    let path = dir.join(format!("{name}.jsonl"));
    let text: String = ops.iter().map(|op| format!("{op}\n")).collect();
    std::fs::write(&path, text).unwrap();
    let verdict = lincheck::check(&path).unwrap();
    eprintln!("{name}: {verdict:?}");
    verdict
}

fn assert_rejected(verdict: &Verdict) {
    assert!(!verdict.linearizable, "{verdict:?}");
    let failure = verdict.failure.as_ref().expect("a failure is described");
    assert_eq!(failure.key, KEY);
    assert!(!failure.description.is_empty());
    assert_eq!(verdict.per_key[KEY].result, "Illegal");
}

#[test]
fn a_linearizable_history_with_overlapping_refused_and_unknown_operations_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let verdict = check_ops(
        dir.path(),
        "linearizable",
        &[
            init(),
            set(0, 10, 20, "c0-1", 1),
            // Overlaps the write: may read either side of it.
            get(1, 12, 15, "init", 0),
            get(1, 21, 25, "c0-1", 1),
            cas(1, 26, 30, "c1-1", 1, 2),
            cas_refused(0, 31, 35, "c0-2", 1),
            // Unknown: it took effect, later.
            set_unknown(0, 36, 40, "c0-3"),
            get(1, 41, 45, "c1-1", 2),
            get(1, 46, 50, "c0-3", 3),
            // Unknown: it never took effect (nothing ever reads it).
            set_unknown(2, 51, 52, "c2-1"),
            get(1, 60, 61, "c0-3", 3),
            cas(1, 62, 63, "c1-2", 3, 4),
        ],
    );
    assert!(verdict.linearizable, "{verdict:?}");
    assert_eq!(verdict.operations, 11);
    assert_eq!(verdict.unknown_writes, 2);
    assert!(verdict.failure.is_none());
    assert_eq!(verdict.per_key[KEY].result, "Ok");
}

#[test]
fn a_stale_read_after_an_acknowledged_write_is_rejected_and_visualized() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.jsonl");
    let ops = [init(), set(0, 10, 20, "c0-1", 1), get(1, 21, 25, "init", 0)];
    std::fs::write(
        &path,
        ops.iter().map(|op| format!("{op}\n")).collect::<String>(),
    )
    .unwrap();
    let html = dir.path().join("stale.html");
    let verdict = lincheck::check_with(
        &path,
        &Options {
            visualize: Some(html.clone()),
            ..Options::default()
        },
    )
    .unwrap();
    eprintln!("stale read: {verdict:?}");
    assert_rejected(&verdict);
    let description = &verdict.failure.as_ref().unwrap().description;
    assert!(description.contains("get()"), "{description}");
    assert_eq!(verdict.visualization.as_deref(), Some(html.as_path()));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<html") && page.contains("c0-1"),
        "{page:.200}"
    );
}

#[test]
fn two_compare_and_sets_on_the_same_version_that_both_succeed_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // Concurrent, so only the versions can tell: the second one's version 1 is gone.
    let verdict = check_ops(
        dir.path(),
        "double-cas",
        &[
            init(),
            cas(0, 10, 20, "c0-1", 0, 1),
            cas(1, 11, 21, "c1-1", 0, 1),
        ],
    );
    assert_rejected(&verdict);
}

#[test]
fn a_lost_acknowledged_write_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // c0-1 was acknowledged at version 1; a later write lands at version 1 again, and reads
    // then show a state without c0-1 ever having happened (as after a failover that lost it).
    let verdict = check_ops(
        dir.path(),
        "lost-write",
        &[
            init(),
            set(0, 10, 20, "c0-1", 1),
            set(1, 30, 40, "c1-1", 1),
            get(2, 50, 60, "c1-1", 1),
        ],
    );
    assert_rejected(&verdict);
}

#[test]
fn a_compare_and_set_refused_at_the_current_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let verdict = check_ops(
        dir.path(),
        "wrong-refusal",
        &[
            init(),
            set(0, 10, 20, "c0-1", 1),
            cas_refused(1, 30, 40, "c1-1", 1),
            get(1, 50, 60, "c0-1", 1),
        ],
    );
    assert_rejected(&verdict);
}

#[test]
fn an_unknown_write_read_before_it_was_called_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    // Unknown outcome means "maybe, and not before its call": reading it earlier is a violation.
    let verdict = check_ops(
        dir.path(),
        "read-from-the-future",
        &[
            init(),
            get(1, 10, 20, "c0-1", 1),
            set_unknown(0, 30, 40, "c0-1"),
        ],
    );
    assert_rejected(&verdict);
}

#[test]
fn a_malformed_history_is_an_error_not_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("malformed.jsonl");
    let mut bad = set(0, 10, 20, "c0-1", 1);
    bad["return"] = json!(5);
    std::fs::write(&path, format!("{}\n{bad}\n", init())).unwrap();
    let err = lincheck::check(&path).unwrap_err();
    assert!(err.to_string().contains("before it is called"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Real ZooKeeper
// ---------------------------------------------------------------------------------------------

/// Operations recorded so far in a history file (init lines not counted).
fn recorded(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.contains("\"op\": \"init\""))
        .count()
}

/// Waits until `path` holds at least `n` recorded operations, while the recorder runs.
async fn wait_recorded(path: &Path, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let have = recorded(path);
        if have >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {n} recorded operations in {} (have {have})",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `time.monotonic_ns()` of Python: CLOCK_MONOTONIC, as the history's times.
fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes into the timespec it is given.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// Acknowledged operations in the history called after `after` (CLOCK_MONOTONIC ns).
fn ok_called_after(path: &Path, after: i64) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|op| op["op"] != "init" && op["outcome"] == "ok")
        .filter(|op| op["call"].as_i64().unwrap() > after)
        .count()
}

/// A copy of a recorded history at `to` in which one acknowledged read, called after an
/// acknowledged write on its key returned, reads the key's initial state instead: a stale read.
/// Returns the key.
fn make_one_read_stale(from: &Path, to: &Path) -> String {
    let mut ops: Vec<Value> = std::fs::read_to_string(from)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let write = ops
        .iter()
        .find(|op| op["op"] == "set" && op["outcome"] == "ok")
        .expect("an acknowledged set")
        .clone();
    let key = write["key"].clone();
    let initial = ops
        .iter()
        .find(|op| op["op"] == "init" && op["key"] == key)
        .expect("the key's init")["output"]
        .clone();
    let read = ops
        .iter_mut()
        .find(|op| {
            op["op"] == "get"
                && op["outcome"] == "ok"
                && op["key"] == key
                && op["call"].as_i64() > write["return"].as_i64()
        })
        .expect("an acknowledged read after the set");
    read["output"] = initial;
    let text: String = ops.iter().map(|op| format!("{op}\n")).collect();
    std::fs::write(to, text).unwrap();
    key.as_str().unwrap().to_string()
}

async fn check_history(path: &Path) -> Verdict {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || lincheck::check(&path))
        .await
        .unwrap()
        .unwrap()
}

fn assert_judged(report: &HistoryReport, verdict: &Verdict, min_ok: usize) {
    assert!(
        verdict.linearizable,
        "not linearizable: {:?}",
        verdict.failure
    );
    assert_eq!(verdict.operations, report.operations, "{verdict:?}");
    assert_eq!(verdict.per_key.len(), report.keys, "{verdict:?}");
    assert!(
        report.by_outcome.ok >= min_ok,
        "only {} acknowledged operations: {report:?}",
        report.by_outcome.ok
    );
    for kind in ["get", "set", "cas"] {
        assert!(
            report.by_kind.get(kind).is_some_and(|k| k.ok > 0),
            "no acknowledged {kind}: {report:?}"
        );
    }
}

#[tokio::test]
async fn a_history_recorded_on_a_quiet_ensemble_is_linearizable() {
    let _one = ONE_AT_A_TIME.lock().await;
    let checker = tokio::task::spawn_blocking(lincheck::ensure_checker);
    let judge = Judge::new().await.expect("kazoo venv");
    checker.await.unwrap().expect("the checker builds");
    let ensemble = Ensemble::builder()
        .version(ZkVersion::V3_9_5)
        .members(3)
        .start()
        .await
        .expect("ensemble starts");
    let out = ensemble.base_dir().join("history.jsonl");
    let spec = HistorySpec::new("/lin", 4, 3, Duration::from_secs(20), 1500);
    let report = judge
        .history(&ensemble.connect_string(), None, &spec, &out)
        .unwrap()
        .wait()
        .await
        .unwrap();
    eprintln!("recorded: {report:?}");
    let t = Instant::now();
    let verdict = check_history(&out).await;
    eprintln!("verdict in {:?}: {verdict:?}", t.elapsed());
    assert_judged(&report, &verdict, 300);
    assert_eq!(report.by_outcome.unknown, 0, "{report:?}");

    // The same history with one read made stale is rejected: the verdict above is no formality.
    let stale = ensemble.base_dir().join("history-stale.jsonl");
    let key = make_one_read_stale(&out, &stale);
    let verdict = check_history(&stale).await;
    eprintln!("with one stale read: {:?}", verdict.failure);
    assert!(!verdict.linearizable);
    assert_eq!(verdict.failure.map(|f| f.key), Some(key));
}

#[tokio::test]
async fn a_history_recorded_while_a_follower_is_killed_and_restarted_is_linearizable() {
    let _one = ONE_AT_A_TIME.lock().await;
    let checker = tokio::task::spawn_blocking(lincheck::ensure_checker);
    let judge = Judge::new().await.expect("kazoo venv");
    checker.await.unwrap().expect("the checker builds");
    let ensemble = Ensemble::builder()
        .version(ZkVersion::V3_9_5)
        .members(3)
        .start()
        .await
        .expect("ensemble starts");
    let leader = ensemble.wait_leader(Duration::from_secs(30)).await.unwrap();
    let follower = ensemble.ids().into_iter().find(|&id| id != leader).unwrap();
    let out = ensemble.base_dir().join("history.jsonl");
    // Client i starts at member i: every member, the follower too, serves one client. A pause
    // between operations spreads the bound over the kill and the restart.
    let mut spec = HistorySpec::new("/lin", 4, 3, Duration::from_secs(40), 3000);
    spec.interval = Duration::from_millis(10);
    let recorder = judge
        .history(&ensemble.connect_string(), None, &spec, &out)
        .unwrap();

    wait_recorded(&out, 200, Duration::from_secs(30)).await;
    let killed_at = monotonic_ns();
    ensemble.kill(follower).unwrap();
    eprintln!(
        "killed follower {follower} at {} operations",
        recorded(&out)
    );
    let before_restart = recorded(&out);
    wait_recorded(&out, before_restart + 200, Duration::from_secs(30)).await;
    let t = Instant::now();
    ensemble.start_member(follower).await.unwrap();
    let restarted_at = monotonic_ns();
    eprintln!(
        "follower {follower} serving again after {:?}, at {} operations",
        t.elapsed(),
        recorded(&out)
    );
    let after_restart = recorded(&out);
    wait_recorded(&out, after_restart + 200, Duration::from_secs(30)).await;

    let report = recorder.wait().await.unwrap();
    eprintln!("recorded: {report:?}");
    let t = Instant::now();
    let verdict = check_history(&out).await;
    eprintln!("verdict in {:?}: {verdict:?}", t.elapsed());
    assert_judged(&report, &verdict, 300);
    let during = ok_called_after(&out, killed_at) - ok_called_after(&out, restarted_at);
    let after = ok_called_after(&out, restarted_at);
    eprintln!("acknowledged while the follower was down: {during}, after it was back: {after}");
    assert!(
        during >= 100 && after >= 100,
        "{during} during, {after} after"
    );
    assert_eq!(ensemble.server_state(follower).await.unwrap(), "follower");
}
