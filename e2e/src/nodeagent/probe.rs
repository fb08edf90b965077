//! Probes, run as the kubelet runs them: `startupProbe` first (until it succeeds, the others
//! wait), then `readinessProbe` and `livenessProbe` side by side, each with its own
//! `initialDelaySeconds`, `periodSeconds`, `timeoutSeconds`, `successThreshold` and
//! `failureThreshold`. Handlers: `httpGet` (host: the Pod IP unless given; port by number or by
//! the container port's name; 200-399 is success), `tcpSocket`, and `exec` (in the container's
//! mount namespace, with its environment). Probes of the Pod IP (no `host` given) are sent
//! from the node's address, as a kubelet's come from its node: network cuts never block them.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;

/// What the probes have found about one running container.
#[derive(Debug, Default)]
pub(super) struct ProbeState {
    /// The readiness probe succeeds (or there is none and the container has started).
    pub ready: AtomicBool,
    /// The startup probe has succeeded (or there is none).
    pub started: AtomicBool,
    /// The liveness or startup probe has failed: the container is to be restarted.
    pub failed: AtomicBool,
    /// The latest failure message, for an `Unhealthy` Event.
    pub last_failure: Mutex<Option<String>>,
}

#[derive(Clone, Debug)]
enum Handler {
    Http {
        url: String,
        headers: Vec<(String, String)>,
        https: bool,
        /// The Pod IP: sent from the node's address.
        from_node: bool,
    },
    Tcp {
        host: String,
        port: u16,
        from_node: bool,
    },
    Exec {
        argv: Vec<String>,
    },
}

#[derive(Clone, Debug)]
struct Spec {
    handler: Result<Handler, String>,
    initial_delay: Duration,
    period: Duration,
    timeout: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

fn secs(v: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(v.map(|s| s.max(0) as u64).unwrap_or(default))
}

fn port_of(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port {p}")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

fn spec_of(probe: &Probe, container: &Container, pod_ip: Ipv4Addr) -> Spec {
    let handler = if let Some(h) = &probe.http_get {
        port_of(&h.port, container).map(|port| {
            let host = h.host.clone().unwrap_or_else(|| pod_ip.to_string());
            let https = h
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"));
            let mut path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                path.insert(0, '/');
            }
            Handler::Http {
                url: format!(
                    "{}://{host}:{port}{path}",
                    if https { "https" } else { "http" }
                ),
                headers: h
                    .http_headers
                    .iter()
                    .flatten()
                    .map(|x| (x.name.clone(), x.value.clone()))
                    .collect(),
                https,
                from_node: h.host.is_none(),
            }
        })
    } else if let Some(t) = &probe.tcp_socket {
        port_of(&t.port, container).map(|port| Handler::Tcp {
            host: t.host.clone().unwrap_or_else(|| pod_ip.to_string()),
            port,
            from_node: t.host.is_none(),
        })
    } else if let Some(e) = &probe.exec {
        Ok(Handler::Exec {
            argv: e.command.clone().unwrap_or_default(),
        })
    } else {
        Err("the node agent supports httpGet, tcpSocket and exec probes".to_string())
    };
    Spec {
        handler,
        initial_delay: secs(probe.initial_delay_seconds, 0),
        period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

/// What a probe of a running container needs.
#[derive(Clone)]
pub(super) struct ProbeTarget {
    pub http: reqwest::Client,
    pub https: reqwest::Client,
    /// Clients bound to the node's address, for probes of the Pod IP.
    pub node_http: reqwest::Client,
    pub node_https: reqwest::Client,
    pub node_ip: Ipv4Addr,
    /// The container's pid, for `exec` probes (`nsenter -t <pid> -m`).
    pub pid: u32,
    pub env: Vec<(String, String)>,
    pub notify: Arc<Notify>,
    pub state: Arc<ProbeState>,
}

async fn run_once(handler: &Handler, timeout: Duration, t: &ProbeTarget) -> Result<(), String> {
    match handler {
        Handler::Http {
            url,
            headers,
            https,
            from_node,
        } => {
            let client = match (*https, *from_node) {
                (true, true) => &t.node_https,
                (true, false) => &t.https,
                (false, true) => &t.node_http,
                (false, false) => &t.http,
            };
            let mut req = client.get(url).timeout(timeout);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.map_err(|e| format!("Get {url:?}: {e}"))?;
            let status = resp.status().as_u16();
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {status}"))
            }
        }
        Handler::Tcp {
            host,
            port,
            from_node,
        } => {
            let addr = format!("{host}:{port}");
            let connect = async {
                match host.parse::<Ipv4Addr>() {
                    Ok(ip) if *from_node => {
                        let socket = tokio::net::TcpSocket::new_v4()?;
                        socket.bind((t.node_ip, 0).into())?;
                        socket.connect((ip, *port).into()).await
                    }
                    _ => tokio::net::TcpStream::connect(&addr).await,
                }
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
                Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
            }
        }
        Handler::Exec { argv } => {
            let output = super::exec_in(t.pid, &t.env, argv, timeout).await?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "command {argv:?} exited with {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout).trim()
                ))
            }
        }
    }
}

