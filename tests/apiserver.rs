//! Real API server tier: quorate's CRDs, their validation, the status subresource, the in-flight
//! claim as a compare-and-set, watches and RBAC, against a real kube-apiserver and etcd built by
//! the testbed. One control plane is shared by every test (a fresh namespace each) and stopped
//! at the end, also when tests fail.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, PersistentVolumeClaim, Pod, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, CustomResourceExt};
use libtest_mimic::{Arguments, Failed, Trial};
use quorate::crd::*;
use quorate_testbed::controlplane::{ControlPlane, Options};

type TestResult = Result<(), Failed>;
type TestFn = fn(Arc<Ctx>) -> Pin<Box<dyn Future<Output = TestResult> + Send>>;

struct Ctx {
    plane: ControlPlane,
}

impl Ctx {
    async fn client(&self) -> Result<Client, Failed> {
        self.plane
            .client()
            .await
            .map_err(|e| Failed::from(format!("admin client: {e}")))
    }

    /// A fresh namespace for one test.
    async fn namespace(&self, name: &str) -> Result<(Client, String), Failed> {
        let client = self.client().await?;
        let ns = format!(
            "t-{}",
            name.replace('_', "-").chars().take(50).collect::<String>()
        );
        let api: Api<Namespace> = Api::all(client.clone());
        let obj = Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &obj)
            .await
            .map_err(|e| Failed::from(format!("create namespace {ns}: {e}")))?;
        Ok((client, ns))
    }
}

fn fail(msg: impl Into<String>) -> Failed {
    Failed::from(msg.into())
}

fn ensemble(name: &str, replicas: i32) -> MasterEnsemble {
    let spec: MasterEnsembleSpec =
        serde_json::from_value(serde_json::json!({ "replicas": replicas })).expect("spec");
    MasterEnsemble::new(name, spec)
}

fn backup(name: &str, label: &str) -> ZkBackup {
    let spec: ZkBackupSpec = serde_json::from_value(serde_json::json!({
        "ensembleRef": {"name": "masters"},
        "label": label,
        "schedule": "0 */6 * * *",
        "retention": {"keepLast": 7, "maxAge": "168h"},
        "destination": {"s3": {"endpoint": "http://127.0.0.1:8333", "bucket": "zk-backups", "credentialsSecret": "s3"}},
    }))
    .expect("spec");
    ZkBackup::new(name, spec)
}

fn restore(name: &str) -> ZkRestore {
    let spec: ZkRestoreSpec = serde_json::from_value(serde_json::json!({
        "ensembleRef": {"name": "masters"},
        "source": {"backup": {"name": "nightly", "artifact": "nightly-ea6b49f5-79a8-4767-ae78-3f874c90e3da"}},
        "mode": "offline",
    }))
    .expect("spec");
    ZkRestore::new(name, spec)
}

/// Expects the API server to refuse `result` with HTTP 422 and a message containing `needle`.
fn expect_rejected<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    needle: &str,
    what: &str,
) -> TestResult {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => {
            if status.message.contains(needle) {
                Ok(())
            } else {
                Err(fail(format!(
                    "{what}: rejected, but the message lacks {needle:?}: {}",
                    status.message
                )))
            }
        }
        Err(e) => Err(fail(format!(
            "{what}: expected 422 mentioning {needle:?}, got {e}"
        ))),
        Ok(v) => Err(fail(format!("{what}: the API server accepted it: {v:?}"))),
    }
}

/// A ZooKeeper version with a known vulnerability is refused at `kubectl apply`, naming the CVE
/// and the field that accepts it, unless `spec.acceptVulnerabilities` lists every one that
/// applies. The CEL rules and quorate's own table agree on every version from 3.4.0 to 3.10.9:
/// the server refuses exactly the versions the table names, with exactly their ids.
async fn known_vulnerable_versions_are_refused_unless_accepted(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("cves").await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client, &ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let with = |version: &str, accept: &[&str]| {
        let spec: MasterEnsembleSpec = serde_json::from_value(serde_json::json!({
            "replicas": 3, "version": version, "acceptVulnerabilities": accept,
        }))
        .expect("spec");
        MasterEnsemble::new(&format!("v{}", version.replace('.', "-")), spec)
    };
    let mut refused = 0;
    for minor in 4..=10 {
        for patch in 0..=9 {
            let version = format!("3.{minor}.{patch}");
            let known = quorate::versions::affecting(&version);
            let r = api.create(&dry, &with(&version, &[])).await;
            match (known.is_empty(), r) {
                (true, Ok(_)) => {}
                (true, Err(e)) => {
                    return Err(fail(format!(
                        "{version} has no known vulnerability but was refused: {e}"
                    )));
                }
                (false, Ok(_)) => {
                    return Err(fail(format!("{version} was admitted despite {known:?}")));
                }
                (false, Err(kube::Error::Api(status))) if status.code == 422 => {
                    refused += 1;
                    for v in quorate::versions::KNOWN {
                        let named = status.message.contains(v.id);
                        if named != known.contains(&v) {
                            return Err(fail(format!(
                                "{version}: the server's refusal and the table disagree on {}: {}",
                                v.id, status.message
                            )));
                        }
                    }
                    if !status.message.contains("spec.acceptVulnerabilities") {
                        return Err(fail(format!(
                            "{version}: the refusal does not name the field: {}",
                            status.message
                        )));
                    }
                    // Accepting all but one still refuses; accepting every one admits.
                    let ids: Vec<&str> = known.iter().map(|v| v.id).collect();
                    expect_rejected(
                        api.create(&dry, &with(&version, &ids[1..])).await,
                        ids[0],
                        &format!("{version} with {ids:?} but the first accepted"),
                    )?;
                    api.create(&dry, &with(&version, &ids)).await.map_err(|e| {
                        fail(format!(
                            "{version} with {ids:?} accepted must be admitted: {e}"
                        ))
                    })?;
                }
                (false, Err(e)) => return Err(fail(format!("{version}: expected 422, got {e}"))),
            }
        }
    }
    if refused < 10 {
        return Err(fail(format!(
            "only {refused} versions refused: the grid missed the table"
        )));
    }
    Ok(())
}

