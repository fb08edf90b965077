//! One Pod on this node: its worker runs the init containers in order, then the containers,
//! restarts them per `restartPolicy` with back-off, runs their probes, reports status, and on
//! deletion stops them (SIGTERM, SIGKILL after the grace period) and removes the Pod object.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::EventType;
use tokio::sync::Notify;

use super::container::{self, Launch};
use super::env::{self, EnvContext, Vars};
use super::hosts::PodKey;
use super::image::{self, Pull};
use super::probe::{self, ProbeState, ProbeTarget};
use super::volumes::{Lookups, PodVolumes};
use super::{Shared, store_get};
use crate::process::Child;

/// Condition types this agent owns; others (readiness gates, DisruptionTarget) are kept.
const OWN_CONDITIONS: [&str; 5] = [
    "PodScheduled",
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

/// A finished run of a container.
#[derive(Clone, Debug)]
pub(super) struct Termination {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    started_at: Timestamp,
    finished_at: Timestamp,
    container_id: String,
    /// What the container left at its `terminationMessagePath`, when that path lies inside one
    /// of its volume mounts (see `container.rs`; `FallbackToLogsOnError` never falls back to the
    /// log here).
    message: Option<String>,
}

impl Termination {
    fn state(&self) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: self.exit_code,
                signal: self.signal,
                reason: Some(self.reason.clone()),
                started_at: Some(Time(self.started_at)),
                finished_at: Some(Time(self.finished_at)),
                container_id: Some(self.container_id.clone()),
                message: self.message.clone(),
            }),
            ..Default::default()
        }
    }
}

/// The current run of a container.
#[derive(Debug)]
struct Run {
    child: Child,
    started_at: Timestamp,
    started: Instant,
    container_id: String,
    probe: Arc<ProbeState>,
    probe_task: tokio::task::JoinHandle<()>,
    /// SIGTERM was sent; SIGKILL at this instant.
    kill_at: Option<Instant>,
    paused: bool,
    /// The host file behind the container's `terminationMessagePath`, read when it exits.
    termination_message: Option<PathBuf>,
}

/// One container (init or regular) of the Pod.
#[derive(Debug)]
pub(super) struct ContainerRt {
    pub name: String,
    image: String,
    init: bool,
    run: Option<Run>,
    /// The environment of the latest start (for `exec`).
    pub env: Vec<(String, String)>,
    /// Why it is not running (when it is not), with a message.
    waiting: Option<(String, Option<String>)>,
    last: Option<Termination>,
    previous: Option<Termination>,
    restart_count: i32,
    ever_started: bool,
    /// Consecutive restarts without a long enough run in between (for the back-off).
    crashes: u32,
    next_start: Option<Instant>,
    /// It will not run again (an init container that succeeded, a regular one done per policy).
    finished: bool,
}

impl ContainerRt {
    fn new(c: &Container, init: bool) -> ContainerRt {
        ContainerRt {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            init,
            run: None,
            env: Vec::new(),
            waiting: Some(("ContainerCreating".into(), None)),
            last: None,
            previous: None,
            restart_count: 0,
            ever_started: false,
            crashes: 0,
            next_start: None,
            finished: false,
        }
    }

    /// The pid of the running process.
    pub(super) fn pid(&self) -> Option<u32> {
        self.run.as_ref().map(|r| r.child.pid())
    }

    /// Signals the running process group.
    pub(super) fn signal(&mut self, signal: i32) -> bool {
        let Some(run) = self.run.as_mut() else {
            return false;
        };
        match signal {
            libc::SIGSTOP => run.paused = true,
            libc::SIGCONT => run.paused = false,
            _ => {}
        }
        run.child.signal(signal).is_ok()
    }

    fn is_running(&self) -> bool {
        self.run.is_some()
    }

