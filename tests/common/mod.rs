//! The end-to-end harness shared by the scenario binaries: one control plane (with
//! kube-controller-manager), charts/quorate installed by a real helm (CRDs, ServiceAccount, RBAC;
//! no operator Pods), the node agent, the kazoo judge, and the operator as its own process with
//! a token of the chart's ServiceAccount and leader election on a Lease (so every scenario also
//! proves the chart's RBAC is enough). Scenarios run one after another, each in its own
//! namespace.
#![allow(dead_code)]

pub mod judges;
pub mod sampler;

use std::collections::BTreeSet;
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

/// The namespace the chart is installed in (its ServiceAccount and the leader Lease live there).
pub const RELEASE_NS: &str = "quorate-system";
/// The chart's release name, which is also its ServiceAccount's and its roles' name.
pub const RELEASE: &str = "quorate";
/// The leader Lease.
pub const LEASE: &str = "quorate-leader";

/// One operator process.
pub struct Operator {
    /// Its identity in the leader Lease (`POD_NAME`).
    pub identity: String,
    /// Where it serves /metrics, /healthz and /readyz.
    pub addr: std::net::SocketAddr,
    child: Child,
}

/// The parts every scenario shares.
pub struct Bed {
    pub plane: ControlPlane,
    pub agent: Mutex<Option<NodeAgent>>,
    pub operators: Mutex<Vec<Operator>>,
    started: std::sync::atomic::AtomicUsize,
    pub judge: Judge,
    pub runtime: tokio::runtime::Handle,
    /// Extra environment of the operator processes.
    pub operator_env: Vec<(String, String)>,
    /// A kubeconfig with a token of the chart's ServiceAccount: the operators run with it.
    pub operator_kubeconfig: std::path::PathBuf,
    /// helm, built by the testbed.
    pub helm: std::path::PathBuf,
}

/// A free port on loopback.
pub fn free_addr() -> Result<std::net::SocketAddr, Failed> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| fail(format!("bind: {e}")))?;
    l.local_addr().map_err(|e| fail(format!("local addr: {e}")))
}

impl Bed {
    /// The kazoo judge as a client of the ensemble whose members serve `hosts`
    /// (`ip:port,...`): logged in with SASL as the clients' user when that ensemble's
    /// credentials Secret holds its password (client authentication on), as an application
    /// given the Secret would be. The ensemble is found from the first address that a Pod of
    /// the API server holds; with none, the judge goes without a login.
    pub async fn judge_at(&self, hosts: &str) -> Result<Judge, Failed> {
        use k8s_openapi::api::core::v1::Secret;
        use kube::ResourceExt;
        let client = self.client().await?;
        let pods = Api::<Pod>::all(client.clone())
            .list(&Default::default())
            .await
            .map_err(|e| fail(format!("list Pods: {e}")))?;
        let ips: Vec<&str> = hosts
            .split(',')
            .filter_map(|h| h.rsplit_once(':').map(|(ip, _)| ip))
            .collect();
        let owner = ips.iter().find_map(|ip| {
            pods.items.iter().find_map(|p| {
                let at = p.status.as_ref()?.pod_ip.as_deref() == Some(*ip);
                let ensemble = p.labels().get("quorate.dev/ensemble")?;
                at.then(|| (p.namespace().unwrap_or_default(), ensemble.clone()))
            })
        });
        let Some((ns, ensemble)) = owner else {
            return Ok(self.judge.clone());
        };
        let secret = Api::<Secret>::namespaced(client, &ns)
            .get_opt(&format!("{ensemble}-credentials"))
            .await
            .map_err(|e| fail(format!("credentials of {ns}/{ensemble}: {e}")))?;
        let password = secret
            .and_then(|s| s.data?.get("clientPassword").cloned())
            .and_then(|b| String::from_utf8(b.0).ok());
        Ok(match password {
            Some(password) => self.judge.clone().with_sasl("client", password),
            None => self.judge.clone(),
        })
    }