/// Runs one probe until it reaches a verdict per thresholds; calls `on_change(ok)` on every
/// change of verdict. With `until_success`, returns after the first success verdict (a startup
/// probe); returns `false` when a startup probe fails for good.
async fn run_probe(
    spec: Spec,
    t: ProbeTarget,
    until_success: bool,
    mut on_change: impl FnMut(bool),
) -> bool {
    tokio::time::sleep(spec.initial_delay).await;
    let mut verdict: Option<bool> = None;
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        let outcome = match &spec.handler {
            Ok(h) => run_once(h, spec.timeout, &t).await,
            Err(e) => Err(e.clone()),
        };
        match outcome {
            Ok(()) => {
                successes += 1;
                failures = 0;
                if successes >= spec.success_threshold && verdict != Some(true) {
                    verdict = Some(true);
                    on_change(true);
                    if until_success {
                        return true;
                    }
                }
            }
            Err(message) => {
                failures += 1;
                successes = 0;
                *t.state
                    .last_failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(message);
                if failures >= spec.failure_threshold && verdict != Some(false) {
                    verdict = Some(false);
                    on_change(false);
                    if until_success {
                        return false;
                    }
                }
            }
        }
        tokio::time::sleep(spec.period).await;
    }
}

/// Starts the container's probes; the task ends when aborted (the container stopped).
pub(super) fn spawn(
    container: &Container,
    pod_ip: Ipv4Addr,
    target: ProbeTarget,
) -> tokio::task::JoinHandle<()> {
    let startup = container
        .startup_probe
        .as_ref()
        .map(|p| spec_of(p, container, pod_ip));
    let readiness = container
        .readiness_probe
        .as_ref()
        .map(|p| spec_of(p, container, pod_ip));
    let liveness = container
        .liveness_probe
        .as_ref()
        .map(|p| spec_of(p, container, pod_ip));
    tokio::spawn(async move {
        let state = target.state.clone();
        let notify = target.notify.clone();
        if let Some(spec) = startup {
            let ok = run_probe(spec, target.clone(), true, |_| {}).await;
            if !ok {
                state.failed.store(true, Ordering::SeqCst);
                notify.notify_one();
                return;
            }
        }
        state.started.store(true, Ordering::SeqCst);
        if readiness.is_none() {
            state.ready.store(true, Ordering::SeqCst);
        }
        notify.notify_one();
        let readiness = async {
            if let Some(spec) = readiness {
                let (s, n) = (state.clone(), notify.clone());
                run_probe(spec, target.clone(), false, move |ok| {
                    s.ready.store(ok, Ordering::SeqCst);
                    n.notify_one();
                })
                .await;
            }
        };
        let liveness = async {
            if let Some(spec) = liveness {
                let (s, n) = (state.clone(), notify.clone());
                run_probe(spec, target.clone(), false, move |ok| {
                    if !ok {
                        s.failed.store(true, Ordering::SeqCst);
                        n.notify_one();
                    }
                })
                .await;
            }
        };
        tokio::join!(readiness, liveness);
    })
}
