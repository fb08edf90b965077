//! The node agent: the kubelet's part on the testbed, where there is no Docker and no kubelet.
//! ZooKeeper "containers" run as real processes on loopback.
//!
//! [`NodeAgent::start`] registers a Node (Ready, with capacity and addresses, kept Ready by a
//! heartbeat on its Lease and conditions), watches Pods cluster-wide, binds every unscheduled Pod
//! to its node through the `binding` subresource (no scheduler runs on the testbed), and runs the
//! Pods bound to it:
//!
//! - **Addresses.** Each Pod gets `127.0.S.N` from the agent's `/24` (`.1` is the node), the same
//!   `N` again when a Pod of the same namespace/name is recreated. Every Pod shares the host's
//!   network namespace, on its own address, so servers must bind to their Pod IP (or DNS name),
//!   not to `0.0.0.0`.
//! - **Images.** `zookeeper:<version>` (any registry prefix; 3.9.5 and 3.8.6) is the testbed's
//!   ZooKeeper distribution, laid out as in the official image
//!   (`/apache-zookeeper-<version>-bin/lib/*.jar`, `/conf/logback.xml`). `quorate:<tag>` (any
//!   registry prefix and tag, e.g. `ghcr.io/quorate/quorate:0.1.0`) is the operator's own image,
//!   which its restores run in member Pods as `/opt/quorate/bin/quorate`: the agent's quorate
//!   binary directory ([`AgentOptions::quorate_bin_dir`], default `$QUORATE_AGENT_BIN_DIR`) is
//!   bind-mounted read-only at [`QUORATE_BIN_MOUNT`], whatever the tag; without that directory
//!   the image is not runnable, and a directory without an executable `quorate` is an
//!   `ErrImagePull`, retried. The rest of the container's file system is the host's (its
//!   `/bin/sh`, its `java`). Any other image leaves the Pod `Pending`, the container waiting with
//!   reason [`REASON_IMAGE_NOT_RUNNABLE`] and a message (and a Warning Event) naming the image.
//! - **Containers** run in a private mount namespace where the image's directories and the Pod's
//!   volumes are bind-mounted at their paths, then `exec` the container's `command` + `args`
//!   (`$(VAR)` expanded). The image's entrypoint cannot run: a command is required. Environment:
//!   `env` and `envFrom` with `value`, `fieldRef`, `secretKeyRef`, `configMapKeyRef`. Init
//!   containers run first, in order, to completion; failures retry with back-off. Containers
//!   restart per `restartPolicy` with back-off (restart count increments), like a kubelet.
//!   Output goes to `<state>/logs/<namespace>_<pod>_<container>.log` (appended across restarts).
//!   A `terminationMessagePath` inside one of the container's volume mounts is honoured: the last
//!   4096 bytes of that file become `state.terminated.message` (and `lastState`'s after a
//!   restart); a path under no volume (the default `/dev/termination-log`) gives no message, and
//!   `FallbackToLogsOnError` does not fall back to the log (see `container.rs`).
//! - **Volumes.** `persistentVolumeClaim` is `<state>/volumes/<namespace>/<claim>`, kept across
//!   Pods until the claim is deleted; `configMap`/`secret` are files refreshed when the object
//!   changes; `emptyDir` is a directory per Pod; `hostPath` is the host's path. The agent marks
//!   every claim `Bound` (there is no PersistentVolume).
//! - **Names.** Cluster DNS is replaced by a hosts file, `<state>/hosts`, rendered from the API
//!   server's Pods and headless Services as CoreDNS would serve them (see `hosts.rs`): every
//!   container gets `JAVA_TOOL_OPTIONS=-Djdk.net.hosts.file=<state>/hosts ...` (appended to its
//!   own value), so `<hostname>.<subdomain>.<namespace>.svc.cluster.local` resolves in Java.
//!   Name caching is cut to 1 s, and to 0 s for failed lookups, through a `java.security`
//!   override (`-Djava.security.properties`): `networkaddress.cache.*` are security properties,
//!   so `-Dnetworkaddress.cache.ttl` does nothing, and the JDK's own `java.security` caches
//!   failed lookups for 10 s, which delays a member whose peer's name appears later (measured:
//!   15 s instead of 1.6 s). **This is the testbed's one concession: a real cluster has DNS.**
//!   Only Java processes see these names (`/bin/sh` tools use the host's resolver).
//! - **Probes.** `startupProbe`, `readinessProbe` and `livenessProbe` with `httpGet`, `tcpSocket`
//!   and `exec`; the `Ready` condition follows readiness, a failed liveness probe restarts the
//!   container.
//! - **Deletion.** A Pod with a `deletionTimestamp` gets SIGTERM (to the process group), SIGKILL
//!   after its grace period, and is then removed (delete with grace 0). Its claims' data stays.
//!
//! Faults for scenario tests are methods of the handle: [`NodeAgent::kill`], [`NodeAgent::pause`],
//! [`NodeAgent::resume`], [`NodeAgent::delete_volume`], and network faults:
//! [`NodeAgent::cut`] / [`NodeAgent::heal`] a Pod off the network, [`NodeAgent::lossy_quorum_links`]
//! / [`NodeAgent::heal_quorum_links`]. For those, every container process runs in a net_cls
//! cgroup of its Pod and the agent owns one nftables table (`nft` from the cache, see
//! [`ensure_nftables`]); details in `netfault.rs`. Traffic between a Pod and its node's address
//! is never cut (a NetworkPolicy never blocks the kubelet either): probes are sent from the node
//! address, and tests look at a cut member by binding their client to [`NodeAgent::node_ip`].
//! Every process is a [`crate::process::Child`]: none outlives the agent's process, and
//! [`NodeAgent::stop`] (or dropping the handle) kills them all, deletes the nftables table and
//! removes the cgroups.
//!
//! Not done: Services' ClusterIPs (never dial them), resource limits, security contexts (every
//! container runs as root, as the agent does), lifecycle hooks, `kubectl logs`/`exec` (use
//! [`NodeAgent::log_path`] and [`NodeAgent::exec`]), scheduling constraints (affinity,
//! `nodeSelector` and taints are ignored when binding).

