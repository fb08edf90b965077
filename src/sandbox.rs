//! `quorate sandbox`: quorate on real parts with nothing but this repository: a real
//! kube-apiserver, etcd and kube-controller-manager, the testbed's node agent running ZooKeeper
//! members as local processes, an S3-compatible server, the operator, a sample ensemble and a
//! daily ZkBackup of it. Everything listens on loopback and stops on Ctrl-C.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use quorate_testbed::cache::cache_dir;
use quorate_testbed::controlplane::{self, ControlPlane, Options};
use quorate_testbed::nodeagent::{AgentOptions, NodeAgent};
use quorate_testbed::objectstore::ObjectStore;
use quorate_testbed::zookeeper::{self, ZkVersion};

use crate::crd::{MasterEnsemble, ZkBackup, all_crds};

/// Where a running sandbox keeps its kubeconfig, pid and logs.
pub fn sandbox_dir() -> PathBuf {
    cache_dir().join("sandbox")
}

/// Where the sandbox's operator serves /metrics, /healthz and /readyz.
const SANDBOX_METRICS_ADDR: &str = "127.0.0.1:9464";

fn step(start: Instant, what: &str) {
    eprintln!("[sandbox {:>6.1}s] {what}", start.elapsed().as_secs_f64());
}

/// Starts the sandbox in the foreground and runs until SIGINT or SIGTERM.
pub async fn up(sample: Option<PathBuf>) -> Result<(), String> {
    let start = Instant::now();
    let dir = sandbox_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let pid_file = dir.join("pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file)
        && std::path::Path::new(&format!("/proc/{}", pid.trim())).exists()
    {
        return Err(format!(
            "a sandbox is already running (pid {}); stop it with `quorate sandbox down`",
            pid.trim()
        ));
    }
    step(
        start,
        "building or reusing the control plane and ZooKeeper (minutes on a cold machine)",
    );
    let binaries = tokio::task::spawn_blocking(|| -> Result<_, String> {
        let b = controlplane::ensure_binaries().map_err(|e| e.to_string())?;
        zookeeper::ensure_distribution(ZkVersion::V3_9_5).map_err(|e| e.to_string())?;
        Ok(b)
    })
    .await
    .map_err(|e| e.to_string())??;
    step(
        start,
        "starting etcd, kube-apiserver and kube-controller-manager",
    );
    let mut plane = ControlPlane::start(Options {
        controller_manager: true,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("control plane: {e}"))?;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::copy(plane.kubeconfig_path(), &kubeconfig)
        .map_err(|e| format!("write {}: {e}", kubeconfig.display()))?;
    std::fs::write(&pid_file, std::process::id().to_string())
        .map_err(|e| format!("write pid file: {e}"))?;
    let client = plane.client().await.map_err(|e| e.to_string())?;
    for crd in all_crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(
            client.clone(),
        )
        .patch(&name, &PatchParams::apply("quorate-sandbox").force(), &Patch::Apply(&crd))
        .await
        .map_err(|e| format!("install {name}: {e}"))?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    step(
        start,
        "starting the S3 server (built once from the Go module proxy)",
    );
    let mut s3 = ObjectStore::start()
        .await
        .map_err(|e| format!("S3 server: {e}"))?;
    s3.create_bucket(SANDBOX_BUCKET)
        .await
        .map_err(|e| format!("S3 bucket: {e}"))?;
    step(start, "starting the node agent");
    // Restores run the operator's own image in member Pods: here, this very binary.
    let bin_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from));
    let agent = NodeAgent::start(
        client.clone(),
        AgentOptions {
            state_dir: Some(dir.join("node")),
            subnet: Some(90),
            quorate_bin_dir: bin_dir,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| format!("node agent: {e}"))?;
    step(
        start,
        &format!(
            "starting the operator (log: {})",
            dir.join("operator.log").display()
        ),
    );
    let operator_client = client.clone();
    let options = crate::controller::RunOptions {
        serve: vec![SANDBOX_METRICS_ADDR.parse().map_err(|e| format!("{e}"))?],
        ..Default::default()
    };
    let operator =
        tokio::spawn(async move { crate::controller::run(operator_client, options).await });
    let sample = sample.unwrap_or_else(|| {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/masters.yaml"))
    });
    let text =
        std::fs::read_to_string(&sample).map_err(|e| format!("read {}: {e}", sample.display()))?;
    let ens: MasterEnsemble =
        serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", sample.display()))?;
    let ns = ens
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = ens.metadata.name.clone().unwrap_or_default();
    Api::<MasterEnsemble>::namespaced(client.clone(), &ns)
        .patch(
            &name,
            &PatchParams::apply("quorate-sandbox").force(),
            &Patch::Apply(&ens),
        )
        .await
        .map_err(|e| format!("apply {}: {e}", sample.display()))?;
    step(
        start,
        &format!(
            "applied {} ({ns}/{name}); the operator builds it one member at a time",
            sample.display()
        ),
    );
    apply_sample_backup(&client, &ns, &name, &s3).await?;
    step(
        start,
        &format!(
            "applied ZkBackup {ns}/{name}-nightly (S3 at {}, daily at 02:00 UTC)",
            s3.endpoint()
        ),
    );
    let kubectl = binaries.kubectl.display();
    eprintln!(
        "\nThe sandbox is up. In another shell:\n\
         \n  export KUBECONFIG={kc}\
         \n  alias kubectl={kubectl}\
         \n  kubectl get mens -w                                   # watch it step by step\
         \n  quorate ensemble status {ns}/{name}                   # members, roles, quorum, in-flight step\
         \n  kubectl patch mens {name} --type merge -p '{{\"spec\":{{\"replicas\":5}}}}'   # scale\
         \n  kubectl get events --field-selector involvedObject.name={name}\
         \n  curl -s http://{SANDBOX_METRICS_ADDR}/metrics | grep ^quorate_   # the operator's metrics\
         \n\nCtrl-C here (or `quorate sandbox down`) stops everything.\n",
        kc = kubeconfig.display()
    );
    println!("export KUBECONFIG={}", kubeconfig.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("signal handler: {e}"))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        r = operator => eprintln!("the operator stopped: {r:?}"),
    }
    step(
        start,
        "stopping the node agent, ZooKeeper members and the control plane",
    );
    agent.stop().await;
    s3.stop();
    plane.stop();
    let _ = std::fs::remove_file(&pid_file);
    step(start, "stopped");
    Ok(())
}

