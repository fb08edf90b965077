//! The AdminServer: `GET /commands/<name>` answered with the JSON keys ZooKeeper 3.9.5 uses,
//! served by hyper (HTTP/1.1, keep-alive, connections idle 30 s closed as Jetty does), and the
//! text of the four-letter words `conf`, `srvr` and `mntr`.
//!
//! A member that does not serve answers every command with `error` "This ZooKeeper instance
//! is not currently serving requests" (HTTP 200; `ruok` too), `monitor` with HTTP 500 and
//! `zabstate` with an empty state, as ZooKeeper 3.9.5 does (measured by
//! `tests/standin_real.rs`). Only the keys real servers answer are used, with their types;
//! most of `monitor`'s 500 metrics are left out.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

use super::Member;
use super::client::NOT_SERVING;
use super::ensemble::{Role, State, TICK_MS, VERSION, View};

/// Accepts connections until the task is aborted.
pub(super) async fn serve(listener: TcpListener, member: Arc<Member>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let member = member.clone();
        tokio::spawn(async move {
            let mut stop = member.stop.clone();
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let member = member.clone();
                    async move { Ok::<_, Infallible>(respond(&member, request.uri().path())) }
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                _ = stop.changed() => {}
            }
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

fn json_reply(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    reply(status, "application/json", text)
}

/// The primary name of a command, from any of its names.
fn primary(name: &str) -> Option<&'static str> {
    Some(match name {
        "ruok" => "ruok",
        "server_stats" | "srvr" => "server_stats",
        "stats" | "stat" => "stats",
        "leader" | "lead" => "leader",
        "monitor" | "mntr" => "monitor",
        "configuration" | "conf" | "config" => "configuration",
        "voting_view" => "voting_view",
        "zabstate" => "zabstate",
        "is_read_only" | "isro" => "is_read_only",
        "last_snapshot" | "lsnp" => "last_snapshot",
        "snapshot" | "snap" => "snapshot",
        "restore" | "rest" => "restore",
        _ => return None,
    })
}

fn respond(member: &Member, path: &str) -> Response<Full<Bytes>> {
    let Some(name) = path.strip_prefix("/commands/") else {
        return reply(StatusCode::NOT_FOUND, "text/html", String::new());
    };
    let name = name.trim_end_matches('/');
    let Some(command) = primary(name) else {
        return json_reply(
            StatusCode::NOT_FOUND,
            &json!({"command": name, "error": format!("Unknown command: {name}")}),
        );
    };
    if matches!(command, "snapshot" | "restore") {
        return json_reply(
            StatusCode::FORBIDDEN,
            &json!({"command": command, "error": "Forbidden: the stand-in has no data to back up"}),
        );
    }
    member.ensemble.with(|st| {
        let view = st.view(member.id).filter(|v| v.role.serving());
        let Some(view) = view else {
            return not_serving(command, name);
        };
        let mut m = Map::new();
        m.insert("command".into(), json!(command));
        m.insert("error".into(), Value::Null);
        match command {
            "server_stats" | "stats" => {
                server_stats(member, &view, &mut m);
                if command == "stats" {
                    m.insert("connections".into(), json!([]));
                    m.insert("secure_connections".into(), json!([]));
                }
            }
            "leader" => {
                m.insert("is_leader".into(), json!(view.role == Role::Leader));
                m.insert("leader_id".into(), json!(view.leader.unwrap_or(0)));
                let leader_ip = view
                    .leader
                    .and_then(|l| st.config.servers.get(&l))
                    .map(|s| host_of(&s.quorum).to_string())
                    .unwrap_or_default();
                m.insert("leader_ip".into(), json!(leader_ip));
            }
            "monitor" => monitor(member, &view, &mut m),
            "configuration" => configuration(member, &mut m),
            "voting_view" => {
                let mut current = Map::new();
                for (id, s) in &st.config.servers {
                    let (servers, elections): (Vec<String>, Vec<String>) = s
                        .quorum
                        .split('|')
                        .map(|a| {
                            let mut parts = a.rsplitn(3, ':');
                            let election = parts.next().unwrap_or_default();
                            let quorum = parts.next().unwrap_or_default();
                            let host = parts.next().unwrap_or_default();
                            (format!("{host}:{quorum}"), format!("{host}:{election}"))
                        })
                        .unzip();
                    current.insert(
                        id.to_string(),
                        json!({
                            "client_address": s.client,
                            "election_addresses": elections,
                            "learner_type": if s.voter { "participant" } else { "observer" },
                            "server_addresses": servers,
                        }),
                    );
                }
                m.insert("current_config".into(), Value::Object(current));
            }
            "zabstate" => zabstate(member, st, &view, &mut m),
            "is_read_only" => {
                m.insert("read_only".into(), json!(false));
            }
            "last_snapshot" => {
                m.insert("zxid".into(), json!("0"));
                m.insert("timestamp".into(), json!(0));
            }
            _ => {}
        }
        json_reply(StatusCode::OK, &Value::Object(m))
    })
}

/// What ZooKeeper 3.9.5 answers without a running server: `monitor` fails with HTTP 500,
/// `zabstate` reports the (empty) state, every other command (`ruok` too) names itself as
/// asked and sets `error`.
fn not_serving(command: &str, asked: &str) -> Response<Full<Bytes>> {
    match command {
        "monitor" => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/html",
            "<html><body><h2>HTTP ERROR 500 java.lang.NullPointerException</h2></body></html>"
                .into(),
        ),
        "zabstate" => json_reply(
            StatusCode::OK,
            &json!({"command": "zabstate", "error": null, "voting": false, "zabstate": ""}),
        ),
        _ => json_reply(
            StatusCode::OK,
            &json!({"command": asked, "error": NOT_SERVING}),
        ),
    }
}