mod container;
mod env;
mod hosts;
mod image;
mod ipam;
mod netfault;
mod nftables;
pub mod node;
mod pod;
mod probe;
mod volumes;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, Service};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource as _};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::zookeeper::SubnetLease;
use hosts::PodKey;
use pod::{PodRuntime, Worker, lock};

pub use image::{QUORATE_BIN_MOUNT, REASON_IMAGE_NOT_RUNNABLE};
pub use netfault::{Cut, QUORUM_PORTS};
pub use nftables::{
    NFTABLES_PACKAGES, Nftables, cached_nftables, ensure_nftables, nft_command, nftables_dir,
};

/// The environment variable that gives [`AgentOptions::quorate_bin_dir`] its default.
pub const QUORATE_AGENT_BIN_DIR_ENV: &str = "QUORATE_AGENT_BIN_DIR";

/// The Event reporter and field manager of the agent.
pub const AGENT_NAME: &str = "quorate-node-agent";

/// Errors of the node agent. Every variant says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An API request failed.
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// No loopback subnet could be leased.
    #[error("leasing a loopback subnet: {0}")]
    Subnet(#[source] crate::zookeeper::Error),
    /// The options or an argument are not usable.
    #[error("{0}")]
    Invalid(String),
    /// The watches did not sync in time.
    #[error("the {0} watch did not sync within 30 s")]
    NotSynced(&'static str),
    /// No such Pod runs on this node (or none of its containers is running).
    #[error("pod {namespace}/{name} has no running container {container} on this node")]
    NotRunning {
        namespace: String,
        name: String,
        container: String,
    },
    /// An `exec` failed or timed out.
    #[error("exec in {target}: {message}")]
    Exec { target: String, message: String },
    /// A network fault could not be set or healed (nftables, cgroups).
    #[error("network fault: {0}")]
    NetFault(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// How to run the agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    /// The Node's name (default `quorate-node-1`).
    pub node_name: String,
    /// Where volumes, logs, the hosts file and address assignments live. `None`: a temporary
    /// directory, removed when the agent stops. Reusing a directory keeps claims' data and Pod
    /// addresses across agent restarts.
    pub state_dir: Option<PathBuf>,
    /// The loopback `/24`: Pods get `127.0.S.2` to `127.0.S.254`. `None`: lease a free one
    /// ([`SubnetLease::acquire`]).
    pub subnet: Option<u8>,
    /// The cluster's DNS domain (default `cluster.local`).
    pub cluster_domain: String,
    /// Bind Pods that have no `spec.nodeName` to this node (default true).
    pub bind_unscheduled: bool,
    /// Mark claims `Bound` and remove the data of deleted claims (default true).
    pub manage_claims: bool,
    /// Node heartbeat period (default 10 s).
    pub heartbeat: Duration,
    /// First restart back-off (default 1 s; a kubelet uses 10 s); doubles per crash.
    pub backoff_initial: Duration,
    /// Longest restart back-off (default 20 s; a kubelet uses 5 min). A container that ran twice
    /// this long starts again from [`AgentOptions::backoff_initial`].
    pub backoff_max: Duration,
    /// How often each Pod's worker looks at its processes (default 250 ms).
    pub sync_period: Duration,
    /// The host directory holding the `quorate` binary that `quorate:<tag>` images run: it is
    /// bind-mounted read-only at [`QUORATE_BIN_MOUNT`] (`/opt/quorate/bin`) in their containers.
    /// Default: `$QUORATE_AGENT_BIN_DIR` when set and not empty, else `None`, and such images
    /// are not runnable. [`NodeAgent::start`] refuses a path that is not a directory.
    pub quorate_bin_dir: Option<PathBuf>,
    /// Keep the data of removed volumes (a deleted claim's, the earlier claim's when a new claim
    /// of the same name comes, a [`NodeAgent::delete_volume`]d one) under
    /// [`NodeAgent::removed_volumes`] instead of deleting it (default false): a judge can then
    /// read what a member wrote to its disk after the disk is gone.
    pub keep_removed_volumes: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            node_name: "quorate-node-1".into(),
            state_dir: None,
            subnet: None,
            cluster_domain: "cluster.local".into(),
            bind_unscheduled: true,
            manage_claims: true,
            heartbeat: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(20),
            sync_period: Duration::from_millis(250),
            quorate_bin_dir: std::env::var_os(QUORATE_AGENT_BIN_DIR_ENV)
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
            keep_removed_volumes: false,
        }
    }
}