/// The sandbox's bucket.
const SANDBOX_BUCKET: &str = "sandbox-backups";

/// The S3 keys Secret and a daily ZkBackup of the sample ensemble, into the sandbox's bucket.
async fn apply_sample_backup(
    client: &kube::Client,
    ns: &str,
    ensemble: &str,
    s3: &ObjectStore,
) -> Result<(), String> {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "sandbox-s3-keys", "namespace": ns},
        "stringData": {
            crate::constants::SECRET_S3_ACCESS_KEY_ID: s3.access_key(),
            crate::constants::SECRET_S3_SECRET_ACCESS_KEY: s3.secret_key(),
        },
    }))
    .map_err(|e| e.to_string())?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .patch(
            "sandbox-s3-keys",
            &PatchParams::apply("quorate-sandbox").force(),
            &Patch::Apply(&secret),
        )
        .await
        .map_err(|e| format!("apply the S3 Secret: {e}"))?;
    let backup: ZkBackup = serde_json::from_value(serde_json::json!({
        "apiVersion": "quorate.dev/v1alpha1", "kind": "ZkBackup",
        "metadata": {"name": format!("{ensemble}-nightly"), "namespace": ns},
        "spec": {
            "ensembleRef": {"name": ensemble},
            "label": "nightly",
            "schedule": "0 2 * * *",
            "retention": {"keepLast": 7},
            "destination": {"s3": {
                "endpoint": s3.endpoint(), "bucket": SANDBOX_BUCKET, "region": s3.region(),
                "credentialsSecret": "sandbox-s3-keys",
            }},
        },
    }))
    .map_err(|e| e.to_string())?;
    Api::<ZkBackup>::namespaced(client.clone(), ns)
        .patch(
            &format!("{ensemble}-nightly"),
            &PatchParams::apply("quorate-sandbox").force(),
            &Patch::Apply(&backup),
        )
        .await
        .map_err(|e| format!("apply the sample ZkBackup: {e}"))?;
    Ok(())
}

/// Stops a sandbox running in another process.
pub fn down() -> Result<(), String> {
    let pid_file = sandbox_dir().join("pid");
    let pid =
        std::fs::read_to_string(&pid_file).map_err(|_| "no sandbox is running".to_string())?;
    let pid = pid.trim();
    let status = std::process::Command::new("kill")
        .args(["-TERM", pid])
        .status()
        .map_err(|e| format!("kill {pid}: {e}"))?;
    if !status.success() {
        let _ = std::fs::remove_file(&pid_file);
        return Err(format!("no sandbox process {pid} (stale pid file removed)"));
    }
    for _ in 0..120 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("sandbox {pid} stopped");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(format!("sandbox {pid} did not stop within 30 s"))
}