/// The host of the first quorum address of a server line.
fn host_of(quorum: &str) -> &str {
    let first = quorum.split('|').next().unwrap_or_default();
    let mut parts = first.rsplitn(3, ':');
    parts.nth(2).unwrap_or_default()
}

/// ZooKeeper's `MultipleAddresses` as Jackson prints it.
fn addresses(host: &str, port: &str) -> Value {
    let one = format!("{host}:{port}");
    json!({
        "all_addresses": [one],
        "all_host_strings": [host],
        "all_ports": [port.parse::<u16>().unwrap_or_default()],
        "all_reachable_addresses": [one],
        "all_reachable_addresses_or_all": [one],
        "empty": false,
        "one": one,
        "reachable_address": one,
        "reachable_or_one": one,
        "wildcard_addresses": [format!("0.0.0.0:{port}")],
    })
}

fn zabstate(member: &Member, st: &State, view: &View, m: &mut Map<String, Value>) {
    let line = st.config.servers.get(&member.id);
    let quorum = line.map(|s| s.quorum.split('|').next().unwrap_or_default().to_string());
    let mut parts = quorum.as_deref().unwrap_or("::").rsplitn(3, ':');
    let election = parts.next().unwrap_or_default();
    let port = parts.next().unwrap_or_default();
    let host = parts.next().unwrap_or_default();
    m.insert(
        "client_address".into(),
        json!(line.map(|s| s.client.clone()).unwrap_or_default()),
    );
    m.insert("election_address".into(), addresses(host, election));
    m.insert("is_leader".into(), json!(view.role == Role::Leader));
    m.insert("last_zxid".into(), json!(format!("0x{:x}", view.zxid)));
    m.insert("myid".into(), json!(member.id));
    m.insert("quorum_address".into(), addresses(host, port));
    m.insert("voting".into(), json!(view.voting));
    m.insert("zab_counter".into(), json!(view.zxid & 0xffff_ffff));
    m.insert("zab_epoch".into(), json!(view.zxid >> 32));
    m.insert("zabstate".into(), json!("broadcast"));
}

fn server_stats(member: &Member, view: &View, m: &mut Map<String, Value>) {
    let received = member.stats.received.load(Ordering::Relaxed);
    let sent = member.stats.sent.load(Ordering::Relaxed);
    let connections = member.stats.connections.load(Ordering::Relaxed);
    let buffers = json!({"last_buffer_size": -1, "min_buffer_size": -1, "max_buffer_size": -1});
    m.insert("version".into(), json!(VERSION));
    m.insert("read_only".into(), json!(false));
    m.insert(
        "server_stats".into(),
        json!({
            "packets_sent": sent,
            "packets_received": received,
            "fsync_threshold_exceed_count": 0,
            "client_response_stats": buffers,
            "data_dir_size": 0,
            "log_dir_size": 0,
            "last_processed_zxid": view.zxid,
            "outstanding_requests": 0,
            "server_state": view.role.state_name(),
            "avg_latency": 0.0,
            "max_latency": 0,
            "min_latency": 0,
            "num_alive_client_connections": connections,
            "provider_null": false,
            "uptime": member.started.elapsed().as_millis() as u64,
            "auth_failed_count": 0,
            "non_mtlsremote_conn_count": 0,
            "non_mtlslocal_conn_count": 0,
        }),
    );
    m.insert("client_response".into(), buffers);
    if view.role == Role::Leader {
        m.insert(
            "proposal_stats".into(),
            json!({"last_buffer_size": -1, "min_buffer_size": -1, "max_buffer_size": -1}),
        );
    }
    m.insert("node_count".into(), json!(view.znodes));
}