/// A Pod's worker as the agent sees it.
struct WorkerHandle {
    uid: String,
    claims: Vec<String>,
    rt: Arc<Mutex<PodRuntime>>,
    notify: Arc<Notify>,
    task: JoinHandle<()>,
}

/// State shared by the agent's tasks and the Pod workers.
pub(crate) struct Shared {
    client: Client,
    opts: AgentOptions,
    node_ip: Ipv4Addr,
    state: PathBuf,
    machine_hostname: String,
    path_env: String,
    java_home: Option<String>,
    java_tool_options: String,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    config_maps: Store<ConfigMap>,
    secrets: Store<Secret>,
    services: Store<Service>,
    ipam: Mutex<ipam::Ipam>,
    local_ips: Mutex<BTreeMap<PodKey, Ipv4Addr>>,
    workers: Mutex<BTreeMap<PodKey, WorkerHandle>>,
    images: image::Images,
    hosts_text: Mutex<String>,
    http: reqwest::Client,
    https: reqwest::Client,
    /// Probe clients whose connections leave from the node's address.
    node_http: reqwest::Client,
    node_https: reqwest::Client,
    net: netfault::NetFaults,
    recorder: Recorder,
    kick: Notify,
    stopping: AtomicBool,
}

/// An object of a namespaced store.
fn store_get<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

impl Shared {
    /// What becomes of removed volume data ([`AgentOptions::keep_removed_volumes`]).
    fn removal(&self) -> volumes::Removal<'_> {
        volumes::Removal {
            state: &self.state,
            keep: self.opts.keep_removed_volumes,
        }
    }

    fn log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.state
            .join("logs")
            .join(format!("{namespace}_{pod}_{container}.log"))
    }

    fn hosts_path(&self) -> PathBuf {
        self.state.join("hosts")
    }

    /// Publishes an Event about a Pod (in the background; failures are only logged).
    fn event(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let mut reference = pod.object_ref(&());
        reference.field_path = field_path;
        let recorder = self.recorder.clone();
        let mut note = note;
        note.truncate(1000);
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(error = %e, "publishing an event");
            }
        });
    }

    /// Rewrites the hosts file if what it should say changed.
    fn refresh_hosts(&self) {
        let local = lock(&self.local_ips).clone();
        let text = hosts::render(
            &self.machine_hostname,
            &self.opts.cluster_domain,
            &self.pods.state(),
            &self.services.state(),
            &local,
        );
        let mut last = lock(&self.hosts_text);
        if *last == text {
            return;
        }
        let path = self.hosts_path();
        let tmp = path.with_extension("tmp");
        match std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &path)) {
            Ok(()) => *last = text,
            Err(e) => tracing::warn!(error = %e, "writing the hosts file"),
        }
    }
}