/// Every manifest under samples/ is accepted by the API server as written (its namespace set to
/// the test's), so the samples cannot drift from the CRDs' schema and rules.
async fn every_sample_is_accepted_by_the_api_server(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("samples").await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let mut kinds = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| fail(format!("{}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let mut value: serde_json::Value =
            serde_norway::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        value["metadata"]["namespace"] = ns.clone().into();
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        let bad = |e: String| fail(format!("{} ({kind}): {e}", path.display()));
        let pp = PostParams::default();
        match kind.as_str() {
            "MasterEnsemble" => {
                let obj = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
                Api::<MasterEnsemble>::namespaced(client.clone(), &ns)
                    .create(&pp, &obj)
                    .await
                    .map_err(|e| bad(e.to_string()))?;
            }
            "ZkBackup" => {
                let obj = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
                Api::<ZkBackup>::namespaced(client.clone(), &ns)
                    .create(&pp, &obj)
                    .await
                    .map_err(|e| bad(e.to_string()))?;
            }
            "ZkRestore" => {
                let obj = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
                Api::<ZkRestore>::namespaced(client.clone(), &ns)
                    .create(&pp, &obj)
                    .await
                    .map_err(|e| bad(e.to_string()))?;
            }
            other => {
                return Err(bad(format!(
                    "no sample kind {other:?} is known to this test"
                )));
            }
        }
        kinds.push(kind);
    }
    for wanted in ["MasterEnsemble", "ZkBackup", "ZkRestore"] {
        if !kinds.iter().any(|k| k == wanted) {
            return Err(fail(format!("samples/ has no {wanted}: {kinds:?}")));
        }
    }
    Ok(())
}

/// `quorate ensemble report` on the real API server: the ensemble, its member Pods, the Events
/// about it and its ZkBackups are in the directory, a log the API server cannot serve (no
/// kubelet here) is named as not collected instead of failing the report, and no Secret's
/// content is anywhere in it.
async fn a_report_holds_the_ensemble_its_pods_events_and_backups_and_no_secret(
    ctx: Arc<Ctx>,
) -> TestResult {
    let (client, ns) = ctx.namespace("cli-report").await?;
    let pp = PostParams::default();
    Api::<MasterEnsemble>::namespaced(client.clone(), &ns)
        .create(&pp, &ensemble("masters", 3))
        .await
        .map_err(|e| fail(format!("create: {e}")))?;
    Api::<ZkBackup>::namespaced(client.clone(), &ns)
        .create(&pp, &backup("nightly", "nightly"))
        .await
        .map_err(|e| fail(format!("create ZkBackup: {e}")))?;
    let password = "report-must-not-hold-this-9f2c";
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "masters-credentials"},
        "stringData": {"superPassword": password},
    }))
    .map_err(|e| fail(e.to_string()))?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .create(&pp, &secret)
        .await
        .map_err(|e| fail(format!("create Secret: {e}")))?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "masters-1", "labels": {"quorate.dev/ensemble": "masters"}},
        "spec": {"containers": [{"name": "zookeeper", "image": "zookeeper:3.9.5",
            "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "masters-credentials", "key": "superPassword"}}}]}]},
    }))
    .map_err(|e| fail(e.to_string()))?;
    Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&pp, &pod)
        .await
        .map_err(|e| fail(format!("create Pod: {e}")))?;
    let event: k8s_openapi::api::core::v1::Event = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "masters.step"},
        "involvedObject": {"kind": "MasterEnsemble", "name": "masters", "namespace": ns, "apiVersion": "quorate.dev/v1alpha1"},
        "reason": "StepStarted", "message": "report-test-event", "type": "Normal",
    }))
    .map_err(|e| fail(e.to_string()))?;
    Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), &ns)
        .create(&pp, &event)
        .await
        .map_err(|e| fail(format!("create Event: {e}")))?;

    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let out = dir.path().join("report");
    let kubeconfig = ctx.plane.kubeconfig_path().display().to_string();
    let target = format!("{ns}/masters");
    let (code, printed, err) = run(&[
        "--kubeconfig",
        &kubeconfig,
        "ensemble",
        "report",
        &target,
        "--out-dir",
        out.to_str().unwrap_or_default(),
        "-o",
        "json",
    ])?;
    if code != 0 {
        return Err(fail(format!("report: exit {code}: {err}")));
    }
    let summary: serde_json::Value =
        serde_json::from_str(&printed).map_err(|e| fail(format!("{e}: {printed}")))?;
    let read = |name: &str| {
        std::fs::read_to_string(out.join(name)).map_err(|e| fail(format!("{name}: {e}")))
    };
    let yaml = |name: &str| -> Result<serde_json::Value, Failed> {
        serde_norway::from_str(&read(name)?).map_err(|e| fail(format!("{name}: {e}")))
    };
    let checks = [
        (
            "ensemble.yaml names masters",
            yaml("ensemble.yaml")?["metadata"]["name"] == "masters",
        ),
        (
            "pods.yaml holds masters-1",
            yaml("pods.yaml")?[0]["metadata"]["name"] == "masters-1",
        ),
        (
            "events.yaml holds the event",
            read("events.yaml")?.contains("report-test-event"),
        ),
        (
            "backups.yaml holds nightly",
            yaml("backups.yaml")?[0]["metadata"]["name"] == "nightly",
        ),
        (
            "status.txt is the status",
            read("status.txt")?.contains(&format!("{ns}/masters")),
        ),
        (
            "the member log is named as not collected",
            read("README.txt")?.contains(&format!("logs/{ns}_masters-1_zookeeper.log")),
        ),
        (
            "the summary lists what was written",
            summary["files"].as_array().is_some_and(|f| f.len() >= 8),
        ),
    ];
    let failed: Vec<&str> = checks
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(w, _)| *w)
        .collect();
    if !failed.is_empty() {
        return Err(fail(format!("report: {failed:?}; summary {summary}")));
    }
    for entry in walk(&out) {
        let text = std::fs::read(&entry).map_err(|e| fail(e.to_string()))?;
        if String::from_utf8_lossy(&text).contains(password) {
            return Err(fail(format!(
                "{} holds the Secret's password",
                entry.display()
            )));
        }
    }
    Ok(())
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Runs the quorate binary with no KUBECONFIG in its environment: exit code, stdout, stderr.
fn run(args: &[&str]) -> Result<(i32, String, String), Failed> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .map_err(|e| fail(format!("run quorate: {e}")))?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `quorate ensemble pause`, `resume` and `restart` on the real API server change exactly the
/// spec field they name (read back from the API server, not from the command's output), a
/// restart changes the member spec hash (so the planner rolls) and a pause does not, and
/// `-o yaml` prints the document `-o json` prints.
async fn day_two_commands_change_the_spec_as_they_say(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("cli-day2").await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client, &ns);
    api.create(&PostParams::default(), &ensemble("masters", 3))
        .await
        .map_err(|e| fail(format!("create: {e}")))?;
    let kubeconfig = ctx.plane.kubeconfig_path().display().to_string();
    let target = format!("{ns}/masters");
    let quorate = |verb: &str, output: &str| {
        let (code, out, err) = run(&[
            "--kubeconfig",
            &kubeconfig,
            "ensemble",
            verb,
            &target,
            "-o",
            output,
        ])?;
        if code != 0 {
            return Err(fail(format!("ensemble {verb}: exit {code}: {err}")));
        }
        let parsed: serde_json::Value = match output {
            "yaml" => serde_norway::from_str(&out).map_err(|e| fail(format!("{e}: {out}")))?,
            _ => serde_json::from_str(&out).map_err(|e| fail(format!("{e}: {out}")))?,
        };
        Ok::<_, Failed>(parsed)
    };
    let live = async || {
        api.get("masters")
            .await
            .map_err(|e| fail(format!("get: {e}")))
    };
    let hash = |e: &MasterEnsemble| {
        quorate::planner::Desired::try_from(&e.spec)
            .map(|d| d.spec_hash)
            .map_err(|e| fail(format!("{e:?}")))
    };
    let created = live().await?;

    let printed = quorate("pause", "yaml")?;
    let paused = live().await?;
    if !paused.spec.paused || printed["paused"] != true || hash(&paused)? != hash(&created)? {
        return Err(fail(format!(
            "pause: spec.paused {} (printed {printed}), hash {} -> {}",
            paused.spec.paused,
            hash(&created)?,
            hash(&paused)?
        )));
    }
    let resumed_printed = quorate("resume", "json")?;
    let resumed = live().await?;
    if resumed.spec.paused || resumed_printed["paused"] != false {
        return Err(fail(format!(
            "resume left spec.paused on: {resumed_printed}"
        )));
    }
    let mut hashes = vec![hash(&resumed)?];
    for _ in 0..2 {
        let printed = quorate("restart", "yaml")?;
        let restarted = live().await?;
        let at = restarted
            .spec
            .pod_template
            .as_ref()
            .and_then(|t| t.annotations.get("quorate.dev/restartedAt").cloned());
        if at.is_none() || printed["restartedAt"].as_str() != at.as_deref() {
            return Err(fail(format!(
                "restart: annotation {at:?}, printed {printed}"
            )));
        }
        hashes.push(hash(&restarted)?);
    }
    if hashes[0] == hashes[1] || hashes[1] == hashes[2] {
        return Err(fail(format!(
            "each restart must change the member spec hash: {hashes:?}"
        )));
    }
    // zkcli: a serving follower by default, the member named otherwise, through the same
    // kubeconfig; refused with the members listed when none serves.
    let zkcli = |extra: &[&str]| {
        let mut args = vec![
            "--kubeconfig",
            &kubeconfig,
            "ensemble",
            "zkcli",
            &target,
            "--print",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (code, _, err) = zkcli(&[])?;
    if code != 1 || !err.contains("no member of") || !err.contains("--member") {
        return Err(fail(format!(
            "zkcli with no member serving: exit {code}: {err}"
        )));
    }
    let status = serde_json::json!({"status": {"voters": [1, 2, 3], "members": [
        {"serverId": 1, "pod": "masters-1", "role": "leader", "state": "Serving"},
        {"serverId": 2, "pod": "masters-2", "role": "follower", "state": "Down"},
        {"serverId": 3, "pod": "masters-3", "role": "follower", "state": "Serving"},
    ]}});
    api.patch_status("masters", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| fail(format!("patch status: {e}")))?;
    for (extra, id) in [(&[][..], 3), (&["--member", "2"][..], 2)] {
        let (code, out, err) = zkcli(extra)?;
        let wanted = format!(
            "kubectl --kubeconfig {kubeconfig} exec -it -n {ns} masters-{id} -c zookeeper -- /bin/sh -c 'if [ -f /etc/quorate/jaas/jaas.conf ]; then export CLIENT_JVMFLAGS=\"-Djava.security.auth.login.config=/etc/quorate/jaas/jaas.conf -Dzookeeper.fips-mode=false\"; fi; exec \"$0\" \"$@\"' /apache-zookeeper-3.9.5-bin/bin/zkCli.sh -server masters-{id}.masters-members.{ns}.svc.cluster.local:2181"
        );
        if code != 0 || out.trim() != wanted {
            return Err(fail(format!(
                "zkcli {extra:?}: exit {code}: {out}{err}; wanted {wanted}"
            )));
        }
    }

    // replace-member: a voter is listed in spec.replaceMembers (once, however often asked);
    // an id that is no voter is refused naming the voters, with the spec untouched.
    let replace = |id: &str, output: &str| {
        run(&[
            "--kubeconfig",
            &kubeconfig,
            "ensemble",
            "replace-member",
            &target,
            id,
            "-o",
            output,
        ])
    };
    for _ in 0..2 {
        let (code, out, err) = replace("2", "json")?;
        let listed = live().await?.spec.replace_members;
        let printed: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| fail(format!("{e}: {out}")))?;
        if code != 0 || listed != vec![2] || printed["replaceMembers"] != serde_json::json!([2]) {
            return Err(fail(format!(
                "replace-member 2: exit {code}: {out}{err}; spec.replaceMembers {listed:?}"
            )));
        }
    }
    let (code, out, err) = replace("9", "text")?;
    let listed = live().await?.spec.replace_members;
    if code != 1
        || !err.contains("member 9 is not a voter")
        || !err.contains("1, 2, 3")
        || listed != vec![2]
    {
        return Err(fail(format!(
            "replace-member 9: exit {code}: {out}{err}; spec.replaceMembers {listed:?}"
        )));
    }
    let (code, out, err) = replace("3", "text")?;
    let listed = live().await?.spec.replace_members;
    if code != 0 || !out.contains("member 3 will be replaced") || listed != vec![2, 3] {
        return Err(fail(format!(
            "replace-member 3: exit {code}: {out}{err}; spec.replaceMembers {listed:?}"
        )));
    }
    // The schema refuses an id below 1 at apply, naming the field.
    let bad = serde_json::json!({"spec": {"replaceMembers": [0]}});
    match api
        .patch("masters", &PatchParams::default(), &Patch::Merge(&bad))
        .await
    {
        Err(kube::Error::Api(s)) if s.message.contains("spec.replaceMembers") => {}
        other => {
            return Err(fail(format!(
                "replaceMembers [0] must be refused naming the field: {other:?}"
            )));
        }
    }

    let json = quorate("status", "json")?;
    let yaml = quorate("status", "yaml")?;
    if json != yaml || json["name"] != "masters" {
        return Err(fail(format!(
            "status -o yaml differs from -o json:\n{yaml}\n{json}"
        )));
    }
    // -n names the namespace of a bare NAME.
    let (code, out, err) = run(&[
        "--kubeconfig",
        &kubeconfig,
        "ensemble",
        "status",
        "masters",
        "-n",
        &ns,
        "-o",
        "json",
    ])?;
    let by_n: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| fail(format!("{e}: {out}{err}")))?;
    if code != 0 || by_n != json {
        return Err(fail(format!(
            "status masters -n {ns}: exit {code}: {out}{err}"
        )));
    }
    Ok(())
}