    fn ready(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.kill_at.is_none() && r.probe.ready.load(Ordering::SeqCst))
    }

    fn started(&self) -> bool {
        self.run
            .as_ref()
            .is_some_and(|r| r.probe.started.load(Ordering::SeqCst))
    }

    /// Starts SIGTERM-then-SIGKILL.
    fn begin_stop(&mut self, grace: Duration) {
        if let Some(run) = self.run.as_mut()
            && run.kill_at.is_none()
        {
            let _ = run.child.signal(libc::SIGCONT);
            let _ = run.child.signal(libc::SIGTERM);
            run.paused = false;
            run.kill_at = Some(Instant::now() + grace);
            run.probe_task.abort();
        }
    }

    /// Kills and reaps the process now.
    pub(super) fn kill_now(&mut self) {
        if let Some(run) = self.run.as_mut() {
            run.probe_task.abort();
            run.child.kill();
        }
    }

    fn status(&self) -> ContainerStatus {
        let (state, last_state) = match (&self.run, &self.waiting, &self.last) {
            (Some(run), _, last) => (
                ContainerState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(Time(run.started_at)),
                    }),
                    ..Default::default()
                },
                last.as_ref().map(Termination::state),
            ),
            (None, Some((reason, message)), last) => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(reason.clone()),
                        message: message.clone(),
                    }),
                    ..Default::default()
                },
                last.as_ref().map(Termination::state),
            ),
            (None, None, Some(last)) => {
                (last.state(), self.previous.as_ref().map(Termination::state))
            }
            (None, None, None) => (
                ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("ContainerCreating".into()),
                        message: None,
                    }),
                    ..Default::default()
                },
                None,
            ),
        };
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: image::image_id(&self.image),
            container_id: self
                .run
                .as_ref()
                .map(|r| r.container_id.clone())
                .or_else(|| self.last.as_ref().map(|t| t.container_id.clone())),
            ready: if self.init {
                self.finished && self.last.as_ref().is_some_and(|t| t.exit_code == 0)
            } else {
                self.ready()
            },
            started: Some(self.started()),
            restart_count: self.restart_count,
            state: Some(state),
            last_state: Some(last_state.unwrap_or_default()),
            ..Default::default()
        }
    }
}

/// The processes of one Pod, shared between its worker and the agent's handle.
#[derive(Debug, Default)]
pub(super) struct PodRuntime {
    pub init: Vec<ContainerRt>,
    pub main: Vec<ContainerRt>,
}

impl PodRuntime {
    pub(super) fn all_mut(&mut self) -> impl Iterator<Item = &mut ContainerRt> {
        self.init.iter_mut().chain(self.main.iter_mut())
    }

    pub(super) fn all(&self) -> impl Iterator<Item = &ContainerRt> {
        self.init.iter().chain(self.main.iter())
    }

    /// SIGKILLs and reaps every process.
    pub(super) fn kill_all(&mut self) {
        for c in self.all_mut() {
            if let Some(run) = c.run.as_ref() {
                let _ = run.child.signal(libc::SIGKILL);
            }
        }
        for c in self.all_mut() {
            c.kill_now();
            c.run = None;
        }
    }
}