/// Keeps a store in sync and kicks the main loop on every change.
fn watch<K>(api: Api<K>, kick: Arc<Notify>) -> (Store<K>, JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => kick.notify_one(),
                Err(e) => tracing::debug!(error = %e, "watch error (retrying)"),
            }
        }
    });
    (store, task)
}

/// Waits up to 30 s for a store's first listing.
async fn wait_synced<K>(what: &'static str, store: &Store<K>) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    match tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Error::NotSynced(what)),
    }
}

/// Runs a command in a container's mount namespace (`nsenter -t <pid> -m`), with `env`.
pub(super) async fn exec_in(
    pid: u32,
    env: &[(String, String)],
    argv: &[String],
    timeout: Duration,
) -> Result<Output, String> {
    if argv.is_empty() {
        return Err("empty command".into());
    }
    let mut cmd = tokio::process::Command::new("nsenter");
    cmd.arg("-t")
        .arg(pid.to_string())
        .arg("-m")
        .arg("--")
        .args(argv)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| format!("starting nsenter: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("waiting for {argv:?}: {e}")),
        Err(_) => Err(format!("command {argv:?} timed out after {timeout:?}")),
    }
}

/// The running node agent. Dropping it kills every process it started.
pub struct NodeAgent {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    _subnet: SubnetLease,
    state_tmp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for NodeAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAgent")
            .field("node", &self.shared.opts.node_name)
            .field("node_ip", &self.shared.node_ip)
            .field("state", &self.shared.state)
            .finish()
    }
}

/// `java.security` overrides: cache successful lookups 1 s, failed ones not at all.
const JAVA_SECURITY: &str = "networkaddress.cache.ttl=1\nnetworkaddress.cache.negative.ttl=0\n";