/// `quorate ensemble list` through `--kubeconfig` and `--context` on the real API server: a
/// table whose columns fit a 63-character name, `-A` across namespaces, JSON, and a context that
/// does not exist is exit code 3.
async fn the_cli_lists_ensembles_through_a_given_kubeconfig(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("cli-list").await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client, &ns);
    let long = "a".repeat(63);
    for name in ["masters", long.as_str()] {
        api.create(&PostParams::default(), &ensemble(name, 3))
            .await
            .map_err(|e| fail(format!("create {name}: {e}")))?;
    }
    let kubeconfig = ctx.plane.kubeconfig_path().display().to_string();
    let (code, out, err) = run(&["--kubeconfig", &kubeconfig, "ensemble", "list", "-n", &ns])?;
    if code != 0 {
        return Err(fail(format!("ensemble list: exit {code}: {err}")));
    }
    let lines: Vec<&str> = out.lines().collect();
    // The MEMBERS column starts at the same offset in the header and in both rows.
    let header = lines.first().copied().unwrap_or_default();
    let members_at = header.find("MEMBERS");
    let members_of = |row: &str| members_at.and_then(|at| row.get(at..at + 2).map(str::to_string));
    let long_row = lines.iter().find(|l| l.contains(&long)).copied();
    let short_row = lines.iter().find(|l| l.contains(" masters ")).copied();
    match (long_row, short_row) {
        (Some(l), Some(s))
            if lines.len() == 3
                && members_of(l).as_deref() == Some("3 ")
                && members_of(s).as_deref() == Some("3 ") => {}
        _ => {
            return Err(fail(format!(
                "the table does not fit the names:
{out}"
            )));
        }
    }
    let (code, out, err) = run(&[
        "ensemble",
        "list",
        "-A",
        "-o",
        "json",
        "--kubeconfig",
        &kubeconfig,
    ])?;
    let listed: serde_json::Value = serde_json::from_str(&out)
        .map_err(|e| fail(format!("-o json: exit {code}: {e}: {out}{err}")))?;
    let ours = listed
        .as_array()
        .map(|a| a.iter().filter(|e| e["namespace"] == ns.as_str()).count())
        .unwrap_or(0);
    if ours != 2 {
        return Err(fail(format!(
            "-A lists {ours} of this namespace's 2 ensembles: {out}"
        )));
    }
    let (code, _, err) = run(&[
        "--kubeconfig",
        &kubeconfig,
        "--context",
        "nope",
        "ensemble",
        "list",
    ])?;
    if code != 3 || !err.contains("nope") {
        return Err(fail(format!("an unknown context: exit {code}: {err}")));
    }
    Ok(())
}

