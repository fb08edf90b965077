//! The end-to-end harness shared by the scenario binaries: one control plane (with
//! kube-controller-manager), quorate's CRDs, the node agent, the kazoo judge and the operator as
//! its own process; scenarios run one after another, each in its own namespace.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use libtest_mimic::{Arguments, Failed, Trial};
use quorate::crd::{MasterEnsemble, MasterEnsembleSpec};
use quorate_testbed::controlplane::{ControlPlane, Options};
use quorate_testbed::kazoo::Judge;
use quorate_testbed::nodeagent::{AgentOptions, NodeAgent};
use quorate_testbed::process::Child;

pub type TestResult = Result<(), Failed>;

pub fn fail(msg: impl Into<String>) -> Failed {
    Failed::from(msg.into())
}

/// The parts every scenario shares.
pub struct Bed {
    pub plane: ControlPlane,
    pub agent: Mutex<Option<NodeAgent>>,
    pub operator: Mutex<Option<Child>>,
    pub judge: Judge,
    pub runtime: tokio::runtime::Handle,
    /// Extra environment of the operator process.
    pub operator_env: Vec<(String, String)>,
}

impl Bed {
    pub async fn client(&self) -> Result<Client, Failed> {
        self.plane
            .client()
            .await
            .map_err(|e| fail(format!("client: {e}")))
    }

    pub fn start_operator(&self) -> Result<(), Failed> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.plane.dir().join("operator.log"))
            .map_err(|e| fail(e.to_string()))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorate"));
        cmd.arg("run")
            .env("KUBECONFIG", self.plane.kubeconfig_path())
            .env("RUST_LOG", "info,kube=warn")
            .envs(self.operator_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log);
        let child = Child::spawn("quorate-operator", cmd)
            .map_err(|e| fail(format!("start operator: {e}")))?;
        *self.operator.lock().map_err(|_| fail("lock"))? = Some(child);
        Ok(())
    }

    pub fn kill_operator(&self) {
        if let Ok(mut op) = self.operator.lock()
            && let Some(mut c) = op.take()
        {
            c.kill();
        }
    }

    pub fn operator_log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.plane.dir().join("operator.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// The CLI as its own process against this plane.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output, Failed> {
        Command::new(env!("CARGO_BIN_EXE_quorate"))
            .args(args)
            .env("KUBECONFIG", self.plane.kubeconfig_path())
            .output()
            .map_err(|e| fail(format!("run quorate {args:?}: {e}")))
    }
}

/// A MasterEnsemble with test-friendly timings.
pub fn ensemble(name: &str, replicas: i32) -> MasterEnsemble {
    let spec: MasterEnsembleSpec = serde_json::from_value(serde_json::json!({
        "replicas": replicas,
        "config": {"tickTime": 500, "heapMiB": 128},
        "failure": {"replaceAfter": "20s"},
    }))
    .expect("spec");
    MasterEnsemble::new(name, spec)
}

pub async fn namespace(client: &Client, ns: &str) -> TestResult {
    let api: Api<Namespace> = Api::all(client.clone());
    let obj = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &obj)
        .await
        .map_err(|e| fail(format!("namespace {ns}: {e}")))?;
    Ok(())
}

/// Waits until the ensemble reports `ready` members, `voters` voters, phase Running.
pub async fn wait_converged(
    bed: &Bed,
    api: &Api<MasterEnsemble>,
    name: &str,
    voters: i32,
    timeout: Duration,
) -> TestResult {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        if let Ok(e) = api.get_status(name).await {
            let s = e.status.unwrap_or_default();
            last = format!(
                "phase {:?} ready {} voters {:?} message {:?}",
                s.phase, s.ready_members, s.voters, s.message
            );
            if s.phase.as_deref() == Some("Running")
                && s.voters.len() as i32 == voters
                && s.ready_members == voters
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(fail(format!(
        "not converged to {voters} voters in {timeout:?}: {last}\noperator log:\n{}",
        bed.operator_log_tail()
    )))
}

pub async fn set_replicas(api: &Api<MasterEnsemble>, name: &str, replicas: i32) -> TestResult {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| fail(format!("scale to {replicas}: {e}")))?;
    Ok(())
}