impl NodeAgent {
    /// Registers the Node, syncs the watches and starts running Pods.
    pub async fn start(client: Client, opts: AgentOptions) -> Result<NodeAgent, Error> {
        if opts.node_name.is_empty() {
            return Err(Error::Invalid("the node name is empty".into()));
        }
        // Absolute, since containers mount it from `/`.
        let quorate_bin_dir = match &opts.quorate_bin_dir {
            Some(dir) => match std::fs::canonicalize(dir) {
                Ok(abs) if abs.is_dir() => Some(abs),
                Ok(_) => {
                    return Err(Error::Invalid(format!(
                        "the quorate binary directory {} is not a directory",
                        dir.display()
                    )));
                }
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "the quorate binary directory {}: {e}",
                        dir.display()
                    )));
                }
            },
            None => None,
        };
        let (state, state_tmp) = match &opts.state_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let tmp = tempfile::Builder::new()
                    .prefix("quorate-node-")
                    .tempdir()
                    .map_err(io_err("creating the agent's state directory"))?;
                (tmp.path().to_path_buf(), Some(tmp))
            }
        };
        for sub in ["logs", "volumes", "images"] {
            let dir = state.join(sub);
            std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        // Per-Pod directories of an earlier run belong to processes that died with it.
        let pods_dir = state.join("pods");
        if pods_dir.exists() {
            std::fs::remove_dir_all(&pods_dir)
                .map_err(io_err(format!("removing {}", pods_dir.display())))?;
        }
        std::fs::create_dir_all(&pods_dir)
            .map_err(io_err(format!("creating {}", pods_dir.display())))?;
        let lease = match opts.subnet {
            Some(s) => SubnetLease::acquire_specific(s),
            None => SubnetLease::acquire(),
        }
        .map_err(Error::Subnet)?;
        let subnet = lease.subnet();
        let node_ip = lease.ip(1);

        let security = state.join("java.security");
        std::fs::write(&security, JAVA_SECURITY)
            .map_err(io_err(format!("writing {}", security.display())))?;
        let java_tool_options = format!(
            "-Djdk.net.hosts.file={} -Djava.security.properties={} -Dsun.net.inetaddr.ttl=1 \
             -Dsun.net.inetaddr.negative.ttl=0",
            state.join("hosts").display(),
            security.display()
        );
        let kubelet_version = crate::controlplane::pinned_kubernetes_version();
        node::register(
            &client,
            &opts.node_name,
            node_ip,
            &kubelet_version,
            &Default::default(),
        )
        .await?;

        let kick = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        let (pods, t) = watch(Api::<Pod>::all(client.clone()), kick.clone());
        tasks.push(t);
        let (claims, t) = watch(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            kick.clone(),
        );
        tasks.push(t);
        let (config_maps, t) = watch(Api::<ConfigMap>::all(client.clone()), kick.clone());
        tasks.push(t);
        let (secrets, t) = watch(Api::<Secret>::all(client.clone()), kick.clone());
        tasks.push(t);
        let (services, t) = watch(Api::<Service>::all(client.clone()), kick.clone());
        tasks.push(t);
        let synced = async {
            wait_synced("Pod", &pods).await?;
            wait_synced("PersistentVolumeClaim", &claims).await?;
            wait_synced("ConfigMap", &config_maps).await?;
            wait_synced("Secret", &secrets).await?;
            wait_synced("Service", &services).await
        };
        if let Err(e) = synced.await {
            tasks.iter().for_each(|t| t.abort());
            return Err(e);
        }

        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| Error::Invalid(format!("building the probe HTTP client: {e}")))?;
        let https = reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| Error::Invalid(format!("building the probe HTTPS client: {e}")))?;
        let node_http = reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::V4(node_ip))
            .build()
            .map_err(|e| Error::Invalid(format!("building the probe HTTP client: {e}")))?;
        let node_https = reqwest::Client::builder()
            .no_proxy()
            .local_address(std::net::IpAddr::V4(node_ip))
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| Error::Invalid(format!("building the probe HTTPS client: {e}")))?;
        let net = netfault::NetFaults::new(&opts.node_name, subnet, node_ip);
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: AGENT_NAME.into(),
                instance: Some(opts.node_name.clone()),
            },
        );
        let machine_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let shared = Arc::new(Shared {
            client: client.clone(),
            node_ip,
            ipam: Mutex::new(ipam::Ipam::load(state.join("ips.json"), subnet)),
            images: image::Images::new(state.join("images"), quorate_bin_dir),
            state,
            machine_hostname,
            path_env: std::env::var("PATH").unwrap_or_else(|_| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
            java_home: std::env::var("JAVA_HOME").ok().filter(|h| !h.is_empty()),
            java_tool_options,
            pods,
            claims,
            config_maps,
            secrets,
            services,
            local_ips: Mutex::default(),
            workers: Mutex::default(),
            hosts_text: Mutex::default(),
            http,
            https,
            node_http,
            node_https,
            net,
            recorder,
            kick: Notify::new(),
            stopping: AtomicBool::new(false),
            opts,
        });
        shared.refresh_hosts();
        // Forward store changes to the main loop.
        {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    kick.notified().await;
                    shared.kick.notify_one();
                }
            }));
        }
        {
            let shared = shared.clone();
            tasks.push(tokio::spawn(main_loop(shared)));
        }
        tasks.push(tokio::spawn(node::heartbeat(
            client,
            shared.opts.node_name.clone(),
            node_ip,
            kubelet_version,
            shared.opts.heartbeat,
            Default::default(),
        )));
        tracing::info!(node = %shared.opts.node_name, %node_ip, state = %shared.state.display(), "node agent started");
        Ok(NodeAgent {
            shared,
            tasks,
            _subnet: lease,
            state_tmp,
        })
    }

    /// The Node's name.
    pub fn node_name(&self) -> &str {
        &self.shared.opts.node_name
    }

    /// The node's address (`127.0.S.1`), every Pod's `hostIP`.
    pub fn node_ip(&self) -> Ipv4Addr {
        self.shared.node_ip
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.shared.state
    }

    /// The hosts file that stands in for cluster DNS.
    pub fn hosts_file(&self) -> PathBuf {
        self.shared.hosts_path()
    }

    /// The log file of a container (all its runs, appended).
    pub fn log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.shared.log_path(namespace, pod, container)
    }

    /// Where the data of removed volumes of `namespace` is kept with
    /// [`AgentOptions::keep_removed_volumes`]: one directory per removal, named after the claim
    /// (`<claim>..<stamp>`).
    pub fn removed_volumes(&self, namespace: &str) -> PathBuf {
        volumes::removed_root(&self.shared.state, namespace)
    }

    /// The host directory of a claim's volume.
    pub fn volume_path(&self, namespace: &str, claim: &str) -> PathBuf {
        volumes::claim_dir(&self.shared.state, namespace, claim)
    }

    /// The address the Pod of that namespace/name has (or will get again) on this node.
    pub fn pod_ip(&self, namespace: &str, pod: &str) -> Option<Ipv4Addr> {
        lock(&self.shared.ipam).get(&format!("{namespace}/{pod}"))
    }

    /// Every running container process: (`namespace/pod/container`, pid).
    pub fn pids(&self) -> Vec<(String, u32)> {
        let workers = lock(&self.shared.workers);
        let mut out = Vec::new();
        for ((ns, name), w) in workers.iter() {
            for c in lock(&w.rt).all() {
                if let Some(pid) = c.pid() {
                    out.push((format!("{ns}/{name}/{}", c.name), pid));
                }
            }
        }
        out
    }

    /// Applies `f` to the Pod's running containers (all, or the named one); an error if none.
    fn with_running(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        f: impl Fn(&mut pod::ContainerRt),
    ) -> Result<(), Error> {
        let not_running = || Error::NotRunning {
            namespace: namespace.into(),
            name: pod.into(),
            container: container.unwrap_or("(any)").into(),
        };
        let workers = lock(&self.shared.workers);
        let w = workers
            .get(&(namespace.to_string(), pod.to_string()))
            .ok_or_else(not_running)?;
        let mut rt = lock(&w.rt);
        let mut any = false;
        for c in rt.all_mut() {
            if c.pid().is_some() && container.is_none_or(|n| n == c.name) {
                f(c);
                any = true;
            }
        }
        w.notify.notify_one();
        if any { Ok(()) } else { Err(not_running()) }
    }

    /// SIGKILLs the Pod's running containers; the agent restarts them per `restartPolicy`, with
    /// back-off, and their restart count increments.
    pub fn kill(&self, namespace: &str, pod: &str) -> Result<(), Error> {
        self.with_running(namespace, pod, None, |c| {
            c.signal(libc::SIGKILL);
        })
    }

    /// SIGSTOPs the Pod's running containers: they keep their sockets and answer nothing, so
    /// their probes fail.
    pub fn pause(&self, namespace: &str, pod: &str) -> Result<(), Error> {
        self.with_running(namespace, pod, None, |c| {
            c.signal(libc::SIGSTOP);
        })
    }

    /// SIGCONTs the Pod's containers after [`NodeAgent::pause`].
    pub fn resume(&self, namespace: &str, pod: &str) -> Result<(), Error> {
        self.with_running(namespace, pod, None, |c| {
            c.signal(libc::SIGCONT);
        })
    }

    /// Removes everything in a claim's volume (the directory stays, so a running Pod sees it
    /// empty): a lost disk.
    pub fn delete_volume(&self, namespace: &str, claim: &str) -> Result<(), Error> {
        let dir = self.volume_path(namespace, claim);
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "claim {namespace}/{claim} has no volume on this node ({})",
                dir.display()
            )));
        }
        self.shared
            .removal()
            .wipe_contents(namespace, claim, &dir)
            .map_err(io_err(format!("emptying {}", dir.display())))
    }

    /// The address of a Pod of this node for a network fault, or an error naming it.
    fn fault_target(&self, namespace: &str, pod: &str) -> Result<Ipv4Addr, Error> {
        self.pod_ip(namespace, pod).ok_or_else(|| {
            Error::Invalid(format!(
                "pod {namespace}/{pod} has no address on node {} (not bound here yet?)",
                self.shared.opts.node_name
            ))
        })
    }

    /// Cuts a Pod off the network, until [`NodeAgent::heal`]:
    ///
    /// - [`Cut::Incoming`]: nothing addressed to the Pod's IP gets there, so no peer or client
    ///   reaches its ports and connections to them go dead;
    /// - [`Cut::Outgoing`]: nothing its processes send leaves them (matched by the Pod's net_cls
    ///   class id, since on loopback they send from 127.0.0.1): the connections they open get
    ///   nowhere and their listening sockets answer nothing;
    /// - [`Cut::Both`]: both, so the Pod talks to no one, peers or clients.
    ///
    /// Traffic between the Pod and the node's address ([`NodeAgent::node_ip`]) is exempt: the
    /// agent's probes keep reaching it (as a kubelet's do under a NetworkPolicy), and a test
    /// looks at a cut member through a client bound to the node address. The cut belongs to the
    /// Pod's namespace/name, whose address and class id stay the same, so it holds for restarted
    /// containers and for a recreated Pod of that name. A new cut of the same Pod replaces the
    /// old one. Runs `nft` (a few milliseconds; the first call fetches nftables into the cache
    /// unless `testbed prepare` did). Processes started by [`NodeAgent::exec`] are not cut.
    pub fn cut(&self, namespace: &str, pod: &str, how: Cut) -> Result<(), Error> {
        let ip = self.fault_target(namespace, pod)?;
        self.shared
            .net
            .cut((namespace.to_string(), pod.to_string()), ip, how)
            .map_err(Error::NetFault)?;
        tracing::info!(namespace, pod, %ip, ?how, "network cut");
        Ok(())
    }

    /// Ends the Pod's cut ([`NodeAgent::cut`]); an error if it is not cut.
    pub fn heal(&self, namespace: &str, pod: &str) -> Result<(), Error> {
        let key = (namespace.to_string(), pod.to_string());
        if self.shared.net.heal(&key).map_err(Error::NetFault)? {
            tracing::info!(namespace, pod, "network cut healed");
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "pod {namespace}/{pod} is not cut on node {}",
                self.shared.opts.node_name
            )))
        }
    }

    /// Makes the quorum links of this node's Pods lossy: TCP packets to or from ports 2888 and
    /// 3888 ([`QUORUM_PORTS`]) of this node's `/24` are dropped at random, `percent` out of 100
    /// (100 drops them all; 0 is [`NodeAgent::heal_quorum_links`]). nftables cannot delay
    /// packets (and this kernel has no netem), so loss is how links are made slow: TCP
    /// retransmits. Client ports and other nodes' Pods are not affected; cuts stay as they are.
    pub fn lossy_quorum_links(&self, percent: u8) -> Result<(), Error> {
        if percent > 100 {
            return Err(Error::Invalid(format!(
                "a loss of {percent}% is not a percentage"
            )));
        }
        self.shared.net.set_loss(percent).map_err(Error::NetFault)?;
        tracing::info!(percent, "quorum links lossy");
        Ok(())
    }

    /// Ends [`NodeAgent::lossy_quorum_links`].
    pub fn heal_quorum_links(&self) -> Result<(), Error> {
        self.shared.net.set_loss(0).map_err(Error::NetFault)
    }

    /// Packets the agent's network-fault rules have dropped since the rules last changed (a
    /// cut, a heal or a new loss percentage resets it); 0 when there are none.
    pub fn dropped_packets(&self) -> Result<u64, Error> {
        self.shared.net.dropped().map_err(Error::NetFault)
    }

    /// The agent's nftables table (family `inet`); it exists only while a fault is in force.
    pub fn nft_table(&self) -> &str {
        self.shared.net.table()
    }

    /// The net_cls class id of the Pod's cgroup (every container of the Pod, every restart).
    pub fn pod_classid(&self, namespace: &str, pod: &str) -> Option<u32> {
        self.pod_ip(namespace, pod).map(netfault::classid)
    }

    /// Runs a command in a running container's mount namespace, with its environment (like
    /// `kubectl exec`); `container` defaults to the first regular container.
    pub async fn exec(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        argv: &[&str],
        timeout: Duration,
    ) -> Result<Output, Error> {
        let target = format!("{namespace}/{pod}/{}", container.unwrap_or("(first)"));
        let found = {
            let workers = lock(&self.shared.workers);
            workers
                .get(&(namespace.to_string(), pod.to_string()))
                .and_then(|w| {
                    let rt = lock(&w.rt);
                    let c = match container {
                        Some(n) => rt.all().find(|c| c.name == n),
                        None => rt.main.first(),
                    }?;
                    Some((c.pid()?, c.env.clone()))
                })
        };
        let (pid, env) = found.ok_or_else(|| Error::NotRunning {
            namespace: namespace.into(),
            name: pod.into(),
            container: container.unwrap_or("(first)").into(),
        })?;
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        exec_in(pid, &env, &argv, timeout)
            .await
            .map_err(|message| Error::Exec { target, message })
    }

    fn shutdown(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for w in workers.values() {
            w.task.abort();
        }
        for w in workers.values() {
            lock(&w.rt).kill_all();
        }
        self.shared.net.clear();
    }

    /// Stops every process the agent started and its tasks; the Node and Pod objects stay as
    /// they are (as when a kubelet dies). A temporary state directory is removed.
    pub async fn stop(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let workers = std::mem::take(&mut *lock(&self.shared.workers));
        for w in workers.values() {
            w.task.abort();
        }
        for (_, w) in workers {
            let _ = w.task.await;
            lock(&w.rt).kill_all();
        }
        self.shutdown();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        if let Some(tmp) = self.state_tmp.take() {
            let _ = tmp.close();
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn main_loop(shared: Arc<Shared>) {
    loop {
        reconcile(&shared).await;
        tokio::select! {
            _ = shared.kick.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

async fn bind(shared: &Shared, pod: &Pod) {
    let (Some(ns), Some(name)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), ns);
    let binding = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns},
        "target": {"apiVersion": "v1", "kind": "Node", "name": shared.opts.node_name},
    });
    match api
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {
            tracing::info!(namespace = ns, pod = name, node = %shared.opts.node_name, "bound");
            shared.event(
                pod,
                None,
                EventType::Normal,
                "Scheduled",
                format!(
                    "Successfully assigned {ns}/{name} to {}",
                    shared.opts.node_name
                ),
            );
        }
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
        Err(e) => tracing::warn!(namespace = ns, pod = name, error = %e, "binding"),
    }
}