async fn crds_install_and_become_established(ctx: Arc<Ctx>) -> TestResult {
    let api: Api<CustomResourceDefinition> = Api::all(ctx.client().await?);
    for crd in all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let got = api
            .get(&name)
            .await
            .map_err(|e| fail(format!("get {name}: {e}")))?;
        let established = got
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if !established {
            return Err(fail(format!("{name} is not Established")));
        }
    }
    Ok(())
}

async fn the_server_rejects_bad_replica_counts(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("replicas").await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client, &ns);
    for (replicas, needle) in [
        (0, "spec.replicas must be between 1 and 9"),
        (2, "spec.replicas must be odd"),
        (4, "spec.replicas must be odd"),
        (10, "spec.replicas must be between 1 and 9"),
        (11, "spec.replicas must be between 1 and 9"),
        (-1, "spec.replicas must be between 1 and 9"),
    ] {
        let r = api
            .create(
                &PostParams::default(),
                &ensemble(&format!("r{}", replicas + 1), replicas),
            )
            .await;
        expect_rejected(r, needle, &format!("replicas {replicas}"))?;
    }
    for replicas in [1, 3, 5, 7, 9] {
        api.create(
            &PostParams::default(),
            &ensemble(&format!("ok{replicas}"), replicas),
        )
        .await
        .map_err(|e| fail(format!("replicas {replicas} must be accepted: {e}")))?;
    }
    Ok(())
}