/// The worker of one Pod (by uid).
pub(super) struct Worker {
    shared: Arc<Shared>,
    key: PodKey,
    uid: String,
    rt: Arc<Mutex<PodRuntime>>,
    notify: Arc<Notify>,
    pod_dir: PathBuf,
    ip: Option<Ipv4Addr>,
    volumes: Option<PodVolumes>,
    start_time: Timestamp,
    transitions: HashMap<String, (String, Timestamp)>,
    last_status: Option<serde_json::Value>,
    sent_events: BTreeSet<String>,
    was_ready: HashMap<String, bool>,
    /// SIGTERM has been sent for the Pod's deletion.
    terminating: bool,
    deleted: bool,
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn signal_of(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt as _;
    status.signal()
}

impl Worker {
    pub(super) fn new(
        shared: Arc<Shared>,
        pod: &Pod,
        rt: Arc<Mutex<PodRuntime>>,
        notify: Arc<Notify>,
    ) -> Worker {
        let key = (
            pod.metadata.namespace.clone().unwrap_or_default(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        {
            let mut r = lock(&rt);
            let spec = pod.spec.as_ref();
            r.init = spec
                .iter()
                .flat_map(|s| s.init_containers.iter().flatten())
                .map(|c| ContainerRt::new(c, true))
                .collect();
            r.main = spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .map(|c| ContainerRt::new(c, false))
                .collect();
            if !r.init.is_empty() {
                for c in &mut r.main {
                    c.waiting = Some(("PodInitializing".into(), None));
                }
            }
        }
        Worker {
            pod_dir: shared.state.join("pods").join(&uid),
            shared,
            key,
            uid,
            rt,
            notify,
            ip: None,
            volumes: None,
            start_time: Timestamp::now(),
            transitions: HashMap::new(),
            last_status: None,
            sent_events: BTreeSet::new(),
            was_ready: HashMap::new(),
            terminating: false,
            deleted: false,
        }
    }

    fn current_pod(&self) -> Option<Arc<Pod>> {
        store_get(&self.shared.pods, &self.key.0, &self.key.1)
            .filter(|p| p.metadata.uid.as_deref() == Some(self.uid.as_str()))
    }

    /// Runs until the Pod object is gone.
    pub(super) async fn run(mut self) {
        tracing::info!(namespace = %self.key.0, pod = %self.key.1, uid = %self.uid, "pod worker started");
        while let Some(pod) = self.current_pod() {
            self.sync(&pod).await;
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep(self.shared.opts.sync_period) => {}
            }
        }
        lock(&self.rt).kill_all();
        if let Some(ip) = self.ip {
            // Its last processes may take a moment to leave it.
            let shared = self.shared.clone();
            let _ = tokio::task::spawn_blocking(move || shared.net.remove_pod_cgroup(ip)).await;
        }
        lock(&self.shared.local_ips).remove(&self.key);
        let _ = std::fs::remove_dir_all(&self.pod_dir);
        self.shared.kick.notify_one();
        tracing::info!(namespace = %self.key.0, pod = %self.key.1, uid = %self.uid, "pod worker ended");
    }

    /// Publishes an Event about the Pod, or about one of its containers (`field`, e.g.
    /// `spec.containers{zookeeper}`); with `once`, only the first time for this reason and note.
    fn event(
        &mut self,
        pod: &Pod,
        field: Option<String>,
        type_: EventType,
        reason: &str,
        note: String,
        once: bool,
    ) {
        if once
            && !self
                .sent_events
                .insert(format!("{field:?}\n{reason}\n{note}"))
        {
            return;
        }
        self.shared.event(pod, field, type_, reason, note);
    }

    fn backoff(&self, crashes: u32) -> Duration {
        let opts = &self.shared.opts;
        let factor = 1u32 << crashes.saturating_sub(1).min(16);
        opts.backoff_initial
            .saturating_mul(factor)
            .min(opts.backoff_max)
    }

    async fn sync(&mut self, pod: &Pod) {
        if pod.metadata.deletion_timestamp.is_some() {
            self.terminate(pod).await;
            return;
        }
        let policy = restart_policy(pod).to_string();
        self.reap(pod, &policy);
        if self.ip.is_none() {
            let key = format!("{}/{}", self.key.0, self.key.1);
            let allocated = {
                let running = lock(&self.shared.local_ips);
                lock(&self.shared.ipam).allocate(&key, |k| {
                    k.split_once('/')
                        .is_some_and(|(ns, n)| running.contains_key(&(ns.into(), n.into())))
                })
            };
            match allocated {
                Ok(ip) => {
                    self.ip = Some(ip);
                    lock(&self.shared.local_ips).insert(self.key.clone(), ip);
                    self.shared.refresh_hosts();
                }
                Err(message) => {
                    self.event(
                        pod,
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        message,
                        true,
                    );
                }
            }
        }
        if let Some(ip) = self.ip {
            self.ensure_volumes(pod);
            if self.volumes.is_some() {
                self.start_due(pod, ip, &policy);
            }
        }
        self.write_status(pod).await;
    }

    /// Sets up the Pod's volumes once, then keeps ConfigMap and Secret volumes current.
    fn ensure_volumes(&mut self, pod: &Pod) {
        let ns = self.key.0.clone();
        let shared = self.shared.clone();
        let claim = |n: &str| store_get(&shared.claims, &ns, n);
        let config_map = |n: &str| store_get(&shared.config_maps, &ns, n);
        let secret = |n: &str| store_get(&shared.secrets, &ns, n);
        let lookups = Lookups {
            claim: &claim,
            config_map: &config_map,
            secret: &secret,
        };
        match self.volumes.as_mut() {
            Some(v) => {
                if let Err(message) = v.refresh(&lookups, false) {
                    tracing::debug!(namespace = %self.key.0, pod = %self.key.1, %message, "refreshing volumes");
                }
            }
            None => match PodVolumes::setup(pod, shared.removal(), &self.pod_dir, &lookups) {
                Ok(v) => self.volumes = Some(v),
                Err(message) => {
                    let note = format!("MountVolume.SetUp failed: {message}");
                    self.event(pod, None, EventType::Warning, "FailedMount", note, true);
                }
            },
        }
    }

    /// Reaps exited processes, decides on restarts, and acts on failed probes.
    fn reap(&mut self, pod: &Pod, policy: &str) {
        let reset_after = self.shared.opts.backoff_max.saturating_mul(2);
        let grace = termination_grace(pod);
        let mut events = Vec::new();
        {
            let mut rt = lock(&self.rt);
            for c in rt.all_mut() {
                let Some(run) = c.run.as_mut() else { continue };
                if run.probe.failed.load(Ordering::SeqCst) && run.kill_at.is_none() {
                    let why = run
                        .probe
                        .last_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone()
                        .unwrap_or_default();
                    events.push((
                        field_path(c),
                        EventType::Warning,
                        "Unhealthy",
                        format!("Liveness probe failed: {why}"),
                    ));
                    events.push((
                        field_path(c),
                        EventType::Normal,
                        "Killing",
                        format!(
                            "Container {} failed liveness probe, will be restarted",
                            c.name
                        ),
                    ));
                    c.begin_stop(grace);
                }
                let Some(run) = c.run.as_mut() else { continue };
                if run.kill_at.is_some_and(|t| Instant::now() >= t) {
                    run.child.kill();
                }
                let status = match run.child.try_wait() {
                    Ok(Some(status)) => status,
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(container = %c.name, error = %e, "waiting for a container");
                        continue;
                    }
                };
                let Some(run) = c.run.take() else { continue };
                run.probe_task.abort();
                let signal = signal_of(&status);
                let exit_code = status.code().unwrap_or_else(|| 128 + signal.unwrap_or(0));
                let termination = Termination {
                    exit_code,
                    signal,
                    reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                    started_at: run.started_at,
                    finished_at: Timestamp::now(),
                    container_id: run.container_id.clone(),
                    message: run
                        .termination_message
                        .as_deref()
                        .and_then(container::read_termination_message),
                };
                drop(run.child);
                c.previous = c.last.replace(termination);
                c.waiting = None;
                if run.started.elapsed() >= reset_after {
                    c.crashes = 0;
                }
                let done = match (c.init, policy) {
                    (true, "Never") => true,
                    (true, _) => exit_code == 0,
                    (false, "Always") => false,
                    (false, "OnFailure") => exit_code == 0,
                    (false, _) => true,
                };
                tracing::info!(container = %c.name, exit_code, done, "container exited");
                if done {
                    c.finished = true;
                } else {
                    c.crashes += 1;
                    let delay = self.backoff(c.crashes);
                    c.next_start = Some(Instant::now() + delay);
                    if c.crashes >= 2 {
                        c.waiting = Some((
                            "CrashLoopBackOff".into(),
                            Some(format!(
                                "back-off {delay:?} restarting failed container={} pod={}_{}({})",
                                c.name, self.key.1, self.key.0, self.uid
                            )),
                        ));
                    }
                    events.push((
                        field_path(c),
                        EventType::Warning,
                        "BackOff",
                        format!("Back-off restarting failed container {}", c.name),
                    ));
                }
            }
        }
        for (field, t, reason, note) in events {
            self.event(pod, Some(field), t, reason, note, false);
        }
    }