    pub async fn client(&self) -> Result<Client, Failed> {
        self.plane
            .client()
            .await
            .map_err(|e| fail(format!("client: {e}")))
    }

    fn log_path(&self, identity: &str) -> std::path::PathBuf {
        self.plane.dir().join(format!("operator-{identity}.log"))
    }

    /// Starts one more operator process (as the chart's ServiceAccount, with leader election);
    /// returns its identity.
    pub fn start_operator(&self) -> Result<String, Failed> {
        self.start_operator_with_env(&[])
    }

    /// [`Bed::start_operator`] with `extra` added to its environment (after the bed's own, so
    /// it wins), such as the failpoints a `failpoints` build stops at.
    pub fn start_operator_with_env(&self, extra: &[(&str, &str)]) -> Result<String, Failed> {
        let n = self
            .started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let identity = format!("quorate-{n}");
        let addr = free_addr()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(&identity))
            .map_err(|e| fail(e.to_string()))?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorate"));
        cmd.args(["run", "--log-json"])
            .env("KUBECONFIG", &self.operator_kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .env("POD_NAME", &identity)
            .env("POD_NAMESPACE", RELEASE_NS)
            .env("QUORATE_LEASE_DURATION_SECONDS", "6")
            .env("QUORATE_LEASE_GRACE_SECONDS", "2")
            .env("QUORATE_METRICS_ADDR", addr.to_string())
            .envs(self.operator_env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(log);
        let child = Child::spawn(format!("quorate-operator-{n}"), cmd)
            .map_err(|e| fail(format!("start operator: {e}")))?;
        self.operators
            .lock()
            .map_err(|_| fail("lock"))?
            .push(Operator {
                identity: identity.clone(),
                addr,
                child,
            });
        Ok(identity)
    }

    /// Kills every operator process (SIGKILL: no Lease is released, no pass finishes).
    pub fn kill_operator(&self) {
        if let Ok(mut ops) = self.operators.lock() {
            for mut op in ops.drain(..) {
                op.child.kill();
            }
        }
    }

    /// Sends `signal` to operator `identity` (SIGSTOP pauses it past its Lease, SIGCONT resumes
    /// it); false if there is no such operator.
    pub fn signal_operator(&self, identity: &str, signal: i32) -> bool {
        self.operators.lock().ok().is_some_and(|ops| {
            ops.iter()
                .find(|o| o.identity == identity)
                .is_some_and(|o| o.child.signal(signal).is_ok())
        })
    }

    /// Forgets operator processes that have exited (an operator exits when it loses its
    /// Lease, and its Deployment starts it again); returns their identities.
    pub fn reap_operators(&self) -> Vec<String> {
        let Ok(mut ops) = self.operators.lock() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        ops.retain_mut(|o| {
            let running = o.child.is_running();
            if !running {
                gone.push(o.identity.clone());
            }
            running
        });
        gone
    }

    /// The identities of the running operator processes.
    pub fn operator_identities(&self) -> Vec<String> {
        self.operators
            .lock()
            .map(|ops| ops.iter().map(|o| o.identity.clone()).collect())
            .unwrap_or_default()
    }

    /// Kills the operator process `identity`.
    pub fn kill_operator_named(&self, identity: &str) {
        if let Ok(mut ops) = self.operators.lock()
            && let Some(i) = ops.iter().position(|o| o.identity == identity)
        {
            let mut op = ops.remove(i);
            op.child.kill();
        }
    }

    /// Stops the operator process `identity` as Kubernetes stops a Pod (SIGTERM, SIGKILL after
    /// `grace`); whether it exited by itself with status 0.
    pub fn stop_operator_named(&self, identity: &str, grace: Duration) -> bool {
        let Some(mut op) = self.operators.lock().ok().and_then(|mut ops| {
            let i = ops.iter().position(|o| o.identity == identity)?;
            Some(ops.remove(i))
        }) else {
            return false;
        };
        op.child.stop(grace).is_some_and(|status| status.success())
    }

    /// A GET of `path` on operator `identity`'s endpoint: (status, body).
    pub async fn operator_get(&self, identity: &str, path: &str) -> Result<(u16, String), Failed> {
        let addr = self
            .operator_addr(identity)
            .ok_or_else(|| fail(format!("no operator {identity}")))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let resp = http
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .map_err(|e| fail(format!("GET {path} of {identity}: {e}")))?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| fail(e.to_string()))?;
        Ok((status, body))
    }