async fn the_server_rejects_bad_backup_labels(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("labels").await?;
    let api: Api<ZkBackup> = Api::namespaced(client, &ns);
    let long = "a".repeat(26);
    for (i, (label, needle)) in [
        ("ab", "spec.label must be between 3 and 25 characters long"),
        (long.as_str(), "spec.label"),
        ("...abc", "spec.label cannot start with ..."),
        (
            "a b",
            "spec.label must be composed of the characters [A-Za-z0-9_.-]",
        ),
        (
            "a/b",
            "spec.label must be composed of the characters [A-Za-z0-9_.-]",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let r = api
            .create(&PostParams::default(), &backup(&format!("b{i}"), label))
            .await;
        expect_rejected(r, needle, &format!("label {label:?}"))?;
    }
    // The 26-character label names the limit too.
    let r = api
        .create(&PostParams::default(), &backup("b-long", &long))
        .await;
    expect_rejected(r, "25", "26-character label")?;
    for (i, label) in ["nightly", "a.b-c_d", "x".repeat(25).as_str(), "..ok"]
        .into_iter()
        .enumerate()
    {
        api.create(&PostParams::default(), &backup(&format!("ok-{i}"), label))
            .await
            .map_err(|e| fail(format!("label {label:?} must be accepted: {e}")))?;
    }
    Ok(())
}

async fn the_server_rejects_other_bad_specs_with_the_field_and_rule(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("other-specs").await?;
    let backups: Api<ZkBackup> = Api::namespaced(client.clone(), &ns);
    let restores: Api<ZkRestore> = Api::namespaced(client.clone(), &ns);
    let ensembles: Api<MasterEnsemble> = Api::namespaced(client, &ns);

    let mut b = backup("keep-zero", "nightly");
    b.spec.retention = Some(Retention {
        keep_last: Some(0),
        max_age: None,
    });
    expect_rejected(
        backups.create(&PostParams::default(), &b).await,
        "spec.retention.keepLast must be at least 1",
        "keepLast 0",
    )?;
    let mut b = backup("age-zero", "nightly");
    b.spec.retention = Some(Retention {
        keep_last: None,
        max_age: Some("0s".into()),
    });
    expect_rejected(
        backups.create(&PostParams::default(), &b).await,
        "spec.retention.maxAge must be a positive duration",
        "maxAge 0s",
    )?;
    let mut b = backup("both", "nightly");
    b.spec.destination.filesystem = Some(FilesystemDestination {
        path: "/backups".into(),
    });
    expect_rejected(
        backups.create(&PostParams::default(), &b).await,
        "exactly one of s3 or filesystem",
        "two destinations",
    )?;

    let bad_mode: Result<ZkRestore, kube::Error> = {
        let mut v = serde_json::to_value(restore("sideways")).expect("json");
        v["spec"]["mode"] = "sideways".into();
        let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
            restores.clone().into_client(),
            &ns,
            &kube::api::ApiResource::erase::<ZkRestore>(&()),
        );
        let obj: kube::api::DynamicObject = serde_json::from_value(v).expect("dynamic");
        raw.create(&PostParams::default(), &obj)
            .await
            .map(|_| restore("unused"))
    };
    expect_rejected(bad_mode, "spec.mode", "restore mode sideways")?;
    let mut r = restore("two-sources");
    r.spec.source.location = Some("s3://bucket/x".into());
    expect_rejected(
        restores.create(&PostParams::default(), &r).await,
        "exactly one of backup, location or survivors",
        "two sources",
    )?;
    let mut r = restore("survivors-and-backup");
    r.spec.source.survivors = Some(SurvivorsSource {});
    expect_rejected(
        restores.create(&PostParams::default(), &r).await,
        "exactly one of backup, location or survivors",
        "survivors beside a backup",
    )?;
    let mut r = restore("destination-alone");
    r.spec.source.destination = Some(Destination {
        filesystem: Some(FilesystemDestination {
            path: "/backups".into(),
        }),
        s3: None,
    });
    expect_rejected(
        restores.create(&PostParams::default(), &r).await,
        "spec.source.destination names the bucket that holds spec.source.location",
        "destination without location",
    )?;
    let survivors = |name: &str| {
        let mut r = restore(name);
        r.spec.source.backup = None;
        r.spec.source.survivors = Some(SurvivorsSource {});
        r
    };
    let mut r = survivors("survivors-online");
    r.spec.mode = RestoreMode::Online;
    expect_rejected(
        restores.create(&PostParams::default(), &r).await,
        "spec.source.survivors rebuilds the ensemble offline",
        "survivors online",
    )?;
    let mut r = survivors("survivors-verify");
    r.spec.verify_only = true;
    expect_rejected(
        restores.create(&PostParams::default(), &r).await,
        "spec.source.survivors rebuilds the ensemble offline",
        "survivors verify-only",
    )?;
    let accepted = restores
        .create(&PostParams::default(), &survivors("survivors"))
        .await
        .map_err(|e| fail(format!("a survivors recovery must be accepted: {e}")))?;
    if accepted.spec.source.survivors != Some(SurvivorsSource {}) {
        return Err(fail(format!(
            "survivors: {{}} must survive the round trip: {:?}",
            accepted.spec.source
        )));
    }

    let mut e = ensemble("fast-replace", 3);
    e.spec.failure.replace_after = "soon".into();
    expect_rejected(
        ensembles.create(&PostParams::default(), &e).await,
        "spec.failure.replaceAfter must be a positive duration",
        "replaceAfter soon",
    )?;
    let mut e = ensemble("owns-keys", 3);
    e.spec
        .config
        .extra
        .insert("server.7".into(), "127.0.0.7:2888:3888".into());
    expect_rejected(
        ensembles.create(&PostParams::default(), &e).await,
        "spec.config.extra must not set keys that quorate owns",
        "server.N in extra",
    )?;
    Ok(())
}

async fn immutable_fields_cannot_change(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("immutable").await?;
    let ensembles: Api<MasterEnsemble> = Api::namespaced(client.clone(), &ns);
    let mut e = ensemble("masters", 3);
    e.spec.storage.storage_class_name = Some("fast".into());
    e.spec.storage.size = "2Gi".into();
    let created = ensembles
        .create(&PostParams::default(), &e)
        .await
        .map_err(|e| fail(format!("create: {e}")))?;

    let mut changed = created.clone();
    changed.spec.storage.storage_class_name = Some("slow".into());
    expect_rejected(
        ensembles
            .replace("masters", &PostParams::default(), &changed)
            .await,
        "spec.storage.storageClassName is immutable",
        "storage class change",
    )?;
    let mut changed = created.clone();
    changed.spec.storage.storage_class_name = None;
    expect_rejected(
        ensembles
            .replace("masters", &PostParams::default(), &changed)
            .await,
        "spec.storage.storageClassName is immutable",
        "storage class removal",
    )?;
    let mut changed = created.clone();
    changed.spec.storage.size = "1Gi".into();
    expect_rejected(
        ensembles
            .replace("masters", &PostParams::default(), &changed)
            .await,
        "spec.storage.size cannot be lowered",
        "storage shrink",
    )?;
    // Growing the volume and scaling are allowed.
    let mut changed = created.clone();
    changed.spec.storage.size = "4Gi".into();
    changed.spec.replicas = 5;
    ensembles
        .replace("masters", &PostParams::default(), &changed)
        .await
        .map_err(|e| fail(format!("grow and scale must be accepted: {e}")))?;

    let backups: Api<ZkBackup> = Api::namespaced(client.clone(), &ns);
    let b = backups
        .create(&PostParams::default(), &backup("nightly", "nightly"))
        .await
        .map_err(|e| fail(format!("{e}")))?;
    let mut changed = b.clone();
    changed.spec.label = "weekly".into();
    expect_rejected(
        backups
            .replace("nightly", &PostParams::default(), &changed)
            .await,
        "spec.label is immutable",
        "label change",
    )?;
    let mut changed = b.clone();
    changed.spec.ensemble_ref.name = "other".into();
    expect_rejected(
        backups
            .replace("nightly", &PostParams::default(), &changed)
            .await,
        "spec.ensembleRef is immutable",
        "ensembleRef change",
    )?;

    let restores: Api<ZkRestore> = Api::namespaced(client, &ns);
    let r = restores
        .create(&PostParams::default(), &restore("once"))
        .await
        .map_err(|e| fail(format!("{e}")))?;
    let mut changed = r.clone();
    changed.spec.allow_older = true;
    expect_rejected(
        restores
            .replace("once", &PostParams::default(), &changed)
            .await,
        "spec of a ZkRestore is immutable",
        "restore change",
    )?;
    Ok(())
}

async fn status_is_a_subresource(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("status").await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client, &ns);
    api.create(&PostParams::default(), &ensemble("masters", 3))
        .await
        .map_err(|e| fail(format!("{e}")))?;
    // A status write does not change the spec.
    let mut obj = api.get("masters").await.map_err(|e| fail(format!("{e}")))?;
    obj.spec.replicas = 9;
    obj.status = Some(MasterEnsembleStatus {
        phase: Some(quorate::crd::EnsemblePhase::Running),
        ready_members: 3,
        ..Default::default()
    });
    let after = api
        .replace_status("masters", &PostParams::default(), &obj)
        .await
        .map_err(|e| fail(format!("{e}")))?;
    if after.spec.replicas != 3
        || after.status.as_ref().and_then(|s| s.phase) != Some(quorate::crd::EnsemblePhase::Running)
    {
        return Err(fail(format!(
            "status write changed spec or lost status: {after:?}"
        )));
    }
    // A spec write does not change the status.
    let mut obj = api.get("masters").await.map_err(|e| fail(format!("{e}")))?;
    obj.spec.replicas = 5;
    obj.status = Some(MasterEnsembleStatus {
        phase: Some(quorate::crd::EnsemblePhase::Blocked),
        ..Default::default()
    });
    let after = api
        .replace("masters", &PostParams::default(), &obj)
        .await
        .map_err(|e| fail(format!("{e}")))?;
    if after.spec.replicas != 5
        || after.status.as_ref().and_then(|s| s.phase) != Some(quorate::crd::EnsemblePhase::Running)
    {
        return Err(fail(format!("spec write changed status: {after:?}")));
    }
    if after.metadata.generation != Some(2) {
        return Err(fail(format!(
            "a spec change bumps the generation: {:?}",
            after.metadata.generation
        )));
    }
    Ok(())
}