    /// The container's environment, argv and mounts.
    fn launch(
        &self,
        pod: &Pod,
        spec: &Container,
        ip: Ipv4Addr,
        img: &image::Prepared,
    ) -> Result<Launch, (String, String)> {
        let shared = &self.shared;
        let ns = self.key.0.as_str();
        let config_map = |n: &str| store_get(&shared.config_maps, ns, n);
        let secret = |n: &str| store_get(&shared.secrets, ns, n);
        let ctx = EnvContext {
            pod,
            pod_ip: ip,
            host_ip: shared.node_ip,
            node: &shared.opts.node_name,
            config_map: &config_map,
            secret: &secret,
        };
        let mut base = Vars::default();
        base.set("PATH".into(), shared.path_env.clone());
        let hostname = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .unwrap_or_else(|| self.key.1.clone());
        base.set("HOSTNAME".into(), hostname);
        base.set("HOME".into(), "/root".into());
        if let Some(java_home) = &shared.java_home {
            base.set("JAVA_HOME".into(), java_home.clone());
        }
        for (k, v) in &img.env {
            base.set(k.clone(), v.clone());
        }
        let mut vars = env::resolve(spec, &ctx, base)
            .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        let tool_options = match vars.get("JAVA_TOOL_OPTIONS") {
            Some(existing) if !existing.trim().is_empty() => {
                format!("{existing} {}", shared.java_tool_options)
            }
            _ => shared.java_tool_options.clone(),
        };
        vars.set("JAVA_TOOL_OPTIONS".into(), tool_options);
        let command = spec.command.clone().unwrap_or_default();
        if command.is_empty() {
            return Err((
                "CreateContainerError".into(),
                "the quorate node agent cannot run an image's own entrypoint: give the \
                 container an explicit command"
                    .into(),
            ));
        }
        let argv: Vec<String> = command
            .iter()
            .chain(spec.args.iter().flatten())
            .map(|a| env::expand(a, &vars))
            .collect();
        let volumes = self
            .volumes
            .as_ref()
            .ok_or_else(|| ("ContainerCreating".to_string(), String::new()))?;
        let volume_mounts = volumes
            .mounts(spec)
            .map_err(|m| ("CreateContainerConfigError".to_string(), m))?;
        // Only a volume's file: a path under an image's mount or under none has no message.
        let termination_message = spec
            .termination_message_path
            .as_deref()
            .and_then(|p| container::host_path(p, &volume_mounts));
        let mut mounts = img.mounts.clone();
        mounts.extend(volume_mounts);
        let cgroup_procs = shared
            .net
            .pod_cgroup(ip)
            .map_err(|m| ("CreateContainerError".to_string(), m))?;
        Ok(Launch {
            name: format!("{}/{}/{}", self.key.0, self.key.1, spec.name),
            argv,
            env: vars.into_vec(),
            mounts,
            workdir: spec
                .working_dir
                .clone()
                .unwrap_or_else(|| img.workdir.clone()),
            log: shared.log_path(&self.key.0, &self.key.1, &spec.name),
            cgroup_procs,
            termination_message,
        })
    }