async fn reconcile(shared: &Arc<Shared>) {
    let pods = shared.pods.state();
    let me = shared.opts.node_name.as_str();
    if shared.opts.bind_unscheduled {
        let labels = node::labels(me, &Default::default());
        for pod in &pods {
            let unbound = pod
                .spec
                .as_ref()
                .is_some_and(|s| s.node_name.as_deref().unwrap_or("").is_empty());
            if unbound
                && pod.metadata.deletion_timestamp.is_none()
                && !is_terminal(pod)
                && node::admits(&labels, pod)
            {
                bind(shared, pod).await;
            }
        }
    }
    if shared.stopping.load(Ordering::SeqCst) {
        return;
    }
    {
        let mut workers = lock(&shared.workers);
        workers.retain(|_, w| !w.task.is_finished());
        for pod in &pods {
            let on_me = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(me);
            if !on_me || (is_terminal(pod) && pod.metadata.deletion_timestamp.is_none()) {
                continue;
            }
            let key = (
                pod.metadata.namespace.clone().unwrap_or_default(),
                pod.metadata.name.clone().unwrap_or_default(),
            );
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            match workers.get(&key) {
                Some(w) if w.uid == uid => w.notify.notify_one(),
                // The worker of an earlier Pod of that name is still stopping it.
                Some(w) => w.notify.notify_one(),
                None => {
                    let rt = Arc::new(Mutex::new(PodRuntime::default()));
                    let notify = Arc::new(Notify::new());
                    let worker = Worker::new(shared.clone(), pod, rt.clone(), notify.clone());
                    let task = tokio::spawn(worker.run());
                    workers.insert(
                        key,
                        WorkerHandle {
                            uid,
                            claims: volumes::claims_of(pod),
                            rt,
                            notify,
                            task,
                        },
                    );
                }
            }
        }
    }
    if shared.opts.manage_claims {
        manage_claims(shared).await;
    }
    shared.refresh_hosts();
}