    /// The value of the series `series` (name and labels, exactly as exposed) in operator
    /// `identity`'s /metrics.
    pub async fn metric(&self, identity: &str, series: &str) -> Result<Option<f64>, Failed> {
        let (_, text) = self.operator_get(identity, "/metrics").await?;
        Ok(metric_value(&text, series))
    }

    /// Where operator `identity` serves its endpoints.
    pub fn operator_addr(&self, identity: &str) -> Option<std::net::SocketAddr> {
        self.operators
            .lock()
            .ok()?
            .iter()
            .find(|o| o.identity == identity)
            .map(|o| o.addr)
    }

    /// The process id of operator `identity`, while it is one of the bed's.
    pub fn operator_pid(&self, identity: &str) -> Option<u32> {
        self.operators
            .lock()
            .ok()?
            .iter()
            .find(|o| o.identity == identity)
            .map(|o| o.child.pid())
    }

    /// The holder of the leader Lease, if any.
    pub async fn lease_holder(&self) -> Result<Option<String>, Failed> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client().await?, RELEASE_NS);
        Ok(leases
            .get_opt(LEASE)
            .await
            .map_err(|e| fail(format!("read the Lease: {e}")))?
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| !h.is_empty()))
    }

    /// The last lines of every operator's log.
    pub fn operator_log_tail(&self) -> String {
        self.operator_logs_keeping(Some(30))
    }

    /// Every line of every operator's log, each log headed by its identity.
    pub fn operator_logs(&self) -> String {
        self.operator_logs_keeping(None)
    }

    /// Every operator's log, each headed by its identity: its last `last` lines, or all.
    fn operator_logs_keeping(&self, last: Option<usize>) -> String {
        let n = self.started.load(std::sync::atomic::Ordering::SeqCst);
        let mut out = String::new();
        for i in 1..=n {
            let identity = format!("quorate-{i}");
            let text = self.operator_log(&identity);
            let lines: Vec<&str> = text.lines().collect();
            let from = last.map_or(0, |k| lines.len().saturating_sub(k));
            out.push_str(&format!("--- {identity}\n"));
            out.push_str(&lines[from..].join("\n"));
            out.push('\n');
        }
        out
    }

    /// Every log line of operator `identity`.
    pub fn operator_log(&self, identity: &str) -> String {
        std::fs::read_to_string(self.log_path(identity)).unwrap_or_default()
    }

    /// Deletes a finished scenario's namespace, so that its members stop and leave the cores to
    /// the next scenarios (the namespace controller deletes its objects; the node agent stops
    /// the members' processes as their Pods go).
    pub async fn clean_up(&self, ns: &str) {
        if let Ok(client) = self.client().await {
            let api: Api<Namespace> = Api::all(client);
            if let Err(e) = api.delete(ns, &Default::default()).await {
                eprintln!("cannot delete namespace {ns}: {e}");
            }
        }
    }

    /// The CLI as its own process against this plane.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output, Failed> {
        self.cli_env(args, &[])
    }

    /// [`Bed::cli`] with more environment variables.
    pub fn cli_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<std::process::Output, Failed> {
        Command::new(env!("CARGO_BIN_EXE_quorate"))
            .args(args)
            .env("KUBECONFIG", self.plane.kubeconfig_path())
            .envs(env.iter().copied())
            .output()
            .map_err(|e| fail(format!("run quorate {args:?}: {e}")))
    }

    /// Runs the CLI under `strace` and returns its output with every TCP address it connected
    /// to, as the kernel saw the `connect` calls (not as the CLI tells it): the judge of "the
    /// CLI reaches only the API server".
    pub fn cli_connects(
        &self,
        args: &[&str],
    ) -> Result<
        (
            std::process::Output,
            std::collections::BTreeSet<std::net::SocketAddr>,
        ),
        Failed,
    > {
        let trace = tempfile::NamedTempFile::new().map_err(|e| fail(e.to_string()))?;
        let out = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-e",
                "trace=connect",
                "-e",
                "signal=none",
                "-o",
            ])
            .arg(trace.path())
            .arg(env!("CARGO_BIN_EXE_quorate"))
            .args(args)
            .env("KUBECONFIG", self.plane.kubeconfig_path())
            .output()
            .map_err(|e| fail(format!("strace quorate {args:?} (strace is needed): {e}")))?;
        let text = std::fs::read_to_string(trace.path()).map_err(|e| fail(e.to_string()))?;
        let connects = tcp_connects(&text);
        if connects.is_empty() {
            return Err(fail(format!(
                "strace saw no TCP connect at all (not even to the API server):\n{text}"
            )));
        }
        Ok((out, connects))
    }

    /// helm with the plane's admin kubeconfig and private helm directories.
    pub fn helm(&self, args: &[&str]) -> Result<String, Failed> {
        helm_command(&self.helm, &self.plane, args)
    }
}