    /// Starts the next init container, or the regular containers, whose time has come.
    fn start_due(&mut self, pod: &Pod, ip: Ipv4Addr, policy: &str) {
        let Some(spec) = pod.spec.as_ref() else {
            return;
        };
        let init_specs: Vec<&Container> = spec.init_containers.iter().flatten().collect();
        let (init_done, next_init, init_failed) = {
            let rt = lock(&self.rt);
            let next = rt.init.iter().position(|c| !c.finished);
            let failed = rt
                .init
                .iter()
                .any(|c| c.finished && c.last.as_ref().is_some_and(|t| t.exit_code != 0));
            (next.is_none(), next, failed)
        };
        if init_failed && policy == "Never" {
            return;
        }
        let mut wanted: Vec<(bool, usize, &Container)> = Vec::new();
        match next_init {
            Some(i) => {
                if let Some(c) = init_specs.get(i) {
                    wanted.push((true, i, c));
                }
            }
            None if init_done => {
                for (i, c) in spec.containers.iter().enumerate() {
                    wanted.push((false, i, c));
                }
            }
            None => {}
        }
        let mut events = Vec::new();
        for (init, i, c) in wanted {
            {
                let rt = lock(&self.rt);
                let slot = if init { rt.init.get(i) } else { rt.main.get(i) };
                let Some(slot) = slot else { continue };
                if slot.is_running()
                    || slot.finished
                    || slot.next_start.is_some_and(|t| Instant::now() < t)
                {
                    continue;
                }
            }
            let img = c.image.as_deref().unwrap_or_default();
            let result = match self.shared.images.get(img) {
                Pull::Ready(prepared) => self.launch(pod, c, ip, &prepared),
                Pull::Pulling => Err((
                    "ContainerCreating".to_string(),
                    format!("preparing image {img:?} (resolving the ZooKeeper distribution)"),
                )),
                Pull::NotRunnable(m) => Err((image::REASON_IMAGE_NOT_RUNNABLE.to_string(), m)),
                Pull::Failed(m) => Err(("ErrImagePull".to_string(), m)),
            };
            let mut rt = lock(&self.rt);
            let Some(slot) = (if init {
                rt.init.get_mut(i)
            } else {
                rt.main.get_mut(i)
            }) else {
                continue;
            };
            let launch = match result {
                Ok(l) => l,
                Err((reason, message)) => {
                    if reason != "ContainerCreating" {
                        events.push((
                            field_path(slot),
                            EventType::Warning,
                            reason.clone(),
                            message.clone(),
                        ));
                    }
                    slot.waiting = Some((reason, Some(message).filter(|m| !m.is_empty())));
                    continue;
                }
            };
            if self.shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            match container::spawn(&launch, slot.restart_count + i32::from(slot.ever_started)) {
                Ok(child) => {
                    if slot.ever_started {
                        slot.restart_count += 1;
                    }
                    slot.ever_started = true;
                    slot.waiting = None;
                    slot.next_start = None;
                    slot.env = launch.env.clone();
                    let pid = child.pid();
                    let probe_state = Arc::new(ProbeState::default());
                    let target = ProbeTarget {
                        http: self.shared.http.clone(),
                        https: self.shared.https.clone(),
                        node_http: self.shared.node_http.clone(),
                        node_https: self.shared.node_https.clone(),
                        node_ip: self.shared.node_ip,
                        pid,
                        env: launch.env.clone(),
                        notify: self.notify.clone(),
                        state: probe_state.clone(),
                    };
                    let probe_task = if init {
                        probe_state.started.store(true, Ordering::SeqCst);
                        tokio::spawn(async {})
                    } else {
                        probe::spawn(c, ip, target)
                    };
                    tracing::info!(container = %launch.name, pid, "container started");
                    slot.run = Some(Run {
                        child,
                        started_at: Timestamp::now(),
                        started: Instant::now(),
                        container_id: format!("quorate://{}-{pid}", self.uid),
                        probe: probe_state,
                        probe_task,
                        kill_at: None,
                        paused: false,
                        termination_message: launch.termination_message.clone(),
                    });
                    events.push((
                        field_path(slot),
                        EventType::Normal,
                        "Started".into(),
                        format!("Started container {}", c.name),
                    ));
                }
                Err(e) => {
                    slot.crashes += 1;
                    let delay = self.backoff(slot.crashes);
                    slot.next_start = Some(Instant::now() + delay);
                    let message = format!("starting {}: {e}", launch.name);
                    slot.waiting = Some(("RunContainerError".into(), Some(message.clone())));
                    events.push((
                        field_path(slot),
                        EventType::Warning,
                        "Failed".into(),
                        message,
                    ));
                }
            }
        }
        for (field, t, reason, note) in events {
            let once = reason != "Started";
            self.event(pod, Some(field), t, &reason, note, once);
        }
    }

