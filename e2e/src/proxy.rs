//! A TCP proxy between clients and the apiserver, for network faults.
//!
//! [`ApiProxy::start`] listens on a free `127.0.0.1` port and forwards every connection, bytes
//! both ways, to a target (the apiserver's [`crate::controlplane::ControlPlane::api_addr`]).
//! TLS passes through untouched: a kubeconfig whose `server:` is `https://<proxy addr>` works
//! because the apiserver's serving certificate covers `127.0.0.1`
//! ([`crate::controlplane::ControlPlane::kubeconfig_via`] rewrites one,
//! [`crate::controlplane::ControlPlane::client_via`] builds a client).
//!
//! Faults:
//! - [`ApiProxy::block`]: a partition. Every open connection is cut, and new ones are accepted
//!   and reset at once, until [`ApiProxy::unblock`].
//! - [`ApiProxy::reset`]: every open connection is cut once (long-running watches drop); new
//!   connections are forwarded as usual.
//!
//! A cut is an abortive close of both sides (TCP RST), so the client sees "connection reset"
//! rather than a clean end of stream, as after a broken network path or a dead peer.
//!
//! The proxy runs as one task on the current tokio runtime; its connections are tasks of that
//! task (a [`tokio::task::JoinSet`]), so dropping the [`ApiProxy`] (or [`ApiProxy::shutdown`])
//! ends the listener and every connection: nothing outlives it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// What a proxy has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Connections accepted and forwarded (or attempted: see `upstream_failed`).
    pub accepted: u64,
    /// Connections reset at once because the proxy was blocked.
    pub refused: u64,
    /// Forwarded connections cut by [`ApiProxy::block`] or [`ApiProxy::reset`].
    pub cut: u64,
    /// Forwarded connections whose target could not be reached (reset at once).
    pub upstream_failed: u64,
    /// Forwarded connections open right now.
    pub active: u64,
}

#[derive(Debug, Default)]
struct Shared {
    blocked: AtomicBool,
    accepted: AtomicU64,
    refused: AtomicU64,
    cut: AtomicU64,
    upstream_failed: AtomicU64,
    active: AtomicU64,
}

/// A forwarding TCP proxy on `127.0.0.1` with fault switches; stops when dropped.
#[derive(Debug)]
pub struct ApiProxy {
    addr: SocketAddr,
    target: SocketAddr,
    shared: Arc<Shared>,
    /// Each cut (block or reset) bumps the generation; connections opened before it end.
    cuts: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl ApiProxy {
    /// Listens on a free `127.0.0.1` port and forwards each connection to `target`. Needs a
    /// tokio runtime (the forwarding runs on it).
    pub async fn start(target: SocketAddr) -> io::Result<ApiProxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let (cuts, _) = watch::channel(0u64);
        let task = tokio::spawn(serve(listener, target, shared.clone(), cuts.clone()));
        Ok(ApiProxy {
            addr,
            target,
            shared,
            cuts,
            task,
        })
    }

    /// Where clients connect (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// A partition: cuts every open connection, and resets new ones at once until
    /// [`Self::unblock`]. Idempotent.
    pub fn block(&self) {
        // Blocked first: a connection accepted after the cut below then sees it (serve()
        // subscribes to cuts before it reads this flag).
        self.shared.blocked.store(true, Ordering::SeqCst);
        self.cut_all();
    }

    /// Ends a [`Self::block`]: new connections are forwarded again. Idempotent.
    pub fn unblock(&self) {
        self.shared.blocked.store(false, Ordering::SeqCst);
    }

    /// Whether [`Self::block`] is in force.
    pub fn is_blocked(&self) -> bool {
        self.shared.blocked.load(Ordering::SeqCst)
    }

    /// Cuts every open connection once ("watches dropped"); new connections are forwarded as
    /// usual.
    pub fn reset(&self) {
        self.cut_all();
    }

    fn cut_all(&self) {
        self.cuts.send_modify(|generation| *generation += 1);
    }

    /// The counters so far.
    pub fn stats(&self) -> ProxyStats {
        let load = |c: &AtomicU64| c.load(Ordering::SeqCst);
        ProxyStats {
            accepted: load(&self.shared.accepted),
            refused: load(&self.shared.refused),
            cut: load(&self.shared.cut),
            upstream_failed: load(&self.shared.upstream_failed),
            active: load(&self.shared.active),
        }
    }

    /// Stops listening and ends every connection, and returns once they are gone (dropping
    /// the proxy does the same without waiting).
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts until aborted; the connections live in `conns`, dropped (aborted) with this future.
async fn serve(
    listener: TcpListener,
    target: SocketAddr,
    shared: Arc<Shared>,
    cuts: watch::Sender<u64>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    // Subscribed before reading `blocked`: a block() after this is seen as a cut.
                    let cut = cuts.subscribe();
                    if shared.blocked.load(Ordering::SeqCst) {
                        shared.refused.fetch_add(1, Ordering::SeqCst);
                        abort(client);
                        continue;
                    }
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    conns.spawn(forward(client, target, cut, shared.clone()));
                }
                // Out of file descriptors and the like: breathe, then accept again.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Counts an open connection while alive.
struct Active(Arc<Shared>);

impl Active {
    fn new(shared: Arc<Shared>) -> Active {
        shared.active.fetch_add(1, Ordering::SeqCst);
        Active(shared)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Closes with a TCP RST instead of a FIN.
fn abort(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn forward(
    mut client: TcpStream,
    target: SocketAddr,
    mut cut: watch::Receiver<u64>,
    shared: Arc<Shared>,
) {
    let _active = Active::new(shared.clone());
    let upstream = tokio::select! {
        upstream = TcpStream::connect(target) => upstream,
        _ = cut.changed() => {
            shared.cut.fetch_add(1, Ordering::SeqCst);
            abort(client);
            return;
        }
    };
    let mut upstream = match upstream {
        Ok(upstream) => upstream,
        Err(_) => {
            shared.upstream_failed.fetch_add(1, Ordering::SeqCst);
            abort(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let was_cut = tokio::select! {
        // Ends when both sides have closed, or on the first error.
        _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
        _ = cut.changed() => true,
    };
    if was_cut {
        shared.cut.fetch_add(1, Ordering::SeqCst);
        abort(client);
        abort(upstream);
    }
}