fn helm_command(
    helm: &std::path::Path,
    plane: &ControlPlane,
    args: &[&str],
) -> Result<String, Failed> {
    let home = plane.dir().join("helm-home");
    let out = quorate_testbed::helm::command(helm, args, plane.kubeconfig_path(), &home)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(format!("helm {args:?}: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "helm {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs charts/quorate (cluster-wide mode, no operator Pods: the operators run as processes
/// here) and writes a kubeconfig with a token of its ServiceAccount.
async fn install_chart(
    plane: &ControlPlane,
    helm: &std::path::Path,
) -> Result<std::path::PathBuf, Failed> {
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/quorate");
    helm_command(
        helm,
        plane,
        &[
            "install",
            RELEASE,
            chart,
            "--namespace",
            RELEASE_NS,
            "--create-namespace",
            "--set",
            "replicaCount=0",
            "--set",
            "image.repository=quorate,image.tag=e2e",
            "--timeout",
            "120s",
        ],
    )?;
    let token = plane
        .service_account_token(RELEASE_NS, RELEASE, 4 * 3600)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let path = plane.dir().join("operator.kubeconfig");
    std::fs::write(&path, plane.kubeconfig_for_token(&token))
        .map_err(|e| fail(format!("write {}: {e}", path.display())))?;
    Ok(path)
}

/// The value of `series` in an OpenMetrics text.
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// quorate's Events in `ns` as (action, times published), oldest first: an Event published again
/// by the same process is one Event with a series; by another process, another Event.
pub async fn event_counts(client: &Client, ns: &str) -> Result<Vec<(String, i32)>, Failed> {
    Ok(quorate_events(client, ns)
        .await?
        .into_iter()
        .map(|e| {
            let n = e.series.as_ref().map_or(1, |s| s.count.max(1));
            (e.action.unwrap_or_default(), n)
        })
        .collect())
}

/// The Events quorate published in `ns`, oldest first.
async fn quorate_events(
    client: &Client,
    ns: &str,
) -> Result<Vec<k8s_openapi::api::events::v1::Event>, Failed> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let mut list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| fail(format!("events: {e}")))?
        .items;
    list.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
    list.retain(|e| e.reporting_controller.as_deref() == Some("quorate"));
    Ok(list)
}

/// Runs `f` with the node agent.
pub fn with_agent<T>(
    bed: &Bed,
    f: impl FnOnce(
        &quorate_testbed::nodeagent::NodeAgent,
    ) -> Result<T, quorate_testbed::nodeagent::Error>,
) -> Result<T, Failed> {
    let agent = bed.agent.lock().map_err(|_| fail("lock"))?;
    f(agent.as_ref().ok_or_else(|| fail("no agent"))?).map_err(|e| fail(e.to_string()))
}

/// Runs a process fault (or its end) through the node agent: false when the Pod had no
/// running container.
pub fn landed(
    bed: &Bed,
    f: impl FnOnce(
        &quorate_testbed::nodeagent::NodeAgent,
    ) -> Result<(), quorate_testbed::nodeagent::Error>,
) -> Result<bool, Failed> {
    match with_agent(bed, f) {
        Ok(()) => Ok(true),
        Err(e) if format!("{e:?}").contains("no running container") => Ok(false),
        Err(e) => Err(e),
    }
}

/// A node agent that also runs `quorate:<tag>` images (restores' init containers, volume
/// probes) with the quorate binary under test.
pub fn agent_running_quorate_images() -> AgentOptions {
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_quorate"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    AgentOptions {
        quorate_bin_dir: Some(bin_dir),
        ..AgentOptions::default()
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

/// A namespace for one scenario. It enforces Pod Security `restricted`, as a careful cluster
/// does: every Pod quorate creates in a scenario must be admitted under it.
pub async fn namespace(client: &Client, ns: &str) -> TestResult {
    let api: Api<Namespace> = Api::all(client.clone());
    let obj = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            labels: Some(
                [
                    ("pod-security.kubernetes.io/enforce", "restricted"),
                    ("pod-security.kubernetes.io/enforce-version", "latest"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ),
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
            if s.phase == Some(quorate::crd::EnsemblePhase::Running)
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

/// Creates the namespace and ensemble `spec` (named `masters`) and waits until it converges.
pub async fn create_and_converge(
    bed: &Bed,
    ns: &str,
    spec: MasterEnsemble,
) -> Result<(Client, Api<MasterEnsemble>), Failed> {
    let client = bed.client().await?;
    namespace(&client, ns).await?;
    let api: Api<MasterEnsemble> = Api::namespaced(client.clone(), ns);
    let replicas = spec.spec.replicas;
    api.create(&PostParams::default(), &spec)
        .await
        .map_err(|e| fail(format!("create: {e}")))?;
    wait_converged(bed, &api, "masters", replicas, Duration::from_secs(180)).await?;
    Ok((client, api))
}

/// Scales the ensemble as `kubectl scale` does: through the scale subresource.
pub async fn set_replicas(api: &Api<MasterEnsemble>, name: &str, replicas: i32) -> TestResult {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    api.patch_scale(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| fail(format!("scale to {replicas}: {e}")))?;
    Ok(())
}

/// A key of the ensemble's credentials Secret (`<ensemble>-credentials`), such as
/// `superPassword` or `operatorPassword`.
pub async fn credential(
    client: &Client,
    ns: &str,
    ensemble: &str,
    key: &str,
) -> Result<String, Failed> {
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .get(&format!("{ensemble}-credentials"))
        .await
        .map_err(|e| fail(format!("credentials of {ensemble}: {e}")))?;
    secret
        .data
        .and_then(|d| d.get(key).cloned())
        .and_then(|b| String::from_utf8(b.0).ok())
        .ok_or_else(|| fail(format!("{ensemble}-credentials has no {key}")))
}

/// Whether the Pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
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

/// quorate's Events in `ns` as (time of the first publication, action), oldest first.
pub async fn event_times(
    client: &Client,
    ns: &str,
) -> Result<Vec<(jiff::Timestamp, String)>, Failed> {
    Ok(quorate_events(client, ns)
        .await?
        .into_iter()
        .filter_map(|e| Some((e.event_time?.0, e.action.unwrap_or_default())))
        .collect())
}

/// quorate's Events in `ns` as (reason, action, note), oldest first.
pub async fn events(client: &Client, ns: &str) -> Result<Vec<(String, String, String)>, Failed> {
    Ok(quorate_events(client, ns)
        .await?
        .into_iter()
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.action.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect())
}

/// SIGKILLs a Pod's containers and waits until the processes killed have exited and the agent
/// has reaped them, so that what a scenario does next happens after the loss, not while a
/// killed process still holds its sockets (a JVM on a loaded machine takes a while to die).
pub async fn kill_and_wait_gone(bed: &Bed, ns: &str, pod: &str) -> TestResult {
    let prefix = format!("{ns}/{pod}/");
    let of_pod = |pids: Vec<(String, u32)>| -> BTreeSet<u32> {
        pids.into_iter()
            .filter(|(key, _)| key.starts_with(&prefix))
            .map(|(_, pid)| pid)
            .collect()
    };
    let killed = of_pod(with_agent(bed, |a| Ok(a.pids()))?);
    with_agent(bed, |a| a.kill(ns, pod))?;
    wait_for(
        &format!("the killed processes of {ns}/{pod} ({killed:?}) to exit"),
        Duration::from_secs(60),
        async || {
            let running = of_pod(with_agent(bed, |a| Ok(a.pids()))?);
            Ok(running.is_disjoint(&killed))
        },
    )
    .await
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
    let mut args = Arguments::from_args();
    // A benchmark's scenarios are its measurements: `cargo bench` passes `--bench`, under which
    // libtest-mimic skips every trial that is not a bench trial.
    args.bench = false;
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
        let plane = ControlPlane::start(Options { controller_manager: true, audit: true, ..Default::default() })
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
        let helm = quorate_testbed::helm::ensure_helm().map_err(|e| format!("helm: {e}"))?;
        let operator_kubeconfig = install_chart(&plane, &helm).await.map_err(|e| format!("install the chart: {e:?}"))?;
        let agent = NodeAgent::start(client, agent).await.map_err(|e| format!("node agent: {e}"))?;
        let judge = Judge::new().await.map_err(|e| format!("kazoo: {e}"))?;
        Ok::<_, String>(Bed {
            plane,
            agent: Mutex::new(Some(agent)),
            operators: Mutex::new(Vec::new()),
            started: Default::default(),
            judge,
            runtime: tokio::runtime::Handle::current(),
            operator_env,
            operator_kubeconfig,
            helm,
        })
    });
    let bed = match bed {
        Ok(b) => Arc::new(b),
        Err(e) => {
            eprintln!("cannot start the testbed: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = bed.start_operator().map(drop) {
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
                bed.runtime.clone().block_on(async {
                    let result = scenario(&bed, &ns).await;
                    if result.is_err() {
                        // A failed scenario may leave no operator, or one armed with failpoints
                        // or paused: the next one starts from the bed's state, one plain
                        // operator, instead of failing for this one's sake.
                        bed.kill_operator();
                        if let Err(e) = bed.start_operator() {
                            eprintln!("cannot start a fresh operator after {name}: {e:?}");
                        }
                    }
                    bed.clean_up(&ns).await;
                    // Said at once, beside the scenario's own lines: a CI log cut short keeps it.
                    if let Err(e) = &result {
                        let msg = e.message().unwrap_or("(no message)");
                        let short: String = msg.chars().take(4000).collect();
                        eprintln!("\n{name} FAILED: {short}");
                    }
                    result
                })
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

/// The TCP addresses of the `connect` calls in an strace log (IPv4 and IPv6).
pub fn tcp_connects(strace: &str) -> std::collections::BTreeSet<std::net::SocketAddr> {
    let between = |line: &str, start: &str, end: &str| -> Option<String> {
        let from = line.find(start)? + start.len();
        let len = line[from..].find(end)?;
        Some(line[from..from + len].to_string())
    };
    strace
        .lines()
        .filter(|l| l.contains("connect("))
        .filter_map(|l| {
            let (port, ip) = if l.contains("AF_INET6") {
                (
                    between(l, "sin6_port=htons(", ")")?,
                    between(l, "inet_pton(AF_INET6, \"", "\"")?,
                )
            } else if l.contains("AF_INET") {
                (
                    between(l, "sin_port=htons(", ")")?,
                    between(l, "sin_addr=inet_addr(\"", "\"")?,
                )
            } else {
                return None;
            };
            Some(std::net::SocketAddr::new(
                ip.parse().ok()?,
                port.parse().ok()?,
            ))
        })
        .collect()
}