/// Marks claims `Bound` and removes the data of deleted claims that no Pod here uses.
async fn manage_claims(shared: &Shared) {
    for claim in shared.claims.state() {
        let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if bound || claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(ns), Some(name)) = (
            claim.metadata.namespace.as_deref(),
            claim.metadata.name.as_deref(),
        ) else {
            continue;
        };
        let spec = claim.spec.as_ref();
        let storage = spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage").cloned());
        let patch = serde_json::json!({"status": {
            "phase": "Bound",
            "accessModes": spec.and_then(|s| s.access_modes.clone()),
            "capacity": storage.map(|q| serde_json::json!({"storage": q})),
        }});
        let api: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), ns);
        if let Err(e) = api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(namespace = ns, claim = name, error = %e, "marking a claim Bound");
        }
    }
    let in_use: BTreeSet<(String, String)> = lock(&shared.workers)
        .iter()
        .flat_map(|((ns, _), w)| w.claims.iter().map(move |c| (ns.clone(), c.clone())))
        .collect();
    let removed = volumes::gc_claims(shared.removal(), |ns, claim, uid| {
        if in_use.contains(&(ns.to_string(), claim.to_string())) {
            return true;
        }
        store_get(&shared.claims, ns, claim)
            .is_some_and(|c| uid.is_none() || c.metadata.uid.as_deref() == uid)
    });
    for (ns, claim) in removed {
        tracing::info!(namespace = %ns, claim = %claim, "removed the volume of a deleted claim");
    }
}