    /// Stops every container (SIGTERM, SIGKILL after the grace period) and removes the object.
    async fn terminate(&mut self, pod: &Pod) {
        if !self.terminating {
            let grace = pod
                .metadata
                .deletion_grace_period_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or_else(|| termination_grace(pod));
            self.terminating = true;
            let mut names = Vec::new();
            {
                let mut rt = lock(&self.rt);
                for c in rt.all_mut() {
                    c.finished = true;
                    if c.is_running() {
                        names.push((field_path(c), c.name.clone()));
                        c.begin_stop(grace);
                    }
                }
            }
            for (field, name) in names {
                self.event(
                    pod,
                    Some(field),
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {name}"),
                    true,
                );
            }
        }
        self.reap(pod, "Never");
        let still_running = lock(&self.rt).all().any(|c| c.is_running());
        if still_running {
            return;
        }
        if self.deleted {
            return;
        }
        self.write_status(pod).await;
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.key.0);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&self.key.1, &params).await {
            Ok(_) => self.deleted = true,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => self.deleted = true,
            Err(e) => {
                tracing::warn!(namespace = %self.key.0, pod = %self.key.1, error = %e, "removing a terminated pod")
            }
        }
    }

    fn condition(
        &mut self,
        type_: &str,
        ok: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> PodCondition {
        let status = if ok { "True" } else { "False" };
        let entry = self
            .transitions
            .entry(type_.to_string())
            .or_insert_with(|| (status.to_string(), Timestamp::now()));
        if entry.0 != status {
            *entry = (status.to_string(), Timestamp::now());
        }
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            last_transition_time: Some(Time(entry.1)),
            reason: reason.map(str::to_string),
            message,
            ..Default::default()
        }
    }

    fn build_status(&mut self, pod: &Pod) -> PodStatus {
        let policy = restart_policy(pod).to_string();
        let (init_statuses, main_statuses, init_done, pending_init, unready, phase) = {
            let rt = lock(&self.rt);
            let init_statuses: Vec<ContainerStatus> = rt.init.iter().map(|c| c.status()).collect();
            let main_statuses: Vec<ContainerStatus> = rt.main.iter().map(|c| c.status()).collect();
            let init_done = rt
                .init
                .iter()
                .all(|c| c.finished && c.last.as_ref().is_some_and(|t| t.exit_code == 0));
            let init_failed = rt
                .init
                .iter()
                .any(|c| c.finished && c.last.as_ref().is_some_and(|t| t.exit_code != 0));
            let pending_init: Vec<String> = rt
                .init
                .iter()
                .filter(|c| !(c.finished && c.last.as_ref().is_some_and(|t| t.exit_code == 0)))
                .map(|c| c.name.clone())
                .collect();
            let unready: Vec<String> = rt
                .main
                .iter()
                .filter(|c| !c.ready())
                .map(|c| c.name.clone())
                .collect();
            let phase = if init_failed && policy == "Never" {
                "Failed"
            } else if !init_done || rt.main.iter().any(|c| !c.ever_started) {
                "Pending"
            } else if rt.main.iter().all(|c| c.finished && !c.is_running()) {
                if rt
                    .main
                    .iter()
                    .all(|c| c.last.as_ref().is_some_and(|t| t.exit_code == 0))
                {
                    "Succeeded"
                } else {
                    "Failed"
                }
            } else {
                "Running"
            };
            (
                init_statuses,
                main_statuses,
                init_done,
                pending_init,
                unready,
                phase,
            )
        };
        let list = |names: &[String]| format!("[{}]", names.join(" "));
        let completed = phase == "Succeeded" || phase == "Failed";
        let gates: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| s.readiness_gates.iter().flatten())
            .map(|g| g.condition_type.clone())
            .collect();
        let existing: Vec<PodCondition> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let gates_ok = gates
            .iter()
            .all(|g| existing.iter().any(|c| &c.type_ == g && c.status == "True"));
        let sandbox = self.ip.is_some() && self.volumes.is_some();
        let mut conditions = vec![
            self.condition("PodReadyToStartContainers", sandbox, None, None),
            if init_done {
                self.condition("Initialized", true, None, None)
            } else {
                self.condition(
                    "Initialized",
                    false,
                    Some("ContainersNotInitialized"),
                    Some(format!(
                        "containers with incomplete status: {}",
                        list(&pending_init)
                    )),
                )
            },
        ];
        let containers_ready = unready.is_empty() && !completed;
        let (cr_reason, cr_message) = if completed {
            (Some("PodCompleted"), None)
        } else if unready.is_empty() {
            (None, None)
        } else {
            (
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: {}",
                    list(&unready)
                )),
            )
        };
        conditions.push(self.condition(
            "ContainersReady",
            containers_ready,
            cr_reason,
            cr_message.clone(),
        ));
        let ready = containers_ready && gates_ok;
        let (r_reason, r_message) = if containers_ready && !gates_ok {
            (
                Some("ReadinessGatesNotReady"),
                Some(format!(
                    "corresponding condition of pod readiness gate {gates:?} does not exist or is not True"
                )),
            )
        } else {
            (cr_reason, cr_message)
        };
        conditions.push(self.condition("Ready", ready, r_reason, r_message));
        let scheduled = existing
            .iter()
            .find(|c| c.type_ == "PodScheduled")
            .cloned()
            .unwrap_or_else(|| self.condition("PodScheduled", true, None, None));
        conditions.insert(0, scheduled);
        conditions.extend(
            existing
                .into_iter()
                .filter(|c| !OWN_CONDITIONS.contains(&c.type_.as_str())),
        );
        let host_ip = self.shared.node_ip.to_string();
        PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: self.ip.map(|ip| ip.to_string()),
            pod_ips: self.ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
            start_time: Some(Time(self.start_time)),
            init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
            container_statuses: Some(main_statuses),
            ..Default::default()
        }
    }

    async fn write_status(&mut self, pod: &Pod) {
        let status = self.build_status(pod);
        self.note_readiness(pod, &status);
        let Ok(mut value) = serde_json::to_value(&status) else {
            return;
        };
        if let Some(map) = value.as_object_mut() {
            for key in [
                "message",
                "reason",
                "podIP",
                "podIPs",
                "initContainerStatuses",
            ] {
                map.entry(key).or_insert(serde_json::Value::Null);
            }
        }
        if self.last_status.as_ref() == Some(&value) {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &self.key.0);
        // The uid makes the patch fail (409) on a newer Pod of the same name.
        let patch = serde_json::json!({ "metadata": {"uid": self.uid}, "status": value });
        match api
            .patch_status(&self.key.1, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => self.last_status = Some(value),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                tracing::warn!(namespace = %self.key.0, pod = %self.key.1, error = %e, "writing pod status")
            }
        }
    }

    /// An `Unhealthy` Event when a container turns unready while running.
    fn note_readiness(&mut self, pod: &Pod, status: &PodStatus) {
        let mut events = Vec::new();
        {
            let rt = lock(&self.rt);
            for (c, s) in rt
                .main
                .iter()
                .zip(status.container_statuses.iter().flatten())
            {
                let before = self
                    .was_ready
                    .insert(c.name.clone(), s.ready)
                    .unwrap_or(false);
                if before && !s.ready && c.is_running() {
                    let why = c
                        .run
                        .as_ref()
                        .and_then(|r| r.probe.last_failure.lock().ok().and_then(|m| m.clone()))
                        .unwrap_or_default();
                    let paused = c.run.as_ref().is_some_and(|r| r.paused);
                    events.push((
                        field_path(c),
                        format!(
                            "Readiness probe failed: {why}{}",
                            if paused {
                                " (the container is paused)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
            }
        }
        for (field, note) in events {
            self.event(
                pod,
                Some(field),
                EventType::Warning,
                "Unhealthy",
                note,
                false,
            );
        }
    }
}

/// The Event field path of a container, as the kubelet writes it.
fn field_path(c: &ContainerRt) -> String {
    let list = if c.init {
        "initContainers"
    } else {
        "containers"
    };
    format!("spec.{list}{{{}}}", c.name)
}

/// `spec.terminationGracePeriodSeconds` (default 30 s).
fn termination_grace(pod: &Pod) -> Duration {
    Duration::from_secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    )
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