async fn the_in_flight_claim_is_a_compare_and_set(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("claim").await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client, &ns);
    api.create(&PostParams::default(), &ensemble("masters", 3))
        .await
        .map_err(|e| fail(format!("{e}")))?;
    let base = api.get("masters").await.map_err(|e| fail(format!("{e}")))?;
    // Two operators read the same resourceVersion and claim different steps.
    let claim = |member: i64| {
        let mut obj = base.clone();
        obj.status = Some(MasterEnsembleStatus {
            in_flight: Some(InFlightStep {
                id: format!("create-member/{member}"),
                kind: "create-member".into(),
                member,
                started_at: Time(jiff::Timestamp::now()),
            }),
            next_server_id: Some(member + 1),
            ..Default::default()
        });
        obj
    };
    let (a, b) = (claim(4), claim(5));
    let (api_a, api_b): (Api<MasterEnsemble>, Api<MasterEnsemble>) = (
        Api::namespaced(ctx.client().await?, &ns),
        Api::namespaced(ctx.client().await?, &ns),
    );
    let pp = PostParams::default();
    let (ra, rb) = tokio::join!(
        api_a.replace_status("masters", &pp, &a),
        api_b.replace_status("masters", &pp, &b)
    );
    let conflicts = [&ra, &rb]
        .iter()
        .filter(|r| matches!(r, Err(kube::Error::Api(s)) if s.code == 409))
        .count();
    let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
    if wins != 1 || conflicts != 1 {
        return Err(fail(format!(
            "expected one claim to win and one to conflict: {ra:?} / {rb:?}"
        )));
    }
    let now = api
        .get_status("masters")
        .await
        .map_err(|e| fail(format!("{e}")))?;
    let claimed = now.status.and_then(|s| s.in_flight).map(|s| s.member);
    let winner = if ra.is_ok() { 4 } else { 5 };
    if claimed != Some(winner) {
        return Err(fail(format!(
            "stored claim {claimed:?} is not the winner's {winner}"
        )));
    }
    Ok(())
}

async fn watches_deliver_create_update_and_delete_for_every_kind(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("watch").await?;
    async fn check<K>(client: Client, ns: &str, obj: K, mutate: fn(&mut K)) -> TestResult
    where
        K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize
            + Send
            + 'static,
    {
        let api: Api<K> = Api::namespaced(client, ns);
        let name = obj.meta().name.clone().unwrap_or_default();
        let mut stream = watcher::watch_object(api.clone(), &name).boxed();
        // The first event is the initial state (absent).
        let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| fail("no initial watch event"))?;
        if !matches!(first, Some(Ok(None))) {
            return Err(fail(format!("initial event should be absent: {first:?}")));
        }
        api.create(&PostParams::default(), &obj)
            .await
            .map_err(|e| fail(format!("create: {e}")))?;
        let created = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| fail("no create event"))?;
        let Some(Ok(Some(created))) = created else {
            return Err(fail(format!("create event: {created:?}")));
        };
        let mut changed = created.clone();
        mutate(&mut changed);
        api.replace(&name, &PostParams::default(), &changed)
            .await
            .map_err(|e| fail(format!("update: {e}")))?;
        let updated = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| fail("no update event"))?;
        match &updated {
            Some(Ok(Some(u))) if u.meta().resource_version != created.meta().resource_version => {}
            other => return Err(fail(format!("update event: {other:?}"))),
        }
        api.delete(&name, &DeleteParams::default())
            .await
            .map_err(|e| fail(format!("delete: {e}")))?;
        let deleted = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| fail("no delete event"))?;
        if !matches!(deleted, Some(Ok(None))) {
            return Err(fail(format!("delete event: {deleted:?}")));
        }
        Ok(())
    }
    check(client.clone(), &ns, ensemble("masters", 3), |e| {
        e.spec.replicas = 5
    })
    .await?;
    check(client.clone(), &ns, backup("nightly", "nightly"), |b| {
        b.spec.suspend = true
    })
    .await?;
    check(client, &ns, restore("once"), |r| {
        r.metadata.labels = Some([("touched".to_string(), "yes".to_string())].into());
    })
    .await
}