fn monitor(member: &Member, view: &View, m: &mut Map<String, Value>) {
    m.insert("version".into(), json!(VERSION));
    m.insert("avg_latency".into(), json!(0.0));
    m.insert("max_latency".into(), json!(0));
    m.insert("min_latency".into(), json!(0));
    m.insert(
        "packets_received".into(),
        json!(member.stats.received.load(Ordering::Relaxed)),
    );
    m.insert(
        "packets_sent".into(),
        json!(member.stats.sent.load(Ordering::Relaxed)),
    );
    m.insert(
        "num_alive_connections".into(),
        json!(member.stats.connections.load(Ordering::Relaxed)),
    );
    m.insert("outstanding_requests".into(), json!(0));
    m.insert("server_state".into(), json!(view.role.state_name()));
    m.insert("znode_count".into(), json!(view.znodes));
    m.insert("watch_count".into(), json!(0));
    m.insert("ephemerals_count".into(), json!(view.ephemerals));
    m.insert("approximate_data_size".into(), json!(view.data_size));
    m.insert("open_file_descriptor_count".into(), json!(0));
    m.insert("max_file_descriptor_count".into(), json!(0));
    m.insert("last_client_response_size".into(), json!(-1));
    m.insert("max_client_response_size".into(), json!(-1));
    m.insert("min_client_response_size".into(), json!(-1));
    m.insert(
        "uptime".into(),
        json!(member.started.elapsed().as_millis() as u64),
    );
    m.insert("quorum_size".into(), json!(view.voters));
    m.insert("global_sessions".into(), json!(view.sessions));
    m.insert("local_sessions".into(), json!(0));
    m.insert("peer_state".into(), json!(view.role.peer_state()));
    if let Some(l) = view.learners {
        m.insert("learners".into(), json!(l.learners));
        m.insert("synced_followers".into(), json!(l.synced_followers));
        m.insert(
            "synced_non_voting_followers".into(),
            json!(l.synced_non_voting_followers),
        );
        m.insert("synced_observers".into(), json!(l.synced_observers));
        m.insert("pending_syncs".into(), json!(0));
        m.insert(
            "leader_uptime".into(),
            json!(view.leading_for.as_millis() as u64),
        );
        m.insert("last_proposal_size".into(), json!(-1));
        m.insert("max_proposal_size".into(), json!(-1));
        m.insert("min_proposal_size".into(), json!(-1));
    }
}

fn configuration(member: &Member, m: &mut Map<String, Value>) {
    m.insert("client_port".into(), json!(member.client_port));
    m.insert("client_port_listen_backlog".into(), json!(-1));
    m.insert("data_dir".into(), json!("/standin/version-2"));
    m.insert("data_log_dir".into(), json!("/standin/version-2"));
    m.insert("max_client_cnxns".into(), json!(60));
    m.insert("max_session_timeout".into(), json!(20 * TICK_MS));
    m.insert("min_session_timeout".into(), json!(2 * TICK_MS));
    m.insert("server_id".into(), json!(member.id));
    m.insert("tick_time".into(), json!(TICK_MS));
}

/// The `conf` four-letter word.
pub(super) fn conf_text(member: &Member, st: &State) -> String {
    let observer = st.config.servers.get(&member.id).is_some_and(|s| !s.voter);
    format!(
        "clientPort={}\nsecureClientPort=-1\ndataDir=/standin/version-2\ndataDirSize=0\n\
         dataLogDir=/standin/version-2\ndataLogSize=0\ntickTime={TICK_MS}\nmaxClientCnxns=60\n\
         minSessionTimeout={}\nmaxSessionTimeout={}\nclientPortListenBacklog=-1\nserverId={}\n\
         initLimit=10\nsyncLimit=5\nelectionAlg=3\nelectionPort=3888\nquorumPort=2888\n\
         peerType={}\nmembership: \n{}\n",
        member.client_port,
        2 * TICK_MS,
        20 * TICK_MS,
        member.id,
        u8::from(observer),
        st.config.to_text(),
    )
}

/// The `srvr` four-letter word.
pub(super) fn srvr_text(member: &Member, view: &View) -> String {
    format!(
        "Zookeeper version: {VERSION}\nLatency min/avg/max: 0/0.0/0\nReceived: {}\nSent: {}\n\
         Connections: {}\nOutstanding: 0\nZxid: 0x{:x}\nMode: {}\nNode count: {}\n",
        member.stats.received.load(Ordering::Relaxed),
        member.stats.sent.load(Ordering::Relaxed),
        member.stats.connections.load(Ordering::Relaxed),
        view.zxid,
        view.role.state_name(),
        view.znodes,
    )
}

/// The `mntr` four-letter word.
pub(super) fn mntr_text(member: &Member, view: &View) -> String {
    let mut m = Map::new();
    monitor(member, view, &mut m);
    let mut out = String::new();
    for (k, v) in m {
        let v = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        out.push_str(&format!("zk_{k}\t{v}\n"));
    }
    out
}