/// `ip:2181,...` of the ensemble's member Pods.
pub async fn member_hosts(client: &Client, ns: &str, name: &str) -> Result<String, Failed> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(
            &ListParams::default()
                .labels(&format!("{}={name}", quorate::constants::LABEL_ENSEMBLE)),
        )
        .await
        .map_err(|e| fail(format!("list pods: {e}")))?;
    let hosts: Vec<String> = list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .map(|ip| format!("{ip}:2181"))
        .collect();
    Ok(hosts.join(","))
}

/// quorate's Events in `ns` as (reason, action, note), oldest first.
pub async fn events(client: &Client, ns: &str) -> Result<Vec<(String, String, String)>, Failed> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let mut list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| fail(format!("events: {e}")))?
        .items;
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    Ok(list
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("quorate"))
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.action.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect())
}

pub async fn wait_for<F>(what: &str, timeout: Duration, mut check: F) -> TestResult
where
    F: AsyncFnMut() -> Result<bool, Failed>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(fail(format!(
        "timed out after {timeout:?} waiting for {what}"
    )))
}

pub type Scenario =
    for<'a> fn(
        &'a Bed,
        &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = TestResult> + 'a>>;

/// Starts the bed, runs `scenarios` one after another (namespace `<prefix>-<i>` each) and stops
/// everything. `agent` configures the node agent; `operator_env` is added to the operator's.
pub fn run(
    prefix: &str,
    scenarios: Vec<(&'static str, Scenario)>,
    agent: AgentOptions,
    operator_env: Vec<(String, String)>,
) -> std::process::ExitCode {
    let args = Arguments::from_args();
    if args.list {
        let trials = scenarios
            .iter()
            .map(|(n, _)| Trial::test(*n, || Ok(())))
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bed = runtime.block_on(async {
        let plane = ControlPlane::start(Options { controller_manager: true, ..Default::default() })
            .await
            .map_err(|e| format!("control plane: {e}"))?;
        let client = plane.client().await.map_err(|e| format!("{e}"))?;
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        for crd in quorate::crd::all_crds() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            crds.patch(&name, &PatchParams::apply("quorate-tests").force(), &Patch::Apply(&crd))
                .await
                .map_err(|e| format!("install {name}: {e}"))?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let agent = NodeAgent::start(client, agent).await.map_err(|e| format!("node agent: {e}"))?;
        let judge = Judge::new().await.map_err(|e| format!("kazoo: {e}"))?;
        Ok::<_, String>(Bed {
            plane,
            agent: Mutex::new(Some(agent)),
            operator: Mutex::new(None),
            judge,
            runtime: tokio::runtime::Handle::current(),
            operator_env,
        })
    });
    let bed = match bed {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("cannot start the testbed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = bed.start_operator() {
        eprintln!("{e:?}");
        return std::process::ExitCode::FAILURE;
    }
    // Scenarios run one after another: each starts several JVMs on 2 cores.
    let args = Arguments {
        test_threads: Some(1),
        ..args
    };
    let prefix = prefix.to_string();
    let trials = scenarios
        .into_iter()
        .enumerate()
        .map(|(i, (name, scenario))| {
            let bed = bed.clone();
            let ns = format!("{prefix}-{i}");
            Trial::test(name, move || {
                bed.runtime.clone().block_on(scenario(&bed, &ns))
            })
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    bed.kill_operator();
    if let Ok(mut bed) = Arc::try_unwrap(bed) {
        if let Some(agent) = bed.agent.get_mut().ok().and_then(Option::take) {
            runtime.block_on(agent.stop());
        }
        bed.plane.stop();
    }
    conclusion.exit_code()
}