async fn the_operator_role_is_enough_and_nothing_less_is(ctx: Arc<Ctx>) -> TestResult {
    let (client, ns) = ctx.namespace("rbac").await?;
    // The ClusterRole from deploy/operator-rbac.yaml, bound to one ServiceAccount.
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/operator-rbac.yaml"
    ))
    .map_err(|e| fail(format!("{e}")))?;
    let mut role: ClusterRole =
        serde_norway::from_str(&text).map_err(|e| fail(format!("parse role: {e}")))?;
    role.metadata.name = Some(format!("quorate-operator-{ns}"));
    Api::<ClusterRole>::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .map_err(|e| fail(format!("create role: {e}")))?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    for sa in ["operator", "nobody"] {
        let obj = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(sa.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        sas.create(&PostParams::default(), &obj)
            .await
            .map_err(|e| fail(format!("create sa: {e}")))?;
    }
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(format!("quorate-operator-{ns}")),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: format!("quorate-operator-{ns}"),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "operator".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .map_err(|e| fail(format!("bind: {e}")))?;
    let token = |sa: &'static str| {
        let sas = sas.clone();
        async move {
            let req = TokenRequest {
                spec: Some(TokenRequestSpec {
                    audiences: Some(vec![]),
                    expiration_seconds: Some(600),
                    ..Default::default()
                }),
                ..Default::default()
            };
            sas.create_token_request(sa, &PostParams::default(), &req)
                .await
                .map_err(|e| fail(format!("token for {sa}: {e}")))?
                .status
                .and_then(|s| s.token)
                .ok_or_else(|| fail("no token"))
        }
    };
    let operator = ctx
        .plane
        .client_for_token(&token("operator").await?)
        .await
        .map_err(|e| fail(format!("{e}")))?;
    let nobody = ctx
        .plane
        .client_for_token(&token("nobody").await?)
        .await
        .map_err(|e| fail(format!("{e}")))?;

    // RBAC grants can take a moment to reach the authorizer's cache.
    let ens: Api<MasterEnsemble> = Api::namespaced(operator.clone(), &ns);
    let mut allowed = false;
    for _ in 0..50 {
        if ens.list(&Default::default()).await.is_ok() {
            allowed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !allowed {
        return Err(fail(
            "the operator's ServiceAccount cannot list MasterEnsembles",
        ));
    }
    // The operator's reads and writes.
    Api::<MasterEnsemble>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &ensemble("masters", 3))
        .await
        .map_err(|e| fail(format!("{e}")))?;
    let status = serde_json::json!({"status": {"phase": "Creating"}});
    ens.patch_status("masters", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| fail(format!("operator status patch: {e}")))?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "masters-1"},
        "spec": {"containers": [{"name": "zookeeper", "image": "zookeeper:3.9.5"}]}
    }))
    .map_err(|e| fail(format!("{e}")))?;
    Api::<Pod>::namespaced(operator.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
        .map_err(|e| fail(format!("operator creates a Pod: {e}")))?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "data-masters-1"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .map_err(|e| fail(format!("{e}")))?;
    Api::<PersistentVolumeClaim>::namespaced(operator.clone(), &ns)
        .create(&PostParams::default(), &pvc)
        .await
        .map_err(|e| fail(format!("operator creates a PVC: {e}")))?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("masters-config".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(operator.clone(), &ns)
        .create(&PostParams::default(), &cm)
        .await
        .map_err(|e| fail(format!("operator creates a ConfigMap: {e}")))?;
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("quorate-leader".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Lease>::namespaced(operator.clone(), &ns)
        .create(&PostParams::default(), &lease)
        .await
        .map_err(|e| fail(format!("operator creates its Lease: {e}")))?;
    Api::<Pod>::namespaced(operator.clone(), &ns)
        .delete("masters-1", &DeleteParams::default())
        .await
        .map_err(|e| fail(format!("operator deletes a Pod: {e}")))?;
    // The operator cannot do what it has no business doing.
    match Api::<Namespace>::all(operator)
        .delete(&ns, &DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => {
            return Err(fail(format!(
                "deleting a namespace must be Forbidden: {other:?}"
            )));
        }
    }
    // Without the role, everything is Forbidden.
    match Api::<MasterEnsemble>::namespaced(nobody.clone(), &ns)
        .list(&Default::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => {
            return Err(fail(format!(
                "a ServiceAccount without the role must get Forbidden: {other:?}"
            )));
        }
    }
    match Api::<Pod>::namespaced(nobody, &ns)
        .create(&PostParams::default(), &pod)
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        other => Err(fail(format!(
            "a ServiceAccount without the role must not create Pods: {other:?}"
        ))),
    }
}

async fn install_crds(client: Client) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for crd in [MasterEnsemble::crd(), ZkBackup::crd(), ZkRestore::crd()] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("quorate-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| format!("install {name}: {e}"))?;
        let cond = kube::runtime::conditions::is_crd_established();
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(api.clone(), &name, cond),
        )
        .await
        .map_err(|_| format!("{name} did not become Established in 30 s"))?
        .map_err(|e| format!("wait for {name}: {e}"))?;
    }
    Ok(())
}

/// A backup pass given an object older than the stored status (a watch cache that has not yet
/// seen the Ready a finished backup wrote) must not take the finished backup for an interrupted
/// one and delete its objects; given a backup that is in fact interrupted (stored BackingUp, no
/// backup running in this process), it removes its objects and says so. The pass is quorate's
/// own `reconcile`, run against the real API server and a filesystem store.
async fn a_backup_pass_on_a_stale_object_keeps_a_finished_backups_objects(
    ctx: Arc<Ctx>,
) -> TestResult {
    let (client, ns) = ctx.namespace("stale-backup-pass").await?;
    let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
    let spec: ZkBackupSpec = serde_json::from_value(serde_json::json!({
        "ensembleRef": {"name": "masters"},
        "label": "daily",
        "destination": {"filesystem": {"path": dir.path().display().to_string()}},
    }))
    .map_err(|e| fail(e.to_string()))?;
    let store = quorate::backup::store::Store::from_destination(&spec.destination, None)
        .map_err(|e| fail(e.to_string()))?;
    let api: Api<ZkBackup> = Api::namespaced(client.clone(), &ns);
    let operator = Arc::new(
        quorate::controller::Context::new(client.clone()).map_err(|e| fail(e.to_string()))?,
    );
    for (name, stored) in [
        ("finished", ArtifactPhase::Ready),
        ("cut", ArtifactPhase::BackingUp),
    ] {
        api.create(&PostParams::default(), &ZkBackup::new(name, spec.clone()))
            .await
            .map_err(|e| fail(format!("create {name}: {e}")))?;
        let id = format!("daily-{name}");
        let artifact = |phase| BackupArtifact {
            id: id.clone(),
            phase,
            ..Default::default()
        };
        let status = serde_json::json!({"status": {"artifacts": [artifact(stored)]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| fail(format!("status of {name}: {e}")))?;
        let paths = store.artifact(&ns, name, &id);
        store
            .put_bytes(&paths.data, b"snapshot bytes".to_vec())
            .await
            .map_err(|e| fail(e.to_string()))?;
        // The pass is handed the object as a stale cache would: the artifact still BackingUp.
        let mut stale = api.get(name).await.map_err(|e| fail(e.to_string()))?;
        stale.status = Some(ZkBackupStatus {
            artifacts: vec![artifact(ArtifactPhase::BackingUp)],
            ..Default::default()
        });
        quorate::controller::backup::reconcile(Arc::new(stale), operator.clone())
            .await
            .map_err(|e| fail(format!("a pass over {name}: {e}")))?;
        let kept = store
            .exists(&paths.data)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let phase = api
            .get(name)
            .await
            .map_err(|e| fail(e.to_string()))?
            .status
            .and_then(|s| s.artifacts.into_iter().next())
            .map(|a| a.phase);
        match stored {
            ArtifactPhase::Ready if !kept || phase != Some(ArtifactPhase::Ready) => {
                return Err(fail(format!(
                    "a pass on a stale object took a finished backup for an interrupted one: objects kept {kept}, phase {phase:?}"
                )));
            }
            ArtifactPhase::BackingUp if kept || phase != Some(ArtifactPhase::Error) => {
                return Err(fail(format!(
                    "an interrupted backup was not cleaned up: objects kept {kept}, phase {phase:?}"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every Pod quorate creates (members, a recovery's survivor, volume probes, a restore's
/// member and scratch Pods) is admitted into a namespace that enforces Pod Security
/// `restricted`, by the API server's own admission (a server-side dry run); the same member Pod
/// without quorate's security contexts is refused there, so the namespace does enforce.
async fn every_pod_quorate_builds_is_admitted_under_pod_security_restricted(
    ctx: Arc<Ctx>,
) -> TestResult {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use quorate::executor::resources::member::{
        EnsembleContext, MemberStart, build_member_pod, build_recovery_pod,
    };
    use quorate::executor::resources::probe::{build_restore_probe_pod, build_zxid_probe_pod};
    use quorate::executor::resources::restore::{RestoreInit, build_scratch_pod, with_restore};
    use quorate::planner::ServerId;
    let (client, ns) = ctx.namespace("restricted_pods").await?;
    let label = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .map_err(|e| fail(format!("label {ns}: {e}")))?;
    let spec = ensemble("masters", 3).spec;
    let owner = OwnerReference {
        api_version: "quorate.dev/v1alpha1".into(),
        kind: "MasterEnsemble".into(),
        name: "masters".into(),
        uid: "00000000-0000-0000-0000-000000000001".into(),
        controller: Some(true),
        ..Default::default()
    };
    let ectx = EnsembleContext {
        name: "masters",
        namespace: &ns,
        spec: &spec,
        owner: owner.clone(),
    };
    let destination = Destination {
        s3: Some(S3Destination {
            endpoint: "http://127.0.0.1:9000".into(),
            bucket: "backups".into(),
            prefix: None,
            region: None,
            credentials_secret: "s3".into(),
        }),
        filesystem: None,
    };
    let artifact = VerifiedArtifact::default();
    let init = RestoreInit {
        image: "quorate:dev",
        destination: &destination,
        artifact: &artifact,
        restore_id: "r1",
    };
    let dynamic = "server.1=masters-1:2888:3888:participant;2181";
    let member = build_member_pod(&ectx, ServerId(1), dynamic, "h1", MemberStart::HasData);
    let pods = [
        member.clone(),
        build_member_pod(&ectx, ServerId(4), dynamic, "h1", MemberStart::Fresh),
        build_recovery_pod(&ectx, ServerId(2), dynamic, "h1", "r1"),
        build_zxid_probe_pod(&ectx, ServerId(1), "quorate:dev", None),
        build_restore_probe_pod(&ectx, ServerId(1), "quorate:dev", None, "r1", owner.clone()),
        with_restore(
            build_member_pod(&ectx, ServerId(3), dynamic, "h1", MemberStart::Fresh),
            &init,
        ),
        build_scratch_pod(member.clone(), "r1", "masters", owner.clone(), &init),
    ];
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    for pod in &pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        api.create(&dry, pod)
            .await
            .map_err(|e| fail(format!("Pod {name} refused under restricted: {e}")))?;
    }
    let mut bare = member;
    if let Some(spec) = bare.spec.as_mut() {
        spec.security_context = None;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            c.security_context = None;
        }
    }
    match api.create(&dry, &bare).await {
        Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("PodSecurity") => Ok(()),
        other => Err(fail(format!(
            "a member Pod without security contexts must be refused under restricted: {other:?}"
        ))),
    }
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let tests: Vec<(&str, TestFn)> = vec![
        ("crds_install_and_become_established", |c| {
            Box::pin(crds_install_and_become_established(c))
        }),
        ("the_server_rejects_bad_replica_counts", |c| {
            Box::pin(the_server_rejects_bad_replica_counts(c))
        }),
        (
            "known_vulnerable_versions_are_refused_unless_accepted",
            |c| Box::pin(known_vulnerable_versions_are_refused_unless_accepted(c)),
        ),
        (
            "a_report_holds_the_ensemble_its_pods_events_and_backups_and_no_secret",
            |c| Box::pin(a_report_holds_the_ensemble_its_pods_events_and_backups_and_no_secret(c)),
        ),
        ("every_sample_is_accepted_by_the_api_server", |c| {
            Box::pin(every_sample_is_accepted_by_the_api_server(c))
        }),
        ("day_two_commands_change_the_spec_as_they_say", |c| {
            Box::pin(day_two_commands_change_the_spec_as_they_say(c))
        }),
        ("the_cli_lists_ensembles_through_a_given_kubeconfig", |c| {
            Box::pin(the_cli_lists_ensembles_through_a_given_kubeconfig(c))
        }),
        ("the_server_rejects_bad_backup_labels", |c| {
            Box::pin(the_server_rejects_bad_backup_labels(c))
        }),
        (
            "the_server_rejects_other_bad_specs_with_the_field_and_rule",
            |c| {
                Box::pin(the_server_rejects_other_bad_specs_with_the_field_and_rule(
                    c,
                ))
            },
        ),
        ("immutable_fields_cannot_change", |c| {
            Box::pin(immutable_fields_cannot_change(c))
        }),
        ("status_is_a_subresource", |c| {
            Box::pin(status_is_a_subresource(c))
        }),
        ("the_in_flight_claim_is_a_compare_and_set", |c| {
            Box::pin(the_in_flight_claim_is_a_compare_and_set(c))
        }),
        (
            "watches_deliver_create_update_and_delete_for_every_kind",
            |c| Box::pin(watches_deliver_create_update_and_delete_for_every_kind(c)),
        ),
        ("the_operator_role_is_enough_and_nothing_less_is", |c| {
            Box::pin(the_operator_role_is_enough_and_nothing_less_is(c))
        }),
        (
            "every_pod_quorate_builds_is_admitted_under_pod_security_restricted",
            |c| Box::pin(every_pod_quorate_builds_is_admitted_under_pod_security_restricted(c)),
        ),
        (
            "a_backup_pass_on_a_stale_object_keeps_a_finished_backups_objects",
            |c| Box::pin(a_backup_pass_on_a_stale_object_keeps_a_finished_backups_objects(c)),
        ),
    ];
    // Listing tests needs no control plane.
    if args.list {
        let trials = tests
            .iter()
            .map(|(name, _)| Trial::test(*name, || Ok(())))
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = std::time::Instant::now();
    let plane = match runtime.block_on(ControlPlane::start(Options::default())) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot start the control plane: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!(
        "control plane ready in {:.1}s at {}",
        started.elapsed().as_secs_f64(),
        plane.server_url()
    );
    let ctx = Arc::new(Ctx { plane });
    if let Err(e) = runtime
        .block_on(async { install_crds(ctx.client().await.map_err(|e| format!("{e:?}"))?).await })
    {
        eprintln!("{e}");
        return std::process::ExitCode::FAILURE;
    }
    let handle = runtime.handle().clone();
    let trials = tests
        .into_iter()
        .map(|(name, f)| {
            let ctx = ctx.clone();
            let handle = handle.clone();
            Trial::test(name, move || handle.block_on(f(ctx)))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the control plane before exiting, whatever the outcome.
    if let Ok(mut ctx) = Arc::try_unwrap(ctx) {
        ctx.plane.stop();
    }
    drop(runtime);
    conclusion.exit_code()
}
